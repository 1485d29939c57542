"""The native upstream transport (``transport="native"``, the default) against real servers.

Everything else in the suite runs on it too (it is the default); this module
checks what is its own: connections are reused only after a complete response
(a stream released at ``[DONE]`` is drained first), a disconnect closes rather
than pools, invalid HTTP is a clear 502, TLS verifies, and an https upstream is
reached through a ``CONNECT`` proxy with the proxy's credentials on the tunnel
only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamrelay import ConfigurationError, StreamRelay, StreamSettings, Upstream, relay_response
from streamrelay.testing import ServerThread, Simulator
from streamrelay.upstream.http1 import request_head
from streamrelay.upstream.native import Origin, Pool, default_ssl_context
from wire import RELAY_KEY, chat_body, fetch, mounts, relay_host, self_signed_cert

QUIET = StreamSettings(heartbeat=None)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def token_event(text: str) -> bytes:
    return (
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % text.encode()
    )


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """A raw asyncio HTTP server in a thread: ``handler`` answers each request on a
    connection; it counts connections and notices when the client closes one."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_client = 0
        self.answered = 0  # requests whose answer was written completely
        self.heads: list[bytes] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_client += 1
                    return
                self.heads.append(head)
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                await self.handler(reader, writer)
                self.answered += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_client += 1
        finally:
            writer.close()

    def __enter__(self) -> ScriptedServer:
        def run() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
                self.port = self._server.sockets[0].getsockname()[1]
                self._ready.set()
                async with self._server:
                    await self._server.serve_forever()

            try:
                asyncio.run(main())
            except asyncio.CancelledError:
                pass

        threading.Thread(target=run, daemon=True).start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._server is not None
        self._loop.call_soon_threadsafe(self._server.close)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def quiet_relay(url: str, **options: Any) -> StreamRelay:
    """A relay to ``url`` with the test key and no heartbeats; ``options`` go to its
    :class:`Upstream` (``transport``, ``ssl_context``)."""
    return StreamRelay(Upstream(url, api_key=RELAY_KEY, **options), stream=QUIET)


def serve_relay(relay: StreamRelay) -> ServerThread:
    return ServerThread(relay_host(mounts({"/ai": relay}), [relay]))


# Keep-alive --------------------------------------------------------------------------------


async def answer_with_late_terminator(
    reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """[DONE] in one write and the body's last chunk 50 ms later, as a real server may."""
    w.write(SSE_HEAD + chunk(token_event("hi")) + chunk(b"data: [DONE]\n\n"))
    await w.drain()
    await asyncio.sleep(0.05)
    w.write(b"0\r\n\r\n")
    await w.drain()


@pytest.mark.parametrize("fmt", ["text", "ndjson"])
def test_a_complete_stream_returns_its_connection_to_the_pool(
    client: httpx.Client, fmt: str
) -> None:
    with ScriptedServer(answer_with_late_terminator) as upstream:
        relay = quiet_relay(upstream.url)
        with serve_relay(relay) as server:
            for n in range(1, 4):
                out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt=fmt)
                assert (out.status, out.content(), out.terminal) == (200, "hi", "done")
                # The client has its answer before the upstream's last chunk; the relay
                # reads that chunk (loopback: within a millisecond) and pools the connection.
                assert wait_for(lambda n=n: upstream.answered == n)
                time.sleep(0.2)
            assert len(upstream.heads) == 3
            assert upstream.connections == 1  # all three on one kept-alive connection


async def answer_forever(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(SSE_HEAD + chunk(token_event("hi")))
    await w.drain()
    while True:  # a generation that would go on for minutes
        await asyncio.sleep(0.05)
        w.write(chunk(b": still generating\n\n"))
        await w.drain()


def test_a_client_disconnect_closes_the_connection_instead_of_pooling_it() -> None:
    with ScriptedServer(answer_forever) as upstream:
        relay = quiet_relay(upstream.url)
        with serve_relay(relay) as server:
            for attempt in (1, 2):
                with (
                    httpx.Client(timeout=10) as own,
                    own.stream(
                        "POST", server.url + "/ai/chat/completions?format=text", json=chat_body()
                    ) as response,
                ):
                    assert next(response.iter_bytes()) == b"hi"
                # the client has gone: the upstream must see its connection closed
                assert wait_for(lambda a=attempt: upstream.closed_by_client == a)
            assert upstream.connections == 2  # the closed one was not reused


# Invalid HTTP ------------------------------------------------------------------------------


def garbage(answer: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(answer)
        await w.drain()
        w.close()

    return handler


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
    ],
    ids=["not-http", "te-and-cl", "obs-fold"],
)
def test_an_invalid_response_head_is_a_clear_502(client: httpx.Client, answer: bytes) -> None:
    with ScriptedServer(garbage(answer)) as upstream:
        relay = quiet_relay(upstream.url)
        with serve_relay(relay) as server:
            out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
    assert out.status == 502
    assert json.loads(out.raw)["error"]["code"] == "upstream_invalid_response"


def test_invalid_chunk_framing_mid_stream_is_an_error_not_an_end(client: httpx.Client) -> None:
    answer = SSE_HEAD + chunk(token_event("hi")) + b"zz\r\n"
    with ScriptedServer(garbage(answer)) as upstream:
        relay = quiet_relay(upstream.url)
        with serve_relay(relay) as server:
            out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
    assert (out.status, out.content()) == (200, "hi")
    assert out.error is not None and out.error["code"] == "upstream_closed"


# TLS and proxies ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_upstream(cert: tuple[Path, Path]) -> Iterator[tuple[Simulator, str]]:
    """The simulator behind TLS (a certificate for IP 127.0.0.1)."""
    simulator = Simulator(delay=0.0)
    certfile, keyfile = cert
    with ServerThread(simulator, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as server:
        yield simulator, f"https://127.0.0.1:{server.port}/v1"


def trusting(cert: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert[0]))


@pytest.mark.real
@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
def test_tls_upstream_with_a_trusted_certificate(
    client: httpx.Client,
    tls_upstream: tuple[Simulator, str],
    cert: tuple[Path, Path],
    transport: str,
) -> None:
    simulator, url = tls_upstream
    relay = quiet_relay(url, transport=transport, ssl_context=trusting(cert))
    with serve_relay(relay) as server:
        out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
    assert (out.status, out.terminal) == (200, "done") and out.content()
    assert simulator.requests[-1].authorization == f"Bearer {RELAY_KEY}"


@pytest.mark.real
def test_tls_upstream_with_an_untrusted_certificate_is_a_502(
    client: httpx.Client, tls_upstream: tuple[Simulator, str]
) -> None:
    simulator, url = tls_upstream
    before = len(simulator.requests)
    relay = quiet_relay(url)  # the default trust store
    with serve_relay(relay) as server:
        out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
    assert out.status == 502
    error = json.loads(out.raw)["error"]
    assert error["code"] == "upstream_tls_error"
    assert "certificate" in error["message"].lower()
    assert len(simulator.requests) == before  # nothing, and so no key, went out


class TunnelProxy:
    """A forward proxy that only tunnels (``CONNECT``), in a thread; records each
    CONNECT's head and refuses with ``refuse`` when set."""

    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.connects: list[bytes] = []
        self.port = 0
        self._ready = threading.Event()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.connects.append(head)
        if self.refuse is not None:
            writer.write(b"HTTP/1.1 %d Refused\r\ncontent-length: 6\r\n\r\nnope\r\n" % self.refuse)
            await writer.drain()
            writer.close()
            return
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def __enter__(self) -> TunnelProxy:
        def run() -> None:
            async def main() -> None:
                server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
                self.port = server.sockets[0].getsockname()[1]
                self._ready.set()
                await server.serve_forever()

            asyncio.run(main())

        threading.Thread(target=run, daemon=True).start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # a daemon thread; its port is private to this test


def use_https_proxy(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    """``HTTPS_PROXY`` set before the relay reads the environment, and no ``NO_PROXY``."""
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.mark.real
def test_an_https_upstream_through_a_connect_proxy(
    client: httpx.Client,
    tls_upstream: tuple[Simulator, str],
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    simulator, url = tls_upstream
    with TunnelProxy() as proxy:
        use_https_proxy(monkeypatch, f"http://alice:s%40cret@127.0.0.1:{proxy.port}")
        relay = quiet_relay(url, ssl_context=trusting(cert))
        with serve_relay(relay) as server:
            for _ in range(2):
                out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
                assert (out.status, out.terminal) == (200, "done") and out.content()
                time.sleep(0.2)  # the response's last chunk reaches the relay; it pools
    authority = url.removeprefix("https://").removesuffix("/v1").encode()
    assert len(proxy.connects) == 1  # the second request reused the tunnel
    connect = proxy.connects[0]
    assert connect.startswith(b"CONNECT " + authority + b" HTTP/1.1\r\n")
    assert b"\r\nproxy-authorization: Basic " + base64.b64encode(b"alice:s@cret") in connect
    # inside the tunnel the upstream gets the key and never the proxy's credentials
    request = simulator.requests[-1]
    assert request.authorization == f"Bearer {RELAY_KEY}"
    assert "proxy-authorization" not in request.headers


@pytest.mark.real
def test_a_proxy_refusing_the_tunnel_is_a_clear_502(
    client: httpx.Client,
    tls_upstream: tuple[Simulator, str],
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = tls_upstream
    with TunnelProxy(refuse=407) as proxy:
        use_https_proxy(monkeypatch, f"http://127.0.0.1:{proxy.port}")
        relay = quiet_relay(url, ssl_context=trusting(cert))
        with serve_relay(relay) as server:
            out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="sse")
    assert out.status == 502
    error = json.loads(out.raw)["error"]
    assert error["code"] == "upstream_proxy_error" and "407" in error["message"]


# Configuration -------------------------------------------------------------------------------


def test_an_unknown_transport_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="transport must be"):
        Upstream("http://127.0.0.1:1/v1", api_key=RELAY_KEY, transport="curl")  # type: ignore[arg-type]


def test_a_line_break_in_an_upstream_header_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"invalid upstream headers: .* line break"):
        Upstream("http://127.0.0.1:1/v1", api_key=RELAY_KEY, headers={"x-a": "1\r\nx-b: 2"})


def test_the_port_is_free_after_the_relay_stops() -> None:
    """Closing the relay closes its pooled connections (the upstream sees them close)."""
    with ScriptedServer(answer_with_late_terminator) as upstream:
        relay = quiet_relay(upstream.url)
        with serve_relay(relay) as server, httpx.Client(timeout=10) as own:
            out = fetch(own, server.url + "/ai/chat/completions", chat_body(), fmt="text")
            assert out.content() == "hi"
            assert wait_for(lambda: upstream.answered == 1)
            assert upstream.closed_by_client == 0
        assert wait_for(lambda: upstream.closed_by_client == 1)


def test_a_host_name_is_resolved_and_each_address_tried(client: httpx.Client) -> None:
    """``localhost`` may resolve to ::1 first, where nothing listens: 127.0.0.1 is tried next."""
    with ScriptedServer(answer_with_late_terminator) as upstream:
        url = f"http://localhost:{upstream.port}/v1"
        relay = quiet_relay(url)
        with serve_relay(relay) as server:
            out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="text")
    assert (out.status, out.content()) == (200, "hi")
    assert upstream.heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nhost: localhost:%d\r\n" % upstream.port in upstream.heads[0]


# The pool itself, on a real socket -------------------------------------------------------


def pool_and_request(port: int) -> tuple[Pool, Origin, bytes]:
    """A pool for this event loop and a request for the upstream at ``port``."""
    origin = Origin("http", "127.0.0.1", port)
    data = request_head("POST", "/v1/chat/completions", origin.authority, [], 2) + b"{}"
    return (
        Pool(connect_timeout=5, keepalive_expiry=60.0, ssl_context=default_ssl_context),
        origin,
        data,
    )


def test_bytes_that_arrive_after_the_relay_stopped_reading_never_reach_the_next_request() -> None:
    """The relay stops reading at the answer's end; whatever else that response carries
    (here a stray event before its last chunk) must not be read by the next request."""
    stray = threading.Event()

    async def first_then_second(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not stray.is_set():
            w.write(SSE_HEAD + chunk(b"data: [DONE]\n\n"))
            await w.drain()
            await asyncio.sleep(0.2)  # the client has read [DONE] and stopped reading
            w.write(chunk(token_event("stray")) + b"0\r\n\r\n")
            stray.set()
        else:
            w.write(SSE_HEAD + chunk(token_event("second")) + b"0\r\n\r\n")
        await w.drain()

    async def main(port: int) -> tuple[bytes, bytes, int]:
        pool, origin, data = pool_and_request(port)
        try:
            first = await pool.request(origin, data)
            got_first = await anext(first)
            assert await asyncio.to_thread(stray.wait, 10)
            await asyncio.sleep(0.3)  # the rest arrives while nobody reads
            assert first.parser is not None and first.parser.finished and first.chunks
            await first.release(True)  # complete: back to the pool
            second = await pool.request(origin, data)
            reused = second is first
            body = b"".join([part async for part in second])
            await second.release(True)
            return got_first, body, int(reused)
        finally:
            await pool.aclose()

    with ScriptedServer(first_then_second) as upstream:
        got_first, body, reused = asyncio.run(main(upstream.port))
    assert got_first == b"data: [DONE]\n\n"
    assert reused == 1 and upstream.connections == 1
    assert body == token_event("second")  # nothing of the first response


def test_a_locally_closed_connection_is_not_a_clean_end() -> None:
    async def main(port: int) -> BaseException | None:
        pool, origin, data = pool_and_request(port)
        connection = await pool.request(origin, data)
        assert await anext(connection) == token_event("hi")
        await pool.aclose()  # the event loop is shutting down, say
        try:
            async for _ in connection:
                pass
        except ConnectionError as exc:
            return exc
        return None

    with ScriptedServer(answer_forever) as upstream:
        error = asyncio.run(main(upstream.port))
    assert isinstance(error, ConnectionResetError)


def test_a_connect_target_always_names_the_port() -> None:
    origin = Origin("https", "api.openai.com", 443)
    assert (origin.host_port, origin.authority) == ("api.openai.com:443", "api.openai.com")
    assert Origin("http", "::1", 8080).host_port == "[::1]:8080"


async def error_whose_body_stalls(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
        b'content-length: 100\r\n\r\n{"error":'
    )
    await w.drain()
    await reader.read()  # until the relay closes the connection
    raise ConnectionResetError


def test_an_error_body_that_stalls_past_the_first_byte_timeout_closes_the_connection(
    client: httpx.Client,
) -> None:
    with ScriptedServer(error_whose_body_stalls) as upstream:
        relay = StreamRelay(
            Upstream(upstream.url, api_key=RELAY_KEY),
            stream=StreamSettings(heartbeat=None, first_byte_timeout=0.5),
        )
        with serve_relay(relay) as server:
            out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
            assert out.status == 504
            assert wait_for(lambda: upstream.closed_by_client == 1)


class _KeepAliveThenClose:
    """A blocking upstream in a thread: answers one request with keep-alive, then, when
    told, closes the connection while the relay holds it idle in its pool."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 14\r\n\r\n"
        b"data: [DONE]\n\n"
    )

    def __init__(self) -> None:
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.close_now = threading.Event()
        self.closed = threading.Event()
        self.requests = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"{}"):
            data += conn.recv(65536)
        self.requests += 1
        conn.sendall(self.ANSWER)
        self.close_now.wait(10)
        conn.close()  # the upstream's idle timeout: FIN to the pooled connection
        self.closed.set()


def test_a_pooled_connection_the_upstream_closed_is_never_reused() -> None:
    """The liveness check: the upstream closes the idle connection and the event loop
    has not run since (no callback told the pool), yet the pool does not hand it out:
    its socket is readable (the FIN). Writing a request to it would lose the request,
    or make the upstream receive it just as it closes."""
    upstream = _KeepAliveThenClose()

    async def main() -> None:
        pool, origin, data = pool_and_request(upstream.port)
        connection = await pool.request(origin, data)
        async for _ in connection:
            pass
        await connection.release(True)
        assert pool._idle[origin] == [connection]  # pooled, alive
        upstream.close_now.set()
        assert upstream.closed.wait(5)
        time.sleep(0.2)  # noqa: ASYNC251 - blocking on purpose: the loop must not run
        assert not connection.closed  # no callback has run
        assert pool._checkout(origin) is None  # yet the check sees the FIN
        assert connection.closed
        await pool.aclose()

    asyncio.run(main())
    assert upstream.requests == 1


def test_an_idle_connection_past_the_keepalive_expiry_is_not_reused() -> None:
    upstream = _KeepAliveThenClose()

    async def main() -> None:
        origin = Origin("http", "127.0.0.1", upstream.port)
        data = request_head("POST", "/v1/chat/completions", origin.authority, [], 2) + b"{}"
        pool = Pool(connect_timeout=5, keepalive_expiry=0.1, ssl_context=default_ssl_context)
        connection = await pool.request(origin, data)
        async for _ in connection:
            pass
        await connection.release(True)
        await asyncio.sleep(0.3)
        assert pool._checkout(origin) is None
        await pool.aclose()

    asyncio.run(main())
    upstream.close_now.set()


def test_the_default_keepalive_expiry_is_below_common_upstream_idle_timeouts() -> None:
    """uvicorn closes idle connections after 5 s, nginx (keepalive_timeout) after 75 s,
    many load balancers after 60 s: reusing a connection older than the shortest of
    these races the upstream's close."""
    assert Upstream("http://127.0.0.1:9/v1").keepalive_expiry < 5.0


# A forwarded header that cannot be written: the client's mistake, not the upstream's ---------


@pytest.fixture(scope="module")
def forwarding_relay(upstream: str) -> Iterator[str]:
    """Relays forwarding ``x-trace-id`` on each transport, served by uvicorn's h11
    protocol: h11 accepts a control character such as ``\\x01`` in a header value
    (httptools refuses every one), so such a value reaches the relay."""
    relays = {
        f"/{transport}": quiet_relay(upstream, transport=transport, forward_headers=["x-trace-id"])
        for transport in ("native", "aiohttp", "httpx")
    }

    async def handler(request: Request) -> Response:
        """An application building the forwarded headers itself (here, one that is not
        latin-1), through ``Upstream.request`` and ``relay_response``."""
        upstream = relays["/native"].upstream
        call = upstream.request(
            "/chat/completions", chat_body(), headers=[("x-trace-id", "caf\u20ac")]
        )
        return relay_response(call, request)

    routes = [Route("/handler", handler, methods=["POST"]), *mounts(relays)]
    with ServerThread(relay_host(routes, list(relays.values())), http="h11") as server:
        yield server.url


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
def test_a_control_character_in_a_forwarded_header_is_the_clients_400(
    client: httpx.Client, forwarding_relay: str, sim: Simulator, transport: str
) -> None:
    """Before: the native transport called it "the upstream answered with invalid HTTP"
    (a 502 blaming the upstream); aiohttp and httpx sent it on. Now every transport
    refuses it before sending anything, naming the header and never its value."""
    out = fetch(
        client,
        f"{forwarding_relay}/{transport}/chat/completions",
        chat_body(),
        fmt="ndjson",
        headers={"x-trace-id": "secret-1\x01"},
    )
    assert out.status == 400, out.raw
    error = json.loads(out.raw)["error"]
    assert (error["code"], error["type"]) == ("invalid_header", "invalid_request_error")
    assert "'x-trace-id'" in error["message"] and "control character" in error["message"]
    assert "secret-1" not in error["message"]
    assert sim.requests == []  # nothing went upstream


def test_a_forwarded_header_value_beyond_latin_1_from_the_application_is_a_400(
    client: httpx.Client, forwarding_relay: str, sim: Simulator
) -> None:
    out = fetch(client, forwarding_relay + "/handler", chat_body(), fmt="ndjson")
    assert out.status == 400, out.raw
    error = json.loads(out.raw)["error"]
    assert error["code"] == "invalid_header" and "outside latin-1" in error["message"]
    assert sim.requests == []


@pytest.mark.parametrize("transport", ["native", "httpx"])
def test_obs_text_in_a_forwarded_header_is_forwarded_byte_for_byte(
    client: httpx.Client, forwarding_relay: str, sim: Simulator, transport: str
) -> None:
    """Bytes 0x80-0xff are valid (obs-text, RFC 9110 5.5), e.g. UTF-8 text, and go
    upstream unchanged (httpx, which encodes str values as ASCII, crashed on them)."""
    value = "café ☕".encode()  # UTF-8 bytes, as a client sends them
    out = fetch(
        client,
        f"{forwarding_relay}/{transport}/chat/completions",
        chat_body(),
        fmt="ndjson",
        headers=cast(Any, {"x-trace-id": value}),
    )
    assert (out.status, out.terminal) == (200, "done"), out.raw
    assert sim.requests[-1].headers["x-trace-id"].encode("latin-1") == value


def test_an_invalid_forward_headers_name_is_a_configuration_error() -> None:
    for name in ("x trace", "x-trace:", "x\r\ny", ""):
        with pytest.raises(ConfigurationError, match="forward_headers: invalid header name"):
            Upstream("http://127.0.0.1:9/v1", api_key=RELAY_KEY, forward_headers=[name])
