"""The ``ai-sdk`` format: the Vercel AI SDK's UI message stream (``useChat``, ``readUIMessageStream``).

Each part is one SSE event, ``data: <json>`` and a blank line; the stream ends with
``data: [DONE]``. The response carries ``x-vercel-ai-ui-message-stream: v1``:

>>> from streamrelay.events import Delta, Done, Finish, Start
>>> encoder = AISDKEncoder(now=0.0)
>>> print(encoder.encode([Start("chatcmpl-1", "m"), Delta(0, "Hi")], None).decode(), end="")
data: {"type":"start","messageId":"chatcmpl-1"}
<BLANKLINE>
data: {"type":"start-step"}
<BLANKLINE>
data: {"type":"text-start","id":"text-1"}
<BLANKLINE>
data: {"type":"text-delta","id":"text-1","delta":"Hi"}
<BLANKLINE>
>>> print(encoder.encode([Finish(0, "stop"), Done()], None).decode(), end="")
data: {"type":"text-end","id":"text-1"}
<BLANKLINE>
data: {"type":"finish-step"}
<BLANKLINE>
data: {"type":"finish","messageMetadata":{"model":"m","finishReason":"stop"}}
<BLANKLINE>
data: [DONE]
<BLANKLINE>

The parts and their fields are exactly those of ``uiMessageChunkSchema`` in
vercel/ai ``packages/ai/src/ui-message-stream/ui-message-chunks.ts`` at ai 5.0.0,
the strictest client: ai 5.0.0 to 5.0.216, 6.0.0 to 6.0.230 and 7.0.0 to 7.0.31
parse every part with a *strict* schema (an extra key rejects the whole stream), and
every version rejects an unknown part type. So no part here has a key 5.0.0 does not
know: ``finish`` has no ``finishReason`` and ``abort`` no ``reason`` (both came later).

==========================  ===========================================================
normalized event            parts
==========================  ===========================================================
``start``                   ``start`` {messageId}, ``start-step``
``delta``, ``refusal``      ``text-start`` {id} when no text part is open, ``text-delta``
                            {id, delta}; a refusal is carried as text
``reasoning``               ``reasoning-start`` {id} when no reasoning part is open,
                            ``reasoning-delta`` {id, delta}
``tool_call``               ``tool-input-start`` {toolCallId, toolName} once per call,
                            ``tool-input-delta`` {toolCallId, inputTextDelta}
``finish``                  per call: ``tool-input-available`` {toolCallId, toolName,
                            input} with the parsed arguments, or ``tool-output-error``
                            {toolCallId, errorText} when they are not JSON; ``text-end`` /
                            ``reasoning-end`` of the open part; ``finish-step``
``usage``                   nothing at once: it goes into ``finish``'s messageMetadata
``done``                    (the step's end if no ``finish`` came), ``finish``
                            {messageMetadata?}, ``data: [DONE]``
``error``                   the open text or reasoning part's end, ``tool-output-error``
                            for each unfinished tool call, ``error`` {errorText:
                            "<message> (<code>)"}, or ``abort`` {} for code ``stopped``
                            (a stop), then ``data: [DONE]``
==========================  ===========================================================

Rules:

- Only choice 0 is carried (``useChat`` shows one message).
- Each run of text or of reasoning is one part with its own id (``text-1``,
  ``reasoning-2``, ...): reasoning after text closes the text part, text after
  reasoning (or after a tool call began) opens a new one, so the parts keep the
  order in which the model produced them.
- ``messageId`` is the upstream's id from the ``start`` event, so a resumed or
  replayed stream names the same message; an upstream without an id (a plain-text
  source) gets no ``messageId`` and the client makes one up. The constructor's
  ``message_id`` overrides it: an answer that continues an assistant message (a
  request sent after ``addToolResult``) must carry that message's id, or the SDK
  shows the message twice (:func:`streamrelay.uimessage.continued_message_id`).
- Tool calls are finished when choice 0 finishes (or at ``done``): ai 5.0.0 has no
  ``tool-input-error``, so arguments that do not parse end the part with
  ``tool-output-error``, whose ``errorText`` says why. Empty arguments are ``{}``.
  ``NaN``, ``Infinity`` and numbers too large for a double do not parse either.
- ``finish``'s ``messageMetadata`` carries what the stream told of itself:
  ``model``, ``finishReason`` (in the AI SDK's words: ``stop``, ``length``,
  ``content-filter``, ``tool-calls``, ``other``) and ``usage`` in the AI SDK's
  ``LanguageModelUsage`` shape (``inputTokens``, ``outputTokens``, ``totalTokens``,
  and ``reasoningTokens`` / ``cachedInputTokens`` when the upstream reports them).
- Every part opened is closed, also when the stream fails: a UI never stays in
  ``streaming`` or ``input-streaming``.
- The preamble and heartbeats are SSE comment lines without a blank line, as in
  the ``sse`` format (see :class:`~streamrelay.formats.sse.SSEEncoder` for why).
- It has no ``Accept`` type of its own (``text/event-stream`` keeps meaning ``sse``):
  ``?format=ai-sdk`` or a route whose default it is (``POST /chat``) selects it.
"""

from __future__ import annotations

import json
import math
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
from .base import Encoder, _escape_separators

__all__ = ["AISDKEncoder"]

_DONE = b"data: [DONE]\n\n"
_START_STEP = b'data: {"type":"start-step"}\n\n'
_FINISH_STEP = b'data: {"type":"finish-step"}\n\n'
_ABORT = b'data: {"type":"abort"}\n\n'

_FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
}
"""OpenAI's ``finish_reason`` in the AI SDK's words; anything else is ``other``."""


class _ToolCall:
    """One tool call of choice 0, from its first fragment until it is finished."""

    __slots__ = ("arguments", "id", "id_given", "name", "started")

    def __init__(self, name: str | None) -> None:
        self.id = ""
        self.id_given = False  # False: made up here, as the upstream sent none (yet)
        self.name = name
        self.arguments: list[str] = []
        self.started = False  # tool-input-start sent


@mypyc_attr(allow_interpreted_subclasses=True)
class AISDKEncoder(Encoder):
    """The AI SDK UI message stream (protocol ``v1``), for ``useChat`` and ``readUIMessageStream``.

    One instance encodes one message. ``message_id`` overrides the ``messageId``
    that is otherwise the upstream's id from the ``start`` event.
    """

    name = "ai-sdk"
    media_type = "text/event-stream"
    accept = ()  # text/event-stream selects sse; ?format=ai-sdk or the /chat route select this
    headers = ((b"x-vercel-ai-ui-message-stream", b"v1"),)
    preamble_bytes = b": stream open\n"
    heartbeat_bytes = b": ping\n"

    def __init__(self, *, now: float, message_id: str | None = None) -> None:
        super().__init__(now=now)
        self._message_id = message_id
        self._started = False  # "start" sent
        self._in_step = False  # "start-step" sent, "finish-step" not yet
        self._ended = False  # "[DONE]" sent
        self._open_kind = b""  # b"text" or b"reasoning": the part now open, if any
        self._open_id = b""
        self._parts = 0  # text and reasoning parts so far (their ids count them)
        self._tools: dict[int, _ToolCall] = {}  # choice 0's unfinished calls, by call number
        self._tool_ids: set[str] = set()
        self._model = ""
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """The parts for ``events``; ``raw`` is ignored."""
        if self._ended:
            return b""
        out: list[bytes] = []
        for event in events:
            if type(event) is Delta or type(event) is Refusal:
                if event.index == 0 and event.text:
                    self._text(out, b"text", _json.dumps(event.text))
            elif type(event) is Reasoning:
                if event.index == 0 and event.text:
                    self._text(out, b"reasoning", _json.dumps(event.text))
            elif type(event) is ToolCall:
                self._tool_call(out, event)
            elif type(event) is Start:
                self._start(out, event)
            elif type(event) is Finish:
                if event.index == 0:
                    self._finish_reason = event.reason
                    self._end_step(out)
            elif type(event) is Usage:
                self._usage = event
            elif type(event) is Done:
                self._done(out)
                break
            elif type(event) is Error:
                self._error(out, event)
                break
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)

    # --- the message and its steps ---------------------------------------------------

    def _start(self, out: list[bytes], event: Start | None) -> None:
        if event is not None and not self._model:
            self._model = event.model
        if not self._started:
            self._started = True
            part: dict[str, Any] = {"type": "start"}
            message_id = self._message_id or (event.id if event is not None else None)
            if message_id:
                part["messageId"] = message_id
            out.append(_part(part))
        if not self._in_step:
            self._in_step = True
            out.append(_START_STEP)

    def _end_step(self, out: list[bytes]) -> None:
        """Finish the tool calls, close the open part, end the step."""
        if not self._in_step:
            return
        self._close_text(out)
        for call in self._tools.values():
            self._finish_tool(out, call)
        self._tools.clear()
        self._in_step = False
        out.append(_FINISH_STEP)

    def _done(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(out, None)  # an empty stream is still one (empty) message
        self._end_step(out)
        part: dict[str, Any] = {"type": "finish"}
        metadata = self._metadata()
        if metadata:
            part["messageMetadata"] = metadata
        out.append(_part(part))
        out.append(_DONE)
        self._ended = True

    def _error(self, out: list[bytes], error: Error) -> None:
        """Close every open part, then ``error`` (``abort`` for a stop) and ``[DONE]``."""
        self._close_text(out)
        text = _error_text(error)
        for call in self._tools.values():
            if call.started:
                out.append(
                    _part(
                        {
                            "type": "tool-output-error",
                            "toolCallId": call.id,
                            "errorText": f"the tool call was cut off: {text}",
                        }
                    )
                )
        self._tools.clear()
        if error.code == "stopped":
            out.append(_ABORT)
        else:
            out.append(_part({"type": "error", "errorText": text}))
        out.append(_DONE)
        self._ended = True

    def _metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if self._model:
            metadata["model"] = self._model
        if self._finish_reason is not None:
            metadata["finishReason"] = _FINISH_REASONS.get(self._finish_reason, "other")
        usage = self._usage
        if usage is not None:
            counts: dict[str, int] = {
                "inputTokens": usage.prompt_tokens,
                "outputTokens": usage.completion_tokens,
                "totalTokens": usage.total_tokens,
            }
            reasoning = (usage.completion_tokens_details or {}).get("reasoning_tokens")
            if type(reasoning) is int:
                counts["reasoningTokens"] = reasoning
            cached = (usage.prompt_tokens_details or {}).get("cached_tokens")
            if type(cached) is int:
                counts["cachedInputTokens"] = cached
            metadata["usage"] = counts
        return metadata

    # --- text and reasoning ------------------------------------------------------------

    def encode_token(self, index: int, text: str, quoted: bytes) -> bytes:
        """A ``text-delta`` part, the text written as the upstream quoted it (see the base class)."""
        if self._ended or index != 0 or not text:
            return b""
        out: list[bytes] = []
        self._text(out, b"text", quoted)
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)

    def _text(self, out: list[bytes], kind: bytes, quoted: bytes) -> None:
        """A piece of text or reasoning (``quoted``: written as a JSON string), in the
        open part of its kind or a new one."""
        if self._open_kind != kind:
            self._start(out, None)
            self._close_text(out)
            self._parts += 1
            self._open_kind = kind
            self._open_id = b"%s-%d" % (kind, self._parts)
            out.append(b'data: {"type":"%s-start","id":"%s"}\n\n' % (kind, self._open_id))
        out.append(
            b'data: {"type":"%s-delta","id":"%s","delta":%s}\n\n' % (kind, self._open_id, quoted)
        )

    def _close_text(self, out: list[bytes]) -> None:
        if self._open_kind:
            out.append(b'data: {"type":"%s-end","id":"%s"}\n\n' % (self._open_kind, self._open_id))
            self._open_kind = b""

    # --- tool calls --------------------------------------------------------------------------

    def _tool_call(self, out: list[bytes], event: ToolCall) -> None:
        if event.index != 0:
            return
        self._start(out, None)
        self._close_text(out)
        call = self._tools.get(event.call)
        if call is None:
            call = self._tools[event.call] = _ToolCall(event.name)
            call.id = self._unique_id(event.id or f"call_{event.call}")
            call.id_given = bool(event.id)
        elif not call.started:  # the id or name came after the first fragment
            if event.name and call.name is None:
                call.name = event.name
            if event.id and not call.id_given:
                self._tool_ids.discard(call.id)
                call.id = self._unique_id(event.id)
                call.id_given = True
        if event.arguments:
            call.arguments.append(event.arguments)
        if not call.started and call.name is not None:
            call.started = True
            out.append(
                _part({"type": "tool-input-start", "toolCallId": call.id, "toolName": call.name})
            )
            pending = "".join(call.arguments)
            if pending:
                out.append(_input_delta(call.id, pending))
        elif call.started and event.arguments:
            out.append(_input_delta(call.id, event.arguments))

    def _unique_id(self, wanted: str) -> str:
        call_id, n = wanted, 1
        while call_id in self._tool_ids:
            n += 1
            call_id = f"{wanted}-{n}"
        self._tool_ids.add(call_id)
        return call_id

    def _finish_tool(self, out: list[bytes], call: _ToolCall) -> None:
        """``tool-input-available`` with the parsed arguments, or ``tool-output-error``."""
        if call.name is None:  # an upstream that never named the function
            call.name = "unknown"
        if not call.started:
            call.started = True
            out.append(
                _part({"type": "tool-input-start", "toolCallId": call.id, "toolName": call.name})
            )
            if call.arguments:
                out.append(_input_delta(call.id, "".join(call.arguments)))
        text = "".join(call.arguments)
        try:
            value = _parse_arguments(text)
        except ValueError as exc:
            out.append(
                _part(
                    {
                        "type": "tool-output-error",
                        "toolCallId": call.id,
                        "errorText": f"the arguments of {call.name} are not valid JSON: {exc}",
                    }
                )
            )
            return
        out.append(
            _part(
                {
                    "type": "tool-input-available",
                    "toolCallId": call.id,
                    "toolName": call.name,
                    "input": value,
                }
            )
        )


def _error_text(error: Error) -> str:
    """What ``error`` and ``tool-output-error`` say: the message, and the code in brackets.

    >>> _error_text(Error("the upstream went silent", "upstream_timeout"))
    'the upstream went silent (upstream_timeout)'
    """
    message = error.message or "the stream failed"
    if error.code and error.code != error.message:
        return f"{message} ({error.code})"
    return message


def _part(part: dict[str, Any]) -> bytes:
    return b"data: " + _json.dumps(part) + b"\n\n"


def _input_delta(call_id: str, text: str) -> bytes:
    return _part({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": text})


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large")
    return value


def _parse_arguments(text: str) -> Any:
    """A tool call's arguments as JSON (``{}`` when empty), strictly: ``ValueError`` else.

    >>> _parse_arguments('{"city": "Paris"}'), _parse_arguments(" ")
    ({'city': 'Paris'}, {})
    """
    if not text.strip():
        return {}
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None
