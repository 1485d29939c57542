// The AI SDK's own UI side reading `ai-sdk` streams that streamrelay wrote to files.
//
//   node ai-sdk-ui.mjs <ai-package> <stream-file> [<stream-file> ...]
//
// <ai-package> is one of the pinned `ai` versions in js/package.json ("ai", "ai-5.0.0",
// ...). Each file is the body of one response to POST /chat. Two clients read them, each
// through that version's own DefaultChatTransport (a `fetch` that answers with the file,
// with the headers the relay sends), so every part goes through that version's
// `uiMessageChunkSchema` (strict in 5.0.0: an extra key fails the stream):
//
// - `read`: transport.sendMessages() for the first file, then readUIMessageStream, as its
//   docs show: the chunks, the final UIMessage, and whatever onError reported;
// - `chat`: AbstractChat, the engine of `useChat` (@ai-sdk/react's Chat is it with React
//   state), with a plain in-memory state: sendMessage({text}) gets the first file. While
//   the last message has tool calls awaiting their output and another file is left, it
//   adds an output for each call (addToolResult) and sends again, which gets the next
//   file. Every request body the transport sent is reported, so the follow-up request
//   that carries tool outputs can be checked (and answered by the next run).
//
// Prints one JSON object: {version, read: {chunks, message, errors, streamError},
// chat: {status, error, messages, requests}}.
import { readFile } from "node:fs/promises";

const [pkg, ...files] = process.argv.slice(2);
if (!pkg || files.length === 0) {
  console.error(`usage: node ${process.argv[1]} <ai-package> <stream-file> [<stream-file> ...]`);
  process.exit(2);
}
const ai = await import(pkg);
const { version } = JSON.parse(
  await readFile(new URL(`../node_modules/${pkg}/package.json`, import.meta.url), "utf8"),
);
const bodies = await Promise.all(files.map((file) => readFile(file)));

const PROMPT = "What is the weather in Paris?";
const TOOL_OUTPUT = (name) => ({ ok: true, tool: name });
const API = "http://relay.invalid/v1/chat";
const HEADERS = { "content-type": "text/event-stream", "x-vercel-ai-ui-message-stream": "v1" };

const describe = (error) =>
  `${error?.name ?? "Error"}: ${error?.message ?? String(error)}`.slice(0, 2000);

/** A transport whose nth request gets the nth file; it records each request's body. */
function transport(requests) {
  const fetch = async (url, init) => {
    requests.push({ url: String(url), method: init?.method, body: JSON.parse(init?.body ?? "null") });
    const body = bodies[requests.length - 1];
    if (body === undefined) {
      return new Response("no more stream files", { status: 503 });
    }
    return new Response(body, { status: 200, headers: HEADERS });
  };
  return new ai.DefaultChatTransport({ api: API, fetch });
}

// readUIMessageStream -----------------------------------------------------------------------

async function read() {
  const requests = [];
  const stream = await transport(requests).sendMessages({
    chatId: "chat-read",
    messages: [{ id: "user-1", role: "user", parts: [{ type: "text", text: PROMPT }] }],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  const [forChunks, forMessage] = stream.tee();
  const chunks = [];
  let streamError = null;
  const collecting = (async () => {
    try {
      for await (const chunk of forChunks) chunks.push(chunk);
    } catch (error) {
      streamError = describe(error);
    }
  })();
  const errors = [];
  let message = null;
  for await (const snapshot of ai.readUIMessageStream({
    stream: forMessage,
    onError: (error) => errors.push(describe(error)),
  })) {
    message = snapshot;
  }
  await collecting;
  return { chunks, message, errors, streamError };
}

// AbstractChat (useChat) ------------------------------------------------------------------------

class MemoryState {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends ai.AbstractChat {
  constructor(init) {
    super({ ...init, state: new MemoryState() });
  }
}

const isTool = (part) => part.type.startsWith("tool-") || part.type === "dynamic-tool";
const toolName = (part) => (part.type === "dynamic-tool" ? part.toolName : part.type.slice(5));

async function chat() {
  const requests = [];
  const errors = [];
  let n = 0;
  const chat = new Chat({
    id: "chat-1",
    generateId: () => `client-id-${++n}`,
    transport: transport(requests),
    onError: (error) => errors.push(describe(error)),
  });
  await chat.sendMessage({ text: PROMPT });
  while (requests.length < files.length + 1 && chat.status === "ready") {
    const last = chat.messages.at(-1);
    const waiting = (last?.role === "assistant" ? last.parts : []).filter(
      (part) => isTool(part) && part.state === "input-available",
    );
    if (waiting.length === 0) break;
    for (const part of waiting) {
      await chat.addToolResult({
        tool: toolName(part),
        toolCallId: part.toolCallId,
        output: TOOL_OUTPUT(toolName(part)),
      });
    }
    await chat.sendMessage();
  }
  return {
    status: chat.status,
    error: chat.error ? describe(chat.error) : null,
    errors,
    messages: chat.messages,
    requests,
  };
}

const result = { version, read: await read(), chat: await chat() };
process.stdout.write(JSON.stringify(result) + "\n");
