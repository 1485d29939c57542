"""A complete useChat app: the AI SDK's ``useChat`` page at ``/``, the relay at ``/ai``.

Build the page once (React, ``@ai-sdk/react`` and ``ai``, bundled by esbuild), then serve:

    npm ci --prefix js && node js/usechat/build.mjs examples/usechat/static
    .venv/bin/uvicorn examples.usechat.app:app --port 8000

Open http://127.0.0.1:8000/ and ask something. Stop stops the generation (``useChat``'s
``stop()`` and ``DELETE /ai/chat/{id}/stream``); a reload in the middle of an answer shows
it whole (``useChat({resume: true})`` and ``GET /ai/chat/{id}/stream``): the relay keeps
its streams in a ``MemoryStore``.

Without ``OPENAI_API_KEY`` (or ``STREAMRELAY_UPSTREAM``/``OPENAI_BASE_URL``), the answers
come from the embedded streamrelay simulator: offline, no key, model ``sim-1``. Open
``/?sim={"delay":0.2}`` for slower answers (the page sends ``?sim=`` as an ``x-sim``
header, which this app passes to the simulator only). With a key, the relay calls OpenAI
with ``gpt-4o-mini`` (``USECHAT_MODEL`` changes it):

    OPENAI_API_KEY=sk-... .venv/bin/uvicorn examples.usechat.app:app --port 8000

``USECHAT_STATIC`` serves the page from another directory than ``examples/usechat/static``.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streamrelay import RequestRejected, StreamRelay, Upstream
from streamrelay.stores import MemoryStore

STATIC = Path(os.environ.get("USECHAT_STATIC") or Path(__file__).parent / "static")

REAL = any(
    os.environ.get(name) for name in ("OPENAI_API_KEY", "STREAMRELAY_UPSTREAM", "OPENAI_BASE_URL")
)

if REAL:
    simulator = None
    upstream = Upstream()  # STREAMRELAY_UPSTREAM, OPENAI_BASE_URL or OpenAI; OPENAI_API_KEY
    model = os.environ.get("USECHAT_MODEL") or "gpt-4o-mini"
else:
    from streamrelay.testing import ServerThread, Simulator

    # The simulator on its own 127.0.0.1 port, reached over real HTTP like any upstream.
    simulator = ServerThread(Simulator(delay=0.05))
    simulator.start()
    upstream = Upstream(simulator.url + "/v1", api_key="unused")
    model = "sim-1"


async def simulator_options(request, body: dict) -> dict:
    """On the simulator, the page's ``x-sim`` header becomes the simulator's options."""
    options = request.headers.get("x-sim")
    if simulator is not None and options:
        try:
            body["simulator"] = json.loads(options)
        except ValueError:
            body["simulator"] = None
        if not isinstance(body["simulator"], dict):
            raise RequestRejected(400, "x-sim is not a JSON object", code="invalid_header")
    return body


relay = StreamRelay(
    upstream,
    default_model=model,  # useChat sends no model
    store=MemoryStore(),  # resume (GET) and stop (DELETE) of /ai/chat/{id}/stream
    prepare=simulator_options,
)


async def not_built(request):
    return PlainTextResponse(
        f"The page is not built: run `node js/usechat/build.mjs {STATIC}`", status_code=503
    )


@asynccontextmanager
async def lifespan(app):
    yield
    await relay.aclose()  # a mounted app gets no lifespan of its own
    if simulator is not None:
        simulator.stop()


page = (
    Mount("/", StaticFiles(directory=STATIC, html=True))
    if (STATIC / "index.html").is_file()
    else Route("/", not_built)
)
app = Starlette(routes=[Mount("/ai", relay), page], lifespan=lifespan)
