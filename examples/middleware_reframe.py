"""StreamRelayMiddleware: keep your existing OpenAI-proxy route, get every format for free.

Your route returns the upstream's raw OpenAI SSE; the middleware re-frames it
into what the client asked for, and puts anti-buffering headers on every
streaming response of the app.

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.middleware_reframe:app --port 8000
    curl -N -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hi"}]}' \
      'http://127.0.0.1:8000/chat?format=ndjson'
"""

import os
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from streamrelay import StreamRelayMiddleware

UPSTREAM = os.environ.get("STREAMRELAY_UPSTREAM", "https://api.openai.com/v1")
KEY = os.environ.get("OPENAI_API_KEY", "unused")
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=httpx.Timeout(None, connect=10.0))


class UpstreamResponse(StreamingResponse):
    """Streams an httpx response and closes it however the response ends.

    When the client leaves, the host's response is cancelled: Starlette then
    leaves the body iterator to the garbage collector and never runs a
    ``background`` task, so ``BackgroundTask(upstream.aclose)`` would keep the
    paid generation running. Closing in ``finally`` stops it at once.
    """

    def __init__(self, upstream: httpx.Response, **kwargs: Any) -> None:
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code, **kwargs)
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()


async def chat(request: Request):
    body = await request.json()
    upstream = await client.send(
        client.build_request(
            "POST",
            "/chat/completions",
            json={"model": "sim-1", **body, "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
        ),
        stream=True,
    )
    return UpstreamResponse(upstream, media_type=upstream.headers.get("content-type"))


app = Starlette(
    routes=[Route("/chat", chat, methods=["POST"])],
    middleware=[Middleware(StreamRelayMiddleware, paths=["/chat"])],
)
