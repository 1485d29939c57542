"""Resumable streams on the memory store, through a real server and real sockets:
ids and positions, resume in every format, 204/400/404, stop, linger, expiry.

(Many workers on Redis: ``test_resume_redis.py``.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.stores import MemoryStore
from streamrelay.testing import ServerThread, Simulator
from wire import FORMATS, RELAY_KEY, RawHTTP, chat_body, fetch, mounts, parse_sse, relay_host

STORES: dict[str, MemoryStore] = {}


def user(request: Any, body: Any) -> str | None:
    """Streams belong to the X-User header's user (none: anyone with the id)."""
    value = request.headers.get("x-user")
    return str(value) if value else None


@pytest.fixture(scope="module")
def relay(upstream: str) -> Iterator[str]:
    sim = Upstream(upstream, api_key=RELAY_KEY)
    STORES.update(mem=MemoryStore(), short=MemoryStore(ttl=0.5), forever=MemoryStore())
    relays = {
        "/mem": StreamRelay(sim, store=STORES["mem"], linger=1.0, principal=user),
        "/short": StreamRelay(sim, store=STORES["short"], linger=1.0),
        "/forever": StreamRelay(sim, store=STORES["forever"], linger=None),
        "/plain": StreamRelay(sim),
        "/beat": StreamRelay(
            sim, store=MemoryStore(), stream=StreamSettings(heartbeat=0.05), linger=1.0
        ),
    }
    with ServerThread(relay_host(mounts(relays), list(relays.values()))) as server:
        yield server.url


def start(relay: str, mount: str, fmt: str, body: dict[str, Any], **headers: str) -> RawHTTP:
    conn = RawHTTP(relay)
    conn.request("POST", f"{mount}/chat/completions?format={fmt}", body, headers)
    return conn


def read_events(conn: RawHTTP, fmt: str, count: int) -> tuple[bytes, list[dict[str, Any]]]:
    """Read from ``conn`` until ``count`` events (ndjson/sse) arrived; the raw bytes too."""
    raw = bytearray()
    while True:
        chunk = conn.read_chunk()
        assert chunk is not None
        raw += chunk
        events = parse(fmt, bytes(raw), partial=True)
        if len(events) >= count:
            return bytes(raw), events


def parse(fmt: str, raw: bytes, *, partial: bool = False) -> list[dict[str, Any]]:
    if fmt == "ndjson":
        lines = raw.split(b"\n")
        if partial:
            lines = lines[:-1]
        return [e for e in (json.loads(line) for line in lines if line) if e["type"] != "ping"]
    stream = parse_sse(raw if not partial else raw[: raw.rfind(b"\n\n") + 2])
    return [{**json.loads(e.data), "_id": e.id} for e in stream.events]


def stream_id_of(conn: RawHTTP) -> str:
    status, headers = conn.read_head()
    assert status == 200
    return dict(headers)["x-stream-id"]


# Ids and numbering -------------------------------------------------------------------------------


def test_a_stored_stream_has_an_unguessable_id_and_numbered_events(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(tokens=4)
    ids = set()
    for fmt in ("sse", "ndjson"):
        out = fetch(client, relay + "/mem/chat/completions", body, fmt=fmt)
        stream_id = out.headers["x-stream-id"]
        assert len(stream_id) == 22 and stream_id.replace("-", "").replace("_", "").isalnum()
        ids.add(stream_id)
        if fmt == "sse":
            assert [e.id for e in parse_sse(out.raw).events] == [
                str(n) for n in range(1, len(out.events) + 1)
            ]
        else:
            assert [e["seq"] for e in out.events] == list(range(1, len(out.events) + 1))
        assert out.content() == sim.expected_text(body)
    assert len(ids) == 2


def test_without_a_store_nothing_changes(client: httpx.Client, relay: str) -> None:
    out = fetch(client, relay + "/plain/chat/completions", chat_body(tokens=2), fmt="ndjson")
    assert "x-stream-id" not in out.headers
    assert all("seq" not in e for e in out.events)
    assert client.get(relay + "/plain/streams/abc").status_code == 404


# Resume ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["sse", "ndjson"])
def test_any_number_of_resumes_lose_and_repeat_nothing(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str
) -> None:
    body = chat_body(tokens=30, delay=0.01)
    whole = fetch(client, relay + "/mem/chat/completions", body, fmt=fmt)
    expected = [{k: v for k, v in e.items() if k not in ("_id", "seq")} for e in whole.events]
    conn = start(relay, "/mem", fmt, body)
    stream_id = stream_id_of(conn)
    _, got = read_events(conn, fmt, 5)
    conn.close()
    position = len(got)
    for step in (3, 7, 1, 6):  # leave and come back, on new connections, with the position
        conn = RawHTTP(relay)
        header = {"last-event-id": str(position)} if fmt == "sse" else {}
        query = "" if fmt == "sse" else f"&last_event_id={position}"
        conn.request("GET", f"/mem/streams/{stream_id}?format={fmt}{query}", headers=header)
        assert conn.read_head()[0] == 200
        _, more = read_events(conn, fmt, step)
        conn.close()
        numbers = [int(e["_id"]) if fmt == "sse" else e["seq"] for e in more]
        assert numbers == list(range(position + 1, position + 1 + len(more)))
        got += more
        position += len(more)
    rest = fetch(
        client,
        relay + f"/mem/streams/{stream_id}",
        fmt=fmt,
        method="GET",
        headers={"last-event-id": str(position)},
    )
    got += rest.events
    assert [{k: v for k, v in e.items() if k not in ("_id", "seq")} for e in got] == expected
    assert got[-1]["type"] == "done"
    assert sim.stats.started == 2  # the resumes never called the upstream


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_resume_works_in_every_format_whatever_the_stream_started_in(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str
) -> None:
    body = chat_body(tokens=6)
    started = fetch(client, relay + "/mem/chat/completions", body, fmt="ndjson")
    stream_id = started.headers["x-stream-id"]
    resumed = fetch(client, relay + f"/mem/streams/{stream_id}", fmt=fmt, method="GET")
    assert resumed.status == 200
    assert resumed.content() == sim.expected_text(body)
    assert resumed.terminal == "done"
    if fmt == "openai":  # the upstream's own chunks, replayed unchanged
        direct = fetch(client, relay + "/plain/chat/completions", body, fmt="openai")
        assert resumed.data == direct.data


@pytest.mark.parametrize("fmt", ["openai", "text"])
def test_openai_and_text_replay_from_the_first_event_whatever_the_position(
    sim: Simulator, client: httpx.Client, relay: str, fmt: str
) -> None:
    body = chat_body(tokens=5)
    stream_id = fetch(client, relay + "/mem/chat/completions", body, fmt="sse").headers[
        "x-stream-id"
    ]
    resumed = fetch(
        client,
        relay + f"/mem/streams/{stream_id}",
        fmt=fmt,
        method="GET",
        headers={"last-event-id": "4"},
    )
    assert resumed.content() == sim.expected_text(body)


def test_an_event_source_gets_sse_by_default(client: httpx.Client, relay: str) -> None:
    stream_id = fetch(
        client, relay + "/mem/chat/completions", chat_body(tokens=2), fmt="ndjson"
    ).headers["x-stream-id"]
    response = client.get(
        relay + f"/mem/streams/{stream_id}", headers={"accept": "text/event-stream"}
    )
    assert response.headers["content-type"] == "text/event-stream"
    assert b"event: done" in response.content


def test_a_delivered_stream_is_204_and_a_bad_position_400(client: httpx.Client, relay: str) -> None:
    out = fetch(client, relay + "/mem/chat/completions", chat_body(tokens=3), fmt="sse")
    stream_id, last = out.headers["x-stream-id"], len(out.events)
    url = relay + f"/mem/streams/{stream_id}"
    done = client.get(url, headers={"last-event-id": str(last)})
    assert done.status_code == 204 and done.content == b""
    assert client.get(url, headers={"last-event-id": str(last - 1)}).status_code == 200
    for bad in ("x", "-1", "1.5", "2a", str(last + 1), "9" * 30):
        response = client.get(url, headers={"last-event-id": bad})
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "invalid_position"
    assert client.get(url + "?last_event_id=abc").status_code == 400


def test_unknown_expired_and_foreign_ids_get_the_same_404(client: httpx.Client, relay: str) -> None:
    mine = fetch(
        client,
        relay + "/mem/chat/completions",
        chat_body(tokens=2),
        fmt="ndjson",
        headers={"x-user": "alice"},
    ).headers["x-stream-id"]
    assert client.get(relay + f"/mem/streams/{mine}", headers={"x-user": "alice"}).is_success
    expiring = fetch(
        client, relay + "/short/chat/completions", chat_body(tokens=1), fmt="ndjson"
    ).headers["x-stream-id"]
    time.sleep(0.7)  # past the short store's ttl
    answers = [
        client.get(relay + f"/mem/streams/{mine}", headers={"x-user": "mallory"}),
        client.delete(relay + f"/mem/streams/{mine}", headers={"x-user": "mallory"}),
        client.get(relay + f"/mem/streams/{mine}"),  # no user at all
        client.get(relay + "/mem/streams/AAAAAAAAAAAAAAAAAAAAAA"),
        client.get(relay + f"/short/streams/{expiring}"),
    ]
    first = answers[0]
    assert first.status_code == 404
    assert mine not in first.text and expiring not in first.text
    for answer in answers[1:]:
        assert answer.status_code == first.status_code
        assert answer.content == first.content
        assert {k: v for k, v in answer.headers.items() if k != "date"} == {
            k: v for k, v in first.headers.items() if k != "date"
        }


def test_an_ended_stream_is_forgotten_after_the_ttl(client: httpx.Client, relay: str) -> None:
    stream_id = fetch(
        client, relay + "/short/chat/completions", chat_body(tokens=1), fmt="ndjson"
    ).headers["x-stream-id"]
    assert client.get(relay + f"/short/streams/{stream_id}?format=ndjson").status_code == 200
    time.sleep(0.7)
    assert client.get(relay + f"/short/streams/{stream_id}").status_code == 404
    assert len(STORES["short"]) == 0  # released without any request naming it


# Stop ------------------------------------------------------------------------------------------


def test_a_delete_stops_the_generation_for_every_reader(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    conn = start(relay, "/mem", "ndjson", chat_body(tokens=400, delay=0.05))
    stream_id = stream_id_of(conn)
    read_events(conn, "ndjson", 3)
    follower = RawHTTP(relay)
    follower.request("GET", f"/mem/streams/{stream_id}?format=sse")
    assert follower.read_head()[0] == 200
    stopped = client.delete(relay + f"/mem/streams/{stream_id}")
    assert stopped.status_code == 204
    at = time.monotonic()
    assert sim.stats.wait(timeout=5, cancelled=1)
    assert time.monotonic() - at < 1.0  # the upstream closed within a second
    for reader, fmt in ((conn, "ndjson"), (follower, "sse")):
        raw = bytearray()
        while (chunk := reader.read_chunk()) is not None:
            raw += chunk
        reader.close()
        events = parse(fmt, bytes(raw), partial=fmt == "ndjson")
        assert events[-1]["type"] == "error" and events[-1]["code"] == "stopped"
    later = fetch(client, relay + f"/mem/streams/{stream_id}", fmt="ndjson", method="GET")
    assert later.error is not None and later.error["code"] == "stopped"
    assert sim.stats.finished == 0


# Disconnect and linger -----------------------------------------------------------------------


def test_a_client_that_leaves_does_not_stop_the_stream_and_can_come_back(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(tokens=30, delay=0.02)
    conn = start(relay, "/mem", "ndjson", body)
    stream_id = stream_id_of(conn)
    read_events(conn, "ndjson", 2)
    conn.close()
    time.sleep(0.4)  # within the 1 s linger
    back = fetch(client, relay + f"/mem/streams/{stream_id}", fmt="ndjson", method="GET")
    assert back.terminal == "done"
    assert back.content() == sim.expected_text(body)
    assert sim.stats.wait(timeout=5, finished=1) and sim.stats.cancelled == 0


def test_a_stream_nobody_comes_back_for_is_abandoned_after_the_linger(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    conn = start(relay, "/mem", "ndjson", chat_body(tokens=400, delay=0.05))
    stream_id = stream_id_of(conn)
    read_events(conn, "ndjson", 2)
    left = time.monotonic()
    conn.close()
    assert sim.stats.wait(timeout=5, cancelled=1)
    waited = time.monotonic() - left
    # linger=1.0, beats every 0.5 s: abandoned between 1 and 2 beats after the linger
    # (plus scheduling slack on a busy machine), never at once and never much later
    assert 0.9 < waited < 2.5, waited
    out = fetch(client, relay + f"/mem/streams/{stream_id}", fmt="ndjson", method="GET")
    assert out.error is not None and out.error["code"] == "abandoned"


def test_a_reader_keeps_the_linger_window_closed(
    sim: Simulator, client: httpx.Client, relay: str
) -> None:
    body = chat_body(tokens=60, delay=0.05)  # 3 s: three times the linger
    conn = start(relay, "/mem", "ndjson", body)
    stream_id = stream_id_of(conn)
    read_events(conn, "ndjson", 2)
    conn.close()
    time.sleep(0.3)
    follower = fetch(client, relay + f"/mem/streams/{stream_id}", fmt="ndjson", method="GET")
    assert follower.terminal == "done" and follower.content() == sim.expected_text(body)
    assert sim.stats.cancelled == 0


def test_linger_none_always_finishes(sim: Simulator, relay: str) -> None:
    conn = start(relay, "/forever", "ndjson", chat_body(tokens=40, delay=0.03))
    stream_id_of(conn)
    read_events(conn, "ndjson", 2)
    conn.close()
    assert sim.stats.wait(timeout=10, finished=1)
    assert sim.stats.cancelled == 0


def test_heartbeats_reach_a_resumed_reader(sim: Simulator, relay: str) -> None:
    conn = start(relay, "/beat", "sse", chat_body(tokens=2, fault="stall", after=1, stall=0.5))
    stream_id = stream_id_of(conn)
    conn.close()
    follower = RawHTTP(relay)
    follower.request("GET", f"/beat/streams/{stream_id}?format=sse")
    assert follower.read_head()[0] == 200
    raw = bytearray()
    while (chunk := follower.read_chunk()) is not None:
        raw += chunk
    assert raw.count(b": ping\n") >= 3
    assert parse_sse(bytes(raw)).events[-1].event == "done"


# Scale -----------------------------------------------------------------------------------------


def test_a_thousand_streams_leave_nothing_after_they_expire(sim: Simulator, relay: str) -> None:
    async def main() -> None:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            semaphore = anyio.Semaphore(50)

            async def one() -> None:
                async with semaphore:
                    response = await http.post(
                        relay + "/short/chat/completions?format=ndjson",
                        json=chat_body(tokens=2, delay=0),
                    )
                    assert response.headers["x-stream-id"]
                    assert (
                        response.text.endswith("}\n") and '"type":"done","seq":5' in response.text
                    )

            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(one)

    anyio.run(main)
    assert 0 < len(STORES["short"]) <= 1000
    time.sleep(0.7)
    assert len(STORES["short"]) == 0
