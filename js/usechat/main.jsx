// The page's entry point: which chat (from the URL, so that a reload resumes the same
// one), where the relay is (<meta name="streamrelay-mount">), and what to send along.
import { generateId } from "ai";
import { createRoot } from "react-dom/client";
import { App, loadChat } from "./App.jsx";

const url = new URL(window.location.href);
let chatId = url.searchParams.get("chat");
if (!chatId) {
  chatId = generateId();
  url.searchParams.set("chat", chatId);
  window.history.replaceState(null, "", url);
}
const mount = (document.querySelector('meta[name="streamrelay-mount"]')?.content ?? "/ai").replace(
  /\/+$/,
  "",
);
// ?sim={"delay":0.1} is sent as an x-sim header, which a relay in front of the
// streamrelay simulator may pass on (its prepare hook): slow answers to try Stop and
// reload on. Any other relay ignores it.
const sim = url.searchParams.get("sim");
const headers = sim ? { "x-sim": sim } : undefined;

createRoot(document.getElementById("root")).render(
  <App mount={mount} chatId={chatId} headers={headers} saved={loadChat(chatId)} />,
);
