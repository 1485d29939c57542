"""The upstream: the OpenAI-compatible API the relay calls, and the transports that call it.

* :mod:`.client`: :class:`Upstream`, the one object that says where, with which key
  and how (build it once, share it between entry points);
* :mod:`.native`: streamrelay's own HTTP/1.1 client on asyncio (the default), over
  the sans-I/O response parser in :mod:`.http1`;
* :mod:`.aiohttp_impl`, :mod:`.httpx_impl`: the same on aiohttp's or httpx's client;
* :mod:`.failures`: how a call fails, in one vocabulary for every transport;
* :mod:`.redaction`: the key never reaches a client.

The names below load :mod:`.client` (and with it httpx) on first use, so the
sans-I/O parser, ``streamrelay.upstream.http1``, imports nothing third-party.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .client import DEFAULT_UPSTREAM, Transport, Upstream, UpstreamRequest, resolve_upstream

__all__ = ["DEFAULT_UPSTREAM", "Transport", "Upstream", "UpstreamRequest", "resolve_upstream"]


__getattr__, __dir__ = lazy_exports(__name__, globals(), dict.fromkeys(__all__, "client"))
