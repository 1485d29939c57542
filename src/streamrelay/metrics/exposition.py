"""The ``/metrics`` endpoint of :class:`~streamrelay.metrics.PrometheusMetrics`, for one
worker process or many (``PrometheusMetrics.asgi_app()``).

With one process it serves the registry, as ``prometheus_client.make_asgi_app`` does.
With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's multiprocess mode, for
``uvicorn --workers N`` and gunicorn), each worker keeps its values in its own files in
that directory, and every scrape, whichever worker answers it, reads them all:

* a fresh registry with a collector over the directory is built per scrape, as
  prometheus_client's documentation says (a registry's own samples would be this
  worker's values only);
* workers whose process is gone are marked dead (``mark_process_dead``) first, so the
  ``livesum`` gauge ``streamrelay_active_streams`` stops counting their streams. uvicorn
  has no hook for a worker that exits (gunicorn's ``child_exit``), and a killed worker
  runs none, so the scrape is where it can be done. Counters and histograms of dead
  workers stay in the sums: they are totals;
* empty files are skipped: prometheus_client creates a worker's file before sizing it,
  and a scrape reading it in between would fail whole (``struct.error``;
  prometheus/client_python#1199, still so in 0.26.0).

The files are read in a worker thread, off the event loop.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import Receive, Scope, Send

__all__ = ["MULTIPROC_ENV", "MetricsApp", "mark_dead_workers"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable of prometheus_client's multiprocess mode."""

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def _is_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    with suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def mark_dead_workers(directory: str | os.PathLike[str]) -> list[int]:
    """Mark dead every worker with live-gauge files in ``directory`` whose process is
    gone (so ``livesum`` gauges stop counting it); return their process ids."""
    dead: list[int] = []
    for path in Path(directory).glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and pid not in dead and not _is_alive(pid):
            with suppress(FileNotFoundError):  # another worker's scrape got there first
                mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
            dead.append(pid)
    return dead


class _WorkersCollector(MultiProcessCollector):
    """A ``MultiProcessCollector`` that skips the empty file of a worker still starting."""

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in Path(self._path).glob("*.db"):
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # a live gauge's file, just marked dead
                continue
            if size:
                files.append(str(path))
        merged: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


class MetricsApp:
    """An ASGI app answering every GET with the Prometheus text of ``registry``, or, in
    multiprocess mode, of every worker's files (see the module)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def render(self) -> bytes:
        """The exposition text, read now (blocking: files in multiprocess mode)."""
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return generate_latest(self.registry)
        mark_dead_workers(directory)
        registry = CollectorRegistry()
        _WorkersCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        body = await anyio.to_thread.run_sync(self.render)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
