"""HTTP/1.1 chunked transfer decoding, sans-I/O, for the load client and the floor relay."""

from __future__ import annotations

__all__ = ["Dechunker"]

_MAX_SIZE_LINE = 1024


class Dechunker:
    """Feed raw chunked bytes, get the payload bytes they completed.

    >>> d = Dechunker()
    >>> d.feed(b"5\\r\\nhel")
    b'hel'
    >>> d.feed(b"lo\\r\\n0\\r\\n\\r\\n"), d.finished
    (b'lo', True)
    """

    __slots__ = ("_left", "_raw", "finished")

    def __init__(self) -> None:
        self._raw = bytearray()  # unconsumed framing and payload
        self._left = 0  # bytes left in the current chunk, including its trailing CRLF
        self.finished = False  # the last (zero-size) chunk was seen; trailers are ignored

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the payload it completed (possibly empty)."""
        if self.finished:
            return b""
        raw = self._raw
        raw += data
        out: list[bytes] = []
        while raw:
            if self._left == 0:
                eol = raw.find(b"\r\n")
                if eol < 0:
                    if len(raw) > _MAX_SIZE_LINE:
                        raise ValueError("chunk size line too long")
                    break
                size = int(bytes(raw[:eol]).split(b";", 1)[0], 16)
                del raw[: eol + 2]
                if size == 0:
                    self.finished = True
                    raw.clear()
                    break
                self._left = size + 2
            take = min(self._left, len(raw))
            payload = min(take, self._left - 2)
            if payload > 0:
                out.append(bytes(raw[:payload]))
            del raw[:take]
            self._left -= take
        return out[0] if len(out) == 1 else b"".join(out)
