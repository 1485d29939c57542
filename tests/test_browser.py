"""The demo page in real headless Chromium, against the real relay and the simulator.

Chromium is Debian's ``chromium`` package (``make system-deps``), driven by Playwright's
Python API through ``executable_path``: no test tool ever downloads a browser. The
launch flags suit a closed network (no background traffic, no component updates).

The page (``src/streamrelay/static/demo.html``) is served by ``build_demo_app``; its
relay at ``/v1`` streams from a :class:`Simulator` on its own socket. Faults go in the
page's own "Simulator fault (JSON)" field, as a user of the demo would set them.

``STREAMRELAY_UPDATE_SCREENSHOT=1 pytest tests/test_browser.py -k screenshot`` rewrites
``docs/img/demo.png``; otherwise that test only checks that a screenshot can be taken.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chromium import headless_chromium
from streamrelay.cli import build_demo_app
from streamrelay.testing import ServerThread, Simulator

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.real

FORMATS = ("ndjson", "sse", "text")
MEDIA_TYPES = {
    "ndjson": "application/x-ndjson",
    "sse": "text/event-stream",
    "text": "text/plain",
}
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "demo.png"
WAIT_MS = 15_000  # generous: only a broken page ever waits this long


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium with a fresh temporary profile."""
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Simulator, str]]:
    """The simulator on its own socket, and the demo app (page + relay) in front of it."""
    simulator = Simulator(delay=0.01)
    with (
        ServerThread(simulator) as upstream,
        ServerThread(build_demo_app(f"{upstream.url}/v1", "test-key")) as demo,
    ):
        yield simulator, demo.url


@pytest.fixture
def sim(servers: tuple[Simulator, str]) -> Simulator:
    """The module's simulator (not conftest's), idle, with requests and counters reset."""
    simulator = servers[0]
    simulator.stats.wait_idle(timeout=10)
    simulator.reset()
    return simulator


class Demo:
    """The demo page (one tab, reloaded for each test) and what it did."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.responses: list[tuple[str, int, dict[str, str]]] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("request", lambda r: self.requests.append((r.url, r.headers)))
        page.on("response", lambda r: self.responses.append((r.url, r.status, r.headers)))
        page.set_default_timeout(WAIT_MS)

    def load(self) -> None:
        """(Re)load the page and forget what the last test saw."""
        # The "load" event waits for the page's module script, so the form is wired up.
        self.page.goto(self.url, wait_until="load")
        for seen in (self.dialogs, self.page_errors, self.requests, self.responses):
            seen.clear()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def ask(self, prompt: str, *, format: str = "ndjson", simulator: dict[str, Any]) -> None:
        """Fill the form as a user would (the fault in the Advanced field) and send."""
        page = self.page
        page.select_option("#format", format)
        page.evaluate("document.querySelector('details').open = true")
        page.fill("#simulator", json.dumps(simulator))
        page.fill("#prompt", prompt)
        page.click("#send")
        page.wait_for_selector('[data-testid="answer"]', state="attached")

    def answer(self) -> dict[str, Any]:
        """The newest answer, the banner and the metrics, read at one instant."""
        return self.page.evaluate(
            """() => {
                const a = document.querySelector('[data-testid="answer"]');
                const e = document.getElementById("error");
                const note = a?.closest("li").querySelector(".note");
                return {
                    state: a?.dataset.state ?? null,
                    text: a?.textContent ?? null,
                    error: e.hidden ? null : e.textContent,
                    note: note ? note.textContent : null,
                    ttft: document.getElementById("ttft").textContent,
                    tps: document.getElementById("tps").textContent,
                    send: document.getElementById("send").disabled,
                    stop: document.getElementById("stop").disabled,
                };
            }"""
        )

    def first_text(self) -> dict[str, Any]:
        """Waits for the answer's first text; returns its text and state at that instant."""
        handle = self.page.wait_for_function(
            """() => {
                const a = document.querySelector('[data-testid="answer"]');
                return a && a.textContent ? {text: a.textContent, state: a.dataset.state} : null;
            }""",
            polling=10,
        )
        return handle.json_value()

    def settled(self) -> str:
        """Waits until the answer is no longer streaming; returns its state."""
        handle = self.page.wait_for_function(
            """() => {
                const s = document.querySelector('[data-testid="answer"]')?.dataset.state;
                return s && s !== "streaming" ? s : null;
            }""",
            polling=20,
        )
        return handle.json_value()

    def chat_exchange(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """The URL, request headers and response headers of the last chat request."""
        url, headers = next(r for r in reversed(self.requests) if "/chat/completions" in r[0])
        response = next(r[2] for r in reversed(self.responses) if r[0] == url)
        return url, headers, response


@pytest.fixture(scope="module")
def _demo_page(browser: Browser, servers: tuple[Simulator, str]) -> Iterator[Demo]:
    """One tab for the module (a new tab costs a renderer start); each test reloads it."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, color_scheme="light")
    try:
        yield Demo(context.new_page(), servers[1] + "/")
    finally:
        context.close()


@pytest.fixture
def demo(_demo_page: Demo) -> Iterator[Demo]:
    """The demo page, freshly loaded: empty chat, new JavaScript realm, nothing recorded."""
    view = _demo_page
    view.load()
    yield view
    assert view.page_errors == [], "uncaught errors in the page"


def _body(prompt: str, simulator: dict[str, Any]) -> dict[str, Any]:
    """The body the page sends for the first question of a chat."""
    return {
        "model": "sim-1",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "simulator": simulator,
    }


# Streaming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("format", FORMATS)
def test_first_token_shows_while_the_simulator_is_still_streaming(
    demo: Demo, sim: Simulator, format: str
) -> None:
    fault = {"tokens": 30, "delay": 0.1}  # about 3 s from the first token to the last
    prompt = f"Stream me an answer in {format}"
    expected = sim.expected_text(_body(prompt, fault))
    demo.ask(prompt, format=format, simulator=fault)

    first = demo.first_text()
    stats = sim.stats.snapshot()  # read after the page showed text
    assert stats["finished"] == 0 and stats["active"] >= 1, (
        f"the simulator had already finished when the first token showed: {stats}"
    )
    assert first["state"] == "streaming"
    assert expected.startswith(first["text"]) and len(first["text"]) < len(expected) / 2

    # The text keeps growing while the simulator streams: no flush at the end.
    seen = [first["text"]]
    while sim.stats.finished == 0 and len(seen) < 4:
        current = demo.answer()
        if current["state"] == "streaming" and current["text"] != seen[-1]:
            assert current["text"].startswith(seen[-1])
            seen.append(current["text"])
        time.sleep(0.05)
    assert len(seen) >= 4, f"the answer grew only {len(seen) - 1} times while streaming"

    assert demo.settled() == "done"
    sim.stats.wait(finished=1)
    final = demo.answer()
    assert final["text"] == expected
    assert final["error"] is None and final["note"] is None
    assert final["ttft"].isdigit()
    assert final["send"] is False and final["stop"] is True

    # The page sent what a chat client sends, and got the format it asked for.
    sent = sim.requests[-1].json()
    assert sent["messages"] == [{"role": "user", "content": prompt}]
    assert sent["model"] == "sim-1" and sent["stream"] is True
    assert sent["simulator"] == fault
    url, headers, response = demo.chat_exchange()
    assert url.endswith(f"/v1/chat/completions?format={format}")
    assert headers["accept"] == MEDIA_TYPES[format]
    assert response["content-type"].startswith(MEDIA_TYPES[format])


def test_the_conversation_goes_with_the_next_question(demo: Demo, sim: Simulator) -> None:
    fault = {"tokens": 5, "delay": 0.01}
    demo.ask("First question", format="sse", simulator=fault)
    assert demo.settled() == "done"
    first_answer = demo.answer()["text"]
    demo.ask("Second question", format="text", simulator=fault)
    assert demo.settled() == "done"
    assert sim.requests[-1].json()["messages"] == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": "Second question"},
    ]
    assert demo.answer()["text"] == sim.expected_text(sim.requests[-1].json())
    assert demo.page.locator('[data-testid="answer"]').count() == 1


# Stop --------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", FORMATS)
def test_stop_cancels_the_upstream(demo: Demo, sim: Simulator, format: str) -> None:
    demo.ask("Go on for a while", format=format, simulator={"tokens": 300, "delay": 0.05})
    demo.first_text()
    demo.page.click("#stop")

    assert demo.settled() == "stopped"
    sim.stats.wait(cancelled=1, timeout=10)  # the relay closed the upstream connection
    assert sim.stats.finished == 0
    assert sim.requests[-1].outcome == "cancelled"
    stopped = demo.answer()
    assert stopped["error"] is None, "a stop by the user is not an error"
    assert stopped["note"] is not None and "Stopped" in stopped["note"]
    assert stopped["send"] is False and stopped["stop"] is True
    time.sleep(0.3)
    assert demo.answer()["text"] == stopped["text"], "text arrived after Stop"


def test_stop_before_the_first_token_cancels_the_upstream(demo: Demo, sim: Simulator) -> None:
    # The simulator holds back even its response headers, until its client leaves.
    demo.ask("Hello?", format="sse", simulator={"fault": "stall_headers"})
    sim.stats.wait(started=1)
    time.sleep(0.2)
    demo.page.click("#stop")

    assert demo.settled() == "stopped"
    sim.stats.wait(cancelled=1, timeout=10)
    assert demo.answer()["text"] == ""


# Untrusted content -------------------------------------------------------------------------

XSS_PIECES = [
    "Look: ",
    '<img src=x onerror="window.__pwned=1;alert(1)">',
    " and ",
    "</script><script>window.__pwned=2;alert(2)</script>",
    " and ",
    '<svg onload="window.__pwned=3"></svg>',
    "<b>bold?</b> &amp; &lt;done&gt;",
]


@pytest.mark.parametrize("format", FORMATS)
def test_markup_in_the_answer_renders_as_text_and_runs_nothing(
    demo: Demo, sim: Simulator, format: str
) -> None:
    demo.ask("Say something nasty", format=format, simulator={"pieces": XSS_PIECES})
    assert demo.settled() == "done"
    time.sleep(0.3)  # time for an onerror/onload handler to fire, if one could

    assert demo.answer()["text"] == "".join(XSS_PIECES)
    inside = demo.page.evaluate(
        """() => {
            const m = document.getElementById("messages");
            return {
                elements: m.querySelectorAll("img, script, svg, b").length,
                pwned: typeof window.__pwned,
            };
        }"""
    )
    assert inside == {"elements": 0, "pwned": "undefined"}
    assert demo.dialogs == []
    assert not [url for url, _ in demo.requests if url.endswith("/x")], "the <img> was loaded"


# Errors ------------------------------------------------------------------------------------


ERROR_SHOWN = {  # what the banner shows for ndjson and sse (docs/errors.md)
    "mid_error": "Simulated meltdown at token five.",
    "abrupt_close": "upstream_closed",
    "truncate": "upstream_truncated",
}


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("fault", list(ERROR_SHOWN))
def test_an_upstream_failure_mid_stream_is_an_error(
    demo: Demo, sim: Simulator, format: str, fault: str
) -> None:
    simulator = {"fault": fault, "after": 5, "tokens": 20, "delay": 0.02}
    if fault == "mid_error":
        simulator["message"] = "Simulated meltdown at token five."
    prompt = f"Fail with {fault} in {format}"
    expected = sim.expected_text(_body(prompt, simulator))
    demo.ask(prompt, format=format, simulator=simulator)

    assert demo.settled() == "error"
    failed = demo.answer()
    assert failed["error"] is not None, "the error banner is not shown"
    assert failed["note"] is not None and failed["note"].startswith("Incomplete")
    # What came before the fault may show, but never the whole answer.
    assert expected.startswith(failed["text"]) and failed["text"] != expected
    # ndjson and sse carry the relay's error event; text can only break the connection.
    shown = "truncated" if format == "text" else ERROR_SHOWN[fault]
    assert shown in failed["error"]
    assert failed["send"] is False and failed["stop"] is True


# The screenshot ----------------------------------------------------------------------------


SCREENSHOT_CHAT = [
    (
        "ndjson",
        "What does streamrelay do?",
        "It relays an OpenAI-compatible stream from your server to the browser, token by "
        "token. The API key stays on the server, and nothing in between (nginx, gzip, "
        "server buffers) holds the stream back.",
    ),
    (
        "sse",
        "And if I press Stop?",
        "The browser closes the request, the relay notices at once and closes the "
        "upstream connection, so the paid generation stops too. Errors in mid-stream "
        "show up as errors, never as a finished answer.",
    ),
]


def test_screenshot_of_a_finished_answer(demo: Demo, sim: Simulator, tmp_path: Path) -> None:
    """Always takes the screenshot; writes docs/img/demo.png only when asked to."""
    # A first request warms the relay's upstream client up (its TTFT would be the
    # cold start's), then "New chat" clears the page.
    demo.ask("warm-up", simulator={"tokens": 2})
    assert demo.settled() == "done"
    demo.page.click("#clear")
    for format, prompt, answer in SCREENSHOT_CHAT:
        demo.ask(prompt, format=format, simulator={"text": answer, "delay": 0.02})
        assert demo.settled() == "done"
        assert demo.answer()["text"] == answer
    demo.page.evaluate(
        """() => {
            document.querySelector("details").open = false;
            document.getElementById("simulator").value = "";
            document.activeElement?.blur();
        }"""
    )
    target = tmp_path / "demo.png"
    demo.page.screenshot(path=str(target))
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if os.environ.get("STREAMRELAY_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOT)


# A page of another origin ----------------------------------------------------------------

CROSS_SITE_PAGE = """<!doctype html><title>another site</title><script>
window.attack = async (url) => {
  const sent = [];
  // A blob without a type: the browser sends no Content-Type, so no CORS preflight.
  const blob = new Blob([JSON.stringify({model: "sim-1", messages: [{role: "user", content: "hi"}]})]);
  await fetch(url, {method: "POST", mode: "no-cors", body: blob, credentials: "include"});
  sent.push("blob");
  // text/plain is a "simple" type too: no preflight either.
  await fetch(url, {method: "POST", mode: "no-cors", body: "{}", headers: {"content-type": "text/plain"}});
  sent.push("text/plain");
  return sent;
};
</script>"""


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    """A page served from another port: another origin, as another site would be."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse(CROSS_SITE_PAGE)

    with ServerThread(Starlette(routes=[Route("/", page)])) as server:
        yield server.url


def test_a_page_of_another_origin_cannot_start_a_generation(
    browser: Browser, servers: tuple[Simulator, str], sim: Simulator, other_origin: str
) -> None:
    """``fetch(relay, {mode: "no-cors", body: blob})`` from another origin needs no CORS
    preflight, so the browser sends it. The relay must answer 415 and call no upstream:
    requiring a JSON Content-Type is what forces a cross-site caller through a preflight."""
    relay = servers[1].replace("127.0.0.1", "localhost") + "/v1/chat/completions"
    page = browser.new_page()
    statuses: list[tuple[str, int]] = []
    page.on("response", lambda r: statuses.append((r.request.method, r.status)))
    try:
        page.goto(other_origin, wait_until="load")
        assert page.evaluate("(url) => window.attack(url)", relay) == ["blob", "text/plain"]
    finally:
        page.close()
    posts = [status for method, status in statuses if method == "POST"]
    assert posts == [415, 415], statuses  # both reached the relay, both refused
    time.sleep(0.3)
    assert sim.requests == []  # and nothing went upstream
