"""Messages of the replication channel: a pure codec, no sockets and no clock.

One replication session runs over one ``MessageStream`` (each message is
delivered whole and in order). Every message is::

    header (16 bytes)  magic "FORP" | version u8 | kind u8 | flags u8 | 0 u8 | counter u64
    body               depends on the kind
    tag                over header + body: 32 bytes of HMAC-SHA256 under the cluster
                       key for HELLO/WELCOME; 16 bytes of AES-256-GCM (GMAC: nothing
                       encrypted, header + body as associated data, the counter as
                       nonce) under the session key for every later message

The session opens with a handshake. The primary (the sender of changes) sends
``HELLO`` with a fresh random nonce, tagged with the cluster key itself; the
secondary answers ``WELCOME`` with its own fresh nonce. Both then derive one
key per direction from the cluster key, the cluster id, both node names, the
protocol version and both nonces, and tag every message after ``WELCOME``
with it. The primary's first message under its session key is ``CONFIRM``
(empty body): ``HELLO`` is tagged with the cluster key alone, so a recorded
one can be replayed by anyone, but only a holder of the key can answer the
fresh ``WELCOME`` nonce. The secondary counts a session as authenticated, and
lets it change anything, only once ``CONFIRM`` opened. A recorded session
therefore cannot be replayed into a new one (the other side's nonce
differs), a message cannot be reflected back to its sender (the two
directions have different keys), and within a session the counter (0 for
the greetings, then 1, 2, ... per direction) must be exactly the next one,
so nothing can be dropped, repeated or reordered unnoticed.

AES-GCM since version 4: 18 times cheaper than HMAC-SHA256 on 1 MiB here (see
docs/replication.md); a counter never repeats under one session key, so
neither does a nonce. Without a cluster key (``insecure: true``) the tag is a
plain SHA-256 checksum of the header and body and ``FLAG_INSECURE`` is set: it
detects corruption, not forgery. Both nodes must agree; a mismatch is refused.

Kinds after the handshake:

- ``ITEMS`` (sender -> receiver): ``first_seq u64`` then one or more entries
  ``kind u8 | length u32 | payload``. Entry ``i`` has sequence number
  ``first_seq + i``; sequence numbers start at 1 and have no gaps. Entry kinds:
  ``OP`` (a replication op, ``ops.encode``), ``RESYNC`` (an opaque resync
  chunk) and ``CONTROL`` (an opaque control record): resync data and live ops
  share one order.
- ``ACK`` (receiver -> sender): three cumulative sequence numbers, received /
  written / fsynced, each at most the previous one.
- ``PROBE`` (sender -> receiver) and ``PROBE_ANSWER`` (receiver -> sender):
  ``number u64``, 1, 2, ... per session; the answer echoes the number. The
  sender probes a channel that carried nothing for a while, so that a cut
  shows even when no data flows (``channel_sender``); the receiver answers at
  once, ahead of any apply. Both are sealed and counted like every message.

Read and written with ``failover.codec`` (its ``Reader``, ``Writer``, integer
structs and the sizes the authenticated formats share). Every decoding failure
raises a ``DecodeError`` (a ``PeerProtocolError``) naming the message, the field
and what was wrong: ``ACK.levels: out of order ...``, ``replication message 7.tag:
bad tag ...``. ``decode_items`` keeps its own loop, with the same checks and errors
as the ``Reader``'s: it runs once per entry on the receiver's hot path.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from failover.codec import (
    CLUSTER_ID_SIZE,
    FLAG_INSECURE,
    MAX_NAME,
    NONCE_SIZE,
    TAG_SIZE,
    U8,
    U16,
    U32,
    U64,
    Buffer,
    DecodeError,
    Reader,
    Writer,
    buffer_size,
)
from failover.wire import cluster_id as wire_cluster_id

__all__ = [  # Buffer, buffer_size, FLAG_INSECURE, NONCE_SIZE, TAG_SIZE: the codec's
    "ENTRY_OVERHEAD",
    "FLAG_INSECURE",
    "GCM_TAG_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_ENTRY",
    "MAX_GENERATION",
    "MAX_NAME",
    "MAX_REQUEST",
    "NONCE_SIZE",
    "OVERHEAD",
    "PROTOCOL_VERSION",
    "TAG_SIZE",
    "Ack",
    "AckLevel",
    "Buffer",
    "Entry",
    "Greeting",
    "ItemKind",
    "Kind",
    "Opener",
    "Sealer",
    "buffer_size",
    "cluster_id",
    "decode_ack",
    "decode_greeting",
    "decode_items",
    "decode_probe",
    "decode_reply",
    "encode_ack",
    "encode_greeting",
    "encode_probe",
    "encode_reply",
    "items_parts",
    "session_keys",
]

MAGIC = b"FORP"
PROTOCOL_VERSION = 4  # 2: CONFIRM ends the handshake; 3: PROBE/PROBE_ANSWER; 4: AES-GCM tags
# TAG_SIZE (codec): the tag of a greeting (HMAC-SHA256) and of an insecure message (SHA-256).
GCM_TAG_SIZE: Final = 16
"""Tag of a message under a session key (AES-GCM)."""
MAX_ENTRY = 32 * 1024 * 1024
"""Largest entry (its header included): an ``ITEMS`` message is at most the
sender's ``max_message_bytes`` or one entry of this size, plus 56 bytes."""
MAX_GENERATION = 256
"""Longest data generation string (UTF-8 bytes) carried in a greeting."""
MAX_REQUEST = 16 * 1024 * 1024
"""Largest ``request`` a ``WELCOME`` may carry (a resync target's suspect set)."""

_HEADER = struct.Struct(">4sBBBxQ")
HEADER_SIZE = _HEADER.size
OVERHEAD = HEADER_SIZE + TAG_SIZE
"""Most bytes a message adds around its body."""
_NONCE = struct.Struct(">IQ")
_SEQ_SIZE = U64.size
_ENTRY = struct.Struct(">BI")
ENTRY_OVERHEAD = _ENTRY.size
_ACK = struct.Struct(">QQQ")
_GREETING = struct.Struct(f">{CLUSTER_ID_SIZE}sB{NONCE_SIZE}s{NONCE_SIZE}s")
"""cluster id, ack level, nonce, echoed nonce"""


class Kind(enum.IntEnum):
    """What a channel message carries."""

    HELLO = 1
    WELCOME = 2
    ITEMS = 3
    ACK = 4
    REPLY = 5  # the secondary's answer to a CONTROL entry: the entry's seq, then bytes
    CONFIRM = 6  # the primary's proof of the session key, right after WELCOME (empty)
    PROBE = 7  # the primary asks whether the channel still carries: a number
    PROBE_ANSWER = 8  # the secondary's answer: the probe's number


class ItemKind(enum.IntEnum):
    """What one entry of an ``ITEMS`` message carries."""

    OP = 1
    RESYNC = 2
    CONTROL = 3


_ITEM_KINDS = frozenset(int(k) for k in ItemKind)


class AckLevel(enum.StrEnum):
    """How far the receiver has taken an entry before it counts as acknowledged."""

    RECEIVED = "received"
    """In the receiver's memory."""
    WRITTEN = "written"
    """Applied to the receiver's backing directory (page cache)."""
    FSYNCED = "fsynced"
    """Applied, and every ``Fsync`` op up to it has been fsynced on the receiver."""

    @property
    def rank(self) -> int:
        """Index of this level in the ``ACK`` triple (received, written, fsynced)."""
        return _LEVELS.index(self)


_LEVELS = (AckLevel.RECEIVED, AckLevel.WRITTEN, AckLevel.FSYNCED)


def cluster_id(cluster: str) -> bytes:
    """The 8-byte cluster id, the same one heartbeat frames carry."""
    return wire_cluster_id(cluster)


@dataclass(frozen=True, slots=True)
class Greeting:
    """The body of ``HELLO`` (from the primary) and ``WELCOME`` (its answer).

    ``local`` is the node that sent the greeting, ``peer`` the node it expects
    at the other end. ``echo`` is the nonce of the ``HELLO`` being answered
    (all zeros in a ``HELLO``). ``generation`` is the sender's data generation,
    opaque here. ``request`` is what the secondary asks of the primary when the
    session opens (a resync target's resync request; empty otherwise), opaque
    here too, and always empty in a ``HELLO``.
    """

    cluster_id: bytes
    ack_level: AckLevel
    nonce: bytes
    echo: bytes
    local: str
    peer: str
    generation: str
    request: bytes = b""


@dataclass(frozen=True, slots=True)
class Ack:
    """Cumulative acknowledgements: every entry up to each number reached that level."""

    received: int
    written: int
    fsynced: int

    def at(self, level: AckLevel) -> int:
        """The acknowledged sequence number at ``level``."""
        return (self.received, self.written, self.fsynced)[level.rank]


@dataclass(frozen=True, slots=True)
class Entry:
    """One decoded entry of an ``ITEMS`` message."""

    seq: int
    kind: ItemKind
    payload: memoryview


def encode_greeting(greeting: Greeting) -> bytes:
    """The body of a ``HELLO``/``WELCOME``. Raises ValueError on local misuse."""
    if len(greeting.nonce) != NONCE_SIZE or len(greeting.echo) != NONCE_SIZE:
        raise ValueError(f"nonces must be {NONCE_SIZE} bytes")
    for what, name in (("node name", greeting.local), ("peer name", greeting.peer)):
        if not 1 <= len(name.encode("utf-8")) <= MAX_NAME:
            raise ValueError(f"{what} must be 1-{MAX_NAME} bytes, not {name!r}")
    if len(greeting.generation.encode("utf-8")) > MAX_GENERATION:
        raise ValueError(f"generation longer than {MAX_GENERATION} bytes")
    if len(greeting.request) > MAX_REQUEST:
        raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    writer = Writer("greeting")
    level = greeting.ack_level.rank
    writer.pack(_GREETING, "fixed part", greeting.cluster_id, level, greeting.nonce, greeting.echo)
    writer.text(U8, "node name", greeting.local)
    writer.text(U8, "peer name", greeting.peer)
    writer.text(U16, "generation", greeting.generation)
    writer.sized(U32, "request", greeting.request)
    return writer.getvalue()


def decode_greeting(kind: Kind, body: memoryview) -> Greeting:
    """The ``Greeting`` in a ``HELLO``/``WELCOME`` body (structure only: the
    caller checks cluster, names and nonces against what it expects)."""
    reader = Reader(body, kind.name)
    cid, level, nonce, echo = reader.unpack(_GREETING, "fixed part")
    if level >= len(_LEVELS):
        raise DecodeError(kind.name, "ack level", f"unknown level {level}")
    local = reader.text(U8, "node name", MAX_NAME)
    peer = reader.text(U8, "peer name", MAX_NAME)
    generation = reader.text(U16, "generation", MAX_GENERATION)
    request = bytes(reader.sized(U32, "request", MAX_REQUEST))
    reader.end()
    for field, name in (("node name", local), ("peer name", peer)):
        if not name:
            raise DecodeError(kind.name, field, "empty")
    if request and kind is Kind.HELLO:
        raise DecodeError(kind.name, "request", "present (only a WELCOME may carry one)")
    return Greeting(cid, _LEVELS[level], nonce, echo, local, peer, generation, request)


def encode_reply(seq: int, payload: bytes) -> bytes:
    """The body of a ``REPLY``: the answered entry's sequence number, then the answer."""
    return U64.pack(seq) + payload


def decode_reply(body: memoryview) -> tuple[int, bytes]:
    """(seq, answer) of a ``REPLY`` body."""
    reader = Reader(body, "REPLY")
    seq = reader.number(U64, "seq")
    return seq, bytes(reader.rest())


def encode_probe(number: int) -> bytes:
    """The body of a ``PROBE`` or ``PROBE_ANSWER``."""
    return U64.pack(number)


def decode_probe(kind: Kind, body: memoryview) -> int:
    """The number in a ``PROBE`` or ``PROBE_ANSWER`` body."""
    reader = Reader(body, kind.name)
    number = reader.number(U64, "number")
    reader.end()
    return number


def encode_ack(ack: Ack) -> bytes:
    """The body of an ``ACK``."""
    return _ACK.pack(ack.received, ack.written, ack.fsynced)


def decode_ack(body: memoryview) -> Ack:
    """The ``Ack`` in an ``ACK`` body; the levels must not increase."""
    reader = Reader(body, "ACK")
    ack = Ack(*reader.unpack(_ACK, "levels"))
    reader.end()
    if not ack.received >= ack.written >= ack.fsynced:
        raise DecodeError(
            "ACK",
            "levels",
            f"out of order (received {ack.received}, written {ack.written}, fsynced {ack.fsynced})",
        )
    return ack


def items_parts(
    first_seq: int, entries: Sequence[tuple[ItemKind, Sequence[Buffer]]]
) -> list[Buffer]:
    """The body of an ``ITEMS`` message as buffers to join (payloads uncopied).

    Each entry is its kind and its payload as one or more buffers.
    """
    parts: list[Buffer] = [U64.pack(first_seq)]
    for kind, payload in entries:
        parts.append(_ENTRY.pack(kind, sum(buffer_size(p) for p in payload)))
        parts.extend(payload)
    return parts


def decode_items(body: memoryview, expected_seq: int) -> list[Entry]:
    """The entries of an ``ITEMS`` body; the first must carry ``expected_seq``.

    Its own loop, with the ``Reader``'s bounds checks and errors (``ITEMS.entry 2
    payload: truncated: ...``): it runs on the receiver's hot path, where a
    ``Reader`` halves the rate of one-entry messages (docs/codec.md).
    """
    end = len(body)
    if end < _SEQ_SIZE:
        raise DecodeError(
            "ITEMS", "first seq", f"truncated: {_SEQ_SIZE} bytes needed, {end} left", 0
        )
    (first_seq,) = U64.unpack_from(body)
    if first_seq != expected_seq:
        raise DecodeError(
            "ITEMS", "first seq", f"starts at sequence {first_seq}, expected {expected_seq}", 0
        )
    entries: list[Entry] = []
    pos = _SEQ_SIZE
    size = _ENTRY.size
    unpack = _ENTRY.unpack_from
    while pos < end:
        if pos + size > end:
            raise _entry_error(entries, "header", f"truncated: {size} bytes needed", end, pos)
        kind, length = unpack(body, pos)
        if kind not in _ITEM_KINDS:
            raise _entry_error(entries, "kind", f"unknown kind {kind}", end, pos)
        pos += size
        if pos + length > end:
            raise _entry_error(entries, "payload", f"truncated: {length} bytes needed", end, pos)
        entries.append(Entry(first_seq + len(entries), ItemKind(kind), body[pos : pos + length]))
        pos += length
    if not entries:
        raise DecodeError("ITEMS", "entries", "none", pos)
    return entries


def _entry_error(entries: list[Entry], field: str, problem: str, end: int, pos: int) -> DecodeError:
    """The error in ``field`` of the entry after ``entries``, at byte ``pos`` of ``end``."""
    if problem.startswith("truncated"):
        problem += f", {end - pos} left"
    return DecodeError("ITEMS", f"entry {len(entries)} {field}", problem, pos)


def _derive(key: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.digest(key, b"failover replication " + label + b"\x00" + transcript, "sha256")


def session_keys(key: bytes, hello: Greeting, welcome_nonce: bytes) -> tuple[bytes, bytes]:
    """(key of primary -> secondary messages, key of secondary -> primary messages).

    Derived from the cluster key and everything both sides agreed on, so each
    session (each pair of nonces) has keys of its own.
    """
    transcript = b"\x00".join(
        (
            bytes((PROTOCOL_VERSION,)),
            hello.cluster_id,
            hello.local.encode("utf-8"),
            hello.peer.encode("utf-8"),
            hello.nonce,
            welcome_nonce,
        )
    )
    return _derive(key, b"to-secondary", transcript), _derive(key, b"to-primary", transcript)


class _Tagger:
    """How one direction's messages are tagged: ``size`` bytes after header + body."""

    size = TAG_SIZE

    def tag(self, parts: Sequence[Buffer], counter: int) -> bytes:
        raise NotImplementedError

    def check(self, signed: memoryview, tag: memoryview, counter: int) -> bool:
        return hmac.compare_digest(self.tag((signed,), counter), tag)


class _Checksum(_Tagger):
    """Insecure mode: a plain SHA-256 of header + body (detects corruption only)."""

    def tag(self, parts: Sequence[Buffer], counter: int) -> bytes:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        return digest.digest()


class _Hmac(_Tagger):
    """HMAC-SHA256 under the cluster key: the greetings (``HELLO``, ``WELCOME``)."""

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod="sha256")

    def tag(self, parts: Sequence[Buffer], counter: int) -> bytes:
        digest = self._mac.copy()
        for part in parts:
            digest.update(part)
        return digest.digest()


class _Gmac(_Tagger):
    """AES-256-GCM over header + body as associated data, nothing encrypted (GMAC),
    under a session key; the nonce is the message counter, so it never repeats
    under one key (each session and direction has its own key). 18x faster than
    HMAC-SHA256 on 1 MiB here (AES-NI), see docs/replication.md."""

    size = GCM_TAG_SIZE
    _JOIN_BELOW = 64 * 1024  # shorter messages: one call on the joined bytes is cheaper

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a session key is 32 bytes")
        self._aead = AESGCM(key)
        self._aes = algorithms.AES(key)

    def tag(self, parts: Sequence[Buffer], counter: int) -> bytes:
        nonce = _NONCE.pack(0, counter)
        if len(parts) == 1 or sum(buffer_size(part) for part in parts) < self._JOIN_BELOW:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            return self._aead.encrypt(nonce, b"", data)
        encryptor = Cipher(self._aes, modes.GCM(nonce)).encryptor()
        for part in parts:  # large payloads stay where they are
            encryptor.authenticate_additional_data(part)
        encryptor.finalize()
        return encryptor.tag

    def check(self, signed: memoryview, tag: memoryview, counter: int) -> bool:
        try:
            self._aead.decrypt(_NONCE.pack(0, counter), tag, signed)
        except InvalidTag:
            return False
        return True


def _tagger(key: bytes | None, session: bool) -> _Tagger:
    if key is None:
        return _Checksum()
    return _Gmac(key) if session else _Hmac(key)


class Sealer:
    """Tags outgoing messages of one direction and numbers them.

    ``key=None`` is insecure mode: a plain SHA-256 checksum, ``FLAG_INSECURE`` set.
    ``session``: ``key`` is a session key (AES-GCM tags); else the cluster key
    of the greetings (HMAC-SHA256 tags).
    """

    def __init__(self, key: bytes | None, counter: int = 0, *, session: bool = False) -> None:
        self._tagger = _tagger(key, session)
        self._flags = FLAG_INSECURE if key is None else 0
        self.counter = counter

    def seal(self, kind: Kind, body: Iterable[Buffer]) -> bytes:
        """The whole message for ``body`` (buffers joined once), under the next counter."""
        return b"".join(self.seal_parts(kind, body))

    def seal_parts(self, kind: Kind, body: Iterable[Buffer]) -> list[Buffer]:
        """The message for ``body`` as buffers for a vectored send (header, the
        body's buffers uncopied, tag), under the next counter."""
        parts: list[Buffer] = [
            _HEADER.pack(MAGIC, PROTOCOL_VERSION, kind, self._flags, self.counter)
        ]
        parts.extend(body)
        parts.append(self._tagger.tag(parts, self.counter))
        self.counter += 1
        return parts


class Opener:
    """Checks incoming messages of one direction: structure, tag, then counter.

    Raises ``PeerProtocolError`` naming the problem; the session must then end.
    ``key`` and ``session`` as for ``Sealer``.
    """

    def __init__(self, key: bytes | None, counter: int = 0, *, session: bool = False) -> None:
        self._tagger = _tagger(key, session)
        self._insecure = key is None
        self.counter = counter

    def open(self, message: Buffer, *expected: Kind) -> tuple[Kind, memoryview]:
        """(kind, body) of ``message``, which must be one of ``expected`` kinds."""
        view = memoryview(message)
        tag_size = self._tagger.size
        if len(view) < HEADER_SIZE + tag_size:
            raise self._refused("header", f"truncated ({len(view)} bytes)")
        magic, version, kind, flags, counter = _HEADER.unpack_from(view)
        if magic != MAGIC:
            raise self._refused("magic", f"bad magic {bytes(magic)!r}")
        if version != PROTOCOL_VERSION:
            raise self._refused("version", f"protocol version {version} is not spoken here")
        if flags & ~FLAG_INSECURE:
            raise self._refused("flags", f"unknown flags {flags:#x}")
        if bool(flags & FLAG_INSECURE) != self._insecure:
            mine = "without" if self._insecure else "with"
            raise self._refused(
                "flags",
                f"the peer {'has no' if flags else 'has a'} cluster key but this node "
                f"runs {mine} one (both must agree on insecure mode)",
            )
        signed = view[: len(view) - tag_size]
        if not self._tagger.check(signed, view[len(view) - tag_size :], counter):
            raise self._refused(
                "tag",
                "bad tag (forged, corrupted, replayed from another session, "
                "or another cluster key)",
            )
        if counter != self.counter:
            raise self._refused("counter", f"counter {counter} (replayed or reordered)")
        if kind not in expected:
            names = "/".join(k.name for k in expected)
            raise self._refused("kind", f"kind {kind}, expected {names}")
        self.counter += 1
        return Kind(kind), signed[HEADER_SIZE:]

    def _refused(self, field: str, problem: str) -> DecodeError:
        return DecodeError(f"replication message {self.counter}", field, problem)
