"""The official ``openai`` package as a client of the ``openai`` format, unchanged.

The relay is mounted at ``/v1`` of a FastAPI app, so ``OpenAI(base_url=<host>/v1)``
talks to it exactly as it would to OpenAI; the SDK sends ``Accept:
application/json``, which negotiates the ``openai`` format.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from streamrelay import StreamRelay, Upstream
from streamrelay.testing import ServerThread, Simulator
from wire import MESSAGES, RELAY_KEY, run_async, upstream_data


@pytest.fixture(scope="module")
def relay_base(upstream: str) -> Iterator[str]:
    relay = StreamRelay(Upstream(upstream, api_key=RELAY_KEY))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await relay.aclose()

    app = FastAPI(lifespan=lifespan)
    app.mount("/v1", relay)
    with ServerThread(app) as server:
        yield server.url + "/v1"


@pytest.fixture(scope="module")
def sdk(relay_base: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=relay_base, api_key="client-key", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def direct(upstream: str) -> Iterator[openai.OpenAI]:
    """The same SDK talking to the simulator itself: the reference."""
    with openai.OpenAI(base_url=upstream, api_key="unused", max_retries=0) as client:
        yield client


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    simulator = kwargs.pop("simulator", None)
    return client.chat.completions.create(
        model="sim-1",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        extra_body={"simulator": simulator} if simulator else None,
        **kwargs,
    )


def dumps(chunks: Any) -> list[dict[str, Any]]:
    return [chunk.model_dump(exclude_unset=True) for chunk in chunks]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"n": 2},
        {"stream_options": {"include_usage": True}},
        {"simulator": {"fault": "azure"}},
        {"simulator": {"fault": ["crlf", "split", "multiline"], "tokens": 3}},
        {"simulator": {"fault": "refusal"}},
    ],
    ids=["plain", "n2", "usage", "azure", "framing", "refusal"],
)
def test_chunks_arrive_unchanged(
    sim: Simulator,
    sdk: openai.OpenAI,
    direct: openai.OpenAI,
    client: httpx.Client,
    upstream: str,
    options: dict[str, Any],
) -> None:
    relayed = dumps(create(sdk, **options))
    assert sim.requests[-1].headers["accept"] == "text/event-stream"  # the relay's own call
    assert relayed == dumps(create(direct, **options))
    # And equal to the upstream's own JSON, field for field.
    body = {"model": "sim-1", "messages": MESSAGES, "stream": True, **options}
    raw = [json.loads(d) for d in upstream_data(client, upstream, body) if d != "[DONE]"]
    assert relayed == raw


def test_content_matches_the_simulator(sim: Simulator, sdk: openai.OpenAI) -> None:
    text = "".join(c.choices[0].delta.content or "" for c in create(sdk) if c.choices)
    body = {"model": "sim-1", "messages": MESSAGES}
    assert text == sim.expected_text(body)
    # The client's key never reaches the upstream; the relay's does.
    assert sim.requests[-1].headers["authorization"] == f"Bearer {RELAY_KEY}"


def test_tool_calls_accumulate(sim: Simulator, sdk: openai.OpenAI) -> None:
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("get_weather", "get_time")
    ]
    options: dict[str, Any] = {"tools": tools, "simulator": {"fault": "tools", "tool_calls": 2}}
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in create(sdk, **options):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for frag in choice.delta.tool_calls or ():
                call = calls.setdefault(frag.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = frag.id or call["id"]
                if frag.function:
                    call["name"] = frag.function.name or call["name"]
                    call["arguments"] += frag.function.arguments or ""
    expected = sim.completion(
        {"model": "sim-1", "messages": MESSAGES, "tools": tools, "simulator": options["simulator"]}
    )["choices"][0]["message"]["tool_calls"]
    assert finish == "tool_calls"
    assert [calls[k] for k in sorted(calls)] == [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in expected
    ]
    for call in calls.values():
        json.loads(call["arguments"])

    # The SDK's own accumulating helper agrees.
    with sdk.chat.completions.stream(
        model="sim-1",
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        extra_body={"simulator": options["simulator"]},
    ) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in expected
    ]


def test_rate_limit_raises_rate_limit_error(sim: Simulator, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        create(sdk, simulator={"fault": "status", "status": 429, "message": "slow down"})
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "1"
    # the relay's request id, which it sent upstream too; the upstream's own moved aside
    assert error.response.headers["x-request-id"] == sim.requests[-1].headers["x-request-id"]
    assert error.request_id == sim.requests[-1].headers["x-request-id"]
    assert error.response.headers["x-upstream-request-id"] == sim.requests[-1].request_id
    assert "slow down" in error.message
    assert error.code == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (500, openai.InternalServerError),
    ],
)
def test_upstream_statuses_raise_their_sdk_errors(
    sdk: openai.OpenAI, status: int, error_class: type[openai.APIStatusError]
) -> None:
    with pytest.raises(error_class) as caught:
        create(sdk, simulator={"fault": "status", "status": status})
    assert caught.value.status_code == status


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("mid_error", "server_error"),
        ("mid_error_legacy", "InternalServerError"),
        ("abrupt_close", "upstream_closed"),
        ("truncate", "upstream_truncated"),
        ("non_json", "upstream_invalid"),
    ],
)
def test_mid_stream_error_raises_api_error(
    sim: Simulator, sdk: openai.OpenAI, fault: str, code: str
) -> None:
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in create(sdk, simulator={"fault": fault, "after": 3}):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert not isinstance(caught.value, openai.APIStatusError)  # raised mid-stream, after a 200
    assert caught.value.code == code
    body = {"model": "sim-1", "messages": MESSAGES, "max_tokens": 3}
    assert "".join(received) == sim.expected_text(body)


def test_async_openai(sim: Simulator, relay_base: str) -> None:
    async def main() -> tuple[str, list[str]]:
        async with openai.AsyncOpenAI(
            base_url=relay_base, api_key="client-key", max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="sim-1",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                n=2,
            )
            texts = ["", ""]
            async for chunk in stream:
                for choice in chunk.choices:
                    texts[choice.index] += choice.delta.content or ""
            failing = await client.chat.completions.create(
                model="sim-1",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                extra_body={"simulator": {"fault": "mid_error", "after": 2}},
            )
            try:
                async for _ in failing:
                    pass
            except openai.APIError as exc:
                return exc.message, texts
            raise AssertionError("the mid-stream error was not raised")

    message, texts = run_async(main)
    body = {"model": "sim-1", "messages": MESSAGES, "n": 2}
    assert texts == [sim.expected_text(body, 0), sim.expected_text(body, 1)]
    assert "error" in message.lower()


# GET /models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_base(upstream: str) -> Iterator[str]:
    """A relay that offers only some of the upstream's models."""
    relay = StreamRelay(Upstream(upstream, api_key=RELAY_KEY), allowed_models=["sim-1", "sim-3"])
    app = FastAPI()
    app.mount("/v1", relay)
    with ServerThread(app) as server:
        yield server.url + "/v1"


def test_models_are_listed_through_the_relay_with_its_key(
    sim: Simulator, sdk: openai.OpenAI, direct: openai.OpenAI
) -> None:
    """Tools list the models first (``client.models.list()``): the relay passes the
    upstream's list through, adding its own key."""
    assert [m.id for m in sdk.models.list()] == [m.id for m in direct.models.list()]
    assert sdk.models.retrieve("sim-2").id == "sim-2"
    relayed = [r for r in sim.requests if r.route == "/v1/models"]
    assert relayed and relayed[0].authorization == f"Bearer {RELAY_KEY}"


def test_the_model_list_offers_only_the_allowed_models(sim: Simulator, limited_base: str) -> None:
    with openai.OpenAI(base_url=limited_base, api_key="client", max_retries=0) as client:
        assert sorted(m.id for m in client.models.list()) == ["sim-1", "sim-3"]
        assert client.models.retrieve("sim-3").id == "sim-3"
        with pytest.raises(openai.NotFoundError) as refused:
            client.models.retrieve("sim-2")  # the upstream has it; the relay does not offer it
        assert refused.value.code == "model_not_found"
    assert not [r for r in sim.requests if r.route == "/v1/models/sim-2"]  # never asked


def test_an_unknown_model_is_the_upstreams_404(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        sdk.models.retrieve("gpt-nonexistent")


def test_models_take_get_only(relay_base: str, client: httpx.Client) -> None:
    response = client.post(relay_base + "/models", json={})
    assert (response.status_code, response.headers["allow"]) == (405, "GET")
