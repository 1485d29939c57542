"""Format negotiation and the exact shape of each wire format, through real servers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from streamrelay import StreamRelay, Upstream
from streamrelay.testing import ServerThread, Simulator
from wire import FORMATS, RELAY_KEY, chat_body, check_wire, fetch, mounts, parse_sse, relay_host

MEDIA = {
    "text": "text/plain; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "sse": "text/event-stream",
    "openai": "text/event-stream",
}


@pytest.fixture(scope="module")
def relay(upstream: str) -> Iterator[str]:
    sim = Upstream(upstream, api_key=RELAY_KEY)
    relays = {
        "/ai": StreamRelay(sim),
        "/nd": StreamRelay(sim, default_format="ndjson"),
    }
    with ServerThread(relay_host(mounts(relays), list(relays.values()))) as server:
        yield server.url


def negotiated(
    client: httpx.Client, url: str, accept: str | None, query: str = "", *, stream: bool = True
) -> str:
    """The format the relay chose, told by the content type (and the body for SSE);
    ``json`` for the upstream's whole answer."""
    headers = {"accept": accept} if accept is not None else {}
    response = client.post(
        url + "/chat/completions" + query, json=chat_body(tokens=2, stream=stream), headers=headers
    )
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    if content_type == "application/json":
        assert response.json()["object"] == "chat.completion"
        return "json"
    if content_type == "text/event-stream":  # sse and openai share it
        return "sse" if b"\nevent: start\n" in response.content else "openai"
    return {MEDIA["text"]: "text", MEDIA["ndjson"]: "ndjson"}[content_type]


@pytest.mark.parametrize("fmt", FORMATS)
def test_query_format_wins(client: httpx.Client, relay: str, fmt: str) -> None:
    assert negotiated(client, relay + "/ai", "application/x-ndjson", f"?format={fmt}") == fmt


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        # An OpenAI client (it asks for none of ours) gets the OpenAI wire...
        ("text/event-stream", "openai"),  # go-openai and others send it for streams
        ("application/json", "openai"),  # what OpenAI SDKs send
        ("*/*", "openai"),  # the Vercel AI SDK's providers
        (None, "openai"),
        ("image/png", "openai"),
        ("text/plain;q=0.5, */*", "openai"),
        ("application/json;q=0.2, text/event-stream;q=0.8, text/plain;q=0.5", "openai"),
        # ... and a client that asks for one of ours gets it.
        ("application/x-ndjson", "ndjson"),
        ("application/jsonl", "ndjson"),
        ("text/plain", "text"),
        ("text/plain;q=0.5, application/x-ndjson;q=0.9", "ndjson"),
        ("application/x-ndjson;q=0, text/plain", "text"),
        ("image/png, text/plain;q=0.1", "text"),
        ("text/event-stream;q=0.5, application/x-ndjson", "ndjson"),
    ],
)
def test_accept_negotiation(client: httpx.Client, relay: str, accept: str | None, fmt: str) -> None:
    assert negotiated(client, relay + "/ai", accept) == fmt


@pytest.mark.parametrize(
    ("accept", "query", "fmt"),
    [
        (None, "", "json"),
        ("*/*", "", "json"),
        ("application/json", "", "json"),
        ("text/event-stream", "", "json"),  # as OpenAI answers it
        ("application/x-ndjson", "", "ndjson"),  # asking for a format means a stream
        ("text/plain", "", "text"),
        (None, "?format=sse", "sse"),
        (None, "?format=openai", "openai"),
    ],
)
def test_a_request_without_stream_true_gets_json_unless_it_asks_for_a_format(
    sim: Simulator, client: httpx.Client, relay: str, accept: str | None, query: str, fmt: str
) -> None:
    assert negotiated(client, relay + "/ai", accept, query, stream=False) == fmt
    # The upstream saw a stream exactly when the client gets one.
    assert sim.requests[-1].json().get("stream", False) is (fmt != "json")


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [(None, "ndjson"), ("*/*", "ndjson"), ("text/event-stream", "ndjson"), ("text/plain", "text")],
)
def test_configured_default_format_replaces_the_openai_wire_for_streams(
    client: httpx.Client, relay: str, accept: str | None, fmt: str
) -> None:
    assert negotiated(client, relay + "/nd", accept) == fmt
    assert negotiated(client, relay + "/nd", accept, stream=False) == (
        "json" if fmt == "ndjson" else fmt
    )


@pytest.mark.parametrize("name", ["xml", "", "SSE2", "json"])
def test_unknown_format_gets_406_listing_the_names(
    sim: Simulator, client: httpx.Client, relay: str, name: str
) -> None:
    response = client.post(
        relay + "/ai/chat/completions", params={"format": name}, json=chat_body()
    )
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "accept"
    assert response.headers["cache-control"] == "no-store"
    error = response.json()["error"]
    assert error["code"] == "unsupported_format"
    for known in FORMATS:
        assert known in error["message"]
    assert sim.requests == []


def test_streams_vary_on_accept(client: httpx.Client, relay: str) -> None:
    out = fetch(client, relay + "/ai/chat/completions", chat_body(tokens=1), fmt="sse")
    assert "accept" in out.headers["vary"].lower()


# Exact shapes --------------------------------------------------------------------------------

TRICKY = [
    "line one\nline two",
    "\r\n",
    "carriage\rreturn",
    "\n\ndata: forged\n\n",
    "event: error\r\ndata: {}\r\n\r\n",
    "sep\u2028ara\u2029tors\u0085",
    ": not a comment",
    '"quoted" \\ backslash',
    "東京 🚀",
    "\x00nul",
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_line_breaks_in_tokens_never_break_framing(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str
) -> None:
    body = chat_body(pieces=TRICKY)
    out = fetch(client, relay + "/ai/chat/completions", body, fmt=fmt)
    check_wire(out)
    assert out.terminal == "done"
    assert out.content() == "".join(TRICKY) == sim.expected_text(body)
    if fmt == "ndjson":
        # One event per line even for tools that split lines at U+2028 and friends.
        lines = out.raw.decode().splitlines()
        assert [json.loads(line)["type"] for line in lines][-1] == "done"
    if fmt == "sse":
        assert [e["text"] for e in out.events if e["type"] == "delta"] == TRICKY
        for line in out.raw.decode().splitlines():
            assert line == "" or line.startswith(("id: ", "event: ", "data: ", ": "))


def test_sse_events_are_numbered_and_typed(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = {**chat_body(tokens=3), "stream_options": {"include_usage": True}}
    out = fetch(client, relay + "/ai/chat/completions", body, fmt="sse")
    check_wire(out)
    completion = sim.completion(body)
    tokens = [completion["choices"][0]["message"]["content"]]
    assert [e["type"] for e in out.events] == [
        "start",
        "delta",
        "delta",
        "delta",
        "finish",
        "usage",
        "done",
    ]
    assert "".join(e["text"] for e in out.events if e["type"] == "delta") == tokens[0]
    assert out.events[-2] == {"type": "usage", **completion["usage"]}
    assert out.raw.startswith(b": stream open\nid: 1\nevent: start\ndata: {")


def test_ndjson_is_one_event_per_line(sim: Simulator, client: httpx.Client, relay: str) -> None:
    body = chat_body(tokens=2)
    out = fetch(client, relay + "/ai/chat/completions", body, fmt="ndjson")
    completion = sim.completion(body)
    lines = out.raw.split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == [
        {"type": "start", "id": completion["id"], "model": "sim-1"},
        *({"type": "delta", "index": 0, "text": e["text"]} for e in out.events[1:3]),
        {"type": "finish", "index": 0, "reason": "stop"},
        {"type": "done"},
    ]


def test_text_is_only_choice_zero_content(sim: Simulator, client: httpx.Client, relay: str) -> None:
    body = {**chat_body(tokens=4), "n": 3, "stream_options": {"include_usage": True}}
    out = fetch(client, relay + "/ai/chat/completions", body, fmt="text")
    assert out.raw.decode() == sim.expected_text(body, 0)
    assert not out.aborted


def test_openai_format_is_the_upstream_stream(
    sim: Simulator, client: httpx.Client, relay: str, upstream: str
) -> None:
    body = chat_body(tokens=3)
    out = fetch(
        client,
        relay + "/ai/chat/completions",
        body,
        headers={"accept": "application/json"},
        parse_as="openai",
    )
    check_wire(out)
    assert out.headers["content-type"] == "text/event-stream"
    with client.stream("POST", upstream + "/chat/completions", json=body) as direct:
        reference = b"".join(direct.iter_raw())
    # Byte for byte, apart from the opening comment.
    assert out.raw == b": stream open\n" + reference
    assert [e.data for e in parse_sse(out.raw).events][-1] == "[DONE]"
