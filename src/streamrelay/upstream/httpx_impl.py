"""The ``httpx`` upstream transport: used for ``Upstream(client=httpx.AsyncClient(...))``,
for ``transport="httpx"``, and under trio (the other transports need asyncio).

Its pool scan grows with every open connection, which shows at high concurrency
(``docs/performance.md``).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator

import httpx

from ..errors import UpstreamUnavailable
from ..sources import Source, from_httpx
from .failures import connect_timeout, dns_error, host, unreachable

__all__ = ["get", "new_client", "open_httpx", "post"]


def new_client(
    connect_timeout: float | None, keepalive_expiry: float, ssl_context: ssl.SSLContext | None
) -> httpx.AsyncClient:
    """The client the transport makes when you pass none."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=connect_timeout),
        limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=100, keepalive_expiry=keepalive_expiry
        ),
        follow_redirects=False,
        trust_env=True,
        verify=ssl_context if ssl_context is not None else True,
    )


async def open_httpx(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> Source:
    """POST ``body`` to ``url``; the response as a :class:`Source`, or the failure
    (the head is checked where every source's is: :mod:`streamrelay.sources`)."""
    # As bytes: httpx encodes a str value as ASCII, and a client's obs-text (UTF-8 text,
    # which arrives decoded as latin-1) would raise instead of going on unchanged.
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    request = client.build_request("POST", url, content=body, headers=raw)
    with _failures(url):
        response = await client.send(request, stream=True, follow_redirects=False)
    return await from_httpx(response)


async def get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """GET ``url`` whole (a small JSON answer such as ``/models``): status, headers, body.

    Every transport's control-plane calls go through httpx: they are rare and small,
    and this keeps one implementation of them.
    """
    with _failures(url):
        response = await client.get(url, headers=headers, follow_redirects=False)
    return response.status_code, response.headers.multi_items(), response.content


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], limit: int
) -> tuple[int, list[tuple[str, str]], bytes]:
    """POST ``body`` to ``url`` and read the answer whole: status, headers, body.

    For the non-streaming calls (a whole ``chat.completion`` or ``response``). A
    body beyond ``limit`` bytes is refused (502 ``upstream_too_large``) rather than
    held. Cancelling the call closes the connection, which stops the generation.
    """
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    request = client.build_request("POST", url, content=body, headers=raw)
    with _failures(url):
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if 300 <= response.status_code < 400:
                raise UpstreamUnavailable(
                    f"the upstream answered with a redirect ({response.status_code}); "
                    "redirects are not followed so the API key never reaches another host",
                    code="upstream_redirect",
                )
            content = bytearray()
            async for piece in response.aiter_raw():
                content += piece
                if len(content) > limit:
                    raise UpstreamUnavailable(
                        f"the upstream's answer exceeds {limit} bytes",
                        code="upstream_too_large",
                    )
        finally:
            await response.aclose()
    return response.status_code, response.headers.multi_items(), bytes(content)


@contextlib.contextmanager
def _failures(url: str) -> Iterator[None]:
    """httpx's exceptions, as the failures every transport reports."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise connect_timeout(url) from exc
    except httpx.ConnectError as exc:
        if isinstance(exc.__context__, socket.gaierror) or "name" in str(exc).lower():
            raise dns_error(url) from exc
        raise unreachable(url, exc) from exc
    except httpx.RemoteProtocolError as exc:
        if "disconnected" not in str(exc).lower():
            raise UpstreamUnavailable(
                f"the upstream at {host(url)!r} answered with invalid HTTP: {exc}",
                code="upstream_invalid_response",
            ) from exc
        # httpcore resends nothing the upstream may have received either.
        raise UpstreamUnavailable(
            f"the upstream at {host(url)!r} closed the connection before answering; the "
            "request was not sent again, as the upstream may have received it",
            code="upstream_connection_lost",
        ) from exc
    except httpx.HTTPError as exc:
        raise unreachable(url, exc) from exc
