"""@microsoft/fetch-event-source in real headless Chromium, against the relay's ``sse`` format.

fetch-event-source is the usual way to POST to an SSE endpoint from a browser. Its
parser hands every blank-line-terminated block to ``onmessage``, comments included, so a
heartbeat written as a comment block (``: ping`` and a blank line) reaches the app as a
message with empty ``data``; the app's ``JSON.parse`` throws, and the library's default
``onerror`` retries by POSTing the request again: a second paid generation. The relay
must write heartbeats that no such client sees.

The package is the pinned npm one (``js/package.json``), loaded unbundled from its ESM
build (``lib/esm``, relative imports as they are). Chromium is Debian's package driven
by Playwright's Python API, as in ``test_browser.py``. The page must have the relay's
origin (the mount answers no CORS preflight, as a same-origin deployment would not
need), so Playwright fulfils the page and the library's files on the relay's origin
from this test (``page.route``), and every request to the relay itself goes to the real
server untouched. The page's ``fetch`` option tees each response to record the raw
bytes, so the test also proves that heartbeats were sent.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from chromium import headless_chromium
from client_oracle import CHAT, MODEL, NODE_MODULES, PROMPT, Oracle, node_modules
from streamrelay import StreamSettings
from streamrelay.testing import Simulator

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Route

pytestmark = pytest.mark.real

ESM = NODE_MODULES / "@microsoft" / "fetch-event-source" / "lib" / "esm"
PAGE_PREFIX = "/__fetch-event-source-test__/"
DEADLINE_MS = 8_000  # a stream takes about 1 s; a retry loop runs until this deadline

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>fetch-event-source against streamrelay</title>
<script type="module">
import { fetchEventSource } from "./lib/index.js";

window.run = async (url, body, deadlineMs) => {
  const seen = { messages: [], empty: 0, text: "", posts: 0, raw: [], closed: false };
  const controller = new AbortController();
  // The fetch the library calls: the page's own, counted, its body teed into `raw`.
  const recordingFetch = async (input, init) => {
    seen.posts += 1;
    const response = await window.fetch(input, init);
    const [forLibrary, forTest] = response.body.tee();
    const index = seen.raw.push("") - 1;
    (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of forTest) seen.raw[index] += decoder.decode(chunk, { stream: true });
    })().catch(() => {});
    return new Response(forLibrary, { status: response.status, headers: response.headers });
  };
  const finished = fetchEventSource(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: controller.signal,
    fetch: recordingFetch,
    onmessage(msg) {
      seen.messages.push({ event: msg.event, id: msg.id, data: msg.data });
      if (msg.data === "") seen.empty += 1;
      const event = JSON.parse(msg.data);  // as an app does: an empty message throws here
      if (event.type === "delta") seen.text += event.text;
    },
    onclose() {
      seen.closed = true;
    },
    // no onerror: the library's default, which retries by POSTing again
  }).then(() => "resolved", (error) => `rejected: ${error}`);
  const deadline = new Promise((resolve) => setTimeout(() => resolve("deadline"), deadlineMs));
  seen.settled = await Promise.race([finished, deadline]);
  controller.abort();
  return seen;
};
</script>
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium with a fresh temporary profile."""
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def oracle(streamrelay_simulator_app: Simulator) -> Oracle:
    return Oracle(streamrelay_simulator_app)


def _serve_test_files(route: Route) -> None:
    """The page, and the library's ESM files as they are (``./fetch`` is ``fetch.js``)."""
    path = urlsplit(route.request.url).path[len(PAGE_PREFIX) :]
    if path in ("", "index.html"):
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=PAGE)
        return
    if path.startswith("lib/"):
        name = path[len("lib/") :]
        candidates = [ESM / name, ESM / f"{name}.js"]
        for file in candidates:
            if file.is_file() and file.resolve().is_relative_to(ESM.resolve()):
                kind = "text/javascript" if file.suffix == ".js" else mimetypes.guess_type(file)[0]
                route.fulfill(status=200, content_type=kind or "text/plain", body=file.read_bytes())
                return
    route.fulfill(status=404, body="not found")


@pytest.mark.streamrelay_simulator(delay=0.1, tokens=10)
@pytest.mark.streamrelay_relay(stream=StreamSettings(heartbeat=0.05))
def test_fetch_event_source_sees_no_heartbeat_and_posts_once(
    browser: Browser, streamrelay_relay: str, oracle: Oracle
) -> None:
    node_modules("@microsoft/fetch-event-source")
    origin = streamrelay_relay.removesuffix("/v1")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(f"{origin}{PAGE_PREFIX}**", _serve_test_files)
    try:
        page.goto(f"{origin}{PAGE_PREFIX}index.html", wait_until="load")
        request = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
        seen: dict[str, Any] = page.evaluate(
            "([url, body, deadline]) => window.run(url, body, deadline)",
            [f"{streamrelay_relay}{CHAT}?format=sse", request, DEADLINE_MS],
        )
    finally:
        page.close()
    assert errors == []

    # Heartbeats did happen during the stream (the relay's comment lines).
    raw = seen["raw"][0] if seen["raw"] else ""
    heartbeats = [line for line in raw.splitlines() if line.startswith(":")]
    assert len(heartbeats) >= 3, f"expected several heartbeats in the stream: {raw!r}"

    # No message without data reached the app, so nothing threw and nothing retried.
    empty = [m for m in seen["messages"] if m["data"] == ""]
    assert empty == [], (
        f"{len(empty)} empty message(s) reached onmessage; fetch-event-source then POSTed "
        f"{seen['posts']} times and the simulator got {len(oracle.sim.requests)} request(s); "
        f"the stream began {raw[:300]!r}"
    )
    assert seen["settled"] == "resolved" and seen["closed"]

    # One POST from the page, one upstream request, and the simulator's text.
    assert seen["posts"] == 1, f"fetch-event-source POSTed {seen['posts']} times"
    body = oracle.one_call(CHAT)
    assert seen["text"] == oracle.text(CHAT, body)
    types = [m["event"] for m in seen["messages"]]
    assert types[0] == "start" and types[-1] == "done"
