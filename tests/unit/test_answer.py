"""Whole (non-streaming) answers: :func:`relay_answer`, without sockets, under asyncio and trio.

The call, the ASGI ``send`` and the disconnect wait are plain coroutines, so each
way a whole answer can go is driven here with nothing of the module replaced.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest

from streamrelay.answer import Answer, relay_answer
from streamrelay.config import StreamSettings
from streamrelay.errors import RequestRejected, UpstreamUnavailable
from streamrelay.outcome import Ending, Outcome

pytestmark = pytest.mark.anyio

COMPLETION = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "total_tokens": 4,
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
).encode()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Client:
    def __init__(self, *, gone_after: float | None = None, send_fails: bool = False) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.gone_after = gone_after
        self.send_fails = send_fails

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if self.send_fails:
            raise OSError("connection reset")
        self.messages.append(message)

    async def wait_disconnect(self) -> None:
        if self.gone_after is None:
            await anyio.sleep_forever()
        await anyio.sleep(self.gone_after)

    @property
    def status(self) -> int:
        assert self.messages[0]["type"] == "http.response.start"
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


class Call:
    """The upstream call: answers after ``delay`` (or raises ``failure``); records cancellation."""

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        delay: float = 0.0,
        failure: Exception | None = None,
    ) -> None:
        self.answer = answer
        self.delay = delay
        self.failure = failure
        self.cancelled = False

    async def __call__(self) -> Answer:
        try:
            await anyio.sleep(self.delay)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        if self.failure is not None:
            raise self.failure
        assert self.answer is not None
        return self.answer


DEFAULTS = StreamSettings()


async def run(
    call: Call, client: Client, settings: StreamSettings = DEFAULTS
) -> tuple[Outcome, list[Outcome]]:
    seen: list[Outcome] = []
    outcome = await relay_answer(
        client.send,
        call=call,
        wait_disconnect=client.wait_disconnect,
        settings=settings,
        headers=((b"vary", b"accept"),),
        observer=seen.append,
    )
    return outcome, seen


async def test_an_answer_is_sent_whole_with_its_status_and_length() -> None:
    client = Client()
    call = Call((200, [("x-request-id", "req_1")], COMPLETION))
    outcome, seen = await run(call, client)
    assert client.status == 200
    assert client.body == COMPLETION
    headers = client.headers
    assert headers[b"content-length"] == str(len(COMPLETION)).encode()
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"req_1"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"vary"] == b"accept"
    assert seen == [outcome]
    assert outcome.ending is Ending.DONE and not outcome.streaming and outcome.format == "json"
    assert outcome.model == "gpt-test"
    assert outcome.usage is not None and outcome.usage.total_tokens == 4
    assert outcome.usage.completion_tokens_details == {"reasoning_tokens": 0}
    assert outcome.bytes_out == len(COMPLETION)


async def test_an_upstream_error_status_passes_through() -> None:
    client = Client()
    error = b'{"error":{"message":"slow down","code":"rate_limit_exceeded"}}'
    outcome, _ = await run(Call((429, [("retry-after", "2")], error)), client)
    assert client.status == 429 and client.body == error
    assert client.headers[b"retry-after"] == b"2"
    assert outcome.ending is Ending.UPSTREAM_STATUS and outcome.code == "upstream_status_429"
    assert outcome.usage is None


async def test_an_unreachable_upstream_is_its_502() -> None:
    client = Client()
    failure = UpstreamUnavailable("could not connect", code="upstream_unreachable")
    outcome, _ = await run(Call(failure=failure), client)
    assert client.status == 502
    assert json.loads(client.body)["error"]["code"] == "upstream_unreachable"
    assert outcome.ending is Ending.UPSTREAM_UNAVAILABLE and outcome.code == "upstream_unreachable"


async def test_a_refused_header_is_the_clients_400() -> None:
    client = Client()
    failure = RequestRejected(400, "bad header", code="invalid_header")
    outcome, _ = await run(Call(failure=failure), client)
    assert client.status == 400
    assert json.loads(client.body)["error"]["code"] == "invalid_header"
    assert outcome.ending is Ending.ERROR


async def test_a_slow_answer_commits_to_200_and_sends_whitespace() -> None:
    client = Client()
    call = Call((200, [], COMPLETION), delay=0.2)
    outcome, _ = await run(call, client, StreamSettings(heartbeat=0.03))
    assert client.status == 200
    assert b"content-length" not in client.headers  # the length was unknown at the head
    assert client.body.startswith(b"\n\n") and client.body.endswith(COMPLETION)
    assert json.loads(client.body) == json.loads(COMPLETION)
    assert client.messages[-1].get("more_body", False) is False
    assert outcome.ending is Ending.DONE and outcome.status == 200


async def test_an_error_after_the_commit_is_the_error_body_under_200() -> None:
    client = Client()
    failure = UpstreamUnavailable("the upstream closed", code="upstream_connection_lost")
    call = Call(delay=0.15, failure=failure)
    outcome, _ = await run(call, client, StreamSettings(heartbeat=0.03))
    assert client.status == 200
    assert json.loads(client.body)["error"]["code"] == "upstream_connection_lost"
    assert outcome.ending is Ending.UPSTREAM_UNAVAILABLE


async def test_no_answer_within_the_idle_timeout_is_a_504_and_cancels_the_call() -> None:
    client = Client()
    call = Call((200, [], COMPLETION), delay=30)
    outcome, _ = await run(call, client, StreamSettings(heartbeat=None, idle_timeout=0.05))
    assert client.status == 504
    assert json.loads(client.body)["error"]["code"] == "upstream_timeout"
    assert call.cancelled
    assert outcome.ending is Ending.UPSTREAM_UNAVAILABLE and outcome.code == "upstream_timeout"


async def test_a_client_that_leaves_cancels_the_call_and_gets_nothing() -> None:
    client = Client(gone_after=0.02)
    call = Call((200, [], COMPLETION), delay=30)
    outcome, _ = await run(call, client)
    assert call.cancelled
    assert client.messages == []
    assert outcome.ending is Ending.CLIENT_DISCONNECTED and outcome.status is None


async def test_a_client_gone_at_the_send_is_a_disconnect() -> None:
    client = Client(send_fails=True)
    outcome, _ = await run(Call((200, [], COMPLETION)), client)
    assert outcome.ending is Ending.CLIENT_DISCONNECTED


async def test_a_client_that_leaves_during_heartbeats_cancels_the_call() -> None:
    client = Client(gone_after=0.1)
    call = Call((200, [], COMPLETION), delay=30)
    outcome, _ = await run(call, client, StreamSettings(heartbeat=0.02))
    assert call.cancelled
    assert client.status == 200 and set(client.body) == {ord("\n")}
    assert outcome.ending is Ending.CLIENT_DISCONNECTED
