"""The settings every entry point shares, as value objects (in the manner of httpx's
``Timeout`` and ``Limits``).

Build them once, validate them once, and hand the same objects to
:class:`~streamrelay.StreamRelay`, :class:`~streamrelay.StreamRelayMiddleware`
and :func:`~streamrelay.relay_response`:

>>> settings = StreamSettings(heartbeat=5.0, idle_timeout=120.0)
>>> settings.heartbeat, settings.send_timeout
(5.0, 30.0)
>>> RequestLimits(max_body_bytes=0)
Traceback (most recent call last):
  ...
streamrelay.errors.ConfigurationError: max_body_bytes must be a positive integer, got 0

The third group, the upstream (URL, key, transport, TLS, headers), is
:class:`streamrelay.upstream.Upstream`. This module is part of the sans-I/O core:
it imports nothing outside the standard library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

from .errors import ConfigurationError
from .sse import DEFAULT_MAX_EVENT_BYTES

__all__ = ["RequestLimits", "StreamSettings", "check_format_name", "settings_or_default"]

_Settings = TypeVar("_Settings", "StreamSettings", "RequestLimits")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Timing and size limits of one stream. Times are in seconds; ``None`` disables.

    Attributes:
        heartbeat: a keep-alive goes to the client after this much silence, so
            idle proxies do not cut the stream (formats without one, like
            ``text``, send nothing).
        first_byte_timeout: the upstream (or, for the middleware, the host
            app) must answer within it, else 504.
        idle_timeout: the upstream must send something within it mid-stream,
            else the stream ends with an ``upstream_timeout`` error.
        send_timeout: a client that accepts nothing for this long is dropped
            and its upstream closed.
        max_event_bytes: the largest upstream line or event accepted.
        log_format: the message of each stream's log line: ``"kv"`` (``key=value``
            pairs) or ``"json"`` (one JSON object). Either way its fields are also
            attributes of the log record, for a JSON formatter.
    """

    heartbeat: float | None = 15.0
    first_byte_timeout: float | None = 60.0
    idle_timeout: float | None = 300.0
    send_timeout: float | None = 30.0
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    log_format: str = "kv"

    def __post_init__(self) -> None:
        for name in ("heartbeat", "first_byte_timeout", "idle_timeout", "send_timeout"):
            _check_seconds(name, getattr(self, name))
        _check_int("max_event_bytes", self.max_event_bytes, minimum=1024)
        if self.log_format not in ("kv", "json"):
            raise ConfigurationError(f"log_format must be 'kv' or 'json', got {self.log_format!r}")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What the relay accepts from a client before it calls the upstream.

    Attributes:
        max_body_bytes: the largest request body (413 beyond).
        body_timeout: seconds to receive the whole body (408 after).
        max_header_bytes: the largest total size of the request's header names
            and values (431 beyond; some servers, such as uvicorn with
            httptools, enforce none).
        max_streams_per_principal: concurrent streams one principal may hold
            (429 beyond), counted per process; ``None`` for no limit. Who the
            principal is comes from :class:`~streamrelay.StreamRelay`'s
            ``principal`` hook (by default, the client's address).
    """

    max_body_bytes: int = 1024 * 1024
    body_timeout: float | None = 30.0
    max_header_bytes: int = 32 * 1024
    max_streams_per_principal: int | None = None

    def __post_init__(self) -> None:
        _check_int("max_body_bytes", self.max_body_bytes, minimum=1)
        _check_seconds("body_timeout", self.body_timeout)
        _check_int("max_header_bytes", self.max_header_bytes, minimum=1)
        if self.max_streams_per_principal is not None:
            _check_int("max_streams_per_principal", self.max_streams_per_principal, minimum=1)


def check_format_name(name: object, what: str = "default_format") -> str:
    """``name`` if it is a registered format, else :class:`ConfigurationError`.

    The one check of a configured format name, for every entry point (a client's
    unknown ``?format=`` is a 406 instead, see :mod:`streamrelay.negotiation`).
    """
    from .formats import FORMATS

    if not isinstance(name, str) or name not in FORMATS:
        raise ConfigurationError(f"{what} must be one of {', '.join(FORMATS)}, got {name!r}")
    return name


def settings_or_default(value: _Settings | None, kind: type[_Settings], name: str) -> _Settings:
    """``value`` (``None``: the defaults, ``kind()``) if it is a ``kind``, else a clear
    :class:`ConfigurationError` naming the parameter (``stream=``, ``limits=``)."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ConfigurationError(
            f"{name} must be a {kind.__name__}, got {type(value).__name__}: "
            f"use {name}={kind.__name__}(...)"
        )
    return value


def _check_seconds(name: str, value: object) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or math.isnan(value)
    ):
        raise ConfigurationError(
            f"{name} must be a positive number of seconds or None, got {value!r}"
        )


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        if minimum == 1:
            raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
        raise ConfigurationError(f"{name} must be at least {minimum}, got {value!r}")
