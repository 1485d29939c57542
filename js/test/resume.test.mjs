// Resumable streams (docs/resume.md): the client's `streamId`, its own resume after a
// broken connection, `resume()` and `stop()`. Against a stub relay with a store on a
// real socket (js/support/resume-relay.mjs), whose connections break for real (a TCP
// reset in the middle of an event), and a fake fetch for the exact requests.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { stream, resume, StreamRelayError, isAbortError } from "../../src/streamrelay/static/streamrelay.js";
import { startResumeRelay, answerEvents } from "../support/resume-relay.mjs";
import { fakeFetch, streamResponse, ndjson, BREAK, drain, controlledBody, tick } from "../support/fake.mjs";

let relay;
before(async () => {
  relay = await startResumeRelay();
});
after(() => relay.close());

const FORMATS = ["ndjson", "sse"];
const strip = (events) => events.map(({ seq, ...rest }) => rest);
const text = (tokens) => Array.from({ length: tokens }, (_, i) => `tok${i} `).join("");

/** Starts a stream on the stub relay; `stub` scripts its faults. */
function start(format, stub, options = {}) {
  const before = relay.requests.length;
  const s = stream(`${relay.url}/v1/chat/completions`, { model: "stub-1", stub }, { format, retryDelay: 5, ...options });
  return { s, requests: () => relay.requests.slice(before) };
}

const resumes = (requests) => requests.filter((r) => r.method === "GET");

for (const format of FORMATS) {
  test(`${format}: a connection reset mid-event is resumed after the last whole event: every event once`, async () => {
    const { s, requests } = start(format, { tokens: 12, cut: [4] });
    const { events, error } = await drain(s);
    assert.equal(error, null);
    assert.deepEqual(strip(events), answerEvents(12));
    if (format === "ndjson") assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
    assert.equal(await s.text(), text(12));
    assert.match(s.streamId, /^stub-\d+-A+$/);
    assert.equal(s.lastEventId, String(events.length));
    const [get, ...more] = resumes(requests());
    assert.deepEqual(more, []);
    assert.equal(get.path, `/v1/streams/${s.streamId}`);
    assert.deepEqual(get.query, { format, last_event_id: "4" });
    assert.equal(get.headers.accept, format === "sse" ? "text/event-stream" : "application/x-ndjson");
    assert.equal(get.headers["content-type"], undefined);
  });

  test(`${format}: any number of cuts, the resumes among them, lose and repeat nothing`, async () => {
    // The POST is cut after event 2, the first resume after event 5, the second resume
    // runs to the end.
    const { s, requests } = start(format, { tokens: 20, cut: [2, 5, null], delay: 2 });
    const { events, error } = await drain(s);
    assert.equal(error, null);
    assert.deepEqual(strip(events), answerEvents(20));
    assert.deepEqual(resumes(requests()).map((r) => r.query.last_event_id), ["2", "5"]);
    assert.equal((await s.result()).text, text(20));
  });

  test(`${format}: a body that ends cleanly without its terminal event is resumed too`, async () => {
    const { s, requests } = start(format, { tokens: 6, cut: [3], clean: true });
    const { events, error } = await drain(s);
    assert.equal(error, null);
    assert.deepEqual(strip(events), answerEvents(6));
    assert.deepEqual(resumes(requests()).map((r) => r.query.last_event_id), ["3"]);
  });
}

test("onText sees each piece once across a resume", async () => {
  const pieces = [];
  const { s } = start("ndjson", { tokens: 10, cut: [6] }, { onText: (piece) => pieces.push(piece) });
  assert.equal(await s.text(), text(10));
  assert.equal(pieces.join(""), text(10));
  assert.equal(pieces.length, 10);
});

test("stop() sends DELETE <mount>/streams/{id}; the stream ends with the relay's `stopped` error", async () => {
  const { s, requests } = start("ndjson", { tokens: 400, delay: 10 });
  const seen = [];
  const err = await (async () => {
    try {
      for await (const ev of s) {
        seen.push(ev);
        if (seen.length === 3) await s.stop();
      }
    } catch (e) {
      return e;
    }
    return null;
  })();
  assert.ok(err instanceof StreamRelayError, String(err));
  assert.equal(err.code, "stopped");
  const deletes = requests().filter((r) => r.method === "DELETE");
  assert.equal(deletes.length, 1);
  assert.equal(deletes[0].path, `/v1/streams/${s.streamId}`);
  assert.equal(relay.streams.get(s.streamId).stopped, true);
  assert.ok(seen.length < 50, "the generation went on after the stop");
  await s.stop(); // once ended, nothing
  assert.equal(requests().filter((r) => r.method === "DELETE").length, 1);
});

test("stop() during the backoff of a resume: the resume then gets the `stopped` error", async () => {
  const { s, requests } = start("sse", { tokens: 400, delay: 10, cut: [3] }, { retryDelay: 200 });
  const seen = [];
  const consume = drain(s);
  while (s.lastEventId !== "3") await new Promise((resolve) => setTimeout(resolve, 5));
  await new Promise((resolve) => setTimeout(resolve, 50)); // cut, and waiting to resume
  assert.equal(resumes(requests()).length, 0);
  await s.stop();
  const { events, error } = await consume;
  seen.push(...events);
  assert.equal(error?.code, "stopped");
  assert.deepEqual(strip(seen), answerEvents(400).slice(0, seen.length));
  assert.ok(seen.length >= 3);
  assert.equal(resumes(requests()).length, 1);
});

test("a stream that is gone when the client comes back (404) fails with stream_not_found", async () => {
  const { s } = start("ndjson", { tokens: 10, cut: [4], forget: true });
  const { events, error } = await drain(s);
  assert.deepEqual(strip(events), answerEvents(10).slice(0, 4));
  assert.ok(error instanceof StreamRelayError);
  assert.equal(error.status, 404);
  assert.equal(error.code, "stream_not_found");
  await assert.rejects(s.text(), (e) => e === error);
});

test("a store that is down for a moment (503) is retried; the stream completes", async () => {
  const { s, requests } = start("sse", { tokens: 8, cut: [3], unavailable: 2 });
  const { events, error } = await drain(s);
  assert.equal(error, null);
  assert.deepEqual(strip(events), answerEvents(8));
  assert.deepEqual(resumes(requests()).map((r) => r.query.last_event_id), ["3", "3", "3"]);
});

test("after `retries` failed attempts in a row the stream fails with truncated", async () => {
  const { s, requests } = start("ndjson", { tokens: 8, cut: [3], unavailable: 99 }, { retries: 3, retryDelay: 1 });
  const { events, error } = await drain(s);
  assert.equal(events.length, 3);
  assert.ok(error instanceof StreamRelayError);
  assert.equal(error.code, "truncated");
  assert.match(error.message, /3 attempts to resume it failed: the stream store is unavailable/);
  assert.equal(error.cause?.status, 503);
  assert.equal(resumes(requests()).length, 3);
});

test("retries: 0 turns automatic resume off", async () => {
  const { s, requests } = start("ndjson", { tokens: 8, cut: [3] }, { retries: 0 });
  const { events, error } = await drain(s);
  assert.equal(events.length, 3);
  assert.equal(error?.code, "truncated");
  assert.equal(resumes(requests()).length, 0);
});

test("without an X-Stream-Id (no store) a cut is truncated, as before: no resume", async () => {
  const { s, requests } = start("sse", { tokens: 8, cut: [3], id: false });
  const { error } = await drain(s);
  assert.equal(s.streamId, null);
  assert.equal(error?.code, "truncated");
  assert.equal(resumes(requests()).length, 0);
});

test("abort() while the client waits to resume: AbortError at once, and no resume goes out", async () => {
  const { s, requests } = start("ndjson", { tokens: 400, delay: 10, cut: [2] }, { retryDelay: 60_000 });
  const consume = drain(s);
  while (s.lastEventId !== "2") await new Promise((resolve) => setTimeout(resolve, 5));
  await new Promise((resolve) => setTimeout(resolve, 50));
  const at = Date.now();
  s.abort();
  const { error } = await consume;
  assert.ok(isAbortError(error));
  assert.ok(Date.now() - at < 1000);
  assert.equal(resumes(requests()).length, 0);
});

test("abort() works on a resumed connection", async () => {
  const { s, requests } = start("ndjson", { tokens: 400, delay: 10, cut: [2] });
  const seen = [];
  const err = await (async () => {
    try {
      for await (const ev of s) {
        seen.push(ev);
        if (seen.length === 6) s.abort();
      }
    } catch (e) {
      return e;
    }
  })();
  assert.ok(isAbortError(err));
  assert.equal(resumes(requests()).length, 1);
  assert.deepEqual(strip(seen), answerEvents(400).slice(0, 6));
});

// resume() ---------------------------------------------------------------------------------

async function finishedStream(format, tokens = 5) {
  const s = stream(`${relay.url}/v1/chat/completions`, { stub: { tokens, delay: 1 } }, { format });
  await s.text();
  return s;
}

for (const format of FORMATS) {
  test(`${format}: resume(mount, id, {lastEventId}) replays what comes after, then ends with done`, async () => {
    const first = await finishedStream(format, 6);
    const events = answerEvents(6);
    const before = relay.requests.length;
    const s = resume(`${relay.url}/v1`, first.streamId, { format, lastEventId: 3 });
    const { events: got, error } = await drain(s);
    assert.equal(error, null);
    assert.deepEqual(strip(got), events.slice(3));
    assert.equal(s.streamId, first.streamId);
    assert.equal(s.url, `${relay.url}/v1/streams/${first.streamId}?format=${format}&last_event_id=3`);
    const [get] = relay.requests.slice(before);
    assert.equal(get.method, "GET");
    assert.deepEqual(get.query, { format, last_event_id: "3" });
    // Without a position: everything, from the first event.
    assert.deepEqual(strip((await drain(resume(`${relay.url}/v1/`, first.streamId, { format }))).events), events);
  });
}

test("resume() of a live stream follows it to the end; an endpoint URL names the mount too", async () => {
  const live = stream(`${relay.url}/v1/chat/completions`, { stub: { tokens: 30, delay: 5 } });
  await live.response;
  const id = live.streamId;
  live.abort(); // the page went away; the generation goes on
  const s = resume(`${relay.url}/v1/chat/completions`, id, { format: "sse" });
  assert.equal(await s.text(), text(30));
});

test("resume() of a stream whose every event was delivered (204) completes with done", async () => {
  const first = await finishedStream("ndjson", 3);
  const onEvent = [];
  const s = resume(`${relay.url}/v1`, first.streamId, { lastEventId: first.lastEventId, onEvent: (e) => onEvent.push(e) });
  const { events, error } = await drain(s);
  assert.equal(error, null);
  assert.deepEqual(events, [{ type: "done" }]);
  assert.equal((await s.response).status, 204);
  assert.equal(await s.text(), "");
});

test("resume() of an unknown id fails with 404 stream_not_found; a bad position with 400", async () => {
  const gone = await resume(`${relay.url}/v1`, "no-such-stream").text().catch((e) => e);
  assert.ok(gone instanceof StreamRelayError);
  assert.equal(gone.status, 404);
  assert.equal(gone.code, "stream_not_found");
  const first = await finishedStream("ndjson", 2);
  const bad = await resume(`${relay.url}/v1`, first.streamId, { lastEventId: 99 }).text().catch((e) => e);
  assert.equal(bad.status, 400);
  assert.equal(bad.code, "invalid_position");
  assert.throws(() => resume("/v1", ""), TypeError);
  assert.throws(() => resume("/v1", "x", { lastEventId: "1.5" }), TypeError);
  assert.throws(() => resume("/v1", "x", { lastEventId: -1 }), TypeError);
});

test("resume() in text asks for the whole text, whatever the position", async () => {
  const fetch = fakeFetch(() => streamResponse("text", ["tok0 ", "tok1 "]));
  const s = resume("/v1", "S0", { format: "text", lastEventId: 3, fetch });
  assert.equal(await s.text(), "tok0 tok1 ");
  assert.deepEqual(fetch.calls.map((c) => c.url), ["/v1/streams/S0?format=text"]);
  assert.equal(fetch.calls[0].init.headers.get("accept"), "text/plain");
});

// The exact requests, with a fake fetch ----------------------------------------------------

const headers = (id) => ({ "x-stream-id": id });

test("the mount comes from the URL, or options.mount; the headers go with every request", async () => {
  const cases = [
    ["/v1/chat/completions", {}, "/v1/streams/S1"],
    ["/api/ai/responses?x=1#f", {}, "/api/ai/streams/S1"],
    ["https://relay.example/completions", {}, "https://relay.example/streams/S1"],
    ["/custom/route", {}, "/custom/streams/S1"],
    ["/anything/chat", { mount: "/v2" }, "/v2/streams/S1"],
    ["/anything/chat", { mount: "https://relay.example/v2/" }, "https://relay.example/v2/streams/S1"],
  ];
  for (const [url, options, streams] of cases) {
    let n = 0;
    const fetch = fakeFetch((u, init) => {
      n += 1;
      if (n === 1) return streamResponse("ndjson", [ndjson({ type: "start", id: "c", model: "m", seq: 1 }), BREAK], { headers: headers("S1") });
      if (init.method === "DELETE") return new Response(null, { status: 204 });
      return streamResponse("ndjson", [ndjson({ type: "done", seq: 2 })]);
    });
    const s = stream(url, { q: 1 }, { fetch, retryDelay: 0, headers: { authorization: "Bearer t" }, ...options });
    assert.deepEqual((await drain(s)).events.map((e) => e.type), ["start", "done"], url);
    const get = fetch.calls[1];
    assert.equal(get.url, `${streams}?format=ndjson&last_event_id=1`, url);
    assert.equal(get.init.method, "GET");
    assert.equal(get.init.headers.get("authorization"), "Bearer t");
    assert.equal(get.init.headers.get("accept"), "application/x-ndjson");
    assert.equal(get.init.headers.get("content-type"), null);
    assert.equal(get.init.body, undefined);
  }
});

test("a 204 to an automatic resume completes the stream with done", async () => {
  const fetch = fakeFetch((url, init) =>
    init.method === "POST"
      ? streamResponse("sse", ["id: 1\nevent: delta\ndata: {\"type\":\"delta\",\"index\":0,\"text\":\"all\"}\n\n", BREAK], { headers: headers("S2") })
      : new Response(null, { status: 204 }),
  );
  const s = stream("/v1/chat/completions", {}, { format: "sse", fetch, retryDelay: 0 });
  const { events, error } = await drain(s);
  assert.equal(error, null);
  assert.deepEqual(events, [{ type: "delta", index: 0, text: "all" }, { type: "done" }]);
  assert.equal(fetch.calls[1].url, "/v1/streams/S2?format=sse&last_event_id=1");
});

test("a resume before any event asks for the whole stream; a network error on a resume is retried", async () => {
  let n = 0;
  const fetch = fakeFetch(() => {
    n += 1;
    if (n === 1) return streamResponse("ndjson", ['{"type":"sta', BREAK], { headers: headers("S3") });
    if (n === 2) throw new TypeError("fetch failed (test)");
    return streamResponse("ndjson", [ndjson({ type: "start", id: "c", model: "m", seq: 1 }, { type: "done", seq: 2 })]);
  });
  const s = stream("/v1/chat/completions", {}, { fetch, retryDelay: 0 });
  const { events, error } = await drain(s);
  assert.equal(error, null);
  assert.deepEqual(events.map((e) => e.type), ["start", "done"]);
  assert.deepEqual(fetch.calls.map((c) => c.url), ["/v1/chat/completions?format=ndjson", "/v1/streams/S3?format=ndjson", "/v1/streams/S3?format=ndjson"]);
});

test("the text format is never resumed by itself: it has no positions", async () => {
  const fetch = fakeFetch(() => streamResponse("text", ["Hel", BREAK], { headers: headers("S4") }));
  const s = stream("/v1/chat/completions", {}, { format: "text", fetch });
  assert.equal(s.format, "text");
  const { error } = await drain(s);
  assert.equal(error?.code, "truncated");
  assert.equal(fetch.calls.length, 1);
});

test("a resume answered with the wrong content type is a protocol_error", async () => {
  let n = 0;
  const fetch = fakeFetch(() =>
    ++n === 1
      ? streamResponse("ndjson", [BREAK], { headers: headers("S5") })
      : new Response("<html>", { headers: { "content-type": "text/html" } }),
  );
  const { error } = await drain(stream("/v1/chat/completions", {}, { fetch, retryDelay: 0 }));
  assert.equal(error?.code, "protocol_error");
});

test("stop() without a stream id aborts; a failed DELETE aborts and rejects", async () => {
  const body = controlledBody();
  const plain = stream("/v1/chat/completions", {}, { fetch: fakeFetch(() => streamResponse("ndjson", body.stream)) });
  await plain.response;
  assert.equal(plain.streamId, null);
  await plain.stop();
  assert.ok(isAbortError(await plain.text().catch((e) => e)));

  const live = controlledBody();
  const fetch = fakeFetch((url, init) =>
    init.method === "DELETE"
      ? new Response(JSON.stringify({ error: { message: "the stream store is unavailable", code: "store_unavailable" } }), { status: 503 })
      : streamResponse("ndjson", live.stream, { headers: headers("S6") }),
  );
  const s = stream("/v1/chat/completions", {}, { fetch });
  await s.response;
  assert.equal(s.streamId, "S6");
  const failure = await s.stop().catch((e) => e);
  assert.equal(failure.code, "store_unavailable");
  assert.equal(fetch.calls[1].url, "/v1/streams/S6");
  assert.equal(fetch.calls[1].init.method, "DELETE");
  const err = await s.text().catch((e) => e);
  assert.ok(isAbortError(err));
  assert.equal(err.cause, failure);
  await tick();
});

test("the options are checked", () => {
  const fetch = fakeFetch(() => new Response(null, { status: 204 }));
  assert.throws(() => stream("/v1/chat/completions", {}, { fetch, retries: -1 }), TypeError);
  assert.throws(() => stream("/v1/chat/completions", {}, { fetch, retryDelay: "5" }), TypeError);
  assert.throws(() => stream("/v1/chat/completions", {}, { fetch, mount: 5 }), TypeError);
});

test("text: after stop(), the cut that ends the body (the relay's way to end it) is `stopped`", async () => {
  const body = controlledBody();
  const fetch = fakeFetch((url, init) =>
    init.method === "DELETE" ? new Response(null, { status: 204 }) : streamResponse("text", body.stream, { headers: headers("S7") }),
  );
  const s = stream("/v1/chat/completions", {}, { format: "text", fetch });
  body.push("Hello");
  await s.response;
  await s.stop();
  body.fail();
  const { events, error } = await drain(s);
  assert.deepEqual(events, [{ type: "delta", index: 0, text: "Hello" }]);
  assert.ok(error instanceof StreamRelayError);
  assert.equal(error.code, "stopped");
  assert.deepEqual(fetch.calls.map((c) => [c.init.method, c.url]), [["POST", "/v1/chat/completions?format=text"], ["DELETE", "/v1/streams/S7"]]);
});

test("a resume answered 503 with Retry-After waits that long before the next try", async () => {
  let n = 0;
  const times = [];
  const fetch = fakeFetch(() => {
    n += 1;
    times.push(Date.now());
    if (n === 1) return streamResponse("ndjson", [ndjson({ type: "start", id: "c", model: "m", seq: 1 }), BREAK], { headers: headers("S8") });
    if (n === 2) return new Response('{"error":{"message":"busy","code":"store_unavailable"}}', { status: 503, headers: { "retry-after-ms": "150" } });
    return streamResponse("ndjson", [ndjson({ type: "done", seq: 2 })]);
  });
  const { events, error } = await drain(stream("/v1/chat/completions", {}, { fetch, retryDelay: 0 }));
  assert.equal(error, null);
  assert.deepEqual(events.map((e) => e.type), ["start", "done"]);
  assert.ok(times[2] - times[1] >= 140, `waited ${times[2] - times[1]} ms`);
});
