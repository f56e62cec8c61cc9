"""What every response carries besides its body, and the request log (server/access.c), over raw HTTP.

CORS as vLLM serves it (Starlette's CORSMiddleware): preflights answered before authentication,
Access-Control-Allow-Origin on every kind of response (JSON, errors, SSE) for an allowed origin
and on none for a disallowed one; X-Request-Id echoed or defaulted to the response id; one log
line per finished request, the prompt only with --enable-log-requests; several served names.
"""
import re
import time

import requests

GOOD = "http://good.test:3000"
BAD = "http://evil.test:3000"
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}


def preflight(srv, origin, method="POST", headers="authorization, content-type", path="/v1/chat/completions"):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = headers
    return requests.options(srv.url + path, headers=h, timeout=10)


def wait_log(srv, pattern, timeout=10):
    """The first log line matching pattern: the line is written when MHD has finished the
    request, which may be just after the client has read the response."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        srv.log.flush()
        text = srv.log_path.read_text(errors="replace")
        m = re.search(pattern, text, re.M)
        if m:
            return m.group(0)
        time.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r} in:\n{srv.log_text()}")


# ---------------------------------------------------------------------------- CORS


def test_preflight_open_server(server):
    r = preflight(server, GOOD)
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type"  # "*": mirrored
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in r.headers
    # a preflight for a path that does not exist is still a preflight (the browser asks first)
    assert preflight(server, GOOD, path="/nowhere").status_code == 204


def test_preflight_before_auth(start_server):
    srv = start_server(api_key="sekret")
    r = preflight(srv, GOOD)  # a browser never sends the key with a preflight
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    # the real request without the key is still refused, and the page may read why
    r = requests.post(srv.url + "/v1/chat/completions", json=CHAT, headers={"Origin": GOOD}, timeout=30)
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.json()["error"]["code"] == "invalid_api_key"
    r = requests.post(srv.url + "/v1/chat/completions", json=CHAT, timeout=60,
                      headers={"Origin": GOOD, "Authorization": "Bearer sekret"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    # OPTIONS without the preflight headers is no preflight: routed (and refused) as before
    assert requests.options(srv.url + "/v1/models", timeout=10).status_code == 401


def test_disallowed_origin(start_server):
    srv = start_server("--allowed-origins", f'["{GOOD}"]', api_key="k")
    r = preflight(srv, BAD)
    assert r.status_code == 400
    assert r.text == "Disallowed CORS origin"
    assert "Access-Control-Allow-Origin" not in r.headers
    ok = preflight(srv, GOOD)
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == GOOD and ok.headers["Vary"] == "Origin"
    # a simple request from a disallowed origin is served (CORS is the browser's check) but
    # carries no Allow-Origin, so the browser keeps the response from the page
    r = requests.get(srv.url + "/v1/models", headers={"Origin": BAD, "Authorization": "Bearer k"}, timeout=10)
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(srv.url + "/v1/models", headers={"Origin": GOOD, "Authorization": "Bearer k"}, timeout=10)
    assert r.headers["Access-Control-Allow-Origin"] == GOOD
    assert r.headers["Vary"] == "Origin"
    assert r.headers["Access-Control-Expose-Headers"] == "X-Request-Id"
    # no Origin: not a cross-origin request, nothing added
    r = requests.get(srv.url + "/v1/models", headers={"Authorization": "Bearer k"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers


def test_methods_headers_credentials(start_server):
    srv = start_server("--allowed-origins", f"{GOOD}, http://other.test", "--allowed-methods", '["GET", "POST"]',
                       "--allowed-headers", "Authorization", "--allow-credentials")
    r = preflight(srv, "http://other.test")  # the comma-separated form
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "http://other.test"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert r.headers["Access-Control-Allow-Headers"] == "accept, accept-language, content-language, content-type, Authorization"
    r = preflight(srv, GOOD, method="DELETE")
    assert r.status_code == 400 and r.text == "Disallowed CORS method"
    r = preflight(srv, GOOD, headers="content-type, x-custom")
    assert r.status_code == 400 and r.text == "Disallowed CORS headers"
    r = preflight(srv, BAD, method="PUT", headers="x-custom")
    assert r.status_code == 400 and r.text == "Disallowed CORS origin, method, headers"
    r = requests.get(srv.url + "/health", headers={"Origin": GOOD}, timeout=10)
    assert r.headers["Access-Control-Allow-Credentials"] == "true"


def test_credentials_with_any_origin_echo(start_server):
    srv = start_server("--allow-credentials")
    r = requests.get(srv.url + "/v1/models", headers={"Origin": GOOD}, timeout=10)
    # browsers refuse "*" with credentials: the origin itself is sent back (Starlette's behaviour)
    assert r.headers["Access-Control-Allow-Origin"] == GOOD
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Vary"] == "Origin"
    r = preflight(srv, BAD)
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == BAD


def test_cors_on_errors_and_streams(server):
    h = {"Origin": GOOD, "Content-Type": "application/json"}
    cases = [
        requests.post(server.url + "/v1/chat/completions", data="{", headers=h, timeout=30),   # 400
        requests.post(server.url + "/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=h, timeout=30),
        requests.get(server.url + "/nowhere", headers=h, timeout=10),                          # 404
        requests.get(server.url + "/v1/chat/completions", headers=h, timeout=10),              # 405
        requests.post(server.url + "/tokenize", json={"prompt": "hi"}, headers=h, timeout=10),
    ]
    assert [r.status_code for r in cases] == [400, 404, 404, 405, 200]
    for r in cases:
        assert r.headers["Access-Control-Allow-Origin"] == "*", r.status_code
        assert r.headers["X-Request-Id"], r.status_code
    with requests.post(server.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=h, stream=True,
                       timeout=120) as r:
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        body = b"".join(r.iter_content(None)).decode()
    assert body.rstrip().endswith("data: [DONE]")
    first = re.search(r'"id":"([^"]+)"', body).group(1)
    assert r.headers["X-Request-Id"] == first


# ---------------------------------------------------------------------------- X-Request-Id


def test_request_id_echoed_and_defaulted(server):
    r = server.post("/v1/chat/completions", CHAT, headers={"X-Request-Id": "trace-42", "Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "trace-42"
    assert r.json()["id"] == "chatcmpl-trace-42"  # vLLM names the request after the header
    r = server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert re.fullmatch(r"cmpl-[0-9a-f]{24}", r.headers["X-Request-Id"])
    assert r.headers["X-Request-Id"] == r.json()["id"]
    r = server.post("/v1/chat/completions", {**CHAT, "request_id": "from-body"})
    assert r.json()["id"] == "chatcmpl-from-body" and r.headers["X-Request-Id"] == "chatcmpl-from-body"
    # errors name themselves too: the id the response would have had
    r = server.post("/v1/chat/completions", {"messages": "no"})
    assert r.status_code == 400 and re.fullmatch(r"chatcmpl-[0-9a-f]{24}", r.headers["X-Request-Id"])
    r = requests.get(server.url + "/nowhere", headers={"X-Request-Id": "abc"}, timeout=10)
    assert r.status_code == 404 and r.headers["X-Request-Id"] == "abc"
    ids = {requests.get(server.url + "/health", timeout=10).headers["X-Request-Id"] for _ in range(3)}
    assert len(ids) == 3


# ---------------------------------------------------------------------------- the log line


def test_request_log_line_without_prompt(server):
    secret = "zebra marmalade quintet"
    r = server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": secret}], "max_tokens": 3})
    assert r.status_code == 200
    rid = r.headers["X-Request-Id"]
    line = wait_log(server, rf"^INFO .*request {re.escape(rid)}: .*$")
    assert re.search(r"POST /v1/chat/completions 200 prompt_tokens=\d+ cached_tokens=\d+ completion_tokens=3 "
                     r"ttft=\d+\.\d+s duration=\d+\.\d+s finish=length$", line), line
    r = server.post("/v1/completions", {"prompt": "zz", "max_tokens": 2}, headers={"X-Request-Id": "bad-1"})
    r = server.post("/v1/completions", {"prompt": "zz", "max_tokens": -1}, headers={"X-Request-Id": "bad-2"})
    assert r.status_code == 400
    assert re.search(r"POST /v1/completions 400 duration=", wait_log(server, r"^INFO .*request bad-2: .*$"))
    assert secret not in server.log_path.read_text(errors="replace")


def test_request_log_prompt_opt_in(start_server):
    srv = start_server("--enable-log-requests", "--max-log-len", "20")
    prompt = "abcdefghijklmnopqrstuvwxyz0123456789"
    r = srv.post("/v1/completions", {"prompt": prompt, "max_tokens": 2}, headers={"X-Request-Id": "logged-1"})
    assert r.status_code == 200
    line = wait_log(srv, r"^INFO .*request logged-1: .*$")
    assert line.endswith(' prompt=["abcdefghijklmnopqrst"]'), line
    assert "uvwxyz" not in srv.log_path.read_text(errors="replace")
    # a chat request logs the prompt the model saw (the rendered template), cut the same way
    r = srv.post("/v1/chat/completions", CHAT, headers={"X-Request-Id": "logged-2"})
    line = wait_log(srv, r"^INFO .*request logged-2: .*$")
    assert line.endswith(r' finish=length prompt="<|im_start|>system\nY"'), line  # 20 characters, \n one
    full = start_server("--enable-log-requests")
    full.post("/v1/completions", {"prompt": [prompt, "é\nx"], "max_tokens": 1}, headers={"X-Request-Id": "full-1"})
    line = wait_log(full, r"^INFO .*request full-1: .*$")
    assert line.endswith(f' finish=length,length prompt=["{prompt}","é\\nx"]'), line


# ---------------------------------------------------------------------------- served model names


def test_several_served_model_names(start_server):
    srv = start_server("--served-model-name", "alpha", "beta")  # vLLM's form: one flag, several values
    data = srv.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["alpha", "beta"]
    assert srv.get("/v1/models/beta").status_code == 200
    for name in ("alpha", "beta"):
        r = srv.post("/v1/chat/completions", {**CHAT, "model": name})
        assert r.status_code == 200 and r.json()["model"] == name  # vLLM reports the name asked for
        r = srv.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1, "model": name})
        assert r.status_code == 200 and r.json()["model"] == name
        assert srv.post("/tokenize", {"prompt": "Hi", "model": name}).status_code == 200
    assert srv.post("/v1/chat/completions", CHAT).json()["model"] == "alpha"  # none asked: the first
    assert srv.post("/v1/chat/completions", {**CHAT, "model": "gamma"}).status_code == 404
    assert 'model_name="alpha"' in requests.get(srv.url + "/metrics", timeout=10).text
    srv2 = start_server("--served-model-name=one,two")
    assert [m["id"] for m in srv2.get("/v1/models").json()["data"]] == ["one", "two"]
