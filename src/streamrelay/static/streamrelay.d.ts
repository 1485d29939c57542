/**
 * Type declarations for streamrelay.js, the browser client of a streamrelay endpoint.
 *
 * @example
 * import { stream, StreamRelayError, isAbortError } from "/v1/streamrelay.js";
 *
 * const s = stream("/v1/chat/completions", { model: "sim-1", messages }, { format: "sse" });
 * for await (const ev of s) {
 *   switch (ev.type) {
 *     case "delta": out.append(ev.text); break;
 *     case "reasoning": thoughts.append(ev.text); break;
 *     case "finish": console.log(ev.reason); break;
 *   }
 * }
 */

/** The wire formats this client reads. (`openai` is for OpenAI SDK clients.) */
export type Format = "ndjson" | "sse" | "text";

/**
 * On a relay with a store (resumable streams), an `ndjson` event carries its position,
 * 1 for the first event and +1 for each next one. (In `sse` the position is the `id:`
 * line, which the iterator does not show: see {@link RelayStream.lastEventId}.)
 */
export interface Positioned {
  seq?: number;
}

/** The stream began: the first upstream chunk's `id` and `model`. */
export interface StartEvent extends Positioned {
  type: "start";
  id: string;
  model: string;
}

/** A piece of content text of choice `index`. */
export interface DeltaEvent extends Positioned {
  type: "delta";
  index: number;
  text: string;
}

/**
 * A piece of the model's reasoning for choice `index`: DeepSeek's `reasoning_content`,
 * OpenRouter's `reasoning`, Mistral's thinking parts, the Responses API's reasoning
 * summaries and so on. It is never part of the answer's text.
 */
export interface ReasoningEvent extends Positioned {
  type: "reasoning";
  index: number;
  text: string;
}

/** A piece of refusal text of choice `index`. */
export interface RefusalEvent extends Positioned {
  type: "refusal";
  index: number;
  text: string;
}

/**
 * A fragment of tool call `call` of choice `index`. `id` and `name` come on a call's
 * first fragment only. Join the `arguments` fragments to get the JSON arguments.
 */
export interface ToolCallEvent extends Positioned {
  type: "tool_call";
  index: number;
  call: number;
  id?: string;
  name?: string;
  arguments: string;
}

/** Choice `index` ended: `stop`, `length`, `tool_calls`, `content_filter`, ... */
export interface FinishEvent extends Positioned {
  type: "finish";
  index: number;
  reason: string;
}

/**
 * The upstream's own breakdown of a token count, passed on as it came: OpenAI's
 * `cached_tokens`, `audio_tokens`, `reasoning_tokens`, ...; other keys may appear.
 */
export interface UsageDetails {
  cached_tokens?: number;
  audio_tokens?: number;
  reasoning_tokens?: number;
  accepted_prediction_tokens?: number;
  rejected_prediction_tokens?: number;
  [key: string]: unknown;
}

/** The token counts of a stream, with the upstream's details when it sent them. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** The Responses API's `input_tokens_details` land here too. */
  prompt_tokens_details?: UsageDetails;
  /** The Responses API's `output_tokens_details` land here too. */
  completion_tokens_details?: UsageDetails;
}

/** Token accounting, from the upstream's usage chunk. */
export interface UsageEvent extends Usage, Positioned {
  type: "usage";
}

/**
 * The stream failed (terminal). The iterator never yields it: it throws a
 * {@link StreamRelayError} instead. Only `onEvent` sees the event itself.
 */
export interface ErrorEvent extends Positioned {
  type: "error";
  message: string;
  code: string | null;
  status?: number;
}

/** The stream ended cleanly (terminal). Without it, the stream was cut. */
export interface DoneEvent extends Positioned {
  type: "done";
}

/** Every normalized event that can come over the wire (heartbeats are dropped). */
export type RelayEvent =
  | StartEvent
  | DeltaEvent
  | ReasoningEvent
  | RefusalEvent
  | ToolCallEvent
  | FinishEvent
  | UsageEvent
  | ErrorEvent
  | DoneEvent;

/**
 * The events the iterator yields: every event but `error`, which is thrown as a
 * {@link StreamRelayError}. The last event of a complete stream is `done`.
 *
 * Event types that this client version does not know are passed through as they are.
 * Give a `switch` on `type` a `default` branch that ignores them.
 */
export type StreamEvent = Exclude<RelayEvent, ErrorEvent>;

/** The `type` of each event. */
export type RelayEventType = RelayEvent["type"];

export interface StreamOptions {
  /** The wire format. Default `"ndjson"`. */
  format?: Format;
  /** Aborts the stream, like {@link RelayStream.abort}. */
  signal?: AbortSignal;
  /** Extra request headers. `Accept` and `Content-Type` are set unless given here. */
  headers?: HeadersInit;
  /** The fetch to use. Default `globalThis.fetch`. */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** Called with each piece of choice 0's text, and the whole text so far. */
  onText?: (piece: string, text: string) => void;
  /** Called with each piece of choice 0's reasoning, and the whole reasoning so far. */
  onReasoning?: (piece: string, reasoning: string) => void;
  /**
   * Called with every event as it arrives, before the iterator sees it, `error` and
   * `done` included. If a callback throws, the stream fails with that error.
   */
  onEvent?: (event: RelayEvent) => void;
  /**
   * Fail with code `idle_timeout` after this many milliseconds without a byte from the
   * server. The relay's heartbeats count as bytes, except in the `text` format, which
   * has none. The time spent waiting to resume a cut stream counts too. Default: no limit.
   */
  idleTimeout?: number;
  /**
   * The relay's mount, where `streams/{id}` is for resume and stop: `/v1`, or a full
   * URL. Default: the URL less its `/chat/completions`, `/responses` or `/completions`
   * (or less its last path segment, for another URL), without its query.
   */
  mount?: string | URL;
  /**
   * How many times in a row a cut stream is resumed (`GET <mount>/streams/{id}` after
   * the last position) before it fails with `truncated`. A resume that delivers an
   * event starts the count afresh. Default 5; 0 turns automatic resume off.
   */
  retries?: number;
  /**
   * Milliseconds before the first resume attempt, doubled for each next one, up to 5 s
   * (or longer when a `Retry-After` asks, up to 30 s). Default 250.
   */
  retryDelay?: number;
}

/** The options of {@link resume}. */
export interface ResumeOptions extends StreamOptions {
  /**
   * The position to resume after: the {@link RelayStream.lastEventId} of the stream
   * that was cut. Default: none, the replay starts at the first event. The `text`
   * format has no positions, so it always replays from the first event.
   */
  lastEventId?: number | string;
}

/** One tool call, its argument fragments joined. */
export interface ToolCallResult {
  id: string | null;
  name: string | null;
  arguments: string;
}

export interface ChoiceResult {
  index: number;
  text: string;
  /** The choice's reasoning, or `null` when there was none. */
  reasoning: string | null;
  refusal: string | null;
  toolCalls: ToolCallResult[];
  finishReason: string | null;
}

/** What a complete stream said. {@link RelayStream.result} resolves to it. */
export interface StreamResult {
  id: string | null;
  model: string | null;
  /** The text of choice 0. */
  text: string;
  /** The reasoning of choice 0, `""` when there was none. */
  reasoning: string;
  choices: ChoiceResult[];
  usage: Usage | null;
}

/**
 * The codes this client adds of its own. An `error` event's code, or the code of an
 * HTTP error body, passes through unchanged, so `code` can be any string.
 * - `truncated`: the body ended, or the connection broke, before `done`. For the
 *   `text` format, this is how the relay signals an error after the first byte.
 * - `network_error`: the request failed before any response.
 * - `protocol_error`: unparsable body, wrong Content-Type, or a value that is no event.
 * - `idle_timeout`: `idleTimeout` passed without a byte.
 * - `http_error`: an HTTP error status whose body had no code.
 *
 * Codes of a resumable stream (docs/resume.md) come from the relay: `stopped` (a
 * `DELETE`, by {@link RelayStream.stop} or another client; in the `text` format, which
 * has no error events, the client gives this code to the cut that follows its own
 * `stop()`), `abandoned`, `stream_not_found` (404: unknown, expired or another user's),
 * `invalid_position` (400), `store_unavailable`, `producer_lost`, `resume_limit`.
 */
export type ClientErrorCode = "truncated" | "network_error" | "protocol_error" | "idle_timeout" | "http_error";

export interface StreamRelayErrorInit {
  code?: string | null;
  status?: number | null;
  type?: string | null;
  event?: ErrorEvent | null;
  retryAfterMs?: number | null;
  body?: string | null;
  cause?: unknown;
}

/** The error a stream fails with, for every failure other than an abort. */
export class StreamRelayError extends Error {
  constructor(message: string, init?: StreamRelayErrorInit);
  readonly name: "StreamRelayError";
  /** Machine-readable reason: a {@link ClientErrorCode}, the relay's or the upstream's. */
  code: ClientErrorCode | (string & {}) | null;
  /** The HTTP status of an error response, or the `status` of an `error` event. */
  status: number | null;
  /** The `type` of an HTTP error body, such as `invalid_request_error`. */
  type: string | null;
  /** The terminal `error` event, when the stream carried one. */
  event: ErrorEvent | null;
  /** From the `retry-after-ms` or `retry-after` header of an HTTP error, in ms. */
  retryAfterMs: number | null;
  /** The raw body of an HTTP error response. */
  body: string | null;
}

/**
 * A running stream. It is an async iterable of {@link StreamEvent}s, and can be
 * iterated once. The request goes out when the stream is made, and the body is read as
 * it arrives, whether or not anyone is iterating: events wait in a queue.
 *
 * Iteration ends after `done`. It throws a {@link StreamRelayError} on an `error` event,
 * a cut stream (`truncated`) or an HTTP error. After an abort it throws a
 * `DOMException` named `"AbortError"`. Leaving a `for await` loop early aborts the stream.
 *
 * On a relay with a store, the stream has a {@link streamId}. If its connection breaks
 * (`ndjson` and `sse`), the client resumes it by itself, after the last event it got:
 * no event is lost or repeated; see {@link StreamOptions.retries}.
 */
export class RelayStream implements AsyncIterable<StreamEvent> {
  constructor(url: string | URL, body?: unknown, options?: StreamOptions);
  /** The URL of the first request: the POST's, with `?format=` set, or a {@link resume}'s GET. */
  readonly url: string;
  readonly format: Format;
  /**
   * The position of the last event received: its `id:` (`sse`) or `"seq"` (`ndjson`),
   * `""` before the first. Keep it with {@link streamId} to {@link resume} after it.
   */
  readonly lastEventId: string;
  /**
   * The stream's id on the relay (its `X-Stream-Id` header), once the response headers
   * arrived; `null` before, and on a relay without a store.
   */
  readonly streamId: string | null;
  /** The first HTTP response, once its headers arrive. Its body belongs to the stream. */
  readonly response: Promise<Response>;
  /** The full text of choice 0, once `done` arrives. Rejects as iteration throws. */
  text(): Promise<string>;
  /** Everything the stream said, once `done` arrives. Rejects as iteration throws. */
  result(): Promise<StreamResult>;
  /**
   * Cancel the request, which closes the connection, so the relay cancels the upstream
   * generation (on a relay with a store, only after its `linger`, in case the client
   * comes back: use {@link stop} to stop it at once). Does nothing once the stream has
   * ended. Queued events are dropped. Waiting consumers get a `DOMException` named
   * `"AbortError"`, with `reason`, if given, as its `cause`.
   */
  abort(reason?: unknown): void;
  /**
   * Stop the generation on the relay: `DELETE <mount>/streams/{id}`. The stream then
   * ends as the relay ends it, with a {@link StreamRelayError} whose code is `stopped`,
   * for every reader. On a relay with a store, this is how to stop a generation:
   * {@link abort} only closes this connection, and the relay goes on for its `linger`
   * in case the client comes back.
   *
   * Without a {@link streamId} it aborts instead. If the `DELETE` fails, it aborts
   * (with the failure as the `AbortError`'s `cause`) and rejects with the failure.
   * Does nothing once the stream has ended.
   */
  stop(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterableIterator<StreamEvent>;
}

/**
 * Start a stream: POST `body` (JSON, or a string sent as it is) to `url?format=<format>`
 * with the matching `Accept` header.
 */
export function stream(url: string | URL, body?: unknown, options?: StreamOptions): RelayStream;

/**
 * Resume a stream of a relay with a store: `GET <mount>/streams/{id}?format=<format>`,
 * with `last_event_id` when `options.lastEventId` is given. It replays the events after
 * that position (all of them without it), follows the stream live to its end, and
 * resumes by itself if the connection breaks again.
 *
 * A stream whose every event was delivered (`204`) completes at once with `done`. An
 * unknown, expired or foreign id fails with status 404, code `stream_not_found`.
 *
 * @param mount the relay's mount, such as `/v1` (an endpoint URL such as
 *   `/v1/chat/completions` names its mount too)
 * @param id the stream's id: {@link RelayStream.streamId}
 */
export function resume(mount: string | URL, id: string, options?: ResumeOptions): RelayStream;

/** Whether `err` is the `AbortError` a stream rejects with after an abort. */
export function isAbortError(err: unknown): err is DOMException;

/** The `Accept` header sent for each format. */
export const ACCEPT: Readonly<Record<Format, string>>;

/** One message of an event stream. */
export interface SSEMessage {
  data: string;
  /** The `event` field, `"message"` when there was none. */
  event: string;
  /** The last event ID at the time of the message, `""` when none was set. */
  id: string;
}

/**
 * An incremental Server-Sent Events parser per the WHATWG spec: LF, CR and CRLF line
 * endings, one leading BOM, comments, multi-line `data`, `event`, `id` and `retry`.
 */
export class SSEParser {
  /** The last valid `retry` value, in ms. */
  retry: number | null;
  readonly lastEventId: string;
  /** Feed decoded text of any size. Returns the messages it completed. */
  feed(text: string): SSEMessage[];
  /** End of input: drops an unfinished message, as the spec requires. */
  end(): never[];
}
