"""The source side of a resync: one attempt after another, as the data plane asks.

An attempt connects to the peer's receiver, checks that the peer asks for a
resync that can start here (its request's base is where this node's tracked
changes start, for an incremental one), narrows the peer's suspect zones to
those that differ, then, under every directory's order lock, makes the plan
(``ResyncPlan``), queues its BEGIN and hands the session to the relay, so every
later live op streams inside the resync. ``ResyncSource`` sends the plan in a
worker thread. Once the peer applied END, the session goes on as the
synchronous replication.

``start`` runs one attempt in the background and hands its outcome
(``AttemptOutcome``) to a callback unless ``stop`` ended it first; failed
attempts are counted, and a done one voids the last verify's verdict. Mechanism
only: whether and when to try again, and in which mode, is the core's
(``runtime/dataplane.py`` reports the outcome as the core's events).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from failover.errors import PeerProtocolError, TransportError, UsageError
from failover.replication.directories import Directories
from failover.replication.relay import Relay
from failover.replication.resync import ResyncPlan, ResyncSource, ResyncStatus, narrow
from failover.replication.resync_wire import ResyncRequest
from failover.replication.sending import Sending
from failover.replication.tracking import Tracker

log = structlog.get_logger("failover.dataplane")


@dataclass(frozen=True)
class AttemptOutcome:
    """How one attempt ended. ``done``: the peer applied END (``reason``, if any,
    is why its session broke right after). Not ``done``: why not, and whether
    the tracked changes here cannot serve an incremental resync (``full_needed``)."""

    done: bool
    reason: str = ""
    full_needed: bool = False


class SourceAttempts:
    """The resync attempts of this node as source, one at a time. ``source`` is
    the running one's ``ResyncSource`` (None between attempts), ``last_status``
    the status of the last one that ran. An attempt ends the replication session
    (``sending``) first, and its own session runs as ``sending``'s; a break of
    it after END goes to ``on_late_break``. ``on_resynced`` is called when the
    peer applied an attempt's END."""

    def __init__(
        self,
        directories: Directories,
        sending: Sending,
        *,
        bandwidth: int,
        on_late_break: Callable[[str], None],
        on_resynced: Callable[[], None] = lambda: None,
    ) -> None:
        self.directories = directories
        self.sending = sending
        self.peer = sending.peer
        self.bandwidth = bandwidth
        self.on_late_break = on_late_break
        self.on_resynced = on_resynced
        self.source: ResyncSource | None = None
        self.last_status: ResyncStatus | None = None
        self.failures = 0  # attempts that failed (each handed to its callback)
        self._running: anyio.CancelScope | None = None

    def start(
        self,
        group: TaskGroup,
        mode: str,
        generation: str,
        tracker: Tracker,
        outcome: Callable[[AttemptOutcome], Awaitable[None]],
    ) -> None:
        """``attempt`` in ``group`` through ``sending``'s relay, after stopping the one
        running; its outcome goes to ``outcome`` unless ``stop`` ended it first."""
        self.stop()
        relay = self.sending.relay
        assert relay is not None, "an attempt before the data plane runs"
        scope = self._running = anyio.CancelScope()

        async def run() -> None:
            result = None
            with scope:
                result = await self.attempt(mode, generation, tracker, relay)
            if result is not None and result.done:
                self.on_resynced()  # the peer was made equal, even if stopped at its end
            if result is None or scope.cancel_called:
                return
            if not result.done:
                self.failures += 1
                log.warning("resync attempt failed", problem=result.reason)
            await outcome(result)

        group.start_soon(run)

    def stop(self) -> None:
        """End the attempt running, if any: its outcome is not reported."""
        if self._running is not None:
            self._running.cancel()
            self._running = None
        self.cancel()

    def status(self, tracker: Tracker | None) -> dict[str, Any]:
        """This node's part as a source in ``failover status``: the running or last
        resync, failed attempts, the bandwidth limit, and the changes the tracker
        holds for the peer (what an incremental resync would send)."""
        resync = self.source.status() if self.source is not None else self.last_status
        changes = tracker.changes() if tracker is not None else None
        return {
            "resync": None if resync is None else asdict(resync),
            "resync_failures": self.failures,
            "bandwidth": self.bandwidth,
            "tracked": None
            if changes is None or tracker is None
            else {
                "since": tracker.since,
                "files": len(changes.files),
                "names": len(changes.names),
                "meta": len(changes.meta),
            },
        }

    def set_bandwidth(self, rate: int) -> None:
        """The resync bandwidth limit, bytes/s (0: none), from now on, also mid-resync."""
        if rate < 0:
            raise UsageError(f"bandwidth {rate}: must be 0 (no limit) or a positive bytes/s")
        self.bandwidth = rate
        source = self.source
        if source is not None:
            source.set_bandwidth(rate)

    def cancel(self) -> None:
        if self.source is not None:
            self.source.cancel()

    async def attempt(
        self, mode: str, generation: str, tracker: Tracker, relay: Relay
    ) -> AttemptOutcome:
        """One resync attempt in ``mode`` (incremental or full) to bring the peer
        to ``generation``; on success its session stays ``relay``'s sender."""
        await self.sending.stop()
        failures: list[str] = []
        live = False  # once the resync is done, a break is the replication's failure

        def broken(reason: str) -> None:
            failures.append(reason)
            if relay.sender is sender:
                relay.sender = None
            if live:
                self.on_late_break(reason)

        sender = self.sending.new_sender(broken)
        try:
            stream = await self.sending.connect()
        except TransportError as exc:
            return AttemptOutcome(False, f"resync of {self.peer} could not start: {exc}")
        try:
            peer = await sender.handshake(stream)
            if not peer.request and peer.generation == generation:
                # It applied the END of an attempt whose end we never heard: what
                # this node acknowledged since may be missing there. The core decides.
                raise _Unstarted(
                    f"{self.peer} already holds generation {generation} (end unconfirmed)"
                )
            if not peer.request:
                raise PeerProtocolError(f"{self.peer} did not ask for a resync (not yet in resync)")
            request = ResyncRequest.decode(peer.request)
            if mode == "incremental" and not request.full and tracker.since != request.generation:
                # the changes tracked here do not start where the peer's copy ends
                raise _Unstarted(
                    f"changes are tracked here since {tracker.since}, "
                    f"{self.peer} holds {request.generation}",
                    full_needed=True,
                )
        except (TransportError, PeerProtocolError, UsageError, _Unstarted) as exc:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            if isinstance(exc, _Unstarted):
                return AttemptOutcome(False, str(exc), full_needed=exc.full_needed)
            return AttemptOutcome(False, f"resync of {self.peer} could not start: {exc}")
        self.sending.pump(sender)
        # Before ``own`` is taken: drop the suspect zones the peer holds as we do.
        backing = self.directories.backing_fds()
        request = await anyio.to_thread.run_sync(narrow, request, backing)
        # Under every directory's order lock: the plan holds every change made so
        # far, and every later one streams live (and updates the plan's progress).
        locks = self.directories.order_locks()
        with contextlib.ExitStack() as held:
            for lock in locks.values():
                held.enter_context(lock)
            own = tracker.changes()
            plan = ResyncPlan.make(own if mode == "incremental" else None, request)
            source = ResyncSource(
                sender,
                self.directories.backing_fds(),
                locks,
                plan,
                bandwidth=self.bandwidth,
            )
            source.begin()  # before any live op reaches the session
            self.source = source
            relay.sender = sender
            relay.resync = source
        log.info("resync started", peer=self.peer, full=plan.full, since=request.generation)
        try:
            done = await anyio.to_thread.run_sync(source.run, abandon_on_cancel=True)
        finally:
            relay.resync = None
            self.source = None
            self.last_status = source.status()
        if not done:
            relay.sender = None
            await self.sending.stop()
            reason = failures[0] if failures else "resync stopped"
            return AttemptOutcome(False, f"resync of {self.peer} failed: {reason}")
        log.info("resync done", peer=self.peer, status=asdict(source.status()))
        live = True
        if failures:  # the session broke after the target applied END
            return AttemptOutcome(True, f"replication to {self.peer}: {failures[0]}")
        return AttemptOutcome(True)


class _Unstarted(Exception):
    """A resync attempt the source ends before sending anything, for a reason the
    core decides on (an ``AttemptOutcome`` not done)."""

    def __init__(self, reason: str, *, full_needed: bool = False) -> None:
        super().__init__(reason)
        self.full_needed = full_needed
