"""build/sluice-run: one prompt through the daemon's engine, text printed as it arrives.

The golden prompts of tests/data/golden/exact.txt (an exact float64 forward over the same
weights, scripts/make-golden-exact.py) are run greedily for 64 tokens; what sluice-run prints must
be the text of the reference's greedy tokens, decoded here from the GGUF's own vocabulary (the
`gguf` package and the GPT-2 byte table), so nothing of sluice's detokenizer is trusted. The same
generation through the daemon (same prompt, same seed) must give the same text: there is one
generation path. Errors exit 1 (model or prompt) or 2 (a flag or setting) with a one-line message.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODEL, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from gpt2_bytes import unicode_to_bytes  # noqa: E402

EXACT = ROOT / "tests" / "data" / "golden" / "exact.txt"
N_GEN = 64
CHAT_RE = re.compile(r"<\|im_start\|>user\n(.*)<\|im_end\|>\n<\|im_start\|>assistant\n", re.S)


def sluice_run():
    return ROOT / os.environ.get("SLUICE_BUILD", "build") / "sluice-run"


def run(*args, stdin=None, timeout=120):
    # the exact path, as the test daemons (tests/daemon.py): the references are exact
    return subprocess.run([str(sluice_run()), "--model", str(MODEL), "--cpu-activations", "int16", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def golden_prompts():
    """[(text, greedy ids)] from exact.txt: the prompt's text and the reference's 64 greedy tokens."""
    out, text = [], None
    for line in EXACT.read_text().splitlines():
        if line.startswith("# text: "):
            text = line[len("# text: "):].replace("\\n", "\n")
        elif line.startswith("greedy "):
            ids = [int(x) for x in line.split()[2:]]
            assert len(ids) == N_GEN
            out.append((text, ids))
    assert len(out) == 12
    return out


def cli_args(text):
    """sluice-run's flags for a golden prompt: plain text, or a one-user-turn ChatML chat as --chat
    (a chat with a system turn has no sluice-run form: None)."""
    m = CHAT_RE.fullmatch(text)
    if m:
        return ["--chat", "--prompt", m.group(1)]
    return None if "<|im_start|>" in text else ["--prompt", text]


@pytest.fixture(scope="module")
def vocab():
    """(token strings, control flags) of the default model's GGUF."""
    from gguf import GGUFReader

    r = GGUFReader(str(MODEL))
    f = r.fields["tokenizer.ggml.tokens"]
    toks = [bytes(f.parts[i]).decode() for i in f.data]
    t = r.fields["tokenizer.ggml.token_type"]
    control = [int(t.parts[i][0]) == 3 for i in t.data]  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL
    return toks, control


def detok(vocab, ids):
    """The text of ids as a client sees it: control tokens left out, byte-level BPE undone."""
    toks, control = vocab
    table = unicode_to_bytes()
    raw = b"".join(bytes(table[c] for c in toks[i]) for i in ids if not control[i])
    return raw.decode("utf-8", errors="replace")


def test_greedy_text_is_the_reference_text(vocab):
    checked = same = 0
    for i, (text, ids) in enumerate(golden_prompts()):
        args = cli_args(text)
        if args is None:
            continue
        r = run(*args, "--max-tokens", str(N_GEN), "--ignore-eos")
        assert r.returncode == 0, r.stderr
        want = detok(vocab, ids) + "\n"
        checked += 1
        if r.stdout == want:
            same += 1
        else:
            print("prompt %d differs:\n  want %r\n  got  %r" % (i, want, r.stdout))
    assert checked == 11
    # test_model.c allows one of the twelve prompts to part from the exact forward at a near tie
    # (12 of 12 agree on the machines seen so far)
    assert same >= checked - 1, "%d of %d prompts print the reference's text" % (same, checked)


def test_stops_at_end_of_generation(vocab):
    """Without --ignore-eos the text ends where the reference's greedy run emits <|im_end|> or
    <|endoftext|>, and nothing of that token is printed."""
    text, ids = golden_prompts()[6]  # "What is the capital of France?" as a chat
    eog = next(k for k, t in enumerate(ids) if t in (0, 2))
    r = run(*cli_args(text), "--max-tokens", str(N_GEN), "--verbose")
    assert r.returncode == 0, r.stderr
    assert r.stdout == detok(vocab, ids[:eog]) + "\n"
    assert re.search(r"generated %d tokens" % (eog + 1), r.stderr), r.stderr


def test_stdin_and_verbose_timings():
    text, _ = golden_prompts()[1]
    a = run("--prompt", text, "--max-tokens", "16", "--ignore-eos", "--verbose")
    b = run("--max-tokens", "16", "--ignore-eos", stdin=text + "\n")  # the trailing newline is not the prompt's
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and a.stdout.strip()
    lines = [ln for ln in a.stderr.splitlines() if ln.startswith("sluice-run: ")]
    assert re.fullmatch(r"sluice-run: load [\d.]+ ms \(\d+ threads\)", lines[0]), lines
    assert re.fullmatch(r"sluice-run: prompt 13 tokens in [\d.]+ ms \([\d.]+ tok/s\)", lines[1]), lines
    assert re.fullmatch(r"sluice-run: generated 16 tokens, 15 decode steps in [\d.]+ ms \([\d.]+ tok/s\)",
                        lines[2]), lines
    assert re.fullmatch(r"sluice-run: total [\d.]+ ms, peak RSS [\d.]+ \w+", lines[3]), lines


def test_same_text_as_the_daemon(server):
    """Seeded sampling through sluice-run and through the daemon's /v1/completions: one path."""
    prompt = "Once upon a time, in a small village by the sea,"
    r = run("--prompt", prompt, "--max-tokens", "24", "--temperature", "0.8", "--seed", "7")
    assert r.returncode == 0, r.stderr
    again = run("--prompt", prompt, "--max-tokens", "24", "--temperature", "0.8", "--seed", "7")
    assert again.stdout == r.stdout
    c = server.client().completions.create(model=server.model_id(), prompt=prompt, max_tokens=24,
                                           temperature=0.8, seed=7)
    assert r.stdout == c.choices[0].text + "\n"
    other = run("--prompt", prompt, "--max-tokens", "24", "--temperature", "0.8", "--seed", "8")
    assert other.stdout != r.stdout


def test_engine_flags_apply():
    """--tensor-parallel-size and --max-num-batched-tokens reach the engine: TP=3 with 7-token
    prefill chunks prints the same greedy text as the default run."""
    text, _ = golden_prompts()[0]
    a = run("--prompt", text, "--max-tokens", "16")
    b = run("--prompt", text, "--max-tokens", "16", "--tensor-parallel-size", "3", "--max-num-batched-tokens", "7",
            "--max-num-seqs", "4")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout


@pytest.mark.parametrize("args,status,message", [
    (["--tensor-parallel-size", "2", "--prompt", "x"], 2, "tensor parallel size 2 does not divide"),
    (["--max-model-len", "4", "--prompt", "The capital of France is"], 1,
     "the prompt has 5 tokens, the context limit is 4 (--max-model-len)"),
    (["--prompt", ""], 2, "--prompt: expected a value"),
    (["--max-tokens", "0", "--prompt", "x"], 2, "--max-tokens"),
    (["--max-num-batched-tokens", "7", "--prompt", "x"], 2, "--max-num-batched-tokens (7) must be >= --max-num-seqs"),
    (["--no-such-flag"], 2, "--no-such-flag"),
])
def test_errors(args, status, message):
    r = run(*args)
    assert r.returncode == status, r.stderr
    assert r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert err and err[-1].startswith("sluice-run: ") and message in err[-1], r.stderr


def test_missing_model():
    r = subprocess.run([str(sluice_run()), "--model", str(Path("no-such-model.gguf")), "--prompt", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "no-such-model.gguf" in r.stderr and r.stderr.startswith("sluice-run: ")
