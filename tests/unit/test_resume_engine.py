"""The engine with a store (:mod:`streamrelay.resume`), without sockets, under asyncio and trio.

The producer is :func:`run_stream` with a :class:`Recording`; a reader is
:func:`run_stream` over :func:`follow`. The store is the real :class:`MemoryStore`
(the contract tests of every store are in ``tests/test_stores.py``); one test
uses a store that fails, to show what the engine does then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from test_engine import DONE, FINISH, USAGE, Client, Upstream, chunk, never

from streamrelay.config import StreamSettings
from streamrelay.errors import StoreUnavailable
from streamrelay.outcome import Ending, Outcome
from streamrelay.pipeline import run_stream
from streamrelay.resume import Recording, follow
from streamrelay.stores import MemoryStore, Record
from streamrelay.stores.base import Batch, Pulse, StreamInfo

pytestmark = pytest.mark.anyio

QUIET = StreamSettings(heartbeat=None)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.splitlines() if line]


async def produce(
    store: Any,
    upstream: Upstream,
    *,
    stream_id: str = "s1",
    client: Client | None = None,
    wait_disconnect: Any = never,
    linger: float | None = 30.0,
) -> tuple[Outcome, Client, Recording]:
    client = client or Client()
    recording = Recording(store, stream_id, None, linger)
    with anyio.fail_after(10):
        outcome = await run_stream(
            client.send,
            open_source=upstream.open,
            wait_disconnect=wait_disconnect,
            format="ndjson",
            settings=QUIET,
            recording=recording,
        )
    assert outcome is not None
    return outcome, client, recording


async def read(store: Any, stream_id: str, fmt: str = "ndjson", after: int = 0) -> bytes:
    client = Client()
    with anyio.fail_after(10):
        await run_stream(
            client.send,
            open_source=lambda: follow(store, stream_id, after),
            wait_disconnect=never,
            format=fmt,
            settings=QUIET,
            after=after,
        )
    return client.body


async def test_a_stored_stream_numbers_its_events_and_replays_them() -> None:
    store = MemoryStore()
    upstream = Upstream(chunk("Hel"), chunk("lo"), FINISH, USAGE, DONE)
    outcome, client, _ = await produce(store, upstream)
    assert outcome.ending is Ending.DONE and outcome.stream_id == "s1"
    assert (b"x-stream-id", b"s1") in client.start["headers"]
    live = lines(client.body)
    assert [e["seq"] for e in live] == list(range(1, 7))
    assert lines(await read(store, "s1")) == live
    assert lines(await read(store, "s1", after=2)) == live[2:]
    info = await store.info("s1")
    assert info is not None and info.ended and info.last == 6


async def test_a_client_that_leaves_detaches_and_the_stream_finishes_into_the_store() -> None:
    store = MemoryStore()
    gone = anyio.Event()
    upstream = Upstream(chunk("a"), 0.05, chunk("b"), 0.05, chunk("c"), FINISH, DONE)

    async def leave() -> None:
        await anyio.sleep(0.02)
        gone.set()

    outcome, client, _ = await produce(store, upstream, wait_disconnect=leave)
    assert outcome.ending is Ending.DONE
    assert upstream.closed == [True]  # finished, not cut
    assert b'"text":"c"' not in client.body  # nothing was sent after the client left
    replay = lines(await read(store, "s1"))
    assert "".join(e.get("text", "") for e in replay if e["type"] == "delta") == "abc"
    assert replay[-1]["type"] == "done"


async def test_a_stop_halts_the_upstream_and_ends_the_stream_stopped() -> None:
    store = MemoryStore()
    upstream = Upstream(chunk("a"), 30.0, chunk("never"))

    async def stop_soon() -> None:
        await anyio.sleep(0.1)
        await store.stop("s1")

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_soon)
        outcome, client, _ = await produce(store, upstream)
    assert outcome.ending is Ending.STOPPED and outcome.code == "stopped"
    assert upstream.closed == [False]  # the connection dropped: the generation stops
    assert lines(client.body)[-1] == {
        "type": "error",
        "message": "the stream was stopped",
        "code": "stopped",
        "seq": 3,
    }
    assert lines(await read(store, "s1"))[-1]["code"] == "stopped"


async def test_no_reader_within_the_linger_abandons_the_stream() -> None:
    store = MemoryStore()
    upstream = Upstream(chunk("a"), 30.0, chunk("never"))

    async def leave() -> None:
        await anyio.sleep(0.02)

    outcome, _, _ = await produce(store, upstream, wait_disconnect=leave, linger=0.3)
    assert outcome.ending is Ending.ABANDONED and upstream.closed == [False]
    assert lines(await read(store, "s1"))[-1]["code"] == "abandoned"
    assert 0.3 <= outcome.duration < 1.5


async def test_a_reader_that_comes_back_keeps_the_stream_alive() -> None:
    store = MemoryStore()
    upstream = Upstream(chunk("a"), 0.5, chunk("b"), FINISH, DONE)

    async def leave() -> None:
        await anyio.sleep(0.02)

    got: list[bytes] = []

    async def come_back() -> None:
        await anyio.sleep(0.1)
        got.append(await read(store, "s1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(come_back)
        outcome, _, _ = await produce(store, upstream, wait_disconnect=leave, linger=0.2)
    assert outcome.ending is Ending.DONE
    assert lines(got[0])[-1]["type"] == "done"


async def test_a_lost_producer_ends_its_readers_with_producer_lost() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.create("s1", principal=None, lease=5.0)
    await store.append("s1", [Record(1, (), raw="{}")])
    now[0] = 6.0  # the lease ran out: nobody renewed it
    events = lines(await read(store, "s1"))
    assert events == [
        {"type": "error", "message": events[0]["message"], "code": "producer_lost", "seq": 1}
    ]


class FailingStore(MemoryStore):
    """A memory store that behaves as one doing I/O (its appends go through the
    engine's writer task), and whose appends start failing, as Redis's do when it
    goes away."""

    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.appends = 0
        self.fail_after = fail_after

    def append_nowait(self, stream_id: str, records: Sequence[Record]) -> bool | None:
        return None  # not in-process: the writer task appends

    async def append(self, stream_id: str, records: Sequence[Record]) -> bool:
        self.appends += 1
        if self.appends > self.fail_after:
            raise StoreUnavailable("connection refused")
        return await super().append(stream_id, records)


async def test_a_failing_store_degrades_the_stream_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingStore(fail_after=1)
    pieces: list[bytes | float] = []
    for c in "abcdef":
        pieces += [chunk(c), 0.02]  # one read at a time: one append each
    upstream = Upstream(*pieces, FINISH, DONE)
    with caplog.at_level(logging.WARNING, "streamrelay"):
        outcome, client, recording = await produce(store, upstream)
    assert outcome.ending is Ending.DONE  # the live client got everything
    text = "".join(e.get("text", "") for e in lines(client.body) if e["type"] == "delta")
    assert text == "abcdef"
    assert not recording.active
    assert len([r for r in caplog.records if "no longer resumable" in r.message]) == 1
    assert store.appends == 2  # no store call after it failed


class DownStore(MemoryStore):
    async def create(self, stream_id: str, *, principal: str | None, lease: float) -> None:
        raise StoreUnavailable("connection refused")


async def test_an_unreachable_store_at_the_start_relays_without_it() -> None:
    outcome, client, recording = await produce(DownStore(), Upstream(chunk("a"), FINISH, DONE))
    assert outcome.ending is Ending.DONE and not recording.active
    assert outcome.stream_id is None
    assert not any(k == b"x-stream-id" for k, _ in client.start["headers"])
    assert all("seq" not in e for e in lines(client.body))


async def test_a_degraded_stream_whose_client_left_is_abandoned_at_once() -> None:
    store = FailingStore(fail_after=0)
    upstream = Upstream(chunk("a"), 30.0, chunk("never"))

    async def leave() -> None:
        await anyio.sleep(0.05)

    outcome, _, _ = await produce(store, upstream, wait_disconnect=leave)
    # Nobody can resume it: no generation goes on for nobody.
    assert outcome.ending in (Ending.ABANDONED, Ending.CLIENT_DISCONNECTED)
    assert upstream.closed == [False]
    assert outcome.duration < 1.0


class FailingReads(MemoryStore):
    async def read(self, stream_id: str, after: float, *, wait: float) -> Batch:
        raise StoreUnavailable("timeout")

    async def info(self, stream_id: str) -> StreamInfo | None:  # pragma: no cover
        return None

    async def beat(self, stream_id: str, lease: float) -> Pulse:  # pragma: no cover
        return Pulse(False, 0)


async def test_a_reader_whose_store_fails_gets_an_error_event() -> None:
    store = FailingReads()
    await store.create("s1", principal=None, lease=5.0)
    events = lines(await read(store, "s1"))
    assert [e["code"] for e in events] == ["store_unavailable"]
