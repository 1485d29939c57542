"""Many workers on one Redis: two relay processes (uvicorn, ``tests/apps/redis_app.py``)
share a real ``redis-server``; the upstream is the simulator in this process.

* a stream started on worker A resumes on worker B, exactly where it left off;
* a stop sent to B stops A's upstream;
* A killed with SIGKILL mid-stream: B's reader gets the stored events, then
  ``producer_lost``, within 10 s;
* ``max_streams_per_principal`` holds across the workers;
* Redis stopped and restarted: the live client gets its whole answer, a resume gets
  503, a degraded stream is a 404 once Redis is back, new streams are resumable
  again within 10 s, and a stream started while Redis is down has no id.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.procs import APPS, Proc, free_port, server_command, start_all
from redis_server import RedisServer, redis_binary
from streamrelay.testing import Simulator
from wire import RawHTTP, chat_body, fetch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    if redis_binary() is None:
        pytest.skip("redis-server is not installed (make system-deps)")
    with RedisServer() as server:
        yield server


def worker(upstream: str, redis: RedisServer, logs: Path, name: str, linger: float) -> Proc:
    port = free_port()
    env = {
        "STREAMRELAY_UPSTREAM": upstream,
        "STREAMRELAY_TEST_REDIS": redis.url,
        "STREAMRELAY_TEST_LINGER": str(linger),
        "PYTHONPATH": os.pathsep.join([str(APPS), str(APPS.parent)]),
    }
    argv = server_command("uvicorn-httptools", "redis_app:app", port)
    return Proc(argv, port, logs / f"{name}.log", env, cwd=APPS)


@pytest.fixture(scope="module")
def workers(
    upstream: str, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Proc]]:
    logs = tmp_path_factory.mktemp("workers")
    procs = {name: worker(upstream, redis, logs, name, 2.0) for name in ("a", "b")}
    start_all(list(procs.values()))
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def start(url: str, body: dict[str, Any], fmt: str = "ndjson", **headers: str) -> RawHTTP:
    conn = RawHTTP(url)
    conn.request("POST", f"/ai/chat/completions?format={fmt}", body, headers)
    return conn


def read_lines(conn: RawHTTP, count: int) -> list[dict[str, Any]]:
    raw = bytearray()
    while True:
        chunk = conn.read_chunk()
        assert chunk is not None, bytes(raw)
        raw += chunk
        lines = [json.loads(line) for line in raw.split(b"\n")[:-1] if line]
        events = [e for e in lines if e["type"] != "ping"]
        if len(events) >= count:
            return events


def read_rest(conn: RawHTTP) -> list[dict[str, Any]]:
    """Every remaining event of an ndjson stream (the last line may have begun earlier)."""
    raw = bytearray()
    while (chunk := conn.read_chunk()) is not None:
        raw += chunk
    conn.close()
    lines = raw.split(b"\n")
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # the tail of a line read before
    return [e for e in events if e["type"] != "ping"]


def stream_id(conn: RawHTTP) -> str:
    status, headers = conn.read_head()
    assert status == 200
    return dict(headers)["x-stream-id"]


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "delta")


def test_a_stream_started_on_one_worker_resumes_on_another(
    sim: Simulator, client: httpx.Client, workers: dict[str, Proc]
) -> None:
    body = chat_body(tokens=40, delay=0.02)
    conn = start(workers["a"].url, body)
    sid = stream_id(conn)
    first = read_lines(conn, 6)
    conn.close()
    position = first[-1]["seq"]
    rest = fetch(
        client,
        workers["b"].url + f"/ai/streams/{sid}",
        fmt="ndjson",
        method="GET",
        headers={"last-event-id": str(position)},
    )
    assert rest.status == 200
    assert [e["seq"] for e in rest.events] == list(
        range(position + 1, position + 1 + len(rest.events))
    )
    assert text(first) + text(rest.events) == sim.expected_text(body)
    assert rest.terminal == "done"
    assert sim.stats.started == 1 and sim.stats.wait(timeout=5, finished=1)
    # And in sse, as a browser's EventSource would reconnect there.
    again = fetch(
        client,
        workers["b"].url + f"/ai/streams/{sid}",
        method="GET",
        headers={"accept": "text/event-stream", "last-event-id": str(position)},
    )
    assert again.content() == text(rest.events)


def test_a_stop_on_one_worker_stops_the_upstream_of_another(
    sim: Simulator, client: httpx.Client, workers: dict[str, Proc]
) -> None:
    conn = start(workers["a"].url, chat_body(tokens=400, delay=0.05))
    sid = stream_id(conn)
    read_lines(conn, 3)
    stopped = client.delete(workers["b"].url + f"/ai/streams/{sid}")
    assert stopped.status_code == 204
    answered = time.monotonic()
    assert sim.stats.wait(timeout=5, cancelled=1)
    assert time.monotonic() - answered < 1.0
    events = read_rest(conn)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "stopped"
    later = fetch(client, workers["b"].url + f"/ai/streams/{sid}", fmt="ndjson", method="GET")
    assert later.error is not None and later.error["code"] == "stopped"


def test_a_foreign_principal_gets_the_same_404_on_every_worker(
    client: httpx.Client, workers: dict[str, Proc]
) -> None:
    out = fetch(
        client,
        workers["a"].url + "/ai/chat/completions",
        chat_body(tokens=2),
        fmt="ndjson",
        headers={"x-user": "alice"},
    )
    sid = out.headers["x-stream-id"]
    mine = client.get(workers["b"].url + f"/ai/streams/{sid}", headers={"x-user": "alice"})
    assert mine.status_code == 200
    theirs = client.get(workers["b"].url + f"/ai/streams/{sid}", headers={"x-user": "bob"})
    unknown = client.get(workers["b"].url + "/ai/streams/AAAAAAAAAAAAAAAAAAAAAA")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content == unknown.content


def test_the_stream_limit_per_principal_holds_across_workers(
    sim: Simulator, client: httpx.Client, workers: dict[str, Proc]
) -> None:
    body = chat_body(tokens=400, delay=0.05)
    held = [start(workers[w].url, body, **{"x-user": "carol"}) for w in ("a", "b")]
    try:
        for conn in held:
            stream_id(conn)
        third = client.post(
            workers["a"].url + "/ai/chat/completions?format=ndjson",
            json=body,
            headers={"x-user": "carol"},
        )
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "too_many_streams"
        other = fetch(
            client,
            workers["b"].url + "/ai/chat/completions",
            chat_body(tokens=1),
            fmt="ndjson",
            headers={"x-user": "dave"},
        )
        assert other.status == 200
    finally:
        for conn in held:
            conn.close()
    # The held streams linger (2 s) then are abandoned, which frees carol's slots.
    assert sim.stats.wait(timeout=10, cancelled=2)
    deadline = time.monotonic() + 5
    while True:
        again = client.post(
            workers["b"].url + "/ai/chat/completions?format=ndjson",
            json=chat_body(tokens=1),
            headers={"x-user": "carol"},
        )
        if again.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.status_code == 200


def test_a_killed_producer_is_reported_to_readers_on_another_worker(
    sim: Simulator,
    client: httpx.Client,
    upstream: str,
    redis: RedisServer,
    tmp_path: Path,
    workers: dict[str, Proc],
) -> None:
    doomed = worker(upstream, redis, tmp_path, "doomed", 30.0)
    with doomed:
        conn = start(doomed.url, chat_body(tokens=400, delay=0.05))
        sid = stream_id(conn)
        seen = read_lines(conn, 4)
        follower = RawHTTP(workers["b"].url, timeout=30)
        follower.request("GET", f"/ai/streams/{sid}?format=ndjson")
        assert follower.read_head()[0] == 200
        got = read_lines(follower, 4)
        assert got[:4] == seen[:4]
        assert doomed.process is not None
        os.killpg(doomed.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        events = [e for e in read_rest(follower) if e["seq"] > got[-1]["seq"]]
        conn.close()
    waited = time.monotonic() - killed
    assert events[-1]["type"] == "error" and events[-1]["code"] == "producer_lost"
    assert waited < 10.0, waited
    seqs = [e["seq"] for e in got + events]
    assert seqs == list(range(1, len(seqs) + 1))  # everything stored, once, then the error


def test_redis_down_and_back(
    sim: Simulator, client: httpx.Client, redis: RedisServer, workers: dict[str, Proc]
) -> None:
    a, b = workers["a"].url, workers["b"].url
    body = chat_body(tokens=60, delay=0.03)
    conn = start(a, body)
    sid = stream_id(conn)
    events = read_lines(conn, 3)
    redis.stop()
    try:
        # The live client still gets its whole answer.
        events += [e for e in read_rest(conn) if e["seq"] > events[-1]["seq"]]
        assert events[-1]["type"] == "done"
        assert text(events) == sim.expected_text(body)
        # A resume that Redis cannot serve: 503 with a JSON error.
        resume = client.get(b + f"/ai/streams/{sid}?format=ndjson")
        assert resume.status_code == 503
        assert resume.json()["error"]["code"] == "store_unavailable"
        # A stream started now relays without a store: no id.
        down = fetch(client, b + "/ai/chat/completions", chat_body(tokens=2), fmt="ndjson")
        assert down.status == 200 and down.terminal == "done"
        assert "x-stream-id" not in down.headers
    finally:
        redis.start()
    # Once Redis is back, the degraded stream is a 404 and new streams are resumable again.
    assert client.get(b + f"/ai/streams/{sid}").status_code == 404
    deadline = time.monotonic() + 10
    while True:
        back = fetch(client, a + "/ai/chat/completions", chat_body(tokens=2), fmt="ndjson")
        if "x-stream-id" in back.headers or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert "x-stream-id" in back.headers
    replay = fetch(
        client, b + f"/ai/streams/{back.headers['x-stream-id']}", fmt="ndjson", method="GET"
    )
    assert replay.terminal == "done"
