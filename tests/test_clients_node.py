"""The real npm OpenAI clients against a streamrelay mount, each used as its docs show.

The clients are pinned in ``js/package.json`` (``js/package-lock.json``; ``make test``
runs ``npm ci --prefix js``). Each has one script in ``js/clients/`` that takes the
relay's base URL, makes its calls one after the other in one Node process, and prints
what the client returned as JSON:

- ``openai-node.mjs``: openai-node's chat completions (streaming, not, the ``.stream()``
  helper), the Responses API (``create({stream: true})``, the ``.stream()`` helper,
  not streaming), legacy completions, and the model list;
- ``ai-sdk.mjs``: the AI SDK's ``streamText`` and ``generateText`` with
  ``@ai-sdk/openai``'s ``openai(model)`` (the Responses API) and ``openai.chat(model)``,
  and with ``@ai-sdk/openai-compatible``;
- ``eventsource-parser.mjs``: eventsource-parser reading ``?format=sse`` and the
  OpenAI wire from Node's ``fetch``.

Pytest starts the relay (the ``streamrelay_relay`` fixture), runs each script once per
simulator configuration (the parametrized tests share that run), and checks every call:
exactly one upstream request (found by the call's tagged prompt) and the answer the
simulator's oracle gives for that request's body. Without node or ``js/node_modules``
these tests skip; under ``CI=true`` that skip is a failure (they are
``@pytest.mark.real``; see conftest.py).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from client_oracle import CHAT, JS, RESPONSES, Oracle, node, node_env, node_modules
from streamrelay.testing import RecordedRequest, Simulator
from streamrelay.testing.simulator import EXTRA_MODELS

pytestmark = pytest.mark.real

SCRIPT_TIMEOUT = 120  # seconds; a run takes one or two


@pytest.fixture
def oracle(streamrelay_simulator_app: Simulator) -> Oracle:
    return Oracle(streamrelay_simulator_app)


@dataclass
class Run:
    """One run of a client script: its results by call name, and what the simulator saw."""

    results: dict[str, dict[str, Any]]
    requests: list[RecordedRequest]
    failure: str | None = None


_RUNS: dict[tuple[str, str, str], Run] = {}


def client_run(
    script: str, packages: tuple[str, ...], relay: str, oracle: Oracle, config: str = ""
) -> Run:
    """The run of ``js/clients/<script>`` against ``relay`` for this simulator ``config``
    (made by the first test that asks, shared by the others)."""
    executable = node()
    node_modules(*packages)
    key = (script, config, relay)
    if key not in _RUNS:
        oracle.sim.requests.clear()
        try:
            process = subprocess.run(
                [executable, str(JS / "clients" / script), relay],
                capture_output=True,
                text=True,
                timeout=SCRIPT_TIMEOUT,
                env=node_env(),
                cwd=JS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            _RUNS[key] = Run({}, [], f"{script} ran over {SCRIPT_TIMEOUT} s: {exc.stderr!r}")
        else:
            lines = process.stdout.strip().splitlines()
            if process.returncode != 0 or not lines:
                failure = f"{script} exited {process.returncode}: {process.stderr[-3000:]}"
                _RUNS[key] = Run({}, [], failure)
            else:
                results = json.loads(lines[-1])["results"]
                _RUNS[key] = Run({r["name"]: r for r in results}, list(oracle.sim.requests))
    run = _RUNS[key]
    if run.failure:
        pytest.fail(run.failure)
    return run


def call(run: Run, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result of call ``name``, and the body of the one upstream request it made."""
    result = run.results[name]
    assert "error" not in result, f"{name} raised {result['error']}"
    made = [r for r in run.requests if result["prompt"] in r.body.decode("utf-8", "replace")]
    assert [(r.method, r.route) for r in made] == [("POST", "/v1" + result["route"])], (
        f"{name}: expected exactly one upstream POST {result['route']}, got "
        f"{[(r.method, r.route) for r in made]}"
    )
    body: dict[str, Any] = made[0].json()
    return result, body


# openai-node -----------------------------------------------------------------------------

OPENAI_NODE = ("openai-node.mjs", ("openai",))
OPENAI_NODE_CALLS = [
    "chat.stream",
    "chat",
    "chat.stream-helper",
    "responses.stream",
    "responses.stream-helper",
    "responses",
    "completions.stream",
    "completions",
]


@pytest.mark.parametrize("name", OPENAI_NODE_CALLS)
def test_openai_node(streamrelay_relay: str, oracle: Oracle, name: str) -> None:
    run = client_run(*OPENAI_NODE, streamrelay_relay, oracle)
    result, body = call(run, name)
    route = result["route"]
    expected = oracle.text(route, body)
    assert result["text"] == expected
    if "deltas" in result:  # the helpers' delta events add up to the final text
        assert result["deltas"] == expected
    if "finish" in result:
        assert result["finish"] == ["stop"]
    if name == "chat.stream":
        assert result["ids"] == [oracle.answer(CHAT, body)["id"]]
        assert result["chunks"] > 2
    if name == "responses.stream":
        assert result["types"][0] == "response.created"
        assert result["types"][-1] == "response.completed"
        assert result["completed"] == expected
        assert result["sequence"] == sorted(set(result["sequence"]))
    if name == "responses":
        assert result["id"] == oracle.answer(RESPONSES, body)["id"]
        assert result["status"] == "completed"


def test_openai_node_models(streamrelay_relay: str, oracle: Oracle) -> None:
    run = client_run(*OPENAI_NODE, streamrelay_relay, oracle)
    result = run.results["models"]
    assert "error" not in result, result["error"]
    listed = [oracle.sim.config.model, *EXTRA_MODELS]
    assert result["ids"] == listed
    assert result["retrieved"] == listed[-1]
    gets = [(r.method, r.route) for r in run.requests if r.method == "GET"]
    assert gets == [("GET", "/v1/models"), ("GET", f"/v1/models/{listed[-1]}")]


# The AI SDK ------------------------------------------------------------------------------

AI_SDK = ("ai-sdk.mjs", ("ai", "@ai-sdk/openai", "@ai-sdk/openai-compatible"))
AI_SDK_CALLS = [
    f"{provider}.{function}"
    for provider in ("openai", "openai.chat", "openai-compatible")
    for function in ("streamText", "generateText")
]


@pytest.mark.parametrize("name", AI_SDK_CALLS)
def test_ai_sdk(streamrelay_relay: str, oracle: Oracle, name: str) -> None:
    run = client_run(*AI_SDK, streamrelay_relay, oracle)
    result, body = call(run, name)
    expected = oracle.text(result["route"], body)
    assert result["text"] == expected
    assert result["finish"] == ["stop"]
    if name.endswith("streamText"):
        assert result["joined"] == expected
        assert result["pieces"] > 1  # streamed, not one piece


@pytest.mark.streamrelay_simulator(fault="reasoning")
@pytest.mark.parametrize("name", AI_SDK_CALLS)
def test_ai_sdk_reasoning(streamrelay_relay: str, oracle: Oracle, name: str) -> None:
    """The providers that read reasoning get it: the Responses API's reasoning summary
    (``openai``) and DeepSeek's ``reasoning_content`` (``openai-compatible``);
    ``openai.chat`` (OpenAI's own chat wire has no reasoning text) gets the answer."""
    run = client_run(*AI_SDK, streamrelay_relay, oracle, config="reasoning")
    result, body = call(run, name)
    route = result["route"]
    assert result["text"] == oracle.text(route, body)
    expected = oracle.reasoning(route, body)
    assert expected
    if not name.startswith("openai.chat"):
        assert result["reasoning"] == expected


# eventsource-parser ----------------------------------------------------------------------

EVENTSOURCE_PARSER = ("eventsource-parser.mjs", ("eventsource-parser",))


def test_eventsource_parser_reads_the_sse_format(streamrelay_relay: str, oracle: Oracle) -> None:
    run = client_run(*EVENTSOURCE_PARSER, streamrelay_relay, oracle)
    result, body = call(run, "format=sse")
    assert result["status"] == 200
    assert result["contentType"].startswith("text/event-stream")
    events = result["events"]
    assert all("parseError" not in e for e in events), events
    data = [json.loads(e["data"]) for e in events]
    assert [e["event"] for e in events] == [d["type"] for d in data]
    assert data[0]["type"] == "start" and data[-1] == {"type": "done"}
    assert "".join(d["text"] for d in data if d["type"] == "delta") == oracle.text(CHAT, body)
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids))


def test_eventsource_parser_reads_the_openai_wire(streamrelay_relay: str, oracle: Oracle) -> None:
    run = client_run(*EVENTSOURCE_PARSER, streamrelay_relay, oracle)
    result, body = call(run, "openai-wire")
    assert result["status"] == 200
    events = result["events"]
    assert all("parseError" not in e for e in events), events
    assert events[-1]["data"] == "[DONE]"
    assert all(e["event"] is None and e["id"] is None for e in events)  # no event:, no id:
    chunks = [json.loads(e["data"]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == oracle.text(CHAT, body)
