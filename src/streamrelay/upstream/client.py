""":class:`Upstream`: where the relay sends requests, with which key, over which transport.

One object holds everything about the upstream (URL, key, transport or your own
client, TLS, headers, forwarded client headers, connect timeout, keep-alive
expiry), validates it when built, and owns the connection pools. Build it once
and share it: between several :class:`~streamrelay.StreamRelay` mounts, and with
your own handlers through :meth:`Upstream.request` and
:func:`~streamrelay.relay_response`.

Three transports open the same kind of :class:`~streamrelay.sources.Source`:

* ``native`` (the default under asyncio): streamrelay's own HTTP/1.1 client on
  asyncio protocols (:mod:`.native`), close to a plain socket's cost;
* ``aiohttp``: aiohttp's client (:mod:`.aiohttp_impl`);
* ``httpx``: when you pass your own ``httpx.AsyncClient``, and under trio
  (:mod:`.httpx_impl`).

All three: TLS, keep-alive pooling, ``HTTP(S)_PROXY`` from the environment, a
connect timeout, and never following redirects (the key must not travel to
another host).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import ssl
import sys
import urllib.request
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import httpx

from .._version import __version__
from ..errors import (
    ConfigurationError,
    LocalProtocolError,
    RequestRejected,
    UpstreamStatusError,
)
from ..sources import Source, passthrough_headers
from . import aiohttp_impl, httpx_impl
from .http1 import check_header, request_head
from .native import Origin, Pool, default_ssl_context, open_native
from .redaction import is_secret_header, redact, redacting, secrets_of

__all__ = [
    "DEFAULT_UPSTREAM",
    "MAX_ANSWER_BYTES",
    "MissingAPIKeyWarning",
    "Transport",
    "Upstream",
    "UpstreamRequest",
    "resolve_upstream",
]

DEFAULT_UPSTREAM = "https://api.openai.com/v1"
MAX_ANSWER_BYTES = 32 * 1024 * 1024
"""The largest non-streaming answer :meth:`Upstream.post` reads (502 beyond)."""
Transport = Literal["auto", "native", "aiohttp", "httpx"]
_TRANSPORTS = ("auto", "native", "aiohttp", "httpx")
_NEVER_FORWARDED = frozenset({"authorization", "cookie", "host"})
_FRAMING = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "expect",
    }
)
"""Hop-by-hop and framing headers: the transport writes these itself. A configured or
forwarded one would give a request conflicting framing on a connection the pool
shares between users, the shape of request smuggling."""


_ENDPOINTS = ("/chat/completions", "/completions", "/responses", "/embeddings", "/models")
_KNOWN_PREFIXES = {
    "api.openai.com": "/v1",
    "api.mistral.ai": "/v1",
    "api.groq.com": "/openai/v1",
    "openrouter.ai": "/api/v1",
    "api.together.xyz": "/v1",
    "api.fireworks.ai": "/inference/v1",
}
"""Hosts whose API lives under a known prefix: a base URL without it can only 404."""


def resolve_upstream(upstream: str | None) -> str:
    """``upstream``, else ``STREAMRELAY_UPSTREAM``, else ``OPENAI_BASE_URL``, else OpenAI.

    It is the API's base URL (``https://api.openai.com/v1``), to which the relay
    appends ``/chat/completions``: an endpoint URL, or a known provider's host
    without its version prefix, is a :class:`~streamrelay.ConfigurationError`.

    >>> resolve_upstream("https://api.openai.com/v1/chat/completions")
    Traceback (most recent call last):
      ...
    streamrelay.errors.ConfigurationError: the upstream URL must be the API's base, without the endpoint: use 'https://api.openai.com/v1', not 'https://api.openai.com/v1/chat/completions'
    """
    url = (
        upstream
        or os.environ.get("STREAMRELAY_UPSTREAM")
        or os.environ.get("OPENAI_BASE_URL")
        or DEFAULT_UPSTREAM
    )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"upstream must be an http(s) URL, got {url!r}")
    url = url.rstrip("/")
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    for endpoint in _ENDPOINTS:
        if path.endswith(endpoint):
            base = parts._replace(path=path[: -len(endpoint)]).geturl()
            raise ConfigurationError(
                f"the upstream URL must be the API's base, without the endpoint: "
                f"use {base!r}, not {url!r}"
            )
    prefix = _KNOWN_PREFIXES.get((parts.hostname or "").lower())
    if prefix is not None and not (path == prefix or path.startswith(prefix + "/")):
        raise ConfigurationError(
            f"the upstream URL {url!r} lacks the API's version prefix: use "
            f"{parts._replace(path=prefix).geturl()!r}"
        )
    return url


class Upstream:
    """An OpenAI-compatible API the relay calls, with the server's key.

    >>> upstream = Upstream("https://api.openai.com/v1", api_key="sk-...")
    >>> upstream
    Upstream('https://api.openai.com/v1', transport='auto')

    Args:
        url: base URL of the API. Default: ``STREAMRELAY_UPSTREAM``, then
            ``OPENAI_BASE_URL``, then OpenAI.
        api_key: sent as ``Authorization: Bearer``. Default: ``OPENAI_API_KEY``.
        transport: ``"auto"`` (``"native"`` under asyncio, ``"httpx"`` under
            trio), ``"native"`` (streamrelay's own HTTP/1.1 client),
            ``"aiohttp"`` or ``"httpx"``.
        client: your own ``httpx.AsyncClient`` (implies ``transport="httpx"``;
            you close it).
        ssl_context: verifies the upstream's (and an https proxy's) certificate.
            Default: the system's CA store plus certifi's; ``SSL_CERT_FILE`` is
            honoured.
        headers: extra headers for every call (e.g. Azure's ``api-key``).
        forward_headers: client header names copied upstream. ``Authorization``,
            cookies and ``Host`` never are. A value that cannot be written in
            HTTP/1.1 (a control character) gets the client a 400 ``invalid_header``.
        connect_timeout: seconds to connect, TLS included (then 504).
        keepalive_expiry: seconds an idle pooled connection may be reused.
            Keep it below the upstream's own idle timeout (uvicorn's is 5 s).

    Only the configured headers and the forwarded client headers go upstream.
    Upstream bytes that quote the key (OpenAI's 401 does) reach clients redacted.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        transport: Transport = "auto",
        client: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        forward_headers: Iterable[str] = (),
        connect_timeout: float | None = 10.0,
        keepalive_expiry: float = 4.0,
    ) -> None:
        if transport not in _TRANSPORTS:
            raise ConfigurationError(
                f"transport must be 'auto', 'native', 'aiohttp' or 'httpx', got {transport!r}"
            )
        if client is not None and not isinstance(client, httpx.AsyncClient):
            raise ConfigurationError("client must be an httpx.AsyncClient")
        if transport == "aiohttp" and client is None:
            aiohttp_impl.require_aiohttp()
        if connect_timeout is not None and not (
            isinstance(connect_timeout, (int, float)) and connect_timeout > 0
        ):
            raise ConfigurationError(
                f"connect_timeout must be a positive number of seconds or None, "
                f"got {connect_timeout!r}"
            )
        if isinstance(keepalive_expiry, bool) or not (
            isinstance(keepalive_expiry, (int, float)) and keepalive_expiry >= 0
        ):
            raise ConfigurationError(
                f"keepalive_expiry must be a number of seconds (0 disables reuse), "
                f"got {keepalive_expiry!r}"
            )
        if isinstance(forward_headers, (str, bytes)):
            raise ConfigurationError(
                f"forward_headers must be a list of header names, not a string: "
                f"use [{forward_headers!r}]"
            )
        forward_headers = list(forward_headers)
        for name in forward_headers:
            if not isinstance(name, str):
                raise ConfigurationError(f"forward_headers must be header names, got {name!r}")
            try:
                check_header(name, "")
            except LocalProtocolError as exc:
                raise ConfigurationError(f"forward_headers: {exc}") from None
        _refuse_framing("forward_headers", forward_headers)
        _refuse_framing("headers", list(headers or {}))
        self.base_url = resolve_upstream(url)
        # Azure puts ?api-version= in the base URL: paths go before the query.
        prefix, sep, query = self.base_url.partition("?")
        self._prefix, self._query = prefix.rstrip("/"), sep + query
        self.client = client
        self.transport: Transport = "httpx" if client is not None else transport
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = float(keepalive_expiry)
        self._ssl_context = ssl_context
        self.forward_headers = frozenset(h.lower() for h in forward_headers) - _NEVER_FORWARDED
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        base = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "accept-encoding": "identity",  # compressed upstream bytes would be held back
            "user-agent": f"streamrelay/{__version__}",
        }
        if key:
            base["authorization"] = f"Bearer {key}"
        for name, value in (headers or {}).items():
            base[name.lower()] = value
        try:  # a bad header would otherwise fail every request
            request_head("POST", "/", "upstream", base.items(), 0)
        except LocalProtocolError as exc:
            raise ConfigurationError(f"invalid upstream headers: {exc}") from None
        self._headers = base
        self.secrets = secrets_of(key, (headers or {}).items())
        """The values redacted from upstream bytes (the key, secret-looking headers)."""
        credentials = bool(key) or any(is_secret_header(name) for name in headers or {})
        if not credentials and not _is_local(urlsplit(self.base_url).hostname or ""):
            warnings.warn(
                f"no API key for the upstream {self.base_url}: set OPENAI_API_KEY or pass "
                "Upstream(api_key=...); the upstream will refuse every request",
                MissingAPIKeyWarning,
                stacklevel=2,
            )
        self._owned_httpx: httpx.AsyncClient | None = None
        # aiohttp sessions and native pools belong to one event loop each.
        self._pools: dict[int, tuple[Any, Callable[[Any], Awaitable[None]]]] = {}
        self._closers: list[AsyncGenerator[None, None]] = []
        # Read once: aiohttp's trust_env reads the environment and ~/.netrc on every
        # request, in a thread, which cost about a tenth of the relay's CPU.
        self._proxy, proxy_auth = _env_proxy(self._prefix)
        # Proxy credentials go on the CONNECT of a tunnel (https upstreams); a
        # plain-http request goes to the proxy itself and carries them.
        tunnel = self._prefix.startswith("https:")
        self._proxy_headers = proxy_auth if tunnel else None
        self._direct_headers = self._headers if tunnel else {**self._headers, **(proxy_auth or {})}
        if (
            tunnel
            and self._proxy is not None
            and self._proxy.startswith("https:")
            and sys.version_info < (3, 11)
            and self.transport in ("auto", "native")
        ):
            raise ConfigurationError(
                "an https:// proxy in front of an https upstream needs Python 3.11 (TLS "
                "inside TLS); use an http:// proxy URL, or transport='httpx'"
            )
        parts = urlsplit(self._prefix)
        if not parts.hostname:
            raise ConfigurationError(f"the upstream URL {self.base_url!r} has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigurationError(
                f"the upstream URL {self.base_url!r} has an invalid port"
            ) from exc
        self._origin = Origin(parts.scheme, parts.hostname, port)
        # Through a plain-http proxy, the request line carries the absolute URL.
        self._target_prefix = parts.path if self._proxy is None or tunnel else self._prefix

    @property
    def host(self) -> str:
        """The upstream's host name (``api.openai.com``), for metrics and traces."""
        return self._origin.host

    @property
    def port(self) -> int:
        """The upstream's port (443 for ``https`` unless the URL names one)."""
        return self._origin.port

    def __repr__(self) -> str:  # never shows the key
        return f"Upstream({self.base_url!r}, transport={self.transport!r})"

    def request(
        self,
        path: str,
        body: Mapping[str, Any] | bytes,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> UpstreamRequest:
        """A call to make, for :func:`~streamrelay.relay_response` to open and relay.

        Nothing is sent until the response runs; the upstream's errors then become
        proper HTTP answers (its status passed through, or 502/504) and the
        first-byte timeout applies, exactly as on the mount::

            upstream = Upstream("https://api.openai.com/v1")

            async def chat(request):
                body = await request.json()
                return relay_response(upstream.request("/chat/completions", body), request)

        ``body`` gets ``"stream": true``. ``headers`` are client headers, filtered
        through ``forward_headers`` like the mount's.
        """
        if isinstance(body, bytes):
            payload = body
        elif isinstance(body, Mapping):
            payload = json.dumps({**body, "stream": True}, separators=(",", ":")).encode()
        else:
            raise TypeError(f"body must be a dict or bytes, not {type(body).__name__}")
        return UpstreamRequest(self, path, payload, self.forwarded(headers))

    async def open(
        self,
        path: str,
        body: bytes,
        client_headers: Iterable[tuple[str, str]] = (),
        own_headers: Iterable[tuple[str, str]] = (),
    ) -> Source:
        """POST ``body`` to ``base_url + path`` and return the streaming response.

        Raises :class:`~streamrelay.UpstreamStatusError` for a non-2xx answer (its
        body and headers redacted), :class:`~streamrelay.UpstreamUnavailable`
        when the upstream cannot be reached, and
        :class:`~streamrelay.RequestRejected` (400 ``invalid_header``, nothing
        sent) when a forwarded client header cannot be written in an HTTP/1.1
        request: a control character in its value, or a character beyond latin-1.

        ``client_headers`` are the client's, of which those in ``forward_headers``
        go on; ``own_headers`` are the relay's own (its ``x-request-id``, an
        observer's ``traceparent``), sent as they are and winning over both.
        """
        transport = self._resolved_transport()
        headers = dict(self._headers if transport == "httpx" else self._direct_headers)
        self._add(headers, client_headers, own_headers)  # every transport alike
        try:
            source = await self._open(transport, path, body, headers)
        except UpstreamStatusError as exc:
            if self.secrets:
                exc.body = redact(exc.body, self.secrets)
                exc.headers = [
                    (k, redact(v.encode(), self.secrets).decode()) for k, v in exc.headers
                ]
            raise
        if self.secrets and source.kind == "sse":
            source.items = redacting(source.items, self.secrets)
        return source

    async def get(
        self, path: str, client_headers: Iterable[tuple[str, str]] = ()
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """GET ``base_url + path`` whole, for the small JSON answers of ``/models``:
        the status, the headers a client may see (:data:`~streamrelay.sources.PASSTHROUGH_HEADERS`)
        and the body, with the key redacted. Raises
        :class:`~streamrelay.UpstreamUnavailable` when the upstream cannot be reached."""
        headers = {
            name: value
            for name, value in self._headers.items()
            if name not in ("content-type", "accept")
        }
        headers["accept"] = "application/json"
        self._add(headers, client_headers)
        status, answer_headers, body = await httpx_impl.get(
            self.client or self._own_httpx(), self._prefix + path + self._query, headers
        )
        kept = passthrough_headers(answer_headers)
        if self.secrets:
            body = redact(body, self.secrets)
            kept = [(k, redact(v.encode(), self.secrets).decode()) for k, v in kept]
        return status, kept, body

    async def post(
        self,
        path: str,
        body: bytes,
        client_headers: Iterable[tuple[str, str]] = (),
        *,
        own_headers: Iterable[tuple[str, str]] = (),
        limit: int = MAX_ANSWER_BYTES,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """POST ``body`` to ``base_url + path`` and read the answer whole, for the
        non-streaming calls: the status, the headers a client may see
        (:data:`~streamrelay.sources.PASSTHROUGH_HEADERS`) and the body, with the
        key redacted. Any status is returned, not raised; the same failures as
        :meth:`open` are raised when there is no answer. Nothing is ever sent twice.
        """
        headers = dict(self._headers)
        headers["accept"] = "application/json"
        self._add(headers, client_headers, own_headers)
        status, answer_headers, answer = await httpx_impl.post(
            self.client or self._own_httpx(),
            self._prefix + path + self._query,
            body,
            headers,
            limit,
        )
        kept = passthrough_headers(answer_headers)
        if self.secrets:
            answer = redact(answer, self.secrets)
            kept = [(k, redact(v.encode(), self.secrets).decode()) for k, v in kept]
        return status, kept, answer

    def _add(
        self,
        headers: dict[str, str],
        client_headers: Iterable[tuple[str, str]],
        own_headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Add to ``headers`` the forwarded client headers (checked), then the relay's
        own, which win."""
        for name, value in self._checked(client_headers):
            headers[name] = value
        for name, value in own_headers:
            headers[name.lower()] = value

    def _checked(self, client_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The forwarded client headers, each checked for what HTTP/1.1 can carry."""
        checked = []
        for name, value in self.forwarded(client_headers):
            # The client's mistake, not the upstream's, and a line break would let a
            # client add headers of its own.
            try:
                check_header(name, value)
            except LocalProtocolError as exc:
                raise RequestRejected(
                    400, f"{exc}: it cannot be forwarded upstream", code="invalid_header"
                ) from None
            checked.append((name.lower(), value))
        return checked

    def forwarded(self, client_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The client headers :meth:`open` would forward (those in ``forward_headers``)."""
        forward = self.forward_headers
        return [(k, v) for k, v in client_headers if k.lower() in forward] if forward else []

    async def aclose(self) -> None:
        """Close the connection pools this object created (not a client you passed in)."""
        pools, self._pools = self._pools, {}
        self._closers.clear()
        for pool, close in pools.values():
            await close(pool)
        if self._owned_httpx is not None:
            client, self._owned_httpx = self._owned_httpx, None
            await client.aclose()

    async def _open(
        self, transport: Transport, path: str, body: bytes, headers: dict[str, str]
    ) -> Source:
        if transport == "native":
            pool: Pool = await self._loop_pool(self._new_pool, Pool.aclose)
            target = self._target_prefix + path + self._query
            return await open_native(pool, self._origin, target, self._prefix + path, headers, body)
        url = self._prefix + path + self._query
        if transport == "aiohttp":
            session = await self._loop_pool(
                lambda: aiohttp_impl.new_session(self.connect_timeout, self.keepalive_expiry),
                aiohttp_impl.close_session,
            )
            return await aiohttp_impl.open_aiohttp(
                session,
                url,
                body,
                headers,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
                ssl_context=self._ssl() if self._prefix.startswith("https:") else True,
            )
        return await httpx_impl.open_httpx(self.client or self._own_httpx(), url, body, headers)

    def _resolved_transport(self) -> Transport:
        if self.transport == "httpx":
            return "httpx"
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio: the other transports need asyncio
            return "httpx"
        return "native" if self.transport == "auto" else self.transport

    async def _loop_pool(
        self, create: Callable[[], Any], close: Callable[[Any], Awaitable[None]]
    ) -> Any:
        """This event loop's pool (a native pool or an aiohttp session), created on first use."""
        loop = asyncio.get_running_loop()
        pool, _ = self._pools.get(id(loop), (None, close))
        if pool is None or pool.closed:
            pool = create()
            self._pools[id(loop)] = pool, close
            # A mounted app gets no lifespan events, so close the pool when the
            # event loop shuts down: asyncio finalizes pending async generators then.
            closer = _close_at_loop_shutdown(pool, close)
            await anext(closer)
            self._closers.append(closer)
        return pool

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        return self._ssl_context

    def _new_pool(self) -> Pool:
        proxy = None
        if self._proxy is not None:
            url = urlsplit(self._proxy)
            scheme = url.scheme if url.scheme in ("http", "https") else "http"
            proxy = Origin(
                scheme, url.hostname or "", url.port or (443 if scheme == "https" else 80)
            )
        return Pool(
            connect_timeout=self.connect_timeout,
            keepalive_expiry=self.keepalive_expiry,
            ssl_context=self._ssl,
            proxy=proxy,
            proxy_headers=list((self._proxy_headers or {}).items()),
        )

    def _own_httpx(self) -> httpx.AsyncClient:
        if self._owned_httpx is None:
            self._owned_httpx = httpx_impl.new_client(
                self.connect_timeout, self.keepalive_expiry, self._ssl_context
            )
        return self._owned_httpx


class UpstreamRequest:
    """A call :meth:`Upstream.request` prepared; :func:`~streamrelay.relay_response`
    opens it inside the pipeline (under the first-byte timeout)."""

    __slots__ = ("body", "headers", "path", "upstream")

    def __init__(
        self, upstream: Upstream, path: str, body: bytes, headers: list[tuple[str, str]]
    ) -> None:
        self.upstream = upstream
        self.path = path
        self.body = body
        self.headers = headers

    def __repr__(self) -> str:
        return f"UpstreamRequest({self.upstream.base_url + self.path!r})"

    async def open(self) -> Source:
        """Send the request; the streaming response (see :meth:`Upstream.open`)."""
        return await self.upstream.open(self.path, self.body, self.headers)


class MissingAPIKeyWarning(UserWarning):
    """An :class:`Upstream` on another host has no key (nor a secret-looking header)."""


def _is_local(host: str) -> bool:
    """A host a keyless upstream plausibly runs on: loopback, a private or link-local
    address, a single-label name (a container's service name) or a local domain."""
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (
            "." not in host
            or host == "localhost"
            or host.endswith((".localhost", ".local", ".internal", ".lan", ".home.arpa"))
        )
    return address.is_loopback or address.is_private or address.is_link_local


def _refuse_framing(option: str, names: Iterable[str]) -> None:
    bad = sorted({n for n in names if n.lower() in _FRAMING or n.lower().startswith("proxy-")})
    if bad:
        raise ConfigurationError(
            f"{option} may not name hop-by-hop or framing headers ({', '.join(bad)}): "
            "the transport sets those itself"
        )


async def _close_at_loop_shutdown(
    pool: Any, close: Callable[[Any], Awaitable[None]]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not pool.closed:
            await close(pool)


def _env_proxy(url: str) -> tuple[str | None, dict[str, str] | None]:
    """The proxy ``HTTP_PROXY``/``HTTPS_PROXY`` name for ``url`` unless ``NO_PROXY``
    exempts it, and the ``Proxy-Authorization`` for a ``user:password@`` proxy URL."""
    parts = urlsplit(url)
    # Not in typeshed, but public since Python 3.0; unlike proxy_bypass it reads only NO_PROXY.
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):  # type: ignore[attr-defined]
        return None, None
    proxy = urllib.request.getproxies_environment().get(parts.scheme)
    if not proxy:
        return None, None
    proxy_url = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if proxy_url.username is None:
        return proxy_url.geturl(), None
    credentials = f"{unquote(proxy_url.username)}:{unquote(proxy_url.password or '')}"
    bare = proxy_url._replace(netloc=proxy_url.netloc.rpartition("@")[2])
    basic = base64.b64encode(credentials.encode()).decode()
    return bare.geturl(), {"proxy-authorization": f"Basic {basic}"}
