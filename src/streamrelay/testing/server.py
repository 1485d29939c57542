"""Running an ASGI app on a real socket: in a test's background thread, or in the foreground.

:class:`ServerThread` runs any ASGI app (the simulator, a relay, a user's app)
under uvicorn in a daemon thread with its own event loop, so that tests use
real sockets, real chunked encoding and real disconnects.
:func:`run_simulator` is the shortcut for a simulator; :func:`serve` runs one
in the foreground, which is what the command line does.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp

from .config import SimulatorConfig
from .simulator import Simulator, _quiet_abrupt_close

__all__ = ["ServerThread", "run_simulator", "serve"]

logger = logging.getLogger("streamrelay.testing")


class ServerThread:
    """Runs any ASGI app under uvicorn in a background thread, for tests.

    >>> with ServerThread(app) as server:  # doctest: +SKIP
    ...     httpx.get(server.url + "/health")

    The thread has its own event loop. Entering returns once the server accepts
    connections; leaving stops it, letting open responses finish for
    ``timeout_graceful_shutdown`` seconds before cancelling them (which closes
    their connections). ``port=0`` picks a free port. ``uvicorn_kwargs`` go to
    :class:`uvicorn.Config`; by default uvicorn leaves logging alone (its records
    propagate to the root logger, e.g. pytest's capture) and skips access logs.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_graceful_shutdown: float = 0.5,
        startup_timeout: float = 10.0,
        **uvicorn_kwargs: Any,
    ) -> None:
        uvicorn_kwargs.setdefault("log_config", None)
        uvicorn_kwargs.setdefault("access_log", False)
        self.app = app
        self.host = host
        self.startup_timeout = startup_timeout
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            # uvicorn uses it as an asyncio timeout, so fractions work.
            timeout_graceful_shutdown=cast(Any, timeout_graceful_shutdown),
            **uvicorn_kwargs,
        )
        self.server = uvicorn.Server(self.config)
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._port is None:
            raise RuntimeError("the server was not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind, start the thread and wait until the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        _quiet_abrupt_close()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._requested_port))
        self._port = cast(int, self._socket.getsockname()[1])
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError(f"the server failed to start: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the server did not start within {self.startup_timeout}s")
            time.sleep(0.002)

    def stop(self) -> None:
        """Shut the server down and wait for its thread (idempotent)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self.server.should_exit = True
        graceful = self.config.timeout_graceful_shutdown or 0
        thread.join(graceful + 5)
        if thread.is_alive():
            self.server.force_exit = True
            thread.join(5)
        if thread.is_alive():  # pragma: no cover - a wedged app; the thread is a daemon
            logger.warning("uvicorn thread %s did not stop", thread.name)

    def _run(self) -> None:
        assert self._socket is not None
        try:
            self.server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit on a failed startup included
            self._error = exc

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def run_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **overrides: Any,
) -> Iterator[tuple[Simulator, str]]:
    """Run a :class:`Simulator` on a real socket; yields it and its base URL ending in ``/v1``.

    >>> with run_simulator(delay=0) as (sim, base_url):  # doctest: +SKIP
    ...     httpx.post(base_url + "/chat/completions", json={"messages": []})
    """
    simulator = Simulator(config, **overrides)
    with ServerThread(simulator, host=host, port=port) as server:
        yield simulator, server.url + "/v1"


def serve(
    host: str = "127.0.0.1",
    port: int = 9000,
    config: SimulatorConfig | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Run the simulator in the foreground until interrupted, one log line per request."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s:     %(message)s")
    logger.setLevel(log_level.upper())
    _quiet_abrupt_close()
    server = uvicorn.Server(
        uvicorn.Config(
            Simulator(config),
            host=host,
            port=port,
            access_log=False,
            log_level=log_level,
            timeout_graceful_shutdown=1,
        )
    )
    server.run()
