"""Turn raw samples into medians, ratios and target verdicts (pure functions, no I/O).

Absolute times drift on a shared machine, so every comparison is a ratio between relays
measured in the same round, and the reported ratio is the median over rounds. A relay
with a ``baseline`` (the same relay with one option on: a store, metrics) is also compared
with that baseline, as ``cpu_vs_baseline`` (and ``p99_vs_baseline``).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = ["CPU_LIMITS", "OPTION_TARGETS", "TARGETS", "annotate"]

FLOOR = "floor"
BASELINE_PEER = "sse-starlette"
TARGET_RELAYS = ("streamrelay-ndjson", "streamrelay-sse")

#: What an option may cost: (relay, key, description, comparison, limit), the key one of
#: its row's ratios to its baseline (checked only when the relay was measured).
OPTION_TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    (
        "streamrelay-ndjson-metrics",
        "cpu_vs_baseline",
        "CPU/token with Prometheus metrics ≤ 1.05x without",
        "<=",
        1.05,
    ),
    (
        "streamrelay-ndjson-memory",
        "cpu_vs_baseline",
        "CPU/token with the memory store ≤ 1.2x without",
        "<=",
        1.2,
    ),
    (
        "streamrelay-ndjson-redis",
        "cpu_vs_baseline",
        "CPU/token with the Redis store ≤ 1.6x without",
        "<=",
        1.6,
    ),
)

#: Issue 16's CPU/token limit, as a ratio to the floor, per format.
CPU_LIMITS = {
    "streamrelay-ndjson": 1.3,
    "streamrelay-sse": 1.3,
    "streamrelay-openai": 1.25,
    "streamrelay-ai-sdk": 1.35,
    "streamrelay-ndjson-compiled": 1.3,  # the same target, on the compiled build
}

#: (key, description, comparison, limit) for the TARGET_RELAYS; values come from
#: :func:`_target_values`.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("cpu_vs_best_peer", "CPU/token ≤ 1/3 of best peer", "<=", 1 / 3),
    ("p99_vs_floor", "p99 added latency ≤ 1.5x floor", "<=", 1.5),
    ("kib_per_stream", "memory ≤ 20 KiB per open stream", "<=", 20.0),
    ("capacity_vs_sse_starlette", "capacity ≥ 4x sse-starlette", ">=", 4.0),
)

_METRICS = {
    "cpu_us_per_token": lambda s: s["cpu_us_per_token"],
    "cpu_us_per_stream": lambda s: s.get("cpu_us_per_stream", math.nan),
    "latency_p50_ms": lambda s: s["latency_ms"]["50"],
    "latency_p99_ms": lambda s: s["latency_ms"]["99"],
    "ttfb_p50_ms": lambda s: s["ttfb_ms"]["50"],
    "ttfb_p99_ms": lambda s: s["ttfb_ms"]["99"],
    "first_token_p99_ms": lambda s: s["first_token_ms"]["99"],
    "foreign_load": lambda s: s.get("foreign_load", math.nan),
}


def _median(values: list[float]) -> float | None:
    clean = [v for v in values if v == v]  # drop NaN
    return round(statistics.median(clean), 3) if clean else None


def _ratio_by_round(
    samples: dict[str, list[dict[str, Any]]], name: str, other: str, metric: str
) -> float | None:
    """Median over rounds of ``name``'s metric divided by ``other``'s from the same round."""
    get = _METRICS[metric]
    theirs = {s["round"]: get(s) for s in samples.get(other, [])}
    ratios = [get(s) / theirs[s["round"]] for s in samples.get(name, []) if theirs.get(s["round"])]
    return _median(ratios)


def summarize_steady(phase: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per relay: the median of each metric, error count and ratios to the floor."""
    samples: dict[str, list[dict[str, Any]]] = phase["samples"]
    out: dict[str, dict[str, Any]] = {}
    for name, runs in samples.items():
        row: dict[str, Any] = {m: _median([get(s) for s in runs]) for m, get in _METRICS.items()}
        row["failed_streams"] = sum(s["streams"] - s["completed"] for s in runs)
        row["short_streams"] = sum(s.get("short_streams", 0) for s in runs)
        if FLOOR in samples:
            row["cpu_vs_floor"] = _ratio_by_round(samples, name, FLOOR, "cpu_us_per_token")
            row["p99_vs_floor"] = _ratio_by_round(samples, name, FLOOR, "latency_p99_ms")
        out[name] = row
    return out


def compare_with_baselines(
    phase_name: str,
    phase: dict[str, Any],
    summary: dict[str, dict[str, Any]],
    baselines: dict[str, str],
) -> None:
    """Add ``cpu_vs_baseline`` and ``p99_vs_baseline`` to the summary row of each relay
    (of ``baselines``: relay -> its baseline) whose baseline was measured in the same
    rounds of the phase (in the setup phase the CPU ratio is of ``cpu_us_per_stream``)."""
    samples: dict[str, list[dict[str, Any]]] = phase["samples"]
    cpu = "cpu_us_per_stream" if phase_name == "setup" else "cpu_us_per_token"
    for name, baseline in baselines.items():
        if name not in summary or baseline not in samples:
            continue
        row = summary[name]
        row["baseline"] = baseline
        row["cpu_vs_baseline"] = _ratio_by_round(samples, name, baseline, cpu)
        row["p99_vs_baseline"] = _ratio_by_round(samples, name, baseline, "latency_p99_ms")


def _best_peer(summary: dict[str, dict[str, Any]], groups: dict[str, str]) -> str | None:
    peers = [n for n in summary if groups.get(n) == "peer" and summary[n]["cpu_us_per_token"]]
    return min(peers, key=lambda n: summary[n]["cpu_us_per_token"]) if peers else None


def _target_values(results: dict[str, Any], name: str) -> dict[str, float | None]:
    summary = results.get("summary", {})
    paced = summary.get("paced", {})
    row = paced.get(name, {})
    values: dict[str, float | None] = {
        "cpu_vs_floor": row.get("cpu_vs_floor"),
        "p99_vs_floor": row.get("p99_vs_floor"),
        "cpu_vs_best_peer": row.get("cpu_vs_best_peer"),
        "kib_per_stream": summary.get("memory", {}).get(name, {}).get("kib_per_stream"),
    }
    capacity = summary.get("capacity", {})
    ours, theirs = capacity.get(name), capacity.get(BASELINE_PEER)
    values["capacity_vs_sse_starlette"] = round(ours / theirs, 2) if ours and theirs else None
    return values


def _verdict(
    relay: str, key: str, label: str, value: float | None, op: str, limit: float
) -> dict[str, Any]:
    passed = None if value is None else (value <= limit if op == "<=" else value >= limit)
    return {
        "relay": relay,
        "target": label,
        "key": key,
        "value": value,
        "limit": round(limit, 3),
        "op": op,
        "pass": passed,
    }


def _verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    verdicts = []
    for name, limit in CPU_LIMITS.items():
        if name in results.get("relays", {}) and name not in results.get("skipped", {}):
            value = _target_values(results, name).get("cpu_vs_floor")
            label = f"CPU/token ≤ {limit}x floor"
            verdicts.append(_verdict(name, "cpu_vs_floor", label, value, "<=", limit))
    for name in TARGET_RELAYS:
        if name in results.get("skipped", {}):
            continue
        values = _target_values(results, name)
        for key, label, op, limit in TARGETS:
            verdicts.append(_verdict(name, key, label, values.get(key), op, limit))
    paced = results.get("summary", {}).get("paced", {})
    for name, key, label, op, limit in OPTION_TARGETS:
        if name in results.get("relays", {}) and name not in results.get("skipped", {}):
            verdicts.append(_verdict(name, key, label, paced.get(name, {}).get(key), op, limit))
    return verdicts


def annotate(results: dict[str, Any]) -> None:
    """Add ``summary`` (medians and ratios) and ``targets`` (verdicts) to ``results``."""
    relays = results.get("relays", {})
    groups = {name: info["group"] for name, info in relays.items()}
    baselines = {name: info["baseline"] for name, info in relays.items() if info.get("baseline")}
    summary: dict[str, Any] = {}
    for phase in ("paced", "burst", "setup"):
        if phase in results:
            summary[phase] = summarize_steady(results[phase])
            compare_with_baselines(phase, results[phase], summary[phase], baselines)
    paced = summary.get("paced")
    if paced:
        best = _best_peer(paced, groups)
        summary["best_peer"] = best
        if best:
            for name in paced:
                paced[name]["cpu_vs_best_peer"] = _ratio_by_round(
                    results["paced"]["samples"], name, best, "cpu_us_per_token"
                )
    if "memory" in results:
        memory = results["memory"]["relays"]
        floor_kib = memory.get(FLOOR, {}).get("kib_per_stream")
        summary["memory"] = {
            name: {
                "kib_per_stream": m["kib_per_stream"],
                "vs_floor": round(m["kib_per_stream"] / floor_kib, 2) if floor_kib else None,
            }
            for name, m in memory.items()
        }
    if "capacity" in results:
        summary["capacity"] = dict(results["capacity"]["streams"])
    results["summary"] = summary
    results["targets"] = _verdicts(results)
