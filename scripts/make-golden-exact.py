#!/usr/bin/env python3
"""Exact golden forward-pass data: a plain float64 numpy forward pass of the Llama architecture
over the default model's weights, as a second, independent reference next to llama.cpp.

Why: llama.cpp (forward.txt) quantizes activations to 8 bits inside its matmuls and does not
even agree with itself (prefill vs decode pick a different top-1 at ~2.5% of rows), so an exact
top-1 bar against it fails on near-ties that say nothing about correctness. This script computes
what the quantized model really says: the GGUF's weights dequantized with the gguf package's own
dequantizer (gguf.quants.dequantize; no sluice code), every activation in float64.

Model (read from the GGUF metadata): token embedding (token_embd.weight); per layer RMSNorm,
Q/K/V projections, RoPE in the adjacent-pair ("normal") layout the llama converter's Q/K
permutation needs (pair (x[2i], x[2i+1]) rotated by pos * base^(-2i/head_dim)), grouped-query
causal attention with scale 1/sqrt(head_dim), output projection, residual, RMSNorm,
SwiGLU (down(silu(gate) * up)), residual; final RMSNorm; LM head = output.weight or the tied
token_embd.weight. The prompt runs in one batched pass, then one token per step against a KV
cache (in float64 both paths agree to ~1e-12).

For each prompt of tests/data/golden/forward.txt (the same token ids, read from that file):
the 64-token greedy continuation (argmax, lowest id on ties), the top-5 (id, logit) at each
step, and, in a comment line, the top-1 minus top-2 logit margin at each step. There are no
`tf` lines: the exact model's teacher-forced logits along its own greedy tokens are the decode
logits.

Needs the reference venv (numpy + gguf; see scripts/make-golden.sh, which creates it):
    nice /opt/refvenv/bin/python scripts/make-golden-exact.py [--out=PATH] [model.gguf]
    nice /opt/refvenv/bin/python scripts/make-golden-exact.py --verify [model.gguf]
--verify writes nothing in the tree: it checks the existing exact.txt against llama.cpp
(llama-cpp-python) run on a temporary copy of the model with every tensor dequantized to F32
and an F32 KV cache, where llama.cpp quantizes no activations. Following exact.txt's tokens, its
argmax must agree at every step and its top-5 logits within a small tolerance.
Writes tests/data/golden/exact.txt in forward.txt's line format, minus the tf lines:

    # comment lines start with '#'
    prompts N
    prompt <index> chat <0|1> n_tokens <n>
    tokens <n ids>
    greedy <64> <64 ids>
    top <step> <id> <logit> ... (5 pairs, best first)   -- one line per step
    end
"""
import importlib.metadata
import os
import sys
import time

import numpy as np

from gpt2_bytes import unicode_to_bytes

try:
    import gguf
    from gguf.quants import dequantize
except ImportError:
    sys.exit("the gguf package is missing: run scripts/make-golden.sh (it creates /opt/refvenv)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [a for a in sys.argv[1:] if a != "--verify" and not a.startswith("--out=")]
VERIFY = "--verify" in sys.argv[1:]
MODEL = ARGS[0] if ARGS else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# --out=PATH: write there instead (tests/models/test_requant.py's goldens of requantized files)
OUT_ARG = next((a[len("--out="):] for a in sys.argv[1:] if a.startswith("--out=")), None)
FORWARD = os.path.join(ROOT, "tests", "data", "golden", "forward.txt")
OUT = OUT_ARG or os.path.join(ROOT, "tests", "data", "golden", "exact.txt")
N_GEN = 64
TOP_K = 5


def field(reader, key):
    return reader.fields[key].contents()


def load_model(path):
    """Metadata and every weight dequantized to float64, matrices as (out, in)."""
    r = gguf.GGUFReader(path)
    arch = field(r, "general.architecture")
    assert arch == "llama", arch
    hp = {
        "n_layer": int(field(r, "llama.block_count")),
        "dim": int(field(r, "llama.embedding_length")),
        "n_head": int(field(r, "llama.attention.head_count")),
        "n_kv_head": int(field(r, "llama.attention.head_count_kv")),
        "eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_base": float(field(r, "llama.rope.freq_base")),
    }
    hp["head_dim"] = hp["dim"] // hp["n_head"]
    if "llama.rope.dimension_count" in r.fields:
        assert int(field(r, "llama.rope.dimension_count")) == hp["head_dim"]
    w = {}
    for t in r.tensors:
        # t.shape is ggml's (ne0, ne1): ne0 is the row length; dequantize gives (rows, ne0)
        x = dequantize(t.data, t.tensor_type).astype(np.float64)
        w[t.name] = x.reshape(tuple(int(n) for n in reversed(t.shape.tolist())))
    if "output.weight" not in w:
        w["output.weight"] = w["token_embd.weight"]  # tied LM head
    f = r.fields["tokenizer.ggml.tokens"]
    vocab = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    return hp, w, vocab


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x, pos, base):
    """x: (n_heads, T, head_dim); rotate adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, d/2)
    cos, sin = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


class Model:
    def __init__(self, hp, w):
        self.hp, self.w = hp, w
        self.reset()

    def reset(self):
        self.k_cache = [None] * self.hp["n_layer"]
        self.v_cache = [None] * self.hp["n_layer"]
        self.n_past = 0

    def forward(self, ids, every=False):
        """Run tokens ids at positions n_past.. and return the logits of the last one (every:
        of each, as rows)."""
        hp, w = self.hp, self.w
        T, hd, nh, nkv = len(ids), hp["head_dim"], hp["n_head"], hp["n_kv_head"]
        pos = np.arange(self.n_past, self.n_past + T)
        x = w["token_embd.weight"][np.asarray(ids)]  # (T, dim)
        n_all = self.n_past + T
        # causal mask: row t (absolute position n_past + t) sees keys 0..n_past + t
        mask = np.arange(n_all)[None, :] > pos[:, None]
        for l in range(hp["n_layer"]):
            p = "blk.%d." % l
            h = rms_norm(x, w[p + "attn_norm.weight"], hp["eps"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(T, nh, hd).transpose(1, 0, 2)
            k = (h @ w[p + "attn_k.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
            v = (h @ w[p + "attn_v.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
            q, k = rope(q, pos, hp["rope_base"]), rope(k, pos, hp["rope_base"])
            if self.k_cache[l] is not None:
                k = np.concatenate([self.k_cache[l], k], axis=1)
                v = np.concatenate([self.v_cache[l], v], axis=1)
            self.k_cache[l], self.v_cache[l] = k, v
            # grouped-query attention: query head j uses KV head j // (nh / nkv)
            kk = np.repeat(k, nh // nkv, axis=0)
            vv = np.repeat(v, nh // nkv, axis=0)
            s = q @ kk.transpose(0, 2, 1) / np.sqrt(hd)  # (nh, T, n_all)
            s = np.where(mask[None], -np.inf, s)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            a = (s @ vv).transpose(1, 0, 2).reshape(T, nh * hd)
            x = x + a @ w[p + "attn_output.weight"].T
            h = rms_norm(x, w[p + "ffn_norm.weight"], hp["eps"])
            g = h @ w[p + "ffn_gate.weight"].T
            u = h @ w[p + "ffn_up.weight"].T
            x = x + ((g / (1.0 + np.exp(-g))) * u) @ w[p + "ffn_down.weight"].T
        self.n_past += T
        if every:
            return rms_norm(x, w["output_norm.weight"], hp["eps"]) @ w["output.weight"].T
        h = rms_norm(x[-1], w["output_norm.weight"], hp["eps"])
        return w["output.weight"] @ h


def top_k(logits, k):
    idx = np.argsort(-logits, kind="stable")[:k]  # stable: lowest id first on ties
    return [(int(i), float(logits[i])) for i in idx]


def read_forward(path):
    """Prompts (index, chat, ids, text) and llama.cpp's greedy + top lines from forward.txt."""
    prompts, text, cur = [], "", None
    with open(path) as f:
        for line in f:
            t = line.split()
            if line.startswith("# text: "):
                text = line[len("# text: "):].rstrip("\n")
            elif not t or t[0].startswith("#"):
                continue
            elif t[0] == "prompt":
                cur = {"index": int(t[1]), "chat": int(t[3]), "n": int(t[5]), "text": text, "tops": []}
            elif t[0] == "tokens":
                cur["ids"] = [int(s) for s in t[1:]]
                assert len(cur["ids"]) == cur["n"]
            elif t[0] == "greedy":
                cur["greedy"] = [int(s) for s in t[2:]]
            elif t[0] == "top":
                cur["tops"].append([(int(t[i]), float(t[i + 1])) for i in range(2, len(t), 2)])
            elif t[0] == "end":
                prompts.append(cur)
    return prompts


def detokenize(vocab, ids):
    dec = unicode_to_bytes()
    out = bytearray()
    for i in ids:
        s = vocab[i]
        if all(ch in dec for ch in s):
            out += bytes(dec[ch] for ch in s)
        else:  # special tokens such as <|im_end|> are stored as is
            out += s.encode("utf-8")
    return out.decode("utf-8", "replace")


def main():
    t0 = time.time()
    hp, w, vocab = load_model(MODEL)
    model = Model(hp, w)
    prompts = read_forward(FORWARD)
    print("loaded in %.1fs: %s" % (time.time() - t0, hp), file=sys.stderr)
    lines = [
        "# Exact golden forward data: float64 numpy Llama forward pass, model %s" % os.path.basename(MODEL),
        "# Made by scripts/make-golden-exact.py (numpy %s, gguf %s): weights dequantized with"
        % (np.__version__, importlib.metadata.version("gguf")),
        "# gguf.quants.dequantize, every activation in float64; prompt ids copied from forward.txt;",
        "# prompt in one batched pass then one token per step with a KV cache; greedy = argmax of the",
        "# logits (lowest id on ties). No tf lines: teacher-forcing along these greedy tokens gives the",
        "# decode logits. '# margin' lines: top-1 minus top-2 logit at each of the 64 steps.",
        "prompts %d" % len(prompts),
    ]
    summary = []
    for p in prompts:
        t1 = time.time()
        model.reset()
        logits = model.forward(p["ids"])
        greedy, tops, margins, gaps = [], [], [], []
        for step in range(N_GEN):
            best = top_k(logits, TOP_K)
            tops.append(best)
            margins.append(best[0][1] - best[1][1])
            # how far llama.cpp's token at this step is below the exact top-1 (for the report)
            gaps.append(best[0][1] - float(logits[p["greedy"][step]]))
            greedy.append(best[0][0])
            if step + 1 < N_GEN:
                logits = model.forward([best[0][0]])
        lines.append("# text: " + p["text"])
        lines.append("prompt %d chat %d n_tokens %d" % (p["index"], p["chat"], len(p["ids"])))
        lines.append("tokens " + " ".join(str(t) for t in p["ids"]))
        lines.append("greedy %d " % N_GEN + " ".join(str(t) for t in greedy))
        for step, best in enumerate(tops):
            lines.append("top %d " % step + " ".join("%d %.5f" % (i, v) for i, v in best))
        lines.append("# margin " + " ".join("%.6f" % m for m in margins))
        lines.append("# continuation: " + detokenize(vocab, greedy).replace("\n", "\\n"))
        lines.append("end")
        # compare with llama.cpp's decode (same prompt, so equal up to the first difference)
        diff = next((s for s in range(N_GEN) if greedy[s] != p["greedy"][s]), None)
        if diff is None:
            msg = "prompt %d: same as llama.cpp over all %d steps (smallest exact margin %.5f at step %d)" % (
                p["index"], N_GEN, min(margins), int(np.argmin(margins)))
        else:
            lt = p["tops"][diff]
            msg = ("prompt %d: first differs from llama.cpp at step %d: exact %d, llama.cpp %d; exact margin %.5f"
                   " (llama.cpp's token %.5f below), llama.cpp top-2 margin %.5f") % (
                p["index"], diff, greedy[diff], p["greedy"][diff], margins[diff], gaps[diff], lt[0][1] - lt[1][1])
        summary.append(msg)
        print("%s [%d tokens, %.1fs]" % (msg, len(p["ids"]), time.time() - t1), file=sys.stderr)
    lines.append("# summary vs llama.cpp decode (forward.txt):")
    lines += ["#   " + m for m in summary]
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s in %.1fs" % (OUT, time.time() - t0), file=sys.stderr)


def write_f32_gguf(src, dst):
    """Copy of src with every tensor dequantized to F32 (same metadata, file type 0 = all F32)."""
    r = gguf.GGUFReader(src)
    out = gguf.GGUFWriter(dst, field(r, "general.architecture"))
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # the writer adds these itself
        if key == "general.file_type":
            out.add_key_value(key, 0, gguf.GGUFValueType.UINT32)
            continue
        out.add_key_value(key, f.contents(), f.types[0], f.types[1] if len(f.types) > 1 else None)
    for t in r.tensors:
        x = dequantize(t.data, t.tensor_type).astype(np.float32)
        out.add_tensor(t.name, x.reshape(tuple(int(n) for n in reversed(t.shape.tolist()))))
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()


def verify(tol=1e-3):
    """exact.txt vs llama.cpp on the F32-dequantized model, teacher-forced along exact.txt's tokens."""
    import tempfile
    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        sys.exit("llama-cpp-python is missing: run scripts/make-golden.sh (it creates /opt/refvenv)")
    prompts = read_forward(OUT)
    worst, bad = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model-f32.gguf")
        write_f32_gguf(MODEL, path)
        llm = Llama(model_path=path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=2, n_threads_batch=2,
                    flash_attn=False, verbose=False, seed=0, type_k=0, type_v=0)  # 0 = GGML_TYPE_F32
        ctx, n_vocab = llm._ctx.ctx, llm.n_vocab()
        for p in prompts:
            llm.reset()
            llm.eval(p["ids"])
            n_bad, diff = 0, 0.0
            for step in range(N_GEN):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
                n_bad += int(np.argmax(logits)) != p["greedy"][step]
                diff = max(diff, max(abs(float(logits[i]) - v) for i, v in p["tops"][step]))
                if step + 1 < N_GEN:
                    llm.eval([p["greedy"][step]])
            print("prompt %2d: %d argmax mismatches, max |top-5 logit diff| %.6f" % (p["index"], n_bad, diff),
                  file=sys.stderr)
            worst, bad = max(worst, diff), bad + n_bad
    ok = bad == 0 and worst < tol
    print("verify %s: %d argmax mismatches in %d steps, max logit diff %.6f (tolerance %g)"
          % ("ok" if ok else "FAILED", bad, N_GEN * len(prompts), worst, tol), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    if VERIFY:
        sys.exit(verify())
    main()
