"""streamrelay: stream an LLM's answer from any ASGI app to the browser, token by token.

Three ways in, one engine:

>>> from streamrelay import StreamRelay, StreamRelayMiddleware, Upstream, relay_response
>>> relay = StreamRelay(Upstream("https://api.openai.com/v1", api_key="sk-..."))
>>> app.mount("/ai", relay)                                   # doctest: +SKIP
>>> app.add_middleware(StreamRelayMiddleware, paths=["/chat"])  # doctest: +SKIP

The names below are imported on first use, so ``import streamrelay.sse`` (or any
other module of the sans-I/O core: ``events``, ``openai``, ``formats``,
``transcoder``, ``negotiation``, ``config``, ``timing``, ``outcome``) loads
nothing outside the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__

if TYPE_CHECKING:
    from .app import StreamRelay
    from .config import RequestLimits, StreamSettings
    from .errors import (
        ConfigurationError,
        EventTooLarge,
        LocalProtocolError,
        ProtocolError,
        RemoteProtocolError,
        RequestRejected,
        StoreUnavailable,
        StreamRelayError,
        UnsupportedFormat,
        UpstreamStatusError,
        UpstreamUnavailable,
    )
    from .events import (
        Delta,
        Done,
        Error,
        Event,
        Finish,
        Reasoning,
        Refusal,
        Start,
        ToolCall,
        Usage,
    )
    from .formats import FORMATS
    from .middleware import StreamRelayMiddleware
    from .outcome import Ending, Outcome
    from .pipeline import StreamAborted
    from .response import RelayResponse, relay_response
    from .sse_starlette import sse_events
    from .upstream import Upstream

_EXPORTS = {
    "StreamRelay": "app",
    "StreamSettings": "config",
    "RequestLimits": "config",
    "ConfigurationError": "errors",
    "EventTooLarge": "errors",
    "LocalProtocolError": "errors",
    "RemoteProtocolError": "errors",
    "ProtocolError": "errors",
    "RequestRejected": "errors",
    "StoreUnavailable": "errors",
    "StreamRelayError": "errors",
    "UnsupportedFormat": "errors",
    "UpstreamStatusError": "errors",
    "UpstreamUnavailable": "errors",
    "Delta": "events",
    "Done": "events",
    "Error": "events",
    "Event": "events",
    "Finish": "events",
    "Reasoning": "events",
    "Refusal": "events",
    "Start": "events",
    "ToolCall": "events",
    "Usage": "events",
    "FORMATS": "formats",
    "StreamRelayMiddleware": "middleware",
    "Ending": "outcome",
    "Outcome": "outcome",
    "StreamAborted": "pipeline",
    "RelayResponse": "response",
    "relay_response": "response",
    "sse_events": "sse_starlette",
    "Upstream": "upstream",
}

__all__ = [
    "FORMATS",
    "ConfigurationError",
    "Delta",
    "Done",
    "Ending",
    "Error",
    "Event",
    "EventTooLarge",
    "Finish",
    "LocalProtocolError",
    "Outcome",
    "ProtocolError",
    "Reasoning",
    "Refusal",
    "RelayResponse",
    "RemoteProtocolError",
    "RequestLimits",
    "RequestRejected",
    "Start",
    "StoreUnavailable",
    "StreamAborted",
    "StreamRelay",
    "StreamRelayError",
    "StreamRelayMiddleware",
    "StreamSettings",
    "ToolCall",
    "UnsupportedFormat",
    "Upstream",
    "UpstreamStatusError",
    "UpstreamUnavailable",
    "Usage",
    "__version__",
    "relay_response",
    "sse_events",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
