// The Vercel AI SDK (`ai`) against a streamrelay mount, with each provider as its docs
// show: @ai-sdk/openai's default `openai(model)` (the Responses API) and
// `openai.chat(model)` (chat completions), and @ai-sdk/openai-compatible's
// `createOpenAICompatible({ baseURL, name, apiKey })`; `streamText` and `generateText`
// with each. Reasoning, when the upstream sends it, is reported too.
import { generateText, streamText } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { API_KEY, MODEL, baseURL, run } from "./common.mjs";

const url = baseURL();
const openai = createOpenAI({ baseURL: url, apiKey: API_KEY });
const compatible = createOpenAICompatible({ baseURL: url, name: "streamrelay", apiKey: API_KEY });

const providers = [
  ["openai", "/responses", () => openai(MODEL)],
  ["openai.chat", "/chat/completions", () => openai.chat(MODEL)],
  ["openai-compatible", "/chat/completions", () => compatible(MODEL)],
];

const calls = [];
for (const [name, route, model] of providers) {
  calls.push([`${name}.streamText`, route, async (prompt) => {
    let streamError = null;
    const result = streamText({ model: model(), prompt, onError: ({ error }) => { streamError = error; } });
    const pieces = [];
    for await (const piece of result.textStream) pieces.push(piece);
    if (streamError) throw streamError;
    return {
      text: await result.text,
      pieces: pieces.length,
      joined: pieces.join(""),
      reasoning: await result.reasoningText ?? "",
      finish: [await result.finishReason],
    };
  }]);
  calls.push([`${name}.generateText`, route, async (prompt) => {
    const result = await generateText({ model: model(), prompt });
    return { text: result.text, reasoning: result.reasoningText ?? "", finish: [result.finishReason] };
  }]);
}
await run(calls);
