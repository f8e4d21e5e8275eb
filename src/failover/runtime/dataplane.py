"""The data plane: the replicated directories of one node, driven by the core's effects.

An adapter, like ``runtime/links.py``: each effect is one call on the mechanism in
``replication/`` (which knows nothing of the core's events), each outcome is reported
as the core's event, and the task group their tasks run in is owned here. ``serve``,
``unserve`` and ``Quarantine``: ``Directories``; ``FenceWrites``: ``Sending`` (the
relay's fence), and no session from the peer is taken while the core says this node
serves; ``Start``/``StopTracking``: the ``Tracker``; ``Start``/``StopReplication``:
``Sending``; the peer's sessions: ``Receiving``; ``StartResync`` as target:
``ResyncWait``, as source: ``SourceAttempts``; ``verify``: ``PeerVerifier``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation
from failover.replication.channel import SessionIdentity
from failover.replication.directories import Directories
from failover.replication.receiving import Receiving
from failover.replication.relay import Relay
from failover.replication.resync_attempt import AttemptOutcome, SourceAttempts
from failover.replication.resync_check import CheckCache
from failover.replication.resync_target import ResyncWait
from failover.replication.sending import Sending
from failover.replication.settings import DataPlaneSettings
from failover.replication.tracking import Tracker
from failover.replication.verify_peer import PeerVerifier

__all__ = ["DataPlane", "DataPlaneSettings", "Report"]  # the settings are built by the daemon
log = structlog.get_logger("failover.dataplane")

Report = Callable[[ev.Event], Coroutine[Any, Any, None]]


class DataPlane:
    """``run`` mounts the directories read-only and takes the peer's sessions until cancelled.
    ``generation``: this node's data generation; ``synced_generation``: the last both held."""

    def __init__(
        self,
        settings: DataPlaneSettings,
        report: Report,
        generation: Callable[[], str],
        synced_generation: Callable[[], str] | None = None,
    ) -> None:
        s = self.settings = settings
        self.report, self.generation = report, generation
        self.tracker: Tracker | None = None
        self.serving = False  # mounted read-write for the application
        self.core_serving = False  # the core says this node serves: no session taken
        self._group: TaskGroup | None = None
        self.directories = Directories(s.roots, CheckCache())
        self.target: ResyncWait[Generation] = ResyncWait(
            self.directories,
            base=synced_generation or generation,
            set_aside=lambda: self.directories.set_aside(s.quarantine_dir, generation(), s.peer),
            on_done=lambda g: report(ev.ResyncDone(g)),
            on_failed=lambda why: report(ev.ResyncFailed(why)),
            on_set_aside_failed=lambda why: report(ev.QuarantineFailed(why)),
        )
        self.receiving = Receiving(
            self.directories,
            self.target,
            identity=self._identity,
            zone_size=s.zone_size,
            timeout=s.channel.timeout,
            accepting=lambda: not self.core_serving and not self.serving,
        )
        self.sending = Sending(
            identity=self._identity,
            channel=s.channel,
            connect=lambda: s.transport.connect(s.remote, s.channel.timeout, tls=s.tls_client),
            peer=s.peer,
            on_broken=lambda why: self._soon(ev.ReplicationFailed(why)),
        )
        self.verifier = PeerVerifier(self.sending, self.directories, s.zone_size)
        self.sourcing = SourceAttempts(
            self.directories,
            self.sending,
            bandwidth=s.bandwidth,
            on_late_break=lambda why: self._soon(ev.ReplicationFailed(why)),
            on_resynced=self.verifier.forget,
        )
        self.start_replication, self.stop_replication = self.sending.start, self.sending.stop
        self.flush_replication, self.verify = self.sending.flush, self.verifier.verify
        self.set_bandwidth = self.sourcing.set_bandwidth

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        tracker = self.tracker = await anyio.to_thread.run_sync(
            lambda: Tracker(s.state_dir, zone_size=s.zone_size)
        )
        relay = Relay(tracker)
        try:
            await self.directories.mount(None)
            async with (
                s.transport.listen(s.local, tls=s.tls_server) as listener,
                anyio.create_task_group() as tg,
            ):
                self._group = tg
                self.sending.attach(relay, tg)
                self.target.attach(tracker, tg)
                tg.start_soon(self.receiving.accept, listener, tg)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                relay.sender = None
                await anyio.to_thread.run_sync(self.directories.unmount)
                tracker.close()

    def _soon(self, event: ev.Event) -> None:
        assert self._group is not None
        self._group.start_soon(self.report, event)

    async def serve(self) -> None:
        """Read-write for the application, never while a set-aside moves files; and
        mounted again when the watchdog's fence aborted the mirrors while this node
        served (its application is started again on live mirrors, never dead ones)."""
        if not self.serving or not await anyio.to_thread.run_sync(self.directories.answering):
            self.receiving.stop()
            async with self.target.settled():
                await self.directories.remount(self.sending.relay)
            self.serving = True

    async def unserve(self) -> None:
        """Read-only again (after the application stopped); a held fsync fails."""
        if self.serving:
            if self.sending.relay is not None:
                self.sending.relay.fail_held()
            await self.sending.stop()
            await self.directories.remount(None)
            self.serving = False

    def fence_writes(self, fenced: bool, *, serving: bool = True) -> None:
        self.core_serving = serving
        if serving:
            self.receiving.stop()  # the peer's session ends once this node serves
        self.sending.fence(fenced, serving)

    def start_tracking(self, since: str) -> None:
        assert self.tracker is not None
        self.tracker.epoch_start(since)

    def stop_tracking(self) -> None:
        assert self.tracker is not None
        self.tracker.clear()

    async def quarantine(self, effect: fx.Quarantine) -> ev.Event:
        assert self.tracker is not None
        s = self.settings
        failed = await self.directories.quarantine_changes(
            self.tracker, s.quarantine_dir, self.generation(), s.peer, since=str(effect.since)
        )
        if failed is None:
            return ev.QuarantineDone()
        name, why = failed[0], str(failed[1])
        log.error("quarantine failed: data left in place", directory=name, error=why)
        return ev.QuarantineFailed(f"could not quarantine {name}: {why}")

    def start_resync(self, effect: fx.StartResync) -> None:
        assert self._group is not None and self.tracker is not None
        if effect.role == "target":
            self.receiving.stop()  # a session open is dropped: the source reconnects
            self.target.expect(effect.mode, effect.generation)
            return
        self.target.stop()  # this node is the source now: it waits for none

        async def outcome(end: AttemptOutcome) -> None:
            failed = ev.ResyncFailed(end.reason, full_needed=end.full_needed)
            await self.report(ev.PeerResynced(effect.generation) if end.done else failed)
            if end.done and end.reason:  # the session broke after the target applied END
                await self.report(ev.ReplicationFailed(end.reason))

        self.sourcing.start(self._group, effect.mode, str(effect.generation), self.tracker, outcome)

    def stop_resync(self) -> None:
        self.target.stop()
        self.sourcing.stop()

    def _identity(self) -> SessionIdentity:
        s = self.settings
        return SessionIdentity(s.cluster, s.key, s.node, s.peer, self.generation())

    def status(self) -> dict[str, Any]:
        return {
            "directories": {name: str(path) for name, path in self.settings.roots.items()},
            "mode": "read-write" if self.serving else "read-only",
            **self.sending.status(),
            **self.receiving.status(),
            **self.verifier.status(),
            **self.target.status(),
            **self.sourcing.status(self.tracker),
        }
