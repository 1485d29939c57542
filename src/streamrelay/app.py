"""``StreamRelay``: the mountable ASGI app that serves the OpenAI API surface below its mount.

``POST /chat/completions``, ``POST /responses`` and ``POST /completions`` are
relayed with the server's key, streaming or not; ``GET /models`` and
``GET /models/{id}`` pass through; ``POST /chat`` and ``POST /ag-ui`` serve the
front ends; with a store, the stream routes resume and stop. Which answer a request
gets (the OpenAI wire, the upstream's JSON, or one of our formats) is decided once, in
:meth:`StreamRelay._accept`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from . import _http, _json
from .answer import relay_answer
from .config import RequestLimits, StreamSettings, check_format_name, settings_or_default
from .errors import (
    ConfigurationError,
    RequestRejected,
    StoreUnavailable,
    UnsupportedFormat,
    UpstreamUnavailable,
)
from .formats import Encoder, encoder_for
from .negotiation import asked_format, format_param
from .observer import Observer, StreamStart, observers_of
from .outcome import StreamObserver
from .pipeline import run_stream
from .resume import Recording, follow
from .sources import Source
from .stores.base import Store, StreamInfo
from .upstream import Upstream

__all__ = ["PrepareHook", "PrincipalHook", "StreamRelay"]

logger = logging.getLogger("streamrelay")

PrepareHook = Callable[
    [Request, dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"
]
"""``prepare(request, body)``: return a new body (or ``None`` to keep it), or raise
:class:`~streamrelay.RequestRejected` to refuse the request. May be sync or async."""

PrincipalHook = Callable[[Request, "dict[str, Any] | None"], "Hashable | None"]
"""``principal(request, body)``: who a request belongs to, for
:attr:`RequestLimits.max_streams_per_principal <streamrelay.RequestLimits>`
(``None``: not limited) and, with a store, whose streams it may resume and stop
(the resume and stop routes call it with ``body=None``). The default is the
client's IP address."""


@dataclass(frozen=True, slots=True)
class _Route:
    """A route that starts a generation, and how its body is checked."""

    name: str  # the API's name, for logs and metrics
    upstream: str  # the upstream path it calls
    field: str  # the body field the route requires (after any conversion)
    kinds: tuple[type, ...]  # the JSON types that field may have
    caps: tuple[str, ...]  # the token limits capped by ``max_tokens``; the first is set if none
    ui: str | None = None
    """A front end's route: its own default format (its body is converted to a chat
    completion first, and it always streams); ``None`` for an OpenAI route."""


_CHAT_CAPS = ("max_tokens", "max_completion_tokens")
_ROUTES = {
    "/chat/completions": _Route(
        "chat.completions", "/chat/completions", "messages", (list,), _CHAT_CAPS
    ),
    "/responses": _Route("responses", "/responses", "input", (str, list), ("max_output_tokens",)),
    "/completions": _Route("completions", "/completions", "prompt", (str, list), ("max_tokens",)),
    "/chat": _Route("chat", "/chat/completions", "messages", (list,), _CHAT_CAPS, ui="ai-sdk"),
    "/ag-ui": _Route("ag-ui", "/chat/completions", "messages", (list,), _CHAT_CAPS, ui="ag-ui"),
}


@dataclass(slots=True)
class _Call:
    """An accepted request that starts a generation."""

    route: _Route
    payload: bytes  # the upstream body, built once
    format: str | None  # None: a whole JSON answer
    forwarded: list[tuple[str, str]]
    principal: Hashable | None
    slot: _Slot | None
    request_id: str
    model: str | None
    hide_usage: bool = False  # the relay asked for usage, the OpenAI-wire client did not
    chat: str | None = None  # the AI SDK chat it belongs to (for its resume route)
    message_id: str | None = None  # the AI SDK message the answer continues, if any
    run: tuple[str, str, str | None] | None = None  # AG-UI's threadId, runId, protocolVersion


_STATIC = {
    "/streamrelay.js": ("streamrelay.js", b"text/javascript; charset=utf-8"),
    "/streamrelay.d.ts": ("streamrelay.d.ts", b"application/typescript; charset=utf-8"),
}


class StreamRelay:
    """A pure ASGI app that relays OpenAI-compatible chat streams, re-framed per client.

    Mount it anywhere::

        relay = StreamRelay(Upstream("https://api.openai.com/v1", api_key="sk-..."))
        app = Starlette(routes=[Mount("/ai", relay)])      # or FastAPI's app.mount

    It serves the OpenAI API below the mount (trailing slashes tolerated), with the
    server's key: ``POST /chat/completions``, ``POST /responses`` and
    ``POST /completions``, streaming and not, and ``GET /models[/{id}]``. A client
    that asks for one of our formats (``?format=``, or an ``Accept`` of
    ``application/x-ndjson`` or ``text/plain``) is streamed in it; any other client
    is an OpenAI client and gets what OpenAI would give it: the OpenAI wire for
    ``"stream": true``, else the upstream's JSON answer. For front ends it serves
    ``POST /chat`` (the AI SDK's ``useChat``, answered in ``ai-sdk``) and ``POST
    /ag-ui`` (AG-UI, answered in ``ag-ui``); with a ``store``, ``GET``/``DELETE
    /streams/{id}`` and ``/chat/{chatId}/stream`` resume and stop. It also serves the
    browser client at ``<mount>/streamrelay.js``.

    Args:
        upstream: the :class:`~streamrelay.upstream.Upstream` to call, or its URL
            (``StreamRelay("http://localhost:11434/v1")``). Default: ``Upstream()``,
            which reads ``STREAMRELAY_UPSTREAM``/``OPENAI_BASE_URL`` and
            ``OPENAI_API_KEY``.
        default_format: the format of a ``"stream": true`` request that asks for
            none of ours. ``None`` (the default) gives such clients the OpenAI wire,
            which every OpenAI SDK expects; a format name (``"sse"``, ...) is for
            apps whose own front end sends neither ``?format=`` nor ``Accept``, at
            the price of the SDKs' streams. Requests without ``"stream": true``
            get the upstream's JSON either way.
        stream: the :class:`~streamrelay.StreamSettings` (heartbeat, timeouts, event size).
        limits: the :class:`~streamrelay.RequestLimits` (body and header size, body
            timeout, streams per principal).
        allowed_models: if given, other ``model`` values are refused (403).
        max_tokens: cap on ``max_tokens``/``max_completion_tokens``; set if absent.
        prepare: ``prepare(request, body)`` hook for auth, quotas, prompt injection.
        principal: ``principal(request, body)`` names who a request belongs to, for
            the per-principal stream limit (default: the client's IP address).
        on_stream_end: called with each stream's :class:`~streamrelay.Outcome`.
        store: a :mod:`stream store <streamrelay.stores>` makes streams resumable:
            each gets an ``X-Stream-Id``, ``GET <mount>/streams/{id}`` resumes it
            (``Last-Event-ID``), ``DELETE <mount>/streams/{id}`` stops it, and a
            client that disconnects no longer stops it (see ``linger``).
        linger: with a store, how long a stream goes on with no reader connected
            before it is abandoned and its upstream closed (default 30 s; ``None``:
            it always finishes).
        default_model: the model of the front-end routes (``POST /chat``, ``POST
            /ag-ui``) when their body names none (``allowed_models`` still applies).
        include_usage: ask the upstream for token usage on every streamed chat and
            completions call (``stream_options.include_usage``), so that outcomes, logs
            and metrics count every stream's tokens, not only those of clients that
            asked. An OpenAI-wire client that did not ask does not see the usage chunk.
            Off by default: some OpenAI-compatible servers refuse ``stream_options``.
        metrics: an :class:`~streamrelay.observer.Observer`, or a list of them, that
            follow every stream and whole answer:
            :class:`~streamrelay.metrics.PrometheusMetrics`,
            :class:`~streamrelay.metrics.OpenTelemetryMetrics`, or your own
            (billing, quotas, audit). See ``docs/observability.md``.

    Every generation gets a request id, the client's ``x-request-id`` or a new one:
    it is sent upstream and back to the client in ``x-request-id``, and is in the
    stream's log line and outcome.
    """

    def __init__(
        self,
        upstream: Upstream | str | None = None,
        *,
        default_format: str | None = None,
        stream: StreamSettings | None = None,
        limits: RequestLimits | None = None,
        allowed_models: Iterable[str] | None = None,
        max_tokens: int | None = None,
        prepare: PrepareHook | None = None,
        principal: PrincipalHook | None = None,
        on_stream_end: StreamObserver | None = None,
        store: Store | None = None,
        linger: float | None = 30.0,
        default_model: str | None = None,
        include_usage: bool = False,
        metrics: Observer | Iterable[Observer] | None = None,
    ) -> None:
        self.upstream = upstream if isinstance(upstream, Upstream) else Upstream(upstream)
        self.default_format = (
            check_format_name(default_format) if default_format is not None else None
        )
        self.settings = settings_or_default(stream, StreamSettings, "stream")
        self.limits = settings_or_default(limits, RequestLimits, "limits")
        if isinstance(allowed_models, str):
            raise ConfigurationError(
                f"allowed_models must be a list of model names, not a string: "
                f"use [{allowed_models!r}]"
            )
        self.allowed_models = frozenset(allowed_models) if allowed_models is not None else None
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0
        ):
            raise ConfigurationError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.prepare = prepare
        self.principal: PrincipalHook = principal or _client_address
        self.on_stream_end = on_stream_end
        if store is not None and not isinstance(store, Store):
            raise ConfigurationError(
                f"store must be a streamrelay.stores store (MemoryStore(), RedisStore(url)), "
                f"not {type(store).__name__}"
            )
        self.store = store
        if linger is not None and (
            isinstance(linger, bool) or not isinstance(linger, (int, float)) or linger < 0
        ):
            raise ConfigurationError(f"linger must be seconds (>= 0) or None, got {linger!r}")
        self.linger = linger
        if default_model is not None and (not isinstance(default_model, str) or not default_model):
            raise ConfigurationError(f"default_model must be a model name, got {default_model!r}")
        self.default_model = default_model
        if not isinstance(include_usage, bool):
            raise ConfigurationError(f"include_usage must be True or False, got {include_usage!r}")
        self.include_usage = include_usage
        self.observers = observers_of(metrics)
        self._server: tuple[str, int] = (self.upstream.host, self.upstream.port)
        self._streams: Counter[Hashable] = Counter()

    def __repr__(self) -> str:
        return f"StreamRelay(upstream={self.upstream.base_url!r})"

    async def aclose(self) -> None:
        """Close the upstream connection pools and the store's connections (called on
        lifespan shutdown when top-level)."""
        await self.upstream.aclose()
        if self.store is not None:
            await self.store.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not ours; the host routes them
        path = _route_path(scope)
        route = _ROUTES.get(path)
        if route is not None:
            if scope["method"] != "POST":
                await _http.send_method_not_allowed(send, scope["method"], "POST")
                return
            call = await self._accept(scope, receive, send, route)
            if call is None:
                return
            try:
                await self._relay(receive, send, call)
            finally:
                if call.slot is not None:
                    with anyio.CancelScope(shield=True):
                        await self._give_slot(call.slot)
        elif path.startswith("/chat/") and path.endswith("/stream") and path.count("/") == 3:
            await self._chat_stream_route(
                scope, receive, send, path[len("/chat/") : -len("/stream")]
            )
        elif path.startswith("/streams/") and "/" not in path[len("/streams/") :]:
            await self._stream_route(scope, receive, send, path[len("/streams/") :])
        elif path == "/models" or path.startswith("/models/"):
            model_id = path[len("/models/") :] if path != "/models" else None
            await self._models(scope, send, model_id)
        elif path in _STATIC and scope["method"] in ("GET", "HEAD"):
            await _send_static(scope, send, *_STATIC[path])
        else:
            await _http.send_error(
                send,
                404,
                f"no route {path}; POST /chat/completions, /responses or /completions, GET /models",
                code="not_found",
            )

    async def _models(self, scope: Scope, send: Send, model_id: str | None) -> None:
        """``GET /models`` and ``GET /models/{id}``: the upstream's answer, passed through
        with the key, limited to ``allowed_models`` when that is set (tools list the
        models first; a model the relay would refuse is not offered)."""
        if scope["method"] != "GET":
            await _http.send_method_not_allowed(send, scope["method"], "GET")
            return
        allowed = self.allowed_models
        if model_id is not None and allowed is not None and model_id not in allowed:
            await _http.send_error(
                send,
                404,
                f"the model {model_id!r} does not exist or is not offered on this relay",
                code="model_not_found",
            )
            return
        path = "/models" if model_id is None else "/models/" + quote(model_id, safe="/:@")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        timeout = self.settings.first_byte_timeout
        try:
            with anyio.fail_after(math.inf if timeout is None else timeout):
                status, kept, body = await self.upstream.get(path, headers)
        except RequestRejected as exc:
            await _http.send_rejection(send, exc)
            return
        except UpstreamUnavailable as exc:
            await _http.send_error(
                send, exc.status_code, exc.message, code=exc.code, type="upstream_error"
            )
            return
        except TimeoutError:
            await _http.send_error(
                send,
                504,
                f"the upstream did not answer within {timeout}s",
                code="upstream_timeout",
                type="upstream_error",
            )
            return
        if status == 200 and model_id is None and allowed is not None:
            body = _only_allowed(body, allowed)
        await _http.send_answer(send, status, kept, body)

    async def _accept(
        self, scope: Scope, receive: Receive, send: Send, route: _Route
    ) -> _Call | None:
        """Read and check the request; send the error and return ``None`` if refused."""
        limits = self.limits
        if sum(len(k) + len(v) for k, v in scope["headers"]) > limits.max_header_bytes:
            await _http.send_error(
                send,
                431,
                f"the request headers exceed {limits.max_header_bytes} bytes",
                code="request_headers_too_large",
            )
            return None
        request = Request(scope)
        context: dict[str, Any] = {}
        try:
            # A front end's route streams in its own format unless asked for one of ours
            # (its clients send Accept: text/event-stream or */*); an OpenAI route gives
            # an OpenAI client what OpenAI would (negotiation.py).
            fmt = (_asked(scope) or route.ui) if route.ui else _asked(scope)
            body = await self._read_request(request, receive, route, context)
        except RequestRejected as exc:
            await _http.send_rejection(send, exc)
            return None
        except _http.ClientDisconnected:
            return None
        if fmt is None and body.get("stream") is True:
            fmt = self.default_format or "openai"
        if fmt is not None:
            body["stream"] = True  # a request that names a format is always streamed
        hide_usage = False
        if fmt is not None and self.include_usage and route.upstream != "/responses":
            hide_usage = _ask_usage(body) and fmt == "openai"
        # Built once per request and held for the stream's life: the stdlib's
        # exact-size bytes, not orjson's (which keeps a 4 KiB buffer per result).
        payload = json.dumps(body, separators=(",", ":")).encode()
        principal = self.principal(request, body)  # for the limit, the store and the outcome
        slot = None
        if limits.max_streams_per_principal is not None and principal is not None:
            slot = await self._take_slot(principal, limits.max_streams_per_principal)
            if slot is None:
                await _http.send_error(
                    send,
                    429,
                    f"at most {limits.max_streams_per_principal} concurrent streams per client",
                    code="too_many_streams",
                    headers=[("retry-after", "1")],
                )
                return None
        chat = context.get("chat")
        return _Call(
            route,
            payload,
            fmt,
            self.upstream.forwarded(request.headers.items()),
            principal,
            slot,
            chat=_chat_key(principal, chat) if isinstance(chat, str) and chat else None,
            request_id=_http.request_id(scope),
            model=body.get("model") if isinstance(body.get("model"), str) else None,
            hide_usage=hide_usage,
            message_id=context.get("message_id"),
            run=context.get("run"),
        )

    async def _take_slot(self, principal: Hashable, limit: int) -> _Slot | None:
        """One of ``principal``'s stream slots: in the store when there is one (the
        limit then holds across workers), else in this process."""
        if self.store is not None:
            key = _principal_key(principal)
            assert key is not None
            try:
                if not await self.store.acquire(key, limit):
                    return None
                return _Slot(key, None)
            except StoreUnavailable as exc:
                logger.warning("stream store unavailable, counting streams locally: %s", exc)
        if self._streams[principal] >= limit:
            return None
        self._streams[principal] += 1
        return _Slot(None, principal)

    async def _give_slot(self, slot: _Slot) -> None:
        if slot.store_key is not None:
            assert self.store is not None
            try:
                await self.store.release(slot.store_key)
            except StoreUnavailable:
                pass  # the store's own expiry gives it back
        else:
            self._streams[slot.local] -= 1
            if self._streams[slot.local] <= 0:
                del self._streams[slot.local]

    def _relay(self, receive: Receive, send: Send, call: _Call) -> Awaitable[Any]:
        """What streams (or answers whole) one accepted request, to be awaited.

        Kept apart from the parsing so that the request and its parsed body are not
        held for the stream's life, and a plain function that returns the engine's
        coroutine, so that no frame of its own is held for it either (0.6 KiB per open
        stream, ``python -m bench.allocations``).
        """
        upstream = self.upstream
        path, payload = call.route.upstream, call.payload
        own = ((b"vary", b"accept"), (b"x-request-id", call.request_id.encode()))
        recording = None
        if self.store is not None and call.format is not None:
            recording = Recording(
                self.store,
                secrets.token_urlsafe(16),  # 128 bits (a uuid4 has 122)
                _principal_key(call.principal),
                self.linger,
                chat=call.chat,
            )
        start = StreamStart(
            call.route.name,
            call.format or "json",
            streaming=call.format is not None,
            model=call.model,
            principal=_principal_key(call.principal),
            request_id=call.request_id,
            stream_id=recording.stream_id if recording is not None else None,
            server=self._server[0],
            server_port=self._server[1],
        )

        def own_headers() -> list[tuple[str, str]]:
            # read when the call is made: the observers' watch (a trace) starts just before
            return [("x-request-id", call.request_id), *start.upstream_headers]

        if call.format is None:
            return relay_answer(
                send,
                call=lambda: upstream.post(
                    path, payload, call.forwarded, own_headers=own_headers()
                ),
                wait_disconnect=_http.DisconnectWaiter(receive),
                settings=self.settings,
                headers=own,
                observer=self.on_stream_end,
                start=start,
                observers=self.observers,
            )
        return run_stream(
            send,
            open_source=lambda: upstream.open(path, payload, call.forwarded, own_headers()),
            wait_disconnect=_http.DisconnectWaiter(receive),
            format=call.format,
            settings=self.settings,
            headers=own,
            observer=self.on_stream_end,
            recording=recording,
            encoder=_encoder(call),
            start=start,
            observers=self.observers,
        )

    async def _chat_stream_route(
        self, scope: Scope, receive: Receive, send: Send, chat_id: str
    ) -> None:
        """The AI SDK's resume (``GET /chat/{chatId}/stream``, from the chat's first part)
        and stop (``DELETE``); 204 when the chat has no active stream."""
        method = scope["method"]
        if method not in ("GET", "DELETE"):
            await _http.send_method_not_allowed(send, method, "GET, DELETE")
            return
        store = self.store
        if store is None:  # nothing was kept: nothing to resume (docs/frontends.md)
            if method == "GET":
                await _http.send_no_content(send)
            else:
                await _send_not_found(send)
            return
        owner = _principal_key(self.principal(Request(scope), None))
        key = _chat_key(owner, chat_id)
        try:
            stream_id = await store.chat_stream(key)
            info = await store.info(stream_id) if stream_id is not None else None
            if method == "DELETE":
                if stream_id is None or info is None:
                    await _send_not_found(send)
                    return
                await store.stop(stream_id)
                await _http.send_no_content(send)
                return
        except StoreUnavailable as exc:
            await _send_store_unavailable(send, exc)
            return
        if stream_id is None or info is None or info.ended:
            await _http.send_no_content(send)  # no active stream: the SDK shows what it has
            return
        try:
            fmt = _asked(scope) or "ai-sdk"
        except RequestRejected as exc:
            await _http.send_rejection(send, exc)
            return
        await self._follow(scope, send, receive, stream_id, fmt, 0, owner)

    async def _stream_route(
        self, scope: Scope, receive: Receive, send: Send, stream_id: str
    ) -> None:
        """``GET /streams/{id}`` resumes a stored stream; ``DELETE`` stops it."""
        method = scope["method"]
        if method not in ("GET", "DELETE"):
            await _http.send_method_not_allowed(send, method, "GET, DELETE")
            return
        store = self.store
        if store is None:
            await _http.send_error(
                send,
                404,
                "streams are not resumable on this relay (StreamRelay(store=...) turns it on)",
                code="not_found",
            )
            return
        try:
            fmt = _http.negotiate_format(scope, "sse") if method == "GET" else ""
            after = _position(scope) if method == "GET" else 0
        except RequestRejected as exc:
            await _http.send_rejection(send, exc)
            return
        key = _principal_key(self.principal(Request(scope), None))
        try:
            info = await store.info(stream_id)
            if info is None or (info.principal is not None and info.principal != key):
                # One answer for unknown, expired and foreign ids: no way to tell them apart.
                await _send_not_found(send)
                return
            if method == "DELETE":
                await store.stop(stream_id)
                await _http.send_no_content(send)
                return
        except StoreUnavailable as exc:
            await _send_store_unavailable(send, exc)
            return
        if fmt in ("openai", "text"):
            after = 0  # these formats cannot say where they are: always the whole stream
        try:
            info = await _caught_up(store, stream_id, info, after)
        except StoreUnavailable as exc:
            await _send_store_unavailable(send, exc)
            return
        if after > info.last:
            await _http.send_error(
                send,
                400,
                f"the position {after} is beyond the stream's last event ({info.last})",
                code="invalid_position",
            )
            return
        if info.ended and after >= info.last:
            await _http.send_no_content(send)  # all delivered: EventSource stops here
            return

        await self._follow(scope, send, receive, stream_id, fmt, after, key)

    async def _follow(
        self,
        scope: Scope,
        send: Send,
        receive: Receive,
        stream_id: str,
        fmt: str,
        after: int,
        principal: str | None,
    ) -> None:
        """Replay a stored stream after position ``after``, then follow it live."""
        store = self.store
        assert store is not None

        async def open_source() -> Source:
            try:
                return await follow(store, stream_id, after)
            except StoreUnavailable as exc:
                raise UpstreamUnavailable(
                    f"the stream store is unavailable: {exc}",
                    code="store_unavailable",
                    status_code=503,
                ) from None

        request_id = _http.request_id(scope)
        await run_stream(
            send,
            open_source=open_source,
            wait_disconnect=_http.DisconnectWaiter(receive),
            format=fmt,
            # The producer watches the upstream's silence; a reader waits as long as it.
            settings=dataclasses.replace(self.settings, idle_timeout=None),
            headers=(
                (b"vary", b"accept"),
                (b"x-stream-id", stream_id.encode()),
                (b"x-request-id", request_id.encode()),
            ),
            after=after,
            start=StreamStart(
                "streams",
                fmt,
                resumed=True,
                principal=principal,
                request_id=request_id,
                stream_id=stream_id,
            ),
            observers=self.observers,
        )

    async def _read_request(
        self, request: Request, receive: Receive, route: _Route, context: dict[str, Any]
    ) -> dict[str, Any]:
        # A missing type is refused too: a cross-site no-cors fetch sends none, and
        # requiring JSON is what forces such a request through a CORS preflight.
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise RequestRejected(
                415,
                f"content-type must be application/json, got {media or 'none'}",
                code="unsupported_media_type",
            )
        length = request.headers.get("content-length")
        raw = b""
        limits = self.limits
        timeout = math.inf if limits.body_timeout is None else limits.body_timeout
        with anyio.move_on_after(timeout) as reading:
            raw = await _http.read_body(
                receive, limits.max_body_bytes, int(length) if length and length.isdigit() else None
            )
        if reading.cancelled_caught:
            raise RequestRejected(
                408,
                f"the request body did not arrive within {limits.body_timeout}s",
                code="request_timeout",
            )
        try:
            parsed: Any = _json.loads(raw)
        except ValueError:
            raise RequestRejected(
                400, "the request body is not valid JSON", code="invalid_json"
            ) from None
        if not isinstance(parsed, dict):
            raise RequestRejected(
                400, "the request body must be a JSON object", code="invalid_body"
            )
        body: dict[str, Any] = parsed
        if route.ui is not None:
            body = self._from_front_end(route, body, context)
        if not isinstance(body.get(route.field), route.kinds):
            kinds = " or ".join(_JSON_NAMES[kind] for kind in route.kinds)
            raise RequestRejected(
                400,
                f"'{route.field}' is required and must be {kinds}",
                code=f"invalid_{route.field}",
            )
        if self.prepare is not None:
            body = await self._run_prepare(request, body)
        model = body.get("model")
        if self.allowed_models is not None and model not in self.allowed_models:
            raise RequestRejected(
                403, f"model {model!r} is not allowed on this relay", code="model_not_allowed"
            )
        if self.max_tokens is not None:
            _cap_tokens(body, self.max_tokens, route.caps)
        return body

    def _from_front_end(
        self, route: _Route, body: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        """A front end's body as a chat completion (the model: the body's, else
        ``default_model``, else 400)."""
        if route.ui == "ai-sdk":
            from . import uimessage  # here: most relays never need it

            converted = uimessage.chat_body(body)
            context["chat"] = body.get("id")
            context["message_id"] = uimessage.continued_message_id(body)
        else:
            from . import agui

            converted, thread_id, run_id = agui.chat_body(body)
            version = body.get("protocolVersion")
            context["run"] = (thread_id, run_id, version if isinstance(version, str) else None)
        if not converted.get("model"):
            if self.default_model is None:
                raise RequestRejected(
                    400,
                    "no model: send one in the body, or set StreamRelay(default_model=...)",
                    code="model_required",
                )
            converted["model"] = self.default_model
        return converted

    async def _run_prepare(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        assert self.prepare is not None
        try:
            result = self.prepare(request, body)
            if inspect.isawaitable(result):
                result = await result
        except HTTPException as exc:
            raise RequestRejected(exc.status_code, str(exc.detail), code="rejected") from None
        if result is None:
            return body
        if not isinstance(result, dict):
            raise TypeError("prepare() must return a dict body or None")
        prepared: dict[str, Any] = result
        return prepared

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


@dataclass(frozen=True, slots=True)
class _Slot:
    """A stream slot taken for a principal: in the store, or in this process."""

    store_key: str | None
    local: Hashable | None


def _principal_key(principal: Hashable | None) -> str | None:
    """The principal as the store keeps it (a string)."""
    return None if principal is None else str(principal)


def _position(scope: Scope) -> int:
    """The resume position: ``Last-Event-ID``, else ``?last_event_id=``, else 0."""
    raw = _http.header(scope, b"last-event-id")
    if raw is None:
        for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if key == "last_event_id":
                raw = value
                break
    if raw is None or raw == "":
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise RequestRejected(
            400,
            "the position (Last-Event-ID) must be a decimal event number",
            code="invalid_position",
        )
    return int(raw)


_CATCH_UP = 2.0
"""Seconds a resume waits for the store to hold its position: a store that does I/O
receives a live stream's events just after its client does."""


async def _caught_up(store: Store, stream_id: str, info: StreamInfo, after: int) -> StreamInfo:
    """``info``, once the store holds event ``after`` (or the stream ended, or
    :data:`_CATCH_UP` passed)."""
    deadline = anyio.current_time() + _CATCH_UP
    while after > info.last and not info.ended and anyio.current_time() < deadline:
        await anyio.sleep(0.02)
        fresh = await store.info(stream_id)
        if fresh is None:
            break
        info = fresh
    return info


async def _send_not_found(send: Send) -> None:
    """The one 404 of the stream routes: unknown, expired and foreign look the same."""
    await _http.send_error(
        send,
        404,
        "no such stream: it is unknown, has expired, or is not yours",
        code="stream_not_found",
    )


def _encoder(call: _Call) -> Encoder:
    """The encoder of an accepted call, with what its front end needs to know (the
    message an AI SDK answer continues, the AG-UI run it belongs to)."""
    assert call.format is not None
    now = time.time()
    if call.format == "ai-sdk" and call.message_id is not None:
        from .formats.ai_sdk import AISDKEncoder

        return AISDKEncoder(now=now, message_id=call.message_id)
    encoder = encoder_for(call.format, now=now)
    if call.hide_usage:
        from .formats.openai import OpenAIEncoder

        if isinstance(encoder, OpenAIEncoder):
            encoder.hide_usage()
    if call.run is not None:
        from .formats.ag_ui import AGUIEncoder

        if isinstance(encoder, AGUIEncoder):
            encoder.bind_run(*call.run)
    return encoder


def _chat_key(principal: str | Hashable | None, chat_id: str) -> str:
    """A chat as the store keeps it: bound to its principal, like a stream."""
    owner = "" if principal is None else str(principal)
    return f"{len(owner)}:{owner}:{chat_id}"


async def _send_store_unavailable(send: Send, exc: StoreUnavailable) -> None:
    await _http.send_error(
        send,
        503,
        f"the stream store is unavailable: {exc}",
        code="store_unavailable",
        type="server_error",
        headers=[("retry-after", "1")],
    )


def _client_address(request: Request, body: dict[str, Any] | None) -> Hashable | None:
    return request.client.host if request.client is not None else None


def _only_allowed(body: bytes, allowed: frozenset[str]) -> bytes:
    """A ``/models`` list with only the allowed models (left as it is if not a list)."""
    try:
        listing = json.loads(body)
    except ValueError:
        return body
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return body
    listing["data"] = [
        model for model in listing["data"] if isinstance(model, dict) and model.get("id") in allowed
    ]
    return json.dumps(listing, separators=(",", ":")).encode()


_JSON_NAMES: dict[type, str] = {list: "an array", str: "a string", dict: "an object"}


def _asked(scope: Scope) -> str | None:
    """The format the request asked for, ``None`` for an OpenAI client, or a 406."""
    try:
        return asked_format(
            format_param(scope.get("query_string", b"")), _http.header(scope, b"accept")
        )
    except UnsupportedFormat as exc:
        raise RequestRejected(
            406, str(exc), code="unsupported_format", headers={"vary": "accept"}
        ) from None


def _ask_usage(body: dict[str, Any]) -> bool:
    """Ask for usage in ``body``'s ``stream_options``; whether it had not asked itself."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    body["stream_options"] = {
        **(options if isinstance(options, dict) else {}),
        "include_usage": True,
    }
    return True


def _cap_tokens(body: dict[str, Any], cap: int, keys: tuple[str, ...]) -> None:
    present = False
    for key in keys:
        value = body.get(key)
        if value is not None:
            present = True
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RequestRejected(
                    400, f"{key} must be a positive integer", code="invalid_max_tokens"
                )
            body[key] = min(value, cap)
    if not present:
        body[keys[0]] = cap


def _route_path(scope: Scope) -> str:
    """The path below the mount point, whichever way the host expressed the mount.

    Starlette keeps ``path`` whole and extends ``root_path``; Litestar and others
    strip the prefix from ``path``. Both work. A trailing slash is dropped: some
    hosts add one (Litestar serves a mounted app's ``/streamrelay.js`` as
    ``/streamrelay.js/``) and clients send one.
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


_static_cache: dict[str, tuple[bytes, bytes]] = {}


async def _send_static(scope: Scope, send: Send, name: str, content_type: bytes) -> None:
    if name not in _static_cache:
        data = resources.files("streamrelay").joinpath("static").joinpath(name).read_bytes()
        _static_cache[name] = (data, b'"' + hashlib.sha256(data).hexdigest()[:32].encode() + b'"')
    data, etag = _static_cache[name]
    request_etags = [v for k, v in scope["headers"] if k == b"if-none-match"]
    if etag in request_etags:
        await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", etag)]})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(data)).encode()),
                (b"etag", etag),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})
