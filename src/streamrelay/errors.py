"""The library's exception hierarchy. Everything streamrelay raises on purpose is a
:class:`StreamRelayError`."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "EventTooLarge",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestRejected",
    "StoreUnavailable",
    "StreamRelayError",
    "UnsupportedFormat",
    "UpstreamStatusError",
    "UpstreamUnavailable",
]


class StreamRelayError(Exception):
    """Base class of every error streamrelay raises on purpose."""


class ConfigurationError(StreamRelayError, ValueError):
    """An argument to :class:`~streamrelay.StreamRelay` or a helper is invalid."""


class ProtocolError(StreamRelayError):
    """Bytes that break a protocol: most often, upstream sent bytes that are not a
    valid OpenAI-compatible event stream.

    Raised by the sans-I/O decoders; the relay turns it into a terminal ``error``
    event with code ``upstream_invalid``. The HTTP/1.1 codec of the native
    transport raises one of its two subclasses, which say whose mistake it is (as
    h11's do): :class:`RemoteProtocolError` (the upstream's) or
    :class:`LocalProtocolError` (ours).
    """

    code = "upstream_invalid"


class RemoteProtocolError(ProtocolError):
    """The upstream (or a proxy on the way) sent invalid HTTP/1.1: a malformed head,
    conflicting or unknown framing. Before the stream the relay answers 502
    ``upstream_invalid_response``; mid-stream (invalid chunk framing) the stream ends
    with an ``upstream_closed`` error."""


class LocalProtocolError(ProtocolError):
    """A request this side was about to send is not valid HTTP/1.1: an invalid header
    name, a header value with a control character (a line break, a NUL) or a character
    outside latin-1, an invalid request target. Nothing was sent, and the upstream is
    not to blame: a configured header is refused when the
    :class:`~streamrelay.upstream.Upstream` is built, and a forwarded client header
    gets the client a 400 ``invalid_header``."""

    code = "invalid_request"


class EventTooLarge(ProtocolError):
    """One upstream line or event exceeded the configured maximum size."""

    code = "event_too_large"


class RequestRejected(StreamRelayError):
    """Raise from a ``prepare`` hook to refuse a request with an HTTP status.

    >>> async def prepare(request, body):
    ...     if request.headers.get("x-api-token") != "secret":
    ...         raise RequestRejected(401, "missing or bad token", code="unauthorized")
    ...     return body
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.code = code
        self.type = type
        self.headers = dict(headers or {})


class UnsupportedFormat(StreamRelayError, ValueError):
    """The client asked for a format the relay does not speak (HTTP 406)."""

    def __init__(self, name: str, supported: tuple[str, ...]) -> None:
        super().__init__(f"unsupported format {name!r}; supported: {', '.join(supported)}")
        self.name = name
        self.supported = supported


class UpstreamStatusError(StreamRelayError):
    """The upstream answered with a non-2xx status before streaming.

    The relay passes it through with its status, body and rate-limit headers.
    """

    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"upstream answered HTTP {status_code}")
        self.status_code = status_code
        self.headers = headers
        self.body = body


class UpstreamUnavailable(StreamRelayError):
    """The upstream could not be reached or did not answer in time (HTTP 502 or 504)."""

    def __init__(self, message: str, *, code: str, status_code: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code


class StoreUnavailable(StreamRelayError):
    """The stream store (Redis) failed or could not be reached.

    A stream in flight then goes on without it (no longer resumable); a resume or a
    stop that needs it is answered 503.
    """
