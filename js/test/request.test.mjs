// What the client sends: method, URL with ?format=, Accept, Content-Type, body.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stream, ACCEPT } from "../../src/streamrelay/static/streamrelay.js";
import { fakeFetch, streamResponse, ndjson, sse } from "../support/fake.mjs";

const done = { ndjson: ndjson({ type: "done" }), sse: sse({ type: "done" }), text: "" };

async function request(url, body, options = {}) {
  const format = options.format ?? "ndjson";
  const fetch = fakeFetch(() => streamResponse(format, [done[format]]));
  const s = stream(url, body, { ...options, fetch });
  await s.text();
  assert.equal(fetch.calls.length, 1);
  return { ...fetch.calls[0], s };
}

test("POSTs the body as JSON to ?format=ndjson with the ndjson Accept by default", async () => {
  const body = { model: "sim-1", messages: [{ role: "user", content: "hi" }], stream: true };
  const { url, init, s } = await request("/v1/chat/completions", body);
  assert.equal(url, "/v1/chat/completions?format=ndjson");
  assert.equal(s.url, url);
  assert.equal(s.format, "ndjson");
  assert.equal(init.method, "POST");
  assert.equal(init.headers.get("accept"), "application/x-ndjson");
  assert.equal(init.headers.get("content-type"), "application/json");
  assert.deepEqual(JSON.parse(init.body), body);
  assert.ok(init.signal instanceof AbortSignal);
});

test("each format sends its Accept header and its ?format=", async () => {
  for (const [format, accept] of [["ndjson", "application/x-ndjson"], ["sse", "text/event-stream"], ["text", "text/plain"]]) {
    const { url, init } = await request("http://127.0.0.1:1/v1/chat/completions", {}, { format });
    assert.equal(url, `http://127.0.0.1:1/v1/chat/completions?format=${format}`);
    assert.equal(init.headers.get("accept"), accept);
    assert.equal(ACCEPT[format], accept);
  }
});

test("an existing query is kept byte for byte and an existing format= is replaced", async () => {
  const cases = [
    ["/v1/chat?a=1", "/v1/chat?a=1&format=sse"],
    ["/v1/chat?a=b%20c&x&y=", "/v1/chat?a=b%20c&x&y=&format=sse"],
    ["/v1/chat?format=text&a=1&format=openai", "/v1/chat?a=1&format=sse"],
    ["/v1/chat?fo%72mat=text&formats=1", "/v1/chat?formats=1&format=sse"],
    ["/v1/chat?", "/v1/chat?format=sse"],
    ["/v1/chat?a=1#frag", "/v1/chat?a=1&format=sse#frag"],
    [new URL("http://127.0.0.1:8000/v1/chat?q=%E2%9C%93"), "http://127.0.0.1:8000/v1/chat?q=%E2%9C%93&format=sse"],
  ];
  for (const [input, expected] of cases) {
    const { url } = await request(input, {}, { format: "sse" });
    assert.equal(url, expected, String(input));
  }
});

test("extra headers are sent; a caller's Accept or Content-Type wins", async () => {
  const { init } = await request("/x", { a: 1 }, {
    headers: { "X-Api-Token": "t", "content-type": "application/json; charset=utf-8" },
  });
  assert.equal(init.headers.get("x-api-token"), "t");
  assert.equal(init.headers.get("content-type"), "application/json; charset=utf-8");
  assert.equal(init.headers.get("accept"), "application/x-ndjson");
  const { init: init2 } = await request("/x", {}, { headers: [["accept", "application/x-ndjson, */*"]] });
  assert.equal(init2.headers.get("accept"), "application/x-ndjson, */*");
});

test("a string body is sent as it is; no body means no Content-Type", async () => {
  const { init } = await request("/x", '{"raw": true}');
  assert.equal(init.body, '{"raw": true}');
  const { init: init2 } = await request("/x");
  assert.equal(init2.body, undefined);
  assert.equal(init2.headers.get("content-type"), null);
});

test("bad arguments throw at once", () => {
  const fetch = fakeFetch(() => streamResponse("ndjson", []));
  assert.throws(() => stream("/x", {}, { format: "openai", fetch }), TypeError);
  assert.throws(() => stream("/x", {}, { format: "xml", fetch }), /unknown format/);
  assert.throws(() => stream("/x", {}, { onText: "nope", fetch }), /onText must be a function/);
  const circular = {};
  circular.self = circular;
  assert.throws(() => stream("/x", circular, { fetch }), TypeError);
  assert.equal(fetch.calls.length, 0);
});

test("fetch is called as a plain function (window.fetch needs no `this`)", async () => {
  let seenThis = "unset";
  const fetch = function (url, init) {
    seenThis = this;
    return Promise.resolve(streamResponse("ndjson", [done.ndjson]));
  };
  await stream("/x", {}, { fetch }).text();
  assert.equal(seenThis, undefined);
});

test("the request starts at once, before anyone iterates", async () => {
  const fetch = fakeFetch(() => streamResponse("ndjson", [done.ndjson]));
  const s = stream("/x", {}, { fetch });
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(fetch.calls.length, 1);
  const events = [];
  for await (const ev of s) events.push(ev);
  assert.deepEqual(events, [{ type: "done" }]);
});
