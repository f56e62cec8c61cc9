"""docs/api.md's request-field tables against the server, so the two cannot drift apart:
every top-level field server/openai*.c read has a row, and each row's example gets what its status
says (supported / ignored: 200; refused: a 400 whose param names the field)."""
import json
import re

import pytest

from conftest import ROOT

DOC = ROOT / "docs" / "api.md"
PARSERS = sorted((ROOT / "server").glob("openai*.c"))
# extras that only concern chat messages (docs/api.md says so under the completions table)
MESSAGE_ONLY = {"add_generation_prompt", "continue_final_message", "chat_template_kwargs", "chat_template"}


def tables():
    """{"chat": {field: (status, example)}, "completions": {...}} from the doc's tables."""
    out, section, rows = {"chat": {}, "completions": {}, "extras": {}}, None, None
    for line in DOC.read_text().splitlines():
        if line.startswith("## Chat completions: request fields"):
            section = "chat"
        elif line.startswith("vLLM extras on chat"):
            section = "extras"
        elif line.startswith("## Completions: request fields"):
            section = "completions"
        elif line.startswith("## "):
            section = None
        if section is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        field, status, example = cells[0].strip("`"), cells[1], cells[2].strip("`")
        assert status in ("supported", "refused", "ignored"), line
        out[section][field] = (status, json.loads(example))
    chat = {**out["chat"], **out["extras"]}
    completions = {**{k: v for k, v in out["extras"].items() if k not in MESSAGE_ONLY}, **out["completions"]}
    return {"chat": chat, "completions": completions}


DOCS = tables()


def parsed_fields():
    """The top-level request fields the parser reads (the request object is `root` there)."""
    src = "\n".join(p.read_text() for p in PARSERS)
    names = set(re.findall(r'oai_(?:field|get_\w+|check_\w+)\(root, "(\w+)"', src))
    for lst in re.findall(r"static const char \*const NON(?:NULL|EMPTY)\[\] = \{(.*?)\};", src, re.S):
        names |= set(re.findall(r'"(\w+)"', lst))
    return names | {"max_tokens"}  # read through r->max_tokens_param


def test_every_parsed_field_is_documented():
    fields = parsed_fields()
    assert len(fields) > 40, sorted(fields)
    missing = sorted(f for f in fields if f not in DOCS["chat"] and f not in DOCS["completions"])
    assert not missing, "fields the parser reads with no row in docs/api.md: %s" % missing


def base(endpoint):
    if endpoint == "chat":
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 2}


CASES = [(ep, f, st, ex) for ep in ("chat", "completions") for f, (st, ex) in sorted(DOCS[ep].items())]


@pytest.mark.parametrize("endpoint,field,status,example", CASES, ids=["%s-%s" % (c[0], c[1]) for c in CASES])
def test_field_does_what_the_doc_says(server, endpoint, field, status, example):
    path, body = base(endpoint)
    body[field] = example
    if field in ("stream_options",):
        body["stream"] = True
    if field == "top_logprobs":
        body["logprobs"] = True
    if field == "model" and example is None:
        body["model"] = server.model_id()
    r = server.post(path, body)
    if status == "refused":
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == field, r.text
    else:
        assert r.status_code == 200, r.text
