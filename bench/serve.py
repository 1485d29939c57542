"""Run one relay in this process under uvicorn: ``python -m bench.serve FACTORY --upstream URL``.

``FACTORY`` is ``module:function``: a function taking the upstream base URL and
returning an ASGI app (see :mod:`bench.relays`).

Every relay gets the same server: uvicorn with uvloop (when installed) and httptools,
access log off. The process binds a free port on 127.0.0.1 itself and prints
``PORT <n>`` once listening, so the harness never races another process for a port.
The harness pins the process to one core (``taskset``) before it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket

from bench.common import raise_fd_limit
from bench.relays import build_app

__all__ = ["main"]


def main() -> None:
    """Entry point of ``python -m bench.serve``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("factory", help="module:function returning an ASGI app")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8001/v1")
    args = parser.parse_args()

    import uvicorn

    raise_fd_limit()
    app = build_app(args.factory, args.upstream)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
