"""``OpenTelemetryMetrics`` on a real server: the official ``openai`` client talks to a
relay under uvicorn whose upstream is the simulator, over real sockets; the metrics
and spans are read back from the SDK's in-memory reader and exporter (providers of
the test's own), and the simulator shows the trace context and request id it got.

A tiny ASGI middleware stands in for a host's server instrumentation: it makes a
``SERVER`` span current around the relay, which must become the relay span's parent.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from streamrelay import StreamRelay, Upstream
from streamrelay.metrics import OpenTelemetryMetrics
from streamrelay.testing import ServerThread, Simulator
from streamrelay.testing.recording import RecordedRequest
from wire import MESSAGES, RELAY_KEY

DURATION = "gen_ai.client.operation.duration"
TTFC = "gen_ai.client.operation.time_to_first_chunk"
TPOC = "gen_ai.client.operation.time_per_output_chunk"
TOKENS = "gen_ai.client.token.usage"
BODY: dict[str, Any] = {"model": "sim-1", "messages": MESSAGES}


class ServerSpans:
    """A host's server instrumentation in miniature: a current ``SERVER`` span per request."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        name = f"{scope['method']} {scope['path']}"
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER):
            await self.app(scope, receive, send)


class Served:
    """The relay's URL and what its observer recorded."""

    def __init__(self, url: str, upstream_port: int) -> None:
        self.url = url
        self.upstream_port = upstream_port
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, count: int) -> dict[str, ReadableSpan]:
        """The finished spans by name, once there are ``count`` (a span ends just after
        the response does, in the server's thread)."""
        deadline = time.monotonic() + 5
        while len(self.exporter.get_finished_spans()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        spans = self.exporter.get_finished_spans()
        assert len(spans) == count, [span.name for span in spans]
        return {span.name: span for span in spans}

    def metrics(self) -> dict[str, tuple[str, list[HistogramDataPoint]]]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: (
                metric.unit or "",
                [p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)],
            )
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


@pytest.fixture
def served(upstream: str) -> Iterator[Served]:
    """A relay at ``/v1`` in front of the session's simulator, with an
    ``OpenTelemetryMetrics`` on providers of this test's own."""
    telemetry = Served("", Upstream(upstream).port)
    relay = StreamRelay(
        Upstream(upstream, api_key=RELAY_KEY),
        metrics=OpenTelemetryMetrics(
            meter_provider=telemetry.meter_provider,
            tracer_provider=telemetry.tracer_provider,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await relay.aclose()

    app = Starlette(routes=[Mount("/v1", relay)], lifespan=lifespan)
    host = ServerSpans(app, telemetry.tracer_provider.get_tracer("host"))
    with ServerThread(host) as server:
        telemetry.url = server.url + "/v1"
        yield telemetry
    telemetry.meter_provider.shutdown()
    telemetry.tracer_provider.shutdown()


def the_call(sim: Simulator) -> RecordedRequest:
    (request,) = [r for r in sim.requests if r.path.endswith("/chat/completions")]
    return request


def check_trace(span: ReadableSpan, server: ReadableSpan, call: RecordedRequest) -> None:
    """The relay's span is the server span's child, and the upstream got its context."""
    context = span.get_span_context()
    assert context is not None and span.parent is not None
    assert span.parent.span_id == server.get_span_context().span_id  # type: ignore[union-attr]
    version, trace_id, parent_id, _ = call.headers["traceparent"].split("-")
    assert version == "00"
    assert int(trace_id, 16) == context.trace_id
    assert int(parent_id, 16) == context.span_id
    assert len(call.headers.getlist("traceparent")) == 1


def test_a_stream_through_the_openai_client(served: Served, sim: Simulator) -> None:
    options: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    with openai.OpenAI(base_url=served.url, api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(**BODY, **options)
        request_id = raw.headers["x-request-id"]
        chunks = list(raw.parse())
    usage = chunks[-1].usage
    assert usage is not None
    expected = sim.completion({**BODY, **options})["usage"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        expected["prompt_tokens"],
        expected["completion_tokens"],
    )

    spans = served.spans(2)
    span, server = spans["chat sim-1"], spans["POST /v1/chat/completions"]
    assert span.kind is SpanKind.CLIENT and span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "sim-1"
    assert attributes["gen_ai.response.model"] == "sim-1"
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert attributes["http.response.status_code"] == 200
    assert attributes["streamrelay.route"] == "chat.completions"
    assert attributes["streamrelay.format"] == "openai"
    assert attributes["streamrelay.outcome"] == "done"
    assert attributes["streamrelay.request_id"] == request_id
    assert attributes["streamrelay.upstream_cancelled"] is False
    assert [event.name for event in span.events] == ["first_token"]

    call = the_call(sim)
    check_trace(span, server, call)
    assert call.headers["x-request-id"] == request_id

    metrics = served.metrics()
    assert {name: unit for name, (unit, _) in metrics.items()} == {
        DURATION: "s",
        TTFC: "s",
        TPOC: "s",
        TOKENS: "{token}",
    }
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "sim-1",
        "gen_ai.response.model": "sim-1",
        "server.address": "127.0.0.1",
        "server.port": served.upstream_port,
    }
    for name in (DURATION, TTFC, TPOC):
        (point,) = metrics[name][1]
        assert dict(point.attributes or {}) == common and point.count == 1
    (ttfc,) = metrics[TTFC][1]
    (duration,) = metrics[DURATION][1]
    assert 0 <= ttfc.sum <= duration.sum
    tokens = {dict(p.attributes or {})["gen_ai.token.type"]: p.sum for p in metrics[TOKENS][1]}
    assert tokens == {"input": usage.prompt_tokens, "output": usage.completion_tokens}


def test_a_whole_answer_through_the_openai_client(served: Served, sim: Simulator) -> None:
    with openai.OpenAI(base_url=served.url, api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(**BODY)
        request_id = raw.headers["x-request-id"]
        completion = raw.parse()
    usage = completion.usage
    assert usage is not None
    expected = sim.completion(BODY)["usage"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        expected["prompt_tokens"],
        expected["completion_tokens"],
    )

    spans = served.spans(2)
    span, server = spans["chat sim-1"], spans["POST /v1/chat/completions"]
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.request.stream"] is False
    assert attributes["streamrelay.format"] == "json"
    assert attributes["streamrelay.request_id"] == request_id
    assert attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert [event.name for event in span.events] == []

    call = the_call(sim)
    check_trace(span, server, call)
    assert call.headers["x-request-id"] == request_id

    metrics = served.metrics()
    assert set(metrics) == {DURATION, TOKENS}  # a whole answer has no chunks
    tokens = {dict(p.attributes or {})["gen_ai.token.type"]: p.sum for p in metrics[TOKENS][1]}
    assert tokens == {"input": usage.prompt_tokens, "output": usage.completion_tokens}
