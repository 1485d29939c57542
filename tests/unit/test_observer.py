"""The observer protocol, driven by the real engine in memory (no sockets): every
started watch is finished exactly once, whatever the ending; first tokens, heartbeats
and overhead samples arrive; a failing observer is logged and costs the client
nothing; and the outcome says whether the upstream was cancelled."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from test_engine import DONE, FINISH, QUIET, USAGE, Client, Upstream, chunk, never, pinged

from streamrelay.config import StreamSettings
from streamrelay.errors import ConfigurationError, UpstreamStatusError, UpstreamUnavailable
from streamrelay.observer import (
    OVERHEAD_SAMPLE_EVERY,
    Observer,
    StreamStart,
    StreamWatch,
    observers_of,
)
from streamrelay.outcome import Ending, Outcome
from streamrelay.pipeline import Declined, run_stream
from streamrelay.sources import Source

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorder(Observer):
    """Records every call, in order, for every stream."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def stream_started(self, start: StreamStart) -> StreamWatch | None:
        self.calls.append(("started", start))
        start.upstream_headers.append(("traceparent", "00-abc-def-01"))
        return _Watch(self.calls)


class _Watch(StreamWatch):
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def first_token(self, seconds: float) -> None:
        self.calls.append(("first_token", seconds))

    def heartbeat(self, gap: float) -> None:
        self.calls.append(("heartbeat", gap))

    def overhead(self, seconds: float) -> None:
        self.calls.append(("overhead", seconds))

    def finished(self, outcome: Outcome) -> None:
        self.calls.append(("finished", outcome))


async def observed(
    opener: Callable[[], Any],
    *,
    settings: StreamSettings = QUIET,
    client: Client | None = None,
    wait_disconnect: Any = never,
    observers: list[Observer] | None = None,
) -> tuple[Outcome | None, Recorder]:
    recorder = Recorder()
    with anyio.fail_after(10):
        outcome = await run_stream(
            (client or Client()).send,
            open_source=opener,
            wait_disconnect=wait_disconnect,
            format="ndjson",
            settings=settings,
            start=StreamStart("chat.completions", "ndjson", request_id="r-1", principal="ann"),
            observers=observers_of([recorder, *(observers or [])]),
        )
    return outcome, recorder


class Leaving(Client):
    """A client that leaves once it has been sent ``after`` messages."""

    def __init__(self, *, after: int, stall_after: int | None = None) -> None:
        super().__init__(stall_after=stall_after)
        self.after = after
        self.gone = anyio.Event()

    async def send(self, message: Any) -> None:
        if len(self.messages) + 1 >= self.after:
            self.gone.set()
        await super().send(message)

    async def left(self) -> None:
        await self.gone.wait()


def names(recorder: Recorder) -> list[str]:
    return [name for name, _ in recorder.calls if name != "overhead"]


def finished(recorder: Recorder) -> Outcome:
    (outcome,) = [value for name, value in recorder.calls if name == "finished"]
    assert isinstance(outcome, Outcome)
    return outcome


async def test_a_done_stream_starts_before_the_call_and_finishes_once() -> None:
    seen_headers: list[list[tuple[str, str]]] = []
    upstream = Upstream(chunk("Hel"), chunk("lo"), FINISH, USAGE, DONE)
    recorder: Recorder

    async def opener() -> Source:
        seen_headers.append(list(recorder.calls[0][1].upstream_headers))
        return await upstream.open()

    recorder = Recorder()
    with anyio.fail_after(10):
        outcome = await run_stream(
            Client().send,
            open_source=opener,
            wait_disconnect=never,
            format="ndjson",
            settings=QUIET,
            start=StreamStart("chat.completions", "ndjson", request_id="r-1", principal="ann"),
            observers=observers_of(recorder),
        )
    # the observer's upstream headers were there when the upstream was called
    assert seen_headers == [[("traceparent", "00-abc-def-01")]]
    assert names(recorder) == ["started", "first_token", "finished"]
    assert finished(recorder) == outcome
    assert outcome is not None and outcome.ok and not outcome.upstream_cancelled
    assert outcome.ttft is not None and outcome.ttft <= outcome.duration
    assert outcome.request_id == "r-1" and outcome.principal == "ann"
    assert outcome.route == "chat.completions" and outcome.upstream_status == 200


async def test_an_error_status_finishes_with_no_first_token() -> None:
    async def opener() -> Source:
        raise UpstreamStatusError(429, [("x-request-id", "up-1")], b"{}")

    outcome, recorder = await observed(opener)
    assert names(recorder) == ["started", "finished"]
    assert outcome is not None and outcome.ending is Ending.UPSTREAM_STATUS
    assert outcome.upstream_status == 429 and outcome.ttft is None
    assert not outcome.upstream_cancelled


async def test_an_unreachable_upstream_has_no_upstream_status() -> None:
    async def opener() -> Source:
        raise UpstreamUnavailable("refused", code="upstream_unreachable")

    outcome, recorder = await observed(opener)
    assert names(recorder) == ["started", "finished"]
    assert outcome is not None and outcome.ending is Ending.UPSTREAM_UNAVAILABLE
    assert outcome.upstream_status is None and outcome.status == 502


async def test_a_client_that_leaves_cancels_the_upstream() -> None:
    upstream = Upstream(chunk("a"), 10.0, chunk("b"), FINISH, DONE)
    client = Leaving(after=3)  # the head, the preamble and the first token

    outcome, recorder = await observed(upstream.open, client=client, wait_disconnect=client.left)
    assert names(recorder) == ["started", "first_token", "finished"]
    assert outcome is not None and outcome.ending is Ending.CLIENT_DISCONNECTED
    assert outcome.upstream_cancelled and upstream.closed == [False]


async def test_a_client_that_leaves_after_the_upstream_ended_cancels_nothing() -> None:
    upstream = Upstream(chunk("a") + FINISH + DONE)  # all in one read
    client = Leaving(after=3, stall_after=2)  # leaves during the send of that read

    outcome, _ = await observed(upstream.open, client=client, wait_disconnect=client.left)
    assert outcome is not None and outcome.ending is Ending.CLIENT_DISCONNECTED
    assert not outcome.upstream_cancelled


async def test_heartbeats_reach_the_watch_with_their_gap() -> None:
    client = Client()
    upstream = Upstream(chunk("a"), pinged(client, 2), FINISH, DONE)
    outcome, recorder = await observed(
        upstream.open, client=client, settings=StreamSettings(heartbeat=0.1)
    )
    gaps = [value for name, value in recorder.calls if name == "heartbeat"]
    assert outcome is not None and outcome.heartbeats == len(gaps) >= 2
    assert all(gap >= 0.09 for gap in gaps)


async def test_overhead_is_sampled_from_the_first_read() -> None:
    reads = 2 * OVERHEAD_SAMPLE_EVERY + 1
    upstream = Upstream(*(chunk(str(i)) for i in range(reads)), FINISH, DONE)
    _, recorder = await observed(upstream.open)
    samples = [value for name, value in recorder.calls if name == "overhead"]
    assert len(samples) == 3  # reads 1, 17 and 33 (FINISH and DONE make 35 reads)
    assert all(0 < sample < 1 for sample in samples)  # decode and encode take time


async def test_a_declined_stream_still_finishes_its_watch() -> None:
    async def opener() -> Source:
        raise Declined(404)

    outcome, recorder = await observed(opener)
    assert outcome is None
    assert names(recorder) == ["started", "finished"]
    assert finished(recorder).ending is Ending.UPSTREAM_STATUS
    assert finished(recorder).status == 404


async def test_a_crash_still_finishes_the_watch() -> None:
    async def opener() -> Source:
        raise RuntimeError("a bug in the host's generator")

    with pytest.raises(RuntimeError):
        await observed(opener)


async def test_a_failing_observer_is_logged_once_per_hook_and_harms_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(StreamWatch):
        def first_token(self, seconds: float) -> None:
            raise ValueError("first_token")

        def overhead(self, seconds: float) -> None:
            raise ValueError("overhead")

        def finished(self, outcome: Outcome) -> None:
            raise ValueError("finished")

    class BrokenStart(Observer):
        def stream_started(self, start: StreamStart) -> StreamWatch | None:
            raise ValueError("start")

    class Watches(Observer):
        def stream_started(self, start: StreamStart) -> StreamWatch | None:
            return Broken()

    reads = 3 * OVERHEAD_SAMPLE_EVERY
    upstream = Upstream(*(chunk(str(i)) for i in range(reads)), FINISH, DONE)
    caplog.set_level(logging.ERROR, logger="streamrelay")
    outcome, recorder = await observed(upstream.open, observers=[Watches(), BrokenStart()])
    assert outcome is not None and outcome.ok
    assert names(recorder) == ["started", "first_token", "finished"]  # the others still heard
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 4, failures  # start, first_token, overhead (3 samples), finished
    assert sum("overhead" in message for message in failures) == 1


def test_metrics_must_be_observers() -> None:
    assert observers_of([]) is None
    with pytest.raises(ConfigurationError, match="PrometheusMetrics"):
        observers_of([Observer(), object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        observers_of(print)  # type: ignore[arg-type]


def test_the_operation_follows_the_route() -> None:
    assert StreamStart("completions", "sse").operation == "text_completion"
    for route in ("chat.completions", "responses", "chat", "ag-ui", "middleware"):
        assert StreamStart(route, "sse").operation == "chat"
