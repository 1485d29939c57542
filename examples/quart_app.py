"""Quart: the relay at /ai in front of Quart's ASGI app, next to Quart's own routes.

Quart has no ASGI mount, but like Flask's ``wsgi_app`` its ``asgi_app`` may be
wrapped; ``mount_asgi`` does that in one line. Run it against the offline simulator:

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 hypercorn examples.quart_app:app --bind 127.0.0.1:8000
    # or: uvicorn examples.quart_app:app --port 8000

    curl -N http://127.0.0.1:8000/ai/chat/completions?format=text \
      -H 'content-type: application/json' \
      -d '{"model": "sim-1", "messages": [{"role": "user", "content": "Hi"}]}'
    curl http://127.0.0.1:8000/health

Against OpenAI, set OPENAI_API_KEY instead of STREAMRELAY_UPSTREAM. Quart's own
lifespan (``before_serving``/``after_serving``) still runs, and the relay closes its
connection pool on shutdown.
"""

from quart import Quart

from streamrelay import StreamRelay
from streamrelay.dispatch import mount_asgi

app = Quart(__name__)


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


app.asgi_app = mount_asgi(app.asgi_app, {"/ai": StreamRelay()})  # type: ignore[method-assign]
