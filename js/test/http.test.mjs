// Against a real HTTP server (node:http on 127.0.0.1, port 0) and Node's real fetch:
// events arrive incrementally, aborting closes the TCP connection, errors map to statuses.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { stream, StreamRelayError, isAbortError } from "../../src/streamrelay/static/streamrelay.js";
import { ndjson, sse, TYPICAL } from "../support/fake.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const CONTENT_TYPES = { ndjson: "application/x-ndjson", sse: "text/event-stream", text: "text/plain; charset=utf-8" };

let server;
let base;
const routes = new Map(); // path → async (req, res, url, body) handler

before(async () => {
  server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const handler = routes.get(url.pathname);
    if (!handler) {
      res.writeHead(404).end();
      return;
    }
    await handler(req, res, url, Buffer.concat(chunks).toString("utf8"));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

function startStream(res, format) {
  res.writeHead(200, {
    "content-type": CONTENT_TYPES[format],
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
  });
}

/** A gate the client opens; the server waits on it, or gives up after `ms` so nothing hangs. */
function gate(ms = 3000) {
  let open;
  const opened = new Promise((resolve) => (open = resolve));
  let timer;
  const gaveUp = new Promise((resolve) => (timer = setTimeout(resolve, ms)));
  opened.then(() => clearTimeout(timer));
  return { open, wait: () => Promise.race([opened, gaveUp]) };
}

for (const format of ["ndjson", "sse", "text"]) {
  test(`${format}: the first event reaches the client before the server writes the last one`, async () => {
    const log = [];
    const firstSeen = gate();
    const seenRequest = {};
    const encode = format === "sse" ? sse : ndjson;
    routes.set(`/${format}/chat/completions`, async (req, res, url, body) => {
      Object.assign(seenRequest, { method: req.method, format: url.searchParams.get("format"), accept: req.headers.accept, body: JSON.parse(body) });
      startStream(res, format);
      if (format === "sse") res.write(": connected\n\n");
      const parts = format === "text" ? ["Hello", ", wörld", " 😀 漢字\nline two"] : TYPICAL.map((e) => encode(e));
      res.write(parts[0]);
      log.push("server: wrote the first event");
      await firstSeen.wait(); // waits for the client, so only an unbuffered path can pass
      for (const part of parts.slice(1, -1)) {
        await sleep(5);
        if (format === "ndjson") res.write(ndjson({ type: "ping" }));
        res.write(part);
      }
      await sleep(5);
      log.push("server: writes the last event");
      res.end(parts.at(-1));
    });

    const body = { model: "sim-1", messages: [{ role: "user", content: "hi" }], stream: true };
    const s = stream(`${base}/${format}/chat/completions`, body, { format });
    const events = [];
    for await (const ev of s) {
      if (events.length === 0) {
        log.push("client: got the first event");
        firstSeen.open();
      }
      events.push(ev);
    }
    assert.deepEqual(log, ["server: wrote the first event", "client: got the first event", "server: writes the last event"]);
    assert.deepEqual(seenRequest, { method: "POST", format, accept: { ndjson: "application/x-ndjson", sse: "text/event-stream", text: "text/plain" }[format], body });
    if (format === "text") {
      assert.equal(events.at(-1).type, "done");
    } else {
      assert.deepEqual(events, TYPICAL);
    }
    assert.equal(await s.text(), "Hello, wörld 😀 漢字\nline two");
  });
}

test("abort closes the TCP connection while the server is still streaming", async () => {
  let closed;
  const serverSawClose = new Promise((resolve) => (closed = resolve));
  let writes = 0;
  routes.set("/abort", async (req, res) => {
    res.on("close", () => closed(writes));
    startStream(res, "ndjson");
    while (!res.destroyed && writes < 1000) {
      res.write(ndjson({ type: "delta", index: 0, text: `tok${writes++} ` }));
      await sleep(10);
    }
  });
  const s = stream(`${base}/abort`, {});
  let received = 0;
  await assert.rejects(
    (async () => {
      for await (const ev of s) {
        if (ev.type === "delta" && ++received === 3) s.abort();
      }
    })(),
    (err) => isAbortError(err),
  );
  const writesAtClose = await serverSawClose;
  assert.equal(received, 3);
  assert.ok(writesAtClose < 1000, "the server noticed the disconnect long before it finished");
});

test("an HTTP error before the stream carries the status and the JSON error body", async () => {
  routes.set("/limited", async (req, res) => {
    res.writeHead(429, { "content-type": "application/json", "retry-after": "2" });
    res.end(JSON.stringify({ error: { message: "Too many requests", type: "rate_limit_error", code: "rate_limited" } }));
  });
  const err = await stream(`${base}/limited`, {}, { format: "sse" }).text().catch((e) => e);
  assert.ok(err instanceof StreamRelayError);
  assert.equal(err.status, 429);
  assert.equal(err.code, "rate_limited");
  assert.equal(err.message, "Too many requests");
  assert.equal(err.retryAfterMs, 2000);
});

test("text: a response aborted mid-body (the relay's error signal) is truncated, never done", async () => {
  routes.set("/text-error", async (req, res) => {
    startStream(res, "text");
    res.write("partial ans");
    await sleep(20);
    res.destroy(); // no terminating chunk
  });
  const pieces = [];
  const s = stream(`${base}/text-error`, {}, { format: "text", onText: (p) => pieces.push(p) });
  const err = await s.text().catch((e) => e);
  assert.ok(err instanceof StreamRelayError);
  assert.equal(err.code, "truncated");
  assert.equal(pieces.join(""), "partial ans");
});

test("ndjson and sse: a server that closes without done is truncated", async () => {
  for (const format of ["ndjson", "sse"]) {
    routes.set("/cut", async (req, res) => {
      startStream(res, format);
      res.end((format === "sse" ? sse : ndjson)(TYPICAL[0], TYPICAL[1]));
    });
    const err = await stream(`${base}/cut`, {}, { format }).text().catch((e) => e);
    assert.equal(err.code, "truncated", format);
  }
});

test("a multi-byte character split across two TCP writes arrives whole", async () => {
  routes.set("/split", async (req, res) => {
    startStream(res, "sse");
    const bytes = Buffer.from(sse({ type: "delta", index: 0, text: "😀漢" }, { type: "done" }));
    const cut = bytes.indexOf(Buffer.from("😀")) + 2;
    res.write(bytes.subarray(0, cut));
    await sleep(20);
    res.end(bytes.subarray(cut));
  });
  assert.equal(await stream(`${base}/split`, {}, { format: "sse" }).text(), "😀漢");
});

test("a refused connection is a network_error", async () => {
  const probe = http.createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  const err = await stream(`http://127.0.0.1:${port}/x`, {}).text().catch((e) => e);
  assert.ok(err instanceof StreamRelayError);
  assert.equal(err.code, "network_error");
});
