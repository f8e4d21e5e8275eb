"""Operator commands, refusals, and the order of effects."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from core_support import (
    G1_BETA,
    WALKS,
    Driver,
    beta,
    of_type,
    records,
    to_primary,
    to_secondary,
)

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import State, SubStatus


@pytest.mark.parametrize(
    ("state", "command", "because"),
    [
        (State.STOP, ev.Swap(), "nothing to hand over"),
        (State.STOP, ev.FullSync(), "the module is stopped"),
        (State.WAIT, ev.FullSync(), "fullsync needs a serving peer"),
        (State.ALONE, ev.Second(), "this node serves"),
        (State.RESYNC, ev.Prim(), "resynchronisation in progress"),
        (State.RESYNC, ev.PrimForce(), "data inconsistent"),
        (State.SECONDARY, ev.Prim(), "beta is primary: use swap"),
    ],
    ids=lambda v: str(v) if isinstance(v, State) else getattr(v, "kind", None),
)
def test_a_refused_command_yields_refused_with_a_reason_and_changes_nothing(
    state: State, command: ev.Event, because: str
) -> None:
    d = Driver()
    WALKS[state](d)
    d.run_until(d.now)  # whatever was due now (the first heartbeat) is done
    before = d.node.snapshot()
    effects = d.do(command)
    refused = of_type(effects, fx.Refused)
    assert [r.command for r in refused] == [command.kind]
    assert because in refused[0].reason
    assert records(effects) == []
    assert not of_type(effects, fx.PersistMetadata)
    assert d.node.snapshot() == before


def test_swap_hands_over_when_the_peer_is_an_in_sync_ready_secondary() -> None:
    d = Driver()
    to_primary(d)
    effects = d.do(ev.Swap())
    assert not of_type(effects, fx.Refused)
    assert of_type(effects, fx.StopApp)
    assert d.node.facts.handover == "stopping"
    effects = d.do(ev.AppStopped())
    assert d.state is State.SECONDARY
    assert of_type(effects, fx.SendHeartbeat)[-1].status.handover


def test_swap_is_refused_while_the_secondary_is_transient() -> None:
    d = Driver()
    to_primary(d)
    generation = d.node.facts.metadata.generation
    d.hear(beta(State.SECONDARY, generation, synced=generation, substatus=SubStatus.TRANSIENT))
    assert d.state is State.PRIMARY
    [refused] = of_type(d.do(ev.Swap()), fx.Refused)
    assert "in sync as secondary" in refused.reason
    assert d.node.facts.handover is None


@pytest.mark.parametrize("peer_state", [State.RESYNC, State.WAIT, None], ids=str)
def test_swap_is_refused_while_serving_alone(peer_state: State | None) -> None:
    d = Driver()
    WALKS[State.ALONE](d)
    if peer_state is not None:
        d.hear(beta(peer_state, substatus=SubStatus.TRANSIENT), at=0.5)
    assert d.state is State.ALONE
    [refused] = of_type(d.do(ev.Swap()), fx.Refused)
    assert "swap needs beta in sync as secondary" in refused.reason
    assert of_type(d.do(ev.Swap()), fx.StopApp) == []


def _check_persist_first(d: Driver) -> None:
    changed = 0
    for step in d.steps:
        persisted = of_type(step.effects, fx.PersistMetadata)
        if step.after != step.before:
            changed += 1
            assert step.effects[0] == fx.PersistMetadata(step.after), step.event
            assert len(persisted) == 1
        else:
            assert persisted == [], step.event
    assert changed >= 3, "the walk changed the metadata too rarely to show anything"


def _takeover_after_the_primary_stops(d: Driver) -> None:
    to_secondary(d)
    d.hear(beta(State.STOP, G1_BETA, synced=G1_BETA), at=d.now + 1)
    assert d.state is State.ALONE
    d.do(ev.Stop())
    d.do(ev.Start())


def _protect_then_restart(d: Driver) -> None:
    to_primary(d)
    d.do(ev.Stop())
    d.do(ev.Start())


@pytest.mark.parametrize("walk", [_takeover_after_the_primary_stops, _protect_then_restart])
def test_persist_metadata_comes_first_whenever_metadata_changed(
    walk: Callable[[Driver], None],
) -> None:
    d = Driver()
    walk(d)
    _check_persist_first(d)
