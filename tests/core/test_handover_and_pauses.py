"""The hand-over order and pauses, on the core's virtual clock.

Hand-over: a serving node that stops (``stop``, a failure) stops its
application before it stops replicating, and its peer takes over only once the
node announces it is done (ready), never while it is still transient.

Stops take time: an outcome that arrives after a new decision is read as what
it is (the earlier stop's end, or a swap the peer's loss interrupted).

Pauses: time this node did not run (no ``handle`` call for much longer than a
heartbeat interval) is not the peer's silence; a resumed node reads the
heartbeats that waited in its sockets before it judges the peer.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from core_support import (
    G1,
    G1_BETA,
    G2_BETA,
    SETTINGS,
    Driver,
    beta,
    of_type,
    records,
    to_alone,
    to_primary,
    to_secondary,
)

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.facts import Lease
from failover.core.state import Metadata, State, SubStatus

# --- hand-over order --------------------------------------------------------------------


@pytest.mark.parametrize("event", [ev.Stop(), ev.CheckerDown("app-check")], ids=str)
def test_a_primary_stops_its_application_before_it_stops_replicating(event: ev.Event) -> None:
    d = Driver()
    to_primary(d)
    assert d.node.facts.replicating
    effects = d.do(event, at=d.now + 0.1)
    kinds = [type(e) for e in effects if isinstance(e, fx.StopApp | fx.StopReplication)]
    assert kinds == [fx.StopApp, fx.StopReplication]
    # it says at once that it leaves, but transient: it still holds the resources
    [sent] = of_type(effects, fx.SendHeartbeat)
    assert sent.status.state in (State.STOP, State.WAIT)
    assert sent.status.substatus is SubStatus.TRANSIENT
    # ready (and so idle to the peer) only once the application stopped
    d.run_until(d.now + 3.0)  # a slow stop script
    assert d.node.status().substatus is SubStatus.TRANSIENT
    effects = d.do(ev.AppStopped())
    [sent] = of_type(effects, fx.SendHeartbeat)
    assert sent.status.substatus is SubStatus.READY


@pytest.mark.parametrize("leaving", [State.STOP, State.WAIT], ids=str)
def test_a_secondary_takes_over_only_once_its_stopping_peer_is_ready(leaving: State) -> None:
    d = Driver()
    to_secondary(d)
    stopping = beta(leaving, G1_BETA, synced=G1_BETA, substatus=SubStatus.TRANSIENT)
    for beat in range(1, 8):  # a slow stop script: heartbeats keep coming, transient
        d.run_until(d.now + 0.5)
        effects = d.hear(stopping, at=d.now)
        assert not of_type(effects, fx.StartApp), f"took over while {leaving} was transient"
        assert d.state is State.SECONDARY, beat
    effects = d.hear(beta(leaving, G1_BETA, synced=G1_BETA), at=d.now + 0.5)
    assert d.state is State.ALONE
    assert of_type(effects, fx.StartApp)


# --- pauses -----------------------------------------------------------------------------


def _secondary_hearing_beta() -> tuple[Driver, float]:
    d = Driver()
    to_secondary(d)
    primary = beta(State.PRIMARY, G1_BETA, synced=G1_BETA)
    for _ in range(4):
        d.run_until(d.now + SETTINGS.heartbeat_interval)
        d.hear(primary, at=d.now)
    return d, d.now


def changes_exactly_at(d: Driver, moment: float, before: State, after: State) -> None:
    """``d`` is still ``before`` just short of ``moment``, and ``after`` at it."""
    d.run_until(moment - 0.01)
    assert d.state is before
    d.run_until(moment)
    assert d.state is after


def test_a_resumed_node_reads_the_queued_heartbeats_before_judging_its_peer() -> None:
    d, last_heard = _secondary_hearing_beta()
    # alpha is paused (SIGSTOP): no handle call for longer than the dead timeout,
    # while beta's heartbeats pile up in alpha's sockets
    resumed = last_heard + SETTINGS.dead_timeout + 1.5
    effects = d.do(ev.Timer(), at=resumed)  # the overdue timer fires first
    assert d.state is State.SECONDARY, records(effects)
    assert d.node.facts.peer_alive
    assert not any(r.event == "peer_lost" for r in records(effects))
    d.hear(beta(State.PRIMARY, G1_BETA, synced=G1_BETA), at=resumed + 0.01)  # then the queue
    d.run_until(resumed + SETTINGS.dead_timeout - 0.1)
    assert d.state is State.SECONDARY


def test_a_running_node_still_loses_a_silent_peer_at_the_dead_timeout() -> None:
    d, last_heard = _secondary_hearing_beta()
    changes_exactly_at(d, last_heard + SETTINGS.dead_timeout, State.SECONDARY, State.ALONE)


def test_after_a_pause_a_silent_peer_is_lost_once_the_node_ran_long_enough() -> None:
    d, last_heard = _secondary_hearing_beta()
    resumed = last_heard + 10.0
    d.do(ev.Timer(), at=resumed)
    assert d.state is State.SECONDARY
    # the silence counted: one interval before the pause, then time observed running
    lost_at = resumed + SETTINGS.dead_timeout - SETTINGS.heartbeat_interval
    changes_exactly_at(d, lost_at, State.SECONDARY, State.ALONE)


def test_a_late_tick_within_two_intervals_is_counted_as_silence() -> None:
    # a loaded node that runs late, but within two intervals, is no pause: the
    # peer is still lost at the dead timeout, not later
    d, last_heard = _secondary_hearing_beta()
    d.do(ev.Timer(), at=last_heard + 1.9 * SETTINGS.heartbeat_interval)
    assert d.state is State.SECONDARY
    d.do(ev.Timer(), at=last_heard + SETTINGS.dead_timeout)
    assert d.state is State.ALONE


def test_a_node_paused_while_it_listens_for_its_peer_hears_it_before_serving_blind() -> None:
    # alpha served alone last (it may serve without its peer, once it listened
    # for startup_timeout); it is paused while it listens, and beta, forced to
    # serve meanwhile, has heartbeats waiting in alpha's sockets: the listening
    # is counted in time alpha ran, as the peer's silence is
    last_alone = Metadata(generation=G1, consistent=True, last_state=State.ALONE)
    d = Driver(metadata=last_alone)
    d.do(ev.Start())
    assert d.state is State.WAIT and d.node.facts.discovery_until == SETTINGS.startup_timeout
    resumed = 10.0
    effects = d.do(ev.Timer(), at=resumed)  # the overdue timer fires first
    assert d.state is State.WAIT and not of_type(effects, fx.StartApp), records(effects)
    d.hear(beta(State.ALONE, G2_BETA), at=resumed + 0.01)  # then the queue
    assert not d.node.state.serving
    # with no peer at all, it serves once it ran for the rest of the window
    d = Driver(metadata=last_alone)
    d.do(ev.Start())
    d.do(ev.Timer(), at=resumed)
    listened = resumed + SETTINGS.startup_timeout - SETTINGS.heartbeat_interval
    changes_exactly_at(d, listened, State.WAIT, State.ALONE)


def test_a_stop_that_ends_after_a_new_start_was_asked_is_the_old_stops_outcome() -> None:
    # stop, then prim before the stop script ended: the executor runs the stop,
    # then the start; the stop's app_stopped must not be taken as the new
    # application going down (a later stop would then leave it running)
    d = Driver()
    to_alone(d)
    assert of_type(d.do(ev.Stop(), at=d.now + 0.1), fx.StopApp)
    assert of_type(d.do(ev.Prim(), at=d.now + 0.1), fx.StartApp)
    effects = d.do(ev.AppStopped(), at=d.now + 0.1)  # the earlier stop ends
    assert d.state is State.ALONE and not of_type(effects, fx.StopApp)
    assert d.node.facts.app_pending == "start" and d.node.substatus is SubStatus.TRANSIENT
    d.do(ev.AppStarted(), at=d.now + 0.1)
    assert d.node.facts.app_active and d.node.substatus is SubStatus.READY
    assert of_type(d.do(ev.Stop(), at=d.now + 0.1), fx.StopApp)  # the new one is stopped too


def test_a_swap_interrupted_by_the_loss_of_the_peer_starts_the_application_again() -> None:
    d = Driver()
    to_primary(d)
    assert of_type(d.do(ev.Swap(), at=d.now + 0.1), fx.StopApp)
    d.run_until(d.now + 10)  # the peer is lost while the stop script runs
    assert d.state is State.ALONE
    effects = d.do(ev.AppStopped())
    assert d.state is State.ALONE and of_type(effects, fx.StartApp)
    d.do(ev.AppStarted())
    assert d.node.facts.app_active and d.node.facts.handover is None


def test_a_grant_heard_after_its_lease_ran_out_is_no_grant() -> None:
    # alpha asks the arbitrator to serve, then is paused past the lease it
    # asked for; the arbitrator may have granted beta since: the late grant
    # must not start the application (it did, until the next timer fenced it)
    arbitrated = replace(SETTINGS, arbitrator=True, lease_ttl=4, lease_margin=1)
    for late in (False, True):
        d = Driver(settings=arbitrated)
        d.do(ev.Start())
        [asked] = of_type(d.do(ev.Prim(), at=0.1), fx.RequestArbitration)
        heard = 0.1 + (10.0 if late else 0.5)
        effects = d.do(ev.ArbitrationGranted(asked.generation), at=heard)
        if not late:
            assert d.state is State.ALONE and of_type(effects, fx.StartApp)
            continue
        assert d.state is State.WAIT and not of_type(effects, fx.StartApp), records(effects)
        assert of_type(effects, fx.ReleaseArbitration) and not d.node.facts.lease.held
        # nothing stands: no request (the late grant answered it), and no denial,
        # which would keep the node from asking again for a recheck
        assert d.node.facts.pending is None and d.node.facts.lease == Lease()


@pytest.mark.parametrize("command", [ev.Prim(), ev.PrimForce()], ids=str)
def test_after_a_denial_an_operator_command_asks_the_arbitrator_at_once(
    command: ev.Event,
) -> None:
    # the gate paces what the node decides by itself (one request per recheck
    # after a denial), never the operator: a command dropped unheard would be
    # reported done with the old denial as its result
    arbitrated = replace(SETTINGS, arbitrator=True, lease_ttl=4, lease_margin=1)
    d = Driver(settings=arbitrated)
    d.do(ev.Start())
    assert of_type(d.do(ev.Prim(), at=0.1), fx.RequestArbitration)
    d.do(ev.ArbitrationDenied("held by beta"), at=0.2)
    assert d.node.facts.reason == "arbitrator denied: held by beta"
    effects = d.do(command, at=0.5)  # well within the recheck (startup_timeout 3)
    assert of_type(effects, fx.RequestArbitration), records(effects)
    assert d.node.facts.reason.startswith(
        "waiting for the arbitrator: forced to serve by the operator"
    )
