// eventsource-parser reading the relay's streams with Node's fetch, as its README shows
// (createParser + feed): streamrelay's own `?format=sse` and the OpenAI wire that a
// plain `stream: true` request gets.
import { createParser } from "eventsource-parser";
import { MODEL, baseURL, run } from "./common.mjs";

const url = baseURL();

async function read(target, prompt) {
  const response = await fetch(target, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: prompt }], stream: true }),
  });
  const events = [];
  let comments = 0;
  const parser = createParser({
    onEvent: (event) => events.push({ event: event.event ?? null, id: event.id ?? null, data: event.data }),
    onComment: () => { comments += 1; },
    onError: (error) => events.push({ parseError: String(error) }),
  });
  const decoder = new TextDecoder();
  for await (const chunk of response.body) parser.feed(decoder.decode(chunk, { stream: true }));
  parser.feed(decoder.decode());
  return { status: response.status, contentType: response.headers.get("content-type"), events, comments };
}

await run([
  ["format=sse", "/chat/completions", (prompt) => read(`${url}/chat/completions?format=sse`, prompt)],
  ["openai-wire", "/chat/completions", (prompt) => read(`${url}/chat/completions`, prompt)],
]);
