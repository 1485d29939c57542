"""The package's version, and which build of it is installed."""

from __future__ import annotations

import importlib.machinery

__version__ = "0.1.0"


def build() -> str:
    """``"compiled"`` when the sans-I/O hot path is the mypyc build, else ``"pure"``.

    The compiled build (docs/performance.md) ships the same modules as C extensions;
    ``streamrelay --version`` says which one runs.

    >>> build() in ("compiled", "pure")
    True
    """
    from . import transcoder

    compiled = isinstance(transcoder.__loader__, importlib.machinery.ExtensionFileLoader)
    return "compiled" if compiled else "pure"
