"""The deployment files (docker/, docs/deploy.md) against the real daemon, without Docker or a cluster.

What can drift and is checked here:
  - every YAML file under docker/ parses (a small YAML-subset parser below, cross-checked against
    PyYAML where that imports: .venv has no PyYAML), and the Kubernetes objects reference each
    other consistently (ports by name, selectors, the HPA target);
  - the probe and health-check paths exist: a daemon is started like tests/api/conftest.py does
    and each path must answer 200 once it is ready; the Dockerfiles' and compose's HEALTHCHECK
    commands are run against it (exit 0) and against a closed port (non-zero);
  - every SLUICE_* variable and every sluice flag named in docker/ or docs/deploy.md is in
    `sluice --help`, and the values the manifests set are accepted (sluice --help exits 2 on a
    bad value of a variable);
  - every sluice: metric named there is on /metrics, and the HPA's metric is what the
    prometheus-adapter rule makes of a real gauge;
  - the Dockerfile installs setup.sh's build packages and, in the runtime stage, the Debian
    packages that hold every library build/sluice links (readelf + dpkg, where present);
  - grace periods outlast --shutdown-timeout.
Docker builds themselves are not run here (no daemon in CI): docs/deploy.md says what is unverified.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
DOC = ROOT / "docs" / "deploy.md"

# the daemon helpers shared with tests/api (tests/daemon.py)
sys.path.insert(0, str(ROOT / "tests"))
from daemon import Server, binary, free_port  # noqa: E402


def deploy_files():
    """Every text file that documents or configures a deployment."""
    files = sorted(p for p in DOCKER.rglob("*") if p.is_file())
    return files + [DOC]


# ----------------------------------------------------------------------------
# a YAML subset: block mappings and sequences, plain / single- / double-quoted scalars, comments,
# '---' documents, {} and []. Anything else (flow collections, block scalars, anchors, tags) is
# an error rather than a guess, and so are plain scalars that YAML 1.1 readers (PyYAML, older Go
# parsers) take differently from YAML 1.2 ones: yes/no/on/off, 1:20, 0755.

class YamlError(ValueError):
    pass


_KEY = re.compile(r"""^([^\s'"\[\]{}#,&*!|>%@`-][^#]*?|-[^\s#][^#]*?):(?:\s+(.*))?$""")
_AMBIGUOUS = re.compile(r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF|[-+]?\d+(:[0-5]?\d)+(\.\d*)?|0\d+)$")


def _scalar(text, where):
    text = text.strip()
    if text.startswith("'"):
        i, out = 1, []
        while True:
            j = text.find("'", i)
            if j < 0:
                raise YamlError(f"{where}: unterminated quote")
            out.append(text[i:j])
            if text[j + 1:j + 2] == "'":
                out.append("'")
                i = j + 2
                continue
            rest = text[j + 1:].strip()
            break
        value = "".join(out)
    elif text.startswith('"'):
        try:
            value, end = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError as e:
            raise YamlError(f"{where}: double-quoted scalar: {e}") from None
        rest = text[end:].strip()
    else:
        rest = ""
        m = re.search(r"\s#", text)
        if m:
            text = text[:m.start()].rstrip()
        if text in ("{}", "[]"):
            return {} if text == "{}" else []
        if text[:1] in "{[|>&*!%@`" or text.startswith("- "):
            raise YamlError(f"{where}: unsupported YAML: {text!r}")
        if _AMBIGUOUS.match(text):
            raise YamlError(f"{where}: {text!r} reads differently in YAML 1.1 and 1.2: quote it")
        if text in ("", "~", "null", "Null", "NULL"):
            return None
        if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
            return text.lower() == "true"
        if re.fullmatch(r"[-+]?(0|[1-9]\d*)", text):
            return int(text)
        if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", text):
            return float(text)
        return text
    if rest and not rest.startswith("#"):
        raise YamlError(f"{where}: text after a quoted scalar: {rest!r}")
    return value


def _lines(text, name):
    docs, cur = [], []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip()
        body = line.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        if body.startswith("\t"):
            raise YamlError(f"{name}:{n}: tab in indentation")
        if line == "---":
            docs.append(cur)
            cur = []
            continue
        cur.append([len(line) - len(body), body, f"{name}:{n}"])
    docs.append(cur)
    return [d for d in docs if d]


def _node(ls, i):
    if ls[i][1] == "-" or ls[i][1].startswith("- "):
        return _seq(ls, i, ls[i][0])
    return _map(ls, i, ls[i][0])


def _seq(ls, i, ind):
    items = []
    while i < len(ls) and ls[i][0] == ind and (ls[i][1] == "-" or ls[i][1].startswith("- ")):
        _, body, where = ls[i]
        rest = body[1:].lstrip(" ")
        if not rest:
            if i + 1 < len(ls) and ls[i + 1][0] > ind:
                value, i = _node(ls, i + 1)
            else:
                value, i = None, i + 1
        elif rest.startswith("- ") or _KEY.match(rest) and rest[0] not in "'\"":
            ls[i] = [ind + len(body) - len(rest), rest, where]  # "- key: v" is a mapping one column in
            value, i = _node(ls, i)
        else:
            value, i = _scalar(rest, where), i + 1
        items.append(value)
    if i < len(ls) and ls[i][0] > ind:
        raise YamlError(f"{ls[i][2]}: unexpected indentation")
    return items, i


def _map(ls, i, ind):
    out = {}
    while i < len(ls) and ls[i][0] == ind:
        _, body, where = ls[i]
        m = _KEY.match(body)
        if not m or body.startswith("- "):
            raise YamlError(f"{where}: expected 'key: value', got {body!r}")
        key, rest = m.group(1).strip(), m.group(2)
        if key in out:
            raise YamlError(f"{where}: duplicate key {key!r}")
        if rest is None or rest.startswith("#"):
            j = i + 1
            if j < len(ls) and ls[j][0] > ind:
                value, i = _node(ls, j)
            elif j < len(ls) and ls[j][0] == ind and (ls[j][1] == "-" or ls[j][1].startswith("- ")):
                value, i = _seq(ls, j, ind)
            else:
                value, i = None, j
        else:
            value, i = _scalar(rest, where), i + 1
        out[key] = value
    if i < len(ls) and ls[i][0] > ind:
        raise YamlError(f"{ls[i][2]}: unexpected indentation")
    return out, i


def yaml_docs(path):
    """The documents of a YAML file, parsed by the subset parser above."""
    out = []
    for ls in _lines(path.read_text(), path.name):
        value, i = _node(ls, 0)
        if i != len(ls):
            raise YamlError(f"{ls[i][2]}: unexpected line")
        out.append(value)
    return out


def yaml_files():
    return sorted(DOCKER.rglob("*.yaml"))


def k8s_objects():
    """{kind: object} of the manifests under docker/k8s (one object of each kind)."""
    objs = {}
    for p in sorted(K8S.glob("*.yaml")):
        for d in yaml_docs(p):
            if isinstance(d, dict) and "kind" in d and "apiVersion" in d and d["kind"] != "Kustomization":
                assert d["kind"] not in objs, f"two {d['kind']} objects"
                objs[d["kind"]] = d
    return objs


# ----------------------------------------------------------------------------
# the Dockerfile, line by line

def dockerfile(path):
    """[(stage_name, [(INSTRUCTION, args)])] with continuation lines joined and comments dropped."""
    stages, logical, cur = [], [], ""
    for raw in path.read_text().split("\n"):
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):  # a comment inside a continued instruction
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        logical.append(cur + s)
        cur = ""
    assert not cur, f"{path.name}: ends inside a continued line"
    for line in logical:
        word, _, args = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args.strip(), re.I)
            assert m, line
            stages.append((m.group(2) or str(len(stages)), [("FROM", m.group(1))]))
        elif stages:
            stages[-1][1].append((word, args.strip()))
        else:
            assert word in ("ARG",), f"{path.name}: {word} before FROM"
    return stages


def stage(stages, name):
    for n, instrs in stages:
        if n == name:
            return instrs
    raise AssertionError(f"no stage {name!r}")


def apt_installs(instrs):
    pkgs = set()
    for word, args in instrs:
        if word != "RUN":
            continue
        for m in re.finditer(r"apt-get install((?:\s+[^&|;>\s]+)+)", args):
            pkgs |= {t for t in m.group(1).split() if not t.startswith("-")}
    return pkgs


def env_of(instrs):
    env = {}
    for word, args in instrs:
        if word == "ENV":
            for tok in args.split():
                k, _, v = tok.partition("=")
                env[k] = v.strip('"')
    return env


def healthcheck_cmd(instrs):
    hc = [args for word, args in instrs if word == "HEALTHCHECK"]
    assert len(hc) == 1, "one HEALTHCHECK in the runtime stage"
    m = re.search(r"\bCMD\s+(.*)$", hc[0])
    assert m, hc[0]
    return m.group(1)


# ----------------------------------------------------------------------------
# the daemon and its help

@pytest.fixture(scope="module")
def help_text():
    b = binary()
    if not b.exists():
        pytest.fail(f"{b} is not built (make build/sluice)")
    r = subprocess.run([str(b), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def help_envs(text):
    return set(re.findall(r"\(env (SLUICE_[A-Z0-9_]+)\)", text))


def help_flags(text):
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", text, re.M)) | {"--help"}


def help_default(text, flag):
    m = re.search(r"^\s+%s\b.*\[default: ([^\]]*)\]" % re.escape(flag), text, re.M)
    assert m, f"{flag} has no default in --help"
    return m.group(1)


# Small: the deployment checks only read probes, --help and /metrics.
DAEMON_ARGS = ["--host", "127.0.0.1", "--max-model-len", "512", "--kv-cache-memory", "64M", "--max-num-seqs", "4",
               *os.environ.get("SLUICE_TEST_ARGS", "").split()]


@pytest.fixture(scope="module")
def daemon():
    d = Server([], base_args=DAEMON_ARGS)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def metric_names(daemon):
    """{name: type} from the TYPE lines, plus every sample name (the _total, _bucket, ... series)."""
    text = requests.get(daemon.url + "/metrics", timeout=10).text
    names = {}
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            names[m.group(1)] = m.group(2)
        elif line and not line.startswith("#"):
            names.setdefault(re.match(r"[^{\s]+", line).group(0), "sample")
    assert "sluice:num_requests_waiting" in names, text[:500]
    return names


# ----------------------------------------------------------------------------
# YAML and Kubernetes objects

def test_yaml_parses_and_agrees_with_pyyaml():
    files = yaml_files()
    assert len(files) >= 7, files
    try:
        import yaml
    except ImportError:
        yaml = None  # the subset parser alone (it refuses what it does not understand)
    for p in files:
        docs = yaml_docs(p)
        assert docs, p
        if yaml is not None:
            assert docs == [d for d in yaml.safe_load_all(p.read_text()) if d is not None], p


def test_yaml_subset_parser_refuses_what_it_cannot_read():
    # the checks above mean something only if the parser fails loudly on what it does not handle
    bad = ["a: {b: 1}\n", "a: [1, 2]\n", "a: |\n  x\n", "a: on\n", "mode: 0755\n",
           "a: 1\n  b: 2\n", "a: 1\na: 2\n", "a: 'x\n", "- a\nb: 1\n", "- 22:22\n"]
    for text in bad:
        ls = _lines(text, "t")
        with pytest.raises(YamlError):
            value, i = _node(ls[0], 0)
            if i != len(ls[0]):
                raise YamlError("unexpected line")
    good = "a:\n  - x: '1'\n    y: \"a\\tb\"\n  - - 2\n    - 3.5\nb: c:d # note\ne:\n- null\n- {}\n"
    ls = _lines(good, "t")
    assert _node(ls[0], 0)[0] == {"a": [{"x": "1", "y": "a\tb"}, [2, 3.5]], "b": "c:d", "e": [None, {}]}


def test_kustomization_lists_the_objects():
    (k,) = yaml_docs(K8S / "kustomization.yaml")
    for r in k["resources"]:
        assert (K8S / r).is_file(), r
    kinds = {d["kind"] for r in k["resources"] for d in yaml_docs(K8S / r)}
    assert kinds == {"Deployment", "Service", "ServiceMonitor", "HorizontalPodAutoscaler"}, kinds
    # the HPA owns the replica count once kustomize applies it
    ops = [json.loads(p["patch"]) for p in k["patches"] if p["target"]["kind"] == "Deployment"]
    assert {"op": "remove", "path": "/spec/replicas"} in [o for ps in ops for o in ps]


def test_kubectl_kustomize_builds():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: kustomize output not checked")
    try:
        r = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.skip("kubectl kustomize did not finish in 60 s")
    assert r.returncode == 0, r.stderr
    docs = r.stdout.split("\n---\n")
    kinds = sorted(re.search(r"^kind: (\S+)", d, re.M).group(1) for d in docs)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "Service", "ServiceMonitor"], kinds
    dep = next(d for d in docs if re.search(r"^kind: Deployment", d, re.M))
    assert not re.search(r"^  replicas:", dep, re.M), "the patch did not remove spec.replicas"


def container():
    dep = k8s_objects()["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def container_env(c):
    """The container's variables as a process would see them (resourceFieldRef resolved, secrets left out)."""
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"].get("resourceFieldRef")
        if ref:
            assert ref["containerName"] == c["name"], ref
            q = c["resources"]["limits"][ref["resource"].split(".")[1]]
            env[e["name"]] = str(math.ceil(float(q) / float(ref.get("divisor", "1"))))
    return env


def test_kubernetes_objects_fit_together():
    objs = k8s_objects()
    dep, c = container()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel.items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = container_env(c)
    assert ports["http"] == int(env["SLUICE_PORT"])
    assert env["SLUICE_HOST"] in ("0.0.0.0", "::"), "a pod must listen beyond loopback"
    svc = objs["Service"]
    assert svc["spec"]["selector"].items() <= labels.items()
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert svc_ports["http"]["targetPort"] in ports or svc_ports["http"]["targetPort"] in ports.values()
    sm = objs["ServiceMonitor"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= svc_ports.keys()
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert int(ann["prometheus.io/port"]) == ports["http"]
    hpa = objs["HorizontalPodAutoscaler"]
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_threads_follow_the_cpu_limit():
    # sluice counts CPUs by affinity, which a CFS quota does not narrow: the thread count must
    # come from the limit, and requests == limits keeps the pod Guaranteed
    _, c = container()
    (e,) = [e for e in c["env"] if e["name"] == "SLUICE_THREADS"]
    assert e["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    assert c["resources"]["requests"] == c["resources"]["limits"]


# ----------------------------------------------------------------------------
# against the daemon

def test_probe_paths_answer_200(daemon):
    dep, c = container()
    paths = {name: c[name]["httpGet"]["path"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    # readiness must be the endpoint that turns 503 while loading, draining or full; liveness the one
    # that stays 200 through all of those (a busy or draining pod must not be restarted)
    assert paths["readinessProbe"] == "/health/ready" and paths["livenessProbe"] == "/health", paths
    port_names = {port["name"] for port in c["ports"]}
    for name in paths:
        assert c[name]["httpGet"]["port"] in port_names, name
    sm = k8s_objects()["ServiceMonitor"]
    paths.update({f"servicemonitor{i}": e["path"] for i, e in enumerate(sm["spec"]["endpoints"])})
    paths["annotation"] = dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    for name, p in paths.items():
        r = requests.get(daemon.url + p, timeout=10)
        assert r.status_code == 200, f"{name}: GET {p} -> {r.status_code}"
    assert "sluice:num_requests_running" in requests.get(daemon.url + paths["annotation"], timeout=10).text


def run_check(argv, port):
    env = dict(os.environ, SLUICE_PORT=str(port))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).returncode


def healthchecks():
    """(name, argv) of each container health check, as Docker / compose would run it."""
    out = []
    for df in sorted(DOCKER.glob("Dockerfile*")):
        if df.name.endswith(".dockerignore"):
            continue
        runtime = dockerfile(df)[-1][1]
        cmd = healthcheck_cmd(runtime)
        argv = json.loads(cmd) if cmd.startswith("[") else ["/bin/sh", "-c", cmd]  # shell form
        out.append((df.name, argv))
    (compose,) = yaml_docs(DOCKER / "compose.yaml")
    for name, svc in compose["services"].items():
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD", test
        out.append((f"compose {name}", [compose_interpolate(t) for t in test[1:]]))
    return out


def compose_interpolate(s):
    """What compose makes of a value on a host without SLUICE_* variables: "$$" is a literal "$",
    ${X:-default} is the default and $X or ${X} is empty (so an unescaped "$" is caught)."""
    def sub(m):
        return "$" if m.group(0) == "$$" else (m.group(2) or "")
    return re.sub(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)", sub, s)


def test_healthchecks_pass_on_a_live_daemon_and_fail_on_a_dead_port(daemon):
    checks = healthchecks()
    assert len(checks) >= 2
    dead = free_port()
    for name, argv in checks:
        assert re.search(r"GET /health HTTP", " ".join(argv)), f"{name}: not a GET /health"
        assert run_check(argv, daemon.port) == 0, f"{name}: fails against a ready daemon: {argv}"
        assert run_check(argv, dead) != 0, f"{name}: passes against a closed port"


def test_metrics_named_exist(metric_names):
    named = {}
    for p in deploy_files():
        text = p.read_text()
        # metric names all hold an underscore; an image tag such as sluice:latest does not
        for m in re.finditer(r"\bsluice:([a-z]+_[a-z_]*[a-z])", text):
            named.setdefault("sluice:" + m.group(1), p.name)
        for m in re.finditer(r"\bsluice_([a-z]+_[a-z_]*[a-z])\b", text):  # the adapter's rename of sluice:X
            named.setdefault("sluice:" + m.group(1), p.name)
    assert "sluice:num_requests_waiting" in named
    missing = {n: f for n, f in named.items() if n not in metric_names}
    assert not missing, f"metrics named in the deployment files but not on /metrics: {missing}"


def test_hpa_metric_is_the_adapters_name_for_a_gauge(metric_names):
    hpa = k8s_objects()["HorizontalPodAutoscaler"]
    (m,) = hpa["spec"]["metrics"]
    assert m["type"] == "Pods"
    wanted = m["pods"]["metric"]["name"]
    (values,) = yaml_docs(K8S / "prometheus-adapter-rules.yaml")
    served = {}
    for rule in values["rules"]["custom"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        as_ = re.sub(r"\$\{(\d+)\}", r"\\g<\1>", rule["name"]["as"])
        served[re.sub(rule["name"]["matches"], as_, series)] = (series, rule)
        assert set(rule["resources"]["overrides"]) >= {"namespace", "pod"}, "per-pod values for a Pods metric"
    assert wanted in served, f"{wanted} is not served by any adapter rule: {sorted(served)}"
    series = served[wanted][0]
    assert metric_names.get(series) == "gauge", f"{series}: {metric_names.get(series)}"


# ----------------------------------------------------------------------------
# names and values against --help

# Variables of the test scripts, not of sluice (scripts/test-container.sh's cache folder).
TEST_ENVS = {"SLUICE_CACHE"}


def test_env_vars_named_exist(help_text):
    envs = help_envs(help_text) | TEST_ENVS
    assert {"SLUICE_MODEL", "SLUICE_HOST", "SLUICE_PORT", "SLUICE_SHUTDOWN_TIMEOUT"} <= envs
    named = {}
    for p in deploy_files():
        for m in re.finditer(r"\bSLUICE_[A-Z0-9_]*[A-Z0-9]", p.read_text()):
            named.setdefault(m.group(0), p.name)
    missing = {n: f for n, f in named.items() if n not in envs}
    assert not missing, f"variables named in the deployment files but not in sluice --help: {missing}"


# Options of other programs (docker, kubectl, helm, apt, pip, useradd, ...) that the files name;
# any other --word must be a sluice flag.
OTHER_TOOLS_FLAGS = {
    "--rm", "--stop-timeout", "--gpus", "--build", "--build-arg", "--from", "--interval", "--start-period",
    "--retries", "--no-install-recommends", "--system", "--gid", "--uid", "--no-create-home", "--home-dir",
    "--shell", "--raw", "--install", "--set", "--from-literal", "--namespace", "--env", "--publish",
    "--volume", "--tag", "--file", "--platform", "--cpus", "--cpuset-cpus", "--memory", "--name", "--values",
    "--strict", "--mount", "--secret", "--read-only", "--pull", "--format", "--ignorefile", "--target",
    "--runtime", "--ulimit", "--variant",
}


def test_flags_named_exist(help_text):
    flags = help_flags(help_text)
    named = {}
    for p in deploy_files():
        for m in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", p.read_text()):
            named.setdefault(m.group(0), p.name)
    missing = {n: f for n, f in named.items() if n not in flags and n not in OTHER_TOOLS_FLAGS}
    assert not missing, f"flags named in the deployment files but not in sluice --help: {missing}"


def accepts(env):
    """Whether sluice accepts these variables: --help exits 2 on a bad value of any of them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    r = subprocess.run([str(binary()), "--help"], env={**clean, **env}, capture_output=True, text=True, timeout=60)
    return r.returncode == 0, r.stderr.strip()


def test_env_values_are_accepted(help_text):
    ok, msg = accepts({"SLUICE_PORT": "eighty"})
    assert not ok and "SLUICE_PORT" in msg, "a bad value must be refused, or this test proves nothing"
    sets = {"deployment": container_env(container()[1])}
    (compose,) = yaml_docs(DOCKER / "compose.yaml")
    for name, svc in compose["services"].items():
        sets[f"compose {name}"] = {k: str(v) for k, v in svc["environment"].items()}
    for df in sorted(DOCKER.glob("Dockerfile*")):
        if not df.name.endswith(".dockerignore"):
            sets[df.name] = env_of(dockerfile(df)[-1][1])
    for name, env in sets.items():
        assert env, name
        ok, msg = accepts(env)
        assert ok, f"{name}: sluice refuses its variables: {msg}"


def seconds(v):
    m = re.fullmatch(r"(\d+)(s|m)?", str(v))
    assert m, v
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def test_grace_periods_outlast_the_drain(help_text):
    default = float(help_default(help_text, "--shutdown-timeout"))
    dep, c = container()
    env = container_env(c)
    drain = float(env.get("SLUICE_SHUTDOWN_TIMEOUT", default))
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep"
    # sluice needs up to ~15 s after the drain to end aborted streams and stop (server_drain, live_stop)
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= float(pre[1]) + drain + 15
    (compose,) = yaml_docs(DOCKER / "compose.yaml")
    for svc in compose["services"].values():
        t = float(svc["environment"].get("SLUICE_SHUTDOWN_TIMEOUT", default))
        assert seconds(svc["stop_grace_period"]) >= t + 15


# ----------------------------------------------------------------------------
# the Dockerfile against setup.sh, the Makefile and the binary

def setup_packages():
    m = re.search(r"DEB_PKGS=\(([^)]*)\)", (ROOT / "scripts" / "setup.sh").read_text())
    return set(m.group(1).split())


# setup.sh's packages for the tests, benchmarks and fuzz harnesses (clang, libFuzzer, OpenMP for clang)
TEST_ONLY_PACKAGES = {"python3-venv", "curl", "wrk", "chromium", "chromium-driver", "clang", "libclang-rt-dev",
                      "libomp-dev"}


def test_dockerfile_builds_like_setup_and_the_makefile(help_text):
    stages = dockerfile(DOCKER / "Dockerfile")
    assert [n for n, _ in stages] == ["model", "build", "runtime"]
    assert all(i[0][1] in ("${DEBIAN}", "debian:bookworm-slim") for _, i in stages)
    assert re.search(r"^ARG DEBIAN=debian:bookworm", (DOCKER / "Dockerfile").read_text(), re.M)
    installed = set().union(*(apt_installs(i) for _, i in stages))
    missing = setup_packages() - TEST_ONLY_PACKAGES - installed
    assert not missing, f"scripts/setup.sh installs {missing}; the Dockerfile does not"
    build = stage(stages, "build")
    make = [a for w, a in build if w == "RUN" and re.search(r"\bmake\b[^&;|]*\bbuild/sluice\b", a)]
    assert len(make) == 1 and re.search(r"\bmake\b[^&;|]*\bCUDA=0\b", make[0]), make
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^BUILD\s*\?=\s*build$", makefile, re.M) and re.search(r"^\$\(BUILD\)/sluice:", makefile, re.M)
    assert re.search(r"^ARCH\s*\?=", makefile, re.M), "the Dockerfile overrides ARCH"
    rt = stage(stages, "runtime")
    env = env_of(rt)
    assert env["SLUICE_HOST"] == "0.0.0.0"
    (expose,) = [a for w, a in rt if w == "EXPOSE"]
    assert int(expose) == int(env["SLUICE_PORT"]) == int(help_default(help_text, "--port"))
    (user,) = [a for w, a in rt if w == "USER"]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), "a numeric non-root user"
    (entry,) = [json.loads(a) for w, a in rt if w == "ENTRYPOINT"]
    copies = [a.split() for w, a in rt if w == "COPY"]
    assert ["--from=build", "/src/build/sluice", entry[0]] in copies
    fetch = (ROOT / "scripts" / "fetch-model.sh").read_text()
    name = re.search(r"^NAME=(\S+)", fetch, re.M).group(1)
    assert Path(env["SLUICE_MODEL"]).name == name, "the baked model is fetch-model.sh's"
    assert ["--from=model", "/src/models/", str(Path(env["SLUICE_MODEL"]).parent) + "/"] in copies


# Sanitizer runtimes (make san) are not in a release build; libc6 and libgcc-s1 are in every
# Debian base image. A CUDA build (CUDA=1, where nvcc exists) is not what docker/Dockerfile builds.
SANITIZER_LIBS = re.compile(r"^lib(asan|ubsan|lsan|tsan)\.")
CUDA_LIBS = re.compile(r"^lib(cuda|cudart|cublas|cublasLt|nccl|nvrtc)\.")
BASE_PACKAGES = {"libc6", "libgcc-s1"}


def test_runtime_stage_holds_every_linked_library():
    if not (shutil.which("readelf") and shutil.which("dpkg")):
        pytest.skip("readelf or dpkg missing: linked libraries not mapped to packages")
    r = subprocess.run(["readelf", "-d", str(binary())], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    needed = [n for n in re.findall(r"\(NEEDED\).*\[(.+?)\]", r.stdout) if not SANITIZER_LIBS.match(n)]
    if any(CUDA_LIBS.match(n) for n in needed):
        pytest.skip("a CUDA build: docker/Dockerfile builds CUDA=0 (Dockerfile.cuda is unverified)")
    assert "libmicrohttpd.so.12" in needed, needed
    runtime = apt_installs(stage(dockerfile(DOCKER / "Dockerfile"), "runtime"))
    for lib in needed:
        q = subprocess.run(["dpkg", "-S", f"*/{lib}"], capture_output=True, text=True, timeout=30)
        assert q.returncode == 0, f"{lib}: no Debian package holds it: {q.stderr}"
        pkgs = {line.split(":")[0] for line in q.stdout.splitlines()}
        assert pkgs & (runtime | BASE_PACKAGES), f"{lib} (package {pkgs}) is not installed in the runtime stage"
