#!/usr/bin/env python3
"""hf_tokenizer.py: a GGUF's tokenizer (tokenizer.ggml.*) as a Hugging Face tokenizer directory.

write_hf_tokenizer(gguf_path, out_dir) writes tokenizer.json (in the JSON shape the `tokenizers`
library saves: key order, 2-space indent, UTF-8) and tokenizer_config.json (as transformers
saves it: sorted keys, with the GGUF's chat template, bos/eos and add_bos_token). Loading the
directory with sluice's tok_load_hf gives the tokenizer tok_load builds from the GGUF; HF
`tokenizers` reads the files too.

  - byte-level BPE (tokenizer.ggml.model "gpt2"): the vocab, the merges, and the pre-tokenizer
    HF models of that tokenizer.ggml.pre family declare (SmolLM2's Sequence[Digits, ByteLevel],
    Llama-3's Split + ByteLevel with ignore_merges, Qwen2's, GPT-2's ByteLevel);
  - SentencePiece-style BPE ("llama"): byte_fallback BPE with the Prepend/Replace normalizer
    Llama-2's tokenizer.json has, merges made from the scores as transformers'
    SentencePieceExtractor makes them.

Needs the `gguf` package (pip install gguf==0.17.1 numpy); used by scripts/gguf-to-hf.py and
to make tests/data/hf/. CLI: hf_tokenizer.py MODEL.gguf OUT_DIR [--legacy-merges]
[--generation-config].
"""
import argparse
import json
import os
import sys

# llama.cpp's token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPM_SPACE = "\u2581"

# The pre-tokenizers HF models of each llama.cpp tokenizer.ggml.pre family declare.
RE_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
             r"\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
            r"\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def sequence(*steps):
    return {"type": "Sequence", "pretokenizers": list(steps)}


# pre name -> (normalizer, pre_tokenizer, ignore_merges)
PRE_FAMILIES = [
    (("gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4"), None, byte_level(True), False),
    (("smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b"), None,
     sequence({"type": "Digits", "individual_digits": True}, byte_level(True)), False),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"), None, sequence(split(RE_LLAMA3), byte_level(False)),
     True),
    (("dbrx", "smaug-bpe"), None, sequence(split(RE_LLAMA3), byte_level(False)), False),
    (("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"), {"type": "NFC"},
     sequence(split(RE_QWEN2), byte_level(False)), False),
]
PRE_ADD_BOS = ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")  # llama.cpp's default add_bos


class GGUFTokenizer:
    """The tokenizer.ggml.* metadata of a GGUF file."""

    def __init__(self, path):
        from gguf import GGUFReader  # imported here so that --help works without it
        r = GGUFReader(path)
        f = r.fields

        def get(key, default=None):
            return f[key].contents() if key in f else default

        self.model = get("tokenizer.ggml.model")
        if self.model is None:
            raise ValueError(f"{path}: tokenizer.ggml.model is missing")
        self.pre = get("tokenizer.ggml.pre", "default")
        self.tokens = get("tokenizer.ggml.tokens")
        if not self.tokens:
            raise ValueError(f"{path}: tokenizer.ggml.tokens is missing")
        n = len(self.tokens)
        self.types = get("tokenizer.ggml.token_type", [NORMAL] * n)
        self.scores = get("tokenizer.ggml.scores", [0.0] * n)
        self.merges = get("tokenizer.ggml.merges", [])
        spm = self.model == "llama"

        def token_id(key, default):
            v = get(key, default)
            return v if v is not None and 0 <= v < n else None

        # llama.cpp's defaults when the metadata is silent
        self.bos = token_id("tokenizer.ggml.bos_token_id", 1 if spm else 11)
        self.eos = token_id("tokenizer.ggml.eos_token_id", 2 if spm else 11)
        self.unk = token_id("tokenizer.ggml.unknown_token_id", 0 if spm else None)
        self.pad = token_id("tokenizer.ggml.padding_token_id", None)
        self.eot = token_id("tokenizer.ggml.eot_token_id", None)
        self.eom = token_id("tokenizer.ggml.eom_token_id", None)
        self.add_bos = get("tokenizer.ggml.add_bos_token", spm or self.pre in PRE_ADD_BOS)
        self.add_eos = get("tokenizer.ggml.add_eos_token", False)
        self.add_space_prefix = get("tokenizer.ggml.add_space_prefix", spm)
        self.chat_template = get("tokenizer.chat_template")
        arch = get("general.architecture")
        self.context_length = get(f"{arch}.context_length") if arch else None


def added_token(tid, content, special):
    return {"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


def template_processing(bos_text, bos_id):
    def special(type_id):
        return {"SpecialToken": {"id": bos_text, "type_id": type_id}}

    def seq(name, type_id):
        return {"Sequence": {"id": name, "type_id": type_id}}

    return {"type": "TemplateProcessing",
            "single": [special(0), seq("A", 0)],
            "pair": [special(0), seq("A", 0), special(1), seq("B", 1)],
            "special_tokens": {bos_text: {"id": bos_text, "ids": [bos_id], "tokens": [bos_text]}}}


def split_merge(m):
    # llama.cpp's rule: the first space after the first byte separates the two tokens
    k = m.find(" ", 1)
    if k < 0:
        raise ValueError(f"merge {m!r} has no space")
    return m[:k], m[k + 1:]


def spm_merges(tok):
    """transformers' SentencePieceExtractor: every split of a piece into two pieces, by score."""
    vocab = {t: i for i, t in enumerate(tok.tokens)}
    merges = []
    for piece, score in zip(tok.tokens, tok.scores):
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2], reverse=True)  # stable: ties stay in vocab order
    return [(a, b) for a, b, _ in merges]


def tokenizer_json(tok, legacy_merges=False):
    n = len(tok.tokens)
    vocab = {}
    for i, t in enumerate(tok.tokens):
        if t in vocab:
            raise ValueError(f"token {t!r} has ids {vocab[t]} and {i}")
        vocab[t] = i
    specials = (CONTROL, UNKNOWN)
    plain = (NORMAL, BYTE) if tok.model == "llama" else (NORMAL,)
    odd = [i for i in range(n) if tok.types[i] not in plain + specials + (USER_DEFINED,)]
    if odd:  # tokenizer.json has no unused/undefined tokens: they become normal ones
        print(f"hf_tokenizer.py: warning: {len(odd)} tokens of type unused/undefined (first: id {odd[0]}) "
              "are written as normal tokens", file=sys.stderr)
    added = [added_token(i, tok.tokens[i], tok.types[i] in specials) for i in range(n)
             if tok.types[i] in specials + (USER_DEFINED,)]
    bos_text = tok.tokens[tok.bos] if tok.bos is not None else None

    if tok.model == "gpt2":
        fam = next((f for f in PRE_FAMILIES if tok.pre in f[0]), None)
        if fam is None:
            names = ", ".join(name for f in PRE_FAMILIES for name in f[0])
            raise ValueError(f"tokenizer.ggml.pre {tok.pre!r} has no Hugging Face pre-tokenizer here "
                             f"(supported: {names})")
        _, normalizer, pre_tokenizer, ignore_merges = fam
        merges = [split_merge(m) for m in tok.merges]
        post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
        if tok.add_bos and bos_text is not None:
            post = {"type": "Sequence", "processors": [post, template_processing(bos_text, tok.bos)]}
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        unk_token, fuse_unk, byte_fallback = None, False, False
    elif tok.model == "llama":
        replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPM_SPACE}
        normalizer = ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPM_SPACE}, replace]}
                      if tok.add_space_prefix else replace)
        pre_tokenizer, ignore_merges = None, False
        merges = spm_merges(tok)
        post = template_processing(bos_text, tok.bos) if tok.add_bos and bos_text is not None else None
        decoder = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPM_SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        unk_token = tok.tokens[tok.unk] if tok.unk is not None else None
        fuse_unk, byte_fallback = True, True
    else:
        raise ValueError(f"tokenizer.ggml.model {tok.model!r} is not supported (supported: gpt2, llama)")

    for a, b in merges:  # `tokenizers` refuses merges outside the vocabulary
        for s in (a, b, a + b):
            if s not in vocab:
                raise ValueError(f"merge {a!r} {b!r}: {s!r} is not a token")

    model = {"type": "BPE", "dropout": None, "unk_token": unk_token, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": fuse_unk, "byte_fallback": byte_fallback,
             "ignore_merges": ignore_merges, "vocab": vocab,
             "merges": [f"{a} {b}" for a, b in merges] if legacy_merges else [[a, b] for a, b in merges]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post,
            "decoder": decoder, "model": model}


def tokenizer_config(tok):
    def name(i):
        return tok.tokens[i] if i is not None else None

    decoder = {}
    for i, ty in enumerate(tok.types):
        if ty in (CONTROL, UNKNOWN, USER_DEFINED):
            decoder[str(i)] = {"content": tok.tokens[i], "lstrip": False, "normalized": False, "rstrip": False,
                               "single_word": False, "special": ty != USER_DEFINED}
    cfg = {
        "add_bos_token": bool(tok.add_bos),
        "add_eos_token": bool(tok.add_eos),
        "added_tokens_decoder": decoder,
        "bos_token": name(tok.bos),
        "clean_up_tokenization_spaces": False,
        "eos_token": name(tok.eos),
        "model_max_length": tok.context_length or 1000000000000000019884624838656,
        "tokenizer_class": "GPT2Tokenizer" if tok.model == "gpt2" else "LlamaTokenizer",
        "unk_token": name(tok.unk),
    }
    if tok.model == "gpt2":
        cfg["add_prefix_space"] = False
    if tok.pad is not None:
        cfg["pad_token"] = name(tok.pad)
    if tok.chat_template:
        cfg["chat_template"] = tok.chat_template
    return cfg


def eos_token_ids(tok):
    """EOS and the declared EOT/EOM: generation_config.json's eos_token_id."""
    ids = []
    for i in (tok.eos, tok.eot, tok.eom):
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def write_hf_tokenizer(gguf_path, out_dir, legacy_merges=False, generation_config=False):
    """Writes out_dir/tokenizer.json and tokenizer_config.json (and generation_config.json when
    asked); returns the eos_token_id list for a generation_config.json."""
    tok = GGUFTokenizer(gguf_path)
    tj = tokenizer_json(tok, legacy_merges)
    os.makedirs(out_dir, exist_ok=True)
    # `tokenizers` saves pretty-printed (serde_json: 2 spaces, ": ", no trailing newline)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(tj, indent=2, ensure_ascii=False, separators=(",", ": ")))
    # transformers: json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(tokenizer_config(tok), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    eos = eos_token_ids(tok)
    if generation_config:
        gen = {"bos_token_id": tok.bos, "eos_token_id": eos[0] if len(eos) == 1 else eos}
        with open(os.path.join(out_dir, "generation_config.json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(gen, indent=2, sort_keys=True) + "\n")
    return eos


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("out_dir")
    ap.add_argument("--legacy-merges", action="store_true",
                    help='merges as "a b" strings (tokenizers < 0.20) instead of ["a", "b"] pairs')
    ap.add_argument("--generation-config", action="store_true", help="also write generation_config.json")
    a = ap.parse_args()
    try:
        write_hf_tokenizer(a.gguf, a.out_dir, a.legacy_merges, a.generation_config)
    except (ValueError, OSError) as e:
        print(f"hf_tokenizer.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
