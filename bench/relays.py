"""The relays under test, each an ASGI app built from the upstream's base URL.

Every relay serves ``POST /v1/chat/completions`` and forwards the request body's
``model`` and ``messages`` to ``<upstream>/chat/completions``. The peers are written
the way their documentation and the posts people copy write them; where a library's
default would be an unfair handicap (httpx's 100-connection pool limit), it is lifted
and the report says so.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.chunked import Dechunker

__all__ = ["REDIS_ENV", "RELAYS", "Relay", "build_app", "find"]

REDIS_ENV = "STREAMRELAY_BENCH_REDIS"
"""The Redis URL of the Redis store's row (``python -m bench`` starts a redis-server
and sets it when ``redis-server`` is installed)."""

COMPILED_SITE = Path(__file__).resolve().parent.parent / "build" / "compiled" / "site"
"""Where ``make compiled`` puts the compiled (mypyc) build of streamrelay."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_AUTH = {"authorization": "Bearer bench", "content-type": "application/json"}
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(frozen=True)
class Relay:
    """One relay under test.

    ``group`` is ``"ours"`` (streamrelay), ``"floor"`` (the raw-socket floor), ``"peer"``
    (counted for "best peer") or ``"extra"`` (informative only). ``baseline`` names the
    relay this one is with one option changed (a store, metrics, a transport): the report
    gives its CPU per token as a ratio to that relay's, measured in the same rounds.
    """

    name: str
    label: str
    group: str
    factory: str  # "module:function" taking the upstream base URL, returning an ASGI app
    query: str = ""
    requires: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # environment variables it needs
    baseline: str | None = None  # the same relay without this one's option
    compiled: bool = False  # runs on the compiled build (make compiled)

    @property
    def target(self) -> str:
        """The request target the load client uses."""
        return "/v1/chat/completions" + self.query

    def unavailable(self) -> str | None:
        """Why this relay cannot run here, or ``None`` if it can."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except Exception as exc:  # any import failure means "skip", with the reason
                return f"cannot import {module}: {exc}"
        for name in self.env:
            if not os.environ.get(name):
                return f"{name} is not set (redis-server not found?)"
        if self.compiled and not any((COMPILED_SITE / "streamrelay").glob("transcoder.*.so")):
            return f"no compiled build in {COMPILED_SITE} (make compiled)"
        if self.group == "ours":
            import streamrelay

            if not hasattr(streamrelay, "StreamRelay"):
                return "streamrelay.StreamRelay does not exist yet"
        return None

    @classmethod
    def parse(cls, spec: str) -> Relay:
        """A relay from ``NAME=module:function[?query]`` (the ``--extra`` option)."""
        name, sep, rest = spec.partition("=")
        factory, _, query = rest.partition("?")
        if not sep or ":" not in factory:
            raise ValueError(f"expected NAME=module:function[?query], got {spec!r}")
        return cls(name, name, "extra", factory, f"?{query}" if query else "")


def build_app(factory: str, upstream: str) -> ASGIApp:
    """Import ``module:function`` and call it with the upstream base URL."""
    module, _, function = factory.partition(":")
    app: ASGIApp = getattr(importlib.import_module(module), function)(upstream)
    return app


# --- streamrelay --------------------------------------------------------------------------


def streamrelay_app(upstream: str, transport: Any = "auto") -> ASGIApp:
    """streamrelay mounted at ``/v1``, as its README shows; the format comes from ``?format=``."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from streamrelay import StreamRelay, StreamSettings, Upstream

    relay = StreamRelay(
        Upstream(upstream, api_key="bench", transport=transport),
        stream=StreamSettings(heartbeat=None),
    )
    return Starlette(routes=[Mount("/v1", app=relay)])


def streamrelay_compiled_app(upstream: str) -> ASGIApp:
    """:func:`streamrelay_app` on the compiled build (``make compiled``): what mypyc saves."""
    import sys

    if "streamrelay" in sys.modules:
        raise RuntimeError("streamrelay was imported before the compiled build was put first")
    sys.path.insert(0, str(COMPILED_SITE))
    import streamrelay.transcoder

    if not (streamrelay.transcoder.__file__ or "").endswith(".so"):
        raise RuntimeError(f"not the compiled build: {streamrelay.transcoder.__file__}")
    return streamrelay_app(upstream)


def streamrelay_bare_app(upstream: str) -> ASGIApp:
    """streamrelay as the server's app, under ``/v1`` by ``streamrelay.dispatch.mount_asgi``
    (no Starlette: what Starlette's ``Mount`` and its middleware cost per token)."""
    from streamrelay import StreamRelay, StreamSettings, Upstream
    from streamrelay.dispatch import mount_asgi

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    relay = StreamRelay(Upstream(upstream, api_key="bench"), stream=StreamSettings(heartbeat=None))
    return mount_asgi(not_found, {"/v1": relay})


def streamrelay_memory_store_app(upstream: str) -> ASGIApp:
    """streamrelay with resumable streams in memory (``store=MemoryStore()``)."""
    from streamrelay.stores import MemoryStore

    return _streamrelay_with(upstream, store=MemoryStore(ttl=60))


def streamrelay_redis_store_app(upstream: str) -> ASGIApp:
    """streamrelay with resumable streams on Redis (``STREAMRELAY_BENCH_REDIS``)."""
    import os

    from streamrelay.stores import RedisStore

    return _streamrelay_with(upstream, store=RedisStore(os.environ[REDIS_ENV], ttl=60))


def streamrelay_metrics_app(upstream: str) -> ASGIApp:
    """streamrelay with Prometheus metrics on (``metrics=PrometheusMetrics()``, on a registry
    of its own: every series is recorded, none is scraped)."""
    from prometheus_client import CollectorRegistry

    from streamrelay.metrics import PrometheusMetrics

    return _streamrelay_with(upstream, metrics=PrometheusMetrics(CollectorRegistry()))


def _streamrelay_with(upstream: str, store: Any = None, metrics: Any = None) -> ASGIApp:
    """:func:`streamrelay_app`'s relay with a ``store=`` or ``metrics=`` option."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from streamrelay import StreamRelay, StreamSettings, Upstream

    relay = StreamRelay(
        Upstream(upstream, api_key="bench"),
        stream=StreamSettings(heartbeat=None),
        store=store,
        metrics=metrics,
    )
    return Starlette(routes=[Mount("/v1", app=relay)])


def relay_response_app(upstream: str) -> ASGIApp:
    """streamrelay's handler helper in the host's own route (``relay_response``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from streamrelay import StreamSettings, Upstream, relay_response

    shared = Upstream(upstream, api_key="bench")
    settings = StreamSettings(heartbeat=None)

    async def chat(request: Request) -> Response:
        body = await request.json()
        return relay_response(shared.request("/chat/completions", body), request, stream=settings)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def sse_events_app(upstream: str) -> ASGIApp:
    """sse-starlette's ``EventSourceResponse`` fed by ``streamrelay.sse_events``."""
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    from streamrelay import Upstream, sse_events

    shared = Upstream(upstream, api_key="bench")

    async def chat(request: Request) -> EventSourceResponse:
        body = await request.json()
        return EventSourceResponse(sse_events(shared.request("/chat/completions", body)))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def streamrelay_aiohttp_app(upstream: str) -> ASGIApp:
    """The same on the aiohttp transport: what the native transport saves."""
    return streamrelay_app(upstream, "aiohttp")


# --- the raw-socket floor ---------------------------------------------------------------


class _Passthrough:
    """The floor's "transcoder": the upstream's bytes unchanged."""

    terminated = False

    def feed_bytes(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        return b""


def _raw_socket_app(upstream: str, make_transcoder: Callable[[], Any], media_type: str) -> ASGIApp:
    """One plain asyncio socket per stream, no HTTP client library; each de-chunked read
    goes through ``make_transcoder()``'s ``feed_bytes`` and out in one ASGI send."""
    url = urlsplit(upstream)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path.rstrip("/") + "/chat/completions"
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer bench\r\n"
        "content-type: application/json\r\naccept: text/event-stream\r\n"
    ).encode()
    headers = [(b"content-type", media_type.encode())]
    headers += [(k.encode(), v.encode()) for k, v in _SSE_HEADERS.items()]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan_noop(receive, send)
            return
        body = await _read_body(receive)
        transcoder = make_transcoder()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head + b"content-length: %d\r\n\r\n%s" % (len(body), body))
            response_head = await reader.readuntil(b"\r\n\r\n")
            status = int(response_head.split(b" ", 2)[1])
            await send({"type": "http.response.start", "status": status, "headers": headers})
            dechunker = Dechunker()
            while not dechunker.finished and not transcoder.terminated:
                data = await reader.read(65536)
                if not data:
                    break
                out = transcoder.feed_bytes(dechunker.feed(data))
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            await send({"type": "http.response.body", "body": transcoder.end(), "more_body": False})
        finally:
            writer.close()

    return app


def floor_app(upstream: str) -> ASGIApp:
    """The least a Python ASGI relay can do: one plain asyncio socket per stream, no HTTP
    client library, the upstream's de-chunked bytes forwarded as they arrive."""
    return _raw_socket_app(upstream, _Passthrough, "text/event-stream; charset=utf-8")


def core_on_floor_app(upstream: str) -> ASGIApp:
    """The floor's socket with streamrelay's sans-I/O ``Transcoder`` (ndjson) in the loop:
    what streamrelay's own decoding and encoding cost on the cheapest possible transport."""
    import time

    from streamrelay.formats import FORMATS, encoder_for
    from streamrelay.transcoder import Transcoder

    return _raw_socket_app(
        upstream,
        lambda: Transcoder(encoder_for("ndjson", now=time.time())),
        FORMATS["ndjson"].media_type,
    )


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _lifespan_noop(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --- the hand-written reference relay -----------------------------------------------------


def reference_app(upstream: str) -> ASGIApp:
    """The pattern the posts teach: the openai SDK with ``stream=True``, a Starlette
    ``StreamingResponse``, and ``data: <content>\\n\\n`` per delta (SDK defaults kept)."""
    from openai import AsyncOpenAI
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    client = AsyncOpenAI(base_url=upstream, api_key="bench")

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        stream = await client.chat.completions.create(
            model=body["model"], messages=body["messages"], stream=True
        )

        async def generate() -> AsyncIterator[str]:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield f"data: {chunk.choices[0].delta.content}\n\n"

        return StreamingResponse(generate(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


# --- httpx-based peers ------------------------------------------------------------------


def _httpx_client() -> Any:
    """One shared ``httpx.AsyncClient``. The default pool stops at 100 connections, which
    would queue streams past 100 and measure the limit rather than the library."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
    return httpx.AsyncClient(timeout=None, limits=limits)


def sse_starlette_app(upstream: str) -> ASGIApp:
    """sse-starlette's ``EventSourceResponse`` fed by httpx-sse, each upstream event's data
    forwarded as one event (``[DONE]`` included)."""
    from httpx_sse import aconnect_sse
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    client = _httpx_client()
    url = upstream.rstrip("/") + "/chat/completions"

    async def chat(request: Request) -> EventSourceResponse:
        body = await request.json()

        async def events() -> AsyncIterator[dict[str, str]]:
            async with aconnect_sse(client, "POST", url, json=body, headers=_AUTH) as source:
                async for event in source.aiter_sse():
                    yield {"data": event.data}

        return EventSourceResponse(events())

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def httpx_app(upstream: str) -> ASGIApp:
    """A byte passthrough: ``httpx.AsyncClient.send(stream=True)`` into ``StreamingResponse``."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    client = _httpx_client()
    url = upstream.rstrip("/") + "/chat/completions"

    async def chat(request: Request) -> StreamingResponse:
        body = await request.body()
        upstream_request = client.build_request("POST", url, content=body, headers=_AUTH)
        response = await client.send(upstream_request, stream=True)
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers=_SSE_HEADERS,
            media_type=response.headers.get("content-type"),
            background=BackgroundTask(response.aclose),
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


# --- aiohttp passthrough (informative extra) ------------------------------------------------


def aiohttp_app(upstream: str) -> ASGIApp:
    """A byte passthrough with aiohttp's client (unlimited connector) into ``StreamingResponse``."""
    import aiohttp
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    url = upstream.rstrip("/") + "/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await sessions[0].close()

    async def chat(request: Request) -> StreamingResponse:
        body = await request.body()
        response = await sessions[0].post(url, data=body, headers=_AUTH)

        async def forward() -> AsyncIterator[bytes]:
            try:
                async for data in response.content.iter_any():
                    yield data
            finally:
                response.release()

        return StreamingResponse(
            forward(),
            status_code=response.status,
            headers=_SSE_HEADERS,
            media_type=response.headers.get("content-type"),
        )

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan
    )


# --- the registry -----------------------------------------------------------------------

_SR = "bench.relays:streamrelay_app"
_NDJSON = "streamrelay-ndjson"
RELAYS: tuple[Relay, ...] = (
    Relay("floor", "raw-socket floor", "floor", "bench.relays:floor_app"),
    Relay(_NDJSON, "streamrelay ndjson", "ours", _SR, "?format=ndjson", ("streamrelay",)),
    Relay("streamrelay-sse", "streamrelay sse", "ours", _SR, "?format=sse", ("streamrelay",)),
    Relay("streamrelay-text", "streamrelay text", "ours", _SR, "?format=text", ("streamrelay",)),
    Relay(
        "streamrelay-openai", "streamrelay openai", "ours", _SR, "?format=openai", ("streamrelay",)
    ),
    Relay(
        "streamrelay-ai-sdk", "streamrelay ai-sdk", "ours", _SR, "?format=ai-sdk", ("streamrelay",)
    ),
    Relay(
        "reference",
        "hand-written (openai SDK + StreamingResponse)",
        "peer",
        "bench.relays:reference_app",
        requires=("openai",),
    ),
    Relay(
        "sse-starlette",
        "sse-starlette + httpx-sse",
        "peer",
        "bench.relays:sse_starlette_app",
        requires=("sse_starlette", "httpx_sse"),
    ),
    Relay("httpx", "httpx passthrough", "peer", "bench.relays:httpx_app", requires=("httpx",)),
    Relay(
        "aiohttp", "aiohttp passthrough", "extra", "bench.relays:aiohttp_app", requires=("aiohttp",)
    ),
    Relay(
        "streamrelay-ndjson-aiohttp",
        "streamrelay ndjson on the aiohttp transport",
        "extra",
        "bench.relays:streamrelay_aiohttp_app",
        "?format=ndjson",
        ("streamrelay", "aiohttp"),
        baseline=_NDJSON,
    ),
    Relay(
        "relay-response-sse",
        "relay_response (sse) in a host route",
        "extra",
        "bench.relays:relay_response_app",
        "?format=sse",
        ("streamrelay",),
    ),
    Relay(
        "sse-starlette-sse-events",
        "sse-starlette fed by streamrelay.sse_events",
        "extra",
        "bench.relays:sse_events_app",
        requires=("sse_starlette", "streamrelay.sse_starlette"),
    ),
    Relay(
        "streamrelay-ndjson-memory",
        "streamrelay ndjson, memory store",
        "extra",
        "bench.relays:streamrelay_memory_store_app",
        "?format=ndjson",
        ("streamrelay.stores.memory",),
        baseline=_NDJSON,
    ),
    Relay(
        "streamrelay-ndjson-redis",
        "streamrelay ndjson, Redis store",
        "extra",
        "bench.relays:streamrelay_redis_store_app",
        "?format=ndjson",
        ("redis", "streamrelay.stores.redis"),
        (REDIS_ENV,),
        baseline=_NDJSON,
    ),
    Relay(
        "streamrelay-ndjson-metrics",
        "streamrelay ndjson, Prometheus metrics on",
        "extra",
        "bench.relays:streamrelay_metrics_app",
        "?format=ndjson",
        ("prometheus_client", "streamrelay.metrics.prometheus"),
        baseline=_NDJSON,
    ),
    Relay(
        "streamrelay-ndjson-bare",
        "streamrelay ndjson, no Starlette (mount_asgi)",
        "extra",
        "bench.relays:streamrelay_bare_app",
        "?format=ndjson",
        ("streamrelay.dispatch",),
        baseline=_NDJSON,
    ),
    Relay(
        "streamrelay-ndjson-compiled",
        "streamrelay ndjson, compiled build (mypyc)",
        "extra",
        "bench.relays:streamrelay_compiled_app",
        "?format=ndjson",
        baseline=_NDJSON,
        compiled=True,
    ),
    Relay(
        "core-on-floor",
        "streamrelay's transcoder on the floor's socket",
        "extra",
        "bench.relays:core_on_floor_app",
        requires=("streamrelay.transcoder",),
    ),
)


def find(name: str) -> Relay:
    """The relay called ``name``; raises ``KeyError`` listing the known names."""
    for relay in RELAYS:
        if relay.name == name:
            return relay
    raise KeyError(f"unknown relay {name!r}; known: {', '.join(r.name for r in RELAYS)}")
