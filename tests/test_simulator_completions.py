"""The simulator's legacy ``POST /v1/completions``, through a real server, read raw and by
openai-python."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion

from streamrelay.testing import FAULTS, ROUTE_FAULTS, Simulator
from test_simulator import chunks, raw_post, sse_data


def body_of(stream: bool = True, **simulator: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "sim-1", "prompt": "Once upon a time", "stream": stream}
    if simulator:
        body["simulator"] = simulator
    return body


def post(client: httpx.Client, upstream: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(upstream + "/completions", json=body)


def texts(payloads: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        choice["text"]
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


def test_stream_is_text_completion_chunks(
    sim: Simulator, upstream: str, client: httpx.Client
) -> None:
    body = body_of(tokens=4)
    response = post(client, upstream, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    payloads = chunks(response.content)  # ends with data: [DONE]
    assert b"event:" not in response.content
    assert len(payloads) == 4 + 1  # no role chunk: the tokens, then the finish chunk
    first = payloads[0]
    assert first["object"] == "text_completion"
    assert first["id"].startswith("cmpl-")
    assert list(first["choices"][0]) == ["text", "index", "logprobs", "finish_reason"]
    assert all(p["id"] == first["id"] and p["model"] == "sim-1" for p in payloads)
    assert texts(payloads) == sim.expected_text(body) != ""
    assert payloads[-1]["choices"] == [
        {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
    ]
    assert all("usage" not in p for p in payloads)
    assert post(client, upstream, body).content == response.content
    assert sim.stats.wait(finished=2)


def test_non_streaming(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    body = body_of(stream=False, tokens=5)
    whole = post(client, upstream, body).json()
    assert whole == sim.text_completion(body)
    assert whole["object"] == "text_completion"
    assert whole["choices"][0]["text"] == sim.expected_text(body)
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    Completion.model_validate(whole)
    streamed = texts(chunks(post(client, upstream, {**body, "stream": True}).content))
    assert streamed == whole["choices"][0]["text"]


def test_n_usage_and_max_tokens(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    body = {**body_of(tokens=3), "n": 2, "stream_options": {"include_usage": True}}
    payloads = chunks(post(client, upstream, body).content)
    assert [p["choices"][0]["index"] for p in payloads[:-1]] == [0, 1] * 4
    assert finish_reasons(payloads) == {0: "stop", 1: "stop"}
    assert texts(payloads, 1) == sim.expected_text(body, 1) != texts(payloads, 0)
    *before, last = payloads
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 6
    assert all(p["usage"] is None for p in before)
    cut = {**body_of(tokens=10), "max_tokens": 3}
    payloads = chunks(post(client, upstream, cut).content)
    assert finish_reasons(payloads) == {0: "length"}
    assert len(texts(payloads).split()) == 3
    assert sim.text_completion(cut)["choices"][0]["finish_reason"] == "length"


def test_prompts_of_every_form(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    assert sim.text_completion({"prompt": [1, 2, 3]})["usage"]["prompt_tokens"] == 3
    assert sim.text_completion({"prompt": [[1, 2], [3]]})["usage"]["prompt_tokens"] == 3
    assert sim.text_completion({"prompt": ["a b", "c"]})["usage"]["prompt_tokens"] == 3
    assert sim.expected_text({"prompt": "x"}) != sim.expected_text({"prompt": "y"})
    for bad in (
        {"prompt": {"text": "x"}},
        {"prompt": [True]},
        {"prompt": "x", "n": 0},
        {"prompt": "x", "max_tokens": "3"},
        {"prompt": "x", "simulator": {"fault": "tools"}},
        {"prompt": "x", "simulator": {"fault": ["crlf", "reasoning"]}},
    ):
        response = post(client, upstream, bad)
        assert response.status_code == 400, bad
        with pytest.raises(ValueError):
            sim.text_completion(bad)
    assert sim.stats.started == 0
    assert ROUTE_FAULTS["completions"] == set(FAULTS) - {
        "failed",
        "tools",
        "tool_index_collision",
        "refusal",
        "reasoning",
        "parts",
    }


def test_openai_sdk(sim: Simulator, upstream: str) -> None:
    client = openai.OpenAI(base_url=upstream, api_key="unused", max_retries=0)
    whole = client.completions.create(model="sim-1", prompt="Once upon a time", max_tokens=7)
    assert whole == Completion.model_validate(sim.text_completion(sim.requests[-1].json()))
    assert whole.choices[0].finish_reason == "length"
    stream = client.completions.create(
        model="sim-1",
        prompt="Once upon a time",
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"simulator": {"fault": ["crlf", "split"], "tokens": 4}},
    )
    pieces = list(stream)
    text = "".join(c.choices[0].text for c in pieces if c.choices)
    assert text == sim.expected_text(body_of(tokens=4))
    assert pieces[-1].usage is not None and pieces[-1].usage.completion_tokens == 4
    with pytest.raises(openai.APIError, match="boom"):
        list(
            client.completions.create(
                model="sim-1",
                prompt="x",
                stream=True,
                extra_body={"simulator": {"fault": "mid_error", "message": "boom"}},
            )
        )


def test_status_and_stall_headers(upstream: str, client: httpx.Client) -> None:
    response = post(client, upstream, body_of(fault="status", status=401))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    started = time.monotonic()
    payloads = chunks(
        post(client, upstream, body_of(fault="stall_headers", stall=0.2, tokens=1)).content
    )
    assert time.monotonic() - started >= 0.15 and len(payloads) == 2


def test_mid_stream_faults(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    data = sse_data(post(client, upstream, body_of(fault="mid_error", tokens=4, after=2)).content)
    assert json.loads(data[-1])["error"]["type"] == "server_error"
    assert len(data) == 3

    data = sse_data(post(client, upstream, body_of(fault="mid_error_legacy", after=0)).content)
    assert json.loads(data[-1])["object"] == "error" and len(data) == 1

    data = sse_data(post(client, upstream, body_of(fault="truncate", tokens=4, after=3)).content)
    assert len(data) == 3 and finish_reasons([json.loads(d) for d in data]) == {}

    data = sse_data(post(client, upstream, body_of(fault="no_done", tokens=2)).content)
    assert data[-1] != "[DONE]" and json.loads(data[-1])["choices"][0]["finish_reason"] == "stop"

    started = time.monotonic()
    payloads = chunks(post(client, upstream, body_of(fault="stall", stall=0.2, tokens=2)).content)
    assert time.monotonic() - started >= 0.15 and len(payloads) == 3

    raw = raw_post(upstream, body_of(fault="abrupt_close", tokens=4, after=2), "/completions")
    assert not raw.terminated and len(sse_data(raw.body)) == 2
    assert sim.requests[-1].outcome == "aborted"

    raw_bytes = post(client, upstream, body_of(fault="invalid_utf8", tokens=2)).content
    assert any(b"\xff" in line for line in raw_bytes.split(b"\n"))
    data = sse_data(post(client, upstream, body_of(fault="non_json", tokens=2)).content)
    assert "hello" in data and data[-1] == "[DONE]"


def test_disconnect_is_cancelled(sim: Simulator, upstream: str) -> None:
    with httpx.Client() as client:
        body = body_of(fault="stall", tokens=4, after=1)
        with client.stream("POST", upstream + "/completions", json=body) as response:
            next(response.iter_bytes())
    assert sim.stats.wait(cancelled=1, timeout=2)


def test_payload_and_framing_faults(upstream: str, client: httpx.Client) -> None:
    clean = chunks(post(client, upstream, body_of(tokens=3)).content)
    payloads = chunks(post(client, upstream, body_of(fault="azure", tokens=3)).content)
    assert payloads[0]["prompt_filter_results"] and payloads[0]["choices"] == []
    assert payloads[1]["choices"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert texts(payloads) == texts(clean)

    payloads = chunks(post(client, upstream, body_of(fault="timestamps", tokens=3)).content)
    assert texts(payloads).count("t=") == 3

    payloads = chunks(
        post(client, upstream, body_of(fault="big_line", size=5000, tokens=2)).content
    )
    assert len(payloads[1]["choices"][0]["text"]) == 5000

    for faults in (["crlf"], ["cr"], ["bom", "nospace"], ["comments"], ["multiline"]):
        raw = post(client, upstream, body_of(fault=faults, tokens=3)).content
        assert chunks(raw) == clean, faults
    raw = raw_post(upstream, body_of(fault=["split"], tokens=3), "/completions")
    assert raw.terminated and set(raw.chunk_sizes) == {1}
    assert chunks(raw.body) == clean
