"""The sans-IO node: ``Node.handle(event, now) -> effects`` and ``next_deadline()``.

The node keeps its view of links and peer (bookkeeping), turns raw inputs into
the table's triggers, and lets a plain synchronous ``transitions.Machine``
pick and fire the row. Rows run actions (``rules.ACTIONS``) that change the
node's data and append effects to the outbox. Nothing here blocks, sleeps,
reads a clock or touches I/O: ``now`` is always given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from transitions import EventData, Machine

from failover.core import effects as fx
from failover.core import events as ev
from failover.core import rules
from failover.core.compare import Relation, relation
from failover.core.facts import (
    Lease,
    LinkView,
    NodeFacts,
    derive_substatus,
    pair_problem,
)
from failover.core.state import (
    INITIAL,
    NO_VIEW,
    Handover,
    Metadata,
    PeerStatus,
    Settings,
    State,
    SubStatus,
    View,
    evolve,
)
from failover.core.table import Row, Table

__all__ = [
    "LinkView",
    "Node",
    "NodeFacts",
    "NodeSnapshot",
    "derive_substatus",
    "derive_writes_fenced",
    "pair_problem",
    "unconfirmed_copy",
]

DATA_ROLES = (State.ALONE, State.PRIMARY, State.SECONDARY, State.RESYNC)

MAX_FOLLOWUPS = 8
"""Outcomes the core may derive within one step (a resync of nothing: its end,
then the pair's next step); more means rows that feed each other forever."""

PAUSE_FACTOR = 2.0
"""A gap between two ``handle`` calls longer than this many heartbeat intervals
means this node did not run (the core always has a deadline at most one
heartbeat interval ahead, so a running node is called at least that often)."""


def unconfirmed_copy(meta: Metadata) -> bool:
    """The table's rule for a copy a resync delivered whose end the source
    never confirmed (last_state still ``resync`` although the data is
    consistent: the node entered ``secondary`` and never heard its peer
    ``primary`` at that generation). The source may have acknowledged writes
    after the resync's ``END`` that this copy lacks, in that very generation.
    Such a copy is valid only while the node stays ``secondary``: entering
    ``wait`` or ``stop`` with it (a lost or stopped peer, a checker, a restart)
    marks it not consistent and forgets the common point with the peer, so
    that it is resynchronised, and, served anyway (``primforce``), meets the
    source as a split brain instead of an older state of it."""
    return meta.last_state is State.RESYNC and meta.consistent


def derive_writes_fenced(state: State | None, peer_alive: bool) -> bool:
    """The table's fencing rule: while the peer is alive as ``secondary`` it may
    take over on its own (on ``peer_lost``), so a write the application is told
    is durable must be on it: an fsync the peer did not acknowledge is held
    (``FenceWrites``) until the peer is seen out of ``secondary`` (it heard a
    newer generation and resynchronises, or it stopped) or is lost on every
    link. ``state`` is the peer's last announced state. A node that does not
    serve fails such an fsync instead (its peer serves, or will, without it)."""
    return peer_alive and state is State.SECONDARY


NodeSnapshot = NodeFacts
"""The model checker's name for a node's facts: its snapshot is that value."""


@dataclass
class _Cursor:
    """The model object the transitions Machine moves (it holds only the state)."""

    state: State = State.STOP
    fired: list[Row] = field(default_factory=list)


class Node:
    """One node's decision procedure. Single-threaded: the runtime calls
    ``handle`` from one task only, in the order events happened."""

    def __init__(
        self,
        settings: Settings,
        metadata: Metadata | None = None,
        *,
        table: Table | None = None,
    ) -> None:
        self.settings = settings
        self.table = table if table is not None else rules.default_table()
        self.reset(metadata if metadata is not None else Metadata())
        # per-call scratch
        self.now = 0.0
        self.event: ev.Event = ev.Timer()
        self.outbox: list[fx.Effect] = []
        self._cursor = _Cursor()
        self._machine = self._build_machine()

    def reset(self, metadata: Metadata, epoch: int | None = None) -> None:
        """Forget everything but ``metadata``: the state of a daemon just started.
        Its views start at ``(epoch, 0)`` (default ``settings.epoch``): the epoch
        must be larger than any earlier run of this node used."""
        self.facts = NodeFacts(
            metadata=metadata,
            view=(self.settings.epoch if epoch is None else epoch, 0),
            links=tuple((name, LinkView()) for name in self.settings.links),
        )
        # outcomes the core knows at once (nothing is replicated), handled
        # within the same step after the event that caused them
        self.followups: list[ev.Event] = []
        if hasattr(self, "_machine"):
            self._machine.set_state(State.STOP, model=self._cursor)

    # --- public API -------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.facts.state

    def update(self, **changes: Any) -> None:
        """Replace the facts by a copy with ``changes`` (``NodeFacts`` fields)."""
        self.facts = evolve(self.facts, **changes)

    @property
    def substatus(self) -> SubStatus:
        return self.facts.substatus

    @property
    def writes_fenced(self) -> bool:
        """See ``derive_writes_fenced``."""
        return derive_writes_fenced(
            None if self.facts.peer is None else self.facts.peer.state, self.facts.peer_alive
        )

    def restarts_in_window(self) -> int:
        """Local restarts of the application within the last ``restart_window``."""
        since = self.now - self.settings.restart_window
        return sum(1 for t in self.facts.restarts if t > since)

    @property
    def budget_spent(self) -> bool:
        return self.restarts_in_window() >= self.settings.max_restarts

    @property
    def can_serve(self) -> bool:
        """What the node announces as ``can_serve``: no checker that counts for
        a takeover is down and its restart budget is not spent."""
        return not self.facts.checkers_down and not self.budget_spent

    @property
    def app_started(self) -> bool:
        """The application has started here and nothing is being done to it: no
        start, restart, stop or hand-over under way. Only then does a checker of
        the running application act (``checker_acts``), and only then does the
        runtime run such checkers on the serving node."""
        return (
            self.facts.app_active and self.facts.app_pending is None and self.facts.handover is None
        )

    @property
    def in_sync_problem(self) -> str | None:
        """See ``pair_problem``."""
        return self.facts.in_sync_problem

    @property
    def relation(self) -> Relation:
        if self.facts.peer is None:
            return Relation.UNKNOWN
        return relation(self.facts.metadata, self.facts.peer)

    def status(self) -> PeerStatus:
        """What this node announces in its heartbeats."""
        meta = self.facts.metadata
        return PeerStatus(
            node=self.settings.name,
            state=self.state,
            substatus=self.substatus,
            generation=meta.generation,
            synced_generation=meta.synced_generation,
            consistent=meta.consistent,
            fingerprint=self.settings.fingerprint,
            handover=self.facts.handover is Handover.DONE,
            last_state=meta.last_state,
            reason=self.facts.reason[:256],
            view=self.facts.view,
            peer_view=NO_VIEW if self.facts.peer is None else self.facts.peer.view,
            has_data=self.has_data,
            can_serve=self.can_serve,
        )

    @property
    def has_data(self) -> bool:
        """What this node announces as ``has_data``: its metadata is fresh (a
        first start) and its replicated directories held something at boot."""
        return self.settings.local_data and self.facts.metadata.fresh

    def reconfigure(self, settings: Settings) -> None:
        """Apply new settings (timings, policies). The names of the node, its
        peer and its links must not change: that needs a restart."""
        if (settings.name, settings.peer, settings.links) != (
            self.settings.name,
            self.settings.peer,
            self.settings.links,
        ):
            raise ValueError("node name, peer and links cannot change without a restart")
        # fixed for the run: the views' epoch, what the directories held at boot,
        # and whether any is replicated (the data plane is built at start)
        self.settings = replace(
            settings,
            epoch=self.settings.epoch,
            local_data=self.settings.local_data,
            replicated=self.settings.replicated,
        )

    def next_deadline(self) -> float | None:
        """The earliest time at which ``handle(Timer(), now)`` has something to do."""
        s = self.settings
        times: list[float | None] = [
            self.facts.next_heartbeat_at,
            self.facts.discovery_until,
            self.facts.recheck_at,
            self.facts.lease.fence_at if self.facts.lease.held else None,
            self.facts.lease.renew_at if self.facts.lease.held else None,
            self.facts.retry_at,
            self.facts.data_retry_at,
        ]
        links = [v for _, v in self.facts.links]
        seen = [v.last_seen for v in links if v.last_seen is not None]
        times.extend(
            v.last_seen + s.link_timeout for v in links if v.up and v.last_seen is not None
        )
        if self.facts.peer_alive and seen:
            times.append(max(seen) + s.dead_timeout)
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Process one input at time ``now``; return the effects, in the order
        the runtime must execute them."""
        # (what was announced is judged at the last call's time: a restart
        # leaving the budget's window changes what is announced now)
        announced, heard = self._announced(), self._heard_view()
        self.now = now
        self.event = event
        self.outbox = []
        self._discount_pause(now)
        meta_before = self.facts.metadata
        fence_before = (self.writes_fenced, self.state.serving)
        self.followups = []
        for trigger in self._bookkeep(event):
            self._fire(trigger, event)
        decided = self.facts.metadata  # persisted first, before any effect of the step
        for _ in range(MAX_FOLLOWUPS):
            if not self.followups:
                break
            followup = self.followups.pop(0)
            self.event = followup
            before, first = self.facts.metadata, len(self.outbox)
            self._fire(followup.kind, followup)
            if self.facts.metadata != before:  # the header rule, for the follow-up's row
                self.outbox.insert(first, fx.PersistMetadata(self.facts.metadata))
        assert not self.followups, "outcomes known at once keep causing new ones"
        effects = self.outbox
        changed = self._announced() != announced
        if changed:
            self.update(view=(self.facts.view[0], self.facts.view[1] + 1))
        if changed or self._heard_view() != heard:
            # at once: a new view, or the echo of the peer's new one, which the
            # peer waits for before it serves on what we announce (_housekeep
            # then sends no second one)
            self.update(next_heartbeat_at=now)
        self._housekeep()
        if decided != meta_before:
            effects.insert(0, fx.PersistMetadata(decided))
        fence = (self.writes_fenced, self.state.serving)
        if fence != fence_before:  # after PersistMetadata: a lifted fence follows the mint
            effects.append(fx.FenceWrites(*fence))
        self.outbox = []
        return effects

    def _announced(self) -> tuple[object, ...]:
        """What the peer decides on in our heartbeats: every field of ``status()``
        but the reason (words for the operator), the views themselves, and the
        name and fingerprint (fixed for the run). A change of any of it is a new
        view. A plain tuple, not ``status()`` less those fields: it is built
        twice per ``handle`` and that would slow every call by a third; the
        test of the views checks it still covers every field of ``PeerStatus``."""
        meta = self.facts.metadata
        return (
            self.state,
            self.substatus,
            self.facts.handover is Handover.DONE,
            meta.generation,
            meta.synced_generation,
            meta.consistent,
            meta.last_state,
            self.has_data,
            self.can_serve,
        )

    def _heard_view(self) -> View:
        return NO_VIEW if self.facts.peer is None else self.facts.peer.view

    # --- snapshots (for the model checker) ---------------------------------------------

    def snapshot(self) -> NodeFacts:
        """The node's facts: everything that determines its future behaviour."""
        return self.facts

    def restore(self, facts: NodeFacts) -> None:
        self.facts = facts
        self._machine.set_state(facts.state, model=self._cursor)

    # --- internals --------------------------------------------------------------------

    def emit(self, effect: fx.Effect) -> None:
        self.outbox.append(effect)

    def _build_machine(self) -> Machine:
        machine = Machine(
            model=self._cursor,
            states=list(State),
            initial=State.STOP,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            send_event=True,
        )
        # One machine trigger per row: the node picks the row (the first whose
        # guards all hold, the table's rule) and the machine executes that edge.
        guards = rules.GUARDS
        # per (state, event): each row, its machine event and its guard checks
        self._choices: dict[tuple[State, str], tuple[tuple[Row, Any, Any], ...]] = {}
        for (state, event), entry in self.table.entries.items():
            if isinstance(entry, str):  # IGNORE: no edge at all
                continue
            choices = []
            for position, row in enumerate(entry):
                trigger = f"{event}#{position}"
                machine.add_transition(trigger, state, row.target, after=[self._applier(row)])
                checks = tuple((guards[c.guard], c.negated) for c in row.when)
                # the trigger's Event itself: ``event.trigger(model)`` is what the
                # model's ``trigger(name)`` calls, less the lookup by name
                choices.append((row, machine.events[trigger], checks))
            self._choices[(state, event)] = tuple(choices)
        return machine

    def _select(self, state: State, event: str) -> tuple[Row, Any] | None:
        """The row that fires for ``event`` in ``state`` and its machine event
        (None for an ignore)."""
        for row, edge, checks in self._choices.get((state, event), ()):
            for guard, negated in checks:
                if guard(self, row) == negated:
                    break
            else:
                return row, edge
        return None  # the table guarantees an unguarded last row, so only ignores

    def _applier(self, row: Row) -> Any:
        def apply(_: EventData) -> None:
            self._cursor.fired.append(row)

        return apply

    def _fire(self, trigger: str, event: ev.Event) -> None:
        cursor = self._cursor
        source = cursor.state
        selected = self._select(source, trigger)
        if selected is None:
            return  # an explicit ignore
        row, edge = selected
        cursor.fired.clear()
        edge.trigger(cursor)
        if cursor.state is not source:
            self.update(state=cursor.state)
        assert cursor.fired == [row], f"the machine did not take {row.ident}"
        first_effect = len(self.outbox)
        substatus = self.substatus
        if row.refusal is not None:
            self.emit(fx.Refused(command=trigger, reason=self._format(row.refusal)))
            return
        state_changed = cursor.state is not source
        # the context that led to the decision; a quiet row keeps the current one
        reason = self.facts.reason if row.quiet and not state_changed else self._format(row.reason)
        if state_changed:
            self._leaving(source)
        for name in row.actions:
            rules.ACTIONS[name](self, row)
        if state_changed:
            self.update(pending=None)  # a grant that arrives later is released
            self._entering(cursor.state, source)
        reason_changed = reason != self.facts.reason
        changed = state_changed or reason_changed or self.substatus is not substatus
        if reason_changed:
            self.update(reason=reason)
        if changed:
            self.emit(
                fx.TransitionRecord(
                    node=self.settings.name,
                    source=source.value,
                    event=trigger,
                    target=cursor.state.value,
                    substatus=self.substatus.value,
                    effects=tuple(
                        e.name
                        for e in self.outbox[first_effect:]
                        if not isinstance(e, fx.TransitionRecord)
                    ),
                    reason=reason,
                    generation=str(self.facts.metadata.generation),
                    forced=self.facts.forced,
                    reason_kind=row.reason,
                )
            )

    def _leaving(self, state: State) -> None:
        if state is State.WAIT:
            self.update(discovery_until=None, recheck_at=None)
        if state.serving:
            self.update(forced=False)
        if state is State.SECONDARY:
            self.update(
                handover=None if self.facts.handover is Handover.DONE else self.facts.handover
            )

    def _entering(self, state: State, source: State) -> None:
        if state in DATA_ROLES and not (state is State.SECONDARY and source is State.RESYNC):
            # (a resync target stays last_state resync until its peer confirms the
            # pair: rules.confirm_pair; the end of its resync may have gone unheard)
            self.update(metadata=self.facts.metadata.evolve(last_state=state))
        if state in DATA_ROLES:
            self.update(second_only=False)
        if state in (State.WAIT, State.STOP) and unconfirmed_copy(self.facts.metadata):
            self.update(
                metadata=self.facts.metadata.evolve(consistent=False, synced_generation=INITIAL)
            )
        if state is State.STOP:
            self.update(second_only=False, discovery_until=None)
        if not state.serving:
            self.update(retry_at=None)  # the application is not retried where it does not serve
        # a data action's retry belongs to the state that scheduled it
        self.update(data_retry_at=None, data_pause=None)

    def _bookkeep(self, event: ev.Event) -> list[str]:
        """Update the link and peer view; return the table triggers to fire."""
        now, s = self.now, self.settings
        if isinstance(event, ev.HeartbeatReceived):
            view = self.facts.link(event.link)
            if event.status.node != s.peer or view is None:
                return []
            if not view.up:
                self.emit(fx.LinkChanged(event.link, up=True))
            facts = self.facts.with_link(event.link, LinkView(up=True, last_seen=now))
            meta = facts.metadata
            if meta.peer_generation != event.status.generation:
                meta = meta.evolve(peer_generation=event.status.generation)
            self.facts = evolve(  # one copy of the facts for the whole bookkeeping
                facts,
                peer=event.status,
                peer_alive=True,
                discovery_until=None,
                recheck_at=None,
                metadata=meta,
            )
            return ["heartbeat"]
        if isinstance(event, ev.LinkFailed):
            failed = self.facts.link(event.link)
            if failed is not None and failed.up:
                self.facts = self.facts.with_link(event.link, evolve(failed, up=False))
                self.emit(fx.LinkChanged(event.link, up=False))
            return []
        if isinstance(event, ev.Timer):
            return self._timers()
        return [event.kind]

    def _discount_pause(self, now: float) -> None:
        """Silence is counted in time this node was observed running.

        The core is called at least every heartbeat interval while the node
        runs (a deadline is always that close). A longer gap means the process
        did not run (SIGSTOP, a VM frozen, a starved scheduler): it could not
        read the heartbeats waiting in its sockets, so that time is not the
        peer's silence. Every link's last-seen time, and the end of a wait for
        the peer (discovery at start, the recheck of a node that waits blind),
        move forward by the gap beyond one interval: the peer is judged only
        after the node has run long enough to read what arrived. The lease is
        not moved: it runs out in real time at the arbitrator."""
        last = self.facts.last_run
        self.update(last_run=now)
        if last is None:
            return
        interval = self.settings.heartbeat_interval
        gap = now - last
        if gap <= PAUSE_FACTOR * interval:
            return
        credit = gap - interval
        facts = self.facts
        self.update(
            links=tuple(
                (
                    name,
                    view
                    if view.last_seen is None
                    else evolve(view, last_seen=min(view.last_seen + credit, now)),
                )
                for name, view in facts.links
            ),
            discovery_until=None
            if facts.discovery_until is None
            else facts.discovery_until + credit,
            recheck_at=None if facts.recheck_at is None else facts.recheck_at + credit,
        )

    def _timers(self) -> list[str]:
        now, s = self.now, self.settings
        triggers: list[str] = []
        for name, view in self.facts.links:
            if view.up and view.last_seen is not None and now >= view.last_seen + s.link_timeout:
                self.facts = self.facts.with_link(name, evolve(view, up=False))
                self.emit(fx.LinkChanged(name, up=False))
        seen = [v.last_seen for _, v in self.facts.links if v.last_seen is not None]
        if self.facts.peer_alive and seen and now >= max(seen) + s.dead_timeout:
            self.update(peer_alive=False)
            triggers.append("peer_lost")
        if self.facts.discovery_until is not None and now >= self.facts.discovery_until:
            self.update(discovery_until=None)
            triggers.append("startup_timeout")
        if (
            self.facts.lease.held
            and self.facts.lease.fence_at is not None
            and now >= self.facts.lease.fence_at
        ):
            self.update(lease=Lease())
            triggers.append("lease_expired")
        if self.facts.recheck_at is not None and now >= self.facts.recheck_at:
            self.update(recheck_at=None)
            triggers.append("recheck")
        if self.facts.retry_at is not None and now >= self.facts.retry_at:
            self.update(retry_at=None)
            triggers.append("retry")
        if self.facts.data_retry_at is not None and now >= self.facts.data_retry_at:
            self.update(data_retry_at=None)
            triggers.append("data_retry")
        return triggers

    def _housekeep(self) -> None:
        """Periodic duties that decide nothing: heartbeats, lease renewal, recheck timer."""
        now, s = self.now, self.settings
        if self.facts.next_heartbeat_at is not None and now >= self.facts.next_heartbeat_at:
            self.emit(fx.SendHeartbeat(self.status()))
            self.update(next_heartbeat_at=now + s.heartbeat_interval)
        lease = self.facts.lease
        if lease.held and lease.renew_at is not None and now >= lease.renew_at:
            self.update(lease=evolve(lease, requested_at=now, renew_at=now + s.lease_renew))
            self.emit(fx.RenewArbitration(lease.generation or self.facts.metadata.generation))
        waiting_blind = (
            self.state is State.WAIT
            and not self.facts.peer_alive
            and self.facts.discovery_until is None
        )
        if waiting_blind and self.facts.recheck_at is None:
            self.update(recheck_at=now + s.startup_timeout)
        elif not waiting_blind and self.facts.recheck_at is not None:
            self.update(recheck_at=None)

    def _format(self, template: str) -> str:
        if "{" not in template:
            return template
        return template.format_map(_ReasonContext(self))


class _ReasonContext(Mapping[str, str]):
    """Lazily computed placeholders for reasons."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def __getitem__(self, key: str) -> str:
        node = self._node
        peer = node.facts.peer
        if key == "peer":
            return node.settings.peer
        if key == "peer_state":
            return (
                "unseen"
                if peer is None
                else ("lost" if not node.facts.peer_alive else peer.state.value)
            )
        if key == "relation":
            return node.relation.describe(node.settings.peer)
        if key == "event_reason":
            return str(getattr(node.event, "reason", "") or "no detail")
        if key == "checker":
            named = getattr(node.event, "checker", None)
            return str(named) if named else ", ".join(sorted(node.facts.checkers_down)) or "?"
        if key == "restart":
            s = node.settings
            used = node.restarts_in_window() + 1
            return f"restart {used} of {s.max_restarts} within {s.restart_window:g} s"
        if key == "pause":
            return f"{node.facts.next_pause or node.settings.retry_pause:g}"
        if key == "data_pause":  # the pause a failed data action is about to get
            return f"{node.facts.data_pause or node.settings.data_retry_pause:g}"
        if key == "policy":
            return str(rules.policy_text(node))
        if key == "last_state":
            return (
                node.facts.metadata.last_state.value if node.facts.metadata.last_state else "none"
            )
        if key == "pending_reason":
            return node._format(node.facts.pending.reason) if node.facts.pending else ""
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0
