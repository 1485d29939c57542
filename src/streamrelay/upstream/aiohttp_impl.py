"""The ``aiohttp`` upstream transport: aiohttp's client (``pip install 'streamrelay-asgi[aiohttp]'``).

Chosen with ``Upstream(transport="aiohttp")``. aiohttp is imported only when this
transport is chosen, so the package stays optional. It costs about 15 µs per token
and 9 KiB per stream more than the native transport (``docs/performance.md``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, UpstreamUnavailable
from ..sources import Source, from_aiohttp
from .failures import connect_timeout, dns_error, host, unreachable

if TYPE_CHECKING:
    import aiohttp

__all__ = ["close_session", "new_session", "open_aiohttp", "require_aiohttp"]


def require_aiohttp() -> None:
    """Import aiohttp now (not on the first request: 0.3 s of its time to first
    byte); a missing package is a configuration error rather than a 500 later."""
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "transport='aiohttp' needs aiohttp: pip install 'streamrelay-asgi[aiohttp]'"
        ) from exc


def new_session(connect_timeout: float | None, keepalive_expiry: float) -> aiohttp.ClientSession:
    """A session for one event loop: no total or read timeout (streams are long)."""
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=0,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
        keepalive_timeout=keepalive_expiry,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=None),
        trust_env=False,  # the proxy is read once from the environment by the Upstream
        skip_auto_headers=("accept-encoding",),
    )


async def close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


async def open_aiohttp(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    proxy: str | None,
    proxy_headers: dict[str, str] | None,
    ssl_context: ssl.SSLContext | bool,
) -> Source:
    """POST ``body`` to ``url``; the response as a :class:`Source`, or the failure
    (the head is checked where every source's is: :mod:`streamrelay.sources`)."""
    import aiohttp

    async def post() -> aiohttp.ClientResponse:
        return await session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            auto_decompress=False,
            proxy=proxy,
            proxy_headers=proxy_headers,
            ssl=ssl_context,
        )

    try:
        # Never retried: aiohttp itself resends only idempotent requests, and a POST
        # the upstream may have received is a paid generation (RFC 9112 §9.3.1).
        response = await post()
    except aiohttp.ServerDisconnectedError as exc:
        raise UpstreamUnavailable(
            f"the upstream at {host(url)!r} closed the connection before answering; the "
            "request was not sent again, as the upstream may have received it",
            code="upstream_connection_lost",
        ) from exc
    except aiohttp.ClientConnectorDNSError as exc:
        raise dns_error(url) from exc
    except aiohttp.ClientConnectorError as exc:
        raise unreachable(url, exc) from exc
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise connect_timeout(url) from exc
    except aiohttp.ClientError as exc:
        raise unreachable(url, exc) from exc
    return await from_aiohttp(response)
