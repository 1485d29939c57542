"""Starting, pinning, talking to and measuring the benchmark's processes.

The relay under test gets a core of its own; the upstream and the load client share the
other one. Pinning uses ``taskset`` where it exists (Linux with util-linux); elsewhere
the processes float and the report says so.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

__all__ = [
    "ClientProcess",
    "Proc",
    "ServerProcess",
    "core_busy_seconds",
    "cores",
    "release_held",
    "settle",
    "start_relay",
    "start_upstream",
]

_REPO = Path(__file__).resolve().parent.parent
_LOG_DIR = Path(tempfile.mkdtemp(prefix="streamrelay-bench-"))


def cores() -> tuple[int | None, int | None]:
    """``(relay core, helper core)``, or ``(None, None)`` when pinning is unavailable."""
    count = os.cpu_count() or 1
    if shutil.which("taskset") is None or count < 2:
        return None, None
    return count - 1, 0


class Proc:
    """A child process that talks in lines on stdout; stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], core: int | None) -> None:
        self.name = name
        self.log_path = _LOG_DIR / f"{name}.log"
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [*prefix, sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=_REPO,
            env=env,
        )
        self.ps = psutil.Process(self.popen.pid)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.popen.stdout,), daemon=True).start()

    @property
    def pid(self) -> int:
        """The process id (of the Python process; ``taskset`` execs into it)."""
        return self.popen.pid

    def _pump(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def read_line(self, timeout: float) -> str:
        """The next stdout line; raises ``RuntimeError`` on exit or timeout, quoting the log."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"{self.name}: no answer in {timeout:.0f}s; {self.log_tail()}"
            ) from None
        if line is None:
            raise RuntimeError(f"{self.name} exited ({self.popen.wait()}); {self.log_tail()}")
        return line

    def write_line(self, line: str) -> None:
        """Send one line on stdin."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def log_tail(self, lines: int = 15) -> str:
        """The end of the process's stderr log, for error messages."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return "log: " + ("\n".join(text) if text else "(empty)") + f"\n(full log: {self.log_path})"

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """User and system CPU time the process has used so far, apart."""
        times = self.ps.cpu_times()
        return float(times.user), float(times.system)

    def syscalls(self) -> tuple[int, int]:
        """Read and write system calls the process has made so far (Linux), or zeros."""
        try:
            counters = self.ps.io_counters()
        except (AttributeError, psutil.Error):
            return 0, 0
        return int(counters.read_count), int(counters.write_count)

    def rss_bytes(self) -> int:
        """Resident set size now."""
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        """Terminate, wait a little, then kill; always closes the log."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()


class ServerProcess(Proc):
    """A process that prints ``PORT <n>`` once it listens."""

    def __init__(self, name: str, argv: list[str], core: int | None, timeout: float = 30) -> None:
        super().__init__(name, argv, core)
        self.port = 0
        self._timeout = timeout

    def wait_ready(self) -> ServerProcess:
        """Block until the port is printed."""
        line = self.read_line(self._timeout)
        if not line.startswith("PORT "):
            raise RuntimeError(f"{self.name}: expected 'PORT <n>', got {line!r}; {self.log_tail()}")
        self.port = int(line.split()[1])
        return self


def start_upstream(core: int | None) -> ServerProcess:
    """Start the fast upstream (``bench.upstream``); call ``wait_ready()`` on the result."""
    return ServerProcess("upstream", ["-m", "bench.upstream"], core)


def release_held(upstream_port: int) -> None:
    """Ask the upstream to finish every stream that is pausing in ``hold``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{upstream_port}/release", timeout=10) as r:
        r.read()


def start_relay(name: str, factory: str, upstream_port: int, core: int | None) -> ServerProcess:
    """Start the relay built by ``factory`` under uvicorn (:mod:`bench.serve`); call ``wait_ready()``."""
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    return ServerProcess(name, ["-m", "bench.serve", factory, "--upstream", upstream], core)


class ClientProcess(Proc):
    """The load client (``bench.client``), driven by JSON commands."""

    def __init__(self, core: int | None) -> None:
        super().__init__("client", ["-m", "bench.client"], core)
        self.read_line(30)  # {"ready": true}

    def call(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait (at most ``timeout`` seconds) for its reply."""
        self.write_line(json.dumps(command))
        reply: dict[str, Any] = json.loads(self.read_line(timeout))
        return reply

    def stop(self) -> None:
        """Ask the client to quit, then make sure it is gone."""
        if self.popen.poll() is None:
            try:
                self.write_line(json.dumps({"op": "quit"}))
                self.popen.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        super().stop()


def core_busy_seconds(core: int) -> float:
    """CPU seconds core ``core`` has spent busy (anything but idle and I/O wait) since boot."""
    times = psutil.cpu_times(percpu=True)[core]
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def settle(seconds: float = 0.3) -> None:
    """Let sockets close and the relay go idle between measurements."""
    time.sleep(seconds)
