"""The simulator, through a real uvicorn server on a real socket.

The SSE and chunked-encoding parsing here is deliberately independent of
``streamrelay``'s own codecs: these tests are the oracle the relay's tests rely on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import openai
import pytest

import streamrelay.cli
import streamrelay.testing
import streamrelay.testing.cli
import streamrelay.testing.server
from streamrelay.testing import (
    FAULTS,
    ROUTE_FAULTS,
    ROUTES,
    ServerThread,
    Simulator,
    SimulatorConfig,
    run_simulator,
)
from streamrelay.testing.cli import build_parser, config_from_args

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Simulator, str]]:
    with run_simulator(delay=0.0) as running:
        yield running


@pytest.fixture
def sim(server: tuple[Simulator, str]) -> Simulator:
    simulator = server[0]
    simulator.reset()
    return simulator


@pytest.fixture
def base_url(server: tuple[Simulator, str]) -> str:
    return server[1]


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def request_body(stream: bool = True, **simulator: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "sim-1", "messages": MESSAGES, "stream": stream}
    if simulator:
        body["simulator"] = simulator
    return body


def post(client: httpx.Client, base_url: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(base_url + "/chat/completions", json=body)


# An SSE parser written from the WHATWG spec, independent of streamrelay.sse.


def sse_data(raw: bytes) -> list[str]:
    """The data of each dispatched event."""
    text = raw.decode("utf-8")
    text = text.removeprefix("\ufeff")
    events: list[str] = []
    data: list[str] = []
    has_data = False
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            if has_data:
                events.append("\n".join(data))
            data, has_data = [], False
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
                has_data = True
    return events


def chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of a stream, checking that it ends with ``[DONE]``."""
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def contents(payloads: list[dict[str, Any]], index: int = 0, key: str = "content") -> str:
    return "".join(
        choice["delta"].get(key) or ""
        for payload in payloads
        for choice in payload.get("choices", [])
        if choice["index"] == index
    )


def finish_reasons(payloads: list[dict[str, Any]]) -> dict[int, str]:
    return {
        choice["index"]: choice["finish_reason"]
        for payload in payloads
        for choice in payload.get("choices", [])
        if choice.get("finish_reason")
    }


# Raw HTTP/1.1, to see the bytes and the reads exactly as they arrive.


@dataclass
class RawResponse:
    head: bytes
    reads: list[bytes]
    chunk_sizes: list[int]
    body: bytes
    terminated: bool  # the chunked body ended with its 0-length chunk


def raw_post(base_url: str, body: dict[str, Any], path: str = "/chat/completions") -> RawResponse:
    url = urlsplit(base_url)
    payload = json.dumps(body).encode()
    request = (
        f"POST {url.path}{path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload
    reads = []
    with socket.create_connection((url.hostname, url.port or 80), timeout=10) as sock:
        sock.sendall(request)
        while data := sock.recv(65536):
            reads.append(data)
    raw = b"".join(reads)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    sizes: list[int] = []
    content, terminated = bytearray(), False
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0:
            terminated = rest == b"\r\n"
            break
        if len(rest) < size + 2:
            content += rest[:size]
            break
        sizes.append(size)
        content += rest[:size]
        rest = rest[size + 2 :]
    return RawResponse(head, reads, sizes, bytes(content), terminated)


# The default stream.


def test_default_stream_is_openai_shaped_and_deterministic(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    body = request_body(tokens=8)
    response = post(client, base_url, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-request-id"].startswith("req_")
    assert "content-length" not in response.headers

    payloads = chunks(response.content)
    first = payloads[0]
    assert list(first) == ["id", "object", "created", "model", "system_fingerprint", "choices"]
    assert first["id"].startswith("chatcmpl-")
    assert first["object"] == "chat.completion.chunk"
    assert first["model"] == "sim-1"
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert all(payload["id"] == first["id"] for payload in payloads)
    assert all("usage" not in payload for payload in payloads)
    # Frozen: changing the generated text is a breaking change for users' snapshots.
    assert contents(payloads) == " culpa et laborum non ullamco quis pariatur dolore"
    assert contents(payloads) == sim.expected_text(body)
    assert payloads[-1]["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert post(client, base_url, body).content == response.content
    other = request_body(tokens=8)
    other["messages"] = [{"role": "user", "content": "Bye"}]
    assert contents(chunks(post(client, base_url, other).content)) != contents(payloads)


def test_default_token_count_and_pacing(base_url: str, client: httpx.Client) -> None:
    started = time.monotonic()
    payloads = chunks(post(client, base_url, request_body(delay=0.01)).content)
    assert time.monotonic() - started >= 39 * 0.01
    tokens = [p["choices"][0]["delta"]["content"] for p in payloads[1:-1]]
    assert len(tokens) == SimulatorConfig().tokens == 40
    assert all(token.startswith(" ") and " " not in token[1:] for token in tokens)


def test_non_streaming_completion(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    body = request_body(stream=False, tokens=6)
    response = post(client, base_url, body)
    completion = response.json()
    assert response.headers["content-type"] == "application/json"
    assert completion["object"] == "chat.completion"
    assert completion == sim.completion(body)
    message = completion["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert completion["choices"][0]["finish_reason"] == "stop"
    streamed = contents(chunks(post(client, base_url, request_body(tokens=6)).content))
    assert message["content"] == streamed
    assert completion["usage"]["completion_tokens"] == 6


def test_n_interleaves_choices_that_each_finish(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    body = {**request_body(tokens=5), "n": 2}
    payloads = chunks(post(client, base_url, body).content)
    indexes = [payload["choices"][0]["index"] for payload in payloads]
    assert indexes == [0, 1] * 7
    assert finish_reasons(payloads) == {0: "stop", 1: "stop"}
    assert contents(payloads, 0) == sim.expected_text(body, 0)
    assert contents(payloads, 1) == sim.expected_text(body, 1)
    assert contents(payloads, 0) != contents(payloads, 1)


def test_usage_chunk_only_when_asked(base_url: str, client: httpx.Client) -> None:
    body = {**request_body(tokens=3), "stream_options": {"include_usage": True}}
    payloads = chunks(post(client, base_url, body).content)
    *before, last = payloads
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 3
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 3
    assert all("usage" in payload and payload["usage"] is None for payload in before)
    assert all("usage" not in p for p in chunks(post(client, base_url, request_body()).content))


def test_max_tokens_stops_with_length(base_url: str, client: httpx.Client) -> None:
    payloads = chunks(post(client, base_url, {**request_body(tokens=10), "max_tokens": 3}).content)
    assert finish_reasons(payloads) == {0: "length"}
    assert len(payloads) == 1 + 3 + 1


def test_text_and_pieces_are_streamed_verbatim(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    body = request_body(text="hello world", chunk_size=4)
    payloads = chunks(post(client, base_url, body).content)
    assert [p["choices"][0]["delta"].get("content") for p in payloads[1:-1]] == [
        "hell",
        "o wo",
        "rld",
    ]
    pieces = ["a\nb", "\r\n\r\n", "data: [DONE]", "[DONE]", "\n\ndata: x\n\n", "🙂é", "\u2028", ""]
    payloads = chunks(post(client, base_url, request_body(pieces=pieces)).content)
    assert [p["choices"][0]["delta"]["content"] for p in payloads[1:-1]] == pieces
    assert sim.expected_text(request_body(pieces=pieces)) == "".join(pieces)


def test_routes(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    root = base_url.removesuffix("/v1")
    assert (
        client.post(base_url + "/chat/completions/", json=request_body(tokens=1)).status_code == 200
    )
    assert client.post(base_url + "/responses/", json={"input": "Hi"}).status_code == 200
    assert client.post(base_url + "/completions", json={"prompt": "Hi"}).status_code == 200
    # Only the paths a real server has: a relay with a wrong base URL must fail here too.
    for wrong in (
        "/chat/completions",
        "/responses",
        "/completions",
        "/v1/chat/completions/chat/completions",
        "/v1/responses/resp_123",
        "/v1/responses/v1/responses",
        "/v1/chat/responses",
        "/v1/completions/chat",
        "/v1/v1/completions",
        "/v2/chat/completions",
    ):
        response = client.post(root + wrong, json=request_body(tokens=1))
        assert response.status_code == 404, wrong
    models = client.get(base_url + "/models/").json()
    assert models["data"][0]["id"] == "sim-1"
    for path in ("/chat/completions", "/responses", "/completions"):
        response = client.get(base_url + path)
        assert response.status_code == 405, path
        assert response.headers["allow"] == "POST"
    response = client.post(base_url + "/models", json={})
    assert (response.status_code, response.headers["allow"]) == (405, "GET")
    missing = client.get(base_url + "/nope")
    assert missing.status_code == 404
    assert "message" in missing.json()["error"]
    for bad in ({"fault": "nope"}, {"tokenz": 3}, {"tokens": -1}, {"delay": "x"}):
        response = post(client, base_url, {**request_body(), "simulator": bad})
        assert response.status_code == 400, bad
    assert client.post(base_url + "/chat/completions", content=b"{").status_code == 400
    assert [r.outcome for r in sim.requests][-5:] == ["rejected"] * 5


def test_records_requests_as_received(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    body = request_body(tokens=1)
    client.post(
        base_url + "/chat/completions?x=1",
        json=body,
        headers={"Authorization": "Bearer sk-test", "Cookie": "session=secret", "X-Extra": "1"},
    )
    (record,) = sim.requests
    assert record.method == "POST"
    assert record.path == "/v1/chat/completions"
    assert record.query_string == "x=1"
    assert record.authorization == "Bearer sk-test"
    assert record.headers["cookie"] == "session=secret"
    assert record.headers["x-extra"] == "1"
    assert record.json() == body
    assert record.status == 200
    # The client can read the last byte before the server's task has recorded the end.
    assert sim.stats.wait(finished=1)
    assert record.outcome == "finished"
    assert record.faults == ()
    assert sim.stats.snapshot() == {
        "started": 1,
        "finished": 1,
        "cancelled": 0,
        "failed": 0,
        "active": 0,
    }


# Faults before the stream.


def test_status_fault_json(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    response = post(client, base_url, request_body(fault="status", retry_after=2.5))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "2500"
    assert response.headers["x-request-id"] == sim.requests[-1].request_id
    error = response.json()["error"]
    assert error["type"] == "requests"
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"]
    custom = post(
        client,
        base_url,
        request_body(
            fault="status", status=503, message="down", code="overloaded", retry_after=None
        ),
    )
    assert custom.status_code == 503
    assert "retry-after" not in custom.headers
    assert custom.json()["error"] == {
        "message": "down",
        "type": "server_error",
        "param": None,
        "code": "overloaded",
    }


def test_status_fault_html(base_url: str, client: httpx.Client) -> None:
    response = post(client, base_url, request_body(fault="status", status=502, body="html"))
    assert response.status_code == 502
    assert response.headers["content-type"] == "text/html"
    assert "<h1>502 Bad Gateway</h1>" in response.text


def test_stall_headers_delays_the_response(base_url: str, client: httpx.Client) -> None:
    started = time.monotonic()
    response = post(client, base_url, request_body(fault="stall_headers", stall=0.3, tokens=2))
    assert time.monotonic() - started >= 0.25
    assert len(chunks(response.content)) == 4


def test_disconnect_during_stall_headers_is_cancelled(sim: Simulator, base_url: str) -> None:
    with (
        httpx.Client(timeout=httpx.Timeout(5, read=0.2)) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        post(client, base_url, request_body(fault="stall_headers"))
    assert sim.stats.wait(cancelled=1, timeout=2)
    assert sim.requests[-1].outcome == "cancelled"


# Faults in the middle of the stream.


def test_mid_error(base_url: str, client: httpx.Client) -> None:
    response = post(client, base_url, request_body(fault="mid_error", tokens=6, after=2))
    data = sse_data(response.content)
    assert "[DONE]" not in data
    payloads = [json.loads(item) for item in data]
    assert contents(payloads[:-1]).count(" ") == 2
    assert payloads[-1] == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": "server_error",
        }
    }


def test_mid_error_legacy(base_url: str, client: httpx.Client) -> None:
    body = request_body(fault="mid_error_legacy", after=0, message="boom", code=400)
    last = json.loads(sse_data(post(client, base_url, body).content)[-1])
    assert last == {
        "object": "error",
        "message": "boom",
        "type": "InternalServerError",
        "param": None,
        "code": 400,
    }


def test_abrupt_close_sends_no_terminating_chunk(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    raw = raw_post(base_url, request_body(fault="abrupt_close", tokens=6, after=3))
    assert not raw.terminated
    assert not raw.body.endswith(b"0\r\n\r\n")
    data = sse_data(raw.body)
    assert "[DONE]" not in data
    assert len(data) == 1 + 3
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, base_url, request_body(fault="abrupt_close"))
    assert sim.stats.wait(finished=2)
    assert [r.outcome for r in sim.requests] == ["aborted", "aborted"]


def test_stall_then_continue(base_url: str, client: httpx.Client) -> None:
    started = time.monotonic()
    response = post(client, base_url, request_body(fault="stall", stall=0.3, tokens=4))
    assert time.monotonic() - started >= 0.25
    assert len(chunks(response.content)) == 6


def test_client_disconnect_during_stall_is_cancelled(sim: Simulator, base_url: str) -> None:
    body = request_body(fault="stall", tokens=6, after=2)
    with httpx.Client() as client:
        with client.stream("POST", base_url + "/chat/completions", json=body) as response:
            received, seen = response.iter_bytes(), b""
            while seen.count(b"content") < 3:  # the role chunk and 2 tokens
                seen += next(received)
            time.sleep(0.05)
            assert sim.stats.active == 1  # stalled, still waiting for us
        closed = time.monotonic()
    assert sim.stats.wait(cancelled=1, timeout=2)
    assert time.monotonic() - closed < 2
    assert sim.stats.snapshot() == {
        "started": 1,
        "finished": 0,
        "cancelled": 1,
        "failed": 0,
        "active": 0,
    }
    assert sim.requests[-1].outcome == "cancelled"


def test_no_done_and_truncate_end_cleanly(base_url: str, client: httpx.Client) -> None:
    data = sse_data(post(client, base_url, request_body(fault="no_done", tokens=3)).content)
    assert data[-1] != "[DONE]"
    assert finish_reasons([json.loads(item) for item in data]) == {0: "stop"}

    body = request_body(fault="truncate", tokens=6, after=4)
    data = sse_data(post(client, base_url, body).content)
    payloads = [json.loads(item) for item in data]
    assert finish_reasons(payloads) == {}
    assert len(payloads) == 1 + 4


def test_invalid_utf8_and_non_json_lines(base_url: str, client: httpx.Client) -> None:
    raw = post(client, base_url, request_body(fault="invalid_utf8", tokens=4, after=2)).content
    (bad,) = [line for line in raw.split(b"\n") if b"\xff" in line]
    assert bad.startswith(b"data: {")
    with pytest.raises(UnicodeDecodeError):
        bad.decode()
    assert raw.endswith(b"data: [DONE]\n\n")

    data = sse_data(post(client, base_url, request_body(fault="non_json", tokens=4)).content)
    assert data[1 + 2] == "hello"
    assert data[-1] == "[DONE]"


def test_big_line(base_url: str, client: httpx.Client) -> None:
    raw = post(client, base_url, request_body(fault="big_line", tokens=2, after=1)).content
    (line,) = [line for line in raw.split(b"\n") if len(line) > 1024]
    assert len(line) > 3 * 1024 * 1024
    payloads = chunks(raw)
    assert len(payloads[2]["choices"][0]["delta"]["content"]) == 3 * 1024 * 1024


def test_timestamps(base_url: str, client: httpx.Client) -> None:
    before = time.time_ns()
    payloads = chunks(post(client, base_url, request_body(fault="timestamps", tokens=5)).content)
    after = time.time_ns()
    stamps = [int(m) for m in re.findall(r"t=(\d+) ", contents(payloads))]
    assert len(stamps) == 5
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after


# Payload shapes.


def test_azure_shape(base_url: str, client: httpx.Client) -> None:
    payloads = chunks(post(client, base_url, request_body(fault="azure", tokens=3)).content)
    first, *_, last = payloads
    assert first["choices"] == []
    assert first["id"] == first["model"] == ""
    assert first["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    content = [p for p in payloads if p["choices"] and p["choices"][0]["delta"].get("content")]
    assert len(content) == 3
    assert all(p["choices"][0]["content_filter_results"]["violence"] for p in content)
    assert last["choices"][0]["delta"] == {}
    assert last["choices"][0]["content_filter_results"]["sexual"]["severity"] == "safe"
    assert finish_reasons(payloads) == {0: "stop"}


def test_tool_calls(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    tools = [
        {"type": "function", "function": {"name": name, "parameters": {}}}
        for name in ("lookup", "fetch")
    ]
    body = {**request_body(fault="tools", tool_calls=2), "tools": tools}
    payloads = chunks(post(client, base_url, body).content)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    for payload in payloads:
        for fragment in payload["choices"][0]["delta"].get("tool_calls", []):
            if "id" in fragment:
                assert fragment["type"] == "function"
                assert fragment["function"]["arguments"] == ""
                calls[fragment["index"]] = {**fragment, "function": dict(fragment["function"])}
            else:
                calls[fragment["index"]]["function"]["arguments"] += fragment["function"][
                    "arguments"
                ]
    assert [call["function"]["name"] for call in calls.values()] == ["lookup", "fetch"]
    assert all(json.loads(call["function"]["arguments"]) for call in calls.values())
    expected = sim.completion(body)["choices"][0]["message"]["tool_calls"]
    assert [{k: v for k, v in call.items() if k != "index"} for call in calls.values()] == expected
    assert finish_reasons(payloads) == {0: "tool_calls"}


def test_a_tool_result_gets_a_text_answer(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    body = request_body(fault="tools")
    (call,) = sim.completion(body)["choices"][0]["message"]["tool_calls"]
    follow_up = {
        **body,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
        ],
    }
    payloads = chunks(post(client, base_url, follow_up).content)
    assert finish_reasons(payloads) == {0: "stop"}
    text = contents(payloads)
    assert text and text == sim.expected_text(follow_up)
    assert (
        "tool_calls" not in sim.completion(follow_up)["choices"][0]["message"]
        or not (sim.completion(follow_up)["choices"][0]["message"]["tool_calls"])
    )


def test_refusal(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    body = request_body(fault="refusal")
    payloads = chunks(post(client, base_url, body).content)
    refusal = contents(payloads, key="refusal")
    assert refusal == "I'm sorry, but I can't help with that."
    assert refusal == sim.completion(body)["choices"][0]["message"]["refusal"]
    assert contents(payloads) == ""


def test_reasoning_streams_deepseek_reasoning_content_first(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    body = {**request_body(fault="reasoning", tokens=4, reasoning_tokens=3)}
    body["stream_options"] = {"include_usage": True}
    payloads = chunks(post(client, base_url, body).content)
    deltas = [p["choices"][0]["delta"] for p in payloads if p["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [set(d) for d in deltas[1:8]] == [{"content", "reasoning_content"}] * 7
    assert [d["content"] is None for d in deltas[1:8]] == [True] * 3 + [False] * 4
    assert [d["reasoning_content"] is None for d in deltas[1:8]] == [False] * 3 + [True] * 4
    reasoning = contents(payloads, key="reasoning_content")
    assert reasoning == sim.expected_reasoning(body) != ""
    assert not reasoning.startswith(" ")
    assert contents(payloads) == sim.expected_text(body)
    assert payloads[-1]["usage"]["completion_tokens"] == 7
    assert payloads[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}

    whole_body = {**body, "stream": False}
    whole = post(client, base_url, whole_body).json()
    assert whole == sim.completion(whole_body)
    message = whole["choices"][0]["message"]
    assert message["reasoning_content"] == reasoning
    assert message["content"] == contents(payloads)
    # Without the fault, nothing changes: no reasoning, no usage details.
    plain = sim.completion(request_body(tokens=4))
    assert "reasoning_content" not in plain["choices"][0]["message"]
    assert "completion_tokens_details" not in plain["usage"]
    assert sim.expected_reasoning(request_body(tokens=4)) == ""


def test_reasoning_text_tokens_and_limits(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    body = request_body(fault="reasoning", reasoning_text="Think\nhard.", chunk_size=3, tokens=2)
    payloads = chunks(post(client, base_url, body).content)
    pieces = [p["choices"][0]["delta"]["reasoning_content"] for p in payloads[1:5]]
    assert pieces == ["Thi", "nk\n", "har", "d."]
    assert sim.expected_reasoning(body) == "Think\nhard."
    # max_tokens counts the reasoning, as OpenAI's reasoning models do.
    cut = {**request_body(fault="reasoning", reasoning_tokens=5, tokens=5), "max_tokens": 3}
    payloads = chunks(post(client, base_url, cut).content)
    assert finish_reasons(payloads) == {0: "length"}
    assert contents(payloads) == "" == sim.expected_text(cut)
    assert len(contents(payloads, key="reasoning_content").split()) == 3
    for bad in ({"reasoning_tokens": -1}, {"reasoning_text": 3}):
        assert post(client, base_url, request_body(**bad)).status_code == 400


def test_parts_stream_mistral_thinking_then_text_parts(
    sim: Simulator, base_url: str, client: httpx.Client
) -> None:
    body = request_body(fault="parts", tokens=3, reasoning_tokens=2)
    payloads = chunks(post(client, base_url, body).content)
    deltas = [p["choices"][0]["delta"] for p in payloads[1:-1]]
    assert [part["type"] for d in deltas for part in d["content"]] == ["thinking"] * 2 + [
        "text"
    ] * 3
    thinking = "".join(
        inner["text"]
        for d in deltas
        for part in d["content"]
        if part["type"] == "thinking"
        for inner in part["thinking"]
    )
    text = "".join(part["text"] for d in deltas for part in d["content"] if part["type"] == "text")
    assert thinking == sim.expected_reasoning(body)
    assert text == sim.expected_text(body)
    message = post(client, base_url, {**body, "stream": False}).json()["choices"][0]["message"]
    assert message["content"] == [
        {"type": "thinking", "thinking": [{"type": "text", "text": thinking}]},
        {"type": "text", "text": text},
    ]
    assert message == sim.completion(body)["choices"][0]["message"]


def test_tool_index_collision(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    body = request_body(fault="tool_index_collision")
    payloads = chunks(post(client, base_url, body).content)
    fragments = [
        fragment
        for payload in payloads
        for fragment in payload["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert {fragment["index"] for fragment in fragments} == {0}
    # Told apart by id: a fragment without one belongs to the last call that had one.
    calls: list[dict[str, str]] = []
    for fragment in fragments:
        if "id" in fragment:
            calls.append({"id": fragment["id"], "name": fragment["function"]["name"]})
            calls[-1]["arguments"] = ""
        else:
            calls[-1]["arguments"] += fragment["function"]["arguments"]
    assert len(calls) == 2 and calls[0]["id"] != calls[1]["id"]
    assert calls == sim.expected_tool_calls(body)
    assert finish_reasons(payloads) == {0: "tool_calls"}
    three = request_body(fault="tool_index_collision", tool_calls=3)
    assert len(sim.completion(three)["choices"][0]["message"]["tool_calls"]) == 3


def test_openai_sdk_reads_reasoning_and_parts(sim: Simulator, base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    body = request_body(fault="reasoning", tokens=5)
    stream = client.chat.completions.create(
        model="sim-1", messages=MESSAGES, stream=True, extra_body={"simulator": body["simulator"]}
    )
    reasoning, text = "", ""
    for chunk in stream:
        delta = chunk.choices[0].delta
        reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
        text += delta.content or ""
    assert (reasoning, text) == (sim.expected_reasoning(body), sim.expected_text(body))
    whole = client.chat.completions.create(
        model="sim-1", messages=MESSAGES, extra_body={"simulator": {"fault": "parts"}}
    )
    assert isinstance(whole.choices[0].message.content, list)


def test_a_fault_a_route_cannot_honour(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    response = post(client, base_url, request_body(fault=["crlf", "failed"]))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "The fault(s) failed do not apply to POST /v1/chat/completions."
    )
    # A default the route cannot honour is left out, and not recorded.
    defaults = sim.config
    sim.config = defaults.replace(fault=["failed", "crlf"])
    try:
        raw = post(client, base_url, request_body(tokens=2)).content
    finally:
        sim.config = defaults
    assert raw.endswith(b"data: [DONE]\r\n\r\n")
    assert sim.requests[-1].faults == ("crlf",)
    assert ROUTE_FAULTS["chat"] == set(FAULTS) - {"failed"}


# Framing.


def test_crlf_cr_bom_nospace_comments(base_url: str, client: httpx.Client) -> None:
    expected = chunks(post(client, base_url, request_body(tokens=4)).content)

    raw = post(client, base_url, request_body(fault="crlf", tokens=4)).content
    assert raw.endswith(b"data: [DONE]\r\n\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n")
    assert chunks(raw) == expected

    raw = post(client, base_url, request_body(fault="cr", tokens=4)).content
    assert b"\n" not in raw and raw.endswith(b"\r\r")
    assert chunks(raw) == expected

    raw = post(client, base_url, request_body(fault=["bom", "nospace"], tokens=4)).content
    assert raw.startswith(b"\xef\xbb\xbfdata:{")
    assert b"data: " not in raw
    assert chunks(raw) == expected

    raw = post(client, base_url, request_body(fault="comments", tokens=4)).content
    assert raw.count(b": keep-alive\n\n") == len(expected) + 1
    assert chunks(raw) == expected


def test_multiline(base_url: str, client: httpx.Client) -> None:
    expected = chunks(post(client, base_url, request_body(tokens=4)).content)
    raw = post(client, base_url, request_body(fault="multiline", tokens=4)).content
    first_event = raw.split(b"\n\n")[0]
    assert first_event.count(b"data: ") > 3
    assert chunks(raw) == expected


def test_split_writes_every_byte_separately(base_url: str, client: httpx.Client) -> None:
    pieces = ["é", "🚀", "東京"]
    clean = post(client, base_url, request_body(pieces=pieces, fault="crlf")).content
    raw = raw_post(base_url, request_body(pieces=pieces, fault=["crlf", "split"]))
    assert raw.terminated
    assert raw.body == clean
    assert set(raw.chunk_sizes) == {1}
    assert len(raw.reads) > 10  # pauses make the bytes arrive in many reads


def test_faults_combine(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    faults = ["cr", "comments", "multiline", "bom", "split"]
    body = {**request_body(fault=faults, tokens=3), "n": 2}
    payloads = chunks(post(client, base_url, body).content)
    assert finish_reasons(payloads) == {0: "stop", 1: "stop"}
    assert contents(payloads, 1) == sim.expected_text(body, 1)
    assert sim.requests[-1].faults == tuple(faults)


def test_every_fault_is_tested_on_every_route_that_honours_it() -> None:
    here = Path(__file__).parent
    sources = {
        "chat": (here / "test_simulator.py").read_text(),
        "completions": (here / "test_simulator_completions.py").read_text(),
        "responses": (here / "test_simulator_responses.py").read_text(),
    }
    untested = [
        (route, name)
        for route, faults in ROUTE_FAULTS.items()
        for name in sorted(faults)
        if f'"{name}"' not in sources[route]
    ]
    assert untested == []
    assert set(ROUTE_FAULTS) == set(ROUTES) == {"chat", "completions", "responses"}
    assert set().union(*ROUTE_FAULTS.values()) == set(FAULTS)


# Stats and servers.


def test_stats_wait_reports_counts_on_timeout(sim: Simulator) -> None:
    with pytest.raises(TimeoutError, match=r"cancelled>=1 .*started=0, finished=0"):
        sim.stats.wait(cancelled=1, timeout=0.05)
    with pytest.raises(TypeError):
        sim.stats.wait(bogus=1)
    with pytest.raises(TimeoutError):
        anyio.run(lambda: sim.stats.wait_async(timeout=0.05, finished=1))


def test_stats_wait_async_and_reset(sim: Simulator, base_url: str, client: httpx.Client) -> None:
    post(client, base_url, request_body(tokens=1))
    assert anyio.run(lambda: sim.stats.wait_async(finished=1))
    assert sim.stats.wait_idle()
    sim.reset()
    assert sim.requests == []
    assert sim.stats.snapshot()["started"] == 0


def test_server_thread_runs_any_app_and_stops_with_open_streams() -> None:
    async def forever(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await anyio.sleep_forever()

    server = ServerThread(forever)
    with server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        client = httpx.Client()
        response = client.send(client.build_request("GET", server.url), stream=True)
        body = response.iter_raw()
        assert next(body) == b"x"
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3
    with pytest.raises(httpx.RemoteProtocolError):  # closed without the terminating chunk
        next(body)
    client.close()


def test_h11_server_aborts_and_cancels_too() -> None:
    simulator = Simulator(delay=0.0)
    with ServerThread(simulator, http="h11") as server:
        raw = raw_post(server.url + "/v1", request_body(fault="abrupt_close", tokens=4))
        assert not raw.terminated
        assert len(sse_data(raw.body)) == 3
        with httpx.Client() as client:
            body = request_body(fault="stall", after=0)
            with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
                next(r.iter_bytes())
        assert simulator.stats.wait(cancelled=1, timeout=2)


# The command line: one parser for `streamrelay simulate` and `python -m streamrelay.testing`.


def test_every_config_field_has_a_command_line_option() -> None:
    actions = {action.dest: action for action in build_parser()._actions}
    for config_field in dataclasses.fields(SimulatorConfig):
        action = actions.get(config_field.name)
        assert action is not None, f"no option for SimulatorConfig.{config_field.name}"
        assert action.help, f"no help for {action.option_strings}"
        option = "--" + config_field.name.replace("_", "-").removesuffix("s")
        assert any(name.startswith(option) for name in action.option_strings), action


def test_command_line_options_make_the_config() -> None:
    parser = build_parser()
    assert config_from_args(parser.parse_args([])) == SimulatorConfig()
    args = parser.parse_args(
        [
            *("--tokens", "3", "--delay", "0.5", "--first-delay", "1", "--model", "m"),
            *("--seed", "7", "--fault", "crlf,split", "--fault", "mid_error", "--after", "2"),
            *("--stall", "0.25", "--status", "503", "--body", "html", "--message", "boom"),
            *("--error-type", "server_error", "--code", "500", "--retry-after", "none"),
            *("--text", "hello", "--piece", "a", "--piece", "b", "--chunk-size", "2"),
            *("--size", "10", "--tool-calls", "2", "--created", "now"),
            *("--reasoning-tokens", "5", "--reasoning-text", "hmm"),
        ]
    )
    assert config_from_args(args) == SimulatorConfig(
        tokens=3,
        delay=0.5,
        first_delay=1.0,
        model="m",
        seed=7,
        fault=["crlf", "split", "mid_error"],
        after=2,
        stall=0.25,
        status=503,
        body="html",
        message="boom",
        error_type="server_error",
        code=500,
        retry_after=None,
        text="hello",
        pieces=["a", "b"],
        chunk_size=2,
        size=10,
        tool_calls=2,
        created=None,
        reasoning_tokens=5,
        reasoning_text="hmm",
    )
    assert config_from_args(parser.parse_args(["--code", "rate_limit"])).code == "rate_limit"


@pytest.mark.parametrize(
    "argv", [["--fault", "nope"], ["--status", "700"], ["--delay", "-1"], ["--created", "x"]]
)
def test_command_line_rejects_bad_options(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    for main in (streamrelay.testing.cli.main, lambda a: streamrelay.cli.main(["simulate", *a])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_streamrelay_simulate_runs_the_same_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[tuple[str, int, SimulatorConfig | None, str]] = []

    def fake_serve(
        host: str, port: int, config: SimulatorConfig | None = None, *, log_level: str = "info"
    ) -> None:
        served.append((host, port, config, log_level))

    monkeypatch.setattr(streamrelay.testing.server, "serve", fake_serve)
    argv = ["--port", "9123", "--fault", "crlf", "--tokens", "3", "--log-level", "warning"]
    assert streamrelay.cli.main(["simulate", *argv]) == 0
    assert streamrelay.testing.cli.main(argv) == 0
    expected = ("127.0.0.1", 9123, SimulatorConfig(tokens=3, fault="crlf"), "warning")
    assert served == [expected, expected]
    banners = capsys.readouterr().err.split("streamrelay simulator on ")
    assert banners[1] == banners[2] and banners[1].startswith("http://127.0.0.1:9123/v1")

    _, simulate = streamrelay.cli._parser()
    options = [(a.option_strings, a.dest, a.help) for a in simulate._actions]
    assert options == [(a.option_strings, a.dest, a.help) for a in build_parser()._actions]
    assert simulate.epilog == build_parser().epilog


@contextlib.contextmanager
def command(*argv: str) -> Iterator[tuple[str, list[str]]]:
    """Runs ``python -m <argv>`` on a free port; yields its URL and, once it has
    stopped, its standard error as the list's only item."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    src = Path(streamrelay.testing.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", *argv, "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the command did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", stderr
    finally:
        process.terminate()
        stderr.append(process.communicate(timeout=10)[1])


@pytest.mark.parametrize(
    "program", [["streamrelay.testing"], ["streamrelay.cli", "simulate"]], ids=["-m", "simulate"]
)
def test_command_line(program: list[str]) -> None:
    options = ["--delay", "0", "--tokens", "2", "--fault", "mid_error", "--model", "cli-model"]
    with command(*program, *options) as (url, stderr):
        response = httpx.post(url + "/v1/chat/completions", json=request_body())
        models = httpx.get(url + "/v1/models").json()
        answer = httpx.post(url + "/v1/responses", json={"input": "Hi"}).json()
        text = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "stream": True}).text
    data = sse_data(response.content)
    assert data[-1].startswith('{"error"')
    assert len(data) == 3  # the role, one token (half of --tokens 2), the error
    assert [model["id"] for model in models["data"]] == ["cli-model", "sim-2", "sim-3"]
    assert "streamrelay simulator on http://127.0.0.1:" in stderr[0]
    assert "POST /v1/chat/completions fault=mid_error -> 200 finished" in stderr[0]
    assert answer["model"] == "cli-model" and answer["status"] == "completed"
    assert text.count("data: ") == 2 and '"error"' in text  # one token, then the error
    assert "POST /v1/responses fault=mid_error -> 200 finished" in stderr[0]
    assert "POST /v1/completions fault=mid_error -> 200 finished" in stderr[0]
