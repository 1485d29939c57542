"""Upstream input to client bytes, sans-I/O: SSE decoding, OpenAI decoding and a format encoder.

The pipeline feeds it whatever the source produces (SSE bytes, parsed chunks or
plain text) and sends what it returns. It knows nothing of sockets or ASGI.

>>> from streamrelay.formats import encoder_for
>>> t = Transcoder(encoder_for("text", now=0.0))
>>> t.feed_bytes(b'data: {"id":"1","choices":[{"index":0,"delta":{"content":"Hi"}}]}\\n\\n')
b'Hi'
>>> t.feed_bytes(b"data: [DONE]\\n\\n"), t.terminated, t.error
(b'', True, None)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _json
from .errors import ProtocolError
from .events import Delta, Done, Error, Event, Finish, Reasoning, Refusal, Start, ToolCall, Usage
from .formats import Encoder
from .openai import ChunkDecoder
from .sse import DEFAULT_MAX_EVENT_BYTES, SSEDecoder
from .stores.base import Record
from .token_template import TokenTemplate

__all__ = ["Transcoder"]

_TOKENS = frozenset({Delta, Reasoning, Refusal, ToolCall})
"""The events that carry tokens: the first one is the time to first token."""


class Transcoder:
    """One stream's decode-and-encode state.

    :attr:`terminated` turns true once a terminal event (``done`` or ``error``)
    has been encoded; :attr:`error` holds the terminal error, if any. The
    caller stops reading upstream at that point.

    ``templates=False`` reads every chunk by the full path instead of reading the
    stream's usual token chunks by their learned shape
    (:mod:`streamrelay.token_template`); the output is the same either way.
    """

    __slots__ = (
        "_chunks",
        "_max_event_bytes",
        "_sse",
        "_template",
        "_text_started",
        "encoder",
        "error",
        "events_out",
        "records",
        "terminated",
        "tokens",
    )

    def __init__(
        self,
        encoder: Encoder,
        *,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        templates: bool = True,
    ) -> None:
        self.encoder = encoder
        self._sse = SSEDecoder(max_event_bytes=max_event_bytes)
        self._max_event_bytes = max_event_bytes
        self._chunks = ChunkDecoder()
        self._template: TokenTemplate | None = TokenTemplate() if templates else None
        self._text_started = False
        self.terminated = False
        self.error: Error | None = None
        self.events_out = 0
        self.tokens = False
        """Whether a token (content, reasoning, a refusal, a tool call) has come yet."""
        self.records: list[Record] | None = None
        """When a list (see :meth:`record`), what each chunk became is appended to it,
        numbered, for a stream store; the caller takes them after each feed."""

    def record(self) -> None:
        """Keep a :class:`~streamrelay.stores.base.Record` of every chunk from now on, in
        :attr:`records`, and number the events of the numbering formats from 1."""
        self.records = []
        self.encoder.number_from(self.events_out + 1)

    def feed_record(self, record: Record, after: float = 0) -> bytes:
        """A stored record (a resumed stream): its events after position ``after``,
        encoded as if they came from the upstream now."""
        if self.terminated:
            return b""
        events = record.events
        if record.seq <= after:  # a record the reader saw part of
            events = events[int(after) - record.seq + 1 :]
        return self._encode(events, record.raw, record.name)

    def feeder(self, kind: str, after: float = 0) -> Callable[[Any], bytes]:
        """The feed method for the items of a source of ``kind``
        (:data:`~streamrelay.sources.SourceKind`): SSE bytes, text pieces, stored
        records (replayed after position ``after``), or ``(chunk, raw)`` pairs."""
        if kind == "sse":
            return self.feed_bytes
        if kind == "text":
            return self.feed_text
        if kind == "records":

            def feed_record(item: Any) -> bytes:
                return self.feed_record(item, after)

            return feed_record

        def feed_chunk(item: Any) -> bytes:
            return self.feed_object(*item)

        return feed_chunk

    def feed_bytes(self, data: bytes) -> bytes:
        """Upstream OpenAI SSE bytes, split anywhere."""
        if self.terminated:
            return b""
        if data.startswith(b"data: {") and data.endswith(b"\n\n") and self._sse.idle:
            whole = self._one_event(data)
            if whole is not None:
                return whole
        try:
            messages = self._sse.feed(data)
        except ProtocolError as exc:
            return self.fail(Error(str(exc), exc.code))
        if not messages:
            return b""
        out: list[bytes] = []
        for message in messages:
            try:
                events = self._chunks.feed(message.data)
            except ProtocolError as exc:
                out.append(self.fail(Error(str(exc), exc.code)))
                break
            name = message.event
            out.append(self._encode(events, message.data, None if name == "message" else name))
            if self.terminated:
                break
        else:
            error = self._sse.error  # bad bytes after these events, in the same chunk
            if error is not None:
                out.append(self.fail(Error(str(error), error.code)))
        return out[0] if len(out) == 1 else b"".join(out)

    def _one_event(self, data: bytes) -> bytes | None:
        """The usual read, one whole ``data: {...}`` event, without building SSE
        objects; ``None`` (with nothing changed) when it needs the general path,
        which then reports whatever is wrong with it."""
        payload = data[6:-2]
        if b"\n" in payload or b"\r" in payload or len(data) > self._max_event_bytes:
            return None
        template = self._template
        if template is not None:
            token = template.read(payload)
            if token is not None:  # the stream's usual token chunk: no parse
                # (valid UTF-8: the learned prefix and suffix were, and so is the token)
                if self.records is None and not self.encoder.wants_raw:
                    # Nothing keeps or passes on the chunk: the format writes the token
                    # from the upstream's own quoted bytes (what _encode would do).
                    self.events_out += 1
                    self.tokens = True
                    return self.encoder.encode_token(template.index, token, template.quoted)
                return self._encode([Delta(template.index, token)], payload.decode())
        try:
            text = payload.decode("utf-8")
            obj = _json.loads(text)
        except (ValueError, RecursionError):
            return None
        if type(obj) is not dict:
            return None
        delta = self._chunks.token(obj)
        if delta is None:
            return self._encode(self._chunks.feed_object(obj), text)
        if template is not None:
            template.learn(payload, obj, delta.index, delta.text)
        return self._encode([delta], text)

    def feed_object(self, chunk: Mapping[str, Any], raw: str | None = None) -> bytes:
        """One parsed chunk (e.g. from the openai SDK), with its JSON text if known."""
        if self.terminated:
            return b""
        name = chunk.get("type")  # a Responses API event's name
        return self._encode(
            self._chunks.feed_object(chunk), raw, name if type(name) is str else None
        )

    def feed_text(self, text: str) -> bytes:
        """A plain text piece: content of choice 0."""
        if self.terminated:
            return b""
        if not self._text_started:
            # Even an empty piece marks a text source, whose end is always clean.
            self._text_started = True
            return self._encode([Start("", ""), Delta(0, text)] if text else [Start("", "")], None)
        if not text:
            return b""
        return self._encode([Delta(0, text)], None)

    def end(self) -> bytes:
        """The source ended: ``done`` if it completed, else a truncation error."""
        if self.terminated:
            return b""
        if self._text_started:
            return self._encode([Finish(0, "stop"), Done()], None)
        try:
            self._sse.close()
        except ProtocolError as exc:
            return self.fail(Error(str(exc), exc.code))
        return self._encode(self._chunks.close(), None)

    def fail(self, error: Error) -> bytes:
        """End the stream with ``error`` (timeouts, broken connections, bad bytes)."""
        if self.terminated:
            return b""
        return self._encode([error], None)

    @property
    def model(self) -> str | None:
        """The model the upstream named, if it did."""
        return self._chunks.model

    @property
    def usage(self) -> Usage | None:
        """The token usage the upstream reported, if it did."""
        return self._chunks.usage

    def heartbeat(self) -> bytes:
        """The format's keep-alive bytes (empty for ``text``)."""
        return b"" if self.terminated else self.encoder.heartbeat()

    def _encode(self, events: Sequence[Event], raw: str | None, name: str | None = None) -> bytes:
        """Encode one upstream chunk's events; ``name`` is the upstream event's own
        name (the Responses API's typed events), for formats that pass them on."""
        records = self.records
        if records is not None and (events or raw is not None):
            records.append(Record(self.events_out + 1, tuple(events), raw, name))
        if events:
            last = events[-1]
            if type(last) is Error or type(last) is Done:
                self.terminated = True
                self._chunks.terminated = True
                if type(last) is Error:
                    self.error = last
            self.events_out += len(events)
            if not self.tokens:
                self.tokens = any(type(event) in _TOKENS for event in events)
        elif raw is None or not self.encoder.wants_raw:
            # Chunks that carry no event (Azure filter results, role-only deltas)
            # pass through unchanged in the openai format only.
            return b""
        if name is not None and raw is not None:
            return self.encoder.encode_named(name, events, raw)
        return self.encoder.encode(events, raw)
