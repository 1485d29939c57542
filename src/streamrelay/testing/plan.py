"""One request's answer, resolved before the first byte: the plan.

A plan merges the simulator's :class:`.SimulatorConfig` with the request's
``"simulator"`` overrides and its standard fields into everything the answer
will carry, in a form that belongs to no dialect: per choice, a list of
:class:`_Piece` (a reasoning, content or refusal token, or the start or an
argument fragment of a tool call). Each piece is one streamed step: ``delay``
paces the steps and ``after`` counts them.

Each generation route has a subclass that speaks its dialect:
:mod:`.chat` (``chat.completion`` and its chunks), :mod:`.completions` (legacy
``text_completion``) and :mod:`.responses` (a ``response`` and its events). A
plan answers in one of three ways: a JSON object (:meth:`_Plan.answer`, also the
simulator's oracle), an HTTP error (the ``status`` fault), or a stream, which the
subclass's :meth:`_Plan.events` yields step by step (a pause, an abort, or one
event's data) so that pacing and mid-stream faults live in one readable
generator. What is shared (reading the body, the content, the mid-stream faults,
sending) lives here.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Literal, TypeAlias

import anyio
import anyio.lowlevel
from starlette.types import Send

from .config import ROUTE_FAULTS, ROUTES, SimulatorConfig
from .recording import RecordedRequest
from .text import (
    _CITIES,
    _REFUSAL,
    _TOOL_NAMES,
    _cut,
    _digest,
    _generate,
    _generate_reasoning,
    _prompt_text,
)
from .wire import _dumps, _Framer, _headers, _send_json, _split_writer, _writer

_INVALID_UTF8 = b"\xc3\x28\xff\xfe"
_PLACEHOLDER = "@@INVALID@@"
_FILTER_SAFE = {
    name: {"filtered": False, "severity": "safe"}
    for name in ("hate", "self_harm", "sexual", "violence")
}
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached (simulated)."),
}
_MID_STREAM_MESSAGE = "The server had an error while processing your request."


@dataclass
class _Exchange:
    """What one response has done so far, shared with its disconnect watcher."""

    record: RecordedRequest
    disconnected: bool = False
    complete: bool = False
    abort: bool = False


def _without(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if name != key}


@dataclass(frozen=True)
class _Pause:
    seconds: float | None  # None: until cancelled


class _Abort:
    pass


@dataclass(frozen=True)
class _Named:
    """One event with an ``event:`` name, as the Responses API sends them."""

    event: str
    data: dict[str, Any] | bytes


_Step: TypeAlias = "_Pause | _Abort | _Named | dict[str, Any] | bytes"
"""What the stream does next: wait, drop the connection, or send one event's data."""

_Kind: TypeAlias = Literal["reasoning", "content", "refusal", "call", "arguments"]
_TEXT_KINDS = ("reasoning", "content", "refusal")


@dataclass(frozen=True)
class _Piece:
    """One streamed step of one choice."""

    kind: _Kind
    text: str = ""
    call: int = 0
    """The tool call a ``call`` (its start) or ``arguments`` piece belongs to."""


@dataclass(frozen=True)
class _Call:
    """One tool call, whole."""

    id: str
    name: str
    arguments: str


def _positive_int(body: Mapping[str, Any], *names: str) -> int | None:
    value = None
    for name in reversed(names):  # the first name wins
        if name in body:
            value = body[name]
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{names[-1]} must be a positive integer.")
    return value


def _read_n(body: Mapping[str, Any]) -> int:
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
        raise ValueError("n must be an integer from 1 to 128.")
    return n


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return isinstance(options, Mapping) and options.get("include_usage") is True


class _Plan:
    """Everything one generation request will get, resolved from config and body.

    Subclasses set :attr:`route` and :attr:`id_prefix`, read their own request
    fields in :meth:`_read`, and render the pieces in :meth:`answer`,
    :meth:`events`, :meth:`content_event` and :meth:`error_event`.
    """

    route: ClassVar[str]
    """A key of :data:`.ROUTES`."""
    id_prefix: ClassVar[str]
    id_length: ClassVar[int] = 29

    def __init__(self, base: SimulatorConfig, body: object) -> None:
        """Resolve a request body; raises :exc:`ValueError` with a client-facing message."""
        if not isinstance(body, Mapping):
            raise ValueError("The body must be a JSON object.")
        overrides = body.get("simulator", {})
        if not isinstance(overrides, Mapping):
            raise ValueError('"simulator" must be an object.')
        config = base.replace(**overrides)
        if "fault" in overrides:
            foreign = [name for name in config.faults if name not in ROUTE_FAULTS[self.route]]
            if foreign:
                raise ValueError(
                    f"The fault(s) {', '.join(foreign)} do not apply to POST {ROUTES[self.route]}."
                )
        self.config = config
        self.body: Mapping[str, Any] = body
        self.faults = config.faults_on(self.route)
        self.stream = body.get("stream") is True
        model = body.get("model")
        self.model: str = model if isinstance(model, str) and model else config.model
        # Not from the "simulator" options: a faulty stream keeps the clean one's id.
        digest = _digest("id", config.seed, _without(body, "simulator"))
        self.id = self.id_prefix + digest[: self.id_length]
        self.created = config.created if config.created is not None else int(time.time())
        self.fingerprint = "fp_" + _digest("fp", config.model)[:10]
        self.n = 1
        self.max_tokens: int | None = None
        self.include_usage = False
        self.conversation: object = []
        """What the generated text depends on (with the seed and the choice index)."""
        self.tool_names: list[str] = []
        self._read(body)
        self.prompt_tokens = self._count_prompt_tokens()
        self.pieces: list[list[_Piece]] = []
        self.tool_calls: list[_Call] = []
        self.finish_reason = "stop"
        self.truncated = False
        """Cut by the request's token limit (finish_reason ``length``)."""
        self.after = 0
        self._resolve()

    # What subclasses provide.

    def _read(self, body: Mapping[str, Any]) -> None:
        """Read the route's own fields into ``n``, ``max_tokens``, ``conversation``, ..."""
        raise NotImplementedError

    def answer(self) -> dict[str, Any]:
        """The whole answer without streaming."""
        raise NotImplementedError

    def events(self) -> Iterator[_Step]:
        """The stream, lazily: each step is built right before it is sent."""
        raise NotImplementedError

    def content_event(self, text: str) -> dict[str, Any] | _Named:
        """One event that carries ``text`` as content of choice 0 (for ``invalid_utf8``)."""
        raise NotImplementedError

    def error_event(self) -> dict[str, Any] | _Named:
        """The error event of ``mid_error``."""
        config = self.config
        error = {
            "message": config.message or _MID_STREAM_MESSAGE,
            "type": config.error_type or "server_error",
            "param": None,
            "code": config.code if config.code is not None else "server_error",
        }
        return {"error": error}

    def failed_event(self) -> _Named:  # pragma: no cover - only routes that honour "failed"
        raise NotImplementedError

    def token_steps(
        self, chunk: Callable[[int, _Piece], dict[str, Any]]
    ) -> Generator[_Step, None, bool]:
        """Each step's chunk (``chunk(index, piece)``) for every choice, paced, with the
        mid-stream faults at ``after``; returns whether a fault ended the stream."""
        for step in range(self.steps):
            if step == self.after and (yield from self.mid_stream_faults()):
                return True
            if step:
                yield _Pause(self.config.delay)
            for index in range(self.n):
                yield chunk(index, self.pieces[index][step])
        return self.after >= self.steps and (yield from self.mid_stream_faults())

    def completion_object(
        self, kind: str, choices: list[dict[str, Any]], **rest: Any
    ) -> dict[str, Any]:
        """A chat or legacy completion object (whole or chunk) around ``choices``."""
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
            **rest,
        }

    def chunk_of(self, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
        """One streamed chunk of ``kind`` carrying ``choice`` (``usage: null`` when the
        request asked for usage, as OpenAI sends it on every chunk but the last)."""
        if self.include_usage:
            return self.completion_object(kind, [choice], usage=None)
        return self.completion_object(kind, [choice])

    def _count_prompt_tokens(self) -> int:
        return max(1, len(_prompt_text(self.conversation).split()))

    # The content.

    def _resolve(self) -> None:
        config, faults = self.config, self.faults
        # A conversation that ends with tool results gets text, as from a real model: an
        # agent loop (the Agents SDK, pydantic-ai) then ends instead of calling forever.
        wants_tools = {"tools", "tool_index_collision"} & set(faults)
        calls = self._resolve_tools() if wants_tools and not _answers_tools(self.body) else []
        thinking = "reasoning" in faults or "parts" in faults
        kind: _Kind = "refusal" if "refusal" in faults else "content"
        if config.pieces is not None:
            given: list[str] | None = list(config.pieces)
        elif config.text is not None:
            given = _cut(config, config.text)
        elif "refusal" in faults:
            given = [_REFUSAL.split(" ")[0], *(" " + w for w in _REFUSAL.split(" ")[1:])]
        else:
            given = None
        for index in range(self.n):
            pieces: list[_Piece] = []
            if thinking:
                reasoning = _generate_reasoning(config, self.conversation, index)
                pieces += [_Piece("reasoning", text) for text in reasoning]
            if calls:
                pieces += calls
            else:
                tokens = given if given is not None else _generate(config, self.conversation, index)
                pieces += [_Piece(kind, text) for text in tokens]
            self.pieces.append(pieces)
        count = len(self.pieces[0])
        self.after = min(count // 2 if config.after is None else config.after, count)
        if "big_line" in faults:
            filler = ("lorem ipsum dolor sit amet " * (config.size // 27 + 1))[: config.size]
            for pieces in self.pieces:
                neighbours = pieces[max(self.after - 1, 0) : self.after + 1]
                kinds = [piece.kind for piece in neighbours if piece.kind in _TEXT_KINDS]
                if kinds or not pieces:  # never inside a tool call
                    pieces.insert(self.after, _Piece(kinds[0] if kinds else kind, filler))
        if calls:
            self.finish_reason = "tool_calls"
        elif self.max_tokens is not None and self.max_tokens < len(self.pieces[0]):
            self.pieces = [pieces[: self.max_tokens] for pieces in self.pieces]
            self.finish_reason = "length"
            self.truncated = True
            self.after = min(self.after, self.max_tokens)

    def _resolve_tools(self) -> list[_Piece]:
        config = self.config
        names = self.tool_names or list(_TOOL_NAMES)
        rng = random.Random(_digest("tools", config.seed, self.conversation))
        count = config.tool_calls
        if "tool_index_collision" in self.faults:
            count = max(count, 2)
        pieces: list[_Piece] = []
        for k in range(count):
            call_id = "call_" + _digest("call", config.seed, self.conversation, k)[:24]
            arguments = json.dumps(
                {"location": rng.choice(_CITIES), "unit": "celsius"}, ensure_ascii=False
            )
            self.tool_calls.append(_Call(call_id, names[k % len(names)], arguments))
            pieces.append(_Piece("call", call=k))
            pieces += [_Piece("arguments", text, call=k) for text in _cut(config, arguments)]
        return pieces

    @property
    def steps(self) -> int:
        """Streamed pieces per choice."""
        return len(self.pieces[0])

    def text(self, index: int = 0, kind: _Kind = "content") -> str:
        """All the text of one kind of choice ``index``."""
        return "".join(piece.text for piece in self.pieces[index] if piece.kind == kind)

    @property
    def completion_tokens(self) -> int:
        return self.steps * self.n

    @property
    def reasoning_tokens(self) -> int:
        return sum(piece.kind == "reasoning" for pieces in self.pieces for piece in pieces)

    @property
    def thinking(self) -> bool:
        """Whether the answer carries reasoning (``reasoning`` or ``parts``)."""
        return "reasoning" in self.faults or "parts" in self.faults

    def content_text(self, piece: _Piece) -> str:
        """A piece's text as sent: ``timestamps`` replaces content by the clock."""
        if piece.kind == "content" and "timestamps" in self.faults:
            return f"t={time.time_ns()} "
        return piece.text

    # Shared stream parts.

    def azure_prompt_filter(self) -> dict[str, Any]:
        """Azure's first chunk: the prompt's filter results, no choices."""
        return {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_SAFE}],
        }

    def mid_stream_faults(self) -> Generator[_Step, None, bool]:
        """Faults that fire after ``after`` tokens; returns ``True`` if the stream ends."""
        config, faults = self.config, self.faults
        if "invalid_utf8" in faults:
            event = self.content_event(_PLACEHOLDER)
            data = event.data if isinstance(event, _Named) else event
            assert isinstance(data, dict)
            raw = _dumps(data).replace(_PLACEHOLDER.encode(), _INVALID_UTF8)
            yield _Named(event.event, raw) if isinstance(event, _Named) else raw
        if "non_json" in faults:
            yield b"hello"
        if "stall" in faults:
            yield _Pause(config.stall)
        if "mid_error" in faults:
            yield self.error_event()
            return True
        if "mid_error_legacy" in faults:
            yield {
                "object": "error",
                "message": config.message or _MID_STREAM_MESSAGE,
                "type": config.error_type or "InternalServerError",
                "param": None,
                "code": config.code if config.code is not None else 500,
            }
            return True
        if "failed" in faults:
            yield self.failed_event()
            return True
        if "abrupt_close" in faults:
            yield _Abort()
            return True
        return "truncate" in faults

    # Sending.

    async def respond(self, send: Send, state: _Exchange) -> None:
        """Send the whole response; sets ``state.complete`` right before the last send."""
        record = state.record
        if "stall_headers" in self.faults:
            await _sleep(self.config.stall)
        if "status" in self.faults:
            await self.send_status_error(send, state)
            return
        if not self.stream:
            await _send_json(send, record, 200, self.answer())
            state.complete = True
            return
        record.status = 200
        headers = _headers(record, "text/event-stream; charset=utf-8", cache_control="no-cache")
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        framer = _Framer(self.faults)
        write = _split_writer(send) if "split" in self.faults else _writer(send)
        for step in self.events():
            if isinstance(step, _Pause):
                await _sleep(step.seconds)
            elif isinstance(step, _Abort):
                state.abort = state.complete = True
                return
            else:
                if isinstance(step, _Named):
                    await write(framer.frame(step.data, step.event))
                else:
                    await write(framer.frame(step))
                await anyio.lowlevel.checkpoint()
        if state.disconnected:
            return
        state.complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send_status_error(self, send: Send, state: _Exchange) -> None:
        config, status = self.config, self.config.status
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(
            status,
            ("server_error" if status >= 500 else "invalid_request_error", None, ""),
        )
        phrase = _status_phrase(status)
        headers = {}
        if config.retry_after is not None:
            headers["retry-after"] = str(math.ceil(config.retry_after))
            headers["retry-after-ms"] = str(round(config.retry_after * 1000))
        if config.body == "html":
            page = (
                f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
                f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                "</body>\r\n</html>\r\n"
            ).encode()
            state.record.status = status
            content_length = str(len(page))
            start = _headers(state.record, "text/html", content_length=content_length, **headers)
            await send({"type": "http.response.start", "status": status, "headers": start})
            state.complete = True
            await send({"type": "http.response.body", "body": page})
            return
        error = {
            "message": config.message or default_message or f"{status} {phrase} (simulated).",
            "type": config.error_type or default_type,
            "param": None,
            "code": config.code if config.code is not None else default_code,
        }
        state.complete = True
        await _send_json(send, state.record, status, {"error": error}, **headers)


def _answers_tools(body: Mapping[str, Any]) -> bool:
    """Whether the request's last message or input item is a tool's result."""
    for field in ("messages", "input"):
        items = body.get(field)
        if isinstance(items, list) and items and isinstance(items[-1], Mapping):
            last = items[-1]
            return last.get("role") == "tool" or last.get("type") == "function_call_output"
    return False


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _sleep(seconds: float | None) -> None:
    if seconds is None:
        await anyio.sleep_forever()
    else:
        await anyio.sleep(seconds)
