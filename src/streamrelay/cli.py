"""The ``streamrelay`` command: ``demo``, ``serve`` and ``simulate``.

* ``streamrelay demo``: the relay at ``/v1`` and a chat page at ``/``. Its
  upstream is the embedded simulator unless ``OPENAI_API_KEY``,
  ``STREAMRELAY_UPSTREAM``/``OPENAI_BASE_URL`` or ``--upstream`` names a real
  one, so it works offline. Its relay keeps streams in a ``MemoryStore``: the
  page resumes an answer after a reload, and its Stop button stops the
  generation by the stream's id.
* ``streamrelay serve --upstream URL --mount /v1``: the relay on its own.
* ``streamrelay simulate``: the OpenAI-compatible simulator on its own, with an
  option for every simulator setting. Its parser and runner live in
  :mod:`streamrelay.testing.cli`, which ``python -m streamrelay.testing`` uses too.

``demo`` and ``serve`` check their configuration, then bind the port, and only
then print their banner: a mistake or a busy port is one ``streamrelay: error:``
line and a non-zero exit status (2 and 1), never a traceback. Ctrl-C lets open
streams run for ``--graceful-timeout`` seconds, then ends them with the relay's
``shutdown`` error event.

With ``serve --workers N``, uvicorn's workers build the app with
:func:`_app_factory`, from the options the parent puts in the environment
(``STREAMRELAY_CLI_SERVE``; a key given with ``--api-key`` travels in
``STREAMRELAY_CLI_API_KEY``, never on a command line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import html
import inspect
import json
import logging
import os
import re
import socket
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._version import __version__, build
from .app import StreamRelay
from .config import StreamSettings
from .errors import ConfigurationError
from .formats import FORMATS
from .testing import cli as simulator_cli
from .upstream import Upstream, resolve_upstream

if TYPE_CHECKING:
    from .stores import Store

__all__ = ["build_demo_app", "main"]

logger = logging.getLogger("streamrelay")

DEMO_MODEL = "gpt-4o-mini"
"""The demo page's model when the demo relays to a real upstream (``--model`` changes it)."""
SIMULATOR_MODEL = "sim-1"
"""The demo page's model when the demo streams from the embedded simulator."""
GRACEFUL_TIMEOUT = 5.0
"""Seconds open streams may run on after Ctrl-C before they end with a ``shutdown`` error."""

_SERVE_ENV = "STREAMRELAY_CLI_SERVE"
_KEY_ENV = "STREAMRELAY_CLI_API_KEY"
_BACKLOG = 2048  # uvicorn's default


class _Failure(Exception):
    """A mistake reported as one ``streamrelay: error:`` line with this exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


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
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return command(args)
    except (_Failure, ConfigurationError) as exc:
        status = exc.status if isinstance(exc, _Failure) else 2
        message = " ".join(str(exc).split())  # one line
        print(f"streamrelay: error: {message}", file=sys.stderr, flush=True)
        return status


# The parser ---------------------------------------------------------------------------------

_MAIN_EPILOG = """\
examples:
  streamrelay demo                       # chat page + relay at http://127.0.0.1:8000/
  streamrelay serve --upstream http://localhost:11434/v1
  streamrelay simulate --port 9000 --fault mid_error

Run "streamrelay COMMAND --help" for a command's options and more examples.
"""

_DEMO_EPILOG = f"""\
The upstream is the embedded simulator (offline, no key), unless --upstream,
STREAMRELAY_UPSTREAM, OPENAI_BASE_URL or OPENAI_API_KEY is set; --simulator keeps
the simulator anyway. The page asks for model {SIMULATOR_MODEL} from the simulator and
{DEMO_MODEL} from a real upstream; --model changes that, and so does the page's
Advanced panel.

examples:
  streamrelay demo                                      # the simulator, offline
  streamrelay demo --simulator --delay 0.1 --port 8080  # slower tokens, another port
  OPENAI_API_KEY=sk-... streamrelay demo                # OpenAI, model {DEMO_MODEL}
  OPENAI_API_KEY=sk-... streamrelay demo --model gpt-4o
  STREAMRELAY_UPSTREAM=http://localhost:11434/v1 streamrelay demo --model llama3.2
                                                        # a keyless local server (Ollama)
"""

_SERVE_EPILOG = """\
The upstream is --upstream, else STREAMRELAY_UPSTREAM, else OPENAI_BASE_URL, else
OpenAI; its key is --api-key or $NAME from --api-key-env, else OPENAI_API_KEY.
The key is never printed.

examples:
  OPENAI_API_KEY=sk-... streamrelay serve     # POST http://127.0.0.1:8000/v1/chat/completions
  streamrelay serve --upstream http://localhost:11434/v1 --port 8080   # Ollama, no key
  streamrelay serve --upstream https://api.groq.com/openai/v1 --api-key-env GROQ_API_KEY
  streamrelay serve --host 0.0.0.0 --workers 4 --proxy-headers --root-path /ai
                                              # behind a proxy that serves it at /ai/v1

then:
  curl -N 'http://127.0.0.1:8000/v1/chat/completions?format=text' \\
    -H 'content-type: application/json' \\
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
"""


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``streamrelay`` parser, and its ``simulate`` subparser."""
    parser = argparse.ArgumentParser(
        prog="streamrelay",
        description="Relay OpenAI-compatible LLM streams to browsers, token by token.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kind = "compiled with mypyc" if build() == "compiled" else "pure Python"
    parser.add_argument(
        "--version", action="version", version=f"streamrelay {__version__} ({kind})"
    )
    sub = parser.add_subparsers(dest="command", metavar="{demo,serve,simulate}")

    def common(p: argparse.ArgumentParser, port: int) -> None:
        p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
        p.add_argument(
            "--port", type=_port, default=port, help=f"port (default {port}; 0 picks a free one)"
        )
        p.add_argument(
            "--graceful-timeout",
            type=float,
            default=GRACEFUL_TIMEOUT,
            metavar="SECONDS",
            help="on Ctrl-C, seconds open streams may finish before they end with a "
            f"'shutdown' error (default {GRACEFUL_TIMEOUT:g})",
        )
        p.add_argument("--log-level", default="info", choices=simulator_cli.LOG_LEVELS)

    demo = sub.add_parser(
        "demo",
        help="relay + chat page; the simulator unless a key or upstream is set",
        description="Serve a chat page at / and the relay at /v1.",
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(demo, 8000)
    where = demo.add_mutually_exclusive_group()
    where.add_argument(
        "--simulator",
        action="store_true",
        help="use the embedded simulator even if a key or an upstream is set",
    )
    where.add_argument(
        "--upstream",
        metavar="URL",
        help="OpenAI-compatible base URL to relay to (default: STREAMRELAY_UPSTREAM, "
        "OPENAI_BASE_URL, then OpenAI if OPENAI_API_KEY is set)",
    )
    demo.add_argument(
        "--model",
        metavar="NAME",
        help=f"the page's model (default {DEMO_MODEL}; {SIMULATOR_MODEL} with the simulator)",
    )
    demo.add_argument(
        "--delay",
        type=float,
        default=0.03,
        metavar="SECONDS",
        help="simulator seconds per token (default 0.03)",
    )

    serve = sub.add_parser(
        "serve",
        help="run the relay alone",
        description="Serve the relay: POST <mount>/chat/completions, streamed in the "
        "client's format.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(serve, 8000)
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="OpenAI-compatible base URL (default: STREAMRELAY_UPSTREAM, OPENAI_BASE_URL, "
        "then OpenAI)",
    )
    keys = serve.add_mutually_exclusive_group()
    keys.add_argument(
        "--api-key",
        metavar="KEY",
        help="the upstream key (visible to other local users in the process list: "
        "prefer --api-key-env)",
    )
    keys.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="read the upstream key from environment variable NAME (default: OPENAI_API_KEY)",
    )
    serve.add_argument(
        "--mount", default="/v1", metavar="PATH", help="path prefix to serve at (default /v1)"
    )
    serve.add_argument(
        "--format",
        default=None,
        choices=list(FORMATS),
        help="format of streams that ask for none (default: the OpenAI wire, which the SDKs "
        "expect; requests without stream:true get JSON either way)",
    )
    serve.add_argument(
        "--heartbeat",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="keep-alive after this much silence; 0 disables (default 15)",
    )
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes (default 1)"
    )
    serve.add_argument(
        "--root-path",
        default="",
        metavar="PATH",
        help="the path prefix a reverse proxy strips before forwarding (the ASGI root_path); "
        "if the proxy keeps the prefix, use --mount instead",
    )
    serve.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips (default: ignore them)",
    )
    serve.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="comma-separated proxy addresses to trust, or '*'; implies --proxy-headers "
        "(default: $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1)",
    )

    simulate = sub.add_parser(
        "simulate", help="run the OpenAI-compatible simulator alone"
    )  # its description and epilog come from streamrelay.testing.cli
    simulator_cli.configure(simulate)
    return parser, simulate


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


# demo ---------------------------------------------------------------------------------------


def build_demo_app(
    upstream: str,
    api_key: str | None,
    *,
    simulator: ASGIApp | None = None,
    model: str = SIMULATOR_MODEL,
    upstream_label: str | None = None,
    store: Store | None = None,
) -> Starlette:
    """The demo app: the chat page at ``/`` and the relay at ``/v1``.

    The page asks for ``model`` (its Advanced panel can change it) and names
    ``upstream_label`` (default: the upstream's host) as where answers come from.
    With ``simulator``, that app is mounted at ``/simulator`` too; point
    ``upstream`` at ``<this server>/simulator/v1`` and the relay reaches it over
    real HTTP, like any upstream. With ``store``, the relay's streams are resumable
    (docs/resume.md): the page resumes its answer after a reload, and Stop stops the
    generation by the stream's id. ``streamrelay demo`` uses a :class:`MemoryStore`.
    """
    relay = StreamRelay(Upstream(upstream, api_key=api_key), store=store)
    page = render_demo_page(model=model, upstream=upstream_label or _host_of(upstream))

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    routes: list[Route | Mount] = [Route("/", index), Mount("/v1", relay)]
    if simulator is not None:
        routes.append(Mount("/simulator", simulator))
    return Starlette(routes=routes, lifespan=_closing(relay))


def render_demo_page(*, model: str, upstream: str) -> str:
    """The chat page, asking for ``model`` and naming ``upstream`` (both HTML-escaped)."""
    try:
        template = (
            resources.files("streamrelay").joinpath("static").joinpath("demo.html").read_text()
        )
    except FileNotFoundError:  # pragma: no cover - shipped in the wheel
        template = '<p>streamrelay demo: <input id="model" value=""> <span id="upstream"></span>'
    # The file is a working page as it is (the browser tests load it raw), so the
    # values are set in its elements rather than in placeholders.
    page, models = _MODEL_FIELD.subn(
        lambda m: m.group(1) + html.escape(model, quote=True) + m.group(2), template, count=1
    )
    page, upstreams = _UPSTREAM_SPAN.subn(
        lambda m: m.group(1) + html.escape(upstream) + m.group(2), page, count=1
    )
    if (models, upstreams) != (1, 1):  # pragma: no cover - the page and this code disagree
        raise RuntimeError("demo.html lost its #model field or #upstream element")
    return page


_MODEL_FIELD = re.compile(r'(<input id="model"[^>]*\bvalue=")[^"]*(")')
_UPSTREAM_SPAN = re.compile(r'(<span id="upstream"[^>]*>)[^<]*(</span>)')


def _demo(args: argparse.Namespace) -> int:
    _check_graceful_timeout(args.graceful_timeout)
    key = os.environ.get("OPENAI_API_KEY") or None
    configured = (
        args.upstream or os.environ.get("STREAMRELAY_UPSTREAM") or os.environ.get("OPENAI_BASE_URL")
    )
    use_simulator = args.simulator or not (key or configured)
    upstream = None if use_simulator else resolve_upstream(args.upstream)
    model: str = args.model or (SIMULATOR_MODEL if use_simulator else DEMO_MODEL)
    simulator_config: Any = None
    if use_simulator:
        from .testing import SimulatorConfig

        try:
            simulator_config = SimulatorConfig(delay=args.delay, model=model)
        except ValueError as exc:
            raise _Failure(f"--delay: {exc}") from None

    from .stores import MemoryStore

    with _bind(args.host, args.port) as sock:
        base = f"http://{_url_host(args.host)}:{sock.getsockname()[1]}"
        if upstream is None:
            from .testing import Simulator

            app = build_demo_app(
                f"{base}/simulator/v1",
                "simulator",
                simulator=Simulator(simulator_config),
                model=model,
                upstream_label="the embedded simulator",
                store=MemoryStore(),
            )
            why = "--simulator" if args.simulator else "no OPENAI_API_KEY or STREAMRELAY_UPSTREAM"
            where = f"the embedded simulator ({why}; no network needed)"
        else:
            app = build_demo_app(upstream, key, model=model, store=MemoryStore())
            where = f"{upstream} ({'key from OPENAI_API_KEY' if key else 'no key'})"
        _banner(
            [
                f"streamrelay {__version__} demo (Ctrl-C to stop)",
                f"  chat page:  {base}/",
                f"  relay:      {base}/v1/chat/completions",
                f"  upstream:   {where}",
                f"  model:      {model} (--model, or the page's Advanced panel, changes it)",
                "",
                "  try:",
                f"    curl -N {base}/v1/chat/completions?format=text \\",
                "      -H 'content-type: application/json' \\",
                "      -d '"
                + json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
                + "'",
                "  or point an OpenAI SDK at it:",
                f'    OpenAI(base_url="{base}/v1", api_key="unused")',
                "",
            ]
        )
        return _run(app, sock, args)


# serve --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ServeOptions:
    """What builds the ``serve`` app; JSON in ``STREAMRELAY_CLI_SERVE`` for worker processes."""

    upstream: str
    mount: str
    format: str | None
    heartbeat: float
    api_key_env: str | None  # None: the Upstream's default, OPENAI_API_KEY
    log_level: str


def _serve_app(options: _ServeOptions, api_key: str | None) -> ASGIApp:
    relay = StreamRelay(
        Upstream(options.upstream, api_key=api_key),
        default_format=options.format,
        stream=StreamSettings(heartbeat=options.heartbeat or None),
    )
    if not options.mount:
        return relay  # it closes its pools on the lifespan shutdown itself
    return Starlette(routes=[Mount(options.mount, relay)], lifespan=_closing(relay))


def _app_factory() -> ASGIApp:
    """The ``serve`` app of a worker process (``serve --workers N``), built from the
    options its parent left in the environment."""
    options = _ServeOptions(**json.loads(os.environ[_SERVE_ENV]))
    _configure_logging(options.log_level)
    key = os.environ.get(options.api_key_env) if options.api_key_env else None
    with warnings.catch_warnings():  # the parent has shown them, once
        warnings.simplefilter("ignore")
        return _QuietShutdown(_serve_app(options, key))


def _serve(args: argparse.Namespace) -> int:
    _check_graceful_timeout(args.graceful_timeout)
    if args.workers < 1:
        raise _Failure(f"--workers must be at least 1, got {args.workers}")
    root_path = args.root_path.rstrip("/")
    if root_path and not root_path.startswith("/"):
        raise _Failure(f"--root-path must start with '/', got {args.root_path!r}")
    mount = "/" + args.mount.strip("/") if args.mount.strip("/") else ""
    key, key_env, key_source = _serve_key(args)
    options = _ServeOptions(
        upstream=resolve_upstream(args.upstream),
        mount=mount,
        format=args.format,
        heartbeat=args.heartbeat,
        api_key_env=key_env,
        log_level=args.log_level,
    )
    app = _serve_app(options, key)  # raises ConfigurationError before anything is bound
    proxy_headers = args.proxy_headers or args.forwarded_allow_ips is not None
    trusted = args.forwarded_allow_ips or os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"

    with _bind(args.host, args.port) as sock:
        base = f"http://{_url_host(args.host)}:{sock.getsockname()[1]}"
        lines = [
            f"streamrelay {__version__}: relaying {base}{mount}/chat/completions (Ctrl-C to stop)",
            f"  upstream: {options.upstream}",
            f"  API key: {key_source}",
            f"  default format: {args.format or 'the OpenAI wire'}; "
            f"heartbeat: {args.heartbeat or 'off'}",
        ]
        if args.workers > 1:
            lines.append(f"  workers: {args.workers}")
        if root_path:
            lines.append(f"  behind a proxy at: {root_path}{mount}/chat/completions")
        lines.append(
            f"  proxy headers: trusted from {trusted}" if proxy_headers else "  proxy headers: off"
        )
        _banner([*lines, ""])
        uvicorn_options: dict[str, Any] = {
            "root_path": root_path,
            "proxy_headers": proxy_headers,
            "forwarded_allow_ips": args.forwarded_allow_ips,
        }
        if args.workers == 1:
            return _run(app, sock, args, **uvicorn_options)
        os.environ[_SERVE_ENV] = json.dumps(dataclasses.asdict(options))
        if key_env == _KEY_ENV and key is not None:
            os.environ[_KEY_ENV] = key
        return _run(
            "streamrelay.cli:_app_factory",
            sock,
            args,
            factory=True,
            workers=args.workers,
            **uvicorn_options,
        )


def _serve_key(args: argparse.Namespace) -> tuple[str | None, str | None, str]:
    """The key, the environment variable workers read it from, and how the banner says
    where it came from (never the key)."""
    if args.api_key is not None:
        if not args.api_key.strip():
            raise _Failure("--api-key is empty")
        return args.api_key, _KEY_ENV, "given with --api-key"
    if args.api_key_env is not None:
        name = args.api_key_env
        value = os.environ.get(name)
        if not value:
            state = "is empty" if value is not None else "is not set"
            raise _Failure(f"--api-key-env: the environment variable {name} {state}")
        return value, name, f"from ${name}"
    if os.environ.get("OPENAI_API_KEY"):
        return None, None, "from $OPENAI_API_KEY"
    return None, None, "none (no OPENAI_API_KEY: upstream calls go keyless)"


# running ------------------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a :class:`_Failure` that says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"cannot listen on {where}: the port is already in use (another server?); "
                f"choose another with --port, e.g. --port {port + 1 if port < 65535 else 8000}"
            )
        elif exc.errno == errno.EACCES:
            message = (
                f"cannot listen on {where}: permission denied "
                "(ports below 1024 need privileges); choose another with --port"
            )
        else:
            message = f"cannot listen on {where}: {exc.strerror or exc}"
        raise _Failure(message, status=1) from None
    sock.set_inheritable(True)  # for worker processes
    return sock


def _run(
    app: ASGIApp | str,
    sock: socket.socket,
    args: argparse.Namespace,
    *,
    workers: int = 1,
    factory: bool = False,
    root_path: str = "",
    proxy_headers: bool = False,
    forwarded_allow_ips: str | None = None,
) -> int:
    """Serve ``app`` on the bound ``sock`` until Ctrl-C (or SIGTERM)."""
    import uvicorn

    config = uvicorn.Config(
        app if isinstance(app, str) else _QuietShutdown(app),
        host=args.host,
        port=sock.getsockname()[1],
        factory=factory,
        workers=workers,
        log_level=args.log_level,
        root_path=root_path,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        # Open streams get this long, then the server cancels them and each ends
        # with a `shutdown` error event. uvicorn uses it as an asyncio timeout, so
        # fractions work.
        timeout_graceful_shutdown=cast(Any, args.graceful_timeout),
    )
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            _supervise(config, server, sock)
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled
        pass
    return 0


def _supervise(config: Any, server: Any, sock: socket.socket) -> None:
    """Run uvicorn's worker supervisor on our socket (its signature changed in 0.30)."""
    from uvicorn.supervisors import Multiprocess

    supervisor: Callable[..., Any] = Multiprocess
    if "target" in inspect.signature(Multiprocess.__init__).parameters:  # pragma: no cover
        supervisor(config, target=server.run, sockets=[sock]).run()
    else:
        supervisor(config, sockets=[sock]).run()


class _QuietShutdown:
    """The app as served: the cancellation that ends a response at shutdown is not an error.

    When ``--graceful-timeout`` is over, uvicorn cancels the responses still open;
    the relay then ends each stream with its ``shutdown`` error event and lets the
    ``CancelledError`` go on, which uvicorn would log as an "Exception in ASGI
    application" with a traceback, one per open stream. (Under uvicorn nothing
    else cancels a response's task.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] != "http":
                raise
            logger.debug(
                "%s %s: cancelled by the server's shutdown", scope["method"], scope["path"]
            )


def _closing(
    relay: StreamRelay,
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """A lifespan that closes the mounted relay's upstream pools at shutdown (Starlette
    does not pass the lifespan on to mounted apps)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await relay.aclose()

    return lifespan


def _check_graceful_timeout(seconds: float) -> None:
    if not seconds >= 0 or seconds == float("inf"):
        raise _Failure(f"--graceful-timeout must be a number of seconds >= 0, got {seconds}")


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Warnings (a missing key, say) as one line each, not Python's file:line form."""
    text = " ".join(str(message).split())
    print(f"streamrelay: warning: {text}", file=sys.stderr, flush=True)


def _banner(lines: list[str]) -> None:
    print("\n".join(lines), file=sys.stderr, flush=True)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _host_of(url: str) -> str:
    """``host[:port]`` of a URL: no credentials, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or url
    host = f"[{host}]" if ":" in host else host
    try:
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return host


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()), format=simulator_cli.LOG_FORMAT, datefmt="%H:%M:%S"
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
