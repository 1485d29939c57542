"""The simulator itself: an OpenAI-compatible server as a pure ASGI app.

:class:`Simulator` reads each request whole, records it, routes it
(``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/completions``,
``GET /v1/models[/{id}]``; any other path is a 404, another method a 405), and
hands a generation to the plan of its route (:mod:`.chat`, :mod:`.responses`,
:mod:`.completions`). A watcher task cancels the answer the moment the client
leaves, even in the middle of a stall, which is what :attr:`Simulator.stats`
then reports as ``cancelled``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any, cast

import anyio
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from .chat import _ChatPlan
from .completions import _CompletionsPlan
from .config import ROUTES, SimulatorConfig
from .plan import _Exchange, _Plan
from .recording import RecordedRequest, SimulatorStats, _Counter
from .responses import _ResponsesPlan
from .wire import _send_error, _send_json

__all__ = ["EXTRA_MODELS", "Simulator"]

EXTRA_MODELS = ("sim-2", "sim-3")
"""Models ``GET /v1/models`` lists besides the configured one (any name streams)."""

logger = logging.getLogger("streamrelay.testing")

_PLANS: dict[str, type[_Plan]] = {
    "chat": _ChatPlan,
    "completions": _CompletionsPlan,
    "responses": _ResponsesPlan,
}
_PLAN_OF_PATH = {path: _PLANS[name] for name, path in ROUTES.items()}


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps ``path`` whole under a mount)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Simulator:
    """An OpenAI-compatible server, as a pure ASGI app.

    Routes, as OpenAI has them (below the app's ``root_path`` when mounted; a
    trailing slash is tolerated):

    - ``POST /v1/chat/completions``: chat completions, streaming and not;
    - ``POST /v1/responses``: the Responses API, streaming (``event:`` lines,
      ``sequence_number``, no ``[DONE]``) and not;
    - ``POST /v1/completions``: legacy completions (``prompt``, ``choices[].text``);
    - ``GET /v1/models`` (the configured model and :data:`EXTRA_MODELS`) and
      ``GET /v1/models/{id}`` (404 for a model it does not list).

    Any other path is a 404 and another method a 405, as from a real server, so a
    relay configured with a wrong base URL fails in tests as it would in
    production. No authentication is required; every request is recorded in
    :attr:`requests` and every generation is counted in :attr:`stats`.

    The oracles say what a request gets, before it is sent: :meth:`completion`,
    :meth:`response` and :meth:`text_completion` give each route's whole answer;
    :meth:`expected_text`, :meth:`expected_reasoning` and
    :meth:`expected_tool_calls` work on any route's body.

    ``overrides`` are :class:`SimulatorConfig` fields applied over ``config``.
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.config: SimulatorConfig = (config or SimulatorConfig()).replace(**overrides)
        """The defaults of every request."""
        self.requests: list[RecordedRequest] = []
        """Every request received, oldest first."""
        self.stats = SimulatorStats()
        """Counters of generations (chat completions, responses, completions)."""

    def reset(self) -> None:
        """Forget recorded requests and zero the stats."""
        self.requests.clear()
        self.stats.reset()

    def completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` object that ``body`` gets from ``/v1/chat/completions``
        without streaming.

        A stream for the same body adds up to the same content, reasoning,
        refusal, tool calls and finish reasons, unless a fault cuts it short or
        alters it (``timestamps``, ``invalid_utf8`` and ``non_json`` add
        unexpected data). Use it as the oracle of what a relay should deliver.
        Raises :exc:`ValueError` for a body the simulator would answer with 400.
        """
        return cast(_ChatPlan, self._plan(body, "chat")).completion()

    def response(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The ``response`` object that ``body`` gets from ``/v1/responses`` without
        streaming, and that a stream's ``response.completed`` carries (see
        :meth:`completion`)."""
        return cast(_ResponsesPlan, self._plan(body, "responses")).response()

    def text_completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The ``text_completion`` object that ``body`` gets from ``/v1/completions``
        without streaming (see :meth:`completion`)."""
        return cast(_CompletionsPlan, self._plan(body, "completions")).text_completion()

    def expected_text(
        self, body: Mapping[str, Any], index: int = 0, *, route: str | None = None
    ) -> str:
        """The content text of choice ``index`` for ``body`` (``""`` for tools or a refusal).

        ``route`` is ``"chat"``, ``"responses"`` or ``"completions"`` (or its path,
        ``"/v1/responses"``); by default it is guessed from the body: ``input`` or
        ``instructions`` mean Responses, ``prompt`` a legacy completion, anything
        else a chat completion.
        """
        return self._plan(body, route).text(index, "content")

    def expected_reasoning(
        self, body: Mapping[str, Any], index: int = 0, *, route: str | None = None
    ) -> str:
        """The reasoning text of choice ``index`` (``""`` without the ``reasoning`` or
        ``parts`` fault); ``route`` as for :meth:`expected_text`."""
        return self._plan(body, route).text(index, "reasoning")

    def expected_tool_calls(
        self, body: Mapping[str, Any], *, route: str | None = None
    ) -> list[dict[str, str]]:
        """The tool calls ``body`` gets, whole: ``[{"id", "name", "arguments"}]``
        (``id`` is a Responses item's ``call_id``); ``route`` as for :meth:`expected_text`."""
        plan = self._plan(body, route)
        return [
            {"id": call.id, "name": call.name, "arguments": call.arguments}
            for call in plan.tool_calls
        ]

    def _plan(self, body: Mapping[str, Any], route: str | None) -> _Plan:
        if route is None:
            if isinstance(body, Mapping) and ("input" in body or "instructions" in body):
                route = "responses"
            elif isinstance(body, Mapping) and "prompt" in body:
                route = "completions"
            else:
                route = "chat"
        plan = _PLANS.get(route) or _PLAN_OF_PATH.get(route.rstrip("/"))
        if plan is None:
            known = ", ".join([*_PLANS, *_PLAN_OF_PATH])
            raise ValueError(f"unknown route {route!r}; known: {known}")
        return plan(self.config, body)

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
        if path in _PLAN_OF_PATH:
            if record.method != "POST":
                await _send_error(send, record, 405, "Use POST.", allow="POST")
                return
            await self._generate(_PLAN_OF_PATH[path], record, receive, send)
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

    async def _generate(
        self, kind: type[_Plan], record: RecordedRequest, receive: Receive, send: Send
    ) -> None:
        try:
            plan = kind(self.config, record.json())
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
