"""How every stream ends: :func:`run_stream`'s :class:`Outcome` and the observer, without sockets.

The engine takes the ASGI ``send``, the source opener and the disconnect wait as
parameters, so each ending is driven here with plain coroutines: nothing of the
engine is replaced. (The same endings through real servers and sockets are in
the integration tests.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from streamrelay import pipeline
from streamrelay.config import StreamSettings
from streamrelay.errors import UpstreamStatusError, UpstreamUnavailable
from streamrelay.events import Usage
from streamrelay.outcome import Ending, Outcome
from streamrelay.pipeline import Declined, StreamAborted, run_stream
from streamrelay.sources import Source

pytestmark = pytest.mark.anyio

QUIET = StreamSettings(heartbeat=None)


@pytest.fixture(params=["asyncio", "asyncio-portable", "trio"])
def anyio_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every engine test runs under asyncio with asyncio's own parts, under asyncio on
    the portable (anyio) path that trio and stored streams take, and under trio."""
    if request.param == "asyncio-portable":
        monkeypatch.setattr(pipeline, "_asyncio_task", lambda: None)
        return "asyncio"
    return str(request.param)


def chunk(text: str, *, model: str = "gpt-test") -> bytes:
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","model":"%s","choices":[{"index":0,'
        b'"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % (model.encode(), text.encode())
    )


FINISH = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-test","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}\n\n'
)
USAGE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-test","choices":[],'
    b'"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}\n\n'
)
DONE = b"data: [DONE]\n\n"
MID_ERROR = (
    b'data: {"error":{"message":"overloaded","type":"server_error","code":"overloaded"}}\n\n'
)


class Client:
    """An ASGI ``send`` that records every message."""

    def __init__(self, *, stall_after: int | None = None) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.stall_after = stall_after

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)
        if self.stall_after is not None and len(self.messages) > self.stall_after:
            await anyio.sleep_forever()

    @property
    def start(self) -> MutableMapping[str, Any]:
        assert self.messages[0]["type"] == "http.response.start"
        return self.messages[0]

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


class Upstream:
    """A source whose items the test scripts, recording how it was closed.

    A float is that many seconds of upstream silence; a callable is silence until it
    returns true (so a test waits for what it checks, not for a time a paused process
    may overrun).
    """

    def __init__(
        self,
        *items: bytes | float | Callable[[], bool],
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self.items = items
        self.closed: list[bool] = []
        self.headers = headers

    async def _items(self) -> AsyncIterator[bytes]:
        for item in self.items:
            if isinstance(item, float):
                await anyio.sleep(item)  # upstream silence
            elif callable(item):
                while not item():  # noqa: ASYNC110 - a plain predicate, polled
                    await anyio.sleep(0.005)
            else:
                yield item

    async def open(self) -> Source:
        async def close(complete: bool) -> None:
            self.closed.append(complete)

        return Source(self._items(), "sse", close, headers=self.headers)


def pinged(client: Client, times: int) -> Callable[[], bool]:
    """Whether ``client`` has been sent ``times`` ndjson heartbeats yet."""
    return lambda: client.body.count(b'{"type":"ping"}\n') >= times


async def never() -> None:
    await anyio.sleep_forever()


async def relay(
    opener: Any,
    *,
    fmt: str = "ndjson",
    settings: StreamSettings = QUIET,
    client: Client | None = None,
    wait_disconnect: Any = never,
) -> tuple[Outcome, Client, list[Outcome]]:
    seen: list[Outcome] = []
    client = client or Client()
    with anyio.fail_after(10):
        outcome = await run_stream(
            client.send,
            open_source=opener,
            wait_disconnect=wait_disconnect,
            format=fmt,
            settings=settings,
            observer=seen.append,
        )
    assert outcome is not None
    return outcome, client, seen


async def test_a_complete_stream_is_done_with_model_usage_and_counts() -> None:
    upstream = Upstream(chunk("Hel"), chunk("lo"), FINISH, USAGE, DONE)
    outcome, client, seen = await relay(upstream.open)
    assert seen == [outcome]
    assert outcome.ending is Ending.DONE and outcome.ok and outcome.code is None
    assert outcome.status == 200 and outcome.format == "ndjson"
    assert outcome.model == "gpt-test"
    assert outcome.usage == Usage(7, 2, 9)
    assert outcome.bytes_out == len(client.body) > 0
    # start, two deltas, finish, usage, done
    assert outcome.events_out == 6 == client.body.count(b"\n")
    assert outcome.ttfb is not None and 0 <= outcome.ttfb <= outcome.duration
    assert upstream.closed == [True]  # a complete stream may return its connection


async def test_an_upstream_error_mid_stream_is_an_error_with_its_code() -> None:
    upstream = Upstream(chunk("partial"), MID_ERROR)
    outcome, client, _ = await relay(upstream.open)
    assert outcome.ending is Ending.ERROR and outcome.code == "overloaded"
    assert not outcome.ok and outcome.status == 200
    assert b'"type":"error"' in client.body
    assert upstream.closed == [False]


async def test_a_truncated_stream_is_an_error() -> None:
    outcome, _, _ = await relay(Upstream(chunk("cut")).open)
    assert (outcome.ending, outcome.code) == (Ending.ERROR, "upstream_truncated")


async def test_an_upstream_status_is_passed_through_and_reported() -> None:
    async def opener() -> Source:
        raise UpstreamStatusError(429, [("retry-after", "3")], b'{"error":{}}')

    outcome, client, _ = await relay(opener)
    assert (outcome.ending, outcome.code, outcome.status) == (
        Ending.UPSTREAM_STATUS,
        "upstream_status_429",
        429,
    )
    assert client.start["status"] == 429 and outcome.ttfb is None


async def test_an_unreachable_upstream_is_reported_with_its_status() -> None:
    async def opener() -> Source:
        raise UpstreamUnavailable("no route", code="upstream_unreachable")

    outcome, client, _ = await relay(opener)
    assert (outcome.ending, outcome.code, outcome.status) == (
        Ending.UPSTREAM_UNAVAILABLE,
        "upstream_unreachable",
        502,
    )
    assert client.start["status"] == 502


async def test_the_first_byte_timeout_is_a_504() -> None:
    async def opener() -> Source:
        await anyio.sleep_forever()
        raise AssertionError

    outcome, client, _ = await relay(opener, settings=StreamSettings(first_byte_timeout=0.05))
    assert (outcome.ending, outcome.code, outcome.status) == (
        Ending.UPSTREAM_UNAVAILABLE,
        "upstream_timeout",
        504,
    )
    assert client.start["status"] == 504


async def test_upstream_silence_past_the_idle_timeout_ends_with_an_error() -> None:
    upstream = Upstream(chunk("a"), 5.0, DONE)
    settings = StreamSettings(heartbeat=None, idle_timeout=0.1)
    outcome, client, _ = await relay(upstream.open, settings=settings)
    assert (outcome.ending, outcome.code) == (Ending.ERROR, "upstream_timeout")
    assert b"upstream_timeout" in client.body
    assert upstream.closed == [False]


async def test_heartbeats_fill_upstream_silence() -> None:
    client = Client()
    upstream = Upstream(chunk("a"), pinged(client, 2), FINISH, DONE)
    settings = StreamSettings(heartbeat=0.1)
    outcome, client, _ = await relay(upstream.open, settings=settings, client=client)
    assert outcome.ending is Ending.DONE
    assert client.body.count(b'{"type":"ping"}\n') >= 2


async def test_a_client_that_leaves_is_reported_and_its_upstream_closed_unfinished() -> None:
    upstream = Upstream(chunk("a"), 5.0, DONE)
    left = anyio.Event()

    async def wait_disconnect() -> None:
        await left.wait()

    async def leave_soon() -> None:
        await anyio.sleep(0.1)
        left.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(leave_soon)
        outcome, _, seen = await relay(upstream.open, wait_disconnect=wait_disconnect)
    assert seen == [outcome]
    assert (outcome.ending, outcome.code) == (Ending.CLIENT_DISCONNECTED, "client_disconnected")
    assert upstream.closed == [False]  # dropped: that is what stops the paid generation


async def test_a_client_that_stops_reading_is_a_send_timeout() -> None:
    upstream = Upstream(chunk("a"), chunk("b"), chunk("c"), FINISH, DONE)
    settings = StreamSettings(heartbeat=None, send_timeout=0.1)
    seen: list[Outcome] = []
    with anyio.fail_after(10), pytest.raises(StreamAborted, match="send timeout"):
        await run_stream(
            Client(stall_after=2).send,
            open_source=upstream.open,
            wait_disconnect=never,
            format="ndjson",
            settings=settings,
            observer=seen.append,
        )
    assert [(o.ending, o.code) for o in seen] == [(Ending.SEND_TIMEOUT, "send_timeout")]
    assert upstream.closed == [False]


async def test_text_cuts_the_response_on_error_and_still_reports_it() -> None:
    upstream = Upstream(chunk("partial"), MID_ERROR)
    seen: list[Outcome] = []
    client = Client()
    with anyio.fail_after(10), pytest.raises(StreamAborted, match="overloaded"):
        await run_stream(
            client.send,
            open_source=upstream.open,
            wait_disconnect=never,
            format="text",
            settings=QUIET,
            observer=seen.append,
        )
    assert [(o.ending, o.code) for o in seen] == [(Ending.ERROR, "overloaded")]
    assert client.body == b"partial"
    assert all(m.get("more_body", True) for m in client.messages[1:])  # never a clean end


async def test_a_crashing_source_is_reported_and_re_raised() -> None:
    async def items() -> AsyncIterator[bytes]:
        yield chunk("a")

    async def opener() -> Source:
        raise KeyError("bug in the handler")

    seen: list[Outcome] = []
    with pytest.raises(KeyError, match="bug in the handler"):
        await run_stream(
            Client().send,
            open_source=opener,
            wait_disconnect=never,
            format="sse",
            settings=QUIET,
            observer=seen.append,
        )
    assert [(o.ending, o.code, o.status) for o in seen] == [(Ending.CRASHED, "KeyError", None)]


async def test_a_declined_source_reports_nothing() -> None:
    async def opener() -> Source:
        raise Declined

    seen: list[Outcome] = []
    result = await run_stream(
        Client().send,
        open_source=opener,
        wait_disconnect=never,
        format="sse",
        settings=QUIET,
        observer=seen.append,
    )
    assert result is None and seen == []


async def test_an_async_observer_is_awaited() -> None:
    seen: list[Outcome] = []

    async def observer(outcome: Outcome) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(outcome)

    upstream = Upstream(chunk("a"), FINISH, DONE)
    outcome = await run_stream(
        Client().send,
        open_source=upstream.open,
        wait_disconnect=never,
        format="sse",
        settings=QUIET,
        observer=observer,
    )
    assert seen == [outcome]


async def test_a_failing_observer_is_logged_and_the_stream_unharmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def observer(outcome: Outcome) -> None:
        raise RuntimeError("metrics backend down")

    client = Client()
    upstream = Upstream(chunk("a"), FINISH, DONE)
    outcome = await run_stream(
        client.send,
        open_source=upstream.open,
        wait_disconnect=never,
        format="sse",
        settings=QUIET,
        observer=observer,
    )
    assert outcome is not None and outcome.ending is Ending.DONE
    assert client.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert any(
        "on_stream_end" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records
    )


async def test_the_source_hands_over_its_headers() -> None:
    """The middleware's hand-off: the host's headers come with the source, explicitly."""
    upstream = Upstream(chunk("a"), FINISH, DONE, headers=((b"x-request-id", b"r-1"),))
    outcome, client, _ = await relay(upstream.open)
    headers = client.start["headers"]
    assert (b"x-request-id", b"r-1") in headers
    assert (b"x-accel-buffering", b"no") in headers
    assert outcome.ending is Ending.DONE


async def test_each_stream_logs_one_line_with_its_outcome(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamrelay")
    await relay(Upstream(chunk("a", model="m-7"), FINISH, USAGE, DONE).open)
    lines = [r for r in caplog.records if r.getMessage().startswith("stream ")]
    assert len(lines) == 1
    text = lines[0].getMessage()
    assert text.startswith("stream done ")
    assert "model=m-7" in text and "input_tokens=7" in text and "output_tokens=2" in text
    assert lines[0].levelno == logging.INFO
    # the same fields are attributes of the record, for a JSON formatter
    record = lines[0].__dict__
    assert (record["outcome"], record["model"], record["input_tokens"]) == ("done", "m-7", 7)
    assert record["upstream_cancelled"] is False and record["ttft_ms"] is not None


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (UpstreamStatusError(500, [], b"{}"), "upstream_status_500"),
        (UpstreamStatusError(401, [], b"{}"), "upstream_status_401"),
        (UpstreamUnavailable("refused", code="upstream_unreachable"), "upstream_unreachable"),
    ],
)
async def test_a_failed_stream_logs_at_warning(
    caplog: pytest.LogCaptureFixture, failure: Exception, code: str
) -> None:
    async def opener() -> Source:
        raise failure

    await relay(opener)
    lines = [r for r in caplog.records if r.getMessage().startswith("stream ")]
    assert [r.levelno for r in lines] == [logging.WARNING]
    assert code in lines[0].getMessage()
