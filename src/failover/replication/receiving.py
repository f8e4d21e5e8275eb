"""The receiving side of replication: the peer's sessions on this node's endpoint.

Every connection authenticates in a task of its own (at most ``MAX_HANDSHAKES``
at once, each within the replication timeout) and changes nothing before its
handshake authenticated (``CONFIRM`` under the session key); then it replaces
the live session (one at a time, the newest authenticated one wins) and is
applied with an ``Applier`` on the directories' real contents, as the target of
a resync when ``target`` (``ResyncWait``) answers one, answering verify records on
the way. A connection causes no digest of the suspect set: its ``WELCOME``
carries the request ``target`` makes from the cached digests, once its ``HELLO``
verified. Refusals are counted and their log records rate-limited.

Mechanism only: whether a session may be taken (``accepting``) is the data
plane's (``runtime/dataplane.py``); what a resync's end or a failed change
means is ``target``'s.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from failover.errors import FailoverError, TransportError
from failover.replication.apply import Applier, ApplyError
from failover.replication.channel import (
    INLINE_BYTES,
    ItemKind,
    ReplicationReceiver,
    SessionIdentity,
)
from failover.replication.directories import Directories, close_all
from failover.replication.resync import ResyncTarget
from failover.replication.resync_target import ResyncWait
from failover.replication.verify_peer import answer_verify
from failover.transport import MessageStream

log = structlog.get_logger("failover.dataplane")


class Receiving:
    """The peer's sessions into ``directories`` (see the module docstring).
    ``accept`` runs until the listener fails; ``stop`` ends the live session."""

    def __init__(
        self,
        directories: Directories,
        target: ResyncWait[Any],
        *,
        identity: Callable[[], SessionIdentity],
        zone_size: int,
        timeout: float,
        accepting: Callable[[], bool],
    ) -> None:
        self.directories = directories
        self.target = target
        self.identity = identity
        self.zone_size = zone_size
        self.timeout = timeout
        self.accepting = accepting
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

    def status(self) -> dict[str, int]:
        return {
            "sessions_received": self.sessions_received,
            "handshakes_refused": self.handshakes_refused,
        }

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
                    resync = held.enter_context(
                        contextlib.closing(
                            ResyncTarget(
                                applier,
                                roots,
                                on_done=self.target.done,
                                checks=self.directories.checks,
                            )
                        )
                    )

                    def on_item(kind: ItemKind, payload: bytes) -> bytes | None:
                        if kind is ItemKind.CONTROL:
                            return answer_verify(roots, self.zone_size, payload)
                        resync.on_item(kind, payload)
                        return None

                    receiver = ReplicationReceiver(  # its apply of a small write is cheap
                        self.identity(),
                        resync,
                        on_item=on_item,
                        timeout=self.timeout,
                        inline_bytes=INLINE_BYTES,
                    )
                    await self.target.digested()  # a pass under way: its digests are ours
                    peer = await receiver.handshake(stream, lambda: self.target.request(resync))
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
                        await self.target.apply_failed(peer.node, exc)
                    except FailoverError as exc:
                        log.warning(
                            "replication session from the peer ended",
                            peer=peer.node,
                            error=str(exc),
                        )
                self.target.digest()  # its writes voided the digests of a resync still wanted
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()


MAX_HANDSHAKES = 8
"""Incoming replication connections that may be authenticating at once; more are
closed at once. Each has the replication timeout to authenticate."""
REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log records of refused connections (all are counted)."""
