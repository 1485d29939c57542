"""Micro-benchmarks of streamrelay's sans-I/O core, in this process (no sockets).

- ``SSEDecoder.feed``: MB/s with 64 KiB reads (a fast upstream) and events/s with one
  event per read (a paced upstream: the common case);
- ``ChunkDecoder.feed``: chat.completion.chunk payloads decoded per second;
- each format's encoder: content deltas encoded per second;
- ``Transcoder.feed_bytes`` per format: upstream bytes in, client bytes out, µs per token.

Each figure is the best of several repeats, so it shows what the code costs rather
than what else the machine was doing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["corpus", "run"]

_WORDS = (
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " a",
    " lazy",
    " dog",
    ".",
    "\n",
    " é",
    " 🙂",
)
_PREFIX = (
    '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    '"model":"bench-model","system_fingerprint":"fp_bench","choices":[{"index":0,'
)


def corpus(tokens: int) -> list[bytes]:
    """One upstream stream as SSE events: a role chunk, ``tokens`` content chunks, finish, ``[DONE]``."""
    import json

    events = [
        _PREFIX
        + '"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}'
    ]
    for i in range(tokens):
        content = json.dumps(_WORDS[i % len(_WORDS)])
        events.append(
            _PREFIX + f'"delta":{{"content":{content}}},"logprobs":null,"finish_reason":null}}]}}'
        )
    events.append(_PREFIX + '"delta":{},"logprobs":null,"finish_reason":"stop"}]}')
    events.append("[DONE]")
    return [f"data: {e}\n\n".encode() for e in events]


def _best_of(repeats: int, body: Callable[[], None]) -> float:
    """The fastest of ``repeats`` timed calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - start)
    return best


def run(quick: bool = False) -> dict[str, Any]:
    """Run every micro-benchmark the installed streamrelay supports."""
    tokens = 2_000 if quick else 10_000
    repeats = 3 if quick else 7
    events = corpus(tokens)
    stream = b"".join(events)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}

    def record(name: str, value: float, unit: str, note: str = "") -> None:
        results.append({"name": name, "value": round(value, 2), "unit": unit, "note": note})

    benches: list[tuple[str, Callable[[], None]]] = [
        ("SSE decoder", lambda: _sse_decoder(stream, events, repeats, record)),
        ("chunk decoder", lambda: _chunk_decoder(events, repeats, record)),
        ("encoders", lambda: _encoders(events, repeats, record)),
        ("transcoder", lambda: _transcoder(events, tokens, repeats, record)),
    ]
    for name, bench in benches:
        try:
            bench()
        except Exception as exc:  # the core's API may move; say so instead of failing the run
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return {"tokens": tokens, "repeats": repeats, "results": results, "skipped": skipped}


Recorder = Callable[..., None]


def _sse_decoder(stream: bytes, events: list[bytes], repeats: int, record: Recorder) -> None:
    from streamrelay.sse import SSEDecoder

    pieces = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]

    def big_reads() -> None:
        decoder = SSEDecoder()
        for piece in pieces:
            decoder.feed(piece)

    def one_event_per_read() -> None:
        decoder = SSEDecoder()
        for event in events:
            decoder.feed(event)

    seconds = _best_of(repeats, big_reads)
    record("SSEDecoder.feed, 64 KiB reads", len(stream) / seconds / 1e6, "MB/s")
    seconds = _best_of(repeats, one_event_per_read)
    record("SSEDecoder.feed, one event per read", len(events) / seconds / 1e3, "k events/s")
    record("SSEDecoder.feed, one event per read (per event)", seconds / len(events) * 1e6, "µs")


def _chunk_decoder(events: list[bytes], repeats: int, record: Recorder) -> None:
    from streamrelay.openai import ChunkDecoder

    payloads = [e[len(b"data: ") : -2].decode() for e in events]

    def decode() -> None:
        decoder = ChunkDecoder()
        for payload in payloads:
            decoder.feed(payload)

    seconds = _best_of(repeats, decode)
    record(
        "ChunkDecoder.feed (JSON parse + normalize)", len(payloads) / seconds / 1e3, "k chunks/s"
    )


def _encoders(events: list[bytes], repeats: int, record: Recorder) -> None:
    from streamrelay.formats import FORMATS, encoder_for
    from streamrelay.openai import ChunkDecoder

    decoder = ChunkDecoder()
    decoded = [(decoder.feed(e[6:-2].decode()), e[6:-2].decode()) for e in events]
    for name in FORMATS:

        def encode(name: str = name) -> None:
            encoder = encoder_for(name, now=0.0)
            for batch, raw in decoded:
                encoder.encode(batch, raw)

        seconds = _best_of(repeats, encode)
        record(f"{name} encoder", len(decoded) / seconds / 1e3, "k events/s")


def _transcoder(events: list[bytes], tokens: int, repeats: int, record: Recorder) -> None:
    from streamrelay.formats import FORMATS, encoder_for
    from streamrelay.transcoder import Transcoder

    for name in FORMATS:

        def transcode(name: str = name) -> None:
            transcoder = Transcoder(encoder_for(name, now=0.0))
            for event in events:
                transcoder.feed_bytes(event)

        seconds = _best_of(repeats, transcode)
        record(
            f"Transcoder.feed_bytes → {name}",
            seconds / tokens * 1e6,
            "µs/token",
            "SSE decode + JSON decode + encode, one event per read",
        )
