"""Relaying a whole answer: the non-streaming calls of the OpenAI routes.

A client that does not ask for a stream (no ``"stream": true``, no ``?format=``)
is an OpenAI client that wants what OpenAI would give it: the upstream's JSON
``chat.completion``, ``response`` or ``text_completion``, with its status. The
policy is the stream's (key added, client credentials never forwarded,
``prepare``, ``allowed_models``, the token cap, limits); only the delivery differs.

Theory of operation
===================

The caller's task runs :func:`relay_answer`; it is the only one that sends.
Beside it, in one task group, the upstream call runs in a task of its own and a
watcher waits for the client to leave. The caller waits for the call with a
timeout that is the next thing due:

* **the client leaves**: the watcher cancels the group, which cancels the call,
  which closes the upstream connection: the generation stops there, as for a
  stream;
* **the answer arrives**: it is sent whole, with a ``content-length``, and the
  upstream's status and rate-limit headers;
* **``heartbeat`` seconds pass with no answer**: an idle proxy (nginx's 60 s
  ``proxy_read_timeout``, a load balancer's idle timeout) would soon cut the
  connection, and the client's SDK would retry: a second paid generation. So the
  relay commits to ``200 OK`` and sends a newline, then one per ``heartbeat``.
  Leading whitespace is valid JSON, so every client parses the answer that
  follows. The price: an upstream error that comes after this point can no
  longer change the status; it arrives as OpenAI's error body
  ``{"error": {...}}`` under ``200``. Errors nearly always come at once (a bad
  request, a rate limit), long before a heartbeat is due;
* **``idle_timeout`` seconds pass with no answer**: the call is cancelled and
  the client gets ``504 upstream_timeout`` (or its error body, once committed).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Any

import anyio
from starlette.types import Send

from . import _http, _json
from .config import StreamSettings
from .errors import RequestRejected, UpstreamUnavailable
from .events import Usage
from .observer import Observers, StreamStart
from .openai import usage_of
from .outcome import Ending, Outcome, StreamObserver
from .pipeline import log_outcome, observe

__all__ = ["ANSWER_HEADERS", "Answer", "relay_answer"]

Answer = tuple[int, list[tuple[str, str]], bytes]
"""What an upstream call for a whole answer returns: status, kept headers, body."""

ANSWER_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
)
"""Headers of a whole answer: never cached (it is one user's), and not buffered by
nginx once heartbeats have started."""


async def relay_answer(
    send: Send,
    *,
    call: Callable[[], Awaitable[Answer]],
    wait_disconnect: Callable[[], Awaitable[Any]],
    settings: StreamSettings,
    headers: Sequence[tuple[bytes, bytes]] = (),
    observer: StreamObserver | None = None,
    start: StreamStart | None = None,
    observers: Observers | None = None,
) -> Outcome:
    """Call the upstream for a whole answer and send it; see the module's theory.

    ``start`` labels the outcome (route, principal, request id); the ``observers``'
    watch starts just before ``call``. ``call`` may raise
    :class:`~streamrelay.errors.UpstreamUnavailable` or
    :class:`~streamrelay.errors.RequestRejected`; both become HTTP answers.
    Returns the :class:`~streamrelay.outcome.Outcome` (``format="json"``,
    ``streaming=False``), which ``observer`` gets too.
    """
    exchange = _Exchange(send, settings, headers)
    if start is not None:
        exchange.start = start
    watch = observers.start(exchange.start) if observers is not None else None
    try:
        await exchange.run(call, wait_disconnect)
    finally:
        outcome = exchange.outcome()
        if watch is not None:
            watch.finished(outcome)
        log_outcome(outcome, None, settings.log_format)
        if observer is not None:
            await observe(observer, outcome)
    return outcome


class _Exchange:
    """One non-streaming call's state; see the module's theory of operation."""

    def __init__(
        self, send: Send, settings: StreamSettings, headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        self.send = send
        self.settings = settings
        self.headers = headers
        self.started_at = monotonic()
        self.answer: Answer | None = None
        self.failure: UpstreamUnavailable | RequestRejected | None = None
        self.arrived = anyio.Event()
        self.committed = False  # the 200 head went out before the answer
        self.gone = False
        self.ending: Ending | None = None
        self.code: str | None = None
        self.status: int | None = None
        self.bytes_out = 0
        self.ttfb: float | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self.start = StreamStart("", "json", streaming=False)

    async def run(
        self, call: Callable[[], Awaitable[Answer]], wait_disconnect: Callable[[], Awaitable[Any]]
    ) -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                await wait_disconnect()
                self.client_gone(tg.cancel_scope)

            async def fetch() -> None:
                try:
                    self.answer = await call()
                except (UpstreamUnavailable, RequestRejected) as exc:
                    self.failure = exc
                self.arrived.set()

            tg.start_soon(watch)
            tg.start_soon(fetch)
            await self.wait(tg.cancel_scope)
            tg.cancel_scope.cancel()  # the watcher; and the call, if it timed out
        if not self.gone:
            with anyio.CancelScope() as scope:
                await self.deliver(scope)

    async def wait(self, group: anyio.CancelScope) -> None:
        """Until the answer arrives, sending heartbeats; or until the idle timeout.

        Every decision compares the clock with a deadline, never trusts a timer to
        have fired late enough (an event loop may wake a timer a little early).
        """
        limit, beat = self.settings.idle_timeout, self.settings.heartbeat
        deadline = self.started_at + (math.inf if limit is None else limit)
        next_beat = self.started_at + (math.inf if beat is None else beat)
        while True:
            now = monotonic()
            if now >= deadline:
                self.failure = UpstreamUnavailable(
                    f"the upstream did not answer within {limit}s",
                    code="upstream_timeout",
                    status_code=504,
                )
                return
            if now >= next_beat:
                assert beat is not None
                next_beat = now + beat
                if not self.committed:
                    self.committed = True
                    self.status = 200
                    self.ttfb = now - self.started_at
                    await self._send(group, self._head(200, [], None))
                await self._send(
                    group, {"type": "http.response.body", "body": b"\n", "more_body": True}
                )
                continue
            with anyio.move_on_after(min(deadline, next_beat) - now):
                await self.arrived.wait()
                return

    async def deliver(self, scope: anyio.CancelScope) -> None:
        if self.answer is not None:
            status, kept, body = self.answer
            if status < 300:
                self.ending = Ending.DONE
            else:
                self.ending, self.code = Ending.UPSTREAM_STATUS, f"upstream_status_{status}"
        else:
            failure = self.failure
            assert failure is not None
            if isinstance(failure, RequestRejected):
                self.ending, error_type = Ending.ERROR, failure.type
                kept = list(failure.headers.items())
            else:
                self.ending, error_type, kept = Ending.UPSTREAM_UNAVAILABLE, "upstream_error", []
            self.code = status_code = failure.code
            status = failure.status_code
            body = _http.error_body(failure.message, code=status_code, type=error_type)
        if not self.committed:
            self.status = status
            self.ttfb = monotonic() - self.started_at
            await self._send(scope, self._head(status, kept, len(body)))
        await self._send(scope, {"type": "http.response.body", "body": body})
        if self.ending is Ending.DONE:
            self.model, self.usage = _model_and_usage(body)

    def _head(self, status: int, kept: list[tuple[str, str]], length: int | None) -> dict[str, Any]:
        if self.start.request_id is not None:  # ours is in self.headers
            kept = _http.upstream_request_id(kept)
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept]
        if not any(k == b"content-type" for k, _ in raw):
            raw.append((b"content-type", b"application/json"))
        if length is not None:
            raw.append((b"content-length", str(length).encode()))
        return {
            "type": "http.response.start",
            "status": status,
            "headers": [*raw, *ANSWER_HEADERS, *self.headers],
        }

    async def _send(self, scope: anyio.CancelScope, message: dict[str, Any]) -> None:
        try:
            await self.send(message)
        except OSError:  # ASGI 2.4 servers raise on a closed connection
            self.client_gone(scope)
            await anyio.lowlevel.checkpoint()  # delivers the cancellation
        self.bytes_out += len(message.get("body", b""))

    def client_gone(self, scope: anyio.CancelScope) -> None:
        self.gone = True
        if self.ending is None or self.ending is Ending.DONE:
            self.ending, self.code = Ending.CLIENT_DISCONNECTED, "client_disconnected"
        scope.cancel()

    def outcome(self) -> Outcome:
        return Outcome(
            self.ending or Ending.SHUTDOWN,
            code=self.code if self.ending is not Ending.DONE else None,
            status=self.status,
            format="json",
            model=self.model,
            usage=self.usage,
            bytes_out=self.bytes_out,
            events_out=0,
            ttfb=self.ttfb,
            duration=monotonic() - self.started_at,
            streaming=False,
            route=self.start.route,
            principal=self.start.principal,
            request_id=self.start.request_id,
            upstream_status=self.answer[0] if self.answer is not None else None,
            # the client left before the answer came: the call was cancelled with it
            upstream_cancelled=self.gone and self.answer is None and self.failure is None,
        )


def _model_and_usage(body: bytes) -> tuple[str | None, Usage | None]:
    """The model and token usage of a whole answer, in any of the three APIs' shapes."""
    try:
        obj = _json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    model = obj.get("model") if isinstance(obj.get("model"), str) else None
    usage = obj.get("usage")
    return model, usage_of(usage) if isinstance(usage, dict) else None
