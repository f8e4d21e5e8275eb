"""What a running resync still has to reconcile in one replicated directory: ``Pending``.

Both ends keep one ``Pending`` per root and move it through the same steps in
the same order (the plan in ``BEGIN``, then every live op and resync item in
stream order), so they always agree on it without talking. Everything outside
it is identical on both sides at that point of the stream; inside it:

- ``names``: entries (with everything beneath them) whose existence or type
  may differ; the root directory itself is the empty path (a full sync);
- ``files``: regular files present on both sides whose listed zones (and size)
  may differ;
- ``meta``: entries whose own metadata (mode, owner, times, xattrs) may differ.

A live op that touches pending state (``live`` returns True) may fail on the
target, whose tree is not yet what the op expects: the target applies it on a
best-effort basis, and both ends add its paths to ``names``, so the resync
sends their state as the source has it after the op. Any other live op meets
identical entries on both sides and must succeed.

Order of work (``next_work``): names first (shortest path first: parents
before children), then file zones, then metadata (longest path first: a
directory's times after its children are done).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

from failover.replication.ops import (
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_INSERT_RANGE,
    Chmod,
    Chown,
    Fallocate,
    Fsync,
    Op,
    RemoveXattr,
    SetXattr,
    Truncate,
    Utimens,
    Write,
    paths_of,
)
from failover.replication.resync_wire import Absent, Dir, File
from failover.replication.tracking import ChangeSet, Zones

ROOT_PATH = b""
"""The replicated directory itself (only ever a name, in a full sync)."""

_DATA_OPS = (Write, Truncate, Fallocate, Fsync, Chmod, Chown, Utimens)


def ancestors(path: bytes) -> list[bytes]:
    """Every directory above ``path``, the root (``b""``) first."""
    if not path:
        return []
    parts = path.split(b"/")
    return [ROOT_PATH] + [b"/".join(parts[:i]) for i in range(1, len(parts))]


class FileZones:
    """The zones of one file still to send: sorted disjoint runs [start, end) and a tail."""

    __slots__ = ("runs", "tail")

    def __init__(self, zones: Zones) -> None:
        self.runs = list(zones.runs)
        self.tail = zones.tail

    def first(self) -> tuple[int, int | None]:
        """The first zone to send and the end of its run (None: the tail, to the end)."""
        if self.runs and (self.tail is None or self.runs[0][0] < self.tail):
            return self.runs[0]
        assert self.tail is not None
        return self.tail, None

    def sent(self, first: int, end: int, size: int, zone_size: int) -> None:
        """Zones [first, end) were sent with the file at ``size`` bytes: they are done,
        and so is anything wholly beyond ``size`` (the target now has that size)."""
        beyond = -(-size // zone_size)
        kept: list[tuple[int, int]] = []
        for start, stop in self.runs:
            for a, b in ((start, min(stop, first)), (max(start, end), stop)):
                if a < b and a < beyond:
                    kept.append((a, b))
        self.runs = kept
        if self.tail is not None:
            if first <= self.tail < end:
                self.tail = end
            if self.tail >= beyond:
                self.tail = None

    def add_tail(self, zone: int) -> None:
        if self.tail is None or zone < self.tail:
            self.tail = zone

    def __bool__(self) -> bool:
        return bool(self.runs) or self.tail is not None


@dataclass(frozen=True, slots=True, order=True)
class _Deepest:
    """Orders paths longest first (a max-heap of bytes through ``heapq``)."""

    inverted: tuple[int, ...]
    path: bytes

    @classmethod
    def of(cls, path: bytes) -> _Deepest:
        return cls((*(255 - b for b in path), 256), path)


class Pending:
    """The resync work left in one root (module docstring). Not thread-safe: the
    source guards it with the root's order lock, the target applies in one thread."""

    def __init__(self, zone_size: int) -> None:
        self.zone_size = zone_size
        self.names: set[bytes] = set()
        self.files: dict[bytes, FileZones] = {}
        self.meta: set[bytes] = set()
        self._name_heap: list[bytes] = []
        self._meta_heap: list[_Deepest] = []
        self._below: Counter[bytes] = Counter()

    @classmethod
    def planned(cls, root: str, changes: ChangeSet, *, full: bool) -> Pending:
        """The work of one root for a plan: ``changes`` (its entries in ``root``),
        or everything for a full sync."""
        pending = cls(changes.zone_size)
        if full:
            pending.add_name(ROOT_PATH)
            return pending
        for name_root, path in changes.names:
            if name_root == root:
                pending.add_name(path)
                parent = path.rpartition(b"/")[0]
                if parent:
                    pending.add_meta(parent)
        for (file_root, path), zones in changes.files.items():
            if file_root == root:
                pending.set_file(path, zones)
                pending.add_meta(path)
        for meta_root, path in changes.meta:
            if meta_root == root:
                pending.add_meta(path)
        return pending

    # --- queries ---------------------------------------------------------------------------------

    def __bool__(self) -> bool:
        return bool(self.names or self.files or self.meta)

    def under_names(self, path: bytes) -> bool:
        """True if ``path`` or a directory above it is in ``names``."""
        names = self.names
        return path in names or any(above in names for above in ancestors(path))

    def touches(self, path: bytes) -> bool:
        """True if ``path`` is pending in any way, or anything beneath it is."""
        return (
            self.under_names(path)
            or path in self.files
            or path in self.meta
            or self._below[path] > 0
        )

    def next_work(self) -> tuple[str, bytes] | None:
        """("name" | "file" | "meta", path) to do next, or None when done."""
        while self._name_heap:
            if self._name_heap[0] in self.names:
                return "name", self._name_heap[0]
            heapq.heappop(self._name_heap)
        if self.files:
            return "file", next(iter(self.files))
        while self._meta_heap:
            if self._meta_heap[0].path in self.meta:
                return "meta", self._meta_heap[0].path
            heapq.heappop(self._meta_heap)
        return None

    # --- the steps both ends take ----------------------------------------------------------------

    def live(self, op: Op) -> bool:
        """Account for a live op in stream order; True if it touches pending state
        (the target then applies it best-effort; see the module docstring)."""
        if isinstance(op, _DATA_OPS):
            if self.under_names(op.path):
                return True
            if (
                isinstance(op, Fallocate)
                and op.mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE)
                and op.path in self.files
            ):
                # The data after the offset moved: the pending zones with it.
                self.files[op.path].add_tail(op.offset // self.zone_size)
            return False
        if isinstance(op, SetXattr | RemoveXattr):
            return self.under_names(op.path) or op.path in self.meta
        paths = paths_of(op)
        if not any(self.touches(path) for path in paths):
            return False
        for path in paths:
            self.add_name(path)
        return True

    def entry_done(self, path: bytes, kind: type, children: tuple[bytes, ...] = ()) -> None:
        """The name ``path`` was reconciled as ``kind`` (a ``resync_wire`` entry type:
        Absent, Dir, Link or File) with these ``children`` (a Dir)."""
        self._discard_name(path)
        if kind is Dir:
            for child in children:
                self.add_name(path + b"/" + child if path else child)
        else:
            self._drop_below(path)
            self._drop_file(path)
            if kind is File:
                self.set_file(path, Zones((), 0))
        if kind is Absent or not path:
            self._discard_meta(path)
        else:
            self.add_meta(path)

    def chunk_done(self, path: bytes, first: int, end: int, size: int) -> None:
        """Zones [first, end) of ``path`` were sent, the file being ``size`` bytes long."""
        zones = self.files.get(path)
        if zones is None:
            return
        zones.sent(first, end, size, self.zone_size)
        if not zones:
            self._drop_file(path)

    def meta_done(self, path: bytes) -> None:
        self._discard_meta(path)

    # --- bookkeeping -----------------------------------------------------------------------------

    def add_name(self, path: bytes) -> None:
        if path not in self.names:
            self.names.add(path)
            heapq.heappush(self._name_heap, path)
            self._count(path, 1)

    def add_meta(self, path: bytes) -> None:
        if path not in self.meta:
            self.meta.add(path)
            heapq.heappush(self._meta_heap, _Deepest.of(path))
            self._count(path, 1)

    def set_file(self, path: bytes, zones: Zones) -> None:
        if path not in self.files:
            self._count(path, 1)
        self.files[path] = FileZones(zones)

    def _discard_name(self, path: bytes) -> None:
        if path in self.names:
            self.names.discard(path)
            self._count(path, -1)

    def _discard_meta(self, path: bytes) -> None:
        if path in self.meta:
            self.meta.discard(path)
            self._count(path, -1)

    def _drop_file(self, path: bytes) -> None:
        if self.files.pop(path, None) is not None:
            self._count(path, -1)

    def _drop_below(self, path: bytes) -> None:
        """Forget everything strictly beneath ``path`` (it is not a directory now)."""
        if self._below[path] <= 0:
            return
        prefix = path + b"/" if path else b""
        for entries, drop in (
            (self.names, self._discard_name),
            (self.files, self._drop_file),
            (self.meta, self._discard_meta),
        ):
            for below in [p for p in entries if p.startswith(prefix) and p != path]:
                drop(below)

    def _count(self, path: bytes, delta: int) -> None:
        below = self._below
        for above in ancestors(path):
            below[above] += delta
