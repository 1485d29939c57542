"""``relay_response``: stream any LLM source from your own handler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .errors import ConfigurationError, RequestRejected, UnsupportedFormat
from .formats import FORMATS, encoder_for
from .negotiation import format_param, negotiate
from .pipeline import StreamSettings, run_stream
from .sources import open_source
from .sse import DEFAULT_MAX_EVENT_BYTES

__all__ = ["RelayResponse", "relay_response"]

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
    ) -> None:
        self.source = source
        self.format = format
        self.settings = settings
        self.encoder = encoder_for(format)
        self.status_code = 200
        self.media_type = self.encoder.media_type
        self.background = None
        self.body = b""
        self.init_headers(headers)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k not in _OURS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def opener() -> Any:
            return await open_source(self.source, want_raw=self.encoder.wants_raw)

        async def wait_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        await run_stream(
            send,
            open_source=opener,
            wait_disconnect=wait_disconnect,
            encoder=self.encoder,
            settings=self.settings,
            headers=self.raw_headers,
        )


def relay_response(
    source: object,
    request: Request,
    *,
    format: str | None = None,
    default_format: str = "sse",
    heartbeat: float | None = 15.0,
    first_byte_timeout: float | None = 60.0,
    idle_timeout: float | None = 300.0,
    send_timeout: float | None = 30.0,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """Relay ``source`` to the client in the format it negotiated.

    ``source`` may be an ``httpx.Response`` opened with ``stream=True``, the
    openai SDK's ``AsyncStream``, or an async iterable of OpenAI SSE ``bytes``,
    of ``str`` text pieces, or of chunk dicts. An upstream error status passes
    through; an unknown ``?format=`` gives a 406 JSON response.

    >>> async def chat(request):
    ...     body = await request.json()
    ...     upstream = await client.send(
    ...         client.build_request("POST", URL, json={**body, "stream": True}), stream=True
    ...     )
    ...     return relay_response(upstream, request)

    ``format`` forces a format instead of negotiating one.
    """
    if format is not None and format not in FORMATS:
        raise ConfigurationError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    try:
        fmt = format or negotiate(
            format_param(request.scope.get("query_string", b"")),
            request.headers.get("accept"),
            default_format,
        )
    except UnsupportedFormat as exc:
        return _error(406, str(exc), "unsupported_format")
    except RequestRejected as exc:
        return _error(exc.status_code, exc.message, exc.code)
    settings = StreamSettings(
        heartbeat=heartbeat,
        first_byte_timeout=first_byte_timeout,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        max_event_bytes=max_event_bytes,
    )
    return RelayResponse(source, format=fmt, settings=settings, headers=headers)


def _error(status: int, message: str, code: str | None) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}},
        status_code=status,
    )
