"""Litestar: the relay as an ASGI mount at /ai, next to Litestar's own routes.

Run it against the offline simulator:

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.litestar_mount:app --port 8000

    curl -N http://127.0.0.1:8000/ai/chat/completions?format=ndjson \
      -H 'content-type: application/json' \
      -d '{"model": "sim-1", "messages": [{"role": "user", "content": "Hi"}]}'
    curl http://127.0.0.1:8000/health

Against OpenAI, set OPENAI_API_KEY instead of STREAMRELAY_UPSTREAM.

``@asgi("/ai", is_mount=True)`` hands the relay ``path`` rewritten to the part
below the mount, with a trailing slash added (``/chat/completions/``); the relay
accepts that. Litestar's compression would re-encode the stream (it overrides the
relay's ``Content-Encoding: identity`` but flushes after every message, so tokens
still arrive one by one); ``exclude_opt_key`` leaves the relay's streams alone and
saves a gzip flush per token.
"""

from litestar import Litestar, asgi, get
from litestar.config.compression import CompressionConfig
from litestar.types import Receive, Scope, Send

from streamrelay import StreamRelay

relay = StreamRelay()


@asgi("/ai", is_mount=True, copy_scope=True, opt={"no_compression": True})
async def ai(scope: Scope, receive: Receive, send: Send) -> None:
    await relay(scope, receive, send)  # type: ignore[arg-type]


@get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@get("/about")
async def about() -> str:
    # Long enough for the compression middleware to gzip it.
    return "A Litestar host app. The relay lives at /ai/chat/completions. " * 20


app = Litestar(
    route_handlers=[ai, health, about],
    compression_config=CompressionConfig(
        backend="gzip", minimum_size=500, exclude_opt_key="no_compression"
    ),
    on_shutdown=[relay.aclose],  # mounts get no lifespan events of their own
)
