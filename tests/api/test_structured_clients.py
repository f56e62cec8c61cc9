"""Real clients' structured output against the real daemon (issue 22): the openai SDK's
chat.completions.parse with a Pydantic model, and LangChain's with_structured_output in
json_schema and json_mode. Each gets a parsed object back."""
from typing import List, Literal, Optional

import httpx
from pydantic import BaseModel, ConfigDict, Field


class Pet(BaseModel):
    name: str = Field(max_length=16)
    species: Literal["dog", "cat", "bird"]
    age: int = Field(ge=0, le=30)


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)
    email: Optional[str] = Field(default=None, max_length=32)
    pets: List[Pet] = Field(max_length=2)


class AnyObject(BaseModel):
    """json_mode promises a JSON object, no particular keys: the model takes whatever comes."""
    model_config = ConfigDict(extra="allow")


def test_openai_parse(server):
    client = server.client()
    # openai 1.54 has parse() under beta; later versions also at chat.completions.parse
    parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
    for sampling in ({"temperature": 0}, {"temperature": 1, "seed": 7}):
        out = parse(model=server.model_id(), messages=[{"role": "user", "content": "Describe a person with a pet."}],
                    response_format=Person, max_tokens=200, **sampling)
        msg = out.choices[0].message
        assert out.choices[0].finish_reason == "stop", msg.content
        assert isinstance(msg.parsed, Person) and msg.refusal is None
        assert Person.model_validate_json(msg.content) == msg.parsed


def chat_model(server):
    from langchain_openai import ChatOpenAI
    return ChatOpenAI(model=server.model_id(), base_url=server.url + "/v1", api_key="none", temperature=0,
                      max_tokens=200, max_retries=0, http_client=httpx.Client(timeout=300))


def test_langchain_json_schema(server):
    person = chat_model(server).with_structured_output(Person, method="json_schema").invoke(
        "Describe a person with a pet.")
    assert isinstance(person, Person)


def test_langchain_json_mode(server):
    llm = chat_model(server)
    # JSON mode bounds nothing: these prompts end their object well within max_tokens
    obj = llm.with_structured_output(AnyObject, method="json_mode").invoke("Return a JSON object with a name and an age.")
    assert isinstance(obj, AnyObject)
    raw = llm.with_structured_output(None, method="json_mode", include_raw=True).invoke(
        [("system", "Reply with JSON only."), ("human", "Describe a cat as JSON.")])
    assert raw["parsing_error"] is None and isinstance(raw["parsed"], dict), raw["raw"]
