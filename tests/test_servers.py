"""The relay under every ASGI server it supports, each a real subprocess.

``tests/apps/relay_app.py`` (the relay at ``/ai``, a raw OpenAI SSE route of the
host re-framed by ``StreamRelayMiddleware`` at ``/raw``, a plain streaming route
at ``/ticks``) runs under uvicorn (httptools and h11), hypercorn (asyncio and its
trio worker, where the relay runs on trio with the httpx transport), granian and
daphne; its upstream is a simulator in this process. On each server:

* every format streams incrementally (the first token arrives before the
  upstream generates the last), and the headers leave before the first token even
  on servers that hold them until a body message (granian, daphne);
* a disconnect cancels the upstream, mid-stream and while waiting for the first
  token;
* heartbeats keep a silent stream alive;
* a client that stops reading: where the server applies backpressure the send
  timeout drops it and closes the upstream; daphne buffers instead (documented);
* the middleware re-frames and marks the host's streams;
* a ``text`` stream that fails mid-way is cut (no terminating chunk).

Finally HTTP/2 through hypercorn over TLS (a self-signed certificate made by
``openssl`` here) and h2c: streams, disconnects, and no hop-by-hop header.
What each server does differently is written down in docs/deployment.md.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest

from apps.procs import APPS, Proc, chat, free_port, read_stream, server_command, start_all
from streamrelay.testing import ServerThread, Simulator
from wire import RawHTTP, self_signed_cert

SERVERS = ("uvicorn-httptools", "uvicorn-h11", "hypercorn", "hypercorn-trio", "granian", "daphne")
FORMATS = ("text", "ndjson", "sse", "openai")
HEARTBEAT = 0.3
SEND_TIMEOUT = 1.5
HOP_BY_HOP = ("connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection")
STALLED_SEND = {server: "timeout" for server in SERVERS} | {
    "daphne": "buffered",
    "hypercorn-trio": "shielded",
}
"""What ``send`` does while the client reads nothing: it waits, and the relay's send
timeout drops the client (``timeout``); daphne's Twisted transport buffers without
limit, so the send never waits (``buffered``); hypercorn's trio worker shields its
socket write from cancellation, so the send waits until the client's connection goes
(``shielded``)."""


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator(delay=0.0)
    with ServerThread(simulator) as server:
        yield simulator, server.url + "/v1"


@pytest.fixture
def sim(upstream: tuple[Simulator, str]) -> Simulator:
    upstream[0].reset()
    return upstream[0]


def app_env(upstream: tuple[Simulator, str]) -> dict[str, str]:
    return {
        "STREAMRELAY_UPSTREAM": upstream[1],
        "STREAMRELAY_TEST_HEARTBEAT": str(HEARTBEAT),
        "STREAMRELAY_TEST_SEND_TIMEOUT": str(SEND_TIMEOUT),
        "PYTHONPATH": str(APPS),
    }


@pytest.fixture(scope="module")
def servers(
    upstream: tuple[Simulator, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Proc]]:
    logs = tmp_path_factory.mktemp("servers")
    procs = {}
    for name in SERVERS:
        port = free_port()
        argv = server_command(name, "relay_app:app", port)
        procs[name] = Proc(argv, port, logs / f"{name}.log", app_env(upstream), cwd=APPS)
    start_all(list(procs.values()))
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture(params=SERVERS)
def server(
    request: pytest.FixtureRequest, servers: dict[str, Proc], sim: Simulator
) -> tuple[str, str]:
    return request.param, servers[request.param].url


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(20.0)) as http:
        yield http


def check_stream_headers(headers: httpx.Headers) -> None:
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["x-accel-buffering"] == "no"
    assert headers["content-encoding"] == "identity"
    assert "content-length" not in headers
    assert "connection" not in headers


def test_every_format_streams_incrementally(server: tuple[str, str], client: httpx.Client) -> None:
    _, url = server

    def one(fmt: str) -> None:
        received = read_stream(
            client,
            url + "/ai/chat/completions",
            chat(fault="timestamps", tokens=6, delay=0.15),
            fmt=fmt,
        )
        assert received.status == 200, received.body[:300]
        check_stream_headers(received.headers)
        stamps = received.stamps()
        assert len(stamps) == 6, (fmt, received.body[-300:])
        assert received.first_token_at() < stamps[-1], fmt

    with ThreadPoolExecutor(len(FORMATS)) as pool:
        for future in [pool.submit(one, fmt) for fmt in FORMATS]:
            future.result()


def test_headers_leave_before_the_first_token(server: tuple[str, str]) -> None:
    """Granian and daphne hold ``http.response.start`` until a body message; the
    pipeline sends one (empty for ``text``) right after the headers."""
    _, url = server
    with RawHTTP(url) as conn:
        body = chat(fault="timestamps", tokens=2, first_delay=0.5)
        conn.request("POST", "/ai/chat/completions?format=text", body)
        status, _ = conn.read_head()
        head_at = time.time_ns()
        assert status == 200
        text = conn.read_body().decode()
    assert conn.complete
    first_token = int(text.split()[0].removeprefix("t="))
    assert head_at < first_token


def test_a_stored_stream_outlives_its_client(server: tuple[str, str], sim: Simulator) -> None:
    """With a store, the server must let the app finish after its client left (the
    generation goes on for a resume): every server here does."""
    _, url = server
    body = chat(tokens=30, delay=0.02)
    conn = RawHTTP(url)
    conn.request("POST", "/stored/chat/completions?format=ndjson", body)
    status, headers = conn.read_head()
    assert status == 200
    stream_id = dict(headers)["x-stream-id"]
    seen = b""
    while seen.count(b'"delta"') < 2:
        chunk = conn.read_chunk()
        assert chunk is not None
        seen += chunk
    conn.close()
    assert sim.stats.wait(finished=1, timeout=10)
    assert sim.stats.cancelled == 0
    resumed = httpx.get(url + f"/stored/streams/{stream_id}?format=ndjson", timeout=10)
    events = [json.loads(line) for line in resumed.text.splitlines()]
    assert events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "delta") == sim.expected_text(body)


def test_disconnect_cancels_the_upstream(server: tuple[str, str], sim: Simulator) -> None:
    _, url = server
    # Mid-stream, while the upstream is silent.
    conn = RawHTTP(url)
    conn.request(
        "POST", "/ai/chat/completions?format=ndjson", chat(fault="stall", after=2, tokens=5)
    )
    assert conn.read_head()[0] == 200
    seen = b""
    while seen.count(b'"delta"') < 2:
        chunk = conn.read_chunk()
        assert chunk is not None
        seen += chunk
    assert sim.stats.active == 1
    conn.close()
    sim.stats.wait(cancelled=1, timeout=10)
    # Before the first byte: the upstream has not even sent its headers.
    conn = RawHTTP(url)
    conn.request("POST", "/ai/chat/completions?format=sse", chat(fault="stall_headers"))
    sim.stats.wait(started=2, timeout=10)
    conn.close()
    sim.stats.wait(cancelled=2, timeout=10)
    assert sim.stats.finished == 0


def test_heartbeats_keep_a_silent_stream_alive(
    server: tuple[str, str], client: httpx.Client
) -> None:
    _, url = server

    def one(fmt: str) -> None:
        received = read_stream(
            client,
            url + "/ai/chat/completions",
            chat(fault="stall", after=1, stall=1.2, tokens=3),
            fmt=fmt,
        )
        assert received.status == 200
        assert received.pings() >= 2, (fmt, received.body)
        assert len(received.content().split()) == 3

    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(one, fmt) for fmt in ("ndjson", "sse", "openai")]:
            future.result()


def test_a_client_that_stops_reading(server: tuple[str, str], sim: Simulator) -> None:
    """A 36 MB answer to a client that reads nothing (a stalled tab, a dead peer)."""
    name, url = server
    sim.config = sim.config.replace(pieces=["x" * 60_000] * 600)
    try:
        conn = RawHTTP(url)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.request("POST", "/ai/chat/completions?format=text", chat())
        if STALLED_SEND[name] == "timeout":
            # send() blocks, the send timeout fires, the upstream is closed.
            sim.stats.wait(cancelled=1, timeout=SEND_TIMEOUT + 15)
            assert sim.stats.finished == 0
        elif STALLED_SEND[name] == "buffered":
            # daphne: every byte lands in the server's memory; the upstream finishes.
            sim.stats.wait(finished=1, timeout=30)
        else:
            # hypercorn-trio: the send cannot be cut, so the stream waits on the client;
            # the upstream is still stopped (not finished) once the client goes.
            time.sleep(SEND_TIMEOUT + 1)
            assert (sim.stats.cancelled, sim.stats.finished) == (0, 0)
            conn.close()
            sim.stats.wait(cancelled=1, timeout=15)
            assert sim.stats.finished == 0
        conn.close()
    finally:
        sim.config = sim.config.replace(pieces=None)


def test_middleware_reframes_and_marks_host_streams(
    server: tuple[str, str], sim: Simulator, client: httpx.Client
) -> None:
    _, url = server
    for fmt in FORMATS:
        received = read_stream(client, url + "/raw", chat(tokens=4), fmt=fmt)
        assert received.status == 200
        check_stream_headers(received.headers)  # the host's Connection header is gone
        assert received.content() == sim.expected_text(chat(tokens=4)), fmt
    with client.stream("GET", url + "/ticks") as response:
        check_stream_headers(response.headers)
        assert b"".join(response.iter_bytes()) == b"".join(b"tick %d\n" % n for n in range(5))


# Defined last: on daphne it leaves the server unable to report later app errors.
def test_text_error_cuts_the_response(
    request: pytest.FixtureRequest, server: tuple[str, str]
) -> None:
    name, url = server
    if name == "daphne":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                raises=TimeoutError,
                reason="daphne 4.2 keeps the connection open when an app raises after "
                "http.response.start (and its application checker dies); use ndjson/sse/openai",
            )
        )
    with RawHTTP(url, timeout=4) as conn:
        conn.request(
            "POST", "/ai/chat/completions?format=text", chat(fault="mid_error", after=3, tokens=6)
        )
        assert conn.read_head()[0] == 200
        text = conn.read_body()
    assert len(text.split()) == 3
    assert not conn.complete and conn.eof  # no terminating chunk: the reader fails


# HTTP/2 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def h2_servers(
    upstream: tuple[Simulator, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Proc], Path]]:
    """hypercorn over TLS (ALPN h2) and over cleartext (h2c prior knowledge)."""
    directory = tmp_path_factory.mktemp("h2")
    cert, key = self_signed_cert(directory)
    tls_port, clear_port = free_port(), free_port()
    tls = Proc(
        server_command(
            "hypercorn", "relay_app:app", tls_port, "--certfile", str(cert), "--keyfile", str(key)
        ),
        tls_port,
        directory / "tls.log",
        app_env(upstream),
        cwd=APPS,
        scheme="https",
    )
    clear = Proc(
        server_command("hypercorn", "relay_app:app", clear_port),
        clear_port,
        directory / "h2c.log",
        app_env(upstream),
        cwd=APPS,
    )
    start_all([tls, clear])
    try:
        yield {"tls": tls, "h2c": clear}, cert
    finally:
        tls.stop()
        clear.stop()


@pytest.fixture(params=["tls", "h2c"])
def h2_client(
    request: pytest.FixtureRequest, h2_servers: tuple[dict[str, Proc], Path], sim: Simulator
) -> Iterator[tuple[httpx.Client, str]]:
    procs, cert = h2_servers
    if request.param == "tls":
        verify = ssl.create_default_context(cafile=str(cert))
        http = httpx.Client(http2=True, verify=verify, timeout=20)
    else:
        http = httpx.Client(http1=False, http2=True, timeout=20)  # h2c prior knowledge
    with http:
        yield http, procs[request.param].url


def check_no_hop_by_hop(headers: httpx.Headers) -> None:
    for name in HOP_BY_HOP:
        assert name not in headers, name


@pytest.mark.real
def test_http2_streams_without_hop_by_hop_headers(
    h2_client: tuple[httpx.Client, str], sim: Simulator
) -> None:
    http, url = h2_client

    def one(fmt: str) -> None:
        received = read_stream(
            http,
            url + "/ai/chat/completions",
            chat(fault="timestamps", tokens=5, delay=0.15),
            fmt=fmt,
        )
        assert received.http_version == "HTTP/2"
        assert received.status == 200
        check_no_hop_by_hop(received.headers)
        assert received.headers["x-accel-buffering"] == "no"
        stamps = received.stamps()
        assert len(stamps) == 5
        assert received.first_token_at() < stamps[-1], fmt

    # One after the other on one connection (the sync client's HTTP/2 reads are
    # serialized across threads, which would blur the ordering this test measures).
    for fmt in FORMATS:
        one(fmt)
    # The host's own route set "Connection: keep-alive"; the middleware removed it
    # (a connection-specific header is a protocol error in HTTP/2).
    received = read_stream(http, url + "/raw", chat(tokens=3), fmt="sse")
    assert received.http_version == "HTTP/2" and received.status == 200
    check_no_hop_by_hop(received.headers)
    assert received.content() == sim.expected_text(chat(tokens=3))


class H2Raw:
    """A minimal HTTP/2 client on a socket (the ``h2`` state machine), for what httpx
    does not do: reset one stream (``RST_STREAM``) and keep the connection."""

    def __init__(self, url: str, cert: Path | None) -> None:
        parts = httpx.URL(url)
        sock = socket.create_connection((parts.host, parts.port), timeout=10)
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=str(cert))
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname=parts.host)
            assert sock.selected_alpn_protocol() == "h2"
        self.sock, self.scheme, self.authority = sock, parts.scheme, f"{parts.host}:{parts.port}"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def post(self, path: str, body: dict[str, object]) -> int:
        payload = json.dumps(body).encode()
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":path", path),
            (":scheme", self.scheme),
            (":authority", self.authority),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
        ]
        self.conn.send_headers(stream, headers)
        self.conn.send_data(stream, payload, end_stream=True)
        self.flush()
        self.data[stream] = bytearray()
        return stream

    def pump(self) -> None:
        """Read once and handle what arrived."""
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the connection"
        for event in self.conn.receive_data(chunk):
            if isinstance(event, h2.events.DataReceived):
                self.data[event.stream_id] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.add(event.stream_id)
        self.flush()

    def reset(self, stream: int) -> None:
        self.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.real
def test_http2_stream_reset_cancels_the_upstream(
    h2_servers: tuple[dict[str, Proc], Path], sim: Simulator
) -> None:
    """Resetting one HTTP/2 stream cancels its upstream; the connection lives on."""
    procs, cert = h2_servers
    for variant in ("tls", "h2c"):
        sim.reset()
        client = H2Raw(procs[variant].url, cert)
        try:
            stream = client.post(
                "/ai/chat/completions?format=sse", chat(fault="stall", after=2, tokens=5)
            )
            while client.data[stream].count(b"event: delta") < 2:
                client.pump()
            assert sim.stats.active == 1
            client.reset(stream)
            sim.stats.wait(cancelled=1, timeout=10)
            # The same connection serves the next stream to its end.
            stream = client.post("/ai/chat/completions?format=text", chat(tokens=3))
            while stream not in client.ended:
                client.pump()
            assert len(client.data[stream].split()) == 3
        finally:
            client.close()
