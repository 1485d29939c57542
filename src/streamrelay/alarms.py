"""One event-loop timer for the next deadlines of every open stream.

Under asyncio each open stream must be woken at its next deadline (a heartbeat,
the idle timeout, the send timeout; :mod:`streamrelay.pipeline`). A
``loop.call_later`` per stream holds a timer handle of its own, about 0.5 KiB per
open stream under uvloop (``python -m bench.allocations``). :class:`Alarms` keeps
the deadlines of all the streams of one event loop in a heap and one loop timer
at the earliest.

Theory of operation
===================

* An alarm is a heap entry ``[when, order, callback]``; ``order`` breaks ties in
  the order alarms were set, so that callbacks are never compared.
* :meth:`Alarms.cancel` does not search the heap: it drops the callback from the
  entry (the stream it belongs to is not kept alive by it) and counts the entry
  as *stale*; stale entries are skipped when they come up, and the heap is rebuilt
  without them once they are more than half of it. A stream moves its alarm
  rarely (when a deadline is reached, or the stream opens or ends), never per
  token, so this stays cheap.
* The loop timer is set for the earliest entry, live or stale, and moved only
  when an earlier alarm is set: waking for a stale entry costs one callback.
* When it fires, every entry due by then is popped and the live ones' callbacks
  run in deadline order. A callback that raises is reported to the loop's
  exception handler, as the loop would report a callback of its own, and does not
  keep the others from running.

Times are :func:`time.monotonic` readings, the engine's clock, not ``loop.time()``.

>>> import asyncio
>>> async def demo() -> list[str]:
...     alarms, fired = Alarms(asyncio.get_running_loop()), []
...     now = monotonic()
...     alarms.set(now + 0.02, lambda: fired.append("later"))
...     alarms.set(now + 0.01, lambda: fired.append("sooner"))
...     alarms.cancel(alarms.set(now, lambda: fired.append("cancelled")))
...     await asyncio.sleep(0.05)
...     return fired
>>> asyncio.run(demo())
['sooner', 'later']
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any

__all__ = ["Alarm", "Alarms", "alarms_for"]

Alarm = list[Any]
"""A set alarm, to pass to :meth:`Alarms.cancel`: the heap entry ``[when, order, callback]``."""

_MIN_DELAY = 0.001
"""The shortest timer set: an alarm already due runs on the next turn of the loop."""
_COMPACT_AT = 64
"""Fewer stale entries than this are never worth a rebuild."""


class Alarms:
    """The alarms of one event loop (see the module); use :func:`alarms_for`."""

    __slots__ = ("_handle", "_handle_at", "_heap", "_order", "_stale", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[Alarm] = []
        self._order = itertools.count()
        self._stale = 0
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = float("inf")

    def __len__(self) -> int:
        """The alarms set and not yet run or cancelled."""
        return len(self._heap) - self._stale

    def set(self, when: float, callback: Callable[[], object]) -> Alarm:
        """Run ``callback`` on this loop once :func:`time.monotonic` reaches ``when``."""
        alarm = [when, next(self._order), callback]
        heapq.heappush(self._heap, alarm)
        if when < self._handle_at:
            self._schedule(when)
        return alarm

    def cancel(self, alarm: Alarm) -> None:
        """Keep ``alarm``'s callback from running (nothing happens if it ran already)."""
        if alarm[2] is None:
            return
        alarm[2] = None
        self._stale += 1
        if self._stale >= _COMPACT_AT and self._stale * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2] is not None]
            heapq.heapify(self._heap)
            self._stale = 0

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle_at = when
        self._handle = self.loop.call_later(max(when - monotonic(), _MIN_DELAY), self._fire)

    def _fire(self) -> None:
        self._handle, self._handle_at = None, float("inf")
        heap = self._heap
        now = monotonic()
        due: list[Callable[[], object]] = []
        while heap and heap[0][0] <= now:
            alarm = heapq.heappop(heap)
            callback = alarm[2]
            if callback is None:
                self._stale -= 1
            else:
                alarm[2] = None
                due.append(callback)
        while heap and heap[0][2] is None:  # no wake-up for a stale entry at the top
            heapq.heappop(heap)
            self._stale -= 1
        if heap:
            self._schedule(heap[0][0])
        for callback in due:
            try:
                callback()
            except Exception as exc:  # as the loop reports its own callbacks' errors
                self.loop.call_exception_handler(
                    {"message": "an alarm's callback raised", "exception": exc}
                )


_local = threading.local()


def alarms_for(loop: asyncio.AbstractEventLoop) -> Alarms:
    """The :class:`Alarms` of ``loop``, the running loop of this thread.

    One per thread, replaced when the thread runs another loop (an event loop runs
    in one thread; a new loop in the same thread means the old one has stopped).
    """
    alarms: Alarms | None = getattr(_local, "alarms", None)
    if alarms is None or alarms.loop is not loop:
        alarms = _local.alarms = Alarms(loop)
    return alarms
