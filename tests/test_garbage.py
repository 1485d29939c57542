"""A finished stream leaves no reference cycle behind.

Cycles are freed only by the garbage collector, whose full passes stall the event
loop for every stream at once (they showed up as added-latency spikes in the
benchmark). Refcounting alone must free a stream: its pipeline state, its
transcoder and its side tasks. Checked with the collector switched off while real
streams run through a real server, then asking it what it would have freed.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from streamrelay import StreamRelay, StreamSettings, Upstream
from streamrelay.testing import ServerThread, Simulator
from wire import FORMATS, chat_body, fetch, mounts, relay_host

OURS = ("streamrelay.", "anyio.")


@pytest.fixture
def relay_url(upstream: str) -> Iterator[str]:
    relay = StreamRelay(
        Upstream(upstream, api_key="sk-garbage-test"), stream=StreamSettings(heartbeat=0.05)
    )
    with ServerThread(relay_host(mounts({"/ai": relay}), closers=[relay])) as server:
        yield server.url + "/ai/chat/completions"


def cyclic_garbage() -> Counter[str]:
    """Types of the objects only the collector could free, from our packages."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return Counter(
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if type(o).__module__.startswith(OURS)
        )
    finally:
        gc.garbage.clear()
        gc.set_debug(0)


def test_streams_leave_nothing_for_the_garbage_collector(
    relay_url: str, sim: Simulator, client: httpx.Client
) -> None:
    fetch(client, relay_url, chat_body(tokens=2), fmt="sse")  # warm up pools and imports
    gc.collect()
    gc.disable()
    try:
        for fmt in FORMATS:
            for body in (
                chat_body(tokens=20),
                chat_body(fault="stall", after=2, stall=0.2, tokens=4),  # heartbeats run
                chat_body(fault="mid_error", after=2),
            ):
                fetch(client, relay_url, body, fmt=fmt)
        sim.stats.wait_idle(timeout=10)
        leftovers = cyclic_garbage()
    finally:
        gc.enable()
    assert sim.stats.finished >= len(FORMATS)
    assert leftovers == Counter(), leftovers
