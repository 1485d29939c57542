// A stub of a relay with a store (docs/resume.md), for testing the client's resume logic
// over real sockets: node:http on 127.0.0.1 with
//
//   POST <mount>/chat/completions?format=ndjson|sse   a stream with an X-Stream-Id
//   GET  <mount>/streams/{id}?format=...               replay after Last-Event-ID or
//                                                      ?last_event_id=, then follow live
//   DELETE <mount>/streams/{id}                        stop: the stream ends with an
//                                                      `error` event, code `stopped`
//
// with the relay's answers: 204 when everything was delivered, 400 invalid_position,
// 404 stream_not_found. As with a store, a stream's generation goes on whatever its
// connections do. The test scripts the faults in the POST body's "stub" field:
//
//   tokens: N          the answer's delta events (default 10)
//   delay: ms          between events (default 5)
//   cut: [n, ...]      the k-th connection of the stream (the POST is the first, then each
//                      resume) is destroyed (a TCP reset, no terminating chunk) after it
//                      wrote event n and half of the next event's bytes; `null` leaves a
//                      connection alone
//   clean: true        a cut ends the response cleanly (a proper end of the chunked body)
//                      instead of destroying it
//   forget: true       the stream is forgotten at its first cut (a resume gets 404)
//   unavailable: K     the first K resumes get 503 store_unavailable
//   id: false          no X-Stream-Id: a relay without a store
//
// Every request is recorded in `requests` as {method, path, query, headers}.

import http from "node:http";

const CONTENT_TYPES = { ndjson: "application/x-ndjson", sse: "text/event-stream" };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The events of a stub answer of `tokens` deltas (the text is `tok0 tok1 ...`). */
export function answerEvents(tokens) {
  const events = [{ type: "start", id: "chatcmpl-stub", model: "stub-1" }];
  for (let i = 0; i < tokens; i++) events.push({ type: "delta", index: 0, text: `tok${i} ` });
  events.push({ type: "finish", index: 0, reason: "stop" });
  events.push({ type: "done" });
  return events;
}

/** The bytes of event number `seq` in `format`, as the relay writes them. */
export function encodeEvent(format, seq, event) {
  if (format === "ndjson") return JSON.stringify({ ...event, seq }) + "\n";
  return `id: ${seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

export async function startResumeRelay({ mount = "/v1" } = {}) {
  const requests = [];
  const streams = new Map(); // id → stream
  let counter = 0;

  function jsonError(res, status, message, code) {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: { message, type: "invalid_request_error", code } }));
  }

  /** A stream: its events so far, whether it ended, and waiters for more. */
  function makeStream(id, script) {
    const stream = { id, script, events: [], ended: false, stopped: false, connections: 0, resumes: 0, wake: [] };
    stream.push = (event) => {
      stream.events.push(event);
      if (event.type === "done" || event.type === "error") stream.ended = true;
      stream.wake.splice(0).forEach((resolve) => resolve());
    };
    stream.changed = () => new Promise((resolve) => stream.wake.push(resolve));
    return stream;
  }

  async function generate(stream) {
    const { tokens = 10, delay = 5 } = stream.script;
    for (const event of answerEvents(tokens)) {
      if (stream.stopped) return;
      stream.push(event);
      if (event.type !== "done") await sleep(delay);
    }
  }

  /** Writes the stream's events after `after` to `res`, live, as one connection of it. */
  async function follow(stream, res, format, after) {
    const connection = stream.connections++;
    const cutAt = (stream.script.cut ?? [])[connection] ?? null;
    res.writeHead(200, {
      "content-type": CONTENT_TYPES[format],
      "cache-control": "no-cache, no-transform",
      ...(stream.script.id === false ? {} : { "x-stream-id": stream.id }),
    });
    if (format === "sse") res.write(": stream open\n\n");
    let next = after; // the number of events written so far
    for (;;) {
      while (next < stream.events.length) {
        if (res.destroyed) return;
        const seq = next + 1;
        const bytes = encodeEvent(format, seq, stream.events[next]);
        if (cutAt !== null && next === cutAt) {
          // Half an event, then the cut: the client must not take the half for an event.
          res.write(bytes.slice(0, Math.floor(bytes.length / 2)));
          await sleep(20); // let the bytes so far reach the client before the reset
          if (stream.script.forget) streams.delete(stream.id);
          if (stream.script.clean) res.end();
          else res.destroy();
          return;
        }
        res.write(bytes);
        next = seq;
        if (format === "ndjson" && next % 4 === 0) res.write('{"type":"ping"}\n');
      }
      if (stream.ended) return void res.end();
      await stream.changed();
    }
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    requests.push({ method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), headers: req.headers });
    const format = url.searchParams.get("format") || "sse";

    if (req.method === "POST" && url.pathname === `${mount}/chat/completions`) {
      if (!CONTENT_TYPES[format]) return jsonError(res, 406, `format ${format} is not stubbed`, "unsupported_format");
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
      const stream = makeStream(`stub-${++counter}-AAAAAAAAAAAA`, body.stub ?? {});
      streams.set(stream.id, stream);
      generate(stream);
      return follow(stream, res, format, 0);
    }

    const match = url.pathname.startsWith(`${mount}/streams/`) ? url.pathname.slice(`${mount}/streams/`.length) : null;
    if (match === null || match.includes("/")) return jsonError(res, 404, "not found", "not_found");
    const stream = streams.get(decodeURIComponent(match));
    if (!stream) return jsonError(res, 404, "no such stream: it is unknown, has expired, or is not yours", "stream_not_found");

    if (req.method === "DELETE") {
      if (!stream.ended) {
        stream.stopped = true;
        stream.push({ type: "error", message: "the stream was stopped", code: "stopped" });
      }
      res.writeHead(204).end();
      return;
    }
    if (req.method !== "GET") return jsonError(res, 405, "use GET or DELETE", "method_not_allowed");
    if (stream.resumes++ < (stream.script.unavailable ?? 0)) {
      return jsonError(res, 503, "the stream store is unavailable", "store_unavailable");
    }
    if (!CONTENT_TYPES[format]) return jsonError(res, 406, `format ${format} is not stubbed`, "unsupported_format");
    const raw = req.headers["last-event-id"] ?? url.searchParams.get("last_event_id") ?? "0";
    if (!/^[0-9]+$/.test(raw) || Number(raw) > stream.events.length) {
      return jsonError(res, 400, `the position ${raw} is beyond the stream's last event`, "invalid_position");
    }
    const after = Number(raw);
    if (stream.ended && after >= stream.events.length) return void res.writeHead(204).end();
    return follow(stream, res, format, after);
  });

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    streams,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
