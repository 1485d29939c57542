"""The measurements: start every process, then measure the relays side by side.

Relays take turns within each round, and the order flips every round (A B C, C B A, ...),
so slow drift on a shared machine lands on every relay alike. The report compares each
relay to the raw-socket floor measured in the same round.

Phases, each optional:

- ``paced``: N concurrent streams of T tokens at R tokens/s (the realistic load);
- ``burst``: the same without pacing (throughput);
- ``setup``: one-token streams, for the CPU it costs to open and close a stream;
- ``capacity``: the most concurrent paced streams with p99 added latency under budget;
- ``memory``: resident memory per open stream, with many slow streams held open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bench.common import log
from bench.procs import (
    ClientProcess,
    Proc,
    ServerProcess,
    core_busy_seconds,
    cores,
    release_held,
    settle,
    start_relay,
    start_upstream,
)
from bench.relays import Relay
from bench.upstream import Workload

__all__ = ["PHASES", "Bench", "Settings"]

PHASES = ("paced", "burst", "setup", "capacity", "memory")
PACED = Workload(tokens=100, rate=50)
BURST = Workload(tokens=100, rate=0)
CAPACITY = Workload(tokens=150, rate=50)


@dataclass(frozen=True)
class Settings:
    """Every knob of one run; :meth:`quick` and :meth:`full` are the two presets."""

    mode: str = "full"
    rounds: int = 3
    ramp_s: float = 1.0
    paced_streams: int = 200
    paced: Workload = PACED
    burst_streams: int = 200
    setup_streams: int = 200
    burst: Workload = BURST
    capacity_ladder: tuple[int, ...] = (50, 100, 200, 400, 800, 1600, 3200)
    capacity_refine: int = 2
    capacity: Workload = CAPACITY
    latency_budget_ms: float = 50.0
    hold_warm: int = 100
    hold_streams: int = 1000
    phases: tuple[str, ...] = PHASES
    #: A run during which other processes took more than this share of a core is repeated.
    max_foreign_load: float = 0.2
    #: How many times a disturbed run is repeated (steady phases; capacity steps get one).
    retries: int = 2
    #: Relays the slow phases (capacity, memory) measure; empty means every relay.
    slow_phase_relays: tuple[str, ...] = ()

    @classmethod
    def full(cls) -> Settings:
        """The default run: three alternating rounds, a refined capacity search."""
        return cls()

    @classmethod
    def quick(cls) -> Settings:
        """Under two minutes: one round, short streams, a coarse capacity search."""
        return cls(
            mode="quick",
            rounds=1,
            ramp_s=0.5,
            paced=Workload(tokens=50, rate=50),
            capacity_ladder=(100, 200, 400, 800, 1600),
            capacity_refine=0,
            capacity=Workload(tokens=40, rate=50),
            retries=0,
            slow_phase_relays=("floor", "streamrelay-ndjson", "streamrelay-sse", "sse-starlette"),
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly copy for the results file."""
        out = asdict(self)
        out["phases"] = list(self.phases)
        out["capacity_ladder"] = list(self.capacity_ladder)
        out["slow_phase_relays"] = list(self.slow_phase_relays)
        return out


def _expected_s(work: Workload, ramp_s: float) -> float:
    stream = 0.0 if work.rate <= 0 else work.tokens / work.rate
    return ramp_s + stream + work.hold


@dataclass
class Bench:
    """The processes of one run and the measurements taken with them."""

    settings: Settings
    relays: list[Relay]
    skipped: dict[str, str] = field(default_factory=dict)
    servers: dict[str, ServerProcess] = field(default_factory=dict)
    upstream: ServerProcess | None = None
    client: ClientProcess | None = None
    pinned: bool = False
    relay_core: int | None = None
    helper_core: int | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the upstream, the client and one server per relay; warm each relay up."""
        relay_core, helper_core = cores()
        self.pinned = relay_core is not None
        self.relay_core = relay_core
        self.helper_core = helper_core
        for relay in list(self.relays):
            reason = relay.unavailable()
            if reason:
                self._skip(relay, reason)
        self.upstream = start_upstream(helper_core).wait_ready()
        self.client = ClientProcess(helper_core)
        started = {
            r.name: start_relay(r.name, r.factory, self.upstream.port, relay_core)
            for r in self.relays
        }
        for relay in list(self.relays):
            server = started[relay.name]
            try:
                self.servers[relay.name] = server.wait_ready()
                self._warm_up(relay)
            except RuntimeError as exc:
                server.stop()
                self.servers.pop(relay.name, None)
                self._skip(relay, f"failed to start or to relay a warm-up stream: {exc}")
        log(f"relays: {', '.join(r.name for r in self.relays) or '(none)'}")

    def close(self) -> None:
        """Stop every process this run started."""
        for server in self.servers.values():
            server.stop()
        if self.client is not None:
            self.client.stop()
        if self.upstream is not None:
            self.upstream.stop()

    def restart(self, relay: Relay) -> None:
        """Replace ``relay``'s server with a fresh, warmed-up process (same core)."""
        assert self.upstream is not None
        self.servers.pop(relay.name).stop()
        server = start_relay(relay.name, relay.factory, self.upstream.port, self.relay_core)
        server.wait_ready()
        self.servers[relay.name] = server
        self._warm_up(relay)

    def _slow_phase_relays(self) -> list[Relay]:
        wanted = self.settings.slow_phase_relays
        return [r for r in self.relays if not wanted or r.name in wanted]

    def _skip(self, relay: Relay, reason: str) -> None:
        log(f"skipping {relay.name}: {reason}")
        self.skipped[relay.name] = reason
        self.relays.remove(relay)

    def _warm_up(self, relay: Relay) -> None:
        reply = self.load(relay, 20, Workload(tokens=20, rate=0), ramp_s=0.1)
        if reply["completed"] != 20 or reply["tokens"] != 400:
            raise RuntimeError(f"warm-up relayed {reply['tokens']}/400 tokens: {reply['errors']}")

    # --- one measurement ---------------------------------------------------------------

    def load(
        self, relay: Relay, streams: int, work: Workload, ramp_s: float, retries: int = 0
    ) -> dict[str, Any]:
        """Run one batch through ``relay``: the client's summary plus the relay's CPU per token.

        On a shared machine another process may take part of a core mid-run. Such a run
        is repeated (at most ``retries`` times) and the least disturbed attempt is kept.
        """
        best: dict[str, Any] | None = None
        for _ in range(retries + 1):
            sample = self._load_once(relay, streams, work, ramp_s)
            if best is None or sample["foreign_load"] < best["foreign_load"]:
                best = sample
            if sample["foreign_load"] <= self.settings.max_foreign_load:
                break
            log(f"  (other processes took {sample['foreign_load']:.0%} of a core; repeating)")
        assert best is not None
        return best

    def _load_once(
        self, relay: Relay, streams: int, work: Workload, ramp_s: float
    ) -> dict[str, Any]:
        assert self.client is not None and self.upstream is not None
        server = self.servers[relay.name]
        timeout = 2 * _expected_s(work, ramp_s) + 10
        command = {
            "op": "load",
            "port": server.port,
            "target": relay.target,
            "streams": streams,
            "work": asdict(work),
            "ramp": ramp_s,
            "timeout": timeout,
        }
        helpers = (self.client, self.upstream)
        before = self._cpu_snapshot(server, helpers)
        reply = self.client.call(command, timeout=timeout + 30)
        after = self._cpu_snapshot(server, helpers)
        cpu = after["relay"] - before["relay"]
        reply["cpu_s"] = round(cpu, 4)
        # The kernel's share, and the system calls behind it (what tells a relay's own
        # Python apart from the socket work every relay does).
        reply["cpu_system_s"] = round(after["relay_system"] - before["relay_system"], 4)
        reply["read_calls"] = int(after["relay_reads"] - before["relay_reads"])
        reply["write_calls"] = int(after["relay_writes"] - before["relay_writes"])
        reply["cpu_us_per_token"] = round(cpu * 1e6 / max(reply["tokens"], 1), 2)
        reply["foreign_load"] = self._foreign_load(before, after, reply["wall_s"])
        settle()
        return reply

    def _cpu_snapshot(self, server: ServerProcess, helpers: tuple[Proc, ...]) -> dict[str, float]:
        user, system = server.cpu_split()
        reads, writes = server.syscalls()
        snapshot = {
            "relay": user + system,
            "relay_system": system,
            "relay_reads": float(reads),
            "relay_writes": float(writes),
            "helpers": sum(p.cpu_seconds() for p in helpers),
        }
        if self.relay_core is not None and self.helper_core is not None:
            snapshot["relay_core"] = core_busy_seconds(self.relay_core)
            snapshot["helper_core"] = core_busy_seconds(self.helper_core)
        return snapshot

    @staticmethod
    def _foreign_load(before: dict[str, float], after: dict[str, float], wall_s: float) -> float:
        """The largest share of a core that processes other than ours used during a run."""
        if "relay_core" not in before or wall_s <= 0:
            return 0.0
        delta = {k: after[k] - before[k] for k in before}
        foreign_relay = delta["relay_core"] - delta["relay"]
        foreign_helper = delta["helper_core"] - delta["helpers"]
        return round(max(foreign_relay, foreign_helper, 0.0) / wall_s, 3)

    def setup_cost(self) -> dict[str, Any]:
        """CPU per stream opened and closed, from one-token streams (rounds alternate)."""
        streams = self.settings.setup_streams
        work = Workload(tokens=1, rate=0)
        samples: dict[str, list[dict[str, Any]]] = {r.name: [] for r in self.relays}
        for index, order in self._rounds():
            for relay in order:
                sample = self.load(relay, streams, work, 0.5, retries=self.settings.retries)
                sample["round"] = index
                sample["cpu_us_per_stream"] = round(
                    sample["cpu_s"] * 1e6 / max(sample["completed"], 1), 1
                )
                samples[relay.name].append(sample)
                log(
                    f"[setup {index + 1}/{self.settings.rounds}] {relay.name:20s} "
                    f"{sample['cpu_us_per_stream']:8.0f} us/stream  ttfb p50 {sample['ttfb_ms']['50']:6.1f} ms  "
                    f"{sample['completed']}/{streams} ok  (foreign load {sample['foreign_load']:.0%})"
                )
        return {"streams": streams, "work": asdict(work), "samples": samples}

    def _rounds(self) -> Iterator[tuple[int, list[Relay]]]:
        for index in range(self.settings.rounds):
            yield index, (self.relays if index % 2 == 0 else self.relays[::-1])

    # --- phases ------------------------------------------------------------------------

    def run(self, phases: tuple[str, ...]) -> dict[str, Any]:
        """Run the given phases in a fixed order; return their raw results."""
        methods: dict[str, Callable[[], dict[str, Any]]] = {
            "paced": lambda: self.steady("paced", self.settings.paced_streams, self.settings.paced),
            "burst": lambda: self.steady("burst", self.settings.burst_streams, self.settings.burst),
            "setup": self.setup_cost,
            "capacity": self.capacity,
            "memory": self.memory,
        }
        results = {}
        for phase in PHASES:
            if phase in phases and self.relays:
                started = time.monotonic()
                results[phase] = methods[phase]()
                log(f"[{phase}] done in {time.monotonic() - started:.0f}s")
        return results

    def steady(self, phase: str, streams: int, work: Workload) -> dict[str, Any]:
        """Rounds of one fixed load; returns ``{relay: [sample per round]}``."""
        ramp = self.settings.ramp_s if work.rate > 0 else 0.1
        samples: dict[str, list[dict[str, Any]]] = {r.name: [] for r in self.relays}
        for index, order in self._rounds():
            for relay in order:
                sample = self.load(relay, streams, work, ramp, retries=self.settings.retries)
                sample["round"] = index
                samples[relay.name].append(sample)
                log(
                    f"[{phase} {index + 1}/{self.settings.rounds}] {relay.name:20s} "
                    f"{sample['cpu_us_per_token']:8.1f} us/token  "
                    f"p99 {sample['latency_ms']['99']:8.1f} ms  "
                    f"ttfb p99 {sample['ttfb_ms']['99']:7.1f} ms  "
                    f"{sample['completed']}/{streams} ok {sample['errors'] or ''}"
                    f"  (foreign load {sample['foreign_load']:.0%})"
                )
        return {"streams": streams, "work": asdict(work), "samples": samples}

    def _passes(self, sample: dict[str, Any]) -> bool:
        return bool(
            sample["completed"] == sample["streams"]
            and sample["tokens"] == sample["expected_tokens"]
            and sample["latency_ms"]["99"] < self.settings.latency_budget_ms
        )

    def capacity(self) -> dict[str, Any]:
        """Step concurrency up a ladder (all relays in turn at each step), then bisect."""
        settings = self.settings
        work = settings.capacity
        relays = self._slow_phase_relays()
        steps: dict[str, list[dict[str, Any]]] = {r.name: [] for r in relays}
        best: dict[str, int] = {r.name: 0 for r in relays}
        failed: dict[str, int] = {}
        active = list(relays)

        def attempt(relay: Relay, streams: int) -> bool:
            sample = self.load(
                relay, streams, work, settings.ramp_s, retries=min(settings.retries, 1)
            )
            ok = self._passes(sample)
            steps[relay.name].append(
                {
                    "streams": streams,
                    "ok": ok,
                    "p99_ms": sample["latency_ms"]["99"],
                    "completed": sample["completed"],
                    "cpu_us_per_token": sample["cpu_us_per_token"],
                }
            )
            verdict = "ok" if ok else "over"
            log(
                f"[capacity] {relay.name:20s} {streams:5d} streams  "
                f"p99 {sample['latency_ms']['99']:8.1f} ms  {verdict}"
            )
            if ok:
                best[relay.name] = max(best[relay.name], streams)
            else:
                failed[relay.name] = min(failed.get(relay.name, streams), streams)
            return ok

        for level, streams in enumerate(settings.capacity_ladder):
            order = active if level % 2 == 0 else active[::-1]
            active = [relay for relay in order if attempt(relay, streams)]
            if not active:
                break
        for step in range(settings.capacity_refine):
            pending = [r for r in relays if r.name in failed]
            for relay in pending if step % 2 == 0 else pending[::-1]:
                low, high = best[relay.name], failed[relay.name]
                middle = (low + high) // 2
                if high - low > max(5, low // 10):
                    attempt(relay, middle)
        return {
            "work": asdict(work),
            "budget_ms": settings.latency_budget_ms,
            "ladder": list(settings.capacity_ladder),
            "streams": best,
            "failed_at": failed,
            "steps": steps,
        }

    def memory(self) -> dict[str, Any]:
        """RSS growth while ``hold_streams`` slow streams are open, per stream.

        Each relay gets a fresh process first: memory that earlier phases freed stays
        mapped and would be reused, hiding what a stream really costs. Then
        ``hold_warm`` streams are opened (and RSS read), then ``hold_streams`` more (and
        RSS read again); the difference divided by the second count is the cost of one
        open stream, free of start-up and first-stream costs.
        """
        assert self.client is not None and self.upstream is not None
        settings = self.settings
        hold = Workload(tokens=2, rate=0, hold=120)
        results: dict[str, dict[str, Any]] = {}
        for relay in self._slow_phase_relays():
            self.restart(relay)
            server = self.servers[relay.name]
            base = {"port": server.port, "target": relay.target, "work": asdict(hold)}
            try:
                warm = self.client.call(
                    {"op": "open", **base, "streams": settings.hold_warm, "ramp": 0.3}, 90
                )
                settle(0.5)
                rss_warm = server.rss_bytes()
                held = self.client.call(
                    {
                        "op": "open",
                        **base,
                        "streams": settings.hold_streams,
                        "ramp": 1.0,
                        "timeout": 60,
                    },
                    120,
                )
                settle(0.5)
                rss_held = server.rss_bytes()
            finally:
                self.client.call({"op": "close"}, 60)
                release_held(self.upstream.port)
                settle(0.5)
            opened = held["open"] - warm["open"]
            per_stream = (rss_held - rss_warm) / max(opened, 1)
            results[relay.name] = {
                "open_streams": held["open"],
                "measured_streams": opened,
                "errors": held["errors"],
                "rss_warm_mib": round(rss_warm / 2**20, 2),
                "rss_held_mib": round(rss_held / 2**20, 2),
                "kib_per_stream": round(per_stream / 1024, 2),
            }
            log(
                f"[memory] {relay.name:20s} {per_stream / 1024:7.1f} KiB/stream "
                f"({opened} streams, rss {rss_warm / 2**20:.0f} -> {rss_held / 2**20:.0f} MiB)"
            )
        return {
            "warm_streams": settings.hold_warm,
            "hold_streams": settings.hold_streams,
            "relays": results,
        }


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """``settings`` with the non-``None`` overrides applied."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
