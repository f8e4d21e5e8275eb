"""The one codec every binary format of failover is written with: pure, no I/O.

Every format (heartbeat frames and the link proof in ``failover.wire``,
replication ops, resync messages, tree digests, change sets, the tracking log
and checkpoint, the replication channel) is big-endian fixed-width integers
and length-prefixed byte strings, read and written here:

- ``Reader``: a bounded cursor over one buffer. Every read checks that the
  bytes are there before taking them, so a short or lying buffer is a
  ``DecodeError`` (a ``PeerProtocolError``) naming the format, the field and
  the byte offset, never an ``IndexError`` or ``struct.error`` reaching a
  caller. Reads hand out ``memoryview`` slices (no copy) unless asked for
  ``bytes``; ``end`` refuses trailing bytes.
- ``Writer``: a list of parts joined once (``getvalue``) or handed to a
  vectored send as they are (``parts``). A value that does not fit its field
  (a negative count, a name longer than its length prefix can say) is this
  node's bug: ``EncodeError`` (a ``UsageError``) naming format and field.
- The shared constants: one precompiled ``struct.Struct`` per integer width
  (``U8`` .. ``U64``, ``I64``) and their limits. A format's own fixed parts
  are ``struct.Struct`` too, compiled once beside the format.

Why ``struct``: measured against the alternatives (``bench/codec.py``,
docs/codec.md), a precompiled ``Struct`` is the fastest way CPython has to
turn bytes into integers and back, and it needs no dependency.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from failover.errors import PeerProtocolError, UsageError

Buffer = bytes | bytearray | memoryview
"""Any contiguous buffer of bytes."""

U8: Final = struct.Struct(">B")
U16: Final = struct.Struct(">H")
U32: Final = struct.Struct(">I")
U64: Final = struct.Struct(">Q")
I64: Final = struct.Struct(">q")

MAX_U8: Final = 0xFF
MAX_U16: Final = 0xFFFF
MAX_U32: Final = 0xFFFF_FFFF
MAX_U64: Final = 2**64 - 1
MAX_I64: Final = 2**63 - 1
"""Also the largest file offset or size (off_t)."""

# What the authenticated formats (heartbeat frames and link proofs, the replication
# channel) share.
TAG_SIZE: Final = 32
"""An HMAC-SHA256 tag, or the SHA-256 checksum that replaces it in insecure mode."""
NONCE_SIZE: Final = 32
"""A fresh random nonce of a handshake."""
CLUSTER_ID_SIZE: Final = 8
"""The cluster id every frame and greeting carries (a SHA-256 prefix of the name)."""
MAX_NAME: Final = 64
"""Longest node name, in bytes."""
FLAG_INSECURE: Final = 0x01
"""Set in a header's flags when the tag is a plain checksum (``insecure: true``)."""


class DecodeError(PeerProtocolError):
    """Bytes that are not a valid encoding: names the format, the field and where."""

    def __init__(self, what: str, field: str, problem: str, at: int | None = None) -> None:
        where = "" if at is None else f" (at byte {at})"
        super().__init__(f"{what}.{field}: {problem}{where}")
        self.what = what
        self.field = field
        self.problem = problem


class EncodeError(UsageError):
    """A value this node tried to encode does not fit its field (a local bug)."""

    def __init__(self, what: str, field: str, problem: str) -> None:
        super().__init__(f"{what}.{field}: {problem}")


class Reader:
    """Reads the fields of one encoded value in order, never past its end.

    ``what`` names the format in every error (``"tree digest"``, ``"Write"``).
    """

    __slots__ = ("_view", "pos", "what")

    def __init__(self, data: Buffer, what: str) -> None:
        view = data if type(data) is memoryview else memoryview(data)
        self._view = view if view.format == "B" and view.ndim == 1 else view.cast("B")
        self.pos = 0
        self.what = what

    @property
    def left(self) -> int:
        """Bytes not read yet."""
        return len(self._view) - self.pos

    def fail(self, field: str, problem: str) -> DecodeError:
        """The error for ``field`` (to raise), at the current offset."""
        return DecodeError(self.what, field, problem, self.pos)

    def take(self, size: int, field: str) -> memoryview:
        """The next ``size`` bytes, uncopied."""
        end = self.pos + size
        if end > len(self._view):
            raise self.fail(field, f"truncated: {size} bytes needed, {self.left} left")
        part = self._view[self.pos : end]
        self.pos = end
        return part

    def bytes(self, size: int, field: str) -> bytes:
        """The next ``size`` bytes, copied."""
        return bytes(self.take(size, field))

    def unpack(self, fmt: struct.Struct, field: str) -> tuple[Any, ...]:
        """The fields of a fixed part (``fmt`` big-endian, precompiled)."""
        start = self.pos
        end = start + fmt.size
        if end > len(self._view):
            raise self.fail(field, f"truncated: {fmt.size} bytes needed, {self.left} left")
        self.pos = end
        return fmt.unpack_from(self._view, start)

    def number(self, fmt: struct.Struct, field: str) -> int:
        """One unsigned or signed integer of ``fmt`` (``U8`` .. ``U64``, ``I64``)."""
        value: int = self.unpack(fmt, field)[0]
        return value

    def flag(self, field: str) -> bool:
        """A boolean byte: 0 or 1, anything else refused."""
        value = self.number(U8, field)
        if value > 1:
            raise self.fail(field, f"{value} is not 0 or 1")
        return value == 1

    def sized(self, length: struct.Struct, field: str, limit: int | None = None) -> memoryview:
        """A byte string preceded by its length (``length`` is its prefix's width);
        longer than ``limit`` is refused before anything is taken."""
        size = self.number(length, f"{field} length")
        if limit is not None and size > limit:
            raise self.fail(field, f"{size} bytes, more than {limit}")
        return self.take(size, field)

    def text(self, length: struct.Struct, field: str, limit: int | None = None) -> str:
        """A UTF-8 string preceded by its length in bytes."""
        raw = self.sized(length, field, limit)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise self.fail(field, "not UTF-8") from None

    def rest(self) -> memoryview:
        """Everything not read yet (the reader is then at its end)."""
        part = self._view[self.pos :]
        self.pos = len(self._view)
        return part

    def end(self) -> None:
        """Refuse bytes after the last field."""
        if self.pos != len(self._view):
            raise self.fail("end", f"{self.left} trailing bytes after the last field")


class Writer:
    """Builds one encoded value: parts appended in order, joined once.

    ``what`` names the format in every error. ``parts`` may be handed to a
    vectored send as they are (a ``raw`` buffer is kept, not copied).
    """

    __slots__ = ("parts", "what")

    def __init__(self, what: str) -> None:
        self.parts: list[Buffer] = []
        self.what = what

    def fail(self, field: str, problem: str) -> EncodeError:
        """The error for ``field`` (to raise)."""
        return EncodeError(self.what, field, problem)

    def pack(self, fmt: struct.Struct, field: str, *values: Any) -> None:
        """A fixed part."""
        try:
            self.parts.append(fmt.pack(*values))
        except struct.error as error:
            raise EncodeError(self.what, field, str(error)) from None

    def number(self, fmt: struct.Struct, field: str, value: int) -> None:
        self.pack(fmt, field, value)

    def raw(self, data: Buffer) -> None:
        """Bytes as they are (their length is written elsewhere, or fixed)."""
        self.parts.append(data)

    def sized(self, length: struct.Struct, field: str, data: Buffer) -> None:
        """A byte string preceded by its length."""
        size = buffer_size(data)
        try:
            self.parts += (length.pack(size), data)
        except struct.error as error:
            raise EncodeError(self.what, f"{field} length", str(error)) from None

    def text(self, length: struct.Struct, field: str, value: str) -> None:
        """A string as UTF-8, preceded by its length in bytes."""
        self.sized(length, field, value.encode("utf-8"))

    def getvalue(self) -> bytes:
        """Every part, joined."""
        return b"".join(self.parts)


def buffer_size(data: Buffer) -> int:
    """Length of ``data`` in bytes (a ``memoryview`` of wider items counts bytes, not items)."""
    return len(data) if type(data) is bytes else memoryview(data).nbytes
