"""Faults, bad input and secrets at the edges the other suites leave open, through real servers.

The relays run under uvicorn (httptools) in a thread, the upstream is the
session's simulator or a small hostile upstream defined here, and the client
is httpx or :class:`~wire.RawHTTP` on a real socket.

* upstream faults: a DNS failure (502), a redirect to another host (502, and the
  key never reaches that host), a pooled connection the upstream closed;
* bad client input: a body that arrives too slowly (408), a body declared over
  the limit (413 before any of it is read), HEAD (405), oversized headers (431),
  CR/LF in ``?format=`` (400) or in a header (the server's 400), each with no
  upstream call, while a stream in flight is not disturbed;
* security: the key never appears in a response, an error, a log line or an
  exception message, even when the upstream quotes it; the per-principal limit
  on concurrent streams (429); any Unicode content round-trips exactly through
  every format of the running relay, and no token forges a field, line or ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from streamrelay import RequestLimits, StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from streamrelay.upstream import Transport
from wire import (
    FORMATS,
    RELAY_KEY,
    RawHTTP,
    chat_body,
    check_wire,
    closed_port,
    fetch,
    mounts,
    relay_host,
)

TRANSPORTS: tuple[Transport, ...] = ("native", "aiohttp", "httpx")


# Hostile upstreams ---------------------------------------------------------------------------


class Redirector:
    """Answers every request with a redirect to ``target`` (another host:port)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.target = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        location = self.target + scope["path"]
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def quoting_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream that quotes the key it was sent, as OpenAI's 401 does, in three places:
    an error body, an error header, and mid-stream (split across two writes)."""
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    key = headers.get(b"authorization", b"").removeprefix(b"Bearer ")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    mode = json.loads(body).get("mode")
    if mode == "401":
        error = b'{"error":{"message":"Incorrect API key provided: ' + key + b'","code":"x"}}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-request-id", b"req-" + key),
                    (b"content-length", str(len(error)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": error})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )

    def data(content: bytes, finish: bytes = b"null") -> bytes:
        return (
            b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
            b'"delta":{"content":"' + content + b'"},"finish_reason":' + finish + b"}]}\n\n"
        )

    event = data(b"your key is " + key + b"!")
    cut = event.index(key) + len(key) // 2
    for piece in (data(b"Hello. "), event[:cut], event[cut:], data(b"", b'"stop"')):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        await asyncio.sleep(0.05)  # separate reads: the key straddles two of them
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


REDIRECTORS = {"302": Redirector(302), "307": Redirector(307)}
"""Their targets are set by the test: the session's simulator."""


async def not_streaming(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 200 with a whole JSON completion (or an HTML page), ignoring ``stream``."""
    if scope["type"] != "http":
        return
    html = b"html" in scope.get("query_string", b"") or scope["path"].startswith("/html")
    body = b"<html>maintenance</html>" if html else b'{"object":"chat.completion"}'
    kind = b"text/html" if html else b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict[str, str]]:
    """Base URLs of the hostile upstreams (``/v1``)."""
    with (
        ServerThread(REDIRECTORS["302"]) as r302,
        ServerThread(REDIRECTORS["307"]) as r307,
        ServerThread(quoting_upstream) as quoting,
        ServerThread(not_streaming) as plain,
    ):
        yield {
            "302": r302.url + "/v1",
            "307": r307.url + "/v1",
            "quoting": quoting.url + "/v1",
            "json": plain.url + "/v1",
            "html": plain.url + "/html/v1",
        }


def by_user(request: Any, body: dict[str, Any]) -> str | None:
    return request.headers.get("x-user")


def keyed(url: str, transport: Transport = "auto") -> Upstream:
    return Upstream(url, api_key=RELAY_KEY, transport=transport)


@pytest.fixture(scope="module")
def relay(upstream: str, hostile: dict[str, str]) -> Iterator[str]:
    sim = keyed(upstream)
    relays: dict[str, StreamRelay] = {
        "/ai": StreamRelay(
            sim, limits=RequestLimits(max_body_bytes=4096, body_timeout=0.5, max_header_bytes=8192)
        ),
        "/quick": StreamRelay(sim, stream=StreamSettings(idle_timeout=0.3, first_byte_timeout=0.5)),
        "/limited": StreamRelay(
            sim,
            stream=StreamSettings(heartbeat=None),
            limits=RequestLimits(max_streams_per_principal=2),
            principal=by_user,
        ),
        "/by-address": StreamRelay(sim, limits=RequestLimits(max_streams_per_principal=1)),
        "/quoting": StreamRelay(keyed(hostile["quoting"])),
        "/quoting-httpx": StreamRelay(keyed(hostile["quoting"], "httpx")),
        "/dead": StreamRelay(keyed(f"http://127.0.0.1:{closed_port()}/v1")),
    }
    for transport in TRANSPORTS:
        for media in ("json", "html"):
            relays[f"/{media}-{transport}"] = StreamRelay(keyed(hostile[media], transport))
        relays[f"/dns-{transport}"] = StreamRelay(keyed("http://upstream.invalid/v1", transport))
        for status in ("302", "307"):
            relays[f"/redirect{status}-{transport}"] = StreamRelay(
                keyed(hostile[status], transport)
            )
    with ServerThread(relay_host(mounts(relays), list(relays.values()))) as server:
        yield server.url


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def raw_response(url: str, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes; return the status and the response body (by Content-Length)."""
    with RawHTTP(url, timeout=timeout) as conn:
        conn.sock.sendall(data)
        status, headers = conn.read_head()
        length = int(dict(headers).get("content-length", "0"))
        return status, conn.read_exact(length)


# Upstream faults ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_dns_failure_gets_502(client: httpx.Client, relay: str, transport: str, fmt: str) -> None:
    out = fetch(client, relay + f"/dns-{transport}/chat/completions", chat_body(), fmt=fmt)
    response = httpx.Response(out.status, headers=out.headers, content=out.raw)
    error = error_of(response, 502, "upstream_dns_failure")
    assert "upstream.invalid" in error["message"]
    assert error["type"] == "upstream_error"


@pytest.mark.parametrize("status", ["302", "307"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_redirect_is_never_followed(
    sim: Simulator,
    client: httpx.Client,
    relay: str,
    upstream: str,
    transport: str,
    status: str,
) -> None:
    """The redirect points at a live upstream on another host:port: following it would
    work, and would hand that host the key. Nothing may reach it."""
    REDIRECTORS[status].target = upstream.removesuffix("/v1")
    out = fetch(client, relay + f"/redirect{status}-{transport}/chat/completions", chat_body())
    response = httpx.Response(out.status, headers=out.headers, content=out.raw)
    error_of(response, 502, "upstream_redirect")
    assert sim.requests == [], "the redirect was followed"
    assert "location" not in response.headers


def test_unreachable_upstream_gets_502_in_every_format(client: httpx.Client, relay: str) -> None:
    for fmt in FORMATS:
        out = fetch(client, relay + "/dead/chat/completions", chat_body(), fmt=fmt)
        response = httpx.Response(out.status, headers=out.headers, content=out.raw)
        error_of(response, 502, "upstream_unreachable")


@pytest.mark.parametrize("media", ["json", "html"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_200_that_is_not_a_stream_gets_502(
    client: httpx.Client, relay: str, transport: str, media: str
) -> None:
    for fmt in FORMATS:
        out = fetch(client, relay + f"/{media}-{transport}/chat/completions", chat_body(), fmt=fmt)
        response = httpx.Response(out.status, headers=out.headers, content=out.raw)
        error_of(response, 502, "upstream_not_streaming")


class _OneShotUpstream:
    """Serves one request per connection with keep-alive, then reads the next request on
    it and closes the connection without answering: an upstream that dropped a request
    it received (or a keep-alive timeout racing a reuse). Records every request body."""

    SSE = (
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )

    def __init__(self) -> None:
        self.port = 0
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.bodies.append(await reader.readexactly(length))
                if served:
                    break
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"content-length: %d\r\n\r\n" % len(self.SSE) + self.SSE
                )
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            await server.serve_forever()

        asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_request_the_upstream_may_have_received_is_never_sent_again(
    client: httpx.Client, transport: Transport
) -> None:
    """RFC 9112 §9.3.1: a POST is not retried automatically. The second request goes on
    the pooled connection, the upstream reads it and drops the connection: the client
    gets a clear 502, and the upstream received each request exactly once (resending
    it, as the pool once did, started a second paid generation)."""
    upstream = _OneShotUpstream()
    threading.Thread(target=upstream.run, daemon=True).start()
    assert upstream.ready.wait(10)
    relay = StreamRelay(keyed(f"http://127.0.0.1:{upstream.port}/v1", transport))
    with ServerThread(relay_host(mounts({"/ai": relay}), [relay])) as server:
        url = server.url + "/ai/chat/completions?format=text"
        first = client.post(url, json={**chat_body(), "n": 1})
        assert (first.status_code, first.text) == (200, "hi")
        second = client.post(url, json={**chat_body(), "n": 2})
        if transport == "httpx" and second.status_code == 200:
            # httpx did not reuse the connection (the relay stops reading at [DONE],
            # before httpx saw the body end), so nothing was lost: also fine.
            assert second.text == "hi"
        else:
            error_of(second, 502, "upstream_connection_lost")
            assert "not sent again" in second.json()["error"]["message"]
    assert [json.loads(body)["n"] for body in upstream.bodies] == [1, 2]


# Bad client input ------------------------------------------------------------------------


def request_head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def test_a_body_that_arrives_too_slowly_gets_408(sim: Simulator, relay: str) -> None:
    body = json.dumps(chat_body()).encode()
    with RawHTTP(relay) as conn:
        conn.sock.sendall(request_head("/ai/chat/completions", len(body)) + body[:10])
        started = time.monotonic()
        status, headers = conn.read_head()  # the rest never comes
        waited = time.monotonic() - started
        payload = json.loads(conn.read_exact(int(dict(headers)["content-length"])))
    assert status == 408
    assert payload["error"]["code"] == "request_timeout"
    assert 0.4 < waited < 5
    assert sim.requests == []


def test_a_body_declared_over_the_limit_gets_413_before_it_is_sent(
    sim: Simulator, relay: str
) -> None:
    """Content-Length of 100 MB and no body byte sent: the answer comes at once."""
    with RawHTTP(relay) as conn:
        conn.sock.sendall(request_head("/ai/chat/completions", 100_000_000))
        status, headers = conn.read_head()
        payload = json.loads(conn.read_exact(int(dict(headers)["content-length"])))
    assert status == 413
    assert payload["error"]["code"] == "request_too_large"
    assert sim.requests == []


def test_head_gets_405(sim: Simulator, client: httpx.Client, relay: str) -> None:
    response = client.head(relay + "/ai/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert sim.requests == []


def test_oversized_headers_get_431(sim: Simulator, client: httpx.Client, relay: str) -> None:
    """uvicorn with httptools sets no header limit; the relay does (8 KiB here)."""
    headers = {f"x-filler-{n}": "f" * 1000 for n in range(10)}
    response = client.post(relay + "/ai/chat/completions", json=chat_body(), headers=headers)
    error_of(response, 431, "request_headers_too_large")
    assert sim.requests == []
    ok = client.post(relay + "/ai/chat/completions?format=text", json=chat_body(tokens=2))
    assert ok.status_code == 200


@pytest.mark.parametrize("value", ["text%0d%0aX-Injected:%201", "ndjson%0a", "sse%0d"])
def test_line_breaks_in_format_get_400(sim: Simulator, relay: str, value: str) -> None:
    body = json.dumps(chat_body()).encode()
    status, payload = raw_response(
        relay, request_head(f"/ai/chat/completions?format={value}", len(body)) + body
    )
    assert status == 400
    assert json.loads(payload)["error"]["code"] == "invalid_format"
    assert sim.requests == []


@pytest.mark.parametrize("breaker", ["\r", "\n\r", "\x00"])
def test_line_breaks_in_a_header_value_are_refused(
    sim: Simulator, relay: str, breaker: str
) -> None:
    """The HTTP parser refuses them (400) before the relay runs; nothing goes upstream."""
    body = json.dumps(chat_body()).encode()
    extra = f"Accept: text/plain{breaker}X-Injected: 1\r\n"
    with RawHTTP(relay) as conn:
        conn.sock.sendall(request_head("/ai/chat/completions", len(body), extra) + body)
        status, _ = conn.read_head()
    assert status == 400
    assert sim.requests == []


def test_bad_requests_do_not_disturb_a_stream_in_flight(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(tokens=40, delay=0.02)
    bad: list[tuple[str, dict[str, Any]]] = [
        ("content", {"content": b"{not json"}),
        ("content", {"content": b"[1]"}),
        ("content", {"content": b'{"messages": 1}'}),
        ("content", {"content": b"x" * 5000}),
        ("json", {"headers": {"content-type": "text/plain"}}),
        ("json", {"params": {"format": "xml"}}),
        ("json", {"headers": {f"x-f{n}": "f" * 1000 for n in range(10)}}),
    ]
    with ThreadPoolExecutor(4) as pool:
        stream = pool.submit(fetch, client, relay + "/ai/chat/completions", body, fmt="ndjson")
        sim.stats.wait(timeout=10, started=1)
        statuses = []
        for kind, options in bad * 3:
            kwargs = dict(options)
            if kind == "json":
                kwargs["json"] = chat_body()
            kwargs.setdefault("headers", {}).setdefault("content-type", "application/json")
            if kind == "json" and options.get("headers", {}).get("content-type") == "text/plain":
                kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
            statuses.append(client.post(relay + "/ai/chat/completions", **kwargs).status_code)
        out = stream.result()
    assert sorted(set(statuses)) == [400, 406, 413, 415, 431], statuses
    check_wire(out)
    assert out.terminal == "done"
    assert out.content() == sim.expected_text(body)
    assert len(sim.requests) == 1  # only the stream went upstream


# Security -----------------------------------------------------------------------------------


def leaks(response: httpx.Response | Any) -> list[str]:
    raw = response.raw if hasattr(response, "raw") else response.content
    found = []
    if RELAY_KEY.encode() in raw:
        found.append("body")
    if any(RELAY_KEY in value for value in response.headers.values()):
        found.append("headers")
    return found


@pytest.mark.parametrize("path", ["/quoting", "/quoting-httpx"])
def test_a_key_quoted_by_the_upstream_is_redacted(
    client: httpx.Client, relay: str, path: str
) -> None:
    response = client.post(relay + path + "/chat/completions", json={**chat_body(), "mode": "401"})
    assert response.status_code == 401
    assert leaks(response) == []
    assert "Incorrect API key provided: [redacted]" in response.json()["error"]["message"]
    assert response.headers["x-upstream-request-id"] == "req-[redacted]"
    for fmt in FORMATS:
        out = fetch(client, relay + path + "/chat/completions", chat_body(), fmt=fmt)
        check_wire(out)
        assert out.terminal == "done"
        assert leaks(out) == [], fmt
        assert out.content() == "Hello. your key is [redacted]!", fmt


def test_the_key_never_appears_in_responses_logs_or_exceptions(
    sim: Simulator, client: httpx.Client, relay: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every outcome, with every logger (ours, uvicorn, aiohttp, httpx, httpcore) at DEBUG."""
    caplog.set_level(logging.DEBUG)
    cases: list[tuple[str, dict[str, Any], str | None]] = [
        ("/ai", chat_body(tokens=3), fmt)
        for fmt in FORMATS  # clean
    ]
    for fault in ("mid_error", "abrupt_close", "truncate", "invalid_utf8", "non_json"):
        cases += [("/ai", chat_body(fault=fault, after=1), fmt) for fmt in ("text", "openai")]
    cases += [
        ("/ai", chat_body(fault="status", status=401), "sse"),
        ("/ai", chat_body(fault="status", status=503, body="html"), "sse"),
        ("/quick", chat_body(fault="stall", after=1), "ndjson"),
        ("/quick", chat_body(fault="stall_headers"), "ndjson"),
        ("/dead", chat_body(), "sse"),
        ("/dns-aiohttp", chat_body(), "sse"),
        ("/dns-httpx", chat_body(), "sse"),
        ("/redirect307-aiohttp", chat_body(), "sse"),
        ("/quoting", {**chat_body(), "mode": "401"}, "sse"),
        ("/quoting", chat_body(), "openai"),
        ("/ai", {"messages": "x"}, "sse"),
    ]
    for path, body, fmt in cases:
        out = fetch(client, relay + path + "/chat/completions", body, fmt=fmt)
        assert leaks(out) == [], (path, body, fmt)
    # The key did go upstream (so there was something to leak).
    assert any(r.authorization == f"Bearer {RELAY_KEY}" for r in sim.requests)
    time.sleep(0.2)  # the last streams' log lines
    assert len(caplog.records) > len(cases)
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        assert RELAY_KEY not in text, (record.name, text[:500])
    relay_object = StreamRelay(keyed("https://api.example.com/v1"))
    assert RELAY_KEY not in repr(relay_object) + repr(relay_object.upstream)


def test_concurrent_streams_are_limited_per_principal(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    url = relay + "/limited/chat/completions?format=ndjson"
    body = chat_body(fault="stall", after=1)  # streams that stay open

    def open_for(user: str) -> RawHTTP:
        conn = RawHTTP(relay)
        conn.request("POST", "/limited/chat/completions?format=ndjson", body, {"x-user": user})
        assert conn.read_head()[0] == 200
        return conn

    alice = [open_for("alice"), open_for("alice")]
    try:
        sim.stats.wait(timeout=10, started=2)
        refused = client.post(url, json=chat_body(tokens=2), headers={"x-user": "alice"})
        error = error_of(refused, 429, "too_many_streams")
        assert "2" in error["message"]
        assert refused.headers["retry-after"] == "1"
        assert sim.stats.started == 2  # refused without an upstream call
        # Others are not affected, nor are requests with no principal.
        for headers in ({"x-user": "bob"}, {}):
            out = fetch(client, url, chat_body(tokens=2), headers=headers)
            assert out.terminal == "done"
        # A stream that ends (here: its client leaves) frees its slot.
        alice.pop().close()
        sim.stats.wait(timeout=10, cancelled=1)
        deadline = time.monotonic() + 5
        while True:
            out = fetch(client, url, chat_body(tokens=2), headers={"x-user": "alice"})
            if out.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert out.terminal == "done"
    finally:
        for conn in alice:
            conn.close()


def test_the_default_principal_is_the_client_address(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    with RawHTTP(relay) as conn:
        conn.request("POST", "/by-address/chat/completions", chat_body(fault="stall", after=1))
        assert conn.read_head()[0] == 200
        sim.stats.wait(timeout=10, started=1)
        refused = client.post(relay + "/by-address/chat/completions", json=chat_body())
        error_of(refused, 429, "too_many_streams")


# Injection: any content, every format, through the running relay ------------------------------

NASTY = [
    "\n", "\r", "\r\n", "\n\n", "\u2028", "\u2029", "\x85", "\x00", "data: ", "data: [DONE]\n\n",
    "[DONE]", "event: error\n", "id: 9\n", ": x\n", '{"type":"done"}\n', "\ufeff", "\\", '"',
    "😀", "東京", "\x1b[31m", "</script>", "%0d%0a",
]  # fmt: skip
content_tokens = st.lists(
    st.sampled_from(NASTY)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pieces=content_tokens)
def test_any_content_round_trips_exactly_through_the_relay(
    simulator_server: tuple[Simulator, ServerThread],
    client: httpx.Client,
    relay: str,
    pieces: list[str],
) -> None:
    body = chat_body(pieces=pieces)
    for fmt in FORMATS:
        out = fetch(client, relay + "/ai/chat/completions", body, fmt=fmt)
        check_wire(out)  # one terminal event, no forged fields, lines or [DONE]
        assert out.terminal == "done", fmt
        assert out.content() == "".join(pieces), fmt
        if fmt in ("ndjson", "sse"):
            deltas = [e for e in out.events if e["type"] == "delta"]
            assert [e["text"] for e in deltas] == [p for p in pieces if p], fmt
        elif fmt == "openai":
            assert out.data.count("[DONE]") == 1
