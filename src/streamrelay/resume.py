"""Resumable streams: the engine's two sides of a stream store.

Theory of operation
===================

A stream started with a store has one **producer**: the engine of the request that
started it (:func:`~streamrelay.pipeline.run_stream`, given a :class:`Recording`).
It is the same loop as any stream, with three differences:

* every upstream read's events go to the store (:meth:`Recording.save`) before they
  go to the client. A store in this process takes them at once; one that does I/O
  (Redis) gets them from a *writer* task, which gathers them for :data:`FLUSH`
  seconds and appends them in one round trip, so the live client never waits on
  the store and a fast stream costs a round trip per ``FLUSH``, not per token;
* the client leaving does not stop it: the engine *detaches* (no more sends, no
  heartbeats) and goes on filling the store, while :meth:`Recording.watch` beats
  every :data:`BEAT` seconds. A beat renews the producer's lease (so readers
  elsewhere can tell a dead worker, :data:`LEASE`), and learns whether a stop was
  asked for and how many readers are connected. A stop, or no reader for
  ``linger`` seconds, *halts* the pump: the upstream is closed and the stream ends
  with an ``error`` whose code is ``stopped`` or ``abandoned``;
* at the end the store is told (:meth:`Recording.finish`): readers end there, and
  the store's ``ttl`` starts.

Any number of **readers** follow a stream (:func:`follow`): the resume route's own
engine, whose source is the store instead of the upstream. A reader asks for what
comes after its position, and waits for more; it ends at the stored terminal
event, with ``producer_lost`` when the producer's lease ran out first, or with
``resume_limit`` when the stream outgrew the store's cap.

**When the store fails** the live client is never the one to pay: the producer
logs one WARNING and carries on without the store (the stream is no longer
resumable, and, once its client has left, nobody can come back for it, so it is
abandoned at once). A reader whose store fails gets an ``error`` event
(``store_unavailable``); a resume that cannot start gets a 503.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from time import monotonic

import anyio

from .errors import StoreUnavailable
from .events import Error
from .outcome import Ending
from .sources import Source
from .stores.base import Record, Store, position_after

__all__ = ["BEAT", "LEASE", "Recording", "follow"]

logger = logging.getLogger("streamrelay")

LEASE = 6.0
"""Seconds a producer's lease lasts without a beat: readers learn of a dead
producer within this (plus one read's wait)."""
BEAT = 0.5
"""Seconds between the producer's beats: a stop takes effect within this (plus the
store's round trip)."""
FLUSH = 0.1
"""Seconds a writer gathers a stream's records before one append to a store that does
I/O: a fast stream costs a round trip per ``FLUSH``, not per token, and a resumed
reader trails the live client by at most this (plus the round trip)."""
READ_WAIT = 1.0
"""Seconds a reader's blocking read waits before it asks again (and checks the lease)."""


class Recording:
    """The producer's side of one resumable stream; see the module's theory.

    ``linger`` is how long the stream goes on with no reader connected (``None``:
    it always finishes); ``chat`` is the AI SDK chat it answers, if any.
    """

    def __init__(
        self,
        store: Store,
        stream_id: str,
        principal: str | None,
        linger: float | None,
        *,
        chat: str | None = None,
    ) -> None:
        self.store = store
        self.chat = chat
        """The AI SDK chat the stream answers, if any (its resume route finds it)."""
        self.stream_id = stream_id
        self.principal = principal
        self.linger = linger
        self.active = False
        """The store holds this stream (False before :meth:`open` and once degraded)."""
        self.client_gone = False
        self.opened = False
        """The store took the stream (its id went to the client), even if it failed later."""
        self.in_process = store.append_nowait(stream_id, ()) is not None
        self._pending: list[Record] = []  # for the writer (a store that does I/O)
        self._wake = anyio.Event()
        self._closing = False
        self._flush_now = anyio.Event()  # finish() cuts the gathering short
        self._drained = anyio.Event()

    async def open(self) -> bool:
        """Create the stream in the store, with the starting client as its first reader.
        ``False`` (and a WARNING) when the store fails: the stream then runs without it."""
        try:
            await self.store.create(self.stream_id, principal=self.principal, lease=LEASE)
            await self.store.attach(self.stream_id)
            if self.chat is not None:
                await self.store.set_chat(self.chat, self.stream_id)
        except StoreUnavailable as exc:
            logger.warning("stream store unavailable, relaying without it: %s", exc)
            return False
        self.active = self.opened = True
        return True

    def save(self, records: list[Record]) -> None:
        """Store one upstream read's records (at once, or through the writer), then
        empty the list."""
        if self.active:
            if self.in_process:
                self.store.append_nowait(self.stream_id, records)
            else:
                self._pending += records
                self._wake.set()
        records.clear()

    async def writer(self) -> None:
        """Append what :meth:`save` queued, batched, until :meth:`finish` drains it."""
        try:
            while self.active:
                await self._wake.wait()
                with anyio.move_on_after(FLUSH):  # gather a few tokens per round trip
                    await self._flush_now.wait()
                self._wake = anyio.Event()
                while self._pending and self.active:
                    batch, self._pending = self._pending, []
                    try:
                        await self.store.append(self.stream_id, batch)
                    except StoreUnavailable as exc:
                        self.degrade(exc)
                if self._closing:
                    return
        finally:
            self._drained.set()

    async def client_left(self) -> None:
        """The starting client is gone; the stream goes on for readers to come."""
        self.client_gone = True
        if self.active:
            try:
                await self.store.detach(self.stream_id)
            except StoreUnavailable as exc:
                self.degrade(exc)

    async def watch(self, halt: Callable[[Ending], None]) -> None:
        """Beat until cancelled; ``halt`` the pump on a stop or an empty linger window."""
        alone_since: float | None = None
        while True:
            if not self.active:
                if self.client_gone:  # nobody can come back for it: no reason to go on
                    halt(Ending.ABANDONED)
                    return
                await anyio.sleep(BEAT)
                continue
            try:
                pulse = await self.store.beat(self.stream_id, LEASE)
            except StoreUnavailable as exc:
                self.degrade(exc)
                continue
            if pulse.stopped:
                halt(Ending.STOPPED)
                return
            if pulse.readers > 0 or self.linger is None:
                alone_since = None
            else:
                now = monotonic()
                if alone_since is None:
                    alone_since = now
                if now - alone_since >= self.linger:
                    halt(Ending.ABANDONED)
                    return
            await anyio.sleep(BEAT)

    async def finish(self) -> None:
        """Store what is queued, then mark the end: readers end there, and the ``ttl``
        starts."""
        if not self.active:
            return
        if not self.in_process:
            self._closing = True
            self._flush_now.set()
            self._wake.set()
            await self._drained.wait()
        if self.active:
            try:
                await self.store.end(self.stream_id)
            except StoreUnavailable as exc:
                self.degrade(exc)

    def degrade(self, exc: StoreUnavailable) -> None:
        """Go on without the store (one WARNING per stream, never one per event)."""
        if self.active:
            self.active = False
            self._pending.clear()
            self._flush_now.set()
            self._wake.set()  # the writer returns
            logger.warning(
                "stream %s is no longer resumable: the stream store failed (%s); "
                "its client still gets the whole answer",
                self.stream_id[:6] + "…",
                exc,
            )


async def follow(store: Store, stream_id: str, after: float) -> Source:
    """A :class:`~streamrelay.sources.Source` of the stored records after ``after``:
    what a resumed stream replays, then what it follows live, to the end.

    The reader counts as connected (for the producer's linger window) until the
    source is closed. Items are :class:`~streamrelay.stores.base.Record` values
    (``kind="records"``); the end is a terminal record, or one made here for a lost
    producer, a capped stream or a failed store.
    """
    await store.attach(stream_id)

    async def items() -> AsyncGenerator[Record, None]:
        position = after
        next_seq = 1  # for the records made here
        while True:
            try:
                batch = await store.read(stream_id, position, wait=READ_WAIT)
            except StoreUnavailable:
                yield _made(next_seq, "the stream store failed", "store_unavailable")
                return
            for record in batch.records:
                yield record
                position = max(position, position_after(record))
                next_seq = record.last + 1
            if batch.ended:
                return
            if batch.lost:
                yield _made(next_seq, "the worker producing the stream was lost", "producer_lost")
                return
            if batch.capped:
                yield _made(next_seq, "the stream outgrew what the store keeps", "resume_limit")
                return
            if batch.gone:
                yield _made(next_seq, "the stream expired", "stream_expired")
                return

    async def close(complete: bool) -> None:
        await iterator.aclose()
        with anyio.CancelScope(shield=True):
            try:
                await store.detach(stream_id)
            except StoreUnavailable:
                pass  # its reader count expires with it

    iterator = items()
    return Source(iterator, "records", close)


def _made(seq: int, message: str, code: str) -> Record:
    """A terminal record the reader makes itself (nothing of it is stored)."""
    return Record(seq, (Error(message, code),))
