"""Every wire format against every simulator fault, through real servers and sockets.

The simulator (its own uvicorn thread) is the upstream; the relay runs in another
uvicorn thread; the client is httpx on a real socket. Each case states the exact
outcome DESIGN.md promises: the content delivered, how the stream ends (``done``,
a terminal ``error`` with its code, an aborted ``text`` body, or an HTTP status
before the first byte), and, for the ``openai`` format, that every upstream chunk
arrives unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.testing import FAULTS, ServerThread, Simulator
from wire import (
    FORMATS,
    RELAY_KEY,
    Outcome,
    RawHTTP,
    chat_body,
    check_wire,
    fetch,
    mounts,
    relay_host,
    upstream_data,
)

AFTER = 3  # tokens before a mid-stream fault
TIMEOUT = 1.0  # the relay's first-byte and idle timeouts in this module


@dataclass(frozen=True)
class Case:
    """One fault scenario and what the client must see."""

    simulator: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    end: str = "done"
    """``done``, ``error`` (terminal error event / aborted text) or ``status`` (HTTP error)."""
    code: str | None = None
    """The error event's code, or the JSON error's code for ``status``."""
    status: int = 200
    cut: bool = False
    """The content stops after ``AFTER`` tokens."""
    mount: str = ""
    """A relay variant (``/small``: ``max_event_bytes`` of 64 KiB)."""
    reference: dict[str, Any] | None = None
    """Simulator options for the direct upstream fetch when they differ (a stall)."""


def fault(name: str, **options: Any) -> dict[str, Any]:
    return {"fault": name, **options}


CASES: dict[str, Case] = {
    "clean": Case(),
    # Before the stream.
    "status_json": Case(fault("status", status=429), end="status", status=429),
    "status_html": Case(fault("status", status=502, body="html"), end="status", status=502),
    "stall_headers": Case(
        fault("stall_headers"), end="status", status=504, code="upstream_timeout"
    ),
    # Mid-stream.
    "mid_error": Case(fault("mid_error", after=AFTER), end="error", code="server_error", cut=True),
    "mid_error_legacy": Case(
        fault("mid_error_legacy", after=AFTER), end="error", code="InternalServerError", cut=True
    ),
    "abrupt_close": Case(
        fault("abrupt_close", after=AFTER), end="error", code="upstream_closed", cut=True
    ),
    "stall": Case(
        fault("stall", after=AFTER),
        end="error",
        code="upstream_timeout",
        cut=True,
        reference={},
    ),
    "truncate": Case(
        fault("truncate", after=AFTER), end="error", code="upstream_truncated", cut=True
    ),
    "invalid_utf8": Case(
        fault("invalid_utf8", after=AFTER), end="error", code="upstream_invalid", cut=True
    ),
    "non_json": Case(
        fault("non_json", after=AFTER), end="error", code="upstream_invalid", cut=True
    ),
    "big_line": Case(fault("big_line", after=AFTER)),
    "big_line_small_limit": Case(
        fault("big_line", after=AFTER, size=200_000),
        end="error",
        code="event_too_large",
        cut=True,
        mount="/small",
    ),
    # At the end.
    "no_done": Case(fault("no_done")),
    # Framing.
    "crlf": Case(fault("crlf")),
    "cr": Case(fault("cr")),
    "comments": Case(fault("comments")),
    "nospace": Case(fault("nospace")),
    "multiline": Case(fault("multiline")),
    "bom": Case(fault("bom")),
    "split": Case(fault("split", tokens=12)),
    "all_framing": Case(fault(["crlf", "comments", "multiline", "bom", "split"], tokens=4)),
    # Payload shapes.
    "azure": Case(fault("azure")),
    "tools": Case(fault("tools", tool_calls=2)),
    "refusal": Case(fault("refusal")),
    "reasoning": Case(fault("reasoning")),
    "parts": Case(fault("parts")),
    "tool_index_collision": Case(fault("tool_index_collision")),
    "n2": Case(body={"n": 2}),
    "usage": Case(body={"stream_options": {"include_usage": True}}),
    "timestamps": Case(fault("timestamps", tokens=5)),
    "max_tokens": Case(body={"max_tokens": 5}),
}

# Every fault of the simulator appears in at least one case.
_COVERED = {
    name
    for case in CASES.values()
    for name in (
        [case.simulator["fault"]]
        if isinstance(case.simulator.get("fault"), str)
        else case.simulator.get("fault", [])
    )
}


COVERED_ELSEWHERE = {
    # Responses only (the matrix runs chat completions).
    "failed": "test_relay_surface.py::test_a_responses_mid_stream_failure_is_the_terminal_error",
}


def test_every_simulator_fault_is_covered() -> None:
    missing = set(FAULTS) - _COVERED - set(COVERED_ELSEWHERE)
    assert not missing, sorted(missing)


@pytest.fixture(scope="module")
def relay(upstream: str) -> Iterator[str]:
    """Relays on every transport, with short timeouts, in one uvicorn thread."""
    user_client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
    settings = StreamSettings(first_byte_timeout=TIMEOUT, idle_timeout=TIMEOUT, heartbeat=None)

    def to_sim(**options: Any) -> Upstream:
        return Upstream(upstream, api_key=RELAY_KEY, **options)

    relays = {
        "/native": StreamRelay(to_sim(transport="native"), stream=settings),
        "/aiohttp": StreamRelay(to_sim(transport="aiohttp"), stream=settings),
        "/httpx": StreamRelay(to_sim(transport="httpx"), stream=settings),
        "/client": StreamRelay(to_sim(client=user_client), stream=settings),
        "/small": StreamRelay(to_sim(), stream=replace(settings, max_event_bytes=64 * 1024)),
    }
    app = relay_host(mounts(relays), [*relays.values(), user_client])
    with ServerThread(app) as server, httpx.Client(timeout=10) as warm:
        for path in relays:  # the first call pays for imports and connection setup
            warm.post(server.url + path + "/chat/completions", json=chat_body(tokens=1))
        yield server.url


def expected_content(sim: Simulator, case: Case, body: dict[str, Any], index: int = 0) -> str:
    if case.cut:
        return sim.expected_text({**body, "max_tokens": AFTER}, index)
    return sim.expected_text(body, index)


def check_case(
    sim: Simulator,
    client: httpx.Client,
    upstream: str,
    case: Case,
    body: dict[str, Any],
    out: Outcome,
) -> None:
    fmt = out.fmt
    if case.end == "status":
        assert out.status == case.status, out.raw[:300]
        if case.simulator.get("body") == "html":
            assert out.headers["content-type"].startswith("text/html")
            assert b"<html>" in out.raw
        else:
            error = httpx.Response(200, content=out.raw).json()["error"]
            assert error["message"]
            if case.code:
                assert error["code"] == case.code
        return
    check_wire(out)
    assert out.terminal == case.end, (out.terminal, out.raw[-300:])
    if case.end == "error" and fmt != "text":
        assert out.error is not None
        assert out.error["code"] == case.code, out.error
    if "timestamps" in str(case.simulator.get("fault")):
        assert out.content().count("t=") == 5
        return
    assert out.content() == expected_content(sim, case, body)
    if fmt == "text":
        return
    completion = sim.completion(body)
    for choice in completion["choices"][1:]:
        assert out.content(choice["index"]) == choice["message"]["content"]
    if case.cut:
        return
    # Everything else a complete stream carries.
    assert out.finish_reasons() == {c["index"]: c["finish_reason"] for c in completion["choices"]}
    message = completion["choices"][0]["message"]
    assert out.refusal() == (message["refusal"] or "")
    assert out.tool_calls() == message.get("tool_calls", [])
    assert out.reasoning() == sim.expected_reasoning(body)
    if body.get("stream_options", {}).get("include_usage"):
        assert out.usage() == completion["usage"]
    else:
        assert out.usage() is None
    if fmt in ("ndjson", "sse"):
        assert out.events[0] == {"type": "start", "id": completion["id"], "model": "sim-1"}
    else:
        # The openai format passes every upstream chunk through unchanged.
        reference = upstream_data(client, upstream, body)
        assert out.data == [*(d for d in reference if d != "[DONE]"), "[DONE]"]


def check_openai_prefix(
    client: httpx.Client, upstream: str, case: Case, body: dict[str, Any], out: Outcome
) -> None:
    """Before a mid-stream error, the openai format carries the upstream chunks verbatim."""
    ref_body = body
    if case.reference is not None:
        ref_body = {**body, "simulator": case.reference}
    reference = upstream_data(client, upstream, ref_body)
    relayed = out.data[:-1]
    assert relayed == reference[: len(relayed)]


def run_case(
    sim: Simulator, client: httpx.Client, upstream: str, url: str, fmt: str, case: Case
) -> Outcome:
    body = {**chat_body(**case.simulator), **case.body}
    out = fetch(client, url + (case.mount or "/native") + "/chat/completions", body, fmt=fmt)
    check_case(sim, client, upstream, case, body, out)
    if fmt == "openai" and case.end == "error":
        check_openai_prefix(client, upstream, case, body, out)
    return out


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_fault_matrix(
    sim: Simulator, client: httpx.Client, upstream: str, relay: str, fmt: str, name: str
) -> None:
    run_case(sim, client, upstream, relay, fmt, CASES[name])


TRANSPORT_CASES = [
    "clean",
    "status_json",
    "mid_error",
    "abrupt_close",
    "truncate",
    "invalid_utf8",
    "split",
    "tools",
]


@pytest.mark.parametrize("name", TRANSPORT_CASES)
@pytest.mark.parametrize("fmt", ["text", "ndjson", "openai"])
@pytest.mark.parametrize("transport", ["/aiohttp", "/httpx", "/client"])
def test_fault_matrix_other_transports(
    sim: Simulator,
    client: httpx.Client,
    upstream: str,
    relay: str,
    transport: str,
    fmt: str,
    name: str,
) -> None:
    case = CASES[name]
    run_case(sim, client, upstream, relay, fmt, Case(**{**case.__dict__, "mount": transport}))


@pytest.mark.parametrize("name", ["stall", "stall_headers"])
@pytest.mark.parametrize("transport", ["/aiohttp", "/httpx", "/client"])
def test_timeouts_other_transports(
    sim: Simulator, client: httpx.Client, upstream: str, relay: str, transport: str, name: str
) -> None:
    case = CASES[name]
    run_case(sim, client, upstream, relay, "ndjson", Case(**{**case.__dict__, "mount": transport}))


@pytest.mark.parametrize("name", ["mid_error", "abrupt_close", "stall", "invalid_utf8"])
def test_text_error_aborts_without_terminating_chunk(sim: Simulator, relay: str, name: str) -> None:
    """On a raw socket: the ``text`` body stops with no ``0\\r\\n\\r\\n``; the server closes."""
    case = CASES[name]
    body = chat_body(**case.simulator)
    with RawHTTP(relay) as conn:
        conn.request("POST", "/aiohttp/chat/completions?format=text", body)
        status, headers = conn.read_head()
        assert status == 200
        assert ("transfer-encoding", "chunked") in headers
        content = conn.read_body()
        assert not conn.complete, "an aborted text stream must not end with the terminating chunk"
        assert conn.eof
    assert content.decode() == expected_content(sim, case, body)


def test_text_clean_end_has_terminating_chunk(sim: Simulator, relay: str) -> None:
    body = chat_body()
    with RawHTTP(relay) as conn:
        conn.request("POST", "/aiohttp/chat/completions?format=text", body)
        assert conn.read_head()[0] == 200
        content = conn.read_body()
        assert conn.complete
    assert content.decode() == sim.expected_text(body)


@pytest.mark.parametrize("fmt", FORMATS)
def test_upstream_status_passthrough_keeps_headers(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str
) -> None:
    body = chat_body(fault="status", status=429, retry_after=2.5, message="slow down")
    out = fetch(client, relay + "/aiohttp/chat/completions", body, fmt=fmt)
    assert out.status == 429
    assert out.headers["retry-after"] == "3"
    assert out.headers["retry-after-ms"] == "2500"
    assert out.headers["x-upstream-request-id"] == sim.requests[-1].request_id
    assert out.headers["x-request-id"] == sim.requests[-1].headers["x-request-id"]
    assert out.headers["content-type"].startswith("application/json")
    error = httpx.Response(429, content=out.raw).json()["error"]
    assert error["message"] == "slow down"
    assert error["code"] == "rate_limit_exceeded"
