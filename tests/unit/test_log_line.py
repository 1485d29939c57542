"""The one log line per stream: its level by ending, its fields on the record, and values
that cannot forge a field or a line."""

from __future__ import annotations

import json
import logging

import pytest

from streamrelay.events import Usage
from streamrelay.outcome import Ending, Outcome
from streamrelay.pipeline import log_outcome, outcome_fields

LEVELS = {
    Ending.DONE: logging.INFO,
    Ending.CLIENT_DISCONNECTED: logging.INFO,
    Ending.UPSTREAM_STATUS: logging.WARNING,
    Ending.UPSTREAM_UNAVAILABLE: logging.WARNING,
    Ending.ERROR: logging.WARNING,
    Ending.SEND_TIMEOUT: logging.DEBUG,
    Ending.SHUTDOWN: logging.DEBUG,
    Ending.STOPPED: logging.DEBUG,
    Ending.ABANDONED: logging.DEBUG,
}


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "streamrelay"]


@pytest.mark.parametrize(("ending", "level"), LEVELS.items())
def test_the_level_follows_the_ending(
    caplog: pytest.LogCaptureFixture, ending: Ending, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="streamrelay")
    log_outcome(Outcome(ending, code=None if ending is Ending.DONE else "x"), None)
    (record,) = lines(caplog)
    assert record.levelno == level
    assert record.getMessage().startswith(f"stream {ending.value} ")


def test_a_quiet_logger_builds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamrelay")
    log_outcome(Outcome(Ending.DONE), None)
    assert lines(caplog) == []


@pytest.mark.parametrize(
    "hostile", ['gpt" principal=admin', "a b", "line\nstream done request_id=forged", "é", ""]
)
def test_values_cannot_forge_fields_or_lines(
    caplog: pytest.LogCaptureFixture, hostile: str
) -> None:
    caplog.set_level(logging.INFO, logger="streamrelay")
    log_outcome(Outcome(Ending.DONE, model=hostile, principal=hostile), None)
    (record,) = lines(caplog)
    message = record.getMessage()
    assert "\n" not in message
    # every field parses back: key=value, values bare or one JSON string
    fields = dict(_split(message.split(" ", 2)[2]))
    assert fields["model"] in (hostile, json.dumps(hostile))
    assert fields["principal"] in (hostile, json.dumps(hostile))
    assert "request_id" not in fields


def _split(text: str) -> list[tuple[str, str]]:
    """``key=value`` pairs, where a value may be a JSON string with spaces in it."""
    decoder = json.JSONDecoder()
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        key, _, _ = text[i:].partition("=")
        i += len(key) + 1
        if text[i : i + 1] == '"':
            _, end = decoder.raw_decode(text, i)
            value = text[i:end]
        else:
            end = text.find(" ", i)
            end = len(text) if end == -1 else end
            value = text[i:end]
        out.append((key, value))
        i = end + 1
    return out


def test_the_json_style_is_one_object_with_the_same_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamrelay")
    outcome = Outcome(
        Ending.DONE,
        route="responses",
        format="sse",
        usage=Usage(3, 4, 7),
        request_id="r-9",
        ttft=0.25,
        duration=1.5,
        streaming=False,
    )
    log_outcome(outcome, None, "json")
    (record,) = lines(caplog)
    line = json.loads(record.getMessage())
    assert line == {"event": "answer", **outcome_fields(outcome)}
    assert (line["input_tokens"], line["output_tokens"], line["ttft_ms"]) == (3, 4, 250.0)
    assert record.request_id == "r-9" and record.duration_ms == 1500.0  # type: ignore[attr-defined]


def test_a_crash_is_left_to_the_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamrelay")
    log_outcome(Outcome(Ending.CRASHED), RuntimeError("bug"))
    assert lines(caplog) == []
