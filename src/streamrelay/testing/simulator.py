"""The simulator itself: an OpenAI-compatible server as a pure ASGI app.

:class:`Simulator` reads each request whole, records it, routes it
(``POST .../chat/completions``, ``GET .../models``; anything else is a 404 or
405), and hands a chat completion to its :class:`._Plan`. A watcher task
cancels the answer the moment the client leaves, even in the middle of a
stall, which is what :attr:`Simulator.stats` then reports as ``cancelled``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any, cast

import anyio
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from .config import SimulatorConfig
from .plan import _Exchange, _Plan
from .recording import RecordedRequest, SimulatorStats, _Counter
from .wire import _send_error, _send_json

__all__ = ["EXTRA_MODELS", "Simulator"]

EXTRA_MODELS = ("sim-2", "sim-3")
"""Models ``GET /v1/models`` lists besides the configured one (any name streams)."""

logger = logging.getLogger("streamrelay.testing")


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps ``path`` whole under a mount)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Simulator:
    """An OpenAI-compatible chat completions server, as a pure ASGI app.

    Routes, as OpenAI has them (below the app's ``root_path`` when mounted; a
    trailing slash is tolerated): ``POST /v1/chat/completions`` and
    ``GET /v1/models`` (the configured model and :data:`EXTRA_MODELS`), and
    ``GET /v1/models/{id}`` (404 for a model it does not list). Any other path is a 404, as from a real server, so a
    relay configured with a wrong base URL fails in tests as it would in production.
    No authentication is required; every request is recorded in
    :attr:`requests` and chat completions are counted in :attr:`stats`.

    ``overrides`` are :class:`SimulatorConfig` fields applied over ``config``.
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.config: SimulatorConfig = (config or SimulatorConfig()).replace(**overrides)
        """The defaults of every request."""
        self.requests: list[RecordedRequest] = []
        """Every request received, oldest first."""
        self.stats = SimulatorStats()
        """Counters of chat completion requests."""

    def reset(self) -> None:
        """Forget recorded requests and zero the stats."""
        self.requests.clear()
        self.stats.reset()

    def completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` object that ``body`` gets without streaming.

        A stream for the same body adds up to the same content, refusal, tool
        calls and finish reasons, unless a fault cuts it short or alters it
        (``timestamps``, ``invalid_utf8`` and ``non_json`` add unexpected data).
        Use it as the oracle of what a relay should deliver.
        """
        return _Plan.from_body(self.config, body).completion()

    def expected_text(self, body: Mapping[str, Any], index: int = 0) -> str:
        """The content text of choice ``index`` for ``body`` (``""`` for tools/refusal)."""
        message = self.completion(body)["choices"][index]["message"]
        return cast(str, message["content"] or "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http``; ``lifespan`` is acknowledged)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            route=_route_path(scope),
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=Headers(scope=scope),
            body=bytes(body),
            request_id="req_" + uuid.uuid4().hex,
        )
        self.requests.append(record)
        try:
            await self._route(record, receive, send)
        finally:
            logger.info(
                "%s %s fault=%s -> %s %s",
                record.method,
                record.path,
                ",".join(record.faults) or "-",
                record.status if record.status is not None else "-",
                record.outcome,
            )

    async def _route(self, record: RecordedRequest, receive: Receive, send: Send) -> None:
        path = record.route.rstrip("/")
        if path == "/v1/chat/completions":
            if record.method != "POST":
                await _send_error(send, record, 405, "Use POST.", allow="POST")
                return
            await self._chat(record, receive, send)
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            if record.method != "GET":
                await _send_error(send, record, 405, "Use GET.", allow="GET")
                return
            models = {
                name: {"id": name, "object": "model", "created": 0, "owned_by": "sim"}
                for name in (self.config.model, *EXTRA_MODELS)
            }
            if path == "/v1/models":
                await _send_json(send, record, 200, {"object": "list", "data": [*models.values()]})
            elif path[len("/v1/models/") :] in models:
                await _send_json(send, record, 200, models[path[len("/v1/models/") :]])
            else:
                await _send_error(
                    send, record, 404, f"The model '{path[len('/v1/models/') :]}' does not exist."
                )
                return
            record.outcome = "finished"
        else:
            await _send_error(send, record, 404, f"Unknown path {record.path}.")

    async def _chat(self, record: RecordedRequest, receive: Receive, send: Send) -> None:
        try:
            plan = _Plan.from_body(self.config, record.json())
        except ValueError as exc:
            await _send_error(send, record, 400, str(exc))
            record.outcome = "rejected"
            return
        record.faults = plan.faults
        state = _Exchange(record)
        outcome: _Counter = "failed"
        generation = self.stats._begin()
        try:
            # The watcher cancels the response the moment the client leaves, even
            # while it sleeps in a stall.
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(_watch_disconnect, receive, state, task_group.cancel_scope)
                try:
                    await plan.respond(send, state)
                except OSError:  # ASGI servers may raise it on send after a disconnect
                    state.disconnected = True
                task_group.cancel_scope.cancel()
            outcome = "finished" if state.complete else "cancelled"
        except anyio.get_cancelled_exc_class():
            outcome = "finished" if state.complete else "cancelled"
            raise
        finally:
            record.outcome = "aborted" if state.abort else outcome
            self.stats._end(generation, outcome)
        if state.abort:
            raise _AbruptClose("simulated abrupt close (fault 'abrupt_close')")


class _AbruptClose(Exception):
    """Raised after the response started so that the server drops the connection."""


class _QuietAbruptClose(logging.Filter):
    """Keeps uvicorn from logging the deliberate :class:`_AbruptClose` as a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _AbruptClose))


def _quiet_abrupt_close() -> None:
    error_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietAbruptClose) for f in error_logger.filters):
        error_logger.addFilter(_QuietAbruptClose())


async def _watch_disconnect(receive: Receive, state: _Exchange, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    state.disconnected = True
    scope.cancel()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
