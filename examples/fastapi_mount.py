"""FastAPI: mount the relay at /ai next to your own routes.

Run it against the offline simulator:

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.fastapi_mount:app --port 8000

    curl -N http://127.0.0.1:8000/ai/chat/completions?format=text \
      -H 'content-type: application/json' \
      -d '{"model": "sim-1", "messages": [{"role": "user", "content": "Hi"}]}'

Against OpenAI, set OPENAI_API_KEY instead of STREAMRELAY_UPSTREAM.
"""

from fastapi import FastAPI, Request

from streamrelay import RequestRejected, StreamRelay


async def prepare(request: Request, body: dict) -> dict:
    """Auth, quotas and prompt policy live here; raise RequestRejected to refuse."""
    if request.headers.get("x-demo-user") == "blocked":
        raise RequestRejected(403, "this user may not chat", code="forbidden")
    body["messages"].insert(0, {"role": "system", "content": "Answer briefly."})
    return body


relay = StreamRelay(allowed_models={"sim-1", "gpt-4o-mini"}, max_tokens=1024, prepare=prepare)

app = FastAPI()
app.mount("/ai", relay)


@app.get("/health")
async def health() -> dict:
    return {"ok": True}
