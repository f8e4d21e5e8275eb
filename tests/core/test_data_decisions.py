"""The data plane's decisions are the table's (issue 10, point 3): a failed resync
attempt is retried at a deadline the core sets, a quarantine that failed is
retried and nothing is copied over the data it left in place, an incremental
resync the source cannot make becomes a full one, and without replicated
directories the core completes a resync or a quarantine of nothing itself."""

from __future__ import annotations

from dataclasses import replace

import pytest
from core_support import (
    G1_BETA,
    G2_BETA,
    SETTINGS,
    Driver,
    beta,
    of_type,
    to_alone,
    to_primary,
    to_resync,
    to_secondary,
    to_wait,
)

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation, Metadata, State, SubStatus

G2_ALPHA = Generation(2, "alpha")


def to_resync_source(d: Driver) -> fx.StartResync:
    """Alpha serves alone; beta asks to be resynchronised; alpha starts as source."""
    to_alone(d)
    effects = d.hear(beta(State.RESYNC, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    (start,) = of_type(effects, fx.StartResync)
    assert start.role == "source"
    return start


# a peer heard only at each retry stays alive through the longest pause
PATIENT = replace(SETTINGS, link_timeout=20, dead_timeout=30)


def test_a_failed_resync_attempt_is_retried_at_the_core_s_deadline_with_a_growing_pause() -> None:
    d = Driver(settings=PATIENT)
    first = to_resync_source(d)
    pauses = []
    for _ in range(7):
        failed_at = d.now
        effects = d.do(ev.ResyncFailed("cannot connect"))
        assert not of_type(effects, fx.StartResync)  # not at once
        assert d.node.facts.resync_role == "source"
        assert d.node.substatus is SubStatus.TRANSIENT
        assert f"retrying in {d.node.facts.data_retry_at - failed_at:g} s" in d.node.facts.reason
        deadline = d.node.next_deadline()
        assert d.node.facts.data_retry_at is not None and deadline is not None
        assert deadline <= d.node.facts.data_retry_at
        pauses.append(d.node.facts.data_retry_at - failed_at)
        # before the deadline nothing is tried again; at it, the same resync is
        retried = d.run_until(d.node.facts.data_retry_at)
        (again,) = of_type(retried, fx.StartResync)
        assert again == first
        d.hear(beta(State.RESYNC, substatus=SubStatus.TRANSIENT))
    s = PATIENT
    assert pauses == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert (s.data_retry_pause, s.data_retry_pause_max) == (0.2, 5.0)
    # success: the next failure starts from the shortest pause again
    d.do(ev.PeerResynced(first.generation))
    assert d.node.facts.data_retry_at is None and d.node.facts.data_pause is None


def test_the_peer_lost_meanwhile_cancels_the_retry() -> None:
    d = Driver()
    to_resync_source(d)
    d.do(ev.ResyncFailed("cannot connect"))
    effects = d.run_until(d.now + 10)  # beta's silence outlasts the dead timeout
    assert d.node.facts.resync_role is None and d.node.facts.data_retry_at is None
    kinds = [type(e) for e in effects if isinstance(e, fx.StartResync | fx.StopResync)]
    assert kinds[-1] is fx.StopResync  # nothing tried once beta is lost


def test_an_incremental_resync_the_source_cannot_make_becomes_a_full_one_at_once() -> None:
    d = Driver()
    to_primary(d)  # in sync at G1; beta then leaves and comes back to be resynchronised
    synced = d.node.facts.metadata.generation
    d.do(ev.ReplicationFailed("beta restarted"), at=d.now + 0.5)
    assert d.state is State.ALONE
    transient = SubStatus.TRANSIENT
    effects = d.hear(beta(State.RESYNC, synced, synced=synced, substatus=transient))
    (first,) = of_type(effects, fx.StartResync)
    assert (first.role, first.mode, first.since) == ("source", "incremental", synced)
    effects = d.do(ev.ResyncFailed("tracking starts at 3:beta", full_needed=True))
    (full,) = of_type(effects, fx.StartResync)
    assert (full.role, full.mode) == ("source", "full")
    assert "impossible" in d.node.facts.reason


def test_a_stale_resync_failure_changes_nothing() -> None:
    d = Driver()
    to_primary(d)
    metadata, reason = d.node.facts.metadata, d.node.facts.reason
    assert d.do(ev.ResyncFailed("old attempt")) == []
    assert (d.node.facts.metadata, d.node.facts.reason, d.state) == (
        metadata,
        reason,
        State.PRIMARY,
    )


def to_quarantine(d: Driver) -> fx.Quarantine:
    """Alpha served G2 alone after G1 with beta; beta served its own G2 and wins."""
    to_wait(d)
    effects = d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.5)
    (effect,) = of_type(effects, fx.Quarantine)
    assert d.state is State.WAIT and d.node.facts.quarantine_pending
    return effect


def split_brain_loser() -> Driver:
    metadata = Metadata(
        generation=G2_ALPHA,
        synced_generation=G1_BETA,
        peer_generation=G1_BETA,
        consistent=True,
        last_state=State.ALONE,
    )
    return Driver(metadata=metadata)


def test_a_quarantine_that_failed_is_retried_and_nothing_is_resynchronised_over_it() -> None:
    d = split_brain_loser()
    first = to_quarantine(d)
    effects = d.do(ev.QuarantineFailed("No space left on device"))
    assert effects and not of_type(effects, fx.Quarantine)
    assert (
        d.node.facts.quarantine_pending and d.node.facts.metadata.consistent
    )  # still the diverged data
    assert "No space left on device" in d.node.facts.reason
    reason = d.node.facts.reason
    # the winner's heartbeats start no resync meanwhile, and keep the reason shown
    for _ in range(3):
        effects = d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.1)
        assert not of_type(effects, fx.StartResync) and d.state is State.WAIT
        assert d.node.facts.reason == reason
    assert d.node.facts.data_retry_at is not None
    (again,) = of_type(d.run_until(d.node.facts.data_retry_at), fx.Quarantine)
    assert again == first
    d.do(ev.QuarantineDone())
    assert not d.node.facts.quarantine_pending and not d.node.facts.metadata.consistent
    effects = d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.5)
    assert d.state is State.RESYNC and of_type(effects, fx.StartResync)


def test_a_stopped_node_gives_up_a_failed_quarantine_and_decides_again_at_start() -> None:
    d = split_brain_loser()
    to_quarantine(d)
    d.do(ev.Stop())
    d.do(ev.QuarantineFailed("EIO"))
    assert d.state is State.STOP and not d.node.facts.quarantine_pending
    assert d.node.facts.data_retry_at is None and d.node.facts.metadata.consistent
    d.do(ev.Start())
    to_quarantine_again = d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.5)
    assert of_type(to_quarantine_again, fx.Quarantine)


def test_a_failed_set_aside_before_a_full_resync_restarts_that_resync_after_a_pause() -> None:
    d = Driver()
    to_secondary(d)
    effects = d.do(ev.FullSync())
    assert d.state is State.WAIT
    effects = d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.5)
    (full,) = of_type(effects, fx.StartResync)
    assert (full.role, full.mode) == ("target", "full")
    effects = d.do(ev.QuarantineFailed("Read-only file system"))
    assert d.state is State.RESYNC and d.node.facts.resync_role == "target"
    assert not of_type(effects, fx.StartResync)
    assert "nothing copied over it" in d.node.facts.reason
    d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.05)
    assert "Read-only file system" in d.node.facts.reason  # heartbeats keep the reason
    assert d.node.facts.data_retry_at is not None
    (again,) = of_type(d.run_until(d.node.facts.data_retry_at), fx.StartResync)
    assert (again.role, again.mode) == ("target", "full")


NOTHING_REPLICATED = replace(SETTINGS, replicated=False)


def test_without_replicated_directories_a_resync_target_ends_in_the_same_step() -> None:
    d = Driver(settings=NOTHING_REPLICATED)
    to_wait(d)
    effects = d.hear(beta(State.ALONE, G1_BETA), at=d.now + 0.5, links=["lan"])
    assert d.state is State.SECONDARY
    assert d.node.facts.metadata.generation == G1_BETA and d.node.facts.metadata.consistent
    data = (fx.StartResync, fx.StopResync, fx.StartTracking, fx.StopTracking, fx.Quarantine)
    assert not [e for e in effects if isinstance(e, data)]
    assert [(r.source, r.target) for r in of_type(effects, fx.TransitionRecord)] == [
        ("wait", "resync"),
        ("resync", "secondary"),
    ]
    # each row's metadata is persisted before that row's effects: what a journal
    # of the step records never goes back (the audit's S5)
    persisted = ""
    for effect in effects:
        if isinstance(effect, fx.PersistMetadata):
            persisted = str(effect.metadata.generation)
        elif isinstance(effect, fx.TransitionRecord):
            assert effect.generation == persisted
    assert persisted == str(G1_BETA)


def test_without_replicated_directories_a_resync_source_ends_in_the_same_step() -> None:
    d = Driver(settings=NOTHING_REPLICATED)
    to_alone(d)
    effects = d.hear(beta(State.RESYNC, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    assert d.node.facts.resync_role is None and d.node.facts.replicating
    assert d.node.facts.metadata.last_state is State.PRIMARY
    assert not of_type(effects, fx.StartResync) and not of_type(effects, fx.StartReplication)


def test_without_replicated_directories_a_quarantine_of_nothing_is_done_at_once() -> None:
    d = split_brain_loser()
    d.settings = NOTHING_REPLICATED
    d.node = type(d.node)(NOTHING_REPLICATED, d.metadata)
    to_wait(d)
    effects = d.hear(beta(State.ALONE, G2_BETA, synced=G1_BETA), at=d.now + 0.5, links=["lan"])
    assert not of_type(effects, fx.Quarantine) and d.state is State.WAIT
    assert not d.node.facts.quarantine_pending and not d.node.facts.metadata.consistent


def test_the_pair_is_in_sync_as_the_core_sees_it() -> None:
    d = Driver()
    to_resync(d)
    assert d.node.in_sync_problem == "peer beta is alone"
    assert d.node.snapshot().in_sync_problem == d.node.in_sync_problem
    d = Driver()
    to_primary(d)
    assert d.node.in_sync_problem is None
    assert d.node.snapshot().in_sync_problem is None
    d.run_until(d.now + 10)  # beta silent: lost
    assert d.state is State.ALONE
    assert d.node.in_sync_problem == "peer beta lost (silent on every link)"


def test_whether_anything_is_replicated_is_fixed_for_the_run() -> None:
    # the data plane exists or not from the daemon's start: a reload that adds or
    # removes replicated directories must not make the core wait for outcomes
    # no one will report, or skip effects a data plane waits for
    d = Driver()
    d.node.reconfigure(replace(SETTINGS, replicated=False, heartbeat_interval=5))
    assert d.node.settings.replicated and d.node.settings.heartbeat_interval == 5
