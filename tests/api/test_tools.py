"""Tool calling and reasoning output on the real daemon (docs/api.md "Tool calling"): the default
model with the shipped Hermes-style template (templates/chatml-tools.jinja) and
--enable-auto-tool-choice --tool-call-parser hermes.

- tool_choice "required" and a named function are forced by a grammar, so over 20 seeds every
  call's arguments validate against the tool's schema (finish_reason "tool_calls" / "stop");
- a full agent loop (call -> tool result -> answer), streaming and not, with the openai SDK,
  LangChain and the OpenAI Agents SDK;
- "auto": output in the hermes format (here forced with a regex, the 135M model does not call
  tools by itself) comes back as tool_calls; streamed deltas add up to the non-streamed message;
- --reasoning-parser deepseek_r1: text without "</think>" is all reasoning_content.
"""
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from conftest import MODEL, ROOT, binary, free_port

TEMPLATE = ROOT / "templates" / "chatml-tools.jinja"
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"]}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["zone"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "description": "The time in a zone",
                                           "parameters": TIME}}]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def tools_server(start_server):
    return start_server("--chat-template", str(TEMPLATE), "--enable-auto-tool-choice", "--tool-call-parser", "hermes")


def create(srv, **kw):
    return srv.client().chat.completions.create(model=srv.model_id(), **kw)


def valid_call(call):
    assert call.id.startswith("call_") and call.type == "function"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_and_named_always_validate(tools_server):
    """20 seeds each, sent at once (the engine batches them). "required" with parallel_tool_calls
    false allows one call, so the grammar ends the output after it. With parallel calls the 135M
    model at temperature 1 may go on calling until max_tokens: every call it finished validates,
    and a last one cut off by the length limit is all that may not."""
    def required(seed, parallel=False):
        return create(tools_server, messages=ASK, tools=TOOLS, tool_choice="required", seed=seed,
                      max_tokens=60 if parallel else 120, temperature=1.0, parallel_tool_calls=parallel)

    def named(seed):
        return create(tools_server, messages=ASK, tools=TOOLS, tool_choice=NAMED, seed=seed, max_tokens=60,
                      temperature=1.0)

    required(0)  # the prompt is the same for all: cached once, the rest only decode
    with ThreadPoolExecutor(44) as ex:
        req = ex.map(required, range(20))
        par = ex.map(lambda s: required(s, True), range(100, 104))
        nam = ex.map(named, range(20))
        req, par, nam = list(req), list(par), list(nam)
    for seed, out in enumerate(req):
        ch = out.choices[0]
        assert ch.finish_reason == "tool_calls", (seed, ch)
        assert ch.message.content is None and len(ch.message.tool_calls) == 1
        valid_call(ch.message.tool_calls[0])
    for out in par:
        ch = out.choices[0]
        assert ch.finish_reason in ("tool_calls", "length") and ch.message.tool_calls, ch
        done = ch.message.tool_calls[:-1] if ch.finish_reason == "length" else ch.message.tool_calls
        for call in done:
            valid_call(call)
    for seed, out in enumerate(nam):
        ch = out.choices[0]
        assert ch.finish_reason == "stop", (seed, ch)  # OpenAI's reason for a named function
        assert [c.function.name for c in ch.message.tool_calls] == ["get_weather"]
        valid_call(ch.message.tool_calls[0])


def read_stream(stream):
    """What a client builds from the deltas: content, reasoning, calls, finish reason."""
    content, reasoning, calls, finish, roles, first = "", "", [], None, [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        d = ch.delta
        if d.role:  # first, with content null when a call comes first, else "" (OpenAI's)
            assert not (content or reasoning or calls)
            roles.append(d.content)
        content += d.content or ""
        reasoning += getattr(d, "reasoning_content", None) or (d.model_extra or {}).get("reasoning_content") or ""
        first = first or ("text" if content or reasoning else "call" if d.tool_calls else None)
        for tc in d.tool_calls or []:
            if tc.index == len(calls):  # OpenAI's first delta of a call: index, id, type, name, ""
                assert tc.id.startswith("call_") and tc.type == "function" and tc.function.name
                assert tc.function.arguments == ""
                calls.append({"id": tc.id, "name": tc.function.name, "arguments": ""})
            else:
                assert tc.index == len(calls) - 1 and tc.id is None and tc.function.name is None
                calls[tc.index]["arguments"] += tc.function.arguments
        finish = ch.finish_reason or finish
    assert roles == [None if first == "call" else ""], roles
    return content, reasoning, calls, finish


HERMES_REGEX = (r'Checking\.\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Paris|Rome)", '
                r'"unit": "celsius"\}\}\n</tool_call>')


@pytest.mark.parametrize("kind", ["auto-hermes", "required", "named"])
def test_stream_adds_up_to_the_message(tools_server, kind):
    kw = dict(messages=ASK, tools=TOOLS, temperature=0, max_tokens=60)
    if kind == "auto-hermes":
        kw["extra_body"] = {"structured_outputs": {"regex": HERMES_REGEX}}
    else:
        kw["tool_choice"] = "required" if kind == "required" else NAMED
    whole = create(tools_server, **kw).choices[0]
    content, _, calls, finish = read_stream(create(tools_server, stream=True, **kw))
    assert finish == whole.finish_reason == ("stop" if kind == "named" else "tool_calls")
    assert (content or None) == whole.message.content
    assert [(c["name"], c["arguments"]) for c in calls] == \
        [(c.function.name, c.function.arguments) for c in whole.message.tool_calls]
    if kind == "auto-hermes":  # the text before the call stays content
        assert whole.message.content == "Checking."
        assert json.loads(calls[0]["arguments"])["unit"] == "celsius"


def run_agent(srv, stream):
    """call -> tool result -> answer, as an openai-SDK agent loop does it."""
    client = srv.client()
    msgs = list(ASK)
    kw = dict(model=srv.model_id(), tools=TOOLS, max_tokens=60, temperature=0)
    if stream:
        content, _, calls, finish = read_stream(client.chat.completions.create(
            messages=msgs, tool_choice="required", stream=True, **kw))
        calls = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for c in calls]
    else:
        out = client.chat.completions.create(messages=msgs, tool_choice="required", **kw).choices[0]
        content, finish = out.message.content, out.finish_reason
        calls = [c.model_dump() for c in out.message.tool_calls]
    assert finish == "tool_calls" and calls and not content
    msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
    for c in calls:
        args = json.loads(c["function"]["arguments"])
        jsonschema.validate(args, SCHEMAS[c["function"]["name"]])
        msgs.append({"role": "tool", "tool_call_id": c["id"], "content": json.dumps({"temperature": 18, **args})})
    kw["max_tokens"] = 12
    if stream:
        content, _, calls, finish = read_stream(client.chat.completions.create(messages=msgs, stream=True, **kw))
    else:
        out = client.chat.completions.create(messages=msgs, **kw).choices[0]
        content, calls, finish = out.message.content, out.message.tool_calls or [], out.finish_reason
    assert finish in ("stop", "length") and content and not calls
    return msgs


@pytest.mark.parametrize("stream", [False, True])
def test_agent_loop_openai_sdk(tools_server, stream):
    msgs = run_agent(tools_server, stream)
    assert [m["role"] for m in msgs[:3]] == ["user", "assistant", "tool"]


def test_tool_choice_none_hides_the_tools(tools_server):
    auto = create(tools_server, messages=ASK, tools=TOOLS, max_tokens=1)
    none = create(tools_server, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=1)
    assert auto.usage.prompt_tokens > none.usage.prompt_tokens + 50  # the tool list is in the prompt
    assert none.choices[0].message.tool_calls is None


@pytest.mark.parametrize("body,param", [
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"tool_choice": "required"}, "tool_choice"),  # without tools
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
])
def test_tool_request_errors(tools_server, body, param):
    r = tools_server.post("/v1/chat/completions", {"messages": ASK, "max_tokens": 1, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_reasoning_parser(start_server):
    """deepseek_r1: the output starts inside the thinking; the default model never closes it, so
    all of it is reasoning_content and content is null, streamed and not alike."""
    srv = start_server("--reasoning-parser", "deepseek_r1")
    kw = dict(messages=ASK, max_tokens=8, temperature=0)
    whole = create(srv, **kw).choices[0]
    extra = whole.message.model_extra
    assert whole.message.content is None and extra["reasoning_content"]
    content, reasoning, calls, _ = read_stream(create(srv, stream=True, **kw))
    assert content == "" and reasoning == extra["reasoning_content"] and not calls


def test_template_without_tools_warns_once(start_server):
    """The default model's own template drops `tools`: the server says so in its log, once."""
    srv = start_server()
    for _ in range(2):
        create(srv, messages=ASK, tools=TOOLS, max_tokens=1)
    assert srv.log_text().count("never renders them") == 1


@pytest.mark.parametrize("stream", [False, True])
def test_agent_loop_langchain(tools_server, stream):
    """LangChain's bind_tools(tool_choice="any") (our "required"), then the tool result and a free
    answer, through langchain-openai's ChatOpenAI."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=tools_server.url + "/v1", api_key="none", model=tools_server.model_id(),
                     temperature=0, max_tokens=60, max_retries=0, streaming=stream)
    msgs = [HumanMessage("What is the weather in Paris?")]
    bound = llm.bind_tools(TOOLS, tool_choice="any")
    if stream:
        ai = None
        for chunk in bound.stream(msgs):
            ai = chunk if ai is None else ai + chunk
    else:
        ai = bound.invoke(msgs)
    assert ai.tool_calls and not ai.content
    for call in ai.tool_calls:
        jsonschema.validate(call["args"], SCHEMAS[call["name"]])
    msgs += [ai] + [ToolMessage(json.dumps({"temperature": 18}), tool_call_id=c["id"]) for c in ai.tool_calls]
    final = llm.bind_tools(TOOLS).bind(max_tokens=12).invoke(msgs)
    assert final.content and not final.tool_calls


def agents_loop(srv, stream):
    """One OpenAI Agents SDK run: the agent's ModelSettings force a call (tool_choice "required"),
    the SDK runs the function tool, resets tool_choice (Agent.reset_tool_choice) and asks again,
    freely; the reply is the final output. Returns the run, the tool's arguments and the bodies
    the SDK sent."""
    import asyncio
    from typing import Annotated, Literal

    import httpx
    from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool,
                        set_tracing_disabled)
    from openai import AsyncOpenAI
    from pydantic import Field

    set_tracing_disabled(True)  # the SDK would export traces to OpenAI
    calls, bodies = [], []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=20)], unit: Literal["celsius", "fahrenheit"]) -> str:
        """The weather in a city."""
        calls.append({"city": city, "unit": unit})
        return json.dumps({"temperature": 18, "unit": unit})

    async def record(request):
        bodies.append(json.loads(request.content))

    async def run():
        http = httpx.AsyncClient(event_hooks={"request": [record]})
        client = AsyncOpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, http_client=http)
        agent = Agent(name="weather", instructions="Answer with the weather tool.", tools=[get_weather],
                      model=OpenAIChatCompletionsModel(model=srv.model_id(), openai_client=client),
                      model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=60))
        ask = ASK[0]["content"]
        if not stream:
            return await Runner.run(agent, ask, max_turns=3)
        result = Runner.run_streamed(agent, ask, max_turns=3)
        kinds = [ev.type async for ev in result.stream_events()]
        assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
        return result

    result = asyncio.run(run())
    return result, calls, bodies


@pytest.mark.parametrize("stream", [False, True])
def test_agent_loop_openai_agents_sdk(tools_server, stream):
    result, calls, bodies = agents_loop(tools_server, stream)
    assert [b.get("tool_choice") for b in bodies] == ["required", None]  # required, then free
    assert all(b.get("stream", False) == stream for b in bodies)
    assert len(calls) == 1
    jsonschema.validate(calls[0], WEATHER)
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"], kinds
    assert isinstance(result.final_output, str) and result.final_output


@pytest.mark.parametrize("flags,words", [
    (["--tool-call-parser", "xml"], "unknown parser"),
    (["--enable-auto-tool-choice"], "needs --tool-call-parser"),
    (["--reasoning-parser", "r1"], "unknown parser"),
])
def test_parser_flags_are_checked(flags, words):
    """A parser the server does not know is a setting error: exit status 2 before it listens."""
    p = subprocess.run([str(binary()), "--model", str(MODEL), "--port", str(free_port()), *flags],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and words in p.stderr, p.stderr


def test_streamed_logprobs_survive_the_parser(tools_server):
    """Text held back or turned into call deltas still has its tokens' logprobs in the stream."""
    chunks = list(create(tools_server, messages=ASK, tools=TOOLS, tool_choice=NAMED, temperature=0, max_tokens=40,
                         logprobs=True, stream=True, stream_options={"include_usage": True}))
    n = sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs)
    assert n == chunks[-1].usage.completion_tokens > 0
