// A complete useChat page on a StreamRelay mount: send, stream, Stop (which really
// stops the generation) and a reload in the middle of an answer that shows it whole.
//
// The relay needs a store for the last two (StreamRelay(store=MemoryStore())):
// GET <mount>/chat/<id>/stream replays the chat's answer in flight, from its first part,
// and DELETE <mount>/chat/<id>/stream stops it (docs/frontends.md).
import { useChat } from "@ai-sdk/react";
import { DefaultChatTransport } from "ai";
import { useEffect, useMemo, useState } from "react";

const STOPPED = "stopped";

/** The conversation so far, kept in sessionStorage so that a reload shows it. */
export function loadChat(chatId) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(`usechat:${chatId}`) ?? "null");
    if (saved && Array.isArray(saved.messages)) {
      return { messages: saved.messages, stopped: saved.stopped ?? [] };
    }
  } catch {
    // unreadable: start afresh
  }
  return { messages: [], stopped: [] };
}

function saveChat(chatId, messages, stopped) {
  try {
    sessionStorage.setItem(`usechat:${chatId}`, JSON.stringify({ messages, stopped: [...stopped] }));
  } catch {
    // storage full or disabled: the page still works, a reload just starts empty
  }
}

function textOf(message) {
  return message.parts.map((part) => (part.type === "text" ? part.text : "")).join("");
}

function reasoningOf(message) {
  return message.parts.map((part) => (part.type === "reasoning" ? part.text : "")).join("");
}

export function App({ mount, chatId, headers, saved }) {
  // One transport for the page's life. With resume: true, useChat asks
  // GET <mount>/chat/<chatId>/stream when it mounts: after a reload in the middle
  // of an answer the relay replays that answer, and answers 204 when there is none.
  const transport = useMemo(
    () => new DefaultChatTransport({ api: `${mount}/chat`, headers }),
    [mount, headers],
  );
  const { id, messages, sendMessage, stop, status, error } = useChat({
    id: chatId,
    messages: saved.messages,
    transport,
    resume: true,
  });
  const [stopped, setStopped] = useState(() => new Set(saved.stopped));
  const [input, setInput] = useState("");
  const busy = status === "submitted" || status === "streaming";

  useEffect(() => saveChat(id, messages, stopped), [id, messages, stopped]);

  const send = (event) => {
    event.preventDefault();
    const text = input.trim();
    if (!text || busy) return;
    setInput("");
    sendMessage({ text });
  };

  const onStop = () => {
    // The turn that is stopped: the answer in flight, or the question it answers.
    const last = messages.at(-1);
    if (last) setStopped((ids) => new Set(ids).add(last.id));
    // With resume: true, stop() only disconnects this tab (the relay keeps the
    // generation for a reload); the DELETE stops the generation itself.
    stop();
    fetch(`${mount}/chat/${encodeURIComponent(id)}/stream`, { method: "DELETE" }).catch(() => {});
  };

  const lastId = messages.at(-1)?.id;
  const stateOf = (message) => {
    if (message.role !== "assistant") return "sent";
    if (message.id === lastId && busy) return "streaming";
    if (stopped.has(message.id)) return STOPPED;
    if (message.id === lastId && status === "error") return "error";
    return "done";
  };
  const shown = busy ? status : stopped.has(lastId) ? STOPPED : status;

  return (
    <main>
      <ol data-testid="messages">
        {messages.map((message) => (
          <li
            key={message.id}
            data-testid="message"
            data-role={message.role}
            data-state={stateOf(message)}
            data-message-id={message.id}
          >
            <div className="role">{message.role}</div>
            {reasoningOf(message) && (
              <details data-testid="reasoning">
                <summary>reasoning</summary>
                {reasoningOf(message)}
              </details>
            )}
            <p className="text" data-testid="text">
              {textOf(message)}
            </p>
          </li>
        ))}
      </ol>
      {error && <p data-testid="error">{error.message}</p>}
      <form onSubmit={send}>
        <input
          data-testid="input"
          value={input}
          onChange={(event) => setInput(event.target.value)}
          placeholder="Ask something"
          aria-label="Message"
        />
        <button type="submit" data-testid="send" disabled={busy || !input.trim()}>
          Send
        </button>
        <button type="button" data-testid="stop" disabled={!busy} onClick={onStop}>
          Stop
        </button>
      </form>
      <p data-testid="status" data-status={shown}>
        {shown}
      </p>
    </main>
  );
}
