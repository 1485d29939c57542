"""Calling the OpenAI-compatible upstream: key handling, header allow-list, transports.

Three transports open the same kind of :class:`~streamrelay.sources.Source`:

* ``native`` (the default under asyncio): streamrelay's own HTTP/1.1 client on
  asyncio protocols (:mod:`._connection`), close to a plain socket's cost in CPU
  and memory (see ``docs/performance.md``);
* ``aiohttp``: aiohttp's client (``pip install 'streamrelay[aiohttp]'``);
* ``httpx``: used when you pass your own ``httpx.AsyncClient``, or under trio.
  Its pool scan grows with every open connection.

All three: TLS, keep-alive pooling, ``HTTP(S)_PROXY`` from the environment, a
connect timeout, and never following redirects (the key must not travel to
another host).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import sys
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

import httpx

from ._connection import ConnectTimeout, Origin, Pool, ProxyRefused, default_ssl_context
from ._http1 import request_head
from ._version import __version__
from .errors import ConfigurationError, ProtocolError, UpstreamStatusError, UpstreamUnavailable
from .sources import Source, _keep, _read_bounded, from_aiohttp, from_httpx

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DEFAULT_UPSTREAM", "UpstreamClient", "resolve_upstream"]

DEFAULT_UPSTREAM = "https://api.openai.com/v1"
Transport = Literal["auto", "native", "aiohttp", "httpx"]


def resolve_upstream(upstream: str | None) -> str:
    """``upstream``, else ``STREAMRELAY_UPSTREAM``, else ``OPENAI_BASE_URL``, else OpenAI."""
    url = (
        upstream
        or os.environ.get("STREAMRELAY_UPSTREAM")
        or os.environ.get("OPENAI_BASE_URL")
        or DEFAULT_UPSTREAM
    )
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"upstream must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


class UpstreamClient:
    """Opens streaming POSTs to ``base_url`` with the relay's key.

    Only ``headers`` you configure and the client headers named in ``forward``
    go upstream; the client's ``Authorization`` and cookies never do.
    ``ssl_context`` verifies the upstream's (and an https proxy's) certificate;
    by default the system's CA store plus certifi's.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        transport: Transport = "auto",
        connect_timeout: float | None = 10.0,
        headers: Mapping[str, str] | None = None,
        forward: Iterable[str] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if transport not in ("auto", "native", "aiohttp", "httpx"):
            raise ConfigurationError(
                f"transport must be 'auto', 'native', 'aiohttp' or 'httpx', got {transport!r}"
            )
        if transport == "aiohttp" and client is None:
            # Imported now, not on the first request (0.3 s of its TTFB), and a
            # missing package is a configuration error rather than a 500 later.
            try:
                import aiohttp  # noqa: F401
            except ImportError as exc:
                raise ConfigurationError(
                    "transport='aiohttp' needs aiohttp: pip install 'streamrelay[aiohttp]'"
                ) from exc
        self.base_url = base_url.rstrip("/")
        # Azure puts ?api-version= in the base URL: paths go before the query.
        prefix, sep, query = self.base_url.partition("?")
        self._prefix, self._query = prefix.rstrip("/"), sep + query
        self._client = client
        self._transport: Transport = "httpx" if client is not None else transport
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._forward = frozenset(h.lower() for h in forward) - {"authorization", "cookie", "host"}
        base = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "accept-encoding": "identity",  # compressed upstream bytes would be held back
            "user-agent": f"streamrelay/{__version__}",
        }
        if api_key:
            base["authorization"] = f"Bearer {api_key}"
        for name, value in (headers or {}).items():
            base[name.lower()] = value
        try:  # a bad header would otherwise fail every request
            request_head("POST", "/", "upstream", base.items(), 0)
        except ProtocolError as exc:
            raise ConfigurationError(f"invalid upstream_headers: {exc}") from None
        self._headers = base
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
            and self._transport in ("auto", "native")
        ):
            raise ConfigurationError(
                "an https:// proxy in front of an https upstream needs Python 3.11 (TLS "
                "inside TLS); use an http:// proxy URL, or transport='httpx'"
            )
        url = urlsplit(self._prefix)
        if not url.hostname:
            raise ConfigurationError(f"the upstream URL {base_url!r} has no host")
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError as exc:
            raise ConfigurationError(f"the upstream URL {base_url!r} has an invalid port") from exc
        self._origin = Origin(url.scheme, url.hostname, port)
        # Through a plain-http proxy, the request line carries the absolute URL.
        self._target_prefix = url.path if self._proxy is None or tunnel else self._prefix

    def __repr__(self) -> str:  # never shows the key
        return f"UpstreamClient({self.base_url!r}, transport={self._transport!r})"

    async def open(
        self, path: str, body: bytes, client_headers: Iterable[tuple[str, str]] = ()
    ) -> Source:
        """POST ``body`` to ``base_url + path`` and return the streaming response.

        Raises :class:`UpstreamStatusError` for a non-2xx answer and
        :class:`UpstreamUnavailable` when the upstream cannot be reached.
        """
        transport = self._resolved_transport()
        headers = dict(self._headers if transport == "httpx" else self._direct_headers)
        for name, value in self.forwarded(client_headers):
            headers[name.lower()] = value
        if transport == "native":
            return await self._open_native(path + self._query, body, headers)
        url = self._prefix + path + self._query
        if transport == "aiohttp":
            return await self._open_aiohttp(url, body, headers)
        return await self._open_httpx(url, body, headers)

    def forwarded(self, client_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The client headers :meth:`open` would forward (those named in ``forward``)."""
        forward = self._forward
        return [(k, v) for k, v in client_headers if k.lower() in forward] if forward else []

    async def aclose(self) -> None:
        """Close the connection pools this client created (not a client you passed in)."""
        pools, self._pools = self._pools, {}
        self._closers.clear()
        for pool, close in pools.values():
            await close(pool)
        if self._owned_httpx is not None:
            client, self._owned_httpx = self._owned_httpx, None
            await client.aclose()

    def _resolved_transport(self) -> Transport:
        if self._transport == "httpx":
            return "httpx"
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio: the other transports need asyncio
            return "httpx"
        return "native" if self._transport == "auto" else self._transport

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

    # native -----------------------------------------------------------------

    async def _open_native(self, path: str, body: bytes, headers: dict[str, str]) -> Source:
        pool: Pool = await self._loop_pool(self._new_pool, Pool.aclose)
        origin = self._origin
        url = self._prefix + path
        try:
            head = request_head(
                "POST", self._target_prefix + path, origin.authority, headers.items(), len(body)
            )
            connection = await pool.request(origin, head + body)
        except socket.gaierror as exc:
            raise _dns_error(url) from exc
        except ConnectTimeout as exc:
            raise _connect_timeout(url) from exc
        except ssl.SSLError as exc:
            raise UpstreamUnavailable(
                f"the TLS handshake with the upstream at {_host(url)!r} failed: "
                f"{getattr(exc, 'reason', None) or type(exc).__name__}",
                code="upstream_tls_error",
            ) from exc
        except ProxyRefused as exc:
            raise UpstreamUnavailable(
                f"the proxy refused to connect to {_host(url)!r} (status {exc.status})",
                code="upstream_proxy_error",
            ) from exc
        except ProtocolError as exc:
            raise UpstreamUnavailable(
                f"the upstream at {_host(url)!r} answered with invalid HTTP: {exc}",
                code="upstream_invalid_response",
            ) from exc
        except OSError as exc:
            raise _unreachable(url, exc) from exc
        parser = connection.parser
        assert parser is not None
        status = parser.status
        refusal = _refusal(status, parser.header("content-type"))
        if refusal is not None:
            connection.close()
            raise refusal
        if status >= 300:
            try:
                error_body = await _read_bounded(connection)
            except (OSError, ProtocolError):
                error_body = b""
            except BaseException:  # cancelled: do not leave the connection open
                connection.close()
                raise
            await connection.release(parser.finished)
            raise UpstreamStatusError(status, _keep(parser.headers), error_body)
        parser.headers = []  # not needed while streaming: about 1 KiB per open stream
        return Source(connection, "sse", connection.release)

    def _new_pool(self) -> Pool:
        proxy = None
        if self._proxy is not None:
            url = urlsplit(self._proxy)
            scheme = url.scheme if url.scheme in ("http", "https") else "http"
            proxy = Origin(
                scheme, url.hostname or "", url.port or (443 if scheme == "https" else 80)
            )
        return Pool(
            connect_timeout=self._connect_timeout,
            ssl_context=self._ssl,
            proxy=proxy,
            proxy_headers=list((self._proxy_headers or {}).items()),
        )

    # aiohttp ----------------------------------------------------------------

    async def _open_aiohttp(self, url: str, body: bytes, headers: dict[str, str]) -> Source:
        import aiohttp  # present: checked when the client was created

        session = await self._loop_pool(self._new_session, _close_session)
        try:
            try:
                response = await self._post(session, url, body, headers)
            except aiohttp.ClientConnectorError:
                raise  # no connection at all: nothing to retry
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # A pooled keep-alive connection the upstream closed as we reused it
                # (servers close idle ones: uvicorn after 5 s). Nothing was answered,
                # so one retry on a new connection is safe; httpx does the same.
                response = await self._post(session, url, body, headers)
        except aiohttp.ClientConnectorDNSError as exc:
            raise _dns_error(url) from exc
        except aiohttp.ClientConnectorError as exc:
            raise _unreachable(url, exc) from exc
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _connect_timeout(url) from exc
        except aiohttp.ClientError as exc:
            raise _unreachable(url, exc) from exc
        refusal = _refusal(response.status, response.headers.get("content-type", ""))
        if refusal is not None:
            response.close()
            raise refusal
        return await from_aiohttp(response)

    async def _post(
        self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        return await session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            auto_decompress=False,
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
            ssl=self._ssl() if self._prefix.startswith("https:") else True,
        )

    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=None
            ),
            trust_env=False,  # the proxy comes from _env_proxy
            skip_auto_headers=("accept-encoding",),
        )

    # httpx ------------------------------------------------------------------

    async def _open_httpx(self, url: str, body: bytes, headers: dict[str, str]) -> Source:
        client = self._client or self._own_httpx()
        request = client.build_request("POST", url, content=body, headers=headers)
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.ConnectTimeout as exc:
            raise _connect_timeout(url) from exc
        except httpx.ConnectError as exc:
            if isinstance(exc.__context__, socket.gaierror) or "name" in str(exc).lower():
                raise _dns_error(url) from exc
            raise _unreachable(url, exc) from exc
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc) from exc
        refusal = _refusal(response.status_code, response.headers.get("content-type", ""))
        if refusal is not None:
            await response.aclose()
            raise refusal
        return await from_httpx(response)

    def _own_httpx(self) -> httpx.AsyncClient:
        if self._owned_httpx is None:
            self._owned_httpx = httpx.AsyncClient(
                timeout=httpx.Timeout(None, connect=self._connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
                follow_redirects=False,
                trust_env=True,
                verify=self._ssl_context if self._ssl_context is not None else True,
            )
        return self._owned_httpx


async def _close_at_loop_shutdown(
    pool: Any, close: Callable[[Any], Awaitable[None]]
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not pool.closed:
            await close(pool)


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


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


def _refusal(status: int, content_type: str) -> UpstreamUnavailable | None:
    """Why an answer with this head cannot be relayed: a redirect (never followed), or
    a success that is not a stream. An error status is passed through instead."""
    if 300 <= status < 400:
        return _redirected(status)
    media = content_type.split(";", 1)[0].strip().lower()
    if status < 300 and media in ("application/json", "text/html"):
        return UpstreamUnavailable(
            f"the upstream answered {status} with {content_type} instead of an event stream",
            code="upstream_not_streaming",
        )
    return None


def _host(url: str) -> str:
    return httpx.URL(url).host


def _dns_error(url: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"could not resolve the upstream host {_host(url)!r}", code="upstream_dns_failure"
    )


def _unreachable(url: str, exc: BaseException) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"could not connect to the upstream at {_host(url)!r}: {type(exc).__name__}",
        code="upstream_unreachable",
    )


def _connect_timeout(url: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"connecting to the upstream at {_host(url)!r} timed out",
        code="upstream_connect_timeout",
        status_code=504,
    )


def _redirected(status: int) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"the upstream answered with a redirect ({status}); redirects are not followed "
        "so the API key never reaches another host",
        code="upstream_redirect",
    )
