"""``python -m bench``: measure every relay side by side and write the report.

Examples::

    python -m bench                      # full run, writes results/latest.json and docs
    python -m bench --quick              # about four minutes, writes results/quick.json
    python -m bench --relays floor,httpx --phases paced
    python -m bench --profile streamrelay-ndjson
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import analysis, machine, micro, profiling, report
from bench.common import log
from bench.procs import cores
from bench.relays import REDIS_ENV, RELAYS, Relay, find
from bench.runner import PHASES, Bench, Settings, with_overrides

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PROFILES = ("floor", "streamrelay-ndjson", "httpx")
DOCS = Path(__file__).resolve().parent.parent / "docs"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; every option has a default that reproduces the published run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about four minutes)")
    parser.add_argument(
        "--relays",
        help="comma-separated relay names (default: all); known: "
        + ", ".join(r.name for r in RELAYS),
    )
    parser.add_argument(
        "--phases", help=f"comma-separated subset of {','.join(PHASES)},micro (default: all)"
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=MODULE:FUNCTION[?QUERY]",
        help="also measure your own relay: FUNCTION(upstream_url) returns an ASGI app (repeatable)",
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds per steady phase")
    parser.add_argument(
        "--streams", type=int, help="concurrent streams in the paced and burst phases"
    )
    parser.add_argument(
        "--tokens", type=int, help="tokens per stream in the paced and burst phases"
    )
    parser.add_argument("--rate", type=float, help="tokens per second per paced stream")
    parser.add_argument("--hold", type=int, help="slow streams held open for the memory phase")
    parser.add_argument(
        "--profile",
        metavar="RELAYS",
        help="profile these relays' processes (comma-separated) under the paced load with py-spy; "
        f"default for a full run: {','.join(DEFAULT_PROFILES)}; 'none' to skip",
    )
    parser.add_argument("--output", type=Path, help="results JSON path")
    parser.add_argument(
        "--docs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="regenerate docs/performance.md and its chart (default: on for a full run of every relay)",
    )
    return parser.parse_args(argv)


def build_settings(args: argparse.Namespace) -> Settings:
    """The preset for the mode, with the command line's overrides."""
    base = Settings.quick() if args.quick else Settings.full()
    paced, burst = base.paced, base.burst
    if args.tokens is not None:
        paced = paced.__class__(tokens=args.tokens, rate=paced.rate)
        burst = burst.__class__(tokens=args.tokens, rate=0)
    if args.rate is not None:
        paced = paced.__class__(tokens=paced.tokens, rate=args.rate)
    phases = tuple(p for p in (args.phases or ",".join((*PHASES, "micro"))).split(",") if p)
    unknown = set(phases) - {*PHASES, "micro"}
    if unknown:
        raise SystemExit(f"unknown phase(s): {', '.join(sorted(unknown))}")
    return with_overrides(
        base,
        rounds=args.rounds,
        paced_streams=args.streams,
        burst_streams=args.streams,
        hold_streams=args.hold,
        paced=paced,
        burst=burst,
        phases=phases,
    )


def _redis_for(relays: list[Relay]) -> subprocess.Popen[bytes] | None:
    """A throwaway redis-server for the Redis store's row (on the helper core, beside the
    upstream and the client), unless one is named already or none is installed."""
    if os.environ.get(REDIS_ENV) or not any(REDIS_ENV in r.env for r in relays):
        return None
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, helper_core = cores()
    prefix = ["taskset", "-c", str(helper_core)] if helper_core is not None else []
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*prefix, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    os.environ[REDIS_ENV] = f"redis://127.0.0.1:{port}/0"
    return process


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = build_settings(args)
    try:
        relays = [find(n) for n in args.relays.split(",")] if args.relays else list(RELAYS)
    except KeyError as exc:
        raise SystemExit(exc.args[0]) from None
    relays += [Relay.parse(spec) for spec in args.extra]
    command = shlex.join(["python", "-m", "bench", *argv])
    started = time.monotonic()
    results: dict[str, Any] = {
        "command": command,
        "settings": settings.describe(),
        "machine": machine.describe(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    redis = _redis_for(relays)
    bench = Bench(settings, list(relays))
    try:
        bench.start()
        results["relays"] = {
            r.name: {"label": r.label, "group": r.group}
            | ({"baseline": r.baseline} if r.baseline else {})
            for r in relays
        }
        results["skipped"] = bench.skipped
        results["pinned"] = bench.pinned
        results.update(bench.run(settings.phases))
        profiles = args.profile.split(",") if args.profile else []
        if args.profile is None and not args.quick:
            profiles = [name for name in DEFAULT_PROFILES if name in bench.servers]
        by_name = {r.name: r for r in relays}
        if profiles and profiles != ["none"]:
            results["profiles"] = [
                profiling.profile(bench, by_name[name], RESULTS)
                if name in by_name
                else {"relay": name, "skipped": "not among the measured relays"}
                for name in profiles
            ]
    finally:
        bench.close()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
    if "micro" in settings.phases:
        log("[micro] sans-I/O core micro-benchmarks")
        results["micro"] = micro.run(quick=args.quick)
    results["duration_s"] = round(time.monotonic() - started, 1)
    analysis.annotate(results)
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    report.write_json(results, output)
    log(f"results: {output}")
    print(report.summary_table(results))
    options = report.options_table(results)
    if options:
        print("\n" + options)
    write_docs = (
        args.docs if args.docs is not None else not (args.quick or args.relays or args.phases)
    )
    if write_docs:
        report.write_docs(results, DOCS / "performance.md", DOCS / "img")
        log(f"report: {DOCS / 'performance.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
