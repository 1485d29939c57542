"""What a client of the relay sees, parsed independently of ``streamrelay``'s own codecs.

The relay's integration tests read real bytes from a real socket. This module
holds the pieces they share:

* :func:`fetch` streams one request with httpx and returns an :class:`Outcome`
  (status, headers, raw body, whether the body was cut off, and the body parsed
  according to its format), and :func:`check_wire` asserts the format's rules;
* :class:`RawHTTP`, a tiny HTTP/1.1 client on a plain socket for what httpx hides
  (chunk framing, the terminating chunk, header bytes, exact timing);
* :func:`relay_host`, a Starlette app mounting relays, closing them on shutdown.

The SSE parser here follows the WHATWG rules and shares no code with
``streamrelay.sse``; the relay's own decoder is what is under test.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

FORMATS = ("text", "ndjson", "sse", "openai")
MESSAGES = [{"role": "user", "content": "Tell me something."}]
RELAY_KEY = "sk-relay-secret"
T = TypeVar("T")
PREAMBLE = b": stream open\n"
"""What the ``sse`` and ``openai`` formats send with the headers."""


def chat_body(*, stream: bool = True, **simulator: Any) -> dict[str, Any]:
    """A chat request; ``simulator`` options go in its ``"simulator"`` object."""
    body: dict[str, Any] = {"model": "sim-1", "messages": MESSAGES}
    if stream:
        body["stream"] = True
    if simulator:
        body["simulator"] = simulator
    return body


# SSE, per the WHATWG parsing rules -------------------------------------------------------


@dataclass
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


@dataclass
class SSEStream:
    events: list[SSEEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    """Every field name seen, in order (to check, e.g., that no ``id`` field exists)."""


def parse_sse(raw: bytes, *, errors: str = "strict") -> SSEStream:
    """Events, comments and field names of an SSE body (an unfinished last event is dropped)."""
    text = raw.decode("utf-8", errors).removeprefix("\ufeff")
    out = SSEStream()
    data: list[str] = []
    event = ""
    last_id: str | None = None
    lines = re.split(r"\r\n|\r|\n", text)
    lines.pop()  # the unterminated tail (empty when the body ends with a line break)
    for line in lines:
        if not line:
            if data:
                out.events.append(SSEEvent("\n".join(data), event or "message", last_id))
            data, event = [], ""
            continue
        if line.startswith(":"):
            out.comments.append(line[1:].strip())
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        out.fields.append(name)
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
    return out


# Outcomes --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One response as the client saw it."""

    fmt: str
    status: int
    headers: httpx.Headers
    raw: bytes
    aborted: bool
    """The connection ended without the terminating chunk (httpx raised)."""
    first_chunk_at: float | None = None
    """``time.time_ns()`` when the first body bytes with content arrived."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """``ndjson``/``sse``: the normalized events (pings excluded). ``openai``: the
    JSON chunks, including the final ``{"error": ...}`` if any."""
    data: list[str] = field(default_factory=list)
    """``openai``/``sse``: the data of every event, verbatim."""
    sse: SSEStream | None = None
    pings: int = 0

    @property
    def terminal(self) -> str | None:
        """``"done"``, ``"error"`` or ``None`` (the stream was cut with no verdict)."""
        if self.fmt == "text":
            return "error" if self.aborted else "done"
        if self.fmt == "openai":
            if self.data and self.data[-1] == "[DONE]":
                return "done"
            if self.events and "error" in self.events[-1]:
                return "error"
            return None
        if self.events and self.events[-1]["type"] in ("done", "error"):
            return str(self.events[-1]["type"])
        return None

    @property
    def error(self) -> dict[str, Any] | None:
        if self.fmt in ("ndjson", "sse"):
            return self.events[-1] if self.terminal == "error" else None
        if self.fmt == "openai" and self.terminal == "error":
            error: dict[str, Any] = self.events[-1]["error"]
            return error
        return None

    def content(self, index: int = 0) -> str:
        """The content text of choice ``index``."""
        if self.fmt == "text":
            assert index == 0, "text carries choice 0 only"
            return self.raw.decode("utf-8")
        if self.fmt == "openai":
            return "".join(
                _parts_text(choice["delta"].get("content"), "text")
                for chunk in self.events
                for choice in chunk.get("choices") or ()
                if choice.get("index") == index and choice.get("delta")
            )
        return "".join(
            e["text"] for e in self.events if e["type"] == "delta" and e["index"] == index
        )

    def refusal(self, index: int = 0) -> str:
        if self.fmt == "openai":
            return "".join(
                choice["delta"].get("refusal") or ""
                for chunk in self.events
                for choice in chunk.get("choices") or ()
                if choice.get("index") == index and choice.get("delta")
            )
        return "".join(
            e["text"] for e in self.events if e["type"] == "refusal" and e["index"] == index
        )

    def tool_calls(self, index: int = 0) -> list[dict[str, Any]]:
        """Tool calls of choice ``index``, accumulated as a client would (in the ``openai``
        format, a fragment with a new ``id`` at an index in use starts a new call)."""
        calls: dict[Any, dict[str, Any]] = {}
        if self.fmt == "openai":
            latest: dict[int, Any] = {}  # upstream index -> key of its current call
            for chunk in self.events:
                for choice in chunk.get("choices") or ():
                    if choice.get("index") != index:
                        continue
                    for frag in (choice.get("delta") or {}).get("tool_calls") or ():
                        key = latest.get(frag["index"])
                        if key is None or (frag.get("id") and frag["id"] != calls[key]["id"]):
                            key = latest[frag["index"]] = len(calls)
                        call = calls.setdefault(
                            key,
                            {
                                "id": None,
                                "type": "function",
                                "function": {"name": None, "arguments": ""},
                            },
                        )
                        call["id"] = frag.get("id") or call["id"]
                        function = frag.get("function") or {}
                        call["function"]["name"] = function.get("name") or call["function"]["name"]
                        call["function"]["arguments"] += function.get("arguments") or ""
            return list(calls.values())
        for e in self.events:
            if e["type"] != "tool_call" or e["index"] != index:
                continue
            call = calls.setdefault(
                e["call"],
                {"id": None, "type": "function", "function": {"name": None, "arguments": ""}},
            )
            call["id"] = e.get("id") or call["id"]
            call["function"]["name"] = e.get("name") or call["function"]["name"]
            call["function"]["arguments"] += e["arguments"]
        return [calls[k] for k in sorted(calls)]

    def reasoning(self, index: int = 0) -> str:
        """The reasoning text of choice ``index`` (the ``reasoning`` events, or in the
        ``openai`` format the upstream's ``reasoning_content``)."""
        if self.fmt == "openai":
            return "".join(
                (choice["delta"].get("reasoning_content") or "")
                + _parts_text(choice["delta"].get("content"), "thinking")
                for chunk in self.events
                for choice in chunk.get("choices") or ()
                if choice.get("index") == index and choice.get("delta")
            )
        return "".join(
            e["text"] for e in self.events if e["type"] == "reasoning" and e["index"] == index
        )

    def finish_reasons(self) -> dict[int, str]:
        if self.fmt == "openai":
            return {
                choice["index"]: choice["finish_reason"]
                for chunk in self.events
                for choice in chunk.get("choices") or ()
                if choice.get("finish_reason")
            }
        return {e["index"]: e["reason"] for e in self.events if e["type"] == "finish"}

    def usage(self) -> dict[str, int] | None:
        if self.fmt == "openai":
            usages = [c["usage"] for c in self.events if c.get("usage")]
        else:
            usages = [
                {k: e[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                for e in self.events
                if e["type"] == "usage"
            ]
        assert len(usages) <= 1, usages
        return usages[0] if usages else None


def _parts_text(content: Any, kind: str) -> str:
    """The ``kind`` text of a delta's content: a string is all ``text``; a list of
    Mistral-style parts has ``text`` parts and ``thinking`` parts (of text parts)."""
    if isinstance(content, str):
        return content if kind == "text" else ""
    if not isinstance(content, list):
        return ""
    out = []
    for part in content:
        if part.get("type") != kind:
            continue
        if kind == "text":
            out.append(part["text"])
        else:
            out.extend(p["text"] for p in part["thinking"] if p.get("type") == "text")
    return "".join(out)


def parse_body(fmt: str, raw: bytes, outcome: Outcome) -> None:
    """Fill ``outcome``'s parsed fields from ``raw`` according to ``fmt``."""
    if fmt == "ndjson":
        assert raw == b"" or raw.endswith(b"\n"), raw[-200:]
        for line in raw.split(b"\n")[:-1]:
            event = json.loads(line)
            if event == {"type": "ping"}:
                outcome.pings += 1
            else:
                outcome.events.append(event)
    elif fmt in ("sse", "openai"):
        stream = parse_sse(raw)
        outcome.sse = stream
        outcome.data = [e.data for e in stream.events]
        outcome.pings = sum(1 for c in stream.comments if c != "stream open")
        if fmt == "sse":
            outcome.events = [json.loads(e.data) for e in stream.events]
        else:
            outcome.events = [json.loads(e.data) for e in stream.events if e.data != "[DONE]"]


def fetch(
    client: httpx.Client,
    url: str,
    body: Any = None,
    *,
    fmt: str | None = None,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    method: str = "POST",
    parse_as: str | None = None,
) -> Outcome:
    """Send one request and read the whole response the way a streaming client would.

    ``fmt`` adds ``?format=``; the body is parsed as ``parse_as``, else ``fmt``,
    else the format the response's content type says (``sse`` for event streams).
    """
    if fmt:  # merged: httpx's params= would replace the URL's own query
        url = str(httpx.URL(url).copy_merge_params({"format": fmt}))
    raw = bytearray()
    aborted = False
    first_at = None
    kwargs: dict[str, Any] = {"headers": headers}
    if content is not None:
        kwargs["content"] = content
    elif body is not None:
        kwargs["json"] = body
    with client.stream(method, url, **kwargs) as response:
        try:
            for piece in response.iter_raw():
                if first_at is None and piece.replace(PREAMBLE, b""):
                    first_at = time.time_ns()
                raw += piece
        except httpx.RemoteProtocolError:
            aborted = True
    outcome = Outcome(
        fmt=parse_as or fmt or format_of(response.headers.get("content-type", "")),
        status=response.status_code,
        headers=response.headers,
        raw=bytes(raw),
        aborted=aborted,
        first_chunk_at=first_at,
    )
    if response.status_code == 200:
        parse_body(outcome.fmt, outcome.raw, outcome)
    return outcome


def format_of(content_type: str) -> str:
    media = content_type.split(";")[0].strip()
    return {
        "text/plain": "text",
        "application/x-ndjson": "ndjson",
        "text/event-stream": "sse",
    }.get(media, media)


def check_wire(outcome: Outcome) -> None:
    """The rules of DESIGN.md every 200 stream obeys, per format."""
    assert outcome.status == 200, (outcome.status, outcome.raw[:300])
    h = outcome.headers
    assert h["cache-control"] == "no-cache, no-transform"
    assert h["x-accel-buffering"] == "no"
    assert "content-length" not in h
    assert "connection" not in h
    fmt = outcome.fmt
    media = {
        "text": "text/plain; charset=utf-8",
        "ndjson": "application/x-ndjson",
        "sse": "text/event-stream",
        "openai": "text/event-stream",
    }[fmt]
    assert h["content-type"] == media
    if fmt == "text":
        return  # an aborted text body is its error signal; nothing else to check
    assert not outcome.aborted, "only the text format may abort the response"
    assert outcome.terminal in ("done", "error"), outcome.raw[-300:]
    if fmt == "ndjson":
        kinds = [e["type"] for e in outcome.events]
        assert kinds.count("done") + kinds.count("error") == 1, kinds
        assert kinds[-1] in ("done", "error")
        for event in outcome.events:
            assert set(event) <= EVENT_FIELDS[event["type"]], event
    elif fmt == "sse":
        stream = outcome.sse
        assert stream is not None
        assert outcome.raw.endswith(b"\n\n")
        assert stream.comments[:1] == ["stream open"], stream.comments[:3]
        ids = [e.id for e in stream.events]
        assert ids == [str(n) for n in range(1, len(ids) + 1)], ids
        for sse_event, event in zip(stream.events, outcome.events, strict=True):
            assert sse_event.event == event["type"]
            assert set(event) <= EVENT_FIELDS[event["type"]], event
        kinds = [e["type"] for e in outcome.events]
        assert kinds.count("done") + kinds.count("error") == 1, kinds
        assert kinds[-1] in ("done", "error")
    else:
        stream = outcome.sse
        assert stream is not None
        assert "id" not in stream.fields, "the openai format must never send an id: line"
        assert "event" not in stream.fields
        assert outcome.raw.endswith(b"\n\n")
        if outcome.terminal == "done":
            assert outcome.data.count("[DONE]") == 1
            assert not any("error" in c for c in outcome.events)
        else:
            assert "[DONE]" not in outcome.data
            assert [i for i, c in enumerate(outcome.events) if "error" in c] == [
                len(outcome.events) - 1
            ]
            error = outcome.events[-1]["error"]
            assert isinstance(error["message"], str) and error["message"]
            assert "code" in error and "type" in error


EVENT_FIELDS: dict[str, set[str]] = {
    "start": {"type", "id", "model"},
    "delta": {"type", "index", "text"},
    "reasoning": {"type", "index", "text"},
    "refusal": {"type", "index", "text"},
    "tool_call": {"type", "index", "call", "id", "name", "arguments"},
    "finish": {"type", "index", "reason"},
    "usage": {
        "type",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    },
    "error": {"type", "message", "code", "status"},
    "done": {"type"},
}


def upstream_data(client: httpx.Client, upstream: str, body: Any) -> list[str]:
    """The data of every event the upstream sends for ``body``, fetched directly."""
    raw = bytearray()
    with client.stream("POST", upstream + "/chat/completions", json=body) as response:
        assert response.status_code == 200
        try:
            for piece in response.iter_raw():
                raw += piece
        except httpx.RemoteProtocolError:  # abrupt_close: what arrived is the reference
            pass
    return [e.data for e in parse_sse(bytes(raw), errors="replace").events]


# A raw HTTP/1.1 client ------------------------------------------------------------------


class RawHTTP:
    """One HTTP/1.1 exchange on a plain socket, read as it arrives.

    >>> with RawHTTP(url) as conn:  # doctest: +SKIP
    ...     conn.request("POST", "/ai/chat/completions", body, {"accept": "text/plain"})
    ...     status, headers = conn.read_head()
    ...     conn.read_chunk()  # the first chunk's data; None after the terminating chunk
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self.buffer = bytearray()
        self.head = b""
        self.complete = False
        """The terminating ``0\\r\\n\\r\\n`` chunk arrived."""
        self.eof = False

    def __enter__(self) -> RawHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Any = b"",
        headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    ) -> None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        names = {k.lower() for k, _ in items}
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if "content-type" not in names and body:
            lines.append("Content-Type: application/json")
        if "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{k}: {v}" for k, v in items]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def read_head(self) -> tuple[int, list[tuple[str, str]]]:
        """The status and headers (names lowercased, in order, duplicates kept)."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(
                    f"connection closed before the headers: {bytes(self.buffer)!r}"
                )
        end = self.buffer.index(b"\r\n\r\n")
        self.head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        status_line, *header_lines = self.head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return status, headers

    def read_chunk(self) -> bytes | None:
        """The next chunk's data; ``None`` at the terminating chunk or when the
        connection closes (then :attr:`complete` tells which)."""
        while b"\r\n" not in self.buffer:
            if not self._fill():
                return None
        end = self.buffer.index(b"\r\n")
        size = int(bytes(self.buffer[:end]).split(b";")[0], 16)
        while len(self.buffer) < end + 2 + size + 2:
            if not self._fill():
                return None
        data = bytes(self.buffer[end + 2 : end + 2 + size])
        assert self.buffer[end + 2 + size : end + 4 + size] == b"\r\n"
        del self.buffer[: end + 4 + size]
        if size == 0:
            self.complete = True
            return None
        return data

    def read_body(self) -> bytes:
        """The rest of a chunked body (stops at the terminating chunk or at EOF)."""
        out = bytearray()
        while (chunk := self.read_chunk()) is not None:
            out += chunk
        return bytes(out)

    def read_exact(self, length: int) -> bytes:
        """A body of known length."""
        while len(self.buffer) < length:
            if not self._fill():
                break
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        return data


# Async code from sync tests ------------------------------------------------------------------


def run_async(func: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(func)`` in a fresh thread.

    The test thread may already host a running event loop (Playwright's sync API
    keeps one for a session-scoped browser), where ``anyio.run`` is refused.
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, func).result()


# Hosting relays ----------------------------------------------------------------------------


def relay_host(routes: Sequence[BaseRoute], closers: Sequence[Any] = ()) -> Starlette:
    """A Starlette app with ``routes`` that closes ``closers`` (relays, clients) on shutdown.

    Mounted apps get no lifespan events from Starlette, so the host closes them.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for closer in closers:
            await closer.aclose()

    return Starlette(routes=list(routes), lifespan=lifespan)


def mounts(relays: Mapping[str, Any]) -> list[BaseRoute]:
    return [Mount(path, app=relay) for path, relay in relays.items()]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for IP 127.0.0.1, made by ``openssl`` (skips without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (needed for a self-signed certificate)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
