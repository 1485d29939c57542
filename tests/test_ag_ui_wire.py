"""``@ag-ui/client``'s ``HttpAgent`` reads the ``ag-ui`` format to the end of each run.

A tiny HTTP server in this test stands where an AG-UI agent would: for each POST it
takes the ``RunAgentInput`` that ``HttpAgent`` sent (checked with the ``ag-ui-protocol``
package's model), converts it with :func:`streamrelay.agui.chat_body`, streams that
chat completion from the simulator, and re-frames the simulator's real SSE bytes with a
:class:`~streamrelay.transcoder.Transcoder` and the :class:`AGUIEncoder` (bound to the
input's ``threadId`` and ``runId``) as they arrive, with a heartbeat comment among them.
The path picks the simulator's fault: ``/text``, ``/reasoning``, ``/tools``,
``/mid_error``.

``js/clients/ag-ui.mjs`` (pinned ``@ag-ui/client``) runs one agent per scenario and
prints the events its subscribers saw and the messages the agent built; the tool
scenario runs twice, the second time with the tool results. Each scenario is checked
against the simulator's oracle for the body the simulator got, and every byte served
is validated against the Python package's event models. Without node or
``js/node_modules`` these tests skip; under ``CI=true`` that skip is a failure (they
are ``@pytest.mark.real``; see conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from ag_ui.core import Event as AGUIEvent
from ag_ui.core import RunAgentInput
from pydantic import TypeAdapter

from client_oracle import JS, node_modules, run_client
from streamrelay.agui import chat_body
from streamrelay.formats import AGUIEncoder
from streamrelay.testing import Simulator
from streamrelay.transcoder import Transcoder

pytestmark = pytest.mark.real

SCRIPT = JS / "clients" / "ag-ui.mjs"
SCRIPT_TIMEOUT = 120  # seconds; a run takes one or two
FAULTS = {"text": None, "reasoning": "reasoning", "tools": "tools", "mid_error": "mid_error"}
EVENTS: TypeAdapter[Any] = TypeAdapter(AGUIEvent)


@dataclass
class Served:
    """One POST the agent server answered."""

    scenario: str
    run_input: dict[str, Any]
    body: dict[str, Any] = field(default_factory=dict)  # what the simulator got
    stream: bytes = b""
    error: str | None = None


class AgentServer(ThreadingHTTPServer):
    """``POST /<scenario>``: an AG-UI run made from the simulator's chat stream."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.served: list[Served] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        scenario = self.path.strip("/")
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        served = Served(scenario, json.loads(raw))
        self.server.served.append(served)
        if scenario not in FAULTS:
            self.send_error(404)
            return
        try:
            RunAgentInput.model_validate(served.run_input)  # what HttpAgent sends is valid
            body, thread_id, run_id = chat_body(served.run_input)
        except Exception as exc:  # reported by the test
            served.error = f"{type(exc).__name__}: {exc}"
            self.send_error(400)
            return
        fault = FAULTS[scenario]
        if fault is not None:
            body["simulator"] = {"fault": fault}
        served.body = body
        encoder = AGUIEncoder(now=time.time())
        encoder.bind_run(thread_id, run_id, served.run_input.get("protocolVersion"))
        transcoder = Transcoder(encoder)
        self.send_response(200)
        self.send_header("content-type", encoder.media_type)
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        self._write(served, encoder.preamble())
        try:
            with httpx.stream(
                "POST", self.server.upstream + "/chat/completions", json=body, timeout=30
            ) as response:
                for i, chunk in enumerate(response.iter_raw()):
                    self._write(served, transcoder.feed_bytes(chunk))
                    if i == 1:
                        self._write(served, transcoder.heartbeat())
            self._write(served, transcoder.end())
        except Exception as exc:
            served.error = f"{type(exc).__name__}: {exc}"

    def _write(self, served: Served, data: bytes) -> None:
        if data:
            served.stream += data
            self.wfile.write(data)
            self.wfile.flush()


@dataclass
class Run:
    """The script's results by name, and what the server answered."""

    results: dict[str, dict[str, Any]]
    served: list[Served]


_RUN: dict[str, Run] = {}


@pytest.fixture
def agent_run(streamrelay_simulator: str) -> Run:
    """One run of ``js/clients/ag-ui.mjs`` against an agent server (shared by the tests)."""
    node_modules("@ag-ui/client")
    if "run" not in _RUN:
        server = AgentServer(streamrelay_simulator)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            output = run_client(SCRIPT.name, server.url, timeout=SCRIPT_TIMEOUT)
        finally:
            server.shutdown()
            server.server_close()
        results = output["results"]
        _RUN["run"] = Run({r["name"]: r for r in results}, list(server.served))
    return _RUN["run"]


def result(run: Run, name: str) -> tuple[dict[str, Any], Served]:
    """The script's result for run ``name`` and the POST it made (in order per scenario)."""
    got = run.results[name]
    assert "error" not in got, got["error"]
    scenario, _, nth = name.partition(".")
    posts = [s for s in run.served if s.scenario == scenario]
    served = posts[1 if nth else 0]
    assert served.error is None, served.error
    return got, served


def check_common(got: dict[str, Any], served: Served, terminal: str) -> list[dict[str, Any]]:
    """What holds for every run: valid events, echoed ids, no client complaints."""
    sent = [
        json.loads(line[6:])
        for line in served.stream.decode().split("\n")
        if line.startswith("data: ")
    ]
    for event in sent:
        model = EVENTS.validate_python(event)
        assert not model.model_extra, event
        assert model.model_dump(mode="json", by_alias=True) == event
    events: list[dict[str, Any]] = got["events"]
    assert [e["type"] for e in events] == [e["type"] for e in sent], "the client saw every event"
    assert events[0] == {
        "type": "RUN_STARTED",
        "threadId": served.run_input["threadId"],
        "runId": served.run_input["runId"],
        "protocolVersion": "1.0",
    }
    assert got["threadId"] == served.run_input["threadId"]
    assert events[-1]["type"] == terminal
    assert got["warnings"] == [], got["warnings"]  # no stripped field, no verifier complaint
    assert got["failed"] is None  # runAgent resolved (a RUN_ERROR is reported, not thrown)
    return events


def test_http_agent_sends_a_valid_run_agent_input(agent_run: Run) -> None:
    for served in agent_run.served:
        run_input = served.run_input
        assert run_input["threadId"] == f"thread-{served.scenario}"
        assert run_input["runId"] and run_input["protocolVersion"] == "1.0"
        assert served.body["model"] == "sim-1"  # forwardedProps.model
    text = next(s for s in agent_run.served if s.scenario == "text")
    assert text.body["messages"][0] == {
        "role": "system",
        "content": "Context from the application:\n\n## The page the user is on\n/docs/relays",
    }
    assert text.body["messages"][1]["role"] == "user"


def test_text(agent_run: Run, streamrelay_simulator_app: Simulator) -> None:
    got, served = result(agent_run, "text")
    check_common(got, served, "RUN_FINISHED")
    expected = streamrelay_simulator_app.expected_text(served.body)
    assert expected and got["text"] == expected
    assert got["finished"] == "success" and got["failed"] is None
    assert got["lastRole"] == "assistant"
    assert b": ping\n" in served.stream
    usage = json.loads(served.stream.rsplit(b"data: ", 1)[1])["usage"]
    assert usage[0]["model"] == "sim-1" and usage[0]["outputTokens"] > 0


def test_reasoning(agent_run: Run, streamrelay_simulator_app: Simulator) -> None:
    got, served = result(agent_run, "reasoning")
    events = check_common(got, served, "RUN_FINISHED")
    sim = streamrelay_simulator_app
    assert got["reasoning"] == sim.expected_reasoning(served.body) != ""
    assert got["text"] == sim.expected_text(served.body) != ""
    kinds = [e["type"] for e in events]
    assert kinds.index("REASONING_END") < kinds.index("TEXT_MESSAGE_START")
    roles = [m["role"] for m in got["messages"]]
    assert roles[-2:] == ["reasoning", "assistant"]


def test_tools(agent_run: Run, streamrelay_simulator_app: Simulator) -> None:
    got, served = result(agent_run, "tools")
    check_common(got, served, "RUN_FINISHED")
    expected = streamrelay_simulator_app.expected_tool_calls(served.body)
    assert served.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    assert expected
    assert [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in got["toolCalls"]
    ] == expected
    assert got["finished"] == "success"

    # the second run carries the tool results and gets text
    got, served = result(agent_run, "tools.result")
    check_common(got, served, "RUN_FINISHED")
    messages = served.body["messages"]
    assert messages[-2]["role"] == "assistant"
    assert [c["id"] for c in messages[-2]["tool_calls"]] == [c["id"] for c in expected]
    assert messages[-1] == {
        "role": "tool",
        "tool_call_id": expected[-1]["id"],
        "content": "18 C, cloudy",
    }
    text = streamrelay_simulator_app.expected_text(served.body)
    assert text and got["text"] == text


def test_mid_stream_error(agent_run: Run, streamrelay_simulator_app: Simulator) -> None:
    got, served = result(agent_run, "mid_error")
    events = check_common(got, served, "RUN_ERROR")
    assert got["runError"] is not None and got["runError"]["message"]
    assert got["finished"] is None
    full = streamrelay_simulator_app.expected_text(served.body)
    assert got["text"] and full.startswith(got["text"]) and got["text"] != full
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]  # closed before the error


def test_every_scenario_ran(agent_run: Run) -> None:
    assert sorted(agent_run.results) == ["mid_error", "reasoning", "text", "tools", "tools.result"]
    assert sorted(s.scenario for s in agent_run.served) == [
        "mid_error",
        "reasoning",
        "text",
        "tools",
        "tools",
    ]
