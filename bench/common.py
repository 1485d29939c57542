"""Small helpers shared by the benchmark's processes."""

from __future__ import annotations

import asyncio
import math
import resource
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

__all__ = ["TOKEN_RE_PATTERN", "log", "percentile", "raise_fd_limit", "run_async"]

T = TypeVar("T")

#: A token's content is ``"<upstream send time in ns> "``: 19 digits, then a space.
TOKEN_RE_PATTERN = rb"(?<![0-9])([0-9]{19}) "


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; return the new limit.

    A relay holding 1,000 streams needs two sockets per stream.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` by the nearest-rank method; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def log(message: str) -> None:
    """Progress goes to stderr, so stdout stays clean."""
    print(message, file=sys.stderr, flush=True)
