"""Streaming behaviour measured on real sockets: headers, first byte, ordering,
heartbeats, client disconnects and compression middleware.

Time is only ever compared as an ordering (the simulator stamps each token with
its send time, and the client notes when it received things); no test depends
on how fast the machine is.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from wire import (
    FORMATS,
    PREAMBLE,
    RELAY_KEY,
    RawHTTP,
    chat_body,
    check_wire,
    fetch,
    mounts,
    relay_host,
)

TRANSPORTS = ["/ai", "/ai-aiohttp", "/ai-httpx", "/ai-client"]
QUIET = StreamSettings(heartbeat=None)


def make_relays(upstream: str) -> dict[str, Any]:
    user_client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))

    def to_sim(**options: Any) -> Upstream:
        return Upstream(upstream, api_key=RELAY_KEY, **options)

    return {
        "/ai": StreamRelay(to_sim(), stream=QUIET),
        "/ai-aiohttp": StreamRelay(to_sim(transport="aiohttp"), stream=QUIET),
        "/ai-httpx": StreamRelay(to_sim(transport="httpx"), stream=QUIET),
        "/ai-client": StreamRelay(to_sim(client=user_client), stream=QUIET),
        "/beat": StreamRelay(to_sim(), stream=StreamSettings(heartbeat=0.1, idle_timeout=10)),
        "": user_client,  # closed on shutdown, not mounted
    }


@pytest.fixture(scope="module")
def servers(upstream: str) -> Iterator[dict[str, str]]:
    """The relays under uvicorn, once with each of its HTTP/1.1 implementations."""
    urls = {}
    with contextlib.ExitStack() as stack:
        for impl in ("httptools", "h11"):
            relays = make_relays(upstream)
            routes = mounts({path: app for path, app in relays.items() if path})
            server = stack.enter_context(
                ServerThread(relay_host(routes, list(relays.values())), http=impl)
            )
            with httpx.Client() as warm:
                for path in relays:
                    if path:
                        warm.post(server.url + path + "/chat/completions", json=chat_body(tokens=1))
            urls[impl] = server.url
        yield urls


@pytest.fixture(scope="module")
def relay(servers: dict[str, str]) -> str:
    return servers["httptools"]


IMPLS = ["httptools", "h11"]


@pytest.fixture(scope="module")
def gzip_relay(upstream: str) -> Iterator[str]:
    """A host app with Starlette's GZipMiddleware (compressing anything over 1 byte)."""
    relay = StreamRelay(Upstream(upstream, api_key=RELAY_KEY))
    app = relay_host(mounts({"/ai": relay}), [relay])
    app.user_middleware.insert(0, Middleware(GZipMiddleware, minimum_size=1))
    with ServerThread(app) as server:
        yield server.url


def token_times(content: str) -> list[int]:
    """The simulator's send times (``time.time_ns()``) of ``timestamps`` tokens."""
    return [int(t) for t in re.findall(r"t=(\d+)", content)]


# Headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("impl", IMPLS)
def test_stream_headers_on_the_wire(
    sim: Simulator, servers: dict[str, str], impl: str, fmt: str
) -> None:
    """Raw HTTP/1.1 bytes: anti-buffering headers, chunked, no Content-Length, no Connection."""
    with RawHTTP(servers[impl]) as conn:
        conn.request("POST", f"/ai/chat/completions?format={fmt}", chat_body(tokens=2))
        status, headers = conn.read_head()
        body = conn.read_body()
        assert conn.complete
    names = [name for name, _ in headers]
    assert status == 200
    assert ("cache-control", "no-cache, no-transform") in headers
    assert ("x-accel-buffering", "no") in headers
    assert ("transfer-encoding", "chunked") in headers
    assert "content-length" not in names
    assert "connection" not in names
    assert names.count("content-type") == 1
    assert body


@pytest.mark.parametrize("fmt", FORMATS)
def test_headers_and_first_byte_before_the_first_token(
    sim: Simulator, relay: str, fmt: str
) -> None:
    """With a slow first token, the client has headers (and the SSE preamble) first."""
    body = chat_body(fault="timestamps", tokens=2, first_delay=0.5)
    with RawHTTP(relay) as conn:
        conn.request("POST", f"/ai/chat/completions?format={fmt}", body)
        status, _ = conn.read_head()
        head_at = time.time_ns()
        assert status == 200
        first = conn.read_chunk()
        first_at = time.time_ns()
        rest = conn.read_body()
    first_token = token_times(((first or b"") + rest).decode(errors="replace"))[0]
    assert head_at < first_token
    if fmt in ("sse", "openai"):
        assert first == PREAMBLE
        assert first_at < first_token


# First token long before the last --------------------------------------------------------


def receive_until_first_token(
    client: httpx.Client, url: str, fmt: str, sim: Simulator, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, int], bytes, httpx.Response]:
    """Streams the request; notes when the first token arrived and the simulator's stats then."""
    body = chat_body(fault="timestamps", tokens=10, delay=0.1)
    raw = bytearray()
    first_at = 0
    stats: dict[str, int] = {}
    with client.stream("POST", url, params={"format": fmt}, json=body, headers=headers) as response:
        for piece in response.iter_bytes():
            raw += piece
            if not first_at and b"t=" in raw:
                first_at = time.time_ns()
                stats = sim.stats.snapshot()
    return first_at, stats, bytes(raw), response


@pytest.mark.parametrize(
    ("fmt", "path"),
    [*((f, "/ai") for f in FORMATS), ("ndjson", "/ai-httpx"), ("sse", "/ai-client")],
)
def test_first_token_arrives_long_before_the_last_is_sent(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str, path: str
) -> None:
    first_at, stats, raw, _ = receive_until_first_token(
        client, relay + path + "/chat/completions", fmt, sim
    )
    sent = token_times(raw.decode())
    assert len(sent) == 10
    assert first_at < sent[-1], "the first token was held back until the upstream finished"
    assert stats["finished"] == 0 and stats["active"] == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_gzip_middleware_holds_nothing_back(
    sim: Simulator, client: httpx.Client, gzip_relay: str, fmt: str
) -> None:
    first_at, stats, raw, response = receive_until_first_token(
        client, gzip_relay + "/ai/chat/completions", fmt, sim, headers={"accept-encoding": "gzip"}
    )
    assert response.request.headers["accept-encoding"] == "gzip"
    assert response.headers.get("content-encoding") in (None, "identity")
    sent = token_times(raw.decode())
    assert len(sent) == 10
    assert first_at < sent[-1], "compression middleware held the stream back"
    assert stats["finished"] == 0


def test_gzip_still_compresses_ordinary_responses(client: httpx.Client, gzip_relay: str) -> None:
    """The middleware is active: the relay's own JSON errors are compressed."""
    response = client.post(
        gzip_relay + "/ai/nowhere", json=chat_body(), headers={"accept-encoding": "gzip"}
    )
    assert response.status_code == 404
    assert response.headers["content-encoding"] == "gzip"


# Heartbeats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_heartbeats_during_an_upstream_stall(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str
) -> None:
    body = chat_body(fault="stall", after=2, stall=0.8, tokens=4)
    out = fetch(client, relay + "/beat/chat/completions", body, fmt=fmt)
    check_wire(out)
    assert out.terminal == "done"
    assert out.content() == sim.expected_text(body)
    if fmt == "text":
        assert out.pings == 0  # text has no in-band keep-alive
        return
    assert out.pings >= 2, out.raw
    if fmt == "ndjson":
        assert out.raw.count(b'{"type":"ping"}\n') == out.pings
    else:
        assert out.sse is not None
        assert set(out.sse.comments) == {"stream open", "ping"}
        # Pings came during the stall: between the 2nd and the 3rd token.
        before, _, after = out.raw.partition(b": ping\n")
        assert out.raw.rstrip().endswith(b"[DONE]" if fmt == "openai" else b'{"type":"done"}')
        assert b": ping" not in out.raw[out.raw.rindex(b"data:") :]
        assert before and after


def test_no_heartbeats_when_disabled(sim: Simulator, client: httpx.Client, relay: str) -> None:
    body = chat_body(fault="stall", after=1, stall=0.4, tokens=2)
    out = fetch(client, relay + "/ai/chat/completions", body, fmt="ndjson")
    assert out.terminal == "done"
    assert out.pings == 0


# Client disconnects -----------------------------------------------------------------------------


def open_stream(relay: str, path: str, fmt: str, body: dict[str, Any]) -> RawHTTP:
    conn = RawHTTP(relay)
    conn.request("POST", f"{path}/chat/completions?format={fmt}", body)
    return conn


DISCONNECT_CASES = [
    *(("httptools", "/ai", fmt) for fmt in FORMATS),
    ("httptools", "/ai-httpx", "ndjson"),
    ("httptools", "/ai-client", "text"),
    ("h11", "/ai", "sse"),
    ("h11", "/ai-httpx", "text"),
]


@pytest.mark.parametrize(("impl", "path", "fmt"), DISCONNECT_CASES)
def test_disconnect_mid_stream_cancels_the_upstream(
    sim: Simulator, servers: dict[str, str], impl: str, path: str, fmt: str
) -> None:
    body = chat_body(tokens=400, delay=0.05)
    conn = open_stream(servers[impl], path, fmt, body)
    try:
        assert conn.read_head()[0] == 200
        pieces = 0
        while pieces < 3:  # a few tokens in
            chunk = conn.read_chunk()
            assert chunk is not None
            pieces += chunk != PREAMBLE
    finally:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=1)
    assert sim.stats.finished == 0
    sim.stats.wait_idle(timeout=10)


@pytest.mark.parametrize(("impl", "path", "fmt"), DISCONNECT_CASES)
def test_disconnect_during_an_upstream_stall_cancels_it(
    sim: Simulator, servers: dict[str, str], impl: str, path: str, fmt: str
) -> None:
    """The upstream is silent (stalled forever): only the client's leaving can end it."""
    conn = open_stream(servers[impl], path, fmt, chat_body(fault="stall", after=1))
    try:
        assert conn.read_head()[0] == 200
        assert conn.read_chunk()  # the stream is under way
    finally:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=1)
    sim.stats.wait_idle(timeout=10)


@pytest.mark.parametrize(("impl", "path", "fmt"), DISCONNECT_CASES)
def test_disconnect_while_waiting_for_upstream_headers_cancels_it(
    sim: Simulator, servers: dict[str, str], impl: str, path: str, fmt: str
) -> None:
    conn = open_stream(servers[impl], path, fmt, chat_body(fault="stall_headers"))
    try:
        sim.stats.wait(timeout=10, started=1)  # the relay's call reached the upstream
    finally:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=1)
    assert sim.requests[-1].status is None  # it never answered
    sim.stats.wait_idle(timeout=10)


def test_many_disconnects_leave_nothing_running(sim: Simulator, relay: str) -> None:
    conns = [
        open_stream(relay, path, fmt, chat_body(fault="stall", after=1))
        for path in TRANSPORTS
        for fmt in FORMATS
    ]
    sim.stats.wait(timeout=10, started=len(conns))
    for conn in conns:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=len(conns))
    sim.stats.wait_idle(timeout=10)
