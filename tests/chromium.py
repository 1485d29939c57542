"""Headless Debian Chromium for the browser tests, driven by Playwright's Python API.

One launch recipe for every module that needs a real browser
(``test_browser.py``, ``test_browser_resume.py``, ``test_clients_browser.py``):
Debian's ``/usr/bin/chromium`` (``make system-deps``), never a browser Playwright
downloads, with the flags this sandbox needs (no network beyond 127.0.0.1).
Without Playwright or Chromium the caller's test skips; the suite's conftest turns
that skip into a failure under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["CHROMIUM_ARGS", "chromium_path", "headless_chromium"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
"""Root in a container needs ``--no-sandbox``; the rest keep Chromium off the
network (it would try Google's hosts at every start) and off ``/dev/shm``."""


def chromium_path() -> str | None:
    """Debian's Chromium, if installed and executable."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.access(path, os.X_OK) else None


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """A headless Chromium with a fresh temporary profile (removed on close), or a skip."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright (Python) is not installed: pip install -e '.[test]'")
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian chromium is not installed: run `make system-deps`")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
