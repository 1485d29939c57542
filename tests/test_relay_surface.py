"""The OpenAI surface of the mount beyond streamed chat: whole (non-streaming) answers,
``/responses`` and legacy ``/completions``, through a real server and a real socket."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from streamrelay import Outcome, StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from wire import MESSAGES, RELAY_KEY, RawHTTP, chat_body, fetch, mounts, parse_sse, relay_host

OUTCOMES: list[Outcome] = []


@pytest.fixture(scope="module")
def relay(upstream: str) -> Iterator[str]:
    sim = Upstream(upstream, api_key=RELAY_KEY)

    def prepare(request: Any, body: dict[str, Any]) -> dict[str, Any]:
        if request.headers.get("x-tag"):
            body["metadata"] = {"tag": request.headers["x-tag"]}
        return body

    relays = {
        "/ai": StreamRelay(sim, prepare=prepare, on_stream_end=OUTCOMES.append),
        "/capped": StreamRelay(sim, max_tokens=7, allowed_models=["sim-1"]),
        "/beat": StreamRelay(sim, stream=StreamSettings(heartbeat=0.05)),
        "/idle": StreamRelay(sim, stream=StreamSettings(heartbeat=None, idle_timeout=0.3)),
    }
    with ServerThread(relay_host(mounts(relays), list(relays.values()))) as server:
        yield server.url


def responses_body(*, stream: bool = True, **simulator: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "sim-1", "input": "Tell me something."}
    if stream:
        body["stream"] = True
    if simulator:
        body["simulator"] = simulator
    return body


def completions_body(*, stream: bool = True, **simulator: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "sim-1", "prompt": "Once upon a time"}
    if stream:
        body["stream"] = True
    if simulator:
        body["simulator"] = simulator
    return body


# Whole answers -----------------------------------------------------------------------------------


def test_a_chat_request_without_stream_gets_the_upstreams_json(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(stream=False, tokens=5)
    response = client.post(
        relay + "/ai/chat/completions",
        json=body,
        headers={"authorization": "Bearer client-key", "cookie": "session=1", "x-tag": "t1"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert int(response.headers["content-length"]) == len(response.content)
    answer = response.json()
    expected = sim.completion(body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"] == expected["choices"]
    assert answer["usage"] == expected["usage"]
    # The same policy as a stream: the relay's key, never the client's credentials,
    # the prepare hook, and no stream forced on the upstream.
    (seen,) = sim.requests
    assert seen.headers["authorization"] == f"Bearer {RELAY_KEY}"
    assert "cookie" not in seen.headers
    sent = seen.json()
    assert "stream" not in sent
    assert sent["metadata"] == {"tag": "t1"}


def test_a_whole_answer_is_observed_as_an_answer_not_a_stream(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    OUTCOMES.clear()
    body = chat_body(stream=False, tokens=3)
    assert client.post(relay + "/ai/chat/completions", json=body).status_code == 200
    deadline = time.monotonic() + 5
    while not OUTCOMES and time.monotonic() < deadline:
        time.sleep(0.01)
    (outcome,) = OUTCOMES
    usage = sim.completion(body)["usage"]
    assert outcome.ok and not outcome.streaming and outcome.format == "json"
    assert outcome.route == "chat.completions" and outcome.principal == "127.0.0.1"
    assert outcome.usage is not None
    assert outcome.usage.completion_tokens == usage["completion_tokens"]
    assert outcome.model == "sim-1"


@pytest.mark.parametrize(
    ("path", "body", "route"),
    [
        ("/chat/completions", chat_body(tokens=2), "chat.completions"),
        ("/responses", responses_body(tokens=2), "responses"),
        ("/completions", completions_body(tokens=2), "completions"),
    ],
)
def test_each_stream_outcome_names_its_route_and_principal(
    client: httpx.Client, relay: str, path: str, body: dict[str, Any], route: str
) -> None:
    OUTCOMES.clear()
    fetch(client, relay + "/ai" + path, body, fmt="ndjson")
    deadline = time.monotonic() + 5
    while not OUTCOMES and time.monotonic() < deadline:
        time.sleep(0.01)
    (outcome,) = OUTCOMES
    assert outcome.streaming and outcome.route == route
    assert outcome.principal == "127.0.0.1" and outcome.stream_id is None


def test_an_upstream_error_keeps_its_status_body_and_retry_headers(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(stream=False, fault="status", status=429, retry_after=2.5)
    response = client.post(relay + "/ai/chat/completions", json=body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"  # whole seconds, as OpenAI sends
    assert response.headers["retry-after-ms"] == "2500"
    assert response.headers["x-upstream-request-id"] == sim.requests[-1].request_id
    assert response.headers["x-request-id"] == sim.requests[-1].headers["x-request-id"]
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert len(sim.requests) == 1  # never retried


def test_the_model_list_and_token_cap_apply_to_whole_answers(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    refused = client.post(
        relay + "/capped/chat/completions", json={**chat_body(stream=False), "model": "gpt-4o"}
    )
    assert refused.status_code == 403
    assert sim.requests == []
    capped = client.post(
        relay + "/capped/chat/completions", json={**chat_body(stream=False), "max_tokens": 500}
    )
    assert capped.status_code == 200
    assert sim.requests[-1].json()["max_tokens"] == 7
    client.post(relay + "/capped/responses", json=responses_body(stream=False))
    assert sim.requests[-1].json()["max_output_tokens"] == 7
    client.post(relay + "/capped/completions", json=completions_body(stream=False))
    assert sim.requests[-1].json()["max_tokens"] == 7


def test_a_client_that_leaves_before_the_answer_cancels_the_upstream(
    sim: Simulator, relay: str
) -> None:
    conn = RawHTTP(relay)
    try:
        conn.request("POST", "/ai/chat/completions", chat_body(stream=False, fault="stall_headers"))
        assert sim.stats.wait(timeout=10, started=1)
    finally:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=1)
    assert sim.stats.finished == 0
    sim.stats.wait_idle(timeout=10)


def test_a_slow_answer_gets_whitespace_heartbeats_that_keep_it_valid_json(
    sim: Simulator, relay: str
) -> None:
    body = chat_body(stream=False, tokens=4, fault="stall_headers", stall=0.4)
    with RawHTTP(relay) as conn:
        conn.request("POST", "/beat/chat/completions", body)
        assert conn.read_head()[0] == 200
        first = conn.read_chunk()
        assert first == b"\n"  # long before the answer: an idle proxy sees bytes
        rest = bytearray(first)
        while (chunk := conn.read_chunk()) is not None:
            rest += chunk
    assert rest.count(b"\n") >= 3
    assert json.loads(rest)["choices"] == sim.completion(body)["choices"]


def test_a_whole_answer_that_never_comes_is_a_504_and_is_cancelled(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(stream=False, fault="stall_headers", stall=30)
    response = client.post(relay + "/idle/chat/completions", json=body)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert sim.stats.wait(timeout=10, cancelled=1)


# The Responses API -------------------------------------------------------------------------------


def test_responses_stream_passes_through_unchanged_in_the_openai_wire(
    sim: Simulator, client: httpx.Client, upstream: str, relay: str
) -> None:
    body = responses_body(tokens=4)
    relayed = fetch(client, relay + "/ai/responses", body, parse_as="openai")
    assert relayed.status == 200
    direct = fetch(client, upstream + "/responses", body, parse_as="openai")
    assert b"[DONE]" not in relayed.raw
    relayed_events = parse_sse(relayed.raw).events
    direct_events = parse_sse(direct.raw).events
    assert [e.event for e in relayed_events] == [e.event for e in direct_events]
    assert relayed_events[-1].event == "response.completed"
    numbers = [json.loads(e.data)["sequence_number"] for e in relayed_events]
    assert numbers == [json.loads(e.data)["sequence_number"] for e in direct_events]


@pytest.mark.parametrize("fmt", ["ndjson", "sse"])
def test_responses_stream_in_our_formats_carries_normalized_events(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str
) -> None:
    body = responses_body(tokens=6)
    out = fetch(client, relay + "/ai/responses", body, fmt=fmt)
    assert out.terminal == "done"
    final = sim.response(body)
    text = "".join(
        part["text"]
        for item in final["output"]
        if item["type"] == "message"
        for part in item["content"]
    )
    assert out.content() == text
    (usage,) = [e for e in out.events if e["type"] == "usage"]
    assert usage["prompt_tokens"] == final["usage"]["input_tokens"]
    assert usage["completion_tokens"] == final["usage"]["output_tokens"]


@pytest.mark.parametrize("fmt", ["openai", "ndjson"])
def test_a_client_that_leaves_a_responses_stream_cancels_the_upstream(
    sim: Simulator, relay: str, fmt: str
) -> None:
    conn = RawHTTP(relay)
    try:
        conn.request("POST", f"/ai/responses?format={fmt}", responses_body(tokens=400, delay=0.05))
        assert conn.read_head()[0] == 200
        assert conn.read_chunk()
        assert conn.read_chunk()  # events are flowing
    finally:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=1)
    assert sim.stats.finished == 0
    sim.stats.wait_idle(timeout=10)


def test_a_responses_request_without_stream_gets_the_response_object(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = responses_body(stream=False, tokens=3)
    response = client.post(relay + "/ai/responses", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "response"
    assert answer["output"] == sim.response(body)["output"]


@pytest.mark.parametrize("fault", ["failed", "mid_error"])
@pytest.mark.parametrize("fmt", ["ndjson", "sse", "openai", "text"])
def test_a_responses_mid_stream_failure_is_the_terminal_error(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str, fault: str
) -> None:
    body = responses_body(fault=fault, code="overloaded", message="try later")
    out = fetch(client, relay + "/ai/responses", body, fmt=fmt)
    if fmt == "text":
        assert out.aborted  # text has no in-band error: the response is cut
        return
    if fmt == "openai":  # OpenAI's own event, passed on for its SDKs to raise on
        events = parse_sse(out.raw).events
        assert events[-1].event == ("response.failed" if fault == "failed" else "error")
        assert "overloaded" in events[-1].data
        assert b"[DONE]" not in out.raw
        return
    assert out.terminal == "error"
    assert out.error is not None
    assert out.error["code"] == "overloaded" and out.error["message"] == "try later"


# Legacy completions -----------------------------------------------------------------------------


def test_legacy_completions_stream_in_every_format(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = completions_body(tokens=5)
    expected = sim.expected_text(body)
    assert expected
    wire = fetch(client, relay + "/ai/completions", body, parse_as="openai")
    assert wire.raw.endswith(b"data: [DONE]\n\n")
    for fmt in ("ndjson", "sse", "text"):
        out = fetch(client, relay + "/ai/completions", body, fmt=fmt)
        assert out.content() == expected, fmt


def test_legacy_completions_without_stream_get_the_text_completion(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = completions_body(stream=False, tokens=3)
    answer = client.post(relay + "/ai/completions", json=body).json()
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == sim.expected_text(body)


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/responses", {"model": "sim-1"}, "invalid_input"),
        ("/responses", {"model": "sim-1", "input": 3}, "invalid_input"),
        ("/completions", {"model": "sim-1", "messages": MESSAGES}, "invalid_prompt"),
        ("/chat/completions", {"model": "sim-1", "input": "hi"}, "invalid_messages"),
    ],
)
def test_each_route_requires_its_own_field(
    sim: Simulator, client: httpx.Client, relay: str, path: str, body: Any, code: str
) -> None:
    response = client.post(relay + "/ai" + path, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert sim.requests == []
