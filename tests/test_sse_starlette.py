"""``sse_events`` feeding sse-starlette's own ``EventSourceResponse``, under uvicorn,
read by a real socket client: the normalized events, the end, errors, and a disconnect
that closes the upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from streamrelay import Upstream, sse_events
from streamrelay.testing import ServerThread, Simulator
from wire import RELAY_KEY, RawHTTP, chat_body, parse_sse


@pytest.fixture(scope="module")
def app_url(upstream: str) -> Iterator[str]:
    shared = Upstream(upstream, api_key=RELAY_KEY)
    sdk = openai.AsyncOpenAI(base_url=upstream, api_key=RELAY_KEY)

    async def via_upstream(request: Request) -> EventSourceResponse:
        body = await request.json()
        return EventSourceResponse(sse_events(shared.request("/chat/completions", body)))

    async def via_sdk(request: Request) -> EventSourceResponse:
        body = await request.json()
        stream = await sdk.chat.completions.create(
            model=body["model"],
            messages=body["messages"],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"simulator": body.get("simulator", {})},
        )
        return EventSourceResponse(sse_events(stream))

    app = Starlette(
        routes=[
            Route("/upstream", via_upstream, methods=["POST"]),
            Route("/sdk", via_sdk, methods=["POST"]),
        ]
    )
    with ServerThread(app) as server:
        yield server.url


def events_of(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    return [(e.event, json.loads(e.data)) for e in parse_sse(raw).events]


@pytest.mark.parametrize("route", ["/upstream", "/sdk"])
def test_sse_events_carry_the_normalized_events_to_the_end(
    sim: Simulator, client: httpx.Client, app_url: str, route: str
) -> None:
    body = {**chat_body(tokens=5, fault="reasoning"), "stream_options": {"include_usage": True}}
    response = client.post(app_url + route, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.content)
    assert all(kind == data["type"] for kind, data in events)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    text = "".join(data["text"] for kind, data in events if kind == "delta")
    assert text == sim.expected_text(body)
    reasoning = "".join(data["text"] for kind, data in events if kind == "reasoning")
    assert reasoning == sim.expected_reasoning(body)
    assert "usage" in kinds


def test_a_mid_stream_error_is_the_last_event(client: httpx.Client, app_url: str) -> None:
    response = client.post(app_url + "/upstream", json=chat_body(fault="mid_error", after=2))
    kind, data = events_of(response.content)[-1]
    assert kind == "error" and data["code"] == "server_error"


def test_an_error_status_before_the_stream_is_an_error_event(
    client: httpx.Client, app_url: str
) -> None:
    response = client.post(app_url + "/upstream", json=chat_body(fault="status", status=429))
    (event,) = events_of(response.content)
    assert event[0] == "error" and event[1]["status"] == 429


def test_a_disconnect_closes_the_upstream(sim: Simulator, app_url: str) -> None:
    conn = RawHTTP(app_url)
    try:
        conn.request("POST", "/upstream", chat_body(tokens=400, delay=0.05))
        assert conn.read_head()[0] == 200
        seen = b""
        while seen.count(b"event: delta") < 2:
            chunk = conn.read_chunk()
            assert chunk is not None
            seen += chunk
    finally:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=1)
    assert sim.stats.finished == 0
