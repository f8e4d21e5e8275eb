"""What the node and its rules share, so that neither imports the other.

``rules`` holds the guards and actions the table names; ``node`` runs the
table and calls them. The rules see the node only through ``Decider``: the
data a row may read or change and the few questions derived from it. ``Node``
satisfies it (structurally); ``node`` imports ``rules``, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.compare import Relation
from failover.core.state import Generation, Metadata, PeerStatus, Settings, State, View
from failover.core.table import Row


@dataclass(frozen=True)
class Lease:
    """The arbitration lease as this node counts it (on its own clock)."""

    held: bool = False
    generation: Generation | None = None
    requested_at: float | None = None  # when the pending request or renewal was sent
    fence_at: float | None = None  # stop serving at this time unless renewed
    renew_at: float | None = None
    denied_at: float | None = None  # when the arbitrator last denied a request


class Decider(Protocol):
    """The node as a guard reads it and an action changes it (``failover.core.node.Node``)."""

    settings: Settings
    metadata: Metadata
    now: float
    event: ev.Event
    peer: PeerStatus | None
    peer_alive: bool
    view: View
    discovery_until: float | None
    lease: Lease
    pending: Row | None
    granted: Generation | None
    app_active: bool
    app_pending: str | None
    replicating: bool
    resync_role: str | None
    quarantine_pending: bool
    handover: str | None
    second_only: bool
    forced: bool
    full_resync: bool
    checkers_down: frozenset[str]
    restarts: tuple[float, ...]
    retry_at: float | None
    next_pause: float | None
    data_retry_at: float | None
    data_pause: float | None
    followups: list[ev.Event]

    @property
    def state(self) -> State: ...

    @property
    def relation(self) -> Relation: ...

    @property
    def can_serve(self) -> bool: ...

    @property
    def budget_spent(self) -> bool: ...

    @property
    def app_started(self) -> bool: ...

    def emit(self, effect: fx.Effect) -> None: ...
