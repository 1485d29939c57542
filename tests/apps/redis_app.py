"""A worker of the many-worker tests: the relay at ``/ai`` on a shared Redis store.

Run by uvicorn in a subprocess, one per worker. The upstream is the test
process's simulator (``STREAMRELAY_UPSTREAM``); the store is the test's
redis-server (``STREAMRELAY_TEST_REDIS``); ``STREAMRELAY_TEST_LINGER`` sets the
linger window (seconds). ``X-User`` names the principal.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from streamrelay import RequestLimits, StreamRelay, StreamSettings, Upstream
from streamrelay.stores import RedisStore


def user(request: Any, body: Any) -> str | None:
    value = request.headers.get("x-user")
    return str(value) if value else None


relay = StreamRelay(
    Upstream(os.environ["STREAMRELAY_UPSTREAM"], api_key="sk-test"),
    store=RedisStore(os.environ["STREAMRELAY_TEST_REDIS"], ttl=30.0),
    linger=float(os.environ.get("STREAMRELAY_TEST_LINGER", "30")),
    stream=StreamSettings(heartbeat=1.0),
    limits=RequestLimits(max_streams_per_principal=2),
    principal=user,
)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await relay.aclose()


app = Starlette(routes=[Mount("/ai", relay)], lifespan=lifespan)
