"""Graceful shutdown with streams open, on real server processes stopped by SIGTERM.

A server that stops waits for open responses for its grace period
(``--timeout-graceful-shutdown`` for uvicorn, ``--graceful-timeout`` for
hypercorn), then cancels them. A stream that ends within the grace period ends
normally; one still open when the server cancels it gets a terminal ``error``
event with code ``shutdown`` (``text`` has no in-band error: it is cut), its
upstream is closed, and the server exits in time. No server is patched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from apps.procs import APPS, Proc, chat, free_port, server_command
from streamrelay.testing import ServerThread, Simulator
from wire import FORMATS, Outcome, RawHTTP, parse_body

GRACE = 1
GRACE_FLAGS = {
    "uvicorn-httptools": ("--timeout-graceful-shutdown", str(GRACE)),
    "hypercorn": ("--graceful-timeout", str(GRACE)),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[Simulator, str]]:
    simulator = Simulator(delay=0.0)
    with ServerThread(simulator) as server:
        yield simulator, server.url + "/v1"


@pytest.fixture(params=list(GRACE_FLAGS))
def server(
    request: pytest.FixtureRequest, upstream: tuple[Simulator, str], tmp_path: Path
) -> Iterator[Proc]:
    upstream[0].reset()
    name = request.param
    port = free_port()
    env = {
        "STREAMRELAY_UPSTREAM": upstream[1],
        "STREAMRELAY_TEST_HEARTBEAT": "0.3",
        "PYTHONPATH": str(APPS),
    }
    argv = server_command(name, "relay_app:app", port, *GRACE_FLAGS[name])
    with Proc(argv, port, tmp_path / f"{name}.log", env, cwd=APPS) as proc:
        yield proc


def open_stream(url: str, fmt: str, body: dict[str, object], deltas: int) -> RawHTTP:
    """A stream of ``fmt`` read until ``deltas`` tokens have arrived."""
    conn = RawHTTP(url, timeout=15)
    conn.request("POST", f"/ai/chat/completions?format={fmt}", body)
    assert conn.read_head()[0] == 200
    seen = b""
    marker = {"text": b" ", "ndjson": b'"delta"', "sse": b"event: delta", "openai": b'"content"'}
    while seen.count(marker[fmt]) < deltas:
        chunk = conn.read_chunk()
        assert chunk is not None, seen
        seen += chunk
    conn.buffer[:0] = _rechunk(seen)  # read again below, as part of the whole body
    return conn


def _rechunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def outcome(conn: RawHTTP, fmt: str) -> Outcome:
    raw = conn.read_body()
    result = Outcome(fmt, 200, httpx.Headers(), raw, aborted=not conn.complete)
    parse_body(fmt, raw, result)
    return result


def stop(proc: Proc) -> float:
    """SIGTERM the server; the seconds it took to exit."""
    assert proc.process is not None
    started = time.monotonic()
    os.kill(proc.process.pid, signal.SIGTERM)
    try:
        proc.process.wait(GRACE + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit after SIGTERM:\n{proc.output()}")
    return time.monotonic() - started


def test_open_streams_get_a_shutdown_error(server: Proc, upstream: tuple[Simulator, str]) -> None:
    sim = upstream[0]
    body = chat(fault="stall", after=2, tokens=6)  # two tokens, then silence (heartbeats)
    conns = {fmt: open_stream(server.url, fmt, body, 2) for fmt in FORMATS}
    assert sim.stats.active == len(FORMATS)
    with ThreadPoolExecutor(len(conns)) as pool:
        futures = {fmt: pool.submit(outcome, conn, fmt) for fmt, conn in conns.items()}
        took = stop(server)
        results = {fmt: future.result() for fmt, future in futures.items()}
    for conn in conns.values():
        conn.close()

    assert took < GRACE + 5, took
    expected = sim.expected_text(body).split(" ")[:3]  # "", first token, second token
    for fmt, result in results.items():
        assert result.content().startswith(" ".join(expected)), (fmt, result.raw[-300:])
        if fmt == "text":
            assert result.aborted, "text has no error event: the connection must be cut"
            continue
        assert not result.aborted, (fmt, result.raw[-300:])  # an orderly end of the response
        assert result.terminal == "error", (fmt, result.raw[-300:])
        error = result.error
        assert error is not None
        assert error["code"] == "shutdown", (fmt, error)
    # Every upstream generation was stopped, none finished.
    sim.stats.wait(cancelled=len(FORMATS), timeout=10)
    assert sim.stats.finished == 0


def test_a_stream_within_the_grace_period_finishes(
    server: Proc, upstream: tuple[Simulator, str]
) -> None:
    sim = upstream[0]
    body = chat(tokens=6, delay=GRACE / 12)  # ends about halfway through the grace period
    conn = open_stream(server.url, "ndjson", body, 1)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(outcome, conn, "ndjson")
        stop(server)
        result = future.result()
    conn.close()
    assert result.terminal == "done", result.raw[-300:]
    assert result.content() == sim.expected_text(body)
    assert sim.stats.finished == 1
