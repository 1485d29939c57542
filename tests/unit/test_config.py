"""One configuration model: the settings objects validate once, and the three entry
points take the same objects and refuse the same mistakes the same way."""

from __future__ import annotations

import json
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from streamrelay import (
    ConfigurationError,
    RequestLimits,
    StreamRelay,
    StreamRelayMiddleware,
    StreamSettings,
    Upstream,
    relay_response,
)
from streamrelay.upstream.client import MissingAPIKeyWarning

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heartbeat": 0}, "heartbeat must be a positive number"),
        ({"heartbeat": -1.0}, "heartbeat"),
        ({"idle_timeout": float("nan")}, "idle_timeout"),
        ({"send_timeout": "30"}, "send_timeout"),
        ({"first_byte_timeout": True}, "first_byte_timeout"),
        ({"max_event_bytes": 100}, "max_event_bytes must be at least 1024"),
        ({"max_event_bytes": 4096.0}, "max_event_bytes must be an integer"),
    ],
)
def test_bad_stream_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        StreamSettings(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_body_bytes": 0}, "max_body_bytes must be a positive integer"),
        ({"body_timeout": 0}, "body_timeout"),
        ({"max_header_bytes": -5}, "max_header_bytes"),
        ({"max_streams_per_principal": 0}, "max_streams_per_principal"),
    ],
)
def test_bad_request_limits_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RequestLimits(**kwargs)


def test_settings_are_values() -> None:
    assert StreamSettings(heartbeat=5.0) == StreamSettings(heartbeat=5.0)
    with pytest.raises(AttributeError):
        StreamSettings().heartbeat = 1.0  # type: ignore[misc]


def test_none_disables_a_timeout() -> None:
    settings = StreamSettings(heartbeat=None, idle_timeout=None, send_timeout=None)
    assert settings.heartbeat is None and settings.idle_timeout is None


def request(query: bytes = b"", accept: bytes | None = None) -> Request:
    headers = [(b"accept", accept)] if accept is not None else []
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/chat",
            "root_path": "",
            "query_string": query,
            "headers": headers,
        }
    )


ENTRY_POINTS: dict[str, Callable[..., object]] = {
    "StreamRelay": lambda **kw: StreamRelay(URL, **kw),
    "StreamRelayMiddleware": lambda **kw: StreamRelayMiddleware(_host, ["/chat"], **kw),
    "relay_response": lambda **kw: relay_response(_never_source(), request(), **kw),
}


async def _host(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
    raise AssertionError("the host must not run")


async def _never_source() -> Any:  # pragma: no cover
    yield b""


@pytest.mark.parametrize(
    ("entry", "bad"),
    [
        (entry, bad)
        for entry in ENTRY_POINTS
        for bad in ["csv", "SSE ", None, 3]
        # None is the mount's default: OpenAI clients get the OpenAI wire.
        if not (bad is None and entry == "StreamRelay")
    ],
)
def test_a_bad_default_format_is_a_configuration_error_everywhere(entry: str, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="default_format must be one of"):
        ENTRY_POINTS[entry](default_format=bad)


def test_the_mount_default_format_is_none_and_takes_a_name() -> None:
    assert StreamRelay("http://127.0.0.1:9/v1").default_format is None
    assert StreamRelay("http://127.0.0.1:9/v1", default_format="ndjson").default_format == "ndjson"


def test_relay_response_refuses_a_bad_default_even_when_the_request_names_a_format() -> None:
    with pytest.raises(ConfigurationError, match="default_format"):
        relay_response(_never_source(), request(b"format=ndjson"), default_format="csv")
    with pytest.raises(ConfigurationError, match="format must be one of"):
        relay_response(_never_source(), request(), format="csv")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_flat_settings_in_place_of_the_object_are_refused_clearly(entry: str) -> None:
    with pytest.raises(ConfigurationError, match=r"stream must be a StreamSettings.*stream="):
        ENTRY_POINTS[entry](stream={"heartbeat": 5})
    with pytest.raises(TypeError, match="heartbeat"):
        ENTRY_POINTS[entry](heartbeat=5)


def test_the_relay_takes_grouped_settings() -> None:
    upstream = Upstream(URL, api_key="sk-shared-key-0001", connect_timeout=2.0)
    settings = StreamSettings(heartbeat=5.0)
    limits = RequestLimits(max_body_bytes=2048)
    one = StreamRelay(upstream, stream=settings, limits=limits)
    two = StreamRelay(upstream, stream=settings, default_format="ndjson")
    assert one.upstream is two.upstream is upstream  # one pool, shared
    assert one.settings is settings and one.limits is limits
    assert two.limits == RequestLimits()
    with pytest.raises(ConfigurationError, match="limits must be a RequestLimits"):
        StreamRelay(URL, limits=settings)  # type: ignore[arg-type]


def test_a_url_string_means_an_upstream() -> None:
    relay = StreamRelay(URL)
    assert isinstance(relay.upstream, Upstream) and relay.upstream.base_url == URL


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://example.com"}, "http"),
        ({"url": URL, "transport": "curl"}, "transport must be"),
        ({"url": URL, "headers": {"x-a": "1\r\nx-b: 2"}}, "invalid upstream headers"),
        ({"url": URL, "connect_timeout": 0}, "connect_timeout"),
        ({"url": URL, "keepalive_expiry": -1}, "keepalive_expiry"),
        ({"url": "http://:80/v1"}, "no host"),
    ],
)
def test_bad_upstreams_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Upstream(**kwargs)


def test_allowed_models_as_a_string_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"allowed_models must be a list.*\['gpt-4o'\]"):
        StreamRelay(URL, allowed_models="gpt-4o")


def test_the_upstream_never_shows_its_key() -> None:
    upstream = Upstream(URL, api_key="sk-secret-value-123")
    assert "sk-secret" not in repr(upstream) and "sk-secret" not in repr(StreamRelay(upstream))


# The same bad request, the same answer, from all three -----------------------------------


async def call(app: Callable[..., Awaitable[None]], scope: dict[str, Any]) -> dict[str, Any]:
    messages: list[MutableMapping[str, Any]] = []
    body = json.dumps({"model": "m", "messages": []}).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    return {
        "status": start["status"],
        "headers": sorted((k, v) for k, v in start["headers"] if k != b"content-length"),
        "body": json.loads(b"".join(m.get("body", b"") for m in messages[1:])),
    }


def scope_for(path: str, query: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
    }


async def via_helper(scope: Any, receive: Any, send: Any) -> None:
    response: Response = relay_response(_never_source(), Request(scope, receive))
    await response(scope, receive, send)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [(b"format=csv", 406, "unsupported_format"), (b"format=sse%0Aevil", 400, "invalid_format")],
)
async def test_the_three_entry_points_refuse_a_format_the_same_way(
    query: bytes, status: int, code: str
) -> None:
    answers = {
        "mount": await call(StreamRelay(URL), scope_for("/chat/completions", query)),
        "middleware": await call(
            StreamRelayMiddleware(_host, ["/chat"]), scope_for("/chat", query)
        ),
        "helper": await call(via_helper, scope_for("/chat", query)),
    }
    mount = answers["mount"]
    assert mount["status"] == status and mount["body"]["error"]["code"] == code
    assert (b"cache-control", b"no-store") in mount["headers"]
    if status == 406:
        assert (b"vary", b"accept") in mount["headers"]
    assert answers["middleware"] == mount
    assert answers["helper"] == mount


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    "name",
    [
        "Content-Length",
        "transfer-encoding",
        "Connection",
        "keep-alive",
        "TE",
        "trailer",
        "upgrade",
        "host",
        "expect",
        "proxy-authorization",
        "Proxy-Connection",
    ],
)
def test_framing_and_hop_by_hop_headers_are_never_configurable(name: str) -> None:
    """A pooled upstream connection is shared by many users: a configured framing header
    would give requests conflicting framing on it (the shape of request smuggling)."""
    with pytest.raises(ConfigurationError, match="hop-by-hop or framing"):
        Upstream(URL, headers={name: "3"})
    with pytest.raises(ConfigurationError, match="hop-by-hop or framing"):
        Upstream(URL, forward_headers=[name])


def test_forward_headers_as_a_string_is_refused() -> None:
    with pytest.raises(
        ConfigurationError, match=r"forward_headers must be a list.*\['x-request-id'\]"
    ):
        Upstream(URL, forward_headers="x-request-id")


def test_ordinary_headers_are_accepted() -> None:
    upstream = Upstream(
        URL, headers={"OpenAI-Organization": "org-1"}, forward_headers=["X-Request-Id"]
    )
    assert upstream.forward_headers == {"x-request-id"}


@pytest.fixture
def no_env_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "STREAMRELAY_UPSTREAM", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_keyless_remote_upstream_warns_at_construction(no_env_upstream: None) -> None:
    """``StreamRelay()`` with no key would relay every request to OpenAI's 401."""
    with pytest.warns(MissingAPIKeyWarning, match="no API key for the upstream https://api"):
        StreamRelay()
    with pytest.warns(MissingAPIKeyWarning):
        Upstream("https://api.groq.com/openai/v1", api_key="")


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("http://127.0.0.1:11434/v1", {}),  # Ollama on this machine
        ("http://localhost:8000/v1", {}),
        ("http://[::1]:8000/v1", {}),
        ("http://10.0.3.7:8000/v1", {}),  # vLLM on the private network
        ("http://vllm:8000/v1", {}),  # a container's service name
        ("http://llm.internal/v1", {}),
        ("https://api.openai.com/v1", {"api_key": "sk-x"}),
        ("https://my.openai.azure.com/openai/deployments/d", {"headers": {"api-key": "k"}}),
    ],
)
def test_no_warning_when_the_upstream_is_local_or_has_credentials(
    no_env_upstream: None, url: str, kwargs: dict[str, Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Upstream(url, **kwargs)


@pytest.mark.parametrize(
    ("url", "suggestion"),
    [
        ("https://api.openai.com/v1/chat/completions", "https://api.openai.com/v1"),
        ("http://127.0.0.1:8000/v1/chat/completions/", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/responses", "http://127.0.0.1:8000/v1"),
        ("https://api.openai.com", "https://api.openai.com/v1"),
        ("https://openrouter.ai/v1", "https://openrouter.ai/api/v1"),
        ("https://api.groq.com/v1", "https://api.groq.com/openai/v1"),
    ],
)
def test_an_upstream_url_that_cannot_be_a_base_is_refused(url: str, suggestion: str) -> None:
    """The relay appends ``/chat/completions``: an endpoint URL, or a known provider
    without its version prefix, could only ever 404."""
    with pytest.raises(ConfigurationError, match=f"use '{suggestion}'"):
        Upstream(url, api_key="sk-x")


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://my.openai.azure.com/openai/deployments/gpt4o?api-version=2024-06-01",
        "https://api.groq.com/openai/v1",
        "http://127.0.0.1:11434/v1",
        "http://127.0.0.1:8000",  # an unknown server may serve at its root
    ],
)
def test_base_urls_are_accepted(url: str) -> None:
    assert Upstream(url, api_key="sk-x").base_url == url


def test_forward_header_names_must_be_strings() -> None:
    with pytest.raises(ConfigurationError, match="forward_headers must be header names, got 3"):
        Upstream(URL, forward_headers=[3])  # type: ignore[list-item]
