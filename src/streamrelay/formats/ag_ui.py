"""The ``ag-ui`` format: AG-UI protocol events (1.0), as ``data: <camelCase JSON>`` SSE events.

AG-UI is the event protocol that pydantic-ai, LangGraph, CrewAI, Mastra and ADK
front ends speak; ``@ag-ui/client``'s ``HttpAgent`` reads it. One stream is one
*run*: it opens with ``RUN_STARTED`` and ends with ``RUN_FINISHED`` or
``RUN_ERROR``, and every message or tool call it opens in between is closed before
that end, also when the stream fails. Only choice 0 is carried.

===============================  ======================================================
normalized event                 AG-UI events
===============================  ======================================================
``start``                        ``RUN_STARTED {threadId, runId, protocolVersion}``
``reasoning`` (non-empty)        ``REASONING_START`` + ``REASONING_MESSAGE_START``
                                 ``{messageId, role: "reasoning"}`` when none is open
                                 (closing an open text message), then
                                 ``REASONING_MESSAGE_CONTENT {messageId, delta}``
``delta``, ``refusal``           ``TEXT_MESSAGE_START {messageId, role: "assistant"}``
(non-empty)                      when none is open (closing an open reasoning span:
                                 ``REASONING_MESSAGE_END`` + ``REASONING_END``), then
                                 ``TEXT_MESSAGE_CONTENT {messageId, delta}``
``tool_call``                    once the call's name is known: ``TOOL_CALL_START
                                 {toolCallId, toolCallName, parentMessageId}`` (closing
                                 an open text message or reasoning span first), then
                                 ``TOOL_CALL_ARGS {toolCallId, delta}`` per non-empty
                                 fragment (a call whose name never comes is dropped)
``finish``                       closes whatever is open (``TEXT_MESSAGE_END``,
                                 reasoning ends, ``TOOL_CALL_END`` per call)
``usage``                        kept: ``usage`` of the run's last event
``done``                         closes what is open, then ``RUN_FINISHED {threadId,
                                 runId, usage?}``
``error``                        closes what is open, then ``RUN_ERROR {message,
                                 code?, usage?}``; a stop (code ``stopped``) is
                                 ``RUN_FINISHED`` with ``outcome: {type: "cancelled"}``
                                 for a client that declared protocol 1.0
===============================  ======================================================

``threadId`` and ``runId`` come from the request (:meth:`AGUIEncoder.bind_run`,
which the ``POST /ag-ui`` route calls with the ``RunAgentInput``'s); without them
(``?format=ag-ui`` on an OpenAI route) both are the upstream's completion id.
Message ids derive from the run id, which AG-UI makes unique per run:
``<runId>-1``, ``<runId>-2``, ... in the order messages open; each id opens once
(text that resumes after reasoning or a tool call is a new message). Tool calls keep
the upstream's id (``<runId>-call-<n>`` when it sends none). ``RUN_STARTED``
declares ``protocolVersion: "1.0"``, as the 1.0 specification asks of a producer;
earlier clients' schemas let the key through.

Tool calls attach to the assistant message of the answer (``parentMessageId``).
When no text came before a tool call (or reasoning came after the text), an empty
assistant message is opened and closed for it, so the parent is a message the stream
named and the history a client builds keeps the model's order. Calls stay open until
the choice ends, because an upstream may interleave the fragments of parallel calls.
``usage`` is AG-UI's ``TokenUsage``: ``model``, ``inputTokens``, ``outputTokens``,
``totalTokens``, and ``reasoningTokens`` and ``cachedInputTokens`` when the upstream
reports them.

>>> from streamrelay.events import Delta, Done, Start
>>> encoder = AGUIEncoder(now=0.0)
>>> encoder.bind_run("t1", "r1")
>>> print(encoder.encode([Start("chatcmpl-1", "m"), Delta(0, "Hi"), Done()], None).decode())
data: {"type":"RUN_STARTED","threadId":"t1","runId":"r1","protocolVersion":"1.0"}
<BLANKLINE>
data: {"type":"TEXT_MESSAGE_START","messageId":"r1-1","role":"assistant"}
<BLANKLINE>
data: {"type":"TEXT_MESSAGE_CONTENT","messageId":"r1-1","delta":"Hi"}
<BLANKLINE>
data: {"type":"TEXT_MESSAGE_END","messageId":"r1-1"}
<BLANKLINE>
data: {"type":"RUN_FINISHED","threadId":"t1","runId":"r1"}
<BLANKLINE>
<BLANKLINE>
"""

from __future__ import annotations

import re
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

__all__ = ["PROTOCOL_VERSION", "AGUIEncoder"]

PROTOCOL_VERSION = "1.0"
"""The AG-UI protocol version these events conform to, declared on ``RUN_STARTED``."""

_VERSION = re.compile(r"(\d+)\.(\d+)")


class _Call:
    """One tool call of choice 0: what is known of it, and whether it went out."""

    __slots__ = ("args", "id", "id_json", "name", "state")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.args: list[str] = []  # fragments held until the call's name is known
        self.id_json = b""
        self.state = 0  # 0: held back, 1: started, 2: ended


@mypyc_attr(allow_interpreted_subclasses=True)
class AGUIEncoder(Encoder):
    """AG-UI events, one ``data:`` line each; comment lines as preamble and heartbeat.

    Call :meth:`bind_run` before the first event to echo the request's
    ``threadId`` and ``runId``. The preamble and heartbeats are comment *lines*
    that join the next event's block (see :class:`~streamrelay.formats.sse.SSEEncoder`
    for why); ``HttpAgent``'s parser ignores them. A terminal error is in-band
    (``RUN_ERROR``), so the response is never aborted.
    """

    name = "ag-ui"
    media_type = "text/event-stream"
    preamble_bytes = b": stream open\n"
    heartbeat_bytes = b": ping\n"

    def __init__(self, *, now: float) -> None:
        super().__init__(now=now)
        self._thread_id: str | None = None
        self._run_id: str | None = None
        self._cancellable = False  # the client reads RUN_FINISHED's cancelled outcome
        self._fallback_id = f"run-{int(now * 1000)}"
        self._started = False
        self._ended = False
        self._model = ""
        self._usage: Usage | None = None
        self._messages = 0  # message ids handed out
        self._text: bytes | None = None  # the open text message's id, as JSON
        self._reasoning: bytes | None = None  # the open reasoning span's id, as JSON
        self._parent: str | None = None  # the assistant message tool calls attach to
        self._calls: dict[int, _Call] = {}  # choice 0's calls, by call number
        self._call_ids: set[str] = set()

    def bind_run(self, thread_id: str, run_id: str, protocol_version: str | None = None) -> None:
        """Echo ``thread_id`` and ``run_id`` (the ``RunAgentInput``'s) on ``RUN_STARTED`` and
        ``RUN_FINISHED``; call it before the first event.

        ``protocol_version`` is the input's ``protocolVersion``: a client that declares
        1.0 or later is told of a stop as a cancelled run (``RUN_FINISHED`` with
        ``outcome: {"type": "cancelled"}``), which earlier clients' schemas reject;
        they get ``RUN_ERROR`` with code ``stopped``.
        """
        if self._started:
            raise RuntimeError("bind_run() must come before the first event")
        self._thread_id = thread_id
        self._run_id = run_id
        match = _VERSION.match(protocol_version) if isinstance(protocol_version, str) else None
        self._cancellable = match is not None and int(match.group(1)) >= 1

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """The AG-UI events for one upstream chunk's events; ``raw`` is ignored."""
        if self._ended:
            return b""
        out: list[bytes] = []
        for event in events:
            if type(event) is Delta or type(event) is Refusal:
                if event.index == 0 and event.text:
                    if not self._started:
                        self._start(out, "")
                    self._text_delta(out, event.text)
            elif type(event) is Reasoning:
                if event.index == 0 and event.text:
                    if not self._started:
                        self._start(out, "")
                    self._reasoning_delta(out, event.text)
            elif type(event) is ToolCall:
                if event.index == 0:
                    if not self._started:
                        self._start(out, "")
                    self._tool_call(out, event)
            elif type(event) is Start:
                self._model = self._model or event.model
                if not self._started:
                    self._start(out, event.id)
            elif type(event) is Finish:
                if event.index == 0:
                    self._close_all(out)
            elif type(event) is Usage:
                self._usage = event
            elif type(event) is Done:
                self._end(out, None)
                break
            elif type(event) is Error:
                self._end(out, event)
                break
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)

    # the run ------------------------------------------------------------------------

    def _start(self, out: list[bytes], upstream_id: str) -> None:
        self._started = True
        if self._run_id is None:
            self._run_id = upstream_id or self._fallback_id
        if self._thread_id is None:
            self._thread_id = self._run_id
        out.append(
            _event(
                {
                    "type": "RUN_STARTED",
                    "threadId": self._thread_id,
                    "runId": self._run_id,
                    "protocolVersion": PROTOCOL_VERSION,
                }
            )
        )

    def _end(self, out: list[bytes], error: Error | None) -> None:
        if not self._started:
            self._start(out, "")
        self._close_all(out)
        self._ended = True
        usage = self._token_usage()
        if error is None or (error.code == "stopped" and self._cancellable):
            run: dict[str, Any] = {
                "type": "RUN_FINISHED",
                "threadId": self._thread_id,
                "runId": self._run_id,
            }
            if error is not None:
                run["outcome"] = {"type": "cancelled"}
        else:
            run = {"type": "RUN_ERROR", "message": error.message}
            if error.code is not None:
                run["code"] = str(error.code)
        if usage is not None:
            run["usage"] = [usage]
        out.append(_event(run))

    def _token_usage(self) -> dict[str, Any] | None:
        """The upstream's usage as AG-UI's ``TokenUsage`` (non-negative integers only)."""
        usage = self._usage
        if usage is None:
            return None
        entry: dict[str, Any] = {}
        if self._model:
            entry["model"] = self._model
        for key, value in (
            ("inputTokens", usage.prompt_tokens),
            ("outputTokens", usage.completion_tokens),
            ("totalTokens", usage.total_tokens),
            ("reasoningTokens", _detail(usage.completion_tokens_details, "reasoning_tokens")),
            ("cachedInputTokens", _detail(usage.prompt_tokens_details, "cached_tokens")),
        ):
            if type(value) is int and value >= 0:
                entry[key] = value
        return entry

    # messages -----------------------------------------------------------------------

    def _new_message_id(self) -> str:
        self._messages += 1
        return f"{self._run_id}-{self._messages}"

    def _text_delta(self, out: list[bytes], text: str) -> None:
        message = self._text
        if message is None:
            self._close_reasoning(out)
            self._parent = message_id = self._new_message_id()
            self._text = message = _json.dumps(message_id)
            out.append(
                b'data: {"type":"TEXT_MESSAGE_START","messageId":%s,"role":"assistant"}\n\n'
                % message
            )
        out.append(
            b'data: {"type":"TEXT_MESSAGE_CONTENT","messageId":%s,"delta":%s}\n\n'
            % (message, _json.dumps(text))
        )

    def _close_text(self, out: list[bytes]) -> None:
        if self._text is not None:
            out.append(b'data: {"type":"TEXT_MESSAGE_END","messageId":%s}\n\n' % self._text)
            self._text = None

    def _reasoning_delta(self, out: list[bytes], text: str) -> None:
        span = self._reasoning
        if span is None:
            self._close_text(out)
            # Tool calls after this reasoning belong to a new assistant message, so that
            # the history a client builds keeps the order the model produced.
            self._parent = None
            self._reasoning = span = _json.dumps(self._new_message_id())
            out.append(b'data: {"type":"REASONING_START","messageId":%s}\n\n' % span)
            out.append(
                b'data: {"type":"REASONING_MESSAGE_START","messageId":%s,"role":"reasoning"}\n\n'
                % span
            )
        out.append(
            b'data: {"type":"REASONING_MESSAGE_CONTENT","messageId":%s,"delta":%s}\n\n'
            % (span, _json.dumps(text))
        )

    def _close_reasoning(self, out: list[bytes]) -> None:
        span = self._reasoning
        if span is not None:
            out.append(b'data: {"type":"REASONING_MESSAGE_END","messageId":%s}\n\n' % span)
            out.append(b'data: {"type":"REASONING_END","messageId":%s}\n\n' % span)
            self._reasoning = None

    # tool calls ---------------------------------------------------------------------

    def _tool_call(self, out: list[bytes], event: ToolCall) -> None:
        call = self._calls.get(event.call)
        if call is None:
            call = self._calls[event.call] = _Call()
        if call.state == 2:  # a fragment after the choice ended: nothing can carry it
            return
        if call.state == 0:
            if call.id is None and event.id is not None:
                call.id = event.id
            if call.name is None and event.name is not None:
                call.name = event.name
            if event.arguments:
                call.args.append(event.arguments)
            if call.name is not None:
                self._start_call(out, event.call, call, call.name)
        elif event.arguments:
            out.append(
                b'data: {"type":"TOOL_CALL_ARGS","toolCallId":%s,"delta":%s}\n\n'
                % (call.id_json, _json.dumps(event.arguments))
            )

    def _start_call(self, out: list[bytes], number: int, call: _Call, name: str) -> None:
        self._close_text(out)
        self._close_reasoning(out)
        parent = self._parent
        if parent is None:  # no text before the call: an empty assistant message holds it
            self._parent = parent = self._new_message_id()
            message = _json.dumps(parent)
            out.append(
                b'data: {"type":"TEXT_MESSAGE_START","messageId":%s,"role":"assistant"}\n\n'
                % message
            )
            out.append(b'data: {"type":"TEXT_MESSAGE_END","messageId":%s}\n\n' % message)
        call_id = call.id or f"{self._run_id}-call-{number}"
        if call_id in self._call_ids:  # AG-UI clients refuse a second call with one id
            call_id = f"{call_id}-{number}"
        self._call_ids.add(call_id)
        call.id = call_id
        call.id_json = _json.dumps(call_id)
        call.state = 1
        out.append(
            _event(
                {
                    "type": "TOOL_CALL_START",
                    "toolCallId": call_id,
                    "toolCallName": name,
                    "parentMessageId": parent,
                }
            )
        )
        arguments = "".join(call.args)
        call.args = []
        if arguments:
            out.append(
                b'data: {"type":"TOOL_CALL_ARGS","toolCallId":%s,"delta":%s}\n\n'
                % (call.id_json, _json.dumps(arguments))
            )

    def _close_all(self, out: list[bytes]) -> None:
        """Close everything open in choice 0: messages, then tool calls in order.

        A call whose name never came is dropped: no one can run a nameless tool, and a
        client that runs front-end tools would try.
        """
        self._close_reasoning(out)
        self._close_text(out)
        for call in self._calls.values():
            if call.state == 1:
                out.append(b'data: {"type":"TOOL_CALL_END","toolCallId":%s}\n\n' % call.id_json)
            call.state = 2
        self._parent = None


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + _json.dumps(obj) + b"\n\n"


def _detail(details: dict[str, Any] | None, key: str) -> object:
    return details.get(key) if isinstance(details, dict) else None
