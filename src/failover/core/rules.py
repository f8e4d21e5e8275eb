"""The guards and actions the table names.

A guard is a pure question about the node (and the row being tried). An
action changes the node's data and appends effects to its outbox; it never
fails and never does I/O. The table refers to them by name; ``load_table``
checks every name against ``GUARDS`` and ``ACTIONS``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.arbitration import fence_deadline, grant_run_out
from failover.core.compare import Relation, common_generation
from failover.core.decider import Decider
from failover.core.facts import Lease
from failover.core.state import AppPending, CheckerPolicy, Handover, ResyncRole, State, SubStatus
from failover.core.table import Row, Table, load_table, raw_spec

Guard = Callable[[Decider, Row], bool]
Action = Callable[[Decider, Row], None]

GUARDS: dict[str, Guard] = {}
ACTIONS: dict[str, Action] = {}


def guard(fn: Guard) -> Guard:
    GUARDS[fn.__name__] = fn
    return fn


def action(fn: Action) -> Action:
    ACTIONS[fn.__name__] = fn
    return fn


# --- guards: our data -------------------------------------------------------------------


@guard
def consistent(node: Decider, row: Row) -> bool:
    return node.facts.metadata.consistent


@guard
def last_served_alone(node: Decider, row: Row) -> bool:
    """This node knows it was the last to serve: it was alone (no in-sync peer
    could take over), its data is consistent, and it never saw the peer at a
    later generation."""
    meta = node.facts.metadata
    return (
        meta.last_state is State.ALONE
        and meta.consistent
        and meta.generation.counter >= meta.peer_generation.counter
    )


@guard
def checkers_ok(node: Decider, row: Row) -> bool:
    """No checker that counts for serving here is down: only checkers of class
    ``standby`` or ``both`` are kept (``note_checker_down``). A ``serving``
    checker checks the application where it runs: it never keeps a node from
    starting it (it would block its own application's start)."""
    return not node.facts.checkers_down


def _checker_policy(node: Decider) -> CheckerPolicy | None:
    event = node.event
    if isinstance(event, ev.CheckerDown | ev.CheckerUp):
        return node.settings.checker(event.checker)
    return None


@guard
def checker_blocks(node: Decider, row: Row) -> bool:
    """The checker of this event counts for a takeover (class standby or both)."""
    policy = _checker_policy(node)
    return policy is not None and policy.when in ("standby", "both")


@guard
def checker_acts(node: Decider, row: Row) -> bool:
    """The checker that went down acts by its action: it checks the serving
    node's application (class serving or both), and this node serves with its
    application up (not starting, stopping, restarting or handed over). Any
    other outcome of such a checker is stale or premature: ignored."""
    policy = _checker_policy(node)
    return (
        policy is not None
        and policy.when in ("serving", "both")
        and node.state.serving
        and node.app_started
    )


@guard
def checker_stops(node: Decider, row: Row) -> bool:
    policy = _checker_policy(node)
    return policy is not None and policy.action == "stop"


@guard
def checker_restarts(node: Decider, row: Row) -> bool:
    policy = _checker_policy(node)
    return policy is not None and policy.action == "restart"


@guard
def app_retrying(node: Decider, row: Row) -> bool:
    """The application failed past its budget and is retried after a pause."""
    return node.facts.retry_at is not None


@guard
def restart_budget_left(node: Decider, row: Row) -> bool:
    """Fewer than ``max_restarts`` local restarts within ``restart_window``."""
    return not node.budget_spent


@guard
def second_only(node: Decider, row: Row) -> bool:
    return node.facts.second_only


@guard
def quarantine_pending(node: Decider, row: Row) -> bool:
    return node.facts.quarantine_pending


@guard
def resync_source_active(node: Decider, row: Row) -> bool:
    return node.facts.resync_role is ResyncRole.SOURCE


@guard
def incremental_impossible(node: Decider, row: Row) -> bool:
    """The source reported that it cannot send the incremental resync it was
    asked for (its tracked changes do not start where the target's copy ends)."""
    event = node.event
    return isinstance(event, ev.ResyncFailed) and event.full_needed


@guard
def resync_current(node: Decider, row: Row) -> bool:
    """The resync that just finished delivered the generation we serve now."""
    event = node.event
    return isinstance(event, ev.PeerResynced) and event.generation == node.facts.metadata.generation


@guard
def replicating(node: Decider, row: Row) -> bool:
    return node.facts.replicating


@guard
def pair_confirmed(node: Decider, row: Row) -> bool:
    """A secondary's serving peer confirmed the pair: since this node entered
    ``secondary`` it heard the peer in ``primary`` at our generation
    (``confirm_pair``), or it entered ``secondary`` by handing its own service
    over. Persisted as ``last_state: secondary`` (a resync target keeps
    ``resync`` until then). A source enters ``primary`` only after it heard
    the end of the resync acknowledged, and from then on every write it
    acknowledges is on this node or held by the write fence. Before that, the
    source may have acknowledged writes after the resync's ``END`` that never
    reached us: our copy of that generation may be short
    (``node.unconfirmed_copy``)."""
    return node.facts.metadata.last_state is State.SECONDARY


@guard
def handing_over(node: Decider, row: Row) -> bool:
    return node.facts.handover is not None


@guard
def app_starting(node: Decider, row: Row) -> bool:
    """A start is queued or running: an ``app_stopped`` now is the outcome of the
    stop that ran before it (the executor runs one action at a time, in order),
    not news that the application is down."""
    return node.facts.app_pending is AppPending.START


@guard
def app_ready(node: Decider, row: Row) -> bool:
    return node.facts.app_active and node.facts.app_pending is None


# --- guards: the peer -------------------------------------------------------------------


def _peer_state(node: Decider) -> State | None:
    if node.facts.peer is None or not node.facts.peer_alive:
        return None
    return node.facts.peer.state


@guard
def peer_absent(node: Decider, row: Row) -> bool:
    return not node.facts.peer_alive


@guard
def peer_serving(node: Decider, row: Row) -> bool:
    state = _peer_state(node)
    return state is not None and state.serving


@guard
def peer_primary(node: Decider, row: Row) -> bool:
    return _peer_state(node) is State.PRIMARY


@guard
def peer_secondary(node: Decider, row: Row) -> bool:
    return _peer_state(node) is State.SECONDARY


@guard
def peer_resync(node: Decider, row: Row) -> bool:
    return _peer_state(node) is State.RESYNC


def _peer_left(node: Decider, settled: bool) -> bool:
    """The peer waits or is stopped, and is ``settled`` (ready) or not (transient)."""
    peer = node.facts.peer
    return (
        _peer_state(node) in (State.WAIT, State.STOP)
        and peer is not None
        and (peer.substatus is SubStatus.READY) == settled
    )


@guard
def peer_idle(node: Decider, row: Row) -> bool:
    """The peer runs nothing and is not being synced: it waits or is stopped,
    and is done with what it was doing. A node that leaves a serving state
    announces its new state at once but stays transient until its application
    is stopped, what it wrote replicated and the virtual IP released: until
    then it still holds the resources, and taking over would run two."""
    return _peer_left(node, settled=True)


@guard
def peer_settling(node: Decider, row: Row) -> bool:
    """The peer waits or is stopped but is still transient: it may still be
    stopping the application it served (or discovering). Nothing may start
    serving against it until it is ready."""
    return _peer_left(node, settled=False)


@guard
def peer_handover(node: Decider, row: Row) -> bool:
    return (
        _peer_state(node) is State.SECONDARY
        and node.facts.peer is not None
        and node.facts.peer.handover
    )


@guard
def peer_in_sync(node: Decider, row: Row) -> bool:
    """The peer follows us: secondary at our generation."""
    return _peer_state(node) is State.SECONDARY and node.relation is Relation.EQUAL


@guard
def peer_in_sync_ready(node: Decider, row: Row) -> bool:
    peer = node.facts.peer
    return (
        _peer_state(node) is State.SECONDARY
        and peer is not None
        and peer.substatus is SubStatus.READY
        and node.relation is Relation.EQUAL
    )


@guard
def can_hand_over(node: Decider, row: Row) -> bool:
    """A failing primary may hand its service over as a swap does: the peer is
    in sync as secondary, ready, has confirmed the pair (``last_state``
    secondary: it heard this node primary at its generation, so a copy it
    holds stays valid whatever this node does next), and announces it can
    serve (no checker of its blocks a takeover, its own restart budget is
    not spent)."""
    peer = node.facts.peer
    return (
        node.state is State.PRIMARY
        and node.facts.handover is None
        and peer_in_sync_ready(node, row)
        and peer is not None
        and peer.last_state is State.SECONDARY
        and peer.can_serve
    )


@guard
def peer_echoes_view(node: Decider, row: Row) -> bool:
    """The peer's last heartbeat echoes this node's current view: the peer sent
    it after hearing what this node announces now, so what it announces is not
    a state it left on hearing ours (a frame sent before its last change can
    arrive after it; the newer one is then still on its way)."""
    return node.facts.peer is not None and node.facts.peer.peer_view == node.facts.view


@guard
def fingerprint_mismatch(node: Decider, row: Row) -> bool:
    return node.facts.peer is not None and node.facts.peer.fingerprint != node.settings.fingerprint


@guard
def same_generation(node: Decider, row: Row) -> bool:
    """The peer announces our generation, whatever either side's consistency."""
    return (
        node.facts.peer is not None and node.facts.peer.generation == node.facts.metadata.generation
    )


@guard
def resync_target_active(node: Decider, row: Row) -> bool:
    return node.facts.resync_role is ResyncRole.TARGET


@guard
def delivered_below_ours(node: Decider, row: Row) -> bool:
    """A resync that ended with a generation ordered below ours (only without
    replicated directories, where it ends before the source could outrank us):
    adopting it would make our generation go down."""
    event = node.event
    return isinstance(event, ev.ResyncDone) and event.generation < node.facts.metadata.generation


@guard
def peer_outranks(node: Decider, row: Row) -> bool:
    """The peer's generation orders above ours (whatever its data): a peer that
    adopted ours would see its generation decrease."""
    return (
        node.facts.peer is not None and node.facts.peer.generation > node.facts.metadata.generation
    )


@guard
def peer_newer(node: Decider, row: Row) -> bool:
    return node.relation is Relation.PEER_NEWER


@guard
def me_newer(node: Decider, row: Row) -> bool:
    return node.relation is Relation.ME_NEWER


@guard
def equal(node: Decider, row: Row) -> bool:
    return node.relation is Relation.EQUAL


@guard
def diverged(node: Decider, row: Row) -> bool:
    return node.relation is Relation.DIVERGED


# --- guards: a first start ---------------------------------------------------------------
#
# Neither node ever served nor synced (both metadata fresh): the replicated
# directories hold whatever was there before the cluster was installed, part
# of no generation, so the generations cannot say whose data to keep. Each
# node announces whether its directories held anything at boot (``has_data``):
# data on one side only, that side serves and the other is resynchronised
# from it; data on both sides, an operator chooses (``prim``); data on neither,
# the tie policy decides, as for equal data.


@guard
def initial_metadata(node: Decider, row: Row) -> bool:
    """This node never served nor synced: a first start (``Metadata.fresh``)."""
    return node.facts.metadata.fresh


def _first_start(node: Decider) -> tuple[bool, bool] | None:
    """(our data, the peer's) when both nodes' metadata is fresh, else None."""
    peer = node.facts.peer
    if peer is None or not node.facts.peer_alive or not (node.facts.metadata.fresh and peer.fresh):
        return None
    return node.settings.local_data, peer.has_data


@guard
def first_start_data_here(node: Decider, row: Row) -> bool:
    """A first start with data on this node only: it serves (whatever the tie policy)."""
    return _first_start(node) == (True, False)


@guard
def first_start_data_there(node: Decider, row: Row) -> bool:
    """A first start with data on the peer only: never serve over it."""
    return _first_start(node) == (False, True)


@guard
def first_start_data_both(node: Decider, row: Row) -> bool:
    """A first start with data on both nodes: an operator chooses whose to keep."""
    return _first_start(node) == (True, True)


# --- guards: policies -------------------------------------------------------------------


def _was_serving(state: State | None) -> bool:
    return state is not None and state.serving


@guard
def wins_tie(node: Decider, row: Row) -> bool:
    """Both hold the same data: which one serves. A stopped peer never does;
    then the preferred node (failback: preferred); then the one that served
    last, if only one did; then the lower name. Both nodes compute the same."""
    s, peer = node.settings, node.facts.peer
    if peer is None or peer.state is State.STOP:
        return True
    if node.can_serve != peer.can_serve:  # a node whose application keeps failing yields
        return node.can_serve
    if s.failback == "preferred" and s.preferred is not None:
        return s.preferred == s.name
    mine, theirs = _was_serving(node.facts.metadata.last_state), _was_serving(peer.last_state)
    if mine != theirs:
        return mine
    return s.name < s.peer


@guard
def wins_split(node: Decider, row: Row) -> bool:
    """After a split brain: the configured winner, else the higher generation."""
    s, peer = node.settings, node.facts.peer
    if s.split_brain_winner is not None:
        return s.split_brain_winner == s.name
    return peer is None or node.facts.metadata.generation > peer.generation


@guard
def failback_to_peer(node: Decider, row: Row) -> bool:
    s = node.settings
    return s.failback == "preferred" and s.preferred == s.peer


def policy_text(node: Decider) -> str:
    s = node.settings
    winner = s.split_brain_winner or "higher generation"
    if s.failback == "preferred":
        return f"preferred node {s.preferred}; split brain winner {winner}"
    return f"failback {s.failback}; split brain winner {winner}"


# --- guards: arbitration ----------------------------------------------------------------


@guard
def arbitrated(node: Decider, row: Row) -> bool:
    """An arbitrator that vouches for the data: it grants only to a node holding
    the newest generation it granted (not a ping witness: it records none)."""
    return node.settings.arbitrator and node.settings.arbitrator_records


@guard
def needs_grant(node: Decider, row: Row) -> bool:
    """The arbitration gate: serving needs the lease for the generation served."""
    gated = row.gated_row
    if not node.settings.arbitrator or gated is None:
        return False
    return not (node.facts.lease.held and not gated.mints)


@guard
def denied_lately(node: Decider, row: Row) -> bool:
    """The arbitrator denied this node's last request, made less than a recheck
    (``startup_timeout``) ago: the gate does not ask again before that. Counted
    from the ask (``deny_grant``), not the answer, so the recheck timer, armed
    when the node asked, is not skipped for the answer's delay; asks stay a
    recheck apart."""
    denied = node.facts.lease.denied_at
    return denied is not None and node.now < denied + node.settings.startup_timeout


@guard
def grant_pending(node: Decider, row: Row) -> bool:
    return node.facts.pending is not None


@guard
def grant_expired(node: Decider, row: Row) -> bool:
    """The lease a grant gives has already run out here: it counts from when
    we asked (``hold_grant``), and this node heard the answer only after
    ``lease_ttl - lease_margin`` (it was paused, or the answer was delayed)."""
    asked, s = node.facts.lease.requested_at, node.settings
    return grant_run_out(asked, node.now, ttl=s.lease_ttl, margin=s.lease_margin)


@guard
def grant_pending_alone(node: Decider, row: Row) -> bool:
    return node.facts.pending is not None and node.facts.pending.target is State.ALONE


@guard
def grant_pending_primary(node: Decider, row: Row) -> bool:
    return node.facts.pending is not None and node.facts.pending.target is State.PRIMARY


# --- actions: generations and metadata ---------------------------------------------------


@action
def mint_generation(node: Decider, row: Row) -> None:
    """Start a new generation: this node serves without an in-sync partner."""
    meta = node.facts.metadata
    minted = node.facts.granted or meta.generation.successor(
        node.settings.name, meta.peer_generation
    )
    node.update(granted=None)
    node.update(metadata=meta.evolve(generation=minted))


@action
def mark_consistent(node: Decider, row: Row) -> None:
    node.update(metadata=node.facts.metadata.evolve(consistent=True))


@action
def mark_synced(node: Decider, row: Row) -> None:
    """Resync source: the peer now holds our generation."""
    gen = node.facts.metadata.generation
    node.update(metadata=node.facts.metadata.evolve(synced_generation=gen, peer_generation=gen))


@action
def adopt_peer_generation(node: Decider, row: Row) -> None:
    """Resync target: our data is now the generation the source delivered
    (not the peer's current one: it may have moved on since)."""
    event = node.event
    assert isinstance(event, ev.ResyncDone), "adopt_peer_generation runs on resync_done"
    gen = event.generation
    node.update(resync_role=None)
    node.update(
        metadata=node.facts.metadata.evolve(
            generation=gen, synced_generation=gen, peer_generation=gen, consistent=True
        )
    )


@action
def set_forced(node: Decider, row: Row) -> None:
    node.update(forced=True)


@action
def set_second_only(node: Decider, row: Row) -> None:
    node.update(second_only=True)


@action
def begin_discovery(node: Decider, row: Row) -> None:
    node.update(discovery_until=node.now + node.settings.startup_timeout)


# --- actions: the application -------------------------------------------------------------


@action
def start_app(node: Decider, row: Row) -> None:
    node.update(app_active=True)
    node.update(app_pending=AppPending.START)
    node.emit(fx.StartApp())


@action
def stop_app(node: Decider, row: Row) -> None:
    node.update(app_pending=AppPending.STOP)
    node.emit(fx.StopApp())


@action
def app_up(node: Decider, row: Row) -> None:
    node.update(app_pending=None)
    node.update(retry_at=None)


@action
def restart_app(node: Decider, row: Row) -> None:
    """A local restart within the budget (stop script, start script; the VIP
    and replication stay). It counts in the budget; the pause of later
    automatic retries starts again from ``retry_pause``."""
    window = node.now - node.settings.restart_window
    node.update(restarts=(*(t for t in node.facts.restarts if t > window), node.now))
    node.update(next_pause=None)
    retry_app(node, row)


@action
def schedule_retry(node: Decider, row: Row) -> None:
    """No restart budget left and no peer to hand over to: restart the
    application where it is after a pause, doubled at every retry up to
    ``retry_pause_max``. A retry mints nothing and changes no state."""
    s = node.settings
    retry_at, next_pause = _backoff(node, node.facts.next_pause, s.retry_pause, s.retry_pause_max)
    node.update(retry_at=retry_at, next_pause=next_pause)


def _backoff(node: Decider, pause: float | None, first: float, cap: float) -> tuple[float, float]:
    """When to retry after ``pause`` (``first`` if none yet), and the pause after
    that one: doubled, up to ``cap``."""
    pause = pause or first
    return node.now + pause, min(pause * 2, cap)


@action
def retry_app(node: Decider, row: Row) -> None:
    """The automatic retry (outside the budget): restart the application here."""
    node.update(retry_at=None)
    node.update(app_active=True)
    node.update(app_pending=AppPending.START)
    node.emit(fx.RestartApp())


@action
def app_down(node: Decider, row: Row) -> None:
    node.update(app_active=False)
    node.update(app_pending=None)


@action
def stop_resources(node: Decider, row: Row) -> None:
    """Stop everything this node runs for the cluster: resync, the application
    and VIP, replication, the lease. Tracked changes stay on disk.

    The hand-over order: the application stops first while replication still
    runs (``StopApp`` replicates what the stop script wrote, with the peer's
    acknowledgement, before it releases the virtual IP), and only then does
    replication stop. The node stays transient until ``app_stopped``; the peer
    takes over only once it is ready (``peer_idle``). An application that
    failed past its budget (a retry waits) is stopped too: its failed start or
    restart left the VIP or the read-write mirrors, which only a stop gives back."""
    if node.facts.resync_role is not None:
        node.update(resync_role=None)
        _emit_data(node, fx.StopResync())
    if (
        node.facts.app_active
        or node.facts.app_pending is not None
        or node.facts.retry_at is not None
    ):
        node.update(app_active=False)
        node.update(app_pending=AppPending.STOP)
        node.emit(fx.StopApp())
    if node.facts.replicating:
        node.update(replicating=False)
        _emit_data(node, fx.StopReplication())
    node.update(handover=None)
    node.update(pending=None)
    if node.facts.lease.held:
        release_grant(node, row)


@action
def note_checker_down(node: Decider, row: Row) -> None:
    """Keep the checker as down if it counts for serving here (standby, both)."""
    event = node.event
    if isinstance(event, ev.CheckerDown) and checker_blocks(node, row):
        node.update(checkers_down=node.facts.checkers_down | {event.checker})


@action
def note_checker_up(node: Decider, row: Row) -> None:
    event = node.event
    if isinstance(event, ev.CheckerUp):
        node.update(checkers_down=node.facts.checkers_down - {event.checker})


# --- actions: replication, tracking, resync, quarantine -------------------------------------


def _emit_data(node: Decider, effect: fx.Effect) -> None:
    """A data effect, emitted only where directories are replicated."""
    if node.settings.replicated:
        node.emit(effect)


@action
def start_replication(node: Decider, row: Row) -> None:
    node.update(replicating=True)
    _emit_data(node, fx.StartReplication())


@action
def stop_replication(node: Decider, row: Row) -> None:
    if node.facts.replicating:
        node.update(replicating=False)
        _emit_data(node, fx.StopReplication())


@action
def start_tracking(node: Decider, row: Row) -> None:
    _emit_data(node, fx.StartTracking(since=node.facts.metadata.synced_generation))


@action
def stop_tracking(node: Decider, row: Row) -> None:
    _emit_data(node, fx.StopTracking())


def _resync_point(node: Decider) -> tuple[str, object]:
    peer = node.facts.peer
    common = (
        common_generation(node.facts.metadata, peer)
        if peer
        else node.facts.metadata.synced_generation
    )
    return ("full" if common.initial else "incremental"), common


def _start_resync(node: Decider, role: ResyncRole, full: bool) -> None:
    mode, since = _resync_point(node)
    if role is ResyncRole.TARGET:
        full = full or node.facts.full_resync
        node.update(full_resync=False)
    node.update(resync_role=role)
    peer = node.facts.peer
    source_generation = (
        node.facts.metadata.generation
        if role is ResyncRole.SOURCE or peer is None
        else peer.generation
    )
    if not node.settings.replicated:
        # nothing to copy: the resync is complete as it starts, at the generation
        # the source holds (handled in this same step, by the resync's own rows)
        if role is ResyncRole.TARGET:
            node.followups.append(ev.ResyncDone(source_generation))
        else:
            node.followups.append(ev.PeerResynced(source_generation))
        return
    node.emit(
        fx.StartResync(
            role="target" if role is ResyncRole.TARGET else "source",
            mode="full" if full or mode == "full" else "incremental",
            since=since,  # type: ignore[arg-type]
            generation=source_generation,
        )
    )


@action
def resync_target(node: Decider, row: Row) -> None:
    # a node that never served nor synced shares no point with any history,
    # whatever the peer recorded: its copy is rebuilt whole (and what it held
    # is quarantined first by the data plane, as before every full resync)
    full = node.facts.metadata.fresh
    node.update(metadata=node.facts.metadata.evolve(consistent=False))
    _start_resync(node, ResyncRole.TARGET, full=full)


@action
def resync_full(node: Decider, row: Row) -> None:
    node.update(metadata=node.facts.metadata.evolve(consistent=False))
    _start_resync(node, ResyncRole.TARGET, full=True)


@action
def want_full_resync(node: Decider, row: Row) -> None:
    """The next resync into this node copies everything; until then the data
    is not a valid generation."""
    node.update(full_resync=True)
    node.update(metadata=node.facts.metadata.evolve(consistent=False))


@action
def resync_source(node: Decider, row: Row) -> None:
    _start_resync(node, ResyncRole.SOURCE, full=False)


@action
def resync_source_full(node: Decider, row: Row) -> None:
    """Resync the peer with a full copy: an incremental one is impossible."""
    _start_resync(node, ResyncRole.SOURCE, full=True)


@action
def retry_data_later(node: Decider, row: Row) -> None:
    """A data action failed: a resync attempt, or a move of data aside (nothing
    was lost, nothing copied over it). It is tried again at ``data_retry_at``
    (``data_retry``), after a pause doubled at every failure up to
    ``data_retry_pause_max``; the resync role, or the pending quarantine, stays
    the node's meanwhile."""
    s = node.settings
    retry_at, pause = _backoff(
        node, node.facts.data_pause, s.data_retry_pause, s.data_retry_pause_max
    )
    node.update(data_retry_at=retry_at, data_pause=pause)


@action
def retry_resync_source(node: Decider, row: Row) -> None:
    _start_resync(node, ResyncRole.SOURCE, full=False)


@action
def retry_resync_target(node: Decider, row: Row) -> None:
    """The set-aside before a full resync failed earlier: start it again
    (only a full resync sets the data aside first)."""
    _start_resync(node, ResyncRole.TARGET, full=True)


@action
def retry_quarantine(node: Decider, row: Row) -> None:
    node.update(quarantine_pending=False)
    quarantine(node, row)


@action
def give_up_quarantine(node: Decider, row: Row) -> None:
    """A stopped node is not retried: the data stays in place, still diverged,
    and the split brain is found again when the module starts."""
    node.update(quarantine_pending=False)
    node.update(data_retry_at=None)
    node.update(data_pause=None)


@action
def stop_resync(node: Decider, row: Row) -> None:
    node.update(data_retry_at=None)
    node.update(data_pause=None)
    if node.facts.resync_role is not None:
        node.update(resync_role=None)
        _emit_data(node, fx.StopResync())


@action
def abort_resync_source(node: Decider, row: Row) -> None:
    if node.facts.resync_role is ResyncRole.SOURCE:
        stop_resync(node, row)


@action
def finish_resync_source(node: Decider, row: Row) -> None:
    """The peer now holds our generation and may take over once it confirms:
    from here on a restart must not count this node as the last to serve."""
    node.update(resync_role=None)
    node.update(data_retry_at=None)
    node.update(data_pause=None)
    node.update(metadata=node.facts.metadata.evolve(last_state=State.PRIMARY))


@action
def quarantine(node: Decider, row: Row) -> None:
    if node.facts.quarantine_pending:
        return
    _, since = _resync_point(node)
    node.update(quarantine_pending=True)
    if node.settings.replicated:
        node.emit(fx.Quarantine(since=since))  # type: ignore[arg-type]
    else:  # nothing replicated, nothing to move aside: done in this same step
        node.followups.append(ev.QuarantineDone())


@action
def confirm_pair(node: Decider, row: Row) -> None:
    node.update(metadata=node.facts.metadata.evolve(last_state=State.SECONDARY))


@action
def mark_quarantined(node: Decider, row: Row) -> None:
    """Our divergent data is set aside: the rest is not a valid generation
    until resynchronised."""
    node.update(quarantine_pending=False)
    node.update(data_retry_at=None)
    node.update(data_pause=None)
    node.update(metadata=node.facts.metadata.evolve(consistent=False))


# --- actions: swap ----------------------------------------------------------------------


@action
def begin_handover(node: Decider, row: Row) -> None:
    node.update(handover=Handover.STOPPING)
    node.update(retry_at=None)
    node.update(app_pending=AppPending.STOP)
    node.emit(fx.StopApp())


@action
def finish_handover(node: Decider, row: Row) -> None:
    """The application is stopped and every write replicated: the peer can take
    over. This node becomes a confirmed secondary (last_state secondary): it
    served this generation, and the peer serves on with every write
    replicated to us or fenced."""
    node.update(handover=Handover.DONE)
    stop_replication(node, row)
    if node.facts.lease.held:
        release_grant(node, row)


@action
def clear_handover(node: Decider, row: Row) -> None:
    node.update(handover=None)


# --- actions: arbitration ----------------------------------------------------------------


@action
def request_grant(node: Decider, row: Row) -> None:
    gated = row.gated_row
    if gated is None or node.facts.pending is not None:
        return
    meta = node.facts.metadata
    wanted = (
        meta.generation.successor(node.settings.name, meta.peer_generation)
        if gated.mints
        else meta.generation
    )
    node.update(pending=gated)
    lease = node.facts.lease
    node.update(
        lease=Lease(
            held=lease.held,
            generation=wanted,
            requested_at=node.now,
            fence_at=lease.fence_at,
            renew_at=lease.renew_at,
        )
    )
    node.emit(
        fx.RequestArbitration(
            generation=wanted, base=meta.generation, forced="set_forced" in gated.actions
        )
    )


@action
def take_grant(node: Decider, row: Row) -> None:
    """Apply the row that waited for the arbitrator, serving the granted generation."""
    pending, event = node.facts.pending, node.event
    if pending is None or not isinstance(event, ev.ArbitrationGranted):
        return
    node.update(pending=None)
    hold_grant(node, row)
    node.update(granted=event.generation)
    for name in pending.actions:
        ACTIONS[name](node, pending)
    node.update(granted=None)


@action
def hold_grant(node: Decider, row: Row) -> None:
    """The lease is ours until requested_at + ttl at the arbitrator; we stop
    serving ``lease_margin`` earlier, counted from when we asked."""
    s, event = node.settings, node.event
    asked = node.facts.lease.requested_at if node.facts.lease.requested_at is not None else node.now
    generation = event.generation if isinstance(event, ev.ArbitrationGranted) else None
    node.update(
        lease=Lease(
            held=True,
            generation=generation,
            requested_at=None,
            fence_at=fence_deadline(asked, ttl=s.lease_ttl, margin=s.lease_margin),
            renew_at=node.now + s.lease_renew,
        )
    )


@action
def release_grant(node: Decider, row: Row) -> None:
    """Give the lease back: nothing of ours stands at the arbitrator after it,
    neither a lease nor a request (a grant heard too late answers the pending
    one). No denial is recorded: the node may ask again at its next decision."""
    node.update(lease=Lease(), pending=None)
    node.emit(fx.ReleaseArbitration())


@action
def deny_grant(node: Decider, row: Row) -> None:
    node.update(pending=None)
    asked = node.facts.lease.requested_at
    node.update(lease=Lease(denied_at=node.now if asked is None else asked))


@cache
def default_table() -> Table:
    """The shipped table, loaded and validated once."""
    return load_table(raw_spec(), GUARDS, ACTIONS)
