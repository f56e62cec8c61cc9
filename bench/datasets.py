"""Request sets for bench/serve.py: random token lengths and a ShareGPT-like length mix.

Everything is generated locally from a seed (no download). Prompts come in two forms:
  - token ids (for /v1/completions, which takes `prompt: [ids]`): exact input lengths;
  - text made of whole-word vocabulary entries (for /v1/chat/completions, which only takes
    text): about one token per word; the true count (chat template included) comes back in the
    response's usage.prompt_tokens, which the benchmark then uses, as vLLM's client does.
The vocabulary is read from the model's GGUF file (tokenizer.ggml.tokens / token_type), so
no tokenizer package is needed and special/control/byte tokens never appear in a prompt.

Random lengths follow vLLM's RandomDataset (vllm/benchmarks/datasets/random.py): input and
output lengths are integers drawn uniformly from [floor(L*(1-r)), ceil(L*(1+r))] with r the
range ratio in [0, 1); the output lower bound is at least 1.

ShareGPT-like lengths: see SHAREGPT_* below and docs/benchmarks.md.
"""
import math
import random
import struct
from dataclasses import dataclass, field

# GGUF metadata value types (gguf.md): sizes of the fixed-width ones.
_GGUF_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
TOKEN_TYPE_NORMAL = 1

# ShareGPT-like length model. ShareGPT_V3 after vLLM's filter (prompt <= 1024 tokens, prompt +
# output <= 2048, both >= 4) averages about 220-230 prompt tokens and 195-205 output tokens per
# conversation turn (vLLM's printed totals for 1000 prompts with a Llama-3 tokenizer: 229,711 in /
# 203,068 out, vllm PR #18566; 203,559 / 184,674 for 940 prompts, kubeai PR #341). Both lengths
# are heavy-tailed, prompts much more so (short questions next to pasted documents). We draw each
# length from a log-normal (median, sigma) and apply the same filter by rejection; the medians are
# chosen so the filtered means land on those averages. Measured over 100,000 draws (seed 0):
# prompt mean 226, median 153, p90 533; output mean 201, median 148, p90 408.
SHAREGPT_IN_MEDIAN, SHAREGPT_IN_SIGMA = 165.0, 1.1
SHAREGPT_OUT_MEDIAN, SHAREGPT_OUT_SIGMA = 148.0, 0.8
SHAREGPT_MIN_LEN, SHAREGPT_MAX_IN, SHAREGPT_MAX_TOTAL = 4, 1024, 2048


@dataclass
class SampleRequest:
    prompt_ids: list          # token ids (completions)
    prompt_text: str          # whole-word text of about the same token count (chat)
    prompt_len: int           # the intended input length in tokens
    expected_output_len: int  # sent as max_tokens


@dataclass
class Vocab:
    size: int = 0
    ids: list = field(default_factory=list)    # normal tokens, usable in id prompts
    words: list = field(default_factory=list)  # normal tokens that are a space + letters


def _read(f, fmt):
    n = struct.calcsize("<" + fmt)
    b = f.read(n)
    if len(b) != n:
        raise ValueError("truncated GGUF file")
    return struct.unpack("<" + fmt, b)


def _read_str(f):
    (n,) = _read(f, "Q")
    b = f.read(n)
    if len(b) != n:
        raise ValueError("truncated GGUF string")
    return b


def _read_value(f, vtype, keep):
    """One metadata value; arrays are returned only when keep (others are skipped)."""
    if vtype in _GGUF_FIXED:
        return _read(f, _GGUF_FIXED[vtype])[0]
    if vtype == _GGUF_STRING:
        return _read_str(f)
    if vtype == _GGUF_ARRAY:
        etype, count = _read(f, "IQ")
        if etype in _GGUF_FIXED:
            fmt = _GGUF_FIXED[etype]
            size = struct.calcsize("<" + fmt)
            raw = f.read(size * count)
            if len(raw) != size * count:
                raise ValueError("truncated GGUF array")
            return list(struct.unpack("<%d%s" % (count, fmt), raw)) if keep else None
        out = [] if keep else None
        for _ in range(count):
            v = _read_value(f, etype, keep)
            if keep:
                out.append(v)
        return out
    raise ValueError("unknown GGUF value type %d" % vtype)


def gguf_vocab(path):
    """Reads tokenizer.ggml.tokens and token_type from a GGUF file's metadata (stdlib only)."""
    want = {b"tokenizer.ggml.tokens", b"tokenizer.ggml.token_type"}
    got = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError("%s is not a GGUF file" % path)
        (version,) = _read(f, "I")
        if version < 2:
            raise ValueError("GGUF version %d is too old" % version)
        _n_tensors, n_kv = _read(f, "QQ")
        for _ in range(n_kv):
            key = _read_str(f)
            (vtype,) = _read(f, "I")
            got[key] = _read_value(f, vtype, key in want)
            if all(k in got for k in want):
                break
    tokens = got.get(b"tokenizer.ggml.tokens")
    if not tokens:
        raise ValueError("%s has no tokenizer.ggml.tokens" % path)
    types = got.get(b"tokenizer.ggml.token_type") or [TOKEN_TYPE_NORMAL] * len(tokens)
    return vocab_from_tokens(tokens, types)


def vocab_from_tokens(tokens, types):
    """Usable ids: normal tokens. Words: normal tokens spelled as a leading space (GPT-2 'Ġ' or
    SentencePiece '▁') followed by 2+ ASCII letters, so that joining them with spaces gives text
    that tokenizes back to about one token per word."""
    v = Vocab(size=len(tokens))
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty != TOKEN_TYPE_NORMAL:
            continue
        v.ids.append(i)
        s = t.decode("utf-8", "replace")
        for lead in ("\u0120", "\u2581"):
            if s.startswith(lead) and len(s) >= 3 and s[1:].isascii() and s[1:].isalpha():
                v.words.append(s[1:])
                break
    if not v.ids:
        raise ValueError("the vocabulary has no normal tokens")
    if not v.words:  # a vocabulary without space-prefixed words: fall back to plain letters
        v.words = ["word"]
    return v


def _prompt(rng, vocab, n):
    ids = [vocab.ids[rng.randrange(len(vocab.ids))] for _ in range(n)]
    text = " ".join(vocab.words[rng.randrange(len(vocab.words))] for _ in range(n))
    return ids, text


def random_bounds(length, range_ratio, at_least=0):
    """vLLM's integer range around a mean length: [floor(L(1-r)), ceil(L(1+r))]."""
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError("range ratio must be in [0, 1)")
    lo = math.floor(length * (1.0 - range_ratio))
    hi = math.ceil(length * (1.0 + range_ratio))
    return max(lo, at_least), max(hi, at_least)


def sample_random(vocab, num, input_len, output_len, range_ratio=0.0, seed=0):
    rng = random.Random(seed)
    in_lo, in_hi = random_bounds(input_len, range_ratio, 1)
    out_lo, out_hi = random_bounds(output_len, range_ratio, 1)
    reqs = []
    for _ in range(num):
        n_in = rng.randint(in_lo, in_hi)
        n_out = rng.randint(out_lo, out_hi)
        ids, text = _prompt(rng, vocab, n_in)
        reqs.append(SampleRequest(ids, text, n_in, n_out))
    return reqs


def sharegpt_lengths(rng):
    """One (prompt, output) length pair from the ShareGPT-like model, filtered like vLLM."""
    while True:
        n_in = int(round(rng.lognormvariate(math.log(SHAREGPT_IN_MEDIAN), SHAREGPT_IN_SIGMA)))
        n_out = int(round(rng.lognormvariate(math.log(SHAREGPT_OUT_MEDIAN), SHAREGPT_OUT_SIGMA)))
        if n_in < SHAREGPT_MIN_LEN or n_out < SHAREGPT_MIN_LEN:
            continue
        if n_in > SHAREGPT_MAX_IN or n_in + n_out > SHAREGPT_MAX_TOTAL:
            continue
        return n_in, n_out


def sample_sharegpt_like(vocab, num, seed=0, output_len=None):
    """output_len, when given, replaces every drawn output length (vLLM's --sharegpt-output-len)."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(num):
        n_in, n_out = sharegpt_lengths(rng)
        if output_len:
            n_out = output_len
        ids, text = _prompt(rng, vocab, n_in)
        reqs.append(SampleRequest(ids, text, n_in, n_out))
    return reqs
