"""Resync: bring a returning node up to date while the application keeps writing.

The *source* (the serving node) runs a ``ResyncSource``; the *target* (the
returning node, state ``resync``, inconsistent until the end) receives through
its ``ReplicationReceiver`` with a ``ResyncTarget`` as both op sink and item
handler. The pieces:

1. The target sends a ``ResyncRequest`` (``resync_wire``): its generation, a
   full-sync flag, its suspect set (``Tracker.recover(...).changes``: what
   a crashed ex-primary may have written without acknowledgement) and the
   digests of what it holds there (``ResyncTarget.request``, ``resync_check``).
   The runtime carries it to the source; ``narrow`` drops the suspect zones
   that are equal on both sides, then ``ResyncPlan.make`` joins the rest with
   the source's own ``ChangeSet`` since that generation (or asks for a full
   sync).
2. ``ResyncSource.run`` sends ``BEGIN`` (the plan), then one item per step
   (``resync_pending``: names, then file zones, then metadata), then ``END``,
   as ``RESYNC`` entries of the replication channel: one ordered stream with
   the live ops. Each step reads the source's backing directory and enqueues
   its item while holding the root's *order lock* (the mirror's lock around
   "local change + listener.after"), so a live change made during the resync
   is ordered after the copy that does not contain it. A large file goes a
   chunk of zones at a time (``chunk_bytes``), the lock held per chunk only.
3. The runtime's listener calls ``ResyncSource.after(op)`` for every live op,
   under the same lock; both ends then update the pending work the same way
   (``Pending.live``), and the target applies a live op that touches pending
   state best-effort (the resync sends that state later, as it is after the op).
4. The target applies every item idempotently through the ``Applier``: a
   resync interrupted by a crash or a dropped connection is simply restarted.
5. ``END`` acknowledged by the target (``wait_acked``): ``run`` returns True;
   the runtime then feeds PeerResynced/ResyncDone to the core.

Only what may differ crosses: dirty zones of the plan (their data extents only:
holes stay holes, found with SEEK_DATA/SEEK_HOLE), the entries of changed
names (a file there is sent whole, unless the checks showed it a regular file
on both sides: then its differing zones), and the metadata of changed entries.
Hard links between resynced paths are not recreated (each path gets its own
file).
"""

from __future__ import annotations

import errno
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from os import PathLike
from typing import Protocol

from failover.errors import PeerProtocolError, UsageError
from failover.replication.apply import Applier, ApplyError
from failover.replication.channel_wire import ItemKind
from failover.replication.ops import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    MAX_WRITE,
    Chmod,
    Chown,
    Create,
    Fallocate,
    Fsync,
    Mkdir,
    Op,
    PathRejected,
    RemoveXattr,
    Rmdir,
    SetXattr,
    Symlink,
    Truncate,
    Unlink,
    Utimens,
    Write,
)
from failover.replication.resync_check import CheckCache, narrow
from failover.replication.resync_pending import Pending
from failover.replication.resync_tree import Tree, data_extents
from failover.replication.resync_wire import (
    Absent,
    Begin,
    Chunk,
    Dir,
    End,
    Entry,
    File,
    Item,
    Link,
    Meta,
    ResyncRequest,
    decode_item,
    encode_item,
)
from failover.replication.tracking import DEFAULT_ZONE_SIZE, ChangeSet, Recovery

__all__ = [
    "BandwidthLimiter",
    "CheckCache",
    "ResyncChannel",
    "ResyncPlan",
    "ResyncRequest",
    "ResyncSource",
    "ResyncStatus",
    "ResyncTarget",
    "narrow",
    "request_for",
]

Roots = Mapping[str, int | PathLike[str] | str]
OrderLock = AbstractContextManager[object]

CHUNK_BYTES = 256 * 1024
"""Default most file bytes one resync step reads under the order lock (whole zones)."""
WINDOW_BYTES = 4 * 1024 * 1024
"""Default most resync bytes queued or in flight but not acknowledged."""


# --- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResyncPlan:
    """What to reconcile: ``changes`` (incremental), or every file of every root (``full``)."""

    full: bool
    changes: ChangeSet

    @classmethod
    def make(cls, own: ChangeSet | None, request: ResyncRequest) -> ResyncPlan:
        """The source's own changes since the target's generation joined with the
        target's suspect set; a full sync if the target asks for one or ``own`` is
        None (the source cannot tell what changed since that generation)."""
        if own is None or request.full:
            zone_size = own.zone_size if own is not None else DEFAULT_ZONE_SIZE
            return cls(True, ChangeSet(zone_size))
        return cls(False, own.union(request.suspect))


def request_for(generation: str, recovery: Recovery | None, *, full: bool = False) -> ResyncRequest:
    """The target's request: its suspect set is what ``Tracker.recover`` found (nothing
    if it has no tracking state: then it must ask for ``full``)."""
    suspect = recovery.changes if recovery is not None else ChangeSet(DEFAULT_ZONE_SIZE)
    return ResyncRequest(generation, full or recovery is None, suspect)


# --- bandwidth ---------------------------------------------------------------------------------


class BandwidthLimiter:
    """Paces the resync at ``rate`` bytes per second (0: unlimited), changeable at any time.

    ``charge(n)`` records bytes already sent; ``wait_turn()`` blocks until they are
    paid for at the current rate (a rate change rescales what is still owed, and
    wakes a waiter at once). ``clock`` and ``wait`` are injectable for tests
    (``wait(condition, seconds)`` is called with the condition's lock held).
    Accounting: ``charged`` bytes per rate, ``waited`` seconds by ``clock``.
    """

    def __init__(
        self,
        rate: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Condition, float], object] | None = None,
    ) -> None:
        self._check(rate)
        self._rate = rate
        self._clock = clock
        self._wait = wait or (lambda condition, seconds: condition.wait(seconds))
        self._changed = threading.Condition()
        self._paid_until = clock()
        self._stopped = False
        self.charged: dict[int, int] = {}
        self.waited = 0.0

    @staticmethod
    def _check(rate: int) -> None:
        if rate < 0:
            raise UsageError(f"resync bandwidth limit must be 0 (none) or positive, not {rate}")

    @property
    def rate(self) -> int:
        return self._rate

    def set_rate(self, rate: int) -> None:
        self._check(rate)
        with self._changed:
            now = self._clock()
            owed = max(0.0, self._paid_until - now)
            if rate == 0 or self._rate == 0:
                self._paid_until = now
            else:
                self._paid_until = now + owed * self._rate / rate
            self._rate = rate
            self._changed.notify_all()

    def charge(self, sent: int) -> None:
        with self._changed:
            self.charged[self._rate] = self.charged.get(self._rate, 0) + sent
            if self._rate:
                self._paid_until = max(self._paid_until, self._clock()) + sent / self._rate

    def wait_turn(self) -> bool:
        """Block until what was charged is paid for; False if ``stop`` was called."""
        with self._changed:
            start = self._clock()
            while not self._stopped and self._rate and self._paid_until > self._clock():
                self._wait(self._changed, self._paid_until - self._clock())
            self.waited += self._clock() - start
            return not self._stopped

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()


# --- the source --------------------------------------------------------------------------------


class ResyncChannel(Protocol):
    """The part of ``ReplicationSender`` a resync uses."""

    def send_resync(self, chunk: bytes) -> int: ...

    def wait_acked(self, seq: int) -> bool: ...

    @property
    def broken(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ResyncStatus:
    """Progress of a resync (a snapshot). Totals grow as directories are walked."""

    state: str
    """"running", "done", "failed" (the session broke) or "cancelled"."""
    full: bool
    items_done: int
    items_total: int
    bytes_done: int
    """Resync item bytes enqueued (file data and descriptions)."""
    bytes_total: int
    """``bytes_done`` plus an estimate of what is left."""
    rate: float
    """Bytes per second over the last few seconds."""
    eta: float | None
    """Seconds left at that rate (None: unknown)."""
    bandwidth_limit: int
    """Bytes per second, 0 = none."""
    error: str | None


class ResyncSource:
    """Sends one resync to the target over ``channel`` (see the module docstring).

    ``roots``: the backing directories (fds or paths, as for ``Applier``);
    ``order_lock``: the lock the mirror holds around each local change and its
    ``after``: one for every root, or one per root name. ``after(op)`` must be
    called, under that lock, for every live op streamed while the resync runs.
    ``run`` blocks (call it in a worker thread) and returns True once the target
    applied ``END``; False if the session broke or ``cancel`` was called.
    """

    def __init__(
        self,
        channel: ResyncChannel,
        roots: Roots,
        order_lock: OrderLock | Mapping[str, OrderLock],
        plan: ResyncPlan,
        *,
        bandwidth: int = 0,
        chunk_bytes: int = CHUNK_BYTES,
        window_bytes: int = WINDOW_BYTES,
        clock: Callable[[], float] = time.monotonic,
        limiter: BandwidthLimiter | None = None,
    ) -> None:
        zone_size = plan.changes.zone_size
        if not zone_size <= chunk_bytes <= MAX_WRITE:
            raise UsageError(
                f"resync chunk of {chunk_bytes} bytes: must be {zone_size}..{MAX_WRITE}"
            )
        self._channel = channel
        self._plan = plan
        self._tree = Tree(roots)
        names = self._tree.root_names
        for root in {
            key[0] for key in (*plan.changes.files, *plan.changes.names, *plan.changes.meta)
        }:
            if root not in names:
                self._tree.close()
                raise PeerProtocolError(f"resync plan names unknown replicated directory {root!r}")
        self._locks = {
            root: order_lock[root] if isinstance(order_lock, Mapping) else order_lock
            for root in names
        }
        self._pending = {
            root: Pending.planned(root, plan.changes, full=plan.full) for root in names
        }
        self._zone_size = zone_size
        self._chunk_zones = chunk_bytes // zone_size
        self._window = window_bytes
        self._clock = clock
        self.limiter = limiter or BandwidthLimiter(bandwidth, clock=clock)
        self._active = False
        self._begun: bool | None = None  # BEGIN queued (False: the session was broken)
        self._cancelled = threading.Event()
        self._state = "running"
        self._error: str | None = None
        self._unacked: deque[tuple[int, int]] = deque()  # (seq, bytes)
        self._unacked_bytes = 0
        self._items = 0
        self._bytes = 0
        self._left_bytes = self._estimate(plan.changes)
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])

    # --- control (any thread) ------------------------------------------------------------------

    def after(self, op: Op) -> None:
        """A live op was applied locally and queued on the channel; the caller holds
        ``op.root``'s order lock."""
        pending = self._pending.get(op.root)
        if self._active and pending is not None:
            pending.live(op)

    def begin(self) -> None:
        """Queue ``BEGIN`` (the plan) and follow live ops from now on. The caller
        holds every root's order lock, in the same hold in which it made the plan
        and routed live ops to the channel and ``after``: no live op then reaches
        the target before ``BEGIN`` (applied as if no resync ran, it could land in
        a file the target no longer has). ``run`` does it itself if not done."""
        self._active = True
        self._begun = self._send(Begin(self._plan.full, tuple(self._locks), self._plan.changes))

    def set_bandwidth(self, rate: int) -> None:
        """Change the bandwidth limit (bytes/s, 0 = none) now, even mid-run."""
        self.limiter.set_rate(rate)

    def cancel(self) -> None:
        """Stop sending; ``run`` returns False soon after."""
        self._cancelled.set()
        self.limiter.stop()

    def status(self) -> ResyncStatus:
        left_items = sum(len(p.names) + len(p.files) + len(p.meta) for p in self._pending.values())
        now = self._clock()
        then, bytes_then = self._samples[0]
        rate = (self._bytes - bytes_then) / (now - then) if now > then else 0.0
        left = 0 if self._state == "done" else max(0, self._left_bytes)
        return ResyncStatus(
            state=self._state,
            full=self._plan.full,
            items_done=self._items,
            items_total=self._items + left_items + (self._state == "running"),
            bytes_done=self._bytes,
            bytes_total=self._bytes + left,
            rate=rate,
            eta=0.0 if not left else (left / rate if rate > 0 else None),
            bandwidth_limit=self.limiter.rate,
            error=self._error,
        )

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> bool:
        """Send the whole resync; True once the target applied the end marker.

        Blocks: reads files, waits for the bandwidth limit and for the peer to
        keep up (at most ``window_bytes`` unacknowledged). Never raises for a
        broken session (returns False; ``status().error`` says why); raises
        ``OSError`` if the source's own directory cannot be read.
        """
        try:
            if self._begun is None:
                with ExitStack() as all_locks:
                    for lock in {id(lock): lock for lock in self._locks.values()}.values():
                        all_locks.enter_context(lock)
                    self.begin()
            if not self._begun:
                return self._finish()
            for root, pending in self._pending.items():
                while True:
                    if not self._pace():
                        return self._finish()
                    with self._locks[root]:
                        work = pending.next_work()
                        if work is None:
                            break
                        if not self._step(root, pending, *work):
                            return self._finish()
            if not self._send(End()):
                return self._finish()
            ok = self._channel.wait_acked(self._unacked[-1][0])
            return self._finish(done=ok)
        except BaseException as error:
            self._state, self._error = "failed", f"resync source: {error}"
            raise
        finally:
            self._active = False
            self._tree.close()

    def _finish(self, done: bool = False) -> bool:
        if done:
            self._state = "done"
        elif self._cancelled.is_set():
            self._state = "cancelled"
        else:
            self._state = "failed"
            self._error = self._channel.broken or "the replication session broke"
        return done

    def _pace(self) -> bool:
        """Wait for the bandwidth limit and the window; False to stop."""
        if not self.limiter.wait_turn():
            return False
        while self._unacked_bytes > self._window:
            seq, size = self._unacked.popleft()
            self._unacked_bytes -= size
            if not self._channel.wait_acked(seq):
                return False
        return not self._cancelled.is_set()

    def _send(self, item: Item) -> bool:
        payload = encode_item(item)
        seq = self._channel.send_resync(payload)
        if not seq:
            return False
        self._unacked.append((seq, len(payload)))
        self._unacked_bytes += len(payload)
        self._items += 1
        self._bytes += len(payload)
        self.limiter.charge(len(payload))
        now = self._clock()
        self._samples.append((now, self._bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] > 5.0:
            self._samples.popleft()
        return True

    def _step(self, root: str, pending: Pending, kind: str, path: bytes) -> bool:
        """One item for ``path`` (the caller holds the root's order lock)."""
        if kind == "file":
            with self._tree.regular_file(root, path) as found:
                if found is not None:
                    fd, info = found
                    first, end = self._chunk_range(pending, path, info.st_size)
                    zs = self._zone_size
                    extents = data_extents(fd, first * zs, min(end * zs, info.st_size))
                    chunk = Chunk(root, path, first, end, info.st_size, tuple(extents))
                    self._left_bytes -= (end - first) * zs
                    pending.chunk_done(path, first, end, info.st_size)
                    return self._send(chunk)
        elif kind == "meta":
            found_meta = self._tree.lstat(root, path)
            if found_meta is not None:
                info = found_meta
                xattrs = tuple(self._tree.xattrs(root, path))
                meta = Meta(
                    root,
                    path,
                    stat.S_IMODE(info.st_mode),
                    info.st_uid,
                    info.st_gid,
                    info.st_atime_ns,
                    info.st_mtime_ns,
                    xattrs,
                )
                pending.meta_done(path)
                return self._send(meta)
        # A name; or a file or an entry that is not what the plan expected here: its name.
        entry = self._describe(root, path)
        pending.entry_done(path, type(entry), entry.children if isinstance(entry, Dir) else ())
        if isinstance(entry, File):
            self._left_bytes += self._tree_size(root, path)
        return self._send(entry)

    def _chunk_range(self, pending: Pending, path: bytes, size: int) -> tuple[int, int]:
        first, run_end = pending.files[path].first()
        beyond = -(-size // self._zone_size)
        end = beyond if run_end is None else min(run_end, beyond)
        return first, max(first, min(end, first + self._chunk_zones))

    def _describe(self, root: str, path: bytes) -> Entry:
        info = self._tree.lstat(root, path)
        if info is None:
            return Absent(root, path)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            return Dir(root, path, stat.S_IMODE(mode), tuple(self._tree.children(root, path)))
        if stat.S_ISLNK(mode):
            target = self._tree.readlink(root, path)
            return Absent(root, path) if target is None else Link(root, path, target)
        if stat.S_ISREG(mode):
            return File(root, path, stat.S_IMODE(mode))
        return Absent(root, path)  # devices, FIFOs, sockets are not replicated

    def _tree_size(self, root: str, path: bytes) -> int:
        info = self._tree.lstat(root, path)
        return info.st_size if info is not None else 0

    def _estimate(self, changes: ChangeSet) -> int:
        """Bytes of the planned zones (a tail counts to the current end of file)."""
        zs = changes.zone_size
        total = 0
        for (root, path), zones in changes.files.items():
            total += sum(end - start for start, end in zones.runs) * zs
            if zones.tail is not None:
                total += max(0, self._tree_size(root, path) - zones.tail * zs)
        return total


# --- the target --------------------------------------------------------------------------------


class ResyncTarget:
    """The returning node's side: the receiver's op sink and resync item handler.

    ``ReplicationReceiver(identity, sink=target, on_item=target.on_item)``. Outside
    a resync it passes ops to ``applier``; between ``BEGIN`` and ``END`` it also
    applies resync items and applies live ops that touch pending state
    best-effort. ``on_begin(full)`` and ``on_done()`` are called from the apply
    thread (the node is inconsistent in between). ``roots`` must name the same
    directories as the applier's. Raises ``PeerProtocolError`` for a malformed or
    out-of-place item, ``ApplyError`` when a change cannot be made here.
    """

    def __init__(
        self,
        applier: Applier,
        roots: Roots,
        *,
        on_begin: Callable[[bool], None] | None = None,
        on_done: Callable[[], None] | None = None,
        checks: CheckCache | None = None,
    ) -> None:
        self._applier = applier
        self._tree = Tree(roots)
        self._own_checks = checks is None
        self._checks = CheckCache() if checks is None else checks
        self._on_begin = on_begin
        self._on_done = on_done
        self._pending: dict[str, Pending] | None = None
        self._checked: int | None = None  # the write sequence the request's digests hold at
        self.tolerated = 0
        """Live ops that touched pending state and failed here (repaired by the resync)."""

    @property
    def consistent(self) -> bool:
        """False while a resync is under way."""
        return self._pending is None

    def close(self) -> None:
        self._tree.close()

    def request(self, generation: str, suspect: ChangeSet, *, full: bool = False) -> bytes:
        """This node's encoded ``ResyncRequest``: unless ``full``, with the digests of
        what it holds in ``suspect`` (``resync_check``: the source then sends only the
        zones that differ) if ``checks``, the cache shared by every session of this
        node, holds them fresh (without them otherwise); a target made without a cache
        digests now. ``BEGIN`` refuses if any session wrote here since."""
        found = None
        if not full:
            if self._own_checks:
                self._checks.prepare(self._tree, suspect)
            found = self._checks.get(suspect)
        self._checked = None if found is None else found[1]
        checks = None if found is None else found[0]
        return ResyncRequest(generation, full, suspect, checks).encode()

    # --- OpSink ----------------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        with self._checks.writing():
            pending = self._pending.get(op.root) if self._pending is not None else None
            if pending is None or not pending.live(op):
                self._applier.apply(op)
                return
            try:
                self._applier.apply(op)
            except (ApplyError, PathRejected):
                self.tolerated += 1

    def fsync(self, root: str, path: bytes, datasync: bool) -> None:
        self.apply(Fsync(root, path, datasync))

    # --- items -----------------------------------------------------------------------------------

    def on_item(self, kind: ItemKind, payload: bytes) -> None:
        """Apply one resync item (``ReplicationReceiver``'s ``on_item``)."""
        if kind is not ItemKind.RESYNC:
            raise PeerProtocolError(f"resync target: unexpected {kind.name} record")
        item = decode_item(payload)
        if isinstance(item, Begin):
            self._begin(item)
            return
        with self._checks.writing():
            self._item(item)

    def _item(self, item: Entry | Chunk | Meta | End) -> None:
        if self._pending is None:
            raise PeerProtocolError(f"resync {type(item).__name__} item outside a resync")
        if isinstance(item, End):
            self._end(self._pending)
            return
        pending = self._pending.get(item.root)
        if pending is None:
            raise PeerProtocolError(f"resync item for {item.root!r}, not in the plan")
        if isinstance(item, Chunk):
            self._chunk(item, pending.zone_size)
            pending.chunk_done(item.path, item.first_zone, item.end_zone, item.size)
        elif isinstance(item, Meta):
            self._meta(item)
            pending.meta_done(item.path)
        else:
            self._entry(item)
            children = item.children if isinstance(item, Dir) else ()
            pending.entry_done(item.path, type(item), children)

    def _begin(self, item: Begin) -> None:
        for root in item.roots:
            self._tree.root_fd(root)  # a root this node does not replicate: the peer's error
        checked, self._checked = self._checked, None
        if checked is not None and not item.full and not self._checks.unchanged_since(checked):
            # The source skipped what matched the digests: a session wrote here since.
            self._checks.forget()
            raise PeerProtocolError(
                "resync BEGIN: a session wrote here since the request was digested "
                "(an earlier session was still applying): the source must retry"
            )
        self._pending = {
            root: Pending.planned(root, item.changes, full=item.full) for root in item.roots
        }
        if self._on_begin is not None:
            self._on_begin(item.full)

    def _end(self, pending: dict[str, Pending]) -> None:
        left = {root: p.next_work() for root, p in pending.items() if p}
        if left:
            raise PeerProtocolError(f"resync END with work left: {left}")
        self._pending = None
        if self._on_done is not None:
            self._on_done()

    def _entry(self, item: Entry) -> None:
        root, path = item.root, item.path
        info = self._tree.lstat(root, path)
        if isinstance(item, Absent):
            if info is not None:
                self._remove(root, path, info.st_mode)
            return
        if isinstance(item, Dir):
            if path and (info is None or not stat.S_ISDIR(info.st_mode)):
                if info is not None:
                    self._remove(root, path, info.st_mode)
                self._applier.apply(Mkdir(root, path, item.mode))
            keep = set(item.children)
            for child in self._tree.children(root, path):
                if child not in keep:
                    self._remove_path(root, path + b"/" + child if path else child)
            return
        if info is not None:
            if isinstance(item, Link) and stat.S_ISLNK(info.st_mode):
                if self._tree.readlink(root, path) == item.target:
                    return
            # A file with other names would carry our writes to them: start afresh.
            elif isinstance(item, File) and stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                return
            self._remove(root, path, info.st_mode)
        if isinstance(item, Link):
            self._applier.apply(Symlink(root, path, item.target))
        else:
            self._applier.apply(Create(root, path, item.mode))

    def _remove_path(self, root: str, path: bytes) -> None:
        info = self._tree.lstat(root, path)
        if info is not None:
            self._remove(root, path, info.st_mode)

    def _remove(self, root: str, path: bytes, mode: int) -> None:
        """Remove the entry at ``path`` and everything beneath it, through the applier."""
        if stat.S_ISDIR(mode):
            for child in self._tree.children(root, path):
                self._remove_path(root, path + b"/" + child)
            self._applier.apply(Rmdir(root, path))
        else:
            self._applier.apply(Unlink(root, path))

    def _chunk(self, item: Chunk, zone_size: int) -> None:
        root, path = item.root, item.path
        start = item.first_zone * zone_size
        stop = min(item.end_zone * zone_size, item.size)
        covered = 0
        position = start
        for offset, data in item.extents:
            if offset < position or offset + len(data) > stop or not data:
                raise PeerProtocolError(
                    f"resync CHUNK {root}:{path!r}: extent at {offset} ({len(data)} bytes) "
                    f"outside zones [{item.first_zone}, {item.end_zone}) or out of order"
                )
            position = offset + len(data)
            covered += len(data)
        if stop > start and covered < stop - start:
            self._applier.apply(
                Fallocate(
                    root, path, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, stop - start
                )
            )
        for offset, data in item.extents:
            self._applier.apply(Write(root, path, offset, data))
        self._applier.apply(Truncate(root, path, item.size))

    def _meta(self, item: Meta) -> None:
        root, path = item.root, item.path
        info = self._tree.lstat(root, path)
        if info is None:
            raise ApplyError(f"resync META {root}:{path!r}: no such entry here", errno.ENOENT)
        apply = self._applier.apply
        apply(Chown(root, path, item.uid, item.gid))
        if not stat.S_ISLNK(info.st_mode):
            apply(Chmod(root, path, item.mode))
        wanted = dict(item.xattrs)
        for name, value in self._tree.xattrs(root, path):
            if name not in wanted:
                apply(RemoveXattr(root, path, name))
            elif wanted[name] == value:
                del wanted[name]
        for name, value in wanted.items():
            apply(SetXattr(root, path, name, value, 0))
        apply(Utimens(root, path, item.atime_ns, item.mtime_ns))
