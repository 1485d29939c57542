"""The engine under asyncio, with asyncio's own parts (``_Stream.begin_on_asyncio``).

A stream without a store needs no task group there: one side task awaits the
client's disconnect (the server's own ``receive``, when it is given one), an alarm
stands for the next deadline, and the cuts and the
client leaving are ``task.cancel()`` of the pump's own task, each swallowed by
the region it was meant for. These tests pin what that must keep true: no other
task, nothing left running, the task's cancel count back to zero, and a cancel
from the server never swallowed. (Every ending is in ``test_engine.py``, which
runs on this path, on the portable one and under trio.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_engine import DONE, FINISH, Client, chunk

from streamrelay._http import DisconnectWaiter
from streamrelay.config import StreamSettings
from streamrelay.outcome import Ending, Outcome
from streamrelay.pipeline import run_stream
from streamrelay.sources import Source

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def source(items: AsyncIterator[bytes], closed: list[bool] | None = None) -> Any:
    async def close(complete: bool) -> None:
        await items.aclose()  # type: ignore[attr-defined]  # as a real source closes its reads
        if closed is not None:
            closed.append(complete)

    async def opener() -> Source:
        return Source(items, "sse", close)

    return opener


async def stalls() -> AsyncIterator[bytes]:
    """One token, then an upstream that says nothing more for 5 s."""
    yield chunk("a")
    await asyncio.sleep(5)
    yield DONE


async def never() -> None:
    await asyncio.Event().wait()


async def stream(
    items: AsyncIterator[bytes],
    settings: StreamSettings,
    *,
    wait_disconnect: Any = never,
    client: Client | None = None,
) -> Outcome:
    seen: list[Outcome] = []
    outcome = await asyncio.wait_for(
        run_stream(
            (client or Client()).send,
            open_source=source(items),
            wait_disconnect=wait_disconnect,
            format="ndjson",
            settings=settings,
            observer=seen.append,
        ),
        10,
    )
    assert outcome is not None and seen == [outcome]
    return outcome


def others(before: set[asyncio.Task[Any]]) -> set[str]:
    """The tasks that are not the test's own, by their coroutine's name."""
    coros = (t.get_coro() for t in asyncio.all_tasks() - before if not t.done())
    return {getattr(c, "__qualname__", type(c).__name__) for c in coros}


async def test_a_stream_runs_with_one_side_task_and_leaves_none() -> None:
    during: list[set[str]] = []
    before = asyncio.all_tasks()

    async def items() -> AsyncIterator[bytes]:
        yield chunk("a")
        during.append(others(before))
        yield chunk("b")
        yield FINISH
        yield DONE

    outcome = await stream(items(), StreamSettings(heartbeat=None))
    assert outcome.ending is Ending.DONE
    # wait_for runs run_stream in a task of its own: that one, and the disconnect wait
    assert during == [{"run_stream", "never"}]
    await asyncio.sleep(0)  # the cancelled disconnect wait finishes
    assert others(before) == set()


async def test_the_cancel_count_is_zero_after_a_cut_and_after_the_client_leaving() -> None:
    async def check(wait_disconnect: Any, settings: StreamSettings, ending: Ending) -> None:
        counts: list[int] = []

        async def wrapped() -> Outcome:
            outcome = await stream(stalls(), settings, wait_disconnect=wait_disconnect)
            task = asyncio.current_task()
            assert task is not None
            counts.append(task.cancelling())
            return outcome

        outcome = await asyncio.create_task(wrapped())
        assert outcome.ending is ending
        assert counts == [0]

    async def leaves() -> None:
        await asyncio.sleep(0.05)

    await check(never, StreamSettings(heartbeat=None, idle_timeout=0.05), Ending.ERROR)
    await check(leaves, StreamSettings(heartbeat=None), Ending.CLIENT_DISCONNECTED)


@pytest.mark.parametrize("server_after", [0.03, 0.05, 0.07])
async def test_a_cancel_from_the_server_is_never_swallowed_even_beside_a_cut(
    server_after: float,
) -> None:
    """The idle timeout (0.05 s) and the server's cancel fall due close together, in
    either order, while the stream is still sending (its client takes 0.1 s per
    message after the first three): the stream task must end cancelled."""

    class SlowClient(Client):
        async def send(self, message: Any) -> None:
            self.messages.append(message)
            if len(self.messages) > 3:
                await asyncio.sleep(0.1)

    task = asyncio.create_task(
        stream(stalls(), StreamSettings(heartbeat=None, idle_timeout=0.05), client=SlowClient())
    )
    await asyncio.sleep(0.01)
    requested: list[bool] = []
    asyncio.get_running_loop().call_later(
        server_after - 0.01, lambda: requested.append(task.cancel())
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    assert requested == [True]


@pytest.mark.parametrize("how", ["a wait of its own", "the server's receive"])
async def test_a_failing_disconnect_wait_crashes_the_stream_with_its_exception(how: str) -> None:
    """Whether the engine was given a disconnect wait of its own or the server's
    ``receive`` (which it awaits directly)."""
    closed: list[bool] = []

    async def broken_wait() -> None:
        await asyncio.sleep(0.02)
        raise RuntimeError("the server's receive broke")

    receive = Receive(RuntimeError("the server's receive broke"))
    wait = broken_wait if how == "a wait of its own" else DisconnectWaiter(receive.receive)
    seen: list[Outcome] = []
    with pytest.raises(RuntimeError, match="receive broke"):
        await asyncio.wait_for(
            run_stream(
                Client().send,
                open_source=source(stalls(), closed),
                wait_disconnect=wait,
                format="ndjson",
                settings=StreamSettings(heartbeat=None),
                observer=seen.append,
            ),
            10,
        )
    assert [(o.ending, o.code) for o in seen] == [(Ending.CRASHED, "RuntimeError")]
    assert closed == [False]  # the paid generation is stopped all the same


async def test_heartbeats_run_in_a_short_task_that_ends_with_each_beat() -> None:
    client = Client()
    beats: list[set[str]] = []
    before = asyncio.all_tasks()

    async def items() -> AsyncIterator[bytes]:
        yield chunk("a")
        for _ in range(6):
            await asyncio.sleep(0.03)
            beats.append(others(before))
        yield FINISH
        yield DONE

    outcome = await stream(items(), StreamSettings(heartbeat=0.05), client=client)
    assert outcome.ending is Ending.DONE and outcome.heartbeats >= 2
    assert client.body.count(b'{"type":"ping"}\n') == outcome.heartbeats
    assert all(names <= {"run_stream", "never", "_Stream._beat"} for names in beats)


class Receive:
    """A server's ``receive`` after the body was read: ``messages`` come one per call
    after ``delay`` seconds each, then it waits for ever; an exception is raised."""

    def __init__(self, *messages: dict[str, Any] | Exception, delay: float = 0.02) -> None:
        self.messages = list(messages)
        self.delay = delay
        self.calls = 0

    async def receive(self) -> dict[str, Any]:
        self.calls += 1
        if not self.messages:
            await never()
        await asyncio.sleep(self.delay)
        message = self.messages.pop(0)
        if isinstance(message, Exception):
            raise message
        return message


async def test_the_servers_receive_is_the_side_task_itself_with_no_wrapper() -> None:
    """With the server's ``receive`` (what the mount, the middleware and ``relay_response``
    pass), the side task awaits it directly: no coroutine of streamrelay's is held."""
    during: list[set[str]] = []
    before = asyncio.all_tasks()

    async def items() -> AsyncIterator[bytes]:
        yield chunk("a")
        during.append(others(before))
        yield FINISH
        yield DONE

    receive = Receive()
    outcome = await stream(
        items(), StreamSettings(heartbeat=None), wait_disconnect=DisconnectWaiter(receive.receive)
    )
    assert outcome.ending is Ending.DONE
    assert during == [{"run_stream", "Receive.receive"}]
    await asyncio.sleep(0)
    assert others(before) == set()


async def test_another_message_from_receive_is_not_a_disconnect_and_is_waited_past() -> None:
    receive = Receive(
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    )
    outcome = await stream(
        stalls(), StreamSettings(heartbeat=None), wait_disconnect=DisconnectWaiter(receive.receive)
    )
    assert outcome.ending is Ending.CLIENT_DISCONNECTED
    assert receive.calls == 2 and not receive.messages
