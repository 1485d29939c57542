// Reading each format: events, heartbeats, line endings, blank lines, BOM, multi-line data.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stream, SSEParser } from "../../src/streamrelay/static/streamrelay.js";
import { fakeFetch, streamResponse, drain, ndjson, sse, TYPICAL, bytes } from "../support/fake.mjs";

function run(format, chunks, options = {}) {
  const fetch = fakeFetch(() => streamResponse(format, chunks));
  return stream("/v1/chat/completions", {}, { format, fetch, ...options });
}

const FULL_TEXT = "Hello, wörld 😀 漢字\nline two";

test("ndjson: yields the events as sent, ending with done; text() is choice 0's text", async () => {
  const s = run("ndjson", [ndjson(...TYPICAL)]);
  const { events, error } = await drain(s);
  assert.equal(error, null);
  assert.deepEqual(events, TYPICAL);
  assert.equal(await s.text(), FULL_TEXT);
});

test("ndjson: ping heartbeats, blank lines and CRLF line ends are ignored", async () => {
  const body =
    '{"type":"ping"}\n\n' +
    '{"type":"start","id":"x","model":"m"}\r\n' +
    "   \n" +
    '{"type":"ping"}\r\n' +
    '{"type":"delta","index":0,"text":"a\\r\\nb"}\n' +
    "\r\n" +
    '{"type":"done"}\n';
  const { events, error } = await drain(run("ndjson", [body]));
  assert.equal(error, null);
  assert.deepEqual(events, [
    { type: "start", id: "x", model: "m" },
    { type: "delta", index: 0, text: "a\r\nb" },
    { type: "done" },
  ]);
});

test("ndjson: a leading BOM is skipped, and a last line without its newline still counts", async () => {
  const { events, error } = await drain(run("ndjson", ["\uFEFF" + ndjson(TYPICAL[1]) + '{"type":"done"}']));
  assert.equal(error, null);
  assert.deepEqual(events, [TYPICAL[1], { type: "done" }]);
});

test("ndjson: nothing after done is read or yielded", async () => {
  const { events, error } = await drain(run("ndjson", [ndjson({ type: "done" }, TYPICAL[1]) + "garbage{"]));
  assert.equal(error, null);
  assert.deepEqual(events, [{ type: "done" }]);
});

test("ndjson: an event type this client does not know passes through", async () => {
  const future = { type: "citation", index: 0, url: "https://example.org/", extra: [1, { a: null }] };
  const { events } = await drain(run("ndjson", [ndjson(future, { type: "done" })]));
  assert.deepEqual(events, [future, { type: "done" }]);
});

for (const [name, eol] of [["LF", "\n"], ["CRLF", "\r\n"], ["CR", "\r"]]) {
  test(`sse: ${name} line endings`, async () => {
    const body = sse(...TYPICAL).replace(/\n/g, eol);
    const s = run("sse", [body]);
    const { events, error } = await drain(s);
    assert.equal(error, null);
    assert.deepEqual(events, TYPICAL);
    assert.equal(s.lastEventId, String(TYPICAL.length));
  });
}

test("sse: comments (heartbeats), a BOM, retry, unknown fields and ping events are ignored", async () => {
  const body =
    "\uFEFF: connected\n\n" +
    ":heartbeat\r\n\r\n" +
    "retry: 3000\n" +
    "foo: bar\n" +
    "id: 7\nevent: start\ndata: " + JSON.stringify(TYPICAL[0]) + "\n\n" +
    ": ping\n" +
    "event: ping\ndata: {}\n\n" +
    "data:\n\n" +
    "data: " + JSON.stringify({ type: "ping" }) + "\n\n" +
    "event: delta\ndata:" + JSON.stringify(TYPICAL[1]) + "\n\n" +
    "data: {\"type\":\"done\"}\n\n";
  const s = run("sse", [body]);
  const { events, error } = await drain(s);
  assert.equal(error, null);
  assert.deepEqual(events, [TYPICAL[0], TYPICAL[1], { type: "done" }]);
  assert.equal(s.lastEventId, "7");
});

test("sse: data split over several data: lines is joined with LF", async () => {
  // The relay splits data at line breaks; JSON between tokens may hold them.
  const body =
    'event: delta\ndata: {"type": "delta",\ndata:  "index": 0,\r\ndata: "text": "two\\nlines"}\n\n' +
    'data: {"type":\rdata: "done"}\r\r';
  const { events, error } = await drain(run("sse", [body]));
  assert.equal(error, null);
  assert.deepEqual(events, [{ type: "delta", index: 0, text: "two\nlines" }, { type: "done" }]);
});

test("sse: the JSON's type is what counts, not the event: field", async () => {
  const body = 'event: message\ndata: {"type":"delta","index":0,"text":"x"}\n\nevent: delta\ndata: {"type":"done"}\n\n';
  const { events } = await drain(run("sse", [body]));
  assert.deepEqual(events, [{ type: "delta", index: 0, text: "x" }, { type: "done" }]);
});

test("sse: an event not ended by a blank line is discarded, so the stream is truncated", async () => {
  const { events, error } = await drain(run("sse", [sse(TYPICAL[1]) + 'data: {"type":"done"}\n']));
  assert.deepEqual(events, [TYPICAL[1]]);
  assert.equal(error?.code, "truncated");
});

test("text: each decoded piece is a delta of choice 0, and a clean end is done", async () => {
  const s = run("text", ["Hel", "lo 😀", bytes([0xe6, 0xbc]), bytes([0xa2]), "\r\n!"]);
  const { events, error } = await drain(s);
  assert.equal(error, null);
  assert.deepEqual(events, [
    { type: "delta", index: 0, text: "Hel" },
    { type: "delta", index: 0, text: "lo 😀" },
    { type: "delta", index: 0, text: "漢" },
    { type: "delta", index: 0, text: "\r\n!" },
    { type: "done" },
  ]);
  assert.equal(await s.text(), "Hello 😀漢\r\n!");
});

test("text: an empty body is an empty, complete answer", async () => {
  const s = run("text", []);
  assert.deepEqual((await drain(s)).events, [{ type: "done" }]);
  assert.equal(await s.text(), "");
});

test("text: the text is kept exactly, a leading BOM and JSON-looking text included", async () => {
  const s = run("text", ['\uFEFF{"type":"error"}\n\n: not a comment']);
  assert.equal(await s.text(), '\uFEFF{"type":"error"}\n\n: not a comment');
});

// The parser on its own, against the WHATWG spec's examples and corner cases.

test("SSEParser: the spec's examples", () => {
  const p = new SSEParser();
  assert.deepEqual(p.feed("data: YHOO\ndata: +2\ndata: 10\n\n"), [{ data: "YHOO\n+2\n10", event: "message", id: "" }]);
  assert.deepEqual(
    p.feed(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"),
    [
      { data: "first event", event: "message", id: "1" },
      { data: "second event", event: "message", id: "" },
      { data: " third event", event: "message", id: "" },
    ],
  );
  assert.deepEqual(p.feed("data\n\ndata\ndata\n\ndata:"), [
    { data: "", event: "message", id: "" },
    { data: "\n", event: "message", id: "" },
  ]);
  assert.deepEqual(p.end(), []);
  assert.deepEqual(p.feed("event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n"), [
    { data: "73857293", event: "add", id: "" },
    { data: "2153", event: "remove", id: "" },
  ]);
});

test("SSEParser: a CRLF split between two pieces is one line end", () => {
  const p = new SSEParser();
  assert.deepEqual(p.feed("data: a\r"), []);
  assert.deepEqual(p.feed("\n\r"), [{ data: "a", event: "message", id: "" }]);
  assert.deepEqual(p.feed("\ndata: b\r\r"), [{ data: "b", event: "message", id: "" }]);
  assert.deepEqual(p.feed("\n"), []);
});

test("SSEParser: only one BOM is stripped; id with NUL is ignored; retry needs digits", () => {
  const p = new SSEParser();
  assert.deepEqual(p.feed("\uFEFF\uFEFFdata: x\n\n"), []); // the second BOM makes an unknown field
  assert.deepEqual(p.feed("id: 5\nretry: 1500\n\nid: a\0b\nretry: 1s\ndata: y\n\n"), [
    { data: "y", event: "message", id: "5" },
  ]);
  assert.equal(p.retry, 1500);
  assert.equal(p.lastEventId, "5");
});

test("SSEParser: a long line in many pieces", () => {
  const p = new SSEParser();
  const long = "x".repeat(100000);
  for (let i = 0; i < long.length; i += 1000) assert.deepEqual(p.feed((i === 0 ? "data: " : "") + long.slice(i, i + 1000)), []);
  assert.deepEqual(p.feed("\n\n"), [{ data: long, event: "message", id: "" }]);
});
