#!/usr/bin/env python3
"""Exact references for the requantized copies of the default model (tests/models/test_requant.py).

tests/models/test_requant.py requantizes models/SmolLM2-135M-Instruct.Q4_1.gguf with llama.cpp's
llama-quantize (scripts/build-llama-quantize.sh) into Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, Q2_K and
IQ4_XS. For each, this script runs scripts/make-golden-exact.py's float64 numpy forward over the
file's own weights (gguf-py's dequantizer, no sluice code), teacher-forced along each golden
prompt followed by the exact forward's greedy continuation from tests/data/golden/exact.txt:
one batched pass per prompt, the top-2 (id, logit) after each of the 64 positions. A decode loop
per file would take hours here; teacher-forcing along a fixed text gives every step's logits in
one pass, and where sluice's top-1 matches at every step whose margin is clear, its greedy run
follows the same text.

    nice .venv/bin/python scripts/make-golden-requant.py DIR     # DIR holds <TYPE>.gguf

writes tests/data/requant/<TYPE>.txt for each <TYPE>.gguf found, starting with the file's
sha256 (the test requires the same bytes: llama-quantize built with GGML_NATIVE=OFF quantizes
identically on every x86-64 machine). Format:

    sha256 <hex>
    prompt <index> n_tokens <n>            then: seq <n + 63 ids>  (prompt, continuation)
    top <step> <id> <logit> <id> <logit>   (64 lines: after position n - 1 + step)
    end
"""
import hashlib
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DIR = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
spec = importlib.util.spec_from_file_location("exact", os.path.join(HERE, "make-golden-exact.py"))
saved, sys.argv = sys.argv, sys.argv[:1]  # make-golden-exact reads its own arguments at import
exact = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exact)
sys.argv = saved
TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_M", "Q2_K", "IQ4_XS"]
OUT = os.path.join(ROOT, "tests", "data", "requant")


def main():
    os.makedirs(OUT, exist_ok=True)
    prompts = exact.read_forward(os.path.join(ROOT, "tests", "data", "golden", "exact.txt"))
    for t in TYPES:
        path = os.path.join(DIR, t + ".gguf")
        if not os.path.exists(path):
            print("%s: missing, skipped" % path, file=sys.stderr)
            continue
        t0 = time.time()
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        hp, w, _ = exact.load_model(path)
        model = exact.Model(hp, w)
        lines = ["# Made by scripts/make-golden-requant.py from %s.gguf (llama-quantize, see the script)" % t,
                 "sha256 " + sha]
        for p in prompts:
            seq = p["ids"] + p["greedy"][:-1]
            model.reset()
            logits = model.forward(seq, every=True)[len(p["ids"]) - 1:]
            lines.append("prompt %d n_tokens %d" % (p["index"], len(p["ids"])))
            lines.append("seq " + " ".join(str(i) for i in seq))
            for step, row in enumerate(logits):
                lines.append("top %d " % step + " ".join("%d %.5f" % (i, v) for i, v in exact.top_k(row, 2)))
            lines.append("end")
        with open(os.path.join(OUT, t + ".txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("%s: %.1fs" % (t, time.time() - t0), file=sys.stderr)


if __name__ == "__main__":
    main()
