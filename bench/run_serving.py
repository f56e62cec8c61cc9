#!/usr/bin/env python3
"""The CPU serving comparison of issue 9: llama-server (the peer) against sluice.

Both serve the same GGUF with the same thread count and get the same requests from
bench/serve.py.

    python3 bench/run_serving.py [--quick] [--servers peer,sluice] [--scenarios rand512-c1,...]

For every scenario each server is started fresh (the protocol restarts between runs), waited
for, benchmarked, and stopped. llama-server gets -t/-tb THREADS, -np SLOTS (the scenario's
concurrency) and -c SLOTS * (context per slot); sluice gets --threads THREADS. The peer binary
comes from scripts/build-llama-server.sh (built once into ~/.cache/sluice). If sluice cannot
start or never reports /health/ready, the reason is printed and the peer's table still is.

Writes bench/results/<stamp>/: one serve.py JSON per (server, scenario), the servers' logs,
summary.json and summary.md (tables ready for docs/benchmarks.md). Exit status 0 only when
every requested server ran every scenario with no failed request.
"""
import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve  # noqa: E402

ROOT = serve.ROOT

# name: (serve.py flags, llama-server slots, context per slot). Random prompts are token ids on
# /v1/completions (exact lengths); ShareGPT-like ones are text on /v1/chat/completions.
RANDOM = "--backend openai --dataset-name random --random-input-len {i} --random-output-len {o} --ignore-eos"
SHAREGPT = "--backend openai-chat --dataset-name sharegpt-like --ignore-eos"
FULL = {
    "rand512-c1": (RANDOM.format(i=512, o=128) + " --max-concurrency 1 --num-prompts 16 --num-warmups 1", 1, 768),
    "rand512-c2": (RANDOM.format(i=512, o=128) + " --max-concurrency 2 --num-prompts 16 --num-warmups 2", 2, 768),
    "rand512-c4": (RANDOM.format(i=512, o=128) + " --max-concurrency 4 --num-prompts 32 --num-warmups 4", 4, 768),
    "rand512-c8": (RANDOM.format(i=512, o=128) + " --max-concurrency 8 --num-prompts 48 --num-warmups 8", 8, 768),
    "rand512-c16": (RANDOM.format(i=512, o=128) + " --max-concurrency 16 --num-prompts 64 --num-warmups 16", 16, 768),
    "ttft2000": (RANDOM.format(i=2000, o=1) + " --max-concurrency 1 --num-prompts 8 --num-warmups 1", 1, 2304),
    "sharegpt-r1": (SHAREGPT + " --request-rate 1 --num-prompts 32 --num-warmups 2", 16, 2304),
    "sharegpt-r2": (SHAREGPT + " --request-rate 2 --num-prompts 32 --num-warmups 2", 16, 2304),
    "sharegpt-r4": (SHAREGPT + " --request-rate 4 --num-prompts 32 --num-warmups 2", 16, 2304),
}
# --quick: the same shapes, few prompts and short outputs: a smoke run of a minute or two per server.
QUICK = {
    "rand512-c1": (RANDOM.format(i=512, o=32) + " --max-concurrency 1 --num-prompts 4 --num-warmups 1", 1, 768),
    "rand512-c8": (RANDOM.format(i=512, o=32) + " --max-concurrency 8 --num-prompts 8 --num-warmups 0", 8, 768),
    "ttft2000": (RANDOM.format(i=2000, o=1) + " --max-concurrency 1 --num-prompts 2 --num-warmups 0", 1, 2304),
    "sharegpt-r2": (SHAREGPT + " --request-rate 2 --num-prompts 8 --num-warmups 0 --sharegpt-output-len 32", 8, 2304),
}
# (result key, title, True when higher is better)
COMPARED = [
    ("request_throughput", "req/s", True), ("output_throughput", "out tok/s", True),
    ("median_ttft_ms", "TTFT p50", False), ("p99_ttft_ms", "TTFT p99", False),
    ("median_tpot_ms", "TPOT p50", False), ("mean_tpot_ms", "TPOT mean", False),
    ("median_itl_ms", "ITL p50", False), ("p99_itl_ms", "ITL p99", False),
    ("median_e2el_ms", "E2EL p50", False),
]
# The issue's targets: (scenario, key, bound on sluice/peer, "min" or "max")
TARGETS = [("rand512-c8", "output_throughput", 1.5, "min"), ("rand512-c1", "median_tpot_ms", 1.0, "max"),
           ("rand512-c1", "median_ttft_ms", 1.0, "max")]


def cpu_snapshot(pid):
    """(machine busy seconds, the server's CPU seconds, this process's CPU seconds, wall time)."""
    tck = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v[:8]) - v[3] - v[4]  # user..steal, less idle and iowait
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        server = int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        server = 0
    t = os.times()
    return busy / tck, server / tck, t.user + t.system, time.time()


def others_share(before, after, cores):
    """Fraction of the machine's CPU that other processes used between two snapshots: the noise."""
    busy, server, me, wall = (a - b for a, b in zip(after, before))
    if wall <= 0:
        return 0.0
    return max(0.0, (busy - server - me) / (wall * cores))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


class Server:
    """One server process: started, waited for, stopped (only this process, by its pid)."""

    def __init__(self, name, cmd, ready_path, log_path, env=None):
        self.name, self.cmd, self.ready_path, self.log_path = name, cmd, ready_path, log_path
        self.port = int(cmd[cmd.index("--port") + 1])
        self.url = "http://127.0.0.1:%d" % self.port
        self.env = env
        self.proc = None

    def start(self, timeout):
        """Returns None when ready, else why not."""
        self.log = open(self.log_path, "w")
        self.log.write("$ %s\n" % shlex.join(self.cmd))
        self.log.flush()
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        except OSError as e:
            return "cannot start %s: %s" % (self.cmd[0], e)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                return "exited with status %d before it was ready (log: %s)" % (self.proc.returncode, self.log_path)
            if http_status(self.url + self.ready_path) == 200:
                self.ready_s = time.time() - t0
                return None
            time.sleep(0.2)
        return "not ready after %.0f s (log: %s)" % (timeout, self.log_path)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()


def peer_binary(args):
    if args.llama_server:
        return args.llama_server
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "build-llama-server.sh")], stdout=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        return None
    return r.stdout.strip().splitlines()[-1]


def peer_version(binary):
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(("version", "built"))]
        return "; ".join(lines) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_server(kind, args, slots, ctx_per_slot, out_dir, scenario):
    port = free_port()
    log = os.path.join(out_dir, "%s-%s.log" % (kind, scenario))
    t = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=t)
    if kind == "peer":
        cmd = [args.peer_bin, "-m", args.model, "-t", t, "-tb", t, "-np", str(slots), "-c", str(slots * ctx_per_slot),
               "--host", "127.0.0.1", "--port", str(port), "--alias", "peer", "--jinja"] + shlex.split(args.peer_args)
        return Server("peer", cmd, "/health", log, env)
    cmd = [args.sluice, "--model", args.model, "--host", "127.0.0.1", "--port", str(port), "--threads", t]
    return Server("sluice", cmd + shlex.split(args.sluice_args), "/health/ready", log, env)


def run_one(kind, args, scenario, spec, out_dir):
    flags, slots, ctx = spec
    srv = make_server(kind, args, slots, ctx, out_dir, scenario)
    why = srv.start(args.ready_timeout)
    try:
        if why:
            return None, why
        argv = shlex.split(flags) + [
            "--base-url", srv.url, "--label", kind, "--tokenizer-gguf", args.model, "--seed", str(args.seed),
            "--save-result", "--save-detailed", "--result-dir", out_dir, "--result-filename",
            "%s-%s.json" % (kind, scenario), "--metadata", "scenario=" + scenario,
            "server_cmd=" + shlex.join(srv.cmd), "--quiet"]
        if args.temperature is not None:
            argv += ["--temperature", str(args.temperature)]
        if args.num_prompts:  # argparse keeps the last value: these override the scenario's
            argv += ["--num-prompts", str(args.num_prompts)]
        if args.num_warmups is not None:
            argv += ["--num-warmups", str(args.num_warmups)]
        bench_log = os.path.join(out_dir, "%s-%s.bench.txt" % (kind, scenario))
        snap = cpu_snapshot(srv.proc.pid)
        with open(bench_log, "w") as f, contextlib.redirect_stdout(f):
            print("$ bench/serve.py " + shlex.join(argv))
            res = serve.benchmark(serve.parse_args(argv))
        res["others_cpu_share"] = others_share(snap, cpu_snapshot(srv.proc.pid), serve.machine_info()["cores"])
        with open(os.path.join(out_dir, "%s-%s.json" % (kind, scenario)), "w") as f:
            json.dump(res, f, indent=1)
        if srv.proc.poll() is not None:
            return res, "exited with status %d during the run (log: %s)" % (srv.proc.returncode, srv.log_path)
        return res, None
    except (RuntimeError, OSError, ValueError) as e:
        return None, str(e)
    finally:
        srv.stop()


def fmt(v):
    if v is None:
        return "-"
    return "%.0f" % v if abs(v) >= 100 else "%.2f" % v if abs(v) >= 1 else "%.3f" % v


def server_table(results, scenarios):
    """One row per scenario; "others" is the share of the machine's CPU that processes other than
    the server and the client used during the scenario (0% on a quiet machine)."""
    head = "| scenario | done/failed | " + " | ".join(t for _, t, _ in COMPARED) + " | others |"
    rows = [head, "|" + "---|" * (len(COMPARED) + 3)]
    for sc in scenarios:
        r = results.get(sc)
        if r is None:
            continue
        others = r.get("others_cpu_share")
        rows.append("| %s | %d/%d | %s | %s |" % (sc, r["completed"], r["failed"],
                                                   " | ".join(fmt(r.get(k)) for k, _, _ in COMPARED),
                                                   "%.0f%%" % (100 * others) if others is not None else "-"))
    return "\n".join(rows)


def busy_warning(results):
    """A line when other processes took more than 10% of the machine during any scenario."""
    shares = [r["others_cpu_share"] for v in results.values() for r in v.values()
              if r.get("others_cpu_share") is not None]
    if shares and max(shares) > 0.10:
        return ("WARNING: other processes used up to %.0f%% of the machine's CPU during a scenario "
                "(column 'others'): these numbers are not reliable; rerun on a quiet machine." % (100 * max(shares)))
    return None


def ratio_table(peer, sluice, scenarios):
    rows = ["| scenario | " + " | ".join(t for _, t, _ in COMPARED) + " |", "|" + "---|" * (len(COMPARED) + 1)]
    for sc in scenarios:
        if sc in peer and sc in sluice:
            cells = []
            for k, _, _ in COMPARED:
                p, s = peer[sc].get(k), sluice[sc].get(k)
                cells.append("%.2f" % (s / p) if p and s is not None else "-")
            rows.append("| %s | %s |" % (sc, " | ".join(cells)))
    return "\n".join(rows)


def target_lines(peer, sluice):
    out = []
    for sc, key, bound, kind in TARGETS:
        if sc in peer and sc in sluice and peer[sc].get(key):
            r = sluice[sc][key] / peer[sc][key]
            ok = r >= bound if kind == "min" else r <= bound
            out.append("- %s %s: sluice/peer = %.2f (target %s %.2f): %s" % (
                sc, key, r, ">=" if kind == "min" else "<=", bound, "met" if ok else "NOT met"))
        else:
            out.append("- %s %s: not measured on both servers" % (sc, key))
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run (few prompts, short outputs)")
    ap.add_argument("--servers", default="peer,sluice", help="comma list of peer, sluice")
    ap.add_argument("--scenarios", default=None,
                    help="comma list (default: all of the chosen set): " + ", ".join(FULL))
    ap.add_argument("--num-prompts", type=int, default=None, help="override every scenario's prompt count")
    ap.add_argument("--num-warmups", type=int, default=None, help="override every scenario's warm-up count")
    ap.add_argument("--model", default=serve.DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.0, help="sent with every request (greedy by default)")
    ap.add_argument("--llama-server", default=None, help="peer binary (default: scripts/build-llama-server.sh)")
    ap.add_argument("--peer-args", default="", help="extra llama-server flags")
    ap.add_argument("--sluice", default=os.path.join(ROOT, "build", "sluice"))
    ap.add_argument("--sluice-args", default="", help="extra sluice flags")
    ap.add_argument("--ready-timeout", type=float, default=120.0)
    ap.add_argument("--out", default=None, help="results folder (default bench/results/<stamp>)")
    a = ap.parse_args(argv)
    table = QUICK if a.quick else FULL
    names = a.scenarios.split(",") if a.scenarios else list(table)
    for n in names:
        if n not in table:
            ap.error("unknown scenario %r (have: %s)" % (n, ", ".join(table)))
    a.plan = [(n, table[n]) for n in names]
    a.server_list = [s for s in a.servers.split(",") if s]
    for s in a.server_list:
        if s not in ("peer", "sluice"):
            ap.error("unknown server %r" % s)
    a.out = a.out or os.path.join(ROOT, "bench", "results", datetime.now().strftime("%Y%m%d-%H%M%S"))
    return a


def main(argv=None):
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that run_one's finally stops the server it started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(args.out, exist_ok=True)
    machine = serve.machine_info()
    info = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "git_commit": serve.git_commit(), "machine": machine,
            "model": os.path.relpath(args.model, ROOT), "threads": args.threads, "quick": args.quick,
            "load_average_start": serve.load_average(),
            # both servers inherit it; passive waits help a shared machine, spinning a quiet one
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)")}
    print("serving comparison: %s, commit %s, %s (%d cores), load %s" % (
        info["date"], info["git_commit"][:12], machine["cpu"], machine["cores"], info["load_average_start"]))
    results, problems, issues = {s: {} for s in args.server_list}, {}, []
    if "peer" in args.server_list:
        args.peer_bin = peer_binary(args)
        if not args.peer_bin:
            problems["peer"] = "llama-server could not be built (scripts/build-llama-server.sh failed)"
        else:
            info["peer_version"] = peer_version(args.peer_bin)
            print("peer: %s (%s)" % (args.peer_bin, info["peer_version"]))
    if "sluice" in args.server_list and not os.access(args.sluice, os.X_OK):
        problems["sluice"] = "%s does not exist (build it with make)" % args.sluice
    for kind in args.server_list:
        for name, spec in args.plan:
            if kind in problems:
                break
            t0 = time.time()
            res, why = run_one(kind, args, name, spec, args.out)
            if res is not None:
                results[kind][name] = res
                print("  %-6s %-12s %5.1fs  %3d ok %2d failed  out %7.1f tok/s  TTFT p50 %7.1f ms  TPOT p50 %6.2f ms" % (
                    kind, name, time.time() - t0, res["completed"], res["failed"], res["output_throughput"],
                    res["median_ttft_ms"], res["median_tpot_ms"]), flush=True)
            if why:
                print("  %-6s %-12s FAILED: %s" % (kind, name, why), flush=True)
                issues.append("%s %s: %s" % (kind, name, why))
                if res is None and not results[kind]:
                    # nothing has worked yet: the server cannot serve; skip its other scenarios
                    problems[kind] = "NOT SERVABLE: " + why
    info["load_average_end"] = serve.load_average()
    scen = [n for n, _ in args.plan]

    md = ["Date %s, commit %s, %s, %d cores, model %s, %d threads%s, OMP_WAIT_POLICY %s. Load average %s at the "
          "start, %s at the end." % (info["date"], info["git_commit"][:12], machine["cpu"], machine["cores"],
                                     info["model"], args.threads, ", quick run" if args.quick else "",
                                     info["OMP_WAIT_POLICY"], info["load_average_start"], info["load_average_end"])]
    if info.get("peer_version"):
        md.append("Peer: llama-server %s." % info["peer_version"])
    for kind in args.server_list:
        md += ["", "**%s**" % kind, ""]
        md.append(server_table(results[kind], scen) if results[kind] else "(no results)")
    if "peer" in results and "sluice" in results and results["peer"] and results["sluice"]:
        md += ["", "**sluice / peer** (above 1 is better for req/s and tok/s, below 1 for latencies)", "",
               ratio_table(results["peer"], results["sluice"], scen), ""]
        md += target_lines(results["peer"], results["sluice"])
    warn = busy_warning(results)
    if warn:
        md += ["", warn]
    for kind, why in problems.items():
        md += ["", "**%s: %s**" % (kind, why)]
    if issues:
        md += ["", "Failures:"] + ["- " + i for i in issues]
    text = "\n".join(md)
    print()
    print(text)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"info": info, "problems": problems, "issues": issues,
                   "results": {k: {n: {m: r.get(m) for m, _, _ in COMPARED} for n, r in v.items()}
                               for k, v in results.items()}}, f, indent=1)
    print("\nresults in %s" % os.path.relpath(args.out, os.getcwd()))
    failed = any(r["failed"] for v in results.values() for r in v.values())
    return 1 if problems or issues or failed else 0


if __name__ == "__main__":
    sys.exit(main())
