"""``docs/grafana/streamrelay.json`` against the series ``PrometheusMetrics`` really has.

The dashboard's queries are checked against a ``PrometheusMetrics`` on a fresh registry,
driven through one stream of every kind so that every series has a sample: each metric
name a query selects must be one of its samples' names (``_total`` for counters,
``_bucket``/``_sum``/``_count`` for histograms, never ``_created``, which the multiprocess
mode does not export), and each label a query groups by or matches on must be one of
that metric's labels. The panels the issue asks for must be there, and the dashboard
must import cleanly (a ``${DS_PROMETHEUS}`` data source input used by every query).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrelay.events import Usage
from streamrelay.metrics.labels import OUTCOME_LABELS
from streamrelay.observer import StreamStart
from streamrelay.outcome import Ending, Outcome

prometheus_client = pytest.importorskip("prometheus_client", reason="pip install -e '.[dev]'")
from prometheus_client import CollectorRegistry  # noqa: E402

from streamrelay.metrics.prometheus import PrometheusMetrics  # noqa: E402

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "streamrelay.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

REQUIRED_PANELS = {
    "Streams open": {"streamrelay_active_streams"},
    "Time to first token p50 / p99": {"streamrelay_time_to_first_token_seconds_bucket"},
    "Tokens per second by type": {"streamrelay_tokens_total"},
    "Cancellations": {"streamrelay_upstream_cancelled_total", "streamrelay_streams_finished_total"},
    "Errors by status": {"streamrelay_upstream_errors_total"},
    "Relay overhead p50 / p99": {"streamrelay_relay_overhead_seconds_bucket"},
}
"""The panels the issue asks for, by title, and the series each must query."""

# PromQL, as much of it as the dashboard uses -------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_GROUPING = re.compile(r"\b(by|without)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "on", "ignoring", "group_left"}
_KEYWORDS |= {"group_right", "by", "without", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: every identifier that is neither a function or
    aggregation (followed by ``(``), a keyword, nor inside a label matcher or grouping."""
    bare = _RANGE.sub(" ", _GROUPING.sub(" ", _SELECTOR.sub(r"\1 ", _STRING.sub('""', expr))))
    names = set()
    for match in _IDENTIFIER.finditer(bare):
        rest = bare[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def matchers(expr: str) -> Iterator[tuple[str, str, str, str]]:
    """``(metric, label, operator, value)`` for every label matcher in ``expr``."""
    for selector in _SELECTOR.finditer(expr):
        for matcher in selector.group(2).split(","):
            if matcher.strip():
                found = _MATCHER.fullmatch(matcher)
                assert found is not None, f"cannot read the matcher {matcher!r} in {expr!r}"
                yield selector.group(1) or "", *found.groups()


def groupings(expr: str) -> list[set[str]]:
    """The label sets of every ``by (...)`` and ``without (...)`` in ``expr``."""
    return [
        {label.strip() for label in labels.split(",") if label.strip()}
        for _, labels in _GROUPING.findall(_STRING.sub('""', expr))
    ]


def test_the_promql_reader() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) + "
        'sum by (outcome) (rate(b_total{outcome=~"x|y", route!="z"}[1m])) / c'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert list(matchers(expr)) == [
        ("b_total", "outcome", "=~", "x|y"),
        ("b_total", "route", "!=", "z"),
    ]
    assert groupings(expr) == [{"le"}, {"outcome"}]


# The dashboard and the real series --------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows, and the panels inside collapsed rows, flattened)."""
    found = []
    for panel in dashboard["panels"]:
        found += [inner for inner in panel.get("panels", ()) if inner.get("targets")]
        if panel.get("type") != "row":
            found.append(panel)
    return found


def exprs_of(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` of every query."""
    return [(p["title"], t["expr"]) for p in panels_of(dashboard) for t in p.get("targets", ())]


@pytest.fixture(scope="module")
def series() -> dict[str, set[str]]:
    """Every sample name ``PrometheusMetrics`` exposes, with its label names, from a fresh
    registry driven through a stream that uses every series (a labelled series has no
    sample until a child of it exists)."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    watch = metrics.stream_started(StreamStart("chat.completions", "ndjson"))
    assert watch is not None
    watch.first_token(0.2)
    watch.heartbeat(15.0)
    watch.overhead(0.0002)
    watch.finished(
        Outcome(
            Ending.UPSTREAM_STATUS,
            status=429,
            format="ndjson",
            route="chat.completions",
            usage=Usage(3, 5, 8),
            duration=1.0,
            upstream_status=429,
            upstream_cancelled=True,
        )
    )
    assert metrics.stream_started(StreamStart("streams", "ndjson", resumed=True)) is None
    names: dict[str, set[str]] = {}
    for family in registry.collect():
        assert family.name.startswith("streamrelay_")
        assert family.samples, f"{family.name} has no sample: drive it above"
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def test_every_query_selects_real_series(
    dashboard: dict[str, Any], series: dict[str, set[str]]
) -> None:
    assert exprs_of(dashboard)
    for title, expr in exprs_of(dashboard):
        selected = metric_names(expr)
        assert selected, f"{title}: no metric in {expr!r}"
        unknown = selected - set(series)
        assert not unknown, f"{title}: {sorted(unknown)} are not series of PrometheusMetrics"


def test_every_label_a_query_uses_exists(
    dashboard: dict[str, Any], series: dict[str, set[str]]
) -> None:
    for title, expr in exprs_of(dashboard):
        labels = set().union(*(series.get(name, set()) for name in metric_names(expr)))
        for grouping in groupings(expr):
            assert grouping <= labels, f"{title}: {sorted(grouping - labels)} in {expr!r}"
        for metric, label, operator, value in matchers(expr):
            assert label in series.get(metric, set()), f"{title}: no label {label} on {metric}"
            if label == "outcome":  # the values too: a typo would match nothing, silently
                values = value.split("|") if operator in ("=~", "!~") else [value]
                assert set(values) <= set(OUTCOME_LABELS), f"{title}: {value!r}"


def test_quantiles_keep_the_buckets(dashboard: dict[str, Any]) -> None:
    """``histogram_quantile`` over a rate of ``_bucket`` series, summed keeping ``le``."""
    quantiles = [(t, e) for t, e in exprs_of(dashboard) if "histogram_quantile" in e]
    assert quantiles
    for title, expr in quantiles:
        assert all(name.endswith("_bucket") for name in metric_names(expr)), title
        assert "rate(" in expr and any("le" in g for g in groupings(expr)), title


def test_the_required_panels(dashboard: dict[str, Any]) -> None:
    by_title = {panel["title"]: panel for panel in panels_of(dashboard)}
    for title, wanted in REQUIRED_PANELS.items():
        assert title in by_title, f"no panel {title!r}; there are {sorted(by_title)}"
        selected = set.union(*(metric_names(t["expr"]) for t in by_title[title]["targets"]))
        assert wanted <= selected, f"{title}: queries {sorted(selected)}"
    quantiles = {
        title: [t["expr"] for t in by_title[title]["targets"]]
        for title in ("Time to first token p50 / p99", "Relay overhead p50 / p99")
    }
    for title, exprs in quantiles.items():
        assert any("histogram_quantile(0.5," in e for e in exprs), title
        assert any("histogram_quantile(0.99," in e for e in exprs), title
    cancellations = " ".join(t["expr"] for t in by_title["Cancellations"]["targets"])
    for outcome in ("client_disconnected", "stopped", "abandoned"):
        assert outcome in cancellations
    errors = [t["expr"] for t in by_title["Errors by status"]["targets"]]
    assert any({"status"} in groupings(e) for e in errors)


def test_it_imports_with_a_prometheus_data_source(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"] and dashboard.get("id") is None
    inputs = {entry["name"]: entry for entry in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels_of(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel.get("description"), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_no_panels_overlap(dashboard: dict[str, Any]) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
