"""``StreamRelayMiddleware``: anti-buffering for every stream of a host app, and
re-framing of the host's own OpenAI SSE routes into the format the client negotiated."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _http
from .config import StreamSettings, check_format_name, settings_or_default
from .errors import ConfigurationError, RequestRejected
from .observer import Observer, StreamStart, observers_of
from .outcome import StreamObserver
from .pipeline import STREAM_HEADERS, Declined, run_stream
from .sources import Source

__all__ = ["StreamRelayMiddleware"]

_STREAM_TYPES = (b"text/event-stream", b"application/x-ndjson", b"application/jsonl")
# Headers the relay replaces when it re-frames a host response.
_REPLACED = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-encoding",
        b"cache-control",
        b"x-accel-buffering",
        b"connection",
        b"transfer-encoding",
        b"x-request-id",  # ours, which the host was given
    }
)


class StreamRelayMiddleware:
    """Pure ASGI middleware (never ``BaseHTTPMiddleware``, which buffers streams).

    * Every streaming response of the host app gets ``Cache-Control: no-cache,
      no-transform`` and ``X-Accel-Buffering: no``, loses any ``Connection``
      header, and is exempted from compression.
    * On requests whose path is one of ``paths`` or lies below one (whole
      segments: ``/chat`` covers ``/chat/stream``, not ``/chatroom``), a ``200
      text/event-stream`` response from the host (OpenAI SSE, e.g. proxied with
      httpx) is re-framed into the format the client negotiated, with the same
      pipeline and settings as :class:`~streamrelay.StreamRelay`.

    ::

        app.add_middleware(StreamRelayMiddleware, paths=["/chat"])

    Args:
        app: the host ASGI app.
        paths: the host's streaming routes to re-frame, or prefixes of them (whole
            path segments). Name the streaming routes themselves: a request under
            these paths that asks for an unknown ``?format=`` is refused (406)
            before the host runs, since the stream it would start could not be framed.
        default_format: the format for clients that ask for none.
        stream: the :class:`~streamrelay.StreamSettings`; ``first_byte_timeout``
            bounds the wait for the host's response to start.
        on_stream_end: called with each re-framed stream's :class:`~streamrelay.Outcome`.
        metrics: observers of the re-framed streams (route ``middleware``), as for
            :class:`~streamrelay.StreamRelay`.

    A re-framed request gets a request id (the client's ``x-request-id``, or a new
    one): the host app sees it in its request's ``x-request-id`` (to send upstream),
    and the client gets it back in the stream's ``x-request-id``.
    """

    def __init__(
        self,
        app: ASGIApp,
        paths: Sequence[str] = (),
        *,
        default_format: str = "sse",
        stream: StreamSettings | None = None,
        on_stream_end: StreamObserver | None = None,
        metrics: Observer | Iterable[Observer] | None = None,
    ) -> None:
        if isinstance(paths, str):
            raise ConfigurationError("paths must be a list of path prefixes, not a string")
        self.app = app
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"each path must start with '/', got {path!r}")
        # Whole path segments: "/chat" covers "/chat" and "/chat/...", not "/chatroom".
        self.paths = tuple(path.rstrip("/") or "/" for path in paths)
        self.default_format = check_format_name(default_format)
        self.settings = settings_or_default(stream, StreamSettings, "stream")
        self.on_stream_end = on_stream_end
        self.observers = observers_of(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._covers(scope["path"]):
            await self.app(scope, receive, _AntiBuffering(send))
            return
        try:
            fmt = _http.negotiate_format(scope, self.default_format)
        except RequestRejected as exc:
            await _http.send_rejection(send, exc)
            return
        await _Reframe(self, scope, receive, send, fmt).run()

    def _covers(self, path: str) -> bool:
        """Whether ``path`` is one of ``paths`` or lies below one (whole segments)."""
        for prefix in self.paths:
            if path == prefix or path.startswith(prefix + "/") or prefix == "/":
                return True
        return False


class _Reframe:
    """Runs the host app with a captured ``send`` and feeds its SSE body to the pipeline."""

    def __init__(
        self,
        middleware: StreamRelayMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
        fmt: str,
    ) -> None:
        self.middleware = middleware
        self.request_id = _http.request_id(scope)
        # The host must answer in plain text for us to parse it: without this a
        # compression middleware inside (Litestar's, GZipMiddleware) would gzip it.
        self.scope = {
            **scope,
            "headers": [
                *(
                    (k, v)
                    for k, v in scope["headers"]
                    if k.lower() not in (b"accept-encoding", b"x-request-id")
                ),
                (b"x-request-id", self.request_id.encode()),
            ],
        }
        self.send = send
        self.fmt = fmt
        self.mux = _ReceiveMux(receive)
        self.body_in, self.body_out = anyio.create_memory_object_stream[bytes](4)
        self.started = anyio.Event()
        self.start: Message | None = None
        self.declined_status: int | None = None
        self.passthrough: _AntiBuffering | None = None
        self.host_done = anyio.Event()
        self.host_scope = anyio.CancelScope()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.mux.pump)
            tg.start_soon(self.run_host)
            await run_stream(
                self.send,
                open_source=self.open_source,
                wait_disconnect=self.mux.disconnected.wait,
                format=self.fmt,
                settings=self.middleware.settings,
                headers=((b"x-request-id", self.request_id.encode()),),
                observer=self.middleware.on_stream_end,
                start=StreamStart("middleware", self.fmt, request_id=self.request_id),
                observers=self.middleware.observers,
            )
            tg.cancel_scope.cancel()

    async def run_host(self) -> None:
        try:
            with self.host_scope:
                await self.middleware.app(self.scope, self.mux.receive, self.host_send)
        finally:
            self.body_in.close()
            self.started.set()
            self.host_done.set()

    async def host_send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            if (
                message["status"] == 200
                and _content_type(headers).startswith(b"text/event-stream")
                and _header_value(headers, b"content-encoding") in (b"", b"identity")
            ):
                self.start = message
            else:
                self.declined_status = message["status"]
                self.passthrough = _AntiBuffering(self.send)
                await self.passthrough(message)
            self.started.set()
        elif self.passthrough is not None:
            await self.passthrough(message)
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                await self.body_in.send(body)
            if not message.get("more_body", False):
                self.body_in.close()

    async def open_source(self) -> Source:
        await self.started.wait()
        if self.start is None:
            # The host answered with something other than OpenAI SSE (or crashed):
            # it goes to the client unchanged, so the pipeline has nothing to relay.
            await self.host_done.wait()
            raise Declined(self.declined_status)

        async def close(complete: bool) -> None:
            if not complete:
                self.host_scope.cancel()  # the host's own upstream call is cancelled with it

        # The host's own headers (its cookies, request ids) go with the stream,
        # less those the relay replaces.
        host_headers = [
            (k, v) for k, v in self.start.get("headers", []) if k.lower() not in _REPLACED
        ]
        return Source(_receive_all(self.body_out), "sse", close, headers=host_headers)


async def _receive_all(stream: anyio.abc.ObjectReceiveStream[bytes]) -> Any:
    async for chunk in stream:
        yield chunk


class _ReceiveMux:
    """Lets the host app read the request while we watch for the disconnect.

    One task reads the server's ``receive``; the host reads from a small buffer.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._in, self._out = anyio.create_memory_object_stream[Message](16)
        self.disconnected = anyio.Event()

    async def pump(self) -> None:
        with self._in:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.disconnected.set()
                    return
                await self._in.send(message)

    async def receive(self) -> Message:
        try:
            return await self._out.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return {"type": "http.disconnect"}


class _AntiBuffering:
    """A ``send`` wrapper that marks streaming responses so nothing buffers them.

    A response is streaming when its content type is a streaming one, or when it
    has no ``Content-Length`` and its first body message says more is coming
    (then the start message waits for that first body message).
    """

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: Message | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers", [])
            if _content_type(headers).startswith(_STREAM_TYPES):
                await self._send(_mark_streaming(message))
            elif any(k.lower() == b"content-length" for k, _ in headers):
                await self._send(message)
            else:
                self._held = message
            return
        if kind == "http.response.body" and self._held is not None:
            held, self._held = self._held, None
            if message.get("more_body", False):
                held = _mark_streaming(held)
            await self._send(held)
        await self._send(message)


def _mark_streaming(message: Message) -> Message:
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
    present = {k.lower() for k, _ in headers}
    for name, value in STREAM_HEADERS:
        if name not in present:
            headers.append((name, value))
    return {**message, "headers": headers}


def _content_type(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    return _header_value(headers, b"content-type")


def _header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key.lower() == name:
            return bytes(value).lower().strip()
    return b""
