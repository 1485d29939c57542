"""The ``openai`` format: the upstream's own OpenAI events, unchanged.

Chat streams end with ``data: [DONE]``; a Responses stream's ``response.completed``
gets one appended. Sources without raw chunks get chunks synthesized from the
events, stamped with the ``now`` the encoder was made with:

>>> from streamrelay.events import Delta
>>> OpenAIEncoder(now=1700000000.5).encode([Delta(0, "Hi")], None)[:96]
b'data: {"id":"chatcmpl-streamrelay","object":"chat.completion.chunk","created":1700000000,"model"'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _json
from ..events import Delta, Done, Error, Event, Finish, Refusal, Start, ToolCall, Usage
from ..sse import encode_event
from .base import Encoder, _escape_separators

__all__ = ["OpenAIEncoder"]


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
    preamble_bytes = b": stream open\n\n"
    heartbeat_bytes = b": ping\n\n"

    def __init__(self, *, now: float) -> None:
        """Start one stream; ``now`` becomes the synthesized chunks' ``created``."""
        super().__init__(now=now)
        self._id = "chatcmpl-streamrelay"
        self._model = ""
        self._created = int(now)

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """``raw`` as a ``data:`` event when given, else chunks built from ``events``.

        A terminal :class:`~streamrelay.events.Error` wins over both.
        """
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


def _choice(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": reason}
