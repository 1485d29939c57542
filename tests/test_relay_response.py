"""``relay_response`` from a host's own handlers, for every kind of source, through
real servers and sockets."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from starlette.responses import Response

from streamrelay import StreamSettings, relay_response
from streamrelay.testing import ServerThread, Simulator
from wire import FORMATS, MESSAGES, RawHTTP, chat_body, check_wire, fetch

QUIET = StreamSettings(heartbeat=None)
PIECES = ["Hello", ", ", "wor", "ld\n", "東京 🚀", ""]


def host_app(upstream: str) -> FastAPI:
    http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
    sdk = openai.AsyncOpenAI(base_url=upstream, api_key="unused", max_retries=0)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await http.aclose()
        await sdk.close()

    app = FastAPI(lifespan=lifespan)

    async def open_upstream(request: Request) -> httpx.Response:
        body = await request.json()
        req = http.build_request("POST", upstream + "/chat/completions", json=body)
        return await http.send(req, stream=True)

    @app.post("/httpx")
    async def from_httpx(request: Request) -> Response:
        return relay_response(await open_upstream(request), request, stream=QUIET)

    @app.post("/forced")
    async def forced(request: Request) -> Response:
        return relay_response(
            await open_upstream(request), request, format="ndjson", headers={"x-custom": "1"}
        )

    @app.post("/sdk")
    async def from_sdk(request: Request) -> Response:
        body = await request.json()
        stream = await sdk.chat.completions.create(
            model="sim-1",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_body={"simulator": body.get("simulator", {})},
            n=body.get("n", 1),
        )
        return relay_response(stream, request)

    @app.post("/sdk-models")
    async def from_sdk_models(request: Request) -> Response:
        """An async generator of the SDK's pydantic chunks."""
        body = await request.json()

        async def chunks() -> AsyncIterator[Any]:
            stream = await sdk.chat.completions.create(
                model="sim-1",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                extra_body={"simulator": body.get("simulator", {})},
            )
            async for chunk in stream:
                yield chunk

        return relay_response(chunks(), request)

    @app.post("/bytes")
    async def from_bytes(request: Request) -> Response:
        upstream_response = await open_upstream(request)

        async def raw() -> AsyncIterator[bytes]:
            try:
                async for piece in upstream_response.aiter_raw():
                    yield piece
            finally:
                await upstream_response.aclose()

        return relay_response(raw(), request)

    @app.post("/dicts")
    async def from_dicts(request: Request) -> Response:
        upstream_response = await open_upstream(request)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            try:
                async for line in upstream_response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        yield json.loads(line[6:])
            finally:
                await upstream_response.aclose()

        return relay_response(chunks(), request)

    @app.post("/text")
    async def from_text(request: Request) -> Response:
        fail = request.query_params.get("fail") == "1"

        async def pieces() -> AsyncIterator[str]:
            for piece in PIECES:
                yield piece
                await anyio.sleep(0.01)
            if fail:
                raise RuntimeError("the model fell over")

        return relay_response(pieces(), request)

    @app.post("/unstreamed")
    async def unstreamed(request: Request) -> Response:
        """A common mistake: the upstream call made without stream=True."""
        body = await request.json()
        response = await http.post(upstream + "/chat/completions", json=body)
        return relay_response(response, request)

    @app.post("/json-answer")
    async def json_answer(request: Request) -> Response:
        """The upstream answered JSON (the request forgot "stream": true)."""
        body = await request.json()
        req = http.build_request(
            "POST", upstream + "/chat/completions", json={**body, "stream": False}
        )
        return relay_response(await http.send(req, stream=True), request)

    @app.post("/empty")
    async def from_empty(request: Request) -> Response:
        async def nothing() -> AsyncIterator[str]:
            return
            yield  # pragma: no cover

        return relay_response(nothing(), request)

    return app


@pytest.fixture(scope="module")
def host(upstream: str) -> Iterator[str]:
    with ServerThread(host_app(upstream)) as server:
        yield server.url


def check_stream(sim: Simulator, out: Any, body: dict[str, Any]) -> None:
    check_wire(out)
    assert out.terminal == "done"
    assert out.content() == sim.expected_text(body)
    if out.fmt != "text" and body.get("n"):
        assert out.content(1) == sim.expected_text(body, 1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("source", ["/httpx", "/bytes", "/dicts", "/sdk", "/sdk-models"])
def test_upstream_sources(
    sim: Simulator, client: httpx.Client, host: str, source: str, fmt: str
) -> None:
    body = chat_body(fault="crlf", tokens=6)
    out = fetch(client, host + source, body, fmt=fmt)
    check_stream(sim, out, body)


@pytest.mark.parametrize("fmt", ["ndjson", "openai"])
@pytest.mark.parametrize("source", ["/httpx", "/sdk"])
def test_upstream_sources_several_choices(
    sim: Simulator, client: httpx.Client, host: str, source: str, fmt: str
) -> None:
    body = {**chat_body(tokens=4), "n": 2}
    check_stream(sim, fetch(client, host + source, body, fmt=fmt), body)


@pytest.mark.parametrize("fmt", FORMATS)
def test_text_source(client: httpx.Client, host: str, fmt: str) -> None:
    out = fetch(client, host + "/text", fmt=fmt)
    check_wire(out)
    assert out.terminal == "done"
    assert out.content() == "".join(PIECES)
    if fmt in ("ndjson", "sse"):
        assert [e["type"] for e in out.events][-2:] == ["finish", "done"]
    if fmt == "openai":
        # Chunks synthesized from the text, in the shape an OpenAI client expects.
        chunk = out.events[0]
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["choices"][0]["delta"] == {"content": "Hello"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_text_source(client: httpx.Client, host: str, fmt: str) -> None:
    out = fetch(client, host + "/empty", fmt=fmt)
    check_wire(out)
    assert out.terminal == "done"
    assert out.content() == ""


@pytest.mark.parametrize("fmt", FORMATS)
def test_failing_text_source(client: httpx.Client, host: str, fmt: str) -> None:
    out = fetch(client, host + "/text?fail=1", fmt=fmt)
    check_wire(out)
    assert out.terminal == "error"
    assert out.content() == "".join(PIECES)
    if out.error is not None:
        assert out.error["code"] == "upstream_closed"


@pytest.mark.parametrize("fmt", ["text", "ndjson", "openai"])
@pytest.mark.parametrize("source", ["/httpx", "/sdk", "/bytes"])
def test_mid_stream_errors(
    sim: Simulator, client: httpx.Client, host: str, source: str, fmt: str
) -> None:
    body = chat_body(fault="mid_error", after=3)
    out = fetch(client, host + source, body, fmt=fmt)
    check_wire(out)
    assert out.terminal == "error"
    assert out.content() == sim.expected_text({**body, "max_tokens": 3})
    if out.error is not None:
        assert out.error["code"] == "server_error"


@pytest.mark.parametrize("fmt", FORMATS)
def test_upstream_4xx_passes_through(
    sim: Simulator, client: httpx.Client, host: str, fmt: str
) -> None:
    body = chat_body(fault="status", status=429, message="easy")
    response = client.post(host + "/httpx", params={"format": fmt}, json=body)
    assert response.status_code == 429
    assert response.json()["error"]["message"] == "easy"
    assert response.headers["retry-after"] == "1"
    assert response.headers["retry-after-ms"] == "1000"
    assert response.headers["x-upstream-request-id"] == sim.requests[-1].request_id
    assert len(response.headers.get_list("x-request-id")) == 1


def test_unknown_format_gets_406(client: httpx.Client, host: str) -> None:
    response = client.post(host + "/text", params={"format": "xml"})
    assert response.status_code == 406
    assert response.headers["vary"] == "accept"  # as the mount answers it
    assert response.headers["cache-control"] == "no-store"
    error = response.json()["error"]
    assert error["code"] == "unsupported_format"
    assert all(name in error["message"] for name in FORMATS)


def test_forced_format_and_extra_headers(sim: Simulator, client: httpx.Client, host: str) -> None:
    body = chat_body(tokens=3)
    out = fetch(client, host + "/forced", body, headers={"accept": "text/plain"})
    assert out.headers["content-type"] == "application/x-ndjson"
    assert out.headers["x-custom"] == "1"
    check_wire(out)
    assert out.content() == sim.expected_text(body)


def test_negotiates_from_accept(client: httpx.Client, host: str) -> None:
    response = client.post(host + "/text", headers={"accept": "application/x-ndjson"})
    assert response.headers["content-type"] == "application/x-ndjson"


@pytest.mark.parametrize("source", ["/httpx", "/sdk", "/bytes", "/dicts"])
@pytest.mark.parametrize("fault", [None, "stall"])
def test_disconnect_cancels_the_source(
    sim: Simulator, host: str, source: str, fault: str | None
) -> None:
    body = chat_body(fault="stall", after=2) if fault else chat_body(tokens=400, delay=0.05)
    with RawHTTP(host) as conn:
        conn.request("POST", source + "?format=ndjson", body)
        assert conn.read_head()[0] == 200
        assert conn.read_chunk()
    assert sim.stats.wait(timeout=10, cancelled=1)
    sim.stats.wait_idle(timeout=10)


@pytest.mark.parametrize("route", ["/unstreamed", "/json-answer"])
def test_an_answer_that_is_not_a_stream_ends_like_on_the_mount(
    client: httpx.Client, host: str, route: str
) -> None:
    """An httpx response read whole (no stream=True) or a JSON answer: 502
    ``upstream_not_streaming``, as the mount answers, not a broken stream."""
    response = client.post(host + route + "?format=ndjson", json=chat_body(tokens=3))
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_not_streaming"


def test_an_exception_in_the_callers_generator_is_logged_with_its_traceback(
    client: httpx.Client, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = fetch(client, host + "/text?fail=1", fmt="ndjson")
    assert out.terminal == "error"
    raised = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert raised and raised[0].levelname == "ERROR"
    assert "the model fell over" in str(raised[0].exc_info[1])  # type: ignore[index]


def test_a_cut_text_stream_is_not_logged_as_a_crash_by_the_server(
    client: httpx.Client, host: str
) -> None:
    """``StreamAborted`` is how a failed ``text`` stream is cut: the stream's end line
    says so; the server must not add "Exception in ASGI application" and a traceback."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(handler)
    try:
        with (
            client.stream("POST", host + "/text?fail=1&format=text", json={}) as response,
            pytest.raises(httpx.RemoteProtocolError),
        ):
            response.read()  # cut: no terminating chunk
        time.sleep(0.2)
    finally:
        server_log.removeHandler(handler)
    assert not [r for r in records if r.exc_info], [r.getMessage() for r in records]
