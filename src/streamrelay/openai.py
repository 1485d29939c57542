"""OpenAI stream decoding, sans-I/O: chunk payloads in, normalized events out.

:class:`ChunkDecoder` understands ``chat.completion.chunk`` objects (OpenAI,
Azure, vLLM, Ollama, llama.cpp, ...), legacy completions (``choices[].text``),
the Responses API's ``response.*`` events, and both error shapes
(``{"error": {...}}`` and vLLM's ``{"object": "error", ...}``). Unknown fields
are ignored; nothing an upstream sends can crash it except with
:class:`~streamrelay.errors.ProtocolError`.

>>> d = ChunkDecoder()
>>> d.feed('{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}')
[Start(id='c1', model='m'), Delta(index=0, text='Hi')]
>>> d.feed("[DONE]")
[Done()]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _json
from .errors import ProtocolError
from .events import (
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

__all__ = ["ChunkDecoder", "usage_of"]

_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
_REASONING_EVENTS = frozenset(
    {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}
)
_THINKING_PARTS = frozenset({"thinking", "reasoning"})


class ChunkDecoder:
    """Decode one stream's data payloads into normalized events.

    Call :meth:`feed` with each SSE ``data`` string (or :meth:`feed_object` with
    an already-parsed chunk), then :meth:`close` at end of input. After a
    terminal event (``done`` or ``error``) :attr:`terminated` is true and later
    input is ignored.
    """

    __slots__ = (
        "_calls",
        "_choices",
        "_finished",
        "_started",
        "_tool_calls",
        "_tool_seen",
        "model",
        "terminated",
        "usage",
    )

    def __init__(self) -> None:
        self._started = False
        self._choices: set[int] = set()
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}  # Responses output_index -> call number
        self._tool_calls: dict[int, _CallNumbers] = {}  # chat: choice -> its calls
        self._tool_seen = False
        self.terminated = False
        self.model: str | None = None
        """The model the upstream named in its first chunk, if any."""
        self.usage: Usage | None = None
        """The last token usage the upstream reported, if any."""

    def feed(self, data: str) -> list[Event]:
        """Decode one SSE ``data`` payload."""
        if self.terminated:
            return []
        if data == "[DONE]":
            self.terminated = True
            return [Done()]
        try:
            obj = _json.loads(data)
        except (ValueError, RecursionError):  # the stdlib recurses on deep nesting
            raise ProtocolError(f"upstream sent data that is not JSON: {data[:60]!r}") from None
        if not isinstance(obj, dict):
            raise ProtocolError(f"upstream sent a JSON {type(obj).__name__}, not an object")
        return self.feed_object(obj)

    def feed_object(self, obj: Mapping[str, Any]) -> list[Event]:
        """Decode one parsed chunk (a dict, e.g. from the openai SDK's ``model_dump()``)."""
        if self.terminated:
            return []
        token = self.token(obj)
        return [token] if token is not None else self._decode(obj)

    def _decode(self, obj: Mapping[str, Any]) -> list[Event]:
        error = _error_of(obj)
        if error is not None:
            self.terminated = True
            usage = obj.get("usage")  # OpenRouter reports what the failed call cost
            if isinstance(usage, dict):
                return [self._usage(usage), error]
            return [error]
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            return self._responses_event(kind, obj)
        return self._chat_chunk(obj)

    def token(self, obj: Mapping[str, Any]) -> Delta | None:
        """The :class:`Delta` of the usual mid-stream chunk, one choice with only
        content, else ``None`` (and nothing has changed).

        :meth:`feed_object` tries it first: most chunks are such tokens, and this
        decodes them with far less work than the general path.
        """
        if not self._started or self.terminated or len(obj) > 8:
            return None
        choices = obj.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return None
        if "error" in obj or "type" in obj or obj.get("usage") is not None:
            return None
        if obj.get("object") == "error":
            return None
        choice = choices[0]
        if type(choice) is not dict or choice.get("finish_reason"):
            return None
        delta = choice.get("delta")
        if type(delta) is not dict or len(delta) != 1:
            return None
        content = delta.get("content")
        index = choice.get("index", 0)
        if type(content) is not str or not content or type(index) is not int:
            return None
        self._choices.add(index)
        return Delta(index, content)

    def close(self) -> list[Event]:
        """End of upstream input: ``done`` if the stream completed, else a truncation error.

        A stream that ends after every choice's ``finish_reason`` but without
        ``[DONE]`` is complete (several OpenAI-compatible servers omit it).
        """
        if self.terminated:
            return []
        self.terminated = True
        if self._finished and self._finished >= self._choices:
            return [Done()]
        return [
            Error(
                "the upstream stream ended before the response was complete",
                code="upstream_truncated",
            )
        ]

    def _start(self, obj: Mapping[str, Any]) -> Start:
        start = Start(_str(obj.get("id")), _str(obj.get("model")))
        self.model = start.model or None
        return start

    def _usage(self, usage: Mapping[str, Any]) -> Usage:
        self.usage = usage_of(usage)
        return self.usage

    # chat.completions -------------------------------------------------------

    def _chat_chunk(self, obj: Mapping[str, Any]) -> list[Event]:
        events: list[Event] = []
        choices = obj.get("choices")
        if not self._started and (obj.get("id") or choices):
            self._started = True
            events.append(self._start(obj))
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    self._choice(choice, events)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if not self._started:
                self._started = True
                events.insert(0, self._start(obj))
            events.append(self._usage(usage))
        return events

    def _choice(self, choice: Mapping[str, Any], events: list[Event]) -> None:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            index = 0
        self._choices.add(index)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            if "reasoning_content" in delta or "reasoning" in delta or "reasoning_details" in delta:
                _reasoning_fields(index, delta, events)
            content = delta.get("content")
            if content:
                if isinstance(content, str):
                    events.append(Delta(index, content))
                elif isinstance(content, list):
                    _content_parts(index, content, events)
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):
                events.append(Refusal(index, refusal))
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for position, call in enumerate(tool_calls):
                    if isinstance(call, dict):
                        events.append(self._tool_call(index, call, position))
            function_call = delta.get("function_call")  # pre-tools API
            if isinstance(function_call, dict):
                events.append(self._tool_call(index, {"function": function_call}, 0))
        else:
            text = choice.get("text")  # legacy completions
            if text and isinstance(text, str):
                events.append(Delta(index, text))
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str):
            self._finished.add(index)
            events.append(Finish(index, reason))

    def _tool_call(self, index: int, call: Mapping[str, Any], position: int) -> ToolCall:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        upstream = call.get("index", position)
        if not isinstance(upstream, int) or isinstance(upstream, bool):
            upstream = position
        call_id = call.get("id")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        numbers = self._tool_calls.get(index)
        if numbers is None:
            numbers = self._tool_calls[index] = _CallNumbers()
        name = function.get("name")
        return ToolCall(
            index,
            numbers.number(upstream, call_id),
            _str(function.get("arguments")),
            id=call_id,
            name=name if isinstance(name, str) and name else None,
        )

    # Responses API ----------------------------------------------------------

    def _responses_event(self, kind: str, obj: Mapping[str, Any]) -> list[Event]:
        if kind == "response.output_text.delta":
            return self._with_start(obj, Delta(0, _str(obj.get("delta"))))
        if kind == "response.refusal.delta":
            return self._with_start(obj, Refusal(0, _str(obj.get("delta"))))
        if kind in _REASONING_EVENTS:
            text = obj.get("delta")
            if text and isinstance(text, str):
                return self._with_start(obj, Reasoning(0, text))
            return []
        if kind == "response.output_item.added":
            item = obj.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                call = self._calls.setdefault(_int(obj.get("output_index")), len(self._calls))
                self._tool_seen = True
                return self._with_start(
                    obj,
                    ToolCall(
                        0,
                        call,
                        _str(item.get("arguments")),
                        id=_str(item.get("call_id")) or None,
                        name=_str(item.get("name")) or None,
                    ),
                )
            return []
        if kind == "response.function_call_arguments.delta":
            call = self._calls.setdefault(_int(obj.get("output_index")), len(self._calls))
            return self._with_start(obj, ToolCall(0, call, _str(obj.get("delta"))))
        if kind == "response.created":
            response = obj.get("response")
            if isinstance(response, dict) and not self._started:
                self._started = True
                return [self._start(response)]
            return []
        if kind in ("response.completed", "response.incomplete"):
            return self._responses_end(kind, obj)
        if kind == "response.failed":
            response = obj.get("response")
            err = response.get("error") if isinstance(response, dict) else None
            self.terminated = True
            if isinstance(err, dict):
                return [_error_from(err)]
            return [Error("the upstream response failed", "upstream_error")]
        return []

    def _responses_end(self, kind: str, obj: Mapping[str, Any]) -> list[Event]:
        response = obj.get("response")
        response = response if isinstance(response, dict) else {}
        events = self._with_start(obj)
        if kind == "response.completed":
            reason = "tool_calls" if self._tool_seen else "stop"
        else:
            details = response.get("incomplete_details")
            raw = _str(details.get("reason")) if isinstance(details, dict) else ""
            reason = _INCOMPLETE_REASONS.get(raw, raw or "length")
        events.append(Finish(0, reason))
        usage = response.get("usage")
        if isinstance(usage, dict):
            events.append(self._usage(usage))
        events.append(Done())
        self.terminated = True
        return events

    def _with_start(self, obj: Mapping[str, Any], *rest: Event) -> list[Event]:
        if self._started:
            return list(rest)
        self._started = True
        response = obj.get("response")  # response.completed etc. carry id and model
        if isinstance(response, dict):
            return [self._start(response), *rest]
        return [Start("", ""), *rest]


def usage_of(usage: Mapping[str, Any]) -> Usage:
    """A ``usage`` object of any of the APIs as a :class:`Usage`: chat and legacy
    completions name its counts ``prompt_tokens``/``completion_tokens``, the Responses
    API ``input_tokens``/``output_tokens`` (and its details likewise).

    >>> usage_of({"input_tokens": 3, "output_tokens": 1, "total_tokens": 4})
    Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4, prompt_tokens_details=None, completion_tokens_details=None)
    """
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        names = _CHAT_USAGE
    elif "input_tokens" in usage or "output_tokens" in usage:
        names = _RESPONSES_USAGE
    else:
        names = _CHAT_USAGE
    prompt, completion, prompt_details, completion_details = names
    return Usage(
        _int(usage.get(prompt)),
        _int(usage.get(completion)),
        _int(usage.get("total_tokens")),
        _dict(usage.get(prompt_details)),
        _dict(usage.get(completion_details)),
    )


_CHAT_USAGE = (
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
)
_RESPONSES_USAGE = (
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "output_tokens_details",
)


def _error_of(obj: Mapping[str, Any]) -> Error | None:
    err = obj.get("error")
    if err:
        if isinstance(err, dict):
            return _error_from(err)
        return Error(str(err), "upstream_error")
    if obj.get("object") == "error" or obj.get("type") == "error":
        return _error_from(obj)
    return None


def _error_from(err: Mapping[str, Any]) -> Error:
    status = _int(err.get("status") or err.get("status_code")) or None
    code = err.get("code")
    if type(code) is int:  # vLLM and OpenRouter put the HTTP status in "code"
        status = status or code
        code = None
    if not code or code == "error":
        code = err.get("type")
    if not code or code == "error":  # Responses "error" events: type is the event name
        code = "upstream_error"
    return Error(_str(err.get("message")) or "upstream error", str(code), status)


class _CallNumbers:
    """The tool-call numbers of one choice.

    A call keeps the upstream's ``index`` as its number, so a stream that numbers
    its calls itself (OpenAI: distinct indices, the ``id`` on a call's first
    fragment only) is passed on unchanged. A fragment whose ``id`` differs from the
    one its index carries so far starts a new call, numbered after every number in
    use; fragments without an ``id`` continue the latest call of their index.
    """

    __slots__ = ("current", "top", "used")

    def __init__(self) -> None:
        self.current: dict[int, tuple[str | None, int]] = {}  # index -> (id, number)
        self.used: set[int] = set()
        self.top = -1  # the highest number in use

    def number(self, upstream: int, call_id: str | None) -> int:
        current = self.current.get(upstream)
        if current is not None:
            seen_id, number = current
            if call_id is None or call_id == seen_id:
                return number
            if seen_id is None:  # the id came after the call's first fragment
                self.current[upstream] = (call_id, number)
                return number
            number = self.top + 1  # a second call under the same index
        elif upstream in self.used:  # taken by a call renumbered earlier
            number = self.top + 1
        else:
            number = upstream
        self.current[upstream] = (call_id, number)
        self.used.add(number)
        self.top = max(self.top, number)
        return number


def _reasoning_fields(index: int, delta: Mapping[str, Any], events: list[Event]) -> None:
    """The reasoning a delta carries in its own fields, each distinct text once."""
    texts: list[str] = []
    for text in (
        delta.get("reasoning_content"),
        delta.get("reasoning"),
        _details_text(delta.get("reasoning_details")),
    ):
        if text and isinstance(text, str) and text not in texts:
            texts.append(text)
            events.append(Reasoning(index, text))


def _details_text(details: object) -> str:
    """The text of OpenRouter's ``reasoning_details`` (encrypted ones have none)."""
    if not isinstance(details, list):
        return ""
    pieces: list[str] = []
    for detail in details:
        if isinstance(detail, dict):
            kind = detail.get("type")
            text = (
                detail.get("text")
                if kind == "reasoning.text"
                else detail.get("summary")
                if kind == "reasoning.summary"
                else None
            )
            if text and isinstance(text, str):
                pieces.append(text)
    return "".join(pieces)


def _content_parts(index: int, parts: list[Any], events: list[Event]) -> None:
    """Content sent as a list of parts: text, thinking (Mistral), refusal; others skipped."""
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if text and isinstance(text, str):
                events.append(Delta(index, text))
        elif kind in _THINKING_PARTS:
            text = _part_text(part.get(kind))
            if not text:
                text = _part_text(part.get("text"))
            if text:
                events.append(Reasoning(index, text))
        elif kind == "refusal":
            text = part.get("refusal")
            if text and isinstance(text, str):
                events.append(Refusal(index, text))


def _part_text(value: object) -> str:
    """A string, or the text of a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return ""
    pieces = []
    for part in value:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            text = part.get("text")
            if isinstance(text, str):
                pieces.append(text)
    return "".join(pieces)


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None
