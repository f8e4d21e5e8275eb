"""The write fence: while the peer may take over on its own (alive, announcing
``secondary``), an fsync it did not acknowledge is never acknowledged to the
application. The fence lifts only after the new generation is persisted and
the peer left ``secondary`` or is lost on every link (issue 8's lost writes)."""

from __future__ import annotations

from core_support import Driver, beta, of_type, to_alone, to_primary

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation, State, SubStatus


def fences(effects: list[fx.Effect]) -> list[bool]:
    return [e.fenced for e in of_type(effects, fx.FenceWrites)]


def test_the_fence_rises_with_a_secondary_peer_and_outlives_a_broken_session() -> None:
    d = Driver()
    to_primary(d)
    assert d.node.writes_fenced
    assert True in [f for s in d.steps for f in fences(s.effects)]  # raised on the way
    old = d.node.facts.metadata.generation
    effects = d.do(ev.ReplicationFailed("connection lost"))
    assert d.state is State.ALONE
    minted = d.node.facts.metadata.generation
    assert minted > old
    assert of_type(effects, fx.PersistMetadata)[0].metadata.generation == minted
    assert fences(effects) == []  # still fenced: the peer has not heard the new generation
    # its heartbeats from before it heard: still secondary at the old generation
    assert fences(d.hear(beta(State.SECONDARY, old, synced=old), at=d.now + 0.5)) == []
    assert d.node.writes_fenced
    # it heard the newer generation and resynchronises: the fence lifts
    effects = d.hear(beta(State.RESYNC, old, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    assert fences(effects) == [False]
    assert not d.node.writes_fenced


def test_a_lost_peer_lifts_the_fence_only_after_the_new_generation_is_persisted() -> None:
    d = Driver()
    to_primary(d)
    old = d.node.facts.metadata.generation
    effects = d.run_until(d.now + 10)  # every link silent past the dead timeout
    assert d.state is State.ALONE
    kinds = [type(e) for e in effects]
    assert fences(effects) == [False]
    persisted = [
        i
        for i, e in enumerate(effects)
        if isinstance(e, fx.PersistMetadata) and e.metadata.generation > old
    ]
    assert persisted and persisted[0] < kinds.index(fx.FenceWrites)


def test_a_peer_holding_our_generation_after_an_unconfirmed_resync_end_resyncs_again() -> None:
    """The resync source learns (``ResyncFailed``) that the peer applied the
    end of a resync it never saw acknowledged: the peer is secondary at our
    generation and may miss writes acknowledged since. A new generation makes
    it resynchronise, and the fence holds writes until it left secondary."""
    d = Driver()
    to_primary(d)
    d.do(ev.ReplicationFailed("connection lost"))
    generation = d.node.facts.metadata.generation
    d.hear(beta(State.RESYNC, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    assert d.node.facts.resync_role == "source"
    d.hear(beta(State.SECONDARY, generation, synced=generation), at=d.now + 0.5)
    assert d.node.writes_fenced
    effects = d.do(ev.ResyncFailed("beta already holds it (end unconfirmed)"))
    assert d.node.facts.metadata.generation > generation
    assert d.node.facts.resync_role is None and of_type(effects, fx.StopResync)
    effects = d.hear(beta(State.SECONDARY, generation, synced=generation), at=d.now + 0.5)
    assert d.state is State.ALONE and d.node.writes_fenced
    d.hear(beta(State.RESYNC, generation, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    assert d.node.facts.resync_role == "source" and not d.node.writes_fenced


def test_a_node_that_stops_serving_fails_what_the_fence_holds() -> None:
    """Stopped while fenced: the peer takes over without the held writes, so
    they must fail, never be acknowledged when the fence lifts later."""
    d = Driver()
    to_primary(d)
    d.do(ev.ReplicationFailed("connection lost"))
    effects = d.do(ev.Stop())
    assert d.state is State.STOP
    assert [(e.fenced, e.serving) for e in of_type(effects, fx.FenceWrites)] == [(True, False)]


def test_a_resync_ended_below_the_peers_generation_outranks_it_instead_of_replicating() -> None:
    """The target restarted during the resync with a generation above ours (it
    was forced to serve): the retried resync ends below it and the target
    keeps its own. Replicating to it would wait forever for a confirmation;
    the source serves a generation above it instead, so that it resyncs again
    (found by the model check once the END's acknowledgement took a round)."""
    d = Driver()
    to_alone(d)
    generation = d.node.facts.metadata.generation
    d.hear(beta(State.RESYNC, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    assert d.node.facts.resync_role == "source"
    above = Generation(generation.counter + 1, "beta")
    d.hear(beta(State.RESYNC, above, consistent=False, substatus=SubStatus.TRANSIENT))
    effects = d.do(ev.PeerResynced(generation), at=d.now + 0.5)
    assert not of_type(effects, fx.StartReplication) and not d.node.facts.replicating
    assert d.node.facts.metadata.generation > above
    d.hear(beta(State.RESYNC, above, consistent=False, substatus=SubStatus.TRANSIENT))
    assert d.node.facts.resync_role == "source"  # a new attempt, at the generation above
