"""The one streaming loop. :class:`~streamrelay.StreamRelay`,
:class:`~streamrelay.StreamRelayMiddleware` and :func:`~streamrelay.relay_response`
all end in :func:`run_stream`.

Theory of operation
===================

Two tasks run per stream, inside one task group whose scope is ``outer``:

* **The pump** (the caller's task, :meth:`_Stream.main`) opens the source under
  the first-byte timeout, sends the response head and a first body message at
  once, then relays: one upstream read becomes at most one ASGI ``send``
  (coalesced by the transcoder, never held back). It is the only task that
  sends, except for heartbeats. It finishes the stream (the terminal event,
  the last empty body message) under the send timeout.
* **The monitor** (:meth:`_Stream.monitor`) waits for the client to leave,
  with the next deadline from :class:`~streamrelay.timing.Deadlines` as its
  timeout instead of a timer per chunk, so the per-token path is a decode, an
  encode and a send. When a deadline falls due it sends a heartbeat, or *cuts*
  the pump (idle or send timeout) by cancelling ``pump_scope``.

That is the portable form, on anyio (trio, and streams with a store). Under
asyncio (Python 3.11 and later) a stream without a store uses asyncio's own
parts instead: the same design, with about 5 KiB less per open stream (anyio's
task group, task wrapper and cancel scopes held about 7 KiB of it, ``python -m
bench.allocations``), see :meth:`_Stream.begin_on_asyncio`:

* the monitor is the server's ``receive``, awaited in a plain task until the
  client's ``http.disconnect``, plus an alarm at the next deadline (one loop timer
  for the alarms of every stream, :mod:`streamrelay.alarms`), which runs
  :meth:`_Stream.tick`; a heartbeat falling due gets a short task of its own;
* cancelling ``outer`` or ``pump_scope`` is ``task.cancel()`` of the pump's own
  task, flagged first (``outer_cancelled``, ``pump_cancelled``); the region it
  was meant for catches the ``CancelledError`` and swallows it only when
  ``task.uncancel()`` says no one else (the server) cancelled too. A region
  only accepts cancels while the task is inside it (``in_pump``,
  ``outer_open``), which is what a closed cancel scope does.

Who cancels what:

* the client leaving (the monitor's receive, or an ``OSError`` from ``send``)
  cancels ``outer``: everything stops and the upstream is closed unfinished,
  which is what stops a paid generation;
* a timeout cancels only ``pump_scope``: the pump then writes the ending (an
  ``upstream_timeout`` error event, or nothing for a send timeout);
* the server cancelling the task (graceful shutdown over) reaches the pump
  while :attr:`_Stream.ending` is still unset: it sends a ``shutdown`` error.
* the pump ends the monitor without cancelling the group (:meth:`_Stream.stop_monitor`),
  because a ``CancelledError`` that ends a task leaves a reference cycle of the
  whole stream for the garbage collector, whose passes showed as latency spikes.

Windows that must not await:

* in :meth:`_Stream.write`, between waiting for a heartbeat in flight and
  starting the send: the monitor must see the send phase at once, or it could
  start a heartbeat beside the send (two ASGI sends at once);
* in the monitor, between computing what is due and acting on it.

With a store (:mod:`streamrelay.resume`), the stream is a *producer*: the pump
saves each upstream read's records before it sends them; the client leaving
*detaches* it instead of cancelling ``outer`` (no more sends or heartbeats, only
the idle timeout); a side task, the *watch*, beats the store and may *halt* the
pump (a stop, or an empty linger window), which then writes the ending into the
store. A resumed stream is an ordinary stream whose source is the store.

State has one home each: the clock readings and the timing rules in
:class:`~streamrelay.timing.Deadlines`; decode and encode state in the
:class:`~streamrelay.transcoder.Transcoder`; how the stream ended in
:attr:`_Stream.ending` (set once, first writer wins, except that a final send
timing out overrides a clean end); what the monitor cut the pump for in
:attr:`_Stream.cut`. The :class:`~streamrelay.outcome.Outcome` is built from
them at the end and handed to the observer.

Observers (``metrics=``, :mod:`streamrelay.observer`): their watch starts in
:meth:`_Stream.open`, just before ``open_source`` (a stream starts when its upstream
call is opened, and a trace's ``traceparent`` must exist by then), and is finished in
:func:`run_stream`'s ``finally``, exactly once, whatever happened. On the per-token
path it costs a ``None`` check per read; it hears the first token, each heartbeat,
and one overhead sample in :data:`~streamrelay.observer.OVERHEAD_SAMPLE_EVERY` reads
(read to send, from the clock readings the engine takes anyway).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from time import monotonic
from typing import Any, Literal

import anyio
from starlette.types import Receive, Send

from . import _http
from .alarms import Alarm, Alarms, alarms_for
from .config import StreamSettings
from .errors import (
    ProtocolError,
    RequestRejected,
    StreamRelayError,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from .events import Error
from .formats import Encoder, encoder_for
from .observer import OVERHEAD_SAMPLE_EVERY, Observers, StreamStart, StreamWatch
from .outcome import CANCELLING_ENDINGS, Ending, Outcome, StreamObserver
from .resume import Recording
from .sources import Source
from .timing import Deadlines, Due
from .transcoder import Transcoder

__all__ = [
    "STREAM_HEADERS",
    "Declined",
    "StreamAborted",
    "log_outcome",
    "observe",
    "outcome_fields",
    "run_stream",
]

logger = logging.getLogger("streamrelay")

STREAM_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
    # Compression middleware (Starlette's and Django's GZip, nginx gzip) skips a
    # response that already declares an encoding; otherwise it would hold tokens
    # back until its compressor's buffer fills.
    (b"content-encoding", b"identity"),
)
"""Headers every stream carries so that nothing between us and the client buffers it."""


class StreamAborted(StreamRelayError):
    """Raised to make the ASGI server drop a response it cannot end cleanly.

    The ``text`` format has no in-band way to report an error, and a client that
    stopped reading cannot receive one, so the connection is cut instead: the
    client's reader fails rather than showing a truncated answer as complete.
    """


_SHUTDOWN_SEND_TIMEOUT = 1.0
"""How long a stopping server's stream may take to send its ``shutdown`` error."""


async def run_stream(
    send: Send,
    *,
    open_source: Callable[[], Awaitable[Source]],
    wait_disconnect: Callable[[], Awaitable[Any]],
    format: str,
    settings: StreamSettings,
    headers: Sequence[tuple[bytes, bytes]] = (),
    observer: StreamObserver | None = None,
    recording: Recording | None = None,
    after: float = 0,
    encoder: Encoder | None = None,
    start: StreamStart | None = None,
    observers: Observers | None = None,
) -> Outcome | None:
    """Relay one stream to ``send`` until it ends, fails or the client leaves.

    ``open_source`` may raise :class:`~streamrelay.errors.UpstreamStatusError`,
    :class:`~streamrelay.errors.UpstreamUnavailable` or
    :class:`~streamrelay.errors.RequestRejected`; those become proper HTTP
    responses since nothing has been sent yet. ``wait_disconnect`` returns when
    the client has gone. The response head carries ``headers`` and the source's
    own :attr:`~streamrelay.sources.Source.headers`. With ``recording`` the stream
    is stored for resumes (see :mod:`streamrelay.resume`); a source of stored
    records (a resume) is replayed from position ``after``. ``start`` says what the
    stream is (route, principal, request id) for the outcome and the ``observers``,
    whose watch starts just before ``open_source`` is called. ``observer`` gets the
    :class:`~streamrelay.outcome.Outcome`, which is also returned (``None`` when
    ``open_source`` raised :class:`Declined` or a refusal; a watch then still hears
    of the end).

    Raises :class:`StreamAborted` when the response must be cut rather than ended
    (see there), and re-raises what the source raised unexpectedly.
    """
    encoder = encoder or encoder_for(format, now=time.time())
    stream = _Stream(send, encoder, settings, recording, after, start)
    stream.observers = observers
    task = _asyncio_task() if recording is None else None
    try:
        if task is not None:
            # (not a method of its own: every coroutine frame between the task and the
            # pump costs memory per open stream and time per token)
            stream.begin_on_asyncio(task, wait_disconnect)
            try:
                await stream.main(open_source, headers)
            except asyncio.CancelledError:
                if not stream.outer_cancelled or _uncancel(task) > 0:
                    raise  # the server's cancel, not (only) ours
            finally:
                stream.end_on_asyncio()
        else:
            async with anyio.create_task_group() as tg:
                stream.outer = tg.cancel_scope
                stream.tg = tg
                tg.start_soon(stream.monitor, wait_disconnect)
                await stream.main(open_source, headers)
    finally:
        # Also when the server cancels us before the stream opened: then the
        # ending is still unset, and the observer still hears of it.
        stream.end(Ending.SHUTDOWN, "shutdown")
        outcome = stream.outcome()
        if stream.watch is not None:
            stream.watch.finished(outcome)
        if not stream.is_declined:
            log_outcome(outcome, stream.crash, settings.log_format)
            if observer is not None:
                await observe(observer, outcome)
    if stream.is_declined:
        return None
    if stream.crash is not None:
        raise stream.crash
    abort = stream.abort_reason()
    if abort is not None:
        raise StreamAborted(abort)
    return outcome


class Declined(Exception):
    """Raised by an ``open_source`` that answered the request itself, without a stream
    (the middleware, when the host's response is not OpenAI SSE): :func:`run_stream`
    then returns ``None`` and reports no outcome, except to a watch already started,
    which hears of the ``status`` sent (as ``upstream_status`` when an error)."""

    def __init__(self, status: int | None = None) -> None:
        super().__init__(status)
        self.status = status


def _asyncio_task() -> asyncio.Task[Any] | None:
    """The running asyncio task, when the engine may use asyncio's own parts; ``None``
    under trio, or on Python 3.10, whose tasks cannot ``uncancel()``."""
    if sys.version_info < (3, 11):
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio loop: trio
        return None
    if task is None or not hasattr(task, "uncancel"):  # a loop's own task type
        return None
    return task


def _uncancel(task: asyncio.Task[Any]) -> int:
    """``task.uncancel()``: how many cancels are still pending (asyncio's parts need 3.11)."""
    if sys.version_info >= (3, 11):
        return task.uncancel()
    raise NotImplementedError  # pragma: no cover - _asyncio_task() gave no task


class _Stream:
    """One stream's state; see the module's theory of operation."""

    __slots__ = (
        "after",
        "alarm",
        "alarms",
        "beat_task",
        "beating",
        "bytes_out",
        "cancelled",
        "clock",
        "code",
        "crash",
        "cut",
        "detached",
        "encoder",
        "ending",
        "halt",
        "heartbeats",
        "in_pump",
        "is_declined",
        "monitor_stopped",
        "observers",
        "outer",
        "outer_cancelled",
        "outer_open",
        "pump_cancelled",
        "pump_scope",
        "receive",
        "receiver",
        "recording",
        "send",
        "settings",
        "start",
        "started_at",
        "status",
        "task",
        "tg",
        "transcoder",
        "ttfb",
        "ttft",
        "upstream_ended",
        "upstream_status",
        "wake_scope",
        "watch",
        "watch_scope",
        "writer_scope",
    )

    def __init__(
        self,
        send: Send,
        encoder: Encoder,
        settings: StreamSettings,
        recording: Recording | None = None,
        after: float = 0,
        start: StreamStart | None = None,
    ) -> None:
        self.send = send
        self.recording = recording
        self.start = start if start is not None else StreamStart("", encoder.name)
        self.observers: Observers | None = None
        self.watch: StreamWatch | None = None
        self.after = after  # a resumed stream's position
        self.detached = False  # the client left a stored stream, which goes on
        self.halt: Ending | None = None  # the watch stopped the pump (stopped, abandoned)
        self.tg: anyio.abc.TaskGroup | None = None
        self.watch_scope: anyio.CancelScope | None = None
        self.writer_scope: anyio.CancelScope | None = None
        self.settings = settings
        self.encoder = encoder
        self.transcoder = Transcoder(encoder, max_event_bytes=settings.max_event_bytes)
        self.clock = Deadlines(
            heartbeat=settings.heartbeat if encoder.heartbeat() else None,
            idle_timeout=settings.idle_timeout,
            send_timeout=settings.send_timeout,
        )
        self.started_at = monotonic()
        self.ttfb: float | None = None
        self.ttft: float | None = None
        self.heartbeats = 0
        self.upstream_status: int | None = None
        self.upstream_ended = False  # it ended, failed or broke: nothing left to cancel
        self.cancelled = False  # the upstream was closed unfinished on the client's account
        self.ending: Ending | None = None  # set once, when the stream's fate is known
        self.code: str | None = None
        self.status: int | None = None  # the HTTP status sent, once sent
        self.cut: Due | None = None  # what the monitor stopped the pump for
        self.beating: anyio.Event | None = None  # set while a heartbeat is being sent
        self.bytes_out = 0
        self.outer: anyio.CancelScope | None = None
        self.pump_scope: anyio.CancelScope | None = None
        self.wake_scope: anyio.CancelScope | None = None  # the monitor's current wait
        self.monitor_stopped = False
        self.crash: Exception | None = None  # what the source (or a side task) raised
        self.is_declined = False  # open_source answered the request itself
        # asyncio's own parts (begin_on_asyncio); ``task`` stays None on the anyio path
        self.task: asyncio.Task[Any] | None = None
        self.receiver: asyncio.Future[Any] | None = None  # awaits the client's disconnect
        self.receive: Receive | None = None  # the server's, when awaited directly
        self.alarms: Alarms | None = None  # the event loop's (see streamrelay.alarms)
        self.alarm: Alarm | None = None  # the next deadline
        self.beat_task: asyncio.Task[None] | None = None  # a heartbeat being sent
        self.outer_open = False  # ``task`` may be cancelled for the client leaving
        self.outer_cancelled = False
        self.in_pump = False  # ``task`` may be cancelled to cut the pump
        self.pump_cancelled = False

    def end(self, ending: Ending, code: str | None = None) -> None:
        """Record how the stream ended; the first ending recorded stands."""
        if self.ending is None:
            self.ending = ending
            self.code = code

    # the two ways to run ---------------------------------------------------------

    def begin_on_asyncio(
        self, task: asyncio.Task[Any], wait_disconnect: Callable[[], Awaitable[Any]]
    ) -> None:
        """Before :meth:`main` runs in ``task`` with asyncio's own parts instead of a task
        group (see the module): ``outer`` opens, the disconnect wait starts."""
        self.task = task
        self.alarms = alarms_for(task.get_loop())
        self.outer_open = True
        if isinstance(wait_disconnect, _http.DisconnectWaiter):
            # The server's own receive, awaited directly: no coroutine of ours held
            # for the stream's life (_received starts it again on another message).
            self.receive = wait_disconnect.receive
            self._await_receive()
        else:
            self.receiver = receiver = asyncio.ensure_future(wait_disconnect())
            receiver.add_done_callback(self._receiver_done)

    def end_on_asyncio(self) -> None:
        """After :meth:`main`, however it ended: nothing of the stream keeps running."""
        self.outer_open = False
        self.stop_side_tasks()
        if self.beat_task is not None:
            self.beat_task.cancel()

    # the pump -------------------------------------------------------------------

    async def main(
        self, open_source: Callable[[], Awaitable[Source]], headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        """The pump's whole life, inside ``outer``: open the source, send the head,
        pump, finish. (One method: a coroutine frame less per open stream.)"""
        try:
            source: Source | None = None
            try:
                source = await self.open(open_source)
                if source is None:  # answered with an HTTP error
                    self.stop_side_tasks()
                    return
                extra: list[tuple[bytes, bytes]] = []
                recording = self.recording
                if recording is not None and await recording.open():
                    self.transcoder.record()
                    extra.append((b"x-stream-id", recording.stream_id.encode()))
                    assert self.tg is not None
                    self.tg.start_soon(self._watch, recording)
                    if not recording.in_process:
                        self.tg.start_soon(self._writer, recording)
                elif source.kind == "records":
                    self.encoder.number_from(int(self.after) + 1)  # a resumed stream
                upstream_headers = source.headers
                if self.start.request_id is not None and upstream_headers:
                    # ours is in ``headers``; the upstream's (what its support asks for) moves
                    upstream_headers = [
                        (b"x-upstream-request-id", v) if k.lower() == b"x-request-id" else (k, v)
                        for k, v in upstream_headers
                    ]
                self.ttfb = monotonic() - self.started_at
                self.status = 200
                await self.send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", self.encoder.media_type.encode()),
                            *STREAM_HEADERS,
                            *self.encoder.headers,
                            *upstream_headers,
                            *headers,
                            *extra,
                        ],
                    }
                )
                # Always a body message, even empty: some servers hold headers until one.
                await self.write(self.encoder.preamble())
                self.clock.open(monotonic())
                self._wake_monitor()
                try:
                    task = self.task
                    if task is None:
                        with anyio.CancelScope() as self.pump_scope:
                            await self.pump(source)
                    else:  # the same region with asyncio's parts (inline: a frame less)
                        self.in_pump = True
                        try:
                            await self.pump(source)
                        except asyncio.CancelledError:
                            if not self.pump_cancelled or _uncancel(task) > 0:
                                raise  # the client left, or the server cancels: not a cut
                        finally:
                            self.in_pump = False
                    # Stop the monitor first: a heartbeat after the final message is illegal.
                    # (The client may still leave; the final send then fails and says so.)
                    self.stop_monitor()
                    with anyio.move_on_after(_or_inf(self.settings.send_timeout)) as final:
                        await self.finish()
                    if final.cancelled_caught:  # the monitor no longer watches these sends
                        self.ending, self.code = Ending.SEND_TIMEOUT, "send_timeout"
                except anyio.get_cancelled_exc_class():
                    if self.ending is None:  # not the client, not us: the server is stopping
                        await self.shut_down()
                    raise
            finally:
                self.outer_open = False  # the closing below is shielded from the client leaving
                if source is not None:
                    complete = self.transcoder.terminated and self.transcoder.error is None
                    self.cancelled = (
                        not self.upstream_ended
                        and source.kind != "records"
                        and (self.ending in CANCELLING_ENDINGS or self.halt is not None)
                    )
                    with anyio.CancelScope(shield=True):
                        try:
                            await source.aclose(complete)
                        except Exception:  # closing a broken connection may fail; it is closed
                            logger.debug("closing the upstream failed", exc_info=True)
        except Declined as declined:
            self.is_declined = True
            self.declined(declined)
        except Exception as exc:  # re-raised by run_stream at the very end, unwrapped
            self.crash = exc
            self.end(Ending.CRASHED, type(exc).__name__)
        self.stop_side_tasks()

    async def open(self, open_source: Callable[[], Awaitable[Source]]) -> Source | None:
        """The opened source, or ``None`` once an HTTP error response has been sent."""
        if self.observers is not None:  # a stream starts when its upstream call is opened
            self.watch = self.observers.start(self.start)
        failure: UpstreamStatusError | UpstreamUnavailable | RequestRejected | None = None
        with anyio.move_on_after(_or_inf(self.settings.first_byte_timeout)):
            try:
                source = await open_source()
                if source.kind != "records":  # a resume's upstream is another stream's
                    self.upstream_status = 200
                return source
            except (UpstreamStatusError, UpstreamUnavailable, RequestRejected) as exc:
                failure = exc
        # Answered outside the timeout's scope: a timeout firing mid-answer would
        # leave a half-sent response to start again.
        if isinstance(failure, RequestRejected):
            # Refused before anything went upstream (Upstream.open: a forwarded header
            # that cannot be written), answered as the mount answers any refusal; like
            # those, not a stream: no outcome.
            self.status = failure.status_code
            self.end(Ending.ERROR, failure.code)  # (for a watch: nothing went upstream)
            await _http.send_rejection(self.send, failure)
            raise Declined
        if isinstance(failure, UpstreamStatusError):
            self.end(Ending.UPSTREAM_STATUS, f"upstream_status_{failure.status_code}")
            self.status = self.upstream_status = failure.status_code
            await _http.send_passthrough(self.send, failure, self.start.request_id)
            return None
        if failure is None:
            failure = UpstreamUnavailable(
                f"the upstream did not answer within {self.settings.first_byte_timeout}s",
                code="upstream_timeout",
                status_code=504,
            )
        self.end(Ending.UPSTREAM_UNAVAILABLE, failure.code)
        self.status = failure.status_code
        await _http.send_error(
            self.send,
            failure.status_code,
            failure.message,
            code=failure.code,
            type="upstream_error",
        )
        return None

    def cut_pump(self) -> None:
        """Cancel ``pump_scope``; the pump then writes the ending."""
        task = self.task
        if task is None:
            if self.pump_scope is not None:
                self.pump_scope.cancel()
        elif self.in_pump and not self.pump_cancelled:
            self.pump_cancelled = True
            task.cancel()

    def cancel_outer(self) -> None:
        """Cancel ``outer``: everything stops (the client left, or a side task failed)."""
        task = self.task
        if task is None:
            assert self.outer is not None
            self.outer.cancel()
            return
        self.stop_monitor()
        if self.beat_task is not None:
            self.beat_task.cancel()
        if self.outer_open and not self.outer_cancelled:
            self.outer_cancelled = True
            task.cancel()

    async def pump(self, source: Source) -> None:
        t = self.transcoder
        clock = self.clock
        feed = t.feeder(source.kind, self.after)
        recording = self.recording
        watch = self.watch
        reads = 0  # counts down to the next overhead sample, with a watch
        poll = source.poll  # (no coroutine per read: a frame and a coroutine less per token)
        next_item = source.items.__anext__
        try:
            while True:
                if poll is not None:
                    item = poll.read_nowait()
                    if item is None:
                        await poll.readable()
                        continue
                    if not item:
                        break
                else:
                    try:
                        item = await next_item()
                    except StopAsyncIteration:
                        break
                clock.received(received := monotonic())
                out = feed(item)
                if t.records:  # a stored stream: the store first, then the client
                    assert recording is not None
                    recording.save(t.records)
                if self.ttft is None and t.tokens:
                    self.first_token()
                ended = t.terminated  # (before the send, which the client may cut)
                if ended:
                    self.upstream_ended = True
                if out:
                    await self.write(out)
                    if watch is not None:
                        if reads == 0:
                            reads = OVERHEAD_SAMPLE_EVERY
                            watch.overhead(max(clock.send_started - received, 0.0))
                        reads -= 1
                if ended:
                    return
        except Exception as exc:  # the source broke (send errors cancel, not raise)
            self.upstream_ended = True
            if _is_connection_error(exc):
                logger.warning("the upstream connection broke mid-stream: %r", exc)
            else:  # a bug in the caller's own generator: its traceback is what helps
                logger.error("the stream's source raised mid-stream", exc_info=exc)
            out = t.fail(Error("the upstream connection closed mid-stream", "upstream_closed"))
        else:
            self.upstream_ended = True
            out = t.end()
        await self.emit(out)

    def first_token(self) -> None:
        self.ttft = ttft = self.clock.last_in - self.started_at
        if self.watch is not None:
            self.watch.first_token(ttft)

    def declined(self, declined: Declined) -> None:
        """``open_source`` answered the request itself: what a started watch hears."""
        if self.ending is not None:  # refused before the call
            return
        if declined.status is not None:
            self.status = declined.status
        if self.status is not None and self.status >= 400:
            self.end(Ending.UPSTREAM_STATUS, f"upstream_status_{self.status}")
            self.upstream_status = self.status
        else:
            self.end(Ending.DONE)

    async def emit(self, out: bytes) -> None:
        """Bytes of the stream's end: saved to the store when it has one, then sent."""
        t = self.transcoder
        if t.records:
            assert self.recording is not None
            self.recording.save(t.records)
        if out:
            await self.write(out)

    async def finish(self) -> None:
        t = self.transcoder
        if self.halt is not None:  # a stored stream stopped, or abandoned by its readers
            code = self.halt.value
            message = (
                "the stream was stopped"
                if self.halt is Ending.STOPPED
                else "no reader came back for the stream in time"
            )
            await self.emit(t.fail(Error(message, code)))
            self.end(self.halt, code)
        elif self.cut is Due.IDLE_TIMEOUT:
            await self.emit(
                t.fail(
                    Error(
                        f"the upstream sent nothing for {self.settings.idle_timeout}s",
                        "upstream_timeout",
                    )
                )
            )
        elif self.cut is Due.SEND_TIMEOUT:
            self.end(Ending.SEND_TIMEOUT, "send_timeout")
            if self.recording is not None:  # readers end where the client stopped
                t.fail(Error("the client stopped reading", "send_timeout"))  # not sent: stored
                if t.records:
                    self.recording.save(t.records)
                await self.recording.finish()
            return
        if self.recording is not None:
            await self.recording.finish()
        if self.detached:
            self.end(Ending.ERROR if t.error is not None else Ending.DONE, _code(t.error))
            return
        if t.error is not None:
            self.end(Ending.ERROR, t.error.code)
            if self.encoder.aborts_on_error:
                return  # cut by StreamAborted: the format cannot say it in-band
        else:
            self.end(Ending.DONE)
        await self._send_body(b"", more_body=False)

    async def shut_down(self) -> None:
        """End the stream with a ``shutdown`` error event: the server cancelled us.

        Servers cancel the open responses once their graceful-shutdown period is
        over (uvicorn's ``--timeout-graceful-shutdown``, hypercorn's
        ``graceful_timeout``) while the connection is still open, so the client
        can still learn why its answer stops here instead of seeing a cut.
        """
        self.stop_monitor()
        self.end(Ending.SHUTDOWN, "shutdown")
        out = self.transcoder.fail(Error("the server is shutting down", "shutdown"))
        recording, records = self.recording, self.transcoder.records
        if recording is not None:
            with anyio.move_on_after(_SHUTDOWN_SEND_TIMEOUT, shield=True):
                if records:
                    recording.save(records)
                await recording.finish()
        if self.encoder.aborts_on_error or self.detached:
            return
        with anyio.move_on_after(_SHUTDOWN_SEND_TIMEOUT, shield=True):
            if self.beating is None:  # else the heartbeat's send was cut mid-way
                await self._send_raw(out, True)
                await self._send_raw(b"", False)

    async def write(self, body: bytes) -> None:
        if self.detached:  # a stored stream whose client left: the store has it
            return
        beating = self.beating  # as in _send_body, inline: this is the per-token path
        if beating is not None:
            await beating.wait()
        # No await between here and the send: the monitor sees the send phase.
        clock = self.clock
        clock.sending(monotonic())
        try:  # _send_raw, inline: one coroutine less per token
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:
            self.client_gone()
            await anyio.lowlevel.checkpoint()
        self.bytes_out += len(body)
        clock.sent(monotonic())

    async def _send_body(self, body: bytes, *, more_body: bool) -> None:
        if self.detached:
            return
        # Only a heartbeat can be in flight beside us. A lock would cost a trip
        # through the event loop per token (anyio's acquire always checkpoints).
        beating = self.beating
        if beating is not None:
            await beating.wait()
        await self._send_raw(body, more_body)

    async def _send_raw(self, body: bytes, more_body: bool) -> None:
        try:
            await self.send({"type": "http.response.body", "body": body, "more_body": more_body})
        except OSError:  # ASGI 2.4 servers raise on a closed connection
            self.client_gone()
            await anyio.lowlevel.checkpoint()  # delivers the cancellation
        self.bytes_out += len(body)

    # the monitor ----------------------------------------------------------------

    async def monitor(self, wait_disconnect: Callable[[], Awaitable[Any]]) -> None:
        """The side task: waits for the client to leave, with the next deadline as timeout."""
        while not self.monitor_stopped:
            if self.detached:
                await self._detached_monitor()
                return
            wake = math.inf
            if self.cut is None:
                check = self.check()
                if check is Due.HEARTBEAT:
                    await self._heartbeat()
                    continue
                wake = check
            with anyio.move_on_after(max(wake - monotonic(), 0.001)) as self.wake_scope:
                await wait_disconnect()
                self.client_gone()
                if not self.detached:
                    return

    async def _detached_monitor(self) -> None:
        """The client left a stored stream: tell the store, then watch the idle timeout."""
        assert self.recording is not None
        await self.recording.client_left()
        clock = self.clock
        clock.detach()
        while not self.monitor_stopped:
            due, wake = clock.due(monotonic())
            if due is not None and self.cut is None:
                self.cut = due
                self.cut_pump()
                return
            with anyio.move_on_after(max(wake - monotonic(), 0.001)) as self.wake_scope:
                await anyio.sleep_forever()

    def check(self) -> Literal[Due.HEARTBEAT] | float:
        """The monitor's decision, now: :attr:`Due.HEARTBEAT` (to send one), else when
        to look again, after cutting the pump if a timeout fell due."""
        due, wake = self.clock.due(monotonic())
        if due is None:
            return wake
        if due is Due.HEARTBEAT:
            return Due.HEARTBEAT
        self.cut = due
        self.cut_pump()
        return math.inf

    def tick(self) -> None:
        """The monitor under asyncio: act on what is due, then set the alarm for the
        next look (called by that alarm, and whenever the deadlines change)."""
        alarms = self.alarms
        assert alarms is not None
        if self.alarm is not None:
            alarms.cancel(self.alarm)
            self.alarm = None
        if self.monitor_stopped or self.cut is not None or self.beat_task is not None:
            return
        check = self.check()
        if check is Due.HEARTBEAT:
            self.beat_task = beat = alarms.loop.create_task(self._beat())
            beat.add_done_callback(self._side_done)
        elif check != math.inf:
            self.alarm = alarms.set(check, self.tick)

    async def _beat(self) -> None:
        try:
            await self._heartbeat()
        finally:
            self.beat_task = None
        self.tick()

    def _receiver_done(self, receiver: asyncio.Future[Any]) -> None:
        if not receiver.cancelled() and receiver.exception() is None:
            self.client_gone()
        else:
            self._side_done(receiver)

    def _received(self, receiver: asyncio.Future[Any]) -> None:
        """The server's ``receive`` returned (see :meth:`begin_on_asyncio`): the client
        left, or another message came (a spurious ``http.request``), then wait again."""
        if receiver.cancelled() or receiver.exception() is not None:
            self._side_done(receiver)
        elif receiver.result().get("type") == "http.disconnect":
            self.client_gone()
        elif self.receiver is receiver and not self.monitor_stopped:
            self._await_receive()

    def _await_receive(self) -> None:
        assert self.receive is not None
        self.receiver = receiver = asyncio.ensure_future(self.receive())
        receiver.add_done_callback(self._received)

    def _side_done(self, side: asyncio.Future[Any]) -> None:
        """A side task under asyncio failed: the stream crashes with its exception, as a
        task group would end it."""
        if side.cancelled():
            return
        exc = side.exception()
        if exc is None:
            return
        if self.crash is None and isinstance(exc, Exception):
            self.crash = exc
        self.end(Ending.CRASHED, type(exc).__name__)
        self.cancel_outer()

    def _wake_monitor(self) -> None:
        if self.task is not None:
            self.tick()
        elif self.wake_scope is not None:
            self.wake_scope.cancel()

    def stop_monitor(self) -> None:
        """The monitor (and a stored stream's watch) return at once, or after the
        heartbeat being sent."""
        self.monitor_stopped = True
        self._wake_monitor()
        if self.receiver is not None:
            self.receiver.cancel()
        if self.watch_scope is not None:
            self.watch_scope.cancel()

    def client_gone(self) -> None:
        recording = self.recording
        if recording is not None and recording.active and self.ending is None:
            # A stored stream goes on without its client, for readers to come.
            if not self.detached:
                self.detached = True
                self._wake_monitor()
            return
        # Not after the end: servers report a disconnect then too.
        self.end(Ending.CLIENT_DISCONNECTED, "client_disconnected")
        self.cancel_outer()

    async def _writer(self, recording: Recording) -> None:
        with anyio.CancelScope() as self.writer_scope:
            await recording.writer()

    def stop_side_tasks(self) -> None:
        """Everything beside the pump returns: the monitor, the watch, and the store's
        writer (which a normal end has drained already)."""
        self.stop_monitor()
        if self.writer_scope is not None:
            self.writer_scope.cancel()

    async def _watch(self, recording: Recording) -> None:
        with anyio.CancelScope() as self.watch_scope:
            if self.monitor_stopped:  # the stream ended before this task began
                return
            await recording.watch(self._halt)

    def _halt(self, why: Ending) -> None:
        """The watch ends a stored stream (a stop, or no reader in time)."""
        if self.halt is None and self.ending is None:
            self.halt = why
            self.cut_pump()

    async def _heartbeat(self) -> None:
        # Called only while the pump waits on the upstream; if the pump gets data
        # meanwhile, its send waits for this one (see write).
        self.beating = beating = anyio.Event()
        clock = self.clock
        clock.sending(monotonic())
        try:
            with anyio.move_on_after(_or_inf(self.settings.send_timeout)) as scope:
                await self._send_raw(self.transcoder.heartbeat(), True)
            self.heartbeats += 1
            if self.watch is not None:
                self.watch.heartbeat(clock.send_started - clock.last_out)
        finally:
            self.beating = None
            beating.set()
        # The pump still waits on the upstream: its idle time keeps counting.
        clock.sent(monotonic(), waited_on_client=False)
        if scope.cancelled_caught:
            self.cut = Due.SEND_TIMEOUT
            self.cut_pump()

    # the end --------------------------------------------------------------------

    def outcome(self) -> Outcome:
        t = self.transcoder
        return Outcome(
            self.ending or Ending.SHUTDOWN,
            code=self.code,
            status=self.status,
            format=self.encoder.name,
            model=t.model,
            usage=t.usage,
            bytes_out=self.bytes_out,
            events_out=t.events_out,
            ttfb=self.ttfb,
            duration=monotonic() - self.started_at,
            route=self.start.route,
            principal=self.start.principal,
            stream_id=(
                self.recording.stream_id
                if self.recording is not None and self.recording.opened
                else self.start.stream_id
            ),
            request_id=self.start.request_id,
            upstream_status=self.upstream_status,
            ttft=self.ttft,
            heartbeats=self.heartbeats,
            upstream_cancelled=self.cancelled,
        )

    def abort_reason(self) -> str | None:
        """Why the response must be cut instead of ended, if it must."""
        if self.detached:
            return None  # nobody is there to cut
        if self.ending is Ending.SEND_TIMEOUT:
            return "the client accepted nothing within the send timeout"
        error = self.transcoder.error
        if (
            self.ending in (Ending.ERROR, Ending.SHUTDOWN)
            and self.encoder.aborts_on_error
            and error is not None
        ):
            return f"stream failed ({error.code}): {error.message}"
        return None


def log_outcome(outcome: Outcome, crash: Exception | None, style: str = "kv") -> None:
    """The one log line of a stream's (or a whole answer's) end.

    Its fields (:func:`outcome_fields`) are attributes of the log record too, for a
    JSON formatter; the message is ``key=value`` pairs (``style="kv"``) or one JSON
    object (``"json"``), as :attr:`StreamSettings.log_format
    <streamrelay.StreamSettings>` says. WARNING for upstream failures (an error
    status, an unreachable upstream, a mid-stream error), INFO for normal ends and
    client disconnects, DEBUG for the rest.
    """
    if crash is not None:
        return  # the server logs the exception with its traceback
    level = _LOG_LEVELS.get(outcome.ending, logging.DEBUG)
    if not logger.isEnabledFor(level):
        return
    fields = outcome_fields(outcome)
    kind = "stream" if outcome.streaming else "answer"
    if style == "json":
        message = _json_line({"event": kind, **fields})
    else:
        message = f"{kind} {outcome.ending.value} " + " ".join(
            f"{key}={_kv_value(value)}"
            for key, value in fields.items()
            if key != "outcome" and value is not None
        )
    logger.log(level, "%s", message, extra=fields)


def outcome_fields(outcome: Outcome) -> dict[str, Any]:
    """An outcome as flat log fields (times in milliseconds, ``None`` when unknown).

    >>> outcome_fields(Outcome(Ending.DONE, route="responses", duration=0.5))["duration_ms"]
    500.0
    """
    usage = outcome.usage
    return {
        "outcome": outcome.ending.value,
        "code": outcome.code if outcome.ending is not Ending.DONE else None,
        "request_id": outcome.request_id,
        "route": outcome.route or None,
        "format": outcome.format,
        "status": outcome.status,
        "upstream_status": outcome.upstream_status,
        "model": outcome.model,
        "principal": outcome.principal,
        "stream_id": outcome.stream_id,
        "events": outcome.events_out,
        "bytes": outcome.bytes_out,
        "heartbeats": outcome.heartbeats,
        "ttfb_ms": _ms(outcome.ttfb),
        "ttft_ms": _ms(outcome.ttft),
        "duration_ms": _ms(outcome.duration),
        "input_tokens": usage.prompt_tokens if usage is not None else None,
        "output_tokens": usage.completion_tokens if usage is not None else None,
        "upstream_cancelled": outcome.upstream_cancelled,
    }


_LOG_LEVELS = {
    Ending.UPSTREAM_STATUS: logging.WARNING,
    Ending.UPSTREAM_UNAVAILABLE: logging.WARNING,
    Ending.ERROR: logging.WARNING,
    Ending.DONE: logging.INFO,
    Ending.CLIENT_DISCONNECTED: logging.INFO,
}
"""Endings not named here (a send timeout, a stop, a shutdown...) log at DEBUG."""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _kv_value(value: object) -> str:
    """A value for ``key=value``: bare when plain, else JSON-quoted (so a model name or
    principal with spaces, quotes or a newline cannot forge a field or a line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and all(c.isalnum() or c in "._:/@+-" for c in text) and text.isascii():
        return text
    return _json_line(text)


def _json_line(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


async def observe(observer: StreamObserver, outcome: Outcome) -> None:
    """Call the user's observer; its failure is logged, never the client's problem."""
    try:
        result = observer(outcome)
        if inspect.isawaitable(result):
            with anyio.CancelScope(shield=True):
                await result
    except Exception:
        logger.exception("the on_stream_end observer failed")


_NETWORK_MODULES = ("httpx", "httpcore", "aiohttp", "anyio", "h11", "ssl")


def _is_connection_error(exc: Exception) -> bool:
    """Whether a source failed because its connection did (not because of a bug)."""
    return isinstance(exc, (OSError, EOFError, ProtocolError)) or (
        type(exc).__module__.partition(".")[0] in _NETWORK_MODULES
    )


class _QuietAbort(logging.Filter):
    """Drops the server's "Exception in ASGI application" record for a :class:`StreamAborted`.

    Raising is the only way ASGI has to cut a response; it is how the relay ends a
    ``text`` stream that failed, a deliberate act already logged by the stream's end
    line, not a crash worth a traceback in the server's log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamAborted))


for _server_logger in ("uvicorn.error", "hypercorn.error", "granian", "_granian", "daphne"):
    logging.getLogger(_server_logger).addFilter(_QuietAbort())


def _code(error: Error | None) -> str | None:
    return error.code if error is not None else None


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value
