"""HTTP/1.1 client messages, sans-I/O: the request bytes out, a response parser in.

Just what the native upstream transport needs (RFC 9112): a POST with a body, and
a response framed by ``Transfer-Encoding: chunked``, ``Content-Length`` or the
connection closing. 1xx interim responses are skipped. A malformed response raises
:class:`~streamrelay.errors.RemoteProtocolError` rather than being guessed at,
since a misframed response could splice one answer into the next on a reused
connection; a request that could not be written validly raises
:class:`~streamrelay.errors.LocalProtocolError` (as h11 tells the two apart).

>>> p = ResponseParser()
>>> p.feed(b"HTTP/1.1 200 OK\\r\\ntransfer-encoding: chunked\\r\\n\\r\\n5\\r\\nhel")
b'hel'
>>> p.status, p.feed(b"lo\\r\\n0\\r\\n\\r\\n"), p.finished, p.keep_alive
(200, b'lo', True, True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = ["MAX_HEAD_BYTES", "ResponseParser", "check_header", "request_head"]

MAX_HEAD_BYTES = 64 * 1024
"""The largest response head (status line and headers) accepted."""
_MAX_HEADERS = 256
_MAX_LINE = 4096  # a chunk-size line or a trailer line
_MAX_TRAILERS = 64

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN_STR = re.compile(_TOKEN.pattern.decode())
_NOT_FIELD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
"""A character no header value may carry: a control character (HTAB aside), DEL,
or one beyond latin-1 (RFC 9110 5.5: field-vchar is VCHAR or obs-text)."""
_TARGET = re.compile(r"[\x21-\x7e]+")
"""A request target: visible ASCII (anything else is percent-encoded, RFC 3986)."""
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")

# Parser states; the body states name how the body is framed.
_HEAD, _CHUNKED, _LENGTH, _UNTIL_CLOSE, _DONE = range(5)
# Where a chunked body is.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


def request_head(
    method: str,
    target: str,
    host: str,
    headers: Iterable[tuple[str, str]],
    body_length: int | None,
) -> bytes:
    """The request line and headers of a request with a ``body_length``-byte body
    (``None``: no body and no ``Content-Length``, as for ``CONNECT``).

    >>> request_head("POST", "/v1/x", "api.test", [("accept", "*/*")], 2)
    b'POST /v1/x HTTP/1.1\\r\\nhost: api.test\\r\\naccept: */*\\r\\ncontent-length: 2\\r\\n\\r\\n'

    Raises :class:`LocalProtocolError` rather than write an invalid request (see
    :func:`check_header`); nothing is written then.
    """
    if not _TOKEN_STR.fullmatch(method) or not _TARGET.fullmatch(target):
        raise LocalProtocolError(f"invalid request line: {method[:20]!r} {target[:80]!r}")
    check_header("host", host)
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    for name, value in headers:
        check_header(name, value)
        lines.append(f"{name}: {value}")
    if body_length is not None:
        lines.append(f"content-length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_header(name: str, value: str) -> None:
    """Raise :class:`LocalProtocolError` unless ``name: value`` may be written in an
    HTTP/1.1 request: the name a token, the value visible characters, spaces, tabs
    and latin-1's upper half (``obs-text``, written as latin-1 bytes), RFC 9110 5.5.

    A line break would end the header and start another one (on a pooled
    connection, the shape of request smuggling); a NUL or another control
    character is invalid too. The message names the header and the offending
    character, never the value, which may be a secret.

    >>> check_header("x-trace-id", "a\\nb")
    Traceback (most recent call last):
    ...
    streamrelay.errors.LocalProtocolError: the value of header 'x-trace-id' contains a line break ('\\n')
    """
    if not _TOKEN_STR.fullmatch(name):
        raise LocalProtocolError(f"invalid header name {name[:80]!r}")
    bad = _NOT_FIELD_VALUE.search(value)
    if bad is not None:
        char = bad.group()
        if char in "\r\n":
            what = "a line break"
        elif char == "\x00":
            what = "a NUL"
        elif ord(char) > 0xFF:
            what = "a character outside latin-1"
        else:
            what = "a control character"
        raise LocalProtocolError(f"the value of header {name[:80]!r} contains {what} ({char!r})")


class ResponseParser:
    """Feed a response's bytes as they arrive; get its body bytes back.

    The head's fields (``status``, ``reason``, ``headers``) are set once it is
    complete; until then :meth:`feed` returns ``b""``. ``finished`` turns true
    when the body is complete; ``keep_alive`` then tells whether the connection
    may carry another request. ``connect=True`` parses the answer to a CONNECT,
    where a 2xx has no body (the connection becomes a tunnel).
    """

    __slots__ = (
        "_buf",
        "_chunk",
        "_connect",
        "_left",
        "_state",
        "_trailers",
        "error",
        "headers",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(self, *, connect: bool = False) -> None:
        self._connect = connect
        self._state = _HEAD
        self._buf = b""  # bytes of an incomplete head, size line, CRLF or trailer line
        self._chunk = _SIZE
        self._left = 0  # bytes left in the current chunk or Content-Length body
        self._trailers = 0
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.keep_alive = False
        self.error: RemoteProtocolError | None = None

    @property
    def head_complete(self) -> bool:
        return self._state != _HEAD

    @property
    def finished(self) -> bool:
        return self._state == _DONE

    def header(self, name: str, default: str = "") -> str:
        """The first value of header ``name`` (lower case), else ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; return the body bytes it completed (possibly ``b""``).

        Bytes after the end of the body are an error: the client sends one
        request at a time, so a server has nothing more to say. Nothing valid is
        lost to an error: when ``data`` holds body bytes and then invalid framing,
        those bytes are returned and ``error`` is set; every later call raises it.
        """
        if self.error is not None:
            raise self.error
        state = self._state
        if state == _CHUNKED:
            return self._feed_chunked(data)
        if state == _LENGTH:
            if len(data) > self._left:
                body, self._left, self._state = data[: self._left], 0, _DONE
                return self._failed(
                    RemoteProtocolError("the upstream sent more bytes than its Content-Length"),
                    body,
                )
            self._left -= len(data)
            if not self._left:
                self._state = _DONE
            return data
        if state == _UNTIL_CLOSE:
            return data
        if state == _DONE:
            if data:
                raise RemoteProtocolError("the upstream sent bytes after the end of its response")
            return b""
        return self._feed_head(data)

    def feed_eof(self) -> None:
        """The connection closed: fine after a complete body or one framed by the close."""
        if self.error is not None:
            raise self.error
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
        elif self._state != _DONE:
            raise RemoteProtocolError(
                "the upstream closed the connection before its response was complete"
            )

    # the head ------------------------------------------------------------------

    def _feed_head(self, data: bytes) -> bytes:
        # The blank line can only be in or across the new bytes: searching the whole
        # buffer again made a head arriving a byte at a time cost quadratic time.
        start = max(len(self._buf) - 2, 0)
        buf = self._buf + data if self._buf else data
        while True:
            end = _head_end(buf, start)
            if (end if end >= 0 else len(buf)) > MAX_HEAD_BYTES:
                raise RemoteProtocolError(
                    f"the upstream's response head exceeds {MAX_HEAD_BYTES} bytes"
                )
            if end < 0:
                self._buf = buf
                return b""
            head, buf, start = buf[:end], buf[end:], 0
            self._parse_head(head)
            if not 100 <= self.status < 200:
                break
            if self.status == 101:
                raise RemoteProtocolError("the upstream switched protocols (101)")
            # An interim response (100 Continue, 103 Early Hints): the real one follows.
        self._buf = b""
        self._start_body()
        return self.feed(buf) if buf else b""

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\n")
        status_line = lines[0].removesuffix(b"\r")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise RemoteProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        minor, code, reason = match.groups()
        headers: list[tuple[str, str]] = []
        for raw in lines[1:]:
            line = raw.removesuffix(b"\r")  # a bare CR elsewhere is rejected below
            if not line:
                continue  # the blank line ending the head (the last two items)
            if line[0] in b" \t":
                raise RemoteProtocolError("obsolete header line folding")
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise RemoteProtocolError(f"malformed header line: {line[:80]!r}")
            if b"\r" in value or b"\x00" in value:  # RFC 9110 5.5: reject, never pass on
                raise RemoteProtocolError(f"a CR or NUL in the value of header {name[:80]!r}")
            headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
            if len(headers) > _MAX_HEADERS:
                raise RemoteProtocolError(f"the upstream sent more than {_MAX_HEADERS} headers")
        self.status = int(code)
        self.reason = (reason or b"").decode("latin-1")
        self.headers = headers
        connection = {
            token.strip().lower()
            for key, value in headers
            if key == "connection"
            for token in value.split(",")
        }
        # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 response is faulty framing, so
        # the connection is closed after it.
        self.keep_alive = "close" not in connection and (
            minor == b"1"
            or ("keep-alive" in connection and all(k != "transfer-encoding" for k, _ in headers))
        )

    def _start_body(self) -> None:
        status = self.status
        if status in (204, 304) or (self._connect and 200 <= status < 300):
            self._state = _DONE
            return
        codings = [
            coding.strip().lower()
            for key, value in self.headers
            if key == "transfer-encoding"
            for coding in value.split(",")
        ]
        lengths = {value.strip() for key, value in self.headers if key == "content-length"}
        if codings:
            if lengths:  # RFC 9112 6.3: a message smuggling attempt or a broken server
                raise RemoteProtocolError(
                    "the upstream sent both Transfer-Encoding and Content-Length"
                )
            named = [coding for coding in codings if coding]  # "chunked, " is chunked
            if named != ["chunked"]:
                # gzip, br, ... are never asked for (accept-encoding: identity) and never
                # decoded here: relaying them as text would corrupt the stream.
                raise RemoteProtocolError(
                    "the upstream used a transfer coding streamrelay does not decode "
                    f"({', '.join(named) or 'an empty Transfer-Encoding'}); only chunked is"
                )
            self._state, self._chunk = _CHUNKED, _SIZE
        elif lengths:
            # (at most 19 digits: int() raises ValueError past 4300)
            if len(lengths) > 1 or not all(
                len(v) <= 19 and v.isdigit() and v.isascii() for v in lengths
            ):
                raise RemoteProtocolError(f"invalid Content-Length: {sorted(lengths)}")
            self._left = int(lengths.pop())
            self._state = _LENGTH if self._left else _DONE
        else:
            self._state, self.keep_alive = _UNTIL_CLOSE, False

    # a chunked body ----------------------------------------------------------------

    def _feed_chunked(self, data: bytes) -> bytes:
        if self._buf:
            data, self._buf = self._buf + data, b""
        # The usual read while relaying: exactly one whole chunk, nothing pending.
        if self._chunk == _SIZE:
            eol = data.find(b"\r\n")
            if 0 < eol < 18 and data.endswith(b"\r\n"):
                size = _chunk_size(data[:eol])
                if size and eol + size + 4 == len(data):
                    return data[eol + 2 : -2]
        out: list[bytes] = []
        try:
            self._dechunk(data, out)
        except RemoteProtocolError as exc:
            return self._failed(exc, b"".join(out))
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _dechunk(self, data: bytes, out: list[bytes]) -> None:
        pos, end = 0, len(data)
        while pos < end:
            part = self._chunk
            if part == _DATA:
                take = min(self._left, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._chunk = _DATA_END
            elif part == _DATA_END:
                if end - pos < 2:
                    if data[pos:] != b"\r":
                        raise RemoteProtocolError("a chunk is longer than its size line says")
                    self._buf = data[pos:]
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise RemoteProtocolError("a chunk is longer than its size line says")
                pos += 2
                self._chunk = _SIZE
            else:  # a size line or a trailer line
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_LINE + 1:  # + 1: the CR of its CRLF may be here
                        raise RemoteProtocolError("a chunk-size or trailer line is too long")
                    self._buf = data[pos:]
                    break
                if eol - pos > _MAX_LINE:  # however the bytes were split
                    raise RemoteProtocolError("a chunk-size or trailer line is too long")
                line = data[pos:eol]
                pos = eol + 2
                if part == _SIZE:
                    size = _chunk_size(line)
                    if size:
                        self._chunk, self._left = _DATA, size
                    else:
                        self._chunk = _TRAILER
                elif line:
                    self._trailers += 1
                    if self._trailers > _MAX_TRAILERS:
                        raise RemoteProtocolError("too many trailer fields")
                else:  # the blank line after the last chunk and its trailers
                    self._state = _DONE
                    if pos < end:
                        raise RemoteProtocolError(
                            "the upstream sent bytes after the end of its response"
                        )
                    break

    def _failed(self, error: RemoteProtocolError, body: bytes) -> bytes:
        """Raise ``error`` now if there is no ``body`` before it, else on the next call."""
        self.error = error
        if not body:
            raise error
        return body


def _head_end(buf: bytes, start: int = 0) -> int:
    """Where the head in ``buf`` ends (after its blank line, found from ``start``), or -1.

    A bare LF ends lines too (RFC 9112 2.2 lets a recipient accept it)."""
    crlf = buf.find(b"\n\r\n", start)
    lf = buf.find(b"\n\n", start)
    if crlf < 0:
        return lf + 2 if lf >= 0 else -1
    if 0 <= lf < crlf:
        return lf + 2
    return crlf + 3


def _chunk_size(line: bytes) -> int:
    # The usual line is bare hex digits; int() alone would also take "0x", "_", signs
    # and spaces, which isalnum() and the "x" test rule out.
    if 0 < len(line) <= 16 and line.isalnum() and b"x" not in line and b"X" not in line:
        try:
            return int(line, 16)
        except ValueError:
            pass  # letters beyond f: the error below
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise RemoteProtocolError(f"invalid chunk-size line: {line[:40]!r}")
    return int(match.group(1), 16)
