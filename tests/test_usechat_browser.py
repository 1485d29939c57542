"""The AI SDK's ``useChat`` (``@ai-sdk/react``) in real headless Chromium, on a live mount.

The page is ``js/usechat/`` (React, ``useChat`` with ``DefaultChatTransport`` and
``resume: true``, a Stop button that calls ``stop()`` and sends
``DELETE <mount>/chat/<id>/stream``), bundled once per module by
``node js/usechat/build.mjs <dir>`` (esbuild, from ``js/node_modules``: the exact npm pins
of ``js/package.json``). One origin serves the page at ``/`` and
``StreamRelay(default_model="sim-1", store=MemoryStore())`` at ``/ai``, in front of the
session's simulator. The page sends its URL's ``?sim=`` as an ``x-sim`` header, which the
relay's ``prepare`` turns into simulator options: slow answers for Stop and reload.

* an answer streams in (the text grows before the end) and ends as the simulator's text;
* Stop stops the generation: the simulator sees its client go, the page says stopped;
* a reload in the middle of an answer shows the whole answer once, from one generation;
* ``examples/usechat/app.py``, run as its header says, answers the page on its embedded
  simulator.

Chromium is Debian's, driven by Playwright's Python API (``tests/chromium.py``); without
node, the npm packages or Chromium the tests skip, and under ``CI=true`` a skip fails.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from apps.procs import Proc, free_port, server_command
from chromium import headless_chromium
from client_oracle import JS, ROOT, node, node_env, node_modules
from streamrelay import StreamRelay, Upstream
from streamrelay.stores import MemoryStore
from streamrelay.testing import ServerThread, Simulator
from wire import RELAY_KEY, relay_host

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.real

PACKAGES = ("esbuild", "react", "react-dom", "@ai-sdk/react", "ai")
WAIT_MS = 20_000  # generous: only a broken page waits this long


def simulator_header(request: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The simulator's options from the page's ``x-sim`` header."""
    options = request.headers.get("x-sim")
    return {**body, "simulator": json.loads(options)} if options else body


# The page and the servers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page, built once for the module: ``index.html`` and ``app.js``."""
    node_modules(*PACKAGES)
    out = tmp_path_factory.mktemp("usechat")
    built = subprocess.run(
        [node(), str(JS / "usechat" / "build.mjs"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=node_env(),
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    assert (out / "index.html").is_file() and (out / "app.js").is_file()
    return out


@pytest.fixture(scope="module")
def origin(bundle: Path, upstream: str) -> Iterator[str]:
    """One origin: the page at ``/``, the relay at ``/ai`` (the mount answers no CORS)."""
    relay = StreamRelay(
        Upstream(upstream, api_key=RELAY_KEY),
        default_model="sim-1",
        store=MemoryStore(),
        linger=5.0,
        prepare=simulator_header,
    )
    routes = [Mount("/ai", relay), Mount("/", StaticFiles(directory=bundle, html=True))]
    with ServerThread(relay_host(routes, [relay])) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser(bundle: Path) -> Iterator[Browser]:
    """Headless Debian Chromium with a fresh temporary profile (after the bundle: a
    missing node skips before a browser starts)."""
    with headless_chromium() as chromium:
        yield chromium


class Chat:
    """The useChat page in one tab of a fresh context, and the relay requests it made."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.responses: list[tuple[str, str, int]] = []
        page.on(
            "response",
            lambda r: self.responses.append((r.request.method, r.url.split("?")[0], r.status)),
        )

    def open(self, sim: dict[str, Any] | None = None) -> None:
        query = f"?sim={quote(json.dumps(sim))}" if sim is not None else ""
        self.page.goto(self.url + "/" + query, wait_until="load")
        self.page.wait_for_selector('[data-testid="status"]')

    @property
    def chat_id(self) -> str:
        handle = self.page.wait_for_function(
            "() => new URL(location.href).searchParams.get('chat')"
        )
        return str(handle.json_value())

    def ask(self, text: str) -> None:
        self.page.fill('[data-testid="input"]', text)
        self.page.click('[data-testid="send"]')

    def messages(self) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = self.page.evaluate(
            """() => [...document.querySelectorAll('[data-testid="message"]')].map((li) => ({
                role: li.dataset.role,
                state: li.dataset.state,
                id: li.dataset.messageId,
                text: li.querySelector('[data-testid="text"]').textContent,
            }))"""
        )
        return shown

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = self.page.evaluate(
            """() => ({
                status: document.querySelector('[data-testid="status"]').dataset.status,
                error: document.querySelector('[data-testid="error"]')?.textContent ?? null,
                send: document.querySelector('[data-testid="send"]').disabled,
                stop: document.querySelector('[data-testid="stop"]').disabled,
            })"""
        )
        return view

    def streaming_text(self, longer_than: int) -> str:
        """The answer's text while it is still streaming, once longer than ``longer_than``."""
        handle = self.page.wait_for_function(
            """(n) => {
                const li = [...document.querySelectorAll('[data-testid="message"]')].at(-1);
                if (!li || li.dataset.role !== "assistant" || li.dataset.state !== "streaming") return null;
                const text = li.querySelector('[data-testid="text"]').textContent;
                return text.length > n ? text : null;
            }""",
            arg=longer_than,
            polling=10,
        )
        return str(handle.json_value())

    def settled(self) -> str:
        """Waits until the page is no longer sending or streaming; returns its status."""
        handle = self.page.wait_for_function(
            """() => {
                const s = document.querySelector('[data-testid="status"]')?.dataset.status;
                return s && s !== "submitted" && s !== "streaming" ? s : null;
            }""",
            polling=20,
        )
        return str(handle.json_value())

    def relay_calls(self, method: str, path: str) -> list[int]:
        return [s for m, u, s in self.responses if m == method and u == self.url + path]


@pytest.fixture
def chat(browser: Browser, origin: str, sim: Simulator) -> Iterator[Chat]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield Chat(page, origin)
    finally:
        context.close()
        sim.stats.wait_idle(timeout=15)  # no generation spills into the next test
    assert errors == [], "uncaught errors in the page"


def upstream_body(sim: Simulator) -> dict[str, Any]:
    body: dict[str, Any] = sim.requests[-1].json()
    return body


# The tests -----------------------------------------------------------------------------------


def test_an_answer_streams_in_and_ends_as_the_simulators_text(chat: Chat, sim: Simulator) -> None:
    chat.open({"tokens": 30, "delay": 0.03})
    chat_id = chat.chat_id
    chat.ask("Tell me about relays.")
    during = chat.streaming_text(0)  # shown while the answer was streaming
    assert chat.settled() == "ready"

    sent = upstream_body(sim)
    expected = sim.expected_text(sent)
    assert sent["model"] == "sim-1" and sent["simulator"] == {"tokens": 30, "delay": 0.03}
    assert sent["messages"] == [{"role": "user", "content": "Tell me about relays."}]
    assert expected.startswith(during) and during != expected, "the text did not grow"
    shown = chat.messages()
    assert [(m["role"], m["state"]) for m in shown] == [("user", "sent"), ("assistant", "done")]
    assert shown[0]["text"] == "Tell me about relays."
    assert shown[1]["text"] == expected
    assert chat.view() == {"status": "ready", "error": None, "send": True, "stop": True}
    assert len(sim.requests) == 1 and sim.stats.started == 1
    # resume: true asked for the chat's stream when the page loaded: there was none.
    assert chat.relay_calls("GET", f"/ai/chat/{chat_id}/stream") == [204]
    assert chat.relay_calls("POST", "/ai/chat") == [200]


def test_stop_stops_the_generation(chat: Chat, sim: Simulator) -> None:
    chat.open({"tokens": 400, "delay": 0.05})  # 20 s unless stopped
    chat_id = chat.chat_id
    chat.ask("Talk for a long time.")
    chat.streaming_text(10)
    assert chat.view()["stop"] is False
    with chat.page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        chat.page.click('[data-testid="stop"]')
    assert deleted.value.url == f"{chat.url}/ai/chat/{chat_id}/stream"
    assert deleted.value.status == 204

    assert sim.stats.wait(cancelled=1, timeout=10), "the upstream generation went on"
    assert chat.settled() == "stopped"
    before = chat.messages()
    chat.page.wait_for_timeout(300)
    after = chat.messages()
    assert after == before, "the text went on growing after Stop"
    assert [(m["role"], m["state"]) for m in after] == [("user", "sent"), ("assistant", "stopped")]
    expected = sim.expected_text(upstream_body(sim))
    assert after[1]["text"] and expected.startswith(after[1]["text"])
    assert after[1]["text"] != expected
    assert chat.view() == {"status": "stopped", "error": None, "send": True, "stop": True}
    assert sim.stats.started == 1 and sim.stats.finished == 0


def test_a_reload_mid_answer_shows_the_whole_answer_once(chat: Chat, sim: Simulator) -> None:
    chat.open({"tokens": 60, "delay": 0.05})  # about 3 s
    chat_id = chat.chat_id
    chat.ask("Survive a reload.")
    before = chat.streaming_text(20)
    message_id = chat.messages()[-1]["id"]
    assert sim.stats.finished == 0, "the answer was complete before the reload"

    chat.page.reload(wait_until="load")  # same URL: same chat id and ?sim=
    assert chat.chat_id == chat_id
    chat.page.wait_for_function(  # the resumed answer, streaming or already whole
        """() => [...document.querySelectorAll('[data-testid="message"]')]
            .some((li) => li.dataset.role === "assistant")"""
    )
    assert chat.settled() == "ready"

    expected = sim.expected_text(upstream_body(sim))
    assert expected.startswith(before)
    shown = chat.messages()
    assert [(m["role"], m["state"]) for m in shown] == [("user", "sent"), ("assistant", "done")]
    assert shown[1]["text"] == expected, "the resumed answer is not the whole answer, once"
    assert shown[1]["id"] == message_id  # the same message, resumed
    assert chat.view()["error"] is None
    # One generation, read back from the store: the reload did not ask again.
    assert sim.stats.wait(finished=1, timeout=10)
    assert sim.stats.started == 1 and sim.stats.cancelled == 0
    assert chat.relay_calls("POST", "/ai/chat") == [200]
    assert chat.relay_calls("GET", f"/ai/chat/{chat_id}/stream") == [204, 200]


# The example -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``examples/usechat/app.py`` under uvicorn, as its header says, with no key: the
    embedded simulator. (The page comes from this module's build, ``USECHAT_STATIC``.)"""
    port = free_port()
    log = tmp_path_factory.mktemp("usechat-example") / "uvicorn.log"
    env = {
        "USECHAT_STATIC": str(bundle),
        "OPENAI_API_KEY": "",
        "STREAMRELAY_UPSTREAM": "",
        "OPENAI_BASE_URL": "",
    }
    argv = server_command("uvicorn", "examples.usechat.app:app", port)
    with Proc(argv, port, log, env, cwd=ROOT) as proc:
        yield proc.url


def test_the_example_answers_on_its_embedded_simulator(browser: Browser, example: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        chat = Chat(page, example)
        chat.open({"tokens": 12, "delay": 0.02})
        chat.ask("Hello")
        chat.streaming_text(0)
        assert chat.settled() == "ready"
        shown = chat.messages()
        # The simulator's answer to this body, computed here: the example's simulator
        # is the same code with the same seed.
        body = {
            "model": "sim-1",
            "messages": [{"role": "user", "content": "Hello"}],
            "simulator": {"tokens": 12, "delay": 0.02},
        }
        assert [(m["role"], m["state"]) for m in shown] == [("user", "sent"), ("assistant", "done")]
        assert shown[1]["text"] == Simulator().expected_text(body)
        assert chat.view()["error"] is None
    finally:
        context.close()
    assert errors == []
