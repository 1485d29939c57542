"""``PrometheusMetrics``: every stream as Prometheus series (the ``[prometheus]`` extra).

::

    from prometheus_client import make_asgi_app
    from streamrelay.metrics import PrometheusMetrics

    relay = StreamRelay(upstream, metrics=PrometheusMetrics())
    app = Starlette(routes=[Mount("/ai", relay), Mount("/metrics", make_asgi_app())])

The series (``route``: ``chat.completions``, ``responses``, ``completions``, ``chat``,
``ag-ui``, ``middleware`` or ``relay_response``; ``format``: the wire name):

* ``streamrelay_streams_started_total{route,format}``: a stream starts when its
  upstream call is opened (an error status then finishes it as ``upstream_status``);
* ``streamrelay_streams_finished_total{route,format,outcome}``, ``outcome`` one of
  :data:`~streamrelay.metrics.labels.OUTCOME_LABELS`;
* ``streamrelay_active_streams``;
* ``streamrelay_time_to_first_token_seconds`` and ``streamrelay_stream_duration_seconds``
  (histograms);
* ``streamrelay_tokens_total{type}`` (``input``, ``output``; from the upstream's usage);
* ``streamrelay_upstream_errors_total{status}``;
* ``streamrelay_upstream_cancelled_total``: generations closed because the client left
  or a stop came;
* ``streamrelay_heartbeats_total``, ``streamrelay_resumes_total``;
* ``streamrelay_relay_overhead_seconds`` (histogram): from an upstream read to its
  send, sampled (see :data:`~streamrelay.observer.OVERHEAD_SAMPLE_EVERY`).

Whole (non-streaming) answers count in ``tokens_total`` and ``upstream_errors_total``
only: they are not streams. With several worker processes, set
``PROMETHEUS_MULTIPROC_DIR`` before they start and serve :meth:`PrometheusMetrics.asgi_app`:
any worker answers with the sums over all of them, the gauge over the live ones
(``docs/observability.md``).
"""

from __future__ import annotations

import weakref
from collections.abc import Collection
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ..observer import Observer, StreamStart, StreamWatch
from ..outcome import Outcome
from .exposition import MetricsApp
from .labels import model_label, outcome_label, upstream_error_status

__all__ = ["PrometheusMetrics"]

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
OVERHEAD_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)


@dataclass(frozen=True, slots=True)
class _Series:
    """The collectors of one registry (created once: a registry refuses a name twice)."""

    started: Counter
    finished: Counter
    active: Gauge
    ttft: Histogram
    duration: Histogram
    tokens: Counter
    upstream_errors: Counter
    cancelled: Counter
    heartbeats: Counter
    resumes: Counter
    overhead: Histogram
    by_model: bool


_series: weakref.WeakKeyDictionary[CollectorRegistry, _Series] = weakref.WeakKeyDictionary()


def _series_of(registry: CollectorRegistry, by_model: bool) -> _Series:
    series = _series.get(registry)
    if series is not None:
        if series.by_model != by_model:
            from ..errors import ConfigurationError

            raise ConfigurationError(
                "this registry already has streamrelay's series with"
                f"{'' if series.by_model else 'out'} a model label: give every "
                "PrometheusMetrics on one registry the same models="
            )
        return series
    token_labels = ("type", "model") if by_model else ("type",)
    series = _Series(
        started=Counter(
            "streamrelay_streams_started",
            "Streams whose upstream call was opened.",
            ("route", "format"),
            registry=registry,
        ),
        finished=Counter(
            "streamrelay_streams_finished",
            "Streams that ended, by outcome.",
            ("route", "format", "outcome"),
            registry=registry,
        ),
        active=Gauge(
            "streamrelay_active_streams",
            "Streams open now (their upstream call opened, not yet ended).",
            registry=registry,
            multiprocess_mode="livesum",
        ),
        ttft=Histogram(
            "streamrelay_time_to_first_token_seconds",
            "Seconds from a stream's start to its first token from the upstream.",
            registry=registry,
            buckets=TTFT_BUCKETS,
        ),
        duration=Histogram(
            "streamrelay_stream_duration_seconds",
            "Seconds from a stream's start to its end, every outcome.",
            registry=registry,
            buckets=DURATION_BUCKETS,
        ),
        tokens=Counter(
            "streamrelay_tokens",
            "Tokens the upstream reported using (streams and whole answers).",
            token_labels,
            registry=registry,
        ),
        upstream_errors=Counter(
            "streamrelay_upstream_errors",
            "Upstream failures before an answer: its error status, or 502/504 when "
            "unreachable or too slow (streams and whole answers).",
            ("status",),
            registry=registry,
        ),
        cancelled=Counter(
            "streamrelay_upstream_cancelled",
            "Upstream generations closed because the client left or a stop came.",
            registry=registry,
        ),
        heartbeats=Counter(
            "streamrelay_heartbeats",
            "Keep-alives sent to clients.",
            registry=registry,
        ),
        resumes=Counter(
            "streamrelay_resumes",
            "Readers that resumed a stored stream.",
            registry=registry,
        ),
        overhead=Histogram(
            "streamrelay_relay_overhead_seconds",
            "Seconds from an upstream read to its send to the client (sampled).",
            registry=registry,
            buckets=OVERHEAD_BUCKETS,
        ),
        by_model=by_model,
    )
    _series[registry] = series
    return series


class PrometheusMetrics(Observer):
    """Prometheus series for every stream of the relays it is given to.

    Args:
        registry: where the series live (default: ``prometheus_client.REGISTRY``,
            which ``make_asgi_app()`` exposes). Several ``PrometheusMetrics`` on one
            registry share its series.
        models: model names allowed as a ``model`` label of
            ``streamrelay_tokens_total`` (any other model counts as ``"other"``).
            Default: no model label, since a client picks the model and raw client
            input must not create time series.

    Raises:
        ConfigurationError: the registry already holds streamrelay's series with a
            different ``models`` choice.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        models: Collection[str] | None = None,
    ) -> None:
        if isinstance(models, str):
            from ..errors import ConfigurationError

            raise ConfigurationError(f"models must be a list of model names, got {models!r}")
        self.registry = REGISTRY if registry is None else registry
        self.models = frozenset(models) if models is not None else None
        self.series = _series_of(self.registry, self.models is not None)

    def __repr__(self) -> str:
        return f"PrometheusMetrics(registry={self.registry!r})"

    def asgi_app(self) -> MetricsApp:
        """The ``/metrics`` endpoint: an ASGI app serving the registry's Prometheus text,
        or, with ``PROMETHEUS_MULTIPROC_DIR`` set, the sums over every worker process
        (dead workers' gauges dropped; see :mod:`streamrelay.metrics.exposition`).

        ::

            app = Starlette(routes=[Mount("/ai", relay), Mount("/metrics", metrics.asgi_app())])
        """
        return MetricsApp(self.registry)

    def stream_started(self, start: StreamStart) -> StreamWatch | None:
        series = self.series
        if start.resumed:
            series.resumes.inc()
            return None
        model = model_label(start.model, self.models)
        if not start.streaming:
            return _AnswerWatch(series, model)
        series.started.labels(start.route, start.format).inc()
        series.active.inc()
        return _StreamWatch(series, model)


class _AnswerWatch(StreamWatch):
    """A whole answer: its tokens and failures count, it is not a stream."""

    __slots__ = ("model", "series")

    def __init__(self, series: _Series, model: str | None) -> None:
        self.series = series
        self.model = model

    def finished(self, outcome: Outcome) -> None:
        series, usage = self.series, outcome.usage
        if usage is not None:
            for kind, count in (
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
            ):
                if count:
                    labels = (kind,) if self.model is None else (kind, self.model)
                    series.tokens.labels(*labels).inc(count)
        status = upstream_error_status(outcome)
        if status is not None:
            series.upstream_errors.labels(status).inc()
        if outcome.upstream_cancelled:
            series.cancelled.inc()


class _StreamWatch(_AnswerWatch):
    """A stream: what a whole answer counts, and the stream series."""

    __slots__ = ()

    def first_token(self, seconds: float) -> None:
        self.series.ttft.observe(seconds)

    def heartbeat(self, gap: float) -> None:
        self.series.heartbeats.inc()

    def overhead(self, seconds: float) -> None:
        self.series.overhead.observe(seconds)

    def finished(self, outcome: Outcome) -> None:
        series = self.series
        series.active.dec()
        series.finished.labels(outcome.route, outcome.format, outcome_label(outcome.ending)).inc()
        series.duration.observe(outcome.duration)
        super().finished(outcome)
