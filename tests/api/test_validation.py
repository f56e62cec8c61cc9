"""openai-api.md §7's bad-input table, row by row, over raw HTTP: the status, the OpenAI error
envelope and its `param`; then the transport rows (oversized bodies, slow clients)."""
import json
import socket
import time

import pytest
import requests

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
MSGS = [{"role": "user", "content": "hi"}]


def chat(**kw):
    return json.dumps({"messages": MSGS, "max_tokens": 2, **kw})


# (row, path, raw body, status, param)
CASES = [
    ("1 truncated", CHAT, '{"messages":[', 400, None),
    ("1 garbage", CHAT, "not json", 400, None),
    ("2 array", CHAT, "[]", 400, None),
    ("2 number", CHAT, "42", 400, None),
    ("2 null", CHAT, "null", 400, None),
    ("3 empty", CHAT, "", 400, None),
    ("5 lone surrogate", CHAT, '{"messages":[{"role":"user","content":"\\ud800"}]}', 400, "messages"),
    ("6 deep nesting", CHAT, '{"messages":' + "[" * 100000, 400, None),
    ("7 missing", CHAT, "{}", 400, "messages"),
    ("7 []", CHAT, '{"messages":[]}', 400, "messages"),
    ("7 [123]", CHAT, '{"messages":[123]}', 400, "messages"),
    ("7 [{}]", CHAT, '{"messages":[{}]}', 400, "messages"),
    ("7 wizard", CHAT, '{"messages":[{"role":"wizard","content":"x"}]}', 400, "messages"),
    ("7 content 123", CHAT, '{"messages":[{"role":"user","content":123}]}', 400, "messages"),
    ("7 tool without id", CHAT, '{"messages":[{"role":"tool","content":"x"}]}', 400, "messages"),
    ("8 max_tokens -1", CHAT, chat(max_tokens=-1), 400, "max_tokens"),
    ("8 max_tokens 0", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("8 max_tokens 1.5", CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    ("8 max_tokens '10'", CHAT, chat(max_tokens="10"), 400, "max_tokens"),
    ("8 max_tokens 1e30", CHAT, chat(max_tokens=1e30), 400, "max_tokens"),
    ("9 n 1000", CHAT, chat(n=1000), 400, "n"),
    ("9 n 0", CHAT, chat(n=0), 400, "n"),
    ("9 n -1", CHAT, chat(n=-1), 400, "n"),
    ("10 temperature -1", CHAT, chat(temperature=-1), 400, "temperature"),
    ("10 temperature 3", CHAT, chat(temperature=3), 400, "temperature"),
    ("10 temperature 1e999", CHAT, '{"messages":[{"role":"user","content":"x"}],"temperature":1e999}', 400, "temperature"),
    ("10 top_p 0", CHAT, chat(top_p=0), 400, "top_p"),
    ("10 top_k -5", CHAT, chat(top_k=-5), 400, "top_k"),
    ("10 presence_penalty 5", CHAT, chat(presence_penalty=5), 400, "presence_penalty"),
    ("11 top_logprobs 21", CHAT, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    ("11 top_logprobs alone", CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    ("12 stop x5", CHAT, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    ("12 stop non-string", CHAT, chat(stop=["a", 1]), 400, "stop"),
    ("12 logit_bias abc", CHAT, chat(logit_bias={"abc": 1}), 400, "logit_bias"),
    ("12 logit_bias out of vocab", CHAT, chat(logit_bias={"999999": 1}), 400, "logit_bias"),
    ("12 logit_bias 500", CHAT, chat(logit_bias={"5": 500}), 400, "logit_bias"),
    ("14 unknown model", CHAT, chat(model="gpt-9000"), 404, "model"),
    ("15 stream_options without stream", CHAT, chat(stream_options={"include_usage": True}), 400, "stream_options"),
    ("15 unknown tool_choice", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}],
                                          tool_choice={"type": "function", "function": {"name": "g"}}), 400, "tool_choice"),
    ("15 tools []", CHAT, chat(tools=[]), 400, "tools"),
    ("15 response_format sound", CHAT, chat(response_format={"type": "sound"}), 400, "response_format"),
    ("16 prompt ''", CMPL, '{"prompt":""}', 400, "prompt"),
    ("16 prompt []", CMPL, '{"prompt":[]}', 400, "prompt"),
    ("16 prompt [999999]", CMPL, '{"prompt":[999999]}', 400, "prompt"),
    ("16 prompt [-1]", CMPL, '{"prompt":[-1]}', 400, "prompt"),
    ("17 NUL", CHAT, '{"messages":[{"role":"user","content":"a\\u0000b"}]}', 400, "messages"),
    # cJSON would turn these into a NUL (the text silently cut) or accept any escape letter
    ("17 \\uZZZZ", CMPL, '{"prompt":"abc\\uZZZZdef"}', 400, "prompt"),
    ("17 \\u12", CHAT, '{"messages":[{"role":"user","content":"a\\u12"}]}', 400, "messages"),
    ("17 \\q", CHAT, '{"messages":[{"role":"user","content":"a\\qb"}]}', 400, "messages"),
    # what the server cannot honour is a 400 naming the field, never a silent 200
    ("18 completions response_format sound", CMPL, '{"prompt":"x","response_format":{"type":"sound"}}', 400,
     "response_format"),
    # structured output: a grammar that does not compile is a 400 naming the field that held it,
    # and so are two constraints at once
    ("18 grammar (llama.cpp) undefined rule", CHAT, chat(grammar="root ::= a"), 400, "grammar"),
    ("18 json_schema (llama.cpp) bad type", CMPL, '{"prompt":"x","json_schema":{"type":12}}', 400, "json_schema"),
    ("18 guided_regex unclosed", CMPL, '{"prompt":"x","guided_regex":"("}', 400, "guided_regex"),
    ("18 two constraints", CMPL, '{"prompt":"x","guided_regex":"a","json_schema":{"type":"object"}}', 400,
     "json_schema"),
    ("18 guided_json not JSON", CHAT, chat(guided_json="{nope"), 400, "guided_json"),
    ("18 structured_outputs empty", CHAT, chat(structured_outputs={}), 400, "structured_outputs"),
    ("18 use_beam_search", CHAT, chat(use_beam_search=True), 400, "use_beam_search"),
    ("18 use_beam_search 1", CMPL, '{"prompt":"x","use_beam_search":1}', 400, "use_beam_search"),
    ("18 chat echo", CHAT, chat(echo=True), 400, "echo"),
    ("18 cache_salt ''", CHAT, chat(cache_salt=""), 400, "cache_salt"),
    ("18 cache_salt 5", CHAT, chat(cache_salt=5), 400, "cache_salt"),
    ("18 add_special_tokens 'yes'", CMPL, '{"prompt":"x","add_special_tokens":"yes"}', 400, "add_special_tokens"),
    ("18 continuous_usage_stats 1", CHAT, chat(stream=True, stream_options={"include_usage": True,
                                                                            "continuous_usage_stats": 1}), 400,
     "stream_options"),
]


@pytest.mark.parametrize("row,path,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, row, path, body, status, param):
    r = server.post(path, data=body.encode())
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error"
    if status == 404:
        assert err["code"] == "model_not_found"


def test_invalid_utf8(server):
    r = server.post(CHAT, data=b'{"messages":[{"role":"user","content":"a\xff"}]}')
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages"


def test_wrong_content_type(server):
    r = requests.post(server.url + CHAT, data=chat(), headers={"Content-Type": "text/plain"})
    assert r.status_code in (400, 415)
    assert "error" in r.json()


def test_unknown_fields_ignored(server):
    r = server.post(CHAT, data=chat(temperature=0, frobnicate={"x": [1, 2]}, metadata={"a": "b"}, store=False).encode())
    assert r.status_code == 200, r.text


def test_refusable_fields_at_their_defaults(server):
    """The refused fields are fine at the values that ask for nothing."""
    r = server.post(CHAT, data=chat(use_beam_search=False, echo=False, grammar=None, response_format={"type": "text"}))
    assert r.status_code == 200, r.text
    r = server.post(CMPL, {"prompt": "x", "max_tokens": 2, "response_format": {"type": "text"}, "json_schema": None})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("stream", [False, True])
def test_context_too_long(server, stream):
    # row 13: a plain 400 before any byte of a stream
    long = "hello " * 3000
    r = server.post(CHAT, {"messages": [{"role": "user", "content": long}], "stream": stream}, stream=stream)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    r = server.post(CHAT, {"messages": MSGS, "max_tokens": 2047, "stream": stream})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = server.post(CMPL, {"prompt": long, "stream": stream})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def raw(server, data, timeout=10):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    s.sendall(data)
    return s


def read_all(s):
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def test_oversized_body_headers_phase(server):
    # row 4: Content-Length over the cap is refused before the body is read
    t0 = time.time()
    s = raw(server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n")
    head = read_all(s)
    s.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:100]
    assert b"100 Continue" not in head
    assert time.time() - t0 < 5


def test_oversized_chunked_body(start_server):
    srv = start_server("--max-body-size", "64K")
    chunk = b"a" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    s = raw(srv, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" + body)
    out = read_all(s)
    s.close()
    assert b" 413 " in out.split(b"\r\n")[0] or b"HTTP/1.1 413" in out, out[:200]
    assert requests.get(srv.url + "/health").status_code == 200


def test_slowloris_closed_while_others_served(start_server):
    srv = start_server("--timeout", "2")
    slow = raw(srv, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", timeout=15)
    t0 = time.time()
    # other clients are served meanwhile
    r = srv.post(CHAT, {"messages": MSGS, "max_tokens": 2})
    assert r.status_code == 200
    assert slow.recv(100) == b""  # closed by the server
    assert 1.5 < time.time() - t0 < 10
    slow.close()
