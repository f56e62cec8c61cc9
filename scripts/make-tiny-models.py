#!/usr/bin/env python3
"""make-tiny-models.py: tiny random models of the families sluice runs beyond Llama, as
llama.cpp's converter writes them (GGUF) and as Hugging Face saves them (safetensors +
config.json), the same weights in both.

    make-tiny-models.py OUT_DIR [--family NAME ...] [--seed N]

writes, per family F, OUT_DIR/F.gguf and OUT_DIR/F-hf/ (config.json, model.safetensors in
float32, tokenizer.json + tokenizer_config.json through scripts/hf_tokenizer.py). Everything is
a function of the seed (numpy's PCG64), so a test can regenerate a file and check its sha256
against the one a golden file was made from (tests/data/families/).

The GGUF follows convert_hf_to_gguf.py (llama.cpp from the llama-cpp-python 0.3.16 sdist):
  - gemma2 / gemma3: norms stored as 1 + w (HF keeps w; Gemma's RMSNorm multiplies by 1 + w),
    no output.weight (tied), post_attention_norm / post_ffw_norm, Q and K unpermuted (NeoX
    RoPE), keys attn_logit_softcapping / final_logit_softcapping / attention.sliding_window;
  - phi3: fused attn_qkv and ffn_up (gate rows first, then up), partial rotary
    (rope.dimension_count = partial_rotary_factor * head_dim), LongRoPE factors as
    rope_factors_long/short.weight and rope.scaling.attn_factor / original_context_length;
  - mistral: arch llama, Q and K permuted to adjacent-pair RoPE (llama.cpp does not window it:
    sliding_window is HF's config.json only).
Tokenizers: Gemma uses tests/data/tokenizer/spm-tiny.gguf (SentencePiece BPE with byte
fallback, a synthetic vocabulary), the others bpe-tiny.gguf (byte-level BPE); each gets its
chat template's turn markers appended as control tokens and the template from
tests/data/chat_templates/. Needs numpy and gguf (pip install gguf==0.17.1 numpy).
"""
import argparse
import json
import math
import os
import sys
import zlib

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make-tiny-models.py: needs the gguf package (pip install gguf==0.17.1 numpy)")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_tokenizer import write_hf_tokenizer  # noqa: E402

CONTROL = 3

# Shapes are small (a few hundred KB of float32 each) but keep what makes each family itself:
# head_dim * n_heads != dim for Gemma, GQA everywhere, Gemma 3's 5 local : 1 global layers, a
# window of 8 so that a prompt of 30 tokens runs 3 windows deep, soft-caps that bite.
FAMILIES = {
    "gemma2": dict(tokenizer="spm-tiny", template="gemma-it", specials=["<start_of_turn>", "<end_of_turn>"],
                   eot="<end_of_turn>", layers=4, dim=64, heads=4, kv_heads=2, head_dim=32, ffn=128,
                   window=8, attn_softcap=8.0, final_softcap=10.0, rope_theta=10000.0, ctx=256),
    "gemma3": dict(tokenizer="spm-tiny", template="gemma-it", specials=["<start_of_turn>", "<end_of_turn>"],
                   eot="<end_of_turn>", layers=6, dim=64, heads=4, kv_heads=2, head_dim=32, ffn=128,
                   window=8, rope_theta=100000.0, rope_local=10000.0, ctx=256),
    # Gemma 3 4B+: the global layers' positions divided by 8 (linear RoPE scaling)
    "gemma3-linear": dict(tokenizer="spm-tiny", template="gemma-it", specials=["<start_of_turn>", "<end_of_turn>"],
                          eot="<end_of_turn>", layers=6, dim=64, heads=4, kv_heads=2, head_dim=32, ffn=128,
                          window=8, rope_theta=100000.0, rope_local=10000.0, ctx=256, rope_linear=8.0),
    "phi3": dict(tokenizer="bpe-tiny", template="phi-3", specials=["<|user|>", "<|assistant|>", "<|end|>"],
                 eot="<|end|>", layers=3, dim=64, heads=4, kv_heads=2, head_dim=16, ffn=96,
                 partial_rotary=0.5, rope_theta=10000.0, ctx=256, orig_ctx=64),
    # a context no longer than the original: LongRoPE's short factors, magnitude 1
    "phi3-short": dict(tokenizer="bpe-tiny", template="phi-3", specials=["<|user|>", "<|assistant|>", "<|end|>"],
                       eot="<|end|>", layers=3, dim=64, heads=4, kv_heads=2, head_dim=16, ffn=96,
                       partial_rotary=0.5, rope_theta=10000.0, ctx=64, orig_ctx=64),
    "mistral": dict(tokenizer="bpe-tiny", template="mistral-instruct", specials=["[INST]", "[/INST]"],
                    eot=None, layers=3, dim=64, heads=4, kv_heads=2, head_dim=16, ffn=128,
                    window=8, rope_theta=10000.0, ctx=256),
}


def tokenizer_fields(name):
    """The tokenizer.* fields of tests/data/tokenizer/NAME.gguf as (key, value, type, sub_type)."""
    r = gguf.GGUFReader(os.path.join(ROOT, "tests", "data", "tokenizer", name + ".gguf"))
    out = []
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        out.append([key, f.contents(), vtype, sub])
    return out


def add_tokenizer(w, spec):
    fields = {f[0]: f for f in tokenizer_fields(spec["tokenizer"])}
    tokens = list(fields["tokenizer.ggml.tokens"][1])
    types = list(fields["tokenizer.ggml.token_type"][1])
    scores = list(fields["tokenizer.ggml.scores"][1]) if "tokenizer.ggml.scores" in fields else None
    for s in spec["specials"]:
        tokens.append(s)
        types.append(CONTROL)
        if scores is not None:
            scores.append(-1000.0)
    fields["tokenizer.ggml.tokens"][1] = tokens
    fields["tokenizer.ggml.token_type"][1] = types
    if scores is not None:
        fields["tokenizer.ggml.scores"][1] = scores
    if spec["tokenizer"] == "spm-tiny":  # convert_hf_to_gguf's Gemma: no space prefix
        fields["tokenizer.ggml.add_space_prefix"][1] = False
    for key, val, vtype, sub in fields.values():
        w.add_key_value(key, val, vtype, sub_type=sub)
    if spec["eot"]:
        w.add_eot_token_id(tokens.index(spec["eot"]))
    with open(os.path.join(ROOT, "tests", "data", "chat_templates", spec["template"] + ".jinja")) as f:
        w.add_chat_template(f.read())
    return len(tokens)


def permute(wt, n_head):
    """convert_hf_to_gguf's LlamaModel.permute: rotate_half's halves to adjacent pairs."""
    return wt.reshape(n_head, 2, wt.shape[0] // n_head // 2, *wt.shape[1:]).swapaxes(1, 2).reshape(wt.shape)


def arch_of(fam):
    """The family's model (gemma3-linear is a gemma3, phi3-short a phi3)."""
    return fam.split("-")[0]


def make_weights(fam, spec, vocab, rng):
    """HF-named float32 weights ([out, in] like PyTorch)."""
    fam = arch_of(fam)
    d, hd, f = spec["dim"], spec["head_dim"], spec["ffn"]
    qd, kvd = spec["heads"] * hd, spec["kv_heads"] * hd
    gemma = fam.startswith("gemma")

    def mat(rows, cols, gain=1.0):
        return (rng.standard_normal((rows, cols)) * gain / math.sqrt(cols)).astype(np.float32)

    def norm(n, gain=1.0):  # Gemma's weights are offsets from 1 (the model multiplies by 1 + w)
        return (gain - (1.0 if gemma else 0.0) + 0.2 * rng.standard_normal(n)).astype(np.float32)

    t = {"model.embed_tokens.weight": (rng.standard_normal((vocab, d)) * (0.3 if gemma else 1.0)).astype(np.float32)}
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(d)
        if fam == "phi3":
            t[p + "self_attn.qkv_proj.weight"] = mat(qd + 2 * kvd, d, 2.0)
            t[p + "mlp.gate_up_proj.weight"] = mat(2 * f, d)
        else:
            t[p + "self_attn.q_proj.weight"] = mat(qd, d, 2.0)
            t[p + "self_attn.k_proj.weight"] = mat(kvd, d, 2.0)
            t[p + "self_attn.v_proj.weight"] = mat(kvd, d)
            t[p + "mlp.gate_proj.weight"] = mat(f, d)
            t[p + "mlp.up_proj.weight"] = mat(f, d)
        t[p + "self_attn.o_proj.weight"] = mat(d, qd)
        t[p + "mlp.down_proj.weight"] = mat(d, f)
        t[p + "post_attention_layernorm.weight"] = norm(d)
        if gemma:
            # post-norm gains of 3 let the layers outweigh the (tied) embedding in the residual,
            # else a random model mostly predicts its input token again
            t[p + "post_attention_layernorm.weight"] = norm(d, 3.0)
            t[p + "pre_feedforward_layernorm.weight"] = norm(d)
            t[p + "post_feedforward_layernorm.weight"] = norm(d, 3.0)
        if fam == "gemma3":
            t[p + "self_attn.q_norm.weight"] = norm(hd)
            t[p + "self_attn.k_norm.weight"] = norm(hd)
    t["model.norm.weight"] = norm(d)
    if not gemma:
        t["lm_head.weight"] = mat(vocab, d, 3.0)
    return t


def longrope_factors(spec, rng):
    half = int(spec["partial_rotary"] * spec["head_dim"]) // 2
    short = (1.0 + 0.5 * rng.random(half)).round(4)
    long = (1.0 + 8.0 * np.sort(rng.random(half))).round(4)
    return [float(x) for x in short], [float(x) for x in long]


def hf_config(fam, spec, vocab, tok_ids, extra):
    fam = arch_of(fam)
    c = {"hidden_size": spec["dim"], "intermediate_size": spec["ffn"], "num_hidden_layers": spec["layers"],
         "num_attention_heads": spec["heads"], "num_key_value_heads": spec["kv_heads"], "head_dim": spec["head_dim"],
         "vocab_size": vocab, "max_position_embeddings": spec["ctx"], "rope_theta": spec["rope_theta"],
         "rms_norm_eps": 1e-6, "torch_dtype": "float32", "bos_token_id": tok_ids[0], "eos_token_id": tok_ids[1]}
    if fam == "gemma2":
        c.update(architectures=["Gemma2ForCausalLM"], model_type="gemma2", hidden_activation="gelu_pytorch_tanh",
                 query_pre_attn_scalar=spec["head_dim"], sliding_window=spec["window"],
                 attn_logit_softcapping=spec["attn_softcap"], final_logit_softcapping=spec["final_softcap"],
                 tie_word_embeddings=True)
    elif fam == "gemma3":
        c.update(architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", hidden_activation="gelu_pytorch_tanh",
                 query_pre_attn_scalar=spec["head_dim"], sliding_window=spec["window"], sliding_window_pattern=6,
                 layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                              for i in range(spec["layers"])],
                 rope_local_base_freq=spec["rope_local"],
                 rope_scaling={"rope_type": "linear", "factor": spec["rope_linear"]} if "rope_linear" in spec else None,
                 attn_logit_softcapping=None,
                 final_logit_softcapping=None, tie_word_embeddings=True)
    elif fam == "phi3":
        short, long = extra
        c.update(architectures=["Phi3ForCausalLM"], model_type="phi3", hidden_act="silu",
                 partial_rotary_factor=spec["partial_rotary"], original_max_position_embeddings=spec["orig_ctx"],
                 rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long},
                 sliding_window=None, tie_word_embeddings=False)
        del c["head_dim"]  # Phi-3 derives it: hidden_size / num_attention_heads
    else:
        c.update(architectures=["MistralForCausalLM"], model_type="mistral", hidden_act="silu",
                 sliding_window=spec["window"], tie_word_embeddings=False)
    return c


def write_gguf(path, fam, spec, hf, vocab_fields_spec, extra):
    fam = arch_of(fam)
    arch = "llama" if fam == "mistral" else fam
    w = gguf.GGUFWriter(path, arch)
    # (not "phi3" in the name: llama.cpp then looks for Phi-3's own special tokens by name)
    w.add_name(f"sluice tiny random model, family {fam.replace('phi3', 'Phi 3')}")
    d, hd = spec["dim"], spec["head_dim"]
    w.add_context_length(spec["ctx"])
    w.add_embedding_length(d)
    w.add_block_count(spec["layers"])
    w.add_feed_forward_length(spec["ffn"])
    w.add_head_count(spec["heads"])
    w.add_head_count_kv(spec["kv_heads"])
    w.add_layer_norm_rms_eps(1e-6)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if fam.startswith("gemma"):
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_sliding_window(spec["window"])
    if fam == "gemma2":
        w.add_attn_logit_softcapping(spec["attn_softcap"])
        w.add_final_logit_softcapping(spec["final_softcap"])
    if fam in ("gemma3", "phi3", "mistral"):
        w.add_rope_freq_base(spec["rope_theta"])
    if "rope_linear" in spec:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(spec["rope_linear"])
    if fam == "mistral":
        w.add_rope_dimension_count(hd)
        w.add_vocab_size(vocab_fields_spec)
    if fam == "phi3":
        n_rot = int(spec["partial_rotary"] * d) // spec["heads"]
        w.add_rope_scaling_orig_ctx_len(spec["orig_ctx"])
        w.add_rope_dimension_count(n_rot)
        w.add_sliding_window(0)
        scale = spec["ctx"] / spec["orig_ctx"]
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(spec["orig_ctx"])))
    add_tokenizer(w, spec)

    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.qkv_proj": "attn_qkv",
             "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.gate_up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "pre_feedforward_layernorm": "ffn_norm",
             "post_feedforward_layernorm": "post_ffw_norm",
             "post_attention_layernorm": "post_attention_norm" if fam.startswith("gemma") else "ffn_norm"}
    for name, arr in hf.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            layer, rest = name[len("model.layers."):].split(".", 1)
            gname = f"blk.{layer}.{names[rest.rsplit('.', 1)[0]]}.weight"
        if fam.startswith("gemma") and name.endswith("norm.weight"):
            arr = arr + np.float32(1.0)
        if fam == "mistral" and name.endswith("q_proj.weight"):
            arr = permute(arr, spec["heads"])
        if fam == "mistral" and name.endswith("k_proj.weight"):
            arr = permute(arr, spec["kv_heads"])
        w.add_tensor(gname, np.ascontiguousarray(arr))
    if fam == "phi3":
        short, long = extra
        w.add_tensor("rope_factors_long.weight", np.array(long, dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(short, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_safetensors(path, tensors):
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, arr in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + arr.nbytes]}
        off += arr.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for arr in tensors.values():
            f.write(np.ascontiguousarray(arr).tobytes())


def make(out_dir, fam, seed):
    spec = FAMILIES[fam]
    # one stream per family (keyed by its name), so adding a family never changes another's weights
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(fam.encode())]))
    fields = {f[0]: f for f in tokenizer_fields(spec["tokenizer"])}
    vocab = len(fields["tokenizer.ggml.tokens"][1]) + len(spec["specials"])
    tok_ids = (int(fields["tokenizer.ggml.bos_token_id"][1]), int(fields["tokenizer.ggml.eos_token_id"][1]))
    extra = longrope_factors(spec, rng) if arch_of(fam) == "phi3" else None
    hf = make_weights(fam, spec, vocab, rng)
    path = os.path.join(out_dir, fam + ".gguf")
    write_gguf(path, fam, spec, hf, vocab, extra)
    hf_dir = os.path.join(out_dir, fam + "-hf")
    os.makedirs(hf_dir, exist_ok=True)
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(hf_config(fam, spec, vocab, tok_ids, extra), f, indent=2)
    write_safetensors(os.path.join(hf_dir, "model.safetensors"), hf)
    write_hf_tokenizer(path, hf_dir)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--family", action="append", choices=sorted(FAMILIES))
    ap.add_argument("--seed", type=int, default=17)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    for fam in a.family or sorted(FAMILIES):
        print(make(a.out_dir, fam, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
