"""The front ends' routes on the mount, through a real server: ``POST /chat`` (the AI
SDK's ``DefaultChatTransport`` body, answered in ``ai-sdk``), its resume and stop
(``GET``/``DELETE /chat/{chatId}/stream``), and ``POST /ag-ui`` (a ``RunAgentInput``,
answered in ``ag-ui``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from client_oracle import node_modules, run_client
from streamrelay import StreamRelay, Upstream
from streamrelay.stores import MemoryStore
from streamrelay.testing import ServerThread, Simulator
from wire import RELAY_KEY, RawHTTP, mounts, relay_host


def system_prompt(request: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "messages": [{"role": "system", "content": "Be brief."}, *body["messages"]]}


def simulator_header(request: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The simulator's options from an ``x-sim`` header: a front end's body converts to
    a chat completion, in which only ``prepare`` adds fields."""
    options = request.headers.get("x-sim")
    return {**body, "simulator": json.loads(options)} if options else body


@pytest.fixture(scope="module")
def relay(upstream: str) -> Iterator[str]:
    sim = Upstream(upstream, api_key=RELAY_KEY)
    relays = {
        "/ai": StreamRelay(sim, default_model="sim-1", prepare=system_prompt),
        "/strict": StreamRelay(sim, allowed_models=["sim-2"]),
        "/stored": StreamRelay(
            sim,
            default_model="sim-1",
            store=MemoryStore(),
            linger=5.0,
            prepare=simulator_header,
        ),
    }
    with ServerThread(relay_host(mounts(relays), list(relays.values()))) as server:
        yield server.url


def ui_body(
    text: str = "Tell me something.", *, chat: str = "chat-1", **extra: Any
) -> dict[str, Any]:
    """What ``DefaultChatTransport`` sends for a first user message."""
    return {
        "id": chat,
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        **extra,
    }


SLOW = {"x-sim": json.dumps({"tokens": 40, "delay": 0.02})}
VERY_SLOW = {"x-sim": json.dumps({"tokens": 400, "delay": 0.05})}


def parts_of(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def text_of(parts: list[Any]) -> str:
    return "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")


def upstream_body(sim: Simulator) -> dict[str, Any]:
    return sim.requests[-1].json()


def test_a_chat_request_is_answered_in_the_ai_sdk_protocol(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    response = client.post(relay + "/ai/chat", json=ui_body(), headers={"accept": "*/*"})
    assert response.status_code == 200, response.text
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"] == "text/event-stream"
    parts = parts_of(response.content)
    sent = upstream_body(sim)
    assert sent["model"] == "sim-1" and sent["stream"] is True  # the default model
    assert sent["messages"] == [  # converted, and seen by prepare
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me something."},
    ]
    assert parts[0]["type"] == "start" and parts[0]["messageId"]
    assert text_of(parts) == sim.expected_text(sent)
    assert [p if isinstance(p, str) else p["type"] for p in parts[-2:]] == ["finish", "[DONE]"]


def test_the_body_model_is_used_and_the_allow_list_applies(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    assert client.post(relay + "/ai/chat", json=ui_body(model="sim-3")).status_code == 200
    assert upstream_body(sim)["model"] == "sim-3"
    refused = client.post(relay + "/strict/chat", json=ui_body(model="sim-1"))
    assert refused.status_code == 403
    missing = client.post(relay + "/strict/chat", json=ui_body())
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "model_required"
    bad = client.post(relay + "/ai/chat", json={"id": "c", "messages": "hello"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_messages"
    assert len(sim.requests) == 1  # only the accepted request went upstream


def test_a_chat_can_ask_for_another_format(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    events = client.post(
        relay + "/ai/chat", json=ui_body(), headers={"accept": "text/event-stream"}
    )
    assert events.headers["x-vercel-ai-ui-message-stream"] == "v1"  # not our sse
    response = client.post(relay + "/ai/chat?format=ndjson", json=ui_body())
    assert response.headers["content-type"] == "application/x-ndjson"
    assert json.loads(response.text.splitlines()[-1]) == {"type": "done"}


def test_without_a_store_there_is_nothing_to_resume(client: httpx.Client, relay: str) -> None:
    assert client.get(relay + "/ai/chat/chat-1/stream").status_code == 204
    assert client.delete(relay + "/ai/chat/chat-1/stream").status_code == 404


def test_a_chat_resumes_from_its_first_part_with_the_same_message_id(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    conn = RawHTTP(relay)
    conn.request("POST", "/stored/chat", ui_body(chat="chat-resume"), SLOW)
    assert conn.read_head()[0] == 200
    first = b""
    while first.count(b"text-delta") < 3:
        chunk = conn.read_chunk()
        assert chunk is not None
        first += chunk
    conn.close()  # the tab reloads
    resumed = client.get(relay + "/stored/chat/chat-resume/stream")
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = parts_of(resumed.content)
    assert parts[0]["messageId"] == parts_of(first)[0]["messageId"]
    assert text_of(parts) == sim.expected_text(upstream_body(sim))
    assert parts[-1] == "[DONE]"
    assert sim.stats.started == 1
    # The chat has no active stream any more.
    assert client.get(relay + "/stored/chat/chat-resume/stream").status_code == 204
    # Another principal's chat of the same id is not this one.
    other = client.get(relay + "/stored/chat/chat-unknown/stream")
    assert other.status_code == 204


def test_a_delete_stops_the_chat_for_every_reader(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    conn = RawHTTP(relay)
    conn.request("POST", "/stored/chat", ui_body(chat="chat-stop"), VERY_SLOW)
    assert conn.read_head()[0] == 200
    assert conn.read_chunk()
    follower = RawHTTP(relay)
    follower.request("GET", "/stored/chat/chat-stop/stream")
    assert follower.read_head()[0] == 200
    time.sleep(0.2)
    assert client.delete(relay + "/stored/chat/chat-stop/stream").status_code == 204
    assert sim.stats.wait(timeout=5, cancelled=1)
    for reader in (conn, follower):
        raw = bytearray()
        while (chunk := reader.read_chunk()) is not None:
            raw += chunk
        reader.close()
        parts = parts_of(bytes(raw))
        assert [p if isinstance(p, str) else p["type"] for p in parts[-2:]] == ["abort", "[DONE]"]
    assert client.delete(relay + "/stored/chat/never-was/stream").status_code == 404


def run_input(**extra: Any) -> dict[str, Any]:
    """A ``RunAgentInput`` as ``@ag-ui/client``'s ``HttpAgent`` sends it."""
    return {
        "threadId": "thread-7",
        "runId": "run-42",
        "state": {},
        "messages": [{"id": "u1", "role": "user", "content": "Tell me something."}],
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **extra,
    }


def test_an_ag_ui_run_is_answered_in_ag_ui_events(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    response = client.post(relay + "/ai/ag-ui", json=run_input())
    assert response.status_code == 200, response.text
    events = [p for p in parts_of(response.content) if isinstance(p, dict)]
    assert events[0]["type"] == "RUN_STARTED"
    assert (events[0]["threadId"], events[0]["runId"]) == ("thread-7", "run-42")
    assert events[-1]["type"] == "RUN_FINISHED"
    assert (events[-1]["threadId"], events[-1]["runId"]) == ("thread-7", "run-42")
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == sim.expected_text(upstream_body(sim))
    assert upstream_body(sim)["model"] == "sim-1"


def test_an_ag_ui_run_takes_its_model_and_tools(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    tool = {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}
    body = run_input(tools=[tool], forwardedProps={"model": "sim-2"})
    assert client.post(relay + "/ai/ag-ui", json=body).status_code == 200
    sent = upstream_body(sim)
    assert sent["model"] == "sim-2"
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look up",
                "parameters": {"type": "object"},
            },
        }
    ]
    bad = client.post(relay + "/ai/ag-ui", json={"threadId": 3})
    assert bad.status_code == 400


@pytest.mark.real
def test_ag_ui_http_agent_runs_against_the_mount(sim: Simulator, relay: str) -> None:
    """``@ag-ui/client``'s own ``HttpAgent`` (in Node) reads a run of the live route."""
    node_modules("@ag-ui/client")
    out = run_client("ag-ui-live.mjs", relay + "/ai/ag-ui")
    assert out["warnings"] == []
    assert (out["threadId"], out["runId"]) == ("thread-live", "run-live")
    assert out["types"][0] == "RUN_STARTED" and out["types"][-1] == "RUN_FINISHED"
    (answer,) = [m for m in out["messages"] if m["role"] == "assistant"]
    assert answer["content"] == sim.expected_text(sim.requests[-1].json())
