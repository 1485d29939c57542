// The demo page (src/streamrelay/static/demo.html): static checks always, and a
// real headless Chromium run against a stub relay when Chromium is installed (in CI,
// where it must be, a missing Chromium fails the test instead of skipping it).
import { test, describe, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Browser, findChromium } from "../support/browser.mjs";
import { startStubRelay } from "../support/stub-relay.mjs";

const html = readFileSync(new URL("../../src/streamrelay/static/demo.html", import.meta.url), "utf8");
const script = html.slice(html.indexOf('<script type="module">'));

test("demo.html: the test hooks exist, each once", () => {
  for (const id of ["prompt", "send", "stop", "format", "messages", "ttft", "tps", "error", "model", "simulator", "clear"]) {
    assert.equal(html.split(` id="${id}"`).length - 1, 1, `id=${id}`);
    assert.equal(html.split(`data-testid="${id}"`).length - 1, 1, `data-testid=${id}`);
  }
  assert.match(html, /<select id="format"[^>]*>\s*<option value="ndjson" selected>ndjson<\/option>\s*<option value="sse">sse<\/option>\s*<option value="text">text<\/option>/);
  assert.match(html, /id="model"[^>]*value="sim-1"/);
});

test("demo.html: offline, imports the client from /v1/streamrelay.js, never writes HTML", () => {
  assert.match(script, /^<script type="module">\s*import \{[^}]*\bstream\b[^}]*\} from "\/v1\/streamrelay\.js";/);
  assert.doesNotMatch(html, /https?:\/\//, "no external URLs (fonts, CDNs)");
  assert.doesNotMatch(html, /<link[^>]+stylesheet/);
  assert.doesNotMatch(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|createContextualFragment/);
});

const chromium = findChromium();
const skip = chromium ? false : process.env.CI ? false : "Chromium not installed (make system-deps)";

describe("demo.html in headless Chromium", { skip, timeout: 120000 }, () => {
  let browser;
  let stub;
  let page;

  before(async () => {
    assert.ok(chromium, "Chromium is required in CI");
    stub = await startStubRelay();
    browser = await Browser.launch(chromium);
    page = await browser.open(`${stub.url}/`);
  });

  after(async () => {
    await browser?.close();
    await stub?.close();
  });

  // Each test starts from an idle page, even when the one before it failed midway.
  beforeEach(async () => {
    stub.release();
    await page.eval(() => document.getElementById("stop").click());
    await page.waitFor(() => !document.getElementById("send").disabled, { what: "an idle page" });
  });

  /** Fills the form and sends; returns when the request went out. */
  async function ask(prompt, { format = "ndjson", simulator = "", model } = {}) {
    const before = stub.requests.length;
    await page.eval(
      (prompt, format, simulator, model) => {
        const $ = (id) => document.getElementById(id);
        $("format").value = format;
        $("simulator").value = simulator;
        if (model !== null) $("model").value = model;
        $("prompt").value = prompt;
        $("send").click();
      },
      prompt, format, simulator, model ?? null,
    );
    await page.waitFor(() => document.querySelector('[data-testid="answer"]'), { what: "an answer element" });
    return before;
  }

  const state = () => page.eval(() => {
    const a = document.querySelector('[data-testid="answer"]');
    const err = document.getElementById("error");
    return {
      state: a?.dataset.state,
      text: a?.textContent,
      answers: document.querySelectorAll('[data-testid="answer"]').length,
      error: err.hidden ? null : err.textContent,
      ttft: document.getElementById("ttft").textContent,
      tps: document.getElementById("tps").textContent,
      send: document.getElementById("send").disabled,
      stop: document.getElementById("stop").disabled,
    };
  });

  const settled = (what) =>
    page.waitFor(() => {
      const s = document.querySelector('[data-testid="answer"]')?.dataset.state;
      return s && s !== "streaming" ? s : null;
    }, { what });

  for (const format of ["ndjson", "sse", "text"]) {
    test(`${format}: streams an answer, then shows it done with TTFT and tokens/s`, async () => {
      const n = await ask(`Hello in ${format}`, { format });
      assert.equal(await settled("done"), "done");
      const s = await state();
      assert.equal(s.text, `You said: Hello in ${format}`);
      assert.equal(s.error, null);
      assert.equal(s.answers, 1, "only the newest answer has data-testid=answer");
      assert.match(s.ttft, /^\d+$/);
      assert.match(s.tps, /^(\d+(\.\d)?|–)$/); // "–" if every token came in one read
      assert.deepEqual([s.send, s.stop], [false, true]);
      const req = stub.requests[n];
      assert.equal(req.url, `/v1/chat/completions?format=${format}`);
      assert.equal(req.headers.accept, { ndjson: "application/x-ndjson", sse: "text/event-stream", text: "text/plain" }[format]);
      assert.equal(req.headers["content-type"], "application/json");
      assert.equal(req.body.model, "sim-1");
      assert.equal(req.body.stream, true);
      assert.deepEqual(req.body.messages.at(-1), { role: "user", content: `Hello in ${format}` });
      assert.equal("simulator" in req.body, false);
    });
  }

  test("the conversation so far goes with each request", async () => {
    const n = await ask("Second question");
    await settled("done");
    const messages = stub.requests[n].body.messages;
    assert.deepEqual(messages.slice(-3), [
      { role: "user", content: "Hello in text" },
      { role: "assistant", content: "You said: Hello in text" },
      { role: "user", content: "Second question" },
    ]);
  });

  test("tokens show while the answer is still streaming", async () => {
    await ask("one two three four five six", { simulator: '{"fault": "gate"}' });
    const partial = await page.waitFor(() => {
      const a = document.querySelector('[data-testid="answer"]');
      return a.dataset.state === "streaming" && a.textContent === "You said: one " ? a.textContent : null;
    }, { what: "three tokens while streaming" });
    assert.equal(partial, "You said: one ");
    const s = await state();
    assert.deepEqual([s.send, s.stop], [true, false], "Send is off and Stop is on while streaming");
    assert.match(s.ttft, /^\d+$/);
    stub.release();
    assert.equal(await settled("done"), "done");
    assert.equal((await state()).text, "You said: one two three four five six");
  });

  for (const format of ["ndjson", "sse", "text"]) {
    test(`${format}: a mid-stream error is shown as an error, never as done`, async () => {
      const n = await ask("will fail", { format, simulator: '{"fault": "mid_error", "after": 2}' });
      assert.equal(await settled("error"), "error");
      const s = await state();
      // The two tokens before the fault. (A browser may drop bytes it had not handed to
      // the reader when the connection breaks, so for text only a prefix is certain.)
      if (format === "text") assert.ok("You said: ".startsWith(s.text), s.text);
      else assert.equal(s.text, "You said: ");
      assert.ok(s.error, "the error banner is shown");
      if (format === "text") assert.match(s.error, /truncated/);
      else assert.match(s.error, /HTTP 502 · upstream_error.*failed mid-stream/);
      assert.deepEqual(stub.requests[n].body.simulator, { fault: "mid_error", after: 2 });
      const note = await page.eval(() => document.querySelector('[data-testid="answer"]').closest("li").querySelector(".note.error")?.textContent);
      assert.match(note, /Incomplete/);
    });
  }

  test("an HTTP error before the stream shows its status and code", async () => {
    await ask("limited", { format: "sse", simulator: '{"fault": "status", "status": 429}' });
    assert.equal(await settled("error"), "error");
    const s = await state();
    assert.match(s.error, /HTTP 429 · rate_limited/);
    assert.match(s.error, /Rate limit reached/);
    assert.equal(s.text, "");
  });

  test("Stop aborts the request: the server sees the connection close, the answer is stopped", async () => {
    await ask("go on forever", { simulator: '{"fault": "hang"}' });
    await page.waitFor(() => document.querySelector('[data-testid="answer"]').textContent.includes("tok2"), { what: "a few tokens" });
    const live = await state();
    assert.equal(live.state, "streaming");
    assert.match(live.ttft, /^\d+$/);
    assert.match(live.tps, /^\d+\.\d$/, "tokens/s shows once tokens have come 20 ms apart");
    const closed = stub.nextClose();
    await page.eval(() => document.getElementById("stop").click());
    assert.equal(await settled("stopped"), "stopped");
    await closed;
    const s = await state();
    assert.equal(s.error, null, "a stop by the user is not an error");
    assert.deepEqual([s.send, s.stop], [false, true]);
  });

  test("Escape stops too", async () => {
    await ask("go on forever", { format: "sse", simulator: '{"fault": "hang"}' });
    await page.waitFor(() => document.querySelector('[data-testid="answer"]').textContent.includes("tok1"), { what: "tokens" });
    await page.eval(() => document.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true })));
    assert.equal(await settled("stopped"), "stopped");
  });

  test("invalid simulator JSON is reported and nothing is sent", async () => {
    const before = stub.requests.length;
    const answers = await page.eval(() => document.querySelectorAll("li.assistant").length);
    await page.eval(() => {
      document.getElementById("simulator").value = "{nope";
      document.getElementById("prompt").value = "hi";
      document.getElementById("send").click();
    });
    await page.waitFor(() => !document.getElementById("error").hidden, { what: "the error banner" });
    assert.match((await state()).error, /invalid_simulator_json/);
    assert.equal(stub.requests.length, before);
    assert.equal(await page.eval(() => document.querySelectorAll("li.assistant").length), answers);
    await page.eval(() => (document.getElementById("simulator").value = ""));
  });

  test("model output is text, never HTML", async () => {
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
    await ask(evil, { format: "text" });
    assert.equal(await settled("done"), "done");
    const s = await page.eval(() => {
      const a = document.querySelector('[data-testid="answer"]');
      return { text: a.textContent, elements: a.querySelectorAll("*").length, pwned: window.__pwned ?? null };
    });
    assert.equal(s.text, `You said: ${evil}`);
    assert.equal(s.elements, 0);
    assert.equal(s.pwned, null);
  });

  test("Enter sends; the model field is sent; New chat clears", async () => {
    const n = stub.requests.length;
    await page.eval(() => {
      document.getElementById("model").value = "other-model";
      const p = document.getElementById("prompt");
      p.value = "via enter";
      p.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true }));
    });
    assert.equal(await settled("done"), "done");
    assert.equal(stub.requests[n].body.model, "other-model");
    await page.eval(() => document.getElementById("clear").click());
    assert.equal(await page.eval(() => document.getElementById("messages").children.length), 0);
  });

  test("no errors in the page's console", () => {
    assert.deepEqual(page.errors, []);
  });
});
