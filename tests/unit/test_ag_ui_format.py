"""The ``ag-ui`` format: every event it writes is a valid AG-UI 1.0 event, in a valid run.

Each emitted ``data:`` payload is parsed with the ``ag-ui-protocol`` package's own event
union (``ag_ui.core.Event``) and must carry no key that the model does not define (the
models keep unknown keys, so a misspelt optional field would otherwise pass), and must
dump back to exactly what was sent. The run itself is checked the way ``@ag-ui/client``'s
verifier checks it: ``RUN_STARTED`` first, one terminal event last, nothing streamed into
a message or call that is not open, and (stricter than the client) everything opened is
closed before the end, also on failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from ag_ui.core import Event as AGUIEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from splits import every_split
from streamrelay.events import (
    Delta,
    Done,
    Error,
    Event,
    Finish,
    Reasoning,
    Refusal,
    Start,
    ToolCall,
    Usage,
)
from streamrelay.formats import ACCEPT_TYPES, FORMATS, AGUIEncoder, encoder_for
from streamrelay.transcoder import Transcoder

EVENTS: TypeAdapter[Any] = TypeAdapter(AGUIEvent)


# --- helpers ---------------------------------------------------------------------------------


def payloads(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, as ``@ag-ui/client``'s parser reads them
    (blocks split at blank lines, comment lines ignored)."""
    text = body.decode("utf-8")
    assert "\r" not in text
    out = []
    for block in text.split("\n\n"):
        data = [
            line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")
        ]
        for line in block.split("\n"):
            assert line == "" or line.startswith(("data: ", ": ")), f"unexpected line {line!r}"
        if data:
            assert len(data) == 1, "one data line per event"
            out.append("\n".join(data))
    return out


def no_extras(model: Any, where: str) -> None:
    """No key the ag-ui-protocol model does not define, at any depth."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{where}: unknown keys {sorted(model.model_extra)}"
        for name in type(model).model_fields:
            no_extras(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            no_extras(item, f"{where}[{i}]")


def validate(obj: dict[str, Any]) -> None:
    """``obj`` is exactly an event of the ag-ui-protocol package (raises if not)."""
    model = EVENTS.validate_python(obj)
    no_extras(model, obj.get("type", "?"))
    assert model.model_dump(mode="json", by_alias=True) == obj


def check_run(events: Sequence[dict[str, Any]]) -> None:
    """The run rules of ``@ag-ui/client``'s verifier, plus: everything opened is closed."""
    assert events, "no events"
    assert events[0]["type"] == "RUN_STARTED", events[0]
    assert events[-1]["type"] in ("RUN_FINISHED", "RUN_ERROR"), events[-1]
    text: set[str] = set()
    spans: set[str] = set()
    reasoning: set[str] = set()
    calls: set[str] = set()
    seen_messages: set[str] = set()
    seen_calls: set[str] = set()
    for event in events[1:-1]:
        kind = event["type"]
        assert not kind.startswith("RUN_"), f"{kind} inside the run"
        if "delta" in event:
            assert event["delta"], f"{kind} with an empty delta"
        if kind == "TEXT_MESSAGE_START":
            assert event["messageId"] not in text and event["messageId"] not in seen_messages
            text.add(event["messageId"])
            seen_messages.add(event["messageId"])
        elif kind in ("TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END"):
            assert event["messageId"] in text, f"{kind} for a message not open"
            if kind == "TEXT_MESSAGE_END":
                text.remove(event["messageId"])
        elif kind == "REASONING_START":
            assert event["messageId"] not in seen_messages
            spans.add(event["messageId"])
            seen_messages.add(event["messageId"])
        elif kind == "REASONING_MESSAGE_START":
            assert event["messageId"] in spans and event["messageId"] not in reasoning
            reasoning.add(event["messageId"])
        elif kind in ("REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_END"):
            assert event["messageId"] in reasoning, f"{kind} for a message not open"
            if kind == "REASONING_MESSAGE_END":
                reasoning.remove(event["messageId"])
        elif kind == "REASONING_END":
            assert event["messageId"] in spans and event["messageId"] not in reasoning
            spans.remove(event["messageId"])
        elif kind == "TOOL_CALL_START":
            assert event["toolCallId"] not in seen_calls, "a tool call id used twice"
            assert event["parentMessageId"] in seen_messages, "a parent nothing opened"
            calls.add(event["toolCallId"])
            seen_calls.add(event["toolCallId"])
        elif kind in ("TOOL_CALL_ARGS", "TOOL_CALL_END"):
            assert event["toolCallId"] in calls, f"{kind} for a call not open"
            if kind == "TOOL_CALL_END":
                calls.remove(event["toolCallId"])
        else:
            pytest.fail(f"unexpected event {kind}")
    assert not (text or spans or reasoning or calls), "left open at the end of the run"


def run(
    *chunks: Sequence[Event],
    bind: tuple[str, ...] | None = None,
    now: float = 1_700_000_000.0,
    check: bool = True,
) -> list[dict[str, Any]]:
    """Encode ``chunks`` (one ``encode`` call each) and return the validated events."""
    encoder = AGUIEncoder(now=now)
    if bind is not None:
        encoder.bind_run(*bind)
    body = b"".join(encoder.encode(chunk, None) for chunk in chunks)
    events = [json.loads(p) for p in payloads(body)]
    for event in events:
        validate(event)
    if check:
        check_run(events)
    return events


def types(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def joined(events: Iterable[dict[str, Any]], kind: str, key: str | None = None) -> str:
    return "".join(
        e["delta"]
        for e in events
        if e["type"] == kind and (key is None or key in (e.get("messageId"), e.get("toolCallId")))
    )


# --- the registry ----------------------------------------------------------------------------


def test_registered_by_name_only() -> None:
    cls = FORMATS["ag-ui"]
    assert cls is AGUIEncoder
    assert cls.media_type == "text/event-stream"
    assert cls.accept == ()
    assert "ag-ui" not in ACCEPT_TYPES.values()
    assert cls.headers == ()
    assert cls.aborts_on_error is False
    assert cls.wants_raw is False
    assert isinstance(encoder_for("ag-ui", now=0.0), AGUIEncoder)


def test_preamble_and_heartbeat_are_comment_lines_without_a_blank_line() -> None:
    encoder = AGUIEncoder(now=0.0)
    assert encoder.preamble() == b": stream open\n"
    assert encoder.heartbeat() == b": ping\n"
    body = (
        encoder.preamble()
        + encoder.encode([Start("c1", "m")], None)
        + encoder.heartbeat()
        + encoder.heartbeat()
        + encoder.encode([Delta(0, "Hi"), Finish(0, "stop"), Done()], None)
        + encoder.heartbeat()
    )
    # no empty event anywhere: every block separated by a blank line has a data line
    blocks = [b for b in body.decode().split("\n\n") if b]
    assert all("data: " in b for b in blocks[:-1]) and blocks[-1] == ": ping\n"
    assert types(json.loads(p) for p in payloads(body)) == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]


# --- text ------------------------------------------------------------------------------------


def test_text_run_exact_events() -> None:
    events = run(
        [Start("chatcmpl-9", "gpt-x")],
        [Delta(0, "Hel")],
        [Delta(0, "lo")],
        [Finish(0, "stop")],
        [Usage(3, 2, 5)],
        [Done()],
        bind=("thread-1", "run-1"),
    )
    assert events == [
        {"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-1", "protocolVersion": "1.0"},
        {"type": "TEXT_MESSAGE_START", "messageId": "run-1-1", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "run-1-1", "delta": "Hel"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "run-1-1", "delta": "lo"},
        {"type": "TEXT_MESSAGE_END", "messageId": "run-1-1"},
        {
            "type": "RUN_FINISHED",
            "threadId": "thread-1",
            "runId": "run-1",
            "usage": [{"model": "gpt-x", "inputTokens": 3, "outputTokens": 2, "totalTokens": 5}],
        },
    ]


def test_ids_default_to_the_upstream_id_then_to_the_clock() -> None:
    events = run([Start("chatcmpl-7", "m"), Delta(0, "x"), Done()])
    assert events[0]["threadId"] == events[0]["runId"] == events[-1]["runId"] == "chatcmpl-7"
    assert events[1]["messageId"] == "chatcmpl-7-1"
    events = run([Start("", ""), Delta(0, "x"), Done()], now=1234.5678)
    assert events[0]["runId"] == "run-1234567"
    assert events[-1]["threadId"] == "run-1234567"


def test_bind_run_must_come_first() -> None:
    encoder = AGUIEncoder(now=0.0)
    encoder.encode([Start("c", "m")], None)
    with pytest.raises(RuntimeError):
        encoder.bind_run("t", "r")


def test_usage_details_become_token_usage_parts() -> None:
    usage = Usage(
        10,
        7,
        17,
        prompt_tokens_details={"cached_tokens": 4},
        completion_tokens_details={"reasoning_tokens": 3, "audio_tokens": 0},
    )
    events = run([Start("c", "m"), Delta(0, "x"), Finish(0, "stop"), usage, Done()])
    assert events[-1]["usage"] == [
        {
            "model": "m",
            "inputTokens": 10,
            "outputTokens": 7,
            "totalTokens": 17,
            "reasoningTokens": 3,
            "cachedInputTokens": 4,
        }
    ]
    bad = Usage(-1, 2, 1, completion_tokens_details={"reasoning_tokens": "many"})
    assert run([Start("c", ""), bad, Done()])[-1]["usage"] == [
        {"outputTokens": 2, "totalTokens": 1}
    ]


def test_refusal_is_the_answer_text() -> None:
    events = run([Start("c", "m"), Refusal(0, "I can't"), Refusal(0, " help."), Done()])
    assert joined(events, "TEXT_MESSAGE_CONTENT") == "I can't help."


def test_only_choice_zero_and_no_empty_deltas() -> None:
    events = run(
        [Start("c", "m"), Delta(0, ""), Delta(1, "other"), Reasoning(1, "r"), Reasoning(0, "")],
        [ToolCall(1, 0, "{}", id="x", name="f"), Delta(0, "mine"), Finish(1, "stop")],
        [Delta(0, "!"), Finish(0, "stop"), Done()],
    )
    assert types(events) == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert joined(events, "TEXT_MESSAGE_CONTENT") == "mine!"


def test_nothing_after_the_end() -> None:
    encoder = AGUIEncoder(now=0.0)
    assert encoder.encode([Start("c", "m"), Done(), Delta(0, "late")], None).count(b"data:") == 2
    assert encoder.encode([Delta(0, "later"), Error("x")], None) == b""


def test_a_run_with_no_start_still_opens_and_closes() -> None:
    assert types(run([Done()])) == ["RUN_STARTED", "RUN_FINISHED"]
    assert types(run([Delta(0, "x")], [Done()])) == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]


def test_line_separators_and_lone_surrogates() -> None:
    encoder = AGUIEncoder(now=0.0)
    body = encoder.encode([Start("c", "m"), Delta(0, "a\u2028b\u2029c\x85d\ne"), Done()], None)
    assert b"\xe2\x80\xa8" not in body and b"\xe2\x80\xa9" not in body and b"\xc2\x85" not in body
    # a str.splitlines() client still sees one line per event
    assert len([line for line in body.decode().splitlines() if line]) == 5
    events = [json.loads(p) for p in payloads(body)]
    assert events[2]["delta"] == "a\u2028b\u2029c\x85d\ne"
    body = AGUIEncoder(now=0.0).encode([Start("c", "m"), Delta(0, "x\ud83d"), Done()], None)
    assert b"TEXT_MESSAGE_CONTENT" in body


# --- reasoning -------------------------------------------------------------------------------


def test_reasoning_then_text() -> None:
    events = run(
        [Start("c", "m"), Reasoning(0, "Let me "), Reasoning(0, "think.")],
        [Delta(0, "Answer")],
        [Finish(0, "stop"), Done()],
        bind=("t", "r"),
    )
    assert events[1:-1] == [
        {"type": "REASONING_START", "messageId": "r-1"},
        {"type": "REASONING_MESSAGE_START", "messageId": "r-1", "role": "reasoning"},
        {"type": "REASONING_MESSAGE_CONTENT", "messageId": "r-1", "delta": "Let me "},
        {"type": "REASONING_MESSAGE_CONTENT", "messageId": "r-1", "delta": "think."},
        {"type": "REASONING_MESSAGE_END", "messageId": "r-1"},
        {"type": "REASONING_END", "messageId": "r-1"},
        {"type": "TEXT_MESSAGE_START", "messageId": "r-2", "role": "assistant"},
        {"type": "TEXT_MESSAGE_CONTENT", "messageId": "r-2", "delta": "Answer"},
        {"type": "TEXT_MESSAGE_END", "messageId": "r-2"},
    ]


def test_interleaved_reasoning_and_text_get_fresh_messages() -> None:
    events = run(
        [Start("c", "m"), Reasoning(0, "a"), Delta(0, "b"), Reasoning(0, "c"), Delta(0, "d")],
        [Done()],
        bind=("t", "r"),
    )
    starts = [(e["type"], e["messageId"]) for e in events if e["type"].endswith("_START")]
    assert starts == [
        ("REASONING_START", "r-1"),
        ("REASONING_MESSAGE_START", "r-1"),
        ("TEXT_MESSAGE_START", "r-2"),
        ("REASONING_START", "r-3"),
        ("REASONING_MESSAGE_START", "r-3"),
        ("TEXT_MESSAGE_START", "r-4"),
    ]


def test_reasoning_only_run() -> None:
    events = run([Start("c", "m"), Reasoning(0, "hmm")], [Finish(0, "length"), Done()])
    assert types(events)[-3:] == ["REASONING_MESSAGE_END", "REASONING_END", "RUN_FINISHED"]


# --- tool calls ------------------------------------------------------------------------------


def test_tool_call_without_text_gets_an_empty_parent_message() -> None:
    events = run(
        [Start("c", "m")],
        [ToolCall(0, 0, "", id="call_1", name="get_weather")],
        [ToolCall(0, 0, '{"city":')],
        [ToolCall(0, 0, '"Paris"}')],
        [Finish(0, "tool_calls"), Done()],
        bind=("t", "r"),
    )
    assert events[1:-1] == [
        {"type": "TEXT_MESSAGE_START", "messageId": "r-1", "role": "assistant"},
        {"type": "TEXT_MESSAGE_END", "messageId": "r-1"},
        {
            "type": "TOOL_CALL_START",
            "toolCallId": "call_1",
            "toolCallName": "get_weather",
            "parentMessageId": "r-1",
        },
        {"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": '{"city":'},
        {"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": '"Paris"}'},
        {"type": "TOOL_CALL_END", "toolCallId": "call_1"},
    ]


def test_text_then_parallel_tool_calls_attach_to_the_text_message() -> None:
    events = run(
        [Start("c", "m"), Delta(0, "Checking.")],
        [ToolCall(0, 0, '{"a":', id="c0", name="f")],
        [ToolCall(0, 1, '{"b":', id="c1", name="g")],
        [ToolCall(0, 0, "1}"), ToolCall(0, 1, "2}")],  # interleaved fragments
        [Finish(0, "tool_calls"), Done()],
        bind=("t", "r"),
    )
    assert types(events) == [
        "RUN_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_END",
        "RUN_FINISHED",
    ]
    starts = [e for e in events if e["type"] == "TOOL_CALL_START"]
    assert [s["parentMessageId"] for s in starts] == ["r-1", "r-1"]
    assert joined(events, "TOOL_CALL_ARGS", "c0") == '{"a":1}'
    assert joined(events, "TOOL_CALL_ARGS", "c1") == '{"b":2}'


def test_a_name_that_comes_late_holds_the_call_back() -> None:
    events = run(
        [Start("c", "m"), ToolCall(0, 0, '{"x"', id="late")],
        [ToolCall(0, 0, ":1", name="f")],
        [ToolCall(0, 0, "}"), Done()],
    )
    start = next(e for e in events if e["type"] == "TOOL_CALL_START")
    assert (start["toolCallId"], start["toolCallName"]) == ("late", "f")
    assert joined(events, "TOOL_CALL_ARGS") == '{"x":1}'


def test_a_call_without_an_id_gets_one_from_the_run() -> None:
    events = run([Start("c", "m"), ToolCall(0, 3, "{}", name="f")], [Done()], bind=("t", "r"))
    start = next(e for e in events if e["type"] == "TOOL_CALL_START")
    assert (start["toolCallId"], start["toolCallName"]) == ("r-call-3", "f")
    assert joined(events, "TOOL_CALL_ARGS") == "{}"


def test_a_call_whose_name_never_comes_is_dropped() -> None:
    events = run([Start("c", "m"), ToolCall(0, 0, "{}", id="x")], [Finish(0, "tool_calls"), Done()])
    assert types(events) == ["RUN_STARTED", "RUN_FINISHED"]


def test_a_reused_upstream_call_id_is_made_unique() -> None:
    events = run(
        [Start("c", "m"), ToolCall(0, 0, "{}", id="same", name="f")],
        [ToolCall(0, 1, "{}", id="same", name="f"), Done()],
    )
    assert [e["toolCallId"] for e in events if e["type"] == "TOOL_CALL_START"] == [
        "same",
        "same-1",
    ]


def test_fragments_after_the_choice_ended_are_dropped() -> None:
    events = run(
        [Start("c", "m"), ToolCall(0, 0, "{", id="a", name="f"), Finish(0, "tool_calls")],
        [ToolCall(0, 0, "}"), Done()],
    )
    assert joined(events, "TOOL_CALL_ARGS") == "{"


def test_reasoning_then_tool_call_opens_a_new_parent() -> None:
    events = run(
        [Start("c", "m"), Delta(0, "a"), Reasoning(0, "b")],
        [ToolCall(0, 0, "{}", id="k", name="f"), Done()],
        bind=("t", "r"),
    )
    start = next(e for e in events if e["type"] == "TOOL_CALL_START")
    assert start["parentMessageId"] == "r-3"
    assert types(events)[-6:-3] == ["TEXT_MESSAGE_START", "TEXT_MESSAGE_END", "TOOL_CALL_START"]


ARGS = '{"city": "Zürich", "days": [1, 2]}'


@pytest.mark.parametrize("name_at", [0, 1, 2])
def test_every_split_of_tool_call_arguments(name_at: int) -> None:
    """Arguments cut in three fragments at every pair of points (empty fragments too),
    with the call's name on the first, second or last fragment."""
    for i in range(len(ARGS) + 1):
        for j in range(i, len(ARGS) + 1):
            fragments = [ARGS[:i], ARGS[i:j], ARGS[j:]]
            chunks: list[list[Event]] = [[Start("c", "m")]]
            for k, fragment in enumerate(fragments):
                chunks.append(
                    [
                        ToolCall(
                            0,
                            0,
                            fragment,
                            id="call" if k == 0 else None,
                            name="f" if k == name_at else None,
                        )
                    ]
                )
            chunks.append([Finish(0, "tool_calls"), Done()])
            events = run(*chunks)
            assert joined(events, "TOOL_CALL_ARGS", "call") == ARGS
            assert types(events).count("TOOL_CALL_START") == 1


# --- errors close what is open ---------------------------------------------------------------


def test_an_error_closes_everything_open() -> None:
    events = run(
        [Start("c", "m"), Reasoning(0, "thinking")],
        [ToolCall(0, 0, '{"q": "pa', id="c0", name="search")],
        [ToolCall(0, 1, "{}", id="c1")],  # no name ever: dropped
        [Delta(0, "partial")],
        [Error("upstream went away", "upstream_closed", 502)],
        bind=("t", "r"),
    )
    assert types(events) == [
        "RUN_STARTED",
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",  # the calls' empty parent
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_END",
        "RUN_ERROR",
    ]
    assert events[-1] == {
        "type": "RUN_ERROR",
        "message": "upstream went away",
        "code": "upstream_closed",
    }


def test_an_error_before_anything_still_starts_the_run() -> None:
    events = run([Error("timeout", "upstream_timeout")], bind=("t", "r"))
    assert events == [
        {"type": "RUN_STARTED", "threadId": "t", "runId": "r", "protocolVersion": "1.0"},
        {"type": "RUN_ERROR", "message": "timeout", "code": "upstream_timeout"},
    ]


def test_an_error_without_a_code_has_no_code_and_keeps_usage() -> None:
    events = run([Start("c", "m"), Usage(1, 1, 2), Delta(0, "x"), Error("boom")])
    assert events[-1] == {
        "type": "RUN_ERROR",
        "message": "boom",
        "usage": [{"model": "m", "inputTokens": 1, "outputTokens": 1, "totalTokens": 2}],
    }


@pytest.mark.parametrize(
    ("version", "cancelled"),
    [(None, False), ("0.0.59", False), ("0.1", False), ("1.0", True), ("1.2", True), ("x", False)],
)
def test_a_stop_is_a_cancelled_run_for_a_1_0_client(version: str | None, cancelled: bool) -> None:
    events = run(
        [Start("c", "m"), Delta(0, "par")],
        [Error("stopped by a DELETE", "stopped")],
        bind=("t", "r", version) if version is not None else ("t", "r"),
    )
    assert types(events)[-2] == "TEXT_MESSAGE_END"
    if cancelled:
        assert events[-1] == {
            "type": "RUN_FINISHED",
            "threadId": "t",
            "runId": "r",
            "outcome": {"type": "cancelled"},
        }
    else:
        assert events[-1] == {
            "type": "RUN_ERROR",
            "message": "stopped by a DELETE",
            "code": "stopped",
        }


def test_other_errors_are_run_errors_even_for_a_1_0_client() -> None:
    events = run([Start("c", "m"), Error("gone", "abandoned")], bind=("t", "r", "1.0"))
    assert events[-1]["type"] == "RUN_ERROR"


# --- the validation itself is strict ---------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "wrong"),
    [
        ({"type": "TEXT_MESSAGE_START", "messageId": "m", "role": "assistant"}, "messageID"),
        ({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"}, "textDelta"),
        (
            {
                "type": "TOOL_CALL_START",
                "toolCallId": "c",
                "toolCallName": "f",
                "parentMessageId": "m",
            },
            "parentId",
        ),
        ({"type": "TOOL_CALL_ARGS", "toolCallId": "c", "delta": "{"}, "id"),
        ({"type": "RUN_ERROR", "message": "x", "code": "y"}, "errorCode"),
        (
            {"type": "RUN_STARTED", "threadId": "t", "runId": "r", "protocolVersion": "1.0"},
            "version",
        ),
        ({"type": "REASONING_MESSAGE_START", "messageId": "m", "role": "reasoning"}, "messageID"),
        (
            {
                "type": "RUN_FINISHED",
                "threadId": "t",
                "runId": "r",
                "usage": [{"inputTokens": 1}],
            },
            "usage[0].promptTokens",
        ),
    ],
)
def test_the_validation_fails_on_a_wrong_field_name(obj: dict[str, Any], wrong: str) -> None:
    validate(obj)  # as the encoder writes it
    bad = json.loads(json.dumps(obj))
    if wrong == "usage[0].promptTokens":
        bad["usage"][0]["promptTokens"] = bad["usage"][0].pop("inputTokens")
    else:
        key = [k for k in bad if k != "type"][-1]
        bad[wrong] = bad.pop(key)
    with pytest.raises((ValidationError, AssertionError)):
        validate(bad)


def test_the_validation_fails_on_a_wrong_event_name() -> None:
    with pytest.raises(ValidationError):
        validate({"type": "THINKING_START"})
    with pytest.raises(ValidationError):
        validate({"type": "REASONING_MESSAGE_START", "messageId": "m", "role": "assistant"})


# --- through the transcoder: the same events however the upstream bytes are cut -----------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


UPSTREAM = b"".join(
    [
        _chunk({"role": "assistant", "reasoning_content": "Thinking "}),
        _chunk({"reasoning_content": "hard."}),
        _chunk({"content": "Sure — "}),
        _chunk({"content": "calling.\n"}),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q":'},
                    }
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "ü"}'}}]}),
        _chunk({}, "tool_calls"),
        b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":5,'
        b'"completion_tokens":9,"total_tokens":14}}\n\n',
        b"data: [DONE]\n\n",
    ]
)


def _transcode(pieces: list[bytes]) -> bytes:
    encoder = AGUIEncoder(now=0.0)
    encoder.bind_run("t", "r")
    transcoder = Transcoder(encoder)
    out = b"".join(transcoder.feed_bytes(piece) for piece in pieces) + transcoder.end()
    assert transcoder.terminated
    return out


def test_transcoded_stream_is_a_valid_run() -> None:
    body = _transcode([UPSTREAM])
    events = [json.loads(p) for p in payloads(body)]
    for event in events:
        validate(event)
    check_run(events)
    assert joined(events, "REASONING_MESSAGE_CONTENT") == "Thinking hard."
    assert joined(events, "TEXT_MESSAGE_CONTENT") == "Sure — calling.\n"
    assert joined(events, "TOOL_CALL_ARGS", "call_a") == '{"q": "ü"}'
    assert events[-1]["usage"] == [
        {"model": "m", "inputTokens": 5, "outputTokens": 9, "totalTokens": 14}
    ]


def test_every_split_of_the_upstream_bytes_gives_the_same_body() -> None:
    whole = _transcode([UPSTREAM])
    for pieces in every_split(UPSTREAM):
        assert _transcode(pieces) == whole


# --- any sequence of normalized events -------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
_step = st.one_of(
    st.builds(Delta, st.sampled_from([0, 0, 1]), _text),
    st.builds(Reasoning, st.sampled_from([0, 0, 1]), _text),
    st.builds(Refusal, st.just(0), _text),
    st.builds(
        ToolCall,
        st.sampled_from([0, 0, 1]),
        st.integers(0, 2),
        _text,
        id=st.one_of(st.none(), st.sampled_from(["a", "b"])),
        name=st.one_of(st.none(), st.sampled_from(["f", "g"])),
    ),
    st.builds(Finish, st.sampled_from([0, 1]), st.sampled_from(["stop", "tool_calls"])),
    st.builds(Usage, st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)),
)
_end = st.one_of(
    st.builds(Done),
    st.builds(
        Error,
        _text,
        st.one_of(st.none(), st.sampled_from(["stopped", "upstream_timeout"])),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.booleans(),
    steps=st.lists(_step, max_size=25),
    end=_end,
    cuts=st.lists(st.integers(0, 30), max_size=6),
    version=st.sampled_from([None, "1.0"]),
)
def test_any_event_sequence_is_a_valid_run(
    start: bool, steps: list[Event], end: Event, cuts: list[int], version: str | None
) -> None:
    program: list[Event] = [*([Start("s", "m")] if start else []), *steps, end]
    points = sorted({c for c in cuts if 0 < c < len(program)})
    chunks = [program[a:b] for a, b in zip([0, *points], [*points, len(program)], strict=True)]
    events = run(*chunks, bind=("t", "r", version) if version else None)
    # nothing of choice 0 is lost (tool-call fragments after their choice ended aside)
    text = "".join(e.text for e in program if isinstance(e, (Delta, Refusal)) and e.index == 0)
    reasoning = "".join(e.text for e in program if isinstance(e, Reasoning) and e.index == 0)
    assert joined(events, "TEXT_MESSAGE_CONTENT") == text
    assert joined(events, "REASONING_MESSAGE_CONTENT") == reasoning
