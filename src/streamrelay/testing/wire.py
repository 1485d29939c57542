"""Bytes on the wire: SSE framing with its faults, writers, and plain HTTP answers.

:class:`_Framer` turns one event's data (and its ``event:`` name, as the
Responses API sends one) into SSE bytes with the framing faults applied
(``crlf``, ``cr``, ``nospace``, ``multiline``, ``comments``, ``bom``);
the writers send those bytes whole or one byte at a time (``split``).
``_send_json`` and ``_send_error`` answer with a complete JSON body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from starlette.types import Send

from .recording import RecordedRequest

_BOM = b"\xef\xbb\xbf"
_SPLIT_PAUSE = 0.002
_SPLIT_PAUSE_EVERY = 64


def _headers(record: RecordedRequest, content_type: str, **extra: str) -> list[tuple[bytes, bytes]]:
    headers = {"content-type": content_type, "x-request-id": record.request_id, **extra}
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]


async def _send_json(
    send: Send, record: RecordedRequest, status: int, obj: object, **headers: str
) -> None:
    body = _dumps(obj)
    record.status = status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _headers(
                record, "application/json", content_length=str(len(body)), **headers
            ),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, record: RecordedRequest, status: int, message: str, **headers: str
) -> None:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    await _send_json(send, record, status, {"error": error}, **headers)
    record.outcome = "rejected"


def _dumps(obj: object, *, multiline: bool = False) -> bytes:
    separators = (",\n", ":") if multiline else (",", ":")
    try:
        return json.dumps(obj, ensure_ascii=False, separators=separators).encode()
    except UnicodeEncodeError:  # lone surrogates from the request: keep them escaped
        return json.dumps(obj, separators=separators).encode()


class _Framer:
    """Turns event data into SSE bytes, with the framing faults applied."""

    def __init__(self, faults: Sequence[str]) -> None:
        self.eol = b"\r\n" if "crlf" in faults else b"\r" if "cr" in faults else b"\n"
        self.space = b"" if "nospace" in faults else b" "
        self.multiline = "multiline" in faults
        self.comments = "comments" in faults
        self.prefix = _BOM if "bom" in faults else b""

    def frame(self, data: dict[str, Any] | bytes, event: str | None = None) -> bytes:
        if isinstance(data, dict):
            lines = _dumps(data, multiline=self.multiline).split(b"\n")
        else:
            lines = [data]
        out = bytearray(self.prefix)
        self.prefix = b""
        if self.comments:
            out += b": keep-alive" + self.eol + self.eol
        if event is not None:
            out += b"event:" + self.space + event.encode() + self.eol
        for line in lines:
            out += b"data:" + self.space + line + self.eol
        out += self.eol
        return bytes(out)


_Write = Callable[[bytes], Awaitable[None]]


def _writer(send: Send) -> _Write:
    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    return write


def _split_writer(send: Send) -> _Write:
    async def write(data: bytes) -> None:
        for position, byte in enumerate(data):
            await send({"type": "http.response.body", "body": bytes((byte,)), "more_body": True})
            # Pause inside multi-byte characters and CRLFs, so that they straddle reads.
            if byte >= 0xC0 or byte == 0x0D or position % _SPLIT_PAUSE_EVERY == 0:
                await anyio.sleep(_SPLIT_PAUSE)

    return write
