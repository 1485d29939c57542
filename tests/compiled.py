"""Which build of streamrelay the tests import: the pure package, or the compiled build.

``make test-compiled`` (and the compiled tier of ``make test``) puts the mypyc build
(``scripts/build-compiled.sh``) first on ``PYTHONPATH`` and sets
``STREAMRELAY_TEST_COMPILED=1``; the conftest then refuses to run unless the compiled
modules are the ones imported, so a build that silently fell back to the pure package
cannot pass as tested.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path
from types import ModuleType

__all__ = ["expected", "is_compiled", "source_module"]


def expected() -> bool:
    """Whether this run was asked to test the compiled build."""
    return os.environ.get("STREAMRELAY_TEST_COMPILED") == "1"


def is_compiled(module: ModuleType) -> bool:
    """Whether ``module`` was loaded from a C extension (a mypyc-compiled module)."""
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)


def source_module(module: ModuleType) -> ModuleType:
    """``module`` itself, or, when it is compiled, its shipped source loaded as Python.

    mypyc keeps no docstrings, so the doctests of a compiled module run against its
    source (the same text the extension was compiled from), loaded apart and never
    registered in ``sys.modules``.
    """
    if not is_compiled(module):
        return module
    assert module.__file__ is not None
    path = Path(module.__file__)
    source = path.with_name(path.name.split(".", 1)[0] + ".py")
    spec = importlib.util.spec_from_file_location(module.__name__, source)
    assert spec is not None and spec.loader is not None, source
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy
