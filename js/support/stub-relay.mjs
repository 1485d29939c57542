// A stand-in for `streamrelay demo`, for testing the client and the demo page on their
// own: node:http on 127.0.0.1 serving the page at /, the client at /v1/streamrelay.js
// and a fake relay at POST /v1/chat/completions that speaks the wire contract in
// docs (DESIGN.md): ndjson, sse and text, errors before and after the first byte.
//
// The answer echoes the last user message word by word. The request's "simulator"
// field picks a fault (names as in streamrelay.testing where they overlap):
//   {"fault": "mid_error", "after": N}  an error after N tokens (text: the response is aborted)
//   {"fault": "status", "status": S}    an HTTP error with the relay's JSON error body
//   {"fault": "hang"}                    tokens every 20 ms until the client goes away
//   {"fault": "gate"}                    3 tokens, then waits for `stub.release()`

import http from "node:http";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const STATIC = fileURLToPath(new URL("../../src/streamrelay/static/", import.meta.url));
const CONTENT_TYPES = { ndjson: "application/x-ndjson", sse: "text/event-stream", text: "text/plain; charset=utf-8" };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startStubRelay({ tokenDelay = 5 } = {}) {
  const requests = []; // {url, headers, body}
  const closed = []; // resolves of "connection closed" waiters
  let gate = null; // the pending "gate" answer's release

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (req.method === "GET" && url.pathname === "/") return sendFile(res, "demo.html", "text/html; charset=utf-8");
    if (req.method === "GET" && url.pathname === "/v1/streamrelay.js") return sendFile(res, "streamrelay.js", "text/javascript; charset=utf-8");
    if (req.method !== "POST" || url.pathname !== "/v1/chat/completions") {
      res.writeHead(404, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { message: "not found", type: "invalid_request_error", code: "not_found" } }));
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(400, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { message: "invalid JSON", type: "invalid_request_error", code: "invalid_json" } }));
    }
    const format = url.searchParams.get("format") || "sse";
    requests.push({ url: req.url, headers: req.headers, body });
    res.on("close", () => closed.splice(0).forEach((resolve) => resolve()));
    await relay(res, format, body);
  });

  async function relay(res, format, body) {
    const fault = body.simulator ?? {};
    let release;
    const released = new Promise((resolve) => (release = resolve));
    if (fault.fault === "gate") gate = release; // before the first token, so release() never misses it
    if (!CONTENT_TYPES[format]) {
      res.writeHead(406, { "content-type": "application/json" });
      return res.end(JSON.stringify({ error: { message: `unknown format ${format}`, type: "invalid_request_error", code: "unsupported_format" } }));
    }
    if (fault.fault === "status") {
      const status = fault.status ?? 429;
      res.writeHead(status, { "content-type": "application/json", "retry-after": "1" });
      return res.end(JSON.stringify({ error: { message: "Rate limit reached for sim-1", type: "rate_limit_error", code: "rate_limited" } }));
    }
    res.writeHead(200, { "content-type": CONTENT_TYPES[format], "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" });
    let seq = 0;
    const write = (ev) => {
      if (res.destroyed) return;
      if (format === "ndjson") res.write(JSON.stringify(ev) + "\n");
      else if (format === "sse") res.write(`id: ${++seq}\nevent: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`);
      else if (ev.type === "delta" && ev.index === 0) res.write(ev.text);
    };
    const last = [...(body.messages ?? [])].reverse().find((m) => m.role === "user")?.content ?? "";
    const words = `You said: ${last}`.split(/(?<= )/);
    write({ type: "start", id: "chatcmpl-stub", model: body.model });
    if (format === "sse") res.write(": heartbeat\n\n");
    let i = 0;
    for (;;) {
      if (res.destroyed) return;
      if (fault.fault === "mid_error" && i === (fault.after ?? 3)) {
        if (format === "text") {
          await sleep(30); // let the tokens so far reach the client: a reset may discard unread bytes
          return res.destroy(); // the relay's text-format error: no terminating chunk
        }
        write({ type: "error", message: "The upstream failed mid-stream (simulated).", code: "upstream_error", status: 502 });
        return res.end();
      }
      if (fault.fault === "gate" && i === 3) await released;
      if (fault.fault === "hang") {
        write({ type: "delta", index: 0, text: `tok${i} ` });
        i++;
        await sleep(20);
        continue;
      }
      if (i >= words.length) break;
      write({ type: "delta", index: 0, text: words[i++] });
      if (format === "ndjson" && i % 4 === 0) res.write('{"type":"ping"}\n');
      await sleep(tokenDelay);
    }
    write({ type: "finish", index: 0, reason: "stop" });
    write({ type: "usage", prompt_tokens: 5, completion_tokens: words.length, total_tokens: 5 + words.length });
    write({ type: "done" });
    res.end();
  }

  function sendFile(res, name, type) {
    res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
    res.end(readFileSync(STATIC + name));
  }

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    /** Lets a `gate` answer go on. */
    release: () => gate?.(),
    /** Resolves when the next streaming response's connection closes. */
    nextClose: () => new Promise((resolve) => closed.push(resolve)),
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

// `node js/support/stub-relay.mjs` serves the page for a manual look.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const stub = await startStubRelay({ tokenDelay: 60 });
  console.log(`demo page on the stub relay: ${stub.url}/`);
}
