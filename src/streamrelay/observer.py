"""Watching streams as they live: the :class:`Observer` protocol behind metrics, tracing,
billing and audit.

Every entry point takes ``metrics=`` (one observer or a list). For each request that
starts a generation the engine calls :meth:`Observer.stream_started` with a
:class:`StreamStart` just before it opens the upstream call; the observer may return
a :class:`StreamWatch`, which follows that one stream and hears of its first token,
its heartbeats, a sample of the relay's own overhead, and finally its
:class:`~streamrelay.outcome.Outcome`. Whole (non-streaming) answers are observed
the same way with ``StreamStart.streaming`` false; a resume of a stored stream is a
start with ``resumed`` true.

Theory of operation
===================

* **One watch per stream, one home for its state.** An observer that needs
  per-stream state (a span, a gauge it must give back) keeps it in its watch; the
  engine holds the watch next to the stream and drops it at the end.
* **Every started watch is finished.** :meth:`StreamWatch.finished` is called
  exactly once for each watch returned, whatever happens: an error status, a
  disconnect, the server stopping, the middleware's host answering without a stream.
* **The per-token path stays cheap.** Watches are called from the engine's task,
  synchronously: no task, no lock, no await. :meth:`StreamWatch.overhead` is
  sampled (the first read, then one in :data:`OVERHEAD_SAMPLE_EVERY`) so that an
  observer costs nothing per token beyond a counter; the rest happens once per
  stream.
* **An observer's failure is never the client's.** Exceptions raised by an observer
  are logged (once per stream and hook) and otherwise ignored.

A watch that bills by user::

    class Billing(Observer):
        def stream_started(self, start: StreamStart) -> StreamWatch | None:
            return Bill(start.principal)

    class Bill(StreamWatch):
        def __init__(self, who: str | None) -> None:
            self.who = who
        def finished(self, outcome: Outcome) -> None:
            if outcome.usage is not None:
                charge(self.who, outcome.usage.total_tokens)

    relay = StreamRelay(upstream, metrics=[PrometheusMetrics(), Billing()])

This module is part of the sans-I/O core: it imports nothing outside the standard
library.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .outcome import Outcome

__all__ = [
    "OVERHEAD_SAMPLE_EVERY",
    "Observer",
    "Observers",
    "StreamStart",
    "StreamWatch",
    "observers_of",
]

logger = logging.getLogger("streamrelay")

OVERHEAD_SAMPLE_EVERY = 16
"""One upstream read in this many (after the first) reports its relay overhead."""


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What is known of a request when the engine is about to call the upstream.

    Attributes:
        route: where it came in: ``chat.completions``, ``responses``,
            ``completions``, ``chat``, ``ag-ui`` (the mount's routes), ``streams``
            (a resume), ``middleware`` or ``relay_response``.
        format: the wire format (``sse``, ``openai``, ``ai-sdk``...), ``json`` for a
            whole answer.
        streaming: ``False`` for a whole (non-streaming) answer: it is observed,
            but it is not a stream.
        resumed: a reader resuming a stored stream (no upstream call of its own).
        model: the model the request asked for, if it named one.
        principal: whose it is (the ``principal`` hook's answer, as a string).
        request_id: the request's id (its ``x-request-id``, or one made up).
        stream_id: the stored stream's id, when a store keeps it.
        server: the upstream's host name, when the relay calls it itself.
        server_port: the upstream's port, with ``server``.
        upstream_headers: headers the observers want sent to the upstream with
            this call (an OpenTelemetry ``traceparent``):
            :meth:`Observer.stream_started` may append ``(name, value)`` pairs.
    """

    route: str
    format: str
    streaming: bool = True
    resumed: bool = False
    model: str | None = None
    principal: str | None = None
    request_id: str | None = None
    stream_id: str | None = None
    server: str | None = None
    server_port: int | None = None
    upstream_headers: list[tuple[str, str]] = field(default_factory=list, compare=False)

    @property
    def operation(self) -> str:
        """The GenAI operation: ``text_completion`` for the legacy completions
        route, else ``chat``.

        >>> StreamStart("completions", "sse").operation, StreamStart("responses", "sse").operation
        ('text_completion', 'chat')
        """
        return "text_completion" if self.route == "completions" else "chat"


class StreamWatch:
    """Follows one stream from its start to its end. Every method does nothing by
    default; override what you need. All are called synchronously from the stream's
    own task, so they must not block."""

    __slots__ = ()

    def first_token(self, seconds: float) -> None:
        """The first token (content, reasoning, a refusal or a tool call) arrived from
        the upstream, ``seconds`` after the stream started."""

    def heartbeat(self, gap: float) -> None:
        """A keep-alive went to the client after ``gap`` seconds of silence."""

    def overhead(self, seconds: float) -> None:
        """The relay spent ``seconds`` between an upstream read and its send to the
        client (decode, encode, store). Sampled: see :data:`OVERHEAD_SAMPLE_EVERY`."""

    def finished(self, outcome: Outcome) -> None:
        """The stream ended (called exactly once)."""


class Observer:
    """Hears of every stream a relay starts; pass it as ``metrics=``.

    :class:`~streamrelay.metrics.PrometheusMetrics` and
    :class:`~streamrelay.metrics.OpenTelemetryMetrics` are observers; so is
    anything with this method.
    """

    def stream_started(self, start: StreamStart) -> StreamWatch | None:
        """A stream (or a whole answer, or a resume) is about to call the upstream.
        Return a :class:`StreamWatch` to follow it, or ``None``."""
        return None


class Observers:
    """Several observers as one, with their failures contained (the engine's side of
    the protocol: it never calls an observer directly)."""

    __slots__ = ("members",)

    def __init__(self, members: Sequence[Observer]) -> None:
        self.members = tuple(members)

    def start(self, start: StreamStart) -> StreamWatch | None:
        """Each member's watch of ``start``, as one watch (``None`` if none want it)."""
        watches: list[StreamWatch] = []
        for member in self.members:
            try:
                watch = member.stream_started(start)
            except Exception:
                logger.exception("the observer %r failed to start a stream", member)
                continue
            if watch is not None:
                watches.append(watch)
        if not watches:
            return None
        return _Guarded(watches)


class _Guarded(StreamWatch):
    """Fans out to several watches, logging (once per hook) what any of them raises."""

    __slots__ = ("failed", "watches")

    def __init__(self, watches: list[StreamWatch]) -> None:
        self.watches = watches
        self.failed: set[str] = set()

    def _each(self, hook: str, *args: object) -> None:
        for watch in self.watches:
            try:
                getattr(watch, hook)(*args)
            except Exception:
                if hook not in self.failed:
                    self.failed.add(hook)
                    logger.exception("the stream watch %r failed in %s()", watch, hook)

    def first_token(self, seconds: float) -> None:
        self._each("first_token", seconds)

    def heartbeat(self, gap: float) -> None:
        self._each("heartbeat", gap)

    def overhead(self, seconds: float) -> None:
        self._each("overhead", seconds)

    def finished(self, outcome: Outcome) -> None:
        self._each("finished", outcome)


def observers_of(metrics: Observer | Iterable[Observer] | None) -> Observers | None:
    """The ``metrics=`` argument of an entry point, checked: ``None`` when empty.

    >>> observers_of(None) is None, len(observers_of([Observer(), Observer()]).members)
    (True, 2)
    >>> observers_of("prometheus")
    Traceback (most recent call last):
      ...
    streamrelay.errors.ConfigurationError: metrics must be an observer (PrometheusMetrics(), OpenTelemetryMetrics(), an Observer) or a list of them, got 'prometheus'
    """
    from .errors import ConfigurationError

    if metrics is None:
        return None
    members = [metrics] if hasattr(metrics, "stream_started") else metrics
    if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
        members = [members]
    checked: list[Observer] = []
    for member in members:
        if not callable(getattr(member, "stream_started", None)):
            raise ConfigurationError(
                "metrics must be an observer (PrometheusMetrics(), OpenTelemetryMetrics(), "
                f"an Observer) or a list of them, got {member!r}"
            )
        checked.append(member)  # type: ignore[arg-type]
    return Observers(checked) if checked else None
