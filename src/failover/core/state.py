"""The values the core reasons about: states, generations, metadata, peer status.

All of them are immutable and carry no I/O. ``Metadata`` is what a node must
find again after a crash; the core asks the runtime to persist it (the
``PersistMetadata`` effect) and is given it back at restart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


def evolve(obj: _T, **changes: Any) -> _T:
    """A copy of the frozen dataclass ``obj`` with ``changes``: like
    ``dataclasses.replace`` without re-running ``__init__`` (several times
    faster; for the core's own value types, whose fields need no checks).
    A name that is not one of ``obj``'s fields raises ``TypeError``, as
    ``replace`` would: a misspelt fact never becomes a silent extra attribute."""
    old = obj.__dict__
    new = _new(type(obj))
    attrs = new.__dict__
    attrs.update(old)
    attrs.update(changes)
    if len(attrs) != len(old):  # a name that is not a field was added (the cheap test)
        unknown = ", ".join(sorted(changes.keys() - old.keys()))
        raise TypeError(f"{type(obj).__name__} has no field {unknown}")
    return new


_new = object.__new__


class State(enum.Enum):
    """The six states of a node (DESIGN.md section 2)."""

    STOP = "stop"
    WAIT = "wait"
    ALONE = "alone"
    PRIMARY = "primary"
    SECONDARY = "secondary"
    RESYNC = "resync"

    @property
    def serving(self) -> bool:
        """True for the states that run the application and hold the virtual IP."""
        return self in (State.ALONE, State.PRIMARY)

    def __str__(self) -> str:
        return self.value


class SubStatus(enum.Enum):
    """``transient`` while scripts run, the VIP moves or a resync runs; else ``ready``."""

    TRANSIENT = "transient"
    READY = "ready"

    def __str__(self) -> str:
        return self.value


class AppPending(enum.StrEnum):
    """The outcome of the application awaited: a start (or restart) or a stop."""

    START = "start"
    STOP = "stop"


class ResyncRole(enum.StrEnum):
    """This node's side of the resync under way."""

    SOURCE = "source"
    TARGET = "target"


class Handover(enum.StrEnum):
    """A hand-over to the peer: the application stopping here, then done (the
    node announces ``handover`` until it leaves ``secondary``)."""

    STOPPING = "stopping"
    DONE = "done"


@dataclass(frozen=True, order=True)
class Generation:
    """Identifies the history of a node's data.

    A node mints a new generation every time it starts serving without an
    in-sync partner: ``counter`` is one more than any counter it has seen, and
    ``origin`` is the minting node's name. Two nodes hold the same generation
    only if they share the same history up to that point, so two nodes that
    both served during a partition hold different generations even when their
    counters are equal (that is how a split brain is recognised). Ordering is
    by counter, then origin: a total order both nodes compute alike.
    """

    counter: int = 0
    origin: str = ""

    @property
    def initial(self) -> bool:
        """True for the generation of data that was never served or synced."""
        return self.counter == 0

    def successor(self, origin: str, seen: Generation) -> Generation:
        """The generation ``origin`` mints after holding ``self`` and having seen ``seen``."""
        return Generation(max(self.counter, seen.counter) + 1, origin)

    def __str__(self) -> str:
        return f"{self.counter}:{self.origin}" if self.origin else str(self.counter)


INITIAL = Generation()


@dataclass(frozen=True)
class Metadata:
    """What a node persists on its local disk, crash-safely.

    - ``generation``: the generation of the data this node holds.
    - ``synced_generation``: the last generation at which both nodes held the
      same data (the common point from which divergence is measured).
    - ``consistent``: False while a resync into this node is incomplete, or
      after its divergent data was quarantined and before it is resynced.
    - ``last_state``: the last data role it held (alone, primary, secondary,
      resync); ``wait`` and ``stop`` do not overwrite it. A node that restarts
      without seeing its peer may serve only if this is ``alone``.
    - ``peer_generation``: the last generation it saw at the peer.
    """

    generation: Generation = INITIAL
    synced_generation: Generation = INITIAL
    consistent: bool = True
    last_state: State | None = None
    peer_generation: Generation = INITIAL

    def evolve(self, **changes: Any) -> Metadata:
        return evolve(self, **changes)

    @property
    def fresh(self) -> bool:
        """Never served nor synced (see ``fresh``)."""
        return fresh(self)


class DataView(Protocol):
    """What both a node's metadata and its peer's status say of their data."""

    @property
    def generation(self) -> Generation: ...
    @property
    def synced_generation(self) -> Generation: ...
    @property
    def consistent(self) -> bool: ...
    @property
    def last_state(self) -> State | None: ...


def fresh(data: DataView) -> bool:
    """The metadata of a node that never served nor synced (a first start): no
    generation, no common point, no data role, consistent. Its replicated
    directories hold whatever was there before the cluster was installed (the
    ``has_data`` fact), part of no generation. Once a node serves (it mints) or
    is resynchronised (it records ``resync`` and marks itself not consistent)
    it is never fresh again: generations never decrease."""
    return (
        data.generation.initial
        and data.synced_generation.initial
        and data.last_state is None
        and data.consistent
    )


View = tuple[int, int]
"""A node's announced view: (epoch, counter). ``epoch`` is larger than any
earlier run of the node used (the runtime gives its incarnation); ``counter``
starts at 0 at every start and grows by one whenever what the node announces
(state, sub-status, hand-over, generations, consistency, last data role)
changes. Only equality is ever asked of two views."""

NO_VIEW: View = (0, 0)


@dataclass(frozen=True)
class PeerStatus:
    """What a node announces in every heartbeat, and learns of its peer.

    ``view`` numbers what the sender announces; ``peer_view`` echoes the newest
    view of the receiver that the sender had heard when it sent this status
    (``NO_VIEW`` before any): a status that echoes the receiver's current view
    was decided knowing what the receiver announces now."""

    node: str
    state: State
    substatus: SubStatus
    generation: Generation
    synced_generation: Generation
    consistent: bool
    fingerprint: str
    handover: bool = False
    last_state: State | None = None
    reason: str = ""
    view: View = NO_VIEW
    peer_view: View = NO_VIEW
    # while its metadata is fresh (a first start): the sender's replicated
    # directories held something when its daemon started (always False once
    # the metadata is not fresh: the data is then a generation's)
    has_data: bool = False
    # the sender could run the application if it took over: no checker that
    # counts for a takeover (class standby or both) is down, and its restart
    # budget is not spent (a node that handed over after spending it is not
    # handed the service back within its window)
    can_serve: bool = True

    @property
    def serving(self) -> bool:
        return self.state.serving

    @property
    def fresh(self) -> bool:
        """The sender never served nor synced (see ``fresh``)."""
        return fresh(self)


CHECKER_CLASSES = ("serving", "standby", "both")
"""Where a checker counts (SafeKit's prim/second/both): on the serving node only
(it checks the node's own application), on the node that does not serve only
(it checks what a takeover would need), or on both."""

CHECKER_ACTIONS = ("restart", "failover", "stop")
"""What a checker's failure on the serving node leads to: restart the
application locally within the restart budget (then hand over), hand over to
the peer at once, or stop the module on this node."""


@dataclass(frozen=True)
class CheckerPolicy:
    """What the core needs to know of one checker: its name, class and action."""

    name: str
    when: str = "serving"
    action: str = "restart"

    def __post_init__(self) -> None:
        if self.when not in CHECKER_CLASSES:
            raise ValueError(f"checker {self.name}: when must be one of {CHECKER_CLASSES}")
        if self.action not in CHECKER_ACTIONS:
            raise ValueError(f"checker {self.name}: action must be one of {CHECKER_ACTIONS}")


LEASE_RENEW = 2.0
"""Seconds between a lease's renewals (fixed: the configuration has no key for it)."""
LEASE_MARGIN = 1.0
"""Seconds a node stops serving before its lease can run out (fixed likewise)."""


@dataclass(frozen=True)
class Settings:
    """The part of the configuration the core decides with (times in seconds).

    ``links`` names every heartbeat link. A link is shown down after
    ``link_timeout`` of silence; the peer is lost only when every link has been
    silent for ``dead_timeout``. At start a node waits ``startup_timeout`` to
    discover its peer before deciding alone. With ``arbitrator`` true a node
    serves only while it holds a grant: it requests one for ``lease_ttl``,
    renews it every ``lease_renew`` and stops serving ``lease_margin`` before
    the lease can expire at the arbitrator. ``arbitrator_records``: the
    arbitrator records the newest generation it granted and grants only to a
    node holding it (a witness, etcd), so a node that decides without its peer
    may serve on its grant; a ping witness records nothing (false).
    """

    name: str
    peer: str
    links: tuple[str, ...]
    fingerprint: str = ""
    heartbeat_interval: float = 0.5
    link_timeout: float = 1.0
    dead_timeout: float = 2.0
    startup_timeout: float = 2.0
    arbitrator: bool = False
    arbitrator_records: bool = True
    lease_ttl: float = 6.0
    lease_renew: float = LEASE_RENEW
    lease_margin: float = LEASE_MARGIN
    failback: str = "none"
    preferred: str | None = None
    split_brain_winner: str | None = None
    checkers: tuple[CheckerPolicy, ...] = field(default=())
    # the restart budget (SafeKit's maxloop/maxtime): at most ``max_restarts``
    # local restarts of the application (after a failed start or a checker
    # with action ``restart``) within ``restart_window`` seconds; past it the
    # node hands over, or retries where it is after a pause that doubles from
    # ``retry_pause`` up to ``retry_pause_max``
    max_restarts: int = 3
    restart_window: float = 86400.0
    retry_pause: float = 5.0
    retry_pause_max: float = 300.0
    # replicated directories are configured (the same on both nodes: the
    # fingerprint covers them). Without any, the core emits no data effect: a
    # resync or a quarantine of nothing completes in the same step
    replicated: bool = True
    # a failed data action (a resync attempt as source, a quarantine, the
    # set-aside before a full resync) is tried again after a pause that doubles
    # from ``data_retry_pause`` up to ``data_retry_pause_max``
    data_retry_pause: float = 0.2
    data_retry_pause_max: float = 5.0
    # the epoch of this run's views (see ``View``): larger than any earlier run's
    epoch: int = 0
    # learned at boot, fixed for the run: this node's replicated directories held
    # something when its daemon started (announced as ``has_data`` while the
    # metadata is fresh; decides who serves at a first start)
    local_data: bool = False

    def checker(self, name: str) -> CheckerPolicy:
        """The policy of checker ``name``; a name the settings do not list
        gets the configuration's defaults (class serving, action restart)."""
        for policy in self.checkers:
            if policy.name == name:
                return policy
        return CheckerPolicy(name)

    def __post_init__(self) -> None:
        if self.failback not in ("none", "preferred", "last-primary"):
            raise ValueError(
                f"failback must be none, preferred or last-primary, not {self.failback!r}"
            )
        if self.failback == "preferred" and self.preferred not in (self.name, self.peer):
            raise ValueError("failback 'preferred' needs preferred set to one of the two nodes")
        if self.name == self.peer:
            raise ValueError("a node cannot be its own peer")
        if not self.links:
            raise ValueError("at least one link is needed")
