// @ts-self-types="./streamrelay.d.ts"
/**
 * streamrelay.js: the browser client for a streamrelay endpoint.
 *
 * One self-contained ES module with no dependencies. It runs in modern browsers
 * and in Node >= 18, and uses only `fetch`, `TextDecoder`, `ReadableStream` and
 * `AbortController`. The relay serves it at `<mount>/streamrelay.js`.
 *
 * Usage:
 *
 *     import { stream, StreamRelayError, isAbortError } from "/v1/streamrelay.js";
 *
 *     // The simple case: a callback for each piece of text, then the whole answer.
 *     const answer = await stream("/v1/chat/completions", {
 *       model: "sim-1",
 *       messages: [{ role: "user", content: "Hello" }],
 *     }, { onText: (piece) => output.append(piece) }).text();
 *
 *     // Full control: iterate over the normalized events.
 *     const s = stream("/v1/chat/completions", body, { format: "sse" });
 *     stopButton.onclick = () => s.abort();
 *     try {
 *       for await (const ev of s) {
 *         if (ev.type === "delta") output.append(ev.text);
 *         else if (ev.type === "reasoning") thoughts.append(ev.text);   // the model's thinking
 *         else if (ev.type === "finish") console.log("finished:", ev.reason);
 *       }
 *       // Reaching this line means the server sent `done`: the answer is complete.
 *     } catch (err) {
 *       if (isAbortError(err)) console.log("stopped");            // s.abort() or options.signal
 *       else if (err instanceof StreamRelayError) console.error(err.status, err.code, err.message);
 *       else throw err;
 *     }
 *
 * The wire contract:
 * - The client POSTs `body` as JSON to `url?format=<format>` with the matching `Accept`
 *   header. Formats are `ndjson` (the default), `sse` and `text`.
 * - `ndjson` and `sse` carry the relay's normalized events: `start`, `delta`,
 *   `reasoning`, `refusal`, `tool_call`, `finish`, `usage`, `error` and `done`.
 *   Heartbeats are dropped: the `{"type":"ping"}` lines of ndjson and the comment lines
 *   of sse. Event types this version does not know are passed on as they are.
 * - `reasoning` is the model's reasoning (DeepSeek's `reasoning_content`, OpenRouter's
 *   `reasoning`, Mistral's thinking, the Responses API's reasoning summaries, ...),
 *   never part of the answer: `.text()` and `onText` leave it out; `onReasoning` and
 *   `.result()` have it.
 * - `text` carries only the text of choice 0, without reasoning. The client turns each
 *   decoded piece into `{type: "delta", index: 0, text}`, and a clean end of the body
 *   into `{type: "done"}`.
 *
 * How a stream can end:
 * - `done`: iteration ends normally, and `.text()` and `.result()` resolve.
 * - An `error` event, a stream that ends without `done`, or an HTTP error status all
 *   throw a {@link StreamRelayError}. The iterator throws it after the events that came
 *   before it, and `.text()` and `.result()` reject with it.
 * - Abort, by `.abort()`, `options.signal`, or `break` out of a `for await` loop,
 *   cancels the HTTP request. That closes the connection, and the relay then cancels the
 *   paid upstream generation. Iteration, `.text()` and `.result()` then reject with a
 *   `DOMException` whose `name` is `"AbortError"` (test it with {@link isAbortError}).
 *   Events still queued are dropped. If an abort reason was given, it is kept as the
 *   error's `cause`.
 *
 * Resumable streams (a relay with a store, docs/resume.md):
 * - The relay names each stream in its `X-Stream-Id` header: `s.streamId`. Events carry
 *   their position (`id:` in sse, `"seq"` in ndjson): `s.lastEventId` is the last one.
 * - When the connection breaks before the terminal event (ndjson and sse), the client
 *   resumes by itself: `GET <mount>/streams/{id}?format=<format>&last_event_id=<n>`,
 *   with backoff (`options.retries`, `options.retryDelay`). No event is lost or
 *   repeated. A `204` means nothing was left (the stream completes); a `404` means the
 *   stream is gone (`stream_not_found`). The mount is the POST URL less its
 *   `/chat/completions`, `/responses` or `/completions`, or `options.mount`.
 * - `resume(mount, id, {lastEventId})` picks a stream up again, after a reload say.
 * - `s.stop()` stops the generation (`DELETE <mount>/streams/{id}`): the stream then
 *   fails with the relay's `stopped` error. With a store, `abort()` only closes this
 *   connection; the relay goes on for its `linger`, for a client that comes back.
 *
 * @module streamrelay
 */

/** @type {Readonly<Record<string, string>>} The `Accept` header sent for each format. */
export const ACCEPT = Object.freeze({
  ndjson: "application/x-ndjson",
  sse: "text/event-stream",
  text: "text/plain",
});

/* The response media types each format accepts. A missing Content-Type is tolerated. */
const MEDIA_TYPES = {
  ndjson: ["application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines"],
  sse: ["text/event-stream"],
  text: ["text/plain"],
};

const MAX_CHOICES = 1024;
const DEFAULT_RETRIES = 5;
const DEFAULT_RETRY_DELAY = 250; // ms, doubled on each attempt
const MAX_RETRY_DELAY = 5000;
const MAX_RETRY_AFTER = 30000; // the longest Retry-After a resume waits for
/* The endpoints whose URL, less this last part, is the mount. */
const ENDPOINT = /(^|\/)(chat\/completions|responses|completions)$/;
/* The event types whose `text` is a piece of a choice's text of some kind. */
const TEXT_EVENTS = new Set(["delta", "reasoning", "refusal"]);
const noop = () => {};
const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

/**
 * The error a stream fails with, for every failure other than an abort.
 *
 * `code` says why. The relay's own codes, and upstream codes, pass through unchanged
 * from a terminal `error` event, or from the JSON body of an HTTP error. The client
 * adds these codes of its own:
 * - `truncated`: the body ended, or the connection broke, before `done`. For the `text`
 *   format, this is how the relay signals an error after the first byte.
 * - `network_error`: the request failed before any response (fetch rejected).
 * - `protocol_error`: the body could not be parsed, had the wrong Content-Type, or
 *   held a value that is not an event.
 * - `idle_timeout`: `options.idleTimeout` passed with no bytes from the server.
 * - `http_error`: an HTTP error status whose body gave no code.
 */
export class StreamRelayError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string|null, status?: number|null, type?: string|null,
   *          event?: object|null, retryAfterMs?: number|null, body?: string|null,
   *          cause?: unknown}} [init]
   */
  constructor(message, init = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "StreamRelayError";
    /** Machine-readable reason. @type {string|null} */
    this.code = init.code ?? null;
    /** The HTTP status of an error response, or the `status` field of an `error` event. @type {number|null} */
    this.status = init.status ?? null;
    /** The `type` field of an HTTP error body, such as `invalid_request_error`. @type {string|null} */
    this.type = init.type ?? null;
    /** The terminal `error` event, when the stream carried one. @type {object|null} */
    this.event = init.event ?? null;
    /** From `retry-after-ms` or `retry-after`, in milliseconds. @type {number|null} */
    this.retryAfterMs = init.retryAfterMs ?? null;
    /** The raw body text of an HTTP error response. @type {string|null} */
    this.body = init.body ?? null;
  }
}

/**
 * Tells whether `err` is the error a stream rejects with after an abort.
 * @param {unknown} err
 * @returns {boolean}
 */
export function isAbortError(err) {
  return typeof err === "object" && err !== null && /** @type {any} */ (err).name === "AbortError";
}

/**
 * Start a stream. Same as `new RelayStream(url, body, options)`.
 *
 * The request goes out at once, as with `fetch`. The returned object is an async
 * iterable of events, and has `.text()`, `.result()` and `.abort()`.
 *
 * @param {string|URL} url the relay endpoint, such as `/v1/chat/completions`
 * @param {unknown} [body] the request body: a string is sent as it is, anything else as JSON
 * @param {StreamOptions} [options]
 * @returns {RelayStream}
 */
export function stream(url, body, options) {
  return new RelayStream(url, body, options);
}

/**
 * Resume a stream of a relay with a store, by its id: `GET <mount>/streams/{id}`.
 * It returns the same kind of {@link RelayStream} as {@link stream}: it replays the
 * events after `options.lastEventId` (all of them without it), then follows the stream
 * live to its end, and resumes by itself if the connection breaks again.
 *
 * A stream that has ended and whose every event was delivered (a `204`) completes at
 * once with a `done` event. A stream that is unknown, has expired, or belongs to
 * another user fails with a {@link StreamRelayError} whose `status` is 404 and `code`
 * is `stream_not_found`.
 *
 * @example
 * // Before the page goes: sessionStorage.setItem("answer", JSON.stringify({id: s.streamId}))
 * const { id } = JSON.parse(sessionStorage.getItem("answer"));
 * const text = await resume("/v1", id, { onText: (piece) => output.append(piece) }).text();
 *
 * @param {string|URL} mount the relay's mount, such as `/v1` (an endpoint URL such as
 *   `/v1/chat/completions` is taken for its mount too)
 * @param {string} id the stream's id: {@link RelayStream#streamId}, the `X-Stream-Id` header
 * @param {ResumeOptions} [options]
 * @returns {RelayStream}
 */
export function resume(mount, id, options = {}) {
  if (typeof id !== "string" || id === "") throw new TypeError("streamrelay: resume() needs the stream's id");
  const after = options.lastEventId ?? 0;
  if (!/^[0-9]+$/.test(String(after))) {
    throw new TypeError(`streamrelay: options.lastEventId must be an event number, got ${JSON.stringify(after)}`);
  }
  pendingResume = { id, after: Number(after) };
  try {
    return new RelayStream(mount, undefined, options);
  } finally {
    pendingResume = null;
  }
}

/* Set by resume() while it constructs its stream. */
let pendingResume = null;

/**
 * @typedef {StreamOptions & {lastEventId?: number|string}} ResumeOptions
 * `lastEventId`: the position to resume after (the {@link RelayStream#lastEventId} of
 * the stream that was cut); without it, the replay starts at the first event. The
 * `text` format has no positions: it always replays from the first event.
 */

/**
 * @typedef {object} StreamOptions
 * @property {"ndjson"|"sse"|"text"} [format] the wire format (default `"ndjson"`)
 * @property {AbortSignal} [signal] aborts the stream, like `.abort()`
 * @property {HeadersInit} [headers] extra request headers
 * @property {typeof fetch} [fetch] the fetch to use (default `globalThis.fetch`)
 * @property {(piece: string, text: string) => void} [onText] called with each piece of
 *   choice 0's text, and the text so far
 * @property {(piece: string, reasoning: string) => void} [onReasoning] called with each
 *   piece of choice 0's reasoning, and the reasoning so far
 * @property {(event: object) => void} [onEvent] called with every event, `error` and `done` included
 * @property {number} [idleTimeout] fail with code `idle_timeout` after this many ms without
 *   bytes from the server (the relay's heartbeats count, except in the `text` format, which has none)
 * @property {string|URL} [mount] the relay's mount, where `streams/{id}` is (default: the
 *   URL less its `/chat/completions`, `/responses` or `/completions`, else less its last segment)
 * @property {number} [retries] how many times in a row a cut stream is resumed before it
 *   fails with `truncated` (default 5; 0 turns automatic resume off)
 * @property {number} [retryDelay] ms before the first resume attempt, doubled for each
 *   next one, up to 5 s (default 250)
 */

/**
 * A running stream: an async iterable of normalized events, which can be iterated once.
 *
 * The body is read as fast as it arrives, whether or not anyone is iterating. Events
 * wait in a queue until the iterator takes them, and the callbacks fire as they arrive.
 */
export class RelayStream {
  #fetch;
  #format;
  #onText;
  #onReasoning;
  #onEvent;
  #idleTimeout;
  #controller = new AbortController();
  #userSignal = null;
  #onUserAbort = null;
  #idleTimer = null;
  #reader = null;
  #lastEventId = "";
  #headers;
  #mount = null;
  #streamId = null;
  #resuming = false;
  #retries;
  #retryDelay;
  #attempts = 0;
  #stopping = false;

  #queue = [];
  #waiters = [];
  #iterating = false;
  #settled = false;
  #failure = null;
  #failureReported = false;

  #result = { id: null, model: null, text: "", reasoning: "", choices: [], usage: null };
  #finished;
  #resolveFinished;
  #rejectFinished;
  #response;
  #resolveResponse;
  #rejectResponse;

  /**
   * @param {string|URL} url
   * @param {unknown} [body]
   * @param {StreamOptions} [options]
   */
  constructor(url, body, options = {}) {
    // resume() makes its stream through this constructor: a GET of the stream instead of a POST.
    const resuming = pendingResume;
    pendingResume = null;
    const format = options.format ?? "ndjson";
    if (!Object.prototype.hasOwnProperty.call(ACCEPT, format)) {
      throw new TypeError(`streamrelay: unknown format ${JSON.stringify(format)}; use "ndjson", "sse" or "text"`);
    }
    for (const name of ["onText", "onReasoning", "onEvent", "fetch"]) {
      if (options[name] != null && typeof options[name] !== "function") {
        throw new TypeError(`streamrelay: options.${name} must be a function`);
      }
    }
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("streamrelay: no fetch available; pass options.fetch");
    this.#retries = count(options.retries, "retries", DEFAULT_RETRIES);
    this.#retryDelay = count(options.retryDelay, "retryDelay", DEFAULT_RETRY_DELAY);
    if (options.mount != null && typeof options.mount !== "string" && !(options.mount instanceof URL)) {
      throw new TypeError("streamrelay: options.mount must be a string or a URL");
    }

    this.#fetch = fetchImpl;
    this.#format = format;
    this.#onText = options.onText ?? null;
    this.#onReasoning = options.onReasoning ?? null;
    this.#onEvent = options.onEvent ?? null;
    this.#idleTimeout = options.idleTimeout > 0 ? options.idleTimeout : 0;
    this.#headers = new Headers(options.headers);
    if (resuming) {
      this.#resuming = true;
      this.#streamId = resuming.id;
      this.#mount = mountOf(String(options.mount ?? url), true);
      if (format !== "text" && resuming.after > 0) this.#lastEventId = String(resuming.after);
      /** The URL of the first request: the POST's, with `?format=` set, or a resume's GET. @type {string} */
      this.url = this.#resumeUrl();
    } else {
      this.#mount = options.mount != null ? mountOf(String(options.mount), true) : mountOf(String(url), false);
      this.url = withFormat(String(url), format);
    }

    const headers = new Headers(this.#headers);
    if (!headers.has("accept")) headers.set("accept", ACCEPT[format]);
    if (body !== undefined && !headers.has("content-type")) headers.set("content-type", "application/json");
    const payload = body === undefined || typeof body === "string" ? body : JSON.stringify(body);

    this.#finished = new Promise((resolve, reject) => {
      this.#resolveFinished = resolve;
      this.#rejectFinished = reject;
    });
    this.#response = new Promise((resolve, reject) => {
      this.#resolveResponse = resolve;
      this.#rejectResponse = reject;
    });
    // Nobody has to look at these; failures still reach whoever does.
    this.#finished.catch(noop);
    this.#response.catch(noop);

    const signal = options.signal;
    if (signal) {
      if (signal.aborted) {
        this.abort(signal.reason);
      } else {
        this.#userSignal = signal;
        this.#onUserAbort = () => this.abort(signal.reason);
        signal.addEventListener("abort", this.#onUserAbort, { once: true });
      }
    }

    const init = resuming
      ? { method: "GET", headers: this.#getHeaders(), signal: this.#controller.signal }
      : { method: "POST", headers, body: payload, signal: this.#controller.signal };
    this.#run(init).catch((err) => this.#settle(err));
  }

  /** The wire format: `"ndjson"`, `"sse"` or `"text"`. */
  get format() {
    return this.#format;
  }

  /**
   * The position of the last event received: its `id:` (format `sse`) or its `"seq"`
   * (format `ndjson`), as a string; `""` before the first. A resume continues after it.
   */
  get lastEventId() {
    return this.#lastEventId;
  }

  /**
   * The stream's id on the relay (its `X-Stream-Id` header), once the response headers
   * have arrived; `null` before, and for a relay without a store (such a stream cannot
   * be resumed or stopped by id). Keep it with {@link lastEventId} to {@link resume} it later.
   * @returns {string|null}
   */
  get streamId() {
    return this.#streamId;
  }

  /**
   * The HTTP response, once its headers have arrived. Its body belongs to the stream.
   * Rejects if the request fails or is aborted before that.
   * @returns {Promise<Response>}
   */
  get response() {
    return this.#response;
  }

  /**
   * The full text of choice 0, once the stream has ended with `done`.
   * @returns {Promise<string>}
   */
  text() {
    return this.#finished.then((r) => r.text);
  }

  /**
   * Everything the stream said, once it has ended with `done`: each choice's text,
   * reasoning, refusal, tool calls (their argument fragments joined) and finish reason,
   * and the usage (with its details, when the upstream sent them), id and model.
   * @returns {Promise<StreamResult>}
   */
  result() {
    return this.#finished.then((r) => r);
  }

  /**
   * Stop the stream and cancel the request. This does nothing once the stream has ended.
   * Iteration, `.text()` and `.result()` then reject with a `DOMException` named
   * `"AbortError"`. On a relay with a store, closing the connection does not stop the
   * generation before the relay's `linger`: {@link stop} does.
   * @param {unknown} [reason] kept as the error's `cause`
   */
  abort(reason) {
    if (this.#settled) return;
    const err = new DOMException("The stream was aborted.", "AbortError");
    if (reason !== undefined && !isAbortError(reason)) err.cause = reason;
    this.#queue.length = 0;
    this.#settle(err);
  }

  /**
   * Stop the generation on the server: `DELETE <mount>/streams/{id}`. The stream then
   * ends as the relay ends it, with an `error` event whose code is `stopped` (iteration
   * throws a {@link StreamRelayError} with that code), for this client and every other
   * reader of the stream. Unlike {@link abort}, it stops a stream that a store keeps
   * going after its client leaves.
   *
   * Without a stream id (no store on the relay, or the response headers have not
   * arrived yet) there is nothing to delete, and it aborts instead. If the `DELETE`
   * fails, it aborts too (the `AbortError`'s `cause` is the failure) and rejects with
   * the failure. Does nothing once the stream has ended.
   * @returns {Promise<void>}
   */
  async stop() {
    if (this.#settled) return;
    if (this.#streamId === null || this.#mount === null) {
      this.abort();
      return;
    }
    const headers = new Headers(this.#headers);
    headers.delete("content-type");
    this.#stopping = true;
    let response;
    try {
      const fetchImpl = this.#fetch;
      response = await fetchImpl(this.#streamUrl(), { method: "DELETE", headers });
    } catch (err) {
      const failure = new StreamRelayError(`Could not stop the stream: ${messageOf(err)}`, { code: "network_error", cause: err });
      this.abort(failure);
      throw failure;
    }
    if (response.ok) {
      response.body?.cancel().catch(noop);
      return;
    }
    const failure = await httpError(response);
    this.abort(failure);
    throw failure;
  }

  /** @returns {AsyncIterator<object>} */
  [Symbol.asyncIterator]() {
    if (this.#iterating) throw new TypeError("streamrelay: a stream can be iterated only once");
    this.#iterating = true;
    const iterator = {
      next: () => this.#next(),
      // `break`, `return` or a throw inside `for await`: the caller no longer wants the
      // stream, so cancel it (this stops the upstream generation too).
      return: (value) => {
        this.abort();
        this.#queue.length = 0;
        this.#failureReported = true;
        return Promise.resolve({ done: true, value });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  #next() {
    if (this.#queue.length > 0) return Promise.resolve({ done: false, value: this.#queue.shift() });
    if (this.#settled) return this.#ending();
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /* The iterator's answer once the queue is empty and the stream has ended. */
  #ending() {
    if (this.#failure && !this.#failureReported) {
      this.#failureReported = true;
      return Promise.reject(this.#failure);
    }
    return Promise.resolve({ done: true, value: undefined });
  }

  async #run(init) {
    this.#armIdle();
    if (this.#settled) return;
    let response;
    try {
      const fetchImpl = this.#fetch; // a plain call: window.fetch throws if `this` is not window
      response = await fetchImpl(this.url, init);
    } catch (err) {
      if (this.#settled) return;
      throw new StreamRelayError(`Network error: ${messageOf(err)}`, { code: "network_error", cause: err });
    }
    if (this.#settled) {
      response.body?.cancel().catch(noop);
      return;
    }
    this.#armIdle();
    if (!this.#resuming) this.#streamId = response.headers.get("x-stream-id") || null;
    this.#resolveResponse(response);
    if (this.#resuming && response.status === 204) {
      this.#complete(response);
      return;
    }
    if (!response.ok) throw await httpError(response);
    this.#checkType(response);

    let cut = await this.#read(response);
    while (cut) {
      response = await this.#reconnect(cut.cause);
      if (!response) return;
      cut = await this.#read(response);
    }
  }

  /*
   * Reads one response's body. Returns null once the stream has ended, or `{cause}` when
   * the body broke off (or ended) before the terminal event of a stream that can resume.
   */
  async #read(response) {
    if (!response.body) {
      if (this.#canResume()) return { cause: null };
      throw truncated(null);
    }
    const reader = response.body.getReader();
    this.#reader = reader;
    if (this.#settled) {
      reader.cancel().catch(noop);
      return null;
    }
    const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    const decode = this.#makeDecoder();
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (this.#settled) return null;
        if (this.#canResume()) return { cause: err };
        throw this.#stopping ? stopped() : truncated(err);
      }
      if (this.#settled) return null;
      this.#armIdle();
      if (chunk.done) break;
      const text = decoder.decode(chunk.value, { stream: true });
      if (text && decode.feed(text)) return null;
    }
    // A body that ends without the terminal event was cut. With a stream id, the rest
    // (an unfinished last event included) comes from a resume.
    if (this.#canResume()) return { cause: null };
    const rest = decoder.decode();
    if (rest && decode.feed(rest)) return null;
    if (decode.end()) return null;
    throw this.#stopping ? stopped() : truncated(null);
  }

  /* Whether a cut body can be resumed: the relay gave an id, and the format has positions. */
  #canResume() {
    return this.#streamId !== null && this.#mount !== null && this.#format !== "text" && this.#retries > 0;
  }

  /*
   * Resumes after a cut: `GET <mount>/streams/{id}` after the last position, with
   * exponential backoff. Returns the response to read on, or null once the stream has
   * ended (aborted, or a 204: nothing was left). Throws when the stream is gone (404),
   * or when every attempt failed.
   */
  async #reconnect(cause) {
    let last = cause;
    let asked = 0; // a Retry-After's wait, in ms
    while (this.#attempts < this.#retries) {
      const wait = Math.max(Math.min(this.#retryDelay * 2 ** this.#attempts, MAX_RETRY_DELAY), asked);
      this.#attempts += 1;
      if (!(await this.#sleep(wait))) return null;
      let response;
      try {
        const fetchImpl = this.#fetch;
        response = await fetchImpl(this.#resumeUrl(), { method: "GET", headers: this.#getHeaders(), signal: this.#controller.signal });
      } catch (err) {
        if (this.#settled) return null;
        last = err;
        continue;
      }
      if (this.#settled) {
        response.body?.cancel().catch(noop);
        return null;
      }
      if (response.status === 204) {
        this.#complete(response);
        return null;
      }
      if (response.ok) {
        this.#armIdle();
        this.#checkType(response);
        return response;
      }
      const failure = await httpError(response);
      if (response.status >= 500 || response.status === 408 || response.status === 429) {
        last = failure; // the store or a proxy is down for a moment: try again
        asked = Math.min(failure.retryAfterMs ?? 0, MAX_RETRY_AFTER);
        continue;
      }
      throw failure; // 404 stream_not_found: unknown, expired or not ours; 400: a bad position
    }
    const tries = this.#attempts === 1 ? "1 attempt" : `${this.#attempts} attempts`;
    throw new StreamRelayError(
      `The connection broke before the stream was complete, and ${tries} to resume it failed${last ? `: ${messageOf(last)}` : "."}`,
      { code: "truncated", cause: last ?? undefined },
    );
  }

  /* A 204 to a resume: everything was delivered, the stream is complete. */
  #complete(response) {
    response.body?.cancel().catch(noop);
    this.#emit({ type: "done" });
  }

  #checkType(response) {
    const mediaType = (response.headers.get("content-type") || "").split(";")[0].trim().toLowerCase();
    if (mediaType && !MEDIA_TYPES[this.#format].includes(mediaType)) {
      response.body?.cancel().catch(noop);
      throw new StreamRelayError(
        `Expected ${ACCEPT[this.#format]} for format "${this.#format}", but the server sent ${mediaType}.`,
        { code: "protocol_error", status: response.status },
      );
    }
  }

  /* Waits `ms`; resolves false at once if the stream ends meanwhile. */
  #sleep(ms) {
    if (this.#settled) return Promise.resolve(false);
    const signal = this.#controller.signal;
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", wake);
        resolve(!this.#settled);
      };
      const timer = setTimeout(wake, ms);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  /* `<mount>/streams/{id}`. */
  #streamUrl() {
    return `${this.#mount}streams/${encodeURIComponent(this.#streamId)}`;
  }

  /* The resume URL: the format, and the position to continue after (`last_event_id`, a
     query parameter rather than the header, so that a cross-origin GET needs no preflight). */
  #resumeUrl() {
    const position = /^[0-9]+$/.test(this.#lastEventId) ? `&last_event_id=${this.#lastEventId}` : "";
    return `${this.#streamUrl()}?format=${this.#format}${position}`;
  }

  #getHeaders() {
    const headers = new Headers(this.#headers);
    headers.delete("content-type");
    if (!headers.has("accept")) headers.set("accept", ACCEPT[this.#format]);
    return headers;
  }

  /* An event with a position arrived: remember it, and a resume that delivers starts its tries afresh. */
  #advance(id) {
    this.#lastEventId = id;
    this.#attempts = 0;
  }

  /*
   * The body decoder of the stream's format: `feed(text)` and `end()` emit the events
   * they complete, in order, and return true once the stream has ended.
   */
  #makeDecoder() {
    const emit = (ev) => {
      if (ev) this.#emit(ev);
      return this.#settled;
    };
    if (this.#format === "text") {
      return {
        feed: (text) => emit({ type: "delta", index: 0, text }),
        end: () => emit({ type: "done" }),
      };
    }
    if (this.#format === "ndjson") {
      const lines = new LineSplitter();
      return {
        feed: (text) =>
          lines.feed(text).some((line) => {
            const ev = parseLine(line);
            if (ev && Number.isInteger(ev.seq)) this.#advance(String(ev.seq));
            return emit(ev);
          }),
        end: () => {
          // A last line without its `\n` counts if it is whole; half a line is a cut stream.
          const line = lines.end();
          let ev;
          try {
            ev = parseLine(line);
          } catch (err) {
            throw truncated(err);
          }
          return emit(ev);
        },
      };
    }
    const sse = new SSEParser();
    return {
      feed: (text) =>
        sse.feed(text).some((message) => {
          this.#advance(message.id);
          // Empty data and `event: ping` are heartbeats too, from relays other than ours.
          return message.data !== "" && message.event !== "ping" && emit(parseEvent(message.data));
        }),
      end: () => emit(sse.end()[0]),
    };
  }

  #emit(ev) {
    this.#collect(ev);
    if (this.#onEvent) {
      this.#onEvent(ev);
      if (this.#settled) return; // the callback aborted
    }
    if (this.#onText && ev.type === "delta" && ev.index === 0) {
      this.#onText(ev.text, this.#result.text);
      if (this.#settled) return;
    }
    if (this.#onReasoning && ev.type === "reasoning" && ev.index === 0) {
      this.#onReasoning(ev.text, this.#result.reasoning);
      if (this.#settled) return;
    }
    if (ev.type === "error") {
      const message = typeof ev.message === "string" && ev.message ? ev.message : "The stream failed.";
      const status = Number.isInteger(ev.status) ? ev.status : null;
      this.#settle(new StreamRelayError(message, { code: ev.code == null ? null : String(ev.code), status, event: ev }));
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve({ done: false, value: ev });
    else this.#queue.push(ev);
    if (ev.type === "done") this.#settle(null);
  }

  /* Adds an event to the result that `.text()` and `.result()` report. */
  #collect(ev) {
    const r = this.#result;
    switch (ev.type) {
      case "start":
        if (typeof ev.id === "string") r.id = ev.id;
        if (typeof ev.model === "string") r.model = ev.model;
        break;
      case "delta":
        this.#choice(ev).text += ev.text;
        if (ev.index === 0) r.text += ev.text;
        break;
      case "reasoning": {
        const c = this.#choice(ev);
        c.reasoning = (c.reasoning ?? "") + ev.text;
        if (ev.index === 0) r.reasoning += ev.text;
        break;
      }
      case "refusal": {
        const c = this.#choice(ev);
        c.refusal = (c.refusal ?? "") + ev.text;
        break;
      }
      case "tool_call": {
        const c = this.#choice(ev);
        const n = ev.call;
        if (!Number.isInteger(n) || n < 0 || n >= MAX_CHOICES) throw badEvent(ev, "call");
        while (c.toolCalls.length <= n) c.toolCalls.push({ id: null, name: null, arguments: "" });
        const call = c.toolCalls[n];
        if (typeof ev.id === "string") call.id = ev.id;
        if (typeof ev.name === "string") call.name = ev.name;
        if (typeof ev.arguments === "string") call.arguments += ev.arguments;
        break;
      }
      case "finish":
        this.#choice(ev).finishReason = typeof ev.reason === "string" ? ev.reason : null;
        break;
      case "usage":
        r.usage = {
          prompt_tokens: ev.prompt_tokens,
          completion_tokens: ev.completion_tokens,
          total_tokens: ev.total_tokens,
        };
        for (const details of ["prompt_tokens_details", "completion_tokens_details"]) {
          if (isObject(ev[details])) r.usage[details] = ev[details];
        }
        break;
      default:
    }
  }

  #choice(ev) {
    const i = ev.index;
    if (!Number.isInteger(i) || i < 0 || i >= MAX_CHOICES) throw badEvent(ev, "index");
    if (TEXT_EVENTS.has(ev.type) && typeof ev.text !== "string") throw badEvent(ev, "text");
    const choices = this.#result.choices;
    while (choices.length <= i) {
      choices.push({ index: choices.length, text: "", reasoning: null, refusal: null, toolCalls: [], finishReason: null });
    }
    return choices[i];
  }

  #armIdle() {
    if (!this.#idleTimeout || this.#settled) return;
    clearTimeout(this.#idleTimer);
    const ms = this.#idleTimeout;
    this.#idleTimer = setTimeout(() => {
      this.#settle(new StreamRelayError(`No data from the server for ${ms} ms.`, { code: "idle_timeout" }));
    }, ms);
  }

  /* Ends the stream once: `null` for success (`done`), else the error. */
  #settle(failure) {
    if (this.#settled) return;
    this.#settled = true;
    this.#failure = failure;
    clearTimeout(this.#idleTimer);
    if (this.#userSignal) this.#userSignal.removeEventListener("abort", this.#onUserAbort);
    this.#userSignal = this.#onUserAbort = null;
    if (failure) {
      this.#rejectFinished(failure);
      this.#rejectResponse(failure); // no-op once the response was known
      // Close the connection: the relay sees the disconnect and cancels the upstream.
      this.#controller.abort(isAbortError(failure) ? failure : new DOMException(failure.message, "AbortError"));
    } else {
      this.#resolveFinished(this.#result);
    }
    // After `done` nothing more is read. Cancelling a finished body costs nothing.
    this.#reader?.cancel().catch(noop);
    for (const waiter of this.#waiters.splice(0)) {
      if (this.#failure && !this.#failureReported) {
        this.#failureReported = true;
        waiter.reject(this.#failure);
      } else {
        waiter.resolve({ done: true, value: undefined });
      }
    }
  }
}

/**
 * @typedef {object} StreamResult
 * @property {string|null} id the `start` event's id
 * @property {string|null} model the `start` event's model
 * @property {string} text the text of choice 0
 * @property {string} reasoning the reasoning of choice 0 (`""` when there was none)
 * @property {Array<{index: number, text: string, reasoning: string|null, refusal: string|null,
 *   toolCalls: Array<{id: string|null, name: string|null, arguments: string}>,
 *   finishReason: string|null}>} choices
 * @property {{prompt_tokens: number, completion_tokens: number, total_tokens: number,
 *   prompt_tokens_details?: object, completion_tokens_details?: object}|null} usage
 */

/**
 * An incremental Server-Sent Events parser, per the WHATWG HTML spec
 * ("Interpreting an event stream"). Feed it decoded text in pieces of any size; it
 * returns the messages those pieces completed.
 *
 * It handles LF, CR and CRLF line endings (also a CRLF split between two pieces), one
 * leading BOM, comment lines (`:`, such as heartbeats), `data` fields joined with
 * `\n`, and the `event`, `id` and `retry` fields. At the end of input, an unfinished
 * message is discarded, as the spec requires.
 *
 * @example
 * const p = new SSEParser();
 * p.feed("event: delta\r\ndata: a\r\nda");  // []
 * p.feed("ta: b\r\n\r\n");                 // [{data: "a\nb", event: "delta", id: ""}]
 */
export class SSEParser {
  #buffer = "";
  #data = "";
  #event = "";
  #lastEventId = "";
  #skipLF = false;
  #started = false;

  /** The reconnection time of the last valid `retry` field, in ms, or `null`. @type {number|null} */
  retry = null;

  /** The last event ID seen (the spec's "last event ID buffer"). */
  get lastEventId() {
    return this.#lastEventId;
  }

  /**
   * @param {string} text
   * @returns {Array<{data: string, event: string, id: string}>}
   */
  feed(text) {
    const out = [];
    if (!text) return out;
    if (!this.#started) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.#skipLF) {
      this.#skipLF = false;
      if (text.charCodeAt(0) === 10) text = text.slice(1);
    }
    if (!text) return out;
    const buffer = this.#buffer + text;
    // The kept buffer never holds a line ending, so scanning starts at the new text.
    const eol = /\r\n|\r|\n/g;
    eol.lastIndex = this.#buffer.length;
    let start = 0;
    let m;
    while ((m = eol.exec(buffer)) !== null) {
      this.#line(buffer.slice(start, m.index), out);
      start = m.index + m[0].length;
      // A CR that ends this piece may be the first half of a CRLF.
      if (m[0] === "\r" && start === buffer.length) this.#skipLF = true;
    }
    this.#buffer = start === 0 ? buffer : buffer.slice(start);
    return out;
  }

  /**
   * End of input. Drops any unfinished line or message.
   * @returns {never[]}
   */
  end() {
    this.#buffer = "";
    this.#data = "";
    this.#event = "";
    return [];
  }

  #line(line, out) {
    if (line === "") {
      this.#dispatch(out);
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ":" starts a comment
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(line.charCodeAt(colon + 1) === 32 ? colon + 2 : colon + 1);
    }
    switch (field) {
      case "event":
        this.#event = value;
        break;
      case "data":
        this.#data += value + "\n";
        break;
      case "id":
        if (!value.includes("\0")) this.#lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default: // unknown fields are ignored
    }
  }

  #dispatch(out) {
    if (this.#data === "") {
      this.#event = "";
      return;
    }
    out.push({ data: this.#data.slice(0, -1), event: this.#event || "message", id: this.#lastEventId });
    this.#data = "";
    this.#event = "";
  }
}

/* Splits text into `\n`-terminated lines (a CR before the LF stays; JSON ignores it). */
class LineSplitter {
  #buffer = "";
  #started = false;

  /** @returns {string[]} the lines the text completed */
  feed(text) {
    if (!this.#started && text) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    let nl = text.indexOf("\n");
    if (nl < 0) {
      this.#buffer += text;
      return [];
    }
    const lines = [this.#buffer + text.slice(0, nl)];
    let start = nl + 1;
    while ((nl = text.indexOf("\n", start)) >= 0) {
      lines.push(text.slice(start, nl));
      start = nl + 1;
    }
    this.#buffer = text.slice(start);
    return lines;
  }

  /** @returns {string} the unterminated rest */
  end() {
    const rest = this.#buffer;
    this.#buffer = "";
    return rest;
  }
}

function parseLine(line) {
  return isBlank(line) ? null : parseEvent(line);
}

function isBlank(line) {
  return /^[ \t\r]*$/.test(line);
}

/* JSON text → an event object, or null for a heartbeat. */
function parseEvent(json) {
  let ev;
  try {
    ev = JSON.parse(json);
  } catch (err) {
    throw new StreamRelayError(`The stream held invalid JSON: ${preview(json)}`, { code: "protocol_error", cause: err });
  }
  if (ev === null || typeof ev !== "object" || Array.isArray(ev) || typeof ev.type !== "string") {
    throw new StreamRelayError(`The stream held something that is not an event: ${preview(json)}`, {
      code: "protocol_error",
    });
  }
  return ev.type === "ping" ? null : ev;
}

function badEvent(ev, field) {
  return new StreamRelayError(`A "${ev.type}" event has an invalid ${field}: ${preview(JSON.stringify(ev))}`, {
    code: "protocol_error",
  });
}

function truncated(cause) {
  return new StreamRelayError(
    cause
      ? `The connection broke before the stream was complete: ${messageOf(cause)}`
      : 'The stream ended before it was complete (no "done" event).',
    cause ? { code: "truncated", cause } : { code: "truncated" },
  );
}

/* A stream cut after stop(): in the `text` format, that is how the relay ends a stopped stream. */
function stopped() {
  return new StreamRelayError("The stream was stopped.", { code: "stopped" });
}

function preview(text) {
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

function messageOf(err) {
  return err && typeof err === "object" && "message" in err ? String(err.message) : String(err);
}

/* A non-negative number option, or its default. */
function count(value, name, fallback) {
  if (value == null) return fallback;
  if (typeof value !== "number" || !(value >= 0) || !Number.isFinite(value)) {
    throw new TypeError(`streamrelay: options.${name} must be a number >= 0`);
  }
  return name === "retries" ? Math.floor(value) : value;
}

/*
 * The mount of a relay URL, ending in "/" (or "" for a relative URL without a
 * directory): the URL without its query, fragment, and endpoint (`chat/completions`,
 * `responses`, `completions`). A URL without one is the mount itself (`isMount`), or
 * loses its last segment.
 */
function mountOf(url, isMount) {
  let base = url;
  const cut = base.search(/[?#]/);
  if (cut >= 0) base = base.slice(0, cut);
  const trimmed = base.replace(/\/+$/, "");
  if (ENDPOINT.test(trimmed)) return trimmed.replace(ENDPOINT, "$1");
  if (isMount) return base === "" || base.endsWith("/") ? base : `${base}/`;
  return base.slice(0, base.lastIndexOf("/") + 1);
}

/* Sets `format=<format>` in the query of `url`, keeping the rest of the query byte for byte. */
function withFormat(url, format) {
  let hash = "";
  const h = url.indexOf("#");
  if (h >= 0) {
    hash = url.slice(h);
    url = url.slice(0, h);
  }
  let query = "";
  const q = url.indexOf("?");
  if (q >= 0) {
    query = url.slice(q + 1);
    url = url.slice(0, q);
  }
  const params = query.split("&").filter((p) => p !== "" && paramName(p) !== "format");
  params.push(`format=${encodeURIComponent(format)}`);
  return `${url}?${params.join("&")}${hash}`;
}

function paramName(pair) {
  const name = pair.split("=", 1)[0].replace(/\+/g, " ");
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

/* An HTTP error response → StreamRelayError with the JSON body's message and code. */
async function httpError(response) {
  let raw = "";
  try {
    raw = await response.text();
  } catch {
    // the body is only a nicety
  }
  let message = null;
  let code = null;
  let type = null;
  try {
    const json = JSON.parse(raw);
    const e = json !== null && typeof json === "object" && "error" in json ? json.error : json;
    if (typeof e === "string") {
      message = e;
    } else if (e !== null && typeof e === "object") {
      message = nonEmpty(e.message) ?? nonEmpty(e.detail);
      if (typeof e.code === "string" || typeof e.code === "number") code = String(e.code);
      type = nonEmpty(e.type);
    }
  } catch {
    // not JSON: fall back to the status text
  }
  const status = response.status;
  return new StreamRelayError(message ?? (response.statusText || `HTTP ${status}`), {
    status,
    code: code ?? "http_error",
    type,
    retryAfterMs: retryAfterMs(response.headers),
    body: raw,
  });
}

function nonEmpty(value) {
  return typeof value === "string" && value !== "" ? value : null;
}

function retryAfterMs(headers) {
  const ms = headers.get("retry-after-ms");
  if (ms && /^\s*\d+(\.\d+)?\s*$/.test(ms)) return Number(ms);
  const after = headers.get("retry-after");
  if (!after) return null;
  if (/^\s*\d+(\.\d+)?\s*$/.test(after)) return Number(after) * 1000;
  const date = Date.parse(after);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}
