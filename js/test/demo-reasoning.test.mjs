// The demo page shows the model's reasoning collapsed above the answer: static checks
// always, and headless Chromium (when installed; required in CI) against a small relay
// stand-in of this file's own that streams `reasoning` events in ndjson and sse.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { readFileSync } from "node:fs";
import { Browser, findChromium } from "../support/browser.mjs";

const STATIC = new URL("../../src/streamrelay/static/", import.meta.url);
const html = readFileSync(new URL("demo.html", STATIC), "utf8");
const script = html.slice(html.indexOf('<script type="module">'));

test("demo.html: a reasoning <details> above the answer, filled from reasoning events as text", () => {
  assert.match(script, /h\("details", \{[^}]*"data-testid": "reasoning"[^}]*hidden: ""/);
  assert.match(script, /case "reasoning":/);
  assert.match(script, /thoughts, answer, extras, meta\)/, "the reasoning comes before the answer");
  assert.doesNotMatch(script, /"reasoning"[^\n]*open/, "it starts collapsed");
});

// The stand-in relay --------------------------------------------------------------------------

const REASONING = ["The user greets me", " — <b>politely</b> 😀.\n", "I will greet back."];
const ANSWER = ["Hello", " to you", " too!"];

/** Events for a prompt: "think" reasons first, "gate" waits for release() after reasoning. */
function* plan(prompt) {
  yield { type: "start", id: "chatcmpl-demo", model: "sim-1" };
  if (prompt !== "plain") for (const text of REASONING) yield { type: "reasoning", index: 0, text };
  if (prompt === "gate") yield "gate";
  for (const text of ANSWER) yield { type: "delta", index: 0, text };
  yield { type: "finish", index: 0, reason: "stop" };
  yield { type: "usage", prompt_tokens: 5, completion_tokens: 9, total_tokens: 14, completion_tokens_details: { reasoning_tokens: 6 } };
  yield { type: "done" };
}

async function startRelay() {
  const requests = [];
  let release = null;
  // release() may come before the stream reaches its gate (the page can show the whole
  // reasoning while the server still waits between writes): the gate then stays open.
  let opened = false;
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (req.method === "GET" && (url.pathname === "/" || url.pathname === "/v1/streamrelay.js")) {
      const [name, type] = url.pathname === "/" ? ["demo.html", "text/html"] : ["streamrelay.js", "text/javascript"];
      res.writeHead(200, { "content-type": `${type}; charset=utf-8`, "cache-control": "no-store" });
      return res.end(readFileSync(new URL(name, STATIC)));
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    requests.push(body);
    const format = url.searchParams.get("format");
    const sse = format === "sse";
    res.writeHead(200, { "content-type": sse ? "text/event-stream" : "application/x-ndjson", "cache-control": "no-cache" });
    let id = 0;
    for (const ev of plan(body.messages.at(-1).content)) {
      if (ev === "gate") {
        if (!opened) await new Promise((resolve) => (release = resolve));
        opened = false;
        release = null;
        continue;
      }
      res.write(sse ? `id: ${++id}\nevent: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n` : JSON.stringify(ev) + "\n");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    res.end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    release: () => {
      opened = true;
      release?.();
    },
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

const chromium = findChromium();
const skip = chromium ? false : process.env.CI ? false : "Chromium not installed (make system-deps)";

describe("demo.html reasoning in headless Chromium", { skip, timeout: 120000 }, () => {
  let browser;
  let relay;
  let page;

  before(async () => {
    assert.ok(chromium, "Chromium is required in CI");
    relay = await startRelay();
    browser = await Browser.launch(chromium);
    page = await browser.open(`${relay.url}/`);
  });

  after(async () => {
    relay?.release();
    await browser?.close();
    await relay?.close();
  });

  async function ask(prompt, format) {
    await page.waitFor(() => !document.getElementById("send").disabled, { what: "an idle page" });
    await page.eval(
      (prompt, format) => {
        document.getElementById("format").value = format;
        document.getElementById("prompt").value = prompt;
        document.getElementById("send").click();
      },
      prompt, format,
    );
    await page.waitFor(() => document.querySelector('[data-testid="answer"]'), { what: "an answer" });
  }

  const view = () => page.eval(() => {
    const details = document.querySelector('[data-testid="reasoning"]');
    const answer = document.querySelector('[data-testid="answer"]');
    return {
      state: answer.dataset.state,
      answer: answer.textContent,
      hidden: details.hidden,
      visible: details.getBoundingClientRect().height > 0,
      open: details.open,
      reasoning: document.querySelector('[data-testid="reasoning-text"]').textContent,
      elements: details.querySelectorAll("b").length,
      above: Boolean(details.compareDocumentPosition(answer) & Node.DOCUMENT_POSITION_FOLLOWING),
      sameMessage: details.closest("li") === answer.closest("li"),
    };
  });

  const done = () => page.waitFor(() => {
    const s = document.querySelector('[data-testid="answer"]').dataset.state;
    return s !== "streaming" ? s : null;
  }, { what: "the end of the answer" });

  for (const format of ["ndjson", "sse"]) {
    test(`${format}: the reasoning is shown collapsed above the answer, as text, and kept out of it`, async () => {
      await ask("think", format);
      assert.equal(await done(), "done");
      const v = await view();
      assert.equal(v.answer, ANSWER.join(""));
      assert.equal(v.reasoning, REASONING.join(""));
      assert.deepEqual([v.hidden, v.visible, v.open], [false, true, false]);
      assert.equal(v.elements, 0, "model output is never HTML");
      assert.ok(v.above && v.sameMessage, "the reasoning sits above its own answer");
    });
  }

  test("the reasoning fills in while it streams, before the answer starts", async () => {
    await ask("gate", "ndjson");
    const partial = await page.waitFor(() => {
      const text = document.querySelector('[data-testid="reasoning-text"]').textContent;
      return text.endsWith("I will greet back.") ? text : null;
    }, { what: "the whole reasoning" });
    assert.equal(partial, REASONING.join(""));
    const v = await view();
    assert.equal(v.state, "streaming");
    assert.equal(v.answer, "");
    assert.deepEqual([v.hidden, v.open], [false, false]);
    relay.release();
    assert.equal(await done(), "done");
    assert.equal((await view()).answer, ANSWER.join(""));
  });

  test("an answer without reasoning shows no reasoning element", async () => {
    await ask("plain", "sse");
    assert.equal(await done(), "done");
    const v = await view();
    assert.deepEqual([v.hidden, v.visible, v.reasoning], [true, false, ""]);
    assert.equal(v.answer, ANSWER.join(""));
  });

  test("the conversation sent back holds the answers, never the reasoning", async () => {
    await ask("again", "ndjson");
    assert.equal(await done(), "done");
    const messages = relay.requests.at(-1).messages;
    const assistant = messages.filter((m) => m.role === "assistant");
    assert.ok(assistant.length >= 3);
    for (const m of assistant) assert.deepEqual(m, { role: "assistant", content: ANSWER.join("") });
    assert.equal(await page.eval(() => document.querySelectorAll('[data-testid="reasoning"]').length), 1);
  });

  test("no errors in the page's console", () => {
    assert.deepEqual(page.errors, []);
  });
});
