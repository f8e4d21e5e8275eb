"""The data plane: the replicated directories of one node, driven by the core's effects.

The core decides; this module executes what it decided about data, and
reports outcomes back as events, exactly like the action executor does for
scripts and the virtual IP. It is an adapter: it maps each effect to a call on
the mechanism in ``replication/`` (plain classes that know nothing of the
core's events), reports each outcome as the core's event, and owns the anyio
task group their tasks run in:

- the directories (``Directories``): served through a FUSE ``Mirror`` each, for
  as long as the daemon runs: read-only while the node does not serve,
  read-write with the ``Relay`` as listener while it serves
  (``serve``/``unserve``, around the application's start and stop);
- ``FenceWrites``: the relay's write fence, and while the core says this node
  serves, no session from the peer is taken;
- ``StartTracking``/``StopTracking``: the ``Tracker`` starts an epoch or forgets
  what the peer now has;
- ``StartReplication``/``StopReplication``: the session to the peer
  (``Sending``); a break is reported as ``ReplicationFailed``;
- ``Quarantine``: the split brain's tracked changes move aside
  (``Directories.quarantine_changes``): ``QuarantineDone``, or
  ``QuarantineFailed`` (a disk error: what was not moved stays in place);
- ``StartResync`` (target): this node answers the source's session with its
  request (``Receiving``); a full one first sets everything aside
  (``Directories.set_aside``; a failure is ``QuarantineFailed`` and no source
  is answered). END applied is ``ResyncDone``; a change that failed here
  during it is ``ResyncFailed``;
- ``StartResync`` (source): one attempt in the effect's mode
  (``SourceAttempts``), reported as ``PeerResynced`` or ``ResyncFailed``
  (``full_needed`` when the changes tracked here do not start where the
  peer's copy ends). Whether and when to try again is the core's
  (``data_retry``).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from pydantic import BaseModel

from failover.core import effects as fx
from failover.core import events as ev
from failover.errors import UsageError
from failover.replication.apply import ApplyError
from failover.replication.channel import (
    ChannelSettings,
    SessionIdentity,
)
from failover.replication.directories import Directories
from failover.replication.receiving import Receiving
from failover.replication.relay import Relay
from failover.replication.resync import (
    CheckCache,
)
from failover.replication.resync_attempt import SourceAttempts
from failover.replication.sending import Sending
from failover.replication.tracking import Tracker
from failover.replication.verify_peer import verify_peer
from failover.transport import ReplicationTransport

log = structlog.get_logger("failover.dataplane")

Report = Callable[[ev.Event], Awaitable[None]]


@dataclass(frozen=True)
class DataPlaneSettings:
    """What the data plane needs of the configuration, already validated."""

    cluster: str
    node: str
    peer: str
    key: bytes | None
    roots: dict[str, Path]  # replicated directory name -> its path
    state_dir: Path  # where the tracker keeps its log and checkpoints
    transport: ReplicationTransport
    local: BaseModel  # this node's replication endpoint
    remote: BaseModel  # the peer's
    quarantine_dir: Path  # where a split brain's losing changes are moved
    channel: ChannelSettings = field(default_factory=ChannelSettings)
    zone_size: int = 64 * 1024
    bandwidth: int = 0  # resync bytes/s, 0 = unlimited
    tls_server: ssl.SSLContext | None = None  # mutual TLS on the stream (both or neither)
    tls_client: ssl.SSLContext | None = None


class DataPlane:
    """The replicated directories of one node (see the module docstring).

    ``run`` mounts every directory read-only and listens for the peer's
    sessions until cancelled, then unmounts. ``generation`` gives the node's
    current data generation (shown to the peer in each session's handshake);
    ``synced_generation`` the last one both nodes held (a resync request's base).
    """

    def __init__(
        self,
        settings: DataPlaneSettings,
        report: Report,
        generation: Callable[[], str],
        synced_generation: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.report = report
        self.generation = generation
        self.synced_generation = synced_generation or generation
        self.tracker: Tracker | None = None
        self.serving = False
        self._relay: Relay | None = None
        self._group: TaskGroup | None = None
        self._resyncing: anyio.CancelScope | None = None
        self._target: fx.StartResync | None = None  # a resync this node waits to receive
        # a full resync whose target data is being quarantined before it may start
        self._setting_aside: fx.StartResync | None = None
        # one set-aside of the directories at a time; serve() waits for one in progress
        self._set_aside_lock = anyio.Lock()
        self._fence_state = (False, True)  # the core's FenceWrites (fenced, serving)
        # the core's decision (FenceWrites.serving): a node that serves takes no
        # session from its peer; a daemon starts stopped
        self.core_serving = False
        self.resyncs_received = 0
        self._checks = CheckCache()  # digests of this node's suspect set for its requests
        self.directories = Directories(settings.roots, self._checks)
        self.receiving = Receiving(
            self.directories,
            self._checks,
            identity=self._identity,
            zone_size=settings.zone_size,
            timeout=settings.channel.timeout,
            accepting=lambda: self.accepting,
            wanted=lambda: None if self._target is None else self._target.mode == "full",
            tracker=lambda: self.tracker,
            base=self.synced_generation,
            on_resync_done=self._target_done,
            on_apply_failed=self._apply_failed,
        )
        self.sending = Sending(
            identity=self._identity,
            channel=settings.channel,
            connect=lambda: settings.transport.connect(
                settings.remote, settings.channel.timeout, tls=settings.tls_client
            ),
            peer=settings.peer,
            on_broken=self._replication_broke,
        )
        self.sourcing = SourceAttempts(
            self.directories,
            self.sending,
            bandwidth=settings.bandwidth,
            on_late_break=self._replication_broke,
        )
        self.last_verify: dict[str, Any] | None = None
        self.resync_attempts = 0  # failed attempts to resync the peer (each reported)

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        self.tracker = await anyio.to_thread.run_sync(
            lambda: Tracker(s.state_dir, zone_size=s.zone_size)
        )
        self._relay = Relay(self.tracker)
        self._relay.set_fenced(*self._fence_state)
        try:
            await self.directories.mount(None)
            async with (
                s.transport.listen(s.local, tls=s.tls_server) as listener,
                anyio.create_task_group() as tg,
            ):
                self._group = tg
                self.sending.attach(self._relay, tg)
                tg.start_soon(self.receiving.accept, listener, tg)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                self._relay.sender = None
                await anyio.to_thread.run_sync(self.directories.unmount)
                self.tracker.close()

    # -- serving ----------------------------------------------------------------------------

    async def serve(self) -> None:
        """Remount the directories read-write with the replication listeners
        (before the application starts)."""
        if self.serving:
            return
        self.receiving.stop()
        # a full resync's set-aside stopped by the core still moves files in its
        # thread: the application never gets the directories before it ends
        async with self._set_aside_lock:
            await self.directories.remount(self._relay)
        self.serving = True

    async def flush_replication(self) -> str | None:
        """Wait until the peer acknowledged every write replicated so far (the
        hand-over: what the stop script wrote must be on the peer before it may
        serve). None when done or when nothing replicates; else why not."""
        return await self.sending.flush()

    async def unserve(self) -> None:
        """Back to the read-only view (after the application stopped). An fsync
        still held by the write fence fails with EIO: it was never acknowledged."""
        if not self.serving:
            return
        if self._relay is not None:
            self._relay.fail_held()
        await self.stop_replication()
        await self.directories.remount(None)
        self.serving = False

    @property
    def accepting(self) -> bool:
        """Whether a session from the peer may be received: never while the core
        says this node serves, nor while the directories are mounted read-write
        for the application (they are until its stop ends)."""
        return not self.core_serving and not self.serving

    # -- the write fence --------------------------------------------------------------------

    def fence_writes(self, fenced: bool, *, serving: bool = True) -> None:
        """The core's ``FenceWrites``: hold (``fenced``), let go, or fail (not
        ``serving``) every fsync the peer did not acknowledge; and while
        ``serving``, refuse the peer's sessions."""
        self._fence_state = (fenced, serving)
        self.core_serving = serving
        if serving:
            self.receiving.stop()  # the peer's session ends once this node serves
        if self._relay is not None:
            self._relay.set_fenced(fenced, serving)
        log.info("write fence", fenced=fenced, serving=serving)

    # -- tracking ---------------------------------------------------------------------------

    def start_tracking(self, since: str) -> None:
        assert self.tracker is not None
        self.tracker.epoch_start(since)

    def stop_tracking(self) -> None:
        assert self.tracker is not None
        self.tracker.clear()

    # -- split brain ------------------------------------------------------------------------

    async def quarantine(self, effect: fx.Quarantine) -> ev.Event:
        """Move this node's divergent changes aside: ``QuarantineDone`` once every
        root is done, ``QuarantineFailed`` on a disk error (nothing is lost; what
        was not moved stays in place, and the core decides what follows)."""
        assert self.tracker is not None
        s = self.settings
        failed = await self.directories.quarantine_changes(
            self.tracker, s.quarantine_dir, self.generation(), s.peer, since=str(effect.since)
        )
        if failed is not None:
            name, exc = failed
            log.error("quarantine failed: data left in place", directory=name, error=str(exc))
            return ev.QuarantineFailed(f"could not quarantine {name}: {exc}")
        return ev.QuarantineDone()

    # -- the sending side -------------------------------------------------------------------

    async def start_replication(self) -> None:
        """Open a session to the peer's receiver and replicate every change from
        now on. A failure to connect is reported as ``ReplicationFailed``."""
        await self.sending.start()

    async def _report_event(self, event: ev.Event) -> None:
        await self.report(event)

    def _replication_broke(self, reason: str) -> None:
        """The replication session broke (or a resync's, after its END)."""
        assert self._group is not None
        self._group.start_soon(self._report_failure, reason)

    async def _report_failure(self, reason: str) -> None:
        await self.report(ev.ReplicationFailed(reason))

    async def stop_replication(self) -> None:
        await self.sending.stop()

    # -- the receiving side -----------------------------------------------------------------

    async def _apply_failed(self, peer: str, exc: ApplyError) -> None:
        """A change from ``peer`` could not be made here: the session has ended (the
        source sees it break and retries). During a resync this node's copy is not
        what the plan assumed: reported as ``ResyncFailed``, the core decides what
        follows (the table asks for a full resync)."""
        log.error(
            "replication session from the peer ended: a change failed here",
            peer=peer,
            error=str(exc),
        )
        if self._target is not None:
            await self.report(ev.ResyncFailed(f"a change from {peer} failed here: {exc}"))

    def _target_done(self) -> None:
        """``END`` of a resync applied (in the receiver's apply thread)."""
        target, self._target = self._target, None
        self.resyncs_received += 1
        if target is None:
            log.warning("a resync ended that this node did not wait for")
            return
        anyio.from_thread.run(self._report_event, ev.ResyncDone(target.generation))

    @property
    def resync_ready(self) -> bool:
        """This node waits for a resync and answers the source's session (a full
        one once its data is set aside)."""
        return self._target is not None

    # -- resync -----------------------------------------------------------------------------

    def start_resync(self, effect: fx.StartResync) -> None:
        """As target: wait for the source's session (its WELCOME carries our
        request; a session already open is dropped so the source reconnects).
        As source: run the resync in the background, then keep its session as
        the synchronous replication. The outcome is reported when it ends."""
        assert self._group is not None
        if effect.role == "target":
            self._checks.forget()  # digested before: the copy may have changed since
            self.receiving.stop()
            if effect.mode == "full":
                # nothing is received before what the copy overwrites is set aside
                self._target, self._setting_aside = None, effect
                self._group.start_soon(self._set_aside_then_receive, effect)
            else:  # replaces any full one still being, or held from being, set aside
                self._target, self._setting_aside = effect, None
            return
        self.stop_resync()
        scope = anyio.CancelScope()
        self._resyncing = scope
        self._group.start_soon(self._run_source, effect, scope)

    async def _set_aside_then_receive(self, effect: fx.StartResync) -> None:
        """Quarantine every directory's contents, then wait for the source's
        session as the target of ``effect`` (unless the core stopped or replaced
        this resync meanwhile)."""
        async with self._set_aside_lock:  # an earlier resync's may still be moving
            if self._setting_aside is effect:
                await self._set_aside(effect)

    async def _set_aside(self, effect: fx.StartResync) -> None:
        s = self.settings
        failed = await self.directories.set_aside(s.quarantine_dir, self.generation(), s.peer)
        if self._setting_aside is not effect:
            return  # the core stopped or replaced this resync meanwhile
        self._setting_aside = None
        if failed is not None:
            # never copy over data that was not set aside: this resync is not
            # answered; the core decides when to start it again
            name, exc = failed
            log.error("full resync held: data left in place", directory=name, error=str(exc))
            await self.report(
                ev.QuarantineFailed(f"could not quarantine {name} before a full resync: {exc}")
            )
        else:
            self._target = effect

    def stop_resync(self) -> None:
        self._target = None
        self._setting_aside = None
        if self._resyncing is not None:
            self._resyncing.cancel()
            self._resyncing = None
        self.sourcing.cancel()

    async def _run_source(self, effect: fx.StartResync, scope: anyio.CancelScope) -> None:
        """One attempt to resync the peer; its outcomes are reported unless the
        core stopped it meanwhile (``StopResync``, or an effect that replaces the
        session). An attempt that cannot connect, whose peer does not ask yet, or
        whose session breaks is reported as ``ResyncFailed``: the core decides
        whether and when to try again (the target applies idempotently)."""
        outcomes: list[ev.Event] = []
        with scope:
            outcomes = await self._resync_as_source(effect)
        if scope.cancel_called:
            return
        for outcome in outcomes:
            if isinstance(outcome, ev.ResyncFailed):
                self.resync_attempts += 1
                log.warning("resync attempt failed", problem=outcome.reason)
            await self.report(outcome)

    async def _resync_as_source(self, effect: fx.StartResync) -> list[ev.Event]:
        """One resync attempt: the outcomes to report, in order."""
        assert self._relay is not None and self.tracker is not None
        outcome = await self.sourcing.attempt(
            effect.mode, str(effect.generation), self.tracker, self._relay
        )
        if not outcome.done:
            return [ev.ResyncFailed(outcome.reason, full_needed=outcome.full_needed)]
        self.last_verify = None  # the peer was just made equal: an older verdict is moot
        outcomes: list[ev.Event] = [ev.PeerResynced(effect.generation)]
        if outcome.reason:  # the session broke after the target applied END
            outcomes.append(ev.ReplicationFailed(outcome.reason))
        return outcomes

    def _identity(self) -> SessionIdentity:
        s = self.settings
        return SessionIdentity(
            cluster=s.cluster, key=s.key, local=s.node, peer=s.peer, generation=self.generation()
        )

    # -- status -----------------------------------------------------------------------------

    # -- verify -----------------------------------------------------------------------------

    async def verify(self) -> dict[str, Any]:
        """Compare both copies by digest (``replication/verify_peer.py``); the
        verdict is kept for ``status`` until a clean verify or a resync.
        Raises ``UsageError`` when this node does not replicate to its peer.
        """
        relay = self._relay
        sender = relay.sender if relay is not None else None
        if sender is None or sender.broken is not None:
            raise UsageError(
                "verify needs a replicating primary: this node sends nothing to its peer"
            )
        s = self.settings
        report, differences = await verify_peer(sender, self.directories, s.zone_size, s.peer)
        self.last_verify = {
            "at": report["at"],
            "in_sync": report["in_sync"],
            "differences": differences,
        }
        return report

    def set_bandwidth(self, rate: int) -> None:
        """The resync bandwidth limit, bytes/s (0: none), from now on, also mid-resync."""
        self.sourcing.set_bandwidth(rate)

    def status(self) -> dict[str, Any]:
        relay = self._relay
        sender = relay.sender if relay is not None else None
        sender_status = None if sender is None else sender.status()
        source = self.sourcing.source
        resync = source.status() if source is not None else self.sourcing.last_status
        tracker = self.tracker
        changes = tracker.changes() if tracker is not None else None
        return {
            "directories": {name: str(path) for name, path in self.settings.roots.items()},
            "mode": "read-write" if self.serving else "read-only",
            "replicating": sender is not None and sender.broken is None,
            # the session runs but its idle probes go unanswered: a cut, seen before
            # the replication timeout breaks the session (docs/replication.md)
            "channel_problem": None if sender_status is None else sender_status.quiet,
            "writes_fenced": relay is not None and relay.fenced,
            "writes_held": 0 if relay is None else relay.held,
            "ack": str(self.settings.channel.ack_level),
            "sender": None if sender_status is None else asdict(sender_status),
            "sessions_received": self.receiving.sessions_received,
            "handshakes_refused": self.receiving.handshakes_refused,
            "resync": None if resync is None else asdict(resync),
            "verified": self.last_verify,
            "resync_wanted": self._target is not None or self._setting_aside is not None,
            "resync_failures": self.resync_attempts,
            "resyncs_received": self.resyncs_received,
            "bandwidth": self.sourcing.bandwidth,
            "tracked": None
            if changes is None
            else {
                "since": tracker.since if tracker is not None else None,
                "files": len(changes.files),
                "names": len(changes.names),
                "meta": len(changes.meta),
            },
        }
