"""The four wire formats, as sans-I/O encoders: normalized events in, bytes out.

=========  ============================  ==============================================
name       content type                  body
=========  ============================  ==============================================
``text``   ``text/plain; charset=utf-8``  choice 0's content text, nothing else
``ndjson`` ``application/x-ndjson``       one normalized event per line
``sse``    ``text/event-stream``          ``id: N``, ``event: <type>``, ``data: <json>``
``openai`` ``text/event-stream``          the upstream's chunks, ending ``data: [DONE]``
=========  ============================  ==============================================

>>> enc = encoder_for("ndjson")
>>> enc.encode([Delta(0, "Hi\\n")], None)
b'{"type":"delta","index":0,"text":"Hi\\\\n"}\\n'
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from . import _json
from .errors import UnsupportedFormat
from .events import Delta, Done, Error, Event, Finish, Refusal, Start, ToolCall, Usage
from .sse import encode_event

__all__ = [
    "FORMATS",
    "Encoder",
    "NDJSONEncoder",
    "OpenAIEncoder",
    "SSEEncoder",
    "TextEncoder",
    "encoder_for",
]


class Encoder:
    """Base class of the format encoders.

    ``encode(events, raw)`` gets the events decoded from one upstream chunk and,
    when known, that chunk's raw JSON text (only the ``openai`` format uses it).
    """

    name: ClassVar[str]
    media_type: ClassVar[str]
    #: When true, a terminal error cannot be expressed in-band: the relay aborts
    #: the HTTP response instead so the client cannot mistake it for a clean end.
    aborts_on_error: ClassVar[bool] = False
    #: When true, the pipeline passes each upstream chunk's raw JSON text.
    wants_raw: ClassVar[bool] = False

    def preamble(self) -> bytes:
        """Bytes sent with the headers, so the client sees the stream open at once."""
        return b""

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        raise NotImplementedError

    def heartbeat(self) -> bytes:
        """Bytes that keep an idle connection alive without changing the content."""
        return b""


class TextEncoder(Encoder):
    """Only the content text of choice 0. Heartbeats are impossible in-band."""

    name = "text"
    media_type = "text/plain; charset=utf-8"
    aborts_on_error = True

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        if len(events) == 1:
            event = events[0]
            if type(event) is Delta and event.index == 0:
                return event.text.encode("utf-8", "replace")
            return b""
        return "".join(e.text for e in events if type(e) is Delta and e.index == 0).encode(
            "utf-8", "replace"
        )


class NDJSONEncoder(Encoder):
    """One normalized event per line; heartbeat ``{"type":"ping"}``."""

    name = "ndjson"
    media_type = "application/x-ndjson"

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        out = []
        for event in events:
            if type(event) is Delta:
                out.append(
                    b'{"type":"delta","index":%d,"text":%s}\n'
                    % (event.index, _json.dumps(event.text))
                )
            else:
                out.append(_json.dumps(event.to_dict()) + b"\n")
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)

    def heartbeat(self) -> bytes:
        return b'{"type":"ping"}\n'


class SSEEncoder(Encoder):
    """``id: N`` / ``event: <type>`` / ``data: <json>``; comment heartbeats.

    Ids count events from 1 so a reconnecting ``EventSource`` can say where it
    stopped. JSON never contains a raw line break, so one ``data:`` line suffices.
    """

    name = "sse"
    media_type = "text/event-stream"

    def __init__(self, first_id: int = 1) -> None:
        self.next_id = first_id

    def preamble(self) -> bytes:
        return b": stream open\n\n"

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        out = []
        for event in events:
            if type(event) is Delta:
                data = b'{"type":"delta","index":%d,"text":%s}' % (
                    event.index,
                    _json.dumps(event.text),
                )
            else:
                data = _json.dumps(event.to_dict())
            out.append(
                b"id: %d\nevent: %s\ndata: %s\n\n" % (self.next_id, event.type.encode(), data)
            )
            self.next_id += 1
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)

    def heartbeat(self) -> bytes:
        return b": ping\n\n"


class OpenAIEncoder(Encoder):
    """The upstream's own chunks, unchanged, as ``data: <json>`` lines ending ``data: [DONE]``.

    OpenAI SDK clients work against it unchanged. It never writes an ``id:``
    line (openai-python mishandles them). Errors use ``{"error": {...}}``, the
    shape openai-python raises ``APIError`` on. Sources without raw chunks
    (plain text) get chunks synthesized from the events.
    """

    name = "openai"
    media_type = "text/event-stream"
    wants_raw = True

    def __init__(self) -> None:
        self._id = "chatcmpl-streamrelay"
        self._model = ""
        self._created = int(time.time())

    def preamble(self) -> bytes:
        return b": stream open\n\n"

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        for event in events:
            if type(event) is Error:
                return self._error(event)
        if raw is not None:
            if "\n" in raw or "\r" in raw:
                out = encode_event(raw)
            else:
                try:
                    out = b"data: " + raw.encode() + b"\n\n"
                except UnicodeEncodeError:  # lone surrogates in a caller's raw text
                    out = b"data: " + raw.encode("utf-8", "replace") + b"\n\n"
            if events and type(events[-1]) is Done and raw != "[DONE]":
                out += b"data: [DONE]\n\n"  # a Responses stream ends at response.completed
        else:
            out = b"".join([self._synthesize(event) for event in events])
        return out if out.isascii() else _escape_separators(out)

    def heartbeat(self) -> bytes:
        return b": ping\n\n"

    def _error(self, error: Error) -> bytes:
        body: dict[str, Any] = {
            "message": error.message,
            "type": "server_error",
            "code": error.code,
        }
        if error.status is not None:
            body["status"] = error.status
        return _escape_separators(b"data: " + _json.dumps({"error": body}) + b"\n\n")

    def _synthesize(self, event: Event) -> bytes:
        if type(event) is Start:
            self._id = event.id or self._id
            self._model = event.model
            return b""
        if type(event) is Done:
            return b"data: [DONE]\n\n"
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }
        if type(event) is Delta:
            chunk["choices"] = [_choice(event.index, {"content": event.text})]
        elif type(event) is Refusal:
            chunk["choices"] = [_choice(event.index, {"refusal": event.text})]
        elif type(event) is ToolCall:
            call: dict[str, Any] = {"index": event.call}
            function: dict[str, Any] = {"arguments": event.arguments}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            if event.name is not None:
                function["name"] = event.name
            call["function"] = function
            chunk["choices"] = [_choice(event.index, {"tool_calls": [call]})]
        elif type(event) is Finish:
            chunk["choices"] = [_choice(event.index, {}, event.reason)]
        elif type(event) is Usage:
            chunk["choices"] = []
            chunk["usage"] = {
                "prompt_tokens": event.prompt_tokens,
                "completion_tokens": event.completion_tokens,
                "total_tokens": event.total_tokens,
            }
        else:  # pragma: no cover - every event type is handled above
            return b""
        return b"data: " + _json.dumps(chunk) + b"\n\n"


def _escape_separators(data: bytes) -> bytes:
    """Escape U+2028, U+2029 and U+0085 inside JSON strings.

    JSON allows them raw, but ``str.splitlines()`` (and so httpx's ``iter_lines()``,
    older httpx-sse and many hand-written clients) breaks lines at them, which
    would let a token cut an NDJSON line or an SSE ``data:`` line in two. In
    valid UTF-8 these byte sequences can only be those characters, and in our
    output they only occur inside JSON strings, where the escape means the same.
    """
    if b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data or b"\xc2\x85" in data:
        return (
            data.replace(b"\xe2\x80\xa8", b"\\u2028")
            .replace(b"\xe2\x80\xa9", b"\\u2029")
            .replace(b"\xc2\x85", b"\\u0085")
        )
    return data


def _choice(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": reason}


FORMATS: dict[str, type[Encoder]] = {
    "text": TextEncoder,
    "ndjson": NDJSONEncoder,
    "sse": SSEEncoder,
    "openai": OpenAIEncoder,
}
"""Every supported format name and its encoder class."""


def encoder_for(name: str) -> Encoder:
    """A fresh encoder for format ``name`` (one per stream: encoders keep state)."""
    try:
        return FORMATS[name]()
    except KeyError:
        raise UnsupportedFormat(name, tuple(FORMATS)) from None
