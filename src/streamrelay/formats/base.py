"""The :class:`Encoder` base class every wire format derives from, and helpers they share.

A format is one class that says everything about itself in class attributes (its
name, content type, the ``Accept`` types that select it, the response headers it
needs, whether it aborts on error, its preamble and heartbeat) and turns
normalized events into bytes in :meth:`Encoder.encode`. It does no I/O and reads
no clock: the time a stream starts is handed to the constructor as ``now``.

>>> class Upper(Encoder):
...     name = "upper"
...     media_type = "text/plain; charset=utf-8"
...     def encode(self, events, raw):
...         return b"".join(e.to_dict()["type"].upper().encode() for e in events)
>>> from streamrelay.events import Done
>>> Upper(now=0.0).encode([Done()], None), Upper(now=0.0).heartbeat()
(b'DONE', b'')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from mypy_extensions import mypyc_attr

from ..events import Delta, Event

__all__ = ["Encoder", "Headers"]

Headers = tuple[tuple[bytes, bytes], ...]
"""Response headers as ASGI wants them: ``(lowercase name, value)`` byte pairs."""


# The compiled build (docs/performance.md) compiles this module and the formats with
# mypyc; this lets a user's own format subclass them there as it does here.
@mypyc_attr(allow_interpreted_subclasses=True)
class Encoder:
    """Base class of the format encoders: normalized events in, bytes out.

    ``encode(events, raw)`` gets the events decoded from one upstream chunk and,
    when known, that chunk's raw JSON text (only formats with :attr:`wants_raw`
    use it). One instance serves one stream, so an encoder may keep state (the
    ``sse`` format counts event ids).

    Subclasses set the class attributes below and override :meth:`encode`; the
    registry (:func:`streamrelay.formats.register`) reads the attributes to
    negotiate and to build the response.
    """

    #: The format's name: ``?format=<name>`` selects it. Lowercase, ``[a-z0-9._-]``.
    name: ClassVar[str]
    #: The response's ``content-type``.
    media_type: ClassVar[str]
    #: The ``Accept`` media types (lowercase, no parameters) that select this format.
    #: Each type selects at most one format; empty means ``?format=`` only.
    accept: ClassVar[tuple[str, ...]] = ()
    #: Extra response headers the format needs, besides ``content-type``.
    headers: ClassVar[Headers] = ()
    #: When true, a terminal error cannot be expressed in-band: the relay aborts
    #: the HTTP response instead so the client cannot mistake it for a clean end.
    aborts_on_error: ClassVar[bool] = False
    #: When true, the pipeline passes each upstream chunk's raw JSON text.
    wants_raw: ClassVar[bool] = False
    #: What :meth:`preamble` returns unless a subclass overrides it.
    preamble_bytes: ClassVar[bytes] = b""
    #: What :meth:`heartbeat` returns unless a subclass overrides it; empty means
    #: the format has no in-band heartbeat, and the relay sends none.
    heartbeat_bytes: ClassVar[bytes] = b""

    def __init__(self, *, now: float) -> None:
        """Start one stream's encoder; ``now`` is the stream's start in seconds since the epoch.

        The base class ignores ``now``; formats that stamp their output (the
        ``openai`` format's synthesized ``created``) take it from here, never
        from the wall clock.
        """

    def preamble(self) -> bytes:
        """Bytes sent with the headers, so the client sees the stream open at once."""
        return self.preamble_bytes

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        """The bytes for the events of one upstream chunk (``b""`` when there are none)."""
        raise NotImplementedError

    def encode_token(self, index: int, text: str, quoted: bytes) -> bytes:
        """The bytes of one content token: exactly what ``encode([Delta(index, text)], None)``
        returns, which is what this default does.

        ``quoted`` is ``text`` as a JSON string, quotes included and nothing escaped in
        it (no ``"``, ``\\`` or control character), straight from the upstream's bytes:
        a format that writes the text as JSON can write ``quoted`` without encoding the
        text again. The transcoder calls this for a stream's usual token chunk
        (:mod:`streamrelay.token_template`) when no store records the stream and the
        format does not want the raw chunk; everything else goes through :meth:`encode`.
        An override must give the same bytes and leave the same state as :meth:`encode`
        would (``unit/test_formats.py`` checks the built-in ones).

        >>> class Upper(Encoder):
        ...     def encode(self, events, raw):
        ...         return b"".join(e.text.upper().encode() for e in events)
        >>> Upper(now=0.0).encode_token(0, "hi", b'"hi"')
        b'HI'
        """
        return self.encode([Delta(index, text)], None)

    def number_from(self, seq: int) -> None:
        """Number the events from ``seq`` on: a resumable stream's events carry their
        position (``sse``: the ``id:`` line, ``ndjson``: a ``seq`` field). Formats that
        number nothing ignore it."""

    def encode_named(self, name: str, events: Sequence[Event], raw: str | None) -> bytes:
        """Like :meth:`encode`, for an upstream event that had a name: an ``event:``
        line (the Responses API's typed events), or a ``type`` in a parsed chunk.

        Only formats that pass the upstream's events on (``wants_raw``) care; the
        default ignores the name.
        """
        return self.encode(events, raw)

    def heartbeat(self) -> bytes:
        """Bytes that keep an idle connection alive without changing the content.

        Empty when the format has no such bytes: the pipeline then sends no heartbeats.
        """
        return self.heartbeat_bytes


def _escape_separators(data: bytes) -> bytes:
    """Escape U+2028, U+2029 and U+0085 inside JSON strings.

    JSON allows them raw, but ``str.splitlines()`` (and so httpx's ``iter_lines()``,
    older httpx-sse and many hand-written clients) breaks lines at them, which
    would let a token cut an NDJSON line or an SSE ``data:`` line in two. In
    valid UTF-8 these byte sequences can only be those characters, and in our
    output they only occur inside JSON strings, where the escape means the same.

    >>> _escape_separators('"a\\u2028b"'.encode())
    b'"a\\\\u2028b"'
    """
    if b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data or b"\xc2\x85" in data:
        return (
            data.replace(b"\xe2\x80\xa8", b"\\u2028")
            .replace(b"\xe2\x80\xa9", b"\\u2029")
            .replace(b"\xc2\x85", b"\\u0085")
        )
    return data
