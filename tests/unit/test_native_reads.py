"""The native connection's reads without sockets: what ``read_nowait`` says in each
state, and that the engine's poll reads and ``async for`` reads agree.

The event loop's side is driven by calling the protocol's methods
(``data_received``, ``eof_received``) as the loop would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamrelay.errors import RemoteProtocolError
from streamrelay.sources import Source
from streamrelay.upstream.http1 import ResponseParser
from streamrelay.upstream.native import _HIGH_WATER, Connection, Origin, Pool

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Transport:
    """What the connection calls on its transport, recorded."""

    def __init__(self) -> None:
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def connection() -> tuple[Connection, Transport]:
    pool = Pool(connect_timeout=None, keepalive_expiry=5.0, ssl_context=lambda: None)  # type: ignore[arg-type, return-value]
    conn = Connection(pool, Origin("http", "upstream.test", 80))
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.send(b"POST / HTTP/1.1\r\n\r\n", ResponseParser())
    conn.data_received(HEAD)
    return conn, transport


async def test_read_nowait_in_every_state() -> None:
    conn, _ = connection()
    assert conn.read_nowait() is None  # nothing yet
    waiter = conn.readable()
    conn.data_received(chunk(b"one") + chunk(b"two"))
    assert waiter.done()
    conn.data_received(chunk(b"three"))
    assert conn.read_nowait() == b"onetwothree"  # what came since the last read, joined
    assert conn.read_nowait() is None
    conn.data_received(b"0\r\n\r\n")
    assert conn.read_nowait() == b""  # the end
    assert conn.read_nowait() == b""


async def test_read_nowait_raises_what_broke_the_response() -> None:
    conn, transport = connection()
    conn.data_received(chunk(b"one"))
    conn.data_received(b"zz\r\n")  # not a chunk size
    assert transport.closed
    assert conn.read_nowait() == b"one"  # what came before the fault is read first
    with pytest.raises(RemoteProtocolError):
        conn.read_nowait()


async def test_an_upstream_closing_mid_body_is_an_error_not_an_end() -> None:
    conn, _ = connection()
    conn.data_received(chunk(b"one"))
    conn.connection_lost(None)
    assert conn.read_nowait() == b"one"
    with pytest.raises(ConnectionResetError):
        conn.read_nowait()


async def test_a_read_resumes_a_socket_paused_for_a_reader_behind() -> None:
    conn, transport = connection()
    conn.data_received(chunk(b"x" * (_HIGH_WATER + 1)))
    assert transport.paused
    assert len(conn.read_nowait() or b"") == _HIGH_WATER + 1
    assert not transport.paused


async def test_the_engine_polls_the_native_connection_and_reads_the_same_as_async_for() -> None:
    parts = [chunk(b"a"), chunk(b"bc") + chunk(b"d"), b"0\r\n\r\n"]

    async def feed(conn: Connection) -> None:
        for part in parts:
            await asyncio.sleep(0.001)
            conn.data_received(part)

    polled, _ = connection()
    source = Source(polled, "sse")
    assert source.poll is polled
    feeding = asyncio.create_task(feed(polled))
    by_poll: list[bytes] = []
    while (data := polled.read_nowait()) != b"":
        if data is None:
            await polled.readable()
        else:
            by_poll.append(data)
    await feeding

    iterated, _ = connection()
    feeding = asyncio.create_task(feed(iterated))
    by_iteration = [data async for data in iterated]
    await feeding
    assert b"".join(by_poll) == b"".join(by_iteration) == b"abcd"


async def test_a_source_that_cannot_be_polled_is_iterated() -> None:
    async def items() -> Any:
        yield b"x"

    assert Source(items(), "sse").poll is None


async def test_items_wrapped_after_the_source_was_made_are_what_the_engine_reads() -> None:
    """The key redaction wraps ``source.items`` after the fact: polling the connection
    underneath would send the unredacted bytes."""
    conn, _ = connection()
    source = Source(conn, "sse")

    async def redacted() -> Any:
        async for data in conn:
            yield data.replace(b"sk-secret", b"[redacted]")

    source.items = redacted()
    assert source.poll is None
