"""streamrelay: stream an LLM's answer from any ASGI app to the browser, token by token.

Three ways in, one engine:

>>> from streamrelay import StreamRelay, StreamRelayMiddleware, relay_response
>>> relay = StreamRelay(upstream="https://api.openai.com/v1", api_key="sk-...")
>>> app.mount("/ai", relay)                                   # a mountable ASGI app
>>> app.add_middleware(StreamRelayMiddleware, paths=["/chat"])  # re-frame your own routes
>>> return relay_response(upstream_response, request)         # from any handler
"""

from ._version import __version__
from .app import StreamRelay
from .errors import (
    ConfigurationError,
    EventTooLarge,
    ProtocolError,
    RequestRejected,
    StreamRelayError,
    UnsupportedFormat,
    UpstreamStatusError,
    UpstreamUnavailable,
)
from .events import Delta, Done, Error, Event, Finish, Refusal, Start, ToolCall, Usage
from .formats import FORMATS
from .middleware import StreamRelayMiddleware
from .pipeline import StreamAborted, StreamSettings
from .response import RelayResponse, relay_response

__all__ = [
    "FORMATS",
    "ConfigurationError",
    "Delta",
    "Done",
    "Error",
    "Event",
    "EventTooLarge",
    "Finish",
    "ProtocolError",
    "Refusal",
    "RelayResponse",
    "RequestRejected",
    "Start",
    "StreamAborted",
    "StreamRelay",
    "StreamRelayError",
    "StreamRelayMiddleware",
    "StreamSettings",
    "ToolCall",
    "UnsupportedFormat",
    "UpstreamStatusError",
    "UpstreamUnavailable",
    "Usage",
    "__version__",
    "relay_response",
]
