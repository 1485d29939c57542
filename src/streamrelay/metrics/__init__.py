"""Metrics for operators: observers that turn every stream into Prometheus series or
OpenTelemetry metrics and spans.

>>> from streamrelay.metrics import PrometheusMetrics      # doctest: +SKIP
>>> relay = StreamRelay(upstream, metrics=PrometheusMetrics())   # doctest: +SKIP

Each backend is an optional extra (``streamrelay-asgi[prometheus]``,
``streamrelay-asgi[otel]``), imported only when its class is first used. Both are
:class:`~streamrelay.observer.Observer` implementations; several go in as
``metrics=[...]``. See ``docs/observability.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .labels import outcome_label
    from .otel import OpenTelemetryMetrics
    from .prometheus import PrometheusMetrics

__all__ = ["OpenTelemetryMetrics", "PrometheusMetrics", "outcome_label"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "OpenTelemetryMetrics": "otel",
        "PrometheusMetrics": "prometheus",
        "outcome_label": "labels",
    },
)
