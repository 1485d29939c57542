"""The engine's timing rules (:class:`streamrelay.timing.Deadlines`), as tables.

Each row sets up the clock readings by replaying events (``open``, ``received``,
``sending``, ``sent``, ``beat-sent``) at given times and asks what is due at a
given time. No clock, no sockets, no event loop.
"""

from __future__ import annotations

import math

import pytest

from streamrelay.timing import Deadlines, Due

HB, IDLE, SEND = 15.0, 300.0, 30.0


def replay(events: list[tuple[str, float]], **periods: float | None) -> Deadlines:
    settings: dict[str, float | None] = {
        "heartbeat": HB,
        "idle_timeout": IDLE,
        "send_timeout": SEND,
    }
    settings.update(periods)
    d = Deadlines(**settings)
    for name, at in events:
        if name == "open":
            d.open(at)
        elif name == "received":
            d.received(at)
        elif name == "sending":
            d.sending(at)
        elif name == "sent":
            d.sent(at)
        elif name == "beat-sent":
            d.sent(at, waited_on_client=False)
        else:  # pragma: no cover - a typo in a table
            raise AssertionError(name)
    return d


OPEN = [("open", 0.0)]

# (description, events, periods, now, expected due, expected wake)
TABLE: list[
    tuple[str, list[tuple[str, float]], dict[str, float | None], float, Due | None, float]
] = [
    ("nothing before the stream opens", [], {}, 1e9, None, math.inf),
    ("fresh stream: the heartbeat is next", OPEN, {}, 0.0, None, HB),
    ("heartbeat falls due after silence", OPEN, {}, HB, Due.HEARTBEAT, HB),
    ("heartbeat long overdue is still one heartbeat", OPEN, {}, 100.0, Due.HEARTBEAT, 100.0),
    (
        "a token sent restarts the heartbeat period",
        [*OPEN, ("received", 10.0), ("sending", 10.0), ("sent", 10.5)],
        {},
        20.0,
        None,
        10.5 + HB,
    ),
    (
        "a heartbeat sent restarts its period but not the idle timeout",
        [*OPEN, ("sending", 15.0), ("beat-sent", 15.0)],
        {"heartbeat": 15.0, "idle_timeout": 20.0},
        20.0,
        Due.IDLE_TIMEOUT,
        20.0,
    ),
    (
        "idle wins over a heartbeat due at the same time",
        OPEN,
        {"heartbeat": 10.0, "idle_timeout": 10.0},
        10.0,
        Due.IDLE_TIMEOUT,
        10.0,
    ),
    (
        "idle counts from the last upstream read",
        [*OPEN, ("received", 100.0)],
        {"heartbeat": None},
        399.0,
        None,
        400.0,
    ),
    (
        "idle timeout after upstream silence",
        OPEN,
        {"heartbeat": None},
        IDLE,
        Due.IDLE_TIMEOUT,
        IDLE,
    ),
    (
        "a slow client's send does not count against the upstream",
        [*OPEN, ("sending", 1.0), ("sent", 250.0)],
        {"heartbeat": None, "send_timeout": None},
        IDLE + 1.0,
        None,
        250.0 + IDLE,
    ),
    (
        "during a send only the send timeout counts",
        [*OPEN, ("sending", 5.0)],
        {"heartbeat": 1.0, "idle_timeout": 2.0},
        7.0,
        None,
        8.0,  # looks again within the shortest read-side period (the heartbeat's 1 s)
    ),
    ("a send past its timeout", [*OPEN, ("sending", 5.0)], {}, 5.0 + SEND, Due.SEND_TIMEOUT, 35.0),
    (
        "a send with no read-side period looks again within the send timeout",
        [*OPEN, ("sending", 5.0)],
        {"heartbeat": None, "idle_timeout": None},
        6.0,
        None,
        35.0,
    ),
    (
        "no send timeout: a stuck send is never due",
        [*OPEN, ("sending", 5.0)],
        {"heartbeat": None, "idle_timeout": None, "send_timeout": None},
        1e6,
        None,
        1e6 + 60.0,
    ),
    (
        "while reading, a send that starts now bounds the wake time",
        OPEN,
        {"heartbeat": None, "idle_timeout": None, "send_timeout": 30.0},
        3.0,
        None,
        33.0,
    ),
    (
        "nothing configured: nothing is ever due",
        OPEN,
        {"heartbeat": None, "idle_timeout": None, "send_timeout": None},
        1e9,
        None,
        math.inf,
    ),
    (
        "after a send ends the read-side periods apply again",
        [*OPEN, ("sending", 5.0), ("sent", 6.0)],
        {},
        6.0 + HB,
        Due.HEARTBEAT,
        21.0,
    ),
]


@pytest.mark.parametrize(
    ("events", "periods", "now", "due", "wake"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_what_is_due(
    events: list[tuple[str, float]],
    periods: dict[str, float | None],
    now: float,
    due: Due | None,
    wake: float,
) -> None:
    d = replay(events, **periods)
    assert d.due(now) == (due, wake)


def test_the_first_row_with_a_due_item_is_exact_at_its_deadline() -> None:
    """Just before a deadline nothing is due; at it, it is (no off-by-epsilon)."""
    d = replay(OPEN)
    assert d.due(HB - 1e-9)[0] is None
    assert d.due(HB)[0] is Due.HEARTBEAT


def test_reopening_resets_every_reading() -> None:
    d = replay([*OPEN, ("sending", 1.0)])
    d.open(100.0)
    assert d.due(100.0) == (None, 100.0 + HB)
