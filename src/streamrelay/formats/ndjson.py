"""The ``ndjson`` format: one normalized event per line.

>>> from streamrelay.events import Delta, Done
>>> NDJSONEncoder(now=0.0).encode([Delta(0, "Hi"), Done()], None)
b'{"type":"delta","index":0,"text":"Hi"}\\n{"type":"done"}\\n'
"""

from __future__ import annotations

from collections.abc import Sequence

from mypy_extensions import mypyc_attr

from .. import _json
from ..events import Delta, Event
from .base import Encoder, _escape_separators

__all__ = ["NDJSONEncoder"]

_DELTA = b'{"type":"delta","index":%d,"text":%s}\n'
"""A delta's line, its text as a JSON string: the usual token's, written without a dict."""


@mypyc_attr(allow_interpreted_subclasses=True)
class NDJSONEncoder(Encoder):
    """One normalized event per line; heartbeat ``{"type":"ping"}``.

    A resumable stream's events carry their position as ``"seq"`` (see
    :meth:`number_from`):

    >>> from streamrelay.events import Delta
    >>> encoder = NDJSONEncoder(now=0.0)
    >>> encoder.number_from(7)
    >>> encoder.encode([Delta(0, "Hi")], None)
    b'{"type":"delta","index":0,"text":"Hi","seq":7}\\n'
    """

    name = "ndjson"
    media_type = "application/x-ndjson"
    accept = ("application/x-ndjson", "application/jsonl")
    heartbeat_bytes = b'{"type":"ping"}\n'

    def __init__(self, *, now: float) -> None:
        super().__init__(now=now)
        self.next_seq: int | None = None  # None: events are not numbered

    def number_from(self, seq: int) -> None:
        """Give each event from now on a ``"seq"``, starting at ``seq``."""
        self.next_seq = seq

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """One JSON line per event; ``raw`` is ignored."""
        if self.next_seq is not None:
            return self._numbered(events)
        out = []
        for event in events:
            if type(event) is Delta:
                out.append(_DELTA % (event.index, _json.dumps(event.text)))
            else:
                out.append(_json.dumps(event.to_dict()) + b"\n")
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)

    def encode_token(self, index: int, text: str, quoted: bytes) -> bytes:
        """One delta line, the text written as the upstream quoted it (see the base class)."""
        if self.next_seq is not None:
            return self._numbered([Delta(index, text)])
        line = _DELTA % (index, quoted)
        return line if line.isascii() else _escape_separators(line)

    def _numbered(self, events: Sequence[Event]) -> bytes:
        out = []
        seq = self.next_seq
        assert seq is not None
        for event in events:
            if type(event) is Delta:
                out.append(
                    b'{"type":"delta","index":%d,"text":%s,"seq":%d}\n'
                    % (event.index, _json.dumps(event.text), seq)
                )
            else:
                out.append(_json.dumps({**event.to_dict(), "seq": seq}) + b"\n")
            seq += 1
        self.next_seq = seq
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)
