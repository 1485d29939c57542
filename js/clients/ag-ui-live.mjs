// @ag-ui/client's HttpAgent against a live relay's POST <mount>/ag-ui, as its docs show.
//
//   node ag-ui-live.mjs <ag-ui-url>
//
// Prints {threadId, runId, types, messages, warnings} as one JSON line: the event types in
// order, the agent's messages after the run, and anything the client logged.
import { HttpAgent } from "@ag-ui/client";

const url = process.argv[2];
const warnings = [];
for (const level of ["warn", "error"]) {
  console[level] = (...args) => warnings.push(args.map(String).join(" "));
}
const agent = new HttpAgent({
  url,
  threadId: "thread-live",
  initialMessages: [{ id: "u1", role: "user", content: "Tell me something." }],
});
const events = [];
agent.subscribe({ onEvent: ({ event }) => { events.push(event); } });
await agent.runAgent({ runId: "run-live" });
const started = events.find((e) => e.type === "RUN_STARTED");
process.stdout.write(
  JSON.stringify({
    threadId: started?.threadId,
    runId: started?.runId,
    types: events.map((e) => e.type),
    messages: agent.messages,
    warnings,
  }) + "\n",
);
