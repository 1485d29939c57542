"""Write the results: JSON, markdown tables, the chart, and ``docs/performance.md``.

``docs/performance.md`` mixes generated and hand-written text. Only the part between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` is regenerated; everything outside the
markers (method notes, what the profile says) is kept as written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "options_table",
    "render_results",
    "summary_table",
    "write_chart",
    "write_docs",
    "write_json",
]

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
CHART = "bench.png"
_GROUP_ORDER = {"floor": 0, "ours": 1, "peer": 2, "extra": 3}
TIMES = "\u00d7"  # the multiplication sign, spelled out for linters
DASH = "\u2013"  # an en dash: "no value"
_COLORS = {"floor": "#7f7f7f", "ours": "#1f77b4", "peer": "#d62728", "extra": "#ff9896"}


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write ``results`` as indented JSON (atomically, via a ``.tmp`` file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(results), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _ordered(results: dict[str, Any]) -> list[str]:
    relays: dict[str, dict[str, str]] = results.get("relays", {})
    measured = [n for n in relays if n not in results.get("skipped", {})]
    return sorted(measured, key=lambda n: _GROUP_ORDER.get(relays[n]["group"], 9))


def summary_table(results: dict[str, Any]) -> str:
    """One markdown row per relay with every headline metric and its ratio to the floor."""
    summary = results.get("summary", {})
    paced = summary.get("paced", {})
    burst = summary.get("burst", {})
    setup = summary.get("setup", {})
    memory = summary.get("memory", {})
    capacity = summary.get("capacity", {})
    relays = results.get("relays", {})
    header = (
        f"| relay | CPU µs/token (paced) | {TIMES} floor | {TIMES} best peer | added latency p50 / p99 ms "
        f"| p99 {TIMES} floor "
        "| TTFB p50 / p99 ms | CPU µs/token (burst) | CPU µs per stream (setup) | KiB per open stream "
        "| capacity (streams) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name in _ordered(results):
        p, b, m = paced.get(name, {}), burst.get(name, {}), memory.get(name, {})
        per_stream = setup.get(name, {}).get("cpu_us_per_stream")
        label = relays[name]["label"]
        if relays[name]["group"] == "ours":
            label = f"**{label}**"
        failed = p.get("failed_streams") or 0
        note = f" ({failed} failed)" if failed else ""
        rows.append(
            f"| {label}{note} | {_fmt(p.get('cpu_us_per_token'))} | {_fmt(p.get('cpu_vs_floor'), 2)} "
            f"| {_fmt(p.get('cpu_vs_best_peer'), 2)} "
            f"| {_fmt(p.get('latency_p50_ms'))} / {_fmt(p.get('latency_p99_ms'))} "
            f"| {_fmt(p.get('p99_vs_floor'), 2)} "
            f"| {_fmt(p.get('ttfb_p50_ms'))} / {_fmt(p.get('ttfb_p99_ms'))} "
            f"| {_fmt(b.get('cpu_us_per_token'))} | {_fmt(per_stream, 0)} | {_fmt(m.get('kib_per_stream'))} "
            f"| {_capacity_cell(results, name, capacity)} |"
        )
    skipped = results.get("skipped", {})
    notes = "".join(f"\n- skipped **{n}**: {reason}" for n, reason in skipped.items())
    return header + "\n".join(rows) + ("\n" + notes if notes else "")


def options_table(results: dict[str, Any]) -> str:
    """What each option costs: the relays that have a baseline (the same relay without
    the option: a store, metrics, another transport), their CPU per token and p99 as
    ratios to it, round by round; ``""`` when no such relay was measured with its baseline."""
    summary = results.get("summary", {})
    paced, burst = summary.get("paced", {}), summary.get("burst", {})
    setup = summary.get("setup", {})
    relays = results.get("relays", {})
    rows = []
    for name in _ordered(results):
        baseline = relays[name].get("baseline")
        p, b, s = paced.get(name, {}), burst.get(name, {}), setup.get(name, {})
        if not baseline or not any("cpu_vs_baseline" in row for row in (p, b, s)):
            continue
        rows.append(
            f"| {relays[name]['label']} | {relays.get(baseline, {}).get('label', baseline)} "
            f"| {_fmt(p.get('cpu_us_per_token'))} | {_fmt(p.get('cpu_vs_baseline'), 2)} "
            f"| {_fmt(b.get('cpu_vs_baseline'), 2)} | {_fmt(s.get('cpu_vs_baseline'), 2)} "
            f"| {_fmt(p.get('p99_vs_baseline'), 2)} |"
        )
    if not rows:
        return ""
    header = (
        f"| relay | without the option | CPU µs/token (paced) | CPU {TIMES} without (paced) "
        f"| CPU {TIMES} without (burst) | CPU per stream {TIMES} without (setup) "
        f"| p99 {TIMES} without (paced) |\n"
        "|---|---|---:|---:|---:|---:|---:|\n"
    )
    return header + "\n".join(rows)


def _capacity_cell(results: dict[str, Any], name: str, capacity: dict[str, int]) -> str:
    if name not in capacity:
        return DASH
    streams = capacity[name]
    ladder = results.get("capacity", {}).get("ladder", [])
    failed = results.get("capacity", {}).get("failed_at", {})
    if streams == 0:
        return f"< {ladder[0]}" if ladder else "0"
    if name not in failed:
        return f"≥ {streams}"
    return str(streams)


def targets_table(results: dict[str, Any]) -> str:
    """The issue's targets, each with its measured value and a pass/fail verdict."""
    rows = ["| relay | target | measured | limit | verdict |", "|---|---|---:|---:|---|"]
    for t in results.get("targets", []):
        verdict = {True: "✅ pass", False: "❌ miss", None: f"{DASH} not measured"}[t["pass"]]
        rows.append(
            f"| {t['relay']} | {t['target']} | {_fmt(t['value'], 2)} | {t['op']} {_fmt(t['limit'], 2)} | {verdict} |"
        )
    return "\n".join(rows)


def micro_table(results: dict[str, Any]) -> str:
    """The sans-I/O core micro-benchmarks."""
    micro = results.get("micro")
    if not micro:
        return "_not run_"
    rows = ["| benchmark | result | notes |", "|---|---:|---|"]
    for entry in micro.get("results", []):
        rows.append(
            f"| {entry['name']} | {_fmt(entry['value'], 1)} {entry['unit']} | {entry.get('note', '')} |"
        )
    for name, reason in micro.get("skipped", {}).items():
        rows.append(f"| {name} | {DASH} | skipped: {reason} |")
    return "\n".join(rows)


def noise_note(results: dict[str, Any]) -> str:
    """How much other processes disturbed the steady phases (a data-quality indicator)."""
    loads = [
        row["foreign_load"]
        for phase in ("paced", "burst")
        for row in results.get("summary", {}).get(phase, {}).values()
        if row.get("foreign_load") is not None
    ]
    if not loads:
        return ""
    loads.sort()
    median = loads[len(loads) // 2]
    return (
        f"Other processes on the machine used a median {median:.0%} (at most {loads[-1]:.0%}) of a "
        "core during the steady runs kept (runs disturbed by more than "
        f"{results.get('settings', {}).get('max_foreign_load', 0):.0%} are repeated up to "
        f"{results.get('settings', {}).get('retries')} times and the least disturbed attempt kept). "
        "Starved relays batch tokens, which lowers CPU/token and raises latency, so "
        "compare ratios within a run, not absolute numbers across runs."
    )


def profile_section(results: dict[str, Any]) -> str:
    """The py-spy profiles taken in this run, as tables."""
    parts = []
    for prof in results.get("profiles", []):
        if "skipped" in prof:
            parts.append(f"- **{prof['relay']}**: not profiled ({prof['skipped']})")
            continue
        parts += [
            f"**{prof['relay']}**: {prof['samples']} samples at {prof['rate_hz']} Hz over {prof['seconds']} s, "
            f"{prof['streams']} paced streams, {_fmt(prof.get('cpu_us_per_token'))} µs/token while "
            f"profiled; {prof['threads_percent']}% of samples outside the main thread. "
            f"Stacks: `{prof['stacks']}`.",
            "",
            "| library (self time) | % | function (self time) | % | function (inclusive) | % |",
            "|---|---:|---|---:|---|---:|",
        ]
        columns = [prof["by_package"], prof["self"][:12], prof["inclusive"][:12]]
        for i in range(max(len(c) for c in columns)):
            cells = []
            for column, key in zip(columns, ("function", "function", "function"), strict=True):
                entry = column[i] if i < len(column) else None
                cells += [
                    f"`{entry[key]}`" if entry else "",
                    f"{entry['percent']}" if entry else "",
                ]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def machine_section(results: dict[str, Any]) -> str:
    """The machine, Python and package versions, and how processes were pinned."""
    m = results.get("machine", {})
    packages = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    pinning = (
        "relay pinned to its own core with `taskset`; upstream and load client share the other core"
        if results.get("pinned")
        else "no pinning (`taskset` unavailable or a single core)"
    )
    lscpu = m.get("lscpu", {})
    extra = f", hypervisor {lscpu['Hypervisor vendor']}" if "Hypervisor vendor" in lscpu else ""
    return (
        f"- CPU: {m.get('cpu')} {TIMES} {m.get('cpus')} logical CPUs{extra}; memory {m.get('memory_gib')} GiB\n"
        f"- OS: {m.get('os')}; {m.get('python')}; load average at start {m.get('load_average')}\n"
        f"- Processes: {pinning}; every relay runs under uvicorn (uvloop, httptools)\n"
        f"- Packages: {packages}"
    )


def settings_section(results: dict[str, Any]) -> str:
    """The workloads as run."""
    s = results.get("settings", {})
    paced, burst, cap = s.get("paced", {}), s.get("burst", {}), s.get("capacity", {})
    return (
        f"- paced: {s.get('paced_streams')} concurrent streams {TIMES} {paced.get('tokens')} tokens at "
        f"{paced.get('rate')} tokens/s, starts spread over {s.get('ramp_s')} s; {s.get('rounds')} alternating rounds\n"
        f"- burst: {s.get('burst_streams')} streams {TIMES} {burst.get('tokens')} tokens, no pacing\n"
        f"- memory: {s.get('hold_streams')} slow streams held open after {s.get('hold_warm')} warm-up streams\n"
        f"- capacity: paced streams of {cap.get('tokens')} tokens at {cap.get('rate')}/s, ladder "
        f"{s.get('capacity_ladder')}, {s.get('capacity_refine')} bisection steps, "
        f"p99 budget {s.get('latency_budget_ms')} ms, every stream must complete"
    )


def write_chart(results: dict[str, Any], path: Path) -> bool:
    """Bar charts of CPU/token, p99 added latency, memory and capacity; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = results.get("summary", {})
    relays = results.get("relays", {})
    names = _ordered(results)
    panels = [
        (
            "CPU µs per token (paced)",
            lambda n: summary.get("paced", {}).get(n, {}).get("cpu_us_per_token"),
            False,
        ),
        (
            "p99 added latency, ms (paced, log)",
            lambda n: summary.get("paced", {}).get(n, {}).get("latency_p99_ms"),
            True,
        ),
        (
            "KiB per open stream",
            lambda n: summary.get("memory", {}).get(n, {}).get("kib_per_stream"),
            False,
        ),
        ("capacity: streams at p99 < 50 ms", lambda n: summary.get("capacity", {}).get(n), False),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for ax, (title, get, log_scale) in zip(axes.flat, panels, strict=True):
        values = [get(n) for n in names]
        shown = [(n, v) for n, v in zip(names, values, strict=True) if v is not None]
        labels = [relays[n]["label"] for n, _ in shown][::-1]
        data = [v for _, v in shown][::-1]
        colors = [_COLORS.get(relays[n]["group"], "#333") for n, _ in shown][::-1]
        ax.barh(labels, data, color=colors)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        if log_scale and data and min(data) > 0:
            ax.set_xscale("log")
        for y, value in enumerate(data):
            ax.text(
                value,
                y,
                f" {value:,.0f}" if value >= 10 else f" {value:.1f}",
                va="center",
                fontsize=7,
            )
    fig.suptitle(
        f"streamrelay benchmark ({results.get('settings', {}).get('mode')} run): gray floor, blue streamrelay, red peers"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render_results(results: dict[str, Any], chart: str | None) -> str:
    """The generated part of ``docs/performance.md``."""
    best = results.get("summary", {}).get("best_peer")
    parts = [
        BEGIN,
        f"_Generated by `{results.get('command')}` on {results.get('started_at')} "
        f"in {results.get('duration_s')} s. Raw numbers: `bench/results/latest.json`._",
        "",
        "### Results",
        "",
        "Medians over the alternating rounds; ratios are taken round by round against the "
        f"relay measured in the same round (best peer by CPU/token: **{best}**).",
        "",
        summary_table(results),
        "",
        noise_note(results),
        "",
    ]
    options = options_table(results)
    if options:
        parts += [
            "### What each option costs",
            "",
            "Each relay against the same relay without its option, measured in the same rounds.",
            "",
            options,
            "",
        ]
    if chart:
        parts += [f"![benchmark chart](img/{chart})", ""]
    parts += [
        "### Targets (issue 16: CPU per format, latency, memory, capacity, and the options' costs)",
        "",
        targets_table(results),
        "",
        "### Profiles (py-spy)",
        "",
        profile_section(results) or "_not run_",
        "",
        "### Sans-I/O core micro-benchmarks",
        "",
        micro_table(results),
        "",
        "### Machine",
        "",
        machine_section(results),
        "",
        "### Workloads",
        "",
        settings_section(results),
        "",
        "### Command",
        "",
        "```sh",
        "make bench            # pip install -e '.[dev,bench]' then python -m bench",
        f"{results.get('command')}",
        "```",
        END,
    ]
    return "\n".join(parts)


_SKELETON = """# Performance

How streamrelay compares with the relays people write by hand, with library peers, and
with a raw-socket floor, measured side by side by `bench/` (`make bench`).

{generated}
"""


def write_docs(results: dict[str, Any], doc: Path, img_dir: Path) -> None:
    """Regenerate the marked section of ``doc`` (creating the file if needed) and the chart."""
    chart = CHART if write_chart(results, img_dir / CHART) else None
    generated = render_results(results, chart)
    if doc.exists() and BEGIN in (text := doc.read_text()) and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        doc.write_text(head + generated + tail)
    else:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(_SKELETON.format(generated=generated))
