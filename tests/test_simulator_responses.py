"""The simulator's ``POST /v1/responses``, through a real server, read raw and by openai-python.

The raw SSE parser here is written from the WHATWG rules and shares nothing with
``streamrelay``; every event is also validated against openai-python's own types,
and the SDK's ``responses.create`` and ``responses.stream`` helpers read the streams
as they would read OpenAI's.
"""

from __future__ import annotations

import json
import re
import time
import typing
from typing import Any

import anyio
import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel

from streamrelay.testing import FAULTS, ROUTE_FAULTS, Simulator
from test_simulator import raw_post

EVENT_MODELS: dict[str, type[BaseModel]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
"""openai-python's model of each event type (its union is discriminated by ``type``)."""
TOOLS = [
    {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}},
    {"type": "function", "name": "fetch", "description": "Fetch.", "parameters": {}},
]
TEXT_SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def body_of(stream: bool = True, **simulator: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "sim-1", "input": "Hello", "stream": stream}
    if simulator:
        body["simulator"] = simulator
    return body


def post(client: httpx.Client, upstream: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(upstream + "/responses", json=body)


def sse_events(raw: bytes) -> list[tuple[str, str]]:
    """(event name, data) of each dispatched event, per the WHATWG rules."""
    text = raw.decode("utf-8").removeprefix("\ufeff")
    events: list[tuple[str, str]] = []
    name, data, has_data = "", [], False
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            if has_data:
                events.append((name or "message", "\n".join(data)))
            name, data, has_data = "", [], False
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
                has_data = True
    return events


def parsed(raw: bytes) -> list[dict[str, Any]]:
    """The events' payloads, checking each ``event:`` name against its ``type``."""
    out = []
    for name, data in sse_events(raw):
        payload = json.loads(data)
        assert name == payload["type"]
        out.append(payload)
    return out


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def joined(events: list[dict[str, Any]], kind: str = "response.output_text.delta") -> str:
    return "".join(event["delta"] for event in events if event["type"] == kind)


def check_sequence(events: list[dict[str, Any]]) -> None:
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    for event in events:
        EVENT_MODELS[event["type"]].model_validate(event)


# The default stream.


def test_stream_is_the_real_event_sequence(
    sim: Simulator, upstream: str, client: httpx.Client
) -> None:
    body = body_of(tokens=3)
    response = post(client, upstream, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert b"[DONE]" not in response.content
    assert response.content.startswith(b"event: response.created\ndata: {")
    events = parsed(response.content)
    check_sequence(events)
    assert types(events) == TEXT_SEQUENCE

    created, in_progress, added, part_added, *_ = events
    assert created["response"]["status"] == in_progress["response"]["status"] == "in_progress"
    assert created["response"]["output"] == [] and created["response"]["usage"] is None
    assert created["response"]["id"].startswith("resp_")
    item = added["item"]
    assert item == {
        "id": item["id"],
        "type": "message",
        "status": "in_progress",
        "content": [],
        "role": "assistant",
    }
    assert item["id"].startswith("msg_")
    assert part_added["part"] == {
        "type": "output_text",
        "annotations": [],
        "logprobs": [],
        "text": "",
    }
    deltas = [event for event in events if event["type"] == "response.output_text.delta"]
    assert all(
        (d["item_id"], d["output_index"], d["content_index"], d["logprobs"])
        == (item["id"], 0, 0, [])
        for d in deltas
    )
    text = joined(events)
    assert text == sim.expected_text(body) == " culpa et laborum"
    done, part_done, item_done, completed = events[-4:]
    assert done["text"] == text
    assert part_done["part"]["text"] == text
    assert item_done["item"] == {**item, "status": "completed", "content": [part_done["part"]]}
    final = completed["response"]
    assert final == sim.response(body)
    assert final["status"] == "completed"
    assert final["output"] == [item_done["item"]]
    assert final["usage"] == {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 4,
    }
    assert post(client, upstream, body).content == response.content  # deterministic
    assert sim.stats.wait(finished=2)
    assert [r.route for r in sim.requests] == ["/v1/responses"] * 2


def test_non_streaming_response(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    body = {**body_of(stream=False, tokens=5), "instructions": "Be brief.", "metadata": {"a": "b"}}
    response = post(client, upstream, body)
    assert response.headers["content-type"] == "application/json"
    whole = response.json()
    assert whole == sim.response(body)
    model = Response.model_validate(whole)
    assert model.output_text == sim.expected_text(body)
    assert (model.status, model.instructions, model.metadata) == (
        "completed",
        "Be brief.",
        {"a": "b"},
    )
    assert set(Response.model_fields) - set(whole) <= {
        name for name, field in Response.model_fields.items() if not field.is_required()
    }
    assert whole["object"] == "response" and whole["model"] == "sim-1"
    assert whole["usage"]["output_tokens"] == 5
    assert whole["completed_at"] == whole["created_at"]
    streamed = parsed(post(client, upstream, {**body, "stream": True}).content)
    assert joined(streamed) == model.output_text
    assert sim.stats.wait(finished=2)


def test_the_conversation_is_the_same_as_in_chat(sim: Simulator, upstream: str) -> None:
    chat = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    }
    text = sim.expected_text(chat)
    assert sim.expected_text({"instructions": "Be brief.", "input": "Hi"}) == text
    assert sim.expected_text({"input": chat["messages"]}) == text
    assert sim.expected_text({"input": "Hi"}) != text
    assert sim.response({"input": chat["messages"]})["output"][0]["content"][0]["text"] == text
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a b c"}]}
    ]
    assert sim.response({"input": items})["usage"]["input_tokens"] == 3


def test_bad_requests_are_400(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    for bad in (
        {"input": 3},
        {"input": "x", "instructions": ["no"]},
        {"input": "x", "max_output_tokens": 0},
        {"input": "x", "tools": {"type": "function"}},
        {"input": "x", "simulator": {"fault": "parts"}},
        {"input": "x", "simulator": {"fault": ["crlf", "no_done"]}},
        {"input": "x", "simulator": {"tokenz": 1}},
    ):
        response = post(client, upstream, bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["message"]
        with pytest.raises(ValueError):
            sim.response(bad)
    assert client.post(upstream + "/responses", content=b"[").status_code == 400
    assert "parts" in post(client, upstream, {"simulator": {"fault": "parts"}}).text
    assert sim.stats.started == 0


def test_defaults_a_route_cannot_honour_are_left_out(
    sim: Simulator, upstream: str, client: httpx.Client
) -> None:
    defaults = sim.config
    sim.config = defaults.replace(fault=["parts", "azure", "no_done", "crlf"], tokens=2)
    try:
        raw = post(client, upstream, body_of()).content
    finally:
        sim.config = defaults
    assert types(parsed(raw))[-1] == "response.completed"
    assert raw.count(b"\r\n") == raw.count(b"\n")
    assert sim.requests[-1].faults == ("crlf",)
    assert "failed" in ROUTE_FAULTS["responses"]
    assert ROUTE_FAULTS["responses"] == set(FAULTS) - {
        "mid_error_legacy",
        "no_done",
        "azure",
        "parts",
        "tool_index_collision",
    }


# openai-python reads it as it reads OpenAI.


def sdk(upstream: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream, api_key="unused", max_retries=0)


def test_openai_sdk_create_and_stream(sim: Simulator, upstream: str) -> None:
    client = sdk(upstream)
    body = body_of(stream=False, tokens=6)
    response = client.responses.create(
        model="sim-1", input="Hello", extra_body={"simulator": {"tokens": 6}}
    )
    assert response.output_text == sim.expected_text(body)
    sent = sim.requests[-1].json()
    assert sent == {"model": "sim-1", "input": "Hello", "simulator": {"tokens": 6}}
    assert response == Response.model_validate(sim.response(sent))

    stream = client.responses.create(
        model="sim-1", input="Hello", stream=True, extra_body={"simulator": {"tokens": 6}}
    )
    events = list(stream)
    assert [event.type for event in events][:2] == ["response.created", "response.in_progress"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == response.output_text
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == text

    with client.responses.stream(
        model="sim-1", input="Hello", extra_body={"simulator": {"tokens": 6}}
    ) as helper:
        deltas = [e.delta for e in helper if e.type == "response.output_text.delta"]
        final = helper.get_final_response()
    assert "".join(deltas) == final.output_text == text
    assert final.id == events[-1].response.id
    assert sim.stats.wait(finished=3)


def test_openai_sdk_async_stream(sim: Simulator, upstream: str) -> None:
    async def main() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=upstream, api_key="x", max_retries=0) as client:
            async with client.responses.stream(
                model="sim-1",
                input="Hello",
                extra_body={"simulator": {"fault": ["reasoning", "split"], "tokens": 4}},
            ) as stream:
                text = "".join(
                    [e.delta async for e in stream if e.type == "response.output_text.delta"]
                )
                final = await stream.get_final_response()
            return text, final.output_text

    text, final = anyio.run(main)
    assert text == final == sim.expected_text(body_of(tokens=4))


def test_openai_sdk_tools_and_reasoning(sim: Simulator, upstream: str) -> None:
    client = sdk(upstream)
    simulator = {"fault": ["reasoning", "tools"], "tool_calls": 2, "reasoning_tokens": 4}
    with client.responses.stream(
        model="sim-1",
        input="Hello",
        tools=TOOLS,
        extra_body={"simulator": simulator},  # type: ignore[arg-type]
    ) as stream:
        summary = "".join(
            e.delta for e in stream if e.type == "response.reasoning_summary_text.delta"
        )
        final = stream.get_final_response()
    body = {**body_of(**simulator), "tools": TOOLS}
    assert [item.type for item in final.output] == ["reasoning", "function_call", "function_call"]
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert summary == reasoning.summary[0].text == sim.expected_reasoning(body)
    calls = [
        {"id": item.call_id, "name": item.name, "arguments": item.arguments}
        for item in final.output
        if item.type == "function_call"
    ]
    assert calls == sim.expected_tool_calls(body)
    assert [call["name"] for call in calls] == ["lookup", "fetch"]
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 4
    assert [tool.name for tool in final.tools if tool.type == "function"] == ["lookup", "fetch"]


# Payload shapes.


def test_reasoning_item_comes_first(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    body = body_of(fault="reasoning", tokens=3, reasoning_tokens=3)
    events = parsed(post(client, upstream, body).content)
    check_sequence(events)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * 3,
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        *TEXT_SEQUENCE[2:],
    ]
    reasoning = events[2]["item"]
    assert reasoning == {"id": reasoning["id"], "type": "reasoning", "summary": []}
    assert reasoning["id"].startswith("rs_")
    summary = joined(events, "response.reasoning_summary_text.delta")
    assert summary == sim.expected_reasoning(body)
    assert events[9]["item"]["summary"] == [{"type": "summary_text", "text": summary}]
    message = events[10]
    assert message["output_index"] == 1
    final = events[-1]["response"]
    assert final == sim.response(body)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 3
    assert final["usage"]["output_tokens"] == 6


def test_tool_calls_are_function_call_items(
    sim: Simulator, upstream: str, client: httpx.Client
) -> None:
    body = {**body_of(fault="tools", tool_calls=2, chunk_size=16), "tools": TOOLS}
    events = parsed(post(client, upstream, body).content)
    check_sequence(events)
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["item"]["type"] for e in added] == ["function_call"] * 2
    first = added[0]["item"]
    assert first["status"] == "in_progress" and first["arguments"] == ""
    assert first["id"].startswith("fc_") and first["call_id"].startswith("call_")
    for index, call in enumerate(sim.expected_tool_calls(body)):
        deltas = [
            e["delta"]
            for e in events
            if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index
        ]
        assert "".join(deltas) == call["arguments"]
        assert json.loads(call["arguments"])["unit"] == "celsius"
        (done,) = [
            e
            for e in events
            if e["type"] == "response.function_call_arguments.done" and e["output_index"] == index
        ]
        assert done["arguments"] == call["arguments"]
    assert "response.content_part.added" not in types(events)
    final = events[-1]["response"]
    assert final == sim.response(body)
    assert [(i["name"], i["status"]) for i in final["output"]] == [
        ("lookup", "completed"),
        ("fetch", "completed"),
    ]
    assert final["tools"][0] == {
        "type": "function",
        "description": None,
        "parameters": TOOLS[0]["parameters"],
        "strict": True,
        "name": "lookup",
    }
    chat_style = [{"type": "function", "function": {"name": "legacy", "parameters": {}}}]
    assert sim.expected_tool_calls({**body, "tools": chat_style})[0]["name"] == "legacy"
    assert (
        sim.expected_tool_calls({"input": "x", "simulator": {"fault": "tools"}})[0]["name"]
        == "get_weather"
    )


def test_refusal_part(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    body = body_of(fault="refusal")
    events = parsed(post(client, upstream, body).content)
    check_sequence(events)
    assert events[3]["part"] == {"type": "refusal", "refusal": ""}
    refusal = joined(events, "response.refusal.delta")
    assert refusal == "I'm sorry, but I can't help with that."
    (done,) = [e for e in events if e["type"] == "response.refusal.done"]
    assert done["refusal"] == refusal
    final = events[-1]["response"]
    assert final["output"][0]["content"] == [{"type": "refusal", "refusal": refusal}]
    assert final == sim.response(body)
    assert sim.expected_text(body) == ""


def test_max_output_tokens_makes_it_incomplete(
    sim: Simulator, upstream: str, client: httpx.Client
) -> None:
    body = {**body_of(tokens=10), "max_output_tokens": 4}
    events = parsed(post(client, upstream, body).content)
    check_sequence(events)
    assert types(events)[-1] == "response.incomplete"
    assert "response.completed" not in types(events)
    final = events[-1]["response"]
    assert final == sim.response(body)
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete"
    assert final["max_output_tokens"] == 4
    assert len(joined(events).split()) == 4 == final["usage"]["output_tokens"]
    whole = post(client, upstream, {**body, "stream": False}).json()
    assert whole["status"] == "incomplete"
    # Cut inside the reasoning: no message at all, as a reasoning model does.
    cut = {**body_of(fault="reasoning", reasoning_tokens=5), "max_output_tokens": 2}
    assert [i["type"] for i in sim.response(cut)["output"]] == ["reasoning"]
    with (
        sdk(upstream).responses.stream(
            model="sim-1",
            input="Hello",
            max_output_tokens=4,
            extra_body={"simulator": {"tokens": 10}},
        ) as stream,
        pytest.raises(RuntimeError, match=r"response\.completed"),
    ):
        stream.get_final_response()


def test_an_empty_answer_still_has_its_message(
    sim: Simulator, upstream: str, client: httpx.Client
) -> None:
    body = body_of(tokens=0)
    events = parsed(post(client, upstream, body).content)
    check_sequence(events)
    assert types(events) == [name for name in TEXT_SEQUENCE if not name.endswith(".delta")]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""
    assert events[-1]["response"] == sim.response(body)


def test_timestamps(upstream: str, client: httpx.Client) -> None:
    before = time.time_ns()
    events = parsed(post(client, upstream, body_of(fault="timestamps", tokens=4)).content)
    stamps = [int(m) for m in re.findall(r"t=(\d+) ", joined(events))]
    assert len(stamps) == 4 and stamps == sorted(stamps) and before <= stamps[0]
    # The done events and the final response carry what was sent.
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == joined(events)


def test_big_line(upstream: str, client: httpx.Client) -> None:
    raw = post(client, upstream, body_of(fault="big_line", tokens=2, after=1, size=100_000)).content
    events = parsed(raw)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert [len(d) for d in deltas][1] == 100_000
    assert len(deltas) == 3


# Faults before and in the middle of the stream.


def test_status_fault(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    response = post(client, upstream, body_of(fault="status", status=503, retry_after=2))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["type"] == "server_error"
    with pytest.raises(openai.RateLimitError):
        sdk(upstream).responses.create(
            model="sim-1", input="x", extra_body={"simulator": {"fault": "status"}}
        )


def test_stall_headers(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    started = time.monotonic()
    events = parsed(
        post(client, upstream, body_of(fault="stall_headers", stall=0.3, tokens=1)).content
    )
    assert time.monotonic() - started >= 0.25
    assert types(events)[-1] == "response.completed"


def test_mid_error_is_an_error_event(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    body = body_of(fault="mid_error", tokens=6, after=2, message="boom", code="overloaded")
    raw = post(client, upstream, body).content
    events = parsed(raw)
    check_sequence(events)
    assert types(events)[-1] == "error"
    assert events[-1] == {
        "type": "error",
        "sequence_number": len(events) - 1,
        "code": "overloaded",
        "message": "boom",
        "param": None,
    }
    assert raw.endswith(b"\n\n") and b"event: error\n" in raw
    assert joined(events).count(" ") == 2
    assert "response.completed" not in types(events)
    with sdk(upstream).responses.stream(
        model="sim-1", input="x", extra_body={"simulator": body["simulator"]}
    ) as stream:
        seen = [e.type for e in stream]
        with pytest.raises(RuntimeError):
            stream.get_final_response()
    assert seen[-1] == "error"
    assert sim.stats.wait(finished=2)


def test_failed_is_response_failed(sim: Simulator, upstream: str, client: httpx.Client) -> None:
    body = body_of(fault="failed", tokens=4, after=1)
    events = parsed(post(client, upstream, body).content)
    check_sequence(events)
    assert types(events)[-1] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "server_error",
        "message": "The server had an error while processing your request.",
    }
    assert failed["id"] == events[0]["response"]["id"]
    assert len(joined(events).split()) == 1
    # Without streaming: the failed response.
    whole = post(client, upstream, {**body, "stream": False}).json()
    assert whole["status"] == "failed" and whole["error"]["code"] == "server_error"
    assert whole == sim.response({**body, "stream": False})
    stream = sdk(upstream).responses.create(
        model="sim-1", input="x", stream=True, extra_body={"simulator": {"fault": "failed"}}
    )
    assert [e.type for e in stream][-1] == "response.failed"


def test_truncate_ends_without_completed(upstream: str, client: httpx.Client) -> None:
    raw = post(client, upstream, body_of(fault="truncate", tokens=6, after=4)).content
    events = parsed(raw)
    assert types(events)[-1] == "response.output_text.delta"
    assert len(joined(events).split()) == 4
    at_end = parsed(post(client, upstream, body_of(fault="truncate", tokens=2, after=2)).content)
    assert types(at_end)[-1] == "response.output_item.done"


def test_abrupt_close(sim: Simulator, upstream: str) -> None:
    raw = raw_post(upstream, body_of(fault="abrupt_close", tokens=6, after=3), "/responses")
    assert not raw.terminated
    events = parsed(raw.body)
    assert types(events)[-1] == "response.output_text.delta"
    assert len(joined(events).split()) == 3
    with pytest.raises(openai.APIConnectionError):
        list(
            sdk(upstream).responses.create(
                model="sim-1",
                input="x",
                stream=True,
                extra_body={"simulator": {"fault": "abrupt_close"}},
            )
        )
    assert sim.stats.wait(finished=2)
    assert [r.outcome for r in sim.requests] == ["aborted", "aborted"]


def test_stall_then_continue_and_disconnect_is_cancelled(
    sim: Simulator, upstream: str, client: httpx.Client
) -> None:
    started = time.monotonic()
    events = parsed(post(client, upstream, body_of(fault="stall", stall=0.3, tokens=3)).content)
    assert time.monotonic() - started >= 0.25
    assert types(events) == TEXT_SEQUENCE
    sim.reset()
    body = body_of(fault="stall", tokens=6, after=2)
    with client.stream("POST", upstream + "/responses", json=body) as response:
        received, seen = response.iter_bytes(), b""
        while seen.count(b"event: response.output_text.delta") < 2:
            seen += next(received)
        time.sleep(0.05)
        assert sim.stats.active == 1
    assert sim.stats.wait(cancelled=1, timeout=2)
    assert sim.requests[-1].outcome == "cancelled"


def test_invalid_utf8_and_non_json(upstream: str, client: httpx.Client) -> None:
    raw = post(client, upstream, body_of(fault="invalid_utf8", tokens=4, after=2)).content
    lines = raw.split(b"\n")
    (bad,) = [index for index, line in enumerate(lines) if b"\xff" in line]
    assert lines[bad - 1] == b"event: response.output_text.delta"
    assert lines[bad].startswith(b"data: {")
    clean = raw.replace(lines[bad - 1] + b"\n" + lines[bad] + b"\n\n", b"")
    assert types(parsed(clean))[-1] == "response.completed"

    raw = post(client, upstream, body_of(fault="non_json", tokens=4)).content
    events = sse_events(raw)
    assert ("message", "hello") in events
    assert events[-1][0] == "response.completed"


def test_pacing(upstream: str, client: httpx.Client) -> None:
    started = time.monotonic()
    post(client, upstream, body_of(tokens=6, delay=0.02, first_delay=0.1))
    assert time.monotonic() - started >= 0.1 + 5 * 0.02
    with client.stream(
        "POST", upstream + "/responses", json=body_of(tokens=3, delay=0.3)
    ) as response:
        received = response.iter_bytes()
        first = next(received)
        assert first.startswith(b"event: response.created")  # sent before the first pause
        opened = time.monotonic()
        for _ in received:
            pass
    assert time.monotonic() - opened >= 0.5


# Framing.


def test_framing_faults(upstream: str, client: httpx.Client) -> None:
    clean = parsed(post(client, upstream, body_of(tokens=3)).content)

    raw = post(client, upstream, body_of(fault="crlf", tokens=3)).content
    assert raw.startswith(b"event: response.created\r\ndata: ")
    assert raw.count(b"\n") == raw.count(b"\r\n")
    assert parsed(raw) == clean

    raw = post(client, upstream, body_of(fault="cr", tokens=3)).content
    assert b"\n" not in raw
    assert parsed(raw) == clean

    raw = post(client, upstream, body_of(fault=["bom", "nospace"], tokens=3)).content
    assert raw.startswith(b"\xef\xbb\xbfevent:response.created\ndata:{")
    assert parsed(raw) == clean

    raw = post(client, upstream, body_of(fault="comments", tokens=3)).content
    assert raw.count(b": keep-alive\n\nevent: ") == len(clean)
    assert parsed(raw) == clean

    raw = post(client, upstream, body_of(fault="multiline", tokens=3)).content
    assert raw.split(b"\n\n")[0].count(b"\ndata: ") > 3
    assert parsed(raw) == clean

    split = raw_post(upstream, body_of(fault=["crlf", "split"], tokens=3), "/responses")
    assert split.terminated and set(split.chunk_sizes) == {1}
    assert parsed(split.body) == clean


# The OpenAI Agents SDK reads it too.


def test_openai_agents_sdk(sim: Simulator, upstream: str) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # no trace export to OpenAI

    @agents.function_tool
    def lookup(location: str, unit: str) -> str:
        """Look the weather up."""
        return "sunny"

    async def main() -> tuple[str, str, str]:
        async with openai.AsyncOpenAI(base_url=upstream, api_key="x", max_retries=0) as client:
            model = agents.OpenAIResponsesModel("sim-1", client)
            settings = agents.ModelSettings(extra_body={"simulator": {"fault": "reasoning"}})
            agent = agents.Agent(
                name="a", instructions="Be brief.", model=model, model_settings=settings
            )
            streamed = agents.Runner.run_streamed(agent, "Hi")
            deltas = [
                event.data.delta
                async for event in streamed.stream_events()
                if event.type == "raw_response_event"
                and event.data.type == "response.output_text.delta"
            ]
            assert streamed.final_output == "".join(deltas)
            whole = await agents.Runner.run(agent, "Hi")
            tools = agents.ModelSettings(extra_body={"simulator": {"fault": "tools"}})
            caller = agents.Agent(name="t", model=model, tools=[lookup], model_settings=tools)
            # The tool is called, then its result gets a text answer: the loop ends.
            looped = await agents.Runner.run(caller, "Weather?", max_turns=3)
            assert looped.final_output == sim.expected_text(sim.requests[-1].json())
            return streamed.final_output, whole.final_output, "".join(deltas)

    streamed, whole, deltas = anyio.run(main)
    body = {"instructions": "Be brief.", "input": "Hi", "simulator": {"fault": "reasoning"}}
    assert streamed == whole == deltas == sim.expected_text(body)
    # The second turn sent back the call it parsed, and the tool's output.
    first, second = (r.json() for r in sim.requests[-2:])
    (call,) = sim.expected_tool_calls(first)
    sent = {item.get("type"): item for item in second["input"]}
    assert (sent["function_call"]["call_id"], sent["function_call"]["name"]) == (
        call["id"],
        call["name"],
    )
    assert sent["function_call"]["arguments"] == call["arguments"]
    assert sent["function_call_output"] == {
        "call_id": call["id"],
        "output": "sunny",
        "type": "function_call_output",
    }
