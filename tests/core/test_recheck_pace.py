"""A node the arbitrator refuses asks again at every recheck, never more often.

Invariant (spec/transitions.yaml, arbitration gate; guard ``denied_lately``):
after a refusal, the node's next request comes one recheck (``startup_timeout``)
after the request that was refused, counted from when it asked, not from when
the answer came. So the answer's delay does not push the next request past the
following recheck (the skipped recheck: refused at +0 and +2, granted only at
+6 where +4 was possible), and a node asks at most once per recheck, however
many other triggers (timers, heartbeats) come meanwhile, and never while a
request is outstanding.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from core_support import SETTINGS, Driver, beta, of_type, to_secondary

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import State

WITNESS = replace(SETTINGS, arbitrator=True)
RECHECK = WITNESS.startup_timeout


def asks_while_refused(
    delay: float, *, heartbeats: float | None = None, span: float = 30.0
) -> list[float]:
    """Alpha, beta's secondary, asks to take over and the arbitrator refuses
    every request ``delay`` seconds after it is made. Without ``heartbeats``
    alpha lost beta (it asks at its rechecks); with, beta is heard every
    ``heartbeats`` seconds announcing it stopped (without releasing its
    lease), and alpha decides to serve at each. Returns when alpha asked."""
    d = Driver(settings=WITNESS)
    to_secondary(d)
    asks: list[float] = []
    answer_at: float | None = None
    generation = d.node.facts.metadata.generation
    stopped = beta(State.STOP, generation, synced=generation)
    next_tick = None if heartbeats is None else d.now + heartbeats
    until = d.now + span
    while True:
        due = [t for t in (d.node.next_deadline(), answer_at, next_tick) if t is not None]
        at = max(min(due), d.now)
        if at > until:
            break
        if answer_at is not None and at >= answer_at:
            effects = d.do(ev.ArbitrationDenied(reason="lease held by beta"), at)
            answer_at = None
        elif next_tick is not None and heartbeats is not None and at >= next_tick:
            effects = d.hear(stopped, at)
            next_tick = at + heartbeats
        else:
            effects = d.do(ev.Timer(), at)
        for _ in of_type(effects, fx.RequestArbitration):
            assert answer_at is None, f"asked at {d.now} while a request was outstanding"
            asks.append(d.now)
            answer_at = d.now + delay
        assert d.state is not State.ALONE, "served without a grant"
    return asks


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("delay", [0.001, 0.05, 0.5])
def test_a_refused_node_asks_again_at_every_recheck(delay: float) -> None:
    asks = asks_while_refused(delay)
    assert len(asks) >= 5, asks
    # the first request comes when the peer is declared dead, then one at each recheck
    assert gaps(asks[1:]) == [RECHECK] * (len(asks) - 2), asks


@pytest.mark.parametrize("delay", [0.001, 0.5, RECHECK + 0.5])
def test_a_refused_node_asks_at_most_once_per_recheck(delay: float) -> None:
    # no request storm: beta heard every 0.1 s, alpha deciding to serve at each
    asks = asks_while_refused(delay, heartbeats=0.1)
    assert len(asks) >= 4, asks
    assert min(gaps(asks)) >= RECHECK, asks
    if delay < RECHECK:  # and none skipped: one at the first heartbeat a recheck on
        assert max(gaps(asks)) <= RECHECK + 0.1 + 1e-6, asks
