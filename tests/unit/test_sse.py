"""The SSE codec on its own: :class:`SSEDecoder` and :func:`encode_event`.

The decoder is sans-I/O, so every property is checked by feeding bytes split in
every way that matters: whole, byte by byte, at every cut point, and at random
cut points (hypothesis). Round trips through the encoders live in
``test_roundtrip.py``.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splits import bytewise, every_split, random_splits
from streamrelay.errors import EventTooLarge, ProtocolError, StreamRelayError
from streamrelay.sse import DEFAULT_MAX_EVENT_BYTES, ServerSentEvent, SSEDecoder, encode_event

BOM = b"\xef\xbb\xbf"


def ev(data: str, event: str = "message", id: str | None = None, retry: int | None = None):
    return ServerSentEvent(data, event, id, retry)


def decode(chunks: Iterable[bytes], **kwargs: int) -> list[ServerSentEvent]:
    """Feed every chunk, then close; return all events."""
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.close()
    return events


def decode_until_error(
    chunks: Iterable[bytes], **kwargs: int
) -> tuple[list[ServerSentEvent], type[Exception] | None]:
    """Feed until the decoder raises; return the events and the error's type."""
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
        events += decoder.close()
    except StreamRelayError as exc:
        return events, type(exc)
    return events, None


def assert_split_invariant(data: bytes, expected: Sequence[ServerSentEvent]) -> None:
    for chunks in every_split(data):
        assert decode(chunks) == list(expected), chunks


# --- basics ---------------------------------------------------------------------


def test_single_event() -> None:
    assert decode([b"data: hello\n\n"]) == [ev("hello")]


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [ev("a")]
    assert decoder.feed(b"data: b\n\ndata: c\n\ndata: d") == [ev("b"), ev("c")]
    assert decoder.feed(b"\n\n") == [ev("d")]


def test_empty_feed_is_a_no_op() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b"data: x\n") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\n") == [ev("x")]


@pytest.mark.parametrize("nl", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_line_endings(nl: bytes) -> None:
    data = b"event: delta" + nl + b"data: a" + nl + b"data: b" + nl + nl + b"data: c" + nl + nl
    assert_split_invariant(data, [ev("a\nb", "delta"), ev("c")])


def test_mixed_line_endings() -> None:
    data = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\rdata: e\n\n"
    assert_split_invariant(data, [ev("a\nb\nc"), ev("d"), ev("e")])


def test_cr_at_chunk_end_then_lf_is_one_line_break() -> None:
    # If the CR and the LF counted as two line ends, "a" would be dispatched alone.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [ev("a\nb")]
    assert decoder.feed(b"\n") == []  # the LF of the blank line's CRLF
    assert decoder.feed(b"data: c\n\n") == [ev("c")]


def test_cr_at_chunk_end_survives_empty_feeds() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [ev("a\nb")]


def test_cr_cr_across_chunks_is_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [ev("a")]


def test_lone_cr_then_other_bytes_across_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"data: b\r\r") == [ev("a\nb")]


# --- BOM --------------------------------------------------------------------------


def test_bom_is_stripped() -> None:
    assert_split_invariant(BOM + b"data: x\n\n", [ev("x")])


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_bom_split_across_feeds(cut: int) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(BOM[:cut]) == []
    assert decoder.feed(BOM[cut:]) == []
    assert decoder.feed(b"data: x\n\n") == [ev("x")]


def test_bom_arriving_one_byte_at_a_time_with_empty_feeds() -> None:
    decoder = SSEDecoder()
    for piece in (b"\xef", b"", b"\xbb", b"", b"\xbf", b"data: x\n", b"\n"):
        events = decoder.feed(piece)
    assert events == [ev("x")]


def test_only_one_leading_bom_is_stripped() -> None:
    # The second BOM becomes part of the field name, an unknown field: ignored.
    assert decode([BOM + BOM + b"data: x\n\ndata: y\n\n"]) == [ev("y")]


def test_bom_after_the_stream_start_is_not_stripped() -> None:
    assert_split_invariant(b"data: a\n\n" + BOM + b"data: b\n\n", [ev("a")])
    # Inside a value it is content.
    assert decode([b"data: " + BOM + b"b\n\n"]) == [ev("\ufeffb")]


def test_stream_of_only_a_bom_prefix() -> None:
    assert decode([b"\xef\xbb"]) == []
    assert decode([b"\xef", b"\xbb"]) == []


def test_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    # "\xef\xbb" + "x" is not a BOM; the bytes are part of the first line (an
    # unknown field here), which is then ignored rather than stripped.
    assert decode([b"\xef\xbb", b"x\ndata: y\n\n"]) == [ev("y")]
    # In a data value they are invalid UTF-8.
    events, error = decode_until_error([b"data: \xef\xbb", b"x\n\n"])
    assert (events, error) == ([], ProtocolError)


# --- fields -----------------------------------------------------------------------


def test_comments_are_ignored() -> None:
    data = b": stream open\n\n:\n: ping\ndata: a\n: between data lines\ndata: b\n\n:x\n\n"
    assert_split_invariant(data, [ev("a\nb")])


def test_data_without_space() -> None:
    assert decode([b"data:x\n\n"]) == [ev("x")]


def test_only_one_leading_space_is_stripped() -> None:
    assert decode([b"data:  x \n\n"]) == [ev(" x ")]
    assert decode([b"data:\tx\n\n"]) == [ev("\tx")]


def test_multi_line_data_is_joined_with_lf() -> None:
    assert decode([b"data: a\ndata:\ndata: b\ndata: \n\n"]) == [ev("a\n\nb\n")]


def test_empty_data_line_dispatches_an_empty_event() -> None:
    assert decode([b"data:\n\n"]) == [ev("")]
    assert decode([b"data: \n\n"]) == [ev("")]
    assert decode([b"data\n\n"]) == [ev("")]  # a field name without a colon
    assert decode([b"data:\ndata:\n\n"]) == [ev("\n")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert decode([b"\n\n\n\r\n\r\r"]) == []
    assert decode([b"event: x\n\n\n"]) == []
    assert decode([b"id: 1\n\n"]) == []


def test_event_field() -> None:
    data = b"event: delta\ndata: a\n\ndata: b\n\nevent:\ndata: c\n\n"
    assert decode([data]) == [ev("a", "delta"), ev("b"), ev("c")]


def test_event_type_is_reset_by_a_blank_line_without_data() -> None:
    assert decode([b"event: x\n\ndata: a\n\n"]) == [ev("a")]


def test_last_event_type_wins() -> None:
    assert decode([b"event: a\nevent: b\ndata: x\n\n"]) == [ev("x", "b")]


def test_id_field_persists_like_the_last_event_id_buffer() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    events = decoder.feed(b"id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
    assert events == [ev("a", id="7"), ev("b", id="7"), ev("c", id="")]
    assert decoder.last_event_id == ""


def test_id_without_data_still_sets_the_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 42\n\n") == []
    assert decoder.last_event_id == "42"
    assert decoder.feed(b"data: x\n\n") == [ev("x", id="42")]


def test_id_with_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert events == [ev("a", id="1"), ev("b", id="1")]
    assert decoder.last_event_id == "1"


def test_retry_field() -> None:
    data = b"retry: 3000\ndata: a\n\ndata: b\n\nretry: 3s\ndata: c\n\nretry:\ndata: d\n\n"
    assert decode([data]) == [ev("a", retry=3000), ev("b"), ev("c"), ev("d")]


def test_retry_does_not_leak_past_a_blank_line_without_data() -> None:
    # Regression: "retry" in a block without data used to attach to the next event.
    assert decode([b"retry: 5\n\ndata: x\n\n"]) == [ev("x")]


def test_retry_rejects_non_ascii_digits() -> None:
    assert decode(["retry: \u0661\u0662\ndata: x\n\n".encode()]) == [ev("x")]


def test_unknown_fields_are_ignored() -> None:
    data = b"foo: bar\nDATA: no\nData: no\ndata : no\nx\ndata: yes\nevent2: z\n\n"
    assert decode([data]) == [ev("yes")]


def test_field_values_may_contain_colons() -> None:
    assert decode([b"data: a: b:c\nevent: x:y\n\n"]) == [ev("a: b:c", "x:y")]


def test_nul_and_control_characters_in_data_are_kept() -> None:
    assert decode([b"data: a\x00b\x0bc\x0cd\x1c\x7f\n\n"]) == [ev("a\x00b\x0bc\x0cd\x1c\x7f")]


def test_unicode_line_separators_are_not_line_breaks() -> None:
    text = "a\u2028b\u2029c\x85d"
    assert decode([b"data: " + text.encode() + b"\n\n"]) == [ev(text)]


# --- UTF-8 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["😀", "中文字符", "é", "👩\u200d👩\u200d👧", "a😀b中c"],
    ids=["emoji", "cjk", "latin", "zwj", "mixed"],
)
def test_multibyte_utf8_split_at_every_byte(text: str) -> None:
    data = f"event: {text}\nid: {text}\ndata: {text}\ndata: {text}\n\n".encode()
    assert_split_invariant(data, [ev(f"{text}\n{text}", text, text)])


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff",
        b"\xc3",  # truncated two-byte sequence
        b"\xe4\xb8",  # truncated three-byte sequence
        b"\xc0\xaf",  # overlong encoding of "/"
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    ],
)
def test_invalid_utf8_in_data_is_a_protocol_error(raw: bytes) -> None:
    for chunks in every_split(b"data: ok\n\ndata: a" + raw + b"\n\n"):
        events, error = decode_until_error(chunks)
        assert events == [ev("ok")]
        assert error is ProtocolError


def test_invalid_utf8_in_event_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        SSEDecoder().feed(b"event: \xff\ndata: x\n\n")


def test_invalid_utf8_in_id_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        SSEDecoder().feed(b"id: \xff\n\n")


def test_invalid_utf8_where_it_is_never_decoded_is_ignored() -> None:
    # Comments and unknown fields are dropped without decoding.
    assert decode([b": \xff\xfe\nx-\xff: \xff\ndata: ok\n\n"]) == [ev("ok")]


def test_invalid_utf8_error_is_a_stream_relay_error_with_a_code() -> None:
    with pytest.raises(StreamRelayError) as info:
        SSEDecoder().feed(b"data: \xff\n\n")
    assert isinstance(info.value, ProtocolError)
    assert info.value.code == "upstream_invalid"
    assert "UTF-8" in str(info.value)


# --- errors: sticky, deferred, never lost -------------------------------------------


def test_events_before_a_fault_in_the_same_chunk_are_returned() -> None:
    # Regression: the good event used to be lost with the exception.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: good\n\ndata: \xff\n\n") == [ev("good")]
    assert isinstance(decoder.error, ProtocolError)
    with pytest.raises(ProtocolError):
        decoder.feed(b"data: more\n\n")


def test_deferred_error_is_raised_by_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: good\n\ndata: \xff\n\n") == [ev("good")]
    with pytest.raises(ProtocolError):
        decoder.close()


def test_a_failed_decoder_keeps_raising_the_same_error() -> None:
    decoder = SSEDecoder()
    with pytest.raises(ProtocolError) as first:
        decoder.feed(b"data: \xff\n\n")
    for call in (lambda: decoder.feed(b"data: x\n\n"), lambda: decoder.feed(b""), decoder.close):
        with pytest.raises(ProtocolError) as again:
            call()
        assert again.value is first.value
    assert decoder.error is first.value


def test_repeated_raises_do_not_grow_the_traceback() -> None:
    decoder = SSEDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"data: \xff\n\n")
    depths = []
    for _ in range(3):
        try:
            decoder.feed(b"x")
        except ProtocolError as exc:
            tb, depth = exc.__traceback__, 0
            while tb is not None:
                tb, depth = tb.tb_next, depth + 1
            depths.append(depth)
    assert depths[0] == depths[1] == depths[2]


def test_error_is_none_on_a_healthy_decoder() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: x\n\n")
    assert decoder.error is None


# --- limits and bounded memory -----------------------------------------------------


def test_default_limit() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 8 * 1024 * 1024


def test_line_at_the_limit_is_accepted_and_one_more_byte_is_not() -> None:
    limit = 16
    at = b"data: " + b"x" * (limit - 6)  # a 16-byte line
    for chunks in every_split(at + b"\n\n"):
        assert decode(chunks, max_event_bytes=limit) == [ev("x" * 10)]
    over = b"data: " + b"x" * (limit - 5)
    for chunks in every_split(over + b"\n\n"):
        assert decode_until_error(chunks, max_event_bytes=limit) == ([], EventTooLarge)


def test_oversize_unterminated_line_raises_while_feeding() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    decoder.feed(b"data: ")
    with pytest.raises(EventTooLarge) as info:
        for _ in range(100):
            decoder.feed(b"x" * 100)
    assert info.value.code == "event_too_large"
    assert isinstance(info.value, ProtocolError)


def test_oversize_line_in_one_chunk_raises() -> None:
    with pytest.raises(EventTooLarge):
        SSEDecoder(max_event_bytes=100).feed(b"data: " + b"x" * 200)
    with pytest.raises(EventTooLarge):
        SSEDecoder(max_event_bytes=100).feed(b"data: " + b"x" * 200 + b"\n\n")


def test_oversize_comment_line_counts_too() -> None:
    # The limit is on lines, whatever their field: otherwise the outcome would
    # depend on how the bytes were split (regression: it did).
    data = b": " + b"c" * 50 + b"\ndata: x\n\n"
    for chunks in every_split(data):
        assert decode_until_error(chunks, max_event_bytes=20) == ([], EventTooLarge)


def test_oversize_line_after_good_events_in_one_chunk() -> None:
    data = b"data: a\n\n: " + b"c" * 50 + b"\ndata: b\n\n"
    for chunks in every_split(data):
        assert decode_until_error(chunks, max_event_bytes=20) == ([ev("a")], EventTooLarge)


def test_oversize_event_made_of_many_lines() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            decoder.feed(b"data: 0123456789\n")


def test_event_limit_counts_the_joining_newlines() -> None:
    # Ten 9-byte values joined by newlines make 99 bytes: fits in 100.
    data = b"data: 123456789\n" * 10 + b"\n"
    assert decode([data], max_event_bytes=100) == [ev("\n".join(["123456789"] * 10))]
    data = b"data: 123456789\n" * 11 + b"\n"
    assert decode_until_error([data], max_event_bytes=100) == ([], EventTooLarge)


def test_limit_is_per_event_not_per_stream() -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    for _ in range(1000):
        assert decoder.feed(b"data: " + b"x" * 50 + b"\n\n") == [ev("x" * 50)]


def _traced_peak(run: object) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert callable(run)
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded_on_an_endless_line() -> None:
    limit = 256 * 1024
    piece = b"x" * 4096

    def run() -> None:
        decoder = SSEDecoder(max_event_bytes=limit)
        decoder.feed(b"data: ")
        with pytest.raises(EventTooLarge):
            for _ in range(16 * 1024 * 1024 // len(piece)):  # up to 16 MiB
                decoder.feed(piece)

    assert _traced_peak(run) < 3 * limit


def test_memory_stays_bounded_on_an_endless_event() -> None:
    limit = 256 * 1024
    piece = (b"data: " + b"x" * 90 + b"\n") * 40

    def run() -> None:
        decoder = SSEDecoder(max_event_bytes=limit)
        with pytest.raises(EventTooLarge):
            for _ in range(16 * 1024 * 1024 // len(piece)):
                decoder.feed(piece)

    # The str pieces of one event cost more than their bytes; still O(limit).
    assert _traced_peak(run) < 6 * limit


def test_memory_does_not_grow_over_a_long_valid_stream() -> None:
    piece = b"data: " + b"x" * 200 + b"\n\n"
    chunk = piece * 20

    def run() -> None:
        decoder = SSEDecoder()
        for _ in range(1000):  # about 4 MiB in total, 20 times the bound below
            decoder.feed(chunk)

    assert _traced_peak(run) < 256 * 1024


def test_a_failed_decoder_drops_its_buffers() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 60 + b"\ndata: " + b"y" * 30)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"z" * 100)
    assert decoder._partial == [] and decoder._data == []


# --- close() ---------------------------------------------------------------------


def test_close_discards_an_unterminated_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\n") == [ev("a")]
    assert decoder.close() == []
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a") == []
    assert decoder.close() == []


def test_close_resets_the_block_state() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"event: x\nretry: 9\ndata: a\r")
    assert decoder.close() == []
    # A reused decoder starts a fresh block (no stale event type, retry, or CR).
    assert decoder.feed(b"\ndata: b\n\n") == [ev("b")]


def test_close_on_a_fresh_decoder() -> None:
    assert SSEDecoder().close() == []


# --- hypothesis: split invariance, arbitrary bytes, bounded state -------------------

_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=12,
)
_name = st.sampled_from(["data", "event", "id", "retry", "foo", ""])
_line = st.one_of(
    st.tuples(_name, _value).map(lambda nv: f"{nv[0]}:{nv[1]}" if nv[0] else f":{nv[1]}"),
    st.tuples(_name, _value).map(lambda nv: f"{nv[0]}: {nv[1]}"),
    st.sampled_from(["data", "event", "id", "retry: 10", "retry: x", ""]),
)
_nl = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    """Valid UTF-8 event streams using every field, comment and line ending."""
    out = ["\ufeff"] if draw(st.booleans()) else []
    for line in draw(st.lists(_line, max_size=20)):
        out.append(line.replace("\x00", "") if line.startswith("id") else line)
        out.append(draw(_nl))
    return "".join(out).encode()


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    if not data:
        return [data]
    return draw(random_splits(data))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_split_of_a_valid_stream_gives_the_same_events(data: st.DataObject) -> None:
    stream = data.draw(sse_streams())
    whole = decode([stream])
    assert decode(data.draw(splits(stream))) == whole
    assert decode(bytewise(stream)) == whole


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_arbitrary_bytes_raise_only_library_errors_and_split_does_not_matter(
    data: st.DataObject,
) -> None:
    stream = data.draw(
        st.one_of(
            st.binary(max_size=300),
            # valid-looking streams with a few corrupted bytes
            st.tuples(sse_streams(), st.binary(min_size=1, max_size=4), st.integers(0, 400)).map(
                lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
            ),
        )
    )
    limit = data.draw(st.sampled_from([8, 32, 1024]))
    whole = decode_until_error([stream], max_event_bytes=limit)
    split = decode_until_error(data.draw(splits(stream)), max_event_bytes=limit)
    # Same events before the failure and the same failure, however it was split.
    assert split == whole
    assert decode_until_error(bytewise(stream), max_event_bytes=limit) == whole


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_buffered_state_never_exceeds_the_limit(data: st.DataObject) -> None:
    limit = data.draw(st.integers(4, 64))
    stream = data.draw(st.one_of(sse_streams(), st.binary(max_size=400)))
    decoder = SSEDecoder(max_event_bytes=limit)
    for chunk in data.draw(splits(stream)):
        try:
            decoder.feed(chunk)
        except StreamRelayError:
            assert decoder._partial_size == 0 and decoder._data_size == 0
            return
        assert sum(map(len, decoder._partial)) == decoder._partial_size <= limit
        assert decoder._data_size <= limit
        assert sum(len(d.encode("utf-8")) + 1 for d in decoder._data) == decoder._data_size


# --- encode_event -------------------------------------------------------------------


def test_encode_event_data_only() -> None:
    assert encode_event("hi") == b"data: hi\n\n"
    assert encode_event("") == b"data: \n\n"


def test_encode_event_all_fields_in_order() -> None:
    assert encode_event("a\nb", event="delta", id="7", retry=1500) == (
        b"id: 7\nevent: delta\nretry: 1500\ndata: a\ndata: b\n\n"
    )


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        ("a\nb", [b"a", b"b"]),
        ("a\rb", [b"a", b"b"]),
        ("a\r\nb", [b"a", b"b"]),
        ("a\n\rb", [b"a", b"", b"b"]),
        ("a\n", [b"a", b""]),
        ("\n", [b"", b""]),
        ("\r\n\r\n", [b"", b"", b""]),
    ],
)
def test_encode_event_splits_every_line_break(data: str, lines: list[bytes]) -> None:
    assert encode_event(data) == b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def test_encode_event_cannot_forge_fields() -> None:
    forged = "x\n\nevent: evil\nid: 666\ndata: [DONE]\n\n"
    assert decode([encode_event(forged, event="ok")]) == [
        ev("x\n\nevent: evil\nid: 666\ndata: [DONE]\n\n", "ok")
    ]


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\n"])
def test_encode_event_refuses_line_breaks_in_event_and_id(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        encode_event("x", **{field: bad})  # type: ignore[arg-type]


def test_encode_event_refuses_nul_in_id() -> None:
    # A decoder would ignore the whole id line.
    with pytest.raises(ValueError):
        encode_event("x", id="a\x00b")


def test_encode_event_lone_surrogates_become_question_marks() -> None:
    # Documented: text that cannot be UTF-8 is replaced, never an exception.
    assert encode_event("a\ud800b", event="e\udfff") == b"event: e?\ndata: a?b\n\n"
