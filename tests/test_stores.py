"""The store contract (``streamrelay.stores.base.Store``), proved against every backend:
``MemoryStore``, and ``RedisStore`` on a real ``redis-server`` (``tests/redis_server.py``),
both plain and as a one-node Redis Cluster, which refuses any multi-key command whose keys
are in different slots. Then what only Redis has: the hash tag, a Redis that dies and comes
back, a client the application made, readers and slots of a worker that died.

The Redis cases are ``@pytest.mark.real``: without ``redis-server`` they skip (and fail
under ``CI=true``). They run under asyncio only, as ``RedisStore`` does (``redis.asyncio``).
Time: ``MemoryStore`` runs on a fake clock; Redis expires keys on its own clock, so its
cases sleep (ttl and leases of a few tenths of a second).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest

from redis_server import RedisServer, redis_binary
from streamrelay.errors import ConfigurationError, StoreUnavailable
from streamrelay.events import Delta, Done, Finish, Start
from streamrelay.stores.base import Record, Store, position_after, unseen
from streamrelay.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio is asyncio-only


@pytest.fixture(scope="module")
def redis_servers() -> Iterator[dict[str, RedisServer]]:
    """A plain server and a one-node cluster, both spawned at once: the cluster's 2 s
    start overlaps the first tests (which, for that, need no cluster)."""
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    servers = {"redis": RedisServer(), "cluster": RedisServer(cluster=True)}
    try:
        for server in servers.values():
            server.spawn()
        yield servers
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture(scope="module")
def redis_server(redis_servers: dict[str, RedisServer]) -> RedisServer:
    redis_servers["redis"].wait()
    return redis_servers["redis"]


@pytest.fixture(scope="module")
def cluster_server(redis_servers: dict[str, RedisServer]) -> RedisServer:
    redis_servers["cluster"].wait()
    return redis_servers["cluster"]


class Kit:
    """Makes stores of one backend and lets time pass for it."""

    def __init__(self, kind: str, server: RedisServer | None) -> None:
        self.kind = kind
        self.server = server
        self.now = 0.0
        self.prefix = f"t{secrets.token_hex(4)}"
        self.closers: list[Callable[[], Awaitable[None]]] = []

    def make(self, **kwargs: Any) -> Store:
        store: Store
        if self.server is None:
            store = MemoryStore(clock=lambda: self.now, **kwargs)
        elif self.server.cluster:
            from redis.asyncio import RedisCluster

            from streamrelay.stores.redis import RedisStore

            client = RedisCluster(host=self.server.host, port=self.server.port)
            store = RedisStore(client, prefix=self.prefix, **kwargs)
            self.closers.append(client.aclose)  # the store leaves it open
        else:
            from streamrelay.stores.redis import RedisStore

            store = RedisStore(self.server.url, prefix=self.prefix, **kwargs)
        self.closers.append(store.aclose)
        return store

    async def elapse(self, seconds: float) -> None:
        if self.server is None:
            self.now += seconds
        else:
            await anyio.sleep(seconds)


async def _kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    server: RedisServer | None = None
    if request.param != "memory":
        server = request.getfixturevalue(f"{request.param}_server")
    kit = Kit(request.param, server)
    yield kit
    for close in reversed(kit.closers):
        await close()


MEMORY, REDIS = "memory", pytest.param("redis", marks=pytest.mark.real)
CLUSTER = pytest.param("cluster", marks=pytest.mark.real)


@pytest.fixture(params=[MEMORY, REDIS, CLUSTER])
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    """Every backend, a Redis Cluster too (every multi-key command in one slot)."""
    async for made in _kit(request):
        yield made


@pytest.fixture(params=[MEMORY, REDIS])
async def timed_kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    """For the cases that mostly wait on the clock: the cluster adds nothing there."""
    async for made in _kit(request):
        yield made


def rec(seq: int, *texts: str, raw: str | None = None) -> Record:
    return Record(seq, tuple(Delta(0, t) for t in texts), raw=raw)


# The contract ----------------------------------------------------------------------------

STREAM = [
    Record(1, (), raw='{"role":"assistant"}'),  # event-less, before event 1
    Record(1, (Start("c1", "m"), Delta(0, "He"), Delta(0, "llo")), raw="{1}"),  # 1..3
    Record(4, (), raw='{"filter":1}'),  # event-less, between 3 and 4
    Record(4, (), raw='{"filter":2}'),  # another at the same place
    rec(4, " wor", raw="{4}"),  # 4
    Record(5, (Delta(0, "ld"), Finish(0, "stop"), Done()), raw="{5}", name="x"),  # 5..7
]


# First the cases that wait on the clock (meanwhile the cluster node gets ready).


async def test_a_read_without_news_times_out_empty(timed_kit: Kit) -> None:
    store = timed_kit.make()
    await store.create("s", principal=None, lease=30)
    started = time.monotonic()
    batch = await store.read("s", 0, wait=0.3)
    assert 0.25 < time.monotonic() - started < 1.5
    assert (list(batch.records), batch.ended, batch.lost, batch.gone) == ([], False, False, False)


async def test_a_blocked_read_wakes_on_end_and_on_the_cap(timed_kit: Kit) -> None:
    store = timed_kit.make(max_events=2)
    for name in ("ending", "capping"):
        await store.create(name, principal=None, lease=30)
        await store.append(name, [rec(1, "a")])
    got: dict[str, Any] = {}

    async def reader(name: str) -> None:
        started = time.monotonic()
        batch = await store.read(name, 1, wait=5)
        got[name] = (batch, time.monotonic() - started)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader, "ending")
        tg.start_soon(reader, "capping")
        await anyio.sleep(0.2)
        await store.end("ending")
        assert not await store.append("capping", [rec(2, "b", "c")])
    ended, took = got["ending"]
    assert (list(ended.records), ended.ended, ended.capped) == ([], True, False)
    assert took < 1.5
    capped, took = got["capping"]
    assert (list(capped.records), capped.ended, capped.capped) == ([], False, True)
    assert took < 1.5


async def test_end_then_ttl_expiry(timed_kit: Kit) -> None:
    store = timed_kit.make(ttl=0.3)
    await store.create("s", principal="p", lease=30)
    await store.append("s", [rec(1, "a", "b"), Record(3, (Done(),))])
    await store.end("s")
    await store.end("s")  # twice is once
    batch = await store.read("s", 0, wait=5)
    assert batch.ended and [r.seq for r in batch.records] == [1, 3]
    at_end = await store.read("s", 3, wait=5)  # at once: nothing more will come
    assert at_end.ended and not at_end.records
    info = await store.info("s")
    assert info is not None and info.ended and info.last == 3
    await timed_kit.elapse(0.15)
    assert await store.info("s") is not None
    await timed_kit.elapse(0.2)
    assert await store.info("s") is None
    assert (await store.read("s", 0, wait=0)).gone


async def test_a_lapsed_lease_is_a_lost_producer(timed_kit: Kit) -> None:
    store = timed_kit.make(ttl=5)
    await store.create("s", principal=None, lease=0.15)
    await store.append("s", [rec(1, "a")])
    await timed_kit.elapse(0.2)
    first = await store.read("s", 0, wait=0)  # what was stored comes first
    assert list(first.records) == [rec(1, "a")] and not first.lost
    lost = await store.read("s", 1, wait=5)
    assert lost.lost and not lost.records and not lost.gone
    await store.beat("s", 5)  # the producer is back
    batch = await store.read("s", 1, wait=0)
    assert not batch.lost and not batch.records


async def test_an_abandoned_stream_goes_after_lease_and_ttl(timed_kit: Kit) -> None:
    store = timed_kit.make(ttl=0.2)
    await store.create("s", principal=None, lease=0.15)
    await store.append("s", [rec(1, "a")])
    await timed_kit.elapse(0.25)
    assert await store.info("s") is not None  # lost, still readable
    await timed_kit.elapse(0.15)
    assert await store.info("s") is None


async def test_beats_keep_a_long_stream(timed_kit: Kit) -> None:
    store = timed_kit.make(ttl=0.15)
    await store.create("s", principal=None, lease=0.15)
    await store.append("s", [rec(1, "a")])
    for _ in range(5):  # 0.5 s: well past lease + ttl
        await timed_kit.elapse(0.1)
        await store.beat("s", 0.15)
    batch = await store.read("s", 0, wait=0)
    assert list(batch.records) == [rec(1, "a")] and not batch.lost


# Then every backend.


async def test_create_and_info(kit: Kit) -> None:
    store = kit.make()
    assert await store.info("s") is None
    await store.create("s", principal="alice", lease=5)
    info = await store.info("s")
    assert info is not None
    assert (info.principal, info.last, info.ended) == ("alice", 0, False)
    await store.create("anon", principal=None, lease=5)
    anon = await store.info("anon")
    assert anon is not None and anon.principal is None
    await store.create("empty", principal="", lease=5)
    empty = await store.info("empty")
    assert empty is not None and empty.principal == ""


async def test_read_returns_exactly_the_unseen_records(kit: Kit) -> None:
    """At every position: between and inside records, at the event-less records'
    half positions (``seq - 0.5``), before the first and past the last. A position
    inside a multi-event record gets that record whole."""
    store = kit.make()
    await store.create("s", principal=None, lease=5)
    assert await store.append("s", STREAM[:2])
    assert await store.append("s", STREAM[2:])
    for after in (0, 0.5, 1, 2, 3, 3.5, 4, 4.5, 5, 6, 7, 8, -1, 2.25):
        batch = await store.read("s", after, wait=0)
        assert list(batch.records) == [r for r in STREAM if unseen(r, after)], after
        assert not (batch.ended or batch.lost or batch.gone or batch.capped)
    info = await store.info("s")
    assert info is not None and info.last == 7


async def test_a_follower_reads_everything_once_in_order(kit: Kit) -> None:
    """Following with :func:`position_after`, across many appends and (in Redis) pages."""
    store = kit.make()
    await store.create("s", principal=None, lease=5)
    records: list[Record] = []
    seq = 1
    for i in range(25):
        batch = []
        for j in range(100):
            if (i + j) % 7 == 0:
                batch.append(Record(seq, (), raw="{}"))
            batch.append(rec(seq, f"t{seq}"))
            seq += 1
        records += batch
        assert await store.append("s", batch)
    await store.end("s")
    got: list[Record] = []
    position: float = 0
    while True:
        read = await store.read("s", position, wait=0)
        got += read.records
        if read.records:
            position = position_after(read.records[-1])
        if read.ended:
            break
        assert read.records, "a live read with nothing new before the end"
    assert got == records


async def test_a_blocked_read_wakes_on_append(kit: Kit) -> None:
    store = kit.make()
    await store.create("s", principal=None, lease=30)
    await store.append("s", [rec(1, "a")])
    got: list[Any] = []

    async def reader() -> None:
        started = time.monotonic()
        got.append(await store.read("s", 1, wait=5))
        got.append(time.monotonic() - started)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.2)
        assert await store.append("s", [rec(2, "b")])
    batch, took = got
    assert list(batch.records) == [rec(2, "b")]
    assert 0.15 < took < 1.5


async def test_an_unknown_stream(kit: Kit) -> None:
    store = kit.make()
    assert (await store.read("nope", 0, wait=1)).gone
    assert not await store.append("nope", [rec(1, "a")])
    pulse = await store.beat("nope", 5)
    assert (pulse.stopped, pulse.readers) == (False, 0)
    await store.end("nope")
    await store.stop("nope")
    await store.attach("nope")
    await store.detach("nope")
    assert await store.info("nope") is None  # none of that brought it to life


async def test_stop_reaches_the_beat(kit: Kit) -> None:
    store = kit.make()
    await store.create("s", principal=None, lease=5)
    assert not (await store.beat("s", 5)).stopped
    await store.stop("s")
    assert (await store.beat("s", 5)).stopped
    assert (await store.beat("s", 5)).stopped


async def test_a_chat_remembers_its_latest_stream(kit: Kit) -> None:
    store = kit.make()
    assert await store.chat_stream("alice:c1") is None
    await store.create("s1", principal="alice", lease=5)
    await store.set_chat("alice:c1", "s1")
    assert await store.chat_stream("alice:c1") == "s1"
    await store.create("s2", principal="alice", lease=5)
    await store.set_chat("alice:c1", "s2")  # a new request in the same chat
    assert await store.chat_stream("alice:c1") == "s2"
    assert await store.chat_stream("bob:c1") is None  # chats are keyed with their principal


async def test_readers_attach_and_detach(kit: Kit) -> None:
    store = kit.make()
    await store.create("s", principal=None, lease=5)
    assert (await store.beat("s", 5)).readers == 0
    await store.attach("s")
    await store.attach("s")
    assert (await store.beat("s", 5)).readers == 2
    await store.detach("s")
    assert (await store.beat("s", 5)).readers == 1
    await store.detach("s")
    await store.detach("s")  # one too many: never below zero
    assert (await store.beat("s", 5)).readers == 0
    await store.attach("s")
    assert (await store.beat("s", 5)).readers == 1


async def test_slots_per_principal(kit: Kit) -> None:
    store = kit.make()
    assert await store.acquire("alice", 2)
    assert await store.acquire("alice", 2)
    assert not await store.acquire("alice", 2)
    assert await store.acquire("bob", 1)
    assert not await store.acquire("carol", 0)
    await store.release("alice")
    assert await store.acquire("alice", 2)
    assert not await store.acquire("alice", 2)
    await store.release("alice")
    await store.release("alice")
    assert await store.acquire("alice", 2)
    assert await store.acquire("alice", 2)


async def test_the_cap(kit: Kit) -> None:
    store = kit.make(max_events=5)
    await store.create("s", principal=None, lease=5)
    assert await store.append("s", [Record(1, (), raw="{}"), rec(1, "a", "b", "c")])
    assert await store.append("s", [rec(4, "d")])
    assert not await store.append("s", [rec(5, "e", "f")])  # 6 > 5: nothing stored
    assert not await store.append("s", [rec(7, "g")])  # capped for good
    info = await store.info("s")
    assert info is not None and info.last == 4
    batch = await store.read("s", 0, wait=5)
    assert [r.seq for r in batch.records] == [1, 1, 4]
    assert batch.capped and not batch.ended
    at_cap = await store.read("s", 4, wait=5)  # at once
    assert at_cap.capped and not at_cap.records
    await store.end("s")
    ended = await store.read("s", 0, wait=0)
    assert ended.ended and not ended.capped


async def test_create_again_starts_over(kit: Kit) -> None:
    store = kit.make()
    await store.create("s", principal="a", lease=5)
    await store.append("s", [rec(1, "a")])
    await store.end("s")
    await store.create("s", principal="b", lease=5)
    info = await store.info("s")
    assert info is not None and (info.principal, info.last, info.ended) == ("b", 0, False)
    assert not (await store.read("s", 0, wait=0)).records


async def test_ids_that_look_like_keys(kit: Kit) -> None:
    store = kit.make()
    ids = ["a}b{c", "{x}", "", "%7B", "{", "}", "a:b", "é✓"]
    for n, stream_id in enumerate(ids):
        await store.create(stream_id, principal=stream_id, lease=5)
        await store.append(stream_id, [rec(1, str(n))])
        await store.attach(stream_id)
        assert await store.acquire(stream_id, 1)
    for n, stream_id in enumerate(ids):
        info = await store.info(stream_id)
        assert info is not None and info.principal == stream_id
        assert list((await store.read(stream_id, 0, wait=0)).records) == [rec(1, str(n))]
        assert (await store.beat(stream_id, 5)).readers == 1
        assert not await store.acquire(stream_id, 1)


# Redis only ------------------------------------------------------------------------------

real = pytest.mark.real


def _redis_store(server: RedisServer, **kwargs: Any) -> Any:
    from streamrelay.stores.redis import RedisStore

    return RedisStore(server.url, prefix=f"t{secrets.token_hex(4)}", **kwargs)


@real
async def test_every_key_of_a_stream_shares_one_slot(redis_server: RedisServer) -> None:
    from redis.crc import key_slot

    store = _redis_store(redis_server, ttl=60)
    try:
        for stream_id in ("abc", "a}b", "{x", ""):
            await store.create(stream_id, principal="p", lease=5)
            await store.append(stream_id, [rec(1, "a")])
            await store.attach(stream_id)
            keys = await store.client.keys(f"{store.prefix}:{{*")
            mine = sorted(k.decode() for k in keys if k.decode() in store.keys(stream_id))
            assert mine == sorted(store.keys(stream_id))  # meta, events, readers, lease
            assert len({key_slot(k.encode()) for k in mine}) == 1, mine
            for key in mine:  # one hash tag: the braces around the (escaped) id
                assert key.count("{") == 1 and key.count("}") == 1
            await store.client.delete(*mine)
        await store.acquire("p", 1)
        assert await store.client.exists(store.slots_key("p")) == 1
        assert store.slots_key("p") == f"{store.prefix}:slots:{{p}}"
    finally:
        await store.aclose()


@real
async def test_appends_from_many_streams_travel_in_one_pipeline(redis_server: RedisServer) -> None:
    """Every stream's writer appends at its own pace; those that meet go in one round trip
    (``_Pipelined``), and each record still lands in its own stream. Beats too."""
    store = _redis_store(redis_server)
    executes = 0
    make_pipeline = store.client.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal executes
            executes += 1
            return await execute(*args, **kwargs)

        pipe.execute = counted
        return pipe

    store.client.pipeline = counting_pipeline  # counts round trips; the server is real
    try:
        ids = [f"s{i}" for i in range(50)]
        for stream_id in ids:
            await store.create(stream_id, principal=None, lease=5)
        await store.client.script_flush()  # as a restarted server: the script must load
        assert await store.append("s0", [rec(1, "s0")])
        assert executes == 2  # NOSCRIPT, then the script loaded and the call sent again
        executes = 0
        ids = ids[1:]
        assert await asyncio.gather(*(store.append(s, [rec(1, s)]) for s in ids)) == [True] * 49
        assert executes == 1
        for stream_id in ids:
            assert list((await store.read(stream_id, 0, wait=0)).records) == [rec(1, stream_id)]
        assert await store.append("s0", [rec(2, "again")])  # alone: at once, a pipeline of one
        assert executes == 2
        await store.beat("s0", 5)  # beats travel the same way (the script loads first)
        executes = 0
        pulses = await asyncio.gather(*(store.beat(s, 5) for s in ids))
        assert executes == 1 and all(not p.stopped and p.readers == 0 for p in pulses)
    finally:
        await store.aclose()


@real
async def test_a_dead_redis_fails_every_call_fast_and_a_restarted_one_works() -> None:
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    from redis.exceptions import RedisError

    with RedisServer() as server:
        store = _redis_store(server)
        try:
            await store.create("s", principal=None, lease=5)
            await store.attach("s")
            assert await store.acquire("p", 5)
            server.stop()
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "create": lambda: store.create("t", principal=None, lease=5),
                "append": lambda: store.append("s", [rec(1, "a")]),
                "end": lambda: store.end("s"),
                "info": lambda: store.info("s"),
                "read": lambda: store.read("s", 0, wait=5),
                "beat": lambda: store.beat("s", 5),
                "stop": lambda: store.stop("s"),
                "attach": lambda: store.attach("s"),
                "detach": lambda: store.detach("s"),
                "acquire": lambda: store.acquire("p", 5),
                "release": lambda: store.release("p"),
            }
            slowest = 0.0
            for name, call in calls.items():
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as caught:
                    await call()
                took = time.monotonic() - started
                slowest = max(slowest, took)
                assert took < 2.0, (name, took)
                assert isinstance(caught.value.__cause__, (RedisError, OSError)), name
                assert name in str(caught.value)
            print(f"slowest call on a dead Redis: {slowest * 1000:.0f} ms")
            server.start()  # same port, empty (no persistence)
            assert await store.info("s") is None
            await store.create("s", principal="p", lease=5)
            assert await store.append("s", [rec(1, "a")])
            assert list((await store.read("s", 0, wait=0)).records) == [rec(1, "a")]
        finally:
            await store.aclose()


@real
async def test_a_store_on_a_client_the_application_made(redis_server: RedisServer) -> None:
    """Also a client that decodes replies to ``str``; the store leaves it open."""
    from redis.asyncio import Redis

    from streamrelay.stores.redis import RedisStore

    client = Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisStore(client, prefix=f"t{secrets.token_hex(4)}")
    assert store.client is client
    await store.create("s", principal="p", lease=5)
    assert await store.append("s", STREAM)
    await store.end("s")
    batch = await store.read("s", 0.5, wait=0)
    assert list(batch.records) == STREAM[1:] and batch.ended
    info = await store.info("s")
    assert info is not None and (info.principal, info.last, info.ended) == ("p", 7, True)
    await store.aclose()
    assert await client.ping()
    await client.aclose()


@real
async def test_readers_and_slots_of_a_dead_worker_stop_counting(
    redis_server: RedisServer,
) -> None:
    from streamrelay.stores.redis import RedisStore

    here = _redis_store(redis_server, liveness=0.3)
    there = RedisStore(redis_server.url, prefix=here.prefix, liveness=0.3)
    try:
        await here.create("s", principal="p", lease=30)
        await there.attach("s")
        assert await there.acquire("p", 1)
        await anyio.sleep(0.45)  # past the liveness: the live worker keeps them
        assert (await here.beat("s", 30)).readers == 1
        assert not await here.acquire("p", 1)
        # The worker dies: no detach, no release, no more refreshes.
        assert there._refresher is not None
        there._refresher.cancel()
        await there.client.aclose()
        await anyio.sleep(0.4)
        assert (await here.beat("s", 30)).readers == 0
        assert await here.acquire("p", 1)
    finally:
        await here.aclose()


@real
async def test_aclose_gives_back_what_the_store_holds(redis_server: RedisServer) -> None:
    from streamrelay.stores.redis import RedisStore

    here = _redis_store(redis_server)
    there = RedisStore(redis_server.url, prefix=here.prefix)
    await here.create("s", principal=None, lease=30)
    await there.attach("s")
    assert await there.acquire("p", 1)
    await there.aclose()
    assert (await here.beat("s", 30)).readers == 0
    assert await here.acquire("p", 1)
    await here.aclose()


@real
async def test_a_long_wait_spans_several_blocking_slices(redis_server: RedisServer) -> None:
    """``XREAD BLOCK`` is cut below the socket timeout; a wait longer than that still
    waits, and still wakes on an append."""
    from redis.asyncio import Redis

    from streamrelay.stores.redis import RedisStore

    client = Redis.from_url(redis_server.url, socket_timeout=0.4)
    store = RedisStore(client, prefix=f"t{secrets.token_hex(4)}")
    await store.create("s", principal=None, lease=30)
    started = time.monotonic()
    assert not (await store.read("s", 0, wait=0.6)).records
    assert 0.55 < time.monotonic() - started < 2.0
    got: list[Any] = []

    async def reader() -> None:
        got.append(await store.read("s", 0, wait=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.3)
        await store.append("s", [rec(1, "a")])
    assert list(got[0].records) == [rec(1, "a")]
    await store.aclose()
    await client.aclose()


def test_arguments_are_checked() -> None:
    pytest.importorskip("redis")
    from redis import Redis as SyncRedis

    from streamrelay.stores.redis import RedisStore

    url = "redis://127.0.0.1:1/0"  # never connected to: building a store does no I/O
    for kwargs in ({"ttl": 0}, {"ttl": True}, {"max_events": 0}, {"max_events": 1.5}):
        with pytest.raises(ConfigurationError):
            RedisStore(url, **kwargs)
    for prefix in ("", "a{b", "a}"):
        with pytest.raises(ConfigurationError, match="prefix"):
            RedisStore(url, prefix=prefix)
    with pytest.raises(ConfigurationError, match="liveness"):
        RedisStore(url, liveness=-1)
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio"):
        RedisStore(SyncRedis())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Redis URL"):
        RedisStore("http://example.com")
    assert repr(RedisStore(url, ttl=60)) == "RedisStore('streamrelay', ttl=60)"


def test_without_the_redis_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamrelay.stores.redis import RedisStore

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'streamrelay-asgi\[redis\]'"):
        RedisStore("redis://127.0.0.1:1/0")


def test_importing_the_module_does_not_import_redis() -> None:
    code = "import sys, streamrelay.stores.redis; print('redis' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def test_positions_map_to_entry_ids() -> None:
    """The id of a record's entry is twice the position after it, so ``XRANGE`` from
    just above twice a position is exactly the unseen records."""
    from streamrelay.stores.redis import _key_of, _start

    for after in (0, 0.5, 1, 2, 3, 3.5, 4, 6, 7, 8):
        first = int(_start(after).split("-")[0])
        assert [r for r in STREAM if _key_of(r) >= first] == [r for r in STREAM if unseen(r, after)]
    keys = [_key_of(r) for r in STREAM]
    assert keys == sorted(keys) and keys[0] >= 1
    assert _start(-0.5) == "-" and _start(math.inf) == "+" and _start(math.nan) == "+"
