// The `reasoning` event in the ndjson and sse formats: yielded as it came, kept out of
// the answer's text, collected by onReasoning and result(); usage details in result().
import { test } from "node:test";
import assert from "node:assert/strict";
import { stream } from "../../src/streamrelay/static/streamrelay.js";
import { fakeFetch, streamResponse, drain, ndjson, sse, bytes } from "../support/fake.mjs";

// What the relay makes of a DeepSeek reasoner stream (reasoning_content, then content).
const THINKING = [
  { type: "start", id: "33be18fc-3842-486c-8c29-dd8e578f7f20", model: "deepseek-reasoner" },
  { type: "reasoning", index: 0, text: "Hmm, the user" },
  { type: "reasoning", index: 0, text: " says hi — 😀 漢字.\n" },
  { type: "reasoning", index: 0, text: "Greet back." },
  { type: "delta", index: 0, text: "Hello" },
  { type: "delta", index: 0, text: " there!" },
  { type: "finish", index: 0, reason: "stop" },
  {
    type: "usage",
    prompt_tokens: 6,
    completion_tokens: 212,
    total_tokens: 218,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 198 },
  },
  { type: "done" },
];
const REASONING = "Hmm, the user says hi — 😀 漢字.\nGreet back.";
const ANSWER = "Hello there!";
const ENCODE = { ndjson, sse };

function run(format, chunks, options = {}) {
  const fetch = fakeFetch(() => streamResponse(format, chunks), { honorSignal: false });
  return stream("/v1/chat/completions", {}, { format, fetch, ...options });
}

for (const format of ["ndjson", "sse"]) {
  const body = ENCODE[format](...THINKING);

  test(`${format}: reasoning events are yielded as sent, in order, between the others`, async () => {
    const { events, error } = await drain(run(format, [body]));
    assert.equal(error, null);
    assert.deepEqual(events, THINKING);
  });

  test(`${format}: text() and onText are the answer only; onReasoning and result() have the reasoning`, async () => {
    const texts = [];
    const thoughts = [];
    const types = [];
    const s = run(format, [body], {
      onText: (piece, sofar) => texts.push([piece, sofar]),
      onReasoning: (piece, sofar) => thoughts.push([piece, sofar]),
      onEvent: (ev) => types.push(ev.type),
    });
    assert.equal(await s.text(), ANSWER);
    assert.deepEqual(texts, [["Hello", "Hello"], [" there!", ANSWER]]);
    assert.deepEqual(thoughts, [
      ["Hmm, the user", "Hmm, the user"],
      [" says hi — 😀 漢字.\n", "Hmm, the user says hi — 😀 漢字.\n"],
      ["Greet back.", REASONING],
    ]);
    assert.deepEqual(types, THINKING.map((ev) => ev.type));
    const result = await s.result();
    assert.equal(result.text, ANSWER);
    assert.equal(result.reasoning, REASONING);
    assert.deepEqual(result.choices, [
      { index: 0, text: ANSWER, reasoning: REASONING, refusal: null, toolCalls: [], finishReason: "stop" },
    ]);
    assert.deepEqual(result.usage, {
      prompt_tokens: 6,
      completion_tokens: 212,
      total_tokens: 218,
      prompt_tokens_details: { cached_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 198 },
    });
  });

  test(`${format}: a chunk boundary at every byte changes nothing`, async () => {
    const whole = bytes(body);
    for (let i = 0; i <= whole.length; i++) {
      const texts = [];
      const s = run(format, [whole.slice(0, i), whole.slice(i)], { onReasoning: (p) => texts.push(p) });
      const { events, error } = await drain(s);
      assert.equal(error, null, `split at byte ${i}`);
      assert.deepEqual(events, THINKING, `split at byte ${i}`);
      assert.equal(texts.join(""), REASONING, `split at byte ${i}`);
    }
  });

  test(`${format}: reasoning that is not text, or of no valid choice, is a protocol error`, async () => {
    for (const bad of [
      { type: "reasoning", index: 0, text: 5 },
      { type: "reasoning", index: 0 },
      { type: "reasoning", index: -1, text: "x" },
      { type: "reasoning", text: "x" },
    ]) {
      const { events, error } = await drain(run(format, [ENCODE[format](THINKING[0], bad, { type: "done" })]));
      assert.deepEqual(events, [THINKING[0]]);
      assert.equal(error?.code, "protocol_error", JSON.stringify(bad));
    }
  });
}

test("reasoning of another choice goes to that choice only", async () => {
  const events = [
    { type: "start", id: "c", model: "m" },
    { type: "reasoning", index: 1, text: "second" },
    { type: "reasoning", index: 0, text: "first" },
    { type: "delta", index: 1, text: "B" },
    { type: "done" },
  ];
  const thoughts = [];
  const s = run("ndjson", [ndjson(...events)], { onReasoning: (p) => thoughts.push(p) });
  const result = await s.result();
  assert.equal(result.reasoning, "first");
  assert.deepEqual(thoughts, ["first"]);
  assert.equal(result.choices[0].reasoning, "first");
  assert.equal(result.choices[1].reasoning, "second");
  assert.equal(result.choices[1].text, "B");
});

test("a stream without reasoning has reasoning \"\" and choices' reasoning null", async () => {
  const result = await run("sse", [sse({ type: "delta", index: 0, text: "x" }, { type: "done" })]).result();
  assert.equal(result.reasoning, "");
  assert.equal(result.choices[0].reasoning, null);
  assert.equal(result.usage, null);
});

test("usage details that are not objects are left out of result()", async () => {
  const usage = { type: "usage", prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 };
  const s = run("ndjson", [
    ndjson({ ...usage, prompt_tokens_details: null, completion_tokens_details: [1] }, { type: "done" }),
  ]);
  assert.deepEqual((await s.result()).usage, { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 });
});

test("the last usage event wins, details and all", async () => {
  const first = { type: "usage", prompt_tokens: 1, completion_tokens: 1, total_tokens: 2, prompt_tokens_details: { cached_tokens: 1 } };
  const last = { type: "usage", prompt_tokens: 1, completion_tokens: 5, total_tokens: 6 };
  const s = run("ndjson", [ndjson(first, last, { type: "done" })]);
  assert.deepEqual((await s.result()).usage, { prompt_tokens: 1, completion_tokens: 5, total_tokens: 6 });
});

test("onReasoning must be a function", () => {
  assert.throws(() => stream("/x", {}, { onReasoning: "no", fetch: () => {} }), TypeError);
});

test("an onReasoning that throws fails the stream with its error", async () => {
  const boom = new Error("boom");
  const s = run("ndjson", [ndjson(...THINKING)], {
    onReasoning: () => {
      throw boom;
    },
  });
  const { events, error } = await drain(s);
  assert.equal(error, boom);
  assert.deepEqual(events, [THINKING[0]]);
  await assert.rejects(s.text(), boom);
});
