"""The real Python OpenAI clients against a streamrelay mount, each used as its docs show.

Every client is a pinned test dependency (pyproject.toml's ``dev`` extra) talking to
the ``streamrelay_relay`` fixture (a :class:`~streamrelay.StreamRelay` at ``/v1`` under
uvicorn, in front of the simulator) with its own key, which the relay replaces:

- openai-python, sync and async: chat completions streaming and not, the
  ``chat.completions.stream()`` helper, the Responses API (``create(stream=True)``,
  ``stream()`` with ``get_final_response()``, non-streaming), legacy completions,
  ``models.list()`` and ``models.retrieve()``;
- LangChain's ``ChatOpenAI``: ``invoke``, ``stream``, ``astream``, ``bind_tools``;
- pydantic-ai's ``Agent`` on ``OpenAIChatModel`` and ``OpenAIResponsesModel`` with an
  ``OpenAIProvider(base_url=...)``: ``run`` and ``run_stream``;
- the OpenAI Agents SDK: ``Runner.run`` and ``Runner.run_streamed`` on its default
  ``OpenAIResponsesModel`` and on ``OpenAIChatCompletionsModel``;
- httpx-sse reading the relay's ``?format=sse`` stream and its OpenAI wire.

Each test checks what the client returned against the simulator's oracle for the body
the simulator received (``client_oracle.py``), and that each client call made exactly
one upstream request: no retry, no duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import connect_sse

from client_oracle import CHAT, COMPLETIONS, MESSAGES, MODEL, MODELS, PROMPT, RESPONSES, Oracle
from streamrelay.testing import Simulator
from streamrelay.testing.plugin import RELAY_API_KEY
from streamrelay.testing.simulator import EXTRA_MODELS

KEY = "sk-client-key-the-relay-replaces"
TOOL_FAULT = pytest.mark.streamrelay_simulator(fault="tools")
REASONING_FAULT = pytest.mark.streamrelay_simulator(fault="reasoning")
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}


@pytest.fixture
def oracle(streamrelay_simulator_app: Simulator) -> Oracle:
    return Oracle(streamrelay_simulator_app)


@pytest.fixture
def sdk(streamrelay_relay: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=streamrelay_relay, api_key=KEY) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the clients under test are asyncio libraries


def relayed_key_only(oracle: Oracle) -> None:
    """The client's key never reached the upstream; the relay's did."""
    assert oracle.sim.requests
    for record in oracle.sim.requests:
        assert record.authorization == f"Bearer {RELAY_API_KEY}"
        assert KEY not in str(record.headers)


# openai-python ---------------------------------------------------------------------------


def test_openai_chat_stream(sdk: openai.OpenAI, oracle: Oracle) -> None:
    stream = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    body = oracle.one_call(CHAT)
    assert body["messages"] == MESSAGES and body["stream"] is True
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == oracle.text(CHAT, body)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.id for c in chunks} == {oracle.answer(CHAT, body)["id"]}
    relayed_key_only(oracle)


def test_openai_chat_not_streaming(sdk: openai.OpenAI, oracle: Oracle) -> None:
    completion = sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    body = oracle.one_call(CHAT)
    assert "stream" not in body or body["stream"] is False
    assert completion.object == "chat.completion"
    # The upstream's JSON answer, unchanged.
    assert completion.model_dump(exclude_unset=True) == oracle.answer(CHAT, body)
    assert completion.choices[0].message.content == oracle.text(CHAT, body)


def test_openai_chat_stream_helper(sdk: openai.OpenAI, oracle: Oracle) -> None:
    deltas: list[str] = []
    with sdk.chat.completions.stream(model=MODEL, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        final = stream.get_final_completion()
    body = oracle.one_call(CHAT)
    expected = oracle.text(CHAT, body)
    assert "".join(deltas) == expected
    assert final.choices[0].message.content == expected
    assert final.choices[0].finish_reason == "stop"


def test_openai_responses_create_stream(sdk: openai.OpenAI, oracle: Oracle) -> None:
    events = list(sdk.responses.create(model=MODEL, input=PROMPT, stream=True))
    body = oracle.one_call(RESPONSES)
    assert body["input"] == PROMPT and body["stream"] is True
    expected = oracle.text(RESPONSES, body)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == expected
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == expected
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(set(numbers)), f"sequence numbers not increasing: {numbers}"


def test_openai_responses_stream_helper(sdk: openai.OpenAI, oracle: Oracle) -> None:
    deltas: list[str] = []
    with sdk.responses.stream(model=MODEL, input=PROMPT) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    body = oracle.one_call(RESPONSES)
    expected = oracle.text(RESPONSES, body)
    assert "".join(deltas) == expected
    assert final.output_text == expected
    assert final.status == "completed"


def test_openai_responses_not_streaming(sdk: openai.OpenAI, oracle: Oracle) -> None:
    response = sdk.responses.create(model=MODEL, input=PROMPT)
    body = oracle.one_call(RESPONSES)
    assert response.object == "response"
    assert response.output_text == oracle.text(RESPONSES, body)
    assert response.model_dump(exclude_unset=True) == oracle.answer(RESPONSES, body)


@TOOL_FAULT
def test_openai_responses_tool_calls(sdk: openai.OpenAI, oracle: Oracle) -> None:
    arguments_done: list[tuple[str, str]] = []
    with sdk.responses.stream(model=MODEL, input=PROMPT, tools=[WEATHER_TOOL]) as stream:  # type: ignore[list-item]
        for event in stream:
            if event.type == "response.function_call_arguments.done":
                arguments_done.append((event.item_id, event.arguments))
        final = stream.get_final_response()
    body = oracle.one_call(RESPONSES)
    expected = oracle.tool_calls(RESPONSES, body)
    assert expected  # the fault makes the simulator call the tool
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        (c["id"], c["name"], c["arguments"]) for c in expected
    ]
    assert [arguments for _, arguments in arguments_done] == [c["arguments"] for c in expected]


@REASONING_FAULT
def test_openai_reasoning(sdk: openai.OpenAI, oracle: Oracle) -> None:
    # Chat: DeepSeek's delta.reasoning_content, an extra field the SDK keeps.
    stream = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    chunks = [c for c in stream if c.choices]
    body = oracle.one_call(CHAT)
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks
    )
    assert reasoning == oracle.reasoning(CHAT, body) != ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == oracle.text(CHAT, body)

    # Responses: the reasoning item's summary text, streamed before the answer.
    with sdk.responses.stream(model=MODEL, input=PROMPT) as responses:
        summary = "".join(
            e.delta for e in responses if e.type == "response.reasoning_summary_text.delta"
        )
        final = responses.get_final_response()
    body = oracle.one_call(RESPONSES)
    assert summary == oracle.reasoning(RESPONSES, body) != ""
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == oracle.text(RESPONSES, body)


def test_openai_legacy_completions_stream(sdk: openai.OpenAI, oracle: Oracle) -> None:
    chunks = list(sdk.completions.create(model=MODEL, prompt=PROMPT, stream=True))
    body = oracle.one_call(COMPLETIONS)
    assert body["prompt"] == PROMPT and body["stream"] is True
    assert "".join(c.choices[0].text for c in chunks if c.choices) == oracle.text(COMPLETIONS, body)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_legacy_completions_not_streaming(sdk: openai.OpenAI, oracle: Oracle) -> None:
    completion = sdk.completions.create(model=MODEL, prompt=PROMPT)
    body = oracle.one_call(COMPLETIONS)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == oracle.text(COMPLETIONS, body)
    assert completion.model_dump(exclude_unset=True) == oracle.answer(COMPLETIONS, body)


def test_openai_models(sdk: openai.OpenAI, oracle: Oracle) -> None:
    listed = [model.id for model in sdk.models.list()]
    oracle.one_call(MODELS, method="GET")
    assert listed == [oracle.sim.config.model, *EXTRA_MODELS]
    model = sdk.models.retrieve(EXTRA_MODELS[0])
    oracle.one_call(f"{MODELS}/{EXTRA_MODELS[0]}", method="GET")
    assert (model.id, model.object) == (EXTRA_MODELS[0], "model")
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")
    relayed_key_only(oracle)


# openai-python, async --------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_openai(streamrelay_relay: str, oracle: Oracle) -> None:
    async with openai.AsyncOpenAI(base_url=streamrelay_relay, api_key=KEY) as sdk:
        stream = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        body = oracle.one_call(CHAT)
        assert text == oracle.text(CHAT, body)

        completion = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        body = oracle.one_call(CHAT)
        assert completion.choices[0].message.content == oracle.text(CHAT, body)

        async with sdk.chat.completions.stream(model=MODEL, messages=MESSAGES) as helper:  # type: ignore[arg-type]
            final_chat = await helper.get_final_completion()
        body = oracle.one_call(CHAT)
        assert final_chat.choices[0].message.content == oracle.text(CHAT, body)

        events = [
            e async for e in await sdk.responses.create(model=MODEL, input=PROMPT, stream=True)
        ]
        body = oracle.one_call(RESPONSES)
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == oracle.text(RESPONSES, body)

        async with sdk.responses.stream(model=MODEL, input=PROMPT) as responses:
            final = await responses.get_final_response()
        body = oracle.one_call(RESPONSES)
        assert final.output_text == oracle.text(RESPONSES, body)

        response = await sdk.responses.create(model=MODEL, input=PROMPT)
        body = oracle.one_call(RESPONSES)
        assert response.output_text == oracle.text(RESPONSES, body)

        chunks = [
            c async for c in await sdk.completions.create(model=MODEL, prompt=PROMPT, stream=True)
        ]
        body = oracle.one_call(COMPLETIONS)
        assert "".join(c.choices[0].text for c in chunks if c.choices) == oracle.text(
            COMPLETIONS, body
        )

        models = [m.id async for m in sdk.models.list()]
        oracle.one_call(MODELS, method="GET")
        assert models == [oracle.sim.config.model, *EXTRA_MODELS]


# LangChain -------------------------------------------------------------------------------


@pytest.fixture
def chat_model(streamrelay_relay: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=MODEL, base_url=streamrelay_relay, api_key=KEY)


def test_langchain_invoke(chat_model: Any, oracle: Oracle) -> None:
    message = chat_model.invoke(PROMPT)
    body = oracle.one_call(CHAT)
    assert body["messages"] == MESSAGES
    assert message.content == oracle.text(CHAT, body)
    assert message.response_metadata["finish_reason"] == "stop"


def test_langchain_stream(chat_model: Any, oracle: Oracle) -> None:
    pieces = [chunk.content for chunk in chat_model.stream(PROMPT)]
    body = oracle.one_call(CHAT)
    assert body["stream"] is True
    assert "".join(pieces) == oracle.text(CHAT, body)
    assert len([p for p in pieces if p]) > 1  # streamed, not one piece


@pytest.mark.anyio
async def test_langchain_astream(chat_model: Any, oracle: Oracle) -> None:
    pieces = [chunk.content async for chunk in chat_model.astream(PROMPT)]
    body = oracle.one_call(CHAT)
    assert body["stream"] is True
    assert "".join(pieces) == oracle.text(CHAT, body)
    assert len([p for p in pieces if p]) > 1


@TOOL_FAULT
def test_langchain_bind_tools(chat_model: Any, oracle: Oracle) -> None:
    from langchain_core.tools import tool

    @tool
    def get_weather(location: str, unit: str = "celsius") -> str:
        """Get the current weather in a location."""
        return f"Sunny in {location}"

    message = chat_model.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    body = oracle.one_call(CHAT)
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
    expected = oracle.tool_calls(CHAT, body)
    assert expected  # the fault makes the simulator call the tool
    assert [(c["id"], c["name"], c["args"]) for c in message.tool_calls] == [
        (c["id"], c["name"], json.loads(c["arguments"])) for c in expected
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"

    # Streamed, the fragments add up to the same calls.
    chunks = list(chat_model.bind_tools([get_weather]).stream("What is the weather in Paris?"))
    body = oracle.one_call(CHAT)
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert [(c["id"], c["name"], c["args"]) for c in merged.tool_calls] == [
        (c["id"], c["name"], json.loads(c["arguments"])) for c in oracle.tool_calls(CHAT, body)
    ]


# pydantic-ai -----------------------------------------------------------------------------


def pydantic_agent(relay: str, api: str) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=relay, api_key=KEY)
    model_class = OpenAIChatModel if api == "chat" else OpenAIResponsesModel
    return Agent(model_class(MODEL, provider=provider))


PYDANTIC_APIS = pytest.mark.parametrize(
    ("api", "route"), [("chat", CHAT), ("responses", RESPONSES)], ids=["chat", "responses"]
)


@PYDANTIC_APIS
@pytest.mark.anyio
async def test_pydantic_ai_run(
    streamrelay_relay: str, oracle: Oracle, api: str, route: str
) -> None:
    agent = pydantic_agent(streamrelay_relay, api)
    result = await agent.run(PROMPT)
    body = oracle.one_call(route)
    assert result.output == oracle.text(route, body)


@PYDANTIC_APIS
@pytest.mark.anyio
async def test_pydantic_ai_run_stream(
    streamrelay_relay: str, oracle: Oracle, api: str, route: str
) -> None:
    agent = pydantic_agent(streamrelay_relay, api)
    async with agent.run_stream(PROMPT) as result:
        pieces = [piece async for piece in result.stream_text(delta=True, debounce_by=None)]
        output = await result.get_output()
    body = oracle.one_call(route)
    expected = oracle.text(route, body)
    assert "".join(pieces) == expected
    assert output == expected
    assert len(pieces) > 1


@REASONING_FAULT
@PYDANTIC_APIS
@pytest.mark.anyio
async def test_pydantic_ai_reasoning(
    streamrelay_relay: str, oracle: Oracle, api: str, route: str
) -> None:
    from pydantic_ai import ThinkingPart

    result = await pydantic_agent(streamrelay_relay, api).run(PROMPT)
    body = oracle.one_call(route)
    thinking = [p.content for p in result.response.parts if isinstance(p, ThinkingPart)]
    assert "".join(thinking) == oracle.reasoning(route, body) != ""
    assert result.output == oracle.text(route, body)


# OpenAI Agents SDK -----------------------------------------------------------------------


@pytest.fixture
def agents_sdk() -> Any:
    import agents

    agents.set_tracing_disabled(True)  # no trace export to OpenAI
    return agents


def agents_model(agents: Any, client: openai.AsyncOpenAI, api: str) -> Any:
    if api == "responses":
        return agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
    return agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client)


AGENTS_APIS = pytest.mark.parametrize(
    ("api", "route"), [("responses", RESPONSES), ("chat", CHAT)], ids=["responses", "chat"]
)


@AGENTS_APIS
@pytest.mark.anyio
async def test_agents_runner_run(
    agents_sdk: Any, streamrelay_relay: str, oracle: Oracle, api: str, route: str
) -> None:
    async with openai.AsyncOpenAI(base_url=streamrelay_relay, api_key=KEY) as client:
        agent = agents_sdk.Agent(
            name="Assistant",
            instructions="You are a helpful assistant.",
            model=agents_model(agents_sdk, client, api),
        )
        result = await agents_sdk.Runner.run(agent, PROMPT)
    body = oracle.one_call(route)
    assert result.final_output == oracle.text(route, body)


@AGENTS_APIS
@pytest.mark.anyio
async def test_agents_runner_run_streamed(
    agents_sdk: Any, streamrelay_relay: str, oracle: Oracle, api: str, route: str
) -> None:
    from openai.types.responses import ResponseTextDeltaEvent

    async with openai.AsyncOpenAI(base_url=streamrelay_relay, api_key=KEY) as client:
        agent = agents_sdk.Agent(
            name="Assistant",
            instructions="You are a helpful assistant.",
            model=agents_model(agents_sdk, client, api),
        )
        result = agents_sdk.Runner.run_streamed(agent, input=PROMPT)
        deltas = [
            event.data.delta
            async for event in result.stream_events()
            if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent)
        ]
    body = oracle.one_call(route)
    expected = oracle.text(route, body)
    assert "".join(deltas) == expected
    assert result.final_output == expected
    assert len(deltas) > 1


# httpx-sse -------------------------------------------------------------------------------


def test_httpx_sse_reads_the_sse_format(streamrelay_relay: str, oracle: Oracle) -> None:
    request = {"model": MODEL, "messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=15) as http,
        connect_sse(http, "POST", streamrelay_relay + CHAT + "?format=sse", json=request) as source,
    ):
        assert source.response.status_code == 200
        events = list(source.iter_sse())
    body = oracle.one_call(CHAT)
    data = [json.loads(e.data) for e in events]
    assert [e.event for e in events] == [d["type"] for d in data]
    assert data[0]["type"] == "start" and data[-1] == {"type": "done"}
    assert "".join(d["text"] for d in data if d["type"] == "delta") == oracle.text(CHAT, body)
    assert [d["reason"] for d in data if d["type"] == "finish"] == ["stop"]
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids))  # resumable positions, increasing


def test_httpx_sse_reads_the_openai_wire(streamrelay_relay: str, oracle: Oracle) -> None:
    request = {"model": MODEL, "messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=15) as http,
        connect_sse(http, "POST", streamrelay_relay + CHAT, json=request) as source,
    ):
        events = list(source.iter_sse())
    body = oracle.one_call(CHAT)
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(e.event == "message" and not e.id for e in events)  # no event:, no id: lines
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == oracle.text(CHAT, body)
