"""Differential test of sluice's chat-template renderer against Python's jinja2.

Every template of tests/data/chat_templates/ (the MIT collection and the default model's
own) is rendered over every message list below, once through jinja2 set up as HF
transformers does for apply_chat_template (the reference) and once through
$SLUICE_BUILD/tools/template_render (default build/). Each case must give byte-identical
output, or fail in both; when jinja2 fails through the template's raise_exception(), sluice
must report the same message. The summary line gives the pass count.
"""
import datetime
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
import pytest
from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = ROOT / "tests" / "data" / "chat_templates"
TEMPLATES = sorted(TEMPLATE_DIR.glob("*.jinja"))


# ---- the reference: transformers' _compile_jinja_template


class AssistantTracker(jinja2.ext.Extension):
    """HF's {% generation %} block, reduced to what shows in the text: its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.datetime.now().strftime(format)


def hf_environment():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# ---- message lists

SYS = {"role": "system", "content": "You are a helpful assistant."}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city — «quoted» & <escaped>?",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "top_k": {"type": "integer"}}},
    },
}
HF_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}}
OPENAI_CALL = {
    "id": "call_abc123",
    "type": "function",
    "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"},
}


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


MESSAGE_LISTS = {
    "user": [u("Hello!")],
    "system_user": [SYS, u("Hi there")],
    "multi_turn": [u("What is 2+2?"), a("4"), u("And 3+3?")],
    "system_multi_turn": [SYS, u("Hi"), a("Hello! How can I help?"), u("Tell me a joke."), a("Why did the chicken cross the road?")],
    "ends_with_assistant": [u("Say hi"), a("Hi!")],
    "empty_user": [u("")],
    "empty_system": [{"role": "system", "content": ""}, u("x")],
    "padded": [u("  padded question \n\n"), a("\tanswer with spaces  \n"), u("\n\nnext\n")],
    "unicode": [u("Привет, 世界! 🌍 café naïve"), a("日本語の応答 — ok ✓ 🙂"), u("emoji 👩‍👩‍👧 and RTL مرحبا")],
    "unicode_spaces": [u("\u3000full width\u00a0nbsp\u2028line sep\u3000")],
    "special_chars": [u("quotes ' \" backslash \\ {{ not a tag }} {% neither %} {# nor #} <|im_end|> </s>")],
    "code_block": [SYS, u("Fix this:\n```python\ndef f(x):\n\treturn x*2\n```"), a("```python\ndef f(x):\n    return x * 2\n```")],
    "crlf": [u("line one\r\nline two\r\n\r\nline four"), a("ok\r\n")],
    "long": [SYS] + [m for i in range(6) for m in (u(f"question {i}"), a(f"answer {i}"))] + [u("last question")],
    "assistant_first": [a("I speak first."), u("ok")],
    "two_users": [u("one"), u("two")],
    "system_only": [SYS],
    "empty_list": [],
    "context_role": [SYS, {"role": "context", "content": "Paris is the capital of France."}, u("What is the capital?")],
    "unknown_role": [{"role": "developer", "content": "Be terse."}, u("hi")],
    "named": [{"role": "user", "content": "hi", "name": "alice"}, a("hello alice")],
    "newline_only": [u("\n"), a(" ")],
    "tool_call_hf": [
        u("What's the weather in Paris?"),
        {"role": "assistant", "content": "", "tool_calls": [HF_CALL]},
        {"role": "tool", "name": "get_weather", "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
        a("It is 22 °C in Paris."),
    ],
    "tool_call_openai": [
        SYS,
        u("Weather in Paris?"),
        {"role": "assistant", "content": None, "tool_calls": [OPENAI_CALL]},
        {"role": "tool", "tool_call_id": "call_abc123", "content": "sunny"},
    ],
    "tool_calls_parallel": [
        u("Weather in Paris and search news"),
        {
            "role": "assistant",
            "content": "Let me check both.",
            "tool_calls": [
                HF_CALL,
                {"type": "function", "function": {"name": "search", "arguments": {"query": "news ünïcode", "top_k": 3, "score": 2.5, "safe": True, "filter": None, "tags": ["a", 1]}}},
            ],
        },
        {"role": "tool", "content": "22C"},
        {"role": "tool", "content": "[\"headline\"]"},
        a("Done."),
        u("thanks"),
    ],
    "tool_call_no_function_key": [
        u("call it"),
        {"role": "assistant", "content": "", "tool_calls": [{"name": "search", "arguments": {"query": "x"}}]},
        {"role": "tool", "content": "result"},
    ],
    "tool_roles_granite": [
        u("do it"),
        {"role": "assistant_tool_call", "content": "[{\"name\": \"search\"}]"},
        {"role": "tool_response", "content": "ok"},
    ],
    "content_list": [{"role": "user", "content": [{"type": "text", "text": "multimodal part"}]}],
    "numeric_content": [{"role": "user", "content": 42}],
    "missing_content": [{"role": "user"}],
}

CONTEXTS = {}
for name, msgs in MESSAGE_LISTS.items():
    for agp in (False, True):
        CONTEXTS[f"{name}/agp={int(agp)}"] = {"messages": msgs, "add_generation_prompt": agp}
for name in ("user", "system_user", "multi_turn", "tool_call_hf", "tool_call_openai", "tool_calls_parallel"):
    for agp in (False, True):
        CONTEXTS[f"{name}/tools/agp={int(agp)}"] = {
            "messages": MESSAGE_LISTS[name],
            "add_generation_prompt": agp,
            "tools": [WEATHER_TOOL, SEARCH_TOOL],
        }
for vars in CONTEXTS.values():
    vars.setdefault("tools", None)  # HF passes tools=None and documents=None when absent
    vars["documents"] = None
    vars["bos_token"] = "<s>"
    vars["eos_token"] = "</s>"
CONTEXTS["system_user/special_tokens"] = dict(
    CONTEXTS["system_user/agp=1"], bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"
)
CONTEXTS["multi_turn/empty_tokens"] = dict(CONTEXTS["multi_turn/agp=0"], bos_token="", eos_token="")
CONTEXTS["user/chat_template_kwargs"] = dict(CONTEXTS["user/agp=1"], enable_thinking=False, custom_flag="on")

# Numbers as clients write them, kept as JSON text: both sides parse these exact bytes
# (jinja2 through json.loads), so `1.0` must stay a float, `1e16` print as 1e+16, `-0.0` keep
# its sign and integers past 2^53 (or 64 bits) keep every digit, in tool schemas and in
# tool-call arguments.
NUMBER_TOOL = """{"type": "function", "function": {"name": "set_level", "description": "Set a level.",
  "parameters": {"type": "object", "properties": {
    "level": {"type": "number", "minimum": 0.0, "maximum": 1e16, "default": 1.0, "multipleOf": 0.5},
    "offset": {"type": "number", "default": -0.0, "exclusiveMinimum": -1.5e-07, "scale": 2E-3},
    "id": {"type": "integer", "minimum": 9007199254740993, "maximum": 123456789012345678901234567890,
           "default": -123456789012345678901234567890, "plain": 7, "negzero": -0, "e": 1E16}},
  "required": ["level"]}}}"""
NUMBER_ARGS = """{"level": 1.0, "offset": -0.0, "big": 1e16, "exact": 9007199254740993,
  "huge": 123456789012345678901234567890, "neg": -123456789012345678901234567890, "tiny": 1.5e-07,
  "nested": [0.0, 100.0, 2.50, -1E+2, 18446744073709551616, 9223372036854775807, -9223372036854775808], "int": 3}"""
NUMBER_MESSAGES = """[{"role": "user", "content": "Set the level."},
  {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "set_level", "arguments": %s}},
    {"id": "call_1", "type": "function", "function": {"name": "set_level", "arguments": "{\\"level\\": 1.0}"}}]},
  {"role": "tool", "name": "set_level", "content": "ok"},
  {"role": "assistant", "content": "Done."}]""" % NUMBER_ARGS
NUMBER_CONTENTS = """[{"role": "user", "content": 1.0}, {"role": "assistant", "content": -0.0},
  {"role": "user", "content": 1e16}, {"role": "assistant", "content": 9007199254740993},
  {"role": "user", "content": 123456789012345678901234567890}]"""
RAW_CONTEXTS = {}
for agp in (0, 1):
    tail = f'"add_generation_prompt": {"true" if agp else "false"}, "documents": null, "bos_token": "<s>", "eos_token": "</s>"'
    RAW_CONTEXTS[f"numbers/tools/agp={agp}"] = f'{{"messages": {NUMBER_MESSAGES}, "tools": [{NUMBER_TOOL}], {tail}}}'
    RAW_CONTEXTS[f"numbers/tool_call/agp={agp}"] = f'{{"messages": {NUMBER_MESSAGES}, "tools": null, {tail}}}'
    RAW_CONTEXTS[f"numbers/content/agp={agp}"] = f'{{"messages": {NUMBER_CONTENTS}, "tools": null, {tail}}}'
for name, text in RAW_CONTEXTS.items():
    CONTEXTS[name] = json.loads(text)


def context_json(name):
    """The JSON text of a context: as written for the raw ones, else json.dumps."""
    return RAW_CONTEXTS.get(name) or json.dumps(CONTEXTS[name], ensure_ascii=False)


# ---- running both sides


def sluice_binary():
    build = Path(os.environ.get("SLUICE_BUILD", "build"))
    if not build.is_absolute():
        build = ROOT / build
    return build / "tools" / "template_render"


@lru_cache(maxsize=None)
def sluice_results(template_name):
    """{context name: (status, text)} for one template, from one batch run of the driver."""
    binary = sluice_binary()
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it (make, or SLUICE_BUILD=dir with tools/template_render)")
    names = list(CONTEXTS)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, name in enumerate(names):
            p = Path(tmp) / f"{i}.json"
            p.write_text(context_json(name), encoding="utf-8")
            paths.append(str(p))
        proc = subprocess.run(
            [str(binary), str(TEMPLATE_DIR / template_name), "--batch", *paths], capture_output=True, timeout=300
        )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out, pos, results = proc.stdout, 0, {}
    for name in names:
        eol = out.index(b"\n", pos)
        marker, status, size = out[pos:eol].decode().split(" ")
        assert marker == "==="
        start = eol + 1
        end = start + int(size)
        results[name] = (status, out[start:end].decode("utf-8"))
        assert out[end : end + 1] == b"\n"
        pos = end + 1
    return results


@lru_cache(maxsize=None)
def reference_template(template_name):
    return hf_environment().from_string((TEMPLATE_DIR / template_name).read_text(encoding="utf-8"))


def reference_render(template_name, context_name):
    # the same JSON text the driver reads, so both sides see the same values
    vars = json.loads(context_json(context_name))
    try:
        return ("ok", reference_template(template_name).render(**vars))
    except TemplateError as e:
        raised = e.__class__ is TemplateError  # raise_exception, not a jinja2 runtime error
        return ("raised" if raised else "error", str(e))
    except Exception as e:  # TypeError and friends from Python operations
        return ("error", f"{type(e).__name__}: {e}")


SUMMARY = {"cases": 0, "identical": 0, "both_failed": 0}

CASES = [(t.name, c) for t in TEMPLATES for c in CONTEXTS]


@pytest.mark.parametrize("template_name,context_name", CASES, ids=[f"{t}:{c}" for t, c in CASES])
def test_render_matches_jinja2(template_name, context_name):
    want = reference_render(template_name, context_name)
    got = sluice_results(template_name)[context_name]
    SUMMARY["cases"] += 1
    if want[0] == "ok":
        assert got[0] == "ok", f"jinja2 rendered, sluice failed: {got}"
        assert got[1] == want[1], f"output differs:\n jinja2: {want[1]!r}\n sluice: {got[1]!r}"
        SUMMARY["identical"] += 1
    else:
        assert got[0] != "ok", f"jinja2 failed ({want[1]}), sluice rendered {got[1]!r}"
        if want[0] == "raised":
            assert (got[0], got[1]) == ("raised", want[1]), f"jinja2 raised {want[1]!r}, sluice: {got}"
        SUMMARY["both_failed"] += 1


def test_corpus_is_complete():
    """The corpus the issue asks for: the shared templates, the default model's, >= 30 lists."""
    names = {t.name for t in TEMPLATES}
    assert "smollm2-135m-instruct.jinja" in names and "chatml.jinja" in names and len(names) >= 19
    assert len(MESSAGE_LISTS) >= 30
    assert (TEMPLATE_DIR / "LICENSE").exists()
