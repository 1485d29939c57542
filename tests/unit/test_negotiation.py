"""Choosing the wire format: ``?format=``, then ``Accept`` with q-values, then the default."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrelay.errors import RequestRejected, UnsupportedFormat
from streamrelay.formats import FORMATS
from streamrelay.negotiation import MEDIA_TYPES, asked_format, format_param, negotiate

# --- ?format= ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FORMATS))
def test_query_format_wins_over_accept(name: str) -> None:
    assert negotiate(name, "application/x-ndjson, text/plain", "sse") == name


@pytest.mark.parametrize("raw", ["NDJSON", " ndjson ", "NdJson"])
def test_query_format_is_case_and_space_insensitive(raw: str) -> None:
    assert negotiate(raw, None, "sse") == "ndjson"


@pytest.mark.parametrize("raw", ["xml", "", "json", "event-stream", "sse2", "ai_sdk", "agui"])
def test_unknown_query_format_is_rejected_with_the_supported_names(raw: str) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        negotiate(raw, "text/event-stream", "sse")
    assert info.value.name == raw
    assert info.value.supported == ("text", "ndjson", "sse", "openai", "ai-sdk", "ag-ui")
    for name in FORMATS:
        assert name in str(info.value)


# --- Accept -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/event-stream", "sse"),
        ("application/x-ndjson", "ndjson"),
        ("application/jsonl", "ndjson"),
        ("text/plain", "text"),
        ("application/json", "openai"),  # what the OpenAI SDKs send
    ],
)
def test_accept_media_types(accept: str, expected: str) -> None:
    assert negotiate(None, accept, "sse") == expected
    assert MEDIA_TYPES[accept] == expected


@pytest.mark.parametrize("accept", [None, "", "*/*", "text/html", "image/*", "  ", ",,,", ";q=1"])
def test_nothing_usable_falls_back_to_the_default(accept: str | None) -> None:
    for default in FORMATS:
        assert negotiate(None, accept, default) == default


def test_browser_default_accept_gets_the_default() -> None:
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
    assert negotiate(None, accept, "sse") == "sse"


def test_eventsource_accept() -> None:
    assert negotiate(None, "text/event-stream", "ndjson") == "sse"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/x-ndjson;q=0.9, text/event-stream", "sse"),
        ("text/plain;q=0.2, application/x-ndjson;q=0.8", "ndjson"),
        ("text/plain; q=1, application/x-ndjson; q=0.999", "text"),
        ("text/plain;q=0.5, application/json;q=0.50001", "openai"),
        ("text/plain;charset=utf-8;q=0.3, text/event-stream;q=0.2", "text"),
        ("text/plain;format=flowed", "text"),  # other parameters do not matter
    ],
)
def test_highest_q_value_wins(accept: str, expected: str) -> None:
    assert negotiate(None, accept, "sse") == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/plain, application/x-ndjson", "text"),
        ("application/x-ndjson, text/plain", "ndjson"),
        ("application/x-ndjson;q=0.5, text/plain;q=0.5", "ndjson"),
        ("application/json, text/plain, */*", "openai"),  # axios' default
    ],
)
def test_ties_go_to_the_first_listed(accept: str, expected: str) -> None:
    assert negotiate(None, accept, "sse") == expected


def test_q_zero_means_not_acceptable() -> None:
    assert negotiate(None, "text/plain;q=0", "sse") == "sse"
    assert negotiate(None, "text/plain;q=0, application/x-ndjson;q=0.1", "sse") == "ndjson"
    assert negotiate(None, "text/plain;q=0.000", "ndjson") == "ndjson"


@pytest.mark.parametrize("q", ["abc", "", "1.5", "-0.5", "nan", "inf", "0x1"])
def test_invalid_q_value_excludes_the_type(q: str) -> None:
    assert negotiate(None, f"text/plain;q={q}", "sse") == "sse"
    assert negotiate(None, f"text/plain;q={q}, application/x-ndjson;q=0.1", "sse") == "ndjson"


def test_q_parameter_name_and_media_type_are_case_insensitive() -> None:
    assert negotiate(None, "TEXT/Plain;Q=0.9, Application/X-NDJSON;q=0.5", "sse") == "text"
    assert negotiate(None, "Text/Event-Stream", "text") == "sse"


def test_whitespace_around_parts() -> None:
    assert negotiate(None, "  text/plain  ;  q=0.4 ,\tapplication/x-ndjson ; q = 0.6 ", "sse") == (
        "ndjson"
    )


# --- wildcards stand for the default, with their own q-value --------------------------------


def test_wildcard_alone_is_the_default() -> None:
    for default in FORMATS:
        assert negotiate(None, "*/*", default) == default


def test_wildcard_with_higher_q_beats_a_listed_type() -> None:
    # Regression: the wildcard was ignored, so the client got the type it liked least.
    assert negotiate(None, "text/plain;q=0.1, */*", "sse") == "sse"
    assert negotiate(None, "*/*;q=0.9, application/x-ndjson;q=0.5", "openai") == "openai"


def test_specific_type_with_higher_q_beats_the_wildcard() -> None:
    assert negotiate(None, "*/*;q=0.1, text/plain", "sse") == "text"
    assert negotiate(None, "text/plain, */*;q=0.8", "sse") == "text"


def test_wildcard_tie_goes_to_the_first_listed() -> None:
    assert negotiate(None, "*/*, text/plain", "sse") == "sse"
    assert negotiate(None, "text/plain, */*", "sse") == "text"


def test_wildcard_with_q_zero_is_not_acceptable() -> None:
    assert negotiate(None, "*/*;q=0, text/plain;q=0.1", "sse") == "text"


def test_type_wildcard_covers_the_default_only_when_it_matches() -> None:
    assert negotiate(None, "text/*, application/x-ndjson;q=0.5", "sse") == "sse"
    assert negotiate(None, "text/*, application/x-ndjson;q=0.5", "text") == "text"
    # application/* does not cover text/event-stream: ndjson is the only match.
    assert negotiate(None, "application/*, application/x-ndjson;q=0.5", "sse") == "ndjson"
    assert negotiate(None, "application/*, text/plain;q=0.5", "ndjson") == "ndjson"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.sampled_from(list(FORMATS)))
def test_any_accept_header_gives_a_known_format(accept: str, default: str) -> None:
    assert negotiate(None, accept, default) in FORMATS


# --- format_param ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", None),
        (b"model=gpt-4o", None),
        (b"format=ndjson", "ndjson"),
        (b"a=1&format=sse&b=2", "sse"),
        (b"format=", ""),
        (b"format=sse&format=text", "sse"),  # the first one
        (b"xformat=text", None),
        (b"informat=text&format=openai", "openai"),
        (b"format=%6Edjson", "ndjson"),  # percent-encoded
        (b"format=+sse+", " sse "),  # negotiate() strips it
        (b"format", None),
        (b"Format=text", None),  # parameter names are case-sensitive
    ],
)
def test_format_param(query: bytes, expected: str | None) -> None:
    assert format_param(query) == expected


@pytest.mark.parametrize(
    "query", [b"format=sse%0A", b"format=%0D%0Asse", b"format=s%0Dse", b"format=%0a"]
)
def test_format_param_with_line_breaks_is_a_400(query: bytes) -> None:
    with pytest.raises(RequestRejected) as info:
        format_param(query)
    assert info.value.status_code == 400
    assert info.value.code == "invalid_format"


def test_format_param_then_negotiate() -> None:
    assert negotiate(format_param(b"format=+NDJSON"), "text/event-stream", "sse") == "ndjson"
    with pytest.raises(UnsupportedFormat):
        negotiate(format_param(b"format="), None, "sse")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_any_query_string_is_handled(query: bytes) -> None:
    try:
        value = format_param(b"format=" + query)
    except RequestRejected as exc:
        assert exc.status_code == 400
        return
    assert value is None or ("\r" not in value and "\n" not in value)


# The OpenAI routes: asking for one of our formats, or being an OpenAI client -------------


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        (None, None, None),
        (None, "*/*", None),
        (None, "application/json", None),
        (None, "text/event-stream", None),
        (None, "text/event-stream, application/json", None),
        (None, "image/png", None),  # nothing of ours asked for
        (None, "text/*", None),
        (None, "application/x-ndjson", "ndjson"),
        (None, "application/jsonl", "ndjson"),
        (None, "text/plain", "text"),
        (None, "text/plain; charset=utf-8", "text"),
        (None, "TEXT/PLAIN", "text"),
        (None, "text/plain;q=0.5, */*", None),  # prefers anything: an OpenAI client
        (None, "*/*;q=0.1, text/plain", "text"),
        (None, "text/event-stream;q=0.5, application/x-ndjson", "ndjson"),
        (None, "application/x-ndjson;q=0, text/event-stream", None),
        (None, "application/x-ndjson;q=0", None),
        (None, "application/x-ndjson;q=bad", None),
        ("sse", None, "sse"),
        ("openai", "application/x-ndjson", "openai"),
        (" NDJSON ", "text/event-stream", "ndjson"),
    ],
)
def test_asked_format(query: str | None, accept: str | None, expected: str | None) -> None:
    assert asked_format(query, accept) == expected


def test_asked_format_refuses_an_unknown_name() -> None:
    with pytest.raises(UnsupportedFormat):
        asked_format("xml", None)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_accept_header_gives_a_format_or_an_openai_client(accept: str) -> None:
    result = asked_format(None, accept)
    assert result is None or result in FORMATS
    assert result not in ("sse", "openai", "ai-sdk", "ag-ui")  # only ?format= asks for those
