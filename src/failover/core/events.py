"""Inputs to the core. Every event is an immutable value; ``Node.handle`` takes one.

The runtime turns what happens (a frame arrives, a timer fires, a script
exits, an operator types a command) into one of these. Outcomes of effects
come back as events too, so the core never waits on anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from failover.core.state import Generation, PeerStatus


@dataclass(frozen=True)
class Event:
    """Base class. ``kind`` is the event's name in the transition table."""

    kind: ClassVar[str] = ""
    admin: ClassVar[bool] = False


# --- admin commands -------------------------------------------------------------------


@dataclass(frozen=True)
class Start(Event):
    kind: ClassVar[str] = "start"
    admin: ClassVar[bool] = True


@dataclass(frozen=True)
class Stop(Event):
    kind: ClassVar[str] = "stop"
    admin: ClassVar[bool] = True


@dataclass(frozen=True)
class Prim(Event):
    """Serve now, overriding "freshness unknown" (recorded as forced)."""

    kind: ClassVar[str] = "prim"
    admin: ClassVar[bool] = True


@dataclass(frozen=True)
class PrimForce(Event):
    """Serve now even with data marked inconsistent (disaster recovery)."""

    kind: ClassVar[str] = "primforce"
    admin: ClassVar[bool] = True


@dataclass(frozen=True)
class Second(Event):
    """Never serve alone: wait for the peer to serve, then follow it."""

    kind: ClassVar[str] = "second"
    admin: ClassVar[bool] = True


@dataclass(frozen=True)
class Swap(Event):
    """Planned switchover: hand the service to the in-sync secondary."""

    kind: ClassVar[str] = "swap"
    admin: ClassVar[bool] = True


@dataclass(frozen=True)
class FullSync(Event):
    """Resynchronise this node from the serving peer with a full copy."""

    kind: ClassVar[str] = "fullsync"
    admin: ClassVar[bool] = True


# --- peer and links -------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatReceived(Event):
    """An authenticated heartbeat from the peer arrived on ``link``."""

    kind: ClassVar[str] = "heartbeat"
    link: str
    status: PeerStatus


@dataclass(frozen=True)
class LinkFailed(Event):
    """A transport reported ``link`` broken (socket error, serial cable pulled)."""

    kind: ClassVar[str] = "link_failed"
    link: str
    reason: str = ""


@dataclass(frozen=True)
class Timer(Event):
    """The clock reached ``Node.next_deadline()``; the core checks every deadline."""

    kind: ClassVar[str] = "timer"


# --- replication ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicationFailed(Event):
    """The synchronous replication stream to the peer broke or timed out."""

    kind: ClassVar[str] = "replication_failed"
    reason: str = ""


@dataclass(frozen=True)
class ResyncDone(Event):
    """This node, a resync target, received the whole resync: its data is now
    ``generation``, the source's generation when the source switched to
    synchronous replication. The runtime reports it only after that switch."""

    kind: ClassVar[str] = "resync_done"
    generation: Generation


@dataclass(frozen=True)
class ResyncFailed(Event):
    """A resync did not complete. On a target: this node could not apply what
    the source sent. On a source: one attempt failed (no connection, the
    session broke, the peer did not ask yet); the core decides whether and
    when to try again (``data_retry``). ``full_needed``: the source cannot
    run the incremental resync it was asked for (its change tracking does not
    start where the target's copy ends); only a full copy can be made."""

    kind: ClassVar[str] = "resync_failed"
    reason: str = ""
    full_needed: bool = False


@dataclass(frozen=True)
class PeerResynced(Event):
    """This node, a resync source, brought the peer up to ``generation`` and
    from this point on replicates every write synchronously."""

    kind: ClassVar[str] = "peer_resynced"
    generation: Generation


@dataclass(frozen=True)
class QuarantineDone(Event):
    kind: ClassVar[str] = "quarantine_done"


@dataclass(frozen=True)
class QuarantineFailed(Event):
    """Moving data aside failed (a disk error): the split brain's divergent
    changes (``Quarantine``), or a resync target's contents before a full copy
    (``StartResync`` target, full). Nothing was lost: what could not be moved is
    still in place, and nothing may be copied over it."""

    kind: ClassVar[str] = "quarantine_failed"
    reason: str = ""


# --- local resources ------------------------------------------------------------------


@dataclass(frozen=True)
class CheckerDown(Event):
    kind: ClassVar[str] = "checker_down"
    checker: str
    reason: str = ""


@dataclass(frozen=True)
class CheckerUp(Event):
    kind: ClassVar[str] = "checker_up"
    checker: str


@dataclass(frozen=True)
class AppStarted(Event):
    """The start script succeeded and the virtual IP is held."""

    kind: ClassVar[str] = "app_started"


@dataclass(frozen=True)
class AppFailed(Event):
    """The start script failed, or the application died."""

    kind: ClassVar[str] = "app_failed"
    reason: str = ""


@dataclass(frozen=True)
class AppStopped(Event):
    """The stop script finished and the virtual IP is released."""

    kind: ClassVar[str] = "app_stopped"


# --- arbitration ----------------------------------------------------------------------


@dataclass(frozen=True)
class ArbitrationGranted(Event):
    """The arbitrator granted (or renewed) the lease for ``generation``."""

    kind: ClassVar[str] = "arbitration_granted"
    generation: Generation


@dataclass(frozen=True)
class ArbitrationDenied(Event):
    kind: ClassVar[str] = "arbitration_denied"
    reason: str = ""


@dataclass(frozen=True)
class ArbitrationLost(Event):
    """The runtime learned the lease is gone (the arbitrator said so)."""

    kind: ClassVar[str] = "arbitration_lost"
    reason: str = ""


ADMIN_COMMANDS: dict[str, type[Event]] = {
    cls.kind: cls for cls in (Start, Stop, Prim, PrimForce, Second, Swap, FullSync)
}
"""Operator commands by name, as the CLI, the API and the simulator spell them."""

EVENT_TYPES: tuple[type[Event], ...] = (
    Start,
    Stop,
    Prim,
    PrimForce,
    Second,
    Swap,
    FullSync,
    HeartbeatReceived,
    LinkFailed,
    Timer,
    ReplicationFailed,
    ResyncDone,
    ResyncFailed,
    PeerResynced,
    QuarantineDone,
    QuarantineFailed,
    CheckerDown,
    CheckerUp,
    AppStarted,
    AppFailed,
    AppStopped,
    ArbitrationGranted,
    ArbitrationDenied,
    ArbitrationLost,
)
