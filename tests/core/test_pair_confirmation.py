"""A secondary takes over only once its serving peer confirmed the pair.

The hole (issue 8, point 2): a resync session that breaks after the target
applied ``END`` but before the source heard it acknowledged. The target
announces ``secondary`` at the source's generation, while the source, which
still sees a target in ``resync``, acknowledges fsyncs on its own. Losing the
source then (crash, or an operator's stop) must not let the target serve a
copy of that generation that may lack those writes. Confirmation is hearing
the peer in ``primary`` at our generation (a source enters ``primary`` only
after it heard the end acknowledged), or handing our own service over."""

from __future__ import annotations

import pytest
from core_support import G1_BETA, Driver, beta, of_type, records, to_primary, to_resync

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.compare import Relation
from failover.core.state import INITIAL, Generation, State, SubStatus

G2_ALPHA = Generation(2, "alpha")


def confirmed(d: Driver) -> bool:
    """Persisted: a resync target keeps last_state resync until confirmed."""
    return d.node.facts.metadata.last_state is State.SECONDARY


def unconfirmed_secondary() -> Driver:
    """Alpha applied the END of beta's resync; beta never went primary."""
    d = Driver()
    to_resync(d)
    d.do(ev.ResyncDone(G1_BETA), at=d.now + 0.5)
    assert d.state is State.SECONDARY
    # beta still announces alone at our generation: it has not heard the END acknowledged
    d.hear(beta(State.ALONE, G1_BETA), at=d.now + 0.5)
    assert d.state is State.SECONDARY and not confirmed(d)
    return d


def confirmed_secondary() -> Driver:
    d = unconfirmed_secondary()
    d.hear(beta(State.PRIMARY, G1_BETA, synced=G1_BETA), at=d.now + 0.5)
    assert confirmed(d)
    return d


def test_an_unconfirmed_secondary_that_loses_its_peer_waits_and_distrusts_its_copy() -> None:
    d = unconfirmed_secondary()
    effects = d.run_until(d.now + 10)  # every link silent past the dead timeout
    assert d.state is State.WAIT
    assert not of_type(effects, fx.StartApp)
    [lost] = [r for r in records(effects) if r.event == "peer_lost"]
    assert lost.target == "wait" and "before it confirmed the end of the resync" in lost.reason
    # persisted before anything else: a restart must not make it a valid copy again
    [persisted] = [e for e in effects if isinstance(e, fx.PersistMetadata)][:1]
    assert not persisted.metadata.consistent
    # and later, alone, it still does not serve on its own
    effects = d.run_until(d.now + 30)
    assert d.state is State.WAIT and not of_type(effects, fx.StartApp)


def test_a_forced_unconfirmed_copy_meets_its_source_as_a_split_brain() -> None:
    """The operator serves the unconfirmed copy anyway (primforce). When the
    source returns with the writes this copy may lack, the two histories must
    look diverged (a split brain: the loser quarantines its writes), not the
    source's as an older state of ours (it would be resynchronised over)."""
    d = unconfirmed_secondary()
    d.run_until(d.now + 10)
    assert d.node.facts.metadata.synced_generation == INITIAL  # the common point is forgotten
    d.do(ev.PrimForce(), at=d.now + 0.5)
    assert d.state is State.ALONE
    # beta (the source) restarted: it still holds the generation we had adopted
    d.hear(beta(State.WAIT, G1_BETA), at=d.now + 0.5)
    assert d.node.relation is Relation.DIVERGED


def test_a_confirmed_secondary_takes_over_when_its_peer_is_lost() -> None:
    d = confirmed_secondary()
    effects = d.run_until(d.now + 10)
    assert d.state is State.ALONE
    assert of_type(effects, fx.StartApp)


def test_an_unconfirmed_secondary_does_not_take_over_from_a_stopped_peer() -> None:
    """The operator stops the source inside the window: the target neither
    takes over (peer idle) nor serves later from ``wait`` against the stopped
    peer at the same generation (which a tie would give it)."""
    d = unconfirmed_secondary()
    d.hear(beta(State.STOP, G1_BETA, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    effects = d.hear(beta(State.STOP, G1_BETA), at=d.now + 0.5)
    assert d.state is State.WAIT and not of_type(effects, fx.StartApp)
    for _ in range(5):
        effects = d.hear(beta(State.STOP, G1_BETA), at=d.now + 0.5)
        assert d.state is State.WAIT and not of_type(effects, fx.StartApp), records(effects)
    # the source starts again: it has the newer data and serves, alpha resynchronises
    d.hear(beta(State.ALONE, G2_ALPHA, synced=G1_BETA), at=d.now + 0.5)
    assert d.state is State.RESYNC


def test_a_confirmed_secondary_takes_over_from_a_stopped_peer() -> None:
    d = confirmed_secondary()
    effects = d.hear(beta(State.STOP, G1_BETA, synced=G1_BETA), at=d.now + 0.5)
    assert d.state is State.ALONE and of_type(effects, fx.StartApp)


def test_confirmation_does_not_outlive_a_new_resync() -> None:
    d = confirmed_secondary()
    newer = Generation(2, "beta")
    d.hear(beta(State.ALONE, newer, synced=G1_BETA), at=d.now + 0.5)
    assert d.state is State.RESYNC
    d.do(ev.ResyncDone(newer), at=d.now + 0.5)
    assert d.state is State.SECONDARY and not confirmed(d)


def test_an_unconfirmed_copy_stays_distrusted_across_a_restart() -> None:
    """The target crashes inside the window and restarts: its metadata says
    the copy was never confirmed, so it is not served as that generation
    against the source seen stopped at it (a tie a stopped peer loses)."""
    d = unconfirmed_secondary()
    restarted = Driver(metadata=d.node.facts.metadata)
    effects = restarted.do(ev.Start())
    [persisted] = of_type(effects, fx.PersistMetadata)
    assert not persisted.metadata.consistent
    assert persisted.metadata.synced_generation == INITIAL
    for _ in range(5):
        effects = restarted.hear(beta(State.STOP, G1_BETA), at=restarted.now + 0.5)
        assert restarted.state is State.WAIT and not of_type(effects, fx.StartApp)


def test_a_confirmed_copy_survives_a_restart() -> None:
    d = confirmed_secondary()
    restarted = Driver(metadata=d.node.facts.metadata)
    restarted.do(ev.Start())
    assert restarted.node.facts.metadata.consistent
    effects = restarted.hear(beta(State.STOP, G1_BETA, synced=G1_BETA), at=restarted.now + 0.5)
    assert restarted.state is State.ALONE and of_type(effects, fx.StartApp)


@pytest.mark.parametrize(
    "leave", [ev.CheckerDown("app-check"), ev.Stop()], ids=["checker_down", "stop"]
)
def test_an_unconfirmed_secondary_leaving_the_pair_otherwise_distrusts_its_copy(
    leave: ev.Event,
) -> None:
    d = unconfirmed_secondary()
    d.do(leave, at=d.now + 0.5)
    assert d.state in (State.WAIT, State.STOP)
    assert not d.node.facts.metadata.consistent


@pytest.mark.parametrize("outcome", [ev.AppStopped(), ev.AppFailed("stop script failed")])
def test_the_node_that_hands_its_service_over_is_a_confirmed_secondary(outcome: ev.Event) -> None:
    d = Driver()
    to_primary(d)
    generation = d.node.facts.metadata.generation
    d.do(ev.Swap(), at=d.now + 0.5)
    d.do(outcome, at=d.now + 0.5)
    assert d.state is State.SECONDARY and confirmed(d)
    # the peer dies before we hear it primary: we served this generation, we take over
    effects = d.run_until(d.now + 10)
    assert d.state is State.ALONE and of_type(effects, fx.StartApp)
    assert d.node.facts.metadata.generation > generation
