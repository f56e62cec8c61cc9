"""Routes that need no generation: health, readiness, models, version, metrics, tokenize,
detokenize, unknown routes and methods, and the API key."""
import requests


def test_health_and_ready(server):
    r = requests.get(server.url + "/health")
    assert r.status_code == 200 and r.text == ""
    r = requests.get(server.url + "/health/ready")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_version(server):
    r = requests.get(server.url + "/version")
    assert r.status_code == 200 and isinstance(r.json()["version"], str)


def test_models(server, client):
    models = client.models.list().data
    assert len(models) == 1
    m = models[0]
    assert m.object == "model" and m.owned_by == "sluice" and m.id
    assert client.models.retrieve(m.id).id == m.id
    r = server.get("/v1/models/no-such-model")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_unknown_route_and_method(server):
    r = server.get("/v1/nope")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and "/v1/nope" in err["message"]
    r = server.get("/v1/chat/completions")
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST"
    assert "not allowed" in r.json()["error"]["message"]
    r = server.post("/health", {})
    assert r.status_code == 405


def test_metrics_format(server, client):
    client.completions.create(model=server.model_id(), prompt="Hi", max_tokens=2)
    text = requests.get(server.url + "/metrics").text
    for name in ["num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"]:
        assert f"# TYPE sluice:{name} gauge" in text
    for name in ["prompt_tokens", "generation_tokens", "prefix_cache_queries", "prefix_cache_hits",
                 "num_preemptions", "request_success"]:
        assert f"# TYPE sluice:{name} counter" in text
    for name in ["time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                 "request_queue_time_seconds"]:
        assert f"# TYPE sluice:{name} histogram" in text
        assert f'sluice:{name}_bucket{{model_name="{server.model_id()}",le="+Inf"}}' in text
    m = server.metrics()
    assert m['sluice:request_success_total{finished_reason="length"}'] >= 1
    assert m["sluice:e2e_request_latency_seconds_count"] >= 1
    assert m["sluice:generation_tokens_total"] >= 2


def test_tokenize_detokenize(server):
    r = server.post("/tokenize", {"prompt": "Hello world", "return_token_strs": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["tokens"]) == 2
    assert body["token_strs"] == ["Hello", " world"]
    assert body["max_model_len"] == 2048
    r = server.post("/detokenize", {"tokens": body["tokens"]})
    assert r.json() == {"prompt": "Hello world"}
    chat = server.post("/tokenize", {"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert chat["count"] > 5 and chat["token_strs"] is None
    text = server.post("/detokenize", {"tokens": chat["tokens"]}).json()["prompt"]
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert server.post("/detokenize", {"tokens": [999999]}).status_code == 400
    assert server.post("/tokenize", {"prompt": 5}).json()["error"]["param"] == "prompt"
    assert server.post("/tokenize", {"prompt": "x", "model": "nope"}).status_code == 404


def test_api_key(start_server):
    s = start_server(api_key="sekret-123")
    assert requests.get(s.url + "/health").status_code == 200
    assert requests.get(s.url + "/health/ready").status_code == 200
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer sekret-1234"},
                    {"Authorization": "sekret-123"}]:
        r = requests.get(s.url + "/v1/models", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "invalid_api_key"
    r = requests.get(s.url + "/v1/models", headers={"Authorization": "Bearer sekret-123"})
    assert r.status_code == 200
    import openai
    bad = s.client(api_key="wrong")
    try:
        bad.models.list()
        raise AssertionError("no AuthenticationError")
    except openai.AuthenticationError:
        pass
    out = s.client().chat.completions.create(model=s.model_id(), messages=[{"role": "user", "content": "Hi"}],
                                             max_tokens=2)
    assert out.choices[0].message.content is not None
