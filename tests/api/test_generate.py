"""Chat and completions through the official openai SDK, streaming and not (openai-api.md §1-§3)."""
import json

import requests

MSGS = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_basic(server, client):
    out = client.chat.completions.create(model=server.model_id(), messages=MSGS, max_tokens=8, temperature=0)
    assert out.id.startswith("chatcmpl-") and out.object == "chat.completion"
    assert out.model == server.model_id()
    c = out.choices[0]
    assert c.index == 0 and c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    u = out.usage
    assert u.prompt_tokens > 5 and 0 < u.completion_tokens <= 8
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens >= 0


def stream_chat(client, **kw):
    chunks = list(client.chat.completions.create(stream=True, **kw))
    return chunks


def test_stream_equals_non_stream(server, client):
    kw = dict(model=server.model_id(), messages=MSGS, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kw).choices[0]
    chunks = stream_chat(client, **kw)
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == full.message.content
    last = chunks[-1].choices[0]
    assert last.finish_reason == full.finish_reason and last.delta.content is None
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stream_usage_chunk(server, client):
    chunks = stream_chat(client, model=server.model_id(), messages=MSGS, max_tokens=4,
                         stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    chunks = stream_chat(client, model=server.model_id(), messages=MSGS, max_tokens=4)
    assert all(c.choices for c in chunks)  # no usage chunk unless asked


def test_stream_wire_format(server):
    r = server.post("/v1/chat/completions", {"messages": MSGS, "max_tokens": 3, "stream": True}, stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/event-stream"
    assert r.headers["Cache-Control"] == "no-cache"
    raw = r.content.decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    for e in events[:-2]:
        assert e.startswith("data: ") and "\n" not in e
        json.loads(e[6:])


def test_n2(server, client):
    out = client.chat.completions.create(model=server.model_id(), messages=MSGS, max_tokens=6, n=2, temperature=1,
                                         seed=3)
    assert sorted(c.index for c in out.choices) == [0, 1]
    chunks = stream_chat(client, model=server.model_id(), messages=MSGS, max_tokens=6, n=2, seed=3)
    roles = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role]
    finishes = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(roles) == [0, 1] and sorted(finishes) == [0, 1]
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == i) for i in (0, 1)}
    assert texts == {c.index: c.message.content for c in out.choices}  # the same seed, the same samples


def test_seed_reproducible(server, client):
    kw = dict(model=server.model_id(), messages=MSGS, max_tokens=10, temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_logprobs(server, client):
    out = client.chat.completions.create(model=server.model_id(), messages=MSGS, max_tokens=3, temperature=0,
                                         logprobs=True, top_logprobs=2)
    lp = out.choices[0].logprobs.content
    assert len(lp) == 3
    for t in lp:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert t.token == t.top_logprobs[0].token  # greedy picks the most likely
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    assert "".join(t.token for t in lp) == out.choices[0].message.content


def test_min_tokens_keeps_the_eos_logprob(server, client):
    """min_tokens holds EOS off after the logprobs are taken (vLLM's order): the token chosen in
    its place is the runner-up, and EOS still shows the probability the model gives it."""
    kw = dict(model=server.model_id(), messages=MSGS, temperature=0, logprobs=True, top_logprobs=3)
    ref = client.chat.completions.create(max_tokens=32, **kw).choices[0]
    assert ref.finish_reason == "stop"
    ref_lp = ref.logprobs.content
    n = len(ref_lp)  # the last one is EOS
    eos = ref_lp[-1].token
    held = client.chat.completions.create(max_tokens=n + 1, extra_body={"min_tokens": n + 1}, **kw).choices[0]
    lp = held.logprobs.content
    assert held.finish_reason == "length" and len(lp) == n + 1
    assert [t.token for t in lp[:n - 1]] == [t.token for t in ref_lp[:n - 1]]
    at = lp[n - 1]
    assert at.token == ref_lp[-1].top_logprobs[1].token and at.logprob == ref_lp[-1].top_logprobs[1].logprob
    assert at.top_logprobs[0].token == eos
    assert at.top_logprobs[0].logprob == ref_lp[-1].logprob > -100


def test_stop_string(server, client):
    kw = dict(model=server.model_id(), messages=MSGS, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    assert len(full) > 4
    stop = full[2:4]
    out = client.chat.completions.create(stop=[stop], **kw).choices[0]
    assert out.finish_reason == "stop"
    assert out.message.content == full[: full.index(stop)]
    chunks = stream_chat(client, stop=stop, **kw)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == out.message.content


def test_cached_tokens_on_repeated_prefix(server, client):
    msgs = [{"role": "system", "content": "You answer in one word. " * 8}, {"role": "user", "content": "Hi"}]
    client.chat.completions.create(model=server.model_id(), messages=msgs, max_tokens=1)
    out = client.chat.completions.create(model=server.model_id(), messages=msgs, max_tokens=1)
    assert out.usage.prompt_tokens_details.cached_tokens >= 16


def test_completions_prompts(server, client):
    m = server.model_id()
    one = client.completions.create(model=m, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert one.object == "text_completion" and one.id.startswith("cmpl-") and one.choices[0].text
    ids = requests.post(server.url + "/tokenize", json={"prompt": "The capital of France is"}).json()["tokens"]
    by_ids = client.completions.create(model=m, prompt=ids, max_tokens=4, temperature=0)
    assert by_ids.choices[0].text == one.choices[0].text
    batch = client.completions.create(model=m, prompt=["The capital of France is", "One, two,"], max_tokens=4,
                                      temperature=0, n=2)
    assert [c.index for c in sorted(batch.choices, key=lambda c: c.index)] == [0, 1, 2, 3]
    texts = {c.index: c.text for c in batch.choices}
    assert texts[0] == texts[1] == one.choices[0].text
    lists = client.completions.create(model=m, prompt=[ids, ids[:3]], max_tokens=2, temperature=0)
    assert len(lists.choices) == 2
    assert lists.usage.prompt_tokens == len(ids) + 3


def test_completions_echo_logprobs_stream(server, client):
    m = server.model_id()
    out = client.completions.create(model=m, prompt="Hello", max_tokens=3, temperature=0, echo=True)
    assert out.choices[0].text.startswith("Hello") and len(out.choices[0].text) > 5
    lp = client.completions.create(model=m, prompt="Hello", max_tokens=3, temperature=0, logprobs=2).choices[0]
    assert len(lp.logprobs.tokens) == 3 and len(lp.logprobs.token_logprobs) == 3
    assert all(len(d) >= 2 for d in lp.logprobs.top_logprobs)
    assert lp.logprobs.text_offset[0] == 0
    chunks = list(client.completions.create(model=m, prompt="Hello", max_tokens=3, temperature=0, stream=True,
                                            echo=True))
    assert "".join(c.choices[0].text for c in chunks) == out.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_role_chunk_comes_with_first_token(server):
    """The role chunk leaves with the first token, after the prefill (as vLLM and llama-server):
    a client timing its first chunk (vLLM's TTFT) must see at least the server's own TTFT."""
    import time
    key = "sluice:time_to_first_token_seconds_sum"
    before = server.metrics()[key]
    msgs = [{"role": "user", "content": "Summarise this. " + "The river runs past the old mill. " * 60}]
    t0 = time.perf_counter()
    r = server.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 2, "stream": True}, stream=True)
    first = None
    for line in r.iter_lines():
        if line.startswith(b"data: {") and first is None:
            first = time.perf_counter() - t0
            assert json.loads(line[6:])["choices"][0]["delta"]["role"] == "assistant"
    server_ttft = server.metrics()[key] - before
    assert server_ttft > 0 and first >= server_ttft


def test_long_prefill_token_threshold_same_text(server, start_server):
    """--long-prefill-token-threshold 16 computes a ~400-token prompt in chunks of 16: the greedy
    text is the one the default daemon gives (the chunking itself: tests/unit/test_scheduler.c)."""
    prompt = "Once upon a time, " + "the river ran past the mill and the miller counted sacks. " * 30
    body = {"prompt": prompt, "max_tokens": 16, "temperature": 0}
    want = server.post("/v1/completions", body).json()
    capped = start_server("--long-prefill-token-threshold", "16")
    got = capped.post("/v1/completions", body).json()
    assert got["usage"] == want["usage"] and got["usage"]["prompt_tokens"] > 300
    assert got["choices"][0]["text"] == want["choices"][0]["text"]


def test_max_tokens_cap_without_max_tokens(start_server):
    """--max-tokens-cap bounds a request that leaves max_tokens out (it used to run to the end
    of the context): chat and completions stop at the cap with finish_reason "length"."""
    srv = start_server("--max-tokens-cap", "8", "--max-model-len", "512")
    client = srv.client()
    out = client.chat.completions.create(model=srv.model_id(), messages=MSGS, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 8 and out.choices[0].finish_reason == "length"
    out = client.completions.create(model=srv.model_id(), prompt="Once upon a time", temperature=0,
                                    extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 8 and out.choices[0].finish_reason == "length"


def test_text_offset_counts_characters(client, server):
    """Completions logprobs' text_offset indexes the returned text as the client's language does
    (code points, vLLM's Python string positions), not bytes: on accented text each token's piece
    stands at its offset, streaming or not; a token that is part of a character starts where it
    does."""
    kw = dict(model=server.model_id(), prompt="L'été dernier, à l'école, les élèves", max_tokens=12, temperature=0,
              logprobs=1)
    out = client.completions.create(**kw).choices[0]
    lp = out.logprobs
    assert any(ord(ch) > 127 for ch in out.text), out.text  # the case the test is about
    for tok, off in zip(lp.tokens, lp.text_offset):
        assert out.text[off:off + len(tok)] == tok, (tok, off, out.text)
    assert lp.text_offset[-1] + len(lp.tokens[-1]) == len(out.text)
    # streaming: the same offsets, chunk by chunk
    offsets = []
    for chunk in client.completions.create(stream=True, **kw):
        if chunk.choices and chunk.choices[0].logprobs:
            offsets += chunk.choices[0].logprobs.text_offset
    assert offsets == lp.text_offset
    # a continuation with tokens that are parts of characters (byte tokens): offsets never pass
    # the end of the text (in bytes they ran to three times its length)
    out = client.completions.create(**{**kw, "prompt": "日本の首都は"}).choices[0]
    assert out.logprobs.text_offset == sorted(out.logprobs.text_offset)
    assert out.logprobs.text_offset[-1] < len(out.text)
