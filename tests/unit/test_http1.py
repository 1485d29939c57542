"""The HTTP/1.1 client codec on its own: :class:`ResponseParser` and :func:`request_head`.

The parser is sans-I/O and backs the native upstream transport, where a response
arrives in reads of any size, so every property is checked by feeding the bytes
split in every way that matters: whole, byte by byte, at every cut point, and at
random cut points (hypothesis). Every ``raise`` in ``_http1`` has a test reaching it:
a misframed response must never be guessed at, since on a reused connection it
could splice one answer into the next.
"""

from __future__ import annotations

import doctest
import itertools
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiled import source_module
from splits import bytewise, every_split, random_splits, split_at
from streamrelay.errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    StreamRelayError,
)
from streamrelay.upstream import http1 as _http1
from streamrelay.upstream.http1 import MAX_HEAD_BYTES, ResponseParser, check_header, request_head

MAX_LINE = _http1._MAX_LINE
MAX_HEADERS = _http1._MAX_HEADERS
MAX_TRAILERS = _http1._MAX_TRAILERS

CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
LENGTH_5 = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool


def run(
    chunks: Iterable[bytes], *, connect: bool = False, eof: bool = False
) -> tuple[ResponseParser, bytes]:
    """Feed every chunk (then the EOF if ``eof``); return the parser and the body.

    Checks what holds on every feed, valid response or not: ``feed`` returns bytes,
    and only ``b""`` until the head is complete.
    """
    parser = ResponseParser(connect=connect)
    body: list[bytes] = []
    for chunk in chunks:
        out = parser.feed(chunk)
        assert type(out) is bytes
        if not parser.head_complete:
            assert out == b""
        body.append(out)
    if eof:
        parser.feed_eof()
    return parser, b"".join(body)


def summary(parser: ResponseParser, body: bytes) -> Response:
    return Response(parser.status, parser.reason, parser.headers, body, parser.keep_alive)


def parse(chunks: Iterable[bytes], *, connect: bool = False, close: bool = False) -> Response:
    """Parse one complete response; it must finish exactly with its last chunk.

    ``close``: the body is delimited by the connection closing, so the response
    finishes only with :meth:`ResponseParser.feed_eof`, after the last chunk.
    """
    parser = ResponseParser(connect=connect)
    body: list[bytes] = []
    for chunk in chunks:
        assert not parser.finished, "finished before the last chunk"
        out = parser.feed(chunk)
        assert type(out) is bytes
        if not parser.head_complete:
            assert out == b""
        body.append(out)
    assert parser.head_complete
    assert parser.finished is not close
    if close:
        parser.feed_eof()
        assert parser.finished
    assert parser.feed(b"") == b""  # an empty read after the end is harmless
    return summary(parser, b"".join(body))


def outcome(chunks: Iterable[bytes], *, connect: bool = False) -> Response | type[StreamRelayError]:
    """The response after the bytes and the EOF, or the type of the error raised."""
    try:
        parser, body = run(chunks, connect=connect, eof=True)
    except StreamRelayError as exc:
        return type(exc)
    return summary(parser, body)


def assert_parses(
    data: bytes, expected: Response, *, connect: bool = False, close: bool = False, step: int = 1
) -> None:
    for chunks in every_split(data, step):
        assert parse(chunks, connect=connect, close=close) == expected, chunks


def assert_rejected(
    data: bytes, match: str, *, connect: bool = False, eof: bool = False, step: int = 1
) -> None:
    """``data`` (then the EOF if ``eof``) fails with RemoteProtocolError however it is split.

    The read holding the fault raises, or, if body bytes came before the fault in
    that read, returns them and sets ``error``, which every later call raises.
    """
    for chunks in every_split(data, step):
        try:
            parser, _ = run(chunks, connect=connect, eof=eof)
        except RemoteProtocolError as exc:
            assert re.search(match, str(exc)), (match, exc)
            continue
        assert parser.error is not None and re.search(match, str(parser.error)), chunks
        with pytest.raises(RemoteProtocolError, match=match):
            parser.feed(b"")
        with pytest.raises(RemoteProtocolError, match=match):
            parser.feed_eof()


def ok(body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(200, "OK", headers or [], body, True)


# --- the status line ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        (b"HTTP/1.1 200 OK", 200, "OK"),
        (b"HTTP/1.1 404 Not Found", 404, "Not Found"),
        (b"HTTP/1.1 200", 200, ""),  # the reason phrase is optional...
        (b"HTTP/1.1 200 ", 200, ""),  # ...and may be empty
        (b"HTTP/1.1 500 a  b\tc ", 500, "a  b\tc "),  # kept as it is
        (b"HTTP/1.1 200 \xe9t\xe9", 200, "\xe9t\xe9"),  # obs-text, decoded as latin-1
        (b"HTTP/1.1 299 OK", 299, "OK"),
        (b"HTTP/1.0 503 Busy", 503, "Busy"),
    ],
)
def test_status_line(line: bytes, status: int, reason: str) -> None:
    response = parse([line + b"\r\ncontent-length: 0\r\n\r\n"])
    assert (response.status, response.reason) == (status, reason)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"HTTP/1.1",
        b"HTTP/1.1 ",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 2OO OK",
        b"HTTP/1.1  200 OK",
        b" HTTP/1.1 200 OK",
        b"HTTP/1.1\t200 OK",
        b"HTTP/2 200 OK",
        b"HTTP/2.0 200 OK",
        b"HTTP/1.2 200 OK",
        b"HTTP/1 200 OK",
        b"http/1.1 200 OK",
        b"HTTPS/1.1 200 OK",
        b"ICY 200 OK",
        b"HTTP/1.1 200 O\x00K",
        b"HTTP/1.1 200 O\x01K",
        b"HTTP/1.1 200 OK\x7f",
        b"HTTP/1.1 200 OK\r",  # a bare CR (then the line's CRLF)
        b"HTTP/1.1 200 O\rK",
        b"SSH-2.0-OpenSSH_9.6",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
def test_bad_status_line(line: bytes) -> None:
    assert_rejected(line + b"\r\ncontent-length: 0\r\n\r\n", "not an HTTP/1.x status line")


def test_a_blank_line_before_the_status_line_is_rejected() -> None:
    assert_rejected(b"\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "status line")
    assert_rejected(b"\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "status line")


def test_a_head_that_is_only_a_blank_line_is_rejected() -> None:
    assert_rejected(b"\r\n\r\n", "status line")
    assert_rejected(b"\n\n", "status line")


# --- header fields -------------------------------------------------------------------


def test_header_names_are_lower_cased_and_values_stripped() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/event-stream\r\n"
        b"X-MiXeD-CaSe:value\r\n"
        b"x-ows: \t  a \t b  \t\r\n"
        b"X-Empty:\r\n"
        b"x-blank:   \r\n"
        b"x-colons: a: b:c\r\n"
        b"!#$%&'*+-.^_`|~09azAZ: token characters\r\n"
        b"CONTENT-LENGTH: 0\r\n"
        b"\r\n"
    )
    assert_parses(
        data,
        ok(
            headers=[
                ("content-type", "text/event-stream"),
                ("x-mixed-case", "value"),
                ("x-ows", "a \t b"),
                ("x-empty", ""),
                ("x-blank", ""),
                ("x-colons", "a: b:c"),
                ("!#$%&'*+-.^_`|~09azaz", "token characters"),
                ("content-length", "0"),
            ]
        ),
    )


def test_header_values_are_latin_1() -> None:
    data = b"HTTP/1.1 200 OK\r\nx-a: caf\xe9\r\nx-b: caf\xc3\xa9\r\nx-c: \x80\xff\r\n\r\n"
    response = parse([data], close=True)
    assert response.headers == [("x-a", "caf\xe9"), ("x-b", "caf\xc3\xa9"), ("x-c", "\x80\xff")]
    assert response.headers[1][1].encode("latin-1").decode("utf-8") == "caf\xe9"


def test_repeated_headers_are_kept_in_order() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nx-other: o\r\nSet-Cookie: b=2\r\n"
        b"set-cookie: c=3\r\ncontent-length: 0\r\n\r\n"
    )
    assert parse([data]).headers == [
        ("set-cookie", "a=1"),
        ("x-other", "o"),
        ("set-cookie", "b=2"),
        ("set-cookie", "c=3"),
        ("content-length", "0"),
    ]


def test_header_lookup() -> None:
    parser = ResponseParser()
    assert parser.header("content-type") == ""  # before the head
    parser.feed(
        b"HTTP/1.1 200 OK\r\nRetry-After: 5\r\nretry-after: 6\r\nX-Empty:\r\n"
        b"content-length: 0\r\n\r\n"
    )
    assert parser.header("retry-after") == "5"  # the first value
    assert parser.header("x-empty", "default") == ""  # present, if empty
    assert parser.header("x-missing") == ""
    assert parser.header("x-missing", "default") == "default"
    assert parser.header("Retry-After") == ""  # names are looked up in lower case


def test_the_head_is_not_exposed_before_it_is_complete() -> None:
    parser = ResponseParser()
    assert (parser.status, parser.reason, parser.headers) == (0, "", [])
    assert not parser.head_complete and not parser.finished and not parser.keep_alive
    assert parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n") == b""
    assert not parser.head_complete
    assert parser.feed(b"\r\nh") == b"h"
    assert parser.head_complete and not parser.finished
    assert parser.feed(b"i") == b"i"
    assert parser.finished


def test_empty_feeds_are_no_ops_in_every_state() -> None:
    parser = ResponseParser()
    for piece in (b"", b"HTTP/1.1 200 OK\r\n", b"", b"transfer-encoding: chunked\r\n\r\n", b""):
        assert parser.feed(piece) == b""
    for piece, out in [
        (b"5", b""),
        (b"", b""),
        (b"\r\nhel", b"hel"),
        (b"", b""),
        (b"lo\r", b"lo"),
        (b"", b""),
        (b"\n0\r\nx: y", b""),
        (b"", b""),
        (b"\r\n\r", b""),
        (b"", b""),
        (b"\n", b""),
        (b"", b""),
    ]:
        assert parser.feed(piece) == out
    assert parser.finished


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\ncontent-length: 2\n\nhi",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\n\nhi",
        b"HTTP/1.1 200 OK\ncontent-length: 2\r\n\nhi",
        b"HTTP/1.1 200 OK\ncontent-length: 2\n\r\nhi",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\nhi",
        b"HTTP/1.1 200 OK\ncontent-length: 2\r\n\r\nhi",
    ],
)
def test_bare_lf_line_endings_in_the_head_are_accepted(data: bytes) -> None:
    assert_parses(data, ok(b"hi", [("content-length", "2")]))


def test_bare_lf_in_the_chunked_framing_is_rejected() -> None:
    # RFC 9112 2.2 allows a bare LF in the head only; the chunk lines stay CRLF.
    data = b"HTTP/1.1 200 OK\ntransfer-encoding: chunked\n\n2\nhi\n0\n\n"
    assert_rejected(data, "before its response was complete", eof=True)
    assert_rejected(CHUNKED + b"2\nhi\r\n0\r\n\r\n", "chunk-size")
    assert_rejected(CHUNKED + b"2\r\nhi\n0\r\n\r\n", "longer than its size")


@pytest.mark.parametrize(
    "line",
    [
        b" x: folded",  # whitespace before the first field line
        b"x: a\r\n  continued",
        b"x: a\r\n\tcontinued",
        b"x: a\n continued",
    ],
)
def test_obsolete_line_folding_is_rejected(line: bytes) -> None:
    assert_rejected(
        b"HTTP/1.1 200 OK\r\n" + line + b"\r\ncontent-length: 0\r\n\r\n", "line folding"
    )


@pytest.mark.parametrize(
    "line",
    [
        b"nocolon",
        b": no name",
        b"x y: z",
        b"x : z",  # RFC 9112 5.1: no whitespace between the name and the colon
        b"x\t: z",
        b"[x]: z",
        b"x/y: z",
        b"x@y: z",
        b"x\x00: z",
        b"x\x7f: z",
        b"\x01: z",
        b"\xe9t\xe9: z",
        b"\r",  # a bare CR (then the line's CRLF): not a blank line
        b"\rx: z",
        b"\r\r",
    ],
)
def test_malformed_header_line_is_rejected(line: bytes) -> None:
    assert_rejected(
        b"HTTP/1.1 200 OK\r\n" + line + b"\r\ncontent-length: 0\r\n\r\n", "malformed header line"
    )


@pytest.mark.parametrize(
    "line",
    [
        b"x: a\rb",
        b"x: a\x00b",
        b"x: \x00",
        b"x: a\r",  # a bare CR before the line's CRLF
        b"x: a \r",
    ],
)
def test_cr_or_nul_in_a_header_value_is_rejected(line: bytes) -> None:
    # RFC 9110 5.5: a recipient must reject (or replace) them, never pass them on.
    assert_rejected(b"HTTP/1.1 200 OK\r\n" + line + b"\r\ncontent-length: 0\r\n\r\n", "CR or NUL")


def test_header_count_limit() -> None:
    fields = b"".join(b"x-%d: %d\r\n" % (i, i) for i in range(MAX_HEADERS - 1))
    at_limit = b"HTTP/1.1 200 OK\r\n" + fields + b"content-length: 0\r\n\r\n"
    response = parse([at_limit])
    assert len(response.headers) == MAX_HEADERS
    assert parse(split_at(at_limit, range(0, len(at_limit), 100))) == response
    over = b"HTTP/1.1 200 OK\r\nx: y\r\n" + fields + b"content-length: 0\r\n\r\n"
    assert_rejected(over, f"more than {MAX_HEADERS} headers", step=257)


# --- the head size limit ----------------------------------------------------------------


def head_of_size(size: int, status: bytes = b"200 OK") -> bytes:
    """A complete head (``content-length: 0``) of exactly ``size`` bytes, blank line included."""
    start = b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nx-pad: "
    return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"


def test_a_head_of_max_head_bytes_is_accepted() -> None:
    head = head_of_size(MAX_HEAD_BYTES)
    assert len(head) == MAX_HEAD_BYTES
    expected = parse([head])
    assert expected.headers == [("content-length", "0"), ("x-pad", "a" * (MAX_HEAD_BYTES - 47))]
    assert parse(split_at(head, range(0, MAX_HEAD_BYTES, 4096))) == expected
    for cut in range(MAX_HEAD_BYTES - 8, MAX_HEAD_BYTES):
        assert parse([head[:cut], head[cut:]]) == expected


def test_a_head_one_byte_over_the_limit_is_rejected() -> None:
    head = head_of_size(MAX_HEAD_BYTES + 1)
    for chunks in (
        [head],
        [head + b"body"],
        split_at(head, range(0, len(head), 4096)),
        [head[:-1], head[-1:]],
        [head[:-4], head[-4:]],
    ):
        with pytest.raises(RemoteProtocolError, match="exceeds"):
            run(chunks)


def test_a_head_without_its_blank_line_is_rejected_past_the_limit() -> None:
    head = head_of_size(MAX_HEAD_BYTES + 100)[: MAX_HEAD_BYTES + 1]
    assert b"\n\n" not in head and b"\n\r\n" not in head
    parser = ResponseParser()
    assert parser.feed(head[:MAX_HEAD_BYTES]) == b""  # the limit, buffered
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parser.feed(head[MAX_HEAD_BYTES:])
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        ResponseParser().feed(head)
    with pytest.raises(RemoteProtocolError, match="exceeds"):  # an endless head
        run(itertools.repeat(b"x" * 4096, 100))


def test_the_limit_applies_to_each_head_not_to_interim_ones_together() -> None:
    interim = head_of_size(MAX_HEAD_BYTES, b"103 Early Hints")
    final = head_of_size(MAX_HEAD_BYTES)
    assert parse([interim + final]).status == 200
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        run([head_of_size(MAX_HEAD_BYTES + 1, b"100 Continue") + final])


def test_a_head_arriving_byte_by_byte_is_searched_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Regression: every read searched the whole buffered head again for its end, so
    # a 64 KiB head trickled a byte per read cost seconds of CPU.
    scanned = 0
    head_end = _http1._head_end

    def spy(buf: bytes, start: int = 0) -> int:
        nonlocal scanned
        scanned += len(buf) - start
        return head_end(buf, start)

    monkeypatch.setattr(_http1, "_head_end", spy)
    head = head_of_size(20_000)
    assert parse(bytewise(head)).status == 200
    assert scanned <= 3 * len(head)
    scanned = 0
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert parse(bytewise(interim + head)).status == 200
    assert scanned <= 3 * len(interim + head)


# --- interim (1xx) responses -----------------------------------------------------------------


def test_interim_responses_are_skipped() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 102\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    )
    assert_parses(data, ok(b"hi", [("content-length", "2")]))


def test_an_interim_response_does_not_complete_the_head() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n") == b""
    assert not parser.head_complete and not parser.finished
    assert parser.feed(b"HTTP/1.1 103 Early Hints\r\nlink: <x>\r\n\r\nHTTP/1.1 200 OK\r\n") == b""
    assert not parser.head_complete
    assert parser.feed(b"content-length: 2\r\n\r\nhi") == b"hi"
    assert parser.finished and parser.headers == [("content-length", "2")]


def test_interim_response_headers_do_not_frame_anything() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    )
    assert_parses(data, ok(b"hi", [("content-length", "2")]))


@pytest.mark.parametrize("connect", [False, True])
def test_switching_protocols_is_rejected(connect: bool) -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    assert_rejected(data, r"switched protocols \(101\)", connect=connect)
    assert_rejected(b"HTTP/1.1 100 Continue\r\n\r\n" + data, r"\(101\)", connect=connect)


def test_the_connection_closing_after_an_interim_response_is_an_error() -> None:
    assert_rejected(b"HTTP/1.1 100 Continue\r\n\r\n", "before its response", eof=True)


# --- keep-alive ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fields", "keep_alive"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"connection: close\r\n", False),
        (b"1.1", b"Connection: CLOSE\r\n", False),
        (b"1.1", b"connection: keep-alive, close\r\n", False),
        (b"1.1", b"connection: upgrade ,close,\r\n", False),
        (b"1.1", b"connection: keep-alive\r\nconnection: close\r\n", False),
        (b"1.1", b"connection: x\r\nconnection: te, Close\r\n", False),
        (b"1.1", b"connection: closed\r\n", True),  # tokens, not substrings
        (b"1.1", b"connection: upgrade\r\n", True),
        (b"1.1", b"connection:\r\n", True),
        (b"1.0", b"", False),
        (b"1.0", b"connection: keep-alive\r\n", True),
        (b"1.0", b"Connection: Keep-Alive\r\n", True),
        (b"1.0", b"connection: te,keep-alive , x\r\n", True),
        (b"1.0", b"connection: x\r\nconnection: keep-alive\r\n", True),
        (b"1.0", b"connection: keep-alive, close\r\n", False),
        (b"1.0", b"connection: keep-alive-ish\r\n", False),
        (b"1.0", b"keep-alive: timeout=5\r\n", False),  # the header is not the token
    ],
)
def test_keep_alive(version: bytes, fields: bytes, keep_alive: bool) -> None:
    data = b"HTTP/" + version + b" 200 OK\r\n" + fields + b"content-length: 2\r\n\r\nhi"
    response = parse([data])
    assert (response.body, response.keep_alive) == (b"hi", keep_alive)


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_a_body_delimited_by_the_close_is_never_keep_alive(version: bytes) -> None:
    data = b"HTTP/" + version + b" 200 OK\r\nconnection: keep-alive\r\n\r\nhi"
    response = parse([data], close=True)
    assert (response.body, response.keep_alive) == (b"hi", False)


def test_transfer_encoding_in_http_1_0_closes_the_connection() -> None:
    # RFC 9112 6.1: faulty framing; the response is read, the connection not reused.
    data = (
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n"
    )
    response = parse([data])
    assert (response.body, response.keep_alive) == (b"hi", False)
    data = b"HTTP/1.0 204 No Content\r\nconnection: keep-alive\r\ntransfer-encoding: x\r\n\r\n"
    assert parse([data]).keep_alive is False


# --- chunked bodies ---------------------------------------------------------------------------


def test_chunked_body() -> None:
    data = CHUNKED + b"5\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\n\r\n"
    assert_parses(data, ok(b"hello, world", [("transfer-encoding", "chunked")]))


def test_chunked_body_with_no_data() -> None:
    assert_parses(CHUNKED + b"0\r\n\r\n", ok(b"", [("transfer-encoding", "chunked")]))


def test_chunk_data_may_look_like_framing() -> None:
    payload = b"0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    data = CHUNKED + b"%x\r\n" % len(payload) + payload + b"\r\n2\r\n\r\n\r\n0\r\n\r\n"
    assert_parses(data, ok(payload + b"\r\n", [("transfer-encoding", "chunked")]))


@pytest.mark.parametrize(
    "size_line",
    [
        b"5",
        b"05",
        b"0000000000000005",  # 16 hex digits
        b"5 ",
        b"5\t",
        b"5 \t ",
        b"5;",
        b"5;name",
        b"5;name=value",
        b"5 ; name = value",
        b'5;a="quoted; \\"value\\""',
        b"5;a=b;c;d=e",
        b"5;\x00\xff\t",  # extensions are skipped, whatever their bytes
    ],
)
def test_chunk_sizes_and_extensions(size_line: bytes) -> None:
    last = b"0" + size_line.lstrip(b"0123456789abcdefABCDEF")  # the same extensions
    data = CHUNKED + size_line + b"\r\nhello\r\n" + last + b"\r\n\r\n"
    assert_parses(data, ok(b"hello", [("transfer-encoding", "chunked")]))


@pytest.mark.parametrize(
    ("size_line", "size"),
    [(b"a", 10), (b"A", 10), (b"1f", 31), (b"1F", 31), (b"fF", 255), (b"0100", 256)],
)
def test_chunk_sizes_are_hex_in_either_case(size_line: bytes, size: int) -> None:
    payload = bytes(range(256))[:size]
    data = CHUNKED + size_line + b"\r\n" + payload + b"\r\n0\r\n\r\n"
    assert_parses(data, ok(payload, [("transfer-encoding", "chunked")]))


def test_the_largest_chunk_size() -> None:
    parser = ResponseParser()
    assert parser.feed(CHUNKED + b"FFFFFFFFFFFFFFFF\r\nabc") == b"abc"
    assert parser.feed(b"x" * 1000) == b"x" * 1000
    assert not parser.finished
    assert parser._left == 2**64 - 1 - 1003


def test_trailers_are_skipped() -> None:
    data = CHUNKED + b"2\r\nhi\r\n0\r\nx-checksum: abc\r\nExpires: never\r\nx-empty:\r\n\r\n"
    assert_parses(data, ok(b"hi", [("transfer-encoding", "chunked")]))


def test_trailer_count_limit() -> None:
    trailers = b"".join(b"x-%d: %d\r\n" % (i, i) for i in range(MAX_TRAILERS))
    at_limit = CHUNKED + b"2\r\nhi\r\n0\r\n" + trailers + b"\r\n"
    assert parse([at_limit]).body == b"hi"
    assert parse(bytewise(at_limit)).body == b"hi"
    over = CHUNKED + b"2\r\nhi\r\n0\r\nx: y\r\n" + trailers + b"\r\n"
    assert_rejected(over, "too many trailer fields", step=37)


@pytest.mark.parametrize(
    "codings",
    [
        b"chunked",
        b"Chunked",
        b"CHUNKED ",
        b"chunked, ",  # RFC 9110 5.6.1: empty list elements are ignored (regression)
        b", chunked ,,",
    ],
)
def test_chunked_is_the_last_transfer_coding(codings: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: " + codings + b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    response = parse([data])
    assert (response.body, response.keep_alive) == (b"hi", True)


@pytest.mark.parametrize(
    "codings",
    [
        b"gzip, chunked",
        b"gzip,chunked",
        b"gzip",
        b"chunked, gzip",
        b"identity",
        b"br",
        b"",
        b"chunked, chunked",
        b"chunked\r\ntransfer-encoding: br",
        b"gzip\r\nx: y\r\ntransfer-encoding: chunked",
    ],
)
def test_a_transfer_coding_other_than_chunked_alone_is_refused(codings: bytes) -> None:
    """Reading ``gzip, chunked`` as plain chunked would relay compressed bytes as text;
    a coding the parser does not decode is a protocol error (the relay asks for
    ``accept-encoding: identity``, so a conforming upstream never sends one)."""
    wire = b"2\r\nhi\r\n0\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\ntransfer-encoding: " + codings + b"\r\n\r\n" + wire
    assert outcome([data]) is RemoteProtocolError


@pytest.mark.parametrize(
    "size_line",
    [
        b"",
        b"0x1f",
        b"0X5",
        b"+5",
        b"-5",
        b"1_0",
        b"g",
        b"5g",
        b"5 x",
        b" 5",
        b"\t5",
        b";5",
        b"5\x00",
        b"5;a\rb",
        b"5\rx",
        b"\xef\xbc\x95",  # a fullwidth digit five
        b"1" * 17,
        b"0" * 17,  # more than 16 hex digits, however small
        b"00000000000000005",
    ],
)
def test_invalid_chunk_size(size_line: bytes) -> None:
    data = CHUNKED + size_line + b"\r\nhello\r\n0\r\n\r\n"
    assert_rejected(data, "invalid chunk-size line")


def test_invalid_last_chunk_size() -> None:
    assert_rejected(CHUNKED + b"2\r\nhi\r\n0x0\r\n\r\n", "invalid chunk-size line")


def test_chunk_data_longer_than_its_size() -> None:
    for data in (
        CHUNKED + b"5\r\nhello!\r\n0\r\n\r\n",
        CHUNKED + b"5\r\nhello!",
        CHUNKED + b"5\r\nhello!!",
        CHUNKED + b"5\r\nhello\r\r\n0\r\n\r\n",
        CHUNKED + b"5\r\nhello\n0\r\n\r\n",
    ):
        assert_rejected(data, "a chunk is longer than its size line says")


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([b"5\r\nhello!"], "longer than its size"),  # a lone byte that is not a CR
        ([b"5\r\nhello!!"], "longer than its size"),  # two bytes that are not the CRLF
        ([b"5\r\nhello\r", b"!"], "longer than its size"),  # a CR, then not an LF
        ([b"5\r\nhello\r", b"\r\n"], "longer than its size"),
    ],
)
def test_chunk_data_longer_than_its_size_in_each_state(chunks: list[bytes], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):  # at the latest when the reads end
        run([CHUNKED, *chunks], eof=True)


def test_chunk_data_shorter_than_its_size() -> None:
    # The missing bytes are taken from the framing, and what follows them is not a CRLF.
    assert_rejected(CHUNKED + b"5\r\nhel\r\n0\r\n\r\n", "longer than its size line says")


def size_line_of(length: int) -> bytes:
    """A chunk-size line of ``length`` bytes (without its CRLF) for a 5-byte chunk."""
    return b"5;" + b"x" * (length - 2)


def test_a_chunk_size_line_of_max_line_bytes_is_accepted() -> None:
    data = CHUNKED + size_line_of(MAX_LINE) + b"\r\nhello\r\n0\r\n\r\n"
    assert_parses(data, ok(b"hello", [("transfer-encoding", "chunked")]), step=97)


def test_an_overlong_chunk_size_line_is_rejected_however_it_is_split() -> None:
    # Regression: a line over the limit was accepted when its CRLF came in the same
    # read, and rejected when the read ended before it.
    for length in (MAX_LINE + 1, MAX_LINE + 2, 3 * MAX_LINE):
        data = CHUNKED + size_line_of(length) + b"\r\nhello\r\n0\r\n\r\n"
        assert_rejected(data, "line is too long", step=97)
    with pytest.raises(RemoteProtocolError, match="line is too long"):  # an endless size line
        run([CHUNKED, b"5;", *itertools.repeat(b"x" * 1000, 5)])


def test_trailer_line_length_limit() -> None:
    at_limit = CHUNKED + b"0\r\nx: " + b"a" * (MAX_LINE - 3) + b"\r\n\r\n"
    assert_parses(at_limit, ok(b"", [("transfer-encoding", "chunked")]), step=97)
    over = CHUNKED + b"0\r\nx: " + b"a" * (MAX_LINE - 2) + b"\r\n\r\n"
    assert_rejected(over, "line is too long", step=97)
    with pytest.raises(RemoteProtocolError, match="line is too long"):  # an endless trailer
        run([CHUNKED, b"0\r\nx: ", *itertools.repeat(b"a" * 1000, 5)])


@pytest.mark.parametrize(
    "extra",
    [
        b"x",
        b"\r\n",
        b"0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ],
)
def test_bytes_after_a_chunked_body(extra: bytes) -> None:
    for ending in (b"0\r\n\r\n", b"0\r\nx: y\r\n\r\n"):
        data = CHUNKED + b"2\r\nhi\r\n" + ending + extra
        assert_rejected(data, "bytes after the end of its response")


# --- Content-Length bodies --------------------------------------------------------------------


def test_content_length_body() -> None:
    assert_parses(LENGTH_5 + b"hello", ok(b"hello", [("content-length", "5")]))


def test_content_length_body_is_returned_as_it_arrives() -> None:
    parser = ResponseParser()
    assert parser.feed(LENGTH_5 + b"he") == b"he"
    assert not parser.finished
    assert parser.feed(b"ll") == b"ll"
    assert parser.feed(b"") == b""
    assert not parser.finished
    assert parser.feed(b"o") == b"o"
    assert parser.finished


def test_content_length_zero() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n") == b""
    assert parser.finished and parser.keep_alive
    assert parser.feed(b"") == b""
    with pytest.raises(RemoteProtocolError, match="bytes after the end"):
        parser.feed(b"x")


@pytest.mark.parametrize(
    "fields",
    [
        b"content-length: 0005\r\n",
        b"content-length:5\r\n",
        b"content-length: \t5 \t\r\n",
        b"content-length: 5\r\nContent-Length: 5\r\n",  # repeated, the same value
    ],
)
def test_content_length_forms(fields: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\nhello"
    assert parse([data]).body == b"hello"


def test_the_largest_content_length() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: " + b"9" * 19 + b"\r\n\r\nab") == b"ab"
    assert not parser.finished


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"abc",
        b"-1",
        b"+5",
        b"5.0",
        b"1e3",
        b"0x10",
        b"1_000",
        b"5, 5",
        b"5,",
        b"5 5",
        b"\xb2",  # SUPERSCRIPT TWO: str.isdigit() says yes
        b"1" + b"0" * 19,  # 20 digits
        b"9" * 5000,  # regression: int() refused it with a ValueError
    ],
)
def test_invalid_content_length(value: bytes) -> None:
    data = b"HTTP/1.1 200 OK\r\ncontent-length: " + value + b"\r\n\r\nhello"
    assert_rejected(data, "invalid Content-Length", step=max(1, len(data) // 50))


def test_differing_content_lengths() -> None:
    data = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"
    assert_rejected(data, "invalid Content-Length")


@pytest.mark.parametrize(
    "fields",
    [
        b"transfer-encoding: chunked\r\ncontent-length: 5\r\n",
        b"content-length: 5\r\ntransfer-encoding: chunked\r\n",
        b"content-length: 5\r\ntransfer-encoding: gzip\r\n",
        b"content-length: 5\r\ntransfer-encoding: identity\r\n",
        b"content-length: 5\r\ntransfer-encoding:\r\n",
        b"content-length: nonsense\r\ntransfer-encoding: chunked\r\n",
    ],
)
def test_transfer_encoding_and_content_length_together(fields: bytes) -> None:
    # RFC 9112 6.3: request smuggling or a broken server, never guessed at.
    data = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    assert_rejected(data, "both Transfer-Encoding and Content-Length")


def test_more_bytes_than_the_content_length() -> None:
    assert_rejected(LENGTH_5 + b"hello!", "more bytes than its Content-Length|bytes after the end")
    # In one read with the head, past the end of the body, and after it:
    for chunks, message in [
        ([LENGTH_5 + b"hello!"], "more bytes than its Content-Length"),
        ([LENGTH_5, b"hello!"], "more bytes than its Content-Length"),
        ([LENGTH_5 + b"hel", b"lo!"], "more bytes than its Content-Length"),
        ([LENGTH_5 + b"hello", b"!"], "bytes after the end"),
        ([LENGTH_5 + b"hello", b"HTTP/1.1 200 OK\r\n\r\n"], "bytes after the end"),
    ]:
        with pytest.raises(RemoteProtocolError, match=message):  # at the latest when the reads end
            run(chunks, eof=True)


# --- bodies delimited by the close; no body -----------------------------------------------------


def test_a_body_delimited_by_the_close() -> None:
    data = b"HTTP/1.1 200 OK\r\nx: y\r\n\r\nhello\r\n0\r\n\r\nanything"
    expected = Response(200, "OK", [("x", "y")], b"hello\r\n0\r\n\r\nanything", False)
    assert_parses(data, expected, close=True)
    assert_parses(b"HTTP/1.1 200 OK\r\n\r\n", Response(200, "OK", [], b"", False), close=True)


def test_the_close_finishes_a_body_delimited_by_it() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\nhel") == b"hel"
    assert parser.feed(b"lo") == b"lo"
    assert not parser.finished and not parser.keep_alive
    parser.feed_eof()
    assert parser.finished
    parser.feed_eof()  # again: still fine
    assert parser.feed(b"") == b""
    with pytest.raises(RemoteProtocolError, match="bytes after the end"):
        parser.feed(b"x")


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
@pytest.mark.parametrize(
    "fields",
    [b"", b"content-length: 5\r\n", b"transfer-encoding: chunked\r\n", b"content-length: x\r\n"],
)
def test_no_body(status: bytes, fields: bytes) -> None:
    data = b"HTTP/1.1 " + status + b"\r\n" + fields + b"\r\n"
    response = parse([data])
    assert (response.body, response.keep_alive) == (b"", True)
    assert_rejected(data + b"x", "bytes after the end")
    assert_rejected(data + b"0\r\n\r\n", "bytes after the end")


# --- CONNECT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", [b"200 Connection established", b"200", b"201 Created", b"299 X"]
)
@pytest.mark.parametrize(
    "fields", [b"", b"content-length: 5\r\n", b"transfer-encoding: chunked\r\n"]
)
def test_connect_2xx_has_no_body(status: bytes, fields: bytes) -> None:
    data = b"HTTP/1.1 " + status + b"\r\n" + fields + b"\r\n"
    assert parse([data], connect=True).body == b""
    # Bytes after it would be the server speaking first in the tunnel.
    assert_rejected(data + b"\x16\x03", "bytes after the end", connect=True)


def test_connect_after_an_interim_response() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    assert_parses(data, Response(200, "OK", [], b"", True), connect=True)


@pytest.mark.parametrize(
    ("fields", "wire", "close"),
    [
        (b"content-length: 6\r\n", b"denied", False),
        (b"transfer-encoding: chunked\r\n", b"3\r\nden\r\n3\r\nied\r\n0\r\n\r\n", False),
        (b"", b"denied", True),
    ],
)
def test_connect_refused_with_a_body(fields: bytes, wire: bytes, close: bool) -> None:
    data = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\n"
        + fields
        + b"\r\n"
        + wire
    )
    response = parse([data], connect=True, close=close)
    assert (response.status, response.body, response.keep_alive) == (407, b"denied", not close)
    if not close:
        assert_rejected(data[:-1], "before its response", connect=True, eof=True)


def test_a_2xx_without_framing_has_a_body_outside_connect() -> None:
    data = b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert parse([data], close=True).body == b""
    parser = ResponseParser()
    parser.feed(data)
    assert not parser.finished


# --- the connection closing early ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        LENGTH_5,
        LENGTH_5 + b"hell",
        CHUNKED,
        CHUNKED + b"5",  # in a size line
        CHUNKED + b"5;ext",
        CHUNKED + b"5\r\n",
        CHUNKED + b"5\r\nhel",  # in the data
        CHUNKED + b"5\r\nhello",  # before its CRLF
        CHUNKED + b"5\r\nhello\r",  # in its CRLF
        CHUNKED + b"5\r\nhello\r\n",  # between chunks
        CHUNKED + b"0\r\n",  # before the blank line
        CHUNKED + b"0\r\n\r",
        CHUNKED + b"0\r\nx: y",  # in a trailer
        CHUNKED + b"0\r\nx: y\r\n",
    ],
)
def test_the_connection_closing_before_the_end_is_an_error(data: bytes) -> None:
    assert_rejected(data, "closed the connection before its response was complete", eof=True)


def test_the_connection_closing_after_the_end_is_fine() -> None:
    for data in (LENGTH_5 + b"hello", CHUNKED + b"0\r\n\r\n", head_of_size(100)):
        parser, _ = run([data], eof=True)
        assert parser.finished
        parser.feed_eof()
        assert parser.finished


# --- any split: hypothesis ----------------------------------------------------------------------

_TCHARS = "!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters
# field-vchar and obs-text, with SP and HTAB
_VCHARS = "\t" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0x80, 0x100)))
_FRAMING = {"connection", "content-length", "transfer-encoding"}
# Connection field values: (value, has "close", has "keep-alive")
_CONNECTION = {
    "close": (True, False),
    "Keep-Alive": (False, True),
    "upgrade": (False, False),
    "te, CLOSE": (True, False),
    "foo,keep-alive ,bar": (False, True),
    "keep-alive, close": (True, True),
}

_names = st.text(_TCHARS, min_size=1, max_size=10).filter(lambda n: n.lower() not in _FRAMING)
_values = st.text(_VCHARS, max_size=10)
_ows = st.sampled_from(["", "", " ", "\t", "  \t"])
_fields = st.tuples(_names, _values, _ows, _ows).map(lambda f: (f[0], f[2] + f[1] + f[3]))
_reasons = st.none() | st.text(_VCHARS, max_size=12)
# Line endings: mostly CRLF; bits set in the mask make those lines end in a bare LF.
_lf_masks = st.sampled_from([0, 0, -1]) | st.integers(0, 2**16 - 1)
_extensions = st.none() | st.tuples(
    st.sampled_from(["", " ", "\t "]), st.text(_VCHARS, max_size=20)
)
_transfer_encodings = st.sampled_from(["chunked", "Chunked", " chunked ", "chunked, "])
_statuses = st.sampled_from([200, 201, 204, 206, 304, 400, 404, 407, 429, 500, 503])
_junk = st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\x00", b"0", b"f", b";", b":"])


@dataclass(frozen=True)
class Case:
    wire: bytes
    expected: Response
    connect: bool
    close: bool  # the body is delimited by the close
    cuts: list[int]  # where each head and each chunk starts


@st.composite
def heads(draw: st.DrawFn, status: int, fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    """A head with these fields (values as they go on the wire); its expected reason."""
    reason = draw(_reasons)
    version = draw(st.booleans())
    line = f"HTTP/1.{version:d} {status}" + ("" if reason is None else f" {reason}")
    lines = [line, *(f"{name}:{value}" for name, value in fields), ""]
    mask = draw(_lf_masks)
    out = [
        text.encode("latin-1") + (b"\n" if mask >> i & 1 else b"\r\n")
        for i, text in enumerate(lines)
    ]
    return b"".join(out), reason or ""


@st.composite
def size_lines(draw: st.DrawFn, size: int) -> bytes:
    """A valid chunk-size line (without its CRLF): any case, leading zeros, extensions."""
    digits = "0" * draw(st.integers(0, 3)) + format(size, "x")
    upper = draw(st.integers(0, 2 ** len(digits) - 1))  # which digits are upper case
    digits = "".join(c.upper() if upper >> i & 1 else c for i, c in enumerate(digits))
    extension = draw(_extensions)
    tail = "" if extension is None else f"{extension[0]};{extension[1]}"
    return (digits + tail).encode("latin-1")


@st.composite
def responses(draw: st.DrawFn) -> Case:
    """Valid responses: interim heads, random fields, any framing, any line endings."""
    wire, cuts = b"", [0]
    for _ in range(draw(st.integers(0, 2))):
        fields = draw(st.lists(_fields, max_size=2))
        wire += draw(heads(draw(st.sampled_from([100, 102, 103])), fields))[0]
        cuts.append(len(wire))

    connect = draw(st.booleans())
    status = draw(_statuses)
    no_body = status in (204, 304) or (connect and 200 <= status < 300)
    fields = draw(st.lists(_fields, max_size=6))
    framing = draw(st.sampled_from(["chunked", "length", "close"]))
    payloads = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=5))
    body = b"".join(payloads)
    extra: list[tuple[str, str]] = []
    if framing == "chunked":
        extra.append(("Transfer-Encoding", draw(_transfer_encodings)))
    elif framing == "length":
        width = draw(st.integers(1, 4))
        extra += [("Content-Length", f"{len(body):0{width}d}")] * draw(st.integers(1, 2))
    connection = draw(st.lists(st.sampled_from(sorted(_CONNECTION)), max_size=2))
    extra += [("Connection", value) for value in connection]
    for field in extra:
        fields.insert(draw(st.integers(0, len(fields))), field)
    head, reason = draw(heads(status, fields))
    wire += head
    version = 0 if head.startswith(b"HTTP/1.0") else 1

    close = framing == "close" and not no_body
    if no_body:
        body = b""
    elif framing == "chunked":
        for payload in payloads:
            cuts.append(len(wire))
            wire += draw(size_lines(len(payload))) + b"\r\n" + payload + b"\r\n"
        cuts.append(len(wire))
        wire += draw(size_lines(0)) + b"\r\n"
        for name, value in draw(st.lists(_fields, max_size=3)):
            wire += f"{name}: {value}\r\n".encode("latin-1")
        wire += b"\r\n"
    else:
        wire += body
    cuts.append(len(wire))

    has_close = any(_CONNECTION[value][0] for value in connection)
    has_keep_alive = any(_CONNECTION[value][1] for value in connection)
    has_te = any(name.lower() == "transfer-encoding" for name, _ in fields)
    keep_alive = not (has_close or close) and (version == 1 or (has_keep_alive and not has_te))
    headers = [(name.lower(), value.strip(" \t")) for name, value in fields]
    expected = Response(status, reason, headers, body, keep_alive)
    return Case(wire, expected, connect, close, cuts)


@st.composite
def splits(draw: st.DrawFn, case: Case) -> list[bytes]:
    """Random cuts, many of them where a head or a chunk starts (a fast-path read)."""
    return draw(random_splits(case.wire, favour=case.cuts))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_split_of_a_valid_response_gives_the_same_response(data: st.DataObject) -> None:
    case = data.draw(responses())
    kwargs = {"connect": case.connect, "close": case.close}
    assert parse([case.wire], **kwargs) == case.expected
    assert parse(bytewise(case.wire), **kwargs) == case.expected
    assert parse(data.draw(splits(case)), **kwargs) == case.expected
    assert parse(split_at(case.wire, case.cuts), **kwargs) == case.expected


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    """A valid response with a few bytes inserted, deleted or replaced."""
    case = draw(responses())
    wire = bytearray(case.wire)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(wire)))
        piece = draw(_junk | st.binary(min_size=1, max_size=3))
        how = draw(st.sampled_from(["insert", "delete", "replace"]))
        wire[pos : pos + (0 if how == "insert" else len(piece))] = b"" if how == "delete" else piece
    return Case(bytes(wire), case.expected, case.connect, case.close, case.cuts)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_bytes_raise_only_protocol_errors_and_the_split_does_not_matter(
    data: st.DataObject,
) -> None:
    case = data.draw(
        mutated()
        | st.builds(
            lambda b, c: Case(b, ok(), c, False, [0]), st.binary(max_size=200), st.booleans()
        )
    )
    whole = outcome([case.wire], connect=case.connect)
    assert whole is RemoteProtocolError or isinstance(whole, Response)
    assert outcome(bytewise(case.wire), connect=case.connect) == whole
    assert outcome(data.draw(splits(case)), connect=case.connect) == whole


# --- the fast path: a read holding exactly one whole chunk -----------------------------------------


def state(parser: ResponseParser) -> tuple[object, ...]:
    return (parser._state, parser._chunk, parser._left, parser._buf, parser.finished)


def feed_bytewise(parser: ResponseParser, data: bytes) -> bytes:
    return b"".join(parser.feed(data[i : i + 1]) for i in range(len(data)))


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6),
    data=st.data(),
)
def test_a_read_of_one_whole_chunk_gives_what_bytes_one_by_one_give(
    payloads: list[bytes], data: st.DataObject
) -> None:
    fast, slow = ResponseParser(), ResponseParser()
    assert fast.feed(CHUNKED) == feed_bytewise(slow, CHUNKED) == b""
    for payload in payloads:
        read = data.draw(size_lines(len(payload))) + b"\r\n" + payload + b"\r\n"
        assert fast.feed(read) == payload
        assert feed_bytewise(slow, read) == payload
        assert state(fast) == state(slow)
        assert not fast.finished
    end = data.draw(size_lines(0)) + b"\r\n\r\n"
    assert fast.feed(end) == feed_bytewise(slow, end) == b""
    assert fast.finished and slow.finished


@pytest.mark.parametrize(
    "payload",
    [
        b"x",
        b"\r\n",
        b"\r\n\r\n",
        b"0\r\n\r\n",
        b"5\r\nhello\r\n",  # a whole chunk, as data
        b"a\r\n",
        b"hello\r\n0\r\n",
        bytes(range(256)) * 4,
    ],
)
@pytest.mark.parametrize(
    "size_line", [b"%x", b"%X", b"%04x", b"%x;ext=1", b"%x ; a-much-longer-ext"]
)
def test_the_fast_path_on_tricky_chunks(payload: bytes, size_line: bytes) -> None:
    read = size_line % len(payload) + b"\r\n" + payload + b"\r\n"
    fast, slow = ResponseParser(), ResponseParser()
    fast.feed(CHUNKED)
    slow.feed(CHUNKED)
    for _ in range(3):
        assert fast.feed(read) == feed_bytewise(slow, read) == payload
        assert state(fast) == state(slow)
    assert fast.feed(b"0\r\n\r\n") == b""
    assert fast.finished


def test_a_whole_chunk_after_a_partial_size_line() -> None:
    parser = ResponseParser()
    assert parser.feed(CHUNKED + b"1") == b""
    assert parser.feed(b"0\r\n" + b"x" * 16 + b"\r\n") == b"x" * 16
    assert parser.feed(b"2\r\nhi\r\n") == b"hi"
    assert parser.feed(b"0\r\n\r\n") == b""
    assert parser.finished


@pytest.mark.parametrize(
    "read",
    [
        b"5\r\nhello\r\n2",  # one chunk and the start of the next
        b"5\r\nhello\r\n2\r\nhi\r\n",  # two chunks
        b"5\r\nhello\r",  # one byte short
        b"5\r\nhello\r\n0\r\n\r\n",  # the last chunk too
    ],
)
def test_reads_that_are_not_exactly_one_chunk(read: bytes) -> None:
    fast, slow = ResponseParser(), ResponseParser()
    fast.feed(CHUNKED)
    slow.feed(CHUNKED)
    assert fast.feed(read) == feed_bytewise(slow, read)
    assert state(fast) == state(slow)


@pytest.mark.parametrize(
    "read",
    [
        b"0x5\r\nhello\r\n",
        b"+5\r\nhello\r\n",
        b"5\r\nhelloo\r\n",  # one byte longer than it says: not one whole chunk
        b"5\r\nhell\r\n",  # one byte shorter
        b"7\r\nhello\r\n\r\n",  # the right length, its data ending in CRLF: a valid chunk
    ],
)
def test_the_fast_path_rejects_what_the_general_path_rejects(read: bytes) -> None:
    results: list[tuple[bytes, object]] = []
    for chunks in ([read], bytewise(read)):
        parser = ResponseParser()
        parser.feed(CHUNKED)
        body: list[bytes] = []
        try:
            for c in chunks:
                body.append(parser.feed(c))
        except RemoteProtocolError:
            results.append((b"".join(body), "error"))
        else:
            verdict = state(parser) if parser.error is None else "error"
            results.append((b"".join(body), verdict))
    assert results[0] == results[1]


# --- request_head ----------------------------------------------------------------------------------


def test_request_head_bytes() -> None:
    head = request_head(
        "POST",
        "/v1/chat/completions?api-version=1",
        "api.test:8443",
        [("Authorization", "Bearer sk-1"), ("accept", "text/event-stream"), ("x-empty", "")],
        1234,
    )
    assert head == (
        b"POST /v1/chat/completions?api-version=1 HTTP/1.1\r\n"
        b"host: api.test:8443\r\n"
        b"Authorization: Bearer sk-1\r\n"
        b"accept: text/event-stream\r\n"
        b"x-empty: \r\n"
        b"content-length: 1234\r\n"
        b"\r\n"
    )


def test_request_head_without_headers_or_body() -> None:
    assert request_head("POST", "/", "h", [], 0) == (
        b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"
    )


def test_request_head_takes_any_iterable_of_pairs() -> None:
    headers = {"a": "1", "b": "2"}
    expected = b"POST / HTTP/1.1\r\nhost: h\r\na: 1\r\nb: 2\r\ncontent-length: 3\r\n\r\n"
    assert request_head("POST", "/", "h", headers.items(), 3) == expected
    assert request_head("POST", "/", "h", iter(headers.items()), 3) == expected


def test_request_head_values_are_latin_1() -> None:
    head = request_head("POST", "/", "h", [("x", "caf\xe9\t!")], 0)
    assert b"\r\nx: caf\xe9\t!\r\n" in head


@pytest.mark.parametrize(
    "value",
    ["a\rb", "a\nb", "a\r\nb", "\r\n", "\n", "x\r\ninjected: 1", "x\r\n\r\nGET /"],
)
def test_request_head_rejects_line_breaks_in_values(value: str) -> None:
    with pytest.raises(LocalProtocolError, match="contains a line break"):
        request_head("POST", "/", "h", [("ok", "1"), ("x-value", value)], 0)


def test_request_head_rejects_a_nul_in_a_value() -> None:
    with pytest.raises(LocalProtocolError, match="contains a NUL"):
        request_head("POST", "/", "h", [("x-value", "a\x00b")], 0)


@pytest.mark.parametrize("char", [*map(chr, range(1, 9)), *map(chr, range(11, 32)), "\x7f"])
def test_request_head_rejects_control_characters_in_values(char: str) -> None:
    """RFC 9110 5.5: a value is visible characters, SP, HTAB and obs-text. h11 lets some
    control characters through as a server (uvicorn's h11 passes ``\\x01``); a
    relay is a sender, and sends none."""
    if char in "\r\n":
        return
    with pytest.raises(LocalProtocolError, match="contains a control character"):
        request_head("POST", "/", "h", [("x-value", f"a{char}b")], 0)


def test_request_head_accepts_every_valid_value_character() -> None:
    value = "".join(map(chr, [9, *range(0x20, 0x7F), *range(0x80, 0x100)]))
    head = request_head("POST", "/", "h", [("x", value)], 0)
    assert b"\r\nx: " + value.encode("latin-1") + b"\r\n" in head


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", ""),
        ("POST", "/a b"),
        ("POST", "/a\r\nx: 1"),
        ("POST", "/a\nb"),
        ("POST", "/\x00"),
        ("POST", "/caf\xe9"),
        ("POST", "/\u20ac"),
        ("POST", "/a\tb"),
        ("PO ST", "/"),
        ("", "/"),
        ("POST\r\n", "/"),
    ],
)
def test_request_head_rejects_an_invalid_request_line(method: str, target: str) -> None:
    """A path the application built (``Upstream.request(path)``) with a space or a line
    break would otherwise split the request line, or the request."""
    with pytest.raises(LocalProtocolError, match="invalid request line"):
        request_head(method, target, "h", [], 0)


@pytest.mark.parametrize("host", ["a\r\nx: 1", "a\x00", "\u20ac"])
def test_request_head_checks_the_host(host: str) -> None:
    with pytest.raises(LocalProtocolError, match="header 'host'"):
        request_head("POST", "/", host, [], 0)


def test_local_and_remote_protocol_errors_are_both_protocol_errors() -> None:
    """As h11's: one base the decoders raise, and two subclasses that say whose mistake
    it is, which the native transport maps differently (400 or 500 versus 502)."""
    assert issubclass(LocalProtocolError, ProtocolError)
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    with pytest.raises(RemoteProtocolError):
        ResponseParser().feed(b"HTTP/9 200 OK\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        ResponseParser().feed_eof()


@pytest.mark.parametrize(
    ("name", "value", "what"),
    [
        ("x-secret", "sk-12345\r\nx: 1", "a line break"),
        ("x-secret", "sk-12345\x00", "a NUL"),
        ("x-secret", "sk-12345\x01", "a control character"),
        ("x-secret", "sk-12345\u20ac", "a character outside latin-1"),
    ],
)
def test_check_header_names_the_header_and_the_character_never_the_value(
    name: str, value: str, what: str
) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        check_header(name, value)
    message = str(caught.value)
    assert f"header 'x-secret' contains {what}" in message
    assert "sk-12345" not in message


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "x y",
        "x:y",
        "x:",
        "x\r\n",
        "x\n",
        "x\x00",
        "x\t",
        "(x)",
        "a/b",
        "x@y",
        "{x}",
        "\xe9",
        "\u20ac",
        "x\x7f",
    ],
)
def test_request_head_rejects_invalid_header_names(name: str) -> None:
    with pytest.raises(LocalProtocolError, match="invalid header name"):
        request_head("POST", "/", "h", [("ok", "1"), (name, "v")], 0)


def test_request_head_accepts_every_token_character() -> None:
    head = request_head("POST", "/", "h", [(_TCHARS, "v")], 0)
    assert f"\r\n{_TCHARS}: v\r\n".encode() in head


# --- the module's examples ----------------------------------------------------------------------


def test_doctests() -> None:
    result = doctest.testmod(source_module(_http1))
    assert result.attempted > 0
    assert result.failed == 0


def test_body_bytes_before_invalid_framing_in_the_same_read_are_not_lost() -> None:
    parser = ResponseParser()
    assert parser.feed(CHUNKED + b"2\r\nhi\r\nzz\r\n") == b"hi"
    assert parser.error is not None and "chunk-size" in str(parser.error)
    with pytest.raises(RemoteProtocolError, match="chunk-size"):
        parser.feed(b"2\r\nho\r\n")
    with pytest.raises(RemoteProtocolError, match="chunk-size"):
        parser.feed_eof()
    # the same for a Content-Length body that runs over
    parser = ResponseParser()
    assert parser.feed(LENGTH_5 + b"hello, world") == b"hello"
    assert parser.error is not None and "Content-Length" in str(parser.error)


def test_a_status_below_100_is_rejected() -> None:
    for line in (b"HTTP/1.1 000 Zero", b"HTTP/1.1 099 Low"):
        with pytest.raises(RemoteProtocolError, match="status line"):
            ResponseParser().feed(line + b"\r\ncontent-length: 0\r\n\r\n")


def test_request_head_without_a_body_has_no_content_length() -> None:
    head = request_head("CONNECT", "api.test:443", "api.test:443", [], None)
    assert head == b"CONNECT api.test:443 HTTP/1.1\r\nhost: api.test:443\r\n\r\n"


def test_request_head_rejects_a_value_that_is_not_latin_1() -> None:
    with pytest.raises(LocalProtocolError, match="outside latin-1"):
        request_head("POST", "/", "h", [("x-name", "\u20ac")], 0)
