"""No framework at all: StreamRelay is a plain ASGI app.

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.bare_asgi:app --port 8000
    curl -N -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hi"}]}' \
      'http://127.0.0.1:8000/ai/chat/completions?format=sse'
"""

from streamrelay import StreamRelay

relay = StreamRelay()


async def app(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith("/ai/"):
        # Tell the relay where it is mounted: it routes on the path below root_path.
        await relay({**scope, "root_path": scope.get("root_path", "") + "/ai"}, receive, send)
        return
    if scope["type"] == "lifespan":
        await relay(scope, receive, send)  # closes the upstream pool on shutdown
        return
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
