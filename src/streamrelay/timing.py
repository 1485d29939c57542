"""When a stream needs attention: the engine's timing decisions as a pure object.

:class:`Deadlines` knows the stream's clock readings (last upstream byte, last
byte to the client, the send in flight) and the periods from
:class:`~streamrelay.config.StreamSettings`, and answers one question: *what is
due now, and when should I look again?* It reads no clock and does no I/O: the
engine passes ``now`` in, so every rule is tested with tables
(``tests/unit/test_timing.py``), in the way h11 tests its state machine.

The rules:

* nothing is due before the stream is open (the headers are out): the
  first-byte timeout is a plain scope around opening the upstream;
* while a send to the client is in flight, only the **send timeout** can fall
  due (counted from when that send began);
* otherwise the **idle timeout** (counted from the last upstream read) wins
  over the **heartbeat** (counted from the last byte sent to the client);
* after a due item is handled (a heartbeat sent) the engine asks again.

>>> d = Deadlines(heartbeat=15.0, idle_timeout=300.0, send_timeout=30.0)
>>> d.open(now=0.0)
>>> d.due(10.0)
(None, 15.0)
>>> d.due(15.0)
(<Due.HEARTBEAT: 'heartbeat'>, 15.0)
>>> d.sending(now=15.0); d.due(20.0)    # a send in flight: only its timeout counts
(None, 35.0)
>>> d.due(45.0)
(<Due.SEND_TIMEOUT: 'send_timeout'>, 45.0)
"""

from __future__ import annotations

import enum
import math

__all__ = ["Deadlines", "Due"]

_NO_READ_PERIOD = 60.0
"""How often the monitor looks during a send when no read-side period is set."""


class Due(enum.Enum):
    """What :meth:`Deadlines.due` can ask the engine to do."""

    HEARTBEAT = "heartbeat"
    """Send the format's keep-alive bytes to the client."""
    IDLE_TIMEOUT = "idle_timeout"
    """The upstream has been silent too long: end with ``upstream_timeout``."""
    SEND_TIMEOUT = "send_timeout"
    """The client has accepted nothing too long: drop it and close the upstream."""


class Deadlines:
    """The clock readings of one stream and the rules over them (see the module).

    Times are whatever monotonic clock the caller uses, in seconds. A period of
    ``None`` never falls due. The engine updates the readings on its per-token
    path, so the updates are plain methods with no work beyond assignments.
    """

    __slots__ = (
        "heartbeat",
        "idle_timeout",
        "is_open",
        "is_sending",
        "last_in",
        "last_out",
        "send_started",
        "send_timeout",
    )

    def __init__(
        self,
        *,
        heartbeat: float | None,
        idle_timeout: float | None,
        send_timeout: float | None,
    ) -> None:
        self.heartbeat = heartbeat
        self.idle_timeout = idle_timeout
        self.send_timeout = send_timeout
        self.is_open = False
        self.is_sending = False
        self.last_in = self.last_out = self.send_started = 0.0

    def open(self, now: float) -> None:
        """The headers are out: from now on the periods count."""
        self.is_open = True
        self.is_sending = False
        self.last_in = self.last_out = now

    def received(self, now: float) -> None:
        """Something came from the upstream (the idle timeout starts again)."""
        self.last_in = now

    def sending(self, now: float) -> None:
        """A send to the client begins (only the send timeout counts until it ends)."""
        self.is_sending = True
        self.send_started = now

    def sent(self, now: float, *, waited_on_client: bool = True) -> None:
        """The send ended. The heartbeat period starts again; so does the idle
        timeout when ``waited_on_client``: a slow client's send must not count
        against the upstream, which is only waited on again from here."""
        self.is_sending = False
        self.last_out = now
        if waited_on_client:
            self.last_in = now

    def detach(self) -> None:
        """The client left a stream that goes on without it (into a store, for a
        resume): no heartbeats and no send timeout any more, only the idle timeout.

        >>> d = Deadlines(heartbeat=1.0, idle_timeout=30.0, send_timeout=5.0)
        >>> d.open(now=0.0); d.sending(now=0.5); d.detach()
        >>> d.due(10.0)
        (None, 30.0)
        """
        self.heartbeat = None
        self.send_timeout = None
        self.is_sending = False

    def due(self, now: float) -> tuple[Due | None, float]:
        """What is due at ``now`` (or ``None``), and when to look again (``math.inf``:
        never, unless something changes)."""
        if not self.is_open:
            return None, math.inf
        idle, beat, send = self.idle_timeout, self.heartbeat, self.send_timeout
        if self.is_sending:
            # Nothing wakes the monitor when a send completes, so while one is in
            # flight it looks again within the shortest read-side period: the idle
            # and heartbeat deadlines, which start counting after the send, stay exact.
            wake = now + min((p for p in (idle, beat) if p is not None), default=_NO_READ_PERIOD)
            if send is not None:
                deadline = self.send_started + send
                if now >= deadline:
                    return Due.SEND_TIMEOUT, now
                wake = min(wake, deadline)
            return None, wake
        wake = math.inf
        if idle is not None:
            deadline = self.last_in + idle
            if now >= deadline:
                return Due.IDLE_TIMEOUT, now
            wake = deadline
        if beat is not None:
            deadline = self.last_out + beat
            if now >= deadline:
                return Due.HEARTBEAT, now
            wake = min(wake, deadline)
        if send is not None:
            # A send starting from now cannot time out before this.
            wake = min(wake, now + send)
        return None, wake
