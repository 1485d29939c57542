"""``relay_response``: stream any LLM source from your own handler."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import _http
from .config import StreamSettings, check_format_name, settings_or_default
from .errors import RequestRejected
from .formats import FORMATS
from .observer import Observer, Observers, StreamStart, observers_of
from .outcome import StreamObserver
from .pipeline import run_stream
from .sources import check_source, open_source

__all__ = ["RejectionResponse", "RelayResponse", "relay_response"]

_OURS = frozenset({b"content-length", b"content-type", b"connection", b"transfer-encoding"})


class RelayResponse(Response):
    """A Starlette response that runs the relay pipeline on ``source``.

    Build it with :func:`relay_response`. ``headers`` you set on it are sent
    with the stream (content type and length are the relay's).
    """

    def __init__(
        self,
        source: object,
        *,
        format: str,
        settings: StreamSettings,
        headers: Mapping[str, str] | None = None,
        on_stream_end: StreamObserver | None = None,
        observers: Observers | None = None,
    ) -> None:
        self.source = source
        self.format = format
        self.settings = settings
        self.on_stream_end = on_stream_end
        self.observers = observers
        self.status_code = 200
        self._format_class = FORMATS[format]
        self.media_type = self._format_class.media_type
        self.background = None
        self.body = b""
        self.init_headers(headers)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k not in _OURS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        want_raw = self._format_class.wants_raw
        source = self.source

        async def opener() -> Any:
            return await open_source(source, want_raw=want_raw)

        request_id = _http.request_id(scope)
        headers = self.raw_headers
        if not any(k == b"x-request-id" for k, _ in headers):
            headers = [*headers, (b"x-request-id", request_id.encode())]

        await run_stream(
            send,
            open_source=opener,
            wait_disconnect=_http.DisconnectWaiter(receive),
            format=self.format,
            settings=self.settings,
            headers=headers,
            observer=self.on_stream_end,
            start=StreamStart("relay_response", self.format, request_id=_http.request_id(scope)),
            observers=self.observers,
        )


class RejectionResponse(Response):
    """A refused request, answered exactly as the mount and the middleware answer it:
    the same status, JSON body and headers (``vary``, ``cache-control: no-store``)."""

    def __init__(self, rejection: RequestRejected) -> None:
        self.rejection = rejection
        self.status_code = rejection.status_code
        self.background = None
        self.body = b""
        self.raw_headers = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _http.send_rejection(send, self.rejection)


def relay_response(
    source: object,
    request: Request,
    *,
    format: str | None = None,
    default_format: str = "sse",
    stream: StreamSettings | None = None,
    headers: Mapping[str, str] | None = None,
    on_stream_end: StreamObserver | None = None,
    metrics: Observer | Iterable[Observer] | None = None,
) -> Response:
    """Relay ``source`` to the client in the format it negotiated.

    ``source`` may be an ``httpx.Response`` opened with ``stream=True``, the
    openai SDK's ``AsyncStream``, an :meth:`Upstream.request
    <streamrelay.upstream.Upstream.request>`, or an async iterable of OpenAI SSE
    ``bytes``, of ``str`` text pieces, or of chunk dicts. An upstream error status
    passes through; an unknown ``?format=`` gives the same 406 as the mount.

    >>> async def chat(request):
    ...     body = await request.json()
    ...     return relay_response(upstream.request("/chat/completions", body), request)

    Args:
        format: forces a format instead of negotiating one.
        default_format: the format for clients that ask for none.
        stream: the :class:`~streamrelay.StreamSettings` (the same object the
            mount and the middleware take).
        headers: extra response headers.
        on_stream_end: called with the stream's :class:`~streamrelay.Outcome`.
        metrics: observers of the stream (route ``relay_response``), as for
            :class:`~streamrelay.StreamRelay`. Build them once, not per request.

    The stream's response carries the request's ``x-request-id`` (or a new one),
    unless ``headers`` set one.

    Raises:
        TypeError: ``source`` is nothing the relay can stream (a list, a string, a
            synchronous generator, a finished completion, an un-awaited coroutine...),
            with a hint, when called rather than when the response runs.
        ConfigurationError: ``format``, ``default_format`` or ``stream`` is invalid
            (whatever the request asks for).
    """
    check_source(source)
    check_format_name(default_format)
    if format is not None:
        check_format_name(format, "format")
    settings = settings_or_default(stream, StreamSettings, "stream")
    if format is None:
        try:
            format = _http.negotiate_format(request.scope, default_format)
        except RequestRejected as exc:
            return RejectionResponse(exc)
    return RelayResponse(
        source,
        format=format,
        settings=settings,
        headers=headers,
        on_stream_end=on_stream_end,
        observers=observers_of(metrics),
    )
