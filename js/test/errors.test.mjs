// Every way a stream can fail, and that none of them looks like a finished answer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stream, StreamRelayError, isAbortError } from "../../src/streamrelay/static/streamrelay.js";
import { fakeFetch, streamResponse, drain, ndjson, sse, TYPICAL, BREAK, controlledBody } from "../support/fake.mjs";

const MID_ERROR = { type: "error", message: "upstream timed out", code: "upstream_timeout", status: 504 };

function run(format, respond, options = {}) {
  const fetch = fakeFetch(typeof respond === "function" ? respond : () => streamResponse(format, respond));
  const s = stream("/v1/chat/completions", {}, { format, fetch, ...options });
  return { s, fetch };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail("expected a rejection");
}

for (const [format, encode] of [["ndjson", ndjson], ["sse", sse]]) {
  test(`${format}: a terminal error event: the events before it, then a StreamRelayError`, async () => {
    const seen = [];
    const { s, fetch } = run(format, [encode(TYPICAL[0], TYPICAL[1], MID_ERROR)], { onEvent: (e) => seen.push(e) });
    const { events, error } = await drain(s);
    assert.deepEqual(events, [TYPICAL[0], TYPICAL[1]]);
    assert.ok(error instanceof StreamRelayError);
    assert.ok(error instanceof Error);
    assert.equal(error.name, "StreamRelayError");
    assert.equal(error.message, "upstream timed out");
    assert.equal(error.code, "upstream_timeout");
    assert.equal(error.status, 504);
    assert.deepEqual(error.event, MID_ERROR);
    assert.deepEqual(seen.at(-1), MID_ERROR); // onEvent sees the error event itself
    const textError = await rejection(s.text());
    assert.equal(textError, error);
    assert.equal(await rejection(s.result()), error);
    assert.equal(fetch.calls[0].init.signal.aborted, true); // the connection is released
  });

  test(`${format}: an error event without status or code`, async () => {
    const { s } = run(format, [encode({ type: "error", message: "boom", code: null })]);
    const err = await rejection(s.text());
    assert.equal(err.code, null);
    assert.equal(err.status, null);
    assert.equal(err.message, "boom");
  });

  test(`${format}: a stream that ends without done is truncated`, async () => {
    const { s } = run(format, [encode(TYPICAL[0], TYPICAL[1], TYPICAL[4])]);
    const { events, error } = await drain(s);
    assert.deepEqual(events, [TYPICAL[0], TYPICAL[1], TYPICAL[4]]);
    assert.ok(error instanceof StreamRelayError);
    assert.equal(error.code, "truncated");
    assert.match(error.message, /no "done" event/);
    assert.equal((await rejection(s.text())).code, "truncated");
  });

  test(`${format}: a connection that breaks mid-stream is truncated`, async () => {
    const { s } = run(format, [encode(TYPICAL[0], TYPICAL[1]), BREAK]);
    const { events, error } = await drain(s);
    assert.deepEqual(events, [TYPICAL[0], TYPICAL[1]]);
    assert.equal(error.code, "truncated");
    assert.ok(error.cause instanceof TypeError);
  });

  test(`${format}: an empty 200 body is truncated, not an empty answer`, async () => {
    const { s } = run(format, []);
    assert.equal((await rejection(s.text())).code, "truncated");
  });
}

test("ndjson: a line cut in half at the end is truncated", async () => {
  const { s } = run("ndjson", [ndjson(TYPICAL[1]) + '{"type":"delta","ind']);
  const { events, error } = await drain(s);
  assert.deepEqual(events, [TYPICAL[1]]);
  assert.equal(error.code, "truncated");
});

test("text: a body whose reader fails (the relay's mid-stream error) is truncated, never done", async () => {
  const { s } = run("text", ["Hello", " wor", BREAK]);
  const { events, error } = await drain(s);
  assert.deepEqual(events, [
    { type: "delta", index: 0, text: "Hello" },
    { type: "delta", index: 0, text: " wor" },
  ]);
  assert.ok(error instanceof StreamRelayError);
  assert.equal(error.code, "truncated");
  assert.equal((await rejection(s.text())).code, "truncated");
});

test("invalid JSON mid-stream is a protocol_error after the events before it, and cancels the request", async () => {
  for (const [format, body] of [
    ["ndjson", ndjson(TYPICAL[1]) + "not json\n" + ndjson({ type: "done" })],
    ["sse", sse(TYPICAL[1]) + "data: [DONE]\n\n"],
    ["ndjson", ndjson(TYPICAL[1]) + "[1,2]\n"],
    ["ndjson", ndjson(TYPICAL[1]) + '{"choices":[]}\n'],
    ["ndjson", ndjson(TYPICAL[1]) + '{"type":"delta","index":0,"text":5}\n'],
    ["ndjson", ndjson(TYPICAL[1]) + '{"type":"delta","index":-1,"text":"x"}\n'],
  ]) {
    const { s, fetch } = run(format, [body]);
    const { events, error } = await drain(s);
    assert.deepEqual(events, [TYPICAL[1]], body);
    assert.equal(error?.code, "protocol_error", body);
    assert.equal(fetch.calls[0].init.signal.aborted, true);
  }
});

test("a 200 with the wrong Content-Type is a protocol_error (e.g. an HTML login page)", async () => {
  const respond = () => new Response("<html>login</html>", { headers: { "content-type": "text/html" } });
  for (const format of ["ndjson", "sse", "text"]) {
    const { s } = run(format, respond);
    const err = await rejection(s.text());
    assert.equal(err.code, "protocol_error");
    assert.match(err.message, /text\/html/);
  }
});

test("non-2xx with the relay's JSON error body: status, message, code, type, retry-after", async () => {
  const respond = () =>
    new Response(JSON.stringify({ error: { message: "Rate limit reached", type: "rate_limit_error", code: "rate_limit_exceeded" } }), {
      status: 429,
      statusText: "Too Many Requests",
      headers: { "content-type": "application/json", "retry-after": "7", "x-request-id": "req_1" },
    });
  for (const format of ["ndjson", "sse", "text"]) {
    const { s } = run(format, respond);
    const { events, error } = await drain(s);
    assert.deepEqual(events, []);
    assert.ok(error instanceof StreamRelayError);
    assert.equal(error.status, 429);
    assert.equal(error.message, "Rate limit reached");
    assert.equal(error.code, "rate_limit_exceeded");
    assert.equal(error.type, "rate_limit_error");
    assert.equal(error.retryAfterMs, 7000);
    assert.match(error.body, /Rate limit/);
    const response = await s.response;
    assert.equal(response.headers.get("x-request-id"), "req_1");
    assert.equal((await rejection(s.text())).status, 429);
  }
});

test("non-2xx JSON bodies of other shapes", async () => {
  const cases = [
    [{ error: { message: "bad model", type: "invalid_request_error", code: null } }, 400, "bad model", "http_error", "invalid_request_error"],
    [{ error: "plain string" }, 400, "plain string", "http_error", null],
    [{ detail: "Not Found" }, 404, "Not Found", "http_error", null],
    [{ error: { message: "x", code: 42 } }, 500, "x", "42", null],
    [{ error: { type: "server_error" } }, 500, "Internal Server Error", "http_error", "server_error"],
  ];
  for (const [body, status, message, code, type] of cases) {
    const respond = () => new Response(JSON.stringify(body), { status, statusText: status === 500 ? "Internal Server Error" : "" });
    const err = await rejection(run("ndjson", respond).s.text());
    assert.equal(err.status, status);
    assert.equal(err.message, message);
    assert.equal(err.code, code);
    assert.equal(err.type, type);
  }
});

test("non-2xx with a non-JSON body falls back to the status text", async () => {
  const html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
  let err = await rejection(
    run("sse", () => new Response(html, { status: 502, statusText: "Bad Gateway", headers: { "content-type": "text/html", "retry-after-ms": "250" } })).s.text(),
  );
  assert.equal(err.status, 502);
  assert.equal(err.message, "Bad Gateway");
  assert.equal(err.code, "http_error");
  assert.equal(err.retryAfterMs, 250);
  assert.equal(err.body, html);
  // HTTP/2 has no status text.
  err = await rejection(run("sse", () => new Response("oops", { status: 503 })).s.text());
  assert.equal(err.message, "HTTP 503");
  assert.equal(err.status, 503);
});

test("a fetch that rejects (server down) is a network_error", async () => {
  const { s } = run("ndjson", () => Promise.reject(new TypeError("fetch failed")));
  const { events, error } = await drain(s);
  assert.deepEqual(events, []);
  assert.ok(error instanceof StreamRelayError);
  assert.equal(error.code, "network_error");
  assert.equal(error.status, null);
  assert.match(error.message, /fetch failed/);
  assert.equal(error.cause.message, "fetch failed");
  assert.ok(!isAbortError(error));
});

test("idleTimeout: no bytes for that long is an idle_timeout, and the request is cancelled", async () => {
  const body = controlledBody();
  const { s, fetch } = run("ndjson", () => streamResponse("ndjson", body.stream), { idleTimeout: 30 });
  body.push(ndjson(TYPICAL[0]));
  const { events, error } = await drain(s);
  assert.deepEqual(events, [TYPICAL[0]]);
  assert.equal(error.code, "idle_timeout");
  assert.equal(fetch.calls[0].init.signal.aborted, true);
  await body.cancelled;
});

test("idleTimeout: heartbeats keep a slow stream alive", async () => {
  const body = controlledBody();
  const { s } = run("ndjson", () => streamResponse("ndjson", body.stream), { idleTimeout: 250 });
  for (let i = 0; i < 8; i++) {
    await new Promise((r) => setTimeout(r, 50)); // 400 ms in all, each gap well under 250
    body.push('{"type":"ping"}\n');
  }
  body.push(ndjson({ type: "done" }));
  assert.deepEqual((await drain(s)).events, [{ type: "done" }]);
});

test("a callback that throws fails the stream with its error and cancels the request", async () => {
  const bug = new Error("bug in onText");
  const { s, fetch } = run("ndjson", [ndjson(...TYPICAL)], {
    onText: () => {
      throw bug;
    },
  });
  const { events, error } = await drain(s);
  assert.deepEqual(events, [TYPICAL[0]]);
  assert.equal(error, bug);
  assert.equal(fetch.calls[0].init.signal.aborted, true);
});

test("a failed stream with nobody listening raises no unhandled rejection", async () => {
  const unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  try {
    run("ndjson", [ndjson(MID_ERROR)]);
    run("ndjson", () => Promise.reject(new TypeError("down")));
    run("ndjson", () => new Response("x", { status: 500 })).s.abort();
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
  assert.deepEqual(unhandled, []);
});
