"""JSON on the hot path: orjson when installed (the ``fast`` extra), else the stdlib."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads"]

try:
    import orjson

    def loads(data: str | bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            # orjson rejects escaped lone surrogates ("\\ud83d"), which JavaScript
            # upstreams emit when they cut text between UTF-16 code units; the
            # stdlib accepts them. Parse the same documents with or without orjson.
            return json.loads(data)

    def dumps(obj: Any) -> bytes:
        try:
            result: bytes = orjson.dumps(obj)
            return result
        except TypeError:  # lone surrogates: escape them rather than fail
            return json.dumps(obj, separators=(",", ":")).encode()

except ImportError:  # pragma: no cover - exercised when orjson is absent
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    _encode_ascii = json.JSONEncoder(separators=(",", ":")).encode

    def loads(data: str | bytes) -> Any:
        return json.loads(data)

    def dumps(obj: Any) -> bytes:
        try:
            return _encode(obj).encode()
        except UnicodeEncodeError:
            return _encode_ascii(obj).encode()
