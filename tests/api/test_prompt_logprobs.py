"""Prompt logprobs (issue 14 item 8): completions echo + logprobs, max_tokens 0 with echo, and vLLM's
prompt_logprobs on chat and completions, as lm-evaluation-harness's loglikelihood requests send them.

The values are checked the way tests/unit/test_prompt_logprobs.c checks the engine: a prompt token's
logprob (teacher forcing) equals the logprob the server reported when it generated that token."""
import math

import requests

PROMPT = "The capital of France is"


def post(server, path, **body):
    return requests.post(server.url + path, json={"model": server.model_id(), **body})


def greedy(server, prompt, n):
    """n greedy tokens of prompt, as ids, with their logprobs."""
    r = post(server, "/v1/completions", prompt=prompt, max_tokens=n, temperature=0, logprobs=2,
             ignore_eos=True, return_tokens_as_token_ids=True)
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    return [int(t.split(":")[1]) for t in lp["tokens"]], lp["token_logprobs"], r.json()["choices"][0]["text"]


def prompt_ids(server, text):
    return requests.post(server.url + "/tokenize", json={"prompt": text}).json()["tokens"]


def test_echo_max_tokens_0(server, client):
    out = client.completions.create(model=server.model_id(), prompt=PROMPT, echo=True, logprobs=1, max_tokens=0)
    c = out.choices[0]
    assert c.text == PROMPT
    assert out.usage.completion_tokens == 0 and c.finish_reason == "length"
    ids = prompt_ids(server, PROMPT)
    lp = c.logprobs
    assert len(lp.tokens) == len(ids) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == PROMPT
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None and lp.text_offset[0] == 0
    assert all(x is not None and x <= 0 for x in lp.token_logprobs[1:])
    assert all(1 <= len(t) <= 2 for t in lp.top_logprobs[1:])  # the best one, and the prompt token
    off = [0]
    for t in lp.tokens[:-1]:
        off.append(off[-1] + len(t))
    assert lp.text_offset == off


def test_echo_without_logprobs_max_tokens_0(server):
    r = post(server, "/v1/completions", prompt=PROMPT, echo=True, max_tokens=0)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    assert c["text"] == PROMPT and c["logprobs"] is None and r.json()["usage"]["completion_tokens"] == 0


def test_echo_logprobs_continue(server):
    gen, gen_lp, text = greedy(server, PROMPT, 3)
    r = post(server, "/v1/completions", prompt=PROMPT, echo=True, logprobs=2, max_tokens=3, temperature=0,
             ignore_eos=True)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    ids = prompt_ids(server, PROMPT)
    lp = c["logprobs"]
    n = len(ids)
    assert c["text"] == PROMPT + text
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == n + 3
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][n:] == gen_lp
    assert lp["text_offset"][n] == len(PROMPT)


def test_teacher_forcing_matches_generation(server):
    """The prompt logprob of each continuation token equals its logprob when it was generated."""
    gen, gen_lp, text = greedy(server, PROMPT, 6)
    ids = prompt_ids(server, PROMPT)
    r = post(server, "/v1/completions", prompt=ids + gen, echo=True, logprobs=2, max_tokens=0)
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]["token_logprobs"]
    assert len(lp) == len(ids) + len(gen)
    for j, want in enumerate(gen_lp):
        assert math.isclose(lp[len(ids) + j], want, abs_tol=1e-3), (j, lp[len(ids) + j], want)
    # the same through vLLM's prompt_logprobs field
    r = post(server, "/v1/completions", prompt=ids + gen, prompt_logprobs=2, max_tokens=1, temperature=0)
    assert r.status_code == 200, r.text
    plp = r.json()["choices"][0]["prompt_logprobs"]
    for j, want in enumerate(gen_lp):
        entry = plp[len(ids) + j]
        tok = str(gen[j])
        assert math.isclose(entry[tok]["logprob"], want, abs_tol=1e-3)
        assert entry[tok]["rank"] == 1  # greedy picked it


def check_vllm_shape(plp, ids, k):
    assert isinstance(plp, list) and len(plp) == len(ids) and plp[0] is None
    for i, entry in enumerate(plp[1:], 1):
        assert isinstance(entry, dict) and str(ids[i]) in entry  # the prompt token first
        assert list(entry)[0] == str(ids[i])
        assert k <= len(entry) <= k + 1
        for key, v in entry.items():
            assert set(v) == {"logprob", "rank", "decoded_token"}
            assert v["logprob"] <= 0 and v["rank"] >= 1 and isinstance(v["decoded_token"], str)
        own = entry[str(ids[i])]["rank"]  # the alternatives are ranks 1..k, the prompt token once
        others = sorted(v["rank"] for key, v in entry.items() if key != str(ids[i]))
        assert others == [r for r in range(1, k + 1) if r != own]
        assert len(entry) == (k if own <= k else k + 1)


def test_prompt_logprobs_completions(server):
    r = post(server, "/v1/completions", prompt=PROMPT, prompt_logprobs=2, max_tokens=2, temperature=0)
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    check_vllm_shape(c["prompt_logprobs"], prompt_ids(server, PROMPT), 2)
    assert c["logprobs"] is None and not c["text"].startswith(PROMPT)


def test_prompt_logprobs_chat(server):
    msgs = [{"role": "user", "content": "Hi"}]
    r = post(server, "/v1/chat/completions", messages=msgs, prompt_logprobs=2, max_tokens=2, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    plp = body["prompt_logprobs"]  # vLLM: on the response, not the choice
    assert len(plp) == body["usage"]["prompt_tokens"] and plp[0] is None
    tmpl = requests.post(server.url + "/tokenize", json={"model": server.model_id(), "messages": msgs}).json()
    check_vllm_shape(plp, tmpl["tokens"], 2)
    # prompt_logprobs 0: the prompt token alone
    r = post(server, "/v1/chat/completions", messages=msgs, prompt_logprobs=0, max_tokens=1)
    assert all(len(e) == 1 for e in r.json()["prompt_logprobs"][1:])


def test_bad_values(server):
    for path, extra in (("/v1/completions", {"prompt": PROMPT}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})):
        for bad in (-1, 21, "x", 1.5):
            r = post(server, path, prompt_logprobs=bad, max_tokens=1, **extra)
            assert r.status_code == 400, (path, bad, r.text)
            assert r.json()["error"]["param"] == "prompt_logprobs" and "prompt_logprobs" in r.json()["error"]["message"]
    # max_tokens 0 needs echo
    r = post(server, "/v1/completions", prompt=PROMPT, max_tokens=0)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    # streams do not carry prompt logprobs yet: a 400, never a silent drop
    r = post(server, "/v1/completions", prompt=PROMPT, prompt_logprobs=1, stream=True)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_logprobs"
