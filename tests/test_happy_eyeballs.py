"""Happy eyeballs (RFC 8305) in the native transport, on loopback addresses only.

A host whose first address drops connection attempts (a dual-stack upstream with a
broken IPv6 route, a firewall that drops rather than refuses) must cost the relay
the 250 ms attempt delay, not the connect timeout. Such an address is made on
loopback: a listener on 127.0.0.2 whose accept queue is full (``listen(0)`` and one
connection nobody accepts), so that Linux drops every further SYN; the fixture
checks that it really does (and skips where it does not). The host name's
resolution is replaced, through the pool's DNS cache or its resolver, by the
addresses each test needs.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from streamrelay.upstream.http1 import request_head
from streamrelay.upstream.native import Address, Origin, Pool, default_ssl_context
from wire import RELAY_KEY, chat_body, closed_port, fetch, mounts, relay_host, self_signed_cert

QUIET = StreamSettings(heartbeat=None)
HOST = "dual-stack.test"  # never resolved: each test says what it resolves to


class Blackhole:
    """An address on loopback that drops connection attempts (a full accept queue)."""

    def __init__(self, host: str) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.bind((host, 0))
        except OSError as exc:  # only 127.0.0.1 is configured (macOS)
            self.listener.close()
            pytest.skip(f"cannot bind {host}: {exc}")
        self.listener.listen(0)
        self.address: tuple[str, int] = self.listener.getsockname()
        # The accept queue holds one connection (backlog 0): this one, never accepted.
        self.filler = socket.create_connection(self.address, timeout=2)
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.2)
        try:
            probe.connect(self.address)
        except TimeoutError:
            pass  # dropped, as wanted
        else:
            self.close()
            pytest.skip("this system does not drop SYNs to a full accept queue")
        finally:
            probe.close()

    def close(self) -> None:
        self.filler.close()
        self.listener.close()


@pytest.fixture
def blackhole() -> Iterator[Address]:
    hole = Blackhole("127.0.0.2")
    yield socket.AF_INET, hole.address
    hole.close()


@pytest.fixture
def blackhole2() -> Iterator[Address]:
    hole = Blackhole("127.0.0.3")
    yield socket.AF_INET, hole.address
    hole.close()


def resolve_to(monkeypatch: pytest.MonkeyPatch, addresses: list[Address]) -> None:
    """Every pool (the relay's, in its server thread, too) resolves any host to ``addresses``."""

    async def resolve(self: Pool, origin: Origin) -> list[Address]:
        return addresses

    monkeypatch.setattr(Pool, "_resolve", resolve)


def serve(url: str, **options: Any) -> ServerThread:
    relay = StreamRelay(Upstream(url, api_key=RELAY_KEY, **options), stream=QUIET)
    return ServerThread(relay_host(mounts({"/ai": relay}), [relay]))


# Through a relay (uvicorn, uvloop) ------------------------------------------------------------


def test_an_address_that_drops_connection_attempts_costs_the_attempt_delay_not_the_timeout(
    client: httpx.Client, upstream: str, blackhole: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried one after another, the first address would hold the request for the whole
    connect timeout (5 s here) and then fail it; raced, the second connects 250 ms
    after the first was tried."""
    port = urlsplit(upstream).port
    resolve_to(monkeypatch, [blackhole, (socket.AF_INET, ("127.0.0.1", port))])
    with serve(f"http://{HOST}:{port}/v1", connect_timeout=5) as server:
        started = time.monotonic()
        out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
        elapsed = time.monotonic() - started
    assert (out.status, out.terminal) == (200, "done") and out.content()
    assert 0.25 <= elapsed < 1.0, elapsed  # the first attempt's delay, then the second won


def test_when_every_address_drops_connection_attempts_the_connect_timeout_applies(
    client: httpx.Client, blackhole: Address, blackhole2: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve_to(monkeypatch, [blackhole, blackhole2])
    with serve(f"http://{HOST}:{blackhole[1][1]}/v1", connect_timeout=0.8) as server:
        started = time.monotonic()
        out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
        elapsed = time.monotonic() - started
    assert out.status == 504
    error = json.loads(out.raw)["error"]
    assert error["code"] == "upstream_connect_timeout"
    assert 0.8 <= elapsed < 2.5, elapsed


# The race itself, on a pool (asyncio) ------------------------------------------------------


class Attempts:
    """Records each connection attempt (``loop.sock_connect``): its socket, its address
    and when it started."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.started = loop.time()
        self.made: list[tuple[socket.socket, tuple[Any, ...], float]] = []
        connect = loop.sock_connect

        async def sock_connect(sock: socket.socket, address: Any) -> None:
            self.made.append((sock, address, loop.time() - self.started))
            await connect(sock, address)

        loop.sock_connect = sock_connect  # type: ignore[method-assign]

    @property
    def addresses(self) -> list[tuple[Any, ...]]:
        return [address for _, address, _ in self.made]

    def closed(self) -> list[bool]:
        return [sock.fileno() == -1 for sock, _, _ in self.made]


def pool_with(addresses: list[Address], port: int, **options: Any) -> tuple[Pool, Origin]:
    """A pool whose DNS cache already holds ``addresses`` for the origin (so the cache
    is what the connection uses, as it is for every connection but the first)."""
    options.setdefault("connect_timeout", 5)
    options.setdefault("ssl_context", default_ssl_context)
    pool = Pool(keepalive_expiry=60.0, **options)
    origin = Origin("http", HOST, port)
    pool._addresses[(HOST, port)] = (math.inf, addresses)
    return pool, origin


def post(origin: Origin) -> bytes:
    body = json.dumps(chat_body()).encode()
    headers = [("content-type", "application/json"), ("authorization", f"Bearer {RELAY_KEY}")]
    return request_head("POST", "/v1/chat/completions", origin.authority, headers, len(body)) + body


def test_the_race_uses_the_cached_addresses_and_closes_the_attempt_that_lost(
    upstream: str, blackhole: Address
) -> None:
    port = urlsplit(upstream).port
    assert port is not None
    working = ("127.0.0.1", port)

    async def main() -> tuple[Attempts, float, list[bool]]:
        pool, origin = pool_with([blackhole, (socket.AF_INET, working)], port)
        attempts = Attempts(asyncio.get_running_loop())
        connection = await pool.request(origin, post(origin))
        elapsed = asyncio.get_running_loop().time() - attempts.started
        assert connection.parser is not None and connection.parser.status == 200
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # as asyncio's own
        await asyncio.sleep(0.05)  # the cancelled attempt runs its cleanup
        closed = attempts.closed()
        await pool.aclose()
        return attempts, elapsed, closed

    attempts, elapsed, closed = asyncio.run(main())
    assert attempts.addresses == [blackhole[1], working]
    second_started = attempts.made[1][2]
    assert 0.24 <= second_started < 0.5, second_started  # the attempt delay, RFC 8305
    assert elapsed < 1.0, elapsed
    assert closed == [True, False]  # the loser's socket is closed; the winner's is in use


def test_a_refused_attempt_starts_the_next_at_once_and_all_refused_forgets_the_cache() -> None:
    refused: list[Address] = [(socket.AF_INET, ("127.0.0.1", closed_port())) for _ in range(3)]

    async def main() -> tuple[BaseException | None, float, list[bool], bool]:
        pool, origin = pool_with(refused, 9)
        attempts = Attempts(asyncio.get_running_loop())
        error = None
        try:
            await pool.request(origin, post(origin))
        except OSError as exc:
            error = exc
        elapsed = asyncio.get_running_loop().time() - attempts.started
        return error, elapsed, attempts.closed(), (HOST, 9) in pool._addresses

    error, elapsed, closed, cached = asyncio.run(main())
    assert isinstance(error, ConnectionRefusedError)
    assert elapsed < 0.2, elapsed  # no attempt waited out the delay: each failed at once
    assert closed == [True, True, True]
    assert not cached  # resolved again next time


def test_the_address_families_alternate(upstream: str) -> None:
    """Two IPv6 addresses first, then IPv4: the second attempt is the IPv4 one."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = urlsplit(upstream).port
    assert port is not None
    v6 = [(socket.AF_INET6, ("::1", closed_port(), 0, 0)) for _ in range(2)]
    v4 = (socket.AF_INET, ("127.0.0.1", port))

    async def main() -> list[tuple[Any, ...]]:
        pool, origin = pool_with([*v6, v4], port)
        attempts = Attempts(asyncio.get_running_loop())
        connection = await pool.request(origin, post(origin))
        connection.close()
        await pool.aclose()
        return attempts.addresses

    assert asyncio.run(main()) == [v6[0][1], v4[1]]


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    certfile, keyfile = self_signed_cert(tmp_path_factory.mktemp("tls"))
    with ServerThread(
        Simulator(delay=0.0), ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)
    ) as server:
        yield server.port, certfile


def test_a_tls_failure_is_not_tried_at_the_other_addresses(
    tls_upstream: tuple[int, Path],
) -> None:
    """TLS follows the race, on the winner only: the certificate is the same everywhere."""
    port, _ = tls_upstream
    address = (socket.AF_INET, ("127.0.0.1", port))

    async def main() -> tuple[BaseException | None, list[tuple[Any, ...]], bool]:
        pool, _ = pool_with([address, address], port)
        origin = Origin("https", HOST, port)
        attempts = Attempts(asyncio.get_running_loop())
        error = None
        try:
            await pool.request(origin, post(origin))
        except ssl.SSLError as exc:
            error = exc
        await asyncio.sleep(0.25)  # the delay passes: no second attempt starts
        return error, attempts.addresses, (HOST, port) in pool._addresses

    error, addresses, cached = asyncio.run(main())
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert addresses == [address[1]]
    assert cached  # the addresses were fine


def test_tls_on_the_winning_connection(tls_upstream: tuple[int, Path], blackhole: Address) -> None:
    """The TLS handshake runs on the socket the race connected, with the origin's name."""
    port, certfile = tls_upstream

    async def main() -> int:
        context = ssl.create_default_context(cafile=str(certfile))
        context.check_hostname = False  # the certificate names 127.0.0.1, not HOST
        pool, _ = pool_with(
            [blackhole, (socket.AF_INET, ("127.0.0.1", port))], port, ssl_context=lambda: context
        )
        origin = Origin("https", HOST, port)
        connection = await pool.request(origin, post(origin))
        assert connection.parser is not None
        status = connection.parser.status
        connection.close()
        await pool.aclose()
        return status

    assert asyncio.run(main()) == 200
