"""``PrometheusMetrics`` driven by hand-made starts and outcomes, read back from its
registry: bounded labels, whole answers and resumes, several relays on one registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from streamrelay.errors import ConfigurationError
from streamrelay.events import Usage
from streamrelay.metrics import PrometheusMetrics, outcome_label
from streamrelay.metrics.labels import OUTCOME_LABELS
from streamrelay.observer import StreamStart
from streamrelay.outcome import Ending, Outcome


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def run(metrics: PrometheusMetrics, start: StreamStart, outcome: Outcome) -> None:
    watch = metrics.stream_started(start)
    assert watch is not None
    watch.finished(outcome)


def test_every_ending_has_one_of_the_six_outcome_labels() -> None:
    assert {outcome_label(ending) for ending in Ending} == set(OUTCOME_LABELS)


def test_a_stream_counts_from_start_to_finish() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    watch = metrics.stream_started(StreamStart("chat", "ai-sdk"))
    assert watch is not None
    assert sample(registry, "streamrelay_active_streams") == 1
    assert sample(registry, "streamrelay_streams_started_total", route="chat", format="ai-sdk") == 1
    watch.first_token(0.2)
    watch.heartbeat(15.0)
    watch.overhead(0.0001)
    watch.finished(
        Outcome(Ending.STOPPED, route="chat", format="ai-sdk", usage=Usage(5, 6, 11), duration=2.0)
    )
    assert sample(registry, "streamrelay_active_streams") == 0
    assert (
        sample(
            registry,
            "streamrelay_streams_finished_total",
            route="chat",
            format="ai-sdk",
            outcome="stopped",
        )
        == 1
    )
    assert sample(registry, "streamrelay_time_to_first_token_seconds_count") == 1
    assert sample(registry, "streamrelay_stream_duration_seconds_sum") == 2.0
    assert sample(registry, "streamrelay_heartbeats_total") == 1
    assert sample(registry, "streamrelay_relay_overhead_seconds_count") == 1
    assert sample(registry, "streamrelay_tokens_total", type="input") == 5
    assert sample(registry, "streamrelay_tokens_total", type="output") == 6


def test_a_whole_answer_counts_tokens_and_errors_but_is_not_a_stream() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    start = StreamStart("responses", "json", streaming=False)
    run(metrics, start, Outcome(Ending.DONE, usage=Usage(1, 2, 3), streaming=False))
    run(
        metrics,
        start,
        Outcome(Ending.UPSTREAM_STATUS, status=503, upstream_status=503, streaming=False),
    )
    assert sample(registry, "streamrelay_tokens_total", type="output") == 2
    assert sample(registry, "streamrelay_upstream_errors_total", status="503") == 1
    assert sample(registry, "streamrelay_active_streams") == 0
    assert registry.get_sample_value("streamrelay_streams_started_total", {}) is None
    assert sample(registry, "streamrelay_stream_duration_seconds_count") == 0


def test_unreachable_upstreams_count_as_the_status_the_client_got() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    run(
        metrics,
        StreamStart("chat.completions", "sse"),
        Outcome(Ending.UPSTREAM_UNAVAILABLE, status=504),
    )
    assert sample(registry, "streamrelay_upstream_errors_total", status="504") == 1


def test_a_resume_counts_as_a_resume_only() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    assert metrics.stream_started(StreamStart("streams", "sse", resumed=True)) is None
    assert sample(registry, "streamrelay_resumes_total") == 1
    assert sample(registry, "streamrelay_active_streams") == 0


def test_models_are_labels_only_when_named() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry, models=["gpt-4o-mini"])
    for model in ("gpt-4o-mini", "my-own-model-" + "x" * 200, None):
        run(
            metrics,
            StreamStart("chat.completions", "openai", model=model),
            Outcome(Ending.DONE, usage=Usage(1, 1, 2)),
        )
    assert sample(registry, "streamrelay_tokens_total", type="input", model="gpt-4o-mini") == 1
    assert sample(registry, "streamrelay_tokens_total", type="input", model="other") == 2
    assert not any(
        "x" * 200 in value
        for metric in registry.collect()
        for s in metric.samples
        for value in s.labels.values()
    )


def test_relays_on_one_registry_share_its_series() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusMetrics(registry), PrometheusMetrics(registry)
    run(first, StreamStart("chat", "sse"), Outcome(Ending.DONE, route="chat", format="sse"))
    run(second, StreamStart("chat", "sse"), Outcome(Ending.DONE, route="chat", format="sse"))
    assert sample(registry, "streamrelay_streams_started_total", route="chat", format="sse") == 2
    with pytest.raises(ConfigurationError, match="models="):
        PrometheusMetrics(registry, models=["gpt-4o"])
    with pytest.raises(ConfigurationError, match="list of model names"):
        PrometheusMetrics(CollectorRegistry(), models="gpt-4o")


def test_the_endpoint_serves_the_registry_and_refuses_other_methods(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import anyio

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    run(metrics, StreamStart("chat", "sse"), Outcome(Ending.DONE, route="chat", format="sse"))

    async def call(method: str) -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b""}

        await metrics.asgi_app()({"type": "http", "method": method}, receive, send)
        return sent

    start, body = anyio.run(call, "GET")
    assert start["status"] == 200
    text = body["body"]
    assert isinstance(text, bytes)
    assert b'streamrelay_streams_started_total{format="sse",route="chat"} 1.0' in text
    head, empty = anyio.run(call, "HEAD")
    assert head["status"] == 200 and empty["body"] == b""
    refused, _ = anyio.run(call, "POST")
    assert refused["status"] == 405
