"""Shared fixtures: one simulator upstream for the whole session, and the CI rule for
tests that need real external components."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import httpx
import pytest

import compiled
import streamrelay.transcoder
from streamrelay.testing import ServerThread, Simulator

# The build under test --------------------------------------------------------------------

if compiled.expected() and not compiled.is_compiled(streamrelay.transcoder):
    raise pytest.UsageError(
        "STREAMRELAY_TEST_COMPILED=1 but streamrelay.transcoder is the pure module "
        f"({streamrelay.transcoder.__file__}): put build/compiled/site first on PYTHONPATH "
        "(make test-compiled)"
    )


def pytest_report_header() -> str:
    """Say which build the run tests."""
    kind = "compiled (mypyc)" if compiled.is_compiled(streamrelay.transcoder) else "pure Python"
    return (
        f"streamrelay build: {kind}, from {os.path.dirname(streamrelay.transcoder.__file__ or '')}"
    )


# CI: a skipped @pytest.mark.real test is a failure ---------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With ``CI=true``, a ``@pytest.mark.real`` test that skips fails instead.

    Locally such a test may skip when its component (nginx, Chromium, Redis) is
    missing; in CI the component must be there, so a skip would hide a gap.
    (xfail outcomes are left alone.)
    """
    report = yield
    if (
        report.skipped
        and os.environ.get("CI") == "true"
        and item.get_closest_marker("real") is not None
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"CI=true: a @pytest.mark.real test may not skip ({reason})"
    return report


# The simulated upstream ------------------------------------------------------------------


@pytest.fixture(scope="session")
def simulator_server() -> Iterator[tuple[Simulator, ServerThread]]:
    """A :class:`Simulator` on a real socket, shared by the session (no token delay)."""
    simulator = Simulator(delay=0.0)
    with ServerThread(simulator) as server:
        yield simulator, server


@pytest.fixture
def sim(simulator_server: tuple[Simulator, ServerThread]) -> Simulator:
    """The session's simulator, with its recorded requests and stats reset."""
    simulator = simulator_server[0]
    simulator.reset()
    return simulator


@pytest.fixture(scope="session")
def upstream(simulator_server: tuple[Simulator, ServerThread]) -> str:
    """The simulator's OpenAI-style base URL (ending in ``/v1``)."""
    return simulator_server[1].url + "/v1"


@pytest.fixture(scope="session")
def client() -> Iterator[httpx.Client]:
    """A plain httpx client on real sockets (never ASGITransport, which buffers)."""
    with httpx.Client(timeout=httpx.Timeout(15.0)) as http:
        yield http
