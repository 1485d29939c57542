"""Reading the usual token chunk without parsing it: the byte shape a stream repeats.

Within one stream an OpenAI-compatible upstream writes every plain token chunk
the same way but for the text: the same ``id``, ``created``, ``model`` and
fingerprint before it, the same closing fields after it::

    {"id":"c1","object":"chat.completion.chunk",...,"delta":{"content":" the"},...}
    {"id":"c1","object":"chat.completion.chunk",...,"delta":{"content":" fox"},...}

:class:`TokenTemplate` learns that shape, a *prefix* and a *suffix*, from a chunk
the full path has just parsed and decoded as a token
(:meth:`~streamrelay.openai.ChunkDecoder.token`), and from then on reads the text
of a chunk that has exactly that prefix and suffix and, between them, a JSON string
with nothing escaped in it (no ``"``, ``\\`` or control character): about half of
the transcoder's work per token (``python -m bench.micro``), with no JSON parse.

Why that is the same answer as the full path: a string with nothing escaped is one
JSON token whatever it holds, so such a chunk tokenizes as the learned one does with
one string replaced; and the shape is only learned once a *probe*, the prefix and
suffix around another string, parses to the learned chunk with only
``choices[0].delta.content`` changed. So the position is that field and nothing
else, and the decoder's token rules (one choice, no finish reason, only content)
give the same answer for every such chunk. ``tests/unit/test_token_template.py``
checks it against the full path on generated streams.

A stream whose chunks keep changing shape stops being learned after a few tries,
so it costs the full path plus nothing.

>>> import json
>>> chunk = lambda text: json.dumps({"id": "c1", "choices": [
...     {"index": 0, "delta": {"content": text}, "finish_reason": None}]}).encode()
>>> t = TokenTemplate()
>>> t.read(chunk(" the")) is None                      # nothing learned yet
True
>>> t.learn(chunk(" the"), json.loads(chunk(" the")), 0, " the")
>>> t.read(chunk(" quick")), t.index, t.quoted
(' quick', 0, b'" quick"')
>>> t.read(chunk('say "hi"')) is None                  # escapes: the full path reads it
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import _json

__all__ = ["TokenTemplate"]

_PLAIN = re.compile(rb'"[^"\\\x00-\x1f]+"')
"""A non-empty JSON string with nothing escaped: one token, its text its bytes."""
_MAX_LEARNED = 4
"""Shapes learned per stream before giving up on a stream whose shape keeps changing."""


class TokenTemplate:
    """One stream's token chunk shape (see the module)."""

    __slots__ = ("_learned", "index", "prefix", "quoted", "suffix")

    def __init__(self) -> None:
        self.prefix: bytes | None = None
        self.suffix = b""
        self.index = 0
        """The choice index of the chunks read."""
        self.quoted = b""
        """The token as the last chunk read wrote it: a JSON string, quotes included."""
        self._learned = 0

    def read(self, payload: bytes) -> str | None:
        """The token text of ``payload`` (a chunk's JSON) when it has the learned
        shape, else ``None``: the full path must read it."""
        prefix = self.prefix
        if prefix is None or not payload.startswith(prefix):
            return None
        suffix = self.suffix
        end = len(payload) - len(suffix)
        if end <= len(prefix) or not payload.endswith(suffix):
            return None
        middle = payload[len(prefix) : end]
        if _PLAIN.fullmatch(middle) is None:
            return None
        try:
            text = middle[1:-1].decode("utf-8")
        except UnicodeDecodeError:
            return None
        self.quoted = middle
        return text

    def learn(self, payload: bytes, chunk: Mapping[str, Any], index: int, text: str) -> None:
        """``payload`` parsed to ``chunk``, which the decoder read as the token ``text``
        of choice ``index``: learn its shape, if it proves to be one (see the module)."""
        prefix = self.prefix
        if prefix is not None and payload.startswith(prefix) and payload.endswith(self.suffix):
            return  # the shape holds; only this text had to be read the full way
        if self._learned >= _MAX_LEARNED:
            self.prefix = None
            return
        self._learned += 1
        self.prefix = None
        token = b'"' + text.encode() + b'"'
        if _PLAIN.fullmatch(token) is None:
            return  # written with escapes: not where the bytes can be found
        at = payload.find(token)
        if at < 0 or payload.find(token, at + 1) >= 0:
            return  # not found, or not only once
        prefix, suffix = payload[:at], payload[at + len(token) :]
        other = "x" if text != "x" else "y"
        try:
            probe = _json.loads(prefix + b'"' + other.encode() + b'"' + suffix)
            delta = probe["choices"][0]["delta"]
            if delta["content"] != other:
                return
            delta["content"] = text
        except (ValueError, LookupError, TypeError):
            return
        if probe == chunk:
            self.prefix, self.suffix, self.index = prefix, suffix, index
