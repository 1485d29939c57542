"""A host app for the server tests, run by ASGI servers in subprocesses.

The upstream is the test process's simulator, named by ``STREAMRELAY_UPSTREAM``.
Routes:

* ``/ai/...``: :class:`~streamrelay.StreamRelay` mounted in Starlette;
* ``/stored/...``: the same with a :class:`~streamrelay.stores.MemoryStore` (resumable);
* ``/raw``: the host's own route returning the upstream's raw OpenAI SSE (with
  a hop-by-hop ``Connection`` header, as hand-written relays often set), re-framed by
  :class:`~streamrelay.StreamRelayMiddleware`;
* ``/ticks``: a plain streaming response of the host, which the middleware marks;
* ``/health``: a JSON route of the host.

``STREAMRELAY_TEST_HEARTBEAT`` (seconds) sets the heartbeat of the relay and the
middleware; ``STREAMRELAY_TEST_SEND_TIMEOUT`` (seconds) the relay's send timeout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from streamrelay import StreamRelay, StreamRelayMiddleware, StreamSettings, Upstream
from streamrelay.stores import MemoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.middleware_reframe import UpstreamResponse

UPSTREAM = os.environ["STREAMRELAY_UPSTREAM"]
HEARTBEAT = float(os.environ.get("STREAMRELAY_TEST_HEARTBEAT", "15"))
SEND_TIMEOUT = float(os.environ.get("STREAMRELAY_TEST_SEND_TIMEOUT", "30"))

relay = StreamRelay(
    Upstream(UPSTREAM, api_key="sk-test"),
    stream=StreamSettings(heartbeat=HEARTBEAT, send_timeout=SEND_TIMEOUT),
)
# The same with resumable streams: a client that leaves does not stop the generation.
stored = StreamRelay(
    Upstream(UPSTREAM, api_key="sk-test"),
    stream=StreamSettings(heartbeat=HEARTBEAT, send_timeout=SEND_TIMEOUT),
    store=MemoryStore(),
    linger=5.0,
)
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=httpx.Timeout(None, connect=5.0))


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True, "server": request.scope.get("server")})


async def raw(request: Request) -> Response:
    body = await request.json()
    upstream = await client.send(
        client.build_request("POST", "/chat/completions", json={**body, "stream": True}),
        stream=True,
    )
    return UpstreamResponse(
        upstream, media_type="text/event-stream", headers={"connection": "keep-alive"}
    )


async def ticks(request: Request) -> Response:
    async def gen() -> AsyncIterator[bytes]:
        for n in range(5):
            yield f"tick {n}\n".encode()
            await anyio.sleep(0.05)

    return StreamingResponse(gen(), media_type="text/plain")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await relay.aclose()
    await stored.aclose()
    await client.aclose()


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/raw", raw, methods=["POST"]),
        Route("/ticks", ticks),
        Mount("/ai", relay),
        Mount("/stored", stored),
    ],
    middleware=[
        Middleware(
            StreamRelayMiddleware, paths=["/raw"], stream=StreamSettings(heartbeat=HEARTBEAT)
        )
    ],
    lifespan=lifespan,
)
