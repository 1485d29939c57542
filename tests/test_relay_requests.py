"""The mount's request policy and what goes upstream, through real servers.

Errors before the first byte are real HTTP statuses with an OpenAI-shaped JSON
body; the simulator records every upstream request, so the tests can check what
the relay sent (and that a refused request sent nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from streamrelay import RequestLimits, RequestRejected, StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from wire import RELAY_KEY, chat_body, check_wire, closed_port, fetch, mounts, relay_host


def prepare_sync(request: Request, body: dict[str, Any]) -> dict[str, Any] | None:
    token = request.headers.get("x-app-token")
    if token is None:
        raise RequestRejected(401, "sign in first", code="unauthorized")
    if token == "banned":
        raise HTTPException(403, "not for you")
    if token == "keep":
        return None  # keep the body as it is
    return {**body, "messages": [{"role": "system", "content": "Be brief."}, *body["messages"]]}


async def prepare_async(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    if request.headers.get("x-app-token") != "ok":
        raise RequestRejected(
            403, "forbidden", code="forbidden", headers={"www-authenticate": "Bearer"}
        )
    body["user"] = "user-42"
    body["model"] = "sim-rewritten"
    return body


@pytest.fixture(scope="module")
def relay(upstream: str) -> Iterator[str]:
    sim = Upstream(upstream, api_key=RELAY_KEY)  # one upstream, shared by the mounts
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    relays = {
        "/ai": StreamRelay(
            Upstream(
                upstream,
                api_key=RELAY_KEY,
                forward_headers=["X-Trace-Id", "authorization", "Cookie", "OpenAI-Organization"],
            ),
            limits=RequestLimits(max_body_bytes=4096),
        ),
        "/sync": StreamRelay(sim, prepare=prepare_sync),
        "/async": StreamRelay(sim, prepare=prepare_async),
        "/models": StreamRelay(sim, allowed_models=["sim-1", "sim-2"]),
        "/capped": StreamRelay(sim, max_tokens=5),
        "/dead-native": StreamRelay(Upstream(dead, api_key=RELAY_KEY, transport="native")),
        "/dead-aiohttp": StreamRelay(Upstream(dead, api_key=RELAY_KEY, transport="aiohttp")),
        "/dead-httpx": StreamRelay(Upstream(dead, api_key=RELAY_KEY, transport="httpx")),
        "/slow": StreamRelay(sim, stream=StreamSettings(first_byte_timeout=0.5)),
    }
    with ServerThread(relay_host(mounts(relays), list(relays.values()))) as server:
        yield server.url


def error_of(response: httpx.Response | Any, status: int, code: str | None) -> dict[str, Any]:
    """Asserts an OpenAI-shaped JSON error and returns its ``error`` object."""
    if not isinstance(response, httpx.Response):
        response = httpx.Response(response.status, headers=response.headers, content=response.raw)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["code"] == code
    return error


# Statuses before the first byte -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "invalid_body"),
        (b'"hello"', "invalid_body"),
        (b'{"model": "sim-1"}', "invalid_messages"),
        (b'{"model": "sim-1", "messages": "hi"}', "invalid_messages"),
    ],
)
def test_bad_bodies_get_400(
    sim: Simulator, client: httpx.Client, relay: str, content: bytes, code: str
) -> None:
    response = client.post(
        relay + "/ai/chat/completions",
        content=content,
        headers={"content-type": "application/json"},
    )
    error_of(response, 400, code)
    assert sim.requests == []


def test_body_over_the_limit_gets_413(sim: Simulator, client: httpx.Client, relay: str) -> None:
    big = chat_body()
    big["messages"] = [{"role": "user", "content": "x" * 5000}]
    error_of(client.post(relay + "/ai/chat/completions", json=big), 413, "request_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        yield json.dumps(big).encode()[:3000]
        yield json.dumps(big).encode()[3000:]

    response = client.post(
        relay + "/ai/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    error_of(response, 413, "request_too_large")
    assert sim.requests == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_gets_415(
    sim: Simulator, client: httpx.Client, relay: str, content_type: str
) -> None:
    response = client.post(
        relay + "/ai/chat/completions",
        content=json.dumps(chat_body()),
        headers={"content-type": content_type},
    )
    error_of(response, 415, "unsupported_media_type")
    assert sim.requests == []


def test_a_missing_content_type_gets_415_and_no_upstream_call(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    """A cross-site ``fetch(..., {mode: "no-cors", body: blob})`` sends no Content-Type and
    so needs no CORS preflight; treating it as JSON let any page start a paid generation."""
    response = client.post(relay + "/ai/chat/completions", content=json.dumps(chat_body()))
    assert "content-type" not in response.request.headers
    error_of(response, 415, "unsupported_media_type")
    assert "got none" in response.json()["error"]["message"]
    assert sim.requests == []


def test_json_content_type_variants_are_accepted(client: httpx.Client, relay: str) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        out = fetch(
            client,
            relay + "/ai/chat/completions",
            content=json.dumps(chat_body(tokens=2)).encode(),
            headers={"content-type": content_type},
            fmt="ndjson",
        )
        check_wire(out)
        assert out.terminal == "done"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_gets_405_with_allow(client: httpx.Client, relay: str, method: str) -> None:
    response = client.request(method, relay + "/ai/chat/completions")
    error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/ai/", "/ai/embeddings", "/ai/chats", "/ai/v1/chat/completions"])
def test_unknown_path_gets_404(client: httpx.Client, relay: str, path: str) -> None:
    error_of(client.post(relay + path, json=chat_body()), 404, "not_found")


def test_trailing_slash_is_tolerated(client: httpx.Client, relay: str) -> None:
    out = fetch(client, relay + "/ai/chat/completions/", chat_body(tokens=2), fmt="ndjson")
    assert out.terminal == "done"


@pytest.mark.parametrize("transport", ["native", "aiohttp", "httpx"])
def test_unreachable_upstream_gets_502(client: httpx.Client, relay: str, transport: str) -> None:
    out = fetch(client, relay + f"/dead-{transport}/chat/completions", chat_body(), fmt="sse")
    error = error_of(out, 502, "upstream_unreachable")
    assert error["type"] == "upstream_error"


def test_no_upstream_headers_in_time_gets_504(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    out = fetch(client, relay + "/slow/chat/completions", chat_body(fault="stall_headers"))
    error = error_of(out, 504, "upstream_timeout")
    assert error["type"] == "upstream_error"
    sim.stats.wait(timeout=10, cancelled=1)  # and the upstream call was dropped


# What goes upstream -----------------------------------------------------------------------


def test_upstream_request_key_stream_and_headers(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(stream=False, tokens=3)
    body["stream"] = False
    out = fetch(
        client,
        relay + "/ai/chat/completions",
        body,
        fmt="ndjson",
        headers={
            "authorization": "Bearer client-token",
            "cookie": "session=abc",
            "x-trace-id": "trace-1",
            "x-not-listed": "nope",
            "openai-organization": "org-1",
        },
    )
    assert out.terminal == "done"
    (request,) = sim.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers.getlist("authorization") == [f"Bearer {RELAY_KEY}"]
    assert "cookie" not in request.headers
    assert request.headers["x-trace-id"] == "trace-1"
    assert request.headers["openai-organization"] == "org-1"
    assert "x-not-listed" not in request.headers
    assert request.headers["content-type"] == "application/json"
    sent = request.json()
    assert sent["stream"] is True
    assert sent["messages"] == body["messages"]
    assert sent["simulator"] == {"tokens": 3}  # unknown fields pass through


def test_stream_is_forced_when_absent(sim: Simulator, client: httpx.Client, relay: str) -> None:
    body = chat_body(tokens=2)
    del body["stream"]
    assert fetch(client, relay + "/ai/chat/completions", body, fmt="text").terminal == "done"
    assert sim.requests[-1].json()["stream"] is True


def test_sync_prepare_rewrites_the_body(sim: Simulator, client: httpx.Client, relay: str) -> None:
    body = chat_body(tokens=4)
    out = fetch(
        client, relay + "/sync/chat/completions", body, fmt="text", headers={"x-app-token": "t"}
    )
    sent = sim.requests[-1].json()
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *body["messages"]]
    assert out.content() == sim.expected_text(sent)

    fetch(
        client, relay + "/sync/chat/completions", body, fmt="text", headers={"x-app-token": "keep"}
    )
    assert sim.requests[-1].json()["messages"] == body["messages"]


@pytest.mark.parametrize(
    ("token", "status", "code"), [(None, 401, "unauthorized"), ("banned", 403, "rejected")]
)
def test_sync_prepare_rejects_without_calling_upstream(
    sim: Simulator, client: httpx.Client, relay: str, token: str | None, status: int, code: str
) -> None:
    headers = {"x-app-token": token} if token else {}
    response = client.post(relay + "/sync/chat/completions", json=chat_body(), headers=headers)
    error_of(response, status, code)
    assert sim.requests == []


def test_async_prepare_rewrites_and_rejects(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    response = client.post(relay + "/async/chat/completions", json=chat_body())
    error_of(response, 403, "forbidden")
    assert response.headers["www-authenticate"] == "Bearer"
    assert sim.requests == []

    out = fetch(
        client,
        relay + "/async/chat/completions",
        chat_body(tokens=2),
        fmt="ndjson",
        headers={"x-app-token": "ok"},
    )
    assert out.terminal == "done"
    sent = sim.requests[-1].json()
    assert sent["user"] == "user-42"
    assert sent["model"] == "sim-rewritten"
    assert out.events[0]["model"] == "sim-rewritten"


def test_allowed_models(sim: Simulator, client: httpx.Client, relay: str) -> None:
    for model in ("gpt-4o", None):
        body = chat_body()
        body["model"] = model
        error_of(
            client.post(relay + "/models/chat/completions", json=body), 403, "model_not_allowed"
        )
    assert sim.requests == []
    body = {**chat_body(tokens=2), "model": "sim-2"}
    assert fetch(client, relay + "/models/chat/completions", body, fmt="ndjson").terminal == "done"
    assert sim.requests[-1].json()["model"] == "sim-2"


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({}, {"max_tokens": 5}),
        ({"max_tokens": 50}, {"max_tokens": 5}),
        ({"max_tokens": 3}, {"max_tokens": 3}),
        ({"max_completion_tokens": 99}, {"max_completion_tokens": 5}),
    ],
)
def test_max_tokens_cap(
    sim: Simulator,
    client: httpx.Client,
    relay: str,
    given: dict[str, int],
    sent: dict[str, int],
) -> None:
    body = {**chat_body(), **given}
    out = fetch(client, relay + "/capped/chat/completions", body, fmt="ndjson")
    forwarded = sim.requests[-1].json()
    for key, value in sent.items():
        assert forwarded[key] == value
    cap = next(iter(sent.values()))
    assert len([e for e in out.events if e["type"] == "delta"]) == cap
    assert out.finish_reasons() == {0: "length"}


@pytest.mark.parametrize("value", [0, -1, "10", True, 2.5])
def test_invalid_max_tokens_gets_400(
    sim: Simulator, client: httpx.Client, relay: str, value: object
) -> None:
    body = {**chat_body(), "max_tokens": value}
    error_of(client.post(relay + "/capped/chat/completions", json=body), 400, "invalid_max_tokens")
    assert sim.requests == []


def test_browser_client_script_is_served(client: httpx.Client, relay: str) -> None:
    response = client.get(relay + "/ai/streamrelay.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    etag = response.headers["etag"]
    again = client.get(relay + "/ai/streamrelay.js", headers={"if-none-match": etag})
    assert again.status_code == 304
