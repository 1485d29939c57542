"""Profile one relay's server process under the paced load with py-spy.

py-spy samples the running process from outside (no instrumentation, so the relay runs
at full speed). The collapsed stacks are saved next to the results, and summarized as
the functions with the most samples on top of the stack (self) and anywhere in it
(inclusive). Render the stacks as a flame graph with any ``flamegraph.pl``-compatible
tool, or record again with ``py-spy record --format speedscope``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import log
from bench.relays import Relay
from bench.upstream import Workload

if TYPE_CHECKING:
    from bench.runner import Bench

__all__ = ["profile", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
SECONDS = 8
RATE_HZ = 200


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    """``"feed (/x/site-packages/streamrelay/sse.py:80)"`` -> ``"streamrelay/sse.py:feed"``."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"].replace("\\", "/")
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3.":
                path = path.split("/", 1)[-1]
            break
    return f"{path}:{match['func']}"


_EVENT_LOOP = "asyncio/runners.py:Runner.run"
#: ASGI dispatch frames (middleware and routing) that every request passes through; they
#: would fill the inclusive table without saying anything about the relay.
_DISPATCH = re.compile(
    r"^(starlette|uvicorn)/.*:(.*__call__|.*\.app|.*\.handle|.*run_asgi|.*wrapped_app)$"
)


def _package(frame: str) -> str:
    """The library a shortened frame belongs to (``"aiohttp"``, ``"streamrelay"``, ...)."""
    if frame == _EVENT_LOOP:
        return "event loop (uvloop native code: I/O syscalls, callbacks)"
    top = frame.split(":", 1)[0].split("/", 1)[0]
    return top[:-3] if top.endswith(".py") else top


def summarize(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Where the samples fall, in percent of all samples.

    - ``self``: the function on top of the stack (py-spy cannot see into C, so time in
      uvloop's native code shows as ``Runner.run``, the frame that called into it);
    - ``inclusive``: anywhere in the stack, leaving out the frames that most samples
      share (the server's entry points) and ASGI dispatch frames (middleware, routing);
    - ``by_package``: self samples grouped by library;
    - ``threads_percent``: the share of samples outside the main thread.
    """
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = off_main = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        if frames[0].startswith("threading.py:"):
            off_main += count
        self_counts[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    for frame in [f for f, c in inclusive.items() if c >= 0.7 * total or _DISPATCH.match(f)]:
        del inclusive[frame]

    def table(counter: Counter[str], limit: int = top) -> list[dict[str, Any]]:
        share = 100 / max(total, 1)
        return [
            {"function": f, "percent": round(c * share, 1)} for f, c in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "threads_percent": round(100 * off_main / max(total, 1), 1),
        "by_package": table(packages, 12),
        "self": table(self_counts),
        "inclusive": table(inclusive),
    }


def profile(bench: Bench, relay: Relay, out_dir: Path) -> dict[str, Any]:
    """Record ``relay``'s process with py-spy while it relays the paced load."""
    spy = _py_spy()
    if spy is None:
        return {"relay": relay.name, "skipped": "py-spy is not installed (pip install py-spy)"}
    if relay.name not in bench.servers:
        return {"relay": relay.name, "skipped": "relay not running"}
    server = bench.servers[relay.name]
    out_dir.mkdir(parents=True, exist_ok=True)
    stacks = out_dir / f"profile-{relay.name}.collapsed.txt"
    settings = bench.settings
    work = Workload(tokens=int(settings.paced.rate * (SECONDS + 2)), rate=settings.paced.rate)
    argv = [
        spy,
        "record",
        "--pid",
        str(server.pid),
        "--duration",
        str(SECONDS),
        "--rate",
        str(RATE_HZ),
    ]
    argv += ["--format", "raw", "--output", str(stacks), "--nonblocking"]
    result: dict[str, Any] = {}

    def load() -> None:
        result.update(bench.load(relay, settings.paced_streams, work, settings.ramp_s))

    log(
        f"[profile] {relay.name}: py-spy for {SECONDS}s under {settings.paced_streams} paced streams"
    )
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    recorded = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 60)
    loader.join(timeout=SECONDS + 120)
    if recorded.returncode != 0 or not stacks.exists():
        return {"relay": relay.name, "skipped": f"py-spy failed: {recorded.stderr.strip()[-300:]}"}
    summary = summarize(stacks.read_text())
    summary.update(
        relay=relay.name,
        streams=settings.paced_streams,
        work={"tokens": work.tokens, "rate": work.rate},
        seconds=SECONDS,
        rate_hz=RATE_HZ,
        stacks=str(stacks.relative_to(out_dir.parent.parent)),
        cpu_us_per_token=result.get("cpu_us_per_token"),
    )
    top = ", ".join(f"{e['function']} {e['percent']}%" for e in summary["by_package"][:4])
    log(f"[profile] {relay.name}: {summary['samples']} samples; {top}")
    return summary
