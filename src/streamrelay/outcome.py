"""How a stream ended, as one value: :class:`Outcome`, handed to the ``on_stream_end``
observer of every entry point (logs, metrics, billing).

>>> outcome = Outcome(Ending.DONE, status=200, format="sse", model="gpt-4o-mini",
...                   bytes_out=812, events_out=14, ttfb=0.21, duration=1.9)
>>> outcome.ok, outcome.ending.value
(True, 'done')

An observer is any callable taking the outcome (sync or async)::

    def on_stream_end(outcome: Outcome) -> None:
        if outcome.usage is not None:
            bill(outcome.model, outcome.usage.total_tokens)

    relay = StreamRelay(upstream, on_stream_end=on_stream_end)

It runs after the response ended, once per stream the engine ran (requests
refused before the engine, such as a 415 or a 406, are not streams). An
exception it raises is logged, never sent to the client.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .events import Usage

__all__ = ["CANCELLING_ENDINGS", "Ending", "Outcome", "StreamObserver"]


class Ending(enum.Enum):
    """The ways a stream can end. Only :attr:`DONE` is a complete answer."""

    DONE = "done"
    """The upstream finished and the client got everything, ending in ``done``."""
    ERROR = "error"
    """The stream ended with an ``error`` event (or an aborted ``text`` response):
    an upstream error mid-stream, an idle timeout, a truncated or invalid stream.
    :attr:`Outcome.code` says which."""
    UPSTREAM_STATUS = "upstream_status"
    """The upstream answered with an error status before streaming; it was passed
    through (:attr:`Outcome.status`)."""
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    """The upstream could not be reached or did not answer in time (502 or 504)."""
    CLIENT_DISCONNECTED = "client_disconnected"
    """The client left first; the upstream was closed at once."""
    SEND_TIMEOUT = "send_timeout"
    """The client accepted nothing within the send timeout and was dropped."""
    SHUTDOWN = "shutdown"
    """The server stopped while the stream was open; it ended with a ``shutdown`` error."""
    STOPPED = "stopped"
    """A stored stream was stopped (``DELETE /streams/{id}``); it ended with an
    ``error`` event whose code is ``stopped`` and its upstream was closed."""
    ABANDONED = "abandoned"
    """A stored stream had no reader for ``linger`` seconds; its upstream was closed
    and it ended with code ``abandoned``."""
    CRASHED = "crashed"
    """The source raised something unexpected (a bug in a handler's generator or
    in the host app): the exception propagates to the server."""


CANCELLING_ENDINGS = frozenset(
    {Ending.CLIENT_DISCONNECTED, Ending.SEND_TIMEOUT, Ending.STOPPED, Ending.ABANDONED}
)
"""Endings that close an unfinished upstream on the client's account: they set
:attr:`Outcome.upstream_cancelled` when the upstream had not ended yet."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One stream's end.

    Attributes:
        ending: how it ended.
        code: the machine-readable error code (``upstream_timeout``, the upstream's
            own code, ...), ``None`` for :attr:`Ending.DONE`.
        status: the HTTP status the client got (200 once the stream started;
            ``None`` if the client left or the server stopped before any answer).
        format: the wire format (``sse``, ``ndjson``, ``text``, ``openai``, ...).
        model: the model the upstream reported, when it did.
        usage: the token usage the upstream reported, when it did.
        bytes_out: body bytes sent to the client.
        events_out: normalized events encoded for the client.
        ttfb: seconds until the response headers went out, ``None`` if they never did
            as a stream.
        duration: seconds from the engine's start to the end.
        streaming: ``False`` for a whole (non-streaming) answer, whose ``format`` is
            ``"json"``: it counts tokens and errors, but it is not a stream.
        route: where it came in: ``chat.completions``, ``responses``, ``completions``,
            ``chat``, ``ag-ui`` (the mount's routes), ``middleware`` or
            ``relay_response``.
        principal: whose it was (the ``principal`` hook's answer, as a string), if known.
        stream_id: its ``X-Stream-Id`` when a store kept it (resumable).
        request_id: the request's ``x-request-id`` (the client's, or one made up).
        upstream_status: the HTTP status the upstream answered with, ``None`` if it
            never answered (unreachable, timed out) or is not known (a resume).
        ttft: seconds until the first token (content, reasoning, a refusal or a
            tool call) arrived from the upstream; ``None`` if none did, and for
            whole answers.
        heartbeats: keep-alives sent to the client.
        upstream_cancelled: the upstream generation was closed before its end
            because the client left, stopped reading, or a stop or an empty linger
            window ended a stored stream: what the relay saved you. ``False`` for
            upstream errors and for a server shutting down.
    """

    ending: Ending
    code: str | None = None
    status: int | None = 200
    format: str = ""
    model: str | None = None
    usage: Usage | None = None
    bytes_out: int = 0
    events_out: int = 0
    ttfb: float | None = None
    duration: float = 0.0
    streaming: bool = True
    route: str = ""
    principal: str | None = None
    stream_id: str | None = None
    request_id: str | None = None
    upstream_status: int | None = None
    ttft: float | None = None
    heartbeats: int = 0
    upstream_cancelled: bool = False

    @property
    def ok(self) -> bool:
        """Whether the client got a complete answer."""
        return self.ending is Ending.DONE


StreamObserver = Callable[[Outcome], "Awaitable[object] | object"]
"""The ``on_stream_end`` hook: called with each stream's :class:`Outcome`."""
