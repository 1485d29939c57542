// Stopping a stream: .abort(), an AbortSignal, leaving a for-await loop. Each one must
// abort the fetch's signal (which closes the connection, so the relay stops the upstream).
import { test } from "node:test";
import assert from "node:assert/strict";
import { stream, isAbortError, StreamRelayError } from "../../src/streamrelay/static/streamrelay.js";
import { fakeFetch, streamResponse, ndjson, sse, TYPICAL, controlledBody, tick } from "../support/fake.mjs";

function live(format = "ndjson", options = {}, fetchOptions = {}) {
  const body = controlledBody();
  const fetch = fakeFetch(() => streamResponse(format, body.stream), fetchOptions);
  const s = stream("/v1/chat/completions", {}, { format, fetch, ...options });
  return { s, body, fetch, signal: () => fetch.calls[0].init.signal };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail("expected a rejection");
}

for (const format of ["ndjson", "sse", "text"]) {
  test(`${format}: .abort() mid-stream aborts the fetch and iteration throws an AbortError`, async () => {
    const { s, body, signal } = live(format);
    const first = format === "text" ? "Hello" : format === "sse" ? sse(TYPICAL[1]) : ndjson(TYPICAL[1]);
    body.push(first);
    const seen = [];
    const err = await rejection(
      (async () => {
        for await (const ev of s) {
          seen.push(ev);
          s.abort();
        }
      })(),
    );
    assert.equal(seen.length, 1);
    assert.equal(seen[0].type, "delta");
    assert.ok(err instanceof DOMException);
    assert.equal(err.name, "AbortError");
    assert.ok(isAbortError(err));
    assert.ok(!(err instanceof StreamRelayError));
    assert.equal(signal().aborted, true);
    assert.ok(isAbortError(signal().reason));
    await body.cancelled; // the body was cancelled: the connection is closed
    assert.ok(isAbortError(await rejection(s.text())));
    assert.ok(isAbortError(await rejection(s.result())));
  });
}

test("abort while waiting for the next event rejects the pending next() at once", async () => {
  const { s, body, signal } = live();
  body.push(ndjson(TYPICAL[0]));
  const it = s[Symbol.asyncIterator]();
  assert.deepEqual((await it.next()).value, TYPICAL[0]);
  const pending = it.next();
  await tick();
  s.abort();
  assert.ok(isAbortError(await rejection(pending)));
  assert.equal(signal().aborted, true);
  assert.deepEqual(await it.next(), { done: true, value: undefined });
});

test("abort drops queued events: nothing more is yielded", async () => {
  const { s, body } = live();
  body.push(ndjson(TYPICAL[0], TYPICAL[1], TYPICAL[2]));
  await tick();
  s.abort("user pressed stop");
  const it = s[Symbol.asyncIterator]();
  const err = await rejection(it.next());
  assert.ok(isAbortError(err));
  assert.equal(err.cause, "user pressed stop");
});

test("an AbortSignal passed as options.signal aborts the stream; its reason is the cause", async () => {
  const controller = new AbortController();
  const { s, body, signal } = live("sse", { signal: controller.signal });
  body.push(sse(TYPICAL[1]));
  const textPromise = s.text();
  await tick();
  const reason = new Error("navigated away");
  controller.abort(reason);
  const err = await rejection(textPromise);
  assert.ok(isAbortError(err));
  assert.equal(err.cause, reason);
  assert.equal(signal().aborted, true);
});

test("a signal that is already aborted: fetch is never called", async () => {
  const fetch = fakeFetch(() => streamResponse("ndjson", []));
  const s = stream("/x", {}, { fetch, signal: AbortSignal.abort() });
  assert.ok(isAbortError(await rejection(s.text())));
  assert.equal(fetch.calls.length, 0);
});

test("abort before the response arrives aborts the pending fetch", async () => {
  let release;
  const fetch = fakeFetch(() => new Promise((resolve) => (release = resolve)));
  const s = stream("/x", {}, { fetch });
  await tick();
  s.abort();
  assert.equal(fetch.calls[0].init.signal.aborted, true);
  assert.ok(isAbortError(await rejection(s.text())));
  assert.ok(isAbortError(await rejection(s.response)));
  release(streamResponse("ndjson", [ndjson({ type: "done" })]));
});

test("abort settles at once even with a fetch that ignores the signal, and cancels the body", async () => {
  const { s, body, signal } = live("ndjson", {}, { honorSignal: false });
  body.push(ndjson(TYPICAL[1]));
  const it = s[Symbol.asyncIterator]();
  await it.next();
  const pending = it.next();
  s.abort();
  assert.ok(isAbortError(await rejection(pending)));
  assert.equal(signal().aborted, true);
  await body.cancelled;
});

test("leaving a for-await loop early (break) aborts the request", async () => {
  const { s, body, signal } = live();
  body.push(ndjson(TYPICAL[0], TYPICAL[1]));
  for await (const ev of s) {
    if (ev.type === "delta") break;
  }
  assert.equal(signal().aborted, true);
  await body.cancelled;
  assert.ok(isAbortError(await rejection(s.text())));
});

test("a throw inside a for-await loop aborts the request too", async () => {
  const { s, body, signal } = live();
  body.push(ndjson(TYPICAL[0]));
  await assert.rejects(async () => {
    for await (const ev of s) throw new Error(`render failed on ${ev.type}`);
  }, /render failed on start/);
  assert.equal(signal().aborted, true);
});

test("abort after done changes nothing", async () => {
  const { s, body, signal } = live();
  body.push(ndjson(...TYPICAL));
  assert.equal(await s.text(), "Hello, wörld 😀 漢字\nline two");
  s.abort();
  assert.equal(await s.text(), "Hello, wörld 😀 漢字\nline two");
  const events = [];
  for await (const ev of s) events.push(ev);
  assert.deepEqual(events, TYPICAL); // still queued for the iterator
  assert.equal(signal().aborted, false);
});

test("an abort from inside onText stops the stream at once", async () => {
  const pieces = [];
  let s;
  const fetch = fakeFetch(() => streamResponse("ndjson", [ndjson(...TYPICAL)]));
  s = stream("/x", {}, {
    fetch,
    onText: (piece) => {
      pieces.push(piece);
      s.abort();
    },
  });
  const err = await rejection(s.text());
  assert.ok(isAbortError(err));
  assert.deepEqual(pieces, ["Hello"]);
  assert.equal(fetch.calls[0].init.signal.aborted, true);
});

test("a stream can be iterated only once", async () => {
  const { s, body } = live();
  s[Symbol.asyncIterator]();
  assert.throws(() => s[Symbol.asyncIterator](), TypeError);
  body.push(ndjson({ type: "done" }));
  await s.text();
});
