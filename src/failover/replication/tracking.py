"""Crash-safe change tracking: what a returning peer needs, and nothing much more.

The serving node's ``Tracker`` sees every change before it is made (it is a
``MirrorListener``: ``before(op)``) and keeps a ``ChangeSet``: per file the
dirty *zones* (``zone_size`` bytes each, counted from offset 0), plus the
entries whose existence or metadata may differ. The rules (``ChangeMap.record``)
are deliberately coarse so that the set is provably a superset of the real
changes:

- ``Write``: the zones it touches. ``Fallocate``: the zones of its range and
  the file's metadata (collapse/insert range shift the data: every zone from
  the offset on). ``Truncate``: the metadata and every zone from the one
  holding the new size on (a tail: what lay beyond may come back as zeros).
- ``Create``, ``Unlink``, ``Mkdir``, ``Rmdir``, ``Symlink``, both names of
  ``Link`` and of ``Rename``: *names*, whose existence, type or
  identity may differ, for the entry and everything beneath it (a renamed
  directory brings its subtree under a new name; the tracker never lists
  directories). ``Rename`` also moves the old name's zones to the new name
  (swaps them for ``RENAME_EXCHANGE``).
- ``Chmod``, ``Chown``, ``Utimens``, ``SetXattr``, ``RemoveXattr``: *meta*,
  the entry's own metadata only.
- ``Fsync``: nothing.

Paths, not inodes: a file that already had several names when tracking began
is written through one of them only as far as the tracker knows (a resync
applying zones by path to a peer with the same links updates the others).

Crash safety follows DRBD's activity log. A file is cut into *activity
extents* of ``extent_size`` bytes; before a ``Write`` may touch an extent that
is not *hot*, one record naming (root, path, extent) is appended to the log and
fdatasync'd (the log is zero-filled ahead of its end, so that fdatasync has
only data to flush). A write to the extent after a hot one also heats the
next ``heat_ahead`` extents in the same record, so a sequential writer pays one
fdatasync per ``heat_ahead + 1`` extents. Up to ``hot_extents`` extents stay
hot (least recently written cool first), so steady writes to a working set
cost no I/O at all. Other ops
are appended before the change with ``write()`` only; the fdatasync is batched
(the next extent record, the application's fsync seen by ``sync``, every
``flush_every`` records, ``flush``, a checkpoint). A *checkpoint* writes the
whole map (temporary file, fsync, rename, directory fsync), starts an empty
log, and is the only way an extent cools: when the hot set is full, the older
half cools at once, its zones safe in the checkpoint.

``Tracker.recover(state_dir)`` after a crash at any point: the checkpoint's map,
every zone of every extent hot at the checkpoint, every zone of every extent
recorded in the log, every logged op. A superset, larger than the real changes
by at most the hot set (``hot_extents * extent_size`` bytes per crash), never
by the file sizes. Log records are checksummed; a torn tail is ignored and
counted (it can only hold the record of an op whose ``before`` never returned).

A state directory that cannot be written (full, read-only, failing) never
lets a change through untracked: the op whose record fails is refused with
the disk's error, and so is every later one until a checkpoint of the map in
memory (a superset of everything recorded) can be written; one is tried at
each change, so changes flow again once the disk can take them. A mode switch
(``epoch_start``, ``clear``) whose checkpoint fails is held the same way.

Two uses, one mechanism. While the node is *alone* (``epoch_start``), every
change accumulates. While it replicates synchronously (after ``clear``), the
map holds only what may not be acknowledged yet: a checkpoint asks the
``peer_barrier`` callable (if given) whether every op whose ``before`` returned
is acknowledged by the peer (or failed locally), and if so forgets the map
(the hot extents stay covered by the checkpoint; changes recovered from a
crash are kept until ``clear``). After a crash while in sync,
``recover`` therefore yields the zones the ex-primary may have written without
acknowledgement.

Thread-safe: one lock; ``before`` of a write to a hot extent holds it for a few
microseconds, of a new extent for one fdatasync, of an extent that needs the
hot set trimmed for one checkpoint (and the barrier's wait, while in sync).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Final

from failover.codec import MAX_U16, U8, U16, U32, U64, Reader, Writer
from failover.errors import PeerProtocolError, UsageError
from failover.fsutil import write_atomic
from failover.replication.ops import (
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_INSERT_RANGE,
    MAX_OFFSET,
    RENAME_EXCHANGE,
    Chmod,
    Chown,
    Create,
    Fallocate,
    Fsync,
    Link,
    Mkdir,
    Op,
    RemoveXattr,
    Rename,
    Rmdir,
    SetXattr,
    Symlink,
    Truncate,
    Unlink,
    Utimens,
    Write,
    decode,
    encode,
    read_key,
    write_key,
)

Key = tuple[str, bytes]
"""(root name, path relative to it)."""

DEFAULT_ZONE_SIZE: Final = 64 * 1024
DEFAULT_EXTENT_SIZE: Final = 4 * 1024 * 1024
DEFAULT_HOT_EXTENTS: Final = 256
DEFAULT_FLUSH_EVERY: Final = 64
DEFAULT_HEAT_AHEAD: Final = 8
"""Extents heated ahead of a sequential writer (at most a quarter of the hot set)."""
DEFAULT_LOG_LIMIT: Final = 8 * 1024 * 1024
"""Log size (bytes) at which a checkpoint folds the log into the map."""

_NO_TAIL: Final = 2**64 - 1


class TrackingStateLost(UsageError):
    """The state directory holds no usable tracking state: the peer needs a full sync."""


# --- zones ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Zones:
    """The dirty zones of one file: ``runs`` of zone indices [start, end), sorted,
    disjoint and not touching, all below ``tail``; and, if ``tail`` is not None,
    every zone from ``tail`` on (``tail == 0``: the whole file)."""

    runs: tuple[tuple[int, int], ...] = ()
    tail: int | None = None

    def __contains__(self, zone: object) -> bool:
        if not isinstance(zone, int):
            return False
        if self.tail is not None and zone >= self.tail:
            return True
        i = bisect_right(self.runs, (zone, _NO_TAIL)) - 1
        return i >= 0 and self.runs[i][0] <= zone < self.runs[i][1]

    def count(self, zones_in_file: int) -> int:
        """How many zones are dirty in a file of ``zones_in_file`` zones."""
        below = sum(
            min(end, zones_in_file) - start for start, end in self.runs if start < zones_in_file
        )
        if self.tail is None:
            return below
        return below + max(0, zones_in_file - self.tail)


WHOLE: Final = Zones((), 0)


class _Runs:
    """A mutable ``Zones``: parallel sorted lists of run starts and ends, plus a tail."""

    __slots__ = ("ends", "starts", "tail")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.tail: int | None = None

    def add(self, start: int, end: int) -> None:
        """Mark zones [start, end) dirty (merging with runs it overlaps or touches)."""
        if self.tail is not None and start >= self.tail:
            return
        starts, ends = self.starts, self.ends
        if starts and start >= ends[-1]:  # the common case: at or past the last run
            if start == ends[-1]:
                ends[-1] = end
            else:
                starts.append(start)
                ends.append(end)
            return
        i = bisect_left(ends, start)
        j = bisect_right(starts, end)
        if i == j:
            starts.insert(i, start)
            ends.insert(i, end)
            return
        new_start, new_end = min(starts[i], start), max(ends[j - 1], end)
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]

    def add_tail(self, zone: int) -> None:
        """Mark every zone from ``zone`` on dirty."""
        if self.tail is None or zone < self.tail:
            self.tail = zone

    def add_zones(self, zones: Zones) -> None:
        for start, end in zones.runs:
            self.add(start, end)
        if zones.tail is not None:
            self.add_tail(zones.tail)

    def frozen(self) -> Zones:
        runs: list[tuple[int, int]] = []
        for start, end in zip(self.starts, self.ends, strict=True):
            if self.tail is not None and start >= self.tail:
                break
            runs.append((start, end if self.tail is None else min(end, self.tail)))
        if self.tail is not None and runs and runs[-1][1] == self.tail:
            return Zones(tuple(runs[:-1]), runs[-1][0])
        return Zones(tuple(runs), self.tail)


# --- the change set ------------------------------------------------------------------------------


def _is_under(path: bytes, parent: bytes) -> bool:
    return path == parent or path.startswith(parent + b"/")


@dataclass(frozen=True)
class ChangeSet:
    """What may differ from the peer's copy, per replicated directory.

    - ``files``: per (root, path), the ``Zones`` whose bytes may differ. The
      file's size and times may differ too.
    - ``names``: entries whose existence, type or identity may differ, each
      with everything beneath it; the parent directory's times may differ.
      A resync reconciles such an entry entirely (a file's whole content).
    - ``meta``: entries whose own metadata (mode, owner, times, xattrs, size,
      link count) may differ.
    """

    zone_size: int
    files: Mapping[Key, Zones] = field(default_factory=lambda: MappingProxyType({}))
    names: frozenset[Key] = frozenset()
    meta: frozenset[Key] = frozenset()

    def __post_init__(self) -> None:
        _check_zone_size(self.zone_size, UsageError)

    def __bool__(self) -> bool:
        return bool(self.files or self.names or self.meta)

    def zones_of(self, root: str, path: bytes) -> Zones:
        """The dirty zones of one file (none: ``Zones()``)."""
        return self.files.get((root, path), Zones())

    def name_changed(self, root: str, path: bytes) -> bool:
        """True if the entry, or a directory above it, is in ``names``."""
        return any(r == root and _is_under(path, p) for r, p in self.names)

    def union(self, other: ChangeSet) -> ChangeSet:
        """Everything in either set (``other`` is first re-zoned to this zone size)."""
        merged = ChangeMap(self.zone_size)
        merged.merge(self)
        merged.merge(other)
        return merged.frozen()

    def rezoned(self, zone_size: int) -> ChangeSet:
        """The same changes in zones of ``zone_size`` bytes (each new zone that
        overlaps an old dirty zone is dirty: never smaller)."""
        if zone_size == self.zone_size:
            return self
        out = ChangeMap(zone_size)
        out.merge(self)
        return out.frozen()

    def serialise(self) -> bytes:
        """Bytes for the peer or the disk; ``deserialise`` gives back an equal set."""
        return _encode_changes(self)

    @classmethod
    def deserialise(cls, data: bytes | bytearray | memoryview) -> ChangeSet:
        """Decode ``serialise``'s bytes, validated like network input.

        Raises ``PeerProtocolError`` naming the field: bad magic or version, a
        truncated or over-long buffer, an invalid root or path, a zone size out
        of range, runs not sorted/disjoint or beyond the largest file offset.
        """
        return _decode_changes(memoryview(data).cast("B"))


def _check_zone_size(zone_size: int, error: Callable[[str], Exception]) -> None:
    if not 512 <= zone_size <= 1 << 30:
        raise error(f"zone size {zone_size}: must be 512 bytes to 1 GiB")


class ChangeMap:
    """The mutable map behind a ``ChangeSet``: the rules of what each op may change."""

    def __init__(self, zone_size: int) -> None:
        _check_zone_size(zone_size, UsageError)
        self.zone_size = zone_size
        self.files: dict[Key, _Runs] = {}
        self.names: set[Key] = set()
        self.meta: set[Key] = set()

    def _runs(self, key: Key) -> _Runs:
        runs = self.files.get(key)
        if runs is None:
            runs = self.files[key] = _Runs()
        return runs

    def add_bytes(self, key: Key, offset: int, length: int) -> None:
        """Mark the zones of bytes [offset, offset + length) dirty."""
        if length > 0:
            zs = self.zone_size
            self._runs(key).add(offset // zs, (offset + length - 1) // zs + 1)

    def add_tail(self, key: Key, offset: int) -> None:
        """Mark every zone holding a byte at or after ``offset`` dirty."""
        self._runs(key).add_tail(offset // self.zone_size)

    def record(self, op: Op) -> None:
        """Apply the rule of ``op`` (see the module docstring)."""
        root = op.root
        if isinstance(op, Write):
            self.add_bytes((root, op.path), op.offset, len(op.data))
        elif isinstance(op, Fallocate):
            key = (root, op.path)
            self.meta.add(key)
            if op.mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE):
                self.add_tail(key, op.offset)
            else:
                self.add_bytes(key, op.offset, op.length)
        elif isinstance(op, Truncate):
            key = (root, op.path)
            self.meta.add(key)
            self.add_tail(key, op.size)
        elif isinstance(op, Create | Unlink | Mkdir | Rmdir | Symlink):
            self.names.add((root, op.path))
        elif isinstance(op, Link):
            # Both: a write through either name changes the file under the other one.
            self.names.update(((root, op.existing), (root, op.new)))
        elif isinstance(op, Rename):
            self._rename(root, op.old, op.new, op.flags & RENAME_EXCHANGE != 0)
        elif isinstance(op, Chmod | Chown | Utimens | SetXattr | RemoveXattr):
            self.meta.add((root, op.path))
        # Fsync changes nothing.

    def _rename(self, root: str, old: bytes, new: bytes, exchange: bool) -> None:
        self.names.update(((root, old), (root, new)))
        old_runs = self.files.pop((root, old), None)
        new_runs = self.files.pop((root, new), None)
        if old_runs is not None:
            self.files[(root, new)] = old_runs
        if exchange and new_runs is not None:
            self.files[(root, old)] = new_runs

    def add_extent(self, key: Key, extent: int, extent_size: int) -> None:
        """Mark every zone of activity extent ``extent`` dirty."""
        self.add_bytes(key, extent * extent_size, extent_size)

    def merge(self, changes: ChangeSet) -> None:
        """Add ``changes`` (re-zoned to this map's zone size) to this map."""
        if changes.zone_size == self.zone_size:
            for key, zones in changes.files.items():
                self._runs(key).add_zones(zones)
        else:
            ratio_in, ratio_out = changes.zone_size, self.zone_size
            for key, zones in changes.files.items():
                for start, end in zones.runs:
                    self.add_bytes(key, start * ratio_in, (end - start) * ratio_in)
                if zones.tail is not None:
                    self._runs(key).add_tail(zones.tail * ratio_in // ratio_out)
        self.names |= changes.names
        self.meta |= changes.meta

    def clear(self) -> None:
        self.files.clear()
        self.names.clear()
        self.meta.clear()

    def frozen(self) -> ChangeSet:
        files = {key: runs.frozen() for key, runs in self.files.items()}
        return ChangeSet(
            self.zone_size,
            MappingProxyType({k: z for k, z in files.items() if z.runs or z.tail is not None}),
            frozenset(self.names),
            frozenset(self.meta),
        )


# --- serialisation --------------------------------------------------------------------------------
#
# ChangeSet: b"FOCS" | version u8 | zone_size u32 | files u32 | names u32 | meta u32; per file:
# key | tail u64 (2**64-1: none) | runs u32 | runs x (start u64, end u64); then names and meta keys.
# key: root length u8 | root UTF-8 | path length u16 | path.

_CS_MAGIC: Final = b"FOCS"
_CS_VERSION: Final = 1
_CS_HEAD: Final = struct.Struct(">BIIII")
_RUN: Final = struct.Struct(">QQ")


def _encode_changes(changes: ChangeSet) -> bytes:
    writer = Writer("change set")
    _write_changes(writer, changes)
    return writer.getvalue()


def _write_changes(writer: Writer, changes: ChangeSet) -> None:
    writer.raw(_CS_MAGIC)
    writer.pack(
        _CS_HEAD,
        "header",
        _CS_VERSION,
        changes.zone_size,
        len(changes.files),
        len(changes.names),
        len(changes.meta),
    )
    for (root, path), zones in sorted(changes.files.items()):
        write_key(writer, "file", root, path)
        writer.number(U64, "tail", _NO_TAIL if zones.tail is None else zones.tail)
        writer.number(U32, "runs", len(zones.runs))
        for start, end in zones.runs:
            writer.pack(_RUN, "run", start, end)
    for what, keys in (("name", changes.names), ("meta", changes.meta)):
        for root, path in sorted(keys):
            write_key(writer, what, root, path)


def _decode_changes(view: memoryview) -> ChangeSet:
    reader = Reader(view, "change set")
    magic = reader.bytes(len(_CS_MAGIC), "magic")
    if magic != _CS_MAGIC:
        raise reader.fail("magic", f"bad magic {magic!r}")
    version, zone_size, n_files, n_names, n_meta = reader.unpack(_CS_HEAD, "header")
    if version != _CS_VERSION:
        raise reader.fail("header", f"unknown version {version}")
    _check_zone_size(zone_size, lambda problem: reader.fail("header", problem))
    max_zone = MAX_OFFSET // zone_size + 1
    files: dict[Key, Zones] = {}
    for i in range(n_files):
        key = read_key(reader, f"file {i}")
        if key in files:
            raise reader.fail(f"file {i}", f"{key!r} listed twice")
        tail = reader.number(U64, f"file {i} tail")
        if tail != _NO_TAIL and tail > max_zone:
            raise reader.fail(f"file {i} tail", f"zone {tail} beyond the largest file")
        n_runs = reader.number(U32, f"file {i} runs")
        runs = []
        previous_end = -1
        for j in range(n_runs):
            start, end = reader.unpack(_RUN, f"file {i} run {j}")
            if not previous_end < start < end <= max_zone:
                raise reader.fail(
                    f"file {i} run {j}", f"[{start}, {end}) not sorted/disjoint/valid"
                )
            if tail != _NO_TAIL and end >= tail:
                raise reader.fail(f"file {i} run {j}", f"reaches past the tail {tail}")
            runs.append((start, end))
            previous_end = end
        zones = Zones(tuple(runs), None if tail == _NO_TAIL else tail)
        if zones == Zones():
            raise reader.fail(f"file {i}", "no dirty zone")
        files[key] = zones
    names = _decode_keys(reader, n_names, "name")
    meta = _decode_keys(reader, n_meta, "meta")
    reader.end()
    return ChangeSet(zone_size, MappingProxyType(files), names, meta)


def _decode_keys(reader: Reader, count: int, what: str) -> frozenset[Key]:
    keys: set[Key] = set()
    for i in range(count):
        key = read_key(reader, f"{what} {i}")
        if key in keys:
            raise reader.fail(f"{what} {i}", f"{key!r} listed twice")
        keys.add(key)
    return frozenset(keys)


# --- the log and the checkpoint -----------------------------------------------------------------
#
# Log file "log.<generation>": records, each length u32 | crc32 u32 | payload (length bytes).
# Payload: kind u8, then for _HEAT: key | extent u64; for _OP: ops.encode(op) (SetXattr value
# dropped). Checkpoint file "checkpoint": b"FOTRCKP1" | crc32 u32 of the rest | body:
# zone_size u32 | extent_size u64 | generation u64 | in_sync u8 | since length u16 | since UTF-8 |
# hot count u32 | hot x (key | extent u64) | ChangeSet.serialise().

_REC_HEAD: Final = struct.Struct(">II")
_HEAT: Final = 1
_OP: Final = 2
_LOG_CHUNK: Final = 64 * 1024
"""The log is written with zeros ahead of its records, this much at a time."""
_CK_MAGIC: Final = b"FOTRCKP1"
_CK_HEAD: Final = struct.Struct(">IQQB")
_NO_SINCE: Final = MAX_U16
CHECKPOINT_NAME: Final = "checkpoint"

ExtentKey = tuple[str, bytes, int]


def _frame(payload: bytes) -> bytes:
    return _REC_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def _heat_record(extent: ExtentKey) -> bytes:
    writer = Writer("log record")
    writer.number(U8, "kind", _HEAT)
    write_key(writer, "extent", extent[0], extent[1])
    writer.number(U64, "extent", extent[2])
    return _frame(writer.getvalue())


def _op_record(op: Op) -> bytes:
    if isinstance(op, SetXattr):
        op = replace(op, value=b"")
    return _frame(bytes((_OP,)) + encode(op))


def _log_name(generation: int) -> str:
    return f"log.{generation}"


@dataclass(frozen=True)
class Recovery:
    """What ``Tracker.recover`` found in a state directory."""

    changes: ChangeSet
    """A superset of every change made since the epoch began (see the module docstring)."""
    in_sync: bool
    """True if the node was replicating synchronously (changes = what may be unacknowledged)."""
    since: str | None
    """The ``epoch_start`` argument of the epoch in progress (None while in sync)."""
    records: int
    """Log records replayed."""
    torn_bytes: int
    """Bytes ignored after the last valid log record, up to the last non-zero byte (a
    torn or partial last record); 0 if clean. The log is zero-filled ahead of its end."""
    zone_size: int
    extent_size: int


@dataclass
class _State:
    zone_size: int
    extent_size: int
    generation: int
    in_sync: bool
    since: str | None
    hot: list[ExtentKey]
    changes: ChangeSet


def _encode_checkpoint(state: _State) -> bytes:
    writer = Writer("tracking checkpoint")
    writer.pack(
        _CK_HEAD, "header", state.zone_size, state.extent_size, state.generation, state.in_sync
    )
    if state.since is None:
        writer.number(U16, "since length", _NO_SINCE)
    else:
        since = state.since.encode("utf-8")
        if len(since) >= _NO_SINCE:
            raise writer.fail("since", f"{len(since)} bytes, more than {_NO_SINCE - 1}")
        writer.sized(U16, "since", since)
    writer.number(U32, "hot count", len(state.hot))
    for root, path, extent in state.hot:
        write_key(writer, "hot extent", root, path)
        writer.number(U64, "hot extent", extent)
    _write_changes(writer, state.changes)
    body = writer.getvalue()
    return _CK_MAGIC + U32.pack(zlib.crc32(body)) + body


def _decode_checkpoint(data: bytes, where: Path) -> _State:
    head = len(_CK_MAGIC) + U32.size
    if data[: len(_CK_MAGIC)] != _CK_MAGIC or len(data) < head:
        raise TrackingStateLost(f"{where}: not a tracking checkpoint")
    (crc,) = U32.unpack_from(data, len(_CK_MAGIC))
    body = memoryview(data)[head:]
    if zlib.crc32(body) != crc:
        raise TrackingStateLost(f"{where}: checksum mismatch, the checkpoint is damaged")
    reader = Reader(body, "tracking checkpoint")
    try:
        zone_size, extent_size, generation, in_sync = reader.unpack(_CK_HEAD, "header")
        since_len = reader.number(U16, "since length")
        since = None if since_len == _NO_SINCE else str(reader.take(since_len, "since"), "utf-8")
        n_hot = reader.number(U32, "hot count")
        hot = []
        for i in range(n_hot):
            root, path = read_key(reader, f"hot extent {i}")
            hot.append((root, path, reader.number(U64, f"hot extent {i}")))
        changes = _decode_changes(reader.rest())
    except (PeerProtocolError, UnicodeDecodeError) as error:
        raise TrackingStateLost(f"{where}: {error}") from None
    return _State(zone_size, extent_size, generation, bool(in_sync), since, hot, changes)


def _replay(data: bytes, into: ChangeMap, extent_size: int) -> tuple[int, int]:
    """Apply every valid log record of ``data`` to ``into``: (records, torn bytes)."""
    view = memoryview(data)
    pos = records = 0
    while pos + _REC_HEAD.size <= len(view):
        length, crc = _REC_HEAD.unpack_from(view, pos)
        payload = view[pos + _REC_HEAD.size : pos + _REC_HEAD.size + length]
        if length == 0 or len(payload) != length or zlib.crc32(payload) != crc:
            break
        try:
            _replay_record(payload, into, extent_size)
        except PeerProtocolError:
            break  # checksummed yet undecodable: treat as the torn end
        pos += _REC_HEAD.size + length
        records += 1
    return records, len(bytes(view[pos:]).rstrip(b"\0"))


def _replay_record(payload: memoryview, into: ChangeMap, extent_size: int) -> None:
    reader = Reader(payload, "log record")
    kind = reader.number(U8, "kind")
    if kind == _HEAT:
        key = read_key(reader, "extent")
        extent = reader.number(U64, "extent")
        reader.end()
        into.add_extent(key, extent, extent_size)
    elif kind == _OP:
        into.record(decode(reader.rest()))
    else:
        raise reader.fail("kind", f"unknown record kind {kind}")


def _load(state_dir: Path) -> tuple[_State, Recovery]:
    where = state_dir / CHECKPOINT_NAME
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        raise TrackingStateLost(f"{where}: no tracking checkpoint") from None
    state = _decode_checkpoint(data, where)
    out = ChangeMap(state.zone_size)
    out.merge(state.changes)
    for root, path, extent in state.hot:
        out.add_extent((root, path), extent, state.extent_size)
    log = state_dir / _log_name(state.generation)
    try:
        records, torn = _replay(log.read_bytes(), out, state.extent_size)
    except FileNotFoundError:
        raise TrackingStateLost(f"{log}: the log named by the checkpoint is missing") from None
    recovery = Recovery(
        out.frozen(),
        state.in_sync,
        state.since,
        records,
        torn,
        state.zone_size,
        state.extent_size,
    )
    return state, recovery


# --- the tracker ---------------------------------------------------------------------------------

PeerBarrier = Callable[[], bool]
"""Blocks until every op whose ``before`` returned is acknowledged by the peer or failed
locally; True if so, False if it cannot say (peer gone, timeout)."""


class Tracker:
    """Records changes crash-safely in ``state_dir`` (module docstring: rules, costs, recovery).

    Opening a directory that holds state continues it: the recovered changes
    (``recovered``) become the starting map, re-zoned to ``zone_size`` if it
    changed, and no peer barrier forgets them before the next ``clear``
    (after a crash in sync they are what the peer may lack). Raises
    ``TrackingStateLost`` if the state is damaged: arrange a full sync and
    remove the directory. A new directory starts in sync with nothing
    recorded; call ``epoch_start`` when the node starts serving without an
    in-sync peer.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        zone_size: int = DEFAULT_ZONE_SIZE,
        extent_size: int = DEFAULT_EXTENT_SIZE,
        hot_extents: int = DEFAULT_HOT_EXTENTS,
        flush_every: int = DEFAULT_FLUSH_EVERY,
        log_limit: int = DEFAULT_LOG_LIMIT,
        heat_ahead: int = DEFAULT_HEAT_AHEAD,
        sync_namespace: bool = False,
        peer_barrier: PeerBarrier | None = None,
    ) -> None:
        _check_zone_size(zone_size, UsageError)
        if extent_size < zone_size or extent_size % zone_size:
            raise UsageError(f"extent size {extent_size}: must be a multiple of the zone size")
        if hot_extents < 2:
            raise UsageError(f"hot extents {hot_extents}: must be at least 2")
        if flush_every < 1:
            raise UsageError(f"flush every {flush_every}: must be at least 1 record")
        self.state_dir = Path(state_dir)
        self.zone_size = zone_size
        self.extent_size = extent_size
        self.hot_extents = hot_extents
        self._flush_every = flush_every
        self._log_limit = log_limit
        self._sync_namespace = sync_namespace
        self._heat_ahead = heat_ahead
        self._barrier = peer_barrier
        self._lock = threading.Lock()
        self._map = ChangeMap(zone_size)
        self._hot: OrderedDict[ExtentKey, None] = OrderedDict()
        self._unsynced = 0
        self._log_bytes = 0
        self._log_allocated = 0
        self._log_fd = -1
        self._closed = False
        self._broken: OSError | None = None
        self.recovered: Recovery | None = None
        self.checkpoints = 0
        """Checkpoints written (each costs a few fsyncs); for benches and tests."""
        self.extent_records = 0
        """Extents recorded hot."""
        self.extent_syncs = 0
        """fdatasyncs of extent records (one per write that needed a new hot extent)."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"tracking state directory {self.state_dir}: {error}") from None
        self._generation = 0
        self._in_sync = True
        self._since: str | None = None
        if (self.state_dir / CHECKPOINT_NAME).exists():
            state, self.recovered = _load(self.state_dir)
            self._generation = state.generation
            self._in_sync = state.in_sync
            self._since = state.since
            self._map.merge(self.recovered.changes)
        self._forgettable = not self._has_changes()
        """False while the map holds changes recovered from a crash (until ``clear``)."""
        try:
            with self._lock:
                self._checkpoint(keep=0)
        except OSError as error:
            raise UsageError(
                f"tracking state directory {self.state_dir} cannot be written: "
                f"{error.strerror or error}"
            ) from None
        self._remove_stale_logs()

    # MirrorListener ---------------------------------------------------------------------------

    def before(self, op: Op) -> None:
        """Record ``op`` durably enough (module docstring) before the mirror applies it.

        Raises ``OSError`` if the state directory cannot be written: the mirror
        must then refuse the change (EIO), never make it untracked.
        """
        if isinstance(op, Fsync):
            return
        with self._lock:
            self._check_open()
            try:
                # Any checkpoint comes before this op is in the map: a peer barrier
                # there must not forget an op whose ``before`` has not returned.
                if self._log_bytes > self._log_limit:
                    self._checkpoint(keep=len(self._hot))
                if isinstance(op, Write):
                    self._before_write(op)
                else:
                    self._map.record(op)
                    self._append(_op_record(op), sync=self._sync_namespace)
            except OSError as error:
                self._broken = error
                raise

    def after(self, op: Op) -> None:
        """Nothing to do: everything was recorded in ``before``."""

    def sync(self, op: Fsync) -> None:
        """The application asked for durability: make every log record durable first."""
        self.flush()

    # ------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """fdatasync the log if it holds records not yet synced (the daemon may call it
        every second to bound what a power loss can take)."""
        with self._lock:
            if self._closed:
                return
            if self._broken is not None:
                self._heal()  # a checkpoint makes everything recorded durable
                return
            if self._unsynced:
                try:
                    os.fdatasync(self._log_fd)
                except OSError as error:
                    self._broken = error
                    raise
                self._unsynced = 0

    def changes(self) -> ChangeSet:
        """Everything recorded since the epoch began (in sync: what may be unacknowledged)."""
        with self._lock:
            return self._map.frozen()

    def hot(self) -> ChangeSet:
        """Every zone of every hot extent."""
        out = ChangeMap(self.zone_size)
        with self._lock:
            for root, path, extent in self._hot:
                out.add_extent((root, path), extent, self.extent_size)
        return out.frozen()

    @property
    def in_sync(self) -> bool:
        return self._in_sync

    @property
    def since(self) -> str | None:
        return self._since

    def epoch_start(self, since: str) -> None:
        """The node serves without an in-sync peer from now on: keep every change.

        ``since`` names the base the changes are relative to (e.g. the data
        generation the peer holds); ``recover`` returns it. What was recorded
        while in sync (possibly unacknowledged) is kept. Durable on return, or,
        if the state directory cannot be written, every change is refused until
        it is (see ``_heal``): never raises for the disk.
        """
        if len(since.encode("utf-8", "surrogatepass")) > 1024:
            raise UsageError(f"epoch_start: 'since' longer than 1024 bytes: {since[:64]!r}...")
        with self._lock:
            self._check_open()
            self._in_sync, self._since = False, since
            self._checkpoint_or_break()

    def clear(self) -> None:
        """The peer holds every change recorded so far: forget them, replicate in sync.

        The caller promises that every op whose ``before`` returned is on the
        peer (or failed). The hot extents stay hot. Durable on return, or every
        change is refused until it is (as ``epoch_start``).
        """
        with self._lock:
            self._check_open()
            self._map.clear()
            self._in_sync, self._since = True, None
            self._forgettable = True
            self._checkpoint_or_break()

    def checkpoint(self) -> None:
        """Write the map now (keeping the hot set); folds the log into the checkpoint."""
        with self._lock:
            self._check_open()
            self._checkpoint(keep=len(self._hot))

    def close(self) -> None:
        """Clean close: a last checkpoint, with no hot extent if the map holds every zone.

        If the state directory cannot be written the files stay as a crash would
        leave them (``recover`` reads them the same way); close never raises for it.
        """
        with self._lock:
            if self._closed:
                return
            try:
                if self._broken is None:
                    self._checkpoint(keep=0)
            except OSError as error:
                self._broken = error
            os.close(self._log_fd)
            self._closed = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @staticmethod
    def recover(state_dir: Path | str) -> Recovery:
        """Read the state a tracker left in ``state_dir`` (after a crash or a close).

        Read-only. Raises ``TrackingStateLost`` if there is no checkpoint or it
        is damaged (the caller must then fall back to a full sync).
        """
        return _load(Path(state_dir))[1]

    # internals (called with the lock held) ---------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"tracker of {self.state_dir} is closed")
        if self._broken is not None:
            self._heal()

    def _heal(self) -> None:
        """A write failed earlier (a full or failing state directory): the log on
        disk may lack records (a failed fdatasync may drop them) and the mode set by
        ``epoch_start``/``clear`` may not be durable. A checkpoint of the map in
        memory (a superset of every change recorded, in the current mode) replaces
        both; until one succeeds every change is refused with the disk's error."""
        try:
            self._checkpoint(keep=len(self._hot))
        except OSError as error:
            self._broken = error
            raise OSError(
                error.errno,
                f"change tracking in {self.state_dir} failed earlier and cannot write yet "
                f"({error.strerror or error}); every change is refused until it can",
            ) from error
        self._broken = None

    def _checkpoint_or_break(self) -> None:
        """A checkpoint that must be durable before the next change: if it fails,
        the tracker refuses every change until ``_heal`` writes one."""
        try:
            self._checkpoint(keep=len(self._hot))
        except OSError as error:
            self._broken = error

    def _before_write(self, op: Write) -> None:
        length = len(op.data)
        if length == 0:
            return
        es = self.extent_size
        extents = [
            (op.root, op.path, extent)
            for extent in range(op.offset // es, (op.offset + length - 1) // es + 1)
        ]
        new = self._touch(extents)
        if new:
            ahead = self._ahead(extents)
            if len(self._hot) + len(new) + len(ahead) > self.hot_extents:
                self._checkpoint(keep=self.hot_extents // 2)
                new = self._touch(extents)
            new += ahead
            self._append(b"".join(_heat_record(e) for e in new), sync=True)
            self.extent_records += len(new)
            self.extent_syncs += 1
            for ext_key in new:
                self._hot[ext_key] = None
        self._map.add_bytes((op.root, op.path), op.offset, length)

    def _ahead(self, extents: list[ExtentKey]) -> list[ExtentKey]:
        """The extents to heat ahead of a sequential writer: if the extent before the
        write's is hot, the next ``heat_ahead`` ones not hot yet (one fdatasync for all)."""
        root, path, first = extents[0]
        count = min(self._heat_ahead, self.hot_extents // 4)
        if count == 0 or (root, path, first - 1) not in self._hot:
            return []
        last = extents[-1][2]
        following = ((root, path, last + k) for k in range(1, count + 1))
        return [ext_key for ext_key in following if ext_key not in self._hot]

    def _touch(self, extents: list[ExtentKey]) -> list[ExtentKey]:
        """Mark the hot ones of ``extents`` most recent; return the others."""
        new = []
        for ext_key in extents:
            if ext_key in self._hot:
                self._hot.move_to_end(ext_key)
            else:
                new.append(ext_key)
        return new

    def _append(self, records: bytes, *, sync: bool) -> None:
        end = self._log_bytes + len(records)
        if end > self._log_allocated:
            self._log_allocated = self._preallocate(self._log_fd, self._log_allocated, end)
        os.pwrite(self._log_fd, records, self._log_bytes)
        self._log_bytes = end
        self._unsynced += 1
        if sync or self._unsynced >= self._flush_every:
            os.fdatasync(self._log_fd)
            self._unsynced = 0

    def _checkpoint(self, keep: int) -> None:
        """Fold the map into a new checkpoint; keep the ``keep`` most recent extents hot.

        Crash-safe at every step: the new (empty) log exists before the checkpoint
        naming it is renamed into place; the old log is removed only after.
        """
        if (
            self._in_sync
            and self._forgettable
            and self._barrier is not None
            and self._has_changes()
            and self._barrier()
        ):
            self._map.clear()
        while len(self._hot) > keep:
            self._hot.popitem(last=False)
        generation = self._generation + 1
        log_path = self.state_dir / _log_name(generation)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            allocated = self._preallocate(log_fd, 0, 1)
            os.fsync(log_fd)
            state = _State(
                self.zone_size,
                self.extent_size,
                generation,
                self._in_sync,
                self._since,
                list(self._hot),
                self._map.frozen(),
            )
            # Also makes the new log's directory entry durable (directory fsync).
            write_atomic(self.state_dir / CHECKPOINT_NAME, _encode_checkpoint(state))
        except BaseException:
            os.close(log_fd)
            raise
        if self._log_fd >= 0:
            os.close(self._log_fd)
        self._log_fd, self._generation = log_fd, generation
        self._log_bytes = self._unsynced = 0
        self._log_allocated = allocated
        self.checkpoints += 1
        (self.state_dir / _log_name(generation - 1)).unlink(missing_ok=True)

    @staticmethod
    def _preallocate(fd: int, allocated: int, needed: int) -> int:
        """Write zeros from ``allocated`` to past ``needed``: an fdatasync of records
        written over them then flushes data only (no size or extent change to journal)."""
        size = -(-needed // _LOG_CHUNK) * _LOG_CHUNK
        os.pwrite(fd, bytes(size - allocated), allocated)
        return size

    def _has_changes(self) -> bool:
        return bool(self._map.files or self._map.names or self._map.meta)

    def _remove_stale_logs(self) -> None:
        for stale in _stale_logs(self.state_dir, self._generation):
            stale.unlink(missing_ok=True)


def _stale_logs(state_dir: Path, generation: int) -> Iterator[Path]:
    current = _log_name(generation)
    for entry in state_dir.iterdir():
        if entry.name.startswith("log.") and entry.name != current:
            yield entry


def record_all(ops: Iterable[Op], zone_size: int) -> ChangeSet:
    """The exact change set the rules give for ``ops`` (no log, no hot set): for tests
    and for reasoning about what the tracker must at least contain."""
    out = ChangeMap(zone_size)
    for op in ops:
        out.record(op)
    return out.frozen()
