"""The normalized event model.

Every upstream dialect (chat.completions chunks, Responses API events, plain text)
is decoded into this small vocabulary. The ``ndjson`` and ``sse`` formats carry
exactly these objects, serialized by :meth:`to_dict`. They are plain slotted
dataclasses, not frozen ones: one is built per token, and a frozen dataclass's
``__init__`` costs four times as much. Treat them as values all the same.

>>> Delta(index=0, text="Hi").to_dict()
{'type': 'delta', 'index': 0, 'text': 'Hi'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "Delta",
    "Done",
    "Error",
    "Event",
    "Finish",
    "Reasoning",
    "Refusal",
    "Start",
    "ToolCall",
    "Usage",
]


@dataclass(slots=True)
class Start:
    """The stream began: the first upstream chunk's ``id`` and ``model``."""

    id: str
    model: str
    type: ClassVar[str] = "start"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "start", "id": self.id, "model": self.model}


@dataclass(slots=True)
class Delta:
    """A piece of content text for choice ``index``."""

    index: int
    text: str
    type: ClassVar[str] = "delta"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "delta", "index": self.index, "text": self.text}


@dataclass(slots=True)
class Reasoning:
    """A piece of the model's reasoning for choice ``index``.

    From whichever field the upstream's dialect uses for it: ``reasoning_content``
    (DeepSeek, xAI, vLLM), ``reasoning`` and ``reasoning_details`` (OpenRouter),
    ``thinking`` content parts (Mistral), the Responses API's reasoning summary and
    reasoning text deltas. It is never part of the answer's content: the ``text``
    format leaves it out.
    """

    index: int
    text: str
    type: ClassVar[str] = "reasoning"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "reasoning", "index": self.index, "text": self.text}


@dataclass(slots=True)
class Refusal:
    """A piece of refusal text for choice ``index``."""

    index: int
    text: str
    type: ClassVar[str] = "refusal"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "refusal", "index": self.index, "text": self.text}


@dataclass(slots=True)
class ToolCall:
    """A fragment of tool call ``call`` in choice ``index``.

    ``id`` and ``name`` are set on a call's first fragment only; ``arguments``
    is a piece of the JSON argument string, to be concatenated by the client.
    """

    index: int
    call: int
    arguments: str
    id: str | None = None
    name: str | None = None
    type: ClassVar[str] = "tool_call"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "tool_call", "index": self.index, "call": self.call}
        if self.id is not None:
            d["id"] = self.id
        if self.name is not None:
            d["name"] = self.name
        d["arguments"] = self.arguments
        return d


@dataclass(slots=True)
class Finish:
    """Choice ``index`` ended, with OpenAI's ``finish_reason`` (``stop``, ``length``, ...)."""

    index: int
    reason: str
    type: ClassVar[str] = "finish"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "finish", "index": self.index, "reason": self.reason}


@dataclass(slots=True)
class Usage:
    """Token accounting, from the upstream's usage chunk.

    ``prompt_tokens_details`` and ``completion_tokens_details`` are the upstream's
    own detail objects when it sends them (``cached_tokens``, ``reasoning_tokens``,
    ...), passed on as they are; the Responses API's ``input_tokens_details`` and
    ``output_tokens_details`` land here too.

    >>> Usage(3, 5, 8, completion_tokens_details={"reasoning_tokens": 2}).to_dict()["completion_tokens_details"]
    {'reasoning_tokens': 2}
    """

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None
    type: ClassVar[str] = "usage"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": "usage",
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.prompt_tokens_details is not None:
            d["prompt_tokens_details"] = self.prompt_tokens_details
        if self.completion_tokens_details is not None:
            d["completion_tokens_details"] = self.completion_tokens_details
        return d


@dataclass(slots=True)
class Error:
    """The stream failed (terminal). ``code`` is machine-readable, ``status`` the upstream's if any.

    Codes the relay itself produces: ``upstream_timeout``, ``upstream_truncated``,
    ``upstream_invalid``, ``upstream_closed``, ``event_too_large``, ``send_timeout``,
    ``shutdown``. Upstream error codes pass through unchanged.
    """

    message: str
    code: str | None = None
    status: int | None = None
    type: ClassVar[str] = "error"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "error", "message": self.message, "code": self.code}
        if self.status is not None:
            d["status"] = self.status
        return d


@dataclass(slots=True)
class Done:
    """The stream ended cleanly (terminal). Its absence means the stream was cut."""

    type: ClassVar[str] = "done"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "done"}


Event = Start | Delta | Reasoning | Refusal | ToolCall | Finish | Usage | Error | Done
"""Any normalized event."""
