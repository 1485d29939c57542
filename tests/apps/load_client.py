"""A load client for tests/test_load.py, run as its own process (``python load_client.py``).

It speaks HTTP/1.1 over raw asyncio sockets (no client library, no connection
pool: one connection per stream, as browsers behind a proxy look to a relay),
so that the relay process under test, not this client, is what is measured.
Results go to stdout as JSON lines. Modes:

* ``exact URL N``: N concurrent streams; request ``i`` asks for the answer to
  the prompt ``"load <i>"`` in format ``FORMATS[i % 4]``. Prints one JSON object:
  ``{"results": [{"i", "format", "status", "complete", "content", "terminal",
  "error"}...], "seconds"}`` where ``content`` is the content text as this
  client parsed it (the test compares it with the simulator's oracle).
* ``storm URL N``: N streams of a stalled upstream; once every one has received
  its first token prints ``{"ready": N}``, waits for a line on stdin, then aborts
  every connection at once (RST) and prints ``{"closed_at": time.time()}``.
* ``stall URL N``: N streams whose client never reads a byte (a receive buffer
  of 4 KiB); prints ``{"ready": N}`` once all requests are sent, waits for a
  line on stdin, then closes them and prints ``{"closed": N}``.

The request body's ``simulator`` options come from ``--sim`` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys
import time
from typing import Any
from urllib.parse import urlsplit

FORMATS = ("text", "ndjson", "sse", "openai")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def body_for(i: int, sim: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "sim-1",
        "messages": [{"role": "user", "content": f"load {i}"}],
        "stream": True,
    }
    if sim:
        body["simulator"] = sim
    return body


def request_bytes(host: str, port: int, path: str, fmt: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path}?format={fmt} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "\r\n"
    )
    return head.encode() + payload


class Chunked:
    """Incremental parser of a chunked HTTP/1.1 response (status, headers, body)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.complete = False  # the terminating chunk arrived

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if self.status is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            self.status = int(lines[0].split(" ")[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        if "content-length" in self.headers:  # an error answer, not a stream
            self.body = self.buffer
            self.complete = len(self.body) >= int(self.headers["content-length"])
            return
        while not self.complete and self.status is not None:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            size = int(bytes(self.buffer[:end]).split(b";")[0], 16)
            if len(self.buffer) < end + 2 + size + 2:
                return
            self.body += self.buffer[end + 2 : end + 2 + size]
            del self.buffer[: end + 4 + size]
            if size == 0:
                self.complete = True


def parse(fmt: str, raw: bytes) -> tuple[str, str | None, Any]:
    """(content of choice 0, terminal "done"/"error"/None, error) of a body."""
    text = raw.decode("utf-8")
    if fmt == "text":
        return text, None, None
    out: list[str] = []
    terminal: str | None = None
    error = None
    if fmt == "ndjson":
        for line in text.split("\n"):
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "delta" and event["index"] == 0:
                out.append(event["text"])
            elif event["type"] in ("done", "error"):
                terminal, error = event["type"], event if event["type"] == "error" else None
        return "".join(out), terminal, error
    for block in text.split("\n\n"):
        data = "\n".join(
            line[6:] if line.startswith("data: ") else line[5:]
            for line in block.split("\n")
            if line.startswith("data:")
        )
        if not data:
            continue
        if data == "[DONE]":
            terminal = "done"
            continue
        event = json.loads(data)
        if fmt == "sse":
            if event["type"] == "delta" and event["index"] == 0:
                out.append(event["text"])
            elif event["type"] in ("done", "error"):
                terminal, error = event["type"], event if event["type"] == "error" else None
        else:
            if "error" in event:
                terminal, error = "error", event["error"]
            for choice in event.get("choices") or ():
                if choice.get("index") == 0:
                    out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out), terminal, error


async def one_exact(
    url: str, i: int, sim: dict[str, Any], start: asyncio.Event, timeout: float
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    fmt = FORMATS[i % len(FORMATS)]
    await start.wait()
    result: dict[str, Any] = {"i": i, "format": fmt, "status": None, "complete": False}
    parser = Chunked()

    async def exchange() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request_bytes(host, port, parts.path, fmt, body_for(i, sim)))
            while not parser.complete:
                data = await reader.read(65536)
                if not data:
                    break
                parser.feed(data)
        finally:
            writer.close()

    try:
        await asyncio.wait_for(exchange(), timeout)
    except Exception as exc:  # reported, not raised: the test shows every failure
        result["exception"] = f"{type(exc).__name__}: {exc}"
        return result
    result["status"] = parser.status
    result["complete"] = parser.complete
    if parser.status == 200:
        try:
            content, terminal, error = parse(fmt, bytes(parser.body))
        except ValueError as exc:
            result["exception"] = f"unparsable body: {exc}"
            return result
        result.update(content=content, terminal=terminal, error=error)
    else:
        result["body"] = bytes(parser.body).decode("utf-8", "replace")[:300]
    return result


async def exact(url: str, n: int, sim: dict[str, Any], timeout: float) -> None:
    start = asyncio.Event()
    tasks = [asyncio.create_task(one_exact(url, i, sim, start, timeout)) for i in range(n)]
    await asyncio.sleep(0)
    began = time.monotonic()
    start.set()
    results = await asyncio.gather(*tasks)
    emit({"results": results, "seconds": round(time.monotonic() - began, 3)})


async def open_stream(
    url: str, i: int, sim: dict[str, Any], fmt: str, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connecting, so the advertised window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf or 65536)
    writer.write(request_bytes(host, port, parts.path, fmt, body_for(i, sim)))
    await writer.drain()
    return reader, writer


async def until_first_token(reader: asyncio.StreamReader, fmt: str) -> None:
    parser = Chunked()
    # ndjson/sse: a delta event; openai: a content chunk after the role chunk's "content":"".
    marker, count = (b'"delta"', 1) if fmt in ("ndjson", "sse") else (b'"content":"', 2)
    while parser.body.count(marker) < count:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError(f"closed before the first token: {bytes(parser.body)[:200]!r}")
        parser.feed(data)
        if parser.status is not None and parser.status != 200:
            raise ConnectionError(f"status {parser.status}")


def abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a killed browser tab or a crashed peer does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def storm(url: str, n: int, sim: dict[str, Any]) -> None:
    fmts = ["ndjson", "sse", "openai"]  # text has no marker for "the first token arrived"
    streams = await asyncio.gather(
        *(open_stream(url, i, sim, fmts[i % len(fmts)]) for i in range(n))
    )
    await asyncio.gather(
        *(until_first_token(reader, fmts[i % len(fmts)]) for i, (reader, _) in enumerate(streams))
    )
    emit({"ready": n})
    await asyncio.to_thread(sys.stdin.readline)
    closed_at = time.time()
    for _, writer in streams:
        abort(writer)
    await asyncio.sleep(0.05)  # let the loop hand the aborts to the kernel
    emit({"closed_at": closed_at})


async def stall(url: str, n: int, sim: dict[str, Any]) -> None:
    streams = [
        await open_stream(url, i, sim, FORMATS[i % len(FORMATS)], rcvbuf=4096) for i in range(n)
    ]
    emit({"ready": n})
    await asyncio.to_thread(sys.stdin.readline)
    for _, writer in streams:
        abort(writer)
    await asyncio.sleep(0.05)
    emit({"closed": n})


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("exact", "storm", "stall"))
    parser.add_argument("url", help="the relay's chat completions URL")
    parser.add_argument("n", type=int)
    parser.add_argument("--sim", default="{}", help="simulator options (JSON)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per stream (exact)")
    args = parser.parse_args()
    raise_fd_limit()
    sim = json.loads(args.sim)
    if args.mode == "exact":
        asyncio.run(exact(args.url, args.n, sim, args.timeout))
    elif args.mode == "storm":
        asyncio.run(storm(args.url, args.n, sim))
    else:
        asyncio.run(stall(args.url, args.n, sim))


if __name__ == "__main__":
    main()
