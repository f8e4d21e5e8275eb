"""A node whose metadata cannot be written: the held events and the fault's record.

The daemon (``Daemon._decide``) undoes a decision whose ``PersistMetadata``
failed: the core is restored to the snapshot taken before the event, and the
event waits here with every later one until a write succeeds (the invariant
and what the node does meanwhile are in docs/operations.md, "Faults of the
node's own disk"). This module holds no decision: only an ordered queue
whose size stays bounded while the fault lasts, and the numbers that
``status`` and the log show.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failover.core import events as ev
from failover.core.state import PeerStatus
from failover.fsutil import describe_error

RETRY_INITIAL = 0.1
"""Seconds before the first retry of a failed metadata write."""
RETRY_MAX = 5.0
"""The longest pause between two retries (the pause doubles up to it)."""


def _slot(event: ev.Event) -> Hashable | None:
    """Events of which only the newest matters: one per link, one per checker."""
    if isinstance(event, ev.HeartbeatReceived | ev.LinkFailed):
        return ("link", event.link)
    if isinstance(event, ev.CheckerUp | ev.CheckerDown):
        return ("checker", event.checker)
    return None


class HeldEvents:
    """Events waiting for the metadata to be durable, in arrival order.

    The first event (the one whose decision was undone) is always kept as it
    is. Behind it: a timer tick is dropped (the core's deadlines are published
    again once it resumes), a link's event replaces that link's earlier one
    and a checker's event that checker's earlier one (each is a state report:
    the newest says all). A ``ResyncFailed`` behind one already held is
    dropped: the peer's source retries a resync this node cannot apply for as
    long as the fault lasts, each attempt reported, and all of them fail the
    same resync (the held core starts no other); the first moves the core out
    of ``resync``, and a later one would fail whatever resync came next. Every
    other event is an outcome of an action started before the fault, so the
    queue stays bounded by the links, the checkers and the actions in flight.
    """

    def __init__(self) -> None:
        self._events: deque[ev.Event] = deque()
        self._peer: PeerStatus | None = None

    def __len__(self) -> int:
        return len(self._events)

    def __bool__(self) -> bool:
        return bool(self._events)

    def hold(self, event: ev.Event) -> None:
        if not self._events:
            self._peer = None
        if isinstance(event, ev.HeartbeatReceived):
            self._peer = event.status
        if self._events and isinstance(event, ev.Timer):
            return
        if isinstance(event, ev.ResyncFailed) and any(
            isinstance(held, ev.ResyncFailed) for held in self._events
        ):
            return
        slot = _slot(event)
        if slot is not None:
            for position in range(1, len(self._events)):
                if _slot(self._events[position]) == slot:
                    del self._events[position]
                    break
        self._events.append(event)

    def first(self) -> ev.Event:
        return self._events[0]

    def done_first(self) -> ev.Event:
        return self._events.popleft()

    def kinds(self) -> list[str]:
        return [event.kind for event in self._events]

    def newest_peer(self) -> PeerStatus | None:
        """What the peer announced last in a heartbeat held since the queue was last
        empty (even if a later event of its link replaced that heartbeat), or None."""
        return self._peer


@dataclass
class DiskFault:
    """One episode of failed metadata writes, from the first failure to the write
    that succeeds."""

    file: Path
    error: str
    errno: int | None
    since: float
    attempts: int = 1
    pause: float = RETRY_INITIAL

    @classmethod
    def start(cls, file: Path, exc: OSError, now: float) -> DiskFault:
        return cls(file, describe_error(exc), exc.errno, now)

    @property
    def reason(self) -> str:
        return f"cannot write metadata {self.file}: {self.error}"

    def failed_again(self, exc: OSError) -> bool:
        """Count one more failed attempt and grow the pause; True if the error changed."""
        self.attempts += 1
        self.pause = min(self.pause * 2, RETRY_MAX)
        changed = exc.errno != self.errno
        self.error, self.errno = describe_error(exc), exc.errno
        return changed

    def view(self, now: float, held: int) -> dict[str, Any]:
        """The ``degraded`` object of ``status``."""
        return {
            "reason": self.reason,
            "file": str(self.file),
            "error": self.error,
            "since_ago": round(max(0.0, now - self.since), 3),
            "attempts": self.attempts,
            "held_events": held,
        }


__all__ = ["RETRY_INITIAL", "RETRY_MAX", "DiskFault", "HeldEvents"]
