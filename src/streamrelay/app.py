"""``StreamRelay``: the mountable ASGI app that relays ``POST <mount>/chat/completions``."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from importlib import resources
from typing import Any, Literal

import anyio
import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from . import _http, _json
from .errors import ConfigurationError, RequestRejected, UnsupportedFormat, UpstreamStatusError
from .formats import FORMATS, Encoder, encoder_for
from .negotiation import format_param, negotiate
from .pipeline import StreamSettings, run_stream
from .sse import DEFAULT_MAX_EVENT_BYTES
from .upstream import UpstreamClient, resolve_upstream

__all__ = ["PrepareHook", "PrincipalHook", "StreamRelay"]

logger = logging.getLogger("streamrelay")

PrepareHook = Callable[
    [Request, dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"
]
"""``prepare(request, body)``: return a new body (or ``None`` to keep it), or raise
:class:`~streamrelay.RequestRejected` to refuse the request. May be sync or async."""

PrincipalHook = Callable[[Request, dict[str, Any]], "Hashable | None"]
"""``principal(request, body)``: who a request belongs to, for ``max_streams_per_principal``
(``None``: not limited). The default is the client's IP address."""

REDACTED = b"[redacted]"
"""What replaces the API key (and other secret upstream header values) in upstream bytes."""
_SECRET_HEADER_WORDS = ("authorization", "key", "token", "secret")

_STATIC = {
    "/streamrelay.js": ("streamrelay.js", b"text/javascript; charset=utf-8"),
    "/streamrelay.d.ts": ("streamrelay.d.ts", b"application/typescript; charset=utf-8"),
}


class StreamRelay:
    """A pure ASGI app that relays OpenAI-compatible chat streams, re-framed per client.

    Mount it anywhere::

        relay = StreamRelay(upstream="https://api.openai.com/v1", api_key="sk-...")
        app = Starlette(routes=[Mount("/ai", relay)])      # or FastAPI's app.mount

    It serves ``POST <mount>/chat/completions`` (trailing slash tolerated), adds
    the server's key, forces ``stream: true``, and answers in the negotiated
    format (``?format=``, then ``Accept``, then ``default_format``). It also
    serves the browser client at ``<mount>/streamrelay.js``.

    Args:
        upstream: base URL of the OpenAI-compatible API. Default:
            ``STREAMRELAY_UPSTREAM``, then ``OPENAI_BASE_URL``, then OpenAI.
        api_key: sent upstream as ``Authorization: Bearer``. Default: ``OPENAI_API_KEY``.
        heartbeat: seconds of silence before a keep-alive; ``None`` disables.
        default_format: ``"sse"``, ``"ndjson"``, ``"text"`` or ``"openai"``.
        connect_timeout: seconds to connect to the upstream (then 504).
        first_byte_timeout: seconds for the upstream to answer (then 504).
        idle_timeout: seconds of upstream silence mid-stream (then an error event).
        send_timeout: seconds a client may accept nothing before it is dropped.
        max_body_bytes: largest request body accepted (413 beyond).
        max_event_bytes: largest upstream line or event accepted.
        allowed_models: if given, other ``model`` values are refused (403).
        max_tokens: cap on ``max_tokens``/``max_completion_tokens``; set if absent.
        prepare: ``prepare(request, body)`` hook for auth, quotas, prompt injection.
        client: your own ``httpx.AsyncClient`` for upstream calls (see
            docs/performance.md for what it costs at high concurrency).
        transport: ``"auto"`` (``"native"`` under asyncio, ``"httpx"`` under trio),
            ``"native"`` (streamrelay's own HTTP/1.1 client), ``"aiohttp"`` or ``"httpx"``.
        ssl_context: verifies the upstream's certificate (default: the system's
            CA store plus certifi's; ``SSL_CERT_FILE`` is honoured).
        upstream_headers: extra headers for every upstream call (e.g. Azure's ``api-key``).
        forward_headers: client header names copied upstream (never auth or cookies).
        body_timeout: seconds to receive the whole request body (then 408).
        max_header_bytes: largest total size of the request's header names and
            values (then 431; some servers, like uvicorn with httptools, set none).
        max_streams_per_principal: concurrent streams one principal may hold
            (then 429); counted per process.
        principal: ``principal(request, body)`` names the principal (default:
            the client's IP address); ``None`` exempts the request.
    """

    def __init__(
        self,
        upstream: str | None = None,
        api_key: str | None = None,
        *,
        heartbeat: float | None = 15.0,
        default_format: str = "sse",
        connect_timeout: float | None = 10.0,
        first_byte_timeout: float | None = 60.0,
        idle_timeout: float | None = 300.0,
        send_timeout: float | None = 30.0,
        max_body_bytes: int = 1024 * 1024,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        allowed_models: Iterable[str] | None = None,
        max_tokens: int | None = None,
        prepare: PrepareHook | None = None,
        client: httpx.AsyncClient | None = None,
        transport: Literal["auto", "native", "aiohttp", "httpx"] = "auto",
        ssl_context: ssl.SSLContext | None = None,
        upstream_headers: Mapping[str, str] | None = None,
        forward_headers: Iterable[str] = (),
        body_timeout: float | None = 30.0,
        max_header_bytes: int = 32 * 1024,
        max_streams_per_principal: int | None = None,
        principal: PrincipalHook | None = None,
    ) -> None:
        if default_format not in FORMATS:
            raise ConfigurationError(
                f"default_format must be one of {', '.join(FORMATS)}, got {default_format!r}"
            )
        if max_body_bytes <= 0:
            raise ConfigurationError("max_body_bytes must be positive")
        if max_tokens is not None and max_tokens <= 0:
            raise ConfigurationError("max_tokens must be positive")
        if body_timeout is not None and not body_timeout > 0:
            raise ConfigurationError("body_timeout must be a positive number of seconds or None")
        if max_header_bytes <= 0:
            raise ConfigurationError("max_header_bytes must be positive")
        if max_streams_per_principal is not None and max_streams_per_principal <= 0:
            raise ConfigurationError("max_streams_per_principal must be positive")
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise ConfigurationError("client must be an httpx.AsyncClient")
        self.default_format = default_format
        self.settings = StreamSettings(
            heartbeat=heartbeat,
            first_byte_timeout=first_byte_timeout,
            idle_timeout=idle_timeout,
            send_timeout=send_timeout,
            max_event_bytes=max_event_bytes,
        )
        self.max_body_bytes = max_body_bytes
        self.allowed_models = frozenset(allowed_models) if allowed_models is not None else None
        self.max_tokens = max_tokens
        self.prepare = prepare
        self.body_timeout = body_timeout
        self.max_header_bytes = max_header_bytes
        self.max_streams_per_principal = max_streams_per_principal
        self.principal: PrincipalHook = principal or _client_address
        self._streams: Counter[Hashable] = Counter()
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        # Upstream bytes never carry the key to a client (OpenAI's 401 quotes it).
        self._secrets = tuple(
            secret.encode()
            for secret in (
                key,
                *(
                    value
                    for name, value in (upstream_headers or {}).items()
                    if any(word in name.lower() for word in _SECRET_HEADER_WORDS)
                ),
            )
            if secret and len(secret) >= 8
        )
        self.upstream = UpstreamClient(
            resolve_upstream(upstream),
            key,
            client=client,
            transport=transport,
            connect_timeout=connect_timeout,
            headers=upstream_headers,
            forward=forward_headers,
            ssl_context=ssl_context,
        )

    def __repr__(self) -> str:
        return f"StreamRelay(upstream={self.upstream.base_url!r})"

    async def aclose(self) -> None:
        """Close the upstream connection pools (called on lifespan shutdown when top-level)."""
        await self.upstream.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not ours; the host routes them
        path = _route_path(scope)
        if path == "/chat/completions":
            if scope["method"] != "POST":
                await _http.send_error(
                    send,
                    405,
                    f"method {scope['method']} not allowed; use POST",
                    code="method_not_allowed",
                    headers=[("allow", "POST")],
                )
                return
            await self._chat(scope, receive, send)
        elif path in _STATIC and scope["method"] in ("GET", "HEAD"):
            await _send_static(scope, send, *_STATIC[path])
        else:
            await _http.send_error(
                send, 404, f"no route {path}; POST /chat/completions", code="not_found"
            )

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = await self._accept(scope, receive, send)
        if accepted is not None:
            await self._relay(receive, send, *accepted)

    async def _accept(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[bytes, Encoder, list[tuple[str, str]], Hashable | None] | None:
        """Read and check the request; send the error and return ``None`` if refused."""
        if sum(len(k) + len(v) for k, v in scope["headers"]) > self.max_header_bytes:
            await _http.send_error(
                send,
                431,
                f"the request headers exceed {self.max_header_bytes} bytes",
                code="request_headers_too_large",
            )
            return None
        request = Request(scope)
        try:
            fmt = negotiate(
                format_param(scope.get("query_string", b"")),
                request.headers.get("accept"),
                self.default_format,
            )
            body = await self._read_request(request, receive)
        except UnsupportedFormat as exc:
            await _http.send_error(
                send, 406, str(exc), code="unsupported_format", headers=[("vary", "accept")]
            )
            return None
        except RequestRejected as exc:
            await _http.send_rejection(send, exc)
            return None
        except _http.ClientDisconnected:
            return None
        # Built once per request and held for the stream's life: the stdlib's
        # exact-size bytes, not orjson's (which keeps a 4 KiB buffer per result).
        payload = json.dumps(body, separators=(",", ":")).encode()
        principal = None
        if self.max_streams_per_principal is not None:
            principal = self.principal(request, body)
            if principal is not None:
                if self._streams[principal] >= self.max_streams_per_principal:
                    await _http.send_error(
                        send,
                        429,
                        f"at most {self.max_streams_per_principal} concurrent streams per client",
                        code="too_many_streams",
                        headers=[("retry-after", "1")],
                    )
                    return None
                self._streams[principal] += 1
        forwarded = self.upstream.forwarded(request.headers.items())
        return payload, encoder_for(fmt), forwarded, principal

    async def _relay(
        self,
        receive: Receive,
        send: Send,
        payload: bytes,
        encoder: Encoder,
        client_headers: list[tuple[str, str]],
        principal: Hashable | None,
    ) -> None:
        """Stream one accepted request. (Kept apart from the parsing so that the
        request and its parsed body are not held for the stream's life.)"""
        secrets = self._secrets

        async def open_source() -> Any:
            try:
                source = await self.upstream.open("/chat/completions", payload, client_headers)
            except UpstreamStatusError as exc:
                exc.body = _redact(exc.body, secrets)
                exc.headers = [(k, _redact(v.encode(), secrets).decode()) for k, v in exc.headers]
                raise
            if secrets and source.kind == "sse":
                source.items = _redacting(source.items, secrets)
            return source

        async def wait_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        try:
            await run_stream(
                send,
                open_source=open_source,
                wait_disconnect=wait_disconnect,
                encoder=encoder,
                settings=self.settings,
                headers=((b"vary", b"accept"),),
            )
        finally:
            if principal is not None:
                self._streams[principal] -= 1
                if self._streams[principal] <= 0:
                    del self._streams[principal]

    async def _read_request(self, request: Request, receive: Receive) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "application/json")
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise RequestRejected(
                415,
                f"content-type must be application/json, got {media or 'none'}",
                code="unsupported_media_type",
            )
        length = request.headers.get("content-length")
        raw = b""
        timeout = math.inf if self.body_timeout is None else self.body_timeout
        with anyio.move_on_after(timeout) as reading:
            raw = await _http.read_body(
                receive, self.max_body_bytes, int(length) if length and length.isdigit() else None
            )
        if reading.cancelled_caught:
            raise RequestRejected(
                408,
                f"the request body did not arrive within {self.body_timeout}s",
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
        if not isinstance(body.get("messages"), list):
            raise RequestRejected(
                400, "'messages' is required and must be an array", code="invalid_messages"
            )
        if self.prepare is not None:
            body = await self._run_prepare(request, body)
        model = body.get("model")
        if self.allowed_models is not None and model not in self.allowed_models:
            raise RequestRejected(
                403, f"model {model!r} is not allowed on this relay", code="model_not_allowed"
            )
        if self.max_tokens is not None:
            _cap_tokens(body, self.max_tokens)
        body["stream"] = True
        return body

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


def _client_address(request: Request, body: dict[str, Any]) -> Hashable | None:
    return request.client.host if request.client is not None else None


def _redact(data: bytes, secrets: tuple[bytes, ...]) -> bytes:
    for secret in secrets:
        if secret in data:
            data = data.replace(secret, REDACTED)
    return data


async def _redacting(
    items: AsyncIterator[bytes], secrets: tuple[bytes, ...]
) -> AsyncIterator[bytes]:
    """Upstream SSE bytes with every secret replaced, even one split across reads.

    Only a read's tail that could begin a secret is held back until the next
    read; event streams end their reads with a line break, so nothing is
    delayed in practice. (An async generator: the cheapest wrapper per read.)
    """
    carry = b""
    try:
        async for chunk in items:
            if type(chunk) is not bytes:
                chunk = bytes(chunk)
            if not carry and chunk.endswith(b"\n"):
                # The usual read, ending a line: no secret (a header value, so free
                # of line breaks) can continue into the next read.
                yield _redact(chunk, secrets)
                continue
            data = _redact(carry + chunk, secrets)
            hold = max(_pending_prefix(data, secret) for secret in secrets)
            data, carry = (data[:-hold], data[-hold:]) if hold else (data, b"")
            if data:
                yield data
        if carry:
            yield carry
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def _pending_prefix(data: bytes, secret: bytes) -> int:
    """The length of the longest tail of ``data`` that is a proper prefix of ``secret``."""
    first = secret[:1]
    start = max(len(data) - len(secret) + 1, 0)
    at = data.find(first, start)
    while at != -1:
        if secret.startswith(data[at:]):
            return len(data) - at
        at = data.find(first, at + 1)
    return 0


def _cap_tokens(body: dict[str, Any], cap: int) -> None:
    present = False
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None:
            present = True
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise RequestRejected(
                    400, f"{key} must be a positive integer", code="invalid_max_tokens"
                )
            body[key] = min(value, cap)
    if not present:
        body["max_tokens"] = cap


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
