// @ag-ui/client's HttpAgent reading `ag-ui` streams, as its docs show: `new HttpAgent({url})`,
// `agent.subscribe({...})`, `await agent.runAgent({tools, context, forwardedProps})`, then
// `agent.messages`. Takes the base URL of a server whose POST <base>/<scenario> answers a
// RunAgentInput with an AG-UI event stream (tests/test_ag_ui_wire.py), runs each scenario
// once (the tool scenario twice: the second run carries the tool results), and prints
// {"results": [{name, threadId, runId, events, messages, text, reasoning, toolCalls,
// finished, runError, failed, warnings, error?}]} as one JSON line.
import { HttpAgent } from "@ag-ui/client";

const base = process.argv[2];
if (!base || !/^https?:\/\/[^/]+/.test(base)) {
  console.error(`usage: node ${process.argv[1]} http://127.0.0.1:PORT`);
  process.exit(2);
}

// Whatever the client complains about (a stripped unknown field, a subscriber error, a
// verification failure it only logs) is part of the result: the test wants none.
const warnings = [];
for (const level of ["warn", "error"]) {
  console[level] = (...args) =>
    warnings.push(args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : JSON.stringify(a))).join(" "));
}

const MODEL = "sim-1";
const TOOLS = [
  {
    name: "get_weather",
    description: "The current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
];

async function runOnce(agent, name, parameters) {
  const events = [];
  const errors = [];
  let finished = null;
  const subscription = agent.subscribe({
    onEvent: ({ event }) => { events.push(event); },
    onRunFinishedEvent: ({ outcome }) => { finished = outcome ?? "success"; },
    onRunErrorEvent: ({ event }) => { errors.push({ message: event.message, code: event.code ?? null }); },
  });
  const seen = warnings.length;
  const result = { name, threadId: agent.threadId };
  try {
    await agent.runAgent(parameters);
    result.failed = null;
  } catch (error) {
    result.failed = `${error?.name}: ${error?.message}`;
  } finally {
    subscription.unsubscribe();
  }
  const started = events.find((e) => e.type === "RUN_STARTED");
  const assistant = agent.messages.filter((m) => m.role === "assistant");
  const last = agent.messages.length ? agent.messages[agent.messages.length - 1] : null;
  return {
    ...result,
    runId: started?.runId ?? null,
    events,
    messages: agent.messages,
    // this run's answer: the messages after the last user/tool message it was sent
    text: newMessages(agent).filter((m) => m.role === "assistant").map((m) => m.content ?? "").join(""),
    reasoning: newMessages(agent).filter((m) => m.role === "reasoning").map((m) => m.content ?? "").join(""),
    toolCalls: newMessages(agent).flatMap((m) => m.toolCalls ?? []),
    assistantMessages: assistant.length,
    lastRole: last?.role ?? null,
    finished,
    runError: errors[0] ?? null,
    warnings: warnings.slice(seen),
  };
}

function newMessages(agent) {
  let at = agent.messages.length;
  while (at > 0 && !["user", "tool"].includes(agent.messages[at - 1].role)) at -= 1;
  return agent.messages.slice(at);
}

function agentFor(scenario, prompt) {
  return new HttpAgent({
    url: `${base}/${scenario}`,
    threadId: `thread-${scenario}`,
    initialMessages: [{ id: `user-${scenario}`, role: "user", content: `${prompt} [${scenario}]` }],
  });
}

const PROMPT = "Tell me something about relays.";
const results = [];
for (const scenario of ["text", "reasoning", "mid_error"]) {
  try {
    const agent = agentFor(scenario, PROMPT);
    const context = scenario === "text" ? [{ description: "The page the user is on", value: "/docs/relays" }] : [];
    results.push(await runOnce(agent, scenario, { forwardedProps: { model: MODEL }, context }));
  } catch (error) {
    results.push({ name: scenario, error: `${error?.name}: ${error?.message}` });
  }
}

// Tools: the model calls get_weather; the app answers each call with a tool message and
// runs again, as a front end with front-end tools does.
try {
  const agent = agentFor("tools", "What's the weather in Paris?");
  const first = await runOnce(agent, "tools", { tools: TOOLS, forwardedProps: { model: MODEL } });
  results.push(first);
  for (const call of first.toolCalls) {
    agent.addMessage({ id: `result-${call.id}`, role: "tool", toolCallId: call.id, content: "18 C, cloudy" });
  }
  results.push(await runOnce(agent, "tools.result", { tools: TOOLS, forwardedProps: { model: MODEL } }));
} catch (error) {
  results.push({ name: "tools", error: `${error?.name}: ${error?.message}` });
}

process.stdout.write(JSON.stringify({ results }) + "\n");
