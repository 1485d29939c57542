"""The native upstream transport: HTTP/1.1 over asyncio protocols, with a keep-alive pool.

Relaying a stream needs little of an HTTP client: one POST, a streamed
response, a pool, TLS, proxies. Doing just that on an ``asyncio.Protocol`` stays
close to a plain socket's cost (``docs/performance.md``: 15 µs per token and
9 KiB per stream less than aiohttp): each read is parsed in ``data_received``
by the sans-I/O :mod:`.http1` parser and handed to the reader with one future,
and an open connection costs about 1 KiB.

What it does:

* keep-alive: a connection goes back to the pool only when its response was
  read to the end (a stream released after ``[DONE]`` is drained first, briefly);
  one whose peer closed is dropped at once (``connection_lost``);
* a request is never sent twice (a POST is a paid generation; RFC 9112 §9.3.1):
  stale connections are avoided instead, by a keep-alive expiry below the usual
  upstream idle timeouts and a liveness check before reuse;
* TLS with the system's certificates plus certifi's, or your ``ssl.SSLContext``;
* proxies: plain-http requests in absolute form, https through ``CONNECT``;
* backpressure: reading pauses while 64 KiB of body wait for the reader;
* a connect timeout covering DNS, TCP, the proxy tunnel and the TLS handshake;
* resolved addresses cached for a minute, and connected to by happy eyeballs
  (RFC 8305): the families alternate, each attempt gets 250 ms before the next
  starts beside it, the first connection wins, so an address that drops
  connection attempts (a broken IPv6 route) costs 250 ms, not the timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import ssl
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from ..errors import ProtocolError, RemoteProtocolError, UpstreamStatusError, UpstreamUnavailable
from ..sources import Source, passthrough_headers, read_bounded
from .failures import connect_timeout, dns_error, host, refusal, unreachable
from .http1 import ResponseParser, request_head

__all__ = [
    "ConnectTimeout",
    "Connection",
    "Origin",
    "Pool",
    "ProxyRefused",
    "ReusedConnectionLost",
    "default_ssl_context",
    "open_native",
]

_HIGH_WATER = 64 * 1024
"""Body bytes buffered for a reader that is behind before the socket stops being read."""
_DRAIN_TIMEOUT = 5.0
"""How long a released stream may take to finish (``[DONE]`` to the last chunk) and be reused."""
_DRAIN_LIMIT = 64 * 1024
_MAX_IDLE_PER_ORIGIN = 256
_DNS_TTL = 60.0
_HAPPY_EYEBALLS_DELAY = 0.25
"""RFC 8305's connection attempt delay (asyncio's and aiohttp's ``happy_eyeballs_delay``):
how long an attempt runs alone before the next address is tried beside it."""

Address = tuple[int, tuple[Any, ...]]
"""A resolved address: its family and the ``sockaddr`` to connect to."""


class Origin(NamedTuple):
    """Where a connection goes: ``scheme`` is ``"http"`` or ``"https"``."""

    scheme: str
    host: str
    port: int

    @property
    def host_port(self) -> str:
        """``host:port`` with the port always written, as a ``CONNECT`` target must be."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def authority(self) -> str:
        """``host[:port]`` as a ``Host`` header writes it (no default port)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class ConnectTimeout(TimeoutError):
    """Connecting (DNS, TCP, proxy tunnel, TLS) took longer than the connect timeout."""


class ReusedConnectionLost(ConnectionResetError):
    """A pooled connection closed before answering a request written to it.

    The request is not sent again: the upstream may have received it.
    """

    def __init__(self) -> None:
        super().__init__(
            "the upstream closed a reused keep-alive connection before answering; the "
            "request was not sent again, as the upstream may have received it"
        )


class ProxyRefused(OSError):
    """The proxy answered ``CONNECT`` with something other than 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the proxy refused the tunnel with status {status}")
        self.status = status


def _readable(transport: asyncio.Transport) -> bool:
    """Whether an idle connection's socket has something to read (an EOF, most likely)."""
    sock = transport.get_extra_info("socket")
    if sock is None:  # pragma: no cover - every socket transport has one
        return False
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return True
    return bool(readable)


def default_ssl_context() -> ssl.SSLContext:
    """Verifying TLS with the system's CA store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` too)
    and certifi's bundle, so that slim containers without CA certificates work."""
    context = ssl.create_default_context()
    try:
        import certifi  # httpx's dependency, so normally present
    except ImportError:  # pragma: no cover
        return context
    context.load_verify_locations(certifi.where())
    return context


class Connection(asyncio.Protocol):
    """One upstream connection: the protocol the event loop calls, and the reader's side.

    The response in flight is parsed as bytes arrive; body bytes queue in
    ``chunks`` until the reader's next iteration takes them.
    """

    __slots__ = (
        "_buffered",
        "_drain_timer",
        "_loop",
        "_paused",
        "_pool",
        "_received",
        "_waiter",
        "chunks",
        "closed",
        "error",
        "idle_since",
        "origin",
        "parser",
        "reused",
        "transport",
    )

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None  # the response in flight, if any
        self.chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._received = False  # any byte of the current response
        self._waiter: asyncio.Future[None] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0

    # asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:  # between responses a server has nothing to say
            self.close()
            return
        self._received = True
        try:
            body = parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if self._drain_timer is not None:  # released: the rest is read and dropped
            self._buffered += len(body)
            if parser.error is not None:
                self.close()
            elif parser.finished:
                self._drain_timer.cancel()
                self._drain_timer = None
                self._pool.put(self)
            elif self._buffered > _DRAIN_LIMIT:
                self.close()
            return
        if body:
            self.chunks.append(body)
            self._buffered += len(body)
            if self._buffered > _HIGH_WATER and not self._paused:
                self._paused = True
                assert self.transport is not None
                self.transport.pause_reading()
        if parser.error is not None:  # invalid framing after this body: read it, then fail
            self._fail(parser.error)
        else:
            self._wake()

    def eof_received(self) -> bool:
        parser = self.parser
        if parser is not None:
            try:
                parser.feed_eof()
            except ProtocolError as exc:
                self.error = exc
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        parser = self.parser
        if self.error is None and parser is not None and not parser.finished:
            self.error = exc or ConnectionResetError("the upstream closed the connection")
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self._pool.forget(self)
        self._wake()

    # the client's side ---------------------------------------------------------------

    def send(self, data: bytes, parser: ResponseParser) -> None:
        """Write a request whose response ``parser`` will parse."""
        assert self.transport is not None
        self.parser = parser
        self._received = False
        self.error = None
        self.transport.write(data)

    async def head(self) -> ResponseParser:
        """Wait for the response head; a closed connection raises what closed it."""
        parser = self.parser
        assert parser is not None
        while not parser.head_complete:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise ConnectionResetError("the upstream closed the connection")
            await self._wait()
        return parser

    @property
    def stale(self) -> bool:
        """A reused connection that failed before any byte of the answer (never retried:
        see :meth:`Pool.request`)."""
        return self.reused and not self._received

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> bytes:
        """The body bytes received since the last read, joined; the end stops iteration."""
        while True:
            data = self.read_nowait()
            if data is None:
                await self._wait()
            elif data:
                return data
            else:
                raise StopAsyncIteration

    def read_nowait(self) -> bytes | None:
        """The body bytes received since the last read, joined; ``b""`` at the body's
        end, ``None`` when nothing came yet (then await :meth:`readable`), or the
        error that broke the response, raised.

        The engine's per-token path reads this way (:class:`~streamrelay.sources.Source`'s
        ``poll``): no coroutine per read, only the future it waits on.
        """
        chunks = self.chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._discard_unread()
            return data
        if self.error is not None:
            raise self.error
        parser = self.parser
        if parser is None or parser.finished:
            return b""
        if self.closed:  # closed here (the pool shut down) before the end
            raise ConnectionResetError("the upstream connection was closed")
        return None

    def readable(self) -> asyncio.Future[None]:
        """A future done when :meth:`read_nowait` has something new to say."""
        return self._wait()

    async def release(self, complete: bool) -> None:
        """Done with the response: pool the connection if the response is over (or
        ``complete`` and nearly over), else close it, which stops the generation."""
        parser = self.parser
        if parser is None or self.closed or self.error is not None:
            self.close()
        elif parser.finished:
            self._pool.put(self)
        elif complete and parser.keep_alive:
            # [DONE] came before the body's last chunk: read that, then pool.
            self._discard_unread()
            self._drain_timer = self._loop.call_later(_DRAIN_TIMEOUT, self.close)
        else:
            self.close()

    def reset(self) -> None:
        """Forget the finished response, including bytes nobody read (the relay stops
        reading at the answer's end): the next request must see none of them."""
        self.parser = None
        self._discard_unread()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self._pool.forget(self)
        self._wake()

    # internals ------------------------------------------------------------------------

    def _discard_unread(self) -> None:
        """Empty the body queue (it was read, or nobody will) and read the socket again."""
        self.chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            assert self.transport is not None
            self.transport.resume_reading()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.close()

    def _wait(self) -> asyncio.Future[None]:
        self._waiter = waiter = self._loop.create_future()
        return waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Pool:
    """Keep-alive connections to one upstream, for one event loop.

    ``proxy`` is the proxy's origin (``None`` for a direct connection) and
    ``proxy_headers`` go on its ``CONNECT`` (``Proxy-Authorization``).
    """

    def __init__(
        self,
        *,
        connect_timeout: float | None,
        keepalive_expiry: float,
        ssl_context: Callable[[], ssl.SSLContext],
        proxy: Origin | None = None,
        proxy_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._proxy = proxy
        self._proxy_headers = proxy_headers or []
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._addresses: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self.closed = False

    async def request(self, origin: Origin, data: bytes) -> Connection:
        """Send one request (head and body in ``data``) to ``origin``; return its
        connection once the response head is in (``connection.parser``).

        Never sent twice: once the bytes are written the upstream may have received
        them, and a POST to an LLM is a paid generation (RFC 9112 §9.3.1: a client
        must not retry a non-idempotent request on its own). A reused connection
        that fails before answering raises :class:`ReusedConnectionLost`; stale
        connections are avoided instead (:meth:`_checkout`).
        """
        connection = self._checkout(origin)
        if connection is None:
            connection = await self._connect(origin)
        try:
            connection.send(data, ResponseParser())
            await connection.head()
        except Exception as exc:
            connection.close()
            if connection.stale:
                raise ReusedConnectionLost() from exc
            raise
        except BaseException:  # cancelled: the upstream may be generating already
            connection.close()
            raise
        return connection

    def put(self, connection: Connection) -> None:
        """Pool a connection whose response was read to the end."""
        parser = connection.parser
        if self.closed or parser is None or not parser.keep_alive or connection.closed:
            connection.close()
            return
        connection.reset()
        connection.idle_since = asyncio.get_running_loop().time()
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            connection.close()
        else:
            idle.append(connection)

    def forget(self, connection: Connection) -> None:
        """Called when a connection closes."""
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def aclose(self) -> None:
        """Close every connection, in use or idle."""
        self.closed = True
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    def _checkout(self, origin: Origin) -> Connection | None:
        """An idle connection to ``origin`` that is still alive, if there is one.

        Alive means: not closed, younger than ``keepalive_expiry`` (kept below the
        upstream's own idle timeout, so the upstream does not close it as we send),
        and with nothing to read: an idle socket that is readable holds an EOF or
        bytes nobody asked for, which the event loop may not have delivered yet.
        """
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely closed
            transport = connection.transport
            if (
                connection.closed
                or transport is None
                or transport.is_closing()
                or now - connection.idle_since > self._keepalive_expiry
                or _readable(transport)
            ):
                connection.close()
                continue
            connection.reused = True
            return connection
        return None

    async def _resolve(self, origin: Origin) -> list[Address]:
        """The addresses of ``origin``'s host, cached for a minute: without a cache
        every new connection would wait for a DNS query (aiohttp caches too)."""
        key = (origin.host, origin.port)
        loop = asyncio.get_running_loop()
        cached = self._addresses.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        infos = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise socket.gaierror(f"no address for {origin.host!r}")
        addresses: list[Address] = [(family, address) for family, _, _, _, address in infos]
        self._addresses[key] = (loop.time() + _DNS_TTL, addresses)
        return addresses

    async def _connect(self, origin: Origin) -> Connection:
        if self.closed:
            raise ConnectionAbortedError("the upstream connection pool is closed")
        connection = Connection(self, origin)
        self._open.add(connection)
        try:
            if self._connect_timeout is None:
                await self._open_connection(connection)
            else:
                try:
                    await asyncio.wait_for(self._open_connection(connection), self._connect_timeout)
                except asyncio.TimeoutError as exc:
                    raise ConnectTimeout(f"no connection within {self._connect_timeout}s") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    async def _open_connection(self, connection: Connection) -> None:
        loop = asyncio.get_running_loop()
        origin, proxy = connection.origin, self._proxy
        target = origin if proxy is None else proxy
        tls = target.scheme == "https"
        addresses = await self._resolve(target)
        try:
            sock = await _happy_eyeballs(addresses, _HAPPY_EYEBALLS_DELAY)
        except OSError:
            self._addresses.pop((target.host, target.port), None)  # resolve again
            raise
        # TLS only on the connection that won: a failed handshake is not tried at the
        # other addresses (the certificate is the same at every one). From here the
        # event loop owns the socket, and closes it if this fails. (uvloop may call
        # connection_made only after this returns.)
        connection.transport, _ = await loop.create_connection(
            lambda: connection,
            sock=sock,
            ssl=self._ssl_context() if tls else None,
            server_hostname=target.host if tls else None,
        )
        if proxy is None or origin.scheme != "https":
            return
        # An https upstream through a proxy: a CONNECT tunnel, then TLS inside it.
        head = request_head(
            "CONNECT", origin.host_port, origin.host_port, self._proxy_headers, None
        )
        connection.send(head, ResponseParser(connect=True))
        parser = await connection.head()
        if not 200 <= parser.status < 300:
            raise ProxyRefused(parser.status)
        connection.parser = None
        assert connection.transport is not None
        transport = await loop.start_tls(
            connection.transport, connection, self._ssl_context(), server_hostname=origin.host
        )
        connection.transport = cast(asyncio.Transport, transport)


def _interleave(addresses: list[Address]) -> list[Address]:
    """``addresses`` in the order happy eyeballs tries them (RFC 8305 4): the families
    alternate, starting with the resolver's first, each keeping the resolver's order.

    >>> _interleave([(10, ("::1",)), (10, ("::2",)), (2, ("10.0.0.1",)), (2, ("10.0.0.2",))])
    [(10, ('::1',)), (2, ('10.0.0.1',)), (10, ('::2',)), (2, ('10.0.0.2',))]
    """
    families: dict[int, list[Address]] = {}
    for address in addresses:
        families.setdefault(address[0], []).append(address)
    rounds = itertools.zip_longest(*families.values())
    return [address for round_ in rounds for address in round_ if address is not None]


async def _happy_eyeballs(addresses: list[Address], delay: float) -> socket.socket:
    """A socket connected to the first of ``addresses`` to answer (RFC 8305).

    An attempt runs alone for ``delay`` seconds, or until it fails, before the next
    one starts beside it; the first connection wins and the attempts still running
    are cancelled (a socket that connected anyway is closed). Only TCP is raced:
    TLS and a proxy's tunnel follow on the winner. With every attempt failed,
    raises the first one's error (the preferred address's); the caller's connect
    timeout bounds the whole race.
    """
    loop = asyncio.get_running_loop()
    waiting = _interleave(addresses)
    waiting.reverse()  # popped from the end
    running: set[asyncio.Task[socket.socket]] = set()
    errors: list[BaseException] = []
    try:
        while waiting or running:
            if waiting:
                running.add(loop.create_task(_attempt(*waiting.pop())))
            done, running = await asyncio.wait(
                running, timeout=delay if waiting else None, return_when=asyncio.FIRST_COMPLETED
            )
            winner: socket.socket | None = None
            for task in done:
                error = task.exception()
                if error is not None:
                    errors.append(error)
                elif winner is None:
                    winner = task.result()
                else:  # two connected in the same turn of the loop
                    task.result().close()
            if winner is not None:
                return winner
        error = errors[0]
        errors.clear()  # no reference cycle through the tracebacks
        raise error
    finally:
        for task in running:  # the race was won, or the connect timeout cancelled it
            task.cancel()
            task.add_done_callback(_close_connected)


async def _attempt(family: int, address: tuple[Any, ...]) -> socket.socket:
    """One connection attempt of :func:`_happy_eyeballs`."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setblocking(False)
        # As on the event loop's own connections (not left to it: asyncio sets it only
        # on sockets whose proto is TCP, uvloop on all).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


def _close_connected(task: asyncio.Task[socket.socket]) -> None:
    """Close the socket of a cancelled attempt that connected before it saw the cancel."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def open_native(
    pool: Pool, origin: Origin, target: str, url: str, headers: dict[str, str], body: bytes
) -> Source:
    """POST ``body`` to ``target`` on ``origin`` through ``pool``; the response as a
    :class:`Source`, or the failure (``url`` names the upstream in error messages)."""
    # A LocalProtocolError here is not the upstream's: configured headers are checked
    # when the Upstream is built and forwarded ones by Upstream.open (a 400), so what
    # is left is a request target the application built; it propagates as it is.
    head = request_head("POST", target, origin.authority, headers.items(), len(body))
    try:
        connection = await pool.request(origin, head + body)
    except socket.gaierror as exc:
        raise dns_error(url) from exc
    except ConnectTimeout as exc:
        raise connect_timeout(url) from exc
    except ssl.SSLError as exc:
        raise UpstreamUnavailable(
            f"the TLS handshake with the upstream at {host(url)!r} failed: "
            f"{getattr(exc, 'reason', None) or type(exc).__name__}",
            code="upstream_tls_error",
        ) from exc
    except ReusedConnectionLost as exc:
        raise UpstreamUnavailable(
            f"the upstream at {host(url)!r} {exc}", code="upstream_connection_lost"
        ) from exc
    except ProxyRefused as exc:
        raise UpstreamUnavailable(
            f"the proxy refused to connect to {host(url)!r} (status {exc.status})",
            code="upstream_proxy_error",
        ) from exc
    except RemoteProtocolError as exc:
        raise UpstreamUnavailable(
            f"the upstream at {host(url)!r} answered with invalid HTTP: {exc}",
            code="upstream_invalid_response",
        ) from exc
    except OSError as exc:
        raise unreachable(url, exc) from exc
    parser = connection.parser
    assert parser is not None
    status = parser.status
    refused = refusal(status, parser.header("content-type"))
    if refused is not None:
        connection.close()
        raise refused
    if status >= 300:
        try:
            error_body = await read_bounded(connection)
        except (OSError, ProtocolError):
            error_body = b""
        except BaseException:  # cancelled: do not leave the connection open
            connection.close()
            raise
        await connection.release(parser.finished)
        raise UpstreamStatusError(status, passthrough_headers(parser.headers), error_body)
    parser.headers = []  # not needed while streaming: about 1 KiB per open stream
    return Source(connection, "sse", connection.release)
