"""A real ``redis-server`` for the tests: Debian's binary (``scripts/install-system-deps.sh``
installs it), on 127.0.0.1, on a free port, with its files in a temporary directory and no
persistence. It can be stopped and started again on the same port, to prove what a store
does while Redis is down and after it is back.

    with RedisServer() as server:
        store = RedisStore(server.url)
        server.stop()      # every call now fails, fast
        server.start()     # same port, empty
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from apps.procs import free_port

__all__ = ["RedisServer", "redis_binary"]


def redis_binary() -> str | None:
    """The path of ``redis-server`` (``PATH``, then ``/usr/bin``), or ``None``."""
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").exists():
        found = "/usr/bin/redis-server"
    return found


class RedisServer:
    """One ``redis-server`` process; a context manager that starts and removes it."""

    def __init__(
        self, binary: str | None = None, *, port: int | None = None, cluster: bool = False
    ) -> None:
        found = binary or redis_binary()
        if found is None:
            raise FileNotFoundError("redis-server not found (scripts/install-system-deps.sh)")
        self.binary = found
        self.port = port or free_port()
        self.bus_port = free_port()
        """The cluster bus's port (by default ``port + 10000``: maybe taken, or past 65535)."""
        self.host = "127.0.0.1"
        self.cluster = cluster
        """A one-node Redis Cluster owning all 16384 slots: it refuses a multi-key command
        whose keys are in different slots (``CROSSSLOT``), as a real cluster does."""
        self._dir = tempfile.TemporaryDirectory(prefix="streamrelay-redis-")
        self._log = Path(self._dir.name) / "redis.log"
        self._ready = False
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        self.spawn()
        self.wait(timeout)

    def spawn(self) -> None:
        """Start the process and return at once (:meth:`wait` then waits for it): a
        cluster node takes 2 s to accept writes, which other work can overlap."""
        if self.running:
            return
        self._ready = False
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind", self.host,
                "--port", str(self.port),
                "--dir", self._dir.name,
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--logfile", str(self._log),
                *(
                    [
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        # (a node alone waits up to this, capped at 5 s, to "rejoin")
                        "--cluster-node-timeout", "500",
                        "--cluster-port", str(self.bus_port),
                    ]
                    if self.cluster
                    else []
                ),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def wait(self, timeout: float = 10.0) -> None:
        """Wait until the spawned server answers PING (and, in a cluster, accepts writes)."""
        if self.proc is None:
            raise RuntimeError("redis-server is not started")
        deadline = time.monotonic() + timeout
        while not self._ready:
            if self.proc.poll() is not None:
                log = self._log
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {text[-2000:]}")
            if self._ping() and (not self.cluster or self._cluster_ready()):
                self._ready = True
            elif time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer on port {self.port}")
            else:
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait until the port is closed."""
        proc, self.proc = self.proc, None
        self._ready = False
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def command(self, *args: str | int) -> bytes:
        """One command over a raw socket (RESP), for checks that need no client."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536)

    def _cluster_ready(self) -> bool:
        if b"cluster_state:ok" in self.command("CLUSTER", "INFO"):
            return True
        # (after a restart nodes.conf already has them: then this answers an error)
        self.command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        return False

    def _ping(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
