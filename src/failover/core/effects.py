"""Outputs of the core: what the runtime must do, in order.

The runtime executes each effect with a deadline and reports the outcome back
as an event (``AppStarted``, ``ResyncDone``...). Effects carry data, never
behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from failover.core.state import Generation, Metadata, PeerStatus


@dataclass(frozen=True)
class Effect:
    name: ClassVar[str] = ""


@dataclass(frozen=True)
class SendHeartbeat(Effect):
    """Send ``status`` on every link."""

    name: ClassVar[str] = "send_heartbeat"
    status: PeerStatus


@dataclass(frozen=True)
class PersistMetadata(Effect):
    """Write ``metadata`` crash-safely before executing the effects after it."""

    name: ClassVar[str] = "persist"
    metadata: Metadata


@dataclass(frozen=True)
class StartApp(Effect):
    """Acquire the virtual IP (and announce it), then run the start script.
    Outcome: ``AppStarted`` or ``AppFailed``."""

    name: ClassVar[str] = "start_app"


@dataclass(frozen=True)
class StopApp(Effect):
    """Stop the application and hand its resources back, in this order: run the
    stop script; then, while this node replicates, wait until every write made
    so far is on the peer (sent and acknowledged) and turn the replicated
    directories read-only; then release the virtual IP. Outcome: ``AppStopped``,
    only once all of it is done (the node stays transient until then, so its
    peer does not start the application meanwhile)."""

    name: ClassVar[str] = "stop_app"


@dataclass(frozen=True)
class RestartApp(Effect):
    """Restart the application where it is, keeping the virtual IP and the
    replication: run the stop script, then the start script. Outcome:
    ``AppStarted`` or ``AppFailed``, as for ``StartApp``."""

    name: ClassVar[str] = "restart_app"


@dataclass(frozen=True)
class StartReplication(Effect):
    """Replicate every write synchronously to the peer."""

    name: ClassVar[str] = "start_replication"


@dataclass(frozen=True)
class StopReplication(Effect):
    name: ClassVar[str] = "stop_replication"


@dataclass(frozen=True)
class FenceWrites(Effect):
    """What becomes of an fsync the peer did not acknowledge (the session broke,
    or there is none): held while ``fenced`` (never acknowledged to the
    application meanwhile); failed (EIO) whenever the node does not
    ``serve``; else it returns once durable here. The node's rule, emitted
    whenever either changes, after the metadata of the same step is persisted."""

    name: ClassVar[str] = "fence_writes"
    fenced: bool
    serving: bool = True


@dataclass(frozen=True)
class StartTracking(Effect):
    """Record every change made from now on (the peer is out of date)."""

    name: ClassVar[str] = "start_tracking"
    since: Generation


@dataclass(frozen=True)
class StopTracking(Effect):
    name: ClassVar[str] = "stop_tracking"


@dataclass(frozen=True)
class StartResync(Effect):
    """Run a resync: as ``source`` send changes since ``since`` to the peer; as
    ``target`` receive them. Outcome: ``PeerResynced`` (source) or
    ``ResyncDone``/``ResyncFailed`` (target)."""

    name: ClassVar[str] = "start_resync"
    role: Literal["source", "target"]
    mode: Literal["incremental", "full"]
    since: Generation
    generation: Generation  # the source's generation when the resync starts


@dataclass(frozen=True)
class StopResync(Effect):
    name: ClassVar[str] = "stop_resync"


@dataclass(frozen=True)
class Quarantine(Effect):
    """Move every file changed here since ``since`` to the quarantine directory,
    with a manifest, before this node is resynced. Outcome: ``QuarantineDone``."""

    name: ClassVar[str] = "quarantine"
    since: Generation


@dataclass(frozen=True)
class RequestArbitration(Effect):
    """Ask the arbitrator for the lease to serve ``generation``, continuing from
    ``base`` (the generation this node holds). Outcome: ``ArbitrationGranted``
    or ``ArbitrationDenied``."""

    name: ClassVar[str] = "request_arbitration"
    generation: Generation
    base: Generation
    forced: bool = False


@dataclass(frozen=True)
class RenewArbitration(Effect):
    name: ClassVar[str] = "renew_arbitration"
    generation: Generation


@dataclass(frozen=True)
class ReleaseArbitration(Effect):
    name: ClassVar[str] = "release_arbitration"


@dataclass(frozen=True)
class LinkChanged(Effect):
    """A link went up or down (for status and the log; no decision hangs on it)."""

    name: ClassVar[str] = "link_changed"
    link: str
    up: bool


@dataclass(frozen=True)
class Refused(Effect):
    """An admin command is illegal in the current state; ``reason`` says why."""

    name: ClassVar[str] = "refused"
    command: str
    reason: str


@dataclass(frozen=True)
class TransitionRecord(Effect):
    """One record per transition, for the structured log and status history."""

    name: ClassVar[str] = "transition"
    node: str
    source: str
    event: str
    target: str
    substatus: str
    effects: tuple[str, ...]
    reason: str
    generation: str
    forced: bool = False
    reason_kind: str = field(default="", compare=False)
    """The reason's template in the table, before its values are filled in
    (``Row.reason``): a bounded name for why the row fired, where ``reason``
    is one sentence per situation. Not part of the record's identity."""
