"""``python -m streamrelay.testing``: the same command line as ``streamrelay simulate``."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":  # pragma: no cover - run as a script
    raise SystemExit(main())
