"""Round trips: whatever a token contains, every format carries it back exactly.

Encoders feed decoders (the relay's own SSE decoder, ``json``, httpx's line
splitter, the ChunkDecoder) and the text must come back unchanged, with no
extra line, event, field or ``[DONE]`` that a token could forge.

What happens to lone surrogates (which cannot be UTF-8) is documented at the
end: JSON formats escape them, raw text and raw SSE data replace them with
``?``; nothing raises.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from httpx._decoders import LineDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrelay.events import (
    Delta,
    Done,
    Error,
    Event,
    Finish,
    Refusal,
    Start,
    ToolCall,
    Usage,
)
from streamrelay.formats import FORMATS, NDJSONEncoder, OpenAIEncoder, SSEEncoder, TextEncoder
from streamrelay.openai import ChunkDecoder
from streamrelay.sse import ServerSentEvent, SSEDecoder, encode_event
from streamrelay.transcoder import Transcoder

NASTY = [
    "\n", "\r", "\r\n", "\n\n", "\r\r", "\n\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c",
    "data: ", "data:", "[DONE]", "data: [DONE]\n\n", "event: x\n", "id: 9\n", "retry: 1\n",
    ": comment\n", "\ufeff", "\x00", "\\", '"', "}", "\\n", '{"type":"done"}\n', "😀", "中", " ",
]  # fmt: skip
tokens = st.text() | st.lists(st.sampled_from(NASTY) | st.text(max_size=4), max_size=8).map("".join)
single_line = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
)


def sse_lines(text: str) -> str:
    """What SSE can carry of a text: its line breaks, normalized to LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def python_lines(body: bytes) -> list[str]:
    """Lines as httpx's ``iter_lines()`` (``str.splitlines``) cuts them."""
    decoder = LineDecoder()
    return [line for line in decoder.decode(body.decode()) + decoder.flush() if line]


def all_events(text: str) -> list[Event]:
    """Every event type, with ``text`` in every string field a token can reach."""
    return [
        Start(text, text),
        Delta(0, text),
        Delta(1, text),
        Refusal(0, text),
        ToolCall(0, 0, text, id=text, name=text),
        ToolCall(0, 1, text),
        Finish(0, text),
        Usage(1, 2, 3),
        Error(text, text, 500),
    ]


# --- encode_event ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(tokens)
def test_encode_event_round_trips(text: str) -> None:
    (event,) = SSEDecoder().feed(encode_event(text))
    assert event == ServerSentEvent(sse_lines(text))
    if "\r" not in text:
        assert event.data == text  # exact


@settings(max_examples=300, deadline=None)
@given(tokens, single_line, single_line)
def test_encode_event_with_fields_round_trips(text: str, name: str, id: str) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(encode_event(text, event=name, id=id, retry=5))
    assert events == [ServerSentEvent(sse_lines(text), name or "message", id, 5)]


@settings(max_examples=200, deadline=None)
@given(st.lists(tokens, max_size=6), st.lists(st.integers(0, 400), max_size=10))
def test_a_stream_of_encoded_events_splits_anywhere(texts: list[str], cuts: list[int]) -> None:
    stream = b"".join(encode_event(t) for t in texts)
    points = sorted({c for c in cuts if 0 < c < len(stream)})
    decoder = SSEDecoder()
    events = []
    for a, b in itertools.pairwise([0, *points, len(stream)]):
        events += decoder.feed(stream[a:b])
    assert [e.data for e in events] == [sse_lines(t) for t in texts]


# --- the four formats -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(tokens)
def test_ndjson_round_trips_and_no_token_makes_a_line(text: str) -> None:
    events = all_events(text)
    body = NDJSONEncoder(now=0.0).encode(events, None)
    lines = body.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(events) + 1
    assert [json.loads(line) for line in lines[:-1]] == [e.to_dict() for e in events]
    # Clients that split on every Unicode line boundary (httpx iter_lines) agree.
    assert [json.loads(line) for line in python_lines(body)] == [e.to_dict() for e in events]


@settings(max_examples=300, deadline=None)
@given(tokens)
def test_sse_format_round_trips_and_no_token_makes_a_field(text: str) -> None:
    events = all_events(text)
    encoder = SSEEncoder(now=0.0)
    messages = SSEDecoder().feed(encoder.preamble() + encoder.encode(events, None))
    assert [json.loads(m.data) for m in messages] == [e.to_dict() for e in events]
    assert [m.event for m in messages] == [e.type for e in events]
    assert [m.id for m in messages] == [str(i) for i in range(1, len(events) + 1)]
    assert all(m.retry is None for m in messages)
    # Line-splitting clients see exactly three lines per event.
    assert len(python_lines(encoder.encode(events, None))) == 3 * len(events)


@settings(max_examples=300, deadline=None)
@given(tokens, tokens)
def test_openai_format_round_trips_through_sse_and_json(text: str, other: str) -> None:
    # Synthesized chunks decode back to the same events.
    events: list[Event] = [
        Start("chatcmpl-x", "m"),
        Delta(0, text),
        Refusal(0, other),
        ToolCall(0, 0, text, id="call_1", name="f"),
        ToolCall(0, 0, other),
        Delta(1, other),
        Finish(0, "stop"),
        Finish(1, "length"),
        Usage(4, 5, 9),
        Done(),
    ]
    body = OpenAIEncoder(now=0.0).encode(events, None)
    decoder = ChunkDecoder()
    decoded: list[Event] = []
    messages = SSEDecoder().feed(body)
    for message in messages:
        assert message.id is None and message.event == "message"
        decoded += decoder.feed(message.data)
    # An empty content or refusal is no event, on the way in as on the way back.
    assert decoded == [e for e in events if not isinstance(e, (Delta, Refusal)) or e.text]
    # Only the real end is a [DONE], whatever the tokens say.
    assert [m.data for m in messages].count("[DONE]") == 1 and messages[-1].data == "[DONE]"


@settings(max_examples=300, deadline=None)
@given(tokens)
def test_openai_error_round_trips(text: str) -> None:
    body = OpenAIEncoder(now=0.0).encode([Error(text, text, 429)], None)
    (message,) = SSEDecoder().feed(body)
    assert json.loads(message.data) == {
        "error": {"message": text, "type": "server_error", "code": text, "status": 429}
    }
    (line,) = python_lines(body)
    assert json.loads(line.removeprefix("data: "))["error"]["message"] == text


@settings(max_examples=300, deadline=None)
@given(tokens)
def test_text_format_is_exactly_choice_zero_content(text: str) -> None:
    assert TextEncoder(now=0.0).encode(all_events(text), None) == text.encode()


# --- the whole way: upstream SSE bytes -> Transcoder -> client ----------------------------------


def upstream_bytes(pieces: list[str]) -> bytes:
    """An OpenAI-style upstream streaming ``pieces`` as content, ending cleanly."""
    chunks: list[dict[str, Any]] = [
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    ]
    for piece in pieces:
        chunks.append(
            {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": piece}}]}
        )
        chunks.append(
            {"id": "c", "model": "m", "choices": [{"index": 1, "delta": {"refusal": piece}}]}
        )
    chunks.append(
        {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    chunks.append(
        {"id": "c", "model": "m", "choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]}
    )
    body = b"".join(
        encode_event(json.dumps(c, ensure_ascii=bool(i % 2))) for i, c in enumerate(chunks)
    )
    return body + b"data: [DONE]\n\n"


def client_text(fmt: str, body: bytes) -> str:
    """What a client of format ``fmt`` reads as choice 0's content."""
    if fmt == "text":
        return body.decode()
    if fmt == "ndjson":
        events = [json.loads(line) for line in body.split(b"\n") if line]
        assert events[-1] == {"type": "done"}
        return "".join(e["text"] for e in events if e["type"] == "delta" and e["index"] == 0)
    messages = SSEDecoder().feed(body)
    if fmt == "sse":
        assert messages[-1].event == "done"
        return "".join(
            json.loads(m.data)["text"]
            for m in messages
            if m.event == "delta" and json.loads(m.data)["index"] == 0
        )
    if fmt == "ai-sdk":
        # useChat's reader: UI message chunks, the text is in the text-delta parts.
        assert messages[-1].data == "[DONE]"
        assert sum(m.data == "[DONE]" for m in messages) == 1
        parts = [json.loads(m.data) for m in messages[:-1]]
        assert parts[-1]["type"] == "finish"
        return "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    if fmt == "ag-ui":
        # HttpAgent's reader: one run, the text is in the TEXT_MESSAGE_CONTENT deltas.
        events = [json.loads(m.data) for m in messages]
        assert events[0]["type"] == "RUN_STARTED" and events[-1]["type"] == "RUN_FINISHED"
        assert sum(e["type"] == "RUN_FINISHED" for e in events) == 1
        return "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert fmt == "openai", f"no client for format {fmt!r}"
    assert messages[-1].data == "[DONE]"
    assert sum(m.data == "[DONE]" for m in messages) == 1
    out = []
    for m in messages[:-1]:
        for choice in json.loads(m.data)["choices"]:
            if choice["index"] == 0:
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


@settings(max_examples=150, deadline=None)
@given(st.lists(tokens, max_size=5), st.sampled_from(list(FORMATS)), st.integers(1, 50))
def test_tokens_survive_the_whole_relay(pieces: list[str], fmt: str, step: int) -> None:
    upstream = upstream_bytes(pieces)
    encoder = FORMATS[fmt](now=0.0)
    t = Transcoder(encoder)
    body = encoder.preamble()
    for i in range(0, len(upstream), step):
        body += t.feed_bytes(upstream[i : i + step])
    body += t.end()
    assert t.error is None
    assert client_text(fmt, body) == "".join(pieces)


# --- lone surrogates: documented behavior, never an exception ------------------------------------

surrogate_text = st.lists(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.text(max_size=3), max_size=6
).map("".join)


@settings(max_examples=150, deadline=None)
@given(surrogate_text)
def test_lone_surrogates_never_crash_an_encoder(text: str) -> None:
    events = all_events(text)
    # Raw text and raw SSE data cannot hold them: each becomes "?".
    assert TextEncoder(now=0.0).encode(events, None) == text.encode("utf-8", "replace")
    (message,) = SSEDecoder().feed(encode_event(text))
    assert message.data == sse_lines(text).encode("utf-8", "replace").decode()
    # JSON formats escape them ("\ud83d"), exactly like json.dumps: the same code
    # units come back (and an escaped pair is one character again, as in JSON).
    expected = [json.loads(json.dumps(e.to_dict())) for e in events]
    ndjson = NDJSONEncoder(now=0.0).encode(events, None)
    assert [json.loads(line) for line in ndjson.splitlines()] == expected
    sse = SSEDecoder().feed(SSEEncoder(now=0.0).encode(events, None))
    assert [json.loads(m.data) for m in sse] == expected
    chunks = SSEDecoder().feed(OpenAIEncoder(now=0.0).encode([Delta(0, text), Done()], None))
    content = json.loads(chunks[0].data)["choices"][0]["delta"]["content"]
    assert content == json.loads(json.dumps(text))
    # A caller-provided raw chunk holding them is replaced, not raised on.
    OpenAIEncoder(now=0.0).encode([Delta(0, text)], '{"x":"' + text + '"}')


@settings(max_examples=100, deadline=None)
@given(surrogate_text)
def test_lone_surrogates_in_text_sources_never_crash(text: str) -> None:
    for fmt in FORMATS:
        t = Transcoder(FORMATS[fmt](now=0.0))
        t.feed_text(text)
        t.end()
        assert t.error is None
