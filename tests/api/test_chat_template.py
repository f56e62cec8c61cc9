"""Chat templates through the daemon: --chat-template replaces the model's own, a template's
raise_exception (caused by the request) is a 400 naming the problem, a template that does
not parse stops the daemon at start-up with its line and column, and numbers in tools and
chat_template_kwargs reach the template as the client wrote them (as jinja2 sees them after
json.loads)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODEL, binary

DATA = Path(__file__).resolve().parents[1] / "data" / "chat_templates"


def test_template_raise_is_400(start_server):
    srv = start_server("--chat-template", str(DATA / "llama-2-chat.jinja"))
    ok = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert ok.status_code == 200, ok.text
    bad = srv.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"},
                                                         {"role": "user", "content": "b"}], "max_tokens": 2})
    assert bad.status_code == 400, bad.text
    err = bad.json()["error"]
    assert "alternate" in err["message"], err
    assert err["type"] == "invalid_request_error"
    srv.stop()


def test_template_parse_error_at_startup(tmp_path):
    tmpl = tmp_path / "broken.jinja"
    tmpl.write_text("{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    p = subprocess.run([str(binary()), "--model", str(MODEL), "--port", "0", "--chat-template", str(tmpl)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "line 2" in p.stderr and "column" in p.stderr, p.stderr


# Numbers as a client writes them (raw JSON text, so `1e16` and `1.0` reach the daemon as
# written): the prompt must be the one jinja2 renders after json.loads of the same request.
NUMBER_TOOLS = """[{"type": "function", "function": {"name": "set_level", "description": "Set a level.",
  "parameters": {"type": "object", "properties": {
    "level": {"type": "number", "minimum": 0.0, "maximum": 1e16, "default": 1.0},
    "offset": {"type": "number", "default": -0.0, "multipleOf": 1.5e-07},
    "id": {"type": "integer", "minimum": 9007199254740993, "maximum": 123456789012345678901234567890}}}}}]"""
NUMBER_MESSAGES = """[{"role": "user", "content": "Set the level."},
  {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
    "function": {"name": "set_level", "arguments": "{\\"level\\": 1.0}"}}]},
  {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]"""
NUMBER_KWARGS = """{"level": 1.0, "neg": -0.0, "big": 1e16, "exact": 9007199254740993,
  "huge": 123456789012345678901234567890}"""
NUMBER_PROBE = ("{{ level }}|{{ neg|string }}|{{ big }}|{{ exact }}|{{ huge }}|{{ huge|string }}|{{ huge > exact }}|"
                "{{ [level, neg, big, exact, huge]|tojson }}|{{ tools|tojson }}|"
                "{% for m in messages %}{{ m.tool_calls|tojson if m.tool_calls else m.content }}|{% endfor %}")


def jinja2_prompt(template_text, body):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "template"))
    from test_template_diff import hf_environment

    req = json.loads(body)
    # as vLLM hands messages to a template: content None is "", tool-call arguments are parsed
    msgs = [{"role": m["role"], "content": m.get("content") or ""} |
            {k: m[k] for k in ("tool_call_id", "tool_calls") if k in m} for m in req["messages"]]
    for m in msgs:
        for call in m.get("tool_calls", []):
            args = call["function"]["arguments"]
            call["function"]["arguments"] = json.loads(args) if args else {}
    return hf_environment().from_string(template_text).render(
        **req.get("chat_template_kwargs", {}), messages=msgs, tools=req["tools"], documents=None,
        add_generation_prompt=req["add_generation_prompt"])


@pytest.mark.parametrize("template", ["probe", "qwen2.5-instruct.jinja"])
def test_numbers_reach_template_as_written(start_server, tmp_path, template):
    path = DATA / template
    if template == "probe":
        path = tmp_path / "probe.jinja"
        path.write_text(NUMBER_PROBE)
    srv = start_server("--chat-template", str(path))
    body = (f'{{"messages": {NUMBER_MESSAGES}, "tools": {NUMBER_TOOLS}, "chat_template_kwargs": {NUMBER_KWARGS}, '
            f'"add_generation_prompt": true}}')
    want = jinja2_prompt(path.read_text(), body)
    assert "1.0" in want and "123456789012345678901234567890" in want and "9007199254740993" in want
    got = srv.post("/tokenize", data=body.encode(), headers={**srv.headers(), "Content-Type": "application/json"})
    assert got.status_code == 200, got.text
    ref = srv.post("/tokenize", {"prompt": want, "add_special_tokens": False})
    assert ref.status_code == 200, ref.text
    if got.json()["tokens"] != ref.json()["tokens"]:
        text = srv.post("/detokenize", {"tokens": got.json()["tokens"]}).json()["prompt"]
        assert text == want, "the daemon's prompt differs from jinja2's"
        pytest.fail("same text, other tokens")
    srv.stop()
