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
from .events import Delta, Done, Error, Event, Finish, Refusal, Start, ToolCall, Usage

__all__ = ["ChunkDecoder"]

_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


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

    def _usage(self, prompt: int, completion: int, total: int) -> Usage:
        self.usage = Usage(prompt, completion, total)
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
            events.append(
                self._usage(
                    _int(usage.get("prompt_tokens")),
                    _int(usage.get("completion_tokens")),
                    _int(usage.get("total_tokens")),
                )
            )
        return events

    def _choice(self, choice: Mapping[str, Any], events: list[Event]) -> None:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            index = 0
        self._choices.add(index)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if content and isinstance(content, str):
                events.append(Delta(index, content))
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):
                events.append(Refusal(index, refusal))
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for position, call in enumerate(tool_calls):
                    if isinstance(call, dict):
                        events.append(_tool_call(index, call, position))
            function_call = delta.get("function_call")  # pre-tools API
            if isinstance(function_call, dict):
                events.append(_tool_call(index, {"function": function_call}, 0))
        else:
            text = choice.get("text")  # legacy completions
            if text and isinstance(text, str):
                events.append(Delta(index, text))
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str):
            self._finished.add(index)
            events.append(Finish(index, reason))

    # Responses API ----------------------------------------------------------

    def _responses_event(self, kind: str, obj: Mapping[str, Any]) -> list[Event]:
        if kind == "response.output_text.delta":
            return self._with_start(obj, Delta(0, _str(obj.get("delta"))))
        if kind == "response.refusal.delta":
            return self._with_start(obj, Refusal(0, _str(obj.get("delta"))))
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
            events.append(
                self._usage(
                    _int(usage.get("input_tokens")),
                    _int(usage.get("output_tokens")),
                    _int(usage.get("total_tokens")),
                )
            )
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


def _tool_call(index: int, call: Mapping[str, Any], position: int) -> ToolCall:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    number = call.get("index", position)
    name = function.get("name")
    call_id = call.get("id")
    return ToolCall(
        index,
        number if isinstance(number, int) else position,
        _str(function.get("arguments")),
        id=call_id if isinstance(call_id, str) and call_id else None,
        name=name if isinstance(name, str) and name else None,
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
