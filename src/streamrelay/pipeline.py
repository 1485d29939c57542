"""The one streaming loop. ``StreamRelay``, ``StreamRelayMiddleware`` and
``relay_response`` all end in :func:`run_stream`.

It opens the source under the first-byte timeout, sends the headers and a first
byte at once, then relays: one upstream read becomes at most one ASGI ``send``
(coalesced, never held back). One side task runs beside it, the monitor: it
waits for the client to leave, which cancels everything (closing the upstream
stops a paid generation), and once the stream is open it also sends heartbeats
and enforces the idle and send timeouts. It waits on the client with the next
deadline as its timeout instead of arming a timer per chunk, so the per-token
path is a decode, an encode and a send.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any

import anyio
from starlette.types import Send

from . import _http
from .errors import ConfigurationError, StreamRelayError, UpstreamStatusError, UpstreamUnavailable
from .events import Error
from .formats import Encoder
from .sources import Source
from .sse import DEFAULT_MAX_EVENT_BYTES
from .transcoder import Transcoder

__all__ = ["STREAM_HEADERS", "StreamAborted", "StreamSettings", "run_stream"]

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


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Timing and size limits of one stream. Times are in seconds; ``None`` disables.

    * ``heartbeat``: keep-alive after this much silence towards the client;
    * ``first_byte_timeout``: the upstream must answer (headers) within it, else 504;
    * ``idle_timeout``: the upstream must send something within it, else an
      ``upstream_timeout`` error event;
    * ``send_timeout``: a client that accepts nothing for this long is dropped
      and its upstream closed;
    * ``max_event_bytes``: the largest upstream line or event accepted.
    """

    heartbeat: float | None = 15.0
    first_byte_timeout: float | None = 60.0
    idle_timeout: float | None = 300.0
    send_timeout: float | None = 30.0
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    def __post_init__(self) -> None:
        for name in ("heartbeat", "first_byte_timeout", "idle_timeout", "send_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds or None")
        if self.max_event_bytes < 1024:
            raise ConfigurationError("max_event_bytes must be at least 1024")


class StreamAborted(StreamRelayError):
    """Raised to make the ASGI server drop a response it cannot end cleanly.

    The ``text`` format has no in-band way to report an error, and a client that
    stopped reading cannot receive one, so the connection is cut instead: the
    client's reader fails rather than showing a truncated answer as complete.
    """


_READING, _SENDING = 0, 1
_SHUTDOWN_SEND_TIMEOUT = 1.0
"""How long a stopping server's stream may take to send its ``shutdown`` error."""


async def run_stream(
    send: Send,
    *,
    open_source: Callable[[], Awaitable[Source]],
    wait_disconnect: Callable[[], Awaitable[Any]],
    encoder: Encoder,
    settings: StreamSettings,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Relay one stream to ``send`` until it ends, fails or the client leaves.

    ``open_source`` may raise :class:`~streamrelay.errors.UpstreamStatusError` or
    :class:`~streamrelay.errors.UpstreamUnavailable`; those become proper HTTP
    responses since nothing has been sent yet. ``wait_disconnect`` returns when
    the client has gone.
    """
    stream = _Stream(send, encoder, settings)
    async with anyio.create_task_group() as tg:
        stream.outer = tg.cancel_scope
        tg.start_soon(stream.monitor, wait_disconnect)
        try:
            await stream.run(open_source, headers)
        except Exception as exc:  # re-raised outside the task group, unwrapped
            stream.crash = exc
        # End the monitor without cancelling the task group: a CancelledError
        # that ends a task leaves a reference cycle (traceback, frames, the whole
        # stream) for the garbage collector, whose passes showed up as latency
        # spikes. The monitor's own scope catches its cancellation.
        stream.stop_monitor()
    stream.log()
    if stream.crash is not None:
        raise stream.crash
    if stream.abort is not None:
        raise StreamAborted(stream.abort)


class _Stream:
    __slots__ = (
        "abort",
        "beat",
        "beating",
        "bytes_out",
        "crash",
        "disconnected",
        "encoder",
        "last_in",
        "last_out",
        "opened_at",
        "outcome",
        "outer",
        "phase",
        "pump_scope",
        "send",
        "send_started",
        "settings",
        "stopped",
        "streaming",
        "timed_out",
        "transcoder",
        "ttfb",
        "wake_scope",
    )

    def __init__(self, send: Send, encoder: Encoder, settings: StreamSettings) -> None:
        self.send = send
        self.encoder = encoder
        self.settings = settings
        self.transcoder = Transcoder(encoder, max_event_bytes=settings.max_event_bytes)
        self.beating: anyio.Event | None = None  # set while a heartbeat is being sent
        self.phase = _READING
        self.opened_at = self.last_in = self.last_out = self.send_started = monotonic()
        self.ttfb: float | None = None
        self.timed_out: str | None = None
        self.disconnected = False
        self.abort: str | None = None
        self.crash: Exception | None = None
        self.outcome = "open"
        self.bytes_out = 0
        self.outer: anyio.CancelScope | None = None
        self.pump_scope: anyio.CancelScope | None = None
        self.beat = settings.heartbeat if encoder.heartbeat() else None
        self.streaming = False  # the headers are out: heartbeats and timeouts apply
        self.stopped = False
        self.wake_scope: anyio.CancelScope | None = None  # the monitor's current wait

    # the main task --------------------------------------------------------------

    async def run(
        self, open_source: Callable[[], Awaitable[Source]], headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        source: Source | None = None
        try:
            source = await self.open(open_source)
            if source is None:
                return
            self.ttfb = monotonic() - self.opened_at
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", self.encoder.media_type.encode()),
                        *STREAM_HEADERS,
                        *headers,
                    ],
                }
            )
            # Always a body message, even empty: some servers hold headers until one.
            await self.write(self.encoder.preamble())
            self.streaming = True
            self._wake_monitor()
            try:
                with anyio.CancelScope() as self.pump_scope:
                    await self.pump(source)
                # Stop the monitor first: a heartbeat after the final message is illegal.
                # (The client may still leave; the final send then fails and says so.)
                self.stop_monitor()
                with anyio.move_on_after(_or_inf(self.settings.send_timeout)) as final:
                    await self.finish()
                if final.cancelled_caught:  # the monitor no longer watches these sends
                    self.outcome = "send_timeout"
                    self.abort = "the client accepted nothing within the send timeout"
            except anyio.get_cancelled_exc_class():
                # Cancelled from outside, before the end: the server is stopping.
                if not self.disconnected and self.outcome == "open":
                    await self.shut_down()
                raise
        finally:
            if source is not None:
                complete = self.transcoder.terminated and self.transcoder.error is None
                with anyio.CancelScope(shield=True):
                    try:
                        await source.aclose(complete)
                    except Exception:  # closing a broken connection may fail; it is closed
                        logger.debug("closing the upstream failed", exc_info=True)

    async def open(self, open_source: Callable[[], Awaitable[Source]]) -> Source | None:
        """The opened source, or ``None`` once an HTTP error response has been sent."""
        failure: UpstreamStatusError | UpstreamUnavailable | None = None
        with anyio.move_on_after(_or_inf(self.settings.first_byte_timeout)):
            try:
                return await open_source()
            except (UpstreamStatusError, UpstreamUnavailable) as exc:
                failure = exc
        # Answered outside the timeout's scope: a timeout firing mid-answer would
        # leave a half-sent response to start again.
        if isinstance(failure, UpstreamStatusError):
            self.outcome = f"upstream_status:{failure.status_code}"
            await _http.send_passthrough(self.send, failure)
        elif failure is not None:
            self.outcome = failure.code
            await _http.send_error(
                self.send,
                failure.status_code,
                failure.message,
                code=failure.code,
                type="upstream_error",
            )
        else:
            self.outcome = "upstream_first_byte_timeout"
            await _http.send_error(
                self.send,
                504,
                f"the upstream did not answer within {self.settings.first_byte_timeout}s",
                code="upstream_timeout",
                type="upstream_error",
            )
        return None

    async def pump(self, source: Source) -> None:
        t = self.transcoder
        kind = source.kind
        if kind == "sse":
            feed: Callable[[Any], bytes] = t.feed_bytes
        elif kind == "text":
            feed = t.feed_text
        else:

            def feed(item: Any) -> bytes:
                return t.feed_object(*item)

        try:
            async for item in source.items:
                self.last_in = monotonic()
                out = feed(item)
                if out:
                    await self.write(out)
                    # The upstream is waited on again from here: a slow client's
                    # send must not count against the upstream's idle timeout.
                    self.last_in = self.last_out
                if t.terminated:
                    return
        except Exception as exc:  # the upstream connection broke (send errors cancel, not raise)
            logger.info("upstream stream broke: %s", type(exc).__name__)
            out = t.fail(Error("the upstream connection closed mid-stream", "upstream_closed"))
        else:
            out = t.end()
        if out:
            await self.write(out)

    async def finish(self) -> None:
        t = self.transcoder
        if self.timed_out == "idle":
            out = t.fail(
                Error(
                    f"the upstream sent nothing for {self.settings.idle_timeout}s",
                    "upstream_timeout",
                )
            )
            if out:
                await self.write(out)
        elif self.timed_out == "send":
            self.outcome = "send_timeout"
            self.abort = "the client accepted nothing within the send timeout"
            return
        if t.error is not None:
            self.outcome = f"error:{t.error.code}"
            if self.encoder.aborts_on_error:
                self.abort = f"stream failed ({t.error.code}): {t.error.message}"
                return
        else:
            self.outcome = "done"
        await self._send_body(b"", more_body=False)

    async def shut_down(self) -> None:
        """End the stream with a ``shutdown`` error event: the server cancelled us.

        Servers cancel the open responses once their graceful-shutdown period is
        over (uvicorn's ``--timeout-graceful-shutdown``, hypercorn's
        ``graceful_timeout``) while the connection is still open, so the client
        can still learn why its answer stops here instead of seeing a cut.
        """
        self.stop_monitor()
        self.outcome = "error:shutdown"
        out = self.transcoder.fail(Error("the server is shutting down", "shutdown"))
        if self.encoder.aborts_on_error:
            self.abort = "the server is shutting down"
            return
        with anyio.move_on_after(_SHUTDOWN_SEND_TIMEOUT, shield=True):
            if self.beating is None:  # else the heartbeat's send was cut mid-way
                await self._send_raw(out, True)
                await self._send_raw(b"", False)

    async def write(self, body: bytes) -> None:
        beating = self.beating  # as in _send_body, inline: this is the per-token path
        if beating is not None:
            await beating.wait()
        # No await between here and the send: the monitor sees the send phase.
        self.phase = _SENDING
        self.send_started = monotonic()
        await self._send_raw(body, True)
        self.phase = _READING
        self.last_out = monotonic()

    async def _send_body(self, body: bytes, *, more_body: bool) -> None:
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
        """The side task: waits for the client to leave, with the next deadline as timeout.

        Heartbeats and the idle and send timeouts apply once the stream is open.
        """
        while not self.stopped:
            wake = math.inf
            if self.streaming and self.timed_out is None:
                due, wake = self._due(monotonic())
                if due == "heartbeat":
                    await self._heartbeat()
                    continue
                if due is not None:
                    self._time_out(due)
                    continue
            with anyio.move_on_after(max(wake - monotonic(), 0.001)) as self.wake_scope:
                await wait_disconnect()
                self.client_gone()
                return

    def _due(self, now: float) -> tuple[str | None, float]:
        """What is due now (``"heartbeat"``, ``"idle"``, ``"send"`` or ``None``), and
        when to look again."""
        s = self.settings
        idle, beat = s.idle_timeout, self.beat
        if self.phase == _SENDING:
            # Nothing wakes the monitor when a send completes, so while one is in
            # flight it looks again within the shortest read-side period: the idle
            # and heartbeat deadlines, which start counting after the send, stay exact.
            wake = now + min((t for t in (idle, beat) if t is not None), default=60.0)
            if s.send_timeout is not None:
                deadline = self.send_started + s.send_timeout
                if now >= deadline:
                    return "send", now
                wake = min(wake, deadline)
            return None, wake
        wake = math.inf
        if idle is not None:
            deadline = self.last_in + idle
            if now >= deadline:
                return "idle", now
            wake = deadline
        if beat is not None:
            deadline = self.last_out + beat
            if now >= deadline:
                return "heartbeat", now
            wake = min(wake, deadline)
        if s.send_timeout is not None:
            # A send starting from now cannot time out before this.
            wake = min(wake, now + s.send_timeout)
        return None, wake

    def _wake_monitor(self) -> None:
        if self.wake_scope is not None:
            self.wake_scope.cancel()

    def stop_monitor(self) -> None:
        """The monitor returns at once, or after the heartbeat it is sending."""
        self.stopped = True
        self._wake_monitor()

    def client_gone(self) -> None:
        if not self.disconnected:
            self.disconnected = True
            if self.outcome == "open":  # not after the end: servers report one then too
                self.outcome = "client_disconnected"
            assert self.outer is not None
            self.outer.cancel()

    async def _heartbeat(self) -> None:
        # Called only while the pump waits on the upstream; if the pump gets data
        # meanwhile, its send waits for this one (see _send_body).
        self.beating = beating = anyio.Event()
        self.phase = _SENDING
        self.send_started = monotonic()
        try:
            with anyio.move_on_after(_or_inf(self.settings.send_timeout)) as scope:
                await self._send_raw(self.transcoder.heartbeat(), True)
        finally:
            self.beating = None
            beating.set()
        self.phase = _READING
        self.last_out = monotonic()
        if scope.cancelled_caught:
            self._time_out("send")

    def _time_out(self, kind: str) -> None:
        self.timed_out = kind
        if self.pump_scope is not None:
            self.pump_scope.cancel()

    def log(self) -> None:
        logger.info(
            "stream %s: format=%s events=%d bytes=%d ttfb=%s",
            self.outcome,
            self.encoder.name,
            self.transcoder.events_out,
            self.bytes_out,
            f"{self.ttfb * 1000:.0f}ms" if self.ttfb is not None else "-",
        )


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value
