"""What the simulator does by default, and how a request changes it.

:class:`SimulatorConfig` holds every knob of the simulator (pacing, text,
faults and their parameters) and validates it in one place, whether the values
come from Python, from the command line (:mod:`.cli`) or from a request's
``"simulator"`` object. :data:`FAULTS` names the faults it can inject.

Not every fault makes sense on every route: :data:`ROUTE_FAULTS` says which
faults each generation route honours. A fault a request asks for itself (in its
``"simulator"`` object) on a route that cannot honour it is a 400; a default one
(from the config or the command line) is simply not applied there.

This module imports only the standard library, so that the command line and the
pytest plugin can read the defaults without loading a server.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

__all__ = ["FAULTS", "ROUTES", "ROUTE_FAULTS", "SimulatorConfig"]

FAULTS: Mapping[str, str] = {
    # Before the stream.
    "status": "an HTTP error (`status`, default 429) before any byte of the stream",
    "stall_headers": "wait `stall` seconds (default: until the client leaves) before the headers",
    # At `after` tokens.
    "mid_error": 'after `after` tokens, `data: {"error": {...}}` (Responses: an `error` '
    "event), then a clean end",
    "mid_error_legacy": 'like mid_error in the vLLM shape `{"object": "error", ...}`',
    "failed": "after `after` tokens, `response.failed` with the error, then "
    "a clean end (without streaming: a response whose status is failed)",
    "abrupt_close": "after `after` tokens, drop the connection: no terminating chunk",
    "stall": "after `after` tokens, go silent for `stall` seconds (default: forever), then go on",
    "truncate": "after `after` tokens, end cleanly without finish_reason and without [DONE] "
    "(Responses: without response.completed)",
    "invalid_utf8": "after `after` tokens, one data line with invalid UTF-8 bytes, then go on",
    "non_json": "after `after` tokens, one `data: hello` line, then go on",
    "big_line": "a content token of `size` bytes (default 3 MiB) at position `after`",
    # At the end.
    "no_done": "the finish_reason chunk (and usage), then a clean end without [DONE]",
    # Payload shapes.
    "azure": "Azure OpenAI's chunks: prompt_filter_results first, content_filter_results",
    "tools": "stream `tool_calls` (default 1) parallel tool calls; finish_reason tool_calls "
    "(Responses: function_call items); a conversation that ends with a tool result gets text",
    "tool_index_collision": "`tool_calls` (at least 2) tool calls that all use index 0 "
    "but have different ids, as some OpenAI-compatible proxies of Claude stream them",
    "refusal": "stream delta.refusal pieces instead of content (Responses: a refusal part)",
    "reasoning": "`reasoning_tokens` pieces of reasoning before the answer: "
    "delta.reasoning_content as DeepSeek streams it (Responses: a reasoning item with "
    "summary text)",
    "parts": "Mistral's delta.content: a list of typed parts, thinking parts "
    '(`{"type": "thinking", "thinking": [{"type": "text", ...}]}`) then text parts',
    "timestamps": "each token is 't=<server time.time_ns() at send> '",
    # Framing.
    "crlf": "CRLF line endings",
    "cr": "CR line endings",
    "comments": "a ': keep-alive' comment block before every event",
    "nospace": "'data:{...}' without the space",
    "multiline": "each JSON payload split across several data: lines",
    "bom": "a UTF-8 byte order mark before the first event",
    "split": "every byte in its own write, pausing inside multi-byte characters and CRLFs",
}
"""Fault names accepted by ``"fault"``, with what each one does."""

ROUTES: Mapping[str, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
}
"""The simulator's generation routes, by short name."""

_NOT_ON: Mapping[str, frozenset[str]] = {
    "chat": frozenset({"failed"}),
    "completions": frozenset(
        {"failed", "tools", "tool_index_collision", "refusal", "reasoning", "parts"}
    ),
    "responses": frozenset(
        {"mid_error_legacy", "no_done", "azure", "parts", "tool_index_collision"}
    ),
}

ROUTE_FAULTS: Mapping[str, frozenset[str]] = {
    route: frozenset(FAULTS) - _NOT_ON[route] for route in ROUTES
}
"""The faults each generation route (``"chat"``, ``"completions"``, ``"responses"``) honours."""


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator answers; every field can be overridden per request.

    A request overrides fields with a ``"simulator"`` object in its JSON body,
    e.g. ``{"simulator": {"fault": "stall", "after": 3, "stall": 0.5}}``.
    Standard request fields are honored as OpenAI does: ``stream`` and ``model``
    (echoed back) everywhere; ``n``, ``max_tokens`` / ``max_completion_tokens``,
    ``stream_options.include_usage`` and ``tools`` (their names are used by
    ``tools``) on chat completions; ``prompt``, ``n``, ``max_tokens`` and
    ``stream_options`` on legacy completions; ``input``, ``instructions``,
    ``max_output_tokens`` and ``tools`` on the Responses API.
    """

    tokens: int = 40
    """Content tokens per choice when no ``text`` or ``pieces`` is given."""
    delay: float = 0.02
    """Seconds between two tokens."""
    first_delay: float = 0.0
    """Seconds before the first chunk (time to first byte of the body)."""
    model: str = "sim-1"
    """The model listed by ``/models``, and echoed when the request names none."""
    seed: int = 0
    """Seed of the generated text, mixed with the request's messages."""
    fault: str | Sequence[str] | None = None
    """One fault name, a list of them, or a comma-separated string; see :data:`FAULTS`."""
    after: int | None = None
    """Tokens sent before a mid-stream fault fires; ``None`` means half of them."""
    stall: float | None = None
    """Seconds of silence for ``stall`` and ``stall_headers``; ``None`` means forever."""
    status: int = 429
    """HTTP status of the ``status`` fault."""
    body: Literal["json", "html"] = "json"
    """Body of the ``status`` fault: OpenAI's JSON error or a proxy's HTML page."""
    message: str | None = None
    """Error message of ``status``, ``mid_error`` and ``mid_error_legacy``."""
    error_type: str | None = None
    """Error ``type``; by default chosen from the status (``server_error`` mid-stream)."""
    code: str | int | None = None
    """Error ``code``; by default chosen from the status (``server_error`` mid-stream)."""
    retry_after: float | None = 1.0
    """``retry-after`` (seconds) and ``retry-after-ms`` of the ``status`` fault."""
    text: str | None = None
    """Exact content to stream, cut into ``chunk_size``-character tokens."""
    pieces: Sequence[str] | None = None
    """Exact content tokens, one per chunk, verbatim (wins over ``text``)."""
    chunk_size: int = 4
    """Characters per token when cutting ``text`` and tool-call arguments."""
    size: int = 3 * 1024 * 1024
    """Bytes of the ``big_line`` token."""
    tool_calls: int = 1
    """Parallel tool calls streamed by the ``tools`` fault (``tool_index_collision``: at least 2)."""
    reasoning_tokens: int = 16
    """Reasoning tokens per choice of the ``reasoning`` and ``parts`` faults, without
    ``reasoning_text``."""
    reasoning_text: str | None = None
    """Exact reasoning of those faults, cut into ``chunk_size``-character tokens."""
    created: int | None = 1_700_000_000
    """The chunks' ``created``; fixed so that equal requests give equal bytes, or
    ``None`` for the current time."""

    def __post_init__(self) -> None:
        _check_int("tokens", self.tokens)
        _check_float("delay", self.delay)
        _check_float("first_delay", self.first_delay)
        _check_type("model", self.model, str)
        _check_int("seed", self.seed, minimum=None)
        object.__setattr__(self, "fault", _parse_faults(self.fault) or None)
        if self.after is not None:
            _check_int("after", self.after)
        if self.stall is not None:
            _check_float("stall", self.stall)
        _check_int("status", self.status, minimum=100)
        if self.status > 599:
            raise ValueError(f"status must be at most 599, not {self.status}")
        if self.body not in ("json", "html"):
            raise ValueError(f"body must be 'json' or 'html', not {self.body!r}")
        for name in ("message", "error_type", "text", "reasoning_text"):
            if getattr(self, name) is not None:
                _check_type(name, getattr(self, name), str)
        if self.code is not None:
            _check_type("code", self.code, (str, int))
        if self.retry_after is not None:
            _check_float("retry_after", self.retry_after)
        if self.pieces is not None:
            if isinstance(self.pieces, str) or not all(isinstance(p, str) for p in self.pieces):
                raise ValueError("pieces must be a list of strings")
            object.__setattr__(self, "pieces", tuple(self.pieces))
        _check_int("chunk_size", self.chunk_size, minimum=1)
        _check_int("size", self.size, minimum=1)
        _check_int("tool_calls", self.tool_calls, minimum=1)
        _check_int("reasoning_tokens", self.reasoning_tokens)
        if self.created is not None:
            _check_int("created", self.created)

    @property
    def faults(self) -> tuple[str, ...]:
        """The fault names in effect, in the order given."""
        return _parse_faults(self.fault)

    def faults_on(self, route: str) -> tuple[str, ...]:
        """The faults in effect that ``route`` (a key of :data:`ROUTES`) honours."""
        return tuple(name for name in self.faults if name in ROUTE_FAULTS[route])

    def replace(self, **overrides: Any) -> SimulatorConfig:
        """A copy with some fields changed; unknown names raise :exc:`ValueError`."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown simulator option(s) {', '.join(unknown)}; known: {known}")
        return dataclasses.replace(self, **overrides)


def _parse_faults(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        names = [name.strip() for name in value.split(",") if name.strip()]
    elif isinstance(value, Sequence) and all(isinstance(name, str) for name in value):
        names = list(value)
    else:
        raise ValueError(f"fault must be a name or a list of names, not {value!r}")
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    return tuple(dict.fromkeys(names))


def _check_type(name: str, value: object, kind: type | tuple[type, ...]) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} has the wrong type: {value!r}")


def _check_int(name: str, value: object, *, minimum: int | None = 0) -> None:
    _check_type(name, value, int)
    if minimum is not None and cast(int, value) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")


def _check_float(name: str, value: object) -> None:
    _check_type(name, value, (int, float))
    if not math.isfinite(cast(float, value)) or cast(float, value) < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
