// The helpers on top of iteration: onText/onEvent callbacks, text(), result(), response.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stream } from "../../src/streamrelay/static/streamrelay.js";
import { fakeFetch, streamResponse, drain, ndjson, sse, TYPICAL, controlledBody, tick } from "../support/fake.mjs";

test("onText gets each piece of choice 0 and the text so far; onEvent gets every event", async () => {
  const pieces = [];
  const events = [];
  const fetch = fakeFetch(() =>
    streamResponse("ndjson", [
      ndjson(TYPICAL[0], { type: "delta", index: 1, text: "other choice" }, TYPICAL[1], { type: "ping" }),
      ndjson(TYPICAL[2], { type: "refusal", index: 0, text: "no" }, { type: "done" }),
    ]),
  );
  const text = await stream("/x", {}, {
    fetch,
    onText: (piece, sofar) => pieces.push([piece, sofar]),
    onEvent: (ev) => events.push(ev.type),
  }).text();
  assert.equal(text, "Hello, wörld");
  assert.deepEqual(pieces, [["Hello", "Hello"], [", wörld", "Hello, wörld"]]);
  assert.deepEqual(events, ["start", "delta", "delta", "delta", "refusal", "done"]);
});

test("callbacks fire as events arrive, with nobody iterating", async () => {
  const body = controlledBody();
  const fetch = fakeFetch(() => streamResponse("sse", body.stream));
  const pieces = [];
  const s = stream("/x", {}, { format: "sse", fetch, onText: (p) => pieces.push(p) });
  body.push(sse(TYPICAL[1]));
  await tick();
  assert.deepEqual(pieces, ["Hello"]);
  body.push(sse(TYPICAL[2]));
  await tick();
  assert.deepEqual(pieces, ["Hello", ", wörld"]);
  body.push(sse({ type: "done" }));
  assert.equal(await s.text(), "Hello, wörld");
});

test("events arriving before iteration starts are queued, not lost", async () => {
  const fetch = fakeFetch(() => streamResponse("ndjson", [ndjson(...TYPICAL)]));
  const s = stream("/x", {}, { fetch });
  await s.text(); // the whole stream has been read
  assert.deepEqual((await drain(s)).events, TYPICAL);
});

test("result(): choices, refusal, tool calls joined, finish reasons, usage, id and model", async () => {
  const events = [
    { type: "start", id: "chatcmpl-9", model: "sim-1" },
    { type: "delta", index: 0, text: "Let me check" },
    { type: "delta", index: 1, text: "Sorry" },
    { type: "refusal", index: 1, text: "I can't " },
    { type: "refusal", index: 1, text: "help." },
    { type: "tool_call", index: 0, call: 0, id: "call_a", name: "get_weather", arguments: '{"ci' },
    { type: "tool_call", index: 0, call: 1, id: "call_b", name: "get_time", arguments: "" },
    { type: "tool_call", index: 0, call: 0, arguments: 'ty":"Oslo"}' },
    { type: "tool_call", index: 0, call: 1, arguments: "{}" },
    { type: "finish", index: 0, reason: "tool_calls" },
    { type: "finish", index: 1, reason: "stop" },
    { type: "usage", prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 },
    { type: "done" },
  ];
  const fetch = fakeFetch(() => streamResponse("ndjson", [ndjson(...events)]));
  const s = stream("/x", {}, { fetch });
  assert.deepEqual(await s.result(), {
    id: "chatcmpl-9",
    model: "sim-1",
    text: "Let me check",
    reasoning: "",
    choices: [
      {
        index: 0,
        text: "Let me check",
        reasoning: null,
        refusal: null,
        finishReason: "tool_calls",
        toolCalls: [
          { id: "call_a", name: "get_weather", arguments: '{"city":"Oslo"}' },
          { id: "call_b", name: "get_time", arguments: "{}" },
        ],
      },
      { index: 1, text: "Sorry", reasoning: null, refusal: "I can't help.", finishReason: "stop", toolCalls: [] },
    ],
    usage: { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 },
  });
  assert.equal(await s.text(), "Let me check");
});

test("response resolves with the HTTP response once headers arrive", async () => {
  const body = controlledBody();
  const fetch = fakeFetch(() => streamResponse("ndjson", body.stream, { headers: { "x-request-id": "r-1" } }));
  const s = stream("/x", {}, { fetch });
  const response = await s.response;
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("x-request-id"), "r-1");
  assert.equal(response.headers.get("content-type"), "application/x-ndjson");
  body.push(ndjson({ type: "done" }));
  await s.text();
});
