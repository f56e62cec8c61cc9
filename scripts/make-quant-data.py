#!/usr/bin/env python3
"""Generates tests/data/quant/: ggml blocks and what an independent decoder makes of them.

The decoder is gguf-py's numpy implementation (gguf.quants.dequantize / quantize), not ggml's C
code and not ours, so tests/unit/test_quant.c checks kernels/cpu/quant.c against a second
implementation of the same block layouts. Run with the reference venv, which lives OUTSIDE the
repository and is needed only to regenerate this data (tests and CI read the checked-in files):

    python3 -m venv /opt/refvenv && /opt/refvenv/bin/pip install -q \
        llama-cpp-python==0.3.16 gguf==0.17.1 numpy
    /opt/refvenv/bin/python scripts/make-quant-data.py

Output (all little-endian, no headers; a fixed seed makes it reproducible):
  <TYPE>.raw / <TYPE>.f32      blocks of TYPE and their float32 decoding, for F32 F16 BF16 Q4_0
                               Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K, then (from a second
                               seed, so the earlier files did not change) Q2_K Q3_K IQ4_NL
                               IQ4_XS. Blocks are random bytes with
                               the fp16 scale/min fields set to finite values of moderate size
                               (a few zero and subnormal), plus, where gguf-py can quantize the
                               type, blocks made by gguf.quants.quantize from random floats.
  convert_fp16.f32 / .u16      float32 inputs and numpy's float16 (round to nearest even)
  convert_bf16.f32 / .u16      float32 inputs and gguf-py's bf16 rounding (ggml's)
  model_rows.f32               rows of the default model dequantized by gguf-py, in the order
                               of MODEL_ROWS below (test_gguf.c holds the same list); skipped
                               when the model is missing
"""
import os
import sys

try:
    import numpy as np
    from gguf import GGMLQuantizationType as T, GGUFReader
    from gguf.quants import dequantize, quantize
except ImportError:
    sys.exit("make-quant-data.py: needs numpy and gguf (see the venv command at the top)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "quant")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

# type -> (number of blocks, byte offsets of fp16 scale/min fields inside a block)
BLOCK_TYPES = {
    T.Q4_0: (256, [0]),
    T.Q4_1: (256, [0, 2]),
    T.Q5_0: (256, [0]),
    T.Q5_1: (256, [0, 2]),
    T.Q8_0: (256, [0]),
    T.Q4_K: (48, [0, 2]),
    T.Q5_K: (48, [0, 2]),
    T.Q6_K: (48, [208]),
}
# added later, drawn from their own generator so that the files above stay as they were
LATER_TYPES = {
    T.Q2_K: (48, [80, 82]),
    T.Q3_K: (48, [108]),
    T.IQ4_NL: (256, [0]),
    T.IQ4_XS: (48, [0]),
}
QUANTIZABLE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}

# (tensor name, row index); test_gguf.c checks the same rows in the same order
MODEL_ROWS = [
    ("token_embd.weight", 0),
    ("token_embd.weight", 1234),
    ("token_embd.weight", 49151),
    ("blk.0.attn_q.weight", 0),
    ("blk.0.attn_q.weight", 575),
    ("blk.29.ffn_down.weight", 575),
    ("output_norm.weight", 0),
]

rng = np.random.default_rng(20240611)


def save(name, arr):
    path = os.path.join(OUT, name)
    arr = np.ascontiguousarray(arr)
    assert arr.dtype.byteorder in ("<", "=", "|")
    arr.tofile(path)
    return arr.nbytes


def moderate_fp16(n):
    """fp16 bit patterns of finite, moderate values: |x| in [2^-12, 2), random sign, with a few
    zeros and subnormals so those paths of the fp16 conversion are exercised too."""
    mag = np.exp2(rng.uniform(-12, 1, n)).astype(np.float16)
    x = np.where(rng.random(n) < 0.5, -mag, mag)
    kind = rng.random(n)
    x = np.where(kind < 0.03, np.float16(0), x)
    sub = (rng.integers(1, 1024, n).astype(np.uint16)).view(np.float16)
    x = np.where((kind >= 0.03) & (kind < 0.06), sub, x)
    return x.astype(np.float16).view(np.uint8).reshape(n, 2)


def make_blocks(qtype, n_blocks, scale_offsets):
    block, size = qtype_info(qtype)
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    for off in scale_offsets:
        raw[:, off:off + 2] = moderate_fp16(n_blocks)
    if qtype in QUANTIZABLE:
        # the first quarter: real quantizations of random data at a few scales
        nq = n_blocks // 4
        x = rng.standard_normal((nq, block)).astype(np.float32)
        x *= np.exp2(rng.uniform(-6, 3, (nq, 1))).astype(np.float32)
        raw[:nq] = quantize(x, qtype).reshape(nq, size)
    return raw


def qtype_info(qtype):
    from gguf.constants import GGML_QUANT_SIZES
    return GGML_QUANT_SIZES[qtype]


def special_f32():
    """float32 inputs that stress rounding: exact halves, ties, the fp16 range edges."""
    h = np.arange(0, 0x7c00, dtype=np.uint32)
    halves = h.astype(np.uint16).view(np.float16).astype(np.float32)
    # midpoints between neighbouring halves (ties) and just either side of them
    mid = (halves[:-1].astype(np.float64) + halves[1:].astype(np.float64)) / 2
    ties = mid.astype(np.float32)
    below = np.nextafter(ties, np.float32(0))
    above = np.nextafter(ties, np.float32(np.inf))
    pick = rng.choice(len(ties), 1500, replace=False)
    edges = np.array([0.0, -0.0, 65504.0, 65519.996, 65520.0, 65536.0, 1e9, 2.0 ** -24,
                      2.0 ** -25, 2.0 ** -25 * 1.0000001, 2.0 ** -26, 2.0 ** -14, 1e-45,
                      np.inf, -np.inf, np.nan], dtype=np.float32)
    rand_bits = rng.integers(0, 2 ** 32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    v = np.concatenate([edges, ties[pick], below[pick], above[pick],
                        halves[rng.choice(len(halves), 500)], rand_bits,
                        rng.standard_normal(1000).astype(np.float32)])
    sign = np.where(rng.random(len(v)) < 0.5, -1, 1).astype(np.float32)
    v[16:] *= sign[16:]
    return v.astype(np.float32)


def main():
    global rng
    os.makedirs(OUT, exist_ok=True)
    total = 0
    with np.errstate(all="ignore"):
        for qtype, (n_blocks, offs) in BLOCK_TYPES.items():
            raw = make_blocks(qtype, n_blocks, offs)
            out = dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
            assert np.isfinite(out).all(), qtype.name
            total += save(qtype.name + ".raw", raw) + save(qtype.name + ".f32", out)

        # F32: random bit patterns, decoding is the identity
        f32 = rng.integers(0, 2 ** 32, 512, dtype=np.uint64).astype(np.uint32)
        total += save("F32.raw", f32) + save("F32.f32", f32.view(np.float32))
        # F16: every subnormal, the largest normals, inf and every NaN (both signs), and random
        # patterns; test_quant.c also round-trips all 65536 patterns on its own
        edge = np.concatenate([np.arange(0, 0x800), np.arange(0x7800, 0x8000)])
        f16 = np.concatenate([edge, edge | 0x8000, rng.integers(0, 65536, 2048)]).astype(np.uint16)
        total += save("F16.raw", f16) + save("F16.f32", f16.view(np.float16).astype(np.float32))
        # BF16: random patterns plus gguf-py's own rounding of random floats
        bf = rng.integers(0, 65536, 2048, dtype=np.uint32).astype(np.uint16)
        total += save("BF16.raw", bf) + save("BF16.f32", dequantize(bf.view(np.uint8), T.BF16))

        v = special_f32()
        total += save("convert_fp16.f32", v) + save("convert_fp16.u16", v.astype(np.float16).view(np.uint16))
        bq = quantize(v, T.BF16).view(np.uint16)
        total += save("convert_bf16.f32", v) + save("convert_bf16.u16", bq)

        rng = np.random.default_rng(20261205)
        for qtype, (n_blocks, offs) in LATER_TYPES.items():
            raw = make_blocks(qtype, n_blocks, offs)
            out = dequantize(raw.reshape(-1), qtype).astype(np.float32).reshape(-1)
            assert np.isfinite(out).all(), qtype.name
            total += save(qtype.name + ".raw", raw) + save(qtype.name + ".f32", out)

    if os.path.exists(MODEL):
        r = GGUFReader(MODEL)
        tensors = {t.name: t for t in r.tensors}
        rows = []
        for name, row in MODEL_ROWS:
            t = tensors[name]
            data = np.asarray(t.data).reshape(-1, t.data.shape[-1]) if t.data.ndim > 1 else np.asarray(t.data).reshape(1, -1)
            rows.append(dequantize(data[row].view(np.uint8), t.tensor_type).astype(np.float32).reshape(-1))
        total += save("model_rows.f32", np.concatenate(rows))
    else:
        print(f"make-quant-data.py: {MODEL} missing, model_rows.f32 not regenerated", file=sys.stderr)
    print(f"wrote {total} bytes to {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
