"""Small ASGI response helpers shared by the entry points (private)."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable

from starlette.types import Receive, Scope, Send

from . import _json
from .errors import RequestRejected, UnsupportedFormat, UpstreamStatusError
from .negotiation import format_param, negotiate

__all__ = [
    "ClientDisconnected",
    "DisconnectWaiter",
    "error_body",
    "header",
    "negotiate_format",
    "read_body",
    "request_id",
    "send_answer",
    "send_error",
    "send_method_not_allowed",
    "send_no_content",
    "send_passthrough",
    "send_rejection",
    "upstream_request_id",
    "with_request_id",
]


async def send_error(
    send: Send,
    status: int,
    message: str,
    *,
    code: str | None,
    type: str = "invalid_request_error",
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """A JSON error in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""
    body = error_body(message, code=code, type=type)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(message: str, *, code: str | None, type: str = "invalid_request_error") -> bytes:
    """OpenAI's error body, ``{"error": {"message", "type", "code"}}``, as bytes."""
    return _json.dumps({"error": {"message": message, "type": type, "code": code}})


async def send_no_content(send: Send) -> None:
    """204, no body."""
    await send(
        {
            "type": "http.response.start",
            "status": 204,
            "headers": [(b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def send_method_not_allowed(send: Send, method: str, allow: str) -> None:
    """405 for a route that takes only ``allow``."""
    await send_error(
        send,
        405,
        f"method {method} not allowed; use {allow}",
        code="method_not_allowed",
        headers=[("allow", allow)],
    )


async def send_rejection(send: Send, exc: RequestRejected) -> None:
    """The JSON error for a refused request, with the refusal's own headers."""
    await send_error(
        send,
        exc.status_code,
        exc.message,
        code=exc.code,
        type=exc.type,
        headers=exc.headers.items(),
    )


async def send_passthrough(
    send: Send, exc: UpstreamStatusError, request_id: str | None = None
) -> None:
    """The upstream's own error status, body and rate-limit headers, never wrapped in a
    200; with our ``request_id`` when there is one (see :func:`with_request_id`)."""
    await send_answer(send, exc.status_code, with_request_id(exc.headers, request_id), exc.body)


def request_id(scope: Scope) -> str:
    """The request's id: the client's ``x-request-id`` when it is a sane token (at most
    128 characters of ``A-Z a-z 0-9 . _ : / + = -``), else a new random one, so that a
    hostile id can neither forge a log field nor grow without bound.

    >>> request_id({"headers": [(b"x-request-id", b"req-42")]})
    'req-42'
    >>> len(request_id({"headers": [(b"x-request-id", b"two words")]}))
    32
    """
    given = header(scope, b"x-request-id")
    if given and len(given) <= 128 and _REQUEST_ID_CHARS.issuperset(given):
        return given
    return secrets.token_hex(16)


_REQUEST_ID_CHARS = frozenset(string.ascii_letters + string.digits + "._:/+=-")


def with_request_id(
    headers: Iterable[tuple[str, str]], request_id: str | None
) -> list[tuple[str, str]]:
    """Upstream response headers to pass on, with ours as ``x-request-id``: the
    upstream's own id (what its support asks for) moves to ``x-upstream-request-id``."""
    if request_id is None:
        return list(headers)
    return [*upstream_request_id(headers), ("x-request-id", request_id)]


def upstream_request_id(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with an ``x-request-id`` renamed ``x-upstream-request-id``."""
    return [
        ("x-upstream-request-id", v) if k.lower() == "x-request-id" else (k, v) for k, v in headers
    ]


async def send_answer(
    send: Send, status: int, headers: Iterable[tuple[str, str]], body: bytes
) -> None:
    """A whole upstream answer (JSON unless it says otherwise) with its kept headers."""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if not any(k == b"content-type" for k, _ in raw):
        raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int, content_length: int | None) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed ``limit``."""
    if content_length is not None and content_length > limit:
        raise RequestRejected(
            413, f"the request body exceeds {limit} bytes", code="request_too_large"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body = message.get("body", b"")
        if body:
            size += len(body)
            if size > limit:
                raise RequestRejected(
                    413, f"the request body exceeds {limit} bytes", code="request_too_large"
                )
            chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


class ClientDisconnected(Exception):
    """The client left while we were still reading its request."""


def negotiate_format(scope: Scope, default: str) -> str:
    """The format a request negotiated (``?format=``, then ``Accept``, then ``default``),
    or :class:`RequestRejected`: the one "negotiate or reject" of every entry point,
    so that each answers a bad request with the same status, body and headers."""
    try:
        return negotiate(
            format_param(scope.get("query_string", b"")), header(scope, b"accept"), default
        )
    except UnsupportedFormat as exc:
        raise RequestRejected(
            406, str(exc), code="unsupported_format", headers={"vary": "accept"}
        ) from None


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower case), if present."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class DisconnectWaiter:
    """Called, returns once ``receive`` reports the client gone (for
    :func:`~streamrelay.pipeline.run_stream`, after the request body was read).

    A class rather than a closure so that the engine can see the ``receive`` inside
    and, under asyncio, await it directly, without a coroutine of this wait's own
    held for the stream's life.
    """

    __slots__ = ("receive",)

    def __init__(self, receive: Receive) -> None:
        self.receive = receive

    async def __call__(self) -> None:
        receive = self.receive
        while (await receive())["type"] != "http.disconnect":
            pass
