#!/usr/bin/env python3
"""Speculative decoding (n-gram proposals) against none, on the same model and threads (issue 18).

    python3 bench/speculative.py [--threads 2] [--rounds 3] [--max-tokens 192] [--spec JSON]

Two daemons (--speculative-config SPEC and none) serve the default model; the workloads run on
each in turn, round by round (interleaved, so a machine whose load drifts hurts both alike), and
the medians over the rounds are reported:

  grounded  input-grounded, greedy: rewrite a ~1,500-token document (docs/architecture.md's
            opening) and edit a C file (echo it back with one identifier renamed); at
            concurrency 1 each prompt on its own line ("rewrite", "code edit"), at 8 the two
            prompts 4 times each;
  random    random English words as the prompt, greedy.

At concurrency 1 the number is one request's output tokens / its end-to-end seconds
(single-stream tok/s); at concurrency 8, all output tokens / the wall time of the 8 requests.
The prompts are the same in every round and a warm-up request per prompt puts their KV in the
prefix cache on both daemons alike, so the numbers are about decoding. Acceptance =
accepted / proposed tokens over the speculative daemon's runs of that line (its spec_decode_*
counters).
Greedy outputs must be identical with and without speculation; the script checks it.
"""
import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from daemon import Server  # noqa: E402  (tests/daemon.py: a daemon on a free port)

SPEC = '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'


def chat(text):
    return "<|im_start|>user\n" + text + "<|im_end|>\n<|im_start|>assistant\n"


def workloads():
    doc = open(os.path.join(ROOT, "docs", "architecture.md")).read()[:6000]
    code = open(os.path.join(ROOT, "engine", "spec_ngram.c")).read()
    grounded = [chat("Rewrite the following document, keeping every sentence:\n\n" + doc),
                chat("In this C file, rename the variable `best` to `longest`. Output the whole file.\n\n" + code)]
    rng = random.Random(18)
    words = open(os.path.join(ROOT, "docs", "api.md")).read().split()
    rand = [chat(" ".join(rng.choice(words) for _ in range(300))) for _ in range(2)]
    return {"grounded: rewrite": grounded[:1], "grounded: code edit": grounded[1:], "grounded": grounded,
            "random": rand}


def post(srv, prompt, max_tokens):
    body = json.dumps({"model": srv.model_id(), "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(srv.url + "/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.loads(r.read())
    return time.time() - t0, out["usage"]["completion_tokens"], out["choices"][0]["text"]


def run(srv, prompts, conc, max_tokens):
    """(tok/s, texts): single-stream tok/s at concurrency 1, aggregate at more."""
    if conc == 1:
        res = [post(srv, p, max_tokens) for p in prompts[:1]]
        return res[0][1] / res[0][0], [r[2] for r in res]
    jobs = [prompts[i % len(prompts)] for i in range(conc)]
    res = [None] * conc

    def one(i):
        res[i] = post(srv, jobs[i], max_tokens)
    t0 = time.time()
    ts = [threading.Thread(target=one, args=(i,)) for i in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(r[1] for r in res) / (time.time() - t0), [r[2] for r in res]


def spec_counts(srv):
    m = srv.metrics()
    return (m.get("sluice:spec_decode_num_draft_tokens_total", 0), m.get("sluice:spec_decode_num_accepted_tokens_total", 0))


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--spec", default=SPEC)
    ap.add_argument("--server-args", default="", help="more daemon flags for both runs, e.g. '--cpu-activations int8'")
    a = ap.parse_args()
    base = ["--threads", str(a.threads), "--max-model-len", "4096", "--max-num-seqs", "16"] + a.server_args.split()
    servers = {"off": Server(base, base_args=[]), "ngram": Server(base + ["--speculative-config", a.spec], base_args=[])}
    wl = workloads()
    cases = [("grounded: rewrite", 1), ("grounded: code edit", 1), ("grounded", 8), ("random", 1), ("random", 8)]
    rates = {(w, c, s): [] for w, c in cases for s in servers}
    acc = {(w, c): [0, 0] for w, c in cases}
    try:
        for srv in servers.values():  # warm-up: every prompt's KV into the prefix cache
            for w in wl:
                for p in wl[w]:
                    post(srv, p, 1)
        for rnd in range(a.rounds):
            for w, c in cases:
                texts = {}
                for name, srv in servers.items():
                    d0 = spec_counts(srv)
                    r, texts[name] = run(srv, wl[w], c, a.max_tokens)
                    rates[(w, c, name)].append(r)
                    if name == "ngram":
                        d1 = spec_counts(srv)
                        acc[(w, c)][0] += d1[0] - d0[0]
                        acc[(w, c)][1] += d1[1] - d0[1]
                same = texts["off"] == texts["ngram"]
                print("round %d %-19s c%d: off %.1f tok/s, ngram %.1f tok/s%s" % (
                    rnd, w, c, rates[(w, c, "off")][-1], rates[(w, c, "ngram")][-1], "" if same else "  OUTPUT DIFFERS"),
                    flush=True)
                if not same:
                    sys.exit("greedy outputs differ with speculation")
    finally:
        for s in servers.values():
            s.stop()
    print("\nCPU: %s; --threads %d %s; %d rounds; max_tokens %d; %s" % (cpu_model(), a.threads, a.server_args,
                                                                        a.rounds, a.max_tokens, a.spec))
    print("| workload | concurrency | off tok/s (median) | ngram tok/s (median) | speed-up | acceptance |")
    print("|---|---|---|---|---|---|")
    for w, c in cases:
        off, on = statistics.median(rates[(w, c, "off")]), statistics.median(rates[(w, c, "ngram")])
        prop, ok = acc[(w, c)]
        print("| %s | %d | %.1f | %.1f | %.2fx | %s |" % (w, c, off, on, on / off,
                                                          "%.0f%% (%d of %d)" % (100.0 * ok / prop, ok, prop) if prop else "no proposals"))


if __name__ == "__main__":
    main()
