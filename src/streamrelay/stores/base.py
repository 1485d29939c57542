"""What a store is: the contract every backend (memory, Redis) keeps.

A resumable stream has one **producer** (the worker that calls the upstream) and
any number of **readers** (the client that started it, and whoever resumes it with
its id, on any worker). The producer appends :class:`Record` batches, one per
upstream read; a reader asks for what comes after its position and waits for
more. Everything the engine needs to decide lives in the store, so that the
worker that answers a resume or a stop need not be the one that produces:

* the records, numbered: every normalized event has a **seq** (1 for the first,
  +1 per event), which is the ``id:`` of the ``sse`` format and the ``seq`` of
  ``ndjson``, and the position a reader resumes after;
* whether the stream has **ended** (its terminal event is stored), kept ``ttl``
  seconds after that, then forgotten;
* a **lease** the producer renews: a stream that has not ended and whose lease
  ran out lost its producer (the worker died);
* a **stop** request, which the producer polls;
* how many **readers** are attached, which the producer's linger window watches;
* per-principal **slots**, for ``max_streams_per_principal`` across workers;
* each **chat**'s latest stream, for the AI SDK's resume route.

The methods are coroutines; a backend that fails raises
:class:`~streamrelay.errors.StoreUnavailable`, and the engine then degrades the
stream (the live reader still gets everything; it is just no longer resumable).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import _json
from ..events import (
    Delta,
    Done,
    Error,
    Event,
    Finish,
    Reasoning,
    Refusal,
    Start,
    ToolCall,
    Usage,
)

__all__ = [
    "Batch",
    "Pulse",
    "Record",
    "Store",
    "StreamInfo",
    "event_from_dict",
    "position_after",
    "unseen",
]


@dataclass(slots=True)
class Record:
    """What one upstream chunk became: its normalized events, numbered from ``seq``,
    and the upstream's own payload (``raw``, with its event ``name`` for the
    Responses API) for readers in the ``openai`` format.

    One is made per token, so, like the events, it is a plain slotted dataclass (a
    frozen one's ``__init__`` costs several times as much): treat it as a value.

    A chunk with no event (a role-only delta, Azure's filter results) is a record
    of no events, kept for the ``openai`` format: its ``seq`` is the next event's.
    """

    seq: int
    events: tuple[Event, ...]
    raw: str | None = None
    name: str | None = None

    @property
    def last(self) -> int:
        """The seq of the record's last event (``seq - 1`` if it has none)."""
        return self.seq + len(self.events) - 1

    def to_json(self) -> str:
        """The record as JSON text (:meth:`to_json_bytes`, decoded)."""
        return self.to_json_bytes().decode()

    def to_json_bytes(self) -> bytes:
        """The record as UTF-8 JSON, for stores that keep bytes (orjson when installed:
        a Redis store writes one per upstream read).

        >>> Record(1, (Delta(0, "Hi"),)).to_json_bytes()
        b'{"seq":1,"events":[{"type":"delta","index":0,"text":"Hi"}]}'
        """
        obj: dict[str, Any] = {"seq": self.seq, "events": [e.to_dict() for e in self.events]}
        if self.raw is not None:
            obj["raw"] = self.raw
        if self.name is not None:
            obj["name"] = self.name
        return _json.dumps(obj)

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        """The record :meth:`to_json` wrote.

        >>> r = Record(3, (Delta(0, "Hi"), Done()), raw="{}")
        >>> Record.from_json(r.to_json()) == r
        True
        """
        obj = _json.loads(text)
        return cls(
            int(obj["seq"]),
            tuple(event_from_dict(e) for e in obj["events"]),
            obj.get("raw"),
            obj.get("name"),
        )


def position_after(record: Record) -> float:
    """A reader's position once it has read ``record``.

    Positions are event seqs: a reader at ``n`` has every event up to seq ``n``. An
    event-less record sits between two events, at ``seq - 0.5``, so a follower that
    read one does not read it again, and a reader that resumes after event
    ``seq - 1`` still gets it.

    >>> position_after(Record(5, (Delta(0, "a"), Delta(0, "b"))))
    6
    >>> position_after(Record(7, (), raw="{}"))
    6.5
    """
    return record.last if record.events else record.seq - 0.5


def unseen(record: Record, position: float) -> bool:
    """Whether a reader at ``position`` has not read (all of) ``record``.

    >>> unseen(Record(7, (), raw="{}"), 6), unseen(Record(7, (), raw="{}"), 6.5)
    (True, False)
    """
    return position_after(record) > position


def event_from_dict(d: dict[str, Any]) -> Event:
    """The event :meth:`to_dict` gave (the inverse, for stored events).

    >>> event_from_dict({"type": "delta", "index": 0, "text": "Hi"})
    Delta(index=0, text='Hi')
    """
    kind = d["type"]
    if kind == "delta":
        return Delta(d["index"], d["text"])
    if kind == "reasoning":
        return Reasoning(d["index"], d["text"])
    if kind == "refusal":
        return Refusal(d["index"], d["text"])
    if kind == "tool_call":
        return ToolCall(d["index"], d["call"], d["arguments"], d.get("id"), d.get("name"))
    if kind == "start":
        return Start(d["id"], d["model"])
    if kind == "finish":
        return Finish(d["index"], d["reason"])
    if kind == "usage":
        return Usage(
            d["prompt_tokens"],
            d["completion_tokens"],
            d["total_tokens"],
            d.get("prompt_tokens_details"),
            d.get("completion_tokens_details"),
        )
    if kind == "error":
        return Error(d["message"], d.get("code"), d.get("status"))
    if kind == "done":
        return Done()
    raise ValueError(f"not a stored event: {kind!r}")


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a store knows of a stream, for the resume and stop routes."""

    principal: str | None
    """Whose stream it is (``None``: anyone with the id)."""
    last: int
    """The seq of the last stored event (0 before any)."""
    ended: bool
    """The terminal event is stored."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What :meth:`Store.read` returns."""

    records: Sequence[Record]
    """The records after the position, oldest first (may be empty after a timeout)."""
    ended: bool
    """The stream has ended and these records reach its end."""
    lost: bool = False
    """The stream has not ended and its producer's lease ran out."""
    gone: bool = False
    """The stream is unknown (expired, or never stored)."""
    capped: bool = False
    """The stream went past the store's ``max_events``: these records end what was kept."""


@dataclass(frozen=True, slots=True)
class Pulse:
    """What :meth:`Store.beat` tells the producer."""

    stopped: bool
    """A stop was asked for (``DELETE /streams/{id}``, on any worker)."""
    readers: int
    """Readers connected now, on every worker."""


class Store(ABC):
    """The contract of a stream store; see the module docstring.

    ``ttl`` is how long an ended stream stays (seconds); ``max_events`` caps one
    stream: past it, nothing more is stored and a reader gets what was stored, then
    an ``error`` with code ``resume_limit`` (the live client still gets everything).
    """

    ttl: float
    max_events: int

    @abstractmethod
    async def create(self, stream_id: str, *, principal: str | None, lease: float) -> None:
        """Start a stream, owned by ``principal``, with a producer lease of ``lease`` seconds."""

    @abstractmethod
    async def append(self, stream_id: str, records: Sequence[Record]) -> bool:
        """Store ``records`` (one upstream read's worth). Returns ``False`` once the
        stream is past ``max_events``: the records were not stored."""

    def append_nowait(self, stream_id: str, records: Sequence[Record]) -> bool | None:
        """:meth:`append` done at once, for a store in this process; ``None`` (the
        default) when the backend must do I/O, and :meth:`append` is to be awaited.

        The engine uses it to save a token without a trip through the event loop; a
        backend that does I/O gets its appends from a writer task instead, batched,
        so that the live client never waits on the store.
        """
        return None

    @abstractmethod
    async def end(self, stream_id: str) -> None:
        """The terminal record is stored: readers end there, and the ``ttl`` starts."""

    @abstractmethod
    async def info(self, stream_id: str) -> StreamInfo | None:
        """The stream, or ``None`` if it is unknown or expired."""

    @abstractmethod
    async def read(self, stream_id: str, after: float, *, wait: float) -> Batch:
        """The records :func:`unseen` at position ``after``, oldest first, waiting up to
        ``wait`` seconds for some to exist. (A client's position is an event seq; a
        follower's may be a half, see :func:`position_after`.)"""

    @abstractmethod
    async def beat(self, stream_id: str, lease: float) -> Pulse:
        """The producer's periodic call: extend its lease to ``lease`` seconds from now,
        and learn whether a stop was asked for and how many readers are connected (one
        round trip for all three)."""

    @abstractmethod
    async def stop(self, stream_id: str) -> None:
        """Ask the producer, wherever it runs, to stop."""

    @abstractmethod
    async def attach(self, stream_id: str) -> None:
        """A reader connected."""

    @abstractmethod
    async def detach(self, stream_id: str) -> None:
        """A reader left."""

    @abstractmethod
    async def acquire(self, principal: str, limit: int) -> bool:
        """Take one of ``principal``'s ``limit`` stream slots; ``False`` if none is free."""

    @abstractmethod
    async def release(self, principal: str) -> None:
        """Give back a slot :meth:`acquire` took."""

    @abstractmethod
    async def set_chat(self, chat: str, stream_id: str) -> None:
        """Remember ``stream_id`` as chat ``chat``'s latest stream (the AI SDK's
        ``GET /chat/{chatId}/stream`` resumes it); kept as long as an ended stream."""

    @abstractmethod
    async def chat_stream(self, chat: str) -> str | None:
        """Chat ``chat``'s latest stream id, if one was set and has not expired."""

    async def aclose(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release the store's connections (the relay calls it when it closes)."""
