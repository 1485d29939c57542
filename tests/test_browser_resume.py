"""Resumable streams in real headless Chromium, against the real relay with a store.

The app runs on uvicorn: the demo page at ``/``, a blank page at ``/blank`` and, at
``/v1``, ``StreamRelay(upstream, store=MemoryStore())`` (docs/resume.md) behind a small
ASGI middleware that can cut a resume's response in the middle (:class:`Cutter`). The
upstream is a :class:`Simulator` on its own socket. Everything is served from one origin:
the relay's mount answers no CORS preflight.

* A native ``EventSource`` on ``GET /v1/streams/{id}``, whose response the server cuts
  mid-way, reconnects by itself with ``Last-Event-ID`` and gets every event exactly once;
  the relay's ``204`` at the end stops it from reconnecting.
* The demo page reloaded in the middle of an answer resumes it and shows it whole, once.
* The demo's Stop stops the generation (``DELETE``): the simulator sees its client go.

Chromium is Debian's ``chromium``, driven by Playwright's Python API through
``executable_path`` (as in ``test_browser.py``); under ``CI=true`` a skip is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chromium import headless_chromium
from streamrelay import StreamRelay, Upstream
from streamrelay.cli import render_demo_page
from streamrelay.stores import MemoryStore
from streamrelay.testing import ServerThread, Simulator

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.real

FORMATS = ("ndjson", "sse", "text")
WAIT_MS = 20_000  # generous: only a broken page ever waits this long
SAVED = "streamrelay-demo:answer"  # the demo page's sessionStorage key


# The server ---------------------------------------------------------------------------------


class Cutter:
    """ASGI middleware around the relay: the first ``GET .../streams/{id}`` of a stream
    that the test armed (:meth:`arm`) ends after ``after`` bytes of the relay's body, in
    the middle of an event, as a proxy that drops a long response would. The relay sees
    its client leave. Every resume request is logged as (stream id, Last-Event-ID, status).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.armed: dict[str, int] = {}
        self.log: list[tuple[str, str | None, int]] = []
        self.cuts: list[str] = []

    def arm(self, stream_id: str, after: int) -> None:
        self.armed[stream_id] = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or "/streams/" not in path or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        stream_id = path.rsplit("/", 1)[-1]
        headers = dict(scope["headers"])
        last = headers.get(b"last-event-id")
        entry = [stream_id, last.decode() if last is not None else None, 0]
        limit = self.armed.pop(stream_id, None)

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry[2] = message["status"]
                self.log.append((entry[0], entry[1], entry[2]))
            await send(message)

        if limit is None:
            await self.app(scope, receive, logged)
            return

        cut = anyio.Event()
        sent = 0

        async def cutting(message: Message) -> None:
            nonlocal sent
            if cut.is_set():
                return  # the client is gone: nothing more reaches it
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                if sent + len(body) >= limit:
                    # The rest of the body never comes: the response ends here, mid-event.
                    await send({"type": "http.response.body", "body": body[: limit - sent]})
                    self.cuts.append(stream_id)
                    cut.set()
                    return
                sent += len(body)
            await logged(message)

        async def leaving() -> Message:
            """The relay's receive: the client leaves at the cut."""
            if cut.is_set():
                return {"type": "http.disconnect"}
            result: Message = {"type": "http.disconnect"}
            async with anyio.create_task_group() as tg:

                async def real() -> None:
                    nonlocal result
                    result = await receive()
                    tg.cancel_scope.cancel()

                async def at_cut() -> None:
                    await cut.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(real)
                tg.start_soon(at_cut)
            return result

        await self.app(scope, leaving, cutting)


BLANK = "<!doctype html><title>blank</title><p>EventSource test page</p>"

# Reads a stream with a native EventSource until the browser gives up on it for good
# (readyState CLOSED: the relay's 204). The relay's own `error` event (a MessageEvent)
# also fires onerror; it is recorded, not taken for the end.
EVENT_SOURCE = """(url) => new Promise((resolve) => {
    const got = [];
    let opens = 0;
    const es = new EventSource(url);
    es.onopen = () => { opens += 1; };
    for (const type of ["start", "delta", "finish", "usage", "done"]) {
        es.addEventListener(type, (e) => got.push({id: e.lastEventId, type, data: JSON.parse(e.data)}));
    }
    es.onerror = (e) => {
        if (e instanceof MessageEvent) got.push({id: e.lastEventId, type: "error", data: JSON.parse(e.data)});
        if (es.readyState === EventSource.CLOSED) resolve({got, opens});
    };
    setTimeout(() => { es.close(); resolve({got, opens, timeout: true}); }, 20000);
})"""


class Servers:
    def __init__(self, sim: Simulator, url: str, cutter: Cutter) -> None:
        self.sim = sim
        self.url = url
        self.cutter = cutter


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    simulator = Simulator(delay=0.01)
    with ServerThread(simulator) as upstream:
        relay = StreamRelay(
            Upstream(f"{upstream.url}/v1", api_key="test-key"), store=MemoryStore(), linger=5.0
        )
        cutter = Cutter(relay)
        page = render_demo_page(model="sim-1", upstream="the simulator")

        async def index(request: Request) -> HTMLResponse:
            return HTMLResponse(page)

        async def blank(request: Request) -> HTMLResponse:
            return HTMLResponse(BLANK)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await relay.aclose()

        app = Starlette(
            routes=[Route("/", index), Route("/blank", blank), Mount("/v1", cutter)],
            lifespan=lifespan,
        )
        with ServerThread(app) as server:
            yield Servers(simulator, server.url, cutter)


@pytest.fixture
def sim(servers: Servers) -> Simulator:
    """The module's simulator, idle, with requests and counters reset."""
    servers.sim.stats.wait_idle(timeout=10)
    servers.sim.reset()
    return servers.sim


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium with a fresh temporary profile."""
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A tab in a fresh context: its own sessionStorage, nothing left by another test."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()
    assert errors == [], "uncaught errors in the page"


class Demo:
    """The demo page in one tab, and the requests it made."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.requests: list[tuple[str, str]] = []
        self.responses: list[tuple[str, str, int]] = []
        page.on("request", lambda r: self.requests.append((r.method, r.url)))
        page.on("response", lambda r: self.responses.append((r.request.method, r.url, r.status)))
        page.goto(url, wait_until="load")

    def ask(self, prompt: str, *, format: str, simulator: dict[str, Any]) -> None:
        page = self.page
        page.select_option("#format", format)
        page.evaluate("document.querySelector('#composer details').open = true")
        page.fill("#simulator", json.dumps(simulator))
        page.fill("#prompt", prompt)
        page.click("#send")
        page.wait_for_selector('[data-testid="answer"]', state="attached")

    def answer(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.page.evaluate(
            """() => {
                const a = document.querySelector('[data-testid="answer"]');
                const e = document.getElementById("error");
                const note = a?.closest("li").querySelector(".note");
                return {
                    state: a?.dataset.state ?? null,
                    text: a?.textContent ?? null,
                    resumed: a?.dataset.resumed === "true",
                    error: e.hidden ? null : e.textContent,
                    note: note ? note.textContent : null,
                    answers: document.querySelectorAll(".msg.assistant").length,
                    users: [...document.querySelectorAll(".msg.user .bubble")].map((b) => b.textContent),
                    send: document.getElementById("send").disabled,
                    stop: document.getElementById("stop").disabled,
                };
            }"""
        )
        return answer

    def text_longer_than(self, length: int) -> str:
        handle = self.page.wait_for_function(
            """(n) => {
                const a = document.querySelector('[data-testid="answer"]');
                return a && a.textContent.length > n ? a.textContent : null;
            }""",
            arg=length,
            polling=10,
        )
        return str(handle.json_value())

    def saved(self) -> dict[str, Any]:
        """Waits until the page has saved the answer in flight; returns what it saved."""
        handle = self.page.wait_for_function(
            "(key) => sessionStorage.getItem(key)", arg=SAVED, polling=10
        )
        return dict(json.loads(handle.json_value()))

    def saved_now(self) -> Any:
        return self.page.evaluate("(key) => sessionStorage.getItem(key)", SAVED)

    def settled(self) -> str:
        handle = self.page.wait_for_function(
            """() => {
                const s = document.querySelector('[data-testid="answer"]')?.dataset.state;
                return s && s !== "streaming" ? s : null;
            }""",
            polling=20,
        )
        return str(handle.json_value())


@pytest.fixture
def demo(page: Page, servers: Servers) -> Demo:
    return Demo(page, servers.url + "/")


def _body(prompt: str, simulator: dict[str, Any]) -> dict[str, Any]:
    """The body the demo page sends for the first question of a chat."""
    return {
        "model": "sim-1",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "simulator": simulator,
    }


# EventSource ------------------------------------------------------------------------------


def test_an_event_source_reconnects_after_a_cut_and_gets_every_event_once(
    page: Page, servers: Servers, sim: Simulator
) -> None:
    body = _body("Resume me with an EventSource", {"tokens": 40, "delay": 0.03})
    expected = sim.expected_text(body)
    # Start the stream, take its id, and leave: with a store, the generation goes on.
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", servers.url + "/v1/chat/completions?format=sse", json=body) as r,
    ):
        assert r.status_code == 200
        stream_id = r.headers["x-stream-id"]
    servers.cutter.arm(stream_id, after=700)  # a few events in, in the middle of one

    page.goto(servers.url + "/blank", wait_until="load")
    out = page.evaluate(EVENT_SOURCE, f"/v1/streams/{stream_id}")

    assert not out.get("timeout"), out
    got = out["got"]
    ids = [int(e["id"]) for e in got]
    assert ids == list(range(1, len(got) + 1)), "an event was lost or repeated"
    assert [e["type"] for e in got][-1] == "done"
    assert "".join(e["data"]["text"] for e in got if e["type"] == "delta") == expected
    # What the browser did: a first GET (cut), a reconnect with Last-Event-ID after the
    # last whole event it had, then, after `done`, a last one the relay answered 204.
    log = [(last, status) for sid, last, status in servers.cutter.log if sid == stream_id]
    assert stream_id in servers.cutter.cuts
    assert len(log) == 3, log
    assert log[0] == (None, 200)
    assert log[1][1] == 200 and log[1][0] is not None and 1 <= int(log[1][0]) < len(got)
    assert log[2] == (str(len(got)), 204)
    assert out["opens"] == 2
    assert sim.stats.wait(finished=1, timeout=10)
    assert sim.stats.started == 1 and sim.stats.cancelled == 0


# The demo page: reload ----------------------------------------------------------------------


@pytest.mark.parametrize("format", FORMATS)
def test_a_reload_mid_answer_resumes_it_and_shows_the_whole_answer_once(
    demo: Demo, sim: Simulator, format: str
) -> None:
    fault = {"tokens": 60, "delay": 0.05}  # about 3 s
    prompt = f"Survive a reload in {format}"
    expected = sim.expected_text(_body(prompt, fault))
    demo.ask(prompt, format=format, simulator=fault)
    saved = demo.saved()
    assert saved["format"] == format
    assert saved["messages"] == [{"role": "user", "content": prompt}]
    before = demo.text_longer_than(20)
    assert expected.startswith(before) and before != expected
    assert sim.stats.finished == 0, "the answer was complete before the reload"

    demo.page.reload(wait_until="load")

    assert demo.settled() == "done"
    after = demo.answer()
    assert after["text"] == expected, "the resumed answer is not the whole answer, once"
    assert after["resumed"] is True
    assert after["answers"] == 1 and after["users"] == [prompt]
    assert after["error"] is None and after["note"] is None
    assert after["send"] is False and after["stop"] is True
    # One generation, never cancelled: the reload read it back from the store.
    assert sim.stats.wait(finished=1, timeout=10)
    assert sim.stats.started == 1 and sim.stats.cancelled == 0
    resumes = [url for method, url in demo.requests if method == "GET" and "/streams/" in url]
    assert resumes == [f"{demo.url}v1/streams/{saved['id']}?format={format}"]
    assert demo.saved_now() is None, "a finished answer stays saved"

    # The conversation goes on with the resumed answer in it.
    demo.ask("And then?", format=format, simulator={"tokens": 3})
    assert demo.settled() == "done"
    assert sim.requests[-1].json()["messages"] == [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": expected},
        {"role": "user", "content": "And then?"},
    ]


def test_a_reload_after_the_answer_ended_shows_it_whole(demo: Demo, sim: Simulator) -> None:
    """The page saved the answer and went away; the answer finished meanwhile."""
    fault = {"tokens": 20, "delay": 0.02}
    prompt = "Finish while I am away"
    expected = sim.expected_text(_body(prompt, fault))
    demo.ask(prompt, format="ndjson", simulator=fault)
    demo.saved()
    demo.page.goto("about:blank")  # the page goes; the generation goes on into the store
    assert sim.stats.wait(finished=1, timeout=10)
    demo.page.goto(demo.url, wait_until="load")
    assert demo.settled() == "done"
    assert demo.answer()["text"] == expected


def test_a_resumed_answer_that_is_gone_is_an_error(demo: Demo, sim: Simulator) -> None:
    demo.page.evaluate(
        """(key) => sessionStorage.setItem(key, JSON.stringify({
            id: "AAAAAAAAAAAAAAAAAAAAAA", format: "sse",
            messages: [{role: "user", content: "Where did it go?"}],
        }))""",
        SAVED,
    )
    demo.page.reload(wait_until="load")
    assert demo.settled() == "error"
    gone = demo.answer()
    assert gone["users"] == ["Where did it go?"]
    assert gone["error"] is not None and "stream_not_found" in gone["error"]
    assert demo.saved_now() is None
    assert sim.requests == []


# The demo page: Stop ------------------------------------------------------------------------


def _stopped(demo: Demo, sim: Simulator) -> dict[str, Any]:
    assert demo.settled() == "stopped"
    sim.stats.wait(cancelled=1, timeout=5)  # the relay closed the upstream connection
    assert sim.stats.finished == 0
    assert sim.requests[-1].outcome == "cancelled"
    stopped = demo.answer()
    assert stopped["error"] is None, "a stop by the user is not an error"
    assert stopped["note"] is not None and "Stopped" in stopped["note"]
    assert stopped["send"] is False and stopped["stop"] is True
    time.sleep(0.5)
    assert demo.answer()["text"] == stopped["text"], "text arrived after the stop"
    assert demo.saved_now() is None
    return stopped


@pytest.mark.parametrize("format", FORMATS)
def test_stop_stops_the_generation_by_its_stream_id(
    demo: Demo, sim: Simulator, format: str
) -> None:
    prompt = f"Go on for a while in {format}"
    fault = {"tokens": 300, "delay": 0.05}
    expected = sim.expected_text(_body(prompt, fault))
    demo.ask(prompt, format=format, simulator=fault)
    stream_id = demo.saved()["id"]
    demo.text_longer_than(10)
    demo.page.click("#stop")

    stopped = _stopped(demo, sim)
    assert expected.startswith(stopped["text"]) and stopped["text"] != expected
    deletes = [(url, status) for method, url, status in demo.responses if method == "DELETE"]
    assert deletes == [(f"{demo.url}v1/streams/{stream_id}", 204)]


def test_stop_works_on_a_resumed_answer(demo: Demo, sim: Simulator) -> None:
    demo.ask("Reload, then stop", format="sse", simulator={"tokens": 300, "delay": 0.05})
    stream_id = demo.saved()["id"]
    demo.text_longer_than(10)
    demo.page.reload(wait_until="load")
    demo.text_longer_than(10)
    assert demo.answer()["resumed"] is True
    demo.page.click("#stop")
    _stopped(demo, sim)
    deletes = [url for method, url in demo.requests if method == "DELETE"]
    assert deletes == [f"{demo.url}v1/streams/{stream_id}"]


def test_stop_before_the_stream_has_an_id_aborts(demo: Demo, sim: Simulator) -> None:
    # The simulator holds back its response headers, so the relay has sent none either.
    demo.ask("Hello?", format="ndjson", simulator={"fault": "stall_headers"})
    sim.stats.wait(started=1)
    time.sleep(0.2)
    demo.page.click("#stop")
    assert demo.settled() == "stopped"
    assert sim.stats.wait(cancelled=1, timeout=5)
    assert demo.answer()["text"] == ""
    assert [m for m, _ in demo.requests if m == "DELETE"] == []


# `streamrelay demo` --------------------------------------------------------------------------


def test_the_demo_command_keeps_its_streams_in_a_store(tmp_path: Path) -> None:
    """``streamrelay demo`` itself (the console script): its streams have ids, and resume."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "STREAMRELAY_UPSTREAM")
        and not k.lower().endswith("_proxy")
    }
    script = str(Path(sys.executable).parent / "streamrelay")
    log = (tmp_path / "demo.log").open("wb")
    process = subprocess.Popen(
        [script, "demo", "--simulator", "--port", str(port), "--delay", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=10) as http:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, (tmp_path / "demo.log").read_text()
                try:
                    http.get(url + "/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the demo never answered"
                    time.sleep(0.05)
            body = {"model": "sim-1", "messages": [{"role": "user", "content": "Hi"}]}
            first = http.post(url + "/v1/chat/completions?format=ndjson", json=body)
            stream_id = first.headers["x-stream-id"]
            again = http.get(url + f"/v1/streams/{stream_id}?format=text")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
    assert first.status_code == 200 and '"seq":1' in first.text
    assert again.status_code == 200
    assert again.text == Simulator().expected_text(body)
