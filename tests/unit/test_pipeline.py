"""``run_stream``'s sends against a client that stops reading at awkward moments.

The engine takes the ASGI ``send`` as a parameter, so a client that accepts a
message only when the test says so is just a ``send`` that waits: nothing of the
engine is replaced. (Real servers and sockets are in ``test_servers.py`` and
``test_relay_streaming.py``; these are the orderings a socket cannot pin down.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import anyio
import pytest

from streamrelay.config import StreamSettings
from streamrelay.pipeline import StreamAborted, run_stream
from streamrelay.sources import Source

pytestmark = pytest.mark.anyio

DONE = b"data: [DONE]\n\n"
PING = b'{"type":"ping"}\n'  # ndjson's heartbeat


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every engine test runs under asyncio and under trio."""
    return str(request.param)


def token(text: str) -> bytes:
    return (
        b'data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
        b'"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % text.encode()
    )


class Client:
    """An ASGI ``send`` that records messages and counts sends in flight at once."""

    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.stalled = False  # every later send waits forever: the client stopped reading
        self.hold_final = False  # the final message waits forever
        self.hold_heartbeat: anyio.Event | None = None  # a heartbeat waits for this
        self.heartbeat_started = anyio.Event()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.messages.append(message)
            body = message.get("body", b"")
            if message["type"] == "http.response.body" and body == PING:
                self.heartbeat_started.set()
                if self.hold_heartbeat is not None:
                    await self.hold_heartbeat.wait()
                    return
            final = message["type"] == "http.response.body" and not message.get("more_body")
            if self.stalled or (self.hold_final and final):
                await anyio.sleep_forever()
        finally:
            self.in_flight -= 1


async def never_disconnects() -> None:
    await anyio.sleep_forever()


async def test_a_final_send_the_client_never_accepts_ends_at_the_send_timeout() -> None:
    client = Client()
    client.hold_final = True

    async def items() -> AsyncIterator[bytes]:
        yield token("hi") + DONE

    async def open_source() -> Source:
        return Source(items(), "sse")

    with anyio.fail_after(10):  # without the send timeout on the final sends: forever
        with pytest.raises(StreamAborted, match="send timeout"):
            await run_stream(
                client.send,
                open_source=open_source,
                wait_disconnect=never_disconnects,
                format="ndjson",
                settings=StreamSettings(heartbeat=None, send_timeout=0.3),
            )
    assert b'"hi"' in b"".join(m.get("body", b"") for m in client.messages)


async def test_a_token_that_waits_for_a_heartbeat_is_still_a_send_and_times_out() -> None:
    """A heartbeat is in flight when the next token comes; the token's send must then
    count as a send (the send timeout applies), and no second heartbeat may start
    beside it: ASGI sends are one at a time."""
    client = Client()
    client.hold_heartbeat = anyio.Event()
    more = anyio.Event()

    async def items() -> AsyncIterator[bytes]:
        yield token("one")
        await more.wait()
        yield token("two")
        yield DONE

    async def open_source() -> Source:
        return Source(items(), "sse")

    async def drive() -> None:
        await client.heartbeat_started.wait()  # the upstream went quiet; a heartbeat is out
        client.stalled = True  # and the client stops reading
        more.set()  # the next token arrives and waits for the heartbeat's send
        await anyio.sleep(0.2)
        client.hold_heartbeat.set()  # type: ignore[union-attr]

    aborted: list[StreamAborted] = []

    async def relay() -> None:
        try:
            await run_stream(
                client.send,
                open_source=open_source,
                wait_disconnect=never_disconnects,
                format="ndjson",
                settings=StreamSettings(heartbeat=0.05, send_timeout=0.5, idle_timeout=None),
            )
        except StreamAborted as exc:
            aborted.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await relay()
    assert len(aborted) == 1 and "send timeout" in str(aborted[0])
    assert client.most_in_flight == 1
