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

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from streamrelay import StreamRelayMiddleware

UPSTREAM = os.environ.get("STREAMRELAY_UPSTREAM", "https://api.openai.com/v1")
KEY = os.environ.get("OPENAI_API_KEY", "unused")
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=httpx.Timeout(None, connect=10.0))


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
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type"),
        background=BackgroundTask(upstream.aclose),
    )


app = Starlette(
    routes=[Route("/chat", chat, methods=["POST"])],
    middleware=[Middleware(StreamRelayMiddleware, paths=["/chat"])],
)
