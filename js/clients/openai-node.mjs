// openai-node (the `openai` npm package) against a streamrelay mount, as its README shows:
// chat completions streaming and not, the chat .stream() helper, the Responses API
// streaming (create + stream: true, and the .stream() helper) and not, legacy
// completions, and the model list.
import OpenAI from "openai";
import { API_KEY, MODEL, baseURL, run } from "./common.mjs";

const client = new OpenAI({ baseURL: baseURL(), apiKey: API_KEY });
const user = (content) => [{ role: "user", content }];

await run([
  ["chat.stream", "/chat/completions", async (input) => {
    const stream = await client.chat.completions.create({ model: MODEL, messages: user(input), stream: true });
    let text = "";
    const finish = [];
    const ids = new Set();
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      ids.add(chunk.id);
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.choices[0]?.finish_reason) finish.push(chunk.choices[0].finish_reason);
    }
    return { text, finish, ids: [...ids], chunks };
  }],
  ["chat", "/chat/completions", async (input) => {
    const completion = await client.chat.completions.create({ model: MODEL, messages: user(input) });
    return { text: completion.choices[0].message.content, finish: [completion.choices[0].finish_reason], id: completion.id, object: completion.object };
  }],
  ["chat.stream-helper", "/chat/completions", async (input) => {
    const stream = client.chat.completions.stream({ model: MODEL, messages: user(input) });
    let deltas = "";
    stream.on("content", (delta) => { deltas += delta; });
    const final = await stream.finalChatCompletion();
    return { text: final.choices[0].message.content, deltas, finish: [final.choices[0].finish_reason] };
  }],
  ["responses.stream", "/responses", async (input) => {
    const stream = await client.responses.create({ model: MODEL, input, stream: true });
    let text = "";
    const types = [];
    const sequence = [];
    let completed = null;
    for await (const event of stream) {
      types.push(event.type);
      sequence.push(event.sequence_number);
      if (event.type === "response.output_text.delta") text += event.delta;
      if (event.type === "response.completed") {
        // A raw stream event carries the response as sent (no output_text convenience).
        completed = event.response.output
          .filter((item) => item.type === "message")
          .flatMap((item) => item.content)
          .filter((part) => part.type === "output_text")
          .map((part) => part.text)
          .join("");
      }
    }
    return { text, types, sequence, completed };
  }],
  ["responses.stream-helper", "/responses", async (input) => {
    const stream = client.responses.stream({ model: MODEL, input });
    let deltas = "";
    stream.on("response.output_text.delta", (event) => { deltas += event.delta; });
    const final = await stream.finalResponse();
    return { text: final.output_text, deltas, status: final.status };
  }],
  ["responses", "/responses", async (input) => {
    const response = await client.responses.create({ model: MODEL, input });
    return { text: response.output_text, status: response.status, object: response.object, id: response.id };
  }],
  ["completions.stream", "/completions", async (input) => {
    const stream = await client.completions.create({ model: MODEL, prompt: input, stream: true });
    let text = "";
    const finish = [];
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? "";
      if (chunk.choices[0]?.finish_reason) finish.push(chunk.choices[0].finish_reason);
    }
    return { text, finish };
  }],
  ["completions", "/completions", async (input) => {
    const completion = await client.completions.create({ model: MODEL, prompt: input });
    return { text: completion.choices[0].text, finish: [completion.choices[0].finish_reason], object: completion.object };
  }],
  ["models", "/models", async () => {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    const one = await client.models.retrieve(ids[ids.length - 1]);
    return { ids, retrieved: one.id };
  }],
]);
