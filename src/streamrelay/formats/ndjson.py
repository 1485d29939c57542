"""The ``ndjson`` format: one normalized event per line.

>>> from streamrelay.events import Delta, Done
>>> NDJSONEncoder(now=0.0).encode([Delta(0, "Hi"), Done()], None)
b'{"type":"delta","index":0,"text":"Hi"}\\n{"type":"done"}\\n'
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import _json
from ..events import Delta, Event
from .base import Encoder, _escape_separators

__all__ = ["NDJSONEncoder"]


class NDJSONEncoder(Encoder):
    """One normalized event per line; heartbeat ``{"type":"ping"}``."""

    name = "ndjson"
    media_type = "application/x-ndjson"
    accept = ("application/x-ndjson", "application/jsonl")
    heartbeat_bytes = b'{"type":"ping"}\n'

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """One JSON line per event; ``raw`` is ignored."""
        out = []
        for event in events:
            if type(event) is Delta:
                out.append(
                    b'{"type":"delta","index":%d,"text":%s}\n'
                    % (event.index, _json.dumps(event.text))
                )
            else:
                out.append(_json.dumps(event.to_dict()) + b"\n")
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)
