"""Every example in the package's docstrings runs (``python -m doctest`` on each module)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamrelay
from compiled import source_module

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(streamrelay.__path__, "streamrelay.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = source_module(importlib.import_module(name))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_are_found() -> None:
    """Guards the test above against finding nothing (a refactor that hides modules)."""
    attempted = sum(
        doctest.testmod(source_module(importlib.import_module(name)), report=False).attempted
        for name in ("streamrelay.timing", "streamrelay.sse", "streamrelay.negotiation")
    )
    assert attempted >= 10
