"""Real servers and proxies as subprocesses, for the host, server and nginx tests.

* :class:`Proc` runs one command on a free port, waits until it accepts
  connections, and stops it (and its children) afterwards, showing its log
  when it fails to start;
* :func:`server_command` spells the command line of each ASGI server;
* :func:`nginx_binary` finds Debian's nginx and :func:`nginx_conf` writes a config
  whose every path (pid, logs, temp files) is inside a test's directory;
* :func:`read_stream` reads one stream over a real socket and records when each
  piece arrived (to prove that the first token came while the upstream was still
  generating the last).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MESSAGES = [{"role": "user", "content": "Stream me something."}]


def free_port() -> int:
    """A free local port (bound and released; the race is acceptable on a test machine)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def server_command(server: str, target: str, port: int, *extra: str) -> list[str]:
    """The command line that serves ASGI app ``target`` (``module:attr``) on ``port``.

    ``server`` is ``uvicorn-httptools``, ``uvicorn-h11``, ``hypercorn``,
    ``hypercorn-trio`` (its trio worker), ``granian`` or ``daphne``.
    """
    host = "127.0.0.1"
    if server.startswith("uvicorn"):
        http = server.partition("-")[2] or "auto"
        return [
            str(BIN / "uvicorn"),
            target,
            "--host",
            host,
            "--port",
            str(port),
            "--http",
            http,
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "1",
            *extra,
        ]
    if server == "hypercorn":
        return [str(BIN / "hypercorn"), target, "--bind", f"{host}:{port}", *extra]
    if server == "hypercorn-trio":  # the relay under trio: anyio, and the httpx transport
        return [
            str(BIN / "hypercorn"),
            "--worker-class",
            "trio",
            target,
            "--bind",
            f"{host}:{port}",
            *extra,
        ]
    if server == "granian":
        return [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "--host",
            host,
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra,
            target,
        ]
    if server == "daphne":
        return [str(BIN / "daphne"), "-b", host, "-p", str(port), *extra, target]
    raise ValueError(f"unknown server {server!r}")


@dataclass
class Proc:
    """A subprocess listening on ``port``; use as a context manager or call start/stop."""

    argv: Sequence[str]
    port: int
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    scheme: str = "http"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        """Launch (without waiting); see :meth:`wait_ready`."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> Proc:
        """Block until the port accepts connections; raise with the log if it never does."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.argv[0]} exited ({self.process.returncode}):\n{self.output()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"{self.argv[0]} did not listen:\n{self.output()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM its process group, then SIGKILL after a grace period."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> Proc:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_all(procs: Sequence[Proc], timeout: float = 90.0) -> None:
    """Launch several at once (their imports overlap) and wait for each; stop all on failure."""
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.wait_ready(timeout)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise


# nginx ----------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_conf(directory: Path, servers: str) -> Path:
    """An ``nginx.conf`` in ``directory`` with the ``servers`` blocks inside ``http``.

    Everything nginx writes (pid, logs, temp files) stays in ``directory``.
    """
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir(exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
error_log {directory}/error.log info;
pid {directory}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {directory}/access.log;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
{servers}
}}
"""
    )
    return conf


# Reading a stream ------------------------------------------------------------------------


def chat(**simulator: Any) -> dict[str, Any]:
    """A chat request body; ``simulator`` options go in its ``"simulator"`` object."""
    body: dict[str, Any] = {"model": "sim-1", "messages": MESSAGES}
    if simulator:
        body["simulator"] = simulator
    return body


@dataclass
class Received:
    """One stream as the client read it."""

    status: int
    headers: httpx.Headers
    pieces: list[tuple[int, bytes]]
    """``(time.time_ns() at arrival, decoded bytes)`` per read, in order."""
    http_version: str = ""

    @property
    def body(self) -> bytes:
        return b"".join(piece for _, piece in self.pieces)

    def stamps(self) -> list[int]:
        """The ``t=<ns>`` values of the simulator's ``timestamps`` fault, in order."""
        return [int(word[2:]) for word in _content(self).split() if word.startswith("t=")]

    def first_token_at(self) -> int:
        """When the first piece holding a ``t=`` token arrived."""
        seen = b""
        for at, piece in self.pieces:
            seen += piece
            if b"t=" in seen:
                return at
        raise AssertionError(f"no token arrived: {self.body[:300]!r}")

    def pings(self) -> int:
        """Heartbeats: SSE comments other than the preamble, or ndjson pings."""
        text = self.body.decode()
        if self.headers.get("content-type", "").startswith("application/x-ndjson"):
            return text.count('{"type":"ping"}')
        return sum(
            1 for line in text.splitlines() if line.startswith(":") and "stream open" not in line
        )

    def content(self) -> str:
        return _content(self)


def _content(received: Received) -> str:
    """The content text, whatever the format (independent of streamrelay's codecs)."""
    media = received.headers.get("content-type", "")
    text = received.body.decode()
    if media.startswith("text/plain"):
        return text
    out = []
    if media.startswith("application/x-ndjson"):
        for line in text.splitlines():
            event = json.loads(line)
            if event.get("type") == "delta" and event.get("index") == 0:
                out.append(event["text"])
        return "".join(out)
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            continue
        event = json.loads(data)
        if event.get("type") == "delta":
            out.append(event["text"])
        for choice in event.get("choices") or ():
            out.append((choice.get("delta") or {}).get("content") or "")
    return "".join(out)


def read_stream(
    client: httpx.Client,
    url: str,
    body: Any,
    *,
    fmt: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Received:
    """POST ``body`` and read the response piece by piece as it arrives (decoded)."""
    params = {"format": fmt} if fmt else None
    pieces: list[tuple[int, bytes]] = []
    with client.stream("POST", url, json=body, params=params, headers=headers) as response:
        for piece in response.iter_bytes():
            pieces.append((time.time_ns(), piece))
    return Received(response.status_code, response.headers, pieces, response.http_version)
