"""``RedisStore``: resumable streams in Redis, Valkey or Redis Cluster, for many workers.

Any worker, on any machine, can then answer a resume, a stop or a producer's beat:
the state lives in Redis, not in a process. The store needs the ``redis`` client
(``pip install 'streamrelay-asgi[redis]'``), imported only when a ``RedisStore`` is
built, and runs under **asyncio only** (``redis.asyncio``; under trio every call
raises :class:`~streamrelay.errors.StoreUnavailable`).

Theory of operation
-------------------

**Keys.** Every key of stream ``S`` carries one hash tag, ``{S}``, so Redis Cluster
puts them all in one slot and every multi-key operation on a stream is legal there::

    <prefix>:{S}:meta      hash: created, principal, events, records, last,
                                 ended, capped, stopped
    <prefix>:{S}:events    Redis Stream: one entry per Record
    <prefix>:{S}:lease     the producer's lease (SET ... PX lease)
    <prefix>:{S}:readers   sorted set: reader token -> liveness deadline (ms)
    <prefix>:slots:{P}     sorted set per principal P: slot token -> deadline (ms)

(``{``, ``}`` and ``%`` in an id are %-escaped and an empty id is ``%``, so an id
can never split or empty the tag.)

**Entries and positions.** Each record is one stream entry whose field ``data`` is
:meth:`Record.to_json`. Its entry id is ``<k>-<n>``, where ``k`` is twice the
reader position the record takes a reader to (:func:`~.base.position_after`:
``2 * last`` for a record with events, ``2 * seq - 1`` for an event-less one, which
sits at ``seq - 0.5``), and ``n`` counts the entries with the same ``k`` (0, 1, ...).
A record is unseen at position ``p`` exactly when its ``k > 2p``, and ``k`` never
decreases along a stream, so ``read(after=p)`` is ``XRANGE events <floor(2p)+1>-0 +``:
no scan, no index. The ids are computed inside the append script from the
stream's last id (``XREVRANGE ... COUNT 1``), so they need nothing newer than Redis
5 streams. Two more kinds of entry carry a field ``mark`` instead of ``data``: ``end`` and
``cap``. They hold no record; they exist to wake the readers blocked in ``XREAD``.

**One round trip per call.** Every operation that touches several keys is one Lua
script (``EVALSHA``), atomic and legal in Cluster because its keys share a slot:
``append`` (the cap check, one ``XADD ... MAXLEN ~`` per record and the counts),
``read``'s snapshot (meta flags, the ``XRANGE`` page, the last id and the lease, all
at one instant, so ``ended`` is never reported without the records that reach
it), ``beat`` (renew the lease, drop stale readers, read the stop flag and the
reader count), ``create``, ``end``, ``stop``, ``attach``, ``acquire``.

**Appends and beats travel together.** Each stream's writer gathers its tokens for
a tenth of a second, then appends them, and each stream beats twice a second; with
hundreds of streams, redis-py's cost per command (a pooled connection checked out,
the command packed, the reply parsed, all in Python) was most of the store's CPU.
So the appends (and the beats) of every stream of the process join one queue
(:class:`_Pipelined`), sent as one pipeline (no ``MULTI``: each script is atomic on
its own, and a stream never has two appends out). What arrives while a pipeline is
out goes in the next; nothing waits for a timer, so an idle store still answers in
one round trip.

**Reading.** ``read`` takes the snapshot; with nothing new on a live stream it
answers ``lost`` if the lease key has expired, else blocks in ``XREAD BLOCK``
after the snapshot's last id (so an append between the two is not missed), then
takes the snapshot again. ``XREAD BLOCK`` holds one pooled connection of its own
while it waits (redis-py's pool gives each concurrent command its own), and is
cut into slices well short of the client's socket timeout (half of it; Redis
ends a block on its own tick, up to ~100 ms late). A page holds at most
1,000 records; a reader that gets a page short of the end (``ended`` false) simply
reads again at once.

**Caps and expiry.** Past ``max_events`` events (or ``2 * max_events`` records:
only an upstream sending chunks with no event gets there) an append stores
nothing, marks the stream ``capped`` and returns ``False``. ``MAXLEN ~`` bounds the
Redis Stream at that many entries as a safety net; it never trims a stream the
store filled itself. Every key of a live stream expires ``lease + ttl`` after the
last ``create`` or ``beat`` (a stream whose producer vanished disappears on its
own); ``end`` sets them all to ``ttl`` (and drops the lease: an ended stream is
never ``lost``).

**Readers and slots survive dead workers.** A reader (``attach``) and a slot
(``acquire``) are tokens in a sorted set, scored with a deadline ``liveness``
seconds ahead of Redis's own clock (``TIME``, so workers' clocks do not matter).
The store instance that holds them refreshes their deadlines every
``liveness / 3`` seconds from a background task (running only while it holds
some); ``detach`` and ``release`` remove them. A worker that dies without
detaching or releasing stops refreshing, and its readers stop counting and its
slots come free ``liveness`` seconds later. ``beat`` counts only live readers;
``acquire`` drops expired slots before counting. ``release`` gives back a slot
this instance acquired for the principal (a release with none is a no-op).

**Failures.** Every Redis error, connection error or timeout is raised as
:class:`~streamrelay.errors.StoreUnavailable`, chained. A store built from a URL
uses short timeouts (connect 1 s, socket 1 s) and one quick retry on a broken
connection only (which reconnects a pooled connection that a Redis restart
closed), so a dead Redis fails a call in milliseconds and a hung or unreachable
one in about a second, never minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigurationError, StoreUnavailable
from .base import Batch, Pulse, Record, Store, StreamInfo

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster
    from redis.commands.core import AsyncScript

    Client = Redis | RedisCluster

__all__ = ["RedisStore"]

PAGE = 1000
"""The most records one :meth:`RedisStore.read` returns."""

_CONNECT_TIMEOUT = 1.0
_SOCKET_TIMEOUT = 1.0
_MAX_SLICE = 10.0
"""The longest single ``XREAD BLOCK`` when the client has no socket timeout."""

# Lua ----------------------------------------------------------------------------------

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_TIP = """
local tms, tseq = 0, 0
local tip = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #tip > 0 then
  local id = tip[1][1]
  local dash = string.find(id, '-', 1, true)
  tms = tonumber(string.sub(id, 1, dash - 1))
  tseq = tonumber(string.sub(id, dash + 1))
end
local function nextid(k)
  if k < tms then k = tms end
  if k == tms then tseq = tseq + 1 else tms = k; tseq = 0 end
  return string.format('%d-%d', tms, tseq)
end
local function follow(key)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
"""

# KEYS: meta events readers lease; ARGV: lease_ms expire_ms created [principal]
_CREATE = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'created', ARGV[3], 'events', 0, 'records', 0, 'last', 0)
if #ARGV >= 4 then redis.call('HSET', KEYS[1], 'principal', ARGV[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
return 1
"""

# KEYS: meta events; ARGV: max_events max_records maxlen n_events last, then (k, data)*
_APPEND = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'capped') == 1 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'events', 'records')
local events = tonumber(f[1] or '0') or 0
local records = tonumber(f[2] or '0') or 0
local n = tonumber(ARGV[4])
local nrec = (#ARGV - 5) / 2
"""
    + _TIP
    + """
if events + n > tonumber(ARGV[1]) or records + nrec > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'capped', '1')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], nextid(tms), 'mark', 'cap')
  follow(KEYS[2])
  return 0
end
if nrec == 0 then return 1 end
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], nextid(tonumber(ARGV[i])),
             'data', ARGV[i + 1])
end
redis.call('HINCRBY', KEYS[1], 'events', n)
redis.call('HINCRBY', KEYS[1], 'records', nrec)
redis.call('HSET', KEYS[1], 'last', ARGV[5])
follow(KEYS[2])
return 1
"""
)

# KEYS: meta events readers lease; ARGV: ttl_ms maxlen
_END = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'ended') == 1 then return 0 end
"""
    + _TIP
    + """
redis.call('HSET', KEYS[1], 'ended', '1')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], nextid(tms), 'mark', 'end')
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
redis.call('DEL', KEYS[4])
return 1
"""
)

# KEYS: meta events lease; ARGV: start count
_SNAPSHOT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local f = redis.call('HMGET', KEYS[1], 'ended', 'capped')
local entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
local tip = '0-0'
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then tip = last[1][1] end
return {1, f[1] and 1 or 0, f[2] and 1 or 0, redis.call('EXISTS', KEYS[3]), tip, entries}
"""

# KEYS: meta events readers lease; ARGV: lease_ms expire_ms
_BEAT = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local f = redis.call('HMGET', KEYS[1], 'ended', 'stopped')
if not f[1] then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
"""
    + _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', now))
return {f[2] and 1 or 0, redis.call('ZCARD', KEYS[3])}
"""
)

# KEYS: meta; ARGV: none
_STOP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'stopped', '1')
return 1
"""

# KEYS: meta readers; ARGV: liveness_ms token*   (attach, and the refresher's touch)
_READERS = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
"""
    + _NOW
    + """
local deadline = string.format('%d', now + tonumber(ARGV[1]))
for i = 2, #ARGV do redis.call('ZADD', KEYS[2], deadline, ARGV[i]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""
)

# KEYS: slots; ARGV: limit token liveness_ms
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: slots; ARGV: liveness_ms token*   (the refresher: only tokens still held)
_SLOTS = (
    _NOW
    + """
local deadline = string.format('%d', now + tonumber(ARGV[1]))
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""
)


# Helpers ------------------------------------------------------------------------------


def _tag(name: str) -> str:
    """``name`` made safe inside a hash tag: no brace, never empty (injective)."""
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") or "%"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _Pipelined:
    """One script's calls from every stream of the process, sent as pipelines, at most
    one out at a time (see the module); each caller gets its own reply or error.

    Not with Redis Cluster, whose pipelines in redis-py refuse ``EVALSHA``: there each
    call is its own round trip, as before."""

    def __init__(self, client: Client, script: AsyncScript) -> None:
        import redis.asyncio

        self._client = client
        self._script = script
        self._pipelined = not isinstance(client, redis.asyncio.RedisCluster)
        self._queue: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The script's reply for ``keys`` and ``args``; raises what Redis raised."""
        if not self._pipelined:
            return await self._script(keys=list(keys), args=list(args))
        future = asyncio.get_running_loop().create_future()
        self._queue.append(([len(keys), *keys, *args], future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        return await future

    async def _send(self) -> None:
        batch: list[tuple[list[Any], asyncio.Future[Any]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self._execute([call for call, _ in batch])
                except Exception as exc:  # the connection failed: every caller hears it
                    replies = [exc] * len(batch)
                for (_, future), reply in zip(batch, replies, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
                batch = []
        finally:  # cancelled (the loop is closing): nobody may wait for ever
            for _, future in (*batch, *self._queue):
                future.cancel()
            self._queue = []
            self._sender = None

    async def _execute(self, calls: list[list[Any]]) -> list[Any]:
        import redis.exceptions

        replies = await self._pipeline(calls)
        missing = [
            i
            for i, reply in enumerate(replies)
            if isinstance(reply, redis.exceptions.NoScriptError)
        ]
        if missing:  # a restarted or flushed server: load the script, send those again
            await self._client.script_load(self._script.script)
            again = await self._pipeline([calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, calls: list[list[Any]]) -> list[Any]:
        """One pipeline of ``EVALSHA`` calls; errors come back as replies."""
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self._script.sha, *call)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _key_of(record: Record) -> int:
    """The ``k`` of the record's entry id: twice :func:`~.base.position_after`.

    >>> from streamrelay.events import Delta
    >>> _key_of(Record(5, (Delta(0, "a"), Delta(0, "b")))), _key_of(Record(7, ()))
    (12, 13)
    """
    return 2 * record.last if record.events else 2 * record.seq - 1


def _start(after: float) -> str:
    """The ``XRANGE`` start of the records unseen at position ``after``.

    >>> _start(6), _start(6.5), _start(0), _start(-1)
    ('13-0', '14-0', '1-0', '-')
    """
    if after < 0:
        return "-"
    if not after < 2**52:  # far past any stream (or NaN): nothing is unseen
        return "+"
    return f"{math.floor(2 * after) + 1}-0"


class _Keys(NamedTuple):
    meta: str
    events: str
    readers: str
    lease: str


@dataclass(frozen=True, slots=True)
class _Snapshot:
    gone: bool
    ended: bool = False
    capped: bool = False
    lease: bool = False
    tip: str = "0-0"
    records: tuple[Record, ...] = ()
    complete: bool = True
    """The records reach the stream's last entry (the page was not cut)."""

    def batch(self) -> Batch:
        if self.gone:
            return Batch((), ended=False, gone=True)
        return Batch(
            self.records,
            ended=self.ended and self.complete,
            capped=self.capped and not self.ended and self.complete,
        )


def _load_redis() -> Any:
    try:
        import redis.asyncio
    except ImportError as exc:
        raise ConfigurationError(
            "RedisStore needs the redis client: pip install 'streamrelay-asgi[redis]'"
        ) from exc
    return redis


class RedisStore(Store):
    """Resumable streams in Redis (or Valkey, or Redis Cluster), shared by every
    worker on every machine. Needs asyncio.

    Args:
        url_or_client: a ``redis://``, ``rediss://`` or ``unix://`` URL (the store
            makes the client, with short timeouts, and closes it in :meth:`aclose`),
            or a ``redis.asyncio.Redis`` / ``redis.asyncio.RedisCluster`` you made
            (used as it is, and left open).
        ttl: seconds an ended stream stays resumable (default 600).
        max_events: the most events kept per stream (default 100,000).
        prefix: the first part of every key (default ``"streamrelay"``).
        liveness: seconds a reader or a slot of a worker that died keeps counting
            (default 30); live ones are refreshed every third of it.

    >>> RedisStore("redis://127.0.0.1:6379/0", ttl=60)  # doctest: +SKIP
    RedisStore('streamrelay', ttl=60)
    """

    def __init__(
        self,
        url_or_client: str | Client,
        *,
        ttl: float = 600.0,
        max_events: int = 100_000,
        prefix: str = "streamrelay",
        liveness: float = 30.0,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ConfigurationError(f"max_events must be a positive integer, got {max_events!r}")
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"prefix must be a non-empty string without braces, got {prefix!r}"
            )
        if isinstance(liveness, bool) or not isinstance(liveness, (int, float)) or not liveness > 0:
            raise ConfigurationError(
                f"liveness must be a positive number of seconds, got {liveness!r}"
            )
        redis = _load_redis()
        client: Client
        if isinstance(url_or_client, str):
            from redis.asyncio.retry import Retry
            from redis.backoff import ConstantBackoff

            # One retry, on a broken connection only (a pooled connection that a Redis
            # restart closed reconnects); a timeout is not retried, so a hung Redis costs
            # one socket timeout. The URL's own options (?socket_timeout=5) win.
            retry = Retry(ConstantBackoff(0.02), 1, (redis.exceptions.ConnectionError,))
            try:
                client = redis.asyncio.Redis.from_url(
                    url_or_client,
                    socket_timeout=_SOCKET_TIMEOUT,
                    socket_connect_timeout=_CONNECT_TIMEOUT,
                    retry=retry,
                )
            except ValueError as exc:
                raise ConfigurationError(f"not a Redis URL: {url_or_client!r} ({exc})") from exc
            self._owned = True
        elif isinstance(url_or_client, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            client = url_or_client
            self._owned = False
        else:
            raise ConfigurationError(
                "RedisStore takes a Redis URL or a redis.asyncio.Redis / RedisCluster client, "
                f"got {type(url_or_client).__name__}"
            )
        self.ttl = ttl
        self.max_events = max_events
        self.prefix = prefix
        self.liveness = liveness
        self._client = client
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            OSError,
            asyncio.TimeoutError,
        )
        timeout = _socket_timeout(client)
        # Redis times a block out on its own tick (hz 10: up to ~100 ms late), so a
        # slice keeps that much (and the round trip) below the socket timeout.
        self._slice = _MAX_SLICE if timeout is None else max(0.05, min(timeout / 2, timeout - 0.3))
        self._create = client.register_script(_CREATE)
        self._appends = _Pipelined(client, client.register_script(_APPEND))
        self._end = client.register_script(_END)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._beats = _Pipelined(client, client.register_script(_BEAT))
        self._stop = client.register_script(_STOP)
        self._readers_script = client.register_script(_READERS)
        self._acquire = client.register_script(_ACQUIRE)
        self._slots_script = client.register_script(_SLOTS)
        self._readers: dict[str, list[str]] = {}
        """This instance's attached reader tokens, per stream id."""
        self._slots: dict[str, list[str]] = {}
        """This instance's slot tokens, per principal."""
        self._refresher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RedisStore({self.prefix!r}, ttl={self.ttl!r})"

    @property
    def client(self) -> Client:
        """The ``redis.asyncio`` client the store uses."""
        return self._client

    def keys(self, stream_id: str) -> _Keys:
        """The stream's keys (meta, events, readers, lease), with one hash tag."""
        base = f"{self.prefix}:{{{_tag(stream_id)}}}"
        return _Keys(f"{base}:meta", f"{base}:events", f"{base}:readers", f"{base}:lease")

    def slots_key(self, principal: str) -> str:
        """The key of ``principal``'s slots (its own hash tag)."""
        return f"{self.prefix}:slots:{{{_tag(principal)}}}"

    @contextlib.contextmanager
    def _unavailable(self, what: str) -> Iterator[None]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise StoreUnavailable(
                f"RedisStore.{what}: RedisStore needs asyncio (redis.asyncio)"
            ) from None
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable(f"RedisStore.{what}: Redis failed: {exc!r}") from exc

    async def _eval(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await script(keys=list(keys), args=list(args))

    # The contract ------------------------------------------------------------------------

    async def create(self, stream_id: str, *, principal: str | None, lease: float) -> None:
        keys = self.keys(stream_id)
        args: list[Any] = [_ms(lease), _ms(lease + self.ttl), repr(time.time())]
        if principal is not None:
            args.append(principal)
        with self._unavailable("create"):
            await self._eval(self._create, keys, args)

    async def append(self, stream_id: str, records: Sequence[Record]) -> bool:
        keys = self.keys(stream_id)
        args: list[Any] = [
            self.max_events,
            2 * self.max_events,
            2 * self.max_events + 2,
            sum(len(r.events) for r in records),
            records[-1].last if records else 0,
        ]
        for record in records:
            args += (_key_of(record), record.to_json_bytes())
        with self._unavailable("append"):
            return bool(await self._appends.call(keys[:2], args))

    async def end(self, stream_id: str) -> None:
        with self._unavailable("end"):
            await self._eval(
                self._end, self.keys(stream_id), [_ms(self.ttl), 2 * self.max_events + 2]
            )

    async def info(self, stream_id: str) -> StreamInfo | None:
        meta = self.keys(stream_id)[0]
        with self._unavailable("info"):
            created, principal, last, ended = await self._client.hmget(
                meta, ["created", "principal", "last", "ended"]
            )
        if created is None:
            return None
        return StreamInfo(
            None if principal is None else _text(principal),
            int(last or 0),
            ended is not None,
        )

    async def read(self, stream_id: str, after: float, *, wait: float) -> Batch:
        keys = self.keys(stream_id)
        start = _start(after)
        with self._unavailable("read"):
            snap = await self._take(keys, start)
            if snap.gone or snap.records or snap.ended or snap.capped:
                return snap.batch()
            if not snap.lease:
                return Batch((), ended=False, lost=True)
            if not await self._block(keys.events, snap.tip, wait):
                return Batch((), ended=False)
            return (await self._take(keys, start)).batch()

    async def beat(self, stream_id: str, lease: float) -> Pulse:
        keys = self.keys(stream_id)
        with self._unavailable("beat"):
            stopped, readers = await self._beats.call(keys, [_ms(lease), _ms(lease + self.ttl)])
        return Pulse(stopped=bool(int(stopped)), readers=int(readers))

    async def stop(self, stream_id: str) -> None:
        with self._unavailable("stop"):
            await self._eval(self._stop, self.keys(stream_id)[:1], [])

    async def attach(self, stream_id: str) -> None:
        keys = self.keys(stream_id)
        token = secrets.token_hex(8)
        with self._unavailable("attach"):
            held = await self._eval(
                self._readers_script, (keys.meta, keys.readers), [_ms(self.liveness), token]
            )
        if held:
            self._readers.setdefault(stream_id, []).append(token)
            self._refresh_soon()

    async def detach(self, stream_id: str) -> None:
        tokens = self._readers.get(stream_id)
        if not tokens:
            return
        token = tokens.pop()
        if not tokens:
            del self._readers[stream_id]
        with self._unavailable("detach"):
            await self._client.zrem(self.keys(stream_id).readers, token)

    async def acquire(self, principal: str, limit: int) -> bool:
        token = secrets.token_hex(8)
        with self._unavailable("acquire"):
            taken = await self._eval(
                self._acquire, [self.slots_key(principal)], [limit, token, _ms(self.liveness)]
            )
        if taken:
            self._slots.setdefault(principal, []).append(token)
            self._refresh_soon()
        return bool(taken)

    async def release(self, principal: str) -> None:
        tokens = self._slots.get(principal)
        if not tokens:
            return
        token = tokens.pop()
        if not tokens:
            del self._slots[principal]
        with self._unavailable("release"):
            await self._client.zrem(self.slots_key(principal), token)

    def chat_key(self, chat: str) -> str:
        """The key of chat ``chat``'s latest stream id (its own hash tag)."""
        return f"{self.prefix}:chat:{{{_tag(chat)}}}"

    async def set_chat(self, chat: str, stream_id: str) -> None:
        # Kept as long as its stream could be: the stream's own keys expire by then.
        seconds = math.ceil(self.ttl + self.liveness + 60)
        with self._unavailable("set_chat"):
            await self._client.set(self.chat_key(chat), stream_id, ex=seconds)

    async def chat_stream(self, chat: str) -> str | None:
        with self._unavailable("chat_stream"):
            value = await self._client.get(self.chat_key(chat))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def aclose(self) -> None:
        """Stop refreshing, give back what this instance still holds (best effort), and
        close the client if the store made it."""
        task, self._refresher = self._refresher, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *self._errors):
                await task
        readers, slots = self._readers, self._slots
        self._readers, self._slots = {}, {}
        with contextlib.suppress(*self._errors):
            for stream_id, tokens in readers.items():
                await self._client.zrem(self.keys(stream_id).readers, *tokens)
            for principal, tokens in slots.items():
                await self._client.zrem(self.slots_key(principal), *tokens)
        if self._owned:
            with contextlib.suppress(*self._errors):
                await self._client.aclose()

    # Internals ---------------------------------------------------------------------------

    async def _take(self, keys: _Keys, start: str) -> _Snapshot:
        reply = await self._eval(
            self._snapshot, (keys.meta, keys.events, keys.lease), [start, PAGE]
        )
        if not int(reply[0]):
            return _Snapshot(gone=True)
        _, ended, capped, lease, tip, entries = reply
        tip = _text(tip)
        records: list[Record] = []
        for _entry_id, fields in entries:
            if _text(fields[0]) == "data":
                records.append(Record.from_json(fields[1]))
        complete = not entries or _text(entries[-1][0]) == tip
        return _Snapshot(
            gone=False,
            ended=bool(int(ended)),
            capped=bool(int(capped)),
            lease=bool(int(lease)),
            tip=tip,
            records=tuple(records),
            complete=complete,
        )

    async def _block(self, events: str, tip: str, wait: float) -> bool:
        """Wait up to ``wait`` seconds for an entry after ``tip``; whether one came."""
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            block = _ms(min(remaining, self._slice))
            got = await self._client.xread({events: tip}, count=1, block=block)
            if got:
                return True

    def _refresh_soon(self) -> None:
        task = self._refresher
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        """Keep this instance's readers and slots alive while it holds any."""
        period = self.liveness / 3
        live = _ms(self.liveness)
        while self._readers or self._slots:
            await asyncio.sleep(period)
            for stream_id, tokens in list(self._readers.items()):
                keys = self.keys(stream_id)
                with contextlib.suppress(*self._errors):
                    await self._eval(
                        self._readers_script, (keys.meta, keys.readers), [live, *tokens]
                    )
            for principal, tokens in list(self._slots.items()):
                with contextlib.suppress(*self._errors):
                    await self._eval(
                        self._slots_script, [self.slots_key(principal)], [live, *tokens]
                    )


def _socket_timeout(client: Any) -> float | None:
    """The client's socket timeout, where redis-py keeps it (``None``: none or unknown)."""
    for holder in (
        getattr(client, "connection_pool", None),
        getattr(client, "nodes_manager", None),
    ):
        kwargs = getattr(holder, "connection_kwargs", None)
        if isinstance(kwargs, dict):
            timeout = kwargs.get("socket_timeout")
            return float(timeout) if isinstance(timeout, (int, float)) else None
    return None
