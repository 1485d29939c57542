"""A worker of the multi-process metrics test: the relay at ``/ai`` with
``PrometheusMetrics``, and ``/metrics`` summing the series of every worker.

Run by ``uvicorn metrics_app:app --workers 2`` (``tests/test_metrics_multiprocess.py``).
It follows prometheus_client's "Multiprocess Mode":

* ``PROMETHEUS_MULTIPROC_DIR`` is set in the server's environment before it starts
  (prometheus_client picks its value class when it is first imported, so setting it
  later would be too late); every worker then keeps its values in its own files there
  (``counter_<pid>.db``, ``gauge_livesum_<pid>.db``, ``histogram_<pid>.db``);
* ``/metrics`` is ``PrometheusMetrics.asgi_app()``, which in this mode reads every
  worker's files at each scrape: whichever worker answers, the numbers are the sums
  over all of them, and workers whose process is gone are marked dead first
  (:mod:`streamrelay.metrics.exposition`).

A worker that stops cleanly also marks itself dead at the end of its lifespan, and each
worker's startup (uvicorn starts a replacement for a dead worker) marks dead its
predecessors.

Environment: ``STREAMRELAY_UPSTREAM`` (the test process's simulator, ``.../v1``) and
``PROMETHEUS_MULTIPROC_DIR`` (an empty directory per test). Every response carries
``x-worker-pid``, the process id of the worker that answered.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import mark_process_dead
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from streamrelay import StreamRelay, Upstream
from streamrelay.metrics import PrometheusMetrics
from streamrelay.metrics.exposition import mark_dead_workers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_HEADER = "x-worker-pid"

if not os.environ.get(MULTIPROC_ENV):
    raise RuntimeError(f"set {MULTIPROC_ENV} in the server's environment before it starts")
MULTIPROC_DIR = Path(os.environ[MULTIPROC_ENV])

metrics = PrometheusMetrics(registry=CollectorRegistry())
relay = StreamRelay(
    Upstream(os.environ["STREAMRELAY_UPSTREAM"], api_key="sk-test"), metrics=metrics
)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Clear the gauges of predecessors that died; on a clean stop, mark this worker dead."""
    mark_dead_workers(MULTIPROC_DIR)
    try:
        yield
    finally:
        await relay.aclose()
        mark_process_dead(os.getpid(), str(MULTIPROC_DIR))


def with_worker_pid(inner: ASGIApp) -> ASGIApp:
    """``inner`` with an ``x-worker-pid`` header on every response."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((WORKER_HEADER.encode(), str(os.getpid()).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await inner(scope, receive, send_with_pid)

    return app


app = with_worker_pid(
    Starlette(
        routes=[Route("/metrics", metrics.asgi_app()), Mount("/ai", relay)],
        lifespan=lifespan,
    )
)
