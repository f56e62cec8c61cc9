"""Speculative decoding (--speculative-config: n-gram proposals, and the default model as its own
draft model) through the daemon: the outputs are those of the same daemon without speculation,
token for token (greedy golden prompts alone and 8 at once; seeded sampling, n = 2, logprobs and
stop strings); with the model as its own draft every greedy proposal is accepted; sampled outputs
keep their distribution (a chi-square test over 2,000 samples of the next 3 tokens, different
seeds with and without speculation); an aborted stream leaks no KV block; bad configurations
(and a draft model that is missing or has another tokenizer) are refused at start-up with one
line. The C side (rollback, prefix-cache contents, preemption) is tests/unit/test_spec.c.
"""
import math
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import BASE_ARGS, MODEL, ROOT, binary, free_port

SPEC = '{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}'
DRAFT = '{"model": "%s", "num_speculative_tokens": 4}' % MODEL
EXACT = ROOT / "tests" / "data" / "golden" / "exact.txt"


@pytest.fixture(scope="module")
def spec_server(start_server):
    return start_server("--speculative-config", SPEC)


@pytest.fixture(scope="module")
def draft_server(start_server):
    return start_server("--speculative-config", DRAFT)


@pytest.fixture(scope="module")
def golden_want(server):
    """The golden prompts' greedy outputs without speculation."""
    return [choices_of(complete(server, greedy_body(ids))) for ids in golden_prompt_ids()]


def golden_prompt_ids():
    out = []
    for line in EXACT.read_text().splitlines():
        if line.startswith("tokens "):
            out.append([int(x) for x in line.split()[1:]])
    assert len(out) == 12
    return out


def spec_counts(srv):
    m = srv.metrics()
    return (m.get("sluice:spec_decode_num_drafts_total", 0), m.get("sluice:spec_decode_num_draft_tokens_total", 0),
            m.get("sluice:spec_decode_num_accepted_tokens_total", 0))


def complete(srv, body):
    r = srv.post("/v1/completions", dict(body, model=srv.model_id()))
    assert r.status_code == 200, r.text
    return r.json()


def choices_of(resp):
    """What must not change with speculation: per choice, text, finish reason, token ids and logprobs."""
    out = []
    for c in sorted(resp["choices"], key=lambda c: c["index"]):
        lp = c.get("logprobs") or {}
        out.append((c["text"], c["finish_reason"], lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")))
    return out


def greedy_body(ids):
    return {"prompt": ids, "max_tokens": 64, "temperature": 0, "ignore_eos": True, "logprobs": 1,
            "return_tokens_as_token_ids": True}


def test_greedy_golden_alone_and_concurrent(golden_want, spec_server):
    prompts = golden_prompt_ids()
    want = golden_want
    d0 = spec_counts(spec_server)
    alone = [choices_of(complete(spec_server, greedy_body(ids))) for ids in prompts]
    d1 = spec_counts(spec_server)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda ids: choices_of(complete(spec_server, greedy_body(ids))), prompts))
    for i in range(len(prompts)):
        assert alone[i] == want[i], "golden prompt %d differs with speculation (alone)" % i
        assert together[i] == want[i], "golden prompt %d differs with speculation (8 at once)" % i
    assert d1[0] > d0[0] and d1[2] > d0[2], "no proposal was made or accepted: %s -> %s" % (d0, d1)
    print("golden prompts alone: %d drafts, %d of %d proposals accepted" % (d1[0] - d0[0], d1[2] - d0[2], d1[1] - d0[1]))


def test_draft_model_golden_alone_and_concurrent(golden_want, draft_server):
    """The default model as its own draft: the golden outputs unchanged, every proposal accepted
    (greedy, ignore_eos: nothing ends a request in the middle of its proposals), and the memory
    plan shows the draft."""
    prompts = golden_prompt_ids()
    d0 = spec_counts(draft_server)
    alone = [choices_of(complete(draft_server, greedy_body(ids))) for ids in prompts]
    d1 = spec_counts(draft_server)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda ids: choices_of(complete(draft_server, greedy_body(ids))), prompts))
    d2 = spec_counts(draft_server)
    for i in range(len(prompts)):
        assert alone[i] == golden_want[i], "golden prompt %d differs with the draft model (alone)" % i
        assert together[i] == golden_want[i], "golden prompt %d differs with the draft model (8 at once)" % i
    for a, b in ((d0, d1), (d1, d2)):
        drafted, accepted = b[1] - a[1], b[2] - a[2]
        assert drafted > 12 * 8 and accepted == drafted, "%d of %d proposals accepted" % (accepted, drafted)
    m = draft_server.metrics()
    per_pos = [m.get('sluice:spec_decode_num_accepted_tokens_per_pos_total{position="%d"}' % p, 0) for p in range(4)]
    assert per_pos[0] == d2[0] and per_pos[3] > 0, per_pos
    draft_server.log.flush()
    plan = [ln for ln in draft_server.log_path.read_text(errors="replace").splitlines() if "draft model" in ln]
    assert any("weights" in ln and "KV cache" in ln for ln in plan), plan


@pytest.mark.parametrize("kind", ["spec_server", "draft_server"])
def test_seeded_n2_logprobs_stop(server, kind, request):
    spec_server = request.getfixturevalue(kind)
    # a prompt that invites copying; n = 2 seeded samples with penalties, logprobs and a stop string
    text = ("one two three four five six seven eight nine ten. one two three four five six seven eight nine ten. "
            "one two three four five six seven eight nine ten. one two three")
    body = {"prompt": text, "max_tokens": 40, "temperature": 0.7, "top_p": 0.9, "seed": 11, "n": 2, "logprobs": 2,
            "presence_penalty": 0.1, "stop": [" eight nine ten. one two three four five six seven"],
            "return_tokens_as_token_ids": True}
    d0 = spec_counts(spec_server)
    for seed in (11, 12, 13):
        body["seed"] = seed
        assert choices_of(complete(spec_server, body)) == choices_of(complete(server, body)), "seed %d" % seed
    d1 = spec_counts(spec_server)
    assert d1[2] > d0[2], "nothing was accepted"


def chi2_sf(x, df):
    """P(X > x) for a chi-square with df degrees of freedom: the regularized upper gamma Q(df/2, x/2)."""
    a, z = df / 2.0, x / 2.0
    if z <= 0:
        return 1.0
    if z < a + 1:  # series for P
        term = total = 1.0 / a
        n = a
        while abs(term) > 1e-15 * abs(total):
            n += 1
            term *= z / n
            total += term
        return 1.0 - total * math.exp(-z + a * math.log(z) - math.lgamma(a))
    # continued fraction for Q (Lentz)
    b, c, d = z + 1 - a, 1e300, 1.0 / (z + 1 - a)
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(-z + a * math.log(z) - math.lgamma(a)) * h


def test_chi2_sf_reference_values():
    assert abs(chi2_sf(3.841458820694124, 1) - 0.05) < 1e-9
    assert abs(chi2_sf(18.307038053275146, 10) - 0.05) < 1e-9
    assert abs(chi2_sf(5.0, 10) - 0.8911780189141512) < 1e-9


SAMPLE_PROMPT = "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat. The cat sat on the"


def samples(srv, seed0):
    """2,000 samples (125 requests of n = 16; sample i of request k has seed seed0 + 16 k + i, so no two
    share one) of the next 3 tokens as id tuples."""
    def one(k):
        r = complete(srv, {"prompt": SAMPLE_PROMPT, "max_tokens": 3, "temperature": 1.0, "n": 16, "seed": seed0 + 16 * k,
                           "ignore_eos": True, "logprobs": 0, "return_tokens_as_token_ids": True})
        return [tuple(c["logprobs"]["tokens"]) for c in r["choices"]]
    with ThreadPoolExecutor(2) as pool:
        return [t for part in pool.map(one, range(125)) for t in part]


# 4,000 three-token completions: minutes under ASan, and the sanitizers have the golden, n = 2 and
# abort tests to watch the same verification code; `make test` runs it.
@pytest.mark.skipif(os.environ.get("SANITIZED") == "1", reason="the distribution test runs in make test")
def test_sampled_distribution_unchanged(server, spec_server):
    d0 = spec_counts(spec_server)
    off = Counter(samples(server, 1000))
    on = Counter(samples(spec_server, 900000))  # other seeds: a test of the distribution, not of the seeds
    d1 = spec_counts(spec_server)
    assert sum(off.values()) == sum(on.values()) == 2000
    assert d1[2] - d0[2] > 300, "too few proposals accepted to test anything: %s -> %s" % (d0, d1)
    # chi-square test of homogeneity over the 3-token continuations; rare ones pooled
    cats, rest_off, rest_on = [], 0, 0
    for key in set(off) | set(on):
        if off[key] + on[key] >= 10:
            cats.append((off[key], on[key]))
        else:
            rest_off, rest_on = rest_off + off[key], rest_on + on[key]
    if rest_off + rest_on > 0:
        cats.append((rest_off, rest_on))
    assert len(cats) >= 3, "the prompt's continuations are too predictable to test: %s" % cats
    stat = 0.0
    for a, b in cats:
        for obs in (a, b):
            exp = (a + b) / 2.0  # equal sample sizes
            stat += (obs - exp) ** 2 / exp
    p = chi2_sf(stat, len(cats) - 1)
    print("chi-square %.2f over %d categories, p = %.4f; %d proposals accepted" % (stat, len(cats), p, d1[2] - d0[2]))
    assert p > 0.001, "the sampled distribution moved with speculation: chi-square %.2f, p %.2g" % (stat, p)


def test_abort_mid_stream_leaks_nothing(spec_server):
    doc = (ROOT / "docs" / "architecture.md").read_text()[:2500]
    body = {"model": spec_server.model_id(), "prompt": "Copy this text:\n" + doc + "\n\nCopy:\n" + doc[:200],
            "max_tokens": 400, "temperature": 0, "ignore_eos": True, "stream": True}
    d0 = spec_counts(spec_server)
    with requests.post(spec_server.url + "/v1/completions", json=body, stream=True, timeout=120) as r:
        assert r.status_code == 200
        n = 0
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                n += 1
                if n >= 12:
                    break
    # the engine notices the closed connection, aborts, and gives every block back
    import time
    t0 = time.time()
    while time.time() - t0 < 30:
        m = spec_server.metrics()
        if m["sluice:num_requests_running"] == 0 and m["sluice:kv_cache_usage_perc"] == 0:
            break
        time.sleep(0.2)
    assert m["sluice:num_requests_running"] == 0 and m["sluice:kv_cache_usage_perc"] == 0, m
    assert spec_counts(spec_server)[0] > d0[0], "the request did not speculate"


def refusal(cfg):
    p = subprocess.run([str(binary()), "--model", str(MODEL), "--port", str(free_port()), *BASE_ARGS,
                        "--speculative-config", cfg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "--speculative-config" in ln]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_draft_model_missing_is_refused(tmp_path):
    line = refusal('{"model": "%s", "num_speculative_tokens": 2}' % (tmp_path / "draft.gguf"))
    assert "draft model" in line and "draft.gguf" in line, line


def test_draft_model_other_tokenizer_is_refused(tmp_path):
    # a tiny random Mistral-style model with a 300-odd-token byte-level BPE vocabulary
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-tiny-models.py"), str(tmp_path),
                    "--family", "mistral"], check=True, capture_output=True)
    line = refusal('{"model": "%s", "num_speculative_tokens": 2}' % (tmp_path / "mistral.gguf"))
    assert "tokens, the target's 49152" in line and "must share the target's tokenizer" in line, line


@pytest.mark.parametrize("cfg,msg", [
    ('{"method": "eagle", "num_speculative_tokens": 2}', 'unknown method "eagle"'),
    ('{"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_min": 3, "prompt_lookup_max": 2}',
     '"prompt_lookup_min" (3) must be <= "prompt_lookup_max" (2)'),
    ('{"method": "ngram", "num_speculative_tokens": 99}', '"num_speculative_tokens" must be between 1 and 16'),
    ("ngram", "not valid JSON"),
])
def test_bad_config_is_refused(cfg, msg):
    p = subprocess.run([str(binary()), "--model", str(MODEL), "--port", str(free_port()), *BASE_ARGS,
                        "--speculative-config", cfg], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "--speculative-config" in ln]
    assert len(lines) == 1 and msg in lines[0], p.stderr
