#!/usr/bin/env python3
"""CPU speed of sluice against llama.cpp on the same GGUF, batch 1.

    /opt/refvenv/bin/python bench/cpu_vs_llamacpp.py [--runs 5] [--threads 2] [--model M]
        [--sluice-run build/sluice-run]

Measures, in the style of llama-bench's pp512 / tg128: the prefill of a 512-token prompt (one
forward step), then 128 greedy decode steps after it (one token each), and the peak RSS.
sluice is build/sluice-run --verbose (it prints its own timings); llama.cpp is llama-cpp-python
(/opt/refvenv, created by scripts/make-golden.sh) driving llama_decode directly, with no
sampler. Each run is a fresh process; the table shows medians over --runs runs.

Both sides get the same token ids: the prompt text is cut at 512 tokens of llama.cpp's
tokenizer, and sluice-run must report 512 prompt tokens for the run to count.
Peak RSS of the llama.cpp side includes the Python interpreter and numpy (~30 MiB).
The machine may be shared: say so next to any numbers you quote.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_PROMPT = 512
N_GEN = 128

PARAGRAPH = (
    "A lock is a device used for raising and lowering boats between stretches of water of "
    "different levels on river and canal waterways. The distinguishing feature of a lock is a "
    "fixed chamber in which the water level can be varied. Locks are used to make a river more "
    "easily navigable, or to allow a canal to cross land that is not level. "
)


def vm_hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def child_llama(model, threads, prompt_file):
    """One llama.cpp measurement in this process; prints a JSON line."""
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=False, flash_attn=False, verbose=False)
    load_ms = (time.perf_counter() - t0) * 1000
    ids = [int(x) for x in open(prompt_file).read().split()]
    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx
    t0 = time.perf_counter()
    llm.eval(ids)
    pp_ms = (time.perf_counter() - t0) * 1000
    tok = int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))))
    t0 = time.perf_counter()
    for _ in range(N_GEN):
        llm.eval([tok])
        tok = int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))))
    tg_ms = (time.perf_counter() - t0) * 1000
    print(json.dumps({"load_ms": load_ms, "pp_ms": pp_ms, "tg_ms": tg_ms, "rss": vm_hwm_bytes()}))


def make_prompt(model, path_ids, path_text):
    """512 tokens of text by llama.cpp's tokenizer: the ids and the text that encodes to them."""
    from llama_cpp import Llama

    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    ids = llm.tokenize((PARAGRAPH * 40).encode(), add_bos=False, special=False)[:N_PROMPT]
    text = llm.detokenize(ids).decode("utf-8")
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)
    if len(ids) != N_PROMPT:
        sys.exit("prompt re-encodes to %d tokens, not %d" % (len(ids), N_PROMPT))
    with open(path_ids, "w") as f:
        f.write(" ".join(map(str, ids)))
    with open(path_text, "w") as f:
        f.write(text)


def run_sluice(binary, model, threads, prompt_text):
    cmd = [binary, "--model", model, "--threads", str(threads), "--max-tokens", str(N_GEN + 1),
           "--ignore-eos", "--verbose", "--max-num-batched-tokens", str(N_PROMPT), "--prompt", prompt_text]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("sluice-run failed (%d): %s" % (r.returncode, r.stderr.strip()))
    err = r.stderr
    load = float(re.search(r"load ([\d.]+) ms", err).group(1))
    m = re.search(r"prompt (\d+) tokens in ([\d.]+) ms", err)
    if int(m.group(1)) != N_PROMPT:
        sys.exit("sluice-run saw %s prompt tokens, not %d" % (m.group(1), N_PROMPT))
    pp = float(m.group(2))
    m = re.search(r"(\d+) decode steps in ([\d.]+) ms", err)
    steps, tg = int(m.group(1)), float(m.group(2))
    if steps != N_GEN:
        sys.exit("sluice-run ran %d decode steps, not %d" % (steps, N_GEN))
    m = re.search(r"peak RSS ([\d.]+) (\w+)", err)
    scale = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}[m.group(2)]
    return {"load_ms": load, "pp_ms": pp, "tg_ms": tg, "rss": float(m.group(1)) * scale}


def run_llama(model, threads, prompt_ids):
    cmd = [sys.executable, os.path.abspath(__file__), "--child-llama", "--model", model, "--threads", str(threads),
           "--prompt-ids", prompt_ids]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("llama.cpp child failed (%d): %s" % (r.returncode, r.stderr.strip()[-2000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sluice-run", default=os.path.join(ROOT, "build", "sluice-run"))
    ap.add_argument("--child-llama", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prompt-ids", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_llama:
        return child_llama(a.model, a.threads, a.prompt_ids)

    tmp = "/tmp/sluice_bench_%d" % os.getpid()
    os.makedirs(tmp, exist_ok=True)
    ids_path, text_path = os.path.join(tmp, "prompt.ids"), os.path.join(tmp, "prompt.txt")
    make_prompt(a.model, ids_path, text_path)
    prompt_text = open(text_path).read()

    res = {"sluice": [], "llama.cpp": []}
    for i in range(a.runs):  # interleaved, so drifting load on a shared machine hits both alike
        res["sluice"].append(run_sluice(a.sluice_run, a.model, a.threads, prompt_text))
        res["llama.cpp"].append(run_llama(a.model, a.threads, ids_path))
        print("run %d/%d done" % (i + 1, a.runs), file=sys.stderr)

    def med(side, key):
        return statistics.median(r[key] for r in res[side])

    rows = [
        ("pp%d  prompt tok/s" % N_PROMPT, lambda s: N_PROMPT / (med(s, "pp_ms") / 1000), "%.1f", True),
        ("tg%d  decode tok/s" % N_GEN, lambda s: N_GEN / (med(s, "tg_ms") / 1000), "%.1f", True),
        ("load ms", lambda s: med(s, "load_ms"), "%.1f", False),
        ("peak RSS MiB", lambda s: med(s, "rss") / 2 ** 20, "%.1f", False),
    ]
    print("\n%s, %d threads, batch 1, medians of %d runs" % (os.path.basename(a.model), a.threads, a.runs))
    print("| %-22s | %10s | %10s | %14s |" % ("metric", "sluice", "llama.cpp", "sluice/llama"))
    print("|%s|%s|%s|%s|" % ("-" * 24, "-" * 12, "-" * 12, "-" * 16))
    for name, f, fmt, _higher_better in rows:
        s, l = f("sluice"), f("llama.cpp")
        print("| %-22s | %10s | %10s | %14s |" % (name, fmt % s, fmt % l, "%.2fx" % (s / l)))
    print("(tok/s: higher is better; load and RSS: lower is better. llama.cpp = llama-cpp-python 0.3.16 "
          "with KV f16, flash attention off; its RSS includes the Python interpreter.)")


if __name__ == "__main__":
    main()
