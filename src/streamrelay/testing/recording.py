"""What the simulator saw and did: the evidence a test asserts on.

:class:`RecordedRequest` is one request exactly as it arrived (headers, body)
and how it ended; :class:`SimulatorStats` counts generations as they start
and end, thread-safely, so that a test in one thread can wait for what the
server thread did (``sim.stats.wait(cancelled=1)`` proves that a disconnect
stopped a generation).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from starlette.datastructures import Headers

__all__ = ["RecordedRequest", "SimulatorStats"]


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
    route: str = ""
    """The path below the app's mount point (``/v1/chat/completions``)."""
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
    """Thread-safe counters of generation requests (chat completions, responses and
    legacy completions; ``/models`` is not counted).

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
