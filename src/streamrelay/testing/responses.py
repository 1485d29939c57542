"""``POST /v1/responses``: the Responses API, its ``response`` object and its events.

A request's ``input`` (a string, or a list of input items and messages) and
``instructions`` become the conversation the text is generated from, as
messages: ``instructions`` a system message, a string ``input`` a user message.
So ``{"instructions": "Be brief", "input": "Hi"}`` gets the text a chat request
with those two messages gets.

The answer's pieces become output items, in order: a ``reasoning`` item
(``reasoning`` fault: its summary text), a ``message`` item (one
``output_text`` part, or a ``refusal`` part), or one ``function_call`` item per
tool call (``tools``). The stream is what OpenAI sends: every event has an
``event:`` line and a ``sequence_number``, and it ends with
``response.completed`` (``response.incomplete`` when ``max_output_tokens`` cut
it), never with ``data: [DONE]``::

    response.created, response.in_progress
    response.output_item.added          (per item)
      response.reasoning_summary_part.added, response.reasoning_summary_text.delta...,
      response.reasoning_summary_text.done, response.reasoning_summary_part.done
    | response.content_part.added, response.output_text.delta... (or refusal.delta...),
      response.output_text.done (or refusal.done), response.content_part.done
    | response.function_call_arguments.delta..., response.function_call_arguments.done
    response.output_item.done
    response.completed

Mid-stream errors are an ``error`` event (``mid_error``) or ``response.failed``
(``failed``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from .config import SimulatorConfig
from .plan import _MID_STREAM_MESSAGE, _Call, _Named, _Pause, _Piece, _Plan, _positive_int, _Step
from .text import _digest

_ItemType = Literal["reasoning", "message", "function_call"]
_PartType = Literal["output_text", "refusal"]
_ITEM_PREFIX = {"reasoning": "rs_", "message": "msg_", "function_call": "fc_"}
_ITEM_OF: dict[str, _ItemType] = {
    "reasoning": "reasoning",
    "content": "message",
    "refusal": "message",
    "call": "function_call",
    "arguments": "function_call",
}


@dataclass
class _Item:
    """One output item and the steps that stream it."""

    type: _ItemType
    id: str
    output_index: int
    first: int | None = None
    """The step of its first piece; ``None`` for an empty message."""
    last: int | None = None
    part: _PartType = "output_text"
    call: int = 0


class _ResponsesPlan(_Plan):
    """A Responses request: ``input``, ``instructions``, ``max_output_tokens``, ``tools``."""

    route = "responses"
    id_prefix = "resp_"
    id_length = 48

    def __init__(self, base: SimulatorConfig, body: object) -> None:
        super().__init__(base, body)
        self._seq = 0
        """The next event's ``sequence_number``."""
        self._sent: dict[int, str] = {}
        """The text sent so far, per output index."""
        self._current: _Item | None = None
        """The output item opened last."""

    def _read(self, body: Mapping[str, Any]) -> None:
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ValueError("instructions must be a string.")
        given = body.get("input")
        if given is None:
            messages: list[Any] = []
        elif isinstance(given, str):
            messages = [{"role": "user", "content": given}]
        elif isinstance(given, list):
            messages = list(given)
        else:
            raise ValueError("input must be a string or a list of input items.")
        if instructions:
            messages.insert(0, {"role": "system", "content": instructions})
        self.instructions = instructions
        self.conversation = messages
        self.max_tokens = _positive_int(body, "max_output_tokens")
        tools = body.get("tools") or []
        if not isinstance(tools, list):
            raise ValueError("tools must be a list.")
        self.tools = [_echo_tool(tool) for tool in tools]
        for tool in tools:
            if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
                continue
            function = tool.get("function")  # the chat shape, tolerated
            name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
            if isinstance(name, str):
                self.tool_names.append(name)

    @cached_property
    def items(self) -> list[_Item]:
        """The output items, from the pieces of the (only) choice."""
        items: list[_Item] = []
        for step, piece in enumerate(self.pieces[0]):
            kind = _ITEM_OF[piece.kind]
            last = items[-1] if items else None
            if last is None or last.type != kind or piece.kind == "call":
                last = _Item(
                    kind,
                    _ITEM_PREFIX[kind] + _digest("item", self.id, len(items))[:48],
                    len(items),
                    first=step,
                    part="refusal" if piece.kind == "refusal" else "output_text",
                    call=piece.call,
                )
                items.append(last)
            last.last = step
        if not self.truncated and not any(item.type != "reasoning" for item in items):
            item_id = "msg_" + _digest("item", self.id, len(items))[:48]
            part: _PartType = "refusal" if "refusal" in self.faults else "output_text"
            items.append(_Item("message", item_id, len(items), part=part))  # empty answer
        return items

    def usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": self.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def envelope(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        *,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``response`` object, with every field OpenAI sends."""
        body = self.body
        reasoning = body.get("reasoning")
        reasoning = reasoning if isinstance(reasoning, Mapping) else {}
        text = body.get("text")
        metadata = body.get("metadata")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "completed_at": self.created if status == "completed" else None,
            "error": error,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": self.instructions,
            "max_output_tokens": self.max_tokens,
            "max_tool_calls": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": _given(body, "parallel_tool_calls", bool, True),
            "previous_response_id": _given(body, "previous_response_id", str, None),
            "prompt_cache_key": None,
            "reasoning": {
                "effort": reasoning.get("effort"),
                "summary": reasoning.get("summary"),
            },
            "safety_identifier": None,
            "service_tier": "default",
            "store": _given(body, "store", bool, True),
            "temperature": _given(body, "temperature", (int, float), 1.0),
            "text": dict(text) if isinstance(text, Mapping) else {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": self.tools,
            "top_logprobs": 0,
            "top_p": _given(body, "top_p", (int, float), 1.0),
            "truncation": "disabled",
            "usage": usage,
            "user": None,
            "metadata": dict(metadata) if isinstance(metadata, Mapping) else {},
        }

    def item(self, item: _Item, text: str, status: str) -> dict[str, Any]:
        """An output item as ``response.output_item.done`` and the response carry it."""
        if item.type == "reasoning":
            return {
                "id": item.id,
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": text}],
            }
        if item.type == "message":
            return {
                "id": item.id,
                "type": "message",
                "status": status,
                "content": [_part(item.part, text)],
                "role": "assistant",
            }
        call: _Call = self.tool_calls[item.call]
        return {
            "id": item.id,
            "type": "function_call",
            "status": status,
            "arguments": text,
            "call_id": call.id,
            "name": call.name,
        }

    def added_item(self, item: _Item) -> dict[str, Any]:
        """An output item as ``response.output_item.added`` carries it."""
        added = self.item(item, "", "in_progress")
        if item.type == "reasoning":
            added["summary"] = []
        elif item.type == "message":
            added["content"] = []
        return added

    def output(self, texts: Mapping[int, str], items: list[_Item]) -> list[dict[str, Any]]:
        last = len(items) - 1
        return [
            self.item(
                item,
                texts.get(item.output_index, ""),
                "incomplete" if self.truncated and item.output_index == last else "completed",
            )
            for item in items
        ]

    # Non-streaming.

    def answer(self) -> dict[str, Any]:
        return self.response()

    def response(self) -> dict[str, Any]:
        if "failed" in self.faults:
            return self.failed_response()
        items = self.items
        texts = {
            item.output_index: "".join(
                piece.text for piece in self.pieces[0][item.first : item.last + 1]
            )
            for item in items
            if item.first is not None and item.last is not None
        }
        status = "incomplete" if self.truncated else "completed"
        return self.envelope(status, self.output(texts, items), self.usage())

    def failed_response(self) -> dict[str, Any]:
        config = self.config
        error = {
            "code": config.code if config.code is not None else "server_error",
            "message": config.message or _MID_STREAM_MESSAGE,
        }
        return self.envelope("failed", [], None, error=error)

    # Streaming.

    def event(self, kind: str, **fields: Any) -> _Named:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return _Named(kind, data)

    def error_event(self) -> _Named:
        config = self.config
        return self.event(
            "error",
            code=config.code if config.code is not None else "server_error",
            message=config.message or _MID_STREAM_MESSAGE,
            param=None,
        )

    def failed_event(self) -> _Named:
        return self.event("response.failed", response=self.failed_response())

    def content_event(self, text: str) -> _Named:
        item = self._current
        return self.event(
            "response.output_text.delta",
            item_id=item.id if item else "",
            output_index=item.output_index if item else 0,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def open(self, item: _Item) -> Iterator[_Step]:
        self._current = item
        self._sent[item.output_index] = ""
        yield self.event(
            "response.output_item.added",
            output_index=item.output_index,
            item=self.added_item(item),
        )
        where = {"item_id": item.id, "output_index": item.output_index}
        if item.type == "reasoning":
            part = {"type": "summary_text", "text": ""}
            yield self.event(
                "response.reasoning_summary_part.added", **where, summary_index=0, part=part
            )
        elif item.type == "message":
            part = _part(item.part, "")
            yield self.event("response.content_part.added", **where, content_index=0, part=part)

    def delta(self, item: _Item, piece: _Piece) -> Iterator[_Step]:
        if piece.kind == "call":
            return
        text = self.content_text(piece)
        self._sent[item.output_index] += text
        where = {"item_id": item.id, "output_index": item.output_index}
        if item.type == "reasoning":
            yield self.event(
                "response.reasoning_summary_text.delta", **where, summary_index=0, delta=text
            )
        elif item.type == "function_call":
            yield self.event("response.function_call_arguments.delta", **where, delta=text)
        elif item.part == "refusal":
            yield self.event("response.refusal.delta", **where, content_index=0, delta=text)
        else:
            yield self.event(
                "response.output_text.delta", **where, content_index=0, delta=text, logprobs=[]
            )

    def close(self, item: _Item, status: str) -> Iterator[_Step]:
        text = self._sent[item.output_index]
        where = {"item_id": item.id, "output_index": item.output_index}
        if item.type == "reasoning":
            yield self.event(
                "response.reasoning_summary_text.done", **where, summary_index=0, text=text
            )
            part = {"type": "summary_text", "text": text}
            yield self.event(
                "response.reasoning_summary_part.done", **where, summary_index=0, part=part
            )
        elif item.type == "function_call":
            yield self.event("response.function_call_arguments.done", **where, arguments=text)
        else:
            if item.part == "refusal":
                yield self.event("response.refusal.done", **where, content_index=0, refusal=text)
            else:
                yield self.event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
                )
            part = _part(item.part, text)
            yield self.event("response.content_part.done", **where, content_index=0, part=part)
        yield self.event(
            "response.output_item.done",
            output_index=item.output_index,
            item=self.item(item, text, status),
        )

    def events(self) -> Iterator[_Step]:
        config = self.config
        items = self.items
        at_step = {
            step: item
            for item in items
            if item.first is not None and item.last is not None
            for step in range(item.first, item.last + 1)
        }
        last_index = len(items) - 1

        def status(item: _Item) -> str:
            cut = self.truncated and item.output_index == last_index
            return "incomplete" if cut else "completed"

        if config.first_delay:
            yield _Pause(config.first_delay)
        yield self.event("response.created", response=self.envelope("in_progress", [], None))
        yield self.event("response.in_progress", response=self.envelope("in_progress", [], None))
        for step, piece in enumerate(self.pieces[0]):
            if step == self.after and (yield from self.mid_stream_faults()):
                return
            if step:
                yield _Pause(config.delay)
            item = at_step[step]
            if step == item.first:
                yield from self.open(item)
            yield from self.delta(item, piece)
            if step == item.last:
                yield from self.close(item, status(item))
        if self.after >= self.steps and (yield from self.mid_stream_faults()):
            return
        for item in items:
            if item.first is None:  # an empty answer still has its message
                yield from self.open(item)
                yield from self.close(item, status(item))
        final = "response.incomplete" if self.truncated else "response.completed"
        output = self.output(self._sent, items)
        state = "incomplete" if self.truncated else "completed"
        yield self.event(final, response=self.envelope(state, output, self.usage()))


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _given(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    return default


def _echo_tool(tool: object) -> object:
    """A request's tool as the response lists it (function tools get OpenAI's defaults)."""
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        return tool
    return {"type": "function", "description": None, "parameters": None, "strict": True, **tool}
