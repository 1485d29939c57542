"""Observability: Prometheus at /metrics, one JSON log line per stream, and your own observer
(here, tokens spent per user), on a mounted relay.

    pip install 'streamrelay-asgi[prometheus]'
    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.observability:app --port 8000
    curl -N -H 'content-type: application/json' -H 'x-request-id: my-req-1' \
      -d '{"model":"sim-1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}' \
      http://127.0.0.1:8000/ai/chat/completions
    curl http://127.0.0.1:8000/metrics | grep streamrelay_
    curl http://127.0.0.1:8000/spent

With several workers, see docs/observability.md ("Several worker processes").
"""

from __future__ import annotations

import logging
from collections import Counter

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from streamrelay import StreamRelay, StreamSettings
from streamrelay.metrics import PrometheusMetrics
from streamrelay.observer import Observer, StreamStart, StreamWatch
from streamrelay.outcome import Outcome

SPENT: Counter[str] = Counter()
"""Tokens per principal (a real app would write these to its database, off the hook)."""


class Spending(Observer):
    """Counts each principal's tokens, from the usage the upstream reports."""

    def stream_started(self, start: StreamStart) -> StreamWatch | None:
        return None if start.resumed else _Spend(start.principal or "anonymous")


class _Spend(StreamWatch):
    def __init__(self, who: str) -> None:
        self.who = who

    def finished(self, outcome: Outcome) -> None:
        if outcome.usage is not None:
            SPENT[self.who] += outcome.usage.total_tokens


async def spent(request: Request) -> JSONResponse:
    return JSONResponse(dict(SPENT))


# One JSON object per stream on stdout (the message itself is JSON with log_format="json").
handler = logging.StreamHandler()
handler.setFormatter(logging.Formatter("%(message)s"))
logging.getLogger("streamrelay").addHandler(handler)
logging.getLogger("streamrelay").setLevel(logging.INFO)

metrics = PrometheusMetrics()
relay = StreamRelay(stream=StreamSettings(log_format="json"), metrics=[metrics, Spending()])

app = Starlette(
    routes=[
        Mount("/ai", relay),
        Route("/metrics", metrics.asgi_app()),  # with several workers too
        Route("/spent", spent),
    ]
)
