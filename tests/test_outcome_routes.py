"""Every entry point labels its outcomes with where the stream came in (``route``), through
a real server: ``relay_response`` in a host route and the middleware re-framing one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from streamrelay import Outcome, StreamRelayMiddleware, Upstream, relay_response
from streamrelay.testing import ServerThread
from wire import RELAY_KEY, chat_body, fetch

SEEN: list[Outcome] = []


@pytest.fixture(scope="module")
def app_url(upstream: str) -> Iterator[str]:
    shared = Upstream(upstream, api_key=RELAY_KEY)
    client = httpx.AsyncClient(timeout=30)

    async def helper(request: Request) -> Response:
        body = await request.json()
        return relay_response(
            shared.request("/chat/completions", body), request, on_stream_end=SEEN.append
        )

    async def host(request: Request) -> Response:  # the host's own OpenAI SSE route
        body = await request.json()
        response = await client.send(
            client.build_request(
                "POST", upstream + "/chat/completions", json={**body, "stream": True}
            ),
            stream=True,
        )
        return StreamingResponse(response.aiter_raw(), media_type="text/event-stream")

    app = Starlette(
        routes=[
            Route("/helper", helper, methods=["POST"]),
            Route("/host", host, methods=["POST"]),
        ]
    )
    wrapped = StreamRelayMiddleware(app, paths=["/host"], on_stream_end=SEEN.append)
    with ServerThread(wrapped) as server:
        yield server.url


@pytest.mark.parametrize(
    ("path", "route"), [("/helper", "relay_response"), ("/host", "middleware")]
)
def test_outcomes_name_their_entry_point(
    client: httpx.Client, app_url: str, path: str, route: str
) -> None:
    SEEN.clear()
    out = fetch(client, app_url + path, chat_body(tokens=2), fmt="ndjson")
    assert out.terminal == "done"
    deadline = time.monotonic() + 5
    while not SEEN and time.monotonic() < deadline:
        time.sleep(0.01)
    (outcome,) = SEEN
    assert outcome.ok and outcome.route == route and outcome.format == "ndjson"
