"""Stores for resumable streams: one module per backend.

``StreamRelay(store=MemoryStore())`` for one worker process;
``StreamRelay(store=RedisStore(url))`` for many workers and machines. Every store
keeps the contract of :class:`~streamrelay.stores.base.Store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .base import Batch, Pulse, Record, Store, StreamInfo
    from .memory import MemoryStore
    from .redis import RedisStore

__all__ = ["Batch", "MemoryStore", "Pulse", "Record", "RedisStore", "Store", "StreamInfo"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "Batch": "base",
        "MemoryStore": "memory",
        "Pulse": "base",
        "Record": "base",
        "RedisStore": "redis",
        "Store": "base",
        "StreamInfo": "base",
    },
)
