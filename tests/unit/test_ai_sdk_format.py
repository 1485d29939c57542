"""The ``ai-sdk`` format (the Vercel AI SDK UI message stream): exact parts for every
event order, every split of tool-call arguments, errors and stops closing every part.

Every stream is checked against :data:`SCHEMA_5_0_0`, the part types and keys of
``uiMessageChunkSchema`` in vercel/ai ``packages/ai/src/ui-message-stream/ui-message-chunks.ts``
at ai 5.0.0, whose objects are strict (an extra key fails the whole stream), and
against the reading rules of ``processUIMessageStream`` (a delta needs its part's
start, every part ends, ...) by :func:`read`, a small model of ``readUIMessageStream``.
``tests/test_ai_sdk_wire.py`` checks the table against the installed ai 5.0.0 and
runs the real clients.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from streamrelay.formats import ACCEPT_TYPES, FORMATS, AISDKEncoder, encoder_for
from streamrelay.negotiation import asked_format, negotiate
from streamrelay.sse import SSEDecoder
from streamrelay.transcoder import Transcoder

# --- the schema of ai 5.0.0 ------------------------------------------------------------------

STR, ANY, BOOL = "string", "unknown", "boolean"

SCHEMA_5_0_0: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # type: ({required key: kind}, {optional key: kind})
    "text-start": ({"id": STR}, {"providerMetadata": ANY}),
    "text-delta": ({"id": STR, "delta": STR}, {"providerMetadata": ANY}),
    "text-end": ({"id": STR}, {"providerMetadata": ANY}),
    "error": ({"errorText": STR}, {}),
    "tool-input-start": (
        {"toolCallId": STR, "toolName": STR},
        {"providerExecuted": BOOL, "dynamic": BOOL},
    ),
    "tool-input-delta": ({"toolCallId": STR, "inputTextDelta": STR}, {}),
    "tool-input-available": (
        {"toolCallId": STR, "toolName": STR, "input": ANY},
        {"providerExecuted": BOOL, "providerMetadata": ANY, "dynamic": BOOL},
    ),
    "tool-output-available": (
        {"toolCallId": STR, "output": ANY},
        {"providerExecuted": BOOL, "dynamic": BOOL},
    ),
    "tool-output-error": (
        {"toolCallId": STR, "errorText": STR},
        {"providerExecuted": BOOL, "dynamic": BOOL},
    ),
    "reasoning": ({"text": STR}, {"providerMetadata": ANY}),
    "reasoning-start": ({"id": STR}, {"providerMetadata": ANY}),
    "reasoning-delta": ({"id": STR, "delta": STR}, {"providerMetadata": ANY}),
    "reasoning-end": ({"id": STR}, {"providerMetadata": ANY}),
    "reasoning-part-finish": ({}, {}),
    "source-url": ({"sourceId": STR, "url": STR}, {"title": STR, "providerMetadata": ANY}),
    "source-document": (
        {"sourceId": STR, "mediaType": STR, "title": STR},
        {"filename": STR, "providerMetadata": ANY},
    ),
    "file": ({"url": STR, "mediaType": STR}, {"providerMetadata": ANY}),
    "data-*": ({"data": ANY}, {"id": STR, "transient": BOOL}),
    "start-step": ({}, {}),
    "finish-step": ({}, {}),
    "start": ({}, {"messageId": STR, "messageMetadata": ANY}),
    "finish": ({}, {"messageMetadata": ANY}),
    "abort": ({}, {}),
    "message-metadata": ({"messageMetadata": ANY}, {}),
}
"""``uiMessageChunkSchema`` at ai 5.0.0: each part type's required and optional keys."""

_KINDS = {STR: str, BOOL: bool}


def validate(part: Any) -> None:
    """Raise AssertionError unless ``part`` passes ai 5.0.0's strict schema."""
    assert isinstance(part, dict), part
    kind = part.get("type")
    assert isinstance(kind, str), part
    key = "data-*" if kind.startswith("data-") else kind
    assert key in SCHEMA_5_0_0, f"ai 5.0.0 has no part type {kind!r}"
    required, optional = SCHEMA_5_0_0[key]
    extra = set(part) - {"type"} - set(required) - set(optional)
    assert not extra, f"{kind}: ai 5.0.0 rejects the keys {sorted(extra)}"
    missing = set(required) - set(part)
    assert not missing, f"{kind}: lacks {sorted(missing)}"
    for name, value in part.items():
        expected = _KINDS.get({**required, **optional}.get(name, ANY))
        if expected is not None:
            assert type(value) is expected, f"{kind}.{name} must be a {expected.__name__}"


# --- a model of readUIMessageStream ------------------------------------------------------------


@dataclass
class Message:
    """What ``readUIMessageStream`` makes of a stream, and the rules it needs kept."""

    id: str | None = None
    metadata: Any = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    aborted: bool = False
    finished: bool = False
    done: bool = False
    types: list[str] = field(default_factory=list)

    def text(self, kind: str = "text") -> str:
        return "".join(p["text"] for p in self.parts if p["type"] == kind)

    def tools(self) -> list[dict[str, Any]]:
        return [p for p in self.parts if p["type"].startswith("tool-")]


def parts_of(body: bytes) -> list[Any]:
    """The JSON parts of an ``ai-sdk`` body, ``"[DONE]"`` as a string."""
    messages = SSEDecoder().feed(body)
    assert all(m.event == "message" and m.id is None for m in messages)
    return ["[DONE]" if m.data == "[DONE]" else json.loads(m.data) for m in messages]


def read(body: bytes, *, complete: bool = True) -> Message:
    """Read ``body`` as ai 5.0.0's ``processUIMessageStream`` would, asserting the
    protocol's rules; with ``complete``, the stream must have ended with ``[DONE]``
    and every part must be closed."""
    message = Message()
    active: dict[str, dict[str, Any]] = {}  # open text and reasoning parts by id
    tools: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    in_step = False
    for n, part in enumerate(parts_of(body)):
        assert not message.done, "a part after [DONE]"
        if part == "[DONE]":
            message.done = True
            continue
        validate(part)
        kind = part["type"]
        message.types.append(kind)
        assert not message.finished, f"{kind} after finish"
        if kind == "start":
            assert n == 0, "start must come first"
            message.id = part.get("messageId")
            message.metadata = part.get("messageMetadata")
        elif kind == "start-step":
            assert not in_step, "start-step inside a step"
            in_step = True
            message.parts.append({"type": "step-start"})
        elif kind == "finish-step":
            assert in_step, "finish-step outside a step"
            assert not active, f"finish-step with open parts {sorted(active)}"
            in_step = False
        elif kind in ("text-start", "reasoning-start"):
            assert in_step, f"{kind} outside a step"
            assert part["id"] not in ids, f"part id {part['id']} used twice"
            assert not active, "two text/reasoning parts open at once"
            ids.add(part["id"])
            ui = {"type": kind.split("-")[0], "text": "", "state": "streaming"}
            active[part["id"]] = ui
            message.parts.append(ui)
        elif kind in ("text-delta", "reasoning-delta"):
            ui = active[part["id"]]
            assert ui["type"] == kind.split("-")[0]
            ui["text"] += part["delta"]
        elif kind in ("text-end", "reasoning-end"):
            ui = active.pop(part["id"])
            assert ui["type"] == kind.split("-")[0]
            ui["state"] = "done"
        elif kind == "tool-input-start":
            assert in_step, "tool-input-start outside a step"
            assert part["toolCallId"] not in tools, "a tool call id used twice"
            ui = {
                "type": "tool-" + part["toolName"],
                "toolCallId": part["toolCallId"],
                "state": "input-streaming",
                "text": "",
            }
            tools[part["toolCallId"]] = ui
            message.parts.append(ui)
        elif kind == "tool-input-delta":
            ui = tools[part["toolCallId"]]
            assert ui["state"] == "input-streaming"
            ui["text"] += part["inputTextDelta"]
        elif kind == "tool-input-available":
            ui = tools[part["toolCallId"]]
            assert ui["state"] == "input-streaming"
            assert ui["type"] == "tool-" + part["toolName"]
            ui.update(state="input-available", input=part["input"])
        elif kind == "tool-output-error":
            ui = tools[part["toolCallId"]]
            assert ui["state"] == "input-streaming"
            ui.update(state="output-error", errorText=part["errorText"])
        elif kind == "finish":
            assert not in_step, "finish inside a step"
            message.finished = True
            if "messageMetadata" in part:
                message.metadata = part["messageMetadata"]
        elif kind in ("error", "abort"):
            assert not active, f"{kind} with open parts {sorted(active)}"
            assert all(t["state"] != "input-streaming" for t in tools.values())
            if kind == "error":
                message.errors.append(part["errorText"])
            else:
                message.aborted = True
            message.finished = True
        else:
            pytest.fail(f"the encoder never sends {kind}")
    if complete:
        assert message.done, "no [DONE]"
        assert message.finished, "neither finish, error nor abort"
        assert not active, f"parts left open: {sorted(active)}"
        assert all(t["state"] != "input-streaming" for t in tools.values()), "a tool left open"
    return message


def encode(events: Sequence[Event], *, batches: Sequence[int] = (), **kwargs: Any) -> bytes:
    """The whole body for ``events``, fed in batches cut at ``batches``."""
    encoder = AISDKEncoder(now=0.0, **kwargs)
    cuts = [0, *sorted({b for b in batches if 0 < b < len(events)}), len(events)]
    out = encoder.preamble()
    for a, b in itertools.pairwise(cuts):
        out += encoder.encode(events[a:b], None)
    return out


def lines(*parts: str) -> bytes:
    return b"".join(b"data: " + p.encode() + b"\n\n" for p in parts)


START = Start("chatcmpl-7", "gpt-4o-mini")

# --- the registry ------------------------------------------------------------------------------


def test_registered_without_an_accept_type_of_its_own() -> None:
    assert FORMATS["ai-sdk"] is AISDKEncoder
    assert AISDKEncoder.accept == ()
    assert "ai-sdk" not in ACCEPT_TYPES.values()
    assert ACCEPT_TYPES["text/event-stream"] == "sse"  # still ours, not the AI SDK's
    assert isinstance(encoder_for("ai-sdk", now=0.0), AISDKEncoder)


def test_negotiation() -> None:
    assert negotiate("ai-sdk", "text/event-stream", "sse") == "ai-sdk"
    assert negotiate("AI-SDK", None, "openai") == "ai-sdk"
    assert negotiate(None, "text/event-stream", "ai-sdk") == "sse"
    assert negotiate(None, "*/*", "ai-sdk") == "ai-sdk"  # what DefaultChatTransport sends
    assert negotiate(None, None, "ai-sdk") == "ai-sdk"
    assert asked_format("ai-sdk", None) == "ai-sdk"
    assert asked_format(None, "text/event-stream") is None


def test_class_attributes() -> None:
    assert AISDKEncoder.name == "ai-sdk"
    assert AISDKEncoder.media_type == "text/event-stream"
    assert AISDKEncoder.headers == ((b"x-vercel-ai-ui-message-stream", b"v1"),)
    assert AISDKEncoder.aborts_on_error is False
    assert AISDKEncoder.wants_raw is False
    encoder = AISDKEncoder(now=0.0)
    # Comment lines with no blank line after them: no client sees an empty event.
    assert encoder.preamble() == b": stream open\n"
    assert encoder.heartbeat() == b": ping\n"
    assert SSEDecoder().feed(encoder.preamble() + encoder.heartbeat()) == []
    encoder.number_from(7)  # ids mean nothing to the AI SDK: no id: lines
    assert b"id:" not in encoder.encode([START, Delta(0, "x")], None)


# --- exact wire ----------------------------------------------------------------------------------


def test_plain_text_exact_bytes() -> None:
    body = encode(
        [
            START,
            Delta(0, "Hello"),
            Delta(0, " world\n"),
            Finish(0, "stop"),
            Usage(9, 3, 12),
            Done(),
        ]
    )
    assert body == b": stream open\n" + lines(
        '{"type":"start","messageId":"chatcmpl-7"}',
        '{"type":"start-step"}',
        '{"type":"text-start","id":"text-1"}',
        '{"type":"text-delta","id":"text-1","delta":"Hello"}',
        '{"type":"text-delta","id":"text-1","delta":" world\\n"}',
        '{"type":"text-end","id":"text-1"}',
        '{"type":"finish-step"}',
        '{"type":"finish","messageMetadata":{"model":"gpt-4o-mini","finishReason":"stop",'
        '"usage":{"inputTokens":9,"outputTokens":3,"totalTokens":12}}}',
        "[DONE]",
    )
    message = read(body)
    assert message.text() == "Hello world\n"
    assert message.id == "chatcmpl-7"


def test_reasoning_then_text_exact_bytes() -> None:
    body = encode(
        [
            START,
            Reasoning(0, "Let me"),
            Reasoning(0, " think."),
            Delta(0, "Yes."),
            Reasoning(0, "Hm."),
            Delta(0, "No."),
            Finish(0, "stop"),
            Done(),
        ]
    )
    assert body == b": stream open\n" + lines(
        '{"type":"start","messageId":"chatcmpl-7"}',
        '{"type":"start-step"}',
        '{"type":"reasoning-start","id":"reasoning-1"}',
        '{"type":"reasoning-delta","id":"reasoning-1","delta":"Let me"}',
        '{"type":"reasoning-delta","id":"reasoning-1","delta":" think."}',
        '{"type":"reasoning-end","id":"reasoning-1"}',
        '{"type":"text-start","id":"text-2"}',
        '{"type":"text-delta","id":"text-2","delta":"Yes."}',
        '{"type":"text-end","id":"text-2"}',
        '{"type":"reasoning-start","id":"reasoning-3"}',
        '{"type":"reasoning-delta","id":"reasoning-3","delta":"Hm."}',
        '{"type":"reasoning-end","id":"reasoning-3"}',
        '{"type":"text-start","id":"text-4"}',
        '{"type":"text-delta","id":"text-4","delta":"No."}',
        '{"type":"text-end","id":"text-4"}',
        '{"type":"finish-step"}',
        '{"type":"finish","messageMetadata":{"model":"gpt-4o-mini","finishReason":"stop"}}',
        "[DONE]",
    )
    message = read(body)
    assert [p["type"] for p in message.parts] == [
        "step-start", "reasoning", "text", "reasoning", "text",
    ]  # fmt: skip
    assert message.text("reasoning") == "Let me think.Hm."


def test_tool_call_exact_bytes() -> None:
    body = encode(
        [
            START,
            Delta(0, "Checking."),
            ToolCall(0, 0, "", id="call_a", name="get_weather"),
            ToolCall(0, 0, '{"city":'),
            ToolCall(0, 0, ' "Paris"}'),
            Finish(0, "tool_calls"),
            Done(),
        ]
    )
    assert body == b": stream open\n" + lines(
        '{"type":"start","messageId":"chatcmpl-7"}',
        '{"type":"start-step"}',
        '{"type":"text-start","id":"text-1"}',
        '{"type":"text-delta","id":"text-1","delta":"Checking."}',
        '{"type":"text-end","id":"text-1"}',
        '{"type":"tool-input-start","toolCallId":"call_a","toolName":"get_weather"}',
        '{"type":"tool-input-delta","toolCallId":"call_a","inputTextDelta":"{\\"city\\":"}',
        '{"type":"tool-input-delta","toolCallId":"call_a","inputTextDelta":" \\"Paris\\"}"}',
        '{"type":"tool-input-available","toolCallId":"call_a","toolName":"get_weather",'
        '"input":{"city":"Paris"}}',
        '{"type":"finish-step"}',
        '{"type":"finish","messageMetadata":{"model":"gpt-4o-mini","finishReason":"tool-calls"}}',
        "[DONE]",
    )
    (tool,) = read(body).tools()
    assert tool["input"] == {"city": "Paris"} and tool["state"] == "input-available"


def test_error_mid_text_closes_the_part_first() -> None:
    body = encode([START, Delta(0, "Hel"), Error("the upstream failed", "server_error", 500)])
    assert body == b": stream open\n" + lines(
        '{"type":"start","messageId":"chatcmpl-7"}',
        '{"type":"start-step"}',
        '{"type":"text-start","id":"text-1"}',
        '{"type":"text-delta","id":"text-1","delta":"Hel"}',
        '{"type":"text-end","id":"text-1"}',
        '{"type":"error","errorText":"the upstream failed (server_error)"}',
        "[DONE]",
    )
    message = read(body)
    assert message.errors == ["the upstream failed (server_error)"]
    assert message.text() == "Hel"


def test_stop_is_an_abort_without_fields() -> None:
    body = encode([START, Reasoning(0, "Hm"), Error("stopped by the client", "stopped")])
    assert body == b": stream open\n" + lines(
        '{"type":"start","messageId":"chatcmpl-7"}',
        '{"type":"start-step"}',
        '{"type":"reasoning-start","id":"reasoning-1"}',
        '{"type":"reasoning-delta","id":"reasoning-1","delta":"Hm"}',
        '{"type":"reasoning-end","id":"reasoning-1"}',
        '{"type":"abort"}',
        "[DONE]",
    )
    assert read(body).aborted


def test_error_before_anything_is_the_error_alone() -> None:
    body = encode([Error("upstream said no", "upstream_invalid")])
    assert body == b": stream open\n" + lines(
        '{"type":"error","errorText":"upstream said no (upstream_invalid)"}', "[DONE]"
    )
    assert read(body).errors == ["upstream said no (upstream_invalid)"]


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (Error("boom", None), "boom"),
        (Error("", "upstream_timeout"), "the stream failed (upstream_timeout)"),
        (Error("same", "same"), "same"),
    ],
)
def test_error_text(error: Error, text: str) -> None:
    assert read(encode([START, error])).errors == [text]


def test_error_during_a_tool_call_ends_it_with_tool_output_error() -> None:
    body = encode(
        [
            START,
            ToolCall(0, 0, '{"a":', id="call_1", name="f"),
            ToolCall(0, 1, "", id="call_2", name="g"),
            Error("cut", "upstream_truncated"),
        ]
    )
    parts = parts_of(body)
    assert parts[-4:] == [
        {
            "type": "tool-output-error",
            "toolCallId": "call_1",
            "errorText": "the tool call was cut off: cut (upstream_truncated)",
        },
        {
            "type": "tool-output-error",
            "toolCallId": "call_2",
            "errorText": "the tool call was cut off: cut (upstream_truncated)",
        },
        {"type": "error", "errorText": "cut (upstream_truncated)"},
        "[DONE]",
    ]
    assert [t["state"] for t in read(body).tools()] == ["output-error", "output-error"]


def test_stop_during_a_tool_call() -> None:
    body = encode([START, ToolCall(0, 0, "{", id="c", name="f"), Error("stopped", "stopped")])
    message = read(body)
    assert message.aborted and message.tools()[0]["state"] == "output-error"


# --- tool calls -------------------------------------------------------------------------------------

ARGUMENTS = '{"city": "Zürich", "days": [1, 2.5], "opts": {"unit": "c", "x": null}}'


def fragments_of(text: str) -> list[list[str]]:
    """Every way to cut ``text`` in two, three pieces at a few points, and char by char."""
    out = [[text], list(text)]
    out += [[text[:i], text[i:]] for i in range(len(text) + 1)]
    out += [[text[:i], text[i:j], text[j:]] for i in range(0, len(text), 7) for j in (i + 1, i + 5)]
    return out


@pytest.mark.parametrize("pieces", fragments_of(ARGUMENTS))
def test_every_split_of_the_arguments_gives_the_same_input(pieces: list[str]) -> None:
    events: list[Event] = [START]
    events.append(ToolCall(0, 0, pieces[0], id="call_x", name="forecast"))
    events += [ToolCall(0, 0, p) for p in pieces[1:]]
    events += [Finish(0, "tool_calls"), Done()]
    for batches in ([], [1], list(range(len(events)))):
        body = encode(events, batches=batches)
        message = read(body)
        (tool,) = message.tools()
        assert tool == {
            "type": "tool-forecast",
            "toolCallId": "call_x",
            "state": "input-available",
            "text": ARGUMENTS,
            "input": json.loads(ARGUMENTS),
        }
        deltas = [p for p in parts_of(body) if p != "[DONE]" and p["type"] == "tool-input-delta"]
        assert all(d["inputTextDelta"] for d in deltas)  # no empty deltas


def test_parallel_calls_interleaved() -> None:
    body = encode(
        [
            START,
            ToolCall(0, 0, '{"q"', id="call_a", name="search"),
            ToolCall(0, 1, "{", id="call_b", name="lookup"),
            ToolCall(0, 0, ': "x"}'),
            ToolCall(0, 1, '"id": 3}'),
            Finish(0, "tool_calls"),
            Done(),
        ]
    )
    tools = read(body).tools()
    assert [(t["type"], t["toolCallId"], t["input"]) for t in tools] == [
        ("tool-search", "call_a", {"q": "x"}),
        ("tool-lookup", "call_b", {"id": 3}),
    ]


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ('{"city": "Par', "Unterminated string"),
        ("{'a': 1}", "Expecting property name"),
        ('{"a": NaN}', "NaN is not JSON"),
        ('{"a": Infinity}', "Infinity is not JSON"),
        ('{"a": 1e400}', "too large"),
        ('{"a": 1} x', "Extra data"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_arguments_that_do_not_parse_end_with_tool_output_error(arguments: str, why: str) -> None:
    body = encode(
        [START, ToolCall(0, 0, arguments, id="call_1", name="f"), Finish(0, "tool_calls"), Done()]
    )
    message = read(body)
    (tool,) = message.tools()
    assert tool["state"] == "output-error"
    assert tool["errorText"].startswith("the arguments of f are not valid JSON: ")
    assert why in tool["errorText"]
    assert message.finished and not message.errors  # the message itself ends normally


@pytest.mark.parametrize(("arguments", "value"), [("", {}), ("  ", {}), ("[1]", [1]), ("3", 3)])
def test_empty_and_non_object_arguments(arguments: str, value: Any) -> None:
    body = encode([START, ToolCall(0, 0, arguments, id="c", name="f"), Finish(0, "stop"), Done()])
    assert read(body).tools()[0]["input"] == value


def test_missing_and_repeated_ids_are_made_unique() -> None:
    body = encode(
        [
            START,
            ToolCall(0, 0, "{}", name="f"),
            ToolCall(0, 1, "{}", id="dup", name="g"),
            ToolCall(0, 2, "{}", id="dup", name="h"),
            Done(),
        ]
    )
    assert [t["toolCallId"] for t in read(body).tools()] == ["call_0", "dup", "dup-2"]


def test_a_name_or_id_that_comes_late() -> None:
    body = encode(
        [
            START,
            ToolCall(0, 0, '{"a"'),  # neither id nor name yet: held back
            ToolCall(0, 0, ": 1}", id="call_late", name="late"),
            ToolCall(0, 1, "{}"),  # never named
            Finish(0, "tool_calls"),
            Done(),
        ]
    )
    tools = read(body).tools()
    assert [(t["type"], t["toolCallId"], t["input"]) for t in tools] == [
        ("tool-late", "call_late", {"a": 1}),
        ("tool-unknown", "call_1", {}),
    ]
    assert tools[0]["text"] == '{"a": 1}'


def test_text_after_a_tool_call_is_a_new_part_after_it() -> None:
    body = encode(
        [
            START,
            Delta(0, "a"),
            ToolCall(0, 0, "{}", id="c", name="f"),
            Delta(0, "b"),
            Finish(0, "tool_calls"),
            Done(),
        ]
    )
    message = read(body)
    assert [(p["type"], p.get("text")) for p in message.parts] == [
        ("step-start", None),
        ("text", "a"),
        ("tool-f", "{}"),
        ("text", "b"),
    ]


def test_done_without_finish_still_finishes_the_calls_and_the_step() -> None:
    body = encode([START, ToolCall(0, 0, '{"a": 1}', id="c", name="f"), Done()])
    message = read(body)
    assert message.tools()[0]["input"] == {"a": 1}
    assert message.types[-3:] == ["tool-input-available", "finish-step", "finish"]
    assert message.metadata == {"model": "gpt-4o-mini"}


# --- the message -------------------------------------------------------------------------------


def test_message_id_comes_from_the_stream_so_a_replay_names_the_same_message() -> None:
    events = [START, Delta(0, "x"), Finish(0, "stop"), Done()]
    assert encode(events) == encode(events)
    assert read(encode(events)).id == "chatcmpl-7"
    assert read(encode(events, message_id="msg-chosen")).id == "msg-chosen"
    assert read(encode([Start("", ""), Delta(0, "x"), Done()])).id is None  # the client picks


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content-filter"),
        ("tool_calls", "tool-calls"),
        ("function_call", "tool-calls"),
        ("something_new", "other"),
    ],
)
def test_finish_reason_in_the_metadata(reason: str, expected: str) -> None:
    message = read(encode([START, Finish(0, reason), Done()]))
    assert message.metadata["finishReason"] == expected
    assert "finishReason" not in parts_of(encode([START, Finish(0, reason), Done()]))[-2]


def test_usage_in_the_metadata() -> None:
    usage = Usage(
        10,
        20,
        30,
        prompt_tokens_details={"cached_tokens": 4},
        completion_tokens_details={"reasoning_tokens": 7},
    )
    message = read(encode([START, Delta(0, "x"), Finish(0, "stop"), usage, Done()]))
    assert message.metadata["usage"] == {
        "inputTokens": 10,
        "outputTokens": 20,
        "totalTokens": 30,
        "reasoningTokens": 7,
        "cachedInputTokens": 4,
    }


def test_no_metadata_when_nothing_is_known() -> None:
    assert parts_of(encode([Start("", ""), Done()])) == [
        {"type": "start"},
        {"type": "start-step"},
        {"type": "finish-step"},
        {"type": "finish"},
        "[DONE]",
    ]


def test_an_empty_stream_is_one_empty_message() -> None:
    assert parts_of(encode([Done()])) == [
        {"type": "start"},
        {"type": "start-step"},
        {"type": "finish-step"},
        {"type": "finish"},
        "[DONE]",
    ]


def test_only_choice_0_is_carried() -> None:
    body = encode(
        [
            START,
            Delta(1, "other"),
            Reasoning(1, "other"),
            ToolCall(1, 0, "{}", id="c1", name="f"),
            Delta(0, "mine"),
            Finish(1, "stop"),
            Delta(0, "!"),
            Finish(0, "stop"),
            Done(),
        ]
    )
    message = read(body)
    assert message.text() == "mine!" and not message.tools() and not message.text("reasoning")
    assert message.types.count("finish-step") == 1


def test_refusal_is_carried_as_text() -> None:
    message = read(encode([START, Refusal(0, "I can't"), Refusal(0, " help."), Done()]))
    assert message.text() == "I can't help."
    assert len([p for p in message.parts if p["type"] == "text"]) == 1


def test_empty_pieces_open_nothing() -> None:
    assert parts_of(encode([START, Delta(0, ""), Reasoning(0, "")])) == [
        {"type": "start", "messageId": "chatcmpl-7"},
        {"type": "start-step"},
    ]


def test_content_after_finish_opens_a_new_step() -> None:
    body = encode([START, Delta(0, "a"), Finish(0, "stop"), Delta(0, "b"), Done()])
    message = read(body)
    assert message.text() == "ab"
    assert message.types.count("start-step") == 2 == message.types.count("finish-step")


def test_content_before_start_starts_the_message() -> None:
    message = read(encode([Delta(0, "x"), START, Done()]))
    assert message.text() == "x" and message.id is None
    assert message.metadata == {"model": "gpt-4o-mini"}
    assert message.types.count("start") == 1


def test_nothing_after_a_terminal_event() -> None:
    for terminal in (Done(), Error("x", "y"), Error("s", "stopped")):
        encoder = AISDKEncoder(now=0.0)
        encoder.encode([START, terminal, Delta(0, "late")], None)
        assert encoder.encode([Delta(0, "late"), Done()], None) == b""


def test_line_breaks_and_separators_never_cut_a_data_line() -> None:
    text = "a\nb\rc\r\nd\u2028e\u2029f\x85g"
    body = encode([START, Delta(0, text), ToolCall(0, 0, '{"k": "\u2028"}', id="c", name="f")])
    assert b"\xe2\x80\xa8" not in body and b"\xe2\x80\xa9" not in body and b"\xc2\x85" not in body
    assert all(line.startswith((b"data: ", b": ")) for line in body.split(b"\n") if line)
    assert read(body, complete=False).text() == text


def test_lone_surrogates_do_not_crash() -> None:
    body = encode(
        [START, Delta(0, "\ud83d"), ToolCall(0, 0, '{"a": "\\ud83d"}', id="c", name="f"), Done()]
    )
    message = read(body)
    assert message.text() == "\ud83d"
    assert message.tools()[0]["input"] == {"a": "\ud83d"}


# --- through the transcoder --------------------------------------------------------------------


def transcode(pieces: list[bytes], *, end: bool = True) -> tuple[bytes, Transcoder]:
    encoder = encoder_for("ai-sdk", now=0.0)
    t = Transcoder(encoder)
    out = encoder.preamble()
    for piece in pieces:
        out += t.feed_bytes(piece)
    if end:
        out += t.end()
    return out, t


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def test_transcoder_tool_stream() -> None:
    upstream = b"".join(
        [
            chunk({"role": "assistant", "content": None}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_q",
                            "type": "function",
                            "function": {"name": "q", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "[1]}"}}]}),
            chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    whole, t = transcode([upstream])
    assert t.terminated and t.error is None
    assert read(whole).tools()[0]["input"] == {"x": [1]}
    pieces = [upstream[i : i + 7] for i in range(0, len(upstream), 7)]
    assert transcode(pieces)[0] == whole


def test_transcoder_truncated_stream_closes_everything() -> None:
    body, t = transcode([chunk({"content": "Hi"})])
    assert t.error is not None and t.error.code == "upstream_truncated"
    message = read(body)
    assert message.text() == "Hi"
    assert message.errors and "upstream_truncated" in message.errors[0]


def test_transcoder_upstream_error_chunk() -> None:
    body, t = transcode([chunk({"content": "Hi"}), b'data: {"error":{"message":"overloaded"}}\n\n'])
    assert t.error is not None and t.error.code == "upstream_error"
    assert read(body).errors == ["overloaded (upstream_error)"]


def test_transcoder_text_source() -> None:
    encoder = encoder_for("ai-sdk", now=0.0)
    t = Transcoder(encoder)
    body = b"".join([t.feed_text("He"), t.feed_text("llo"), t.end()])
    message = read(body)
    assert message.text() == "Hello" and message.id is None


# --- properties ----------------------------------------------------------------------------------

texts = st.text(max_size=6)
arguments = st.sampled_from(['{"a": 1}', "{", '{"b": [true, null]}', "", "nope", '"s"'])


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """A plausible event sequence: start, content of any kind and choice, maybe a finish
    and usage, and maybe a terminal event."""
    events: list[Event] = []
    if draw(st.booleans()):
        events.append(Start(draw(st.sampled_from(["", "chatcmpl-1"])), "m"))
    calls: dict[int, tuple[str, list[str]]] = {}
    for _ in range(draw(st.integers(0, 12))):
        index = draw(st.sampled_from([0, 0, 0, 1]))
        kind = draw(st.sampled_from(["delta", "reasoning", "refusal", "tool", "tool", "finish"]))
        if kind == "delta":
            events.append(Delta(index, draw(texts)))
        elif kind == "reasoning":
            events.append(Reasoning(index, draw(texts)))
        elif kind == "refusal":
            events.append(Refusal(index, draw(texts)))
        elif kind == "finish":
            events.append(Finish(index, draw(st.sampled_from(["stop", "tool_calls", "length"]))))
        else:
            call = draw(st.integers(0, 2))
            whole = draw(arguments)
            cut = draw(st.integers(0, len(whole)))
            first = call not in calls or index != 0
            events.append(
                ToolCall(
                    index,
                    call,
                    whole[:cut],
                    id=draw(st.sampled_from([None, f"id{call}", "same"])) if first else None,
                    name=draw(st.sampled_from([None, "f", "g"])) if first else None,
                )
            )
            events.append(ToolCall(index, call, whole[cut:]))
    if draw(st.booleans()):
        events.append(Usage(1, 2, 3))
    terminal = draw(st.sampled_from([None, "done", "error", "stopped"]))
    if terminal == "done":
        events.append(Done())
    elif terminal == "error":
        events.append(Error("boom", "upstream_error"))
    elif terminal == "stopped":
        events.append(Error("stopped", "stopped"))
    return events


@settings(max_examples=400, deadline=None)
@given(streams(), st.lists(st.integers(0, 30), max_size=6))
def test_any_stream_is_valid_for_ai_5_0_0(events: list[Event], batches: list[int]) -> None:
    body = encode(events, batches=batches)
    assert body == encode(events)  # how events are batched changes nothing
    terminal = bool(events) and type(events[-1]) in (Done, Error)
    message = read(body, complete=terminal)
    text = "".join(
        e.text
        for e in events
        if type(e) in (Delta, Refusal) and e.index == 0  # type: ignore[union-attr]
    )
    reasoning = "".join(e.text for e in events if type(e) is Reasoning and e.index == 0)
    assert message.text() == text
    assert message.text("reasoning") == reasoning
    if terminal:
        for tool in message.tools():
            if tool["state"] == "input-available":
                assert tool["input"] == (json.loads(tool["text"]) if tool["text"].strip() else {})
            else:
                assert tool["state"] == "output-error"


@settings(max_examples=200, deadline=None)
@given(st.text(), st.floats(allow_nan=True, allow_infinity=True))
def test_arguments_round_trip_or_fail_cleanly(text: str, number: float) -> None:
    for arguments in (json.dumps({"t": text}), json.dumps({"n": number}), text):
        body = encode(
            [START, ToolCall(0, 0, arguments, id="c", name="f"), Finish(0, "stop"), Done()]
        )
        (tool,) = read(body).tools()
        if tool["state"] == "input-available":
            parsed = json.loads(arguments) if arguments.strip() else {}
            assert tool["input"] == parsed
        else:
            assert "not valid JSON" in tool["errorText"]
            if arguments == json.dumps({"n": number}):
                assert not math.isfinite(number)
