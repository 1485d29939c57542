"""A fuzz target for the decoding chain: upstream bytes -> SSE decoder -> OpenAI decoder.

The inputs are OpenAI-style streams (every framing the simulator can produce:
LF/CR/CRLF, comments, multi-line data, a BOM, errors mid-stream, ``[DONE]`` or
not) that hypothesis then corrupts: bytes flipped, inserted, deleted or
duplicated, the stream cut short, a line made endless. Whatever comes in:

* the decoders raise only :class:`~streamrelay.ProtocolError` (with its
  documented ``code``), never anything else;
* however the bytes are split, the outcome is the same (the events before a
  failure, and the failure);
* the relay's :class:`~streamrelay.transcoder.Transcoder` never raises and ends
  every stream with exactly one terminal event in every format;
* memory stays bounded by ``max_event_bytes`` on an endless line or event.

CI runs ``STREAMRELAY_FUZZ_EXAMPLES`` examples per property (default 200). A
longer run, e.g. before a release::

    STREAMRELAY_FUZZ_EXAMPLES=200000 .venv/bin/pytest tests/test_fuzz.py -p no:randomly

hypothesis keeps any failing example in ``.hypothesis/`` and replays it first.
"""

from __future__ import annotations

import json
import os
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splits import random_splits
from streamrelay.errors import EventTooLarge, ProtocolError
from streamrelay.events import Done, Error
from streamrelay.formats import FORMATS, encoder_for
from streamrelay.openai import ChunkDecoder
from streamrelay.sse import SSEDecoder
from streamrelay.transcoder import Transcoder

EXAMPLES = int(os.environ.get("STREAMRELAY_FUZZ_EXAMPLES", "200"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMIT = 512  # max_event_bytes in the fuzzed decoders (small, so that the limit is hit)
CODES = {"upstream_invalid", "event_too_large"}

NASTY = [
    b"\n", b"\r", b"\r\n", b"\n\n", b"data: ", b"data:", b"[DONE]", b"data: [DONE]\n\n",
    b": ping\n\n", b"event: x\n", b"id: 1\n", b"retry: 5\n", b"\xef\xbb\xbf", b"\x00",
    b"\xff", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"{", b"}", b'"', b"\\", b"\\u00",
    b'{"error":{"message":"x","code":"y"}}', b'{"object":"error","message":"m"}',
    b'"finish_reason":"stop"', b'{"choices":[]}', b"null", b"[", b"]",
]  # fmt: skip


def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fuzz",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


@st.composite
def openai_streams(draw: st.DrawFn) -> bytes:
    """A well-formed OpenAI chat stream in any framing the simulator uses."""
    eol = draw(st.sampled_from([b"\n", b"\r", b"\r\n"]))
    comments = draw(st.booleans())
    multiline = draw(st.booleans())
    pieces = draw(st.lists(st.text(max_size=6), max_size=6))
    n = draw(st.sampled_from([1, 2]))
    payloads: list[Any] = [chunk(i, {"role": "assistant", "content": ""}) for i in range(n)]
    payloads += [chunk(i % n, {"content": p}) for i, p in enumerate(pieces)]
    ending = draw(st.sampled_from(["done", "no_done", "truncate", "error", "legacy"]))
    if ending == "error":
        payloads.append({"error": {"message": "boom", "type": "server_error", "code": "e"}})
    elif ending == "legacy":
        payloads.append({"object": "error", "message": "boom", "type": "X", "code": 500})
    elif ending != "truncate":
        payloads += [chunk(i, {}, "stop") for i in range(n)]
    out = bytearray(b"\xef\xbb\xbf" if draw(st.booleans()) else b"")
    for payload in payloads:
        if comments:
            out += b": keep-alive" + eol + eol
        text = json.dumps(payload, ensure_ascii=draw(st.booleans()), separators=(",", ":"))
        lines = text.replace(",", ",\n").split("\n") if multiline else [text]
        for line in lines:
            out += b"data: " + line.encode("utf-8", "surrogatepass") + eol
        out += eol
    if ending == "done":
        out += b"data: [DONE]" + eol + eol
    return bytes(out)


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    """A stream with a few mutations, or plain noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=600))
    data = bytearray(draw(openai_streams()))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "cut", "long"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(NASTY) | st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif kind == "cut":
            del data[at:]
        else:  # a line far over the limit
            data[at:at] = b"x" * draw(st.integers(LIMIT, 3 * LIMIT))
    return bytes(data)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    return draw(random_splits(data, max_cuts=16))


def decode(pieces: list[bytes]) -> tuple[list[Any], str | None]:
    """The decoders by hand: (every event, the failure code or None)."""
    sse = SSEDecoder(max_event_bytes=LIMIT)
    chunks = ChunkDecoder()
    events: list[Any] = []
    try:
        for piece in pieces:
            for message in sse.feed(piece):
                events += chunks.feed(message.data)
                if chunks.terminated:
                    return events, None
        for message in sse.close():
            events += chunks.feed(message.data)
        events += chunks.close()
    except ProtocolError as exc:  # the only exception the decoders may raise
        assert exc.code in CODES, exc
        assert isinstance(exc, EventTooLarge) == (exc.code == "event_too_large")
        return events, exc.code
    return events, None


@fuzz
@given(st.data())
def test_decoders_raise_only_protocol_errors_and_ignore_splits(data: st.DataObject) -> None:
    stream = data.draw(corrupted())
    whole = decode([stream])
    assert decode(data.draw(splits(stream))) == whole
    events, failure = whole
    if failure is None and events:
        # Without a decoding failure the chunk decoder always reaches a verdict.
        assert type(events[-1]) in (Done, Error), events[-3:]


@fuzz
@given(st.data())
def test_the_transcoder_always_ends_once_in_every_format(data: st.DataObject) -> None:
    stream = data.draw(corrupted())
    pieces = data.draw(splits(stream))
    for fmt in FORMATS:
        t = Transcoder(encoder_for(fmt, now=0.0), max_event_bytes=LIMIT)
        wire = b"".join([*(t.feed_bytes(p) for p in pieces), t.end()])
        assert t.terminated
        again = Transcoder(encoder_for(fmt, now=0.0), max_event_bytes=LIMIT)
        assert b"".join([again.feed_bytes(stream), again.end()]) == wire, fmt
        if fmt == "ndjson":
            lines = [json.loads(line) for line in wire.split(b"\n") if line]
            kinds = [e["type"] for e in lines]
            assert kinds.count("done") + kinds.count("error") == 1, kinds
            assert kinds[-1] in ("done", "error")
        elif fmt == "openai":
            assert wire.count(b"data: [DONE]\n\n") == (t.error is None)


def test_memory_stays_bounded_on_endless_input() -> None:
    """10 MB of one endless line, then of one endless event, in 4 KiB reads: the
    decoder holds at most about ``max_event_bytes`` and then fails cleanly."""
    for filler in (b"x" * 4096, b"data: " + b"y" * 4090):
        t = Transcoder(encoder_for("ndjson", now=0.0), max_event_bytes=64 * 1024)
        tracemalloc.start()
        try:
            out = b""
            sep = b"" if filler.startswith(b"x") else b"\n"
            for _ in range(2560):
                out += t.feed_bytes(filler + sep)
                if t.terminated:
                    break
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert t.error is not None and t.error.code == "event_too_large", out[-200:]
        assert peak < 1024 * 1024, peak
