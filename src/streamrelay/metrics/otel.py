"""``OpenTelemetryMetrics``: every stream as OpenTelemetry GenAI metrics and a span (the
``[otel]`` extra).

Only the OpenTelemetry *API* is used; the application picks the SDK, its readers and
exporters, and either sets the global providers or passes its own::

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from streamrelay.metrics import OpenTelemetryMetrics

    relay = StreamRelay(
        upstream,
        metrics=OpenTelemetryMetrics(meter_provider=MeterProvider(...),
                                     tracer_provider=TracerProvider(...)),
    )

With no providers given it uses the global ones, which may be set after the relay is
built (the API's proxies follow them).

Metrics (the GenAI semantic conventions' client histograms, with their recommended
bucket boundaries):

* ``gen_ai.client.operation.duration`` (``s``): every stream and every whole answer,
  from the engine's start to the end, whatever the outcome (failures carry
  ``error.type``);
* ``gen_ai.client.operation.time_to_first_chunk`` (``s``): streams that got a first
  token (content, reasoning, a refusal or a tool call) from the upstream;
* ``gen_ai.client.operation.time_per_output_chunk`` (``s``): once per stream that
  ended ``done`` with a first token, the mean gap after it:
  ``(duration - ttft) / max(events_out - 1, 1)``. The conventions record each gap
  between chunks; the relay keeps nothing per token, so it records their mean over
  the events it sent (an event is about a chunk: a delta, a reasoning or tool-call
  piece; the few framing events make it err a little low on short streams);
* ``gen_ai.client.token.usage`` (``{token}``): the upstream's reported usage, once
  with ``gen_ai.token.type="input"`` (``prompt_tokens``) and once with ``"output"``
  (``completion_tokens``), for streams and whole answers.

Their attributes: ``gen_ai.operation.name`` (``chat``, or ``text_completion`` for the
legacy completions route), ``gen_ai.provider.name`` (``openai`` unless told),
``gen_ai.request.model``, ``gen_ai.response.model``, ``server.address`` and
``server.port`` (each left out
when unknown) and, on the duration of a failure only (as the conventions say),
``error.type``: the outcome's code (``upstream_status_429``, ``upstream_timeout``, the
upstream's own error code...) or else its ending (``client_disconnected``...). Model
names are the raw ones: keep that in mind if clients may name any model.

Each stream and whole answer also gets a ``CLIENT`` span named ``"{operation} {model}"``
(``chat gpt-4o-mini``), a child of the current span (a host's server span), started
just before the upstream call and ended with the stream. Its trace context goes to
the upstream as ``traceparent`` (the global propagator's headers). It carries the
metric attributes, ``gen_ai.request.stream``, ``gen_ai.response.time_to_first_chunk``,
``gen_ai.usage.input_tokens`` and ``gen_ai.usage.output_tokens`` (and the cached and
reasoning token counts when the upstream reports them), ``http.response.status_code``
(what the client got), and ``streamrelay.route``, ``streamrelay.format``,
``streamrelay.outcome`` (the :class:`~streamrelay.outcome.Ending`'s value),
``streamrelay.request_id``, ``streamrelay.stream_id``, ``streamrelay.upstream_status``,
``streamrelay.upstream_cancelled`` and ``streamrelay.heartbeats``. Its events:
``first_token``, ``heartbeat`` (with ``streamrelay.heartbeat.gap``, the seconds of
silence it filled; the first :data:`MAX_HEARTBEAT_EVENTS` only) and ``cancelled`` (the
upstream generation was closed because the client left or a stop came). A failure
sets ``error.type`` and the status ``ERROR``. A resume (a reader of a stored stream)
makes no call upstream and is not observed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._version import __version__
from ..observer import Observer, StreamStart, StreamWatch
from ..outcome import Ending, Outcome

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "DURATION_BUCKETS",
    "MAX_HEARTBEAT_EVENTS",
    "TOKEN_BUCKETS",
    "OpenTelemetryMetrics",
    "error_type",
]

DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
"""The conventions' bucket boundaries of the three ``gen_ai.client.operation.*``
histograms (seconds)."""

TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
"""The conventions' bucket boundaries of ``gen_ai.client.token.usage``."""

MAX_HEARTBEAT_EVENTS = 100
"""Heartbeat events one span keeps at most (its ``streamrelay.heartbeats`` attribute
counts them all): a long idle stream must not grow a span without bound."""

# Attribute names (the GenAI and general semantic conventions, then streamrelay's own).
_OPERATION = "gen_ai.operation.name"
_PROVIDER = "gen_ai.provider.name"
_REQUEST_MODEL = "gen_ai.request.model"
_RESPONSE_MODEL = "gen_ai.response.model"
_REQUEST_STREAM = "gen_ai.request.stream"
_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
_TOKEN_TYPE = "gen_ai.token.type"
_INPUT_TOKENS = "gen_ai.usage.input_tokens"
_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
_CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
_REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"
_SERVER_ADDRESS = "server.address"
_ERROR_TYPE = "error.type"
_STATUS_CODE = "http.response.status_code"
_ROUTE = "streamrelay.route"
_FORMAT = "streamrelay.format"
_OUTCOME = "streamrelay.outcome"
_REQUEST_ID = "streamrelay.request_id"
_STREAM_ID = "streamrelay.stream_id"
_UPSTREAM_STATUS = "streamrelay.upstream_status"
_UPSTREAM_CANCELLED = "streamrelay.upstream_cancelled"
_HEARTBEATS = "streamrelay.heartbeats"
_HEARTBEAT_GAP = "streamrelay.heartbeat.gap"


def error_type(outcome: Outcome) -> str | None:
    """The ``error.type`` of an outcome: ``None`` for a complete answer, else its code,
    else its ending's value.

    >>> error_type(Outcome(Ending.DONE)), error_type(Outcome(Ending.ERROR, code="overloaded"))
    (None, 'overloaded')
    >>> error_type(Outcome(Ending.CLIENT_DISCONNECTED))
    'client_disconnected'
    """
    if outcome.ending is Ending.DONE:
        return None
    return outcome.code or outcome.ending.value


class OpenTelemetryMetrics(Observer):
    """OpenTelemetry GenAI metrics and a ``CLIENT`` span for every stream and whole
    answer of the relays it is given to (see the module for what is recorded).

    Args:
        meter_provider: where the metrics go (default: the global one,
            ``opentelemetry.metrics.get_meter_provider()``).
        tracer_provider: where the spans go (default: the global one,
            ``opentelemetry.trace.get_tracer_provider()``). With no SDK configured
            the spans are no-ops and no ``traceparent`` is sent.
        provider_name: the ``gen_ai.provider.name`` attribute. The relay speaks the
            OpenAI API, hence ``"openai"``; name the real provider behind it if it is
            another (``"azure.ai.openai"``, ``"groq"``, ``"deepseek"``...).

    Raises:
        ConfigurationError: ``provider_name`` is not a non-empty string.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        *,
        provider_name: str = "openai",
    ) -> None:
        if not isinstance(provider_name, str) or not provider_name:
            from ..errors import ConfigurationError

            raise ConfigurationError(
                f"provider_name must be a non-empty string, got {provider_name!r}"
            )
        self.provider_name = provider_name
        meter = metrics.get_meter("streamrelay", __version__, meter_provider)
        self.tracer = trace.get_tracer("streamrelay", __version__, tracer_provider)
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.time_to_first_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk, measured from when the client "
            "issues the generation request to when the first chunk is received in the "
            "response stream.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.time_per_output_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Time per output chunk after the first one (streamrelay records "
            "each stream's mean).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.token_usage: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )

    def __repr__(self) -> str:
        return f"OpenTelemetryMetrics(provider_name={self.provider_name!r})"

    def stream_started(self, start: StreamStart) -> StreamWatch | None:
        """Start the span (a child of the current context's), append its trace context
        to ``start.upstream_headers`` and follow the stream; ``None`` for a resume."""
        if start.resumed:
            return None
        operation = start.operation
        common: dict[str, AttributeValue] = {
            _OPERATION: operation,
            _PROVIDER: self.provider_name,
        }
        if start.model is not None:
            common[_REQUEST_MODEL] = start.model
        if start.server is not None:
            common[_SERVER_ADDRESS] = start.server
            if start.server_port is not None:
                common["server.port"] = start.server_port
        own: dict[str, AttributeValue] = {
            **common,
            _REQUEST_STREAM: start.streaming,
            _ROUTE: start.route,
            _FORMAT: start.format,
        }
        if start.request_id is not None:
            own[_REQUEST_ID] = start.request_id
        if start.stream_id is not None:
            own[_STREAM_ID] = start.stream_id
        span = self.tracer.start_span(
            f"{operation} {start.model}" if start.model else operation,
            kind=SpanKind.CLIENT,
            attributes=own,
        )
        carrier: dict[str, str] = {}
        try:
            inject(carrier, context=trace.set_span_in_context(span))
        except BaseException:  # a broken propagator: no watch will end the span
            span.end()
            raise
        if carrier:
            taken = {name.lower() for name, _ in start.upstream_headers}
            start.upstream_headers.extend(
                (name, value) for name, value in carrier.items() if name.lower() not in taken
            )
        return _Watch(self, span, common, start.streaming)


class _Watch(StreamWatch):
    """One stream's span and metric attributes. Nothing per token: ``overhead`` is
    the default no-op; a first token and a heartbeat are span events."""

    __slots__ = ("attributes", "beats", "owner", "span", "streaming")

    def __init__(
        self,
        owner: OpenTelemetryMetrics,
        span: Span,
        attributes: dict[str, AttributeValue],
        streaming: bool,
    ) -> None:
        self.owner = owner
        self.span = span
        self.attributes = attributes
        self.streaming = streaming
        self.beats = 0

    def first_token(self, seconds: float) -> None:
        self.span.add_event("first_token", {_TIME_TO_FIRST_CHUNK: seconds})

    def heartbeat(self, gap: float) -> None:
        if self.beats < MAX_HEARTBEAT_EVENTS:
            self.beats += 1
            self.span.add_event("heartbeat", {_HEARTBEAT_GAP: gap})

    def finished(self, outcome: Outcome) -> None:
        span = self.span
        try:
            error = error_type(outcome)
            self._record(outcome, error)
            if span.is_recording():
                _describe(span, outcome, error)
        finally:
            span.end()

    def _record(self, outcome: Outcome, error: str | None) -> None:
        owner = self.owner
        attributes = self.attributes
        if outcome.model is not None:
            attributes[_RESPONSE_MODEL] = outcome.model
        owner.duration.record(
            outcome.duration,
            attributes if error is None else {**attributes, _ERROR_TYPE: error},
        )
        ttft = outcome.ttft
        if self.streaming and ttft is not None:
            owner.time_to_first_chunk.record(ttft, attributes)
            if error is None:
                owner.time_per_output_chunk.record(
                    max(outcome.duration - ttft, 0.0) / max(outcome.events_out - 1, 1),
                    attributes,
                )
        usage = outcome.usage
        if usage is not None:
            owner.token_usage.record(usage.prompt_tokens, {**attributes, _TOKEN_TYPE: "input"})
            owner.token_usage.record(usage.completion_tokens, {**attributes, _TOKEN_TYPE: "output"})


def _describe(span: Span, outcome: Outcome, error: str | None) -> None:
    """The span's end: the outcome's attributes, a ``cancelled`` event, the status."""
    ending = outcome.ending.value
    attributes: dict[str, AttributeValue] = {
        _OUTCOME: ending,
        _UPSTREAM_CANCELLED: outcome.upstream_cancelled,
        _HEARTBEATS: outcome.heartbeats,
    }
    if outcome.model is not None:
        attributes[_RESPONSE_MODEL] = outcome.model
    if outcome.status is not None:
        attributes[_STATUS_CODE] = outcome.status
    if outcome.upstream_status is not None:
        attributes[_UPSTREAM_STATUS] = outcome.upstream_status
    if outcome.stream_id is not None:
        attributes[_STREAM_ID] = outcome.stream_id
    if outcome.ttft is not None:
        attributes[_TIME_TO_FIRST_CHUNK] = outcome.ttft
    usage = outcome.usage
    if usage is not None:
        attributes[_INPUT_TOKENS] = usage.prompt_tokens
        attributes[_OUTPUT_TOKENS] = usage.completion_tokens
        cached = (usage.prompt_tokens_details or {}).get("cached_tokens")
        if type(cached) is int:
            attributes[_CACHE_READ_TOKENS] = cached
        reasoning = (usage.completion_tokens_details or {}).get("reasoning_tokens")
        if type(reasoning) is int:
            attributes[_REASONING_TOKENS] = reasoning
    if error is not None:
        attributes[_ERROR_TYPE] = error
    span.set_attributes(attributes)
    if outcome.upstream_cancelled:
        span.add_event("cancelled", {_OUTCOME: ending})
    if error is not None:
        span.set_status(
            Status(StatusCode.ERROR, error if error == ending else f"{ending}: {error}")
        )
