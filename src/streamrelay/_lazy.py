"""Lazy re-exports for a package's ``__init__`` (PEP 562's module ``__getattr__``).

A package names what it re-exports and from which submodule; each name is imported
on first use. This keeps ``import streamrelay.sse`` (and the other sans-I/O modules)
free of Starlette, httpx and anyio, and the pytest plugin free of uvicorn.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose ``namespace`` (its
    ``globals()``) re-exports each name in ``exports`` from the submodule it maps to
    (``{"StreamRelay": "app"}``: ``package.app.StreamRelay``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
