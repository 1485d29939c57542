"""Ways to cut a byte stream into reads, shared by every sans-I/O test.

A decoder must give the same result however its input is split: whole, byte by
byte, at every single point, or at random points (hypothesis).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from hypothesis import strategies as st

__all__ = ["bytewise", "every_split", "random_splits", "split_at"]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at each of ``cuts`` (out-of-range and repeated cuts are ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def bytewise(data: bytes) -> list[bytes]:
    """One read per byte."""
    return [data[i : i + 1] for i in range(len(data))]


def every_split(data: bytes, step: int = 1) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and every two-piece split (every ``step``-th, and the last 8)."""
    yield [data]
    yield bytewise(data)
    for i in sorted({*range(1, len(data), step), *range(max(1, len(data) - 8), len(data))}):
        yield [data[:i], data[i:]]


@st.composite
def random_splits(
    draw: st.DrawFn, data: bytes, *, max_cuts: int = 12, favour: Iterable[int] = ()
) -> list[bytes]:
    """``data`` cut at up to ``max_cuts`` random points, drawn partly from ``favour``
    (where a fast path starts, say) when given."""
    point: st.SearchStrategy[int] = st.integers(0, len(data))
    favoured = list(favour)
    if favoured:
        point = st.sampled_from(favoured) | point
    return split_at(data, draw(st.lists(point, max_size=max_cuts)))
