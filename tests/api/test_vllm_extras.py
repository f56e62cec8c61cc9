"""vLLM's request extras that used to be silently ignored, each honoured as vLLM does:
return_tokens_as_token_ids, add_special_tokens, stream_options.continuous_usage_stats, cache_salt."""
import json

from conftest import ROOT

MSGS = [{"role": "user", "content": "What is the capital of France?"}]
# A long shared prefix (several 16-token blocks) for the prefix-cache tests.
LONG = "The history of canals is a history of patience. " * 12


def test_return_tokens_as_token_ids(server, client):
    kw = dict(model=server.model_id(), max_tokens=6, temperature=0)
    plain = client.completions.create(prompt="The capital of France is", logprobs=2, **kw).choices[0]
    ids = client.completions.create(prompt="The capital of France is", logprobs=2,
                                    extra_body={"return_tokens_as_token_ids": True}, **kw).choices[0]
    assert ids.text == plain.text
    toks = ids.logprobs.tokens
    assert all(t.startswith("token_id:") for t in toks), toks
    # the ids are the tokens: detokenized they give the text
    d = server.post("/detokenize", {"tokens": [int(t.split(":")[1]) for t in toks]}).json()
    assert d["prompt"] == plain.text
    assert all(k.startswith("token_id:") for top in ids.logprobs.top_logprobs for k in top)
    assert ids.logprobs.text_offset == plain.logprobs.text_offset  # offsets still index the text
    chat = client.chat.completions.create(messages=MSGS, logprobs=True, top_logprobs=2,
                                          extra_body={"return_tokens_as_token_ids": True}, **kw).choices[0]
    for t in chat.logprobs.content:
        assert t.token.startswith("token_id:") and bytes(t.bytes).decode() == t.token
        assert all(alt.token.startswith("token_id:") for alt in t.top_logprobs)
    # streaming chunks name them the same way
    for chunk in client.chat.completions.create(messages=MSGS, logprobs=True, stream=True,
                                                extra_body={"return_tokens_as_token_ids": True}, **kw):
        if chunk.choices and chunk.choices[0].logprobs:
            assert all(t.token.startswith("token_id:") for t in chunk.choices[0].logprobs.content)


def test_add_special_tokens(start_server):
    """With a tokenizer that adds BOS (tests/data/hf/spm-tiny), completions add it by default and
    not with add_special_tokens false; chat the other way round (its template writes BOS)."""
    srv = start_server("--tokenizer", str(ROOT / "tests" / "data" / "hf" / "spm-tiny"))
    c = srv.client()
    base = dict(model=srv.model_id(), max_tokens=1, temperature=0)
    a = c.completions.create(prompt="hello world", **base).usage.prompt_tokens
    b = c.completions.create(prompt="hello world", extra_body={"add_special_tokens": False}, **base).usage.prompt_tokens
    assert a == b + 1
    x = c.chat.completions.create(messages=MSGS, **base).usage.prompt_tokens
    y = c.chat.completions.create(messages=MSGS, extra_body={"add_special_tokens": True}, **base).usage.prompt_tokens
    assert y == x + 1


def test_continuous_usage_stats(server):
    body = {"model": server.model_id(), "messages": MSGS, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            "ignore_eos": True}
    r = server.post("/v1/chat/completions", body, stream=True)
    assert r.status_code == 200
    chunks = [json.loads(line[6:]) for line in r.iter_lines(decode_unicode=True)
              if line.startswith("data: ") and line != "data: [DONE]"]
    with_choices = [ch for ch in chunks if ch["choices"]]
    assert with_choices and all(ch["usage"] for ch in with_choices)
    counts = [ch["usage"]["completion_tokens"] for ch in with_choices]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 6  # the role chunk, ..., the last token
    prompt = {ch["usage"]["prompt_tokens"] for ch in with_choices}
    final = chunks[-1]
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 6 and prompt == {final["usage"]["prompt_tokens"]}
    for ch in with_choices:
        assert ch["usage"]["total_tokens"] == ch["usage"]["prompt_tokens"] + ch["usage"]["completion_tokens"]
    # without include_usage it asks for nothing (vLLM: both must be set)
    body["stream_options"] = {"continuous_usage_stats": True}
    r = server.post("/v1/chat/completions", body, stream=True)
    assert all('"usage"' not in line for line in r.iter_lines(decode_unicode=True) if line.startswith("data: {"))


def test_cache_salt_isolates_the_prefix_cache(start_server):
    """Requests share cached KV blocks only with the same cache_salt (or both without one)."""
    srv = start_server()
    c = srv.client()

    def cached(prompt, salt):
        extra = {"cache_salt": salt} if salt else {}
        out = c.completions.create(model=srv.model_id(), prompt=prompt, max_tokens=1, temperature=0, extra_body=extra)
        return out.usage.prompt_tokens_details.cached_tokens

    p = LONG + "First."
    assert cached(p, "tenant-a") == 0
    assert cached(p, "tenant-a") >= 64
    assert cached(p, "tenant-b") == 0
    assert cached(p, None) == 0
    assert cached(p, None) >= 64
    assert cached(p, "tenant-b") >= 64
    assert cached(LONG + "Second.", "tenant-a") >= 64  # the shared prefix, within the salt
    assert cached(LONG + "Third.", "tenant-c") == 0
