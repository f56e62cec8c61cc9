"""The turn after a tool call, as every SDK sends it: an assistant message with "content": null (or
no content at all) and tool_calls, then a tool message. Templates concatenate content, so the
server hands them "" (vLLM's rule, with tool-call arguments parsed from their JSON string) and the
request is a 200: on the default model's template, on the templates of tests/data/chat_templates
that accept a tool turn, and on three real models' tool-calling templates
(tests/data/chat_templates_tools), where the prompt must also be jinja2's byte for byte."""
import copy
import json
import sys

import pytest

from conftest import ROOT

TEMPLATE_DIR = ROOT / "tests" / "data" / "chat_templates"
# real models' templates that render tool calls (tests/data/chat_templates_tools/README.md)
TOOL_TEMPLATE_DIR = ROOT / "tests" / "data" / "chat_templates_tools"

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}


def loop_messages(assistant):
    return [{"role": "user", "content": "What is the weather in Paris?"}, assistant,
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"}]


# None: the model's own template (the default model's, which ignores tool calls). The other
# templates of tests/data/chat_templates raise "roles must alternate" on a tool message, as they do
# in jinja2.
TEMPLATES = [None, "qwen2.5-instruct.jinja", "granite-3.0-instruct.jinja", "smollm2-135m-instruct.jinja"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_tool_turn_with_null_content(start_server, template):
    srv = start_server(*(["--chat-template", str(TEMPLATE_DIR / template)] if template else []))
    client = srv.client()
    for assistant in ({"role": "assistant", "content": None, "tool_calls": [CALL]},
                      {"role": "assistant", "tool_calls": [CALL]}):
        out = client.chat.completions.create(model=srv.model_id(), messages=loop_messages(assistant), tools=TOOLS,
                                             max_tokens=4, temperature=0)
        assert out.choices[0].finish_reason in ("stop", "length")
        assert out.usage.prompt_tokens > 10


def test_tool_call_is_rendered(start_server):
    """A template that renders tool calls shows the call in the prompt: the same turn with the call
    costs more prompt tokens than with an empty assistant message."""
    srv = start_server("--chat-template", str(TEMPLATE_DIR / "qwen2.5-instruct.jinja"))
    client = srv.client()
    with_call = client.chat.completions.create(
        model=srv.model_id(), messages=loop_messages({"role": "assistant", "content": None, "tool_calls": [CALL]}),
        tools=TOOLS, max_tokens=1)
    without = client.chat.completions.create(
        model=srv.model_id(), messages=loop_messages({"role": "assistant", "content": ""}), tools=TOOLS, max_tokens=1)
    assert with_call.usage.prompt_tokens > without.usage.prompt_tokens + 5
    # the arguments reach the template as an object (vLLM parses the JSON string), so qwen2.5's
    # `arguments | tojson` writes the object, not a quoted string
    body = {"messages": loop_messages({"role": "assistant", "content": None, "tool_calls": [CALL]}), "tools": TOOLS}
    ids = srv.post("/tokenize", body).json()["tokens"]
    prompt = srv.post("/detokenize", {"tokens": ids}).json()["prompt"]
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt, prompt


def special_tokens():
    """(bos, eos) text of the default model, which the daemon hands its template."""
    from gguf import GGUFReader

    from conftest import MODEL

    r = GGUFReader(str(MODEL))
    toks = r.fields["tokenizer.ggml.tokens"]

    def text(key):
        f = r.fields[key]
        return bytes(toks.parts[toks.data[int(f.parts[f.data[0]][0])]]).decode()

    return text("tokenizer.ggml.bos_token_id"), text("tokenizer.ggml.eos_token_id")


def jinja2_render(template_text, messages, tools):
    """The prompt Python's jinja2 renders (set up as HF transformers does) from the messages as
    vLLM hands them to a template: content None is "", tool-call arguments parsed."""
    sys.path.insert(0, str(ROOT / "tests" / "template"))
    from test_template_diff import hf_environment

    msgs = copy.deepcopy(messages)
    for m in msgs:
        m["content"] = m.get("content") or ""
        for call in m.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"] or "{}")
    return hf_environment().from_string(template_text).render(
        messages=msgs, tools=tools, add_generation_prompt=True, bos_token=BOS, eos_token=EOS)


BOS, EOS = special_tokens()


@pytest.mark.parametrize("template", sorted(p.name for p in TOOL_TEMPLATE_DIR.glob("*.jinja")))
def test_agent_loop_on_tool_calling_templates(start_server, template):
    """The whole loop on templates that render tool calls: the SDK's tool turn is a 200, and the
    prompt the daemon renders (with the call and its arguments as an object) is jinja2's."""
    path = TOOL_TEMPLATE_DIR / template
    srv = start_server("--chat-template", str(path))
    client = srv.client()
    call = {**CALL, "id": "call12345"}  # Mistral's templates want 9-character ids
    msgs = loop_messages({"role": "assistant", "content": None, "tool_calls": [call]})
    msgs[2]["tool_call_id"] = call["id"]
    out = client.chat.completions.create(model=srv.model_id(), messages=msgs, tools=TOOLS, max_tokens=2,
                                         temperature=0)
    assert out.choices[0].finish_reason in ("stop", "length")
    want = jinja2_render(path.read_text(), msgs, TOOLS)
    assert "get_weather" in want and "Paris" in want
    ids = srv.post("/tokenize", {"messages": msgs, "tools": TOOLS}).json()["tokens"]
    got = srv.post("/detokenize", {"tokens": ids}).json()["prompt"]
    assert got == want
    assert out.usage.prompt_tokens == len(ids)
