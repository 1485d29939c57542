"""``MemoryStore``: resumable streams in this process's memory.

For one worker process: a reload, a dropped network or a second tab resume from
here. (Several workers, or several machines, need :class:`~streamrelay.stores.RedisStore`:
a resume may reach another process.) Ended streams are dropped ``ttl`` seconds
after their end by a sweep that runs on every store operation, so memory is
released without any request naming them.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Sequence

import anyio

from ..errors import ConfigurationError
from .base import Batch, Pulse, Record, Store, StreamInfo, unseen

__all__ = ["MemoryStore"]


class _Entry:
    """One stream's state."""

    __slots__ = (
        "capped",
        "changed",
        "ended",
        "ended_at",
        "events",
        "lease_until",
        "principal",
        "readers",
        "records",
        "stopped",
    )

    def __init__(self, principal: str | None, lease_until: float) -> None:
        self.principal = principal
        self.records: list[Record] = []
        self.events = 0
        self.ended = False
        self.ended_at = 0.0
        self.capped = False
        self.stopped = False
        self.readers = 0
        self.lease_until = lease_until
        self.changed: anyio.Event | None = None  # created by the first waiting reader

    def wake(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def after(self, position: float) -> list[Record]:
        """The records a reader at ``position`` has not seen, oldest first (a scan from
        the end: a follower asks for the last few)."""
        records = self.records
        i = len(records)
        while i > 0 and unseen(records[i - 1], position):
            i -= 1
        return records[i:]


class MemoryStore(Store):
    """Resumable streams in memory, for a single worker process.

    Args:
        ttl: seconds an ended stream stays resumable (default 600).
        max_events: the most events kept per stream (default 100,000; a long
            answer has a few thousand); past it the stream is no longer recorded.
        clock: seconds, monotonic (for tests).

    >>> store = MemoryStore(ttl=60)
    >>> store.ttl
    60
    """

    def __init__(
        self,
        *,
        ttl: float = 600.0,
        max_events: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ConfigurationError(f"max_events must be a positive integer, got {max_events!r}")
        self.ttl = ttl
        self.max_events = max_events
        self._clock = clock
        self._streams: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, str]] = []  # (when, id), a heap
        self._slots: Counter[str] = Counter()
        self._chats: dict[str, str] = {}  # chat -> its latest stream id
        self._chat_of: dict[str, str] = {}  # stream id -> its chat

    def __repr__(self) -> str:
        return f"MemoryStore(ttl={self.ttl!r}, streams={len(self._streams)})"

    def __len__(self) -> int:
        """How many streams are held (ended ones until their ``ttl`` is over)."""
        self._sweep()
        return len(self._streams)

    async def create(self, stream_id: str, *, principal: str | None, lease: float) -> None:
        self._sweep()
        now = self._clock()
        self._streams[stream_id] = _Entry(principal, now + lease)
        # A stream whose producer vanishes without ending it goes after lease + ttl.
        heapq.heappush(self._expiries, (now + lease + self.ttl, stream_id))

    async def append(self, stream_id: str, records: Sequence[Record]) -> bool:
        return self.append_nowait(stream_id, records)

    def append_nowait(self, stream_id: str, records: Sequence[Record]) -> bool:
        """Append at once (this store does no I/O)."""
        entry = self._streams.get(stream_id)
        if entry is None:
            return False
        if entry.capped:
            return False
        count = len(records[0].events) if len(records) == 1 else sum(len(r.events) for r in records)
        if entry.events + count > self.max_events:
            entry.capped = True
            entry.wake()
            return False
        entry.records.extend(records)
        entry.events += count
        entry.wake()
        return True

    async def end(self, stream_id: str) -> None:
        entry = self._streams.get(stream_id)
        if entry is not None and not entry.ended:
            entry.ended = True
            entry.ended_at = now = self._clock()
            entry.wake()
            heapq.heappush(self._expiries, (now + self.ttl, stream_id))

    async def info(self, stream_id: str) -> StreamInfo | None:
        self._sweep()
        entry = self._streams.get(stream_id)
        if entry is None:
            return None
        last = entry.records[-1].last if entry.records else 0
        return StreamInfo(entry.principal, last, entry.ended)

    async def read(self, stream_id: str, after: float, *, wait: float) -> Batch:
        self._sweep()
        entry = self._streams.get(stream_id)
        if entry is None:
            return Batch((), ended=False, gone=True)
        records = entry.after(after)
        if not records and not entry.ended and not entry.capped:
            if self._clock() >= entry.lease_until:
                return Batch((), ended=False, lost=True)
            if entry.changed is None:
                entry.changed = anyio.Event()
            with anyio.move_on_after(wait):
                await entry.changed.wait()
            records = entry.after(after)
        return Batch(records, ended=entry.ended, capped=entry.capped and not entry.ended)

    async def beat(self, stream_id: str, lease: float) -> Pulse:
        entry = self._streams.get(stream_id)
        if entry is None:
            return Pulse(stopped=False, readers=0)
        entry.lease_until = self._clock() + lease
        return Pulse(entry.stopped, entry.readers)

    async def stop(self, stream_id: str) -> None:
        entry = self._streams.get(stream_id)
        if entry is not None:
            entry.stopped = True
            entry.wake()

    async def attach(self, stream_id: str) -> None:
        entry = self._streams.get(stream_id)
        if entry is not None:
            entry.readers += 1

    async def detach(self, stream_id: str) -> None:
        entry = self._streams.get(stream_id)
        if entry is not None and entry.readers > 0:
            entry.readers -= 1

    async def acquire(self, principal: str, limit: int) -> bool:
        if self._slots[principal] >= limit:
            return False
        self._slots[principal] += 1
        return True

    async def release(self, principal: str) -> None:
        self._slots[principal] -= 1
        if self._slots[principal] <= 0:
            del self._slots[principal]

    async def set_chat(self, chat: str, stream_id: str) -> None:
        self._sweep()
        self._chats[chat] = stream_id
        self._chat_of[stream_id] = chat

    async def chat_stream(self, chat: str) -> str | None:
        self._sweep()
        return self._chats.get(chat)

    def _sweep(self) -> None:
        """Forget the streams whose time is over (cheap: a heap of expiries)."""
        now = self._clock()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, stream_id = heapq.heappop(expiries)
            entry = self._streams.get(stream_id)
            if entry is None:
                continue
            if entry.ended:
                # The expiry pushed by end() is the one that counts; the one pushed
                # by create() may come first and is then ignored.
                if entry.ended_at + self.ttl > now:
                    continue
            elif now < entry.lease_until + self.ttl:
                # Still alive: look again when its current lease could have run out.
                heapq.heappush(expiries, (entry.lease_until + self.ttl, stream_id))
                continue
            del self._streams[stream_id]  # ended long enough ago, or its producer vanished
            chat = self._chat_of.pop(stream_id, None)
            if chat is not None and self._chats.get(chat) == stream_id:
                del self._chats[chat]
