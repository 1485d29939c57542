"""Starlette: the relay as a Mount, with GZipMiddleware on the host (streams are exempt).

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.starlette_mount:app --port 8000
    curl -N -H 'accept: application/x-ndjson' -H 'content-type: application/json' \
      -d '{"model":"sim-1","messages":[{"role":"user","content":"Hi"}]}' \
      http://127.0.0.1:8000/ai/chat/completions
"""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from streamrelay import StreamRelay, StreamSettings


async def home(request):
    return PlainTextResponse("host app; the relay is at /ai/chat/completions")


app = Starlette(
    routes=[Route("/", home), Mount("/ai", StreamRelay(stream=StreamSettings(heartbeat=15.0)))],
    middleware=[Middleware(GZipMiddleware, minimum_size=100)],
)
