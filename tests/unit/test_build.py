"""Which build runs: the pure package, or the compiled (mypyc) build of its hot path."""

from __future__ import annotations

import pytest

import compiled
from streamrelay import cli
from streamrelay._version import __version__, build


def test_the_build_under_test_is_the_one_asked_for() -> None:
    # The pure run must not pick up stray extension modules (an in-place build left in
    # src/), and the compiled tier must not fall back to the pure package.
    assert build() == ("compiled" if compiled.expected() else "pure")


def test_version_says_which_build_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    kind = "compiled with mypyc" if compiled.expected() else "pure Python"
    assert capsys.readouterr().out.strip() == f"streamrelay {__version__} ({kind})"
