"""The node's whole mutable state as one frozen value (``NodeFacts``).

``Node`` holds one ``NodeFacts`` and replaces it on every change; the model
checker's snapshot is that value. The rules read it (``Decider.facts``) and
change it only through ``Decider.update``. Sub-states are enums
(``AppPending``, ``ResyncRole``, ``Handover``), str-valued so that logs and the
journal keep their text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from failover.core.state import (
    NO_VIEW,
    AppPending,
    Generation,
    Handover,
    Metadata,
    PeerStatus,
    ResyncRole,
    Settings,
    State,
    SubStatus,
    View,
    evolve,
)
from failover.core.table import Row


@dataclass(frozen=True)
class LinkView:
    up: bool = False
    last_seen: float | None = None


@dataclass(frozen=True)
class Lease:
    """The arbitration lease as this node counts it (on its own clock)."""

    held: bool = False
    generation: Generation | None = None
    requested_at: float | None = None  # when the pending request or renewal was sent
    fence_at: float | None = None  # stop serving at this time unless renewed
    renew_at: float | None = None
    denied_at: float | None = None  # when the request the arbitrator last denied was made


def derive_substatus(node: NodeFacts) -> SubStatus:
    """Transient while an outcome is awaited, ready otherwise (the table's rule)."""
    awaiting = (
        node.app_pending is not None
        or node.resync_role is not None
        or node.quarantine_pending
        or node.pending is not None
        or node.handover is Handover.STOPPING
        or (node.state is State.WAIT and node.discovery_until is not None)
    )
    return SubStatus.TRANSIENT if awaiting else SubStatus.READY


def pair_problem(
    state: State, peer: PeerStatus | None, peer_alive: bool, metadata: Metadata
) -> str | None:
    """Why the pair is not in sync as the core sees it (None when it is): this
    node ``primary``, its peer alive and announcing ``secondary`` at our
    generation. (The data plane may add what only it sees: a silent channel, a
    verify that found differences.)"""
    if peer is None:
        return "the peer was never heard"
    if not peer_alive:
        return f"peer {peer.node} lost (silent on every link)"
    if peer.state is not State.SECONDARY:
        return f"peer {peer.node} is {peer.state.value}"
    if state is not State.PRIMARY:
        return f"this node is {state.value}"
    if peer.generation != metadata.generation:
        return f"peer {peer.node} holds generation {peer.generation}, not ours"
    return None


def watchdog_deadline(
    settings: Settings, lease: Lease, peer: PeerStatus | None, last_beat: float
) -> float | None:
    """The time by which this node's application and address must be gone if its
    daemon's event loop stops now (the watchdog's deadline, runtime/watchdog.py),
    or None when no peer can take over on its silence. ``last_beat``: when the
    runtime last emitted a heartbeat (sent or not), which the peer counts its dead
    timeout from; ``lease`` and ``peer``: the core's facts of those names.

    - With an arbitrator and a lease: its ``fence_at`` (past it the arbitrator may
      grant the peer).
    - Without one, a peer that announced its stop and did not serve last takes
      over on nobody's silence: a daemon started again waits (``blind`` rows
      serve only a node that was the last to serve, or with the arbitrator), and
      once it is heard again, ``facts.peer`` is its new state and the deadline
      stands again.
    - Otherwise ``last_beat + dead_timeout - heartbeat_interval / 2``: the peer
      takes over no earlier than ``dead_timeout`` after the last heartbeat; half
      an interval covers the fence itself and the clocks' drift.
    """
    if settings.arbitrator and lease.fence_at is not None:
        return lease.fence_at
    if (
        not settings.arbitrator
        and peer is not None
        and peer.state is State.STOP
        and not (peer.last_state is not None and peer.last_state.serving)
    ):
        return None
    return last_beat + settings.dead_timeout - settings.heartbeat_interval / 2


@dataclass(frozen=True)
class NodeFacts:
    """Everything that determines the node's future behaviour; hashable.

    The defaults are those of a daemon just started (``Node.reset`` gives the
    metadata, the view and the links). The model checker stores these values
    and restores nodes from them. ``rebased`` shifts every time so that
    ``origin`` becomes 0, clamping times further in the past than ``horizon``
    (they all compare alike).
    """

    state: State = State.STOP
    reason: str = "module stopped"
    metadata: Metadata = field(default_factory=Metadata)
    peer: PeerStatus | None = None
    peer_alive: bool = False
    # one view per configured link, in the settings' order
    links: tuple[tuple[str, LinkView], ...] = ()
    next_heartbeat_at: float | None = 0.0
    last_run: float | None = None  # the time of the last handle call
    discovery_until: float | None = None
    recheck_at: float | None = None
    lease: Lease = Lease()
    pending: Row | None = None
    granted: Generation | None = None
    app_active: bool = False
    app_pending: AppPending | None = None
    replicating: bool = False
    resync_role: ResyncRole | None = None
    quarantine_pending: bool = False
    handover: Handover | None = None
    second_only: bool = False
    forced: bool = False
    full_resync: bool = False  # the operator asked for a full copy at the next resync
    # only checkers that count for a takeover (class standby or both) are kept
    checkers_down: frozenset[str] = frozenset()
    view: View = NO_VIEW
    # the restart budget, in memory: when each local restart of the application
    # happened (a daemon restart forgets them); the next automatic retry once it
    # is spent, and the pause after that one
    restarts: tuple[float, ...] = ()
    retry_at: float | None = None
    next_pause: float | None = None
    # the next try of a failed data action (resync source, quarantine, set-aside
    # before a full resync) and the pause after it
    data_retry_at: float | None = None
    data_pause: float | None = None

    @property
    def substatus(self) -> SubStatus:
        return derive_substatus(self)

    @property
    def in_sync_problem(self) -> str | None:
        """See ``pair_problem``."""
        return pair_problem(self.state, self.peer, self.peer_alive, self.metadata)

    def link(self, name: str) -> LinkView | None:
        for known, view in self.links:
            if known == name:
                return view
        return None

    def with_link(self, name: str, view: LinkView) -> NodeFacts:
        """These facts with link ``name`` (one of ``links``) seen as ``view``."""
        links = tuple((known, view if known == name else old) for known, old in self.links)
        return evolve(self, links=links)

    def key(self, origin: float, horizon: float) -> tuple[Any, ...]:
        """A flat, hashable summary for deduplication: every time relative to
        ``origin`` (clamped at ``-horizon``), the reason left out."""

        def shift(t: float | None) -> float | None:
            return None if t is None else max(t - origin, -horizon)

        m, lease = self.metadata, self.lease
        peer = self.peer
        return (
            self.state,
            m.generation.counter,
            m.generation.origin,
            m.synced_generation.counter,
            m.synced_generation.origin,
            m.consistent,
            m.last_state,
            m.peer_generation.counter,
            m.peer_generation.origin,
            None
            if peer is None
            else (
                peer.state,
                peer.substatus,
                peer.generation.counter,
                peer.generation.origin,
                peer.synced_generation.counter,
                peer.synced_generation.origin,
                peer.consistent,
                peer.handover,
                peer.last_state,
                peer.has_data,
            ),
            self.peer_alive,
            tuple((name, v.up, shift(v.last_seen)) for name, v in self.links),
            shift(self.next_heartbeat_at),
            shift(self.last_run),
            shift(self.discovery_until),
            shift(self.recheck_at),
            (
                lease.held,
                lease.generation,
                shift(lease.requested_at),
                shift(lease.fence_at),
                shift(lease.renew_at),
                shift(lease.denied_at),
            ),
            None if self.pending is None else self.pending.ident,
            self.granted,
            self.app_active,
            self.app_pending,
            self.replicating,
            self.resync_role,
            self.quarantine_pending,
            self.handover,
            self.second_only,
            self.forced,
            self.full_resync,
            self.checkers_down,
            tuple(shift(t) for t in self.restarts),
            shift(self.retry_at),
            self.next_pause,
            shift(self.data_retry_at),
            self.data_pause,
        )

    def rebased(self, origin: float, horizon: float) -> NodeFacts:
        def shift(t: float | None) -> float | None:
            return None if t is None else max(t - origin, -horizon)

        lease = self.lease
        return evolve(
            self,
            links=tuple(
                (name, evolve(view, last_seen=shift(view.last_seen))) for name, view in self.links
            ),
            next_heartbeat_at=shift(self.next_heartbeat_at),
            last_run=shift(self.last_run),
            discovery_until=shift(self.discovery_until),
            recheck_at=shift(self.recheck_at),
            restarts=tuple(max(t - origin, -horizon) for t in self.restarts),
            retry_at=shift(self.retry_at),
            data_retry_at=shift(self.data_retry_at),
            lease=evolve(
                lease,
                requested_at=shift(lease.requested_at),
                fence_at=shift(lease.fence_at),
                renew_at=shift(lease.renew_at),
                denied_at=shift(lease.denied_at),
            ),
        )
