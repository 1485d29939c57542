"""relay_response(): stream from your own handler, whatever the source.

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.handler_helper:app --port 8000

    # an Upstream call, an httpx response, an openai SDK stream, or your own text generator:
    curl -N -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hi"}]}' \
      'http://127.0.0.1:8000/chat/upstream?format=text'
    curl -N -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hi"}]}' \
      'http://127.0.0.1:8000/chat/httpx?format=ndjson'
    curl -N -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hi"}]}' \
      'http://127.0.0.1:8000/chat/sdk?format=sse'
    curl -N 'http://127.0.0.1:8000/countdown?format=text'
"""

import os

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from streamrelay import Upstream, relay_response

UPSTREAM = os.environ.get("STREAMRELAY_UPSTREAM", "https://api.openai.com/v1")
KEY = os.environ.get("OPENAI_API_KEY", "unused")
# streamrelay's client for the upstream (key, connection pool, TLS): the same object a
# StreamRelay mount takes, so a mount and your handlers can share one.
upstream = Upstream(UPSTREAM, api_key=KEY)
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=httpx.Timeout(None, connect=10.0))


async def chat_upstream(request: Request):
    body = await request.json()
    call = upstream.request("/chat/completions", {"model": "sim-1", **body})
    return relay_response(call, request)  # sent when the response runs; a 4xx/5xx passes through


async def chat_httpx(request: Request):
    body = await request.json()
    response = await client.send(
        client.build_request(
            "POST",
            "/chat/completions",
            json={"model": "sim-1", **body, "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
        ),
        stream=True,
    )
    return relay_response(response, request)  # an upstream 4xx/5xx passes through


async def chat_sdk(request: Request):
    from openai import AsyncOpenAI  # pip install openai

    sdk = AsyncOpenAI(base_url=UPSTREAM, api_key=KEY)
    body = await request.json()
    stream = await sdk.chat.completions.create(
        model=body.get("model", "sim-1"), messages=body["messages"], stream=True
    )
    return relay_response(stream, request)


async def countdown(request: Request):
    async def pieces():
        for n in range(5, 0, -1):
            yield f"{n}…\n"
            await anyio.sleep(0.5)
        yield "liftoff\n"

    return relay_response(pieces(), request, default_format="text")


app = Starlette(
    routes=[
        Route("/chat/upstream", chat_upstream, methods=["POST"]),
        Route("/chat/httpx", chat_httpx, methods=["POST"]),
        Route("/chat/sdk", chat_sdk, methods=["POST"]),
        Route("/countdown", countdown),
    ]
)
