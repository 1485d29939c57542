"""The ``streamrelay`` command: ``demo``, ``serve`` and ``simulate``.

* ``streamrelay demo``: the relay at ``/v1`` and a chat page at ``/``. With no
  ``OPENAI_API_KEY`` its upstream is the embedded simulator, so it works offline.
* ``streamrelay serve --upstream URL --mount /v1``: the relay on its own.
* ``streamrelay simulate``: the OpenAI-compatible simulator on its own, with an
  option for every simulator setting. Its parser and runner live in
  :mod:`streamrelay.testing.cli`, which ``python -m streamrelay.testing`` uses too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from ._version import __version__
from .app import StreamRelay
from .config import StreamSettings
from .formats import FORMATS
from .testing import cli as simulator_cli
from .upstream import Upstream, resolve_upstream

__all__ = ["build_demo_app", "main"]

logger = logging.getLogger("streamrelay")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamrelay`` console script."""
    parser, simulate = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "simulate":  # the same code as ``python -m streamrelay.testing``
        return simulator_cli.run(args, simulate)
    _configure_logging(args.log_level)
    command = {"demo": _demo, "serve": _serve}[args.command]
    return command(args)


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``streamrelay`` parser, and its ``simulate`` subparser."""
    parser = argparse.ArgumentParser(
        prog="streamrelay",
        description="Relay OpenAI-compatible LLM streams to browsers, token by token.",
    )
    parser.add_argument("--version", action="version", version=f"streamrelay {__version__}")
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser, port: int) -> None:
        p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=port, help=f"port (default {port})")
        p.add_argument("--log-level", default="info", choices=simulator_cli.LOG_LEVELS)

    demo = sub.add_parser("demo", help="relay + chat page; the simulator if no OPENAI_API_KEY")
    common(demo, 8000)
    demo.add_argument(
        "--simulator", action="store_true", help="use the simulator even if a key is set"
    )
    demo.add_argument("--delay", type=float, default=0.03, help="simulator seconds per token")

    serve = sub.add_parser("serve", help="run the relay alone")
    common(serve, 8000)
    serve.add_argument("--upstream", help="OpenAI-compatible base URL (default: env, then OpenAI)")
    serve.add_argument("--mount", default="/v1", help="path prefix to serve at (default /v1)")
    serve.add_argument("--format", default="sse", choices=list(FORMATS), help="default format")
    serve.add_argument(
        "--heartbeat", type=float, default=15.0, help="seconds; 0 disables (default 15)"
    )

    simulate = sub.add_parser("simulate", help="run the OpenAI-compatible simulator alone")
    simulator_cli.configure(simulate)
    return parser, simulate


def build_demo_app(
    upstream: str, api_key: str | None, *, simulator: ASGIApp | None = None
) -> Starlette:
    """The demo app: the chat page at ``/`` and the relay at ``/v1``.

    With ``simulator``, that app is mounted at ``/simulator`` too; point
    ``upstream`` at ``<this server>/simulator/v1`` and the relay reaches it over
    real HTTP, like any upstream.
    """
    page = _demo_page()

    async def index(request: object) -> HTMLResponse:
        return HTMLResponse(page)

    routes: list[Route | Mount] = [
        Route("/", index),
        Mount("/v1", StreamRelay(Upstream(upstream, api_key=api_key))),
    ]
    if simulator is not None:
        routes.append(Mount("/simulator", simulator))
    return Starlette(routes=routes)


def _demo_page() -> str:
    try:
        return resources.files("streamrelay").joinpath("static").joinpath("demo.html").read_text()
    except FileNotFoundError:  # pragma: no cover - shipped in the wheel
        return "<p>streamrelay demo: POST /v1/chat/completions</p>"


def _demo(args: argparse.Namespace) -> int:
    key = os.environ.get("OPENAI_API_KEY")
    use_simulator = args.simulator or not key
    base = f"http://{_url_host(args.host)}:{args.port}"
    if use_simulator:
        from .testing import Simulator, SimulatorConfig

        simulator = Simulator(SimulatorConfig(delay=args.delay))
        app = build_demo_app(f"{base}/simulator/v1", "simulator", simulator=simulator)
        where = "the embedded simulator (no OPENAI_API_KEY set; no network needed)"
    else:
        where = resolve_upstream(None)
        app = build_demo_app(where, key)
    _banner(
        [
            f"streamrelay {__version__} demo",
            f"  chat page:  {base}/",
            f"  relay:      {base}/v1/chat/completions",
            f"  upstream:   {where}",
            "",
            "  try:",
            f"    curl -N {base}/v1/chat/completions?format=text \\",
            "      -H 'content-type: application/json' \\",
            '      -d \'{"model":"sim-1","messages":[{"role":"user","content":"Hello"}]}\'',
            "  or point an OpenAI SDK at it:",
            f'    OpenAI(base_url="{base}/v1", api_key="unused")',
            "",
        ]
    )
    return _run(app, args)


def _serve(args: argparse.Namespace) -> int:
    mount = "/" + args.mount.strip("/") if args.mount.strip("/") else ""
    upstream = Upstream(args.upstream)
    relay = StreamRelay(
        upstream,
        default_format=args.format,
        stream=StreamSettings(heartbeat=args.heartbeat or None),
    )
    app: ASGIApp = Starlette(routes=[Mount(mount, relay)]) if mount else relay
    base = f"http://{_url_host(args.host)}:{args.port}{mount}"
    has_key = "set" if os.environ.get("OPENAI_API_KEY") else "NOT set (upstream calls go keyless)"
    _banner(
        [
            f"streamrelay {__version__}: relaying {base}/chat/completions",
            f"  upstream: {upstream.base_url}",
            f"  OPENAI_API_KEY: {has_key}",
            f"  default format: {args.format}; heartbeat: {args.heartbeat or 'off'}",
            "",
        ]
    )
    return _run(app, args)


def _run(app: ASGIApp, args: argparse.Namespace) -> int:
    import uvicorn

    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    except KeyboardInterrupt:  # pragma: no cover
        pass
    return 0


def _banner(lines: list[str]) -> None:
    print("\n".join(lines), file=sys.stderr, flush=True)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()), format=simulator_cli.LOG_FORMAT, datefmt="%H:%M:%S"
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
