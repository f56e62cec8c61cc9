#!/usr/bin/env python3
"""Issue 16's side-by-side tables: sluice's CPU matmul paths against llama-server.

    python3 bench/cpu_matmul.py [--rounds 3] [--threads 1,2]
        [--model Q4_1=models/SmolLM2-135M-Instruct.Q4_1.gguf --model Q4_K_M=PATH]
        [--config peer --config sluice= --config "sluice-int8=--cpu-activations int8"]

For every round, thread count, model and configuration (in that nesting, so configurations are
interleaved and a slow spell of the shared machine hits them alike), a fresh server runs two
scenarios of bench/serve.py on /v1/completions with random token-id prompts, greedy, ignore_eos:

- c1: 512 prompt tokens + 128 output tokens, one request at a time (--c1-prompts requests after
  one warm-up). Prefill tok/s is 512 / median TTFT (TTFT also holds the HTTP round trip and the
  first sampled token: a few ms out of 1-2 s); TPOT is the median time per output token after it.
- c8: 512 + 128, 8 requests at a time (--c8-prompts requests after 2 warm-ups); output tok/s.

Servers start as bench/run_serving.py starts them (llama-server: -t/-tb THREADS, -np slots,
--jinja; sluice: --threads THREADS plus the configuration's flags). The table gives medians over
rounds and sluice / llama-server ratios with the issue's targets (prefill >= 1.3x, TPOT <= 0.7x,
c8 output >= 1.5x). Writes bench/results/cpu-matmul-<stamp>/ (every serve.py JSON, the servers'
logs, summary.json, summary.md).
"""
import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_serving  # noqa: E402
import serve  # noqa: E402

ROOT = serve.ROOT
N_IN, N_OUT = 512, 128
RANDOM = ("--backend openai --dataset-name random --random-input-len %d --random-output-len %d --ignore-eos"
          % (N_IN, N_OUT))
TARGETS = {"prefill": (1.3, "min"), "tpot": (0.7, "max"), "c8": (1.5, "min")}


def scenarios(a):
    return {"c1": (RANDOM + " --max-concurrency 1 --num-prompts %d --num-warmups 1" % a.c1_prompts, 1, 768),
            "c8": (RANDOM + " --max-concurrency 8 --num-prompts %d --num-warmups 2" % a.c8_prompts, 8, 768)}


def simd_flags():
    """The SIMD features that pick sluice's and llama.cpp's kernels, from /proc/cpuinfo."""
    want = ["avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8"]
    try:
        with open("/proc/cpuinfo") as f:
            have = next(l for l in f if l.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(w for w in want if w in have) or "none of " + " ".join(want)


def pairs(values, what):
    out = []
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep and what == "model":
            name, rest = os.path.basename(v), v
        out.append((name, rest))
    return out


def run_config(a, model, threads, config, flags, out_dir):
    """One configuration's two scenarios on a fresh server each: {metric: value} or raises."""
    kind = "peer" if config == "peer" else "sluice"
    ns = argparse.Namespace(model=model, threads=threads, seed=a.seed, temperature=0.0, num_prompts=None,
                            num_warmups=None, ready_timeout=180.0, peer_bin=a.peer_bin, peer_args="",
                            sluice=a.sluice, sluice_args=flags)
    got = {}
    for name, spec in scenarios(a).items():
        d = os.path.join(out_dir, config)
        os.makedirs(d, exist_ok=True)
        res, why = run_serving.run_one(kind, ns, name, spec, d)
        if why or res is None or res["failed"]:
            raise RuntimeError("%s %s: %s" % (config, name, why or "%d requests failed" % res["failed"]))
        if name == "c1":
            got["prefill"] = N_IN / (res["median_ttft_ms"] / 1000)
            got["tpot"] = res["median_tpot_ms"]
        else:
            got["c8"] = res["output_throughput"]
        got.setdefault("others", []).append(res["others_cpu_share"])
    got["others"] = max(got["others"])
    return got


def table(a, runs):
    lines = []
    for threads in a.threads:
        for mname, _ in a.models:
            peer = runs.get((threads, mname, "peer"))
            lines += ["", "**%s, %d thread%s** (medians of %d rounds; ratio = sluice / llama-server)" % (
                mname, threads, "" if threads == 1 else "s", a.rounds), "",
                "| server | prefill tok/s | ratio | TPOT c1 ms | ratio | c8 out tok/s | ratio | others max |",
                "|---|---|---|---|---|---|---|---|"]
            for cname, _ in a.configs:
                r = runs.get((threads, mname, cname))
                if not r:
                    continue
                med = {k: statistics.median(x[k] for x in r) for k in ("prefill", "tpot", "c8")}
                cells = []
                for k in ("prefill", "tpot", "c8"):
                    cells.append("%.1f" % med[k])
                    if cname == "peer" or not peer:
                        cells.append("")
                        continue
                    ratio = med[k] / statistics.median(x[k] for x in peer)
                    bound, kind = TARGETS[k]
                    ok = ratio >= bound if kind == "min" else ratio <= bound
                    cells.append("%.2fx %s" % (ratio, "met" if ok else "NOT met"))
                lines.append("| %s | %s | %.0f%% |" % (cname, " | ".join(cells),
                                                      100 * max(x["others"] for x in r)))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--model", action="append", default=None, help="NAME=PATH (repeatable)")
    ap.add_argument("--config", action="append", default=None,
                    help="peer, or NAME=SLUICE FLAGS (repeatable; default peer, sluice, sluice-int8)")
    ap.add_argument("--c1-prompts", type=int, default=8)
    ap.add_argument("--c8-prompts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--sluice", default=os.path.join(ROOT, "build", "sluice"))
    a = ap.parse_args(argv)
    a.threads = [int(t) for t in a.threads.split(",")]
    a.models = pairs(a.model or ["Q4_1=" + serve.DEFAULT_MODEL], "model")
    a.configs = pairs(a.config or ["peer", "sluice=", "sluice-int8=--cpu-activations int8"], "config")
    a.peer_bin = None
    if any(c == "peer" for c, _ in a.configs):
        a.peer_bin = run_serving.peer_binary(argparse.Namespace(llama_server=a.llama_server))
        if not a.peer_bin:
            sys.exit("llama-server could not be built (scripts/build-llama-server.sh failed)")
    out = os.path.join(ROOT, "bench", "results", "cpu-matmul-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    machine = serve.machine_info()
    head = "Date %s, commit %s, %s, %d cores, flags: %s. Load average %s at the start" % (
        datetime.now().strftime("%Y-%m-%d %H:%M"), serve.git_commit()[:12], machine["cpu"], machine["cores"],
        simd_flags(), serve.load_average())
    if a.peer_bin:
        head += "; peer llama-server %s" % run_serving.peer_version(a.peer_bin)
    print(head, flush=True)
    runs = {}
    for rnd in range(a.rounds):
        for threads in a.threads:
            for mname, mpath in a.models:
                for cname, flags in a.configs:
                    t0 = time.time()
                    d = os.path.join(out, "r%d-t%d-%s" % (rnd, threads, mname))
                    got = run_config(a, mpath, threads, cname, flags, d)
                    runs.setdefault((threads, mname, cname), []).append(got)
                    print("round %d  %d thr  %-7s %-12s prefill %6.1f tok/s  TPOT %6.2f ms  c8 %6.1f tok/s  "
                          "others %3.0f%%  (%.0f s)" % (rnd, threads, mname, cname, got["prefill"], got["tpot"],
                                                       got["c8"], 100 * got["others"], time.time() - t0),
                          flush=True)
    text = head + ", %s at the end.\n" % serve.load_average() + table(a, runs)
    print(text)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"%d/%s/%s" % k: v for k, v in runs.items()}, f, indent=1)
    print("\nresults in %s" % os.path.relpath(out, os.getcwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
