"""The ``openai`` format: the upstream's own OpenAI events, unchanged.

Chat and legacy completion streams are ``data:`` chunks ending ``data: [DONE]``.
A Responses stream keeps its shape too: each typed event with its ``event:`` line,
its ``sequence_number`` untouched, and no ``[DONE]`` after ``response.completed``
(openai-python's ``responses.stream()`` helper reads exactly that). Sources
without raw chunks get chat chunks synthesized from the events, stamped with the
``now`` the encoder was made with:

>>> from streamrelay.events import Delta
>>> OpenAIEncoder(now=1700000000.5).encode([Delta(0, "Hi")], None)[:96]
b'data: {"id":"chatcmpl-streamrelay","object":"chat.completion.chunk","created":1700000000,"model"'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mypy_extensions import mypyc_attr

from .. import _json
from ..events import (
    Delta,
    Done,
    Error,
    Event,
    Finish,
    Reasoning,
    Refusal,
    Start,
    ToolCall,
    Usage,
)
from ..sse import encode_event
from .base import Encoder, _escape_separators

__all__ = ["OpenAIEncoder"]


@mypyc_attr(allow_interpreted_subclasses=True)
class OpenAIEncoder(Encoder):
    """The upstream's own chunks, unchanged, as ``data: <json>`` lines ending ``data: [DONE]``.

    OpenAI SDK clients work against it unchanged. It never writes an ``id:``
    line (openai-python mishandles them). Errors use ``{"error": {...}}``, the
    shape openai-python raises ``APIError`` on. Sources without raw chunks
    (plain text) get chunks synthesized from the events, whose ``created`` is
    the constructor's ``now``, in whole seconds.
    """

    name = "openai"
    media_type = "text/event-stream"
    accept = ("application/json",)  # what the OpenAI SDKs send
    wants_raw = True
    preamble_bytes = b": stream open\n"
    heartbeat_bytes = b": ping\n"

    def __init__(self, *, now: float) -> None:
        """Start one stream; ``now`` becomes the synthesized chunks' ``created``."""
        super().__init__(now=now)
        self._id = "chatcmpl-streamrelay"
        self._model = ""
        self._created = int(now)
        self._named = False  # a Responses stream: typed events, no [DONE]
        self._hide_usage = False

    def hide_usage(self) -> None:
        """Leave out the usage-only chunk (``"choices": []``): the relay asked the
        upstream for usage on its own account (``StreamRelay(include_usage=True)``), and
        a client that did not ask may index ``choices[0]`` of every chunk."""
        self._hide_usage = True

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """``raw`` as a ``data:`` event when given, else chunks built from ``events``.

        A terminal :class:`~streamrelay.events.Error` wins over both.
        """
        for event in events:
            if type(event) is Error:
                return self._error(event)
        if self._hide_usage and len(events) == 1 and type(events[0]) is Usage:
            return b""
        if raw is not None:
            out = _data(raw)
            if events and type(events[-1]) is Done and raw != "[DONE]" and not self._named:
                out += b"data: [DONE]\n\n"  # a completed chat stream that sent none
        else:
            out = b"".join([self._synthesize(event) for event in events])
        return out if out.isascii() else _escape_separators(out)

    def encode_named(self, name: str, events: Sequence[Event], raw: str | None) -> bytes:
        """A Responses API event: its ``event:`` line, then its data unchanged, even
        for its own ``error`` and ``response.failed`` events (OpenAI's SDKs raise on them)."""
        if raw is None or "\n" in name or "\r" in name:
            return self.encode(events, raw)
        self._named = True
        out = b"event: " + name.encode("utf-8", "replace") + b"\n" + _data(raw)
        return out if out.isascii() else _escape_separators(out)

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
        elif type(event) is Reasoning:  # DeepSeek's field, the one most clients read
            chunk["choices"] = [_choice(event.index, {"reasoning_content": event.text})]
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
            usage = event.to_dict()
            del usage["type"]
            chunk["usage"] = usage
        else:  # pragma: no cover - every event type is handled above
            return b""
        return b"data: " + _json.dumps(chunk) + b"\n\n"


def _data(raw: str) -> bytes:
    """``raw`` as the ``data:`` lines of one event."""
    if "\n" in raw or "\r" in raw:
        return encode_event(raw)
    try:
        return b"data: " + raw.encode() + b"\n\n"
    except UnicodeEncodeError:  # lone surrogates in a caller's raw text
        return b"data: " + raw.encode("utf-8", "replace") + b"\n\n"


def _choice(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": reason}
