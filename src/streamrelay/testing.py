"""An OpenAI-compatible streaming server for tests, demos and benchmarks.

:class:`Simulator` is a pure ASGI app that answers ``POST .../chat/completions``
the way OpenAI does, with deterministic text, realistic pacing and injectable
faults. :class:`ServerThread` runs it (or any ASGI app) under uvicorn on a real
socket in a background thread, so tests see real bytes, real chunked encoding
and real disconnects.

>>> with run_simulator(delay=0) as (sim, base_url):  # doctest: +SKIP
...     client = openai.OpenAI(base_url=base_url, api_key="unused")
...     stream = client.chat.completions.create(
...         model="sim-1",
...         messages=[{"role": "user", "content": "Hi"}],
...         stream=True,
...         extra_body={"simulator": {"fault": "mid_error", "after": 3}},
...     )

Every field of :class:`SimulatorConfig` can be overridden per request through
a ``"simulator"`` object in the JSON body (a relay forwards unknown fields
untouched), and faults can be combined: ``{"fault": ["crlf", "split"]}``.
The available faults are listed in :data:`FAULTS`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, TypeAlias, cast

import anyio
import anyio.lowlevel
import uvicorn
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "FAULTS",
    "RecordedRequest",
    "ServerThread",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "main",
    "run_simulator",
    "serve",
]

logger = logging.getLogger("streamrelay.testing")

FAULTS: Mapping[str, str] = {
    # Before the stream.
    "status": "an HTTP error (`status`, default 429) before any byte of the stream",
    "stall_headers": "wait `stall` seconds (default: until the client leaves) before the headers",
    # At `after` tokens.
    "mid_error": 'after `after` tokens, `data: {"error": {...}}`, then a clean end',
    "mid_error_legacy": 'like mid_error in the vLLM shape `{"object": "error", ...}`',
    "abrupt_close": "after `after` tokens, drop the connection: no terminating chunk",
    "stall": "after `after` tokens, go silent for `stall` seconds (default: forever), then go on",
    "truncate": "after `after` tokens, end cleanly without finish_reason and without [DONE]",
    "invalid_utf8": "after `after` tokens, one data line with invalid UTF-8 bytes, then go on",
    "non_json": "after `after` tokens, one `data: hello` line, then go on",
    "big_line": "a content token of `size` bytes (default 3 MiB) at position `after`",
    # At the end.
    "no_done": "the finish_reason chunk (and usage), then a clean end without [DONE]",
    # Payload shapes.
    "azure": "Azure OpenAI's chunks: prompt_filter_results first, content_filter_results",
    "tools": "stream `tool_calls` (default 1) parallel tool calls; finish_reason tool_calls",
    "refusal": "stream delta.refusal pieces instead of content",
    "timestamps": "each token is 't=<server time.time_ns() at send> '",
    # Framing.
    "crlf": "CRLF line endings",
    "cr": "CR line endings",
    "comments": "a ': keep-alive' comment block before every event",
    "nospace": "'data:{...}' without the space",
    "multiline": "each JSON payload split across several data: lines",
    "bom": "a UTF-8 byte order mark before the first event",
    "split": "every byte in its own write, pausing inside multi-byte characters and CRLFs",
}
"""Fault names accepted by ``"fault"``, with what each one does."""

# Some words are multi-byte in UTF-8 so that every default stream exercises decoders.
_VOCABULARY = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "eu",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "café",
    "naïve",
    "über",
    "façade",
    "smörgåsbord",
    "東京",
    "🚀",
)
_REFUSAL = "I'm sorry, but I can't help with that."
_CITIES = ("Paris", "Tokyo", "Lima", "Oslo", "Nairobi", "Montréal", "Zürich", "São Paulo")
_TOOL_NAMES = ("get_weather", "get_time", "search")
_BOM = b"\xef\xbb\xbf"
_INVALID_UTF8 = b"\xc3\x28\xff\xfe"
_SPLIT_PAUSE = 0.002
_SPLIT_PAUSE_EVERY = 64
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


# Configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator answers; every field can be overridden per request.

    A request overrides fields with a ``"simulator"`` object in its JSON body,
    e.g. ``{"simulator": {"fault": "stall", "after": 3, "stall": 0.5}}``.
    Standard request fields are honored as OpenAI does: ``stream``, ``n``,
    ``max_tokens`` / ``max_completion_tokens``, ``stream_options.include_usage``,
    ``model`` (echoed back) and ``tools`` (their names are used by ``tools``).
    """

    tokens: int = 40
    """Content tokens per choice when no ``text`` or ``pieces`` is given."""
    delay: float = 0.02
    """Seconds between two tokens."""
    first_delay: float = 0.0
    """Seconds before the first chunk (time to first byte of the body)."""
    model: str = "sim-1"
    """The model listed by ``/models``, and echoed when the request names none."""
    seed: int = 0
    """Seed of the generated text, mixed with the request's messages."""
    fault: str | Sequence[str] | None = None
    """One fault name, a list of them, or a comma-separated string; see :data:`FAULTS`."""
    after: int | None = None
    """Tokens sent before a mid-stream fault fires; ``None`` means half of them."""
    stall: float | None = None
    """Seconds of silence for ``stall`` and ``stall_headers``; ``None`` means forever."""
    status: int = 429
    """HTTP status of the ``status`` fault."""
    body: Literal["json", "html"] = "json"
    """Body of the ``status`` fault: OpenAI's JSON error or a proxy's HTML page."""
    message: str | None = None
    """Error message of ``status``, ``mid_error`` and ``mid_error_legacy``."""
    error_type: str | None = None
    """Error ``type``; by default chosen from the status (``server_error`` mid-stream)."""
    code: str | int | None = None
    """Error ``code``; by default chosen from the status (``server_error`` mid-stream)."""
    retry_after: float | None = 1.0
    """``retry-after`` (seconds) and ``retry-after-ms`` of the ``status`` fault."""
    text: str | None = None
    """Exact content to stream, cut into ``chunk_size``-character tokens."""
    pieces: Sequence[str] | None = None
    """Exact content tokens, one per chunk, verbatim (wins over ``text``)."""
    chunk_size: int = 4
    """Characters per token when cutting ``text`` and tool-call arguments."""
    size: int = 3 * 1024 * 1024
    """Bytes of the ``big_line`` token."""
    tool_calls: int = 1
    """Parallel tool calls streamed by the ``tools`` fault."""
    created: int | None = 1_700_000_000
    """The chunks' ``created``; fixed so that equal requests give equal bytes, or
    ``None`` for the current time."""

    def __post_init__(self) -> None:
        _check_int("tokens", self.tokens)
        _check_float("delay", self.delay)
        _check_float("first_delay", self.first_delay)
        _check_type("model", self.model, str)
        _check_int("seed", self.seed, minimum=None)
        object.__setattr__(self, "fault", _parse_faults(self.fault) or None)
        if self.after is not None:
            _check_int("after", self.after)
        if self.stall is not None:
            _check_float("stall", self.stall)
        _check_int("status", self.status, minimum=100)
        if self.status > 599:
            raise ValueError(f"status must be at most 599, not {self.status}")
        if self.body not in ("json", "html"):
            raise ValueError(f"body must be 'json' or 'html', not {self.body!r}")
        for name in ("message", "error_type", "text"):
            if getattr(self, name) is not None:
                _check_type(name, getattr(self, name), str)
        if self.code is not None:
            _check_type("code", self.code, (str, int))
        if self.retry_after is not None:
            _check_float("retry_after", self.retry_after)
        if self.pieces is not None:
            if isinstance(self.pieces, str) or not all(isinstance(p, str) for p in self.pieces):
                raise ValueError("pieces must be a list of strings")
            object.__setattr__(self, "pieces", tuple(self.pieces))
        _check_int("chunk_size", self.chunk_size, minimum=1)
        _check_int("size", self.size, minimum=1)
        _check_int("tool_calls", self.tool_calls, minimum=1)
        if self.created is not None:
            _check_int("created", self.created)

    @property
    def faults(self) -> tuple[str, ...]:
        """The fault names in effect, in the order given."""
        return _parse_faults(self.fault)

    def replace(self, **overrides: Any) -> SimulatorConfig:
        """A copy with some fields changed; unknown names raise :exc:`ValueError`."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown simulator option(s) {', '.join(unknown)}; known: {known}")
        return dataclasses.replace(self, **overrides)


def _parse_faults(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",") if name.strip()]
    elif isinstance(value, Sequence) and all(isinstance(name, str) for name in value):
        names = list(value)
    else:
        raise ValueError(f"fault must be a name or a list of names, not {value!r}")
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    return tuple(dict.fromkeys(names))


def _check_type(name: str, value: object, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} has the wrong type: {value!r}")


def _check_int(name: str, value: object, *, minimum: int | None = 0) -> None:
    _check_type(name, value, int)
    if minimum is not None and cast(int, value) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")


def _check_float(name: str, value: object) -> None:
    _check_type(name, value, (int, float))
    if not math.isfinite(cast(float, value)) or cast(float, value) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")


# Recording and statistics ----------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One HTTP request the simulator received, exactly as it arrived."""

    method: str
    path: str
    query_string: str
    headers: Headers
    """All request headers, case-insensitive, repeated ones kept (``getlist``)."""
    body: bytes
    request_id: str
    """The ``x-request-id`` the simulator answered with."""
    faults: tuple[str, ...] = ()
    status: int | None = None
    """The response status, once sent."""
    outcome: str = "pending"
    """``pending``, ``finished``, ``cancelled`` (client left), ``aborted``
    (``abrupt_close``), ``rejected`` (bad request) or ``failed`` (a bug)."""

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header, if any."""
        return self.headers.get("authorization")

    def json(self) -> Any:
        """The body parsed as JSON, or ``None`` if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


_Counter = Literal["started", "finished", "cancelled", "failed"]


class SimulatorStats:
    """Thread-safe counters of chat completion requests.

    ``started`` counts requests that began; each then ends ``finished`` (it sent
    all it meant to, including deliberate errors and ``abrupt_close``),
    ``cancelled`` (the client went away first) or ``failed`` (a simulator bug).
    ``active`` is the number in flight right now. The simulator updates them
    from its server thread; tests read and wait on them from theirs.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._counts: dict[str, int] = dict.fromkeys(
            ("started", "finished", "cancelled", "failed"), 0
        )
        self._active = 0
        self._generation = 0

    @property
    def started(self) -> int:
        """Requests that began since the last reset."""
        return self._counts["started"]

    @property
    def finished(self) -> int:
        """Requests that sent everything they meant to."""
        return self._counts["finished"]

    @property
    def cancelled(self) -> int:
        """Requests whose client disconnected before the end."""
        return self._counts["cancelled"]

    @property
    def failed(self) -> int:
        """Requests that ended with an unexpected exception in the simulator."""
        return self._counts["failed"]

    @property
    def active(self) -> int:
        """Requests in flight now (not cleared by :meth:`reset`)."""
        return self._active

    def snapshot(self) -> dict[str, int]:
        """All counters at one instant."""
        with self._condition:
            return {**self._counts, "active": self._active}

    def reset(self) -> None:
        """Zero the counters; requests still in flight will not count when they end."""
        with self._condition:
            self._counts = dict.fromkeys(self._counts, 0)
            self._generation += 1
            self._condition.notify_all()

    def wait(self, timeout: float = 5.0, **at_least: int) -> bool:
        """Block until each named counter is at least its value, e.g. ``wait(cancelled=1)``.

        Returns ``True``; raises :exc:`TimeoutError` listing the current counts if
        ``timeout`` seconds pass first.
        """
        self._check_names(at_least)
        with self._condition:
            if self._condition.wait_for(lambda: self._reached(at_least), timeout):
                return True
        raise self._timeout(timeout, at_least)

    async def wait_async(self, timeout: float = 5.0, **at_least: int) -> bool:  # noqa: ASYNC109
        """:meth:`wait` for async tests; polls, so it works from any event loop."""
        self._check_names(at_least)
        deadline = time.monotonic() + timeout
        while not self._reached(at_least):
            if time.monotonic() >= deadline:
                raise self._timeout(timeout, at_least)
            await anyio.sleep(0.005)
        return True

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no request is in flight; raises :exc:`TimeoutError` otherwise."""
        with self._condition:
            if self._condition.wait_for(lambda: self._active == 0, timeout):
                return True
        raise self._timeout(timeout, {"active": 0}, relation="==")

    async def wait_idle_async(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
        """:meth:`wait_idle` for async tests."""
        deadline = time.monotonic() + timeout
        while self._active:
            if time.monotonic() >= deadline:
                raise self._timeout(timeout, {"active": 0}, relation="==")
            await anyio.sleep(0.005)
        return True

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={value}" for name, value in self.snapshot().items())
        return f"SimulatorStats({counts})"

    def _begin(self) -> int:
        with self._condition:
            self._counts["started"] += 1
            self._active += 1
            self._condition.notify_all()
            return self._generation

    def _end(self, generation: int, outcome: _Counter) -> None:
        with self._condition:
            self._active -= 1
            if generation == self._generation:
                self._counts[outcome] += 1
            self._condition.notify_all()

    def _reached(self, at_least: Mapping[str, int]) -> bool:
        counts = self.snapshot()
        return all(counts[name] >= value for name, value in at_least.items())

    def _check_names(self, at_least: Mapping[str, int]) -> None:
        unknown = set(at_least) - {*self._counts, "active"}
        if unknown:
            raise TypeError(f"unknown counter(s): {', '.join(sorted(unknown))}")

    def _timeout(
        self, timeout: float, wanted: Mapping[str, int], relation: str = ">="
    ) -> TimeoutError:
        want = ", ".join(f"{name}{relation}{value}" for name, value in wanted.items())
        now = ", ".join(f"{name}={value}" for name, value in self.snapshot().items())
        return TimeoutError(f"simulator stats did not reach {want} within {timeout}s; now {now}")


# The ASGI app ------------------------------------------------------------------------------


class Simulator:
    """An OpenAI-compatible chat completions server, as a pure ASGI app.

    Routes (any prefix, such as ``/v1`` or a mount path, and an optional
    trailing slash): ``POST .../chat/completions`` and ``GET .../models``.
    No authentication is required; every request is recorded in
    :attr:`requests` and chat completions are counted in :attr:`stats`.

    ``overrides`` are :class:`SimulatorConfig` fields applied over ``config``.
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.config: SimulatorConfig = (config or SimulatorConfig()).replace(**overrides)
        """The defaults of every request."""
        self.requests: list[RecordedRequest] = []
        """Every request received, oldest first."""
        self.stats = SimulatorStats()
        """Counters of chat completion requests."""

    def reset(self) -> None:
        """Forget recorded requests and zero the stats."""
        self.requests.clear()
        self.stats.reset()

    def completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` object that ``body`` gets without streaming.

        A stream for the same body adds up to the same content, refusal, tool
        calls and finish reasons, unless a fault cuts it short or alters it
        (``timestamps``, ``invalid_utf8`` and ``non_json`` add unexpected data).
        Use it as the oracle of what a relay should deliver.
        """
        return _Plan.from_body(self.config, body).completion()

    def expected_text(self, body: Mapping[str, Any], index: int = 0) -> str:
        """The content text of choice ``index`` for ``body`` (``""`` for tools/refusal)."""
        message = self.completion(body)["choices"][index]["message"]
        return cast(str, message["content"] or "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http``; ``lifespan`` is acknowledged)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=Headers(scope=scope),
            body=bytes(body),
            request_id="req_" + uuid.uuid4().hex,
        )
        self.requests.append(record)
        try:
            await self._route(record, receive, send)
        finally:
            logger.info(
                "%s %s fault=%s -> %s %s",
                record.method,
                record.path,
                ",".join(record.faults) or "-",
                record.status if record.status is not None else "-",
                record.outcome,
            )

    async def _route(self, record: RecordedRequest, receive: Receive, send: Send) -> None:
        path = record.path.rstrip("/")
        if path.endswith("/chat/completions"):
            if record.method != "POST":
                await _send_error(send, record, 405, "Use POST.", allow="POST")
                return
            await self._chat(record, receive, send)
        elif path.endswith("/models"):
            if record.method != "GET":
                await _send_error(send, record, 405, "Use GET.", allow="GET")
                return
            model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "sim"}
            await _send_json(send, record, 200, {"object": "list", "data": [model]})
            record.outcome = "finished"
        else:
            await _send_error(send, record, 404, f"Unknown path {record.path}.")

    async def _chat(self, record: RecordedRequest, receive: Receive, send: Send) -> None:
        try:
            plan = _Plan.from_body(self.config, record.json())
        except ValueError as exc:
            await _send_error(send, record, 400, str(exc))
            record.outcome = "rejected"
            return
        record.faults = plan.faults
        state = _Exchange(record)
        outcome: _Counter = "failed"
        generation = self.stats._begin()
        try:
            # The watcher cancels the response the moment the client leaves, even
            # while it sleeps in a stall.
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_watch_disconnect, receive, state, task_group.cancel_scope)
                try:
                    await plan.respond(send, state)
                except OSError:  # ASGI servers may raise it on send after a disconnect
                    state.disconnected = True
                task_group.cancel_scope.cancel()
            outcome = "finished" if state.complete else "cancelled"
        except anyio.get_cancelled_exc_class():
            outcome = "finished" if state.complete else "cancelled"
            raise
        finally:
            record.outcome = "aborted" if state.abort else outcome
            self.stats._end(generation, outcome)
        if state.abort:
            raise _AbruptClose("simulated abrupt close (fault 'abrupt_close')")


class _AbruptClose(Exception):
    """Raised after the response started so that the server drops the connection."""


class _QuietAbruptClose(logging.Filter):
    """Keeps uvicorn from logging the deliberate :class:`_AbruptClose` as a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _AbruptClose))


def _quiet_abrupt_close() -> None:
    error_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAbruptClose) for f in error_logger.filters):
        error_logger.addFilter(_QuietAbruptClose())


@dataclass
class _Exchange:
    """What one response has done so far, shared with its disconnect watcher."""

    record: RecordedRequest
    disconnected: bool = False
    complete: bool = False
    abort: bool = False


async def _watch_disconnect(receive: Receive, state: _Exchange, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    state.disconnected = True
    scope.cancel()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _headers(record: RecordedRequest, content_type: str, **extra: str) -> list[tuple[bytes, bytes]]:
    headers = {"content-type": content_type, "x-request-id": record.request_id, **extra}
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]


async def _send_json(
    send: Send, record: RecordedRequest, status: int, obj: object, **headers: str
) -> None:
    body = _dumps(obj)
    record.status = status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _headers(
                record, "application/json", content_length=str(len(body)), **headers
            ),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(
    send: Send, record: RecordedRequest, status: int, message: str, **headers: str
) -> None:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    await _send_json(send, record, status, {"error": error}, **headers)
    record.outcome = "rejected"


def _dumps(obj: object, *, multiline: bool = False) -> bytes:
    separators = (",\n", ":") if multiline else (",", ":")
    try:
        return json.dumps(obj, ensure_ascii=False, separators=separators).encode()
    except UnicodeEncodeError:  # lone surrogates from the request: keep them escaped
        return json.dumps(obj, separators=separators).encode()


def _without(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if name != key}


def _digest(*parts: object) -> str:
    material = json.dumps(parts, sort_keys=True, default=repr, ensure_ascii=True)
    return hashlib.sha256(material.encode()).hexdigest()


# One request's answer ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Pause:
    seconds: float | None  # None: until cancelled


class _Abort:
    pass


_Step: TypeAlias = "_Pause | _Abort | dict[str, Any] | bytes"
"""What the stream does next: wait, drop the connection, or send one event's data."""


@dataclass
class _Plan:
    """Everything one chat completion request will get, resolved from config and body."""

    config: SimulatorConfig
    body: Mapping[str, Any]
    faults: tuple[str, ...]
    stream: bool
    n: int
    include_usage: bool
    max_tokens: int | None
    model: str
    id: str
    created: int
    fingerprint: str
    prompt_tokens: int
    choice_tokens: list[list[str]] = field(default_factory=list)
    tool_deltas: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    after: int = 0

    @classmethod
    def from_body(cls, base: SimulatorConfig, body: object) -> _Plan:
        """Resolve a request body; raises :exc:`ValueError` with a client-facing message."""
        if not isinstance(body, Mapping):
            raise ValueError("The body must be a JSON object.")
        overrides = body.get("simulator", {})
        if not isinstance(overrides, Mapping):
            raise ValueError('"simulator" must be an object.')
        config = base.replace(**overrides)
        messages = body.get("messages", [])
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            raise ValueError("n must be an integer from 1 to 128.")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise ValueError("max_tokens must be a positive integer.")
        options = body.get("stream_options") or {}
        model = body.get("model")
        plan = cls(
            config=config,
            body=body,
            faults=config.faults,
            stream=body.get("stream") is True,
            n=n,
            include_usage=isinstance(options, Mapping) and options.get("include_usage") is True,
            max_tokens=max_tokens,
            model=model if isinstance(model, str) and model else config.model,
            # Not from the "simulator" options: a faulty stream keeps the clean one's id.
            id="chatcmpl-" + _digest("id", config.seed, _without(body, "simulator"))[:29],
            created=config.created if config.created is not None else int(time.time()),
            fingerprint="fp_" + _digest("fp", config.model)[:10],
            prompt_tokens=max(1, len(_prompt_text(messages).split())),
        )
        plan._resolve_content(messages)
        return plan

    def _resolve_content(self, messages: object) -> None:
        config = self.config
        if "tools" in self.faults:
            self._resolve_tools(messages)
            return
        if config.pieces is not None:
            given: list[str] | None = list(config.pieces)
        elif config.text is not None:
            given = _cut(config, config.text)
        elif "refusal" in self.faults:
            given = [_REFUSAL.split(" ")[0], *(" " + w for w in _REFUSAL.split(" ")[1:])]
        else:
            given = None
        self.choice_tokens = [
            list(given) if given is not None else _generate(config, messages, index)
            for index in range(self.n)
        ]
        count = len(self.choice_tokens[0])
        self.after = min(count // 2 if config.after is None else config.after, count)
        if "big_line" in self.faults:
            filler = ("lorem ipsum dolor sit amet " * (config.size // 27 + 1))[: config.size]
            for tokens in self.choice_tokens:
                tokens.insert(self.after, filler)
        if self.max_tokens is not None and self.max_tokens < len(self.choice_tokens[0]):
            self.choice_tokens = [tokens[: self.max_tokens] for tokens in self.choice_tokens]
            self.finish_reason = "length"
            self.after = min(self.after, self.max_tokens)

    def _resolve_tools(self, messages: object) -> None:
        names = [
            tool["function"]["name"]
            for tool in self.body.get("tools") or []
            if isinstance(tool, Mapping)
            and isinstance(tool.get("function"), Mapping)
            and isinstance(tool["function"].get("name"), str)
        ] or list(_TOOL_NAMES)
        rng = random.Random(_digest("tools", self.config.seed, messages))
        for k in range(self.config.tool_calls):
            call_id = "call_" + _digest("call", self.config.seed, messages, k)[:24]
            name = names[k % len(names)]
            arguments = json.dumps(
                {"location": rng.choice(_CITIES), "unit": "celsius"}, ensure_ascii=False
            )
            self.tool_calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
            first = {"index": k, "id": call_id, "type": "function"}
            first["function"] = {"name": name, "arguments": ""}
            self.tool_deltas.append({"tool_calls": [first]})
            for piece in _cut(self.config, arguments):
                fragment = {"index": k, "function": {"arguments": piece}}
                self.tool_deltas.append({"tool_calls": [fragment]})
        self.finish_reason = "tool_calls"
        count = len(self.tool_deltas)
        self.after = min(count // 2 if self.config.after is None else self.config.after, count)

    @property
    def steps(self) -> int:
        """Chunks per choice between the role chunk and the finish chunk."""
        return len(self.tool_deltas) if self.tool_deltas else len(self.choice_tokens[0])

    def usage(self) -> dict[str, int]:
        completion = self.steps * self.n
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    # Non-streaming.

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in range(self.n):
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
            if self.tool_calls:
                message["tool_calls"] = self.tool_calls
            elif "refusal" in self.faults:
                message["refusal"] = "".join(self.choice_tokens[index])
            else:
                message["content"] = "".join(self.choice_tokens[index])
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            )
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": choices,
            "usage": self.usage(),
        }

    # Streaming.

    def chunk(
        self, index: int, delta: dict[str, Any], finish_reason: str | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        if "azure" in self.faults:
            filtered = bool(delta.get("content") or delta.get("refusal"))
            choice["content_filter_results"] = _FILTER_SAFE if filtered else {}
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": [choice],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def delta(self, step: int, index: int) -> dict[str, Any]:
        if self.tool_deltas:
            return self.tool_deltas[step]
        if "timestamps" in self.faults:
            return {"content": f"t={time.time_ns()} "}
        key = "refusal" if "refusal" in self.faults else "content"
        return {key: self.choice_tokens[index][step]}

    def events(self) -> Iterator[_Step]:
        """The stream, lazily: each step is built right before it is sent."""
        config = self.config
        if config.first_delay:
            yield _Pause(config.first_delay)
        if "azure" in self.faults:
            yield {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [
                    {"prompt_index": 0, "content_filter_results": _FILTER_SAFE}
                ],
            }
        role: dict[str, Any] = {"role": "assistant", "content": None if self.tool_deltas else ""}
        for index in range(self.n):
            yield self.chunk(index, dict(role))
        for step in range(self.steps):
            if step == self.after and (yield from self.mid_stream_faults()):
                return
            if step:
                yield _Pause(config.delay)
            for index in range(self.n):
                yield self.chunk(index, self.delta(step, index))
        if self.after >= self.steps and (yield from self.mid_stream_faults()):
            return
        for index in range(self.n):
            yield self.chunk(index, {}, self.finish_reason)
        if "azure" in self.faults:
            yield {
                "choices": [
                    {
                        "content_filter_offsets": {
                            "check_offset": 0,
                            "start_offset": 0,
                            "end_offset": 1,
                        },
                        "content_filter_results": _FILTER_SAFE,
                        "delta": {},
                        "finish_reason": None,
                        "index": 0,
                    }
                ],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
            }
        if self.include_usage:
            yield {**self.chunk(0, {}), "choices": [], "usage": self.usage()}
        if "no_done" not in self.faults:
            yield b"[DONE]"

    def mid_stream_faults(self) -> Generator[_Step, None, bool]:
        """Faults that fire after ``after`` tokens; returns ``True`` if the stream ends."""
        config, faults = self.config, self.faults
        if "invalid_utf8" in faults:
            placeholder = "@@INVALID@@"
            chunk = _dumps(self.chunk(0, {"content": placeholder}))
            yield chunk.replace(placeholder.encode(), _INVALID_UTF8)
        if "non_json" in faults:
            yield b"hello"
        if "stall" in faults:
            yield _Pause(config.stall)
        if "mid_error" in faults:
            error = {
                "message": config.message
                or "The server had an error while processing your request.",
                "type": config.error_type or "server_error",
                "param": None,
                "code": config.code if config.code is not None else "server_error",
            }
            yield {"error": error}
            return True
        if "mid_error_legacy" in faults:
            yield {
                "object": "error",
                "message": config.message
                or "The server had an error while processing your request.",
                "type": config.error_type or "InternalServerError",
                "param": None,
                "code": config.code if config.code is not None else 500,
            }
            return True
        if "abrupt_close" in faults:
            yield _Abort()
            return True
        return "truncate" in faults

    async def respond(self, send: Send, state: _Exchange) -> None:
        """Send the whole response; sets ``state.complete`` right before the last send."""
        record = state.record
        if "stall_headers" in self.faults:
            await _sleep(self.config.stall)
        if "status" in self.faults:
            await self.send_status_error(send, state)
            return
        if not self.stream:
            await _send_json(send, record, 200, self.completion())
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


def _prompt_text(messages: object) -> str:
    if not isinstance(messages, list):
        return ""
    texts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            )
    return "\n".join(texts)


def _generate(config: SimulatorConfig, messages: object, index: int) -> list[str]:
    rng = random.Random(_digest("text", config.seed, messages, index))
    return [" " + rng.choice(_VOCABULARY) for _ in range(config.tokens)]


def _cut(config: SimulatorConfig, text: str) -> list[str]:
    size = config.chunk_size
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Framer:
    """Turns event data into SSE bytes, with the framing faults applied."""

    def __init__(self, faults: Sequence[str]) -> None:
        self.eol = b"\r\n" if "crlf" in faults else b"\r" if "cr" in faults else b"\n"
        self.field = b"data:" if "nospace" in faults else b"data: "
        self.multiline = "multiline" in faults
        self.comments = "comments" in faults
        self.prefix = _BOM if "bom" in faults else b""

    def frame(self, data: dict[str, Any] | bytes) -> bytes:
        if isinstance(data, dict):
            lines = _dumps(data, multiline=self.multiline).split(b"\n")
        else:
            lines = [data]
        out = bytearray(self.prefix)
        self.prefix = b""
        if self.comments:
            out += b": keep-alive" + self.eol + self.eol
        for line in lines:
            out += self.field + line + self.eol
        out += self.eol
        return bytes(out)


_Write = Callable[[bytes], Awaitable[None]]


def _writer(send: Send) -> _Write:
    async def write(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    return write


def _split_writer(send: Send) -> _Write:
    async def write(data: bytes) -> None:
        for position, byte in enumerate(data):
            await send({"type": "http.response.body", "body": bytes((byte,)), "more_body": True})
            # Pause inside multi-byte characters and CRLFs, so that they straddle reads.
            if byte >= 0xC0 or byte == 0x0D or position % _SPLIT_PAUSE_EVERY == 0:
                await anyio.sleep(_SPLIT_PAUSE)

    return write


# Running a server --------------------------------------------------------------------------


class ServerThread:
    """Runs any ASGI app under uvicorn in a background thread, for tests.

    >>> with ServerThread(app) as server:  # doctest: +SKIP
    ...     httpx.get(server.url + "/health")

    The thread has its own event loop. Entering returns once the server accepts
    connections; leaving stops it, letting open responses finish for
    ``timeout_graceful_shutdown`` seconds before cancelling them (which closes
    their connections). ``port=0`` picks a free port. ``uvicorn_kwargs`` go to
    :class:`uvicorn.Config`; by default uvicorn leaves logging alone (its records
    propagate to the root logger, e.g. pytest's capture) and skips access logs.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_graceful_shutdown: float = 0.5,
        startup_timeout: float = 10.0,
        **uvicorn_kwargs: Any,
    ) -> None:
        uvicorn_kwargs.setdefault("log_config", None)
        uvicorn_kwargs.setdefault("access_log", False)
        self.app = app
        self.host = host
        self.startup_timeout = startup_timeout
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            # uvicorn uses it as an asyncio timeout, so fractions work.
            timeout_graceful_shutdown=cast(Any, timeout_graceful_shutdown),
            **uvicorn_kwargs,
        )
        self.server = uvicorn.Server(self.config)
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._port is None:
            raise RuntimeError("the server was not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind, start the thread and wait until the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        _quiet_abrupt_close()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._requested_port))
        self._port = cast(int, self._socket.getsockname()[1])
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError(f"the server failed to start: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the server did not start within {self.startup_timeout}s")
            time.sleep(0.002)

    def stop(self) -> None:
        """Shut the server down and wait for its thread (idempotent)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self.server.should_exit = True
        graceful = self.config.timeout_graceful_shutdown or 0
        thread.join(graceful + 5)
        if thread.is_alive():
            self.server.force_exit = True
            thread.join(5)
        if thread.is_alive():  # pragma: no cover - a wedged app; the thread is a daemon
            logger.warning("uvicorn thread %s did not stop", thread.name)

    def _run(self) -> None:
        assert self._socket is not None
        try:
            self.server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit on a failed startup included
            self._error = exc

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def run_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **overrides: Any,
) -> Iterator[tuple[Simulator, str]]:
    """Run a :class:`Simulator` on a real socket; yields it and its base URL ending in ``/v1``.

    >>> with run_simulator(delay=0) as (sim, base_url):  # doctest: +SKIP
    ...     httpx.post(base_url + "/chat/completions", json={"messages": []})
    """
    simulator = Simulator(config, **overrides)
    with ServerThread(simulator, host=host, port=port) as server:
        yield simulator, server.url + "/v1"


def serve(
    host: str = "127.0.0.1",
    port: int = 9000,
    config: SimulatorConfig | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Run the simulator in the foreground until interrupted, one log line per request."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s:     %(message)s")
    logger.setLevel(log_level.upper())
    _quiet_abrupt_close()
    server = uvicorn.Server(
        uvicorn.Config(
            Simulator(config),
            host=host,
            port=port,
            access_log=False,
            log_level=log_level,
            timeout_graceful_shutdown=1,
        )
    )
    server.run()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streamrelay.testing [--port 9000] [--tokens 40] [--delay 0.02] ...``"""
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m streamrelay.testing",
        description="An OpenAI-compatible streaming simulator with fault injection.",
        epilog="faults: " + ", ".join(FAULTS),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--tokens", type=int, default=defaults.tokens, help="tokens per answer")
    parser.add_argument(
        "--delay", type=float, default=defaults.delay, help="seconds between tokens"
    )
    parser.add_argument("--first-delay", type=float, default=defaults.first_delay)
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--fault", help="default fault(s) for every request, comma-separated")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    config = SimulatorConfig(
        tokens=args.tokens,
        delay=args.delay,
        first_delay=args.first_delay,
        model=args.model,
        seed=args.seed,
        fault=args.fault,
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.host, args.port, config, log_level=args.log_level)


if __name__ == "__main__":  # pragma: no cover
    main()
