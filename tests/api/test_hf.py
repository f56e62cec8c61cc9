"""A Hugging Face model directory served by the daemon (issue 7): the default model converted by
scripts/gguf-to-hf.py (f32 safetensors, Q/K in HF's rotate_half layout, tokenizer.json and
tokenizer_config.json with the chat template) into build/hf-smollm2, once (kept between
sessions; delete the directory to convert again).

The daemon serving that directory uses its own tokenizer.json and chat template: chat works,
renders the same prompt tokens as the GGUF daemon, and greedy text equals the GGUF daemon's on a
few prompts. The GGUF computes on Q4_1/Q8_0 blocks and the directory on their exact f32
dequantization, so the two forwards differ only by the kernels' 16-bit activation rounding
(kernels.h): short greedy continuations agree token for token.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import MODEL, ROOT

HF_DIR = ROOT / "build" / "hf-smollm2"
CONVERTER = ROOT / "scripts" / "gguf-to-hf.py"
CHATS = ["What is the capital of France?", "Name a color.", "Say hello in Spanish."]
PROMPTS = ["The capital of France is", "Water boils at", "1, 2, 3, 4,"]


def convert():
    done = [HF_DIR / n for n in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")]
    if all(p.exists() for p in done):
        return
    tmp = HF_DIR.with_name(HF_DIR.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    p = subprocess.run([sys.executable, str(CONVERTER), str(MODEL), str(tmp), "--dtype", "f32"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        pytest.fail(f"gguf-to-hf.py failed (it needs numpy and gguf: scripts/setup.sh installs them):\n{p.stderr}")
    shutil.rmtree(HF_DIR, ignore_errors=True)
    os.replace(tmp, HF_DIR)


@pytest.fixture(scope="module")
def hf(start_server):
    convert()
    srv = start_server("--model", str(HF_DIR))
    yield srv
    srv.stop()


def chat(srv, content, max_tokens=16, stream=False):
    body = {"messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0}
    if stream:
        r = srv.post("/v1/chat/completions", {**body, "stream": True}, stream=True)
        assert r.status_code == 200, r.text
        events = [e[len("data: "):] for e in r.content.decode().split("\n\n") if e.startswith("data: ")]
        chunks = [json.loads(e)["choices"] for e in events[:-1]]
        return "".join(c[0]["delta"].get("content") or "" for c in chunks if c), None
    r = srv.post("/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    j = r.json()
    return j["choices"][0]["message"]["content"], j["usage"]["prompt_tokens"]


def test_serves_the_directory(hf):
    assert hf.model_id() == "hf-smollm2"
    log = hf.log_text()
    assert "safetensors" in log, log
    assert "tokenizer.json" in log and "tokenizer_config.json" in log, log


def test_chat_works(hf):
    text, n_prompt = chat(hf, CHATS[0])
    assert text.strip(), text
    assert chat(hf, CHATS[0], stream=True)[0] == text


def test_same_prompt_tokens_and_greedy_text_as_gguf(server, hf):
    """tokenizer.json + tokenizer_config.json's template render the GGUF's prompt tokens, and the
    f32 weights continue it greedily as the quantized GGUF does."""
    for content in CHATS:
        want = chat(server, content)
        assert chat(hf, content) == want, content


def test_completions_equal_gguf(server, hf):
    for prompt in PROMPTS:
        body = {"prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True}
        want = server.post("/v1/completions", body).json()["choices"][0]["text"]
        got = hf.post("/v1/completions", body).json()["choices"][0]["text"]
        assert got == want, prompt


def test_tokenize_equal_gguf(server, hf):
    text = "Héllo wörld 123 <|im_start|> don't"
    a = server.post("/tokenize", {"prompt": text}).json()["tokens"]
    b = hf.post("/tokenize", {"prompt": text}).json()["tokens"]
    assert a == b
    # the chat template from tokenizer_config.json renders what the GGUF's renders
    msgs = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}
    a = server.post("/tokenize", msgs).json()["tokens"]
    b = hf.post("/tokenize", msgs).json()["tokens"]
    assert a == b and len(a) > 10


def test_dummy_weights_from_the_config(start_server):
    """--load-format dummy on the same directory: random weights at its shapes, its own tokenizer."""
    convert()
    srv = start_server("--model", str(HF_DIR), "--load-format", "dummy", "--max-model-len", "512")
    text, n = chat(srv, CHATS[1], max_tokens=6)
    assert n > 5 and isinstance(text, str)
    assert "dummy" in srv.log_text()
    srv.stop()
