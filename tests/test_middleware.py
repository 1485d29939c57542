"""``StreamRelayMiddleware`` around a host app that proxies the simulator itself,
through real servers and sockets."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
from examples.middleware_reframe import UpstreamResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from streamrelay import ConfigurationError, StreamRelayMiddleware, StreamSettings
from streamrelay.testing import ServerThread, Simulator
from wire import FORMATS, RawHTTP, chat_body, check_wire, fetch

QUIET = StreamSettings(heartbeat=None)


def host_app(upstream: str, *, gzip: bool = False) -> Starlette:
    """A host whose ``/chat`` route relays the upstream's raw OpenAI SSE by hand."""
    http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))

    async def chat(request: Request) -> Response:
        body = await request.json()
        upstream_request = http.build_request(
            "POST", upstream + "/chat/completions", json={**body, "stream": True}
        )
        response = await http.send(upstream_request, stream=True)
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            return Response(
                content,
                status_code=response.status_code,
                media_type=response.headers["content-type"],
                headers={"retry-after": response.headers.get("retry-after", "")},
            )
        return UpstreamResponse(
            response,
            media_type=response.headers["content-type"],
            headers={"connection": "keep-alive", "x-host": "yes"},
        )

    async def chat_json(request: Request) -> Response:
        return JSONResponse({"hello": "json"})

    async def slow_text() -> AsyncIterator[str]:
        for _ in range(10):
            yield f"t={time.time_ns()} "
            await anyio.sleep(0.1)

    async def other_stream(request: Request) -> Response:
        return StreamingResponse(slow_text(), media_type="text/plain")

    async def other_unknown(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            yield b"a"
            yield b"b"

        return StreamingResponse(parts(), media_type="application/octet-stream")

    async def other_plain(request: Request) -> Response:
        return PlainTextResponse("fixed", headers={"connection": "keep-alive"})

    routes = [
        Route("/chat", chat, methods=["POST"]),
        Route("/chat/json", chat_json, methods=["POST"]),
        Route("/chatroom", chat_json, methods=["POST"]),
        Route("/other/chat", chat, methods=["POST"]),
        Route("/other/stream", other_stream),
        Route("/other/octets", other_unknown),
        Route("/other/plain", other_plain),
    ]
    # The relay goes inside compression middleware, so compression sees its marks.
    middleware = [Middleware(GZipMiddleware, minimum_size=1)] if gzip else []
    middleware.append(Middleware(StreamRelayMiddleware, paths=["/chat"], stream=QUIET))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await http.aclose()

    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


@pytest.fixture(scope="module")
def host(upstream: str) -> Iterator[str]:
    with ServerThread(host_app(upstream)) as server:
        yield server.url


@pytest.fixture(scope="module")
def gzip_host(upstream: str) -> Iterator[str]:
    with ServerThread(host_app(upstream, gzip=True)) as server:
        yield server.url


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", [None, "crlf", "tools"])
def test_host_sse_is_reframed_per_format(
    sim: Simulator, client: httpx.Client, host: str, fmt: str, fault: str | None
) -> None:
    body = chat_body(fault=fault) if fault else chat_body()
    out = fetch(client, host + "/chat", body, fmt=fmt)
    check_wire(out)
    assert out.terminal == "done"
    assert out.content() == sim.expected_text(body)
    if fmt != "text":
        message = sim.completion(body)["choices"][0]["message"]
        assert out.tool_calls() == message.get("tool_calls", [])
        assert out.headers["x-host"] == "yes"  # the host's own headers survive


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/x-ndjson", "application/x-ndjson"),
        ("text/plain", "text/plain; charset=utf-8"),
        (None, "text/event-stream"),
    ],
)
def test_reframing_negotiates_from_accept(
    client: httpx.Client, host: str, accept: str | None, content_type: str
) -> None:
    headers = {"accept": accept} if accept else {}
    response = client.post(host + "/chat", json=chat_body(tokens=2), headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type


def test_unknown_format_gets_406(sim: Simulator, client: httpx.Client, host: str) -> None:
    response = client.post(host + "/chat", params={"format": "xml"}, json=chat_body())
    assert response.status_code == 406
    assert response.headers["vary"] == "accept"  # as the mount answers it
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"]["code"] == "unsupported_format"
    assert sim.requests == []  # the host route never ran


@pytest.mark.parametrize("fmt", ["ndjson", "openai", "text"])
def test_reframed_mid_stream_error(
    sim: Simulator, client: httpx.Client, host: str, fmt: str
) -> None:
    body = chat_body(fault="mid_error", after=2)
    out = fetch(client, host + "/chat", body, fmt=fmt)
    check_wire(out)
    assert out.terminal == "error"
    if out.error is not None:
        assert out.error["code"] == "server_error"
    assert out.content() == sim.expected_text({**body, "max_tokens": 2})


def test_non_sse_responses_on_the_paths_pass_through(client: httpx.Client, host: str) -> None:
    response = client.post(host + "/chat/json", params={"format": "ndjson"})
    assert response.status_code == 200
    assert response.json() == {"hello": "json"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert "x-accel-buffering" not in response.headers


def test_host_error_status_passes_through(sim: Simulator, client: httpx.Client, host: str) -> None:
    response = client.post(
        host + "/chat", params={"format": "sse"}, json=chat_body(fault="status", status=429)
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "1"


def raw_headers(url: str, path: str, method: str = "GET") -> tuple[list[tuple[str, str]], bytes]:
    with RawHTTP(url) as conn:
        body = chat_body(tokens=2) if method == "POST" else b""
        conn.request(method, path, body)
        status, headers = conn.read_head()
        assert status == 200
        content = conn.read_body() if ("transfer-encoding", "chunked") in headers else b""
    return headers, content


@pytest.mark.parametrize(
    "path", ["/other/stream", "/other/octets", "/other/chat", "/chat", "/chat?format=text"]
)
def test_every_host_stream_gets_anti_buffering_headers(host: str, path: str) -> None:
    method = "POST" if "chat" in path else "GET"
    headers, content = raw_headers(host, path, method)
    names = [name for name, _ in headers]
    assert ("cache-control", "no-cache, no-transform") in headers
    assert ("x-accel-buffering", "no") in headers
    assert "content-length" not in names
    assert "connection" not in names
    assert content


def test_fixed_length_responses_are_left_alone(host: str) -> None:
    with RawHTTP(host) as conn:
        conn.request("GET", "/other/plain")
        status, headers = conn.read_head()
    names = [name for name, _ in headers]
    assert status == 200
    assert "x-accel-buffering" not in names
    assert ("content-length", "5") in headers


def test_off_path_sse_is_not_reframed(
    sim: Simulator, client: httpx.Client, host: str, upstream: str
) -> None:
    body = chat_body(tokens=2)
    response = client.post(host + "/other/chat", params={"format": "ndjson"}, json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content.endswith(b"data: [DONE]\n\n")


def test_gzip_outside_the_middleware_holds_nothing_back(
    sim: Simulator, client: httpx.Client, gzip_host: str
) -> None:
    raw = bytearray()
    first_at = 0
    with client.stream(
        "GET", gzip_host + "/other/stream", headers={"accept-encoding": "gzip"}
    ) as response:
        for piece in response.iter_bytes():
            raw += piece
            first_at = first_at or time.time_ns()
    sent = [int(t) for t in re.findall(rb"t=(\d+)", bytes(raw))]
    assert len(sent) == 10
    assert first_at < sent[-1], "gzip held back the host's stream"


@pytest.mark.parametrize("fmt", ["text", "ndjson"])
def test_gzip_outside_the_middleware_reframed(
    sim: Simulator, client: httpx.Client, gzip_host: str, fmt: str
) -> None:
    body = chat_body(tokens=3)
    out = fetch(client, gzip_host + "/chat", body, fmt=fmt, headers={"accept-encoding": "gzip"})
    check_wire(out)
    assert out.content() == sim.expected_text(body)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", [None, "stall"])
def test_disconnect_cancels_the_hosts_upstream(
    sim: Simulator, host: str, fmt: str, fault: str | None
) -> None:
    body = chat_body(fault="stall", after=2) if fault else chat_body(tokens=400, delay=0.05)
    conn = RawHTTP(host)
    try:
        conn.request("POST", f"/chat?format={fmt}", body)
        assert conn.read_head()[0] == 200
        assert conn.read_chunk()
    finally:
        conn.close()
    assert sim.stats.wait(timeout=10, cancelled=1)
    sim.stats.wait_idle(timeout=10)


def test_paths_match_whole_segments(sim: Simulator, client: httpx.Client, host: str) -> None:
    """``paths=["/chat"]`` covers ``/chat`` and what lies below it, never ``/chatroom``:
    that route is the host's alone, whatever ``?format=`` it gets."""
    room = client.post(host + "/chatroom?format=csv", json={})
    assert (room.status_code, room.json()) == (200, {"hello": "json"})
    chat = client.post(host + "/chat?format=csv", json=chat_body())
    assert chat.status_code == 406  # refused before the host starts a paid generation
    below = client.post(host + "/chat/json?format=csv", json={})
    assert below.status_code == 406
    assert sim.requests == []


@pytest.mark.parametrize("bad", [["chat"], [""], [3]])
def test_paths_must_be_absolute(bad: list[object]) -> None:
    with pytest.raises(ConfigurationError, match="must start with '/'"):
        StreamRelayMiddleware(Starlette(), paths=bad)  # type: ignore[arg-type]
