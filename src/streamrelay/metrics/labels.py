"""The bounded label values every metrics backend uses (sans-I/O, standard library only).

Labels must stay bounded: a label value per request id, stream id or raw model name
would grow a time series per request and sink the metrics store. Only these go in.
"""

from __future__ import annotations

from collections.abc import Collection

from ..outcome import Ending, Outcome

__all__ = ["OUTCOME_LABELS", "model_label", "outcome_label", "upstream_error_status"]

OUTCOME_LABELS = (
    "done",
    "error",
    "client_disconnected",
    "upstream_status",
    "stopped",
    "abandoned",
)
"""The values of the ``outcome`` label of a finished stream."""

_OUTCOME_OF = {
    Ending.DONE: "done",
    Ending.ERROR: "error",
    Ending.UPSTREAM_STATUS: "upstream_status",
    Ending.UPSTREAM_UNAVAILABLE: "error",
    Ending.CLIENT_DISCONNECTED: "client_disconnected",
    Ending.SEND_TIMEOUT: "client_disconnected",
    Ending.SHUTDOWN: "error",
    Ending.STOPPED: "stopped",
    Ending.ABANDONED: "abandoned",
    Ending.CRASHED: "error",
}


def outcome_label(ending: Ending) -> str:
    """The ``outcome`` label of a stream that ended so: one of :data:`OUTCOME_LABELS`.

    An unreachable upstream, a server shutting down and a crash are errors (the code
    says which, in the log line, not in a label); a client that stopped reading (the
    send timeout) counts as disconnected.

    >>> outcome_label(Ending.SEND_TIMEOUT), outcome_label(Ending.UPSTREAM_UNAVAILABLE)
    ('client_disconnected', 'error')
    """
    return _OUTCOME_OF[ending]


def upstream_error_status(outcome: Outcome) -> str | None:
    """The ``status`` label of an upstream failure before any answer, else ``None``: the
    upstream's error status (``"429"``), or the relay's own 502/504 when the upstream
    could not be reached or did not answer in time. Mid-stream errors are not
    counted here (they are ``outcome="error"`` streams).

    >>> upstream_error_status(Outcome(Ending.UPSTREAM_STATUS, status=429, upstream_status=429))
    '429'
    >>> upstream_error_status(Outcome(Ending.UPSTREAM_UNAVAILABLE, status=504)), upstream_error_status(Outcome(Ending.DONE))
    ('504', None)
    """
    if outcome.upstream_status is not None and outcome.upstream_status >= 400:
        return str(outcome.upstream_status)
    if outcome.ending is Ending.UPSTREAM_UNAVAILABLE and outcome.status is not None:
        return str(outcome.status)
    return None


def model_label(model: str | None, allowed: Collection[str] | None) -> str | None:
    """The ``model`` label: the model when the user allowed it by name, ``"other"``
    for any other model, ``None`` when model labels are off (``allowed`` is ``None``).

    >>> model_label("gpt-4o", {"gpt-4o"}), model_label("x" * 300, {"gpt-4o"}), model_label("gpt-4o", None)
    ('gpt-4o', 'other', None)
    """
    if allowed is None:
        return None
    return model if model is not None and model in allowed else "other"
