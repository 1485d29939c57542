"""The wire formats as sans-I/O encoders: exact bytes for every event type, and the registry."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from httpx._decoders import LineDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrelay import _json
from streamrelay import formats as formats_package
from streamrelay.errors import ConfigurationError, UnsupportedFormat
from streamrelay.events import (
    Delta,
    Done,
    Error,
    Event,
    Finish,
    Reasoning,
    Refusal,
    Start,
    ToolCall,
    Usage,
)
from streamrelay.formats import (
    ACCEPT_TYPES,
    FORMATS,
    Encoder,
    NDJSONEncoder,
    OpenAIEncoder,
    SSEEncoder,
    TextEncoder,
    encoder_for,
    register,
)
from streamrelay.negotiation import MEDIA_TYPES, format_param, negotiate
from streamrelay.sse import SSEDecoder

EVERY_EVENT: list[Event] = [
    Start("chatcmpl-1", "gpt-4o-mini"),
    Delta(0, "Hi"),
    Refusal(0, "No"),
    ToolCall(0, 0, "", id="call_1", name="f"),
    ToolCall(0, 0, '{"a":1}'),
    Finish(0, "stop"),
    Usage(1, 2, 3),
    Error("boom", "upstream_timeout"),
    Error("bad", "BadRequestError", 400),
    Done(),
]


# --- the registry ---------------------------------------------------------------------


def test_formats_registry() -> None:
    assert list(FORMATS) == ["text", "ndjson", "sse", "openai", "ai-sdk", "ag-ui"]
    for name, cls in FORMATS.items():
        assert cls.name == name


@pytest.mark.parametrize(
    ("name", "media_type", "aborts", "raw"),
    [
        ("text", "text/plain; charset=utf-8", True, False),
        ("ndjson", "application/x-ndjson", False, False),
        ("sse", "text/event-stream", False, False),
        ("openai", "text/event-stream", False, True),
        ("ai-sdk", "text/event-stream", False, False),
        ("ag-ui", "text/event-stream", False, False),
    ],
)
def test_encoder_properties(name: str, media_type: str, aborts: bool, raw: bool) -> None:
    encoder = encoder_for(name, now=0.0)
    assert isinstance(encoder, FORMATS[name])
    assert encoder.media_type == media_type
    assert encoder.aborts_on_error is aborts
    assert encoder.wants_raw is raw


def test_encoder_for_returns_a_fresh_encoder_each_time() -> None:
    a, b = encoder_for("sse", now=0.0), encoder_for("sse", now=0.0)
    assert a is not b
    a.encode([Delta(0, "x")], None)
    assert b.encode([Delta(0, "x")], None).startswith(b"id: 1\n")


def test_encoder_for_unknown_name() -> None:
    with pytest.raises(UnsupportedFormat) as info:
        encoder_for("xml", now=0.0)
    assert info.value.name == "xml"
    assert info.value.supported == ("text", "ndjson", "sse", "openai", "ai-sdk", "ag-ui")
    assert "text, ndjson, sse, openai, ai-sdk, ag-ui" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_encoder_for_requires_the_clock() -> None:
    with pytest.raises(TypeError):
        encoder_for("sse")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        encoder_for("sse", 0.0)  # type: ignore[misc]


# --- each format describes itself ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "accept", "headers", "has_heartbeat"),
    [
        ("text", ("text/plain",), (), False),
        ("ndjson", ("application/x-ndjson", "application/jsonl"), (), True),
        ("sse", ("text/event-stream",), (), True),
        ("openai", ("application/json",), (), True),
        ("ai-sdk", (), ((b"x-vercel-ai-ui-message-stream", b"v1"),), True),
        ("ag-ui", (), (), True),
    ],
)
def test_format_self_description(
    name: str,
    accept: tuple[str, ...],
    headers: tuple[tuple[bytes, bytes], ...],
    has_heartbeat: bool,
) -> None:
    cls = FORMATS[name]
    assert cls.accept == accept
    assert cls.headers == headers
    # The pipeline sends heartbeats only when the format has some.
    assert bool(encoder_for(name, now=0.0).heartbeat()) is has_heartbeat
    assert cls.heartbeat_bytes == encoder_for(name, now=0.0).heartbeat()
    assert cls.preamble_bytes == encoder_for(name, now=0.0).preamble()
    for media in accept:
        assert negotiate(None, media, "text" if name != "text" else "sse") == name


def test_accept_table_is_derived_from_the_classes() -> None:
    assert ACCEPT_TYPES == {
        "text/event-stream": "sse",
        "application/x-ndjson": "ndjson",
        "application/jsonl": "ndjson",
        "text/plain": "text",
        "application/json": "openai",
    }
    assert {media: cls.name for cls in FORMATS.values() for media in cls.accept} == ACCEPT_TYPES
    assert MEDIA_TYPES is ACCEPT_TYPES  # negotiation reads the registry's own table


# --- the clock comes from outside ---------------------------------------------------------------


def test_openai_created_is_the_given_now() -> None:
    body = OpenAIEncoder(now=1234.0).encode([Delta(0, "x")], None)
    assert b'"created":1234,' in body
    assert json.loads(body.removeprefix(b"data: "))["created"] == 1234
    body = encoder_for("openai", now=1234.9).encode([Finish(0, "stop")], None)
    assert json.loads(body.removeprefix(b"data: "))["created"] == 1234  # whole seconds


@pytest.mark.parametrize("name", list(FORMATS))
def test_no_format_reads_the_wall_clock(name: str) -> None:
    with (
        mock.patch("time.time", side_effect=AssertionError("time.time() read")),
        mock.patch("time.time_ns", side_effect=AssertionError("time.time_ns() read")),
    ):
        encoder = encoder_for(name, now=5.0)
        encoder.preamble()
        encoder.heartbeat()
        encoder.encode(EVERY_EVENT, None)
        encoder.encode([Delta(0, "x")], '{"choices":[]}')


def test_the_formats_package_imports_no_clock_and_nothing_third_party() -> None:
    # mypy_extensions: its no-op `mypyc_attr` keeps the compiled build's encoders subclassable.
    allowed = (set(sys.stdlib_module_names) - {"time", "datetime"}) | {"mypy_extensions"}
    package = Path(formats_package.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue  # relative imports stay inside streamrelay
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


# --- adding a format -----------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[None]:
    """Put the registry back as it was after a test registers formats."""
    formats, accept = dict(FORMATS), dict(ACCEPT_TYPES)
    try:
        yield
    finally:
        FORMATS.clear()
        FORMATS.update(formats)
        ACCEPT_TYPES.clear()
        ACCEPT_TYPES.update(accept)


class LinesEncoder(Encoder):
    """A toy format: choice 0's text, one token per line."""

    name = "lines"
    media_type = "text/x-lines; charset=utf-8"
    accept = ("text/x-lines", "application/x-lines")
    headers = ((b"x-lines-version", b"1"),)
    aborts_on_error = True

    def __init__(self, *, now: float) -> None:
        super().__init__(now=now)
        self.now = now

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        return b"".join(
            e.text.encode() + b"\n" for e in events if type(e) is Delta and e.index == 0
        )


def test_a_registered_format_is_negotiable_and_constructed_with_the_clock(registry: None) -> None:
    assert register(LinesEncoder) is LinesEncoder
    assert list(FORMATS) == ["text", "ndjson", "sse", "openai", "ai-sdk", "ag-ui", "lines"]
    assert ACCEPT_TYPES["text/x-lines"] == ACCEPT_TYPES["application/x-lines"] == "lines"
    # by ?format=
    assert negotiate(format_param(b"format=lines"), "text/event-stream", "sse") == "lines"
    assert negotiate(" LINES ", None, "sse") == "lines"
    # by Accept, with q-values, and through negotiation's MEDIA_TYPES
    assert negotiate(None, "text/x-lines", "sse") == "lines"
    assert negotiate(None, "text/plain;q=0.5, application/x-lines;q=0.9", "sse") == "lines"
    assert MEDIA_TYPES["application/x-lines"] == "lines"
    # as a default, covered by its type's wildcard
    assert negotiate(None, "text/*", "lines") == "lines"
    encoder = encoder_for("lines", now=42.5)
    assert isinstance(encoder, LinesEncoder) and encoder.now == 42.5
    assert encoder.encode([Delta(0, "a"), Delta(1, "b"), Delta(0, "c")], None) == b"a\nc\n"
    assert encoder.headers == ((b"x-lines-version", b"1"),)
    assert encoder.preamble() == encoder.heartbeat() == b""
    with pytest.raises(UnsupportedFormat) as info:
        negotiate("xml", None, "sse")
    assert info.value.supported == ("text", "ndjson", "sse", "openai", "ai-sdk", "ag-ui", "lines")


def test_register_works_as_a_decorator(registry: None) -> None:
    @register
    class Shout(Encoder):
        name = "shout"
        media_type = "text/x-shout"

        def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
            return b"".join(e.text.upper().encode() for e in events if type(e) is Delta)

    assert FORMATS["shout"] is Shout
    assert Shout.accept == ()  # selected by ?format= only
    assert negotiate("shout", None, "sse") == "shout"
    assert encoder_for("shout", now=0.0).encode([Delta(0, "hi")], None) == b"HI"


def _toy(**attrs: Any) -> type[Encoder]:
    base: dict[str, Any] = {"name": "toy", "media_type": "text/x-toy"}
    return type("Toy", (Encoder,), {**base, **attrs})


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        (_toy(name="sse"), "already registered"),
        (_toy(name="openai", accept=("text/x-toy",)), "already registered"),
        (_toy(accept=("text/event-stream",)), "already selects 'sse'"),
        (_toy(accept=("text/x-toy", "application/jsonl")), "already selects 'ndjson'"),
        (_toy(accept=("text/x-toy", "text/x-toy")), "each Accept type selects one format"),
        (_toy(name="Toy"), "lowercase format name"),
        (_toy(name=""), "lowercase format name"),
        (_toy(name="a b"), "lowercase format name"),
        (_toy(name="-x"), "lowercase format name"),
        (_toy(name=3), "lowercase format name"),
        (type("Nameless", (Encoder,), {"media_type": "text/x"}), "lowercase format name"),
        (type("Typeless", (Encoder,), {"name": "typeless"}), "media_type"),
        (_toy(media_type=""), "media_type"),
        (_toy(media_type="text/x\r\nx-evil: 1"), "media_type"),
        (_toy(accept="text/x-toy"), "accept must be a tuple"),
        (_toy(accept=("text/*",)), "without parameters or wildcards"),
        (_toy(accept=("*/*",)), "without parameters or wildcards"),
        (_toy(accept=("text/x-toy;q=1",)), "without parameters or wildcards"),
        (_toy(accept=("Text/X-Toy",)), "without parameters or wildcards"),
        (_toy(accept=("toy",)), "without parameters or wildcards"),
        (_toy(headers=[(b"x-a", b"1")]), "headers must be a tuple"),
        (_toy(headers=(("x-a", "1"),)), "(bytes, bytes) pair"),
        (_toy(headers=((b"x-a",),)), "(bytes, bytes) pair"),
        (_toy(headers=((b"X-A", b"1"),)), "lowercase token"),
        (_toy(headers=((b"x a", b"1"),)), "lowercase token"),
        (_toy(headers=((b"content-type", b"text/x"),)), "other than content-type"),
        (_toy(headers=((b"x-a", b"1\r\nx-evil: 1"),)), "line break"),
        (_toy(aborts_on_error=1), "aborts_on_error must be a bool"),
        (_toy(wants_raw="yes"), "wants_raw must be a bool"),
        (_toy(heartbeat_bytes=": ping\n\n"), "heartbeat_bytes must be bytes"),
        (_toy(preamble_bytes=None), "preamble_bytes must be bytes"),
        (object, "Encoder subclass"),
        (TextEncoder(now=0.0), "Encoder subclass"),
    ],
)
def test_register_refuses_and_changes_nothing(registry: None, encoder: Any, message: str) -> None:
    before = dict(FORMATS), dict(ACCEPT_TYPES)
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        register(encoder)
    assert (dict(FORMATS), dict(ACCEPT_TYPES)) == before


def test_a_refused_format_can_be_fixed_and_registered(registry: None) -> None:
    with pytest.raises(ConfigurationError):
        register(_toy(accept=("text/x-toy", "text/plain")))
    assert "text/x-toy" not in ACCEPT_TYPES  # nothing half-registered
    register(_toy(accept=("text/x-toy",)))
    assert negotiate(None, "text/x-toy", "sse") == "toy"


def test_base_encoder() -> None:
    encoder = Encoder(now=0.0)
    assert encoder.preamble() == b"" and encoder.heartbeat() == b""
    with pytest.raises(NotImplementedError):
        encoder.encode([], None)


@pytest.mark.parametrize(
    ("name", "preamble", "heartbeat"),
    [
        ("text", b"", b""),
        ("ndjson", b"", b'{"type":"ping"}\n'),
        ("sse", b": stream open\n", b": ping\n"),
        ("openai", b": stream open\n", b": ping\n"),
        ("ai-sdk", b": stream open\n", b": ping\n"),
        ("ag-ui", b": stream open\n", b": ping\n"),
    ],
)
def test_preamble_and_heartbeat(name: str, preamble: bytes, heartbeat: bytes) -> None:
    encoder = encoder_for(name, now=0.0)
    assert encoder.preamble() == preamble
    assert encoder.heartbeat() == heartbeat
    # SSE clients see both as comments: no event.
    if encoder.media_type == "text/event-stream":
        decoder = SSEDecoder()
        assert decoder.feed(preamble + heartbeat * 3) == []


def test_ndjson_ping_is_one_json_line() -> None:
    assert json.loads(NDJSONEncoder(now=0.0).heartbeat()) == {"type": "ping"}


# --- text ----------------------------------------------------------------------------


def test_text_is_choice_zero_content_only() -> None:
    encoder = TextEncoder(now=0.0)
    assert encoder.encode(EVERY_EVENT, None) == b"Hi"
    assert encoder.encode([Delta(1, "other choice")], None) == b""
    assert encoder.encode([Delta(0, "a"), Delta(1, "b"), Delta(0, "c")], None) == b"ac"
    for event in EVERY_EVENT:
        if not isinstance(event, Delta):
            assert encoder.encode([event], None) == b""


def test_text_ignores_raw() -> None:
    assert TextEncoder(now=0.0).encode([Delta(0, "é")], '{"raw": true}') == "é".encode()


def test_text_lone_surrogate_becomes_question_mark() -> None:
    assert TextEncoder(now=0.0).encode([Delta(0, "a\ud83d")], None) == b"a?"
    assert TextEncoder(now=0.0).encode([Delta(0, "\ud83d"), Delta(0, "\ude00")], None) == b"??"


# --- ndjson ----------------------------------------------------------------------------

NDJSON_LINES = [
    b'{"type":"start","id":"chatcmpl-1","model":"gpt-4o-mini"}',
    b'{"type":"delta","index":0,"text":"Hi"}',
    b'{"type":"refusal","index":0,"text":"No"}',
    b'{"type":"tool_call","index":0,"call":0,"id":"call_1","name":"f","arguments":""}',
    b'{"type":"tool_call","index":0,"call":0,"arguments":"{\\"a\\":1}"}',
    b'{"type":"finish","index":0,"reason":"stop"}',
    b'{"type":"usage","prompt_tokens":1,"completion_tokens":2,"total_tokens":3}',
    b'{"type":"error","message":"boom","code":"upstream_timeout"}',
    b'{"type":"error","message":"bad","code":"BadRequestError","status":400}',
    b'{"type":"done"}',
]


def test_ndjson_exact_lines() -> None:
    assert NDJSONEncoder(now=0.0).encode(EVERY_EVENT, None) == b"".join(
        line + b"\n" for line in NDJSON_LINES
    )


def test_ndjson_one_event_per_call() -> None:
    encoder = NDJSONEncoder(now=0.0)
    for event, line in zip(EVERY_EVENT, NDJSON_LINES, strict=True):
        assert encoder.encode([event], None) == line + b"\n"


def test_ndjson_lines_are_the_event_dicts() -> None:
    body = NDJSONEncoder(now=0.0).encode(EVERY_EVENT, None)
    assert [json.loads(line) for line in body.splitlines()] == [e.to_dict() for e in EVERY_EVENT]


def test_ndjson_delta_fast_path_matches_the_generic_path() -> None:
    for text in ["", "a\nb", '"quoted"', "\\", "中文😀", "\x00\x1f", "\u2028"]:
        fast = NDJSONEncoder(now=0.0).encode([Delta(3, text)], None)
        generic = NDJSONEncoder(now=0.0).encode([Finish(0, "x")], None)  # not the fast path
        assert json.loads(fast) == {"type": "delta", "index": 3, "text": text}
        assert generic.endswith(b"\n")


def test_ndjson_ignores_raw_and_empty_input() -> None:
    assert NDJSONEncoder(now=0.0).encode([], '{"x":1}') == b""
    assert NDJSONEncoder(now=0.0).encode([Delta(0, "a")], '{"x":1}') == (
        b'{"type":"delta","index":0,"text":"a"}\n'
    )


def test_ndjson_is_utf8_not_ascii_escaped() -> None:
    assert NDJSONEncoder(now=0.0).encode([Delta(0, "é中😀")], None) == (
        '{"type":"delta","index":0,"text":"é中😀"}\n'.encode()
    )


def test_ndjson_lone_surrogate_is_escaped() -> None:
    # Documented: JSON can carry it escaped; a JavaScript client rejoins the halves.
    line = NDJSONEncoder(now=0.0).encode([Delta(0, "a\ud83d")], None)
    assert line == b'{"type":"delta","index":0,"text":"a\\ud83d"}\n'
    assert json.loads(line)["text"] == "a\ud83d"


# --- sse -----------------------------------------------------------------------------


def test_sse_exact_bytes_and_ids() -> None:
    body = SSEEncoder(now=0.0).encode(EVERY_EVENT, None)
    expected = b"".join(
        b"id: %d\nevent: %s\ndata: %s\n\n" % (i, e.type.encode(), line)
        for i, (e, line) in enumerate(zip(EVERY_EVENT, NDJSON_LINES, strict=True), start=1)
    )
    assert body == expected


def test_sse_ids_continue_across_calls_and_from_first_id() -> None:
    encoder = SSEEncoder(now=0.0)
    encoder.encode([Delta(0, "a"), Delta(0, "b")], None)
    assert encoder.encode([Done()], None) == b'id: 3\nevent: done\ndata: {"type":"done"}\n\n'
    assert encoder.next_id == 4
    resumed = SSEEncoder(first_id=42, now=0.0)
    assert resumed.encode([Done()], None).startswith(b"id: 42\n")


def test_sse_heartbeat_does_not_consume_an_id() -> None:
    encoder = SSEEncoder(now=0.0)
    encoder.heartbeat()
    assert encoder.encode([Done()], None).startswith(b"id: 1\n")


def test_sse_decodes_back_to_the_events() -> None:
    decoder = SSEDecoder()
    encoder = SSEEncoder(now=0.0)
    messages = decoder.feed(encoder.preamble() + encoder.encode(EVERY_EVENT, None))
    assert [m.event for m in messages] == [e.type for e in EVERY_EVENT]
    assert [m.id for m in messages] == [str(i) for i in range(1, len(EVERY_EVENT) + 1)]
    assert [json.loads(m.data) for m in messages] == [e.to_dict() for e in EVERY_EVENT]


def test_sse_lone_surrogate_is_escaped() -> None:
    body = SSEEncoder(now=0.0).encode([Delta(0, "\udfff")], None)
    assert body == b'id: 1\nevent: delta\ndata: {"type":"delta","index":0,"text":"\\udfff"}\n\n'


# --- openai ---------------------------------------------------------------------------


def test_openai_passes_raw_chunks_through() -> None:
    raw = '{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}'
    encoder = OpenAIEncoder(now=0.0)
    assert encoder.encode([Delta(0, "Hi")], raw) == b"data: " + raw.encode() + b"\n\n"
    # Chunks without events (Azure filter results) pass through too.
    assert OpenAIEncoder(now=0.0).encode([], '{"choices":[]}') == b'data: {"choices":[]}\n\n'


def test_openai_done_marker() -> None:
    assert OpenAIEncoder(now=0.0).encode([Done()], "[DONE]") == b"data: [DONE]\n\n"
    assert OpenAIEncoder(now=0.0).encode([Done()], None) == b"data: [DONE]\n\n"


def test_openai_raw_with_line_breaks_becomes_several_data_lines() -> None:
    raw = '{\n  "id": "c",\r\n  "choices": []\n}'
    body = OpenAIEncoder(now=0.0).encode([], raw)
    assert body == b'data: {\ndata:   "id": "c",\ndata:   "choices": []\ndata: }\n\n'
    (message,) = SSEDecoder().feed(body)
    assert json.loads(message.data) == {"id": "c", "choices": []}


def test_openai_raw_with_lone_surrogate_does_not_crash() -> None:
    # Regression: str.encode() raised UnicodeEncodeError on a caller-provided raw chunk.
    body = OpenAIEncoder(now=0.0).encode(
        [Delta(0, "\ud800")], '{"choices":[{"delta":{"content":"\ud800"}}]}'
    )
    assert body == b'data: {"choices":[{"delta":{"content":"?"}}]}\n\n'


def test_openai_error_shape() -> None:
    assert OpenAIEncoder(now=0.0).encode([Error("boom", "upstream_timeout")], None) == (
        b'data: {"error":{"message":"boom","type":"server_error","code":"upstream_timeout"}}\n\n'
    )
    encoder = OpenAIEncoder(now=0.0)
    assert encoder.encode([Error("bad", "BadRequestError", 400)], '{"object":"error"}') == (
        b'data: {"error":{"message":"bad","type":"server_error","code":"BadRequestError",'
        b'"status":400}}\n\n'
    )


def test_openai_error_wins_over_raw_and_other_events() -> None:
    body = OpenAIEncoder(now=0.0).encode([Delta(0, "x"), Error("e", "c")], '{"error":"x"}')
    assert body == b'data: {"error":{"message":"e","type":"server_error","code":"c"}}\n\n'


def test_openai_synthesizes_chunks_without_raw() -> None:
    encoder = OpenAIEncoder(now=1700000000.0)  # deterministic bytes
    body = encoder.encode([*EVERY_EVENT[:7], Done()], None)
    head = b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
    assert body == (
        b"data: "
        + head
        + b'"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b"data: "
        + head
        + b'"choices":[{"index":0,"delta":{"refusal":"No"},"finish_reason":null}]}\n\n'
        b"data: " + head + b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
        b'"type":"function","function":{"arguments":"","name":"f"}}]},"finish_reason":null}]}\n\n'
        b"data: " + head + b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        b'"function":{"arguments":"{\\"a\\":1}"}}]},"finish_reason":null}]}\n\n'
        b"data: " + head + b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: " + head + b'"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,'
        b'"total_tokens":3}}\n\n'
        b"data: [DONE]\n\n"
    )


def test_openai_synthesized_chunks_before_start_have_a_default_id() -> None:
    body = OpenAIEncoder(now=0.0).encode([Delta(0, "x")], None)
    assert json.loads(body[6:])["id"] == "chatcmpl-streamrelay"
    encoder = OpenAIEncoder(now=0.0)
    encoder.encode([Start("", "m")], None)  # an empty id keeps the default
    assert json.loads(encoder.encode([Delta(0, "x")], None)[6:])["id"] == "chatcmpl-streamrelay"


def test_openai_never_writes_an_id_line() -> None:
    encoder = OpenAIEncoder(now=0.0)
    body = encoder.preamble() + encoder.heartbeat()
    for event in EVERY_EVENT:
        body += encoder.encode([event], None)
        body += encoder.encode([event], '{"id":"x"}')
    assert not any(line.startswith(b"id") for line in body.split(b"\n"))
    decoder = SSEDecoder()
    decoder.feed(body)
    assert decoder.last_event_id is None


def test_openai_appends_done_after_a_responses_completion() -> None:
    # A Responses stream ends at response.completed; the format still ends with [DONE].
    raw = '{"type":"response.completed","response":{"id":"r"}}'
    body = OpenAIEncoder(now=0.0).encode([Finish(0, "stop"), Done()], raw)
    assert body == b"data: " + raw.encode() + b"\n\ndata: [DONE]\n\n"


# --- no token can cut a line, for any line splitter ----------------------------------------

SEPARATORS = "a\u2028b\u2029c\x85d\r\ne\nf\rg\x0bh\x0ci\x1cj\x1dk\x1el"


def _python_lines(body: bytes) -> list[str]:
    """How httpx's ``iter_lines()`` (str.splitlines) sees the body."""
    decoder = LineDecoder()
    return decoder.decode(body.decode()) + decoder.flush()


def test_ndjson_survives_str_splitlines_clients() -> None:
    # Regression: U+2028, U+2029 and U+0085 went out raw, and httpx's
    # iter_lines() (like str.splitlines) cut the line in two.
    body = NDJSONEncoder(now=0.0).encode([Delta(0, SEPARATORS), Refusal(0, SEPARATORS)], None)
    lines = _python_lines(body)
    assert [json.loads(line)["text"] for line in lines] == [SEPARATORS, SEPARATORS]
    assert body.count(b"\n") == 2 and b"\r" not in body


def test_sse_survives_str_splitlines_clients() -> None:
    body = SSEEncoder(now=0.0).encode([Delta(0, SEPARATORS), Error(SEPARATORS, "c")], None)
    data = [line[6:] for line in _python_lines(body) if line.startswith("data: ")]
    assert [json.loads(d).get("text") or json.loads(d)["message"] for d in data] == [SEPARATORS] * 2


def test_openai_survives_str_splitlines_clients() -> None:
    raw = json.dumps({"choices": [{"delta": {"content": SEPARATORS}}]}, ensure_ascii=False)
    passthrough = OpenAIEncoder(now=0.0).encode([Delta(0, SEPARATORS)], raw)
    synthesized = OpenAIEncoder(now=0.0).encode([Delta(0, SEPARATORS)], None)
    error = OpenAIEncoder(now=0.0).encode([Error(SEPARATORS, "c")], None)
    for body in (passthrough, synthesized, error):
        lines = [line for line in _python_lines(body) if line]
        assert len(lines) == 1
        chunk = json.loads(lines[0].removeprefix("data: "))
        if "error" in chunk:
            assert chunk["error"]["message"] == SEPARATORS
        else:
            assert chunk["choices"][0]["delta"]["content"] == SEPARATORS


def test_escaping_keeps_other_text_intact() -> None:
    text = "curly \u2019quotes\u2019 \u201cand\u201d \u2026 dashes \u2014 \u2027\u202a and \xa0\xc2"
    body = NDJSONEncoder(now=0.0).encode([Delta(0, text)], None)
    assert body == b'{"type":"delta","index":0,"text":"' + text.encode() + b'"}\n'


# --- the stdlib JSON fallback behaves like orjson -------------------------------------------


def _stdlib_json() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_json_without_orjson", _json.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"orjson": None}):
        spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "delta", "index": 0, "text": 'é中😀\n"\\'},
        {"a": [1, 2.5, None, True]},
        "\u2028\x85\x00",
        2**70,
    ],
)
def test_stdlib_fallback_dumps_like_orjson(obj: object) -> None:
    stdlib = _stdlib_json()
    assert stdlib.dumps(obj) == _json.dumps(obj)
    assert stdlib.loads(stdlib.dumps(obj)) == obj


def test_both_json_backends_escape_lone_surrogates() -> None:
    stdlib = _stdlib_json()
    assert stdlib.dumps("a\ud800") == _json.dumps("a\ud800") == b'"a\\ud800"'


@pytest.mark.parametrize("doc", ['"\\ud83d"', '{"a":"x\\ude00"}', "[1, 2]", '{"a": {"b": null}}'])
def test_both_json_backends_parse_the_same_documents(doc: str) -> None:
    assert _stdlib_json().loads(doc) == _json.loads(doc)


@pytest.mark.parametrize("doc", ["", "{", "[DONE]", "{'a': 1}"])
def test_both_json_backends_reject_the_same_documents(doc: str) -> None:
    for backend in (_json, _stdlib_json()):
        with pytest.raises(ValueError):
            backend.loads(doc)


# --- encode_token: the usual token, written from the upstream's quoted bytes -------------------

_PLAIN_TEXT = st.text(
    alphabet=st.characters(
        blacklist_characters='"\\', blacklist_categories=("Cs",), min_codepoint=0x20
    ),
    min_size=1,
    max_size=8,
) | st.sampled_from([" the", "é", "🙂", "\u2028", "\x85", "\x7f", "a\u2029b"])
_BEFORE = st.lists(
    st.sampled_from(
        [
            Start("c1", "m"),
            Delta(0, "x"),
            Delta(1, "y"),
            Reasoning(0, "r"),
            Refusal(0, "no"),
            ToolCall(0, 0, "{}", "call_1", "f"),
            Usage(1, 2, 3),
        ]
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    before=_BEFORE,
    index=st.sampled_from([0, 0, 1]),
    text=_PLAIN_TEXT,
    numbered=st.booleans(),
)
def test_encode_token_writes_what_encode_writes_and_leaves_the_same_state(
    fmt: str, before: list[Event], index: int, text: str, numbered: bool
) -> None:
    quoted = b'"' + text.encode() + b'"'
    assert json.loads(quoted) == text  # what the token template hands over: plain JSON
    fast, full = encoder_for(fmt, now=5.0), encoder_for(fmt, now=5.0)
    if numbered:
        fast.number_from(3)
        full.number_from(3)
    assert fast.encode(before, None) == full.encode(before, None)
    assert fast.encode_token(index, text, quoted) == full.encode([Delta(index, text)], None)
    after: list[Event] = [Delta(0, "z"), Finish(0, "stop"), Done()]
    assert fast.encode(after, None) == full.encode(after, None)  # the same state after it


def test_a_format_without_its_own_encode_token_gets_encode() -> None:
    class Upper(Encoder):
        name = "upper-token"
        media_type = "text/plain"

        def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
            return b"".join(e.to_dict()["type"].upper().encode() for e in events)

    assert Upper(now=0.0).encode_token(0, "hi", b'"hi"') == b"DELTA"
