#!/usr/bin/env python3
"""Golden tokenizer data for tests/unit/test_tokenizer.c, from llama.cpp (an independent
implementation) through llama-cpp-python 0.3.16, every model loaded with vocab_only=True.

Needs the reference venv (/opt/refvenv; scripts/make-golden.sh creates it when missing:
`python3 -m venv /opt/refvenv && /opt/refvenv/bin/pip install -q llama-cpp-python==0.3.16
gguf==0.17.1 numpy`):
    /opt/refvenv/bin/python scripts/make-golden-tokens.py [model.gguf]

Writes into tests/data/tokenizer/:
  smollm2.txt      ~250 strings on the default model (byte-level BPE, pre = "smollm"), each with
                   parse_special off, plus the special-token ones with it on.
  pre-<name>.txt   the same vocabulary re-declared with another tokenizer.ggml.pre (gpt-2,
                   llama-bpe, qwen2, deepseek-llm, deepseek-coder, default), to check the other
                   pre-tokenizer regexes. The C test loads the default model and overrides pre.
  spm-tiny.gguf    a small synthetic SentencePiece-style vocab (tokenizer.ggml.model = "llama"):
                   <unk> <s> </s>, <0x00>..<0xFF>, the characters and ~400 BPE merges learned
                   below from a fixed corpus (score = -merge index), a USER_DEFINED and a CONTROL
                   token. No tensors.
  spm-tiny.txt     ~60 strings tokenized by llama.cpp on spm-tiny.gguf.
  bpe-tiny.gguf    a small synthetic byte-level BPE vocab (GPT-2 byte mapping, ~500 merges learned
                   below, multi-digit merges, a word token no merge reaches) declared with
                   pre = "llama-bpe": the SmolLM vocab splits every digit, so it cannot tell
                   llama3's \p{N}{1,3} from qwen2's \p{N}, nor show ignore_merges.
  bpe-tiny-<pre>.txt  ~110 strings tokenized by llama.cpp on bpe-tiny.gguf as is (llama-bpe)
                   and re-declared as qwen2.
  pieces-*.txt     llama_token_to_piece(id, special=true) of every token of each vocabulary,
                   hashed per block of 1024 ids (FNV-1a 64 over a 4-byte length + the bytes).

Case file format (line based, no JSON, so C reads it with fgets/strtol):
    # comment
    <flags> TAB <hex of the UTF-8 text> TAB <ids, space separated> TAB <roundtrip 0|1> TAB <hex of detok>
flags: bit 0 = parse_special, bit 1 = add BOS (llama.cpp's add_special). The detok column is
llama_detokenize(ids, remove_special=false, unparse_special=true); roundtrip says whether it equals
the input text (with the BOS text removed when one was added).
"""
import ctypes
import os
import sys
from collections import Counter

from gpt2_bytes import bytes_to_unicode

try:
    import gguf
    import llama_cpp
    from llama_cpp import Llama
except ImportError:
    sys.exit("llama-cpp-python / gguf missing: run scripts/make-golden.sh (it creates /opt/refvenv)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")
TMP = os.environ.get("TMPDIR", "/tmp")

# ---- the strings (all valid UTF-8: the server only ever sees valid text from JSON)

PROSE = [
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Once upon a time, there was a little girl named Alice who lived in a small village.",
    "I can't believe it's already 2024! We're going to the park; they'll meet us there.",
    "It's John's book. She'd said he'd've known. I'm sure you've seen it.",
    "IT'S JOHN'S BOOK. I'M SURE. WE'RE HERE. THEY'LL COME. YOU'VE SEEN. HE'D GO. DON'T!",
    "rock 'n' roll, 'quoted', ''double'', '",
    "'s 't 're 've 'm 'll 'd",
    "'S 'T 'RE 'VE 'M 'LL 'D",
    "Mr. Smith went to Washington D.C. on Jan. 5th, 1999 at 3:30 p.m.",
    "e.g. i.e. etc. vs. a.k.a.",
    "Dear Sir or Madam,\n\nI am writing to inform you that your application has been received.\n\nBest regards,\nBob",
    "Tokenization is the process of splitting text into smaller units called tokens.",
    "She sells sea shells by the sea shore.",
    "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS #!",
    "camelCaseIdentifier snake_case_identifier kebab-case-identifier SCREAMING_SNAKE",
    "https://www.example.com/path/to/page?query=value&other=123#fragment",
    "user.name+tag@example-domain.co.uk",
    "Email me at john.doe@gmail.com or call +1 (555) 123-4567.",
    "#hashtag @mention $dollar %percent ^caret &amp *star",
    "...and then... nothing!!! Really??? Yes!?",
    "-- em—dash – en-dash … ellipsis “curly quotes” ‘single’",
    "«guillemets» „German quotes“ 「Japanese quotes」",
    "A\u00a0non-breaking\u00a0space and a thin\u2009space and an em\u2003space.",
    "ideographic\u3000space",
    "zero\u200bwidth\u200cjoiner\u200dtest\ufeffbom",
    "line\u2028separator\u2029paragraph",
    "next\u0085line and unit\x1fseparator and group\x1dsep and file\x1csep",
    "bell\x07 backspace\x08 escape\x1b[31mred\x1b[0m",
    "nul\x00inside",
    "form\x0cfeed and vertical\x0btab",
    "carriage\rreturn and windows\r\nnewline\r\n\r\nend",
]

CODE = [
    "def hello():\n    print(\"Hello, world!\")\n",
    "import numpy as np\n\nx = np.array([1, 2, 3])\nprint(x.mean())\n",
    "class Foo(Bar):\n    def __init__(self, a: int = 0) -> None:\n        super().__init__()\n        self._a = a  # comment\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tcontinue\n\telse:\n\t\tbreak\n",
    "#include <stdio.h>\n\nint main(int argc, char **argv) {\n    printf(\"%d\\n\", argc);\n    return 0;\n}\n",
    "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
    "if (a != b && c <= d || e >= f) { x += 1; y -= 2; z *= 3; w /= 4; }",
    "ptr->field = (*arr)[idx++]; --count; a = b ? c : d;",
    "{\"name\": \"sluice\", \"version\": 1.0, \"tags\": [\"llm\", \"c\"], \"ok\": true, \"n\": null}",
    "{\n  \"model\": \"smollm2\",\n  \"messages\": [\n    {\"role\": \"user\", \"content\": \"hi\"}\n  ]\n}",
    "<html><body><div class=\"main\">Hello &amp; welcome</div></body></html>",
    "SELECT id, name FROM users WHERE age > 21 ORDER BY name DESC LIMIT 10;",
    "fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!(\"{:?}\", v); }",
    "const f = async (x) => { await fetch(`/api/${x}`); };",
    "$ ls -la /usr/local/bin | grep -v '^d' > out.txt 2>&1",
    "x = 0x1F; y = 0b1010; z = 1e-9; w = 3.14159f; v = 1_000_000",
    "    indented four\n        indented eight\n\t\ttabs two\n",
    "# Title\n\n## Subtitle\n\n- item one\n- item two\n\n```python\nprint(1)\n```\n",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "\\frac{a}{b} + \\sum_{i=0}^{n} x_i^2 = \\alpha \\cdot \\beta",
    "a==b!=c<=d>=e->f=>g::h...i",
    "//////////////////////////////////////////////////////////",
    "============================================================",
    "------------------------------------------------------------------------------------------",
    "}}}}]]]])))));;;;",
]

EMOJI = [
    "😀",
    "Hello 😀 world",
    "👍🏽",
    "👍🏻👍🏼👍🏽👍🏾👍🏿",
    "👨‍👩‍👧‍👦",
    "family: 👨‍👩‍👧‍👦 and couple 👩‍❤️‍👨",
    "🏳️‍🌈 🏴‍☠️",
    "🇫🇷🇩🇪🇯🇵",
    "I ❤️ emoji ✨🎉🚀",
    "🤖🧠💡🔥💯",
    "keycap 1️⃣ 2️⃣ #️⃣",
    "😀😃😄😁😆😅🤣😂🙂🙃",
]

SCRIPTS = [
    "你好，世界！",
    "我爱北京天安门。今天天气很好。",
    "こんにちは、世界。カタカナとひらがな。",
    "東京は日本の首都です。",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "السلام عليكم ورحمة الله وبركاته",
    "नमस्ते दुनिया",
    "हिन्दी भाषा में लिखा गया वाक्य।",
    "Привет, мир!",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Γειά σου Κόσμε",
    "שלום עולם",
    "สวัสดีชาวโลก",
    "Xin chào thế giới",
    "Café, naïve, résumé, façade, jalapeño, Ångström, Øresund, Straße",
    "ÀÁÂÃÄÅ àáâãäå ÈÉÊË èéêë",
    "e\u0301 combining acute, n\u0303 combining tilde, a\u0308\u0301 double",
    "Zürich Köln München Gödel Erdős Łódź Škoda",
    "English mixed with 中文 and русский and العربية and हिन्दी.",
    "mixed123數字456and789",
    "ᚠᛇᚻ᛫ᛒᛦᚦ runes",
    "∀x∈ℝ: x²≥0 ∑∫∂√∞≠≤≥±×÷",
    "→ ← ↑ ↓ ⇒ ⇔ ★ ☆ ♠ ♥ ♦ ♣",
    "¡Hola! ¿Qué tal?",
    "ⅫⅣ ½ ¾ ① ② ³ ٣ ४ ๓",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉",
    "𠀀𠀁 CJK extension B",
    "\ue000 private use and \U0010fffd plane 16",
    "\u0378 unassigned and \ufffd replacement",
]

SPACES = [
    "",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "  \t ",
    " \n ",
    "\t\t\t",
    "\r\n",
    "a\n\n\nb",
    "a  b",
    "a   b",
    "a    b",
    "a\tb",
    "a \tb",
    "a\t b",
    "trailing space ",
    "trailing spaces   ",
    "   leading spaces",
    " leading and trailing ",
    "word\n",
    "word \n",
    "word\n ",
    "\n\nword",
    "x" + " " * 40 + "y",
    " " * 100,
    "\n" * 20,
    "end.\n\n\n\n",
    "tabs\tand\tmore\ttabs",
    "mixed \t\n \t\n whitespace",
]

NUMBERS = [
    "0",
    "7",
    "42",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159265358979",
    "1,234,567",
    "1.234.567,89",
    "-273.15",
    "+1e10 -2.5E-3",
    "100%",
    "$1,000,000.00",
    "2024-01-15T10:30:00Z",
    "192.168.0.1:8080",
    "v1.2.3-beta.4",
    "A1B2C3D4",
    "0xDEADBEEF",
    "3 + 4 = 7",
    "1st 2nd 3rd 4th",
    "pi is approximately 3.14, e is 2.718",
    "a1 b22 c333 d4444",
    "phone: 555 123 4567",
    "٠١٢٣٤٥٦٧٨٩ Arabic-Indic digits",
    "１２３ fullwidth digits",
]

SPECIAL = [
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text before<|endoftext|>text after",
    "<|im_start|><|im_end|><|im_start|>",
    "<|im_start|>",
    " <|im_end|> ",
    "<|im_start|user>",
    "<|im_end",
    "<|im_start|>assistant\nSure! Here's the answer: 4.<|im_end|>\n",
    "<repo_name>sluice<file_sep>main.c<filename>x.c",
    "<jupyter_start><jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<|im_start|><|im_start|>",
    "<<|im_start|>>",
    "<|im_start|>user\n你好 😀<|im_end|>",
]


def long_cases():
    para = ("In the beginning the Universe was created. This has made a lot of people very angry "
            "and been widely regarded as a bad move. ")
    code = "for (int i = 0; i < n; i++) {\n    sum += a[i] * b[i];\n}\n"
    return [para * 8, code * 10, "日本語のテキスト。" * 20, "word " * 150 + "end"]


def variants():
    # systematic combinations: each short word with each kind of neighbour
    out = []
    words = ["hello", "Hello", "HELLO", "don't", "x", "ab12", "über", "日本", "😀"]
    seps = [" ", "  ", "\n", ", ", ". ", "\t", "-", "'s "]
    for w in words:
        for s in seps:
            out.append(w + s + w)
    return out


def all_strings():
    seen, out = set(), []
    for s in PROSE + CODE + EMOJI + SCRIPTS + SPACES + NUMBERS + SPECIAL + long_cases() + variants():
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# ---- llama.cpp helpers


def load(path):
    return Llama(path, vocab_only=True, verbose=False)


def detokenize(m, ids):
    vocab = llama_cpp.llama_model_get_vocab(m.model)
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    cap = 64 * len(ids) + 64
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, cap, False, True)
    assert n >= 0, n
    return buf.raw[:n]


def case_line(m, text, flags):
    b = text.encode("utf-8")
    ids = m.tokenize(b, add_bos=bool(flags & 2), special=bool(flags & 1))
    dec = detokenize(m, ids)
    want = b
    if flags & 2 and ids and ids[0] == m.token_bos():
        want = detokenize(m, ids[:1]) + b
    rt = 1 if dec == want else 0
    return "%d\t%s\t%s\t%d\t%s" % (flags, b.hex(), " ".join(map(str, ids)), rt, dec.hex())


def piece_hashes(m, path, name):
    vocab = llama_cpp.llama_model_get_vocab(m.model)
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    buf = ctypes.create_string_buffer(4096)
    lines = []
    for b in range(0, (n + 1023) // 1024):
        h = 14695981039346656037
        for i in range(b * 1024, min(n, (b + 1) * 1024)):
            k = llama_cpp.llama_token_to_piece(vocab, i, buf, 4096, 0, True)
            assert k >= 0
            for byte in k.to_bytes(4, "little") + buf.raw[:k]:
                h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        lines.append("%d %016x" % (b, h))
    with open(path, "w") as f:
        f.write("# llama_token_to_piece(special=true) of %s, FNV-1a 64 per 1024 ids: block hash\n" % name)
        for l in lines:
            f.write(l + "\n")
    print("wrote %s (%d blocks)" % (os.path.relpath(path, ROOT), len(lines)))


def write_cases(path, header, lines):
    with open(path, "w") as f:
        for h in header:
            f.write("# " + h + "\n")
        for l in lines:
            f.write(l + "\n")
    print("wrote %s (%d cases)" % (os.path.relpath(path, ROOT), len(lines)))


def has_special_text(s):
    return "<|" in s or "<repo" in s or "<file" in s or "<jupyter" in s or "<empty" in s


def make_smollm():
    m = load(MODEL)
    lines = []
    for s in all_strings():
        lines.append(case_line(m, s, 0))
        if has_special_text(s):
            lines.append(case_line(m, s, 1))
    n_rt = sum(1 for l in lines if l.split("\t")[3] == "1")
    write_cases(os.path.join(OUT, "smollm2.txt"),
                ["llama.cpp (llama-cpp-python %s) on %s, vocab_only" % (llama_cpp.__version__, os.path.basename(MODEL)),
                 "%d cases, %d round-trip through llama_detokenize" % (len(lines), n_rt),
                 "flags TAB hex(text) TAB ids TAB roundtrip TAB hex(llama_detokenize)"], lines)
    piece_hashes(m, os.path.join(OUT, "pieces-smollm2.txt"), os.path.basename(MODEL))


# ---- other pre-tokenizers on the same vocabulary


def copy_vocab_gguf(src_path, dst_path, pre):
    """A vocab-only copy of the model's GGUF whose tokenizer.ggml.pre is `pre`."""
    r = gguf.GGUFReader(src_path)
    w = gguf.GGUFWriter(dst_path, "llama")
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "tokenizer.ggml.pre":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                val = [field.parts[i][0].item() for i in field.data]
            w.add_array(name, val) if sub == gguf.GGUFValueType.STRING else w.add_key_value(name, val, vtype, sub_type=sub)
        elif vtype == gguf.GGUFValueType.STRING:
            w.add_string(name, bytes(field.parts[field.data[0]]).decode("utf-8"))
        else:
            w.add_key_value(name, field.parts[field.data[0]][0].item(), vtype)
    w.add_tokenizer_pre(pre)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


PRES = ["gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "default"]


def make_pres():
    strings = [s for s in all_strings() if not has_special_text(s) and len(s) < 400]
    for pre in PRES:
        path = os.path.join(TMP, "sluice-golden-pre-%s.gguf" % pre)
        copy_vocab_gguf(MODEL, path, pre)
        m = load(path)
        lines = [case_line(m, s, 0) for s in strings]
        write_cases(os.path.join(OUT, "pre-%s.txt" % pre),
                    ["llama.cpp (llama-cpp-python %s) on %s re-declared with tokenizer.ggml.pre = %s" %
                     (llama_cpp.__version__, os.path.basename(MODEL), pre),
                     "flags TAB hex(text) TAB ids TAB roundtrip TAB hex(llama_detokenize)"], lines)
        del m
        os.unlink(path)


# ---- a synthetic SentencePiece-style vocabulary

SPM_CORPUS = """
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun and the fox runs into the
forest. A tokenizer splits text into pieces; the pieces are then mapped to numbers that a model
reads. Sentence piece models treat the space as a normal symbol and write it as a lower block.
Hello world! Hello there, how are you today? I am fine, thank you. We are going to the market
to buy apples, oranges and bread. They said that it is going to rain in the evening.
def main(): return print("hello world") if x == 1 else None
int main(void) { return 0; }
Numbers like 1, 2, 3, 10, 42, 100 and 2024 appear in text too.
Café naïve résumé über straße
"""

SPM_CHARS_EXTRA = "日本語你好"  # a few pieces outside Latin; other non-ASCII text falls back to bytes


def train_spm_bpe(corpus, n_merges):
    words = Counter()
    for w in corpus.split():
        words["\u2581" + w] += 1
    vocab = {tuple(w): c for w, c in words.items()}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for syms, c in vocab.items():
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best[0] + best[1])
        new = {}
        for syms, c in vocab.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        vocab = new
    return merges


def make_spm_gguf(path):
    toks, scores, types = [], [], []

    def add(t, s, ty):
        toks.append(t)
        scores.append(s)
        types.append(ty)

    add("<unk>", 0.0, gguf.TokenType.UNKNOWN)
    add("<s>", 0.0, gguf.TokenType.CONTROL)
    add("</s>", 0.0, gguf.TokenType.CONTROL)
    for b in range(256):
        add("<0x%02X>" % b, 0.0, gguf.TokenType.BYTE)
    add("<|user|>", 0.0, gguf.TokenType.USER_DEFINED)
    add("<|ctrl|>", 0.0, gguf.TokenType.CONTROL)
    merges = train_spm_bpe(SPM_CORPUS, 400)
    have = set(toks)
    for i, piece in enumerate(merges):
        if piece not in have:
            add(piece, -float(i), gguf.TokenType.NORMAL)
            have.add(piece)
    # two pieces with the same score: "qxz" must merge its leftmost pair first (q+x)
    for piece in ["qx", "xz"]:
        add(piece, -50.5, gguf.TokenType.NORMAL)
        have.add(piece)
    chars = sorted(set(SPM_CORPUS.replace("\n", "").replace(" ", "")) | set(SPM_CHARS_EXTRA) | {"\u2581"})
    for i, ch in enumerate(chars):
        if ch not in have:
            add(ch, -1000.0 - i, gguf.TokenType.NORMAL)
            have.add(ch)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("spm-tiny (synthetic test vocabulary)")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(64)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote %s (%d pieces, %d bytes)" % (os.path.relpath(path, ROOT), len(toks), os.path.getsize(path)))


SPM_STRINGS = [
    "", " ", "  ", "Hello world", "Hello world!", "hello", "The quick brown fox jumps over the lazy dog.",
    "the fox and the dog", "They said that it is going to rain", "a tokenizer splits text into pieces",
    "  leading", "trailing  ", "a  b   c", "tab\there", "new\nline", "\n\n", "line one\nline two\n",
    "Café naïve résumé", "über straße", "日本語", "你好世界", "こんにちは", "😀 emoji", "👨‍👩‍👧",
    "Привет", "مرحبا", "x", "zzz", "qqq www", "1234567890", "2024 and 42", "def main(): return 0",
    "int main(void) { return 0; }", "print(\"hello world\")", "<s>", "</s>", "<unk>", "<s>Hello",
    "Hello</s>", "<|user|>hi", "hi <|user|> there", "<|ctrl|>x", "x<|ctrl|>", "a<|user|><|ctrl|>b",
    "The The The", "markets and apples", "oranges, bread", "how are you today?", "I am fine, thank you.",
    "\u2581 literal lower block", "▁▁", "!!!???...", "\t", "mixed 日本 text", "Numbers like 10",
    "ñ", "\u00a0nbsp", "qxz", "qxzqxz", "xzqx",
]


def make_spm():
    path = os.path.join(OUT, "spm-tiny.gguf")
    make_spm_gguf(path)
    m = load(path)
    lines = []
    for s in SPM_STRINGS:
        lines.append(case_line(m, s, 0))
        if "<" in s:
            lines.append(case_line(m, s, 1))
    for s in ["Hello world", "", "<s>Hello", "the fox"]:
        lines.append(case_line(m, s, 2))
        lines.append(case_line(m, s, 3))
    write_cases(os.path.join(OUT, "spm-tiny.txt"),
                ["llama.cpp (llama-cpp-python %s) on spm-tiny.gguf, vocab_only" % llama_cpp.__version__,
                 "flags TAB hex(text) TAB ids TAB roundtrip TAB hex(llama_detokenize)"], lines)
    piece_hashes(m, os.path.join(OUT, "pieces-spm-tiny.txt"), "spm-tiny.gguf")


# ---- a synthetic byte-level BPE vocabulary

BPE_CORPUS = SPM_CORPUS + """
In 2024 there were 12345 visitors, up from 1234567 in total; pi is 3.14159 and e is 2.71828.
Call 555-1234 or 555-9876. The years 1999, 2000, 2001, 2020, 2021, 2022, 2023 and 2024.
Prices: $100, $250.99, 1,234,567 units, 42 items, 99 bottles, 007 agents, 123456789.
I'm sure it's fine. You're right, we'll see; they've gone. Don't worry, I'd say.
"""


def train_bytelevel_bpe(corpus, n_merges):
    import re
    enc = bytes_to_unicode()
    pat = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+")
    words = Counter("".join(enc[b] for b in w.encode("utf-8")) for w in pat.findall(corpus))
    vocab = {tuple(w): c for w, c in words.items()}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for syms, c in vocab.items():
            for a, b in zip(syms, syms[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new = {}
        for syms, c in vocab.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        vocab = new
    return enc, merges


def make_bpe_gguf(path):
    enc, merges = train_bytelevel_bpe(BPE_CORPUS, 500)
    toks, types = [], []
    for t, ty in [("<|begin_of_text|>", gguf.TokenType.CONTROL), ("<|end_of_text|>", gguf.TokenType.CONTROL),
                  ("<|eot_id|>", gguf.TokenType.CONTROL)]:
        toks.append(t)
        types.append(ty)
    for b in range(256):
        toks.append(enc[b])
        types.append(gguf.TokenType.NORMAL)
    have = set(toks)
    for a, b in merges:
        if a + b not in have:
            toks.append(a + b)
            types.append(gguf.TokenType.NORMAL)
            have.add(a + b)
    toks.append("\u0120xylophone")  # no merge builds it: only ignore_merges emits it whole
    types.append(gguf.TokenType.NORMAL)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("bpe-tiny (synthetic test vocabulary)")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(64)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges([a + " " + b for a, b in merges])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote %s (%d tokens, %d merges, %d bytes)" % (os.path.relpath(path, ROOT), len(toks), len(merges),
                                                       os.path.getsize(path)))


BPE_EXTRA = ["xylophone", " xylophone", "The xylophone.", "xylophones", "XYLOPHONE", "a xylophone and a xylophone",
             "<|begin_of_text|>hi<|eot_id|>", "2024-01-01 12:34:56", "12345678", "1234 5678 90"]


def make_bpe():
    path = os.path.join(OUT, "bpe-tiny.gguf")
    make_bpe_gguf(path)
    strings = PROSE[:16] + NUMBERS + SPACES + CODE[:6] + EMOJI[:4] + SCRIPTS[:12] + BPE_EXTRA
    for pre in ["llama-bpe", "qwen2"]:
        p = path
        if pre != "llama-bpe":
            p = os.path.join(TMP, "sluice-golden-bpe-tiny-%s.gguf" % pre)
            copy_vocab_gguf(path, p, pre)
        m = load(p)
        lines = [case_line(m, s, 0) for s in strings]
        for s in ["Hello world", "", "<|begin_of_text|>hi<|eot_id|>"]:
            lines.append(case_line(m, s, 2))
            lines.append(case_line(m, s, 3))
        lines.append(case_line(m, "<|begin_of_text|>hi<|eot_id|>", 1))
        write_cases(os.path.join(OUT, "bpe-tiny-%s.txt" % pre),
                    ["llama.cpp (llama-cpp-python %s) on bpe-tiny.gguf declared with pre = %s" %
                     (llama_cpp.__version__, pre),
                     "flags TAB hex(text) TAB ids TAB roundtrip TAB hex(llama_detokenize)"], lines)
        if pre == "llama-bpe":
            piece_hashes(m, os.path.join(OUT, "pieces-bpe-tiny.txt"), "bpe-tiny.gguf")
        del m
        if p != path:
            os.unlink(p)


def main():
    os.makedirs(OUT, exist_ok=True)
    make_smollm()
    make_pres()
    make_spm()
    make_bpe()


if __name__ == "__main__":
    main()
