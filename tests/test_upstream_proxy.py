"""An outbound proxy from ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``, on every transport.

The "proxy" is the simulator itself: a forward proxy receives the request with the
absolute URL as its target, which uvicorn routes by its path. The upstream's host
(``upstream.invalid``) cannot resolve, so a stream that arrives went through the
proxy, and ``NO_PROXY`` sends the relay to DNS, which fails with a clear 502.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from streamrelay.upstream import Transport
from streamrelay.upstream.client import _env_proxy
from wire import chat_body, fetch, mounts, relay_host

UNRESOLVABLE = "http://upstream.invalid/v1"


def proxied_relay(transport: Transport) -> StreamRelay:
    """A relay to the unresolvable host (built after the test set the proxy environment)."""
    upstream = Upstream(UNRESOLVABLE, api_key="sk-proxy", transport=transport)
    return StreamRelay(upstream, stream=StreamSettings(heartbeat=None))


def serve(relay: StreamRelay) -> ServerThread:
    return ServerThread(relay_host(mounts({"/ai": relay}), closers=[relay]))


@pytest.fixture(params=["native", "aiohttp", "httpx"])
def transport_relay(
    request: pytest.FixtureRequest, upstream: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Transport, pytest.MonkeyPatch]]:
    """Sets the proxy to the simulator's address before the relay reads the environment."""
    proxy = upstream.removesuffix("/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    yield request.param, monkeypatch


def test_requests_go_through_the_proxy(
    transport_relay: tuple[Transport, pytest.MonkeyPatch], sim: Simulator, client: httpx.Client
) -> None:
    transport, _ = transport_relay
    relay = proxied_relay(transport)
    body = chat_body(tokens=4)
    with serve(relay) as server:
        out = fetch(client, server.url + "/ai/chat/completions", body, fmt="ndjson")
    assert out.status == 200, out.raw[:300]
    assert out.content() == sim.expected_text(body)
    assert sim.requests[-1].headers["host"] == "upstream.invalid"


def test_no_proxy_exempts_the_upstream(
    transport_relay: tuple[Transport, pytest.MonkeyPatch], sim: Simulator, client: httpx.Client
) -> None:
    transport, monkeypatch = transport_relay
    monkeypatch.setenv("NO_PROXY", "upstream.invalid")
    relay = proxied_relay(transport)
    with serve(relay) as server:
        out = fetch(client, server.url + "/ai/chat/completions", chat_body(), fmt="ndjson")
    assert out.status == 502
    assert out.headers["content-type"].startswith("application/json")
    assert "upstream.invalid" in out.raw.decode()
    assert not sim.requests


def test_proxy_credentials_are_taken_from_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://u%40corp:p%3Ass@proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    proxy, headers = _env_proxy("https://api.openai.com/v1")
    assert proxy == "http://proxy.corp:3128"
    assert headers == {"proxy-authorization": "Basic " + base64.b64encode(b"u@corp:p:ss").decode()}
    assert _env_proxy("https://internal.corp/v1") == (None, None)
    assert _env_proxy("http://api.openai.com/v1") == (None, None)  # only HTTPS_PROXY is set


def test_proxy_credentials_reach_the_proxy(
    transport_relay: tuple[Transport, pytest.MonkeyPatch],
    upstream: str,
    sim: Simulator,
    client: httpx.Client,
) -> None:
    transport, monkeypatch = transport_relay
    monkeypatch.setenv("HTTP_PROXY", upstream.replace("http://", "http://relay:s%40cret@", 1)[:-3])
    relay = proxied_relay(transport)
    with serve(relay) as server:
        out = fetch(client, server.url + "/ai/chat/completions", chat_body(tokens=2), fmt="ndjson")
    assert out.status == 200, out.raw[:300]
    expected = "Basic " + base64.b64encode(b"relay:s@cret").decode()
    assert sim.requests[-1].headers["proxy-authorization"] == expected
    assert sim.requests[-1].headers["authorization"] == "Bearer sk-proxy"
