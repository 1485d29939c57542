"""The load client: a separate process that opens many streams over raw asyncio sockets.

An HTTP client library would cost more CPU than some relays under test, so this one is
a minimal HTTP/1.1 reader built on :class:`asyncio.Protocol`. It finds every token's
upstream send timestamp (``"<19 digits> "``) in the de-chunked body whatever the format
(text, ndjson, sse, openai or the reference's ``data: <content>``) and records:

- **added latency**: receive time minus upstream send time, per token;
- **TTFB**: request start (before connect) to the first response byte;
- **first token**: request start to the first token's arrival.

The process reads JSON commands from stdin, one per line, and answers each with one JSON
line on stdout:

- ``{"op": "load", ...}`` runs N streams to completion and returns a summary;
- ``{"op": "open", ...}`` opens more streams and keeps them open (memory measurement);
- ``{"op": "close"}`` closes every open stream;
- ``{"op": "quit"}`` exits.

Run it as ``python -m bench.client``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

from bench.chunked import Dechunker
from bench.common import TOKEN_RE_PATTERN, percentile, raise_fd_limit, run_async
from bench.upstream import Workload

__all__ = ["Run", "StreamSpec", "main"]

_TOKEN_RE = re.compile(TOKEN_RE_PATTERN)
_MAX_ERRORS_KEPT = 5
_NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class StreamSpec:
    """Where and what to request: one relay endpoint and one upstream workload."""

    host: str
    port: int
    target: str
    work: Workload

    @classmethod
    def from_command(cls, cmd: dict[str, Any]) -> StreamSpec:
        """Build from a command's ``host``, ``port``, ``target`` and ``work`` fields."""
        return cls(
            cmd.get("host", "127.0.0.1"), int(cmd["port"]), cmd["target"], Workload(**cmd["work"])
        )

    def request(self) -> bytes:
        """The raw HTTP/1.1 request, as a browser's ``fetch`` POST would send it."""
        body = json.dumps(
            {
                "model": self.work.model(),
                "messages": [{"role": "user", "content": "Benchmark, please stream."}],
                "stream": True,
            }
        ).encode()
        head = (
            f"POST {self.target} HTTP/1.1\r\n"
            f"host: {self.host}:{self.port}\r\n"
            "user-agent: streamrelay-bench\r\n"
            "accept: */*\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "\r\n"
        )
        return head.encode() + body


@dataclass
class Run:
    """Everything recorded over one batch of streams."""

    latencies: list[int] = field(default_factory=list)  # ns, one per token
    ttfb: list[int] = field(default_factory=list)  # ns, one per stream
    first_token: list[int] = field(default_factory=list)  # ns, one per stream
    tokens: int = 0
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        """Count one failed stream under ``kind``."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self, streams: int, expected_tokens: int, wall_s: float) -> dict[str, Any]:
        """Percentiles in milliseconds, counts, and the error kinds."""

        def ms(values: list[int], q: float) -> float:
            return round(percentile(values, q) / _NS_PER_MS, 3)

        return {
            "streams": streams,
            "completed": self.completed,
            "tokens": self.tokens,
            "expected_tokens": expected_tokens,
            "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])[:_MAX_ERRORS_KEPT]),
            "latency_ms": {q: ms(self.latencies, float(q)) for q in ("50", "90", "99", "100")},
            "ttfb_ms": {q: ms(self.ttfb, float(q)) for q in ("50", "99")},
            "first_token_ms": {q: ms(self.first_token, float(q)) for q in ("50", "99")},
            "wall_s": round(wall_s, 3),
        }


class StreamProtocol(asyncio.Protocol):
    """One streamed request: parses the response head, de-chunks, and scans for tokens."""

    def __init__(self, request: bytes, run: Run, started_ns: int) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.first: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.tokens = 0
        self._request = request
        self._run = run
        self._started = started_ns
        self._head = bytearray()
        self._in_body = False
        self._chunked = False
        self._dechunker = Dechunker()
        self._carry = b""  # tail of the body that may hold an unfinished token

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self._in_body:
            if not self._head:
                self._run.ttfb.append(now - self._started)
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._start_body(bytes(self._head[:end])):
                return
            data = bytes(self._head[end + 4 :])
            self._head.clear()
        if self._chunked:
            payload = self._dechunker.feed(data)
            if payload:
                self._payload(payload, now)
            if self._dechunker.finished:
                self.finish(None)
                if self.transport is not None:
                    self.transport.close()
        elif data:
            self._payload(data, now)

    def eof_received(self) -> bool | None:
        if self._in_body and not self._chunked:
            self.finish(None)  # a close-delimited body ends at EOF
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish("reset" if exc else "closed early")

    def abort(self, kind: str) -> None:
        """Give up on this stream (deadline or end of a hold) and count it as ``kind``."""
        self.finish(kind)
        if self.transport is not None:
            self.transport.abort()

    def _start_body(self, head: bytes) -> bool:
        status_line, _, headers = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        status = parts[1].decode() if len(parts) > 1 else "?"
        if status != "200":
            self.finish(f"HTTP {status}")
            if self.transport is not None:
                self.transport.close()
            return False
        self._in_body = True
        self._chunked = b"transfer-encoding: chunked" in headers.lower()
        return True

    def _payload(self, data: bytes, now: int) -> None:
        text = self._carry + data if self._carry else data
        end = 0
        latencies = self._run.latencies
        for match in _TOKEN_RE.finditer(text):
            latencies.append(now - int(match.group(1)))
            end = match.end()
            if self.tokens == 0:
                self._run.first_token.append(now - self._started)
                self.first.set_result(None)
            self.tokens += 1
        self._carry = text[max(end, len(text) - 20) :]

    def finish(self, error: str | None) -> None:
        if self.done.done():
            return
        self._run.tokens += self.tokens
        if error is None:
            self._run.completed += 1
        else:
            self._run.error(error)
        self.done.set_result(None)
        if not self.first.done():
            self.first.set_result(None)


async def _open(spec: StreamSpec, run: Run, request: bytes) -> StreamProtocol:
    """Connect and send one request; a failed connect yields an already-finished stream."""
    loop = asyncio.get_running_loop()
    proto = StreamProtocol(request, run, time.time_ns())
    try:
        await loop.create_connection(lambda: proto, spec.host, spec.port)
    except OSError as exc:
        proto.finish(f"connect: {exc.__class__.__name__}")
    return proto


async def _launch(spec: StreamSpec, run: Run, count: int, ramp_s: float) -> list[StreamProtocol]:
    """Open ``count`` streams, spreading their starts evenly over ``ramp_s`` seconds."""
    loop = asyncio.get_running_loop()
    request = spec.request()
    start = loop.time()
    tasks = []
    for i in range(count):
        delay = start + ramp_s * i / max(count, 1) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_open(spec, run, request)))
    return list(await asyncio.gather(*tasks))


async def load(cmd: dict[str, Any]) -> dict[str, Any]:
    """Run ``cmd["streams"]`` streams to completion (or ``cmd["timeout"]``) and summarize."""
    spec = StreamSpec.from_command(cmd)
    streams = int(cmd["streams"])
    run = Run()
    t0 = time.perf_counter()
    protos = await _launch(spec, run, streams, float(cmd.get("ramp", 1.0)))
    pending = [p.done for p in protos if not p.done.done()]
    if pending:
        _, late = await asyncio.wait(pending, timeout=float(cmd.get("timeout", 60.0)))
        if late:
            for proto in protos:
                if not proto.done.done():
                    proto.abort("timeout")
    wall = time.perf_counter() - t0
    short = sum(1 for p in protos if p.tokens != spec.work.tokens)
    result = run.summary(streams, streams * spec.work.tokens, wall)
    result["short_streams"] = short
    return result


class Holder:
    """Streams opened by ``open`` commands and kept open until ``close``."""

    def __init__(self) -> None:
        self.protos: list[StreamProtocol] = []
        self.run = Run()

    async def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Open ``cmd["streams"]`` more streams and wait for each one's first token."""
        spec = StreamSpec.from_command(cmd)
        protos = await _launch(spec, self.run, int(cmd["streams"]), float(cmd.get("ramp", 1.0)))
        self.protos.extend(protos)
        waiting = [p.first for p in protos if not p.first.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=float(cmd.get("timeout", 60.0)))
        alive = sum(1 for p in self.protos if not p.done.done() and p.tokens > 0)
        return {"open": alive, "requested": len(self.protos), "errors": dict(self.run.errors)}

    async def close(self) -> dict[str, Any]:
        """Close every held stream and wait briefly for the sockets to go."""
        count = len(self.protos)
        for proto in self.protos:
            if proto.transport is not None:
                proto.transport.close()
            proto.finish("held")
        self.protos.clear()
        self.run = Run()
        await asyncio.sleep(0.2)
        return {"closed": count}


async def serve_commands() -> None:
    """Answer JSON commands from stdin until ``quit`` or EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    holder = Holder()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "load":
            reply = await load(cmd)
        elif op == "open":
            reply = await holder.open(cmd)
        elif op == "close":
            reply = await holder.close()
        elif op == "quit":
            break
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)
    await holder.close()


def main() -> None:
    """Entry point of ``python -m bench.client``."""
    raise_fd_limit()
    run_async(serve_commands())


if __name__ == "__main__":
    main()
