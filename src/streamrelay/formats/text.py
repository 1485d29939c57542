"""The ``text`` format: choice 0's content text and nothing else.

>>> from streamrelay.events import Delta, Done
>>> TextEncoder(now=0.0).encode([Delta(0, "Hi"), Delta(1, "other"), Done()], None)
b'Hi'
"""

from __future__ import annotations

from collections.abc import Sequence

from mypy_extensions import mypyc_attr

from ..events import Delta, Event
from .base import Encoder

__all__ = ["TextEncoder"]


@mypyc_attr(allow_interpreted_subclasses=True)
class TextEncoder(Encoder):
    """Only the content text of choice 0. Heartbeats are impossible in-band.

    Nothing in the body can say "this ended in an error", so the relay aborts the
    response on a terminal error instead.
    """

    name = "text"
    media_type = "text/plain; charset=utf-8"
    accept = ("text/plain",)
    aborts_on_error = True

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """Choice 0's content text, UTF-8; a lone surrogate becomes ``?``."""
        if len(events) == 1:
            event = events[0]
            if type(event) is Delta and event.index == 0:
                return event.text.encode("utf-8", "replace")
            return b""
        return "".join(e.text for e in events if type(e) is Delta and e.index == 0).encode(
            "utf-8", "replace"
        )

    def encode_token(self, index: int, text: str, quoted: bytes) -> bytes:
        """Choice 0's token text (see the base class)."""
        return text.encode("utf-8", "replace") if index == 0 else b""
