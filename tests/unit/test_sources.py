"""``relay_response`` checks its source when called: a mistake in a handler is a
``TypeError`` with a hint where it is made, never a broken stream later."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion
from starlette.requests import Request

from streamrelay import Upstream, relay_response


def request() -> Request:
    return Request(
        {"type": "http", "method": "POST", "path": "/chat", "query_string": b"", "headers": []}
    )


def sync_pieces() -> Iterator[str]:
    yield "hi"


async def async_pieces() -> AsyncIterator[str]:
    yield "hi"


async def make_stream() -> AsyncIterator[str]:  # what a handler forgot to await
    return async_pieces()


COMPLETION = ChatCompletion(id="c", choices=[], created=0, model="m", object="chat.completion")


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        (["data: {}"], "synchronous iterable"),
        ("hello", "wrap the text in an async generator"),
        (b"data: [DONE]\n\n", "wrap the text"),
        ({"choices": []}, "synchronous iterable"),
        (None, "the source is None"),
        (42, "cannot relay a int"),
        (sync_pieces(), "synchronous iterable"),
        (COMPLETION, "open it with stream=True"),
        (openai.Stream.__new__(openai.Stream), "use AsyncOpenAI"),
    ],
    ids=["list", "str", "bytes", "dict", "None", "int", "sync-generator", "completion", "Stream"],
)
def test_what_can_never_be_relayed_is_refused_at_once(source: Any, hint: str) -> None:
    with pytest.raises(TypeError, match=hint):
        relay_response(source, request())


def test_an_unawaited_coroutine_asks_whether_await_was_forgotten() -> None:
    coroutine = make_stream()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and it is closed: no "never awaited" warning
        with pytest.raises(TypeError, match="forgot `await`"):
            relay_response(coroutine, request())
    assert coroutine.cr_frame is None  # closed


@pytest.mark.parametrize(
    "source",
    [
        async_pieces(),
        Upstream("http://127.0.0.1:9/v1").request("/chat/completions", {"messages": []}),
    ],
    ids=["async-generator", "upstream-request"],
)
def test_what_can_be_relayed_is_accepted(source: Any) -> None:
    assert relay_response(source, request()).status_code == 200
