#!/usr/bin/env python3
"""Golden forward-pass data for tests/unit/test_model.c, from llama.cpp (an independent
implementation) through llama-cpp-python 0.3.16 on the default model.

For each prompt it records the prompt's token ids (llama.cpp's tokenizer, so the model test does
not depend on ours), the 64-token greedy continuation, and the top-5 (id, logit) at each of the
64 steps. Greedy is exact: raw llama_decode + argmax over the logits, no sampler, no penalties.

It also records llama.cpp's teacher-forced view of the same text: prompt + continuation in one
llama_decode with logits for every row, and at each of the 64 rows that predict the
continuation, the argmax and the top-5. llama.cpp does not agree with itself between these two
paths (one prefill vs token-by-token decode differ by ~0.13 in a logit on average and pick a
different top-1 at ~2.5% of the rows), so a test compares prefill with prefill and decode with
decode.

Reference settings (written into the file header too): n_threads=2, n_ctx=1024, n_batch=512,
KV cache f16 (llama.cpp's default), flash attention off, whole prompt in one decode call, then
one token per call.

Needs the reference venv (/opt/refvenv, see scripts/make-golden.sh, which creates it):
    /opt/refvenv/bin/python scripts/make-golden-forward.py [model.gguf]
Writes tests/data/golden/forward.txt. The format is line-based text a C test reads with fscanf:

    # comment lines start with '#'
    prompts N
    prompt <index> chat <0|1> n_tokens <n>
    tokens <n ids>
    greedy <64> <64 ids>
    top <step> <id> <logit> ... (5 pairs, best first)   -- one line per step, decode
    tf <step> <id> <logit> ... (5 pairs, best first)    -- one line per step, teacher-forced
    end
"""
import os
import sys

import numpy as np

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:
    sys.exit("llama-cpp-python is missing: run scripts/make-golden.sh (it creates /opt/refvenv)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "data", "golden", "forward.txt")
N_GEN = 64
TOP_K = 5

LONG_TEXT = (
    "The history of canals is a history of patience. Long before railways crossed the "
    "continents, engineers learned to move heavy goods across flat country by cutting "
    "channels and filling them with water. A single horse walking on a towpath could pull a "
    "barge carrying fifty tons, far more than the same horse could drag on the roads of the "
    "time. The difficulty was never the flat stretches but the hills. To lift a boat from one "
    "level to another, builders used locks: a chamber closed by gates at each end. The boat "
    "enters, the lower gates close, and water flows in through sluices until the chamber "
    "reaches the upper level. Then the upper gates open and the boat continues on its way. "
    "Going down, the process runs in reverse. Every passage spends a lock full of water, so "
    "canals on high ground needed reservoirs and feeders to keep the summit supplied through "
    "dry summers. Some engineers built flights of locks, one after another like a staircase, "
    "while others preferred inclined planes or boat lifts that raised whole caissons of water "
    "with the boat floating inside. When the railways came, most canals lost their trade "
    "within a generation, and many were abandoned and filled in. In recent decades volunteers "
    "have restored hundreds of miles of them for leisure boating, walking and wildlife, and "
    "today the quiet water carries more pleasure craft than it ever carried coal. "
    "Summarize the passage above in two sentences."
)


def chat(user):
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def chat_sys(system, user):
    return (f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")


# (text, is_chat): plain prompts and ChatML-formatted chats, 5 to ~300 tokens
PROMPTS = [
    ("The capital of France is", False),
    ("Once upon a time, in a small village by the sea,", False),
    ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", False),
    ("1, 2, 3, 4, 5, 6,", False),
    ("The three primary colors are red, yellow and", False),
    (LONG_TEXT, False),
    (chat("What is the capital of France?"), True),
    (chat("Write a haiku about the ocean."), True),
    (chat_sys("You are a helpful assistant who answers briefly.",
              "Explain what a CPU cache is and why it makes programs faster."), True),
    (chat("List three fruits that are red."), True),
    (chat("Translate to French: The weather is nice today and I would like to go for a walk in the park."), True),
    (chat(LONG_TEXT), True),
]


def top_k(logits, k):
    idx = np.argsort(-logits, kind="stable")[:k]
    return [(int(i), float(logits[i])) for i in idx]


def main():
    llm = Llama(model_path=MODEL, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=2,
                n_threads_batch=2, logits_all=False, flash_attn=False, verbose=False, seed=0)
    # the same settings with logits for every row, for the teacher-forced view
    llm_all = Llama(model_path=MODEL, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=2,
                    n_threads_batch=2, logits_all=True, flash_attn=False, verbose=False, seed=0)
    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    lines = [
        "# Golden forward data: llama.cpp via llama-cpp-python %s, model %s" % (llama_cpp.__version__, os.path.basename(MODEL)),
        "# Made by scripts/make-golden-forward.py. Settings: n_threads=2 n_ctx=1024 n_batch=512 "
        "KV cache f16 (default) flash_attn=off; prompt in one llama_decode, then one token per call;",
        "# tf lines: prompt + greedy[:63] in one llama_decode with logits_all=True (teacher forcing).",
        "# greedy = argmax of raw logits (no sampler, no penalties). Prompt ids from llama.cpp's tokenizer",
        "# (add_bos=False as the GGUF says, special tokens parsed for chat prompts).",
        "prompts %d" % len(PROMPTS),
    ]
    for pi, (text, is_chat) in enumerate(PROMPTS):
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert 5 <= len(ids) <= 320, (pi, len(ids))
        llm.reset()  # n_tokens = 0: the next eval drops the whole KV cache (kv_cache_seq_rm)
        llm.eval(ids)
        greedy, tops = [], []
        for step in range(N_GEN):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()
            best = top_k(logits, TOP_K)
            tops.append(best)
            tok = best[0][0]
            greedy.append(tok)
            if step + 1 < N_GEN:
                llm.eval([tok])
        lines.append("# text: " + text.replace("\n", "\\n"))
        lines.append("prompt %d chat %d n_tokens %d" % (pi, int(is_chat), len(ids)))
        lines.append("tokens " + " ".join(str(t) for t in ids))
        lines.append("greedy %d " % N_GEN + " ".join(str(t) for t in greedy))
        for step, best in enumerate(tops):
            lines.append("top %d " % step + " ".join("%d %.5f" % (i, v) for i, v in best))
        llm_all.reset()
        llm_all.eval(ids + greedy[:-1])
        for step in range(N_GEN):
            best = top_k(np.array(llm_all.scores[len(ids) - 1 + step]), TOP_K)
            lines.append("tf %d " % step + " ".join("%d %.5f" % (i, v) for i, v in best))
        lines.append("# continuation: " + llm.detokenize(greedy).decode("utf-8", "replace").replace("\n", "\\n"))
        lines.append("end")
        print("prompt %2d: %3d tokens, chat=%d" % (pi, len(ids), int(is_chat)), file=sys.stderr)
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
