"""The AI SDK's own ``DefaultChatTransport`` (in Node) against a live mount's ``POST /chat``,
and its ``reconnectToStream`` (``useChat({resume: true})``) after the first request's
connection is cut: the whole message once, with the same message id.

Run for ai 5.0.0 (the strictest schemas) and the project's ai 6 pin.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from client_oracle import node_modules, run_client
from streamrelay import StreamRelay, Upstream
from streamrelay.stores import MemoryStore
from streamrelay.testing import ServerThread, Simulator
from wire import RELAY_KEY, mounts, relay_host

pytestmark = pytest.mark.real

VERSIONS = ("ai-5.0.0", "ai")


def simulator_header(request: Any, body: dict[str, Any]) -> dict[str, Any]:
    options = request.headers.get("x-sim")
    return {**body, "simulator": json.loads(options)} if options else body


@pytest.fixture(scope="module")
def mount(upstream: str) -> Iterator[str]:
    relay = StreamRelay(
        Upstream(upstream, api_key=RELAY_KEY),
        default_model="sim-1",
        store=MemoryStore(),
        linger=10.0,
        prepare=simulator_header,
    )
    with ServerThread(relay_host(mounts({"/ai": relay}), [relay])) as server:
        yield server.url + "/ai"


def run(pkg: str, mount: str, chat: str, mode: str, sim: dict[str, Any]) -> dict[str, Any]:
    node_modules(pkg)
    result: dict[str, Any] = run_client("ai-sdk-live.mjs", pkg, mount, chat, mode, json.dumps(sim))
    return result


def text_of(message: dict[str, Any]) -> str:
    return "".join(p["text"] for p in message["parts"] if p["type"] == "text")


@pytest.mark.parametrize("pkg", VERSIONS)
def test_use_chat_transport_streams_an_answer(sim: Simulator, mount: str, pkg: str) -> None:
    out = run(pkg, mount, f"send-{pkg}", "send", {"tokens": 8, "fault": "reasoning"})
    assert out["errors"] == []
    message = out["message"]
    sent = sim.requests[-1].json()
    assert message["role"] == "assistant"
    assert text_of(message) == sim.expected_text(sent)
    reasoning = "".join(p["text"] for p in message["parts"] if p["type"] == "reasoning")
    assert reasoning == sim.expected_reasoning(sent)
    assert len(sim.requests) == 1


@pytest.mark.parametrize("pkg", VERSIONS)
def test_reconnect_to_stream_gives_the_whole_message_once(
    sim: Simulator, mount: str, pkg: str
) -> None:
    out = run(pkg, mount, f"resume-{pkg}", "resume", {"tokens": 40, "delay": 0.03})
    assert out["errors"] == []
    message = out["message"]
    assert message is not None
    assert message["id"] == out["firstMessageId"]
    assert text_of(message) == sim.expected_text(sim.requests[-1].json())
    assert sim.stats.started == 1  # the resume replayed; the upstream ran once
