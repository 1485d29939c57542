"""Prometheus metrics and the per-stream log line, through a real server: a known
workload (completed streams, a client that leaves mid-stream, an upstream 429, a
mid-stream error, a whole answer) scraped from ``/metrics`` as Prometheus text, and
checked against what the clients and the simulator saw."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.metrics import PrometheusMetrics
from streamrelay.stores import MemoryStore
from streamrelay.testing import ServerThread, Simulator
from wire import MESSAGES, RELAY_KEY, chat_body, fetch

COMPLETED = 3


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture(scope="module")
def server(upstream: str, registry: CollectorRegistry) -> Iterator[str]:
    metrics = PrometheusMetrics(registry)
    relay = StreamRelay(Upstream(upstream, api_key=RELAY_KEY), metrics=metrics)
    stored = StreamRelay(
        Upstream(upstream, api_key=RELAY_KEY),
        metrics=metrics,
        store=MemoryStore(),
        stream=StreamSettings(heartbeat=0.05),
    )
    usage = StreamRelay(Upstream(upstream, api_key=RELAY_KEY), metrics=metrics, include_usage=True)
    json_logs = StreamRelay(
        Upstream(upstream, api_key=RELAY_KEY), stream=StreamSettings(log_format="json")
    )
    app = Starlette(
        routes=[
            Route("/metrics", metrics.asgi_app()),
            Mount("/ai", relay),
            Mount("/stored", stored),
            Mount("/json", json_logs),
            Mount("/usage", usage),
        ]
    )
    with ServerThread(app) as running:
        yield running.url


def scrape(client: httpx.Client, url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and sorted labels."""
    text = client.get(url + "/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("streamrelay_")
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples that have ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def settle(client: httpx.Client, url: str, **expected: float) -> dict[Any, float]:
    """Scrape until the named totals are reached (a stream's end is counted just after
    its last byte), at most 10 s; the last scrape."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(client, url)
        if all(total(samples, name) == want for name, want in expected.items()):
            return samples
        if time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def test_a_known_workload_gives_exactly_its_counts(
    server: str, client: httpx.Client, sim: Simulator
) -> None:
    before = scrape(client, server)
    sdk = openai.OpenAI(base_url=server + "/ai", api_key="unused", max_retries=0)
    tokens = {"input": 0, "output": 0}
    streams_with_tokens = 0

    for _ in range(COMPLETED):
        stream = sdk.chat.completions.create(
            model="sim-1",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"simulator": {"tokens": 5}},
        )
        text, usage = "", None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
        assert text and usage is not None
        streams_with_tokens += 1
        tokens["input"] += usage.prompt_tokens
        tokens["output"] += usage.completion_tokens

    # a client that leaves mid-stream: its generation is cancelled upstream
    with client.stream(
        "POST",
        server + "/ai/chat/completions?format=ndjson",
        json=chat_body(tokens=500, delay=0.01),
    ) as response:
        assert response.status_code == 200
        got = b""
        for piece in response.iter_raw():
            got += piece
            if b'"delta"' in got:
                break
    streams_with_tokens += 1
    assert sim.stats.wait(cancelled=1)

    limited = fetch(client, server + "/ai/chat/completions", chat_body(fault="status"), fmt="sse")
    assert limited.status == 429

    broken = fetch(
        client, server + "/ai/chat/completions", chat_body(fault="mid_error", after=2), fmt="sse"
    )
    assert broken.terminal == "error" and broken.content()
    streams_with_tokens += 1

    whole = sdk.chat.completions.create(
        model="sim-1",
        messages=MESSAGES,
        extra_body={"simulator": {"tokens": 4}},  # type: ignore[arg-type]
    )
    assert whole.usage is not None
    tokens["input"] += whole.usage.prompt_tokens
    tokens["output"] += whole.usage.completion_tokens

    streams = COMPLETED + 3  # the disconnect, the 429 and the mid-stream error
    started = total(before, "streamrelay_streams_started_total") + streams
    after = settle(
        client,
        server,
        streamrelay_streams_started_total=started,
        streamrelay_streams_finished_total=started,
    )

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("streamrelay_streams_started_total") == streams
    assert (
        delta("streamrelay_streams_started_total", route="chat.completions", format="openai")
        == COMPLETED
    )
    assert delta("streamrelay_streams_finished_total", outcome="done") == COMPLETED
    assert delta("streamrelay_streams_finished_total", outcome="client_disconnected") == 1
    assert delta("streamrelay_streams_finished_total", outcome="upstream_status") == 1
    assert delta("streamrelay_streams_finished_total", outcome="error") == 1
    assert delta("streamrelay_upstream_errors_total") == 1  # the whole answer is not an error
    assert delta("streamrelay_upstream_errors_total", status="429") == 1
    assert delta("streamrelay_upstream_cancelled_total") == 1 == sim.stats.cancelled
    assert value(after, "streamrelay_active_streams") == 0
    assert delta("streamrelay_time_to_first_token_seconds_count") == streams_with_tokens
    assert delta("streamrelay_stream_duration_seconds_count") == streams
    assert delta("streamrelay_tokens_total", type="input") == tokens["input"]
    assert delta("streamrelay_tokens_total", type="output") == tokens["output"]
    # the relay's own overhead is sampled: at least the first read of each stream with one
    assert delta("streamrelay_relay_overhead_seconds_count") >= COMPLETED


def test_active_streams_counts_open_streams(server: str, client: httpx.Client) -> None:
    with client.stream(
        "POST",
        server + "/ai/chat/completions?format=ndjson",
        json=chat_body(tokens=100, delay=0.02),
    ) as response:
        pieces = response.iter_raw()
        assert next(pieces)
        assert value(scrape(client, server), "streamrelay_active_streams") == 1
        for _ in pieces:
            pass
    samples = settle(client, server)
    deadline = time.monotonic() + 5
    while value(samples, "streamrelay_active_streams") and time.monotonic() < deadline:
        samples = scrape(client, server)
    assert value(samples, "streamrelay_active_streams") == 0


def test_heartbeats_and_resumes_are_counted(server: str, client: httpx.Client) -> None:
    before = scrape(client, server)
    out = fetch(
        client,
        server + "/stored/chat/completions",
        chat_body(tokens=2, stall=0.3, fault="stall", after=1),
        fmt="sse",
    )
    assert out.terminal == "done" and out.pings >= 1
    stream_id = out.headers["x-stream-id"]
    again = fetch(client, server + f"/stored/streams/{stream_id}", method="GET", fmt="sse")
    assert again.terminal == "done"
    after = settle(client, server)
    deadline = time.monotonic() + 5
    while (
        total(after, "streamrelay_resumes_total") == total(before, "streamrelay_resumes_total")
        and time.monotonic() < deadline
    ):
        after = scrape(client, server)
    heartbeats = total(after, "streamrelay_heartbeats_total") - total(
        before, "streamrelay_heartbeats_total"
    )
    assert heartbeats >= out.pings
    assert (
        total(after, "streamrelay_resumes_total") - total(before, "streamrelay_resumes_total") == 1
    )
    # a resume is not a stream of its own
    assert (
        total(after, "streamrelay_streams_started_total")
        - total(before, "streamrelay_streams_started_total")
        == 1
    )


def test_the_request_id_goes_upstream_back_to_the_client_and_into_the_log(
    server: str, client: httpx.Client, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamrelay")
    given = fetch(
        client,
        server + "/ai/chat/completions",
        chat_body(tokens=2),
        fmt="ndjson",
        headers={"x-request-id": "req-from-client.42"},
    )
    made = fetch(client, server + "/ai/chat/completions", chat_body(tokens=2), fmt="ndjson")
    hostile = fetch(
        client,
        server + "/ai/chat/completions",
        chat_body(tokens=2),
        fmt="ndjson",
        headers={"x-request-id": "a b\tc=d"},
    )
    assert given.headers["x-request-id"] == "req-from-client.42"
    ids = [
        given.headers["x-request-id"],
        made.headers["x-request-id"],
        hostile.headers["x-request-id"],
    ]
    assert len(set(ids)) == 3 and ids[2] != "a b\tc=d"
    assert [r.headers.get("x-request-id") for r in sim.requests] == ids
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [r for r in caplog.records if getattr(r, "request_id", None) in ids]
        if len(lines) == 3:
            break
        time.sleep(0.02)
    assert sorted(r.request_id for r in lines) == sorted(ids)  # type: ignore[attr-defined]
    for record in lines:
        assert record.levelno == logging.INFO
        assert f"request_id={record.request_id}" in record.getMessage()  # type: ignore[attr-defined]
        assert record.route == "chat.completions" and record.outcome == "done"  # type: ignore[attr-defined]


def test_an_upstream_error_keeps_the_upstreams_request_id_apart(
    server: str, client: httpx.Client
) -> None:
    out = fetch(client, server + "/ai/chat/completions", chat_body(fault="status"), fmt="sse")
    assert out.status == 429
    assert out.headers["x-request-id"] != out.headers["x-upstream-request-id"]
    assert len(out.headers.get_list("x-request-id")) == 1


def test_json_log_lines_parse(
    server: str, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="streamrelay")
    out = fetch(client, server + "/json/chat/completions", chat_body(tokens=3), fmt="sse")
    rid = out.headers["x-request-id"]
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while not lines and time.monotonic() < deadline:
        lines = [
            json.loads(r.getMessage())
            for r in caplog.records
            if getattr(r, "request_id", None) == rid
        ]
        time.sleep(0.01)
    (line,) = lines
    assert line["event"] == "stream" and line["outcome"] == "done"
    assert line["request_id"] == rid and line["format"] == "sse"
    assert line["output_tokens"] is None or line["output_tokens"] >= 0
    assert line["events"] > 0 and line["ttft_ms"] >= 0


def test_include_usage_counts_tokens_for_clients_that_did_not_ask(
    server: str, client: httpx.Client, sim: Simulator
) -> None:
    before = scrape(client, server)
    sdk = openai.OpenAI(base_url=server + "/usage", api_key="unused", max_retries=0)
    chunks = list(
        sdk.chat.completions.create(
            model="sim-1",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            extra_body={"simulator": {"tokens": 6}},
        )
    )
    # the relay asked upstream; the client, which did not, gets no usage-only chunk
    sent = sim.requests[-1].json()
    assert sent["stream_options"] == {"include_usage": True}
    assert chunks and all(chunk.choices for chunk in chunks)
    expected = sim.completion(sent)["usage"]
    # a client that asked gets it as usual
    asked = list(
        sdk.chat.completions.create(
            model="sim-1",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"simulator": {"tokens": 6}},
        )
    )
    assert asked[-1].usage is not None and not asked[-1].choices
    assert asked[-1].usage.completion_tokens == expected["completion_tokens"]
    # an ndjson client sees the usage event
    out = fetch(client, server + "/usage/chat/completions", chat_body(tokens=6), fmt="ndjson")
    assert [e for e in out.events if e["type"] == "usage"]
    started = total(before, "streamrelay_streams_started_total") + 3
    after = settle(client, server, streamrelay_streams_finished_total=started)
    output = total(after, "streamrelay_tokens_total", type="output") - total(
        before, "streamrelay_tokens_total", type="output"
    )
    assert output == 3 * expected["completion_tokens"]
