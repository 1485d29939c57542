"""streamrelay.token_template: the learned shape reads exactly what the full path reads.

The main check is differential: generated streams (token chunks whose text holds
anything, quotes, backslashes, control characters and astral characters included,
written with and without escapes; fields that change mid-stream; role, finish,
usage, tool-call, two-choice and error chunks) go through one transcoder that reads
by the learned shape and one that parses every chunk, and every output byte, event
count, ending and stored record must agree.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamrelay.formats import FORMATS, encoder_for
from streamrelay.token_template import _MAX_LEARNED, TokenTemplate
from streamrelay.transcoder import Transcoder


def chunk(
    text: str, *, id: str = "c1", model: str = "m", created: int = 1, extra: Any = None
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    if extra is not None:
        obj["x_extra"] = extra
    return obj


def write(obj: Any, style: int) -> bytes:
    if style == 0:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    if style == 1:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()
    return json.dumps(obj, ensure_ascii=False).encode()  # with spaces


texts = st.one_of(
    st.sampled_from(
        [" the", " fox", "x", "y", "", '"', "\\", "a\nb", "é", "🙂", "\x7f", "m", "\u2028", "\x85"]
    ),
    st.text(max_size=6),
)
plain_texts = st.sampled_from([" the", " fox", " quick", "é", "🙂", "\u2028", " a\x85"])
token_chunks = st.builds(
    chunk,
    texts,
    id=st.sampled_from(["c1", "c1", "c1", "c2"]),
    model=st.sampled_from(["m", "m", "m", " the", "x"]),
    created=st.sampled_from([1, 1, 1, 2]),
    extra=st.sampled_from([None, None, None, {"content": " the"}, {"content": "x"}]),
)
other_chunks = st.sampled_from(
    [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {
            "id": "c1",
            "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "x"}}],
        },
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            "id": "c1",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}],
        },
        {
            "id": "c1",
            "model": "m",
            "choices": [
                {"index": 0, "delta": {"content": "x"}},
                {"index": 1, "delta": {"content": "y"}},
            ],
        },
        {
            "id": "c1",
            "model": "m",
            "choices": [{"index": 1, "delta": {"content": "x"}, "finish_reason": None}],
        },
        {
            "id": "c1",
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        },
        {
            "id": "c1",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ]
                    },
                }
            ],
        },
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"reasoning_content": "r"}}]},
        {"error": {"message": "overloaded", "code": "overloaded"}},
    ]
)
streams = st.one_of(
    st.lists(
        st.tuples(st.one_of(token_chunks, token_chunks, other_chunks), st.integers(0, 2)),
        max_size=14,
    ),
    # a steady stream, as real upstreams write them: mostly read by the learned shape
    st.lists(
        st.tuples(
            st.one_of(st.builds(chunk, plain_texts), st.builds(chunk, plain_texts), other_chunks),
            st.just(0),
        ),
        min_size=3,
        max_size=10,
    ),
)


def events(stream: list[tuple[dict[str, Any], int]], done: bool) -> list[bytes]:
    out = [b"data: " + write(obj, style) + b"\n\n" for obj, style in stream]
    return [*out, b"data: [DONE]\n\n"] if done else out


@settings(max_examples=300, deadline=None)
@given(
    stream=streams,
    done=st.booleans(),
    fmt=st.sampled_from(sorted(FORMATS)),
    record=st.booleans(),
)
def test_reading_by_the_learned_shape_gives_what_the_full_path_gives(
    stream: list[tuple[dict[str, Any], int]], done: bool, fmt: str, record: bool
) -> None:
    fast = Transcoder(encoder_for(fmt, now=0.0))
    full = Transcoder(encoder_for(fmt, now=0.0), templates=False)
    if record:
        fast.record()
        full.record()
    for data in events(stream, done):
        assert fast.feed_bytes(data) == full.feed_bytes(data)
    assert fast.end() == full.end()
    for name in ("events_out", "terminated", "error", "tokens", "records", "model", "usage"):
        assert getattr(fast, name) == getattr(full, name), name


def test_a_plain_stream_is_read_by_its_shape_after_the_first_token() -> None:
    """Guards the test above against a template that never matches (it would pass too)."""
    template = TokenTemplate()
    first = write(chunk(" the"), 0)
    template.learn(first, json.loads(first), 0, " the")
    assert template.read(write(chunk(" quick"), 0)) == " quick"
    assert template.read(write(chunk("🙂 ok"), 0)) == "🙂 ok"
    assert template.read(write(chunk("🙂"), 1)) is None  # escaped: the full path's


def test_the_text_must_be_plain_and_not_empty_and_the_rest_identical() -> None:
    template = TokenTemplate()
    first = write(chunk(" the"), 0)
    template.learn(first, json.loads(first), 0, " the")
    for text in ("", 'a"b', "a\\b", "a\nb", "\x00"):
        assert template.read(write(chunk(text), 0)) is None, text
    assert template.read(write(chunk(" x", id="c2"), 0)) is None
    assert template.read(write(chunk(" x", created=2), 0)) is None
    assert template.read(write(chunk(" x"), 2)) is None  # spaces: another shape
    assert template.read(b"\xff" + first[1:]) is None


def test_a_text_found_elsewhere_in_the_chunk_is_not_learned() -> None:
    """The model is named like the token: the position is ambiguous, so no shape."""
    template = TokenTemplate()
    first = write(chunk(" the", model=" the"), 0)
    template.learn(first, json.loads(first), 0, " the")
    assert template.prefix is None


def test_a_text_written_with_escapes_is_not_learned_from_another_field() -> None:
    """The token is written escaped and a plain copy sits in another field: the probe
    shows the position is not the token's, so no shape is learned."""
    template = TokenTemplate()
    obj = chunk(" the", extra={"content": " the"})
    first = write(obj, 0).replace(
        b'"delta":{"content":" the"}', b'"delta":{"content":"\\u0020the"}'
    )
    assert json.loads(first) == obj
    template.learn(first, obj, 0, " the")
    assert template.prefix is None


def test_a_stream_that_keeps_changing_shape_stops_being_learned() -> None:
    template = TokenTemplate()
    for n in range(_MAX_LEARNED + 2):
        data = write(chunk(" the", created=n), 0)
        template.learn(data, json.loads(data), 0, " the")
    assert template.prefix is None
    assert template.read(write(chunk(" x", created=_MAX_LEARNED + 1), 0)) is None


def test_the_transcoder_parses_only_the_chunks_that_are_not_the_usual_token(
    monkeypatch: Any,
) -> None:
    import streamrelay.transcoder as transcoder

    parsed: list[str] = []
    loads = transcoder._json.loads
    monkeypatch.setattr(transcoder._json, "loads", lambda text: parsed.append(text) or loads(text))
    t = Transcoder(encoder_for("ndjson", now=0.0))
    role = {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    out = [t.feed_bytes(b"data: " + write(role, 0) + b"\n\n")]
    for text in (" the", " quick", " brown", 'say "hi"', " fox"):
        out.append(t.feed_bytes(b"data: " + write(chunk(text), 0) + b"\n\n"))
    assert b"".join(out).decode().splitlines()[-4:] == [
        '{"type":"delta","index":0,"text":" quick"}',
        '{"type":"delta","index":0,"text":" brown"}',
        '{"type":"delta","index":0,"text":"say \\"hi\\""}',
        '{"type":"delta","index":0,"text":" fox"}',
    ]
    # the role chunk, the first token and the probe learning from it, the escaped one
    assert len(parsed) == 4
