"""The oracle of the real-client tests: what the simulator received, and what it says.

A client library decides for itself how it words a request (which fields, how the
prompt is wrapped), so the tests do not guess the body: they read the body the
simulator received from the relay, check that there was exactly one upstream request
per client call, and compute the expected answer from the simulator for that body:

:meth:`Simulator.expected_text` and :meth:`Simulator.expected_tool_calls` for the
route, and the whole answers :meth:`Simulator.completion`, :meth:`Simulator.response`
and :meth:`Simulator.text_completion` (a stream adds up to the non-streaming answer
of the same body).

Used by ``test_clients_python.py``, ``test_clients_node.py`` and
``test_clients_browser.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamrelay.testing import RecordedRequest, Simulator

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
NODE_MODULES = JS / "node_modules"

CHAT = "/chat/completions"
RESPONSES = "/responses"
COMPLETIONS = "/completions"
MODELS = "/models"
ROUTE_NAMES = {CHAT: "chat", RESPONSES: "responses", COMPLETIONS: "completions"}

PROMPT = "Tell me something about relays."
MESSAGES = [{"role": "user", "content": PROMPT}]
MODEL = "sim-1"


@dataclass
class Oracle:
    """The simulator behind the ``streamrelay_relay`` fixture, read as an oracle."""

    sim: Simulator
    _seen: int = field(default=0)

    def calls(self) -> list[RecordedRequest]:
        """The upstream requests since the last :meth:`calls` or :meth:`one_call`."""
        new = self.sim.requests[self._seen :]
        self._seen = len(self.sim.requests)
        return new

    def one_call(self, route: str, method: str = "POST") -> dict[str, Any]:
        """Assert that the last client call made exactly one upstream request, to
        ``route``, and return its JSON body (``{}`` for a GET)."""
        calls = self.calls()
        assert [(r.method, r.route) for r in calls] == [(method, "/v1" + route)], (
            f"expected exactly one upstream {method} {route}, got "
            f"{[(r.method, r.route) for r in calls]}"
        )
        if method != "POST":
            return {}
        body: dict[str, Any] = calls[0].json()
        assert isinstance(body, dict), f"the upstream body is not a JSON object: {calls[0].body!r}"
        return body

    def text(self, route: str, body: dict[str, Any]) -> str:
        """The content text the simulator gives ``body`` on ``route`` (choice 0)."""
        return self.sim.expected_text(body, route=ROUTE_NAMES[route])

    def reasoning(self, route: str, body: dict[str, Any]) -> str:
        """The reasoning text the simulator gives ``body`` on ``route`` (``fault="reasoning"``)."""
        return self.sim.expected_reasoning(body, route=ROUTE_NAMES[route])

    def answer(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """The simulator's whole JSON answer to ``body`` on ``route``: the answer
        without streaming, or what a stream of ``body`` adds up to."""
        if route == CHAT:
            return self.sim.completion(body)
        if route == RESPONSES:
            return self.sim.response(body)
        return self.sim.text_completion(body)

    def tool_calls(self, route: str, body: dict[str, Any]) -> list[dict[str, str]]:
        """The tool calls the simulator makes for ``body`` (``fault="tools"``), whole:
        ``[{"id", "name", "arguments"}]`` (``id``: a Responses item's ``call_id``)."""
        return self.sim.expected_tool_calls(body, route=ROUTE_NAMES[route])


# Node ------------------------------------------------------------------------------------


def node() -> str:
    """The ``node`` executable, or a skip (a failure under ``CI=true``: see conftest)."""
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not installed: run `make system-deps`")
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"node does not run: {exc}")
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"node {version} is older than 20, which the pinned clients need")
    return path


def node_modules(*packages: str) -> Path:
    """``js/node_modules`` with ``packages`` in it, or a skip (a failure in CI)."""
    missing = [name for name in packages if not (NODE_MODULES / name / "package.json").exists()]
    if missing:
        pytest.skip(
            f"js/node_modules lacks {', '.join(missing)}: run `npm ci --prefix js` "
            "(`make test` does)"
        )
    return NODE_MODULES


def node_env() -> dict[str, str]:
    """The environment for the client scripts: no proxy, no telemetry, no key leaks."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    env["NO_PROXY"] = "*"
    return env


def run_client(script: str, *args: str, timeout: float = 60.0) -> Any:
    """Run ``js/clients/<script>`` with ``args`` under node and return the JSON of its
    last line of output; a test failure (with its stderr) if it fails or says nothing."""
    try:
        process = subprocess.run(
            [node(), str(JS / "clients" / script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=node_env(),
            cwd=JS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{script} ran over {timeout} s: {exc.stderr!r}")
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        pytest.fail(f"{script} exited {process.returncode}: {process.stderr[-3000:]}")
    return json.loads(lines[-1])
