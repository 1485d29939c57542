"""The ``sse`` format: ``id: N``, ``event: <type>``, ``data: <json event>``, blank line.

>>> from streamrelay.events import Delta
>>> SSEEncoder(now=0.0).encode([Delta(0, "Hi")], None)
b'id: 1\\nevent: delta\\ndata: {"type":"delta","index":0,"text":"Hi"}\\n\\n'
"""

from __future__ import annotations

from collections.abc import Sequence

from mypy_extensions import mypyc_attr

from .. import _json
from ..events import Delta, Event
from .base import Encoder, _escape_separators

__all__ = ["SSEEncoder"]

_DELTA = b'{"type":"delta","index":%d,"text":%s}'
"""A delta's data, its text as a JSON string: the usual token's, written without a dict."""


@mypyc_attr(allow_interpreted_subclasses=True)
class SSEEncoder(Encoder):
    """``id: N`` / ``event: <type>`` / ``data: <json>``; comment heartbeats.

    Ids count events from 1 so a reconnecting ``EventSource`` can say where it
    stopped. JSON never contains a raw line break, so one ``data:`` line suffices.

    The preamble and heartbeats are comment *lines*, not comment blocks: no blank
    line follows them, so they join the next event's block, where every parser
    ignores them. A comment block of its own is just as valid SSE, but
    ``@microsoft/fetch-event-source`` dispatches it as an empty message, and an
    ``onmessage`` that parses JSON then throws and the library re-POSTs (a new paid
    generation). The bytes still cross nginx and idle proxies.
    """

    name = "sse"
    media_type = "text/event-stream"
    accept = ("text/event-stream",)
    preamble_bytes = b": stream open\n"
    heartbeat_bytes = b": ping\n"

    def __init__(self, first_id: int = 1, *, now: float) -> None:
        """Start at event id ``first_id`` (a resumed stream continues its numbering)."""
        super().__init__(now=now)
        self.next_id = first_id

    def number_from(self, seq: int) -> None:
        """The next event's ``id:`` is ``seq`` (a resumed stream continues its numbering)."""
        self.next_id = seq

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """One SSE event per normalized event, numbered; ``raw`` is ignored."""
        out = []
        for event in events:
            if type(event) is Delta:
                data = _DELTA % (event.index, _json.dumps(event.text))
            else:
                data = _json.dumps(event.to_dict())
            out.append(
                b"id: %d\nevent: %s\ndata: %s\n\n" % (self.next_id, event.type.encode(), data)
            )
            self.next_id += 1
        body = b"".join(out)
        return body if body.isascii() else _escape_separators(body)

    def encode_token(self, index: int, text: str, quoted: bytes) -> bytes:
        """One ``delta`` event, the text written as the upstream quoted it (see the base class)."""
        body = b"id: %d\nevent: delta\ndata: %s\n\n" % (self.next_id, _DELTA % (index, quoted))
        self.next_id += 1
        return body if body.isascii() else _escape_separators(body)
