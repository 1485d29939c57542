"""Choosing the wire format for a request: ``?format=``, then ``Accept``, then the default.

>>> negotiate(None, "application/x-ndjson;q=0.9, text/event-stream", "text")
'sse'
>>> negotiate("ndjson", "text/event-stream", "sse")
'ndjson'

On the mount's OpenAI routes a request that does not ask for one of our formats
is an OpenAI client, whatever its ``Accept`` (:func:`asked_format`):

>>> asked_format(None, "text/event-stream") is None
True
>>> asked_format(None, "application/x-ndjson")
'ndjson'
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from .errors import RequestRejected, UnsupportedFormat
from .formats import ACCEPT_TYPES, FORMATS

__all__ = ["MEDIA_TYPES", "OPENAI_CLIENT_TYPES", "asked_format", "format_param", "negotiate"]

MEDIA_TYPES: dict[str, str] = ACCEPT_TYPES
"""Accept media types and the format each selects.

The registry's own table (:data:`streamrelay.formats.ACCEPT_TYPES`, the same
object), built from each format's ``accept``: a format added with
:func:`streamrelay.formats.register` is negotiable at once.
"""


def negotiate(query_format: str | None, accept: str | None, default: str) -> str:
    """Return the format name for a request.

    ``query_format`` (from ``?format=``) wins and must name a known format, else
    :class:`~streamrelay.errors.UnsupportedFormat` (HTTP 406). Then the ``Accept``
    media type with the highest q-value that maps to a format (ties: first
    listed); a wildcard (``*/*``, or ``text/*`` when the default is a ``text/``
    type) stands for ``default`` with its own q-value, so
    ``text/plain;q=0.5, */*`` gets the default. Unknown types are ignored, and
    with nothing else acceptable the answer is ``default``.
    """
    if query_format is not None:
        name = query_format.strip().lower()
        if name not in FORMATS:
            raise UnsupportedFormat(query_format, tuple(FORMATS))
        return name
    if accept:
        best: str | None = None
        best_q = 0.0
        for part in accept.split(","):
            media, _, params = part.partition(";")
            media = media.strip().lower()
            fmt = MEDIA_TYPES.get(media)
            if fmt is None:
                if not media.endswith("/*") or not _covers_default(media, default):
                    continue
                fmt = default
            q = _quality(params)
            if q > best_q:
                best, best_q = fmt, q
        if best is not None:
            return best
    return default


OPENAI_CLIENT_TYPES = frozenset({"application/json", "text/event-stream"})
"""``Accept`` media types that OpenAI clients send, which therefore ask for nothing
of ours on an OpenAI route: the SDKs send ``application/json``, several of them
(go-openai, for one) ``text/event-stream`` for streams, others ``*/*`` or nothing."""


def asked_format(query_format: str | None, accept: str | None) -> str | None:
    """The format a request on an OpenAI route asked for, or ``None`` for an OpenAI client.

    Asking means ``?format=`` (which must name a known format, else
    :class:`~streamrelay.errors.UnsupportedFormat`), or an ``Accept`` whose most
    preferred type selects a format and is not one of
    :data:`OPENAI_CLIENT_TYPES` or a wildcard: ``application/x-ndjson`` (or
    ``application/jsonl``), ``text/plain``, or a registered format's own type.
    Such a request is streamed in that format; any other gets what OpenAI would
    give it (the OpenAI wire for ``"stream": true``, else the JSON answer).

    >>> asked_format(None, "text/plain;q=0.5, */*") is None
    True
    >>> asked_format("SSE", None)
    'sse'
    """
    if query_format is not None:
        return negotiate(query_format, None, "")
    if not accept:
        return None
    best: str | None = None
    best_q = 0.0
    for part in accept.split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        if media in OPENAI_CLIENT_TYPES or media.endswith("/*"):
            fmt = ""  # an OpenAI client's type, at its own preference
        else:
            found = MEDIA_TYPES.get(media)
            if found is None:
                continue
            fmt = found
        q = _quality(params)
        if q > best_q:
            best, best_q = fmt, q
    return best or None


def _covers_default(wildcard: str, default: str) -> bool:
    if wildcard == "*/*":
        return True
    encoder = FORMATS.get(default)
    return encoder is not None and encoder.media_type.startswith(wildcard[:-1])


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def format_param(query_string: bytes) -> str | None:
    """The ``format`` query parameter, if present. Line breaks are refused (400)."""
    if b"format=" not in query_string:
        return None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == "format":
            if "\r" in value or "\n" in value:
                raise RequestRejected(
                    400, "format must not contain line breaks", code="invalid_format"
                )
            return value
    return None
