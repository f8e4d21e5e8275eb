"""Replication operation records and their binary codec.

Each record describes one change the serving node made to a replicated
directory; the peer applies it to its backing directory (``apply.Applier``).
A record names the directory by its configured ``root`` name and paths as
``bytes`` relative to it: components separated by ``b"/"``, never empty, no
leading ``b"/"`` (``validate_path``).

Wire layout of one record (``encode``/``decode``), all integers big-endian::

    op code (u8) | fixed part | variable parts, in field order

The op code (``OP_CODES``) both names the record type and versions its layout:
a changed layout gets a new code, so an old peer rejects it as unknown instead
of misreading it. The fixed part holds every integer field and the length of
every variable field (root: u8, path and symlink target: u16, xattr name: u8,
xattr value and write data: u32); the variable parts follow in field order, the
data of a ``Write`` last so it is carried as is. Nothing may follow the last
part. ``Chown`` carries ``-1`` ("leave unchanged", as chown(2)) as 0xFFFFFFFF.

Pure: no I/O. ``decode`` raises ``PeerProtocolError`` (``PathRejected`` for a
bad path) naming the record type and field, e.g. ``"Write.path: empty
component"``; ``encode`` raises ``UsageError`` on a record that could not be
decoded back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

from failover.codec import MAX_I64, MAX_U32, U8, U16, Buffer, Reader, Writer
from failover.errors import PeerProtocolError, UsageError

MAX_ROOT_NAME = 64
"""Longest root name, in UTF-8 bytes."""
MAX_PATH = 4096
"""Longest relative path, in bytes (PATH_MAX)."""
MAX_COMPONENT = 255
"""Longest path component, in bytes (NAME_MAX)."""
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 65536
"""XATTR_SIZE_MAX on Linux."""
MAX_WRITE = 16 * 1024 * 1024
"""Largest ``Write.data``; the mirror writes at most FUSE's max_write (1 MiB) at a time."""
MAX_OFFSET = MAX_I64
"""Largest file offset or size (off_t)."""
MAX_PERMISSIONS = 0o7777

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_CREATE = 1
XATTR_REPLACE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_FL_UNSHARE_RANGE = 0x40
_FALLOC_KNOWN = (
    FALLOC_FL_KEEP_SIZE
    | FALLOC_FL_PUNCH_HOLE
    | FALLOC_FL_COLLAPSE_RANGE
    | FALLOC_FL_ZERO_RANGE
    | FALLOC_FL_INSERT_RANGE
    | FALLOC_FL_UNSHARE_RANGE
)
_UNCHANGED_ID = MAX_U32


class PathRejected(PeerProtocolError):
    """A path from the peer could leave its root or is not a valid relative path."""


# --- the records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    """Create an empty regular file if absent; set its permission bits ``mode``."""

    code: ClassVar[int] = 1
    root: str
    path: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` at ``offset`` (``encode`` also accepts a bytearray).

    A decoded ``Write`` carries its data uncopied: a read-only view of the
    buffer it was decoded from (``decode``), which stays alive, and is never
    reused by the replication transport, as long as the view does.
    """

    code: ClassVar[int] = 2
    root: str
    path: bytes
    offset: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Truncate:
    """Set the file's size; growing it leaves a hole, never written zeros."""

    code: ClassVar[int] = 3
    root: str
    path: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Fallocate:
    """fallocate(2) with ``mode`` = ``FALLOC_FL_*`` flags (e.g. punch hole | keep size)."""

    code: ClassVar[int] = 4
    root: str
    path: bytes
    mode: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Unlink:
    code: ClassVar[int] = 5
    root: str
    path: bytes


@dataclass(frozen=True, slots=True)
class Rename:
    """renameat2(2) of ``old`` to ``new``.

    ``flags``: 0, ``RENAME_NOREPLACE`` or ``RENAME_EXCHANGE``.
    """

    code: ClassVar[int] = 6
    root: str
    old: bytes
    new: bytes
    flags: int


@dataclass(frozen=True, slots=True)
class Mkdir:
    code: ClassVar[int] = 7
    root: str
    path: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class Rmdir:
    code: ClassVar[int] = 8
    root: str
    path: bytes


@dataclass(frozen=True, slots=True)
class Symlink:
    """A symlink at ``path`` holding ``target``: data, never resolved by the receiver."""

    code: ClassVar[int] = 9
    root: str
    path: bytes
    target: bytes


@dataclass(frozen=True, slots=True)
class Link:
    """A hard link ``new`` to the file ``existing``."""

    code: ClassVar[int] = 10
    root: str
    existing: bytes
    new: bytes


@dataclass(frozen=True, slots=True)
class Chmod:
    code: ClassVar[int] = 11
    root: str
    path: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class Chown:
    """chown(2) semantics: ``uid`` or ``gid`` of -1 leaves that id unchanged."""

    code: ClassVar[int] = 12
    root: str
    path: bytes
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Utimens:
    """Access and modification times, nanoseconds since the epoch (may be negative)."""

    code: ClassVar[int] = 13
    root: str
    path: bytes
    atime_ns: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class SetXattr:
    """setxattr(2); ``flags``: 0, ``XATTR_CREATE`` or ``XATTR_REPLACE``."""

    code: ClassVar[int] = 14
    root: str
    path: bytes
    name: bytes
    value: bytes
    flags: int


@dataclass(frozen=True, slots=True)
class RemoveXattr:
    code: ClassVar[int] = 15
    root: str
    path: bytes
    name: bytes


@dataclass(frozen=True, slots=True)
class Fsync:
    """A durability barrier for that file (fdatasync when ``datasync``)."""

    code: ClassVar[int] = 16
    root: str
    path: bytes
    datasync: bool


Op = (
    Create
    | Write
    | Truncate
    | Fallocate
    | Unlink
    | Rename
    | Mkdir
    | Rmdir
    | Symlink
    | Link
    | Chmod
    | Chown
    | Utimens
    | SetXattr
    | RemoveXattr
    | Fsync
)
OP_TYPES: tuple[type[Op], ...] = (
    Create,
    Write,
    Truncate,
    Fallocate,
    Unlink,
    Rename,
    Mkdir,
    Rmdir,
    Symlink,
    Link,
    Chmod,
    Chown,
    Utimens,
    SetXattr,
    RemoveXattr,
    Fsync,
)
OP_CODES: dict[type[Op], int] = {cls: cls.code for cls in OP_TYPES}


def paths_of(op: Op) -> tuple[bytes, ...]:
    """The paths ``op`` touches, relative to ``op.root`` (two for Rename and Link)."""
    if isinstance(op, Rename):
        return (op.old, op.new)
    if isinstance(op, Link):
        return (op.existing, op.new)
    return (op.path,)


# --- validation --------------------------------------------------------------------------------


def _path_problem(path: bytes) -> str | None:
    if not path:
        return "empty path"
    if len(path) > MAX_PATH:
        return f"{len(path)} bytes, more than {MAX_PATH}"
    if path[0] == 0x2F:
        return f"absolute path {path[:64]!r}"
    if 0 in path:
        return f"NUL byte in {path[:64]!r}"
    for part in path.split(b"/"):
        if part in (b"", b".", b".."):
            return f"component {part!r} in {path[:64]!r}"
        if len(part) > MAX_COMPONENT:
            return f"component of {len(part)} bytes, more than {MAX_COMPONENT}"
    return None


def validate_path(path: bytes) -> None:
    """Raise ``PathRejected`` unless ``path`` is a valid path relative to a root.

    Valid: non-empty, at most ``MAX_PATH`` bytes, no leading ``b"/"``, no NUL,
    no empty, ``"."`` or ``".."`` component, each component at most
    ``MAX_COMPONENT`` bytes. Says nothing about symlinks on disk (the applier
    refuses to follow any).
    """
    problem = _path_problem(path)
    if problem is not None:
        raise PathRejected(problem)


def _root_problem(name: str) -> str | None:
    size = len(name.encode("utf-8", "surrogatepass"))
    if not name:
        return "empty root name"
    if size > MAX_ROOT_NAME:
        return f"root name of {size} bytes, more than {MAX_ROOT_NAME}"
    if "/" in name or "\x00" in name:
        return f"'/' or NUL in root name {name!r}"
    return None


# --- field kinds: how each field travels and what values it may take --------------------------

_Buffer = Buffer


class _Bad(Exception):
    """A field's raw value cannot become a value (internal; becomes the caller's error)."""


class _Kind:
    """One field's wire form. ``fmt`` is its slot in the fixed part: the value
    itself, or for a variable field the length of the bytes that follow
    (copied out of the record, unless ``view``: a read-only view of it)."""

    fmt: str = ""
    variable = False
    view = False
    rejected: type[PeerProtocolError] = PeerProtocolError

    def problem(self, value: object) -> str | None:
        """What is wrong with a record's value, or None (checked both ways)."""
        raise NotImplementedError

    def to_wire(self, value: object) -> int | _Buffer:
        raise NotImplementedError

    def from_wire(self, raw: int | Buffer) -> object:
        return raw


class _Number(_Kind):
    def __init__(self, fmt: str, check: Callable[[int], str | None]) -> None:
        self.fmt = fmt
        self._check = check

    def problem(self, value: object) -> str | None:
        if type(value) is not int:
            return f"expected int, got {type(value).__name__}"
        return self._check(value)

    def to_wire(self, value: object) -> int:
        assert isinstance(value, int)
        return value


def _within(low: int, high: int) -> Callable[[int], str | None]:
    return lambda v: None if low <= v <= high else f"{v} outside {low}..{high}"


def _one_of(*allowed: int) -> Callable[[int], str | None]:
    return lambda v: None if v in allowed else f"{v} is not one of {list(allowed)}"


def _flags(known: int) -> Callable[[int], str | None]:
    return lambda v: None if 0 <= v <= known and not v & ~known else f"unknown flags {v:#x}"


class _Id(_Number):
    """A uid or gid: 0..2**32-2, or -1 for "unchanged" (0xFFFFFFFF on the wire)."""

    def __init__(self) -> None:
        super().__init__("I", _within(-1, _UNCHANGED_ID - 1))

    def to_wire(self, value: object) -> int:
        return _UNCHANGED_ID if value == -1 else super().to_wire(value)

    def from_wire(self, raw: int | Buffer) -> object:
        return -1 if raw == _UNCHANGED_ID else raw


class _Flag(_Kind):
    fmt = "B"

    def problem(self, value: object) -> str | None:
        return None if type(value) is bool else f"expected bool, got {type(value).__name__}"

    def to_wire(self, value: object) -> int:
        return int(bool(value))

    def from_wire(self, raw: int | Buffer) -> object:
        if raw not in (0, 1):
            raise _Bad(f"{raw!r} is not 0 or 1")
        return raw == 1


class _Bytes(_Kind):
    variable = True

    def __init__(self, fmt: str, what: str, limit: int, *, nul: bool, empty: bool) -> None:
        self.fmt = fmt
        self._what = what
        self._limit = limit
        self._nul = nul
        self._empty = empty

    def problem(self, value: object) -> str | None:
        if not isinstance(value, bytes):
            return f"expected bytes, got {type(value).__name__}"
        return self._content_problem(value)

    def _content_problem(self, value: bytes) -> str | None:
        if not value and not self._empty:
            return f"empty {self._what}"
        if len(value) > self._limit:
            return f"{self._what} of {len(value)} bytes, more than {self._limit}"
        if not self._nul and 0 in value:
            return f"NUL byte in {self._what}"
        return None

    def to_wire(self, value: object) -> _Buffer:
        assert isinstance(value, _Buffer)
        return value


class _Data(_Bytes):
    """Write data: any contiguous buffer on encode, carried without a copy both ways."""

    view = True

    def __init__(self) -> None:
        super().__init__("I", "data", MAX_WRITE, nul=True, empty=True)

    def problem(self, value: object) -> str | None:
        if not isinstance(value, _Buffer):
            return f"expected bytes, got {type(value).__name__}"
        size = memoryview(value).nbytes
        return None if size <= MAX_WRITE else f"data of {size} bytes, more than {MAX_WRITE}"


class _Path(_Bytes):
    rejected = PathRejected

    def __init__(self) -> None:
        super().__init__("H", "path", MAX_PATH, nul=False, empty=False)

    def _content_problem(self, value: bytes) -> str | None:
        return _path_problem(value)


class _Root(_Kind):
    fmt = "B"
    variable = True

    def problem(self, value: object) -> str | None:
        if not isinstance(value, str):
            return f"expected str, got {type(value).__name__}"
        return _root_problem(value)

    def to_wire(self, value: object) -> bytes:
        assert isinstance(value, str)
        return value.encode("utf-8", "surrogatepass")

    def from_wire(self, raw: int | Buffer) -> object:
        assert isinstance(raw, bytes)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"root name {raw!r} is not UTF-8") from None


_ROOT = _Root()
_PATH = _Path()
_OFFSET = _Number("Q", _within(0, MAX_OFFSET))
_PERMISSIONS = _Number("I", _within(0, MAX_PERMISSIONS))
_TIME = _Number("q", _within(-(2**63), 2**63 - 1))
_LAYOUT: dict[type[Op], tuple[_Kind, ...]] = {
    Create: (_ROOT, _PATH, _PERMISSIONS),
    Write: (_ROOT, _PATH, _OFFSET, _Data()),
    Truncate: (_ROOT, _PATH, _OFFSET),
    Fallocate: (_ROOT, _PATH, _Number("I", _flags(_FALLOC_KNOWN)), _OFFSET, _OFFSET),
    Unlink: (_ROOT, _PATH),
    Rename: (_ROOT, _PATH, _PATH, _Number("I", _one_of(0, RENAME_NOREPLACE, RENAME_EXCHANGE))),
    Mkdir: (_ROOT, _PATH, _PERMISSIONS),
    Rmdir: (_ROOT, _PATH),
    Symlink: (_ROOT, _PATH, _Bytes("H", "symlink target", MAX_PATH, nul=False, empty=False)),
    Link: (_ROOT, _PATH, _PATH),
    Chmod: (_ROOT, _PATH, _PERMISSIONS),
    Chown: (_ROOT, _PATH, _Id(), _Id()),
    Utimens: (_ROOT, _PATH, _TIME, _TIME),
    SetXattr: (
        _ROOT,
        _PATH,
        _Bytes("B", "xattr name", MAX_XATTR_NAME, nul=False, empty=False),
        _Bytes("I", "xattr value", MAX_XATTR_VALUE, nul=True, empty=True),
        _Number("I", _one_of(0, XATTR_CREATE, XATTR_REPLACE)),
    ),
    RemoveXattr: (
        _ROOT,
        _PATH,
        _Bytes("B", "xattr name", MAX_XATTR_NAME, nul=False, empty=False),
    ),
    Fsync: (_ROOT, _PATH, _Flag()),
}


@dataclass(frozen=True, slots=True)
class _Codec:
    """The precomputed layout of one record type."""

    cls: type[Op]
    names: tuple[str, ...]
    kinds: tuple[_Kind, ...]
    fixed: struct.Struct
    """The op code and the fixed part."""
    head: struct.Struct
    """The fixed part alone (read after the op code)."""


_CODECS: dict[type, _Codec] = {
    cls: _Codec(
        cls,
        tuple(f.name for f in fields(cls)),
        _LAYOUT[cls],
        struct.Struct(">B" + "".join(k.fmt for k in _LAYOUT[cls])),
        struct.Struct(">" + "".join(k.fmt for k in _LAYOUT[cls])),
    )
    for cls in OP_TYPES
}
_BY_CODE: dict[int, _Codec] = {codec.cls.code: codec for codec in _CODECS.values()}


def _extent_problem(op: object) -> tuple[str, str] | None:
    """Offset + length must stay a valid file offset: (field, problem) or None."""
    if isinstance(op, Write):
        end = op.offset + memoryview(op.data).nbytes
    elif isinstance(op, Fallocate):
        end = op.offset + op.length
    else:
        return None
    if end > MAX_OFFSET:
        return "offset", f"ends at {end}, beyond {MAX_OFFSET}"
    return None


def _invalid(op: object) -> PeerProtocolError | None:
    """The first problem of ``op``, as the error naming its field, or None."""
    codec = _CODECS.get(type(op))
    if codec is None:
        return PeerProtocolError(f"not a replication op: {type(op).__name__}")
    for name, kind in zip(codec.names, codec.kinds, strict=True):
        problem = kind.problem(getattr(op, name))
        if problem is not None:
            return kind.rejected(f"{codec.cls.__name__}.{name}: {problem}")
    extent = _extent_problem(op)
    if extent is not None:
        return PeerProtocolError(f"{codec.cls.__name__}.{extent[0]}: {extent[1]}")
    return None


def check(op: Op) -> None:
    """Raise unless ``op`` is a record ``decode`` could have returned.

    ``PathRejected`` for a path, ``PeerProtocolError`` for any other field, the
    message naming record type and field (as ``decode``). For records built
    locally or received by other means than ``decode``.
    """
    error = _invalid(op)
    if error is not None:
        raise error


def encode_parts(op: Op) -> tuple[bytes, ...] | tuple[bytes, _Buffer]:
    """``encode(op)`` as buffers to send in order (e.g. with sendmsg), ``Write.data``
    last and uncopied. Raises ``UsageError`` on a record ``decode`` would reject."""
    error = _invalid(op)
    if error is not None:
        raise UsageError(str(error))
    codec = _CODECS[type(op)]
    head: list[int] = [codec.cls.code]
    tail: list[_Buffer] = []
    for name, kind in zip(codec.names, codec.kinds, strict=True):
        wire = kind.to_wire(getattr(op, name))
        if isinstance(wire, int):
            head.append(wire)
        else:
            head.append(memoryview(wire).nbytes)
            tail.append(wire)
    fixed = codec.fixed.pack(*head)
    if isinstance(op, Write):
        return (fixed + b"".join(tail[:-1]), tail[-1])
    return (fixed + b"".join(tail),)


def encode(op: Op) -> bytes:
    """One record as bytes (the layout in the module docstring)."""
    return b"".join(encode_parts(op))


def decode(data: bytes | bytearray | memoryview) -> Op:
    """The record encoded in ``data``, which must hold exactly one.

    Raises ``PeerProtocolError`` naming the record type and field on an unknown
    op code, a truncated record, trailing bytes, or a field value the record
    type does not allow; ``PathRejected`` (a ``PeerProtocolError``) for a path.
    A ``Write``'s data is a read-only view of ``data``, not a copy: ``data``
    must stay unchanged while the record is in use.
    """
    reader = Reader(data, "replication op")
    if not reader.left:
        raise reader.fail("code", "empty buffer")
    code = reader.number(U8, "code")
    codec = _BY_CODE.get(code)
    if codec is None:
        raise reader.fail("code", f"unknown op code {code}")
    kind_name = reader.what = codec.cls.__name__
    head = reader.unpack(codec.head, "fixed part")
    values: list[object] = []
    for name, kind, slot in zip(codec.names, codec.kinds, head, strict=True):
        raw: int | Buffer = slot
        if kind.variable:
            raw = reader.take(slot, name).toreadonly() if kind.view else reader.bytes(slot, name)
        try:
            values.append(kind.from_wire(raw))
        except _Bad as bad:
            raise kind.rejected(f"{kind_name}.{name}: {bad}") from None
    reader.end()
    op = codec.cls(*values)  # type: ignore[arg-type]
    check(op)
    return op


# --- the key of a file in other formats ----------------------------------------------------------


def write_key(writer: Writer, field: str, root: str, path: bytes) -> None:
    """``root length u8 | root UTF-8 | path length u16 | path``: how the resync
    messages, change sets and the tracking log name a file."""
    writer.sized(U8, f"{field} root", root.encode("utf-8", "surrogatepass"))
    writer.sized(U16, f"{field} path", path)


def read_root(reader: Reader, field: str) -> str:
    """A root name preceded by its length (u8), valid as ``Op.root``."""
    root = reader.text(U8, field)
    problem = _root_problem(root)
    if problem is not None:
        raise reader.fail(field, f"invalid root name {root!r}: {problem}")
    return root


def read_key(reader: Reader, field: str, *, empty_path: bool = False) -> tuple[str, bytes]:
    """A key written by ``write_key``: a valid root name and a valid path (or, with
    ``empty_path``, the empty path of the root directory itself)."""
    root = read_root(reader, f"{field} root")
    path = reader.bytes(reader.number(U16, f"{field} path length"), f"{field} path")
    if path or not empty_path:
        problem = _path_problem(path)
        if problem is not None:
            raise reader.fail(f"{field} path", problem)
    return root, path
