"""The resync messages: a pure codec, no I/O.

Two things cross the network for a resync.

``ResyncRequest`` (target -> source, at the start): the returning node's data
generation, whether it asks for a full copy, and its *suspect set*: what it may
hold that the source does not (``Tracker.recover(state_dir).changes`` of a
crashed ex-primary: zones and names it may have written without an
acknowledgement), and optionally its *checks* (``ZoneChecks``): digests of
what it holds in the suspect zones, so that the source sends only the zones
that differ. Layout (version 1 has no checks; version 2 has them)::

    b"FORQ" | version u8 | full u8 | generation length u16 | generation UTF-8 |
    (version 2: ChangeSet length u32) | ChangeSet | (version 2: ZoneChecks)

``ZoneChecks``: b"FOZC" | zone_size u32 | file count u32 | per file: key | size u64 |
whole u8 | run count u32 | per run: first zone u64 | zone count u32 | one
``CHECK_DIGEST_SIZE``-byte SHA-256 digest per zone. ``whole``: a suspect *name*
that is a regular file of one link here, every zone of it digested.

Resync items (source -> target): the payload of ``RESYNC`` entries of the
replication channel, in one order with the live ops. Each is ``tag u8 | body``;
a *key* is ``root length u8 | root UTF-8 | path length u16 | path`` (the path
is empty only for the root directory of a full sync), integers big-endian:

- ``BEGIN``: full u8 | root count u8 | root names (u8 length, UTF-8) | ChangeSet:
  the plan; the target is inconsistent from here on.
- ``ABSENT`` key: nothing is there on the source.
- ``DIR`` key | mode u32 | child count u32 | child names (u16 length each):
  a directory with exactly these children (their own items follow).
- ``SYMLINK`` key | target length u16 | target.
- ``FILE`` key | mode u32: a regular file; its content follows as chunks.
- ``CHUNK`` key | first zone u64 | end zone u64 | file size u64 | extent count u32 |
  per extent: offset u64 | length u32 | data. Zones [first, end) hold exactly
  these data extents (the rest of them is a hole); the file has this size.
- ``META`` key | mode u32 | uid u32 | gid u32 | atime ns i64 | mtime ns i64 |
  xattr count u16 | per xattr: name length u8 | value length u32 | name | value.
- ``END``: everything was sent.

``decode_item`` and ``ResyncRequest.decode`` raise ``PeerProtocolError`` naming
the item and field.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from failover.errors import PeerProtocolError, UsageError
from failover.replication.ops import (
    MAX_COMPONENT,
    MAX_OFFSET,
    MAX_ROOT_NAME,
    MAX_XATTR_NAME,
    MAX_XATTR_VALUE,
    validate_path,
)
from failover.replication.tracking import ChangeSet

REQUEST_MAGIC: Final = b"FORQ"
REQUEST_VERSION: Final = 1
REQUEST_VERSION_CHECKS: Final = 2
MAX_GENERATION: Final = 1024
CHECKS_MAGIC: Final = b"FOZC"
CHECK_DIGEST_SIZE: Final = 32
"""SHA-256: an equal digest is taken as equal data (the zone is not sent). Chosen over
blake2b by measurement: 642 against 447 MiB/s on the 2-vCPU VM (SHA-NI)."""

_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_DIR: Final = struct.Struct(">II")
_CHUNK: Final = struct.Struct(">QQQI")
_EXTENT: Final = struct.Struct(">QI")
_META: Final = struct.Struct(">IIIqqH")
_XATTR: Final = struct.Struct(">BI")

BEGIN, ABSENT, DIR, SYMLINK, FILE, CHUNK, META, END = range(1, 9)
_TAG_NAMES: Final = ("", "BEGIN", "ABSENT", "DIR", "SYMLINK", "FILE", "CHUNK", "META", "END")


# --- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileCheck:
    """What the target holds in one suspect file: its ``size`` and the digest of each
    listed zone (``digests``: zone index -> digest); ``whole``: every zone, for a
    suspect name."""

    size: int
    whole: bool
    digests: Mapping[int, bytes]


@dataclass(frozen=True)
class ZoneChecks:
    """The target's ``FileCheck`` per (root, path) of its suspect set."""

    zone_size: int
    files: Mapping[tuple[str, bytes], FileCheck]

    def encode(self) -> bytes:
        parts = [CHECKS_MAGIC, _U32.pack(self.zone_size), _U32.pack(len(self.files))]
        for (root, path), check in sorted(self.files.items()):
            parts.append(_key(root, path))
            parts.append(_U64.pack(check.size) + _U8.pack(int(check.whole)))
            runs = zone_runs(sorted(check.digests))
            parts.append(_U32.pack(len(runs)))
            for first, end in runs:
                parts.append(_U64.pack(first) + _U32.pack(end - first))
                parts.extend(check.digests[zone] for zone in range(first, end))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> ZoneChecks:
        reader = _Reader(memoryview(data), "ZoneChecks")
        checks = _read_checks(reader)
        reader.end()
        return checks


def zone_runs(zones: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct zone indices as runs [first, end)."""
    runs: list[tuple[int, int]] = []
    for zone in zones:
        if runs and runs[-1][1] == zone:
            runs[-1] = (runs[-1][0], zone + 1)
        else:
            runs.append((zone, zone + 1))
    return runs


def _read_checks(reader: _Reader) -> ZoneChecks:
    if bytes(reader.take(4, "magic")) != CHECKS_MAGIC:
        raise reader.fail("magic", "not zone checks")
    zone_size = reader.number(_U32, "zone size")
    if not 512 <= zone_size <= 1 << 30:
        raise reader.fail("zone size", f"{zone_size}: must be 512 bytes to 1 GiB")
    files: dict[tuple[str, bytes], FileCheck] = {}
    for _ in range(reader.number(_U32, "file count")):
        key = (reader.root(), reader.path(empty_ok=False))
        if key in files:
            raise reader.fail("path", f"{key!r} listed twice")
        size = reader.number(_U64, "size")
        if size > MAX_OFFSET:
            raise reader.fail("size", f"{size} beyond the largest file")
        whole = reader.flag("whole")
        zones = -(-size // zone_size)
        digests: dict[int, bytes] = {}
        previous = -1
        for _ in range(reader.number(_U32, "run count")):
            first = reader.number(_U64, "first zone")
            count = reader.number(_U32, "zone count")
            if first <= previous or count == 0 or first + count > zones:
                raise reader.fail("run", f"zones [{first}, {first + count}) of {zones}: invalid")
            for zone in range(first, first + count):
                digests[zone] = bytes(reader.take(CHECK_DIGEST_SIZE, "digest"))
            previous = first + count
        if whole and len(digests) != zones:
            raise reader.fail("whole", f"{len(digests)} digests for {zones} zones")
        files[key] = FileCheck(size, whole, MappingProxyType(digests))
    return ZoneChecks(zone_size, MappingProxyType(files))


@dataclass(frozen=True)
class ResyncRequest:
    """What a returning node asks of the serving node (see the module docstring)."""

    generation: str
    full: bool
    suspect: ChangeSet
    checks: ZoneChecks | None = None

    def encode(self) -> bytes:
        generation = self.generation.encode("utf-8")
        if len(generation) > MAX_GENERATION:
            raise UsageError(f"ResyncRequest.generation: longer than {MAX_GENERATION} bytes")
        suspect = self.suspect.serialise()
        head = (
            REQUEST_MAGIC,
            _U8.pack(REQUEST_VERSION if self.checks is None else REQUEST_VERSION_CHECKS),
            _U8.pack(int(self.full)),
            _U16.pack(len(generation)),
            generation,
        )
        if self.checks is None:
            return b"".join((*head, suspect))
        return b"".join((*head, _U32.pack(len(suspect)), suspect, self.checks.encode()))

    @classmethod
    def decode(cls, data: bytes) -> ResyncRequest:
        reader = _Reader(memoryview(data), "ResyncRequest")
        if bytes(reader.take(4, "magic")) != REQUEST_MAGIC:
            raise reader.fail("magic", "not a resync request")
        version = reader.number(_U8, "version")
        if version not in (REQUEST_VERSION, REQUEST_VERSION_CHECKS):
            raise reader.fail("version", f"unknown version {version}")
        full = reader.flag("full")
        generation = reader.text(reader.number(_U16, "generation length"), "generation")
        if version == REQUEST_VERSION:
            return cls(generation, full, reader.changes())
        suspect = ChangeSet.deserialise(
            reader.take(reader.number(_U32, "suspect length"), "suspect")
        )
        checks = _read_checks(reader)
        reader.end()
        if checks.zone_size != suspect.zone_size:
            raise reader.fail("checks", f"zone size {checks.zone_size} != {suspect.zone_size}")
        return cls(generation, full, suspect, checks)


# --- the items -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    full: bool
    roots: tuple[str, ...]
    changes: ChangeSet


@dataclass(frozen=True, slots=True)
class Absent:
    root: str
    path: bytes


@dataclass(frozen=True, slots=True)
class Dir:
    root: str
    path: bytes
    mode: int
    children: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Link:
    root: str
    path: bytes
    target: bytes


@dataclass(frozen=True, slots=True)
class File:
    root: str
    path: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class Chunk:
    root: str
    path: bytes
    first_zone: int
    end_zone: int
    size: int
    extents: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Meta:
    root: str
    path: bytes
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    xattrs: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class End:
    pass


Entry = Absent | Dir | Link | File
"""What a name is on the source: the items that reconcile a name."""
Item = Begin | Entry | Chunk | Meta | End


def _key(root: str, path: bytes) -> bytes:
    name = root.encode("utf-8")
    return b"".join((_U8.pack(len(name)), name, _U16.pack(len(path)), path))


def _sized(length: struct.Struct, value: bytes) -> bytes:
    return length.pack(len(value)) + value


def encode_item(item: Item) -> bytes:
    """The payload of one ``RESYNC`` entry."""
    if isinstance(item, Begin):
        names = b"".join(_sized(_U8, root.encode("utf-8")) for root in item.roots)
        head = _U8.pack(BEGIN) + _U8.pack(int(item.full)) + _U8.pack(len(item.roots))
        return head + names + item.changes.serialise()
    if isinstance(item, End):
        return _U8.pack(END)
    key = _key(item.root, item.path)
    if isinstance(item, Absent):
        return _U8.pack(ABSENT) + key
    if isinstance(item, Dir):
        children = b"".join(_sized(_U16, child) for child in item.children)
        return _U8.pack(DIR) + key + _DIR.pack(item.mode, len(item.children)) + children
    if isinstance(item, Link):
        return _U8.pack(SYMLINK) + key + _sized(_U16, item.target)
    if isinstance(item, File):
        return _U8.pack(FILE) + key + _U32.pack(item.mode)
    if isinstance(item, Chunk):
        head = _CHUNK.pack(item.first_zone, item.end_zone, item.size, len(item.extents))
        parts = [_U8.pack(CHUNK), key, head]
        for offset, data in item.extents:
            parts += (_EXTENT.pack(offset, len(data)), data)
        return b"".join(parts)
    head = _META.pack(item.mode, item.uid, item.gid, item.atime_ns, item.mtime_ns, len(item.xattrs))
    parts = [_U8.pack(META), key, head]
    for name, value in item.xattrs:
        parts += (_XATTR.pack(len(name), len(value)), name, value)
    return b"".join(parts)


def decode_item(data: bytes) -> Item:
    """Decode one resync item, validated like any network input."""
    view = memoryview(data)
    if not view:
        raise PeerProtocolError("resync item: empty")
    tag = view[0]
    if not BEGIN <= tag <= END:
        raise PeerProtocolError(f"resync item: unknown tag {tag}")
    reader = _Reader(view[1:], f"resync {_TAG_NAMES[tag]}")
    item = _decode_body(tag, reader)
    reader.end()
    return item


def _decode_body(tag: int, reader: _Reader) -> Item:
    if tag == BEGIN:
        full = reader.flag("full")
        roots = tuple(reader.root() for _ in range(reader.number(_U8, "root count")))
        return Begin(full, roots, reader.changes())
    if tag == END:
        return End()
    root, path = reader.root(), reader.path(empty_ok=tag == DIR)
    if tag == ABSENT:
        return Absent(root, path)
    if tag == DIR:
        mode, count = reader.unpack(_DIR, "mode")
        children = tuple(reader.child() for _ in range(count))
        return Dir(root, path, mode, children)
    if tag == SYMLINK:
        target = bytes(reader.take(reader.number(_U16, "target length"), "target"))
        if not target or b"\0" in target:
            raise reader.fail("target", "empty or holds a NUL byte")
        return Link(root, path, target)
    if tag == FILE:
        return File(root, path, reader.number(_U32, "mode"))
    if tag == CHUNK:
        first, end, size, count = reader.unpack(_CHUNK, "zones")
        if first > end or size > MAX_OFFSET:
            raise reader.fail("zones", f"zones [{first}, {end}) or size {size} out of range")
        extents = []
        for _ in range(count):
            offset, length = reader.unpack(_EXTENT, "extent")
            extents.append((offset, bytes(reader.take(length, "extent data"))))
        return Chunk(root, path, first, end, size, tuple(extents))
    mode, uid, gid, atime, mtime, count = reader.unpack(_META, "meta")
    xattrs = []
    for _ in range(count):
        name_length, value_length = reader.unpack(_XATTR, "xattr")
        name = bytes(reader.take(name_length, "xattr name"))
        if not name or b"\0" in name or len(name) > MAX_XATTR_NAME:
            raise reader.fail("xattr name", f"invalid name {name!r}")
        if value_length > MAX_XATTR_VALUE:
            raise reader.fail("xattr value", f"{value_length} bytes")
        xattrs.append((name, bytes(reader.take(value_length, "xattr value"))))
    return Meta(root, path, mode, uid, gid, atime, mtime, tuple(xattrs))


class _Reader:
    """Reads fields off a buffer; every problem is a ``PeerProtocolError`` naming the field."""

    def __init__(self, view: memoryview, what: str) -> None:
        self._view = view
        self._pos = 0
        self._what = what

    def fail(self, field: str, problem: str) -> PeerProtocolError:
        return PeerProtocolError(f"{self._what}.{field}: {problem}")

    def take(self, size: int, field: str) -> memoryview:
        if self._pos + size > len(self._view):
            raise self.fail(field, "truncated")
        out = self._view[self._pos : self._pos + size]
        self._pos += size
        return out

    def unpack(self, fmt: struct.Struct, field: str) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size, field))

    def number(self, fmt: struct.Struct, field: str) -> int:
        value: int = self.unpack(fmt, field)[0]
        return value

    def flag(self, field: str) -> bool:
        value = self.number(_U8, field)
        if value > 1:
            raise self.fail(field, f"{value} is not 0 or 1")
        return value == 1

    def text(self, size: int, field: str) -> str:
        try:
            return bytes(self.take(size, field)).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(field, "not UTF-8") from None

    def root(self) -> str:
        name = self.text(self.number(_U8, "root length"), "root")
        if not name or len(name.encode("utf-8")) > MAX_ROOT_NAME:
            raise self.fail("root", f"invalid root name {name!r}")
        return name

    def path(self, *, empty_ok: bool) -> bytes:
        path = bytes(self.take(self.number(_U16, "path length"), "path"))
        if path or not empty_ok:
            try:
                validate_path(path)
            except PeerProtocolError as error:
                raise self.fail("path", str(error)) from None
        return path

    def child(self) -> bytes:
        name = bytes(self.take(self.number(_U16, "child length"), "child"))
        if (
            not name
            or len(name) > MAX_COMPONENT
            or b"/" in name
            or b"\0" in name
            or name in (b".", b"..")
        ):
            raise self.fail("child", f"invalid name {name!r}")
        return name

    def changes(self) -> ChangeSet:
        data = self._view[self._pos :]
        self._pos = len(self._view)
        return ChangeSet.deserialise(data)

    def end(self) -> None:
        if self._pos != len(self._view):
            raise self.fail("end", f"{len(self._view) - self._pos} bytes after the last field")
