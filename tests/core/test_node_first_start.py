"""A first start (neither node ever served nor synced) on one core: what it
announces, and what it decides from what its peer announces."""

from __future__ import annotations

from dataclasses import replace

from core_support import G1_BETA, SETTINGS, Driver, beta, of_type, records, to_wait

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation, Metadata, PeerStatus, State

WITH_DATA = replace(SETTINGS, local_data=True)


def fresh_beta(state: State = State.WAIT, *, has_data: bool) -> PeerStatus:
    return replace(beta(state), has_data=has_data)


def test_has_data_is_announced_only_while_the_metadata_is_fresh() -> None:
    d = Driver(settings=WITH_DATA)
    assert d.node.status().has_data
    assert not Driver().node.status().has_data  # nothing in the directories
    # once the node has served (it minted a generation) its data is a generation's
    d.do(ev.Prim())
    assert not d.node.facts.metadata.fresh
    assert not d.node.status().has_data
    # and a node that was resynchronised once is never fresh again
    d = Driver(settings=WITH_DATA, metadata=Metadata(last_state=State.RESYNC, consistent=False))
    assert not d.node.status().has_data


def test_data_here_only_this_node_serves_even_if_it_loses_the_tie() -> None:
    d = Driver(settings=replace(WITH_DATA, name="beta", peer="alpha"))
    to_wait(d)
    # alpha (the lower name, which wins the tie) has nothing in its directories
    effects = d.hear(replace(fresh_beta(has_data=False), node="alpha"), at=0.5)
    assert d.state is State.ALONE
    assert of_type(effects, fx.StartApp)
    assert records(effects)[0].reason == "first start: this node holds data and alpha none: serving"


def test_data_there_only_this_node_waits_even_if_it_wins_the_tie() -> None:
    d = Driver()
    to_wait(d)
    for peer_state in (State.WAIT, State.STOP):  # a stopped peer serves later
        d.hear(fresh_beta(peer_state, has_data=True), at=d.now + 0.5)
        assert d.state is State.WAIT
        assert d.node.facts.reason == (
            "first start: beta holds data and this node none: waiting for beta to serve it"
        )
    # beta serves its data: alpha is copied from it in full
    effects = d.hear(beta(State.ALONE, G1_BETA), at=d.now + 0.5)
    assert d.state is State.RESYNC
    assert [e.mode for e in of_type(effects, fx.StartResync)] == ["full"]


def test_data_on_both_sides_waits_for_the_operator() -> None:
    d = Driver(settings=WITH_DATA)
    to_wait(d)
    d.hear(fresh_beta(has_data=True), at=0.5)
    assert d.state is State.WAIT
    assert d.node.facts.reason.startswith(
        "data on both nodes: choose with `failover prim` on the node whose data to keep"
    )
    d.run_until(20.0)  # nothing changes by itself
    assert d.state is State.WAIT
    d.do(ev.Prim())
    assert d.state is State.ALONE and d.node.facts.forced


def test_no_data_on_either_side_the_tie_decides_as_before() -> None:
    d = Driver()
    to_wait(d)
    d.hear(fresh_beta(has_data=False), at=0.5)
    assert d.state is State.ALONE  # alpha: the lower name


def test_a_first_start_never_serves_blind_even_with_an_arbitrator() -> None:
    d = Driver(settings=replace(WITH_DATA, arbitrator=True))
    to_wait(d)
    effects = d.run_until(10.0)  # discovery ends, then every recheck
    assert d.state is State.WAIT
    assert not of_type(effects, fx.RequestArbitration)
    assert d.node.facts.reason.startswith(
        "first start: waiting for beta to compare the replicated data"
    )


def test_a_fresh_node_is_always_copied_in_full() -> None:
    # the peer recorded a common point from another life (this node was
    # reinstalled): this node's directories share nothing with it
    d = Driver()
    to_wait(d)
    g3 = Generation(3, "beta")
    effects = d.hear(beta(State.ALONE, g3, synced=Generation(2, "beta")), at=0.5)
    assert d.state is State.RESYNC
    assert [e.mode for e in of_type(effects, fx.StartResync)] == ["full"]
