"""The relay: a ``Mirror``'s one listener on a replicating node (the fsync path).

The mirror keeps this one listener while sessions come and go: the tracker
records every change, the current ``ReplicationSender`` (if any) replicates it,
and a running ``ResyncSource`` hears of every live op. An application's fsync
returns once the peer acknowledged it, or the write fence lets it go (or fails
it) without the peer. It knows nothing of the core: the data plane
(``runtime/dataplane.py``) sets the fence and swaps the sender and the resync.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from failover.replication.channel import ReplicationSender
from failover.replication.ops import Fsync, Op
from failover.replication.resync import ResyncSource
from failover.replication.tracking import Tracker


class Relay:
    """The mirror's one listener: the tracker records, the current sender (if
    any) replicates, and a running resync hears of every live op. Called from
    FUSE threads; ``sender`` and ``resync`` are swapped by plain assignment.

    The write fence (the core's ``FenceWrites``): while ``fenced``, an fsync the
    peer did not acknowledge (no session, or it broke) is held until the fence
    lifts, or is asked again of a later session (a sender assigned since, that
    runs unbroken), as a new fsync would be: it returns once that peer
    acknowledged it. A held fsync waits for no session it has already tried,
    and for no fence change alone: a protected pair's fence never lifts, and its
    current session is the only way out (campaign finding 3: an fsync begun with
    no session, fenced after the resync's session took over, hung). While not
    ``serving`` (the core left alone/primary), such an fsync fails with EIO,
    held ones too: they were never acknowledged, and the peer serves, or will,
    without them. ``fail_held`` fails the held ones, and any fsync begun before
    it that ends up held (unserve).

    Sessions (the mirror's fsync shortcut): every assignment of ``sender`` or
    ``resync`` (from the event loop only) starts a new epoch. ``session()`` is
    the epoch while a sender runs unbroken and no resync does (the peer then
    holds every change made before the epoch, and acknowledges in order), else
    None. A sync reports the epoch only when it held both before the op was
    queued and after the peer's acknowledgement. The epoch is odd while an
    assignment is under way (a sequence lock: a reader that sees it odd, or
    changed under it, reports no session)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._sender: ReplicationSender | None = None
        self._resync: ResyncSource | None = None
        self._epoch = 0
        self._fence = threading.Condition()
        self.fenced = False
        self.serving = True
        self.held = 0  # fsyncs waiting for the fence to lift
        self._failures = 0  # fail_held calls so far

    @property
    def sender(self) -> ReplicationSender | None:
        return self._sender

    @sender.setter
    def sender(self, sender: ReplicationSender | None) -> None:
        self._new_epoch("_sender", sender)

    @property
    def resync(self) -> ResyncSource | None:
        return self._resync

    @resync.setter
    def resync(self, resync: ResyncSource | None) -> None:
        self._new_epoch("_resync", resync)

    def _new_epoch(self, attribute: str, value: object) -> None:
        self._epoch += 1  # odd: under way
        setattr(self, attribute, value)
        self._epoch += 1
        with self._fence:  # a held fsync may be asked of the new session
            self._fence.notify_all()

    def session(self) -> int | None:
        epoch = self._epoch
        sender = self._sender
        if epoch % 2 or sender is None or sender.broken is not None or self._resync is not None:
            return None
        return epoch if epoch == self._epoch else None

    def set_fenced(self, fenced: bool, serving: bool) -> None:
        with self._fence:
            self.fenced, self.serving = fenced, serving
            self._fence.notify_all()

    def fail_held(self) -> None:
        with self._fence:
            self._failures += 1
            self._fence.notify_all()

    def _held(self, tried: ReplicationSender | None, failures: int) -> bool:
        """An fsync that ``tried`` (None: no session) did not acknowledge: wait
        while the fence holds it. False once the fence lets it go without the
        peer; True once a later session runs unbroken (ask it there); EIO when
        this node stopped serving, or ``fail_held`` ran since ``failures``."""
        with self._fence:
            self.held += 1
            try:
                while self.fenced and self.serving and self._failures == failures:
                    sender = self._sender
                    if sender is not None and sender is not tried and sender.broken is None:
                        return True
                    self._fence.wait()
            finally:
                self.held -= 1
            if self.fenced or not self.serving:
                raise OSError(errno.EIO, "not on the peer, and this node stopped serving")
            return False

    def before(self, op: Op) -> None:
        self.tracker.before(op)

    def after(self, op: Op) -> None:
        sender = self._sender
        if sender is not None:
            sender.after(op)
            resync = self._resync
            if resync is not None:
                resync.after(op)

    def sync(self, op: Fsync, local: Callable[[], None]) -> int | None:
        """Queue ``op`` to the peer, then make the tracker's log and the file durable
        here while the peer works; return once the peer acknowledged (its epoch) or
        the fence let the fsync go without it (None). Held while fenced, it is
        queued again to each later session until one acknowledges it."""
        failures = self._failures
        epoch, sender, seq = self._queue(op)
        self.tracker.sync(op)
        local()
        while sender is None or not seq or not sender.wait_acked(seq):
            if not self._held(sender, failures):
                return None
            epoch, sender, seq = self._queue(op)
        return epoch if epoch is not None and self.session() == epoch else None

    def _queue(self, op: Fsync) -> tuple[int | None, ReplicationSender | None, int]:
        """``op`` queued to the current sender: the session before it was queued,
        the sender, and the sequence number (0: not queued, no session or broken)."""
        epoch = self.session()
        sender = self._sender
        return epoch, sender, sender.queue(op) if sender is not None else 0
