"""The pytest plugin: a running simulator and a running relay, as fixtures.

Installing streamrelay registers this module as a ``pytest11`` entry point, so
every test suite in that environment gets these fixtures with no conftest::

    def test_my_client_streams(streamrelay_simulator):
        client = openai.OpenAI(base_url=streamrelay_simulator, api_key="x")
        stream = client.chat.completions.create(model="sim-1", messages=[...], stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

Fixtures:

- ``streamrelay_simulator``: the base URL (a ``str`` ending in ``/v1``) of a
  :class:`~streamrelay.testing.Simulator` on a real socket (uvicorn, 127.0.0.1).
- ``streamrelay_simulator_app``: that :class:`~streamrelay.testing.Simulator`
  itself, for its ``requests``, ``stats`` and oracles (``expected_text``, ``response``, ...).
- ``streamrelay_relay``: the base URL (a ``str`` ending in ``/v1``) of a
  :class:`~streamrelay.StreamRelay` mounted at ``/v1`` under uvicorn, whose
  upstream is that simulator and whose key is :data:`RELAY_API_KEY`.

One server of each kind runs per session (each ``pytest-xdist`` worker has its
own); every test starts with a clean slate: no recorded requests, zeroed stats,
and the simulator's defaults, which here have no pause between tokens.

Markers (keyword arguments only; on a test, class or module, the closest wins
per argument):

- ``@pytest.mark.streamrelay_simulator(**config)``: :class:`SimulatorConfig`
  fields for this test, e.g. ``delay=0.02, fault="mid_error"``.
- ``@pytest.mark.streamrelay_relay(**options)``: :class:`~streamrelay.StreamRelay`
  keyword arguments for this test, which then gets a relay and server of its own.

This module is imported by every pytest run in an environment where streamrelay
is installed, so it imports only pytest and the standard library at load time;
uvicorn, Starlette and the relay are imported by the fixtures that need them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .server import ServerThread
    from .simulator import Simulator

__all__ = [
    "RELAY_API_KEY",
    "streamrelay_relay",
    "streamrelay_simulator",
    "streamrelay_simulator_app",
]

RELAY_API_KEY = "sk-streamrelay-test"
"""The key the ``streamrelay_relay`` fixture's relay sends upstream
(``Authorization: Bearer sk-streamrelay-test``)."""

_SIMULATOR_DEFAULTS: dict[str, Any] = {"delay": 0.0}
"""What the fixtures' simulator changes from :class:`SimulatorConfig`'s defaults."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, so that ``--strict-markers`` accepts them."""
    config.addinivalue_line(
        "markers",
        "streamrelay_simulator(**config): SimulatorConfig fields (delay, first_delay, tokens, "
        "fault, ...) for the streamrelay_simulator fixture in this test",
    )
    config.addinivalue_line(
        "markers",
        "streamrelay_relay(**options): StreamRelay keyword arguments for the streamrelay_relay "
        "fixture in this test (which then gets its own relay)",
    )


def _marker_kwargs(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    """The keyword arguments of every ``name`` marker on the test, the closest winning."""
    merged: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(name))):  # farthest first
        if marker.args:
            raise TypeError(f"@pytest.mark.{name} takes keyword arguments only: {marker.args!r}")
        merged.update(marker.kwargs)
    return merged


# The simulator -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _streamrelay_simulator_server() -> Iterator[tuple[Simulator, ServerThread]]:
    """One simulator on a real socket for the session (the function fixtures reset it)."""
    from .server import ServerThread
    from .simulator import Simulator

    simulator = Simulator(**_SIMULATOR_DEFAULTS)
    with ServerThread(simulator) as server:
        yield simulator, server


@pytest.fixture
def streamrelay_simulator_app(
    request: pytest.FixtureRequest,
    _streamrelay_simulator_server: tuple[Simulator, ServerThread],
) -> Iterator[Simulator]:
    """The running :class:`~streamrelay.testing.Simulator`, reset for this test.

    Its ``requests`` are empty and its ``stats`` zeroed when the test starts
    (``stats.active`` still counts streams an earlier test left open), and its
    ``config`` has this test's ``streamrelay_simulator`` marker applied; the
    session's defaults come back after the test.
    """
    simulator, _ = _streamrelay_simulator_server
    defaults = simulator.config
    overrides = _marker_kwargs(request, "streamrelay_simulator")
    simulator.config = defaults.replace(**overrides)
    simulator.reset()
    try:
        yield simulator
    finally:
        simulator.config = defaults


@pytest.fixture
def streamrelay_simulator(
    streamrelay_simulator_app: Simulator,
    _streamrelay_simulator_server: tuple[Simulator, ServerThread],
) -> str:
    """The running simulator's OpenAI base URL, ``http://127.0.0.1:<port>/v1``.

    ``openai.OpenAI(base_url=streamrelay_simulator, api_key="x")`` works as is;
    any key is accepted. See ``streamrelay_simulator_app`` for the simulator.
    """
    return _streamrelay_simulator_server[1].url + "/v1"


# The relay ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _relay_server(upstream: str, options: dict[str, Any]) -> Iterator[ServerThread]:
    """A :class:`~streamrelay.StreamRelay` at ``/v1`` under uvicorn, in front of ``upstream``."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from ..app import StreamRelay
    from ..upstream import Upstream
    from .server import ServerThread

    if "upstream" in options:
        raise TypeError(
            "@pytest.mark.streamrelay_relay cannot set upstream: the relay's upstream is the "
            "streamrelay_simulator fixture's simulator"
        )
    relay = StreamRelay(Upstream(upstream, api_key=RELAY_API_KEY), **options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await relay.aclose()  # a mounted app gets no lifespan of its own

    app = Starlette(routes=[Mount("/v1", relay)], lifespan=lifespan)
    with ServerThread(app) as server:
        yield server


@pytest.fixture(scope="session")
def _streamrelay_relay_server(
    _streamrelay_simulator_server: tuple[Simulator, ServerThread],
) -> Iterator[ServerThread]:
    """The session's relay, with default options, started on first use."""
    with _relay_server(_streamrelay_simulator_server[1].url + "/v1", {}) as server:
        yield server


@pytest.fixture
def streamrelay_relay(
    request: pytest.FixtureRequest,
    streamrelay_simulator: str,
) -> Iterator[str]:
    """The base URL, ``http://127.0.0.1:<port>/v1``, of a relay in front of the simulator.

    A :class:`~streamrelay.StreamRelay` mounted at ``/v1`` under uvicorn; its
    upstream is ``streamrelay_simulator`` (reset and configured for this test,
    as ``streamrelay_simulator_app`` says), reached over real HTTP with the key
    :data:`RELAY_API_KEY`. With a ``streamrelay_relay`` marker the test gets a
    relay built with those options, on a server of its own.
    """
    options = _marker_kwargs(request, "streamrelay_relay")
    if not options:
        server: ServerThread = request.getfixturevalue("_streamrelay_relay_server")
        yield server.url + "/v1"
        return
    with _relay_server(streamrelay_simulator, options) as own:
        yield own.url + "/v1"
