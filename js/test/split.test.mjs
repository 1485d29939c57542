// Chunk boundaries anywhere, inside multi-byte UTF-8 and inside CRLF included, change nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { stream } from "../../src/streamrelay/static/streamrelay.js";
import { fakeFetch, streamResponse, drain, ndjson, sse, TYPICAL, bytes } from "../support/fake.mjs";

const UNICODE = [
  { type: "start", id: "c", model: "m" },
  { type: "delta", index: 0, text: "é😀" },
  { type: "delta", index: 0, text: "漢字\r\n" },
  { type: "delta", index: 0, text: "ü" },
  { type: "done" },
];

const BODIES = {
  ndjson: [ndjson(...TYPICAL), ndjson(...UNICODE).replace(/\n/g, "\r\n") + "\n"],
  sse: [
    sse(...TYPICAL),
    ":hb\r\n\r\n" + sse(...UNICODE).replace(/\n/g, "\r\n"),
    sse(...UNICODE).replace(/\n/g, "\r"),
    "\uFEFF" + sse(...UNICODE),
  ],
  text: ["a😀b漢字é\r\n\u{1F9EA}z"],
};

async function read(format, chunks) {
  const fetch = fakeFetch(() => streamResponse(format, chunks), { honorSignal: false });
  const s = stream("/v1/chat/completions", {}, { format, fetch });
  const { events, error } = await drain(s);
  if (error) throw error;
  return { events, text: await s.text() };
}

/** The events, with text deltas merged: the text format's pieces depend on the split. */
function merged(events) {
  const out = [];
  for (const ev of events) {
    const last = out[out.length - 1];
    if (ev.type === "delta" && last?.type === "delta" && last.index === ev.index) last.text += ev.text;
    else out.push({ ...ev });
  }
  return out;
}

for (const [format, bodies] of Object.entries(BODIES)) {
  bodies.forEach((body, n) => {
    const whole = bytes(body);

    test(`${format} body ${n}: split in two at every byte (${whole.length + 1} ways)`, async () => {
      const expected = await read(format, [whole]);
      assert.equal(expected.events.at(-1).type, "done");
      for (let i = 0; i <= whole.length; i++) {
        const got = await read(format, [whole.slice(0, i), whole.slice(i)]);
        const [a, b] = format === "text" ? [merged(got.events), merged(expected.events)] : [got.events, expected.events];
        assert.deepEqual(a, b, `split at byte ${i}`);
        assert.equal(got.text, expected.text, `split at byte ${i}`);
      }
    });

    test(`${format} body ${n}: one byte per read`, async () => {
      const expected = await read(format, [whole]);
      const got = await read(format, Array.from(whole, (b) => [b]));
      assert.deepEqual(merged(got.events), merged(expected.events));
      assert.equal(got.text, expected.text);
    });
  });
}

test("sse: split in three at every pair of points of a short multi-byte stream", async () => {
  const whole = bytes('data: {"type":"delta","index":0,"text":"é😀\\r"}\r\n\r\ndata: {"type":"done"}\r\n\r\n');
  const expected = [{ type: "delta", index: 0, text: "é😀\r" }, { type: "done" }];
  for (let i = 0; i <= whole.length; i++) {
    for (let j = i; j <= whole.length; j++) {
      const got = await read("sse", [whole.slice(0, i), whole.slice(i, j), whole.slice(j)]);
      assert.deepEqual(got.events, expected, `split at ${i}, ${j}`);
    }
  }
});

test("text: a multi-byte character split across reads is never emitted half-decoded", async () => {
  const emoji = bytes("😀"); // 4 bytes
  const pieces = [];
  const fetch = fakeFetch(() => streamResponse("text", [emoji.slice(0, 1), emoji.slice(1, 3), emoji.slice(3), "!"]));
  await stream("/x", {}, { format: "text", fetch, onText: (p) => pieces.push(p) }).text();
  assert.deepEqual(pieces, ["😀", "!"]);
  assert.ok(!pieces.join("").includes("\uFFFD"));
});
