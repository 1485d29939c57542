"""Two worker processes, one set of numbers: ``PrometheusMetrics`` in prometheus_client's
multiprocess mode under ``uvicorn --workers 2`` (``tests/apps/metrics_app.py``), in front
of the simulator in this process. Each test gets its own ``PROMETHEUS_MULTIPROC_DIR``.

* Streams served by both workers (and one 429): every scrape of ``/metrics``, whichever
  worker answers it, gives the same sums, and they match what the clients received:
  streams started and finished, the upstream error, the tokens of the usage the
  simulator reported, no stream open once all ended. Each worker's own files hold
  exactly the streams that worker served. Workers that stop cleanly mark themselves
  dead: their live gauge files go, their counters stay.
* A stream open on one worker counts once in ``streamrelay_active_streams`` whichever
  worker is scraped; when that worker is killed, the gauge forgets it (the app marks
  dead workers on each scrape) while the counters keep what it did.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.procs import APPS, Proc, free_port, server_command
from streamrelay.testing import Simulator
from wire import Outcome, RawHTTP, chat_body, fetch

pytestmark = pytest.mark.real

prometheus_client = pytest.importorskip("prometheus_client", reason="pip install -e '.[dev]'")
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

WORKER_HEADER = "x-worker-pid"
BATCH = 8
"""Streams sent at once: concurrent connections are what spreads them over the workers."""
MAX_BATCHES = 20
STARTED = "streamrelay_streams_started_total"
FINISHED = "streamrelay_streams_finished_total"
ACTIVE = "streamrelay_active_streams"
TOKENS = "streamrelay_tokens_total"
ERRORS = "streamrelay_upstream_errors_total"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""One scrape: each sample's value by its name and sorted labels."""


@dataclass
class Workers:
    """``uvicorn metrics_app:app --workers 2`` and its multiprocess directory."""

    proc: Proc
    directory: Path

    @property
    def url(self) -> str:
        return self.proc.url

    def pids_with_files(self) -> set[int]:
        """The processes that wrote series into the directory (``<kind>_<pid>.db``)."""
        return {int(path.stem.rpartition("_")[2]) for path in self.directory.glob("*.db")}


@pytest.fixture
def workers(upstream: str, tmp_path: Path) -> Iterator[Workers]:
    """Two uvicorn workers on one port, ``PROMETHEUS_MULTIPROC_DIR`` set before they start."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    port = free_port()
    env = {
        "STREAMRELAY_UPSTREAM": upstream,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "PYTHONPATH": os.pathsep.join([str(APPS), str(APPS.parent)]),
    }
    argv = server_command("uvicorn-httptools", "metrics_app:app", port, "--workers", "2")
    with Proc(argv, port, tmp_path / "uvicorn.log", env, cwd=APPS) as proc:
        workers = Workers(proc, directory)
        # Each worker writes its own files when it imports the app: wait for both.
        deadline = time.monotonic() + 60
        while len(workers.pids_with_files()) < 2:
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.05)
        yield workers


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A client that opens a new connection per request (none is kept alive), so that
    the kernel hands requests to either worker."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=httpx.Timeout(15.0), limits=limits) as client:
        yield client


# Reading /metrics ------------------------------------------------------------------------


def scrape(http: httpx.Client, url: str) -> tuple[int, Samples]:
    """One scrape: the worker that answered, and every sample of the text it returned."""
    response = http.get(url + "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return int(response.headers[WORKER_HEADER]), samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the ``name`` samples whose labels include ``labels``."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def scrape_until(
    http: httpx.Client, url: str, done: Callable[[Samples], bool], timeout: float = 15.0
) -> Samples:
    """Scrape until ``done`` holds (the workers finish a stream just after its last byte)."""
    deadline = time.monotonic() + timeout
    while True:
        _, samples = scrape(http, url)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {samples}")
        time.sleep(0.05)


def scrape_every_worker(
    http: httpx.Client, url: str, timeout: float = 30.0
) -> dict[int, list[Samples]]:
    """Scrapes, a few at once, until two workers have answered: their samples by worker."""
    by_worker: dict[int, list[Samples]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(4) as pool:
        while len(by_worker) < 2:
            if time.monotonic() > deadline:
                raise AssertionError(f"only workers {sorted(by_worker)} answered in {timeout} s")
            for pid, samples in pool.map(lambda _: scrape(http, url), range(4)):
                by_worker[pid].append(samples)
    return by_worker


# Streams ---------------------------------------------------------------------------------


def streaming_body(tokens: int, **simulator: Any) -> dict[str, Any]:
    """A streaming chat request that asks for the usage at the end."""
    body = chat_body(tokens=tokens, delay=0.01, **simulator)
    body["stream_options"] = {"include_usage": True}
    return body


def relay(http: httpx.Client, url: str, body: dict[str, Any]) -> Outcome:
    """One ndjson stream through the workers, read to its end."""
    return fetch(http, url + "/ai/chat/completions", body, fmt="ndjson")


def worker_of(outcome: Outcome) -> int:
    return int(outcome.headers[WORKER_HEADER])


def test_every_worker_scrapes_the_sums_of_both(
    sim: Simulator, http: httpx.Client, workers: Workers
) -> None:
    # Batches of concurrent streams until both workers have served some.
    served: list[tuple[dict[str, Any], Outcome]] = []
    for _ in range(MAX_BATCHES):
        bodies = [streaming_body(tokens=3 + (len(served) + i) % 9) for i in range(BATCH)]
        with ThreadPoolExecutor(BATCH) as pool:
            served += zip(
                bodies, pool.map(lambda b: relay(http, workers.url, b), bodies), strict=True
            )
        if len({worker_of(out) for _, out in served}) == 2:
            break
    streams = len(served)
    by_worker = Counter(worker_of(out) for _, out in served)
    assert len(by_worker) == 2, f"one worker served all {streams} streams"
    usage = Counter[str]()
    for body, out in served:
        assert out.status == 200 and out.terminal == "done", out.raw[-300:]
        assert out.content() == sim.expected_text(body)
        reported = out.usage()
        assert reported is not None, out.events[-3:]
        usage.update(input=reported["prompt_tokens"], output=reported["completion_tokens"])
    refused = relay(http, workers.url, chat_body(fault="status", status=429))
    assert refused.status == 429
    by_worker[worker_of(refused)] += 1

    # The 429 is a stream too: its upstream call was opened, then it ended on the status.
    def all_ended(samples: Samples) -> bool:
        return total(samples, FINISHED) == streams + 1

    scrape_until(http, workers.url, all_ended)
    scrapes = scrape_every_worker(http, workers.url)
    assert set(scrapes) == set(by_worker)
    first = scrapes[next(iter(scrapes))][0]
    for pid, samples in scrapes.items():
        for one in samples:
            assert one == first, f"worker {pid} scraped other numbers"

    chat = {"route": "chat.completions", "format": "ndjson"}
    assert total(first, STARTED, **chat) == total(first, STARTED) == streams + 1
    assert total(first, FINISHED, outcome="done", **chat) == streams
    assert total(first, FINISHED, outcome="upstream_status") == 1
    assert total(first, ERRORS, status="429") == total(first, ERRORS) == 1
    assert total(first, ACTIVE) == 0
    assert total(first, TOKENS, type="input") == usage["input"]
    assert total(first, TOKENS, type="output") == usage["output"]
    assert total(first, "streamrelay_time_to_first_token_seconds_count") == streams
    assert total(first, "streamrelay_stream_duration_seconds_count") == streams + 1
    assert sim.stats.started == streams + 1  # one upstream call per stream, no retry

    # Each worker's own files hold exactly the streams that worker served.
    assert workers.pids_with_files() == set(by_worker)
    for pid, count in by_worker.items():
        files = [str(path) for path in workers.directory.glob(f"*_{pid}.db")]
        own = MultiProcessCollector.merge(files)
        started = sum(s.value for m in own for s in m.samples if s.name == STARTED)
        assert started == count, (pid, count)

    # Stopped cleanly, each worker marks itself dead: no live gauge left, counters kept.
    workers.proc.stop()
    assert not list(workers.directory.glob("gauge_live*.db"))
    assert {int(p.stem.rpartition("_")[2]) for p in workers.directory.glob("counter_*.db")} == set(
        by_worker
    )


def test_a_killed_workers_open_stream_leaves_the_gauge(
    sim: Simulator, http: httpx.Client, workers: Workers
) -> None:
    conn = RawHTTP(workers.url, timeout=30)
    try:
        conn.request(
            "POST", "/ai/chat/completions?format=ndjson", chat_body(fault="stall", after=2)
        )
        status, headers = conn.read_head()
        assert status == 200
        owner = int(dict(headers)[WORKER_HEADER])
        # The stream is open on one worker; scraped on either, it counts once.
        live = scrape_every_worker(http, workers.url)
        for samples in (s for scrapes in live.values() for s in scrapes):
            assert total(samples, ACTIVE) == 1
            assert total(samples, STARTED) == 1 and total(samples, FINISHED) == 0
        os.kill(owner, signal.SIGKILL)
    finally:
        conn.close()
    # Its live gauge goes with it (uvicorn starts a replacement worker meanwhile) ...
    after = scrape_until(http, workers.url, lambda samples: total(samples, ACTIVE) == 0)
    assert not list(workers.directory.glob(f"gauge_live*_{owner}.db"))
    # ... while what it counted stays: the stream started and never finished.
    assert total(after, STARTED) == 1 and total(after, FINISHED) == 0
    assert (workers.directory / f"counter_{owner}.db").exists()
    replaced = scrape_every_worker(http, workers.url)
    assert owner not in replaced
    for samples in (s for scrapes in replaced.values() for s in scrapes):
        assert total(samples, ACTIVE) == 0 and total(samples, STARTED) == 1
    assert sim.stats.wait(timeout=10, cancelled=1)  # the upstream call closed with the worker
