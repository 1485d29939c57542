"""Server-Sent Events codec, sans-I/O.

:class:`SSEDecoder` turns arbitrarily split bytes into :class:`ServerSentEvent`
objects following the WHATWG parsing rules (LF, CR and CRLF line endings, a
leading BOM, comments, multi-line ``data``). :func:`encode_event` does the
reverse and guarantees that no value can break out of its field.

>>> decoder = SSEDecoder()
>>> decoder.feed(b"data: hel")
[]
>>> decoder.feed(b"lo\\r\\n\\r\\n")
[ServerSentEvent(data='hello', event='message', id=None, retry=None)]
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import EventTooLarge, ProtocolError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "ServerSentEvent", "encode_event"]

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event. ``event`` defaults to ``"message"`` as in the spec."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental SSE parser: feed bytes, get complete events.

    ``max_event_bytes`` bounds the memory one unfinished line or event may use;
    exceeding it raises :class:`~streamrelay.errors.EventTooLarge`. Bytes that are
    not UTF-8 raise :class:`~streamrelay.errors.ProtocolError` rather than being
    replaced, so a broken upstream is reported instead of silently corrupted.

    How the input is split never changes the outcome: the same events come out,
    and an error is raised at the same point of the stream. When a chunk holds
    complete events followed by a fault, :meth:`feed` returns those events and
    the error is raised by the next :meth:`feed` or :meth:`close` (it is also
    visible at once as :attr:`error`). A failed decoder keeps raising it.
    """

    __slots__ = (
        "_bom_checked",
        "_data",
        "_data_size",
        "_error",
        "_event",
        "_last_id",
        "_max",
        "_partial",
        "_partial_size",
        "_pending_cr",
        "_retry",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._partial: list[bytes] = []  # pieces of the current unterminated line
        self._partial_size = 0
        self._pending_cr = False  # last chunk ended in CR: a following LF belongs to it
        self._bom_checked = False
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None
        self._error: ProtocolError | None = None

    @property
    def error(self) -> ProtocolError | None:
        """The error that stopped the decoder, if any; every later call raises it."""
        return self._error

    @property
    def idle(self) -> bool:
        """Between events with nothing pending: the next byte starts a new event."""
        return (
            self._bom_checked
            and not self._partial
            and not self._pending_cr
            and not self._data
            and not self._event
            and self._retry is None
            and self._error is None
        )

    @property
    def last_event_id(self) -> str | None:
        """The last ``id`` field seen, as the spec's "last event ID buffer"."""
        return self._last_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume ``chunk`` and return the events it completed, in order."""
        if self._error is not None:
            raise self._error.with_traceback(None)
        if not chunk:
            return []
        if not self._bom_checked:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        elif (
            chunk.endswith(b"\n\n") and self.idle and len(chunk) <= self._max and b"\r" not in chunk
        ):
            # What upstreams send almost always: whole ``data: ...`` events.
            whole = self._whole_data_events(chunk)
            if whole is not None:
                return whole
        if b"\r" in chunk:
            self._pending_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        nl = chunk.find(b"\n")
        if nl < 0:
            self._partial.append(chunk)
            self._partial_size += len(chunk)
            if self._partial_size > self._max:
                raise self._fail(EventTooLarge(f"an upstream line exceeded {self._max} bytes"))
            return []

        lines = chunk.split(b"\n")
        if self._partial:
            if self._partial_size + len(lines[0]) > self._max:
                raise self._fail(EventTooLarge(f"an upstream line exceeded {self._max} bytes"))
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
        tail = lines.pop()
        error: ProtocolError | None = None
        if len(chunk) > self._max:
            # Only a chunk longer than the limit can hold an over-long line whole.
            # Enforce the limit as if the line had arrived in pieces.
            for i, line in enumerate(lines):
                if len(line) > self._max:
                    del lines[i:]
                    error = EventTooLarge(f"an upstream line exceeded {self._max} bytes")
                    break
            else:
                if len(tail) > self._max:
                    error = EventTooLarge(f"an upstream line exceeded {self._max} bytes")
        events: list[ServerSentEvent] = []
        try:
            for line in lines:
                if not line:
                    if self._data:
                        events.append(self._dispatch())
                    else:
                        self._event = ""
                        self._retry = None
                elif line[0] != 58:  # ':' starts a comment
                    self._field(line)
        except ProtocolError as exc:
            error = exc
        if error is not None:
            self._fail(error)
            if events:
                return events  # raised by the next call; see the class docstring
            raise error
        if tail:
            self._partial.append(tail)
            self._partial_size = len(tail)
        return events

    def _whole_data_events(self, chunk: bytes) -> list[ServerSentEvent] | None:
        """Events of a chunk made only of ``data: <one line>`` events, else ``None``
        (then nothing has changed and the general path takes the chunk)."""
        parts = chunk.split(b"\n\n")
        parts.pop()  # the empty remainder after the last event
        events = []
        for part in parts:
            if not part.startswith(b"data: ") or b"\n" in part:
                return None
            try:
                data = part[6:].decode("utf-8")
            except UnicodeDecodeError:
                return None
            events.append(ServerSentEvent(data, "message", self._last_id, None))
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of input. Per the spec an unterminated event is discarded.

        Raises the decoder's :attr:`error`, if any, so it cannot be lost.
        """
        if self._error is not None:
            raise self._error.with_traceback(None)
        self._partial.clear()
        self._partial_size = 0
        self._pending_cr = False
        self._data.clear()
        self._data_size = 0
        self._event = ""
        self._retry = None
        return []

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._error = error
        self._partial.clear()
        self._partial_size = 0
        self._data.clear()
        self._data_size = 0
        return error

    def _strip_bom(self, chunk: bytes) -> bytes:
        head = b"".join(self._partial) + chunk
        if len(head) < 3 and _BOM.startswith(head):
            self._partial = [head]  # wait for the rest of a possible BOM
            self._partial_size = len(head)
            return b""
        self._bom_checked = True
        self._partial.clear()
        self._partial_size = 0
        return head[3:] if head.startswith(_BOM) else head

    def _field(self, line: bytes) -> None:
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 2 :] if line[colon + 1 : colon + 2] == b" " else line[colon + 1 :]
        if name == b"data":
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                raise EventTooLarge(f"an upstream event exceeded {self._max} bytes")
            self._data.append(_utf8(value))
        elif name == b"event":
            self._event = _utf8(value)
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = _utf8(value)
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        # Unknown field names are ignored, as the spec requires.

    def _dispatch(self) -> ServerSentEvent:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = ServerSentEvent(data, self._event or "message", self._last_id, self._retry)
        self._data.clear()
        self._data_size = 0
        self._event = ""
        self._retry = None
        return event


def _utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"upstream sent invalid UTF-8 at byte {exc.start}") from None


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Serialize one event. Data containing CR, LF or CRLF becomes several ``data:``
    lines, so no value can end a field or forge another one.

    >>> encode_event("a\\nb", event="delta", id="7")
    b'id: 7\\nevent: delta\\ndata: a\\ndata: b\\n\\n'
    """
    parts: list[str] = []
    if id is not None:
        parts.append(f"id: {_single_line(id, 'id')}\n")
    if event is not None:
        parts.append(f"event: {_single_line(event, 'event')}\n")
    if retry is not None:
        parts.append(f"retry: {int(retry)}\n")
    if "\n" in data or "\r" in data:
        for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            parts.append(f"data: {line}\n")
    else:
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8", "replace")


def _single_line(value: str, field: str) -> str:
    if "\n" in value or "\r" in value or (field == "id" and "\x00" in value):
        raise ValueError(f"an SSE {field} field cannot contain a line break")
    return value
