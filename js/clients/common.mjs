// Shared by the client scripts: each takes the relay's base URL (ending in /v1) as its
// first argument, runs its client's calls one after the other, and prints one JSON object
// on stdout: {"results": [{name, route, prompt, ...what the client returned} | {name, error}]}.
// Every call's prompt carries its name, so that the Python side finds the one upstream
// request the call made (tests/test_clients_node.py).

export const MODEL = "sim-1";
export const API_KEY = "sk-client-key-the-relay-replaces";
export const PROMPT = "Tell me something about relays.";

export function baseURL() {
  const url = process.argv[2];
  if (!url || !/^https?:\/\/[^/]+\/.*v1$/.test(url)) {
    console.error(`usage: node ${process.argv[1]} http://127.0.0.1:PORT/v1`);
    process.exit(2);
  }
  return url;
}

/** The prompt of the call `name`: the shared one, tagged with the name. */
export const prompt = (name) => `${PROMPT} [${name}]`;

/** Runs the calls in order; a call that throws is reported, and the others still run. */
export async function run(calls) {
  const results = [];
  for (const [name, route, call] of calls) {
    try {
      results.push({ name, route, prompt: prompt(name), ...(await call(prompt(name))) });
    } catch (error) {
      results.push({ name, route, prompt: prompt(name), error: `${error?.name}: ${error?.message}` });
    }
  }
  process.stdout.write(JSON.stringify({ results }) + "\n");
}
