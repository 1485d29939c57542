// Test doubles for the client: a fetch that records its calls and answers with real
// `Response` objects whose bodies are ReadableStreams the test controls chunk by chunk.
// (This file lives outside js/test/ so `node --test js/test/` does not run it as a test.)

const encoder = new TextEncoder();

/** @param {string|Uint8Array|number[]} chunk */
export function bytes(chunk) {
  if (typeof chunk === "string") return encoder.encode(chunk);
  return chunk instanceof Uint8Array ? chunk : Uint8Array.from(chunk);
}

/** Sentinel: put it in a chunk list to make the body's reader fail at that point. */
export const BREAK = Symbol("break the connection");

/**
 * A body that hands out `chunks` one per read, each as its own Uint8Array, then ends
 * (or fails, at a {@link BREAK}). Nothing is delivered before the reader asks.
 */
export function bodyFrom(chunks) {
  const list = [...chunks];
  return new ReadableStream({
    pull(controller) {
      if (list.length === 0) return controller.close();
      const next = list.shift();
      if (next === BREAK) return controller.error(new TypeError("network error (test)"));
      controller.enqueue(bytes(next));
    },
  });
}

/**
 * A body the test writes to while the client reads: `push(chunk)`, `close()`, `fail()`.
 * `cancelled` resolves when the client cancels it.
 */
export function controlledBody() {
  let ctrl;
  let onCancel;
  const cancelled = new Promise((resolve) => (onCancel = resolve));
  const stream = new ReadableStream({
    start(c) {
      ctrl = c;
    },
    cancel(reason) {
      onCancel(reason ?? true);
    },
  });
  return {
    stream,
    cancelled,
    push: (chunk) => ctrl.enqueue(bytes(chunk)),
    close: () => ctrl.close(),
    fail: (err = new TypeError("network error (test)")) => ctrl.error(err),
  };
}

const CONTENT_TYPES = {
  ndjson: "application/x-ndjson",
  sse: "text/event-stream; charset=utf-8",
  text: "text/plain; charset=utf-8",
};

/** A streaming `Response` of the given format. `body` is a chunk list or a ReadableStream. */
export function streamResponse(format, body, { status = 200, headers = {} } = {}) {
  const stream = body instanceof ReadableStream ? body : bodyFrom(body);
  return new Response(stream, {
    status,
    headers: { "content-type": CONTENT_TYPES[format], "cache-control": "no-cache", ...headers },
  });
}

/**
 * A fetch double. `respond(url, init)` returns a Response (or a promise of one). Calls
 * are recorded in `.calls` as `{url, init}`. Unless `honorSignal` is false it behaves
 * like a real fetch on abort: a pending call rejects, and the body's reader fails.
 */
export function fakeFetch(respond, { honorSignal = true } = {}) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    calls.push({ url, init });
    const signal = init.signal;
    if (honorSignal && signal?.aborted) throw signal.reason;
    const pending = Promise.resolve(respond(url, init));
    if (!honorSignal || !signal) return pending;
    const response = await new Promise((resolve, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      pending.then(resolve, reject);
    });
    if (!response.body) return response;
    // Real fetch errors the body when the request is aborted; so does this one.
    const reader = response.body.getReader();
    const body = new ReadableStream({
      start(controller) {
        signal.addEventListener(
          "abort",
          () => {
            controller.error(signal.reason);
            reader.cancel(signal.reason).catch(() => {}); // the connection closes
          },
          { once: true },
        );
      },
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) controller.close();
          else controller.enqueue(value);
        } catch (err) {
          controller.error(err);
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
  fetch.calls = calls;
  return fetch;
}

/** Runs a stream to its end. Returns the events it yielded and the error it threw, if any. */
export async function drain(s) {
  const events = [];
  try {
    for await (const ev of s) events.push(ev);
    return { events, error: null };
  } catch (error) {
    return { events, error };
  }
}

/** Encodes normalized events as ndjson. */
export function ndjson(...events) {
  return events.map((e) => JSON.stringify(e) + "\n").join("");
}

/** Encodes normalized events as the relay's sse format (id, event, data, blank line). */
export function sse(...events) {
  return events.map((e, i) => `id: ${i + 1}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`).join("");
}

/** A small, typical stream: start, a few deltas, finish, usage, done. */
export const TYPICAL = [
  { type: "start", id: "chatcmpl-1", model: "sim-1" },
  { type: "delta", index: 0, text: "Hello" },
  { type: "delta", index: 0, text: ", wörld" },
  { type: "delta", index: 0, text: " 😀 漢字\nline two" },
  { type: "finish", index: 0, reason: "stop" },
  { type: "usage", prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
  { type: "done" },
];

/** Waits for the next macrotask, letting every pending microtask and read run. */
export const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
