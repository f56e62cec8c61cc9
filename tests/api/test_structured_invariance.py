"""Structured output keeps the engine's guarantees (issue 22): a constrained greedy request gives
the same tokens alone and batched among 8 unconstrained ones (or 8 with other grammars), its
neighbours' tokens do not change either, and the same request gives the same tokens with the
grammar and prefix caches cold (a fresh daemon) and warm."""
import pytest

from structured import chat, corpus, run_all, schema_errors

SCHEMA = next(c for c in corpus() if c["id"] == "flight")["schema"]
OTHER = [c for c in corpus() if c["id"] in ("person", "event", "weather", "recipe", "flight", "review", "payment",
                                            "log-entry")]


def ids(body):
    """The generated token ids (logprobs with return_tokens_as_token_ids)."""
    return [int(t["token"].split(":")[1]) for t in body["choices"][0]["logprobs"]["content"]]


def constrained(server):
    body = chat(server, "Give a flight booking as JSON.", temperature=0, logprobs=True,
                return_tokens_as_token_ids=True, response_format={
                    "type": "json_schema", "json_schema": {"name": "flight", "schema": SCHEMA, "strict": True}})
    text = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop" and schema_errors(SCHEMA, text) is None, text
    return ids(body)


def neighbour(server, i, grammar=None):
    extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": grammar}}} if grammar else {}
    return ids(chat(server, f"Tell me something about the number {i}.", system=None, max_tokens=48, temperature=1,
                    seed=100 + i, logprobs=True, return_tokens_as_token_ids=True, **extra))


@pytest.mark.parametrize("neighbours", ["unconstrained", "constrained"])
def test_same_tokens_alone_and_batched(server, neighbours):
    grammars = [None] * 8 if neighbours == "unconstrained" else [c["schema"] for c in OTHER]
    alone = constrained(server)
    alone_neighbours = run_all(lambda i: neighbour(server, i, grammars[i]), range(8))
    # the neighbours start first so that the constrained request joins a running batch
    out = run_all(lambda i: constrained(server) if i == 8 else neighbour(server, i, grammars[i]), range(9), workers=9)
    assert out[8] == alone
    assert out[:8] == alone_neighbours


def test_same_tokens_cache_cold_and_warm(start_server):
    srv = start_server()
    cold = constrained(srv)
    warm = constrained(srv)
    assert cold == warm
    sampled = [ids(chat(srv, "A flight.", max_tokens=96, temperature=1, seed=9, logprobs=True,
                        return_tokens_as_token_ids=True, guided_json=SCHEMA)) for _ in range(2)]
    assert sampled[0] == sampled[1]
