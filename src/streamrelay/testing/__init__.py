"""An OpenAI-compatible streaming server for tests, demos and benchmarks.

:class:`Simulator` is a pure ASGI app that answers ``POST /v1/chat/completions``,
``POST /v1/responses``, ``POST /v1/completions`` and ``GET /v1/models`` the way
OpenAI does, with deterministic text, realistic pacing and injectable faults. :class:`ServerThread` runs it (or any ASGI app) under uvicorn on a real
socket in a background thread, so tests see real bytes, real chunked encoding
and real disconnects.

>>> with run_simulator(delay=0) as (sim, base_url):  # doctest: +SKIP
...     client = openai.OpenAI(base_url=base_url, api_key="unused")
...     stream = client.chat.completions.create(
...         model="sim-1",
...         messages=[{"role": "user", "content": "Hi"}],
...         stream=True,
...         extra_body={"simulator": {"fault": "mid_error", "after": 3}},
...     )

Every field of :class:`SimulatorConfig` can be overridden per request through
a ``"simulator"`` object in the JSON body (a relay forwards unknown fields
untouched), and faults can be combined: ``{"fault": ["crlf", "split"]}``.
The available faults are listed in :data:`FAULTS`, and the ones each route
honours in :data:`ROUTE_FAULTS`.

The package, one concern per module:

- :mod:`.config`: :class:`SimulatorConfig`, :data:`FAULTS`, :data:`ROUTES` and
  :data:`ROUTE_FAULTS` (standard library only);
- :mod:`.recording`: :class:`RecordedRequest` and :class:`SimulatorStats`;
- :mod:`.simulator`: the :class:`Simulator` ASGI app;
- :mod:`.plan`, :mod:`.text`, :mod:`.wire`: one request's answer, its content, its bytes;
- :mod:`.chat`, :mod:`.responses`, :mod:`.completions`: each route's dialect;
- :mod:`.server`: :class:`ServerThread`, :func:`run_simulator`, :func:`serve`;
- :mod:`.cli`: the command line of ``streamrelay simulate`` and ``python -m streamrelay.testing``;
- :mod:`.plugin`: the pytest plugin (fixtures ``streamrelay_simulator``,
  ``streamrelay_simulator_app``, ``streamrelay_relay``).

The names below are imported on first use, so that loading the pytest plugin
(which imports this package) does not load a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .cli import main
    from .config import FAULTS, ROUTE_FAULTS, ROUTES, SimulatorConfig
    from .recording import RecordedRequest, SimulatorStats
    from .server import ServerThread, run_simulator, serve
    from .simulator import Simulator

_EXPORTS = {
    "FAULTS": "config",
    "ROUTES": "config",
    "ROUTE_FAULTS": "config",
    "SimulatorConfig": "config",
    "RecordedRequest": "recording",
    "SimulatorStats": "recording",
    "Simulator": "simulator",
    "ServerThread": "server",
    "run_simulator": "server",
    "serve": "server",
    "main": "cli",
}

__all__ = [
    "FAULTS",
    "ROUTES",
    "ROUTE_FAULTS",
    "RecordedRequest",
    "ServerThread",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "main",
    "run_simulator",
    "serve",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
