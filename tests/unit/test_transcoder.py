"""Transcoder: upstream input (SSE bytes, parsed chunks, plain text) to client bytes.

The ``WIRE_*`` constants are the exact bytes each format puts on the wire for one
small realistic stream; they double as the wire examples in the docs.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splits import bytewise
from streamrelay.events import Done, Error
from streamrelay.formats import FORMATS, Encoder, OpenAIEncoder, encoder_for
from streamrelay.sse import SSEDecoder
from streamrelay.transcoder import Transcoder

_HEAD = (
    '"id":"chatcmpl-42","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini"'
)
CHUNKS = [
    "{" + _HEAD + "," + rest + "}"
    for rest in (
        '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]',
        '"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]',
        '"choices":[{"index":0,"delta":{"content":" world\\n"},"finish_reason":null}]',
        '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]',
        '"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}',
    )
]
UPSTREAM = b"".join(b"data: " + c.encode() + b"\n\n" for c in CHUNKS) + b"data: [DONE]\n\n"

WIRE_TEXT = b"Hello world\n"

WIRE_NDJSON = (
    b'{"type":"start","id":"chatcmpl-42","model":"gpt-4o-mini"}\n'
    b'{"type":"delta","index":0,"text":"Hello"}\n'
    b'{"type":"delta","index":0,"text":" world\\n"}\n'
    b'{"type":"finish","index":0,"reason":"stop"}\n'
    b'{"type":"usage","prompt_tokens":9,"completion_tokens":3,"total_tokens":12}\n'
    b'{"type":"done"}\n'
)

WIRE_SSE = (
    b": stream open\n"
    b"id: 1\n"
    b"event: start\n"
    b'data: {"type":"start","id":"chatcmpl-42","model":"gpt-4o-mini"}\n'
    b"\n"
    b"id: 2\n"
    b"event: delta\n"
    b'data: {"type":"delta","index":0,"text":"Hello"}\n'
    b"\n"
    b"id: 3\n"
    b"event: delta\n"
    b'data: {"type":"delta","index":0,"text":" world\\n"}\n'
    b"\n"
    b"id: 4\n"
    b"event: finish\n"
    b'data: {"type":"finish","index":0,"reason":"stop"}\n'
    b"\n"
    b"id: 5\n"
    b"event: usage\n"
    b'data: {"type":"usage","prompt_tokens":9,"completion_tokens":3,"total_tokens":12}\n'
    b"\n"
    b"id: 6\n"
    b"event: done\n"
    b'data: {"type":"done"}\n'
    b"\n"
)

WIRE_OPENAI = b": stream open\n" + UPSTREAM  # the upstream's own chunks, verbatim

WIRE_AI_SDK = (
    b": stream open\n"
    b'data: {"type":"start","messageId":"chatcmpl-42"}\n'
    b"\n"
    b'data: {"type":"start-step"}\n'
    b"\n"
    b'data: {"type":"text-start","id":"text-1"}\n'
    b"\n"
    b'data: {"type":"text-delta","id":"text-1","delta":"Hello"}\n'
    b"\n"
    b'data: {"type":"text-delta","id":"text-1","delta":" world\\n"}\n'
    b"\n"
    b'data: {"type":"text-end","id":"text-1"}\n'
    b"\n"
    b'data: {"type":"finish-step"}\n'
    b"\n"
    b'data: {"type":"finish","messageMetadata":{"model":"gpt-4o-mini","finishReason":"stop",'
    b'"usage":{"inputTokens":9,"outputTokens":3,"totalTokens":12}}}\n'
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)

WIRE_AG_UI = (
    b": stream open\n"
    b'data: {"type":"RUN_STARTED","threadId":"chatcmpl-42","runId":"chatcmpl-42",'
    b'"protocolVersion":"1.0"}\n'
    b"\n"
    b'data: {"type":"TEXT_MESSAGE_START","messageId":"chatcmpl-42-1","role":"assistant"}\n'
    b"\n"
    b'data: {"type":"TEXT_MESSAGE_CONTENT","messageId":"chatcmpl-42-1","delta":"Hello"}\n'
    b"\n"
    b'data: {"type":"TEXT_MESSAGE_CONTENT","messageId":"chatcmpl-42-1","delta":" world\\n"}\n'
    b"\n"
    b'data: {"type":"TEXT_MESSAGE_END","messageId":"chatcmpl-42-1"}\n'
    b"\n"
    b'data: {"type":"RUN_FINISHED","threadId":"chatcmpl-42","runId":"chatcmpl-42",'
    b'"usage":[{"model":"gpt-4o-mini","inputTokens":9,"outputTokens":3,"totalTokens":12}]}\n'
    b"\n"
)

WIRE = {
    "text": WIRE_TEXT,
    "ndjson": WIRE_NDJSON,
    "sse": WIRE_SSE,
    "openai": WIRE_OPENAI,
    "ai-sdk": WIRE_AI_SDK,
    "ag-ui": WIRE_AG_UI,
}


def run(fmt: str | Encoder, pieces: list[bytes], *, end: bool = True, **kwargs: Any) -> bytes:
    """Preamble, every piece through feed_bytes, then end(): the whole response body."""
    encoder = encoder_for(fmt, now=0.0) if isinstance(fmt, str) else fmt
    t = Transcoder(encoder, **kwargs)
    out = encoder.preamble()
    for piece in pieces:
        out += t.feed_bytes(piece)
    if end:
        out += t.end()
    return out


# --- wire examples ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_wire_bytes(fmt: str) -> None:
    assert run(fmt, [UPSTREAM]) == WIRE[fmt]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_wire_bytes_do_not_depend_on_how_upstream_bytes_are_split(fmt: str) -> None:
    assert run(fmt, bytewise(UPSTREAM)) == WIRE[fmt]
    crlf = UPSTREAM.replace(b"\n", b"\r\n")
    assert run(fmt, [crlf[:101], crlf[101:]]) == WIRE[fmt]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_wire_bytes_from_parsed_chunks(fmt: str) -> None:
    # A chunk source (the openai SDK) with raw JSON gives the same bytes.
    encoder = encoder_for(fmt, now=0.0)
    t = Transcoder(encoder)
    out = encoder.preamble()
    for raw in [*CHUNKS, None]:
        if raw is None:
            out += t.end()  # the SDK swallows [DONE]; the finish makes the end clean
        else:
            out += t.feed_object(json.loads(raw), raw)
    assert out == WIRE[fmt]  # in openai format, end() synthesizes the [DONE]


def test_wire_examples_are_valid_for_their_clients() -> None:
    # ndjson: every line is JSON.
    assert [json.loads(line)["type"] for line in WIRE_NDJSON.splitlines()] == [
        "start", "delta", "delta", "finish", "usage", "done",
    ]  # fmt: skip
    # sse: ids 1..6, event names match the data's type.
    messages = SSEDecoder().feed(WIRE_SSE)
    assert [m.id for m in messages] == ["1", "2", "3", "4", "5", "6"]
    assert all(json.loads(m.data)["type"] == m.event for m in messages)
    # openai: what openai-python reads, ending with [DONE].
    messages = SSEDecoder().feed(WIRE_OPENAI)
    assert messages[-1].data == "[DONE]"
    text = "".join(
        c["delta"].get("content") or ""
        for m in messages[:-1]
        for c in json.loads(m.data)["choices"]
    )
    assert text.encode() == WIRE_TEXT
    # ai-sdk: UI message chunks, the text-delta parts give the text, then [DONE].
    messages = SSEDecoder().feed(WIRE_AI_SDK)
    assert messages[-1].data == "[DONE]"
    parts = [json.loads(m.data) for m in messages[:-1]]
    assert [p["type"] for p in parts] == [
        "start", "start-step", "text-start", "text-delta", "text-delta", "text-end",
        "finish-step", "finish",
    ]  # fmt: skip
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert text.encode() == WIRE_TEXT
    # ag-ui: one run, its text message's content deltas give the text.
    events = [json.loads(m.data) for m in SSEDecoder().feed(WIRE_AG_UI)]
    assert [e["type"] for e in events] == [
        "RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]  # fmt: skip
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text.encode() == WIRE_TEXT


# --- sse ids and openai's lack of them ------------------------------------------------------


def test_sse_ids_increment_from_1_across_feeds() -> None:
    t = Transcoder(encoder_for("sse", now=0.0))
    ids: list[str | None] = []
    decoder = SSEDecoder()
    for piece in bytewise(UPSTREAM):
        ids += [m.id for m in decoder.feed(t.feed_bytes(piece))]
    ids += [m.id for m in decoder.feed(t.end())]
    assert ids == [str(i) for i in range(1, 7)]
    assert t.events_out == 6


def test_openai_format_never_emits_an_id_line() -> None:
    upstream = b"id: 99\ndata: " + CHUNKS[1].encode() + b"\n\n"  # even if upstream had ids
    out = run("openai", [upstream]) + run("openai", [b"data: {"]) + run("openai", [b"data: x\n\n"])
    assert b"\nid:" not in out and not out.startswith(b"id:")


# --- text source ---------------------------------------------------------------------------


def _text_run(fmt: str, pieces: list[str]) -> bytes:
    t = Transcoder(encoder_for(fmt, now=1700000000.0))
    return b"".join([*(t.feed_text(p) for p in pieces), t.end()])


def test_text_source_text() -> None:
    assert _text_run("text", ["Hel", "", "lo\n", "中"]) == "Hello\n中".encode()


def test_text_source_ndjson() -> None:
    assert _text_run("ndjson", ["Hi", "!"]) == (
        b'{"type":"start","id":"","model":""}\n'
        b'{"type":"delta","index":0,"text":"Hi"}\n'
        b'{"type":"delta","index":0,"text":"!"}\n'
        b'{"type":"finish","index":0,"reason":"stop"}\n'
        b'{"type":"done"}\n'
    )


def test_text_source_openai_synthesizes_chunks() -> None:
    head = b'{"id":"chatcmpl-streamrelay","object":"chat.completion.chunk","created":1700000000,"model":"",'
    assert _text_run("openai", ["Hi"]) == (
        b"data: "
        + head
        + b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b"data: " + head + b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )


def test_text_source_of_only_empty_pieces_ends_cleanly() -> None:
    # Regression: an empty answer was reported as a truncated upstream.
    assert _text_run("ndjson", ["", ""]) == (
        b'{"type":"start","id":"","model":""}\n'
        b'{"type":"finish","index":0,"reason":"stop"}\n'
        b'{"type":"done"}\n'
    )


# --- chunk source and raw passthrough ----------------------------------------------------

AZURE_FILTER = (
    '{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
    '[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}'
)


def test_azure_filter_chunk_passes_through_unchanged_in_openai_format() -> None:
    t = Transcoder(encoder_for("openai", now=0.0))
    assert t.feed_bytes(b"data: " + AZURE_FILTER.encode() + b"\n\n") == (
        b"data: " + AZURE_FILTER.encode() + b"\n\n"
    )
    t = Transcoder(encoder_for("openai", now=0.0))
    assert t.feed_object(json.loads(AZURE_FILTER), AZURE_FILTER) == (
        b"data: " + AZURE_FILTER.encode() + b"\n\n"
    )


@pytest.mark.parametrize("fmt", ["text", "ndjson", "sse", "ai-sdk", "ag-ui"])
def test_azure_filter_chunk_produces_nothing_in_other_formats(fmt: str) -> None:
    t = Transcoder(encoder_for(fmt, now=0.0))
    assert t.feed_bytes(b"data: " + AZURE_FILTER.encode() + b"\n\n") == b""
    assert t.feed_object(json.loads(AZURE_FILTER), AZURE_FILTER) == b""
    assert t.events_out == 0


def test_chunk_without_raw_in_openai_format_is_synthesized() -> None:
    encoder = OpenAIEncoder(now=1.0)
    t = Transcoder(encoder)
    assert t.feed_object(json.loads(AZURE_FILTER)) == b""  # no events, nothing to say
    out = t.feed_object(json.loads(CHUNKS[1]))
    assert json.loads(out.removeprefix(b"data: ")) == {
        "id": "chatcmpl-42",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
    }


def test_role_only_chunk_passes_through_in_openai_format() -> None:
    t = Transcoder(encoder_for("openai", now=0.0))
    assert t.feed_bytes(b"data: " + CHUNKS[0].encode() + b"\n\n") == (
        b"data: " + CHUNKS[0].encode() + b"\n\n"
    )


# --- terminal behavior ------------------------------------------------------------------------


def _assert_inert(t: Transcoder) -> None:
    assert t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\n") == b""
    assert t.feed_object(json.loads(CHUNKS[1]), CHUNKS[1]) == b""
    assert t.feed_text("more") == b""
    assert t.end() == b""
    assert t.fail(Error("late", "x")) == b""
    assert t.heartbeat() == b""


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_nothing_after_done(fmt: str) -> None:
    t = Transcoder(encoder_for(fmt, now=0.0))
    t.feed_bytes(UPSTREAM + b"data: " + CHUNKS[2].encode() + b"\n\n")
    assert t.terminated and t.error is None
    _assert_inert(t)


def test_bytes_after_done_in_the_same_chunk_are_dropped() -> None:
    out = run("ndjson", [UPSTREAM + b"data: " + CHUNKS[1].encode() + b"\n\n"], end=False)
    assert out == WIRE_NDJSON


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_nothing_after_an_error(fmt: str) -> None:
    t = Transcoder(encoder_for(fmt, now=0.0))
    t.feed_bytes(b'data: {"error":{"message":"m"}}\n\n')
    assert t.terminated and t.error == Error("m", "upstream_error")
    _assert_inert(t)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", b""),
        ("ndjson", b'{"type":"error","message":"idle","code":"upstream_timeout"}\n'),
        (
            "sse",
            b'id: 1\nevent: error\ndata: {"type":"error","message":"idle","code":"upstream_timeout"}\n\n',
        ),
        (
            "openai",
            b'data: {"error":{"message":"idle","type":"server_error","code":"upstream_timeout"}}\n\n',
        ),
        (
            "ai-sdk",
            b'data: {"type":"error","errorText":"idle (upstream_timeout)"}\n\ndata: [DONE]\n\n',
        ),
        (
            "ag-ui",
            b'data: {"type":"RUN_STARTED","threadId":"run-0","runId":"run-0",'
            b'"protocolVersion":"1.0"}\n\n'
            b'data: {"type":"RUN_ERROR","message":"idle","code":"upstream_timeout"}\n\n',
        ),
    ],
)
def test_fail(fmt: str, expected: bytes) -> None:
    t = Transcoder(encoder_for(fmt, now=0.0))
    assert t.fail(Error("idle", "upstream_timeout")) == expected
    assert t.terminated and t.error == Error("idle", "upstream_timeout")
    _assert_inert(t)


def test_fail_mid_stream_keeps_what_was_sent() -> None:
    t = Transcoder(encoder_for("ndjson", now=0.0))
    out = t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\n")
    out += t.fail(Error("the upstream connection closed mid-stream", "upstream_closed"))
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["start", "delta", "error"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", b""),
        ("ndjson", b'{"type":"ping"}\n'),
        ("sse", b": ping\n"),
        ("openai", b": ping\n"),
        ("ai-sdk", b": ping\n"),
        ("ag-ui", b": ping\n"),
    ],
)
def test_heartbeat(fmt: str, expected: bytes) -> None:
    t = Transcoder(encoder_for(fmt, now=0.0))
    assert t.heartbeat() == expected
    t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\n")
    assert t.heartbeat() == expected
    t.end()
    assert t.heartbeat() == b""


def test_heartbeat_does_not_change_sse_ids() -> None:
    t = Transcoder(encoder_for("sse", now=0.0))
    t.heartbeat()
    assert t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\n").startswith(b"id: 1\n")


# --- end of stream ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_end_after_finish_without_done_marker_is_clean(fmt: str) -> None:
    upstream = UPSTREAM.removesuffix(b"data: [DONE]\n\n")
    out = run(fmt, [upstream])
    assert out == WIRE[fmt]  # openai synthesizes the missing [DONE]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_end_before_finish_is_truncated(fmt: str) -> None:
    t = Transcoder(encoder_for(fmt, now=0.0))
    t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\n")
    out = t.end()
    assert t.error is not None and t.error.code == "upstream_truncated"
    if fmt == "text":
        assert out == b""  # the pipeline aborts the response instead
    else:
        assert b"upstream_truncated" in out


def test_unterminated_final_event_is_discarded() -> None:
    # "data: [DONE]" without its blank line never completed; the finish did.
    upstream = UPSTREAM.removesuffix(b"\n\n")
    assert run("ndjson", [upstream]) == WIRE_NDJSON
    t = Transcoder(encoder_for("ndjson", now=0.0))
    t.feed_bytes(b"data: " + CHUNKS[3].encode())  # the finish itself never completed
    assert b"upstream_truncated" in t.end()


def test_empty_upstream_is_truncated() -> None:
    t = Transcoder(encoder_for("sse", now=0.0))
    assert t.end() == (
        b"id: 1\nevent: error\ndata: "
        b'{"type":"error","message":"the upstream stream ended before the response was complete",'
        b'"code":"upstream_truncated"}\n\n'
    )


# --- upstream errors ------------------------------------------------------------------------

OPENAI_ERROR = (
    b'data: {"error":{"message":"The server had an error while processing your request.",'
    b'"type":"server_error","param":null,"code":null}}\n\n'
)
VLLM_ERROR = (
    b'data: {"object":"error","message":"out of memory","type":"InternalServerError",'
    b'"param":null,"code":500}\n\n'
)


def test_mid_stream_error_in_openai_format() -> None:
    out = run("openai", [b"data: " + CHUNKS[1].encode() + b"\n\n", OPENAI_ERROR])
    assert out.endswith(
        b'data: {"error":{"message":"The server had an error while processing your request.",'
        b'"type":"server_error","code":"server_error"}}\n\n'
    )
    assert b"[DONE]" not in out


def test_mid_stream_legacy_error_in_openai_format() -> None:
    out = run("openai", [b"data: " + CHUNKS[1].encode() + b"\n\n", VLLM_ERROR])
    assert out.endswith(
        b'data: {"error":{"message":"out of memory","type":"server_error",'
        b'"code":"InternalServerError","status":500}}\n\n'
    )
    (last,) = SSEDecoder().feed(out)[-1:]
    assert json.loads(last.data)["error"]["message"] == "out of memory"


def test_mid_stream_error_in_ndjson_and_sse() -> None:
    ndjson = run("ndjson", [VLLM_ERROR])
    assert ndjson == (
        b'{"type":"error","message":"out of memory","code":"InternalServerError","status":500}\n'
    )
    sse = run("sse", [VLLM_ERROR])
    assert sse.endswith(
        b'id: 1\nevent: error\ndata: {"type":"error","message":"out of memory",'
        b'"code":"InternalServerError","status":500}\n\n'
    )


def test_error_in_text_format_sets_error_so_the_pipeline_can_abort() -> None:
    encoder = encoder_for("text", now=0.0)
    t = Transcoder(encoder)
    assert t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\n") == b"Hello"
    assert t.feed_bytes(OPENAI_ERROR) == b""
    assert encoder.aborts_on_error
    assert t.terminated
    assert t.error == Error(
        "The server had an error while processing your request.", "server_error"
    )


@pytest.mark.parametrize(
    ("upstream", "code"),
    [
        (b"data: not json\n\n", "upstream_invalid"),
        (b"data: [1,2]\n\n", "upstream_invalid"),
        (b'data: {"a":\xff}\n\n', "upstream_invalid"),
        (b"data: " + b"x" * 300, "event_too_large"),
    ],
)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_broken_upstream_becomes_an_error_event(upstream: bytes, code: str, fmt: str) -> None:
    t = Transcoder(encoder_for(fmt, now=0.0), max_event_bytes=256)
    out = t.feed_bytes(upstream)
    assert t.terminated and t.error is not None and t.error.code == code
    if fmt == "text":
        assert out == b""
    elif fmt == "openai":
        assert json.loads(SSEDecoder().feed(out)[0].data)["error"]["code"] == code
    elif fmt == "ndjson":
        assert json.loads(out)["code"] == code
    elif fmt == "sse":
        assert json.loads(SSEDecoder().feed(out)[0].data)["code"] == code
    elif fmt == "ai-sdk":
        # The code is in brackets at the end of the error part's errorText; [DONE] follows.
        messages = SSEDecoder().feed(out)
        assert [m.data for m in messages].count("[DONE]") == 1 and messages[-1].data == "[DONE]"
        part = json.loads(messages[-2].data)
        assert part["type"] == "error" and part["errorText"].endswith(f" ({code})")
    elif fmt == "ag-ui":
        # The run opens and ends with RUN_ERROR, which carries the code.
        events = [json.loads(m.data) for m in SSEDecoder().feed(out)]
        assert [e["type"] for e in events] == ["RUN_STARTED", "RUN_ERROR"]
        assert events[-1]["code"] == code
    else:
        pytest.fail(f"no check of where format {fmt!r} puts the error code")
    _assert_inert(t)


def test_events_before_bad_bytes_in_the_same_chunk_are_delivered() -> None:
    # Regression: the SSE decoder's exception swallowed the good delta before it.
    t = Transcoder(encoder_for("ndjson", now=0.0))
    out = t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\ndata: \xff\n\n")
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["start", "delta", "error"]
    assert t.error is not None and t.error.code == "upstream_invalid"


def test_events_before_an_oversize_line_in_the_same_chunk_are_delivered() -> None:
    t = Transcoder(encoder_for("text", now=0.0), max_event_bytes=300)
    assert t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\n: " + b"c" * 400) == b"Hello"
    assert t.error is not None and t.error.code == "event_too_large"


def test_events_before_non_json_in_the_same_chunk_are_delivered() -> None:
    t = Transcoder(encoder_for("text", now=0.0))
    assert t.feed_bytes(b"data: " + CHUNKS[1].encode() + b"\n\ndata: oops\n\n") == b"Hello"
    assert t.error is not None and t.error.code == "upstream_invalid"


# --- Responses API streams --------------------------------------------------------------------

RESPONSES = (
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_1","model":"gpt-4.1"}}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","output_index":0,"delta":"Hi"}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"resp_1","model":"gpt-4.1",'
    b'"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}}}\n\n'
)


def test_responses_stream_in_ndjson() -> None:
    assert run("ndjson", [RESPONSES]) == (
        b'{"type":"start","id":"resp_1","model":"gpt-4.1"}\n'
        b'{"type":"delta","index":0,"text":"Hi"}\n'
        b'{"type":"finish","index":0,"reason":"stop"}\n'
        b'{"type":"usage","prompt_tokens":3,"completion_tokens":1,"total_tokens":4}\n'
        b'{"type":"done"}\n'
    )


def test_responses_stream_in_openai_format_is_the_upstream_wire_unchanged() -> None:
    # Event lines kept, no [DONE] added: what OpenAI sends and its SDKs expect.
    out = run("openai", [RESPONSES])
    assert out == b": stream open\n" + RESPONSES
    assert b"[DONE]" not in out


def test_responses_stream_split_anywhere_is_unchanged_in_openai_format() -> None:
    for cut in range(1, len(RESPONSES)):
        assert run("openai", [RESPONSES[:cut], RESPONSES[cut:]]) == b": stream open\n" + RESPONSES


def test_responses_events_as_parsed_chunks_get_their_event_lines() -> None:
    t = Transcoder(encoder_for("openai", now=0.0))
    out = b""
    for message in SSEDecoder().feed(RESPONSES):
        out += t.feed_object(json.loads(message.data), message.data)
    assert out == RESPONSES and t.terminated and t.error is None


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(FORMATS)), st.lists(st.integers(0, len(UPSTREAM)), max_size=15))
def test_any_split_gives_the_same_wire_bytes(fmt: str, cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [UPSTREAM[a:b] for a, b in itertools.pairwise([0, *points, len(UPSTREAM)])]
    assert run(fmt, pieces) == WIRE[fmt]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(FORMATS)),
    st.lists(
        st.binary(max_size=40)
        | st.sampled_from([UPSTREAM[:70], OPENAI_ERROR, VLLM_ERROR, b"data: [DONE]\n\n", b"\n\n"]),
        max_size=6,
    ),
)
def test_arbitrary_upstream_bytes_never_raise_and_always_end(fmt: str, pieces: list[bytes]) -> None:
    encoder = encoder_for(fmt, now=0.0)
    t = Transcoder(encoder, max_event_bytes=64)
    for piece in pieces:
        t.feed_bytes(piece)
        t.heartbeat()
    t.end()
    assert t.terminated
    _assert_inert(t)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=6))
def test_text_source_round_trips_in_every_format(pieces: list[str]) -> None:
    text = "".join(pieces)
    wire = {}
    for fmt in FORMATS:
        t = Transcoder(encoder_for(fmt, now=0.0))
        wire[fmt] = b"".join([*(t.feed_text(p) for p in pieces), t.end()])
        assert t.error is None
    assert wire["text"] == text.encode("utf-8", "replace")
    lines = [json.loads(line) for line in wire["ndjson"].split(b"\n") if line]
    assert "".join(e["text"] for e in lines if e["type"] == "delta") == text
    assert lines[-1] == Done().to_dict()
