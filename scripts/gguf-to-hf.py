#!/usr/bin/env python3
"""gguf-to-hf.py: a GGUF model as a Hugging Face model directory.

    gguf-to-hf.py MODEL.gguf OUT_DIR [--dtype f32|bf16] [--shards N] [--no-tokenizer]

writes OUT_DIR/config.json (LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM from the
GGUF's metadata), the weights as model.safetensors (or N shards model-0000k-of-0000N.safetensors
plus model.safetensors.index.json), dequantized to float32 (default) or bfloat16, and the
tokenizer (tokenizer.json + tokenizer_config.json with the chat template) through
scripts/hf_tokenizer.py.

The inverse of llama.cpp's convert_hf_to_gguf.py for these architectures: tensor names back to
HF's, shapes back to PyTorch order ([out, in]), and for llama the Q and K rows un-permuted from
llama.cpp's adjacent-pair RoPE layout back to HF's rotate_half layout (convert_hf_to_gguf
permutes them; qwen2/qwen3 it does not). Tied embeddings stay tied (no lm_head.weight).
The safetensors files are written directly (8-byte header length, JSON header padded to 8 bytes,
raw little-endian data), so only numpy and gguf are needed: pip install numpy gguf==0.17.1.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("gguf-to-hf.py: needs the gguf package (pip install gguf==0.17.1 numpy)")

ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def fail(msg):
    sys.exit(f"gguf-to-hf.py: {msg}")


def field(reader, key, default=None):
    f = reader.get_field(key)
    return default if f is None else f.contents()


def hf_name(name):
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{LAYER_NAMES[parts[2]]}"
    fail(f"tensor {name} has no Hugging Face name in this converter")


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's permute(): each head's rows go from llama.cpp's
    interleaved pairs (x0, x_half, x1, x_half+1, ...) back to rotate_half's two halves."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_bf16(a):
    """float32 -> bfloat16 bits, round to nearest even (the values are finite)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16)


def short_float(v):
    """A float32 from the file written the way HF configs write it (1e-05, not 9.99999974e-06)."""
    return float(f"{float(v):.7g}")


def hf_config(reader, arch, names, dtype):
    a = arch
    dim = int(field(reader, f"{a}.embedding_length"))
    heads = int(field(reader, f"{a}.attention.head_count"))
    kv = int(field(reader, f"{a}.attention.head_count_kv", heads))
    head_dim = int(field(reader, f"{a}.attention.key_length", dim // heads))
    vocab = int(next(t for t in reader.tensors if t.name == "token_embd.weight").shape[1])
    cfg = {
        "architectures": [ARCHS[arch]],
        "model_type": arch,
        "hidden_size": dim,
        "intermediate_size": int(field(reader, f"{a}.feed_forward_length")),
        "num_hidden_layers": int(field(reader, f"{a}.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "max_position_embeddings": int(field(reader, f"{a}.context_length")),
        "rms_norm_eps": short_float(field(reader, f"{a}.attention.layer_norm_rms_epsilon")),
        "rope_theta": short_float(field(reader, f"{a}.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
        "torch_dtype": "float32" if dtype == "f32" else "bfloat16",
    }
    if arch == "qwen2":
        cfg["use_sliding_window"] = False
    else:
        cfg["attention_bias"] = False
        cfg["mlp_bias"] = False
    for key, hf in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")):
        v = field(reader, f"tokenizer.ggml.{key}")
        if v is not None:
            cfg[hf] = int(v)
    return cfg


def check_supported(reader, arch):
    if arch not in ARCHS:
        fail(f"architecture {arch} is not supported (supported: {', '.join(ARCHS)})")
    if field(reader, f"{arch}.expert_count", 0):
        fail("mixture-of-experts models are not supported")
    scaling = field(reader, f"{arch}.rope.scaling.type", "none")
    if any(t.name == "rope_freqs.weight" for t in reader.tensors) or scaling not in ("none", None):
        fail("RoPE scaling (rope_freqs.weight / rope.scaling.*) cannot be converted back to config.json")
    rope_dim = field(reader, f"{arch}.rope.dimension_count")
    dim = int(field(reader, f"{arch}.embedding_length"))
    heads = int(field(reader, f"{arch}.attention.head_count"))
    if rope_dim is not None and int(rope_dim) != int(field(reader, f"{arch}.attention.key_length", dim // heads)):
        fail("partial rotary embeddings are not supported")


def convert_tensors(reader, arch, dtype):
    """[(hf name, array, safetensors dtype)] in the GGUF's tensor order."""
    heads = int(field(reader, f"{arch}.attention.head_count"))
    kv = int(field(reader, f"{arch}.attention.head_count_kv", heads))
    out = []
    for t in reader.tensors:
        shape = [int(n) for n in reversed(t.shape)]  # ggml ne -> PyTorch order
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        if arch == "llama" and t.name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        elif arch == "llama" and t.name.endswith("attn_k.weight"):
            w = unpermute(w, kv)
        if dtype == "bf16":
            out.append((hf_name(t.name), to_bf16(w).reshape(shape), "BF16"))
        else:
            out.append((hf_name(t.name), np.ascontiguousarray(w, dtype="<f4"), "F32"))
    return out


def write_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, arr, dt in tensors:
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + arr.nbytes]}
        off += arr.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # data 8-byte aligned, as the safetensors library writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, arr, _ in tensors:
            f.write(np.ascontiguousarray(arr).tobytes())


def write_weights(out_dir, tensors, shards):
    if shards <= 1:
        write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
        return
    if shards > len(tensors):
        fail(f"--shards {shards} exceeds the {len(tensors)} tensors")
    total = sum(arr.nbytes for _, arr, _ in tensors)
    groups, acc, k = [[] for _ in range(shards)], 0, 0
    for i, item in enumerate(tensors):
        # in order, by cumulative bytes: one shard further at most per tensor (no shard left
        # empty), and at least one tensor left for each later shard
        if i > 0 and acc * shards // max(total, 1) > k:
            k += 1
        k = min(max(k, shards - (len(tensors) - i)), shards - 1)
        groups[k].append(item)
        acc += item[1].nbytes
    weight_map = {}
    for k, group in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(out_dir, name), group)
        weight_map.update({n: name for n, _, _ in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description="Convert a GGUF model to a Hugging Face model directory.")
    ap.add_argument("gguf", help="the .gguf file")
    ap.add_argument("out", help="the directory to write (created if missing)")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="weight type in the safetensors")
    ap.add_argument("--shards", type=int, default=1, help="split the weights into N files with an index")
    ap.add_argument("--no-tokenizer", action="store_true", help="skip tokenizer.json / tokenizer_config.json")
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.gguf)
    arch = field(reader, "general.architecture")
    check_supported(reader, arch)
    names = {t.name for t in reader.tensors}
    os.makedirs(args.out, exist_ok=True)
    cfg = hf_config(reader, arch, names, args.dtype)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    tensors = convert_tensors(reader, arch, args.dtype)
    write_weights(args.out, tensors, args.shards)
    if not args.no_tokenizer:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from hf_tokenizer import write_hf_tokenizer
        write_hf_tokenizer(args.gguf, args.out)
    n_bytes = sum(arr.nbytes for _, arr, _ in tensors)
    print(f"gguf-to-hf.py: {args.out}: {len(tensors)} tensors, {n_bytes / 2**20:.1f} MiB {args.dtype}"
          f"{f' in {args.shards} shards' if args.shards > 1 else ''}")


if __name__ == "__main__":
    main()
