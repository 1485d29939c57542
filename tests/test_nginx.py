"""The relay behind a real nginx, configured the way users configure it.

nginx (Debian's binary, found in ``PATH`` or ``/usr/sbin``) runs in the foreground
as a subprocess with every path inside a temporary directory. Its upstream is the
relay under uvicorn (:class:`~streamrelay.testing.ServerThread`), and the relay's
upstream is a :class:`~streamrelay.testing.Simulator`; both run in this process.
Three locations, one per thing users get wrong:

* ``/buffered/``: a plain ``proxy_pass`` with nginx's default ``proxy_buffering on``;
* ``/gzip/``: ``gzip on`` for ``text/plain``, ``application/x-ndjson`` and
  ``text/event-stream`` with ``gzip_min_length 1``;
* ``/short/``: ``proxy_read_timeout 2s``.

Proven here, with ordering rather than timing (the simulator's ``timestamps``
fault puts each token's send time in the token):

* every format streams incrementally through ``/buffered/`` and ``/gzip/``: the
  first token reaches the client before the upstream generates the last. nginx
  consumes ``X-Accel-Buffering: no`` (it switches buffering off and is not passed
  on) and its gzip filter skips a response that declares ``Content-Encoding:
  identity``; the same gzip location holds a naive stream back until its end;
* on ``/short/``, a stream whose upstream is silent for 4.5 s survives with
  ``StreamSettings(heartbeat=0.3)`` (``ndjson``, ``sse``, ``openai``); ``text`` has no
  in-band heartbeat and is cut, as is every format of a relay with ``heartbeat=None``;
  nginx's cut reaches the upstream as a cancellation;
* a client that disconnects from nginx cancels the upstream, mid-stream and
  before the first byte.

docs/deployment.md points here as the proof of its nginx recipe.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from apps.procs import Proc, Received, chat, free_port, nginx_binary, nginx_conf, read_stream
from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from wire import RawHTTP

FORMATS = ("text", "ndjson", "sse", "openai")
HEARTBEAT = 0.3
READ_TIMEOUT = 2
"""``proxy_read_timeout`` of ``/short/``, in seconds."""
SILENCE = 4.5
"""Upstream silence in the timeout tests: well past ``READ_TIMEOUT``, many heartbeats."""
GZIP_TYPES = "text/plain application/x-ndjson text/event-stream"
PAGE = "a page of the host, long enough to be worth compressing. " * 20


# The relay host, nginx -------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator(delay=0.0)
    with ServerThread(simulator) as server:
        yield simulator, server.url + "/v1"


@pytest.fixture
def sim(upstream: tuple[Simulator, str]) -> Simulator:
    upstream[0].reset()
    return upstream[0]


async def page(request: Request) -> Response:
    return PlainTextResponse(PAGE)


async def naive(request: Request) -> Response:
    """A hand-written stream without the relay's headers: five timestamped lines."""

    async def lines() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield f"t={time.time_ns()}\n".encode()
            await anyio.sleep(0.1)

    return StreamingResponse(lines(), media_type="text/plain")


def relay_host(upstream: str) -> Starlette:
    """The relay at ``/hb`` (heartbeat 0.3 s) and ``/nohb`` (no heartbeat), and two
    routes of the host: a compressible ``/page`` and a ``/naive`` stream."""
    simulator = Upstream(upstream, api_key="sk-test")
    with_heartbeat = StreamRelay(simulator, stream=StreamSettings(heartbeat=HEARTBEAT))
    without_heartbeat = StreamRelay(simulator, stream=StreamSettings(heartbeat=None))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await with_heartbeat.aclose()
        await without_heartbeat.aclose()

    return Starlette(
        routes=[
            Route("/page", page),
            Route("/naive", naive),
            Mount("/hb", with_heartbeat),
            Mount("/nohb", without_heartbeat),
        ],
        lifespan=lifespan,
    )


@pytest.fixture(scope="module")
def nginx(
    upstream: tuple[Simulator, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """nginx in front of the relay host; yields its base URL."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (looked in PATH and /usr/sbin)")
    directory = tmp_path_factory.mktemp("nginx")
    with ServerThread(relay_host(upstream[1])) as relay:
        port = free_port()
        backend = f"http://127.0.0.1:{relay.port}/"
        conf = nginx_conf(
            directory,
            f"""
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;

        location /buffered/ {{
            proxy_pass {backend};
        }}
        location /gzip/ {{
            gzip on;
            gzip_types {GZIP_TYPES};
            gzip_min_length 1;
            proxy_pass {backend};
        }}
        location /short/ {{
            proxy_read_timeout {READ_TIMEOUT}s;
            proxy_pass {backend};
        }}
    }}
""",
        )
        # In the foreground and in one process (no master, so no switch to an
        # unprivileged user that could not reach the temporary directory).
        argv = [
            binary,
            "-p",
            str(directory),
            "-c",
            str(conf),
            "-e",
            str(directory / "error.log"),
            "-g",
            "daemon off; master_process off;",
        ]
        with Proc(argv, port, directory / "nginx.out") as proc:
            yield proc.url


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(20.0)) as http:
        yield http


# Helpers ---------------------------------------------------------------------------------


def check_stream_headers(headers: httpx.Headers, fmt: str) -> None:
    """The relay's anti-buffering headers as they leave nginx."""
    media = "text/plain" if fmt == "text" else "application/x-ndjson" if fmt == "ndjson" else ""
    assert headers["content-type"].startswith(media or "text/event-stream")
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["content-encoding"] == "identity"  # so nginx's gzip left it alone
    assert "x-accel-buffering" not in headers  # consumed by nginx, never passed on
    assert "content-length" not in headers


def read_maybe_cut(client: httpx.Client, url: str, body: object, fmt: str) -> tuple[Received, bool]:
    """Like :func:`read_stream`, and whether the body was cut (no terminating chunk)."""
    pieces: list[tuple[int, bytes]] = []
    cut = False
    with client.stream("POST", url, json=body, params={"format": fmt}) as response:
        try:
            for piece in response.iter_bytes():
                pieces.append((time.time_ns(), piece))
        except httpx.RemoteProtocolError:
            cut = True
    return Received(response.status_code, response.headers, pieces), cut


def ended_cleanly(received: Received, fmt: str) -> bool:
    """The format's own end marker arrived (``text`` has none but the terminating chunk)."""
    body = received.body
    if fmt == "ndjson":
        return body.endswith(b'{"type":"done"}\n')
    if fmt == "sse":
        return b"event: done\n" in body and body.endswith(b"\n\n")
    if fmt == "openai":
        return body.endswith(b"data: [DONE]\n\n")
    return True


def in_parallel(func: Callable[[str], None], formats: tuple[str, ...]) -> None:
    with ThreadPoolExecutor(len(formats)) as pool:
        for future in [pool.submit(func, fmt) for fmt in formats]:
            future.result()


# Streaming through buffering and gzip ----------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("location", ["buffered", "gzip"])
def test_every_format_streams_incrementally(
    nginx: str, location: str, sim: Simulator, client: httpx.Client
) -> None:
    url = f"{nginx}/{location}/hb/chat/completions"

    def one(fmt: str) -> None:
        received = read_stream(
            client,
            url,
            chat(fault="timestamps", tokens=6, delay=0.15),
            fmt=fmt,
            headers={"accept-encoding": "gzip"},
        )
        assert received.status == 200, received.body[:300]
        assert received.headers["server"].startswith("nginx")
        check_stream_headers(received.headers, fmt)
        stamps = received.stamps()
        assert len(stamps) == 6, (fmt, received.body[-300:])
        # The first token reached us before the upstream generated the last one.
        assert received.first_token_at() < stamps[-1], fmt
        assert ended_cleanly(received, fmt), (fmt, received.body[-300:])

    in_parallel(one, FORMATS)
    sim.stats.wait(finished=4, timeout=10)


@pytest.mark.real
def test_gzip_location_compresses_the_host_but_not_the_stream(
    nginx: str, client: httpx.Client
) -> None:
    """The control: the same gzip config compresses the host's page and holds a
    naive stream (no ``Content-Encoding``, no ``X-Accel-Buffering``) until its end."""
    response = client.get(nginx + "/gzip/page", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == PAGE
    pieces = []
    with client.stream("GET", nginx + "/gzip/naive", headers={"accept-encoding": "gzip"}) as naive:
        assert naive.headers["content-encoding"] == "gzip"
        for piece in naive.iter_bytes():
            pieces.append((time.time_ns(), piece))
    naive_stream = Received(naive.status_code, naive.headers, pieces)
    stamps = naive_stream.stamps()
    assert len(stamps) == 5
    # Nothing arrived until the naive app had produced everything.
    assert naive_stream.first_token_at() > stamps[-1]


# Idle timeouts and heartbeats ------------------------------------------------------------


def silent_stream() -> dict[str, object]:
    """One token, then ``SILENCE`` seconds of upstream silence, then two more tokens."""
    return chat(fault="stall", after=1, stall=SILENCE, tokens=3)


@pytest.mark.real
def test_heartbeats_outlive_the_proxy_read_timeout(
    nginx: str, sim: Simulator, client: httpx.Client
) -> None:
    """``proxy_read_timeout 2s``, 4.5 s of upstream silence, a heartbeat every 0.3 s."""
    url = nginx + "/short/hb/chat/completions"

    def one(fmt: str) -> None:
        received, cut = read_maybe_cut(client, url, silent_stream(), fmt)
        assert received.status == 200
        if fmt == "text":
            # No in-band heartbeat exists for plain text: nginx cuts it like any silent stream.
            assert cut
            assert len(received.content().split()) == 1
            return
        assert not cut, fmt
        assert received.pings() >= 2, (fmt, received.body)
        assert len(received.content().split()) == 3, fmt
        assert ended_cleanly(received, fmt), (fmt, received.body[-300:])

    in_parallel(one, FORMATS)
    # nginx closed the text stream's upstream connection; the relay closed its own.
    sim.stats.wait(finished=3, cancelled=1, timeout=10)


@pytest.mark.real
def test_without_heartbeats_the_proxy_cuts_the_stream(
    nginx: str, sim: Simulator, client: httpx.Client
) -> None:
    """The control: the same silent stream from a relay with ``heartbeat=None``."""
    url = nginx + "/short/nohb/chat/completions"

    def one(fmt: str) -> None:
        received, cut = read_maybe_cut(client, url, silent_stream(), fmt)
        assert received.status == 200
        assert cut, (fmt, received.body)
        assert received.pings() == 0
        assert len(received.content().split()) == 1, (fmt, received.body)
        if fmt != "text":
            assert not ended_cleanly(received, fmt)

    in_parallel(one, FORMATS)
    sim.stats.wait(cancelled=4, timeout=10)
    assert sim.stats.finished == 0


# Disconnects -----------------------------------------------------------------------------


@pytest.mark.real
def test_disconnect_through_nginx_cancels_the_upstream(nginx: str, sim: Simulator) -> None:
    # Mid-stream, while the upstream is silent.
    conn = RawHTTP(nginx)
    conn.request(
        "POST",
        "/buffered/hb/chat/completions?format=ndjson",
        chat(fault="stall", after=2, tokens=5),
    )
    assert conn.read_head()[0] == 200
    seen = b""
    while seen.count(b'"delta"') < 2:
        chunk = conn.read_chunk()
        assert chunk is not None, seen
        seen += chunk
    assert sim.stats.active == 1
    conn.close()
    sim.stats.wait(cancelled=1, timeout=10)
    # Before the first byte: the upstream has not even sent its headers.
    conn = RawHTTP(nginx)
    conn.request("POST", "/buffered/hb/chat/completions?format=sse", chat(fault="stall_headers"))
    sim.stats.wait(started=2, timeout=10)
    conn.close()
    sim.stats.wait(cancelled=2, timeout=10)
    assert sim.stats.finished == 0
