"""Chat templates through the daemon: --chat-template replaces the model's own, a template's
raise_exception (caused by the request) is a 400 naming the problem, and a template that does
not parse stops the daemon at start-up with its line and column."""
import subprocess
from pathlib import Path

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
