"""The application's life on the serving node (issue 9, point 1): checker
classes, the restart budget, the hand-over on failure, the paced retry.

The invariants these tests hold the core to (spec/INVARIANTS.md, L3 and L4):
- a checker of class ``serving`` never keeps a node from starting its own
  application, and acts only on the running application of the serving node;
- a failure on the serving node is restarted there while the budget lasts,
  then handed over to a peer that can serve, else retried there after a
  pause that doubles up to the cap; no restart or retry mints a generation or
  changes state.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from core_support import (
    G1_BETA,
    SETTINGS,
    Driver,
    beta,
    of_type,
    records,
    to_alone,
    to_primary,
    to_wait,
)

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import CheckerPolicy, Metadata, PeerStatus, State, SubStatus, evolve

WEB = CheckerPolicy("web", when="serving", action="restart")  # the TCP check of the VIP
HANDOVER = CheckerPolicy("health", when="serving", action="failover")
HALT = CheckerPolicy("disk", when="serving", action="stop")
GATEWAY = CheckerPolicy("gateway", when="standby", action="restart")
SITE = CheckerPolicy("site", when="both", action="failover")
BUDGET = replace(
    SETTINGS,
    checkers=(WEB, HANDOVER, HALT, GATEWAY, SITE),
    max_restarts=2,
    restart_window=100.0,
    retry_pause=5.0,
    retry_pause_max=20.0,
)


def driver(**changes: object) -> Driver:
    return Driver(settings=replace(BUDGET, **changes))  # type: ignore[arg-type]


def serving_alone(d: Driver) -> None:
    to_alone(d)
    assert d.node.substatus is SubStatus.READY


def primary_with(d: Driver, *, can_serve: bool = True) -> PeerStatus:
    """Alpha primary, beta in sync as a confirmed secondary, ready, announcing
    ``can_serve``."""
    to_primary(d)
    generation = d.node.facts.metadata.generation
    peer = evolve(
        beta(State.SECONDARY, generation, synced=generation),
        can_serve=can_serve,
        last_state=State.SECONDARY,
    )
    d.hear(peer)
    assert d.state is State.PRIMARY
    return peer


# --- checker classes --------------------------------------------------------------------


def test_a_serving_checker_down_never_keeps_a_waiting_node_from_serving() -> None:
    # the TCP checker on the VIP fails while nothing runs: it must not block the start
    d = driver()
    to_wait(d)
    d.do(ev.CheckerDown("web", "connection refused"), at=0.5)
    assert not d.node.facts.checkers_down and d.node.can_serve
    effects = d.hear(beta(State.WAIT), at=1.0)  # same (initial) data, alpha wins by name
    assert d.state is State.ALONE
    assert of_type(effects, fx.StartApp)


def test_a_serving_checker_down_never_keeps_a_blind_node_from_serving() -> None:
    d = Driver(
        metadata=Metadata(generation=G1_BETA, last_state=State.ALONE),
        settings=replace(BUDGET, name="alpha"),
    )
    to_wait(d)
    d.do(ev.CheckerDown("web"), at=0.5)
    d.run_until(10)
    assert d.state is State.ALONE


@pytest.mark.parametrize("name", ["gateway", "site"])
def test_a_standby_or_both_checker_down_blocks_a_takeover_and_is_announced(name: str) -> None:
    d = driver()
    to_wait(d)
    effects = d.do(ev.CheckerDown(name), at=0.5)
    assert d.node.facts.checkers_down == {name}
    [sent] = of_type(effects, fx.SendHeartbeat)
    assert sent.status.can_serve is False
    d.hear(beta(State.WAIT), at=1.0)
    assert d.state is State.WAIT
    effects = d.do(ev.CheckerUp(name), at=1.5)
    assert of_type(effects, fx.SendHeartbeat)[-1].status.can_serve is True


@pytest.mark.parametrize("pending", ["start", "restart"])
def test_a_serving_checker_is_ignored_while_its_application_starts(pending: str) -> None:
    d = driver()
    d.do(ev.Prim())  # alone, the application starting
    if pending == "restart":
        d.do(ev.AppStarted())
        d.do(ev.AppFailed("died"), at=1.0)  # a restart is running
    assert d.node.facts.app_pending == "start"
    effects = d.do(ev.CheckerDown("web"), at=1.5)
    assert not of_type(effects, fx.RestartApp | fx.StopApp)
    assert d.state is State.ALONE
    assert not records(effects)  # not even a record: nothing happened


def test_a_standby_checker_down_on_the_serving_node_takes_no_action() -> None:
    d = driver()
    serving_alone(d)
    effects = d.do(ev.CheckerDown("gateway"), at=1.0)
    assert d.state is State.ALONE
    assert not of_type(effects, fx.RestartApp | fx.StopApp)
    assert d.node.facts.checkers_down == {"gateway"} and not d.node.can_serve


def test_the_application_counts_as_started_only_while_nothing_is_done_to_it() -> None:
    # what the runtime runs a serving checker on (app_started), and when the
    # core acts on its outcome: from a start's outcome until a restart, a
    # failure, a stop or a hand-over (a late start outcome included)
    d = driver()
    started: list[bool] = []

    def step(event: ev.Event) -> None:
        d.do(event, at=d.now + 0.5)
        started.append(d.node.app_started)

    step(ev.Prim())  # alone, the application starting
    step(ev.AppStarted())
    step(ev.CheckerDown("web", "refused"))  # a restart (the budget: 2)
    step(ev.AppStarted())
    step(ev.AppFailed("died"))  # the second restart
    step(ev.AppStarted())
    step(ev.AppFailed("died"))  # past the budget, alone: retried after a pause
    assert started == [False, True, False, True, False, True, False]
    d.run_until(d.node.facts.retry_at or 0.0)  # the paced retry starts it again
    assert d.node.facts.app_pending == "start" and not d.node.app_started
    step(ev.AppStarted())
    assert started[-1] is True
    d = driver()
    primary_with(d)
    started = [d.node.app_started]
    step(ev.CheckerDown("health", "broken"))  # action failover: the hand-over stops it
    step(ev.AppStarted())  # a late outcome of an earlier start: still handing over
    step(ev.AppStopped())
    assert started == [True, False, False, False]
    assert d.state is State.SECONDARY


# --- the restart budget -----------------------------------------------------------------


@pytest.mark.parametrize("failure", [ev.AppFailed("died"), ev.CheckerDown("web")], ids=str)
def test_a_failure_on_the_serving_node_restarts_the_application_where_it_is(
    failure: ev.Event,
) -> None:
    d = driver()
    serving_alone(d)
    generation = d.node.facts.metadata.generation
    effects = d.do(failure, at=1.0)
    assert of_type(effects, fx.RestartApp)
    assert not of_type(effects, fx.StopApp | fx.StopReplication | fx.PersistMetadata)
    assert d.state is State.ALONE and d.node.facts.metadata.generation == generation
    assert d.node.substatus is SubStatus.TRANSIENT  # until the restart's outcome
    [record] = records(effects)
    assert "restart 1 of 2 within 100 s" in record.reason
    d.do(ev.AppStarted(), at=1.5)
    assert d.node.substatus is SubStatus.READY


def test_a_failed_start_counts_in_the_same_budget() -> None:
    d = driver()
    d.do(ev.Prim())
    generation = d.node.facts.metadata.generation
    for n in (1, 2):
        effects = d.do(ev.AppFailed("start script exited 1"), at=float(n))
        assert of_type(effects, fx.RestartApp)
    assert d.node.budget_spent and not d.node.can_serve
    effects = d.do(ev.AppFailed("start script exited 1"), at=3.0)
    assert not of_type(effects, fx.RestartApp)  # alone: retried after a pause
    assert d.node.facts.retry_at == 3.0 + BUDGET.retry_pause
    assert d.state is State.ALONE and d.node.facts.metadata.generation == generation


def test_restarts_older_than_the_window_leave_the_budget() -> None:
    d = driver()
    serving_alone(d)
    for at in (1.0, 2.0):
        d.do(ev.AppFailed("died"), at=at)
        d.do(ev.AppStarted(), at=at + 0.1)
    assert d.node.budget_spent
    d.run_until(101.5)  # the first restart is out of the window
    assert not d.node.budget_spent and d.node.can_serve
    effects = d.do(ev.AppFailed("died"), at=102.0)
    assert of_type(effects, fx.RestartApp)


# --- past the budget: hand over, or retry where it is ---------------------------------------


@pytest.mark.parametrize("failure", [ev.AppFailed("died"), ev.CheckerDown("health")], ids=str)
def test_past_the_budget_a_primary_hands_over_to_a_peer_that_can_serve(failure: ev.Event) -> None:
    d = driver()
    primary_with(d)
    generation = d.node.facts.metadata.generation
    if isinstance(failure, ev.AppFailed):  # spend the budget first
        for at in (d.now + 1, d.now + 2):
            d.do(ev.AppFailed("died"), at=at)
            d.do(ev.AppStarted(), at=at + 0.1)
    effects = d.do(failure, at=d.now + 1)
    assert of_type(effects, fx.StopApp) and d.node.facts.handover == "stopping"
    effects = d.do(ev.AppStopped(), at=d.now + 0.5)
    assert d.state is State.SECONDARY
    [sent] = of_type(effects, fx.SendHeartbeat)
    assert sent.status.handover  # the peer takes over as after a swap
    assert d.node.facts.metadata.generation == generation


@pytest.mark.parametrize("state", ["alone", "peer cannot serve"])
def test_with_no_peer_to_take_over_the_application_is_retried_with_a_growing_capped_pause(
    state: str,
) -> None:
    d = driver()
    peer = None
    if state == "alone":
        serving_alone(d)
    else:
        peer = primary_with(d, can_serve=False)
    generation = d.node.facts.metadata.generation
    start = d.now
    d.do(ev.AppFailed("died"), at=start + 0.1)
    d.do(ev.AppFailed("start script exited 1"), at=start + 0.2)
    effects = d.do(ev.AppFailed("start script exited 1"), at=start + 0.3)  # budget spent
    assert not of_type(effects, fx.RestartApp | fx.StopApp)
    [record] = records(effects)
    assert "retrying in 5 s" in record.reason
    retries: list[float] = []
    t = start = start + 0.3
    while t < start + 80:  # within the budget's window (100 s)
        deadline = d.node.next_deadline()
        assert deadline is not None
        t = max(deadline, d.now)
        effects = d.do(ev.Timer(), at=t)
        if peer is not None:
            d.hear(peer)  # the peer stays, in sync, unable to serve
        if of_type(effects, fx.RestartApp):
            retries.append(t)
            d.do(ev.AppFailed("start script exited 1"), at=t)
    gaps = [round(b - a, 6) for a, b in zip([start, *retries], retries, strict=False)]
    assert gaps[:4] == [5.0, 10.0, 20.0, 20.0]  # doubling from retry_pause to the cap
    assert all(gap == 20.0 for gap in gaps[2:])
    assert d.state is (State.ALONE if peer is None else State.PRIMARY)
    assert d.node.facts.metadata.generation == generation  # a retry never mints
    # a retry that works ends the retries
    assert d.node.facts.retry_at is not None
    assert of_type(d.run_until(d.node.facts.retry_at), fx.RestartApp)
    d.do(ev.AppStarted())
    assert d.node.facts.retry_at is None and d.node.substatus is SubStatus.READY


def test_no_hand_over_to_a_secondary_that_has_not_confirmed_the_pair() -> None:
    # its copy is valid only while it stays secondary: were this node to leave
    # next (fullsync, stop), both would wait
    d = driver()
    peer = primary_with(d)
    d.hear(evolve(peer, last_state=State.RESYNC))
    effects = d.do(ev.CheckerDown("health"), at=d.now + 0.1)
    assert not of_type(effects, fx.StopApp) and d.node.facts.retry_at is not None


def test_a_checker_with_action_stop_stops_the_module_on_the_serving_node() -> None:
    d = driver()
    primary_with(d)
    effects = d.do(ev.CheckerDown("disk"), at=d.now + 1)
    assert d.state is State.STOP
    kinds = [type(e) for e in effects if isinstance(e, fx.StopApp | fx.StopReplication)]
    assert kinds == [fx.StopApp, fx.StopReplication]


def test_a_checker_with_action_failover_hands_over_at_once_without_restarting() -> None:
    d = driver()
    primary_with(d)
    effects = d.do(ev.CheckerDown("health"), at=d.now + 1)
    assert of_type(effects, fx.StopApp) and not of_type(effects, fx.RestartApp)
    assert d.node.facts.restarts == ()


def test_a_checker_with_action_failover_and_no_peer_retries_after_a_pause() -> None:
    d = driver()
    serving_alone(d)
    effects = d.do(ev.CheckerDown("health"), at=1.0)
    assert not of_type(effects, fx.RestartApp | fx.StopApp)
    assert d.node.facts.retry_at == 6.0
    effects = d.run_until(6.0)
    assert of_type(effects, fx.RestartApp)


def test_the_peer_is_told_when_this_node_cannot_serve() -> None:
    d = driver()
    serving_alone(d)
    view = d.node.facts.view
    d.do(ev.AppFailed("died"), at=1.0)
    effects = d.do(ev.AppFailed("died"), at=2.0)
    [sent] = of_type(effects, fx.SendHeartbeat)
    assert sent.status.can_serve is False and d.node.facts.view > view


# --- the tie ---------------------------------------------------------------------------------


def test_a_waiting_node_that_cannot_serve_loses_the_tie_to_one_that_can() -> None:
    # alpha would win by name; its start kept failing, so beta serves
    d = driver()
    to_wait(d)
    d.do(ev.CheckerDown("site"), at=0.5)  # alpha cannot serve
    d.do(ev.CheckerUp("site"), at=0.6)
    d.node.update(restarts=(0.1, 0.2))  # its budget is spent (it failed to start twice)
    assert not d.node.can_serve
    d.hear(beta(State.WAIT), at=1.0)
    assert d.state is State.WAIT
    # and beta, hearing alpha cannot serve, wins it
    other = Driver(settings=replace(BUDGET, name="beta", peer="alpha"))
    to_wait(other)
    heard = evolve(beta(State.WAIT, node="alpha"), can_serve=False)
    other.hear(heard, at=1.0)
    assert other.state is State.ALONE


def test_more_checkers_down_while_a_retry_waits_do_not_postpone_it() -> None:
    # lab trial: the process checker went down past the budget (retry in 5 s),
    # then the TCP checker of the same dead application went down a second
    # later: the retry moved to 10 s after that, and each further down (or a
    # flapping checker) would push it out again, doubling the pause
    d = driver()
    serving_alone(d)
    for t in (1.0, 2.0):
        assert of_type(d.do(ev.CheckerDown("web"), at=t), fx.RestartApp)
        d.do(ev.CheckerUp("web"), at=t)  # stopped while down: reported up
        d.do(ev.AppStarted(), at=t + 0.1)
    d.do(ev.CheckerDown("web"), at=3.0)  # budget spent, nobody to hand over to
    assert d.node.facts.retry_at == 8.0
    for t, name in ((4.0, "health"), (5.0, "web"), (6.0, "health")):
        effects = d.do(ev.CheckerDown(name), at=t)
        assert not of_type(effects, fx.RestartApp | fx.StopApp)
        assert d.node.facts.retry_at == 8.0, name
        d.do(ev.CheckerUp(name), at=t + 0.5)
    assert of_type(d.run_until(8.0), fx.RestartApp)
    d.do(ev.AppFailed("start script exited 1"), at=8.5)
    assert d.node.facts.retry_at == 18.5  # the pause doubled once, for the one retry that failed


@pytest.mark.parametrize("leave", ["stop", "split brain lost"])
def test_leaving_the_service_while_a_retry_waits_stops_the_application(leave: str) -> None:
    # lab trial: a failed restart keeps the VIP (and a failed start the
    # read-write mirrors) until a stop; past the budget the core thought the
    # application down and left without a stop: `failover stop` left both
    # virtual addresses on beta while alpha took them over, and beta's mirror
    # serving (it refused every resync as "this node serves")
    d = driver()
    peer = primary_with(d, can_serve=False)
    for t in (1.0, 2.0, 3.0):
        d.do(ev.AppFailed("start script exited 1"), at=t)
    assert d.node.facts.retry_at is not None  # budget spent, nobody to hand over to
    if leave == "stop":
        effects = d.do(ev.Stop(), at=4.0)
    else:
        theirs = evolve(peer, state=State.PRIMARY, generation=beta(State.PRIMARY).generation)
        d.node.settings = replace(d.node.settings, split_brain_winner="beta")
        effects = d.hear(evolve(theirs, generation=G1_BETA), at=4.0)
    assert d.state in (State.STOP, State.WAIT), leave
    assert of_type(effects, fx.StopApp), "what the failed start left (VIP, mirrors) is given back"
    [sent] = of_type(effects, fx.SendHeartbeat)[-1:]
    assert sent.status.substatus is SubStatus.TRANSIENT  # the peer waits for that stop
    d.do(ev.AppStopped(), at=4.5)
    if leave != "stop":
        d.do(ev.QuarantineDone(), at=4.6)
    assert d.node.substatus is SubStatus.READY
