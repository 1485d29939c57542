"""The simulator's command line, shared by ``streamrelay simulate`` and ``python -m streamrelay.testing``.

There is one parser: :func:`configure` gives any :class:`argparse.ArgumentParser`
(the ``simulate`` subcommand of ``streamrelay``, or :func:`build_parser`'s
own) an option for every :class:`.SimulatorConfig` field, and :func:`run` turns
the parsed options into a config and serves it. An option left out is left to
:class:`.SimulatorConfig`, so its defaults live in one place.

Only the standard library and :mod:`.config` are imported here, so that
``streamrelay --help`` does not load a server; :func:`run` loads uvicorn when it
starts one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .config import FAULTS, ROUTE_FAULTS, ROUTES, SimulatorConfig

__all__ = ["build_parser", "config_from_args", "configure", "main", "run"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
"""The log line format of every ``streamrelay`` command."""

DESCRIPTION = (
    "Run the OpenAI-compatible streaming simulator, with deterministic text, realistic\n"
    "pacing and injectable faults, on the paths OpenAI has (any other is a 404):\n"
    "  POST /v1/chat/completions  chat completions, streaming and not\n"
    "  POST /v1/responses         the Responses API, streaming (event: lines) and not\n"
    "  POST /v1/completions       legacy completions (prompt in, choices[].text out)\n"
    "  GET  /v1/models, /v1/models/{id}"
)

_DEFAULTS = SimulatorConfig()


def _routes_of(name: str) -> str:
    routes = [route for route in ROUTES if name in ROUTE_FAULTS[route]]
    return "" if len(routes) == len(ROUTES) else f" [{', '.join(routes)} only]"


def _epilog() -> str:
    width = max(map(len, FAULTS))
    faults = "\n".join(
        f"  {name:<{width}}  {what}{_routes_of(name)}" for name, what in FAULTS.items()
    )
    return (
        "The options set the defaults of every request. A request overrides any of\n"
        'them with a "simulator" object in its JSON body, using the field names\n'
        '(first_delay, error_type, ...): {"simulator": {"fault": "stall", "after": 3}}.\n'
        "\n"
        "faults (--fault, combinable; a route ignores the defaults it cannot honour, and\n"
        f"answers 400 to a request that asks for one itself):\n{faults}\n"
        "\n"
        "examples:\n"
        "  streamrelay simulate --port 9000 --delay 0.05\n"
        "  streamrelay simulate --fault mid_error --after 5   # fails after 5 tokens\n"
        "  streamrelay simulate --fault reasoning --reasoning-tokens 30\n"
        "  python -m streamrelay.testing --tokens 200 --first-delay 2"
    )


def _fault_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}"
        )
    return names


def _optional_float(value: str) -> float | None:
    if value.strip().lower() in ("none", "off"):
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'none': {value!r}") from None


def _created(value: str) -> int | None:
    if value.strip().lower() == "now":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'now': {value!r}") from None


def _code(value: str) -> str | int:
    return int(value) if value.strip().lstrip("-").isdigit() else value


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` the simulator's description, epilog and every option; returns it.

    Options that belong to :class:`.SimulatorConfig` use its field names as
    ``dest`` and are absent from the parsed namespace unless given (so that
    :func:`config_from_args` leaves the rest to the config's defaults).
    """
    parser.description = DESCRIPTION
    parser.epilog = _epilog()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    d = _DEFAULTS
    unset = argparse.SUPPRESS

    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)"
    )
    server.add_argument("--port", type=int, default=9000, help="port (default: 9000)")
    server.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="one log line per request at info (default: info)",
    )

    answer = parser.add_argument_group("answers")
    answer.add_argument(
        "--tokens",
        type=int,
        default=unset,
        metavar="N",
        help=f"content tokens per choice, without --text or --piece (default: {d.tokens})",
    )
    answer.add_argument(
        "--delay",
        type=float,
        default=unset,
        metavar="SECONDS",
        help=f"seconds between tokens (default: {d.delay})",
    )
    answer.add_argument(
        "--first-delay",
        dest="first_delay",
        type=float,
        default=unset,
        metavar="SECONDS",
        help=f"seconds before the first chunk, the time to first token (default: {d.first_delay})",
    )
    answer.add_argument(
        "--model",
        default=unset,
        metavar="NAME",
        help=f"the model /models lists and answers echo when a request names none (default: {d.model})",
    )
    answer.add_argument(
        "--seed",
        type=int,
        default=unset,
        metavar="N",
        help=f"seed of the generated text, mixed with each request's messages (default: {d.seed})",
    )
    answer.add_argument(
        "--text",
        default=unset,
        help="stream exactly this text, cut into --chunk-size characters per token",
    )
    answer.add_argument(
        "--piece",
        dest="pieces",
        action="append",
        default=unset,
        metavar="TEXT",
        help="stream exactly these tokens, one chunk each, verbatim (repeatable; wins over --text)",
    )
    answer.add_argument(
        "--chunk-size",
        dest="chunk_size",
        type=int,
        default=unset,
        metavar="N",
        help=f"characters per token when cutting --text and tool arguments (default: {d.chunk_size})",
    )
    answer.add_argument(
        "--created",
        type=_created,
        default=unset,
        metavar="SECONDS|now",
        help=f"the chunks' created timestamp, or 'now' for the clock (default: {d.created})",
    )

    faults = parser.add_argument_group("faults (see the list below)")
    faults.add_argument(
        "--fault",
        type=_fault_names,
        action="extend",
        default=unset,
        metavar="NAME[,NAME...]",
        help="fault(s) injected into every answer; repeatable or comma-separated",
    )
    faults.add_argument(
        "--after",
        type=int,
        default=unset,
        metavar="N",
        help="tokens sent before a mid-stream fault fires (default: half of them)",
    )
    faults.add_argument(
        "--stall",
        type=float,
        default=unset,
        metavar="SECONDS",
        help="silence of the stall and stall_headers faults (default: until the client leaves)",
    )
    faults.add_argument(
        "--status",
        type=int,
        default=unset,
        metavar="CODE",
        help=f"HTTP status of the status fault (default: {d.status})",
    )
    faults.add_argument(
        "--body",
        choices=("json", "html"),
        default=unset,
        help="body of the status fault: OpenAI's JSON error or a proxy's HTML page "
        f"(default: {d.body})",
    )
    faults.add_argument(
        "--message",
        default=unset,
        metavar="TEXT",
        help="error message of the status, mid_error and mid_error_legacy faults",
    )
    faults.add_argument(
        "--error-type",
        dest="error_type",
        default=unset,
        metavar="TYPE",
        help="error type of those faults (default: chosen from the status)",
    )
    faults.add_argument(
        "--code",
        type=_code,
        default=unset,
        metavar="CODE",
        help="error code of those faults; digits are sent as a JSON number "
        "(default: chosen from the status)",
    )
    faults.add_argument(
        "--retry-after",
        dest="retry_after",
        type=_optional_float,
        default=unset,
        metavar="SECONDS|none",
        help="retry-after of the status fault, or 'none' to send no such header "
        f"(default: {d.retry_after})",
    )
    faults.add_argument(
        "--size",
        type=int,
        default=unset,
        metavar="BYTES",
        help=f"bytes of the big_line token (default: {d.size})",
    )
    faults.add_argument(
        "--reasoning-tokens",
        dest="reasoning_tokens",
        type=int,
        default=unset,
        metavar="N",
        help="reasoning tokens of the reasoning and parts faults, without --reasoning-text "
        f"(default: {d.reasoning_tokens})",
    )
    faults.add_argument(
        "--reasoning-text",
        dest="reasoning_text",
        default=unset,
        metavar="TEXT",
        help="exact reasoning of those faults, cut into --chunk-size characters per token",
    )
    faults.add_argument(
        "--tool-calls",
        dest="tool_calls",
        type=int,
        default=unset,
        metavar="N",
        help="parallel tool calls of the tools fault (tool_index_collision: at least 2) "
        f"(default: {d.tool_calls})",
    )
    return parser


def build_parser(prog: str = "python -m streamrelay.testing") -> argparse.ArgumentParser:
    """A stand-alone parser with every simulator option."""
    return configure(argparse.ArgumentParser(prog=prog))


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """The :class:`.SimulatorConfig` of the options given; raises :exc:`ValueError` if invalid."""
    given: dict[str, Any] = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(SimulatorConfig)
        if hasattr(args, f.name)
    }
    return SimulatorConfig(**given)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Serve the simulator the parsed options describe, in the foreground, until interrupted.

    An invalid combination of options is reported through ``parser.error``
    (exit status 2) when a parser is given, else raised as :exc:`ValueError`.
    """
    try:
        config = config_from_args(args)
    except ValueError as exc:
        if parser is None:
            raise
        parser.error(str(exc))
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format=LOG_FORMAT, datefmt="%H:%M:%S"
    )
    print(_banner(args.host, args.port, config), file=sys.stderr, flush=True)
    from .server import serve

    with contextlib.suppress(KeyboardInterrupt):
        serve(args.host, args.port, config, log_level=args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamrelay.testing [--port 9000] [--fault mid_error] ...``"""
    parser = build_parser()
    return run(parser.parse_args(argv), parser)


def _banner(host: str, port: int, config: SimulatorConfig) -> str:
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    if config.pieces is not None:
        content = f"{len(config.pieces)} given pieces per answer"
    elif config.text is not None:
        content = f"the given text ({len(config.text)} characters) per answer"
    else:
        content = f"{config.tokens} tokens per answer"
    faults = ", ".join(config.faults) or "none"
    return "\n".join(
        [
            f"streamrelay simulator on http://{url_host}:{port}/v1",
            "  POST /chat/completions, /responses, /completions; GET /models",
            f"  {content}, {config.delay}s apart; model {config.model}; faults: {faults}",
            '  per request: {"simulator": {"fault": "mid_error", "after": 3}} in the body',
            "",
        ]
    )
