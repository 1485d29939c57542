"""``OpenTelemetryMetrics`` without sockets: the observer driven directly and through the
real engine (:func:`run_stream`, :func:`relay_answer`), read back with the SDK's
in-memory reader and exporter on providers of the test's own (never the global ones).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamrelay._version import __version__
from streamrelay.answer import relay_answer
from streamrelay.config import StreamSettings
from streamrelay.errors import ConfigurationError, UpstreamStatusError
from streamrelay.events import Usage
from streamrelay.metrics import OpenTelemetryMetrics
from streamrelay.metrics.otel import DURATION_BUCKETS, MAX_HEARTBEAT_EVENTS, TOKEN_BUCKETS
from streamrelay.observer import Observers, StreamStart, observers_of
from streamrelay.outcome import Ending, Outcome
from streamrelay.pipeline import run_stream
from streamrelay.sources import Source

QUIET = StreamSettings(heartbeat=None)

DURATION = "gen_ai.client.operation.duration"
TTFC = "gen_ai.client.operation.time_to_first_chunk"
TPOC = "gen_ai.client.operation.time_per_output_chunk"
TOKENS = "gen_ai.client.token.usage"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The engine tests run under asyncio and under trio."""
    return str(request.param)


# The SDK side -------------------------------------------------------------------------------


@dataclass
class Recorded:
    unit: str
    points: list[HistogramDataPoint]

    def point(self, **attributes: Any) -> HistogramDataPoint:
        """The one data point whose attributes include ``attributes`` (dots as ``__``)."""
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        found = [p for p in self.points if wanted.items() <= dict(p.attributes or {}).items()]
        assert len(found) == 1, [dict(p.attributes or {}) for p in self.points]
        return found[0]


class Telemetry:
    """An observer on providers of its own, and what it recorded."""

    def __init__(self, **options: Any) -> None:
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.observer = OpenTelemetryMetrics(
            meter_provider=self.meter_provider,
            tracer_provider=self.tracer_provider,
            **options,
        )

    @property
    def observers(self) -> Observers:
        observers = observers_of(self.observer)
        assert observers is not None
        return observers

    def metrics(self) -> dict[str, Recorded]:
        data = self.reader.get_metrics_data()
        found: dict[str, Recorded] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert (scope.scope.name, scope.scope.version) == ("streamrelay", __version__)
                for metric in scope.metrics:
                    points = [
                        p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)
                    ]
                    found[metric.name] = Recorded(metric.unit or "", points)
        return found

    def span(self) -> ReadableSpan:
        (span,) = self.exporter.get_finished_spans()
        return span

    def close(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.close()


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


def traceparent(headers: list[tuple[str, str]]) -> str:
    (value,) = [value for name, value in headers if name == "traceparent"]
    return value


def assert_propagated(start: StreamStart, span: ReadableSpan) -> None:
    """``start.upstream_headers`` carries the span's own context (W3C trace context)."""
    context = span.get_span_context()
    assert context is not None
    version, trace_id, span_id, flags = traceparent(start.upstream_headers).split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == context.trace_id
    assert int(span_id, 16) == context.span_id


# The relay side: an in-memory client and upstream ------------------------------------------


def chunk(text: str) -> bytes:
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-test","choices":'
        b'[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % text.encode()
    )


FINISH = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-test","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}\n\n'
)
USAGE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-test","choices":[],'
    b'"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n'
)
DONE = b"data: [DONE]\n\n"
COMPLETION = (
    b'{"id":"c1","object":"chat.completion","model":"gpt-test","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hi"}}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)


class Client:
    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)


class Upstream:
    """A scripted SSE source (a float is that much silence, a callable silence until it
    returns true); notes when it was opened."""

    def __init__(self, *items: bytes | float | Callable[[], bool]) -> None:
        self.items = items
        self.opened_at: int | None = None

    async def _items(self) -> AsyncIterator[bytes]:
        for item in self.items:
            if isinstance(item, float):
                await anyio.sleep(item)
            elif callable(item):
                while not item():  # noqa: ASYNC110 - a plain predicate, polled
                    await anyio.sleep(0.005)
            else:
                yield item

    async def open(self) -> Source:
        self.opened_at = time.time_ns()

        async def close(complete: bool) -> None:
            pass

        return Source(self._items(), "sse", close)


async def never() -> None:
    await anyio.sleep_forever()


def chat_start(**fields: Any) -> StreamStart:
    defaults: dict[str, Any] = {"model": "m", "server": "api.example", "request_id": "req-1"}
    return StreamStart("chat.completions", "sse", **{**defaults, **fields})


async def stream(
    otel: Telemetry,
    opener: Any,
    start: StreamStart,
    *,
    settings: StreamSettings = QUIET,
    wait_disconnect: Any = never,
    client: Client | None = None,
) -> Outcome:
    with anyio.fail_after(10):
        outcome = await run_stream(
            (client or Client()).send,
            open_source=opener,
            wait_disconnect=wait_disconnect,
            format=start.format,
            settings=settings,
            start=start,
            observers=otel.observers,
        )
    assert outcome is not None
    return outcome


COMMON = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "m",
    "server.address": "api.example",
}
"""The metric attributes every test stream starts with."""


# Streams through the engine -----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_done_stream_records_every_metric_and_a_client_span(otel: Telemetry) -> None:
    upstream = Upstream(chunk("Hel"), chunk("lo"), FINISH, USAGE, DONE)
    start = chat_start()
    outcome = await stream(otel, upstream.open, start)
    assert outcome.ending is Ending.DONE and outcome.ttft is not None

    recorded = otel.metrics()
    assert set(recorded) == {DURATION, TTFC, TPOC, TOKENS}
    assert {name: r.unit for name, r in recorded.items()} == {
        DURATION: "s",
        TTFC: "s",
        TPOC: "s",
        TOKENS: "{token}",
    }
    attributes = {**COMMON, "gen_ai.response.model": "gpt-test"}
    (duration,) = recorded[DURATION].points
    assert dict(duration.attributes or {}) == attributes  # no error.type
    assert duration.count == 1 and duration.sum == pytest.approx(outcome.duration)
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    (ttfc,) = recorded[TTFC].points
    assert dict(ttfc.attributes or {}) == attributes
    assert ttfc.count == 1 and ttfc.sum == pytest.approx(outcome.ttft)
    (tpoc,) = recorded[TPOC].points
    assert dict(tpoc.attributes or {}) == attributes
    assert tpoc.count == 1
    assert tpoc.sum == pytest.approx((outcome.duration - outcome.ttft) / (outcome.events_out - 1))
    tokens = recorded[TOKENS]
    assert len(tokens.points) == 2
    for kind, count in (("input", 7), ("output", 2)):
        point = tokens.point(gen_ai__token__type=kind)
        assert dict(point.attributes or {}) == {**attributes, "gen_ai.token.type": kind}
        assert (point.count, point.sum) == (1, count)
        assert tuple(point.explicit_bounds) == TOKEN_BUCKETS

    span = otel.span()
    assert span.name == "chat m" and span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None
    assert upstream.opened_at is not None and span.start_time is not None
    assert span.start_time <= upstream.opened_at  # started before the upstream call
    assert dict(span.attributes or {}) == {
        **attributes,
        "gen_ai.request.stream": True,
        "gen_ai.response.time_to_first_chunk": pytest.approx(outcome.ttft),
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 2,
        "http.response.status_code": 200,
        "streamrelay.route": "chat.completions",
        "streamrelay.format": "sse",
        "streamrelay.request_id": "req-1",
        "streamrelay.outcome": "done",
        "streamrelay.upstream_status": 200,
        "streamrelay.upstream_cancelled": False,
        "streamrelay.heartbeats": 0,
    }
    assert events(span) == [
        ("first_token", {"gen_ai.response.time_to_first_chunk": pytest.approx(outcome.ttft)})
    ]
    assert_propagated(start, span)


@pytest.mark.anyio
async def test_an_upstream_error_status_is_an_error_without_a_first_chunk(
    otel: Telemetry,
) -> None:
    async def opener() -> Source:
        raise UpstreamStatusError(429, [("retry-after", "3")], b'{"error":{}}')

    start = chat_start()
    outcome = await stream(otel, opener, start)
    assert outcome.ending is Ending.UPSTREAM_STATUS

    recorded = otel.metrics()
    assert set(recorded) == {DURATION}  # no first chunk, no usage
    (duration,) = recorded[DURATION].points
    assert dict(duration.attributes or {}) == {**COMMON, "error.type": "upstream_status_429"}

    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "upstream_status: upstream_status_429"
    attributes = dict(span.attributes or {})
    assert attributes["error.type"] == "upstream_status_429"
    assert attributes["http.response.status_code"] == 429
    assert attributes["streamrelay.outcome"] == "upstream_status"
    assert "gen_ai.usage.input_tokens" not in attributes
    assert "gen_ai.response.model" not in attributes
    assert events(span) == []
    assert_propagated(start, span)  # the call was made, with the trace


@pytest.mark.anyio
async def test_a_client_that_leaves_is_a_cancelled_span(otel: Telemetry) -> None:
    upstream = Upstream(chunk("a"), 5.0, DONE)
    left = anyio.Event()

    async def wait_disconnect() -> None:
        await left.wait()

    async def leave_soon() -> None:
        await anyio.sleep(0.1)
        left.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(leave_soon)
        outcome = await stream(otel, upstream.open, chat_start(), wait_disconnect=wait_disconnect)
    assert outcome.ending is Ending.CLIENT_DISCONNECTED and outcome.upstream_cancelled

    recorded = otel.metrics()
    assert set(recorded) == {DURATION, TTFC}  # no usage came; no rate for a cut stream
    (duration,) = recorded[DURATION].points
    assert dict(duration.attributes or {})["error.type"] == "client_disconnected"

    span = otel.span()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "client_disconnected"
    assert [name for name, _ in events(span)] == ["first_token", "cancelled"]
    assert events(span)[1][1] == {"streamrelay.outcome": "client_disconnected"}
    assert dict(span.attributes or {})["streamrelay.upstream_cancelled"] is True


@pytest.mark.anyio
async def test_heartbeats_are_span_events_with_their_gap(otel: Telemetry) -> None:
    client = Client()
    # (sse: a heartbeat is the comment line ": ping")
    pinged = lambda: sum(m.get("body") == b": ping\n" for m in client.messages) >= 2  # noqa: E731
    upstream = Upstream(chunk("a"), pinged, FINISH, DONE)
    outcome = await stream(
        otel, upstream.open, chat_start(), settings=StreamSettings(heartbeat=0.1), client=client
    )
    assert outcome.ending is Ending.DONE and outcome.heartbeats >= 2
    span = otel.span()
    beats = [attributes for name, attributes in events(span) if name == "heartbeat"]
    assert len(beats) == outcome.heartbeats
    assert all(0.05 < beat["streamrelay.heartbeat.gap"] < 1.0 for beat in beats)
    assert dict(span.attributes or {})["streamrelay.heartbeats"] == outcome.heartbeats


# A whole answer ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_whole_answer_records_its_duration_tokens_and_span(otel: Telemetry) -> None:
    start = StreamStart(
        "chat.completions",
        "json",
        streaming=False,
        model="m",
        server="api.example",
        request_id="req-2",
    )

    async def call() -> tuple[int, list[tuple[str, str]], bytes]:
        return 200, [], COMPLETION

    with anyio.fail_after(10):
        outcome = await relay_answer(
            Client().send,
            call=call,
            wait_disconnect=never,
            settings=QUIET,
            start=start,
            observers=otel.observers,
        )
    assert outcome.ending is Ending.DONE and not outcome.streaming

    recorded = otel.metrics()
    assert set(recorded) == {DURATION, TOKENS}  # no chunks: not a stream
    attributes = {**COMMON, "gen_ai.response.model": "gpt-test"}
    (duration,) = recorded[DURATION].points
    assert dict(duration.attributes or {}) == attributes
    assert duration.sum == pytest.approx(outcome.duration)
    assert recorded[TOKENS].point(gen_ai__token__type="input").sum == 3
    assert recorded[TOKENS].point(gen_ai__token__type="output").sum == 1

    span = otel.span()
    assert span.name == "chat m" and span.kind is SpanKind.CLIENT
    attributes_of_span = dict(span.attributes or {})
    assert attributes_of_span["gen_ai.request.stream"] is False
    assert attributes_of_span["streamrelay.format"] == "json"
    assert attributes_of_span["streamrelay.request_id"] == "req-2"
    assert attributes_of_span["gen_ai.usage.output_tokens"] == 1
    assert "gen_ai.response.time_to_first_chunk" not in attributes_of_span
    assert span.status.status_code is StatusCode.UNSET
    assert_propagated(start, span)


# The observer driven directly ---------------------------------------------------------------


def test_the_span_is_a_child_of_the_current_span(otel: Telemetry) -> None:
    tracer = otel.tracer_provider.get_tracer("host")
    start = chat_start()
    with tracer.start_as_current_span("POST /v1/chat/completions") as server:
        watch = otel.observer.stream_started(start)
    assert watch is not None
    watch.finished(Outcome(Ending.DONE))
    span = next(s for s in otel.exporter.get_finished_spans() if s.name == "chat m")
    assert span.parent is not None
    assert span.parent.span_id == server.get_span_context().span_id
    assert span.context is not None
    assert span.context.trace_id == server.get_span_context().trace_id
    assert_propagated(start, span)


def test_a_resume_is_not_observed(otel: Telemetry) -> None:
    start = StreamStart("streams", "sse", resumed=True, stream_id="s1")
    assert otel.observer.stream_started(start) is None
    assert start.upstream_headers == []
    assert otel.exporter.get_finished_spans() == ()
    assert otel.metrics() == {}


def test_legacy_completions_are_text_completion_and_the_provider_can_be_named() -> None:
    telemetry = Telemetry(provider_name="azure.ai.openai")
    try:
        start = StreamStart("completions", "sse", model="davinci-002")
        watch = telemetry.observer.stream_started(start)
        assert watch is not None
        watch.finished(Outcome(Ending.DONE, usage=Usage(4, 5, 9)))
        span = telemetry.span()
        assert span.name == "text_completion davinci-002"
        point = telemetry.metrics()[TOKENS].point(gen_ai__token__type="output")
        assert dict(point.attributes or {}) == {
            "gen_ai.operation.name": "text_completion",
            "gen_ai.provider.name": "azure.ai.openai",
            "gen_ai.request.model": "davinci-002",
            "gen_ai.token.type": "output",
        }
    finally:
        telemetry.close()


def test_unknown_values_are_left_out(otel: Telemetry) -> None:
    watch = otel.observer.stream_started(StreamStart("chat", "ai-sdk"))
    assert watch is not None
    watch.finished(Outcome(Ending.SHUTDOWN, code="shutdown", status=None))
    span = otel.span()
    assert span.name == "chat"  # no model: the operation alone
    attributes = dict(span.attributes or {})
    for absent in (
        "gen_ai.request.model",
        "gen_ai.response.model",
        "server.address",
        "http.response.status_code",
        "streamrelay.request_id",
        "streamrelay.stream_id",
    ):
        assert absent not in attributes
    (duration,) = otel.metrics()[DURATION].points
    assert dict(duration.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "error.type": "shutdown",
    }
    assert span.status.description == "shutdown"


def test_usage_details_and_the_stream_id_go_on_the_span(otel: Telemetry) -> None:
    watch = otel.observer.stream_started(chat_start(stream_id="s-1"))
    assert watch is not None
    usage = Usage(
        10,
        6,
        16,
        prompt_tokens_details={"cached_tokens": 8},
        completion_tokens_details={"reasoning_tokens": 4},
    )
    watch.finished(Outcome(Ending.DONE, usage=usage, stream_id="s-1"))
    attributes = dict(otel.span().attributes or {})
    assert attributes["streamrelay.stream_id"] == "s-1"
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 8
    assert attributes["gen_ai.usage.reasoning.output_tokens"] == 4


def test_heartbeat_events_are_capped(otel: Telemetry) -> None:
    watch = otel.observer.stream_started(chat_start())
    assert watch is not None
    for _ in range(MAX_HEARTBEAT_EVENTS + 50):
        watch.heartbeat(15.0)
        watch.overhead(0.0001)  # the default: nothing
    watch.finished(Outcome(Ending.DONE, heartbeats=MAX_HEARTBEAT_EVENTS + 50))
    span = otel.span()
    assert [name for name, _ in events(span)] == ["heartbeat"] * MAX_HEARTBEAT_EVENTS
    assert dict(span.attributes or {})["streamrelay.heartbeats"] == MAX_HEARTBEAT_EVENTS + 50


def test_a_mid_stream_error_has_its_code_and_no_chunk_rate(otel: Telemetry) -> None:
    watch = otel.observer.stream_started(chat_start())
    assert watch is not None
    watch.first_token(0.2)
    watch.finished(
        Outcome(Ending.ERROR, code="overloaded", model="gpt-test", ttft=0.2, duration=1.0)
    )
    recorded = otel.metrics()
    assert set(recorded) == {DURATION, TTFC}
    assert dict(recorded[DURATION].points[0].attributes or {})["error.type"] == "overloaded"
    assert recorded[TTFC].points[0].sum == pytest.approx(0.2)
    assert otel.span().status.description == "error: overloaded"


def test_without_a_tracer_no_trace_context_is_sent() -> None:
    reader = InMemoryMetricReader()
    observer = OpenTelemetryMetrics(
        meter_provider=MeterProvider(metric_readers=[reader]),
        tracer_provider=trace.NoOpTracerProvider(),
    )
    start = chat_start()
    watch = observer.stream_started(start)
    assert watch is not None
    watch.finished(Outcome(Ending.DONE, duration=0.5))
    assert start.upstream_headers == []
    data = reader.get_metrics_data()
    assert data is not None
    names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert names == [DURATION]


def test_two_observers_send_one_traceparent() -> None:
    first, second = Telemetry(), Telemetry()
    try:
        observers = observers_of([first.observer, second.observer])
        assert observers is not None
        start = chat_start()
        watch = observers.start(start)
        assert watch is not None
        watch.finished(Outcome(Ending.DONE))
        assert_propagated(start, first.span())  # the first one's, once
    finally:
        first.close()
        second.close()


def test_the_global_providers_are_the_default() -> None:
    observer = OpenTelemetryMetrics()  # the API's proxies: usable before any SDK is set
    watch = observer.stream_started(chat_start())
    assert watch is not None
    watch.finished(Outcome(Ending.DONE))


@pytest.mark.parametrize("name", ["", None, 3])
def test_the_provider_name_must_be_a_string(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="provider_name"):
        OpenTelemetryMetrics(provider_name=name)
