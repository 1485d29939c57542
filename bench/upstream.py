"""A fast OpenAI-compatible upstream for the benchmark, on raw asyncio.

It answers ``POST .../chat/completions`` with a chunked ``text/event-stream`` of
``chat.completion.chunk`` events, keeps connections alive for the next request, and
stamps each token: a token's content is ``"<time.time_ns() at send> "``, so the load
client can compute the latency every relay adds (same machine, same clock).

The workload is read from the request body's ``model``, because every relay forwards
that field unchanged: ``"bench:tokens=100:rate=50:hold=0"``.

- ``tokens``: content tokens per stream;
- ``rate``: tokens per second, ``0`` for no pacing (burst);
- ``hold``: seconds to pause after the first token (the slow streams the memory
  measurement holds open); a relay that disconnects ends its stream at once, and
  ``GET /release`` ends every pause at once.

Run it as ``python -m bench.upstream``; it prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import cast

from bench.common import raise_fd_limit, run_async

__all__ = ["UpstreamProtocol", "Workload", "release_all", "serve"]

_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"x-request-id: req-bench\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
_CHUNK_PREFIX = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench-model","system_fingerprint":"fp_bench","choices":[{"index":0,'
)
_ROLE = (
    _CHUNK_PREFIX
    + b'"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
)
_TOKEN_HEAD = _CHUNK_PREFIX + b'"delta":{"content":"'
_TOKEN_TAIL = b' "},"logprobs":null,"finish_reason":null}]}\n\n'
_FINISH = _CHUNK_PREFIX + b'"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
_DONE = b"data: [DONE]\n\n"
_LAST_CHUNK = b"0\r\n\r\n"
MAX_HOLD_S = 300.0
MAX_TOKENS = 100_000
_HOLDING: set[UpstreamProtocol] = set()  # streams pausing in ``hold``


def _chunk(payload: bytes) -> bytes:
    """Frame ``payload`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _token() -> bytes:
    """One content chunk stamped with the current time, as a ready-to-write HTTP chunk."""
    return _chunk(b"%s%d%s" % (_TOKEN_HEAD, time.time_ns(), _TOKEN_TAIL))


@dataclass(frozen=True)
class Workload:
    """What one stream should look like; parsed from the request's ``model``."""

    tokens: int = 100
    rate: float = 50.0
    hold: float = 0.0

    @classmethod
    def from_model(cls, model: str) -> Workload:
        """Parse ``"bench:tokens=100:rate=50:hold=0"``; unknown keys are ignored."""
        fields: dict[str, float] = {}
        for part in model.split(":")[1:]:
            key, _, value = part.partition("=")
            if key in ("tokens", "rate", "hold"):
                fields[key] = float(value)
        return cls(
            tokens=min(int(fields.get("tokens", cls.tokens)), MAX_TOKENS),
            rate=max(fields.get("rate", cls.rate), 0.0),
            hold=min(max(fields.get("hold", cls.hold), 0.0), MAX_HOLD_S),
        )

    def model(self) -> str:
        """The ``model`` string that asks the upstream for this workload."""
        return f"bench:tokens={self.tokens}:rate={self.rate:g}:hold={self.hold:g}"


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; streams are driven by loop timers, not tasks."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._busy = False  # a response is in progress
        self._timer: asyncio.TimerHandle | None = None
        self._sent = 0
        self._work = Workload()
        self._start = 0.0
        self._released = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        _HOLDING.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._parse_request()

    def _parse_request(self) -> None:
        """Start a response once a complete request (head and body) has arrived."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body_start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._dechunk(body_start)
            if body is None:
                return
        else:
            length = int(headers.get("content-length", "0") or 0)
            if len(self._buffer) < body_start + length:
                return
            body = bytes(self._buffer[body_start : body_start + length])
            del self._buffer[: body_start + length]
        method, _, rest = lines[0].partition(" ")
        path = rest.partition(" ")[0]
        if path == "/release":
            count = release_all()
            self._reply(200, b'{"released":%d}' % count)
            return
        if method != "POST" or not path.split("?")[0].endswith("/chat/completions"):
            self._reply(404, b'{"error":{"message":"not found","type":"bench"}}')
            return
        try:
            model = str(json.loads(body or b"{}").get("model", ""))
        except ValueError:
            self._reply(400, b'{"error":{"message":"bad json","type":"bench"}}')
            return
        self._start_stream(Workload.from_model(model))

    def _dechunk(self, start: int) -> bytes | None:
        """A complete chunked request body starting at ``start``, consumed; else ``None``."""
        pos = start
        parts = []
        while True:
            eol = self._buffer.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self._buffer[pos:eol]).split(b";")[0], 16)
            if size == 0:
                final = self._buffer.find(b"\r\n\r\n", eol)
                if final < 0:
                    return None
                del self._buffer[: final + 4]
                return b"".join(parts)
            if len(self._buffer) < eol + 2 + size + 2:
                return None
            parts.append(bytes(self._buffer[eol + 2 : eol + 2 + size]))
            pos = eol + 2 + size + 2

    def _reply(self, status: int, body: bytes) -> None:
        """A small complete JSON response (errors and ``/release``)."""
        if self._transport is None:
            return
        self._transport.write(
            b"HTTP/1.1 %d Bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )
        self._buffer.clear()

    def release(self) -> None:
        """End this stream's ``hold`` now."""
        _HOLDING.discard(self)
        self._released = True
        if self._timer is not None:
            self._timer.cancel()
            self._send_due()

    def _start_stream(self, work: Workload) -> None:
        assert self._transport is not None
        self._busy = True
        self._work = work
        self._sent = 0
        self._start = self._loop.time()
        self._released = False
        self._transport.write(_HEAD + _chunk(_ROLE))
        self._send_due()

    def _send_due(self) -> None:
        """Send every token that is due, then schedule the next one (or finish)."""
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        work = self._work
        if work.rate <= 0:
            if self._sent == 0 and work.hold > 0 and work.tokens > 0:
                transport.write(_token())
                self._sent = 1
                if not self._released:
                    _HOLDING.add(self)
                    self._timer = self._loop.call_later(work.hold, self._send_due)
                    return
            transport.write(b"".join([_token() for _ in range(work.tokens - self._sent)]))
            self._sent = work.tokens
        else:
            interval = 1.0 / work.rate
            now = self._loop.time()
            while self._sent < work.tokens:
                due = self._start + self._sent * interval
                if self._sent >= 1 and work.hold > 0 and not self._released:
                    due += work.hold
                    _HOLDING.add(self)
                if due > now:
                    self._timer = self._loop.call_at(due, self._send_due)
                    return
                transport.write(_token())
                self._sent += 1
        _HOLDING.discard(self)
        transport.write(_chunk(_FINISH) + _chunk(_DONE) + _LAST_CHUNK)
        self._busy = False
        if self._buffer:
            self._parse_request()


def release_all() -> int:
    """End the ``hold`` of every stream pausing in one; return how many there were."""
    held = list(_HOLDING)
    for proto in held:
        proto.release()
    return len(held)


async def serve(host: str = "127.0.0.1", port: int = 0, *, ready: bool = True) -> None:
    """Listen on ``host:port`` (0 picks a free port) until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    if ready:
        print(f"PORT {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Entry point of ``python -m bench.upstream``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    raise_fd_limit()
    try:
        run_async(serve(port=args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
