"""The receiving side of replication: the peer's sessions on this node's endpoint.

Every connection authenticates in a task of its own (at most ``MAX_HANDSHAKES``
at once, each within the replication timeout) and changes nothing before its
handshake authenticated (``CONFIRM`` under the session key); then it replaces
the live session (one at a time, the newest authenticated one wins) and is
applied with an ``Applier`` on the directories' real contents, as the target of
a resync when one is wanted, answering verify records on the way. Refusals are
counted and their log records rate-limited.

Mechanism only: whether a session may be taken (``accepting``), whether a
resync is wanted and in which mode (``wanted``), and what a resync's end or a
failed change means (``on_resync_done``, ``on_apply_failed``) are the data
plane's (``runtime/dataplane.py``), which reports them to the core.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from failover.errors import FailoverError, TransportError
from failover.replication.apply import Applier, ApplyError
from failover.replication.channel import ItemKind, ReplicationReceiver, SessionIdentity
from failover.replication.directories import Directories, close_all
from failover.replication.resync import ResyncTarget
from failover.replication.resync_check import CheckCache
from failover.replication.tracking import Tracker
from failover.replication.verify_peer import answer_verify
from failover.transport import MessageStream

log = structlog.get_logger("failover.dataplane")


class Receiving:
    """The peer's sessions into ``directories`` (see the module docstring).
    ``accept`` runs until the listener fails; ``stop`` ends the live session."""

    def __init__(
        self,
        directories: Directories,
        checks: CheckCache,
        *,
        identity: Callable[[], SessionIdentity],
        zone_size: int,
        timeout: float,
        accepting: Callable[[], bool],
        wanted: Callable[[], bool | None],
        tracker: Callable[[], Tracker | None],
        base: Callable[[], str],
        on_resync_done: Callable[[], None],
        on_apply_failed: Callable[[str, ApplyError], Awaitable[None]],
    ) -> None:
        self.directories = directories
        self.checks = checks
        self.identity = identity
        self.zone_size = zone_size
        self.timeout = timeout
        self.accepting = accepting
        self.wanted = wanted  # a resync this node waits for: None, else whether full
        self.tracker = tracker
        self.base = base  # the last generation both copies held: a request's base
        self.on_resync_done = on_resync_done  # END applied (in the apply thread)
        self.on_apply_failed = on_apply_failed
        self.sessions_received = 0
        self.handshakes = 0  # incoming connections not authenticated yet
        self.handshakes_refused = 0  # incoming connections that never authenticated
        self._refusal_logged_at = -math.inf
        self._refusals_logged = 0
        self._receiving: anyio.CancelScope | None = None

    async def accept(self, listener: Any, group: TaskGroup) -> None:
        """Take connections; each authenticates in a task of its own (at most
        ``MAX_HANDSHAKES`` at once, each within the replication timeout), so an
        unauthenticated connection never holds up another, and changes nothing."""
        while True:
            try:
                stream = await listener.accept()
            except TransportError as exc:
                log.error("replication listener failed", error=str(exc))
                return
            if not self.accepting():
                self.refused("this node serves")
                await stream.aclose()
                continue
            if self.handshakes >= MAX_HANDSHAKES:
                self.refused("too many unauthenticated connections")
                await stream.aclose()
                continue
            self.handshakes += 1
            group.start_soon(self._receive, stream)

    def refused(self, why: str) -> None:
        """An incoming connection refused before it authenticated: counted always
        (``handshakes_refused`` in status), logged at most every
        ``REFUSAL_LOG_INTERVAL``, so that strangers cannot fill the log."""
        self.handshakes_refused += 1
        now = anyio.current_time()
        if now < self._refusal_logged_at + REFUSAL_LOG_INTERVAL:
            return
        log.warning(
            "replication connection refused",
            why=why,
            refused_since_last_record=self.handshakes_refused - self._refusals_logged,
        )
        self._refusal_logged_at, self._refusals_logged = now, self.handshakes_refused

    def stop(self) -> None:
        if self._receiving is not None:
            self._receiving.cancel()
            self._receiving = None

    def request(self, session: ResyncTarget) -> bytes:
        """What this node asks of the source when it waits for a resync: its
        generation, full or not, and every change it may hold that the source
        does not (its tracker's map: unacknowledged or divergent writes), with
        the digests of what it holds there (the source sends only what differs)."""
        full = self.wanted()
        if full is None:
            return b""
        tracker = self.tracker()
        assert tracker is not None
        return session.request(
            # the last point both copies held (after a split brain, before our own
            # changes, which the suspect set lists): where the source's tracking starts
            self.base(),
            tracker.changes(),
            full=full,
        )

    def prepare(self, roots: dict[str, int]) -> None:
        """Digest the suspect set for the request (a worker thread; once per set)."""
        full, tracker = self.wanted(), self.tracker()
        if full is False and tracker is not None:
            self.checks.prepare(roots, tracker.changes())

    async def _receive(self, stream: MessageStream) -> None:
        """One incoming connection: it changes nothing (the live session goes on)
        until its handshake authenticated; then it replaces the live session (the
        newest authenticated session wins: the primary reconnected).

        The session works on its own duplicates of the directories' fds, taken
        while no remount runs (a remount closes the mirrors' fds in a worker
        thread): a connection arriving during a takeover never sees a
        closed or reused descriptor. Failing to take them (a flood exhausted the
        descriptors) refuses this connection only."""
        try:
            with contextlib.ExitStack() as held:
                try:
                    roots = await self.directories.dup_roots()
                    held.callback(close_all, roots)
                    applier = held.enter_context(Applier(roots))
                    target = held.enter_context(
                        contextlib.closing(
                            ResyncTarget(
                                applier, roots, on_done=self.on_resync_done, checks=self.checks
                            )
                        )
                    )

                    def on_item(kind: ItemKind, payload: bytes) -> bytes | None:
                        if kind is ItemKind.CONTROL:
                            return answer_verify(roots, self.zone_size, payload)
                        target.on_item(kind, payload)
                        return None

                    receiver = ReplicationReceiver(
                        self.identity(), target, on_item=on_item, timeout=self.timeout
                    )
                    # the digests of the suspect set, off the event loop (cached)
                    await anyio.to_thread.run_sync(self.prepare, roots)
                    peer = await receiver.handshake(stream, lambda: self.request(target))
                except (OSError, FailoverError) as exc:  # its fds, or its handshake
                    self.refused(str(exc))
                    return
                finally:
                    self.handshakes -= 1
                if not self.accepting():
                    log.warning("replication session refused: this node serves")
                    return
                self.stop()
                scope = anyio.CancelScope()
                self._receiving = scope
                with scope:
                    self.sessions_received += 1
                    log.info("receiving replication", peer=peer.node, generation=peer.generation)
                    try:
                        await receiver.run()
                    except ApplyError as exc:
                        await self.on_apply_failed(peer.node, exc)
                    except FailoverError as exc:
                        log.warning(
                            "replication session from the peer ended",
                            peer=peer.node,
                            error=str(exc),
                        )
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()


MAX_HANDSHAKES = 8
"""Incoming replication connections that may be authenticating at once; more are
closed at once. Each has the replication timeout to authenticate."""
REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log records of refused connections (all are counted)."""
