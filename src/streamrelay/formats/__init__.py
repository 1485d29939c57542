"""The wire formats, as sans-I/O encoders (normalized events in, bytes out), and their registry.

==========  =============================  ===============================================
name        content type                   selected by ``Accept``
==========  =============================  ===============================================
``text``    ``text/plain; charset=utf-8``  ``text/plain``
``ndjson``  ``application/x-ndjson``       ``application/x-ndjson``, ``application/jsonl``
``sse``     ``text/event-stream``          ``text/event-stream``
``openai``  ``text/event-stream``          ``application/json``
``ai-sdk``  ``text/event-stream``          none (``?format=ai-sdk``, the ``/chat`` route)
``ag-ui``   ``text/event-stream``          none (``?format=ag-ui``, the ``/ag-ui`` route)
==========  =============================  ===============================================

Each format lives in its own module (:mod:`.text`, :mod:`.ndjson`, :mod:`.sse`,
:mod:`.openai`, :mod:`.ai_sdk`, whose docstring describes its body) as one :class:`Encoder`
subclass that describes itself in class attributes. This module is the registry: :data:`FORMATS` (name to class, in
registration order), :data:`ACCEPT_TYPES` (``Accept`` media type to name, derived
from the classes) and :func:`encoder_for`, which makes one stream's encoder. The
clock comes from outside: the caller passes ``now``.

>>> from streamrelay.events import Delta
>>> enc = encoder_for("ndjson", now=0.0)
>>> enc.encode([Delta(0, "Hi\\n")], None)
b'{"type":"delta","index":0,"text":"Hi\\\\n"}\\n'
>>> FORMATS["sse"].accept, ACCEPT_TYPES["application/jsonl"]
(('text/event-stream',), 'ndjson')

Adding a format
---------------

Write one :class:`Encoder` subclass in its own module and register it once, at
import time. The class attributes are the whole description; ``encode`` is the
only method you must write. The relay then serves it for ``?format=<name>`` and
for each of its ``accept`` types, with ``content-type: <media_type>`` and its
``headers``::

    from collections.abc import Sequence

    from streamrelay.events import Delta, Event
    from streamrelay.formats import Encoder, register


    class LinesEncoder(Encoder):
        # Choice 0's text, one token per line.
        name = "lines"                                  # ?format=lines
        media_type = "text/x-lines; charset=utf-8"      # the content-type
        accept = ("text/x-lines",)                      # Accept types that select it
        headers = ((b"x-lines-version", b"1"),)         # extra response headers
        aborts_on_error = True                          # no in-band error: abort instead
        heartbeat_bytes = b""                           # no in-band heartbeat

        def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
            return b"".join(
                e.text.encode("utf-8", "replace") + b"\\n"
                for e in events
                if type(e) is Delta and e.index == 0
            )


    register(LinesEncoder)

The relay makes one instance per stream as ``LinesEncoder(now=<seconds since the
epoch>)``; override ``__init__`` (keyword ``now``, call ``super().__init__(now=now)``)
only when the format keeps state or stamps times. ``encode`` must not do I/O or
read the clock, and its output must never let a token cut a line: see how the
built-in formats escape U+2028, U+2029 and U+0085. :func:`register` refuses a
name or an ``Accept`` type already taken (``text/event-stream`` belongs to
``sse``, so another SSE-based format is selected by ``?format=`` or by its route).
"""

from __future__ import annotations

import re

from ..errors import ConfigurationError, UnsupportedFormat
from .ag_ui import AGUIEncoder
from .ai_sdk import AISDKEncoder
from .base import Encoder, Headers
from .ndjson import NDJSONEncoder
from .openai import OpenAIEncoder
from .sse import SSEEncoder
from .text import TextEncoder

__all__ = [
    "ACCEPT_TYPES",
    "FORMATS",
    "AGUIEncoder",
    "AISDKEncoder",
    "Encoder",
    "Headers",
    "NDJSONEncoder",
    "OpenAIEncoder",
    "SSEEncoder",
    "TextEncoder",
    "encoder_for",
    "register",
]

FORMATS: dict[str, type[Encoder]] = {}
"""Every registered format name and its encoder class, in registration order."""

ACCEPT_TYPES: dict[str, str] = {}
"""``Accept`` media types and the format name each selects, from the classes' ``accept``."""

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_MEDIA_RANGE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_HEADER_NAME = re.compile(rb"[a-z0-9!#$%&'*+.^_`|~-]+")


def register(encoder: type[Encoder]) -> type[Encoder]:
    """Add a format to the registry, making it negotiable; returns the class (a decorator too).

    The class must derive from :class:`Encoder` and set ``name`` (lowercase,
    ``[a-z0-9._-]``, not yet registered) and ``media_type``. Each of its
    ``accept`` types must be a lowercase ``type/subtype`` without parameters or
    wildcards, claimed by no other format. ``headers`` must be ``(name, value)``
    byte pairs with lowercase names, no line breaks and no ``content-type``
    (that comes from ``media_type``). Anything else raises
    :class:`~streamrelay.errors.ConfigurationError` and changes nothing.
    """
    if not isinstance(encoder, type) or not issubclass(encoder, Encoder):
        raise ConfigurationError(f"a format must be an Encoder subclass, not {encoder!r}")
    name = getattr(encoder, "name", None)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{encoder.__qualname__}.name must be a lowercase format name "
            f"([a-z0-9._-], starting with a letter or digit), not {name!r}"
        )
    if name in FORMATS:
        raise ConfigurationError(
            f"format {name!r} is already registered ({FORMATS[name].__qualname__})"
        )
    media_type = getattr(encoder, "media_type", None)
    if (
        not isinstance(media_type, str)
        or not media_type
        or not media_type.isascii()
        or not media_type.isprintable()
    ):
        raise ConfigurationError(
            f"format {name!r}: media_type must be a printable ASCII content type, "
            f"not {media_type!r}"
        )
    accept = encoder.accept
    if not isinstance(accept, tuple):
        raise ConfigurationError(f"format {name!r}: accept must be a tuple of media types")
    for media in accept:
        if not isinstance(media, str) or not _MEDIA_RANGE.fullmatch(media):
            raise ConfigurationError(
                f"format {name!r}: accept type {media!r} must be a lowercase type/subtype "
                "without parameters or wildcards"
            )
        owner = ACCEPT_TYPES.get(media)
        if owner is not None or accept.count(media) > 1:
            raise ConfigurationError(
                f"format {name!r}: Accept type {media!r} already selects "
                f"{owner or name!r}; each Accept type selects one format"
            )
    _check_headers(name, encoder.headers)
    for flag in ("aborts_on_error", "wants_raw"):
        if not isinstance(getattr(encoder, flag), bool):
            raise ConfigurationError(f"format {name!r}: {flag} must be a bool")
    for attr in ("preamble_bytes", "heartbeat_bytes"):
        if not isinstance(getattr(encoder, attr), bytes):
            raise ConfigurationError(f"format {name!r}: {attr} must be bytes")
    FORMATS[name] = encoder
    for media in accept:
        ACCEPT_TYPES[media] = name
    return encoder


def _check_headers(name: str, headers: Headers) -> None:
    if not isinstance(headers, tuple):
        raise ConfigurationError(f"format {name!r}: headers must be a tuple of (bytes, bytes)")
    for pair in headers:
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not isinstance(pair[0], bytes)
            or not isinstance(pair[1], bytes)
        ):
            raise ConfigurationError(
                f"format {name!r}: each header must be a (bytes, bytes) pair, not {pair!r}"
            )
        key, value = pair
        if not _HEADER_NAME.fullmatch(key) or key == b"content-type":
            raise ConfigurationError(
                f"format {name!r}: header name {key!r} must be a lowercase token "
                "other than content-type (media_type sets that)"
            )
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise ConfigurationError(f"format {name!r}: header {key!r} has a line break or NUL")


def encoder_for(name: str, *, now: float) -> Encoder:
    """A fresh encoder for format ``name`` (one per stream: encoders keep state).

    ``now`` is the stream's start, in seconds since the epoch (the caller's
    ``time.time()``); formats that stamp their output use it. An unknown name
    raises :class:`~streamrelay.errors.UnsupportedFormat` (HTTP 406).
    """
    try:
        cls = FORMATS[name]
    except KeyError:
        raise UnsupportedFormat(name, tuple(FORMATS)) from None
    return cls(now=now)


for _builtin in (TextEncoder, NDJSONEncoder, SSEEncoder, OpenAIEncoder, AISDKEncoder):
    register(_builtin)
del _builtin
register(AGUIEncoder)
