"""No framework at all: StreamRelay is a plain ASGI app, mounted with ``mount_asgi``.

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.bare_asgi:app --port 8000
    curl -N -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hi"}]}' \\
      'http://127.0.0.1:8000/ai/chat/completions?format=sse'

``mount_asgi`` routes ``/ai`` and everything below it to the relay with the scope a
mount should have (``root_path`` extended, so ``uvicorn --root-path`` keeps
working) and passes the lifespan events on, so the relay closes its upstream pool
on shutdown.
"""

from streamrelay import StreamRelay
from streamrelay.dispatch import mount_asgi


async def host(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan work of its own; mount_asgi leaves a silent app out
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send(
        {"type": "http.response.body", "body": b"host app; the relay is at /ai/chat/completions"}
    )


app = mount_asgi(host, {"/ai": StreamRelay()})
