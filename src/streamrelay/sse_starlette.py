"""``sse_events``: the engine's decoding for apps that already answer with sse-starlette.

Many FastAPI apps return sse-starlette's ``EventSourceResponse``. They keep it, and
feed it normalized events instead of hand-parsed chunks::

    from sse_starlette import EventSourceResponse
    from streamrelay import sse_events

    @app.post("/chat")
    async def chat(request: Request):
        stream = await client.chat.completions.create(..., stream=True)
        return EventSourceResponse(sse_events(stream))

Each item is ``{"event": <type>, "data": <the normalized event's JSON>}``, exactly
what the ``sse`` format carries (``delta``, ``reasoning``, ``tool_call``,
``finish``, ``usage``, then ``done`` or a terminal ``error``), so the browser side is
the same as for :func:`~streamrelay.relay_response`. A client that disconnects
makes sse-starlette cancel the generator, which closes the upstream: the paid
generation stops there too.

What sse-starlette then does is its own: its pings (every 15 s), its framing, its
buffering. What it does not get from this module is what only the engine does: the
idle, first-byte and send timeouts, the anti-buffering headers (sse-starlette sets
``X-Accel-Buffering: no`` itself), resumable streams, and the engine's speed
(``docs/frontends.md`` has the measured cost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence

import anyio

from . import _json
from .events import Error, Event
from .formats.base import Encoder
from .sources import check_source, open_source
from .transcoder import Transcoder

__all__ = ["sse_events"]

logger = logging.getLogger("streamrelay")


class _Collector(Encoder):
    """An encoder that keeps sse-starlette's dicts instead of writing bytes."""

    name = "sse-starlette"
    media_type = "text/event-stream"

    def __init__(self, *, now: float) -> None:
        super().__init__(now=now)
        self.items: list[dict[str, str]] = []

    def encode(self, events: Sequence[Event], raw: str | None) -> bytes:
        items = self.items
        for event in events:
            items.append({"event": event.type, "data": _json.dumps(event.to_dict()).decode()})
        return b""


async def sse_events(source: object) -> AsyncIterator[dict[str, str]]:
    """Normalized events from ``source``, as dicts for sse-starlette's ``EventSourceResponse``.

    ``source`` is anything :func:`~streamrelay.relay_response` accepts: the openai SDK's
    ``AsyncStream``, an ``httpx.Response`` opened with ``stream=True``, an aiohttp
    response, an ``Upstream.request(...)``, or an async iterable of OpenAI SSE bytes,
    text pieces or chunk dicts. The last item is ``done``, or an ``error`` (an upstream
    error status before the stream is an ``error`` item too, since the response's
    status is sse-starlette's, already sent).
    """
    check_source(source)
    collector = _Collector(now=time.time())
    transcoder = Transcoder(collector)
    try:
        opened = await open_source(source)
    except Exception as exc:  # an error status or an unreachable upstream
        logger.warning("sse_events: the upstream failed before the stream: %s", exc)
        yield _error_item(exc)
        return
    complete = False
    try:
        feed = transcoder.feeder(opened.kind)
        try:
            async for item in opened.items:
                feed(item)
                if collector.items:
                    for out in collector.items:
                        yield out
                    collector.items.clear()
                if transcoder.terminated:
                    break
            else:
                transcoder.end()
        except Exception as exc:  # the source broke mid-stream
            logger.warning("sse_events: the upstream connection broke mid-stream: %r", exc)
            transcoder.fail(Error("the upstream connection closed mid-stream", "upstream_closed"))
        for out in collector.items:
            yield out
        complete = transcoder.error is None
    finally:
        # A disconnect cancels the generator; the close must still run: it is what
        # stops the paid generation.
        with anyio.CancelScope(shield=True):
            await opened.aclose(complete)


def _error_item(exc: Exception) -> dict[str, str]:
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "code", None) or (
        f"upstream_status_{status}" if status else "upstream_error"
    )
    error = Error(str(exc), str(code), status if isinstance(status, int) else None)
    return {"event": "error", "data": _json.dumps(error.to_dict()).decode()}
