"""A node's life from start: heartbeats, deadlines, discovery, deciding without the peer."""

from __future__ import annotations

from dataclasses import replace

import pytest
from core_support import G1, G2_BETA, SETTINGS, WALKS, Driver, beta, of_type, records, to_alone

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Metadata, State, SubStatus


def test_a_new_node_is_stopped_and_ready() -> None:
    node = Driver().node
    assert node.state is State.STOP
    assert node.substatus is SubStatus.READY
    assert node.facts.peer is None
    assert all(not view.up and view.last_seen is None for _, view in node.facts.links)


@pytest.mark.parametrize("state", list(WALKS), ids=str)
def test_heartbeats_are_sent_in_every_state_every_interval(state: State) -> None:
    d = Driver()
    WALKS[state](d)
    reached = d.now
    for beat in (1, 2):
        at = reached + beat * SETTINGS.heartbeat_interval
        assert d.node.next_deadline() is not None
        assert d.node.next_deadline() <= at  # type: ignore[operator]
        sent = of_type(d.run_until(at), fx.SendHeartbeat)
        assert sent, f"no heartbeat in {state} by t={at}"
        assert sent[-1].status.state is state
        assert sent[-1].status.node == "alpha"


def test_a_heartbeat_goes_out_at_once_when_the_state_changes() -> None:
    d = Driver()
    d.run_until(0.2)  # the first periodic heartbeat, at 0
    effects = d.do(ev.Start(), at=0.5)
    sent = of_type(effects, fx.SendHeartbeat)
    assert [s.status.state for s in sent] == [State.WAIT]
    assert effects[-1] == sent[-1]


def test_next_deadline_is_the_earliest_timer() -> None:
    d = Driver()
    assert d.node.next_deadline() == 0.0  # the first heartbeat is due at once
    d = Driver(settings=replace(SETTINGS, heartbeat_interval=10))  # keep heartbeats out of the way
    d.do(ev.Start(), at=0.0)
    assert d.node.next_deadline() == 3.0  # discovery ends
    d.hear(beta(State.WAIT, G2_BETA), at=0.5, links=["lan"])
    assert d.node.next_deadline() == 2.5  # lan silent for link_timeout
    d.do(ev.Timer(), at=2.5)
    assert not d.node.facts.link("lan").up
    assert d.node.next_deadline() == 3.5  # every link silent for dead_timeout
    d.do(ev.Timer(), at=3.5)
    assert not d.node.facts.peer_alive
    assert d.node.next_deadline() == 6.5  # waiting blind: decide again after startup_timeout
    d.do(ev.Timer(), at=6.5)
    assert d.node.next_deadline() == 9.5
    d.do(ev.Timer(), at=9.5)
    assert d.node.next_deadline() == 10.5  # the heartbeat sent when the peer was first heard


def test_nothing_is_due_before_the_next_deadline() -> None:
    d = Driver()
    d.do(ev.Start())
    d.hear(beta(State.WAIT), at=0.5, links=["lan"])
    for _ in range(8):
        deadline = d.node.next_deadline()
        assert deadline is not None
        assert d.do(ev.Timer(), at=deadline - 0.01) == []
        assert d.do(ev.Timer(), at=deadline) != []


def test_start_moves_to_wait_transient_while_looking_for_the_peer() -> None:
    d = Driver()
    effects = d.do(ev.Start())
    assert d.state is State.WAIT
    assert d.node.substatus is SubStatus.TRANSIENT
    [record] = records(effects)
    assert (record.source, record.event, record.target) == ("stop", "start", "wait")
    assert "beta" in record.reason


def test_a_node_that_never_sees_its_peer_and_was_not_last_to_serve_waits() -> None:
    d = Driver(Metadata(generation=G1, last_state=State.SECONDARY))
    d.do(ev.Start())
    d.run_until(10.0)
    assert d.state is State.WAIT
    assert d.node.substatus is SubStatus.READY
    assert "`failover prim`" in d.node.facts.reason
    assert not of_type([e for s in d.steps for e in s.effects], fx.StartApp)


def test_a_fresh_node_alone_waits_for_the_operator() -> None:
    d = Driver()
    d.do(ev.Start())
    d.run_until(10.0)
    assert d.state is State.WAIT
    assert "`failover prim`" in d.node.facts.reason


def test_a_node_that_was_alone_serves_after_startup_timeout() -> None:
    d = Driver(Metadata(generation=G1, last_state=State.ALONE))
    d.do(ev.Start())
    d.run_until(SETTINGS.startup_timeout - 0.1)
    assert d.node.state is State.WAIT
    effects = d.run_until(SETTINGS.startup_timeout)
    assert d.state is State.ALONE
    assert d.node.facts.metadata.generation > G1  # serving alone mints a new generation
    assert of_type(effects, fx.StartApp)
    [record] = records(effects)
    assert record.event == "startup_timeout"
    assert "last to serve" in record.reason


def test_a_heartbeat_from_an_unknown_node_is_ignored() -> None:
    d = Driver()
    d.do(ev.Start())
    before = d.node.snapshot()
    assert d.hear(beta(State.ALONE, G1, node="gamma"), at=0.5) == []
    assert replace(d.node.snapshot(), last_run=before.last_run) == before  # ran, decided nothing
    assert d.node.facts.peer is None


def test_a_heartbeat_on_an_unknown_link_is_ignored() -> None:
    d = Driver()
    d.do(ev.Start())
    before = d.node.snapshot()
    assert d.hear(beta(State.ALONE, G1), at=0.5, links=["wifi"]) == []
    assert replace(d.node.snapshot(), last_run=before.last_run) == before


def test_reconfigure_refuses_a_name_change() -> None:
    node = Driver().node
    for change in ({"name": "gamma"}, {"peer": "gamma"}, {"links": ("lan",)}):
        with pytest.raises(ValueError, match="restart"):
            node.reconfigure(replace(SETTINGS, **change))
    assert node.settings == SETTINGS


def test_reconfigure_applies_new_timings() -> None:
    d = Driver()
    d.do(ev.Start())
    d.node.reconfigure(replace(SETTINGS, heartbeat_interval=5))
    d.run_until(1.0)
    assert d.node.next_deadline() == 3.0  # discovery still ends at 3; the heartbeat at 6


def test_a_peer_in_sync_whose_resync_was_not_heard_is_confirmed_by_a_resync() -> None:
    # Without replicated directories the peer's resync ends at once: its one
    # "resync" heartbeat may be lost (or superseded by its "secondary" one). The
    # serving node must not wait for a state it will never hear.
    d = Driver()
    to_alone(d)
    generation = d.node.facts.metadata.generation
    effects = d.hear(beta(State.SECONDARY, generation, synced=generation), at=d.now + 0.5)
    resyncs = of_type(effects, fx.StartResync)
    assert [(r.role, r.generation) for r in resyncs] == [("source", generation)]
    d.do(ev.PeerResynced(generation))
    d.hear(beta(State.SECONDARY, generation, synced=generation))
    assert d.state is State.PRIMARY
