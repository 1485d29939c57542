"""streamrelay.alarms: one loop timer for the deadlines of every stream (asyncio only:
the engine uses it on its asyncio path).

Deadlines are set a little in the past or a little ahead and the test sleeps past
them; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import weakref
from time import monotonic
from typing import Any

import pytest

from streamrelay.alarms import _COMPACT_AT, Alarms, alarms_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _until(condition: Any, limit: float = 2.0) -> None:
    deadline = monotonic() + limit
    while not condition():
        assert monotonic() < deadline, "the alarms did not run"
        await asyncio.sleep(0.005)


async def test_alarms_run_in_deadline_order_whatever_order_they_were_set_in() -> None:
    alarms = Alarms(asyncio.get_running_loop())
    fired: list[int] = []
    now = monotonic()
    for n in (3, 1, 4, 0, 2):
        alarms.set(now + n * 0.01, functools.partial(fired.append, n))
    await _until(lambda: len(fired) == 5)
    assert fired == [0, 1, 2, 3, 4]
    assert len(alarms) == 0


async def test_alarms_due_together_run_in_the_order_they_were_set() -> None:
    alarms = Alarms(asyncio.get_running_loop())
    fired: list[str] = []
    when = monotonic() - 1  # already due
    for name in "abc":
        alarms.set(when, functools.partial(fired.append, name))
    await _until(lambda: len(fired) == 3)
    assert fired == ["a", "b", "c"]


async def test_a_cancelled_alarm_never_runs_and_the_others_still_do() -> None:
    alarms = Alarms(asyncio.get_running_loop())
    fired: list[str] = []
    now = monotonic()
    first = alarms.set(now, lambda: fired.append("cancelled"))  # the earliest: the timer's
    alarms.set(now + 0.02, lambda: fired.append("kept"))
    alarms.cancel(first)
    alarms.cancel(first)  # twice is harmless
    assert len(alarms) == 1
    await _until(lambda: fired)
    await asyncio.sleep(0.03)
    assert fired == ["kept"]


async def test_an_earlier_alarm_moves_the_timer_forward() -> None:
    alarms = Alarms(asyncio.get_running_loop())
    fired: list[str] = []
    alarms.set(monotonic() + 60, lambda: fired.append("late"))
    alarms.set(monotonic(), lambda: fired.append("soon"))
    await _until(lambda: fired)
    assert fired == ["soon"]
    assert len(alarms) == 1  # the late one is still set


async def test_cancelling_an_alarm_that_ran_changes_nothing() -> None:
    alarms = Alarms(asyncio.get_running_loop())
    fired: list[int] = []
    ran = alarms.set(monotonic(), lambda: fired.append(1))
    await _until(lambda: fired)
    alarms.cancel(ran)
    alarms.set(monotonic(), lambda: fired.append(2))
    await _until(lambda: len(fired) == 2)
    assert len(alarms) == 0


async def test_a_cancelled_alarm_does_not_keep_its_owner_alive() -> None:
    """The engine cancels a stream's alarm when the stream ends; a deadline minutes away
    must not keep the ended stream in memory until then."""

    class Owner:
        def tick(self) -> None:
            pass

    alarms = Alarms(asyncio.get_running_loop())
    owner = Owner()
    alarm = alarms.set(monotonic() + 300, owner.tick)
    ref = weakref.ref(owner)
    alarms.cancel(alarm)
    del owner
    gc.collect()
    assert ref() is None


async def test_stale_entries_are_dropped_once_they_outnumber_the_live_ones() -> None:
    alarms = Alarms(asyncio.get_running_loop())
    far = monotonic() + 300
    keep = [alarms.set(far, lambda: None) for _ in range(10)]
    for _ in range(_COMPACT_AT * 2):
        alarms.cancel(alarms.set(far, lambda: None))
    assert len(alarms) == len(keep)
    assert len(alarms._heap) < _COMPACT_AT + len(keep)  # rebuilt, not grown without end
    for alarm in keep:
        alarms.cancel(alarm)


async def test_a_raising_callback_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        alarms = Alarms(loop)
        fired: list[str] = []
        when = monotonic()

        def boom() -> None:
            raise RuntimeError("boom")

        alarms.set(when, boom)
        alarms.set(when, lambda: fired.append("after"))
        await _until(lambda: fired)
    finally:
        loop.set_exception_handler(previous)
    assert fired == ["after"]
    assert [type(c["exception"]) for c in reported] == [RuntimeError]


async def test_a_callback_may_set_the_next_alarm() -> None:
    """The engine's tick sets its next alarm from inside the alarm's callback."""
    alarms = Alarms(asyncio.get_running_loop())
    fired: list[int] = []

    def again() -> None:
        fired.append(len(fired))
        if len(fired) < 3:
            alarms.set(monotonic() + 0.005, again)

    alarms.set(monotonic(), again)
    await _until(lambda: len(fired) == 3)
    assert fired == [0, 1, 2]


async def test_one_alarms_per_loop_and_thread() -> None:
    loop = asyncio.get_running_loop()
    assert alarms_for(loop) is alarms_for(loop)
    others: list[Alarms] = []

    def elsewhere() -> None:
        async def get() -> None:
            others.append(alarms_for(asyncio.get_running_loop()))

        asyncio.run(get())

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert others[0] is not alarms_for(loop)
    assert others[0].loop is not loop
