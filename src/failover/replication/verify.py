"""Verify: compare both sides of a replicated directory by digest, never by data.

``digest_tree`` reads one side and returns a ``TreeDigest``: for every entry
under the root (the root itself excluded: no op can name it) its type,
permission bits, owner, link count, size, device number, a digest of the
symlink target, a digest of every extended attribute value, and for regular
files one blake2b-128 digest per zone of ``zone_size`` bytes plus a content
digest over those. Zones are hashed by content: a hole reads as zeros, so a
sparse file and its dense copy digest alike (holes found with ``SEEK_HOLE`` are
not read at all). Times are not compared: the peer applies writes later and
never receives every atime. ``TreeDigest.summary`` is one digest of all of it.

Only digests cross the network (``TreeDigest.serialise``; the zone digests may
be left out, then a second exchange restricted to the differing paths fetches
them: ``digest_tree(..., paths=...)``). ``TreeDigest.deserialise`` validates
like any peer input and raises ``PeerProtocolError`` naming the field.
``compare(local, peer)`` lists what differs (``Differences``), with a report for
``failover verify`` (``render``) and a JSON-able form (``to_dict``).

Never follows a symlink: directories are walked from the root's fd with
``O_NOFOLLOW``, files opened with ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO never
blocks), xattrs of other entries read through the parent's fd with
``follow_symlinks=False``. Memory per file: one read buffer (``CHUNK``) and 16
bytes per zone. A tree that changes while it is read gives a digest of no single
moment: verify a tree at rest (or expect its in-flight files among the differences).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from types import MappingProxyType
from typing import Any, Final

from failover.codec import MAX_U32, U8, U16, U64, Reader, Writer
from failover.errors import PeerProtocolError, UsageError
from failover.replication.ops import MAX_PATH, MAX_PERMISSIONS, validate_path
from failover.replication.paths import Blocked, close_parent, open_parent

DIGEST_SIZE: Final = 16
"""blake2b-128."""
CHUNK: Final = 1024 * 1024
"""Bytes read per system call while hashing a file."""
NO_DIGEST: Final = bytes(DIGEST_SIZE)

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Kind(IntEnum):
    FILE = 1
    DIR = 2
    SYMLINK = 3
    FIFO = 4
    CHAR = 5
    BLOCK = 6
    SOCKET = 7


_KIND_OF_MODE: Final = {
    stat.S_IFREG: Kind.FILE,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFLNK: Kind.SYMLINK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFCHR: Kind.CHAR,
    stat.S_IFBLK: Kind.BLOCK,
    stat.S_IFSOCK: Kind.SOCKET,
}


def _digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


@cache
def _zero_digest(length: int) -> bytes:
    return _digest(bytes(length))


# --- the digest of one entry ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryDigest:
    """What verify compares of one entry.

    ``size``: a file's size, a symlink's target length, else 0. ``nlink``: 0 for
    a directory (file systems count them differently). ``rdev``: devices only.
    ``target``: the symlink target's digest, else ``NO_DIGEST``. ``xattrs``:
    (name, digest of the value), sorted by name. ``content``: a file's digest
    over its zone digests, else ``NO_DIGEST``. ``zones``: the zone digests
    concatenated (16 bytes each, ``ceil(size / zone_size)`` of them) for a file,
    ``b""`` otherwise; None when they were left out of a serialisation.
    """

    kind: Kind
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    rdev: int = 0
    target: bytes = NO_DIGEST
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    content: bytes = NO_DIGEST
    zones: bytes | None = b""

    def zone(self, index: int) -> bytes | None:
        """The digest of zone ``index`` (None beyond the end or when zones are unknown)."""
        if self.zones is None:
            return None
        part = self.zones[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]
        return part or None

    def zone_count(self) -> int:
        return 0 if self.zones is None else len(self.zones) // DIGEST_SIZE


def _zone_count(size: int, zone_size: int) -> int:
    return -(-size // zone_size)


# --- reading a tree -------------------------------------------------------------------------------


@contextmanager
def open_root(root: int | os.PathLike[str] | str) -> Iterator[int]:
    """A directory fd for ``root`` (an fd is duplicated; closed at the end of the block).

    Raises ``UsageError`` if it cannot be opened as a directory.
    """
    try:
        if isinstance(root, int):
            fd = os.dup(root)
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise UsageError(f"fd {root} is not a directory")
        else:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise UsageError(f"replicated directory {root}: {error.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def parent_of(
    root_fd: int, path: bytes, flags: int = _DIR_FLAGS
) -> Iterator[tuple[int, bytes] | None]:
    """The parent directory of ``path`` under ``root_fd`` (an fd valid in the block)
    and the last component; None if a component before the last is missing, a
    symlink or not a directory (then ``path`` names nothing in this tree).

    ``path`` must pass ``ops.validate_path``; the walk is ``paths.open_parent``'s.
    """
    try:
        fd, name = open_parent(root_fd, path, flags)
    except Blocked:
        yield None
        return
    try:
        yield fd, name
    finally:
        close_parent(root_fd, fd)


def _xattrs(dir_fd: int, name: bytes) -> tuple[tuple[bytes, bytes], ...]:
    # Through the parent's /proc/self/fd link: the last component is never followed.
    where = b"/proc/self/fd/%d/%s" % (dir_fd, name)
    try:
        names = os.listxattr(where, follow_symlinks=False)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EPERM):
            return ()
        raise
    out = []
    for attr in names:
        try:
            value = os.getxattr(where, attr, follow_symlinks=False)
        except OSError as error:
            if error.errno == errno.ENODATA:  # removed meanwhile
                continue
            raise
        out.append((os.fsencode(attr), _digest(value)))
    return tuple(sorted(out))


def _file_zones(fd: int, size: int, zone_size: int, buffer: bytearray) -> bytes:
    """The zone digests of the regular file ``fd`` of ``size`` bytes.

    Data ranges are found with SEEK_DATA/SEEK_HOLE; zones wholly inside a hole
    are not read (they digest like zeros, as their content is).
    """
    digests = bytearray()
    zone = 0
    zones = _zone_count(size, zone_size)
    view = memoryview(buffer)
    while zone < zones:
        try:
            data = os.lseek(fd, zone * zone_size, os.SEEK_DATA)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: only a hole up to the end
                raise
            data = size
        first_data_zone = zones if data >= size else data // zone_size
        for hole_zone in range(zone, first_data_zone):
            digests += _zero_digest(min(zone_size, size - hole_zone * zone_size))
        zone = first_data_zone
        if zone >= zones:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        end_zone = min(_zone_count(hole, zone_size), zones)
        digests += _hash_zones(
            fd, zone * zone_size, min(end_zone * zone_size, size), zone_size, view
        )
        zone = end_zone
    return bytes(digests)


def _hash_zones(fd: int, start: int, end: int, zone_size: int, view: memoryview) -> bytes:
    """Digests of the zones covering [start, end) (start on a zone boundary)."""
    out = bytearray()
    hasher = hashlib.blake2b(digest_size=DIGEST_SIZE)
    left_in_zone = zone_size
    offset = start
    while offset < end:
        got = os.preadv(fd, [view[: min(len(view), end - offset)]], offset)
        if got == 0:  # the file shrank meanwhile: the rest reads as nothing
            break
        chunk = view[:got]
        offset += got
        while chunk:
            take = min(left_in_zone, len(chunk))
            hasher.update(chunk[:take])
            chunk = chunk[take:]
            left_in_zone -= take
            if left_in_zone == 0:
                out += hasher.digest()
                hasher = hashlib.blake2b(digest_size=DIGEST_SIZE)
                left_in_zone = zone_size
    if left_in_zone != zone_size:
        out += hasher.digest()
    expected = _zone_count(end - start, zone_size) * DIGEST_SIZE
    if len(out) < expected:  # shrank: what is not there digests as empty
        out += _digest(b"") * ((expected - len(out)) // DIGEST_SIZE)
    return bytes(out)


class _Walker:
    def __init__(self, zone_size: int) -> None:
        self.zone_size = zone_size
        self.buffer = bytearray(CHUNK)
        self.entries: dict[bytes, EntryDigest] = {}

    def entry(self, dir_fd: int, name: bytes, path: bytes) -> EntryDigest | None:
        """Digest one entry (None if it vanished); recurse into a directory."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        kind = _KIND_OF_MODE.get(stat.S_IFMT(st.st_mode))
        if kind is None:
            raise OSError(errno.EINVAL, f"verify {path!r}: unknown file type {st.st_mode:o}")
        if kind is Kind.FILE:
            digest = self._file(dir_fd, name, path)
        elif kind is Kind.DIR:
            digest = self._directory(dir_fd, name, path, st)
        else:
            target = os.readlink(name, dir_fd=dir_fd) if kind is Kind.SYMLINK else b""
            digest = EntryDigest(
                kind,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_nlink,
                len(target),
                st.st_rdev if kind in (Kind.CHAR, Kind.BLOCK) else 0,
                _digest(target) if kind is Kind.SYMLINK else NO_DIGEST,
                _xattrs(dir_fd, name),
            )
        if digest is not None:
            self.entries[path] = digest
        return digest

    def _file(self, dir_fd: int, name: bytes, path: bytes) -> EntryDigest | None:
        try:
            fd = os.open(name, _FILE_FLAGS | os.O_NOATIME, dir_fd=dir_fd)
        except PermissionError:  # O_NOATIME needs ownership (or CAP_FOWNER)
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced meanwhile: digest what is there now
                os.close(fd)
                fd = -1
                return self.entry(dir_fd, name, path)
            zones = _file_zones(fd, st.st_size, self.zone_size, self.buffer)
            return EntryDigest(
                Kind.FILE,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_nlink,
                st.st_size,
                xattrs=_xattrs(dir_fd, name),
                content=_digest(zones),
                zones=zones,
            )
        finally:
            if fd >= 0:
                os.close(fd)

    def _directory(
        self, dir_fd: int, name: bytes, path: bytes, st: os.stat_result
    ) -> EntryDigest | None:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        try:
            digest = EntryDigest(
                Kind.DIR,
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                0,
                0,
                xattrs=_xattrs(dir_fd, name),
            )
            self.entries[path] = digest
            self.children(fd, path)
        finally:
            os.close(fd)
        return digest

    def children(self, fd: int, path: bytes) -> None:
        prefix = path + b"/" if path else b""
        for child in sorted(os.fsencode(n) for n in os.listdir(fd)):
            self.entry(fd, child, prefix + child)


def digest_tree(
    root: int | os.PathLike[str] | str,
    zone_size: int,
    *,
    paths: Iterable[bytes] | None = None,
) -> TreeDigest:
    """Read the tree under ``root`` (a directory fd or path) and digest it.

    ``paths``: only these entries (each with its subtree, if a directory); an
    absent one is simply not in the digest. Blocks for a full read of the
    data (holes excepted). Raises ``UsageError`` for a bad root, zone size or
    path, ``OSError`` (naming the path where it can) if the tree cannot be read.
    """
    _check_zone_size(zone_size, UsageError)
    subset = None if paths is None else _normalise_subset(paths, UsageError)
    walker = _Walker(zone_size)
    with open_root(root) as root_fd:
        if subset is None:
            walker.children(root_fd, b"")
        else:
            for path in subset:
                with parent_of(root_fd, path) as parent:
                    if parent is not None:
                        walker.entry(parent[0], parent[1], path)
    return TreeDigest(zone_size, walker.entries, subset)


def _check_zone_size(zone_size: int, error: type[Exception]) -> None:
    if not 512 <= zone_size <= 1 << 30:
        raise error(f"zone size {zone_size}: must be 512 bytes to 1 GiB")


def _normalise_subset(paths: Iterable[bytes], error: type[Exception]) -> tuple[bytes, ...]:
    """Sorted, without duplicates or paths beneath another one."""
    out: list[bytes] = []
    for path in sorted(set(paths)):
        try:
            validate_path(path)
        except PeerProtocolError as problem:
            raise error(f"verify path {path[:64]!r}: {problem}") from None
        if not any(path.startswith(kept + b"/") for kept in out[-1:]):
            out.append(path)
    return tuple(out)


# --- the tree digest and its serialisation --------------------------------------------------------
#
# b"FOTD" | version u8 | flags u8 (1: zones included) | zone_size u32 | subset count u32
#   (0xFFFFFFFF: the whole tree) | entry count u32 | summary (16)
# subset: path length u16 | path, sorted, none beneath another
# entry: path length u16 | path | kind u8 | mode u16 | uid u32 | gid u32 | nlink u32 | size u64 |
#   rdev u64 | content (16) | target (16) | xattr count u16 | per xattr: name length u8 | name |
#   value digest (16) | with zones, for a file: ceil(size / zone_size) x 16 bytes.
# Entries sorted by path; each one's parent is a directory entry before it (or it is a subset path).
# The summary is the digest of every entry's encoding without zones.

_MAGIC: Final = b"FOTD"
_VERSION: Final = 1
_WITH_ZONES: Final = 1
_HEAD: Final = struct.Struct(">BBIII")
_ENTRY: Final = struct.Struct(">BHIIIQQ")
_WHOLE_TREE: Final = MAX_U32


def _encode_entry(path: bytes, entry: EntryDigest) -> bytes:
    writer = Writer("tree digest")
    _write_entry(writer, path, entry)
    return writer.getvalue()


def _write_entry(writer: Writer, path: bytes, entry: EntryDigest) -> None:
    writer.sized(U16, "entry path", path)
    writer.pack(
        _ENTRY,
        "entry",
        entry.kind,
        entry.mode,
        entry.uid,
        entry.gid,
        entry.nlink,
        entry.size,
        entry.rdev,
    )
    writer.raw(entry.content)
    writer.raw(entry.target)
    writer.number(U16, "xattr count", len(entry.xattrs))
    for name, value in entry.xattrs:
        writer.sized(U8, "xattr name", name)
        writer.raw(value)


@dataclass(frozen=True)
class TreeDigest:
    """The digest of one side (see the module docstring). ``subset``: the paths it
    was restricted to (None: the whole tree). ``summary`` covers every entry."""

    zone_size: int
    entries: Mapping[bytes, EntryDigest]
    subset: tuple[bytes, ...] | None = None
    summary: bytes = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.entries, MappingProxyType):
            object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))
        hasher = hashlib.blake2b(digest_size=DIGEST_SIZE)
        for path in sorted(self.entries):
            hasher.update(_encode_entry(path, self.entries[path]))
        object.__setattr__(self, "summary", hasher.digest())

    @property
    def has_zones(self) -> bool:
        return all(e.zones is not None for e in self.entries.values())

    def without_zones(self) -> TreeDigest:
        """The same digest with the zone digests left out (much smaller on the wire)."""
        entries = {
            path: EntryDigest(
                e.kind,
                e.mode,
                e.uid,
                e.gid,
                e.nlink,
                e.size,
                e.rdev,
                e.target,
                e.xattrs,
                e.content,
                None if e.kind is Kind.FILE else b"",
            )
            for path, e in self.entries.items()
        }
        return TreeDigest(self.zone_size, entries, self.subset)

    def serialise(self, *, zones: bool = True) -> bytes:
        """Bytes for the peer; ``deserialise`` gives back an equal digest (without
        zone digests if ``zones`` is False or they are unknown)."""
        zones = zones and self.has_zones
        subset = self.subset
        writer = Writer("tree digest")
        writer.raw(_MAGIC)
        writer.pack(
            _HEAD,
            "header",
            _VERSION,
            _WITH_ZONES if zones else 0,
            self.zone_size,
            _WHOLE_TREE if subset is None else len(subset),
            len(self.entries),
        )
        writer.raw(self.summary)
        for path in subset or ():
            writer.sized(U16, "subset path", path)
        for path in sorted(self.entries):
            entry = self.entries[path]
            _write_entry(writer, path, entry)
            if zones and entry.kind is Kind.FILE:
                writer.raw(entry.zones or b"")
        return writer.getvalue()

    @classmethod
    def deserialise(cls, data: bytes | bytearray | memoryview) -> TreeDigest:
        """Decode ``serialise``'s bytes, validated like any network input.

        Raises ``PeerProtocolError`` naming the field: magic, version, flags, zone
        size, a truncated or over-long buffer, a bad or unsorted path, a parent
        that is not a directory entry, an invalid type, mode, size, device, xattr
        name or order, a zone count that does not match the size, a summary that
        does not match the entries.
        """
        return _decode_tree(memoryview(data).cast("B"))


def _read_path(reader: Reader, field: str) -> bytes:
    path = reader.bytes(reader.number(U16, f"{field} path length"), f"{field} path")
    try:
        validate_path(path)
    except PeerProtocolError as error:
        raise reader.fail(f"{field} path", str(error)) from None
    return path


def _decode_tree(view: memoryview) -> TreeDigest:
    reader = Reader(view, "tree digest")
    magic = reader.bytes(len(_MAGIC), "magic")
    if magic != _MAGIC:
        raise reader.fail("magic", f"bad magic {magic!r}")
    version, flags, zone_size, n_subset, n_entries = reader.unpack(_HEAD, "header")
    if version != _VERSION:
        raise reader.fail("header", f"unknown version {version}")
    if flags & ~_WITH_ZONES:
        raise reader.fail("header", f"unknown flags {flags:#x}")
    try:
        _check_zone_size(zone_size, PeerProtocolError)
    except PeerProtocolError as error:
        raise reader.fail("header", str(error)) from None
    summary = reader.bytes(DIGEST_SIZE, "summary")
    subset: tuple[bytes, ...] | None = None
    if n_subset != _WHOLE_TREE:
        listed = tuple(_read_path(reader, f"subset {i}") for i in range(n_subset))
        if _normalise_subset(listed, PeerProtocolError) != listed:
            raise reader.fail("subset", "not sorted, repeated or nested")
        subset = listed
    entries: dict[bytes, EntryDigest] = {}
    previous = b""
    for i in range(n_entries):
        what = f"entry {i}"
        path = _read_path(reader, what)
        if path <= previous:
            raise reader.fail(f"{what} path", f"{path[:64]!r} not sorted after {previous[:64]!r}")
        previous = path
        _check_place(reader, what, path, entries, subset)
        entry = _decode_entry(reader, what, zone_size, flags & _WITH_ZONES != 0)
        entries[path] = entry
    reader.end()
    tree = TreeDigest(zone_size, entries, subset)
    if tree.summary != summary:
        raise reader.fail("summary", "does not match the entries")
    return tree


def _check_place(
    reader: Reader,
    what: str,
    path: bytes,
    entries: Mapping[bytes, EntryDigest],
    subset: tuple[bytes, ...] | None,
) -> None:
    if subset is not None and path in subset:
        return
    if subset is not None and not any(path.startswith(top + b"/") for top in subset):
        raise reader.fail(f"{what} path", f"{path[:64]!r} outside the subset")
    parent_path = path.rpartition(b"/")[0]
    if parent_path:
        parent = entries.get(parent_path)
        if parent is None or parent.kind is not Kind.DIR:
            raise reader.fail(f"{what} path", f"{path[:64]!r}: parent is not a directory entry")


def _decode_entry(reader: Reader, what: str, zone_size: int, with_zones: bool) -> EntryDigest:
    raw_kind, mode, uid, gid, nlink, size, rdev = reader.unpack(_ENTRY, f"{what} attributes")
    if raw_kind not in Kind._value2member_map_:
        raise reader.fail(f"{what} type", f"unknown {raw_kind}")
    kind = Kind(raw_kind)
    content = reader.bytes(DIGEST_SIZE, f"{what} content")
    target = reader.bytes(DIGEST_SIZE, f"{what} target")
    problem = _attribute_problem(kind, mode, nlink, size, rdev, content, target)
    if problem is not None:
        raise reader.fail(what, problem)
    n_xattrs = reader.number(U16, f"{what} xattr count")
    xattrs: list[tuple[bytes, bytes]] = []
    for j in range(n_xattrs):
        name = reader.bytes(
            reader.number(U8, f"{what} xattr {j} name length"), f"{what} xattr {j} name"
        )
        if not name or 0 in name:
            raise reader.fail(f"{what} xattr {j} name", "empty or with a NUL byte")
        if xattrs and name <= xattrs[-1][0]:
            raise reader.fail(f"{what} xattr {j} name", "not sorted")
        xattrs.append((name, reader.bytes(DIGEST_SIZE, f"{what} xattr {j} value")))
    zones: bytes | None = b""
    if kind is Kind.FILE:
        zones = None
        if with_zones:
            zones = reader.bytes(_zone_count(size, zone_size) * DIGEST_SIZE, f"{what} zones")
            if _digest(zones) != content:
                raise reader.fail(f"{what} zones", "do not match the content digest")
    return EntryDigest(
        kind, mode, uid, gid, nlink, size, rdev, target, tuple(xattrs), content, zones
    )


def _attribute_problem(
    kind: Kind, mode: int, nlink: int, size: int, rdev: int, content: bytes, target: bytes
) -> str | None:
    if mode > MAX_PERMISSIONS:
        return f"mode: {mode:o} beyond {MAX_PERMISSIONS:o}"
    if (kind is Kind.DIR) != (nlink == 0):
        return f"link count: {nlink} for a {kind.name.lower()}"
    if size > 2**63 - 1:
        return f"size: {size} beyond the largest file"
    if kind is Kind.SYMLINK and not 0 < size < MAX_PATH:
        return f"size: symlink target of {size} bytes"
    if kind not in (Kind.FILE, Kind.SYMLINK) and size != 0:
        return f"size: {size} for a {kind.name.lower()}"
    if kind not in (Kind.CHAR, Kind.BLOCK) and rdev != 0:
        return f"device: {rdev} for a {kind.name.lower()}"
    if kind is not Kind.FILE and content != NO_DIGEST:
        return f"content: set for a {kind.name.lower()}"
    if (kind is Kind.SYMLINK) == (target == NO_DIGEST):
        return f"target: {'missing' if kind is Kind.SYMLINK else 'set'} for a {kind.name.lower()}"
    return None


# --- the answer to a verify request --------------------------------------------------------------
#
# Per replicated directory, sorted by name: name length u16 | name UTF-8 | digest length u64 |
# TreeDigest.serialise().


def encode_answer(digests: Mapping[str, TreeDigest]) -> bytes:
    """The secondary's answer to a verify request: the digest of each directory."""
    writer = Writer("verify answer")
    for name in sorted(digests):
        writer.text(U16, "name", name)
        writer.sized(U64, "digest", digests[name].serialise())
    return writer.getvalue()


def decode_answer(data: bytes | bytearray | memoryview) -> dict[str, TreeDigest]:
    """``encode_answer``'s bytes, validated like any peer input (``PeerProtocolError``
    naming the field, a repeated directory included)."""
    reader = Reader(data, "verify answer")
    found: dict[str, TreeDigest] = {}
    while reader.left:
        name = reader.text(U16, "name")
        if name in found:
            raise reader.fail("name", f"{name!r} answered twice")
        found[name] = TreeDigest.deserialise(reader.sized(U64, f"{name!r} digest"))
    return found


# --- comparing two digests ------------------------------------------------------------------------

FIELDS: Final = ("mode", "uid", "gid", "nlink", "size", "rdev", "target", "xattrs", "content")
"""The fields compared when both sides have the same type, in report order."""


@dataclass(frozen=True, slots=True)
class EntryDifference:
    """One path present on both sides that differs.

    ``fields``: ``("type",)`` if the types differ, else the differing names of
    ``FIELDS``. ``zones``: the differing zone indices when the content differs and
    both sides carry zone digests (a zone present on one side only differs),
    else None. ``xattrs``: the names whose value differs or that one side lacks.
    """

    path: bytes
    fields: tuple[str, ...]
    local: EntryDigest
    peer: EntryDigest
    zones: tuple[int, ...] | None = None
    xattrs: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Differences:
    """``compare(local, peer)``: ``missing`` on the peer (only local has them),
    ``extra`` on the peer (only the peer has them), ``differing`` on both. Under a
    missing, extra or retyped directory nothing more is listed. Sorted by path."""

    missing: tuple[bytes, ...] = ()
    extra: tuple[bytes, ...] = ()
    differing: tuple[EntryDifference, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.differing)

    def paths(self) -> tuple[bytes, ...]:
        """Every path listed, sorted (what a second, zone-level pass or a resync needs)."""
        return tuple(sorted((*self.missing, *self.extra, *(d.path for d in self.differing))))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form. Paths are text (non-UTF-8 bytes as ``\\xNN``)."""
        return {
            "in_sync": not self,
            "missing_on_peer": [_text(p) for p in self.missing],
            "extra_on_peer": [_text(p) for p in self.extra],
            "differing": [
                {
                    "path": _text(d.path),
                    "fields": list(d.fields),
                    "zones": None if d.zones is None else list(d.zones),
                    "xattrs": [_text(name) for name in d.xattrs],
                    "local": _field_values(d.local),
                    "peer": _field_values(d.peer),
                }
                for d in self.differing
            ],
        }

    def render(self, root: str = "", *, limit: int = 200) -> str:
        """The report of ``failover verify`` for one replicated directory: one line
        per path (at most ``limit``, then a count of the rest)."""
        where = f"{root}: " if root else ""
        if not self:
            return f"{where}in sync (no difference)"
        lines = [
            f"{where}{len(self.missing)} missing on the peer, {len(self.extra)} extra on "
            f"the peer, {len(self.differing)} differing"
        ]
        rows = [f"  missing on peer  {_text(p)}" for p in self.missing]
        rows += [f"  extra on peer    {_text(p)}" for p in self.extra]
        rows += [f"  differs          {_text(d.path)}: {_describe(d)}" for d in self.differing]
        lines += rows[:limit]
        if len(rows) > limit:
            lines.append(f"  ... and {len(rows) - limit} more")
        return "\n".join(lines)


def _text(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _field_values(entry: EntryDigest) -> dict[str, Any]:
    return {
        "type": entry.kind.name.lower(),
        "mode": f"{entry.mode:04o}",
        "uid": entry.uid,
        "gid": entry.gid,
        "nlink": entry.nlink,
        "size": entry.size,
        "rdev": entry.rdev,
        "target": entry.target.hex(),
        "xattrs": {_text(name): value.hex() for name, value in entry.xattrs},
        "content": entry.content.hex(),
    }


def _ranges(indices: tuple[int, ...]) -> str:
    parts: list[str] = []
    start = previous = indices[0]
    for index in [*indices[1:], -1]:
        if index != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = index
        previous = index
    return ", ".join(parts)


def _describe(d: EntryDifference) -> str:
    local, peer = d.local, d.peer
    out = []
    for name in d.fields:
        if name == "type":
            out.append(f"type {local.kind.name.lower()} here, {peer.kind.name.lower()} on peer")
        elif name == "mode":
            out.append(f"mode {local.mode:04o} here, {peer.mode:04o} on peer")
        elif name in ("uid", "gid", "nlink", "size", "rdev"):
            out.append(f"{name} {getattr(local, name)} here, {getattr(peer, name)} on peer")
        elif name == "xattrs":
            out.append("xattrs " + ", ".join(_text(n) for n in d.xattrs))
        elif name == "content" and d.zones:
            count = max(local.zone_count(), peer.zone_count())
            out.append(f"content (zones {_ranges(d.zones)} of {count})")
        else:
            out.append(name)
    return "; ".join(out)


def _under_any(path: bytes, reported: set[bytes]) -> bool:
    parent = path
    while b"/" in parent:
        parent = parent.rpartition(b"/")[0]
        if parent in reported:
            return True
    return False


def compare(local: TreeDigest, peer: TreeDigest) -> Differences:
    """What differs between two digests of the same directory.

    Raises ``UsageError`` if they were made with different zone sizes or subsets.
    """
    if local.zone_size != peer.zone_size:
        raise UsageError(f"verify: zone sizes differ ({local.zone_size} vs {peer.zone_size})")
    if local.subset != peer.subset:
        raise UsageError("verify: the two digests cover different paths")
    if local.summary == peer.summary:
        return Differences()
    missing: list[bytes] = []
    extra: list[bytes] = []
    differing: list[EntryDifference] = []
    reported: set[bytes] = set()  # paths whose subtree is not listed further
    for path in sorted(local.entries.keys() | peer.entries.keys()):
        if _under_any(path, reported):
            continue
        mine, theirs = local.entries.get(path), peer.entries.get(path)
        if mine is None or theirs is None:
            (extra if mine is None else missing).append(path)
            reported.add(path)
            continue
        difference = _entry_difference(path, mine, theirs)
        if difference is not None:
            differing.append(difference)
            if difference.fields == ("type",):
                reported.add(path)
    return Differences(tuple(missing), tuple(extra), tuple(differing))


def _entry_difference(path: bytes, a: EntryDigest, b: EntryDigest) -> EntryDifference | None:
    if a.kind != b.kind:
        return EntryDifference(path, ("type",), a, b)
    fields = tuple(name for name in FIELDS if getattr(a, name) != getattr(b, name))
    if not fields:
        return None
    zones = None
    if "content" in fields and a.zones is not None and b.zones is not None:
        count = max(a.zone_count(), b.zone_count())
        zones = tuple(i for i in range(count) if a.zone(i) != b.zone(i))
    xattrs: tuple[bytes, ...] = ()
    if "xattrs" in fields:
        mine, theirs = dict(a.xattrs), dict(b.xattrs)
        xattrs = tuple(
            sorted(n for n in mine.keys() | theirs.keys() if mine.get(n) != theirs.get(n))
        )
    return EntryDifference(path, fields, a, b, zones, xattrs)
