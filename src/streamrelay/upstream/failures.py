"""How an upstream call fails, in one vocabulary for every transport.

Each transport maps its own exceptions onto these
:class:`~streamrelay.errors.UpstreamUnavailable` values, so a client sees the same
status and ``code`` whichever transport ran (``docs/errors.md`` lists them).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import UpstreamUnavailable

__all__ = ["connect_timeout", "dns_error", "host", "refusal", "unreachable"]


def refusal(status: int, content_type: str) -> UpstreamUnavailable | None:
    """Why an answer with this head cannot be relayed: a redirect (never followed), or
    a success that is not a stream. An error status is passed through instead."""
    if 300 <= status < 400:
        return UpstreamUnavailable(
            f"the upstream answered with a redirect ({status}); redirects are not followed "
            "so the API key never reaches another host",
            code="upstream_redirect",
        )
    media = content_type.split(";", 1)[0].strip().lower()
    if status < 300 and media in ("application/json", "text/html"):
        return UpstreamUnavailable(
            f"the upstream answered {status} with {content_type} instead of an event stream",
            code="upstream_not_streaming",
        )
    return None


def host(url: str) -> str:
    """The host part of ``url``, for error messages (never the path, which may carry a key)."""
    return urlsplit(url).hostname or url


def dns_error(url: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"could not resolve the upstream host {host(url)!r}", code="upstream_dns_failure"
    )


def unreachable(url: str, exc: BaseException) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"could not connect to the upstream at {host(url)!r}: {type(exc).__name__}",
        code="upstream_unreachable",
    )


def connect_timeout(url: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(
        f"connecting to the upstream at {host(url)!r} timed out",
        code="upstream_connect_timeout",
        status_code=504,
    )
