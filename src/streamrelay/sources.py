"""Adapters from everything ``relay_response`` accepts to one :class:`Source` shape.

A source is an async iterator of items of one kind plus a way to close it:

* ``"sse"``: OpenAI SSE bytes (an ``httpx.Response`` or ``aiohttp.ClientResponse``
  opened for streaming, or any async iterable of ``bytes``);
* ``"chunks"``: ``(dict, raw_json_or_None)`` pairs (the openai SDK's ``AsyncStream``,
  or any async iterable of dicts or pydantic models);
* ``"text"``: plain text pieces (any async iterable of ``str``).
"""

from __future__ import annotations

import inspect
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Literal, Protocol, cast

import httpx

from . import _json
from .errors import UpstreamStatusError, UpstreamUnavailable
from .upstream.failures import refusal

__all__ = [
    "PASSTHROUGH_HEADERS",
    "Source",
    "check_source",
    "from_aiohttp",
    "from_httpx",
    "open_source",
    "passthrough_headers",
    "read_bounded",
]


class Poll(Protocol):
    """An item source read without a coroutine per item: what the engine prefers.

    :meth:`read_nowait` returns the next item, ``None`` when none is ready yet (then
    the reader awaits :meth:`readable`), or an empty item at the end.
    """

    def read_nowait(self) -> bytes | None: ...

    def readable(self) -> Awaitable[None]: ...


SourceKind = Literal["sse", "chunks", "text", "records"]
"""What a source yields: SSE bytes, parsed chunks (with their JSON), text pieces, or
stored :class:`~streamrelay.stores.base.Record` values (a resumed stream)."""

#: Upstream response headers an error passthrough keeps (plus ``x-ratelimit-*``).
PASSTHROUGH_HEADERS = frozenset(
    {"content-type", "retry-after", "retry-after-ms", "x-request-id", "openai-processing-ms"}
)
_MAX_ERROR_BODY = 1024 * 1024


class Source:
    """An opened upstream: ``items`` to read and :meth:`aclose` to release it.

    ``aclose(complete=False)`` must drop the upstream connection, because that
    is what stops a paid generation; ``complete=True`` may return it to a pool.
    """

    __slots__ = ("_close", "headers", "items", "kind")

    def __init__(
        self,
        items: AsyncIterator[Any],
        kind: SourceKind,
        close: Callable[[bool], Awaitable[None]] | None = None,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.items = items
        self.kind = kind
        self._close = close
        self.headers = headers
        """Response headers the source asks the stream to carry (the middleware
        hands on the host response's own headers this way)."""

    @property
    def poll(self) -> Poll | None:
        """:attr:`items` again when it can also be read without a coroutine per item
        (the native upstream's :class:`~streamrelay.upstream.native.Connection`),
        else ``None``. Derived from :attr:`items` each time, so that a wrapper put
        around them (the key redaction) is never bypassed."""
        items = self.items
        return cast(Poll, items) if hasattr(items, "read_nowait") else None

    async def aclose(self, complete: bool = False) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            await close(complete)
        else:
            aclose = getattr(self.items, "aclose", None)
            if aclose is not None:
                await aclose()


async def open_source(obj: object, *, want_raw: bool = False) -> Source:
    """Adapt ``obj`` to a :class:`Source`; raise :class:`UpstreamStatusError` for an HTTP error.

    ``want_raw`` asks chunk sources for each chunk's JSON text too (the
    ``openai`` format passes chunks through verbatim).
    """
    if isinstance(obj, Source):
        return obj
    from .upstream.client import UpstreamRequest  # here: upstream imports this module

    if isinstance(obj, UpstreamRequest):
        return await obj.open()
    if isinstance(obj, httpx.Response):
        return await from_httpx(obj)
    if _is_aiohttp_response(obj):
        return await from_aiohttp(obj)
    if _is_openai_stream(obj):
        return _from_chunks(obj, want_raw, close=_sdk_closer(obj))  # type: ignore[arg-type]
    if isinstance(obj, AsyncIterable):
        return await _from_iterable(obj, want_raw)
    raise TypeError(
        "relay_response() takes an httpx.Response opened with stream=True, an openai "
        "AsyncStream, or an async iterable of bytes (OpenAI SSE), str (plain text) or "
        f"dict chunks; got {type(obj).__name__}"
    )


def check_source(obj: object) -> None:
    """Refuse at once, with a hint, what :func:`open_source` could never relay, so that a
    mistake in a handler is a ``TypeError`` where it is made, not a broken stream later."""
    if inspect.iscoroutine(obj):
        obj.close()  # it will never run: no "never awaited" warning on top
        raise TypeError(
            "relay_response() got a coroutine: forgot `await`? For example "
            "relay_response(await client.chat.completions.create(..., stream=True), request)"
        )
    module = type(obj).__module__
    if module.startswith("openai"):
        if type(obj).__name__ == "Stream":
            raise TypeError(
                "relay_response() got the openai SDK's synchronous Stream: use AsyncOpenAI, "
                "whose AsyncStream the relay reads without blocking the event loop"
            )
        if hasattr(obj, "choices") or hasattr(obj, "output"):
            raise TypeError(
                f"relay_response() got a finished {type(obj).__name__}, not a stream: open "
                "it with stream=True"
            )
    from .upstream.client import UpstreamRequest  # here: upstream imports this module

    if (
        isinstance(obj, (Source, httpx.Response, UpstreamRequest, AsyncIterable))
        or _is_aiohttp_response(obj)
        or _is_openai_stream(obj)
    ):
        return
    hint = "pass an async iterable"
    if obj is None:
        hint = "the source is None: did the call that should return the stream return nothing?"
    elif isinstance(obj, (str, bytes, bytearray)):
        hint = "wrap the text in an async generator (async def pieces(): yield text)"
    elif isinstance(obj, Iterable):
        hint = (
            "it is a synchronous iterable: make it an async generator (async def ... yield), "
            "so the relay never blocks the event loop"
        )
    raise TypeError(
        f"relay_response() cannot relay a {type(obj).__name__}: {hint}. It takes an "
        "httpx.Response opened with stream=True, the openai SDK's AsyncStream, an "
        "Upstream.request(...), or an async iterable of bytes (OpenAI SSE), str (text) "
        "or chunk dicts"
    )


async def from_httpx(response: httpx.Response) -> Source:
    """Adapt an ``httpx.Response`` opened for streaming; used by the ``httpx`` transport too."""
    if response.is_stream_consumed:  # opened without stream=True: read whole already
        if response.status_code >= 300:
            raise UpstreamStatusError(
                response.status_code,
                passthrough_headers(response.headers.multi_items()),
                response.content[:_MAX_ERROR_BODY],
            )
        raise UpstreamUnavailable(
            "the httpx response was read whole before relaying (opened without "
            "stream=True), so there is nothing left to stream: open it with "
            "client.send(request, stream=True)",
            code="upstream_not_streaming",
        )
    refused = refusal(response.status_code, response.headers.get("content-type", ""))
    if refused is not None:
        await response.aclose()
        raise refused
    if response.status_code >= 300:
        try:
            body = await read_bounded(response.aiter_raw())
        finally:
            await response.aclose()
        raise UpstreamStatusError(
            response.status_code, passthrough_headers(response.headers.multi_items()), body
        )

    async def close(complete: bool) -> None:
        await response.aclose()

    return Source(response.aiter_raw(), "sse", close)


def _is_aiohttp_response(obj: object) -> bool:
    return type(obj).__module__.startswith("aiohttp") and hasattr(obj, "content")


async def from_aiohttp(response: Any) -> Source:
    """Adapt an ``aiohttp.ClientResponse``; used by the ``aiohttp`` upstream transport too."""
    refused = refusal(response.status, response.headers.get("content-type", ""))
    if refused is not None:
        response.close()
        raise refused
    if response.status >= 300:
        try:
            body = await read_bounded(response.content.iter_any())
        finally:
            response.close()
        raise UpstreamStatusError(
            response.status, passthrough_headers(list(response.headers.items())), body
        )

    async def close(complete: bool) -> None:
        if complete:
            response.release()
        else:
            response.close()  # drops the connection: the upstream stops generating

    return Source(response.content.iter_any(), "sse", close)


def _is_openai_stream(obj: object) -> bool:
    return type(obj).__name__ == "AsyncStream" and hasattr(obj, "response")


def _sdk_closer(stream: Any) -> Callable[[bool], Awaitable[None]]:
    async def close(complete: bool) -> None:
        await stream.close()

    return close


def _from_chunks(
    iterable: AsyncIterable[Any],
    want_raw: bool,
    *,
    first: Any = None,
    close: Callable[[bool], Awaitable[None]] | None = None,
) -> Source:
    async def items() -> AsyncIterator[tuple[Mapping[str, Any], str | None]]:
        iterator = aiter(iterable)
        try:
            item = first if first is not None else await anext(iterator, None)
            while item is not None:
                chunk = _as_dict(item)
                yield chunk, (_json.dumps(chunk).decode() if want_raw else None)
                item = await anext(iterator, None)
        except Exception as exc:
            # The openai SDK raises APIError on an in-stream {"error": ...}; relay
            # that error (its message and code), not a generic broken connection.
            error = _sdk_error_chunk(exc)
            if error is None:
                raise
            yield error, (_json.dumps(error).decode() if want_raw else None)

    if close is None:
        close = _iterable_closer(iterable)
    return Source(items(), "chunks", close)


async def _from_iterable(iterable: AsyncIterable[Any], want_raw: bool) -> Source:
    iterator = aiter(iterable)
    first = await anext(iterator, None)
    close = _iterable_closer(iterable)
    if first is None:  # nothing at all: an empty answer, which is complete
        return Source(_prepend("", iterator), "text", close)
    if isinstance(first, (bytes, bytearray, memoryview)):
        return Source(_prepend(bytes(first), iterator), "sse", close)
    if isinstance(first, str):
        return Source(_prepend(first, iterator), "text", close)
    if isinstance(first, Mapping) or hasattr(first, "model_dump"):
        return _from_chunks(iterator, want_raw, first=first, close=close)
    raise TypeError(
        f"relay_response() cannot relay an async iterable of {type(first).__name__}: "
        "yield bytes (OpenAI SSE), str (plain text) or dict chunks"
    )


def _iterable_closer(iterable: object) -> Callable[[bool], Awaitable[None]]:
    async def close(complete: bool) -> None:
        aclose = getattr(iterable, "aclose", None)
        if aclose is not None:
            result = aclose()
            if inspect.isawaitable(result):
                await result

    return close


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for item in rest:
        yield item


def _sdk_error_chunk(exc: Exception) -> dict[str, Any] | None:
    """``{"error": {...}}`` for an openai SDK ``APIError`` raised mid-stream, else ``None``."""
    body = getattr(exc, "body", None)
    if not type(exc).__module__.startswith("openai") or not isinstance(body, Mapping):
        return None
    return {"error": {**body, "message": body.get("message") or str(exc)}}


def _as_dict(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    dump = getattr(item, "model_dump", None)
    if dump is not None:
        result = dump(mode="json", exclude_unset=True, by_alias=True)
        if isinstance(result, Mapping):
            return result
    raise TypeError(f"cannot relay a chunk of type {type(item).__name__}")


async def read_bounded(chunks: AsyncIterator[bytes]) -> bytes:
    """An error body, cut at 1 MiB (it is held in memory and sent on)."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) >= _MAX_ERROR_BODY:
            del body[_MAX_ERROR_BODY:]
            break
    return bytes(body)


def passthrough_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of an upstream error that go to the client with it."""
    return [
        (k.lower(), v)
        for k, v in headers
        if k.lower() in PASSTHROUGH_HEADERS or k.lower().startswith("x-ratelimit-")
    ]
