// The AI SDK's own DefaultChatTransport against a live relay's POST /chat, as useChat
// drives it, and its reconnectToStream (useChat({resume: true})) after a reload.
//
//   node ai-sdk-live.mjs <ai-package> <mount-url> <chat-id> send|resume [x-sim JSON]
//
// - send: sendMessages() for one user message, then readUIMessageStream: the final
//   UIMessage;
// - resume: sendMessages(), read the first text parts, abort (the tab goes away), then
//   reconnectToStream({chatId}) and readUIMessageStream over it: the final UIMessage of
//   the resumed stream, and the message id the first request saw.
//
// Prints one JSON object: {version, message, firstMessageId?, errors}.
import { readFile } from "node:fs/promises";

const [pkg, mount, chatId, mode, sim] = process.argv.slice(2);
const ai = await import(pkg);
const { version } = JSON.parse(
  await readFile(new URL(`../node_modules/${pkg}/package.json`, import.meta.url), "utf8"),
);
const headers = sim ? { "x-sim": sim } : {};
const transport = new ai.DefaultChatTransport({ api: `${mount}/chat`, headers });
const messages = [{ id: "user-1", role: "user", parts: [{ type: "text", text: "Tell me something." }] }];
const errors = [];

async function finalMessage(stream) {
  let message = null;
  for await (const snapshot of ai.readUIMessageStream({
    stream,
    onError: (error) => errors.push(String(error?.message ?? error)),
  })) {
    message = snapshot;
  }
  return message;
}

const controller = new AbortController();
const stream = await transport.sendMessages({
  chatId,
  messages,
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: controller.signal,
});

if (mode === "send") {
  const message = await finalMessage(stream);
  console.log(JSON.stringify({ version, message, errors }));
} else {
  const reader = stream.getReader();
  let firstMessageId = null;
  let deltas = 0;
  while (deltas < 3) {
    const { value, done } = await reader.read();
    if (done) break;
    if (value.type === "start") firstMessageId = value.messageId;
    if (value.type === "text-delta") deltas += 1;
  }
  controller.abort(); // the tab is reloaded: useChat's connection goes
  await reader.cancel().catch(() => {});
  const resumed = await transport.reconnectToStream({ chatId });
  const message = resumed === null ? null : await finalMessage(resumed);
  console.log(JSON.stringify({ version, message, firstMessageId, errors }));
}
