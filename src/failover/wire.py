"""Heartbeat frames on the wire: a versioned, authenticated, replay-protected codec.

Pure: no sockets, no clock, no files. Bytes go in, values (or a
``FrameRejected``, which is a ``PeerProtocolError``) come out. docs/wire.md
describes the layout byte by byte; this module is its only implementation.

Layers, in the order a received frame goes through them (``Inbound.accept``):

1. ``FrameCodec.decode``: size, magic, version, kind, flags, lengths, cluster
   id, then the HMAC-SHA256 tag (or the plain SHA-256 checksum in insecure
   mode), then the sender name.
2. Own frames (multicast loopback) and, optionally, senders other than the
   configured peer are dropped.
3. ``ReplayGuard``: incarnation and sliding sequence window per sender.
4. The echo: the frame must carry this node's current incarnation, which no
   frame made before this start can carry (a recording replayed after this
   node restarted is refused as ``wrong_echo``).
5. ``decode_heartbeat``: the strict JSON payload, back to a ``PeerStatus``.

``LinkAuth`` and ``LinkHandshake`` are the other binary format of a heartbeat
link: the mutual proof of the cluster key that a connection-oriented transport
(``tcp``) runs on each connection before using it.

Every rejection carries a ``Reason`` from a fixed set; ``Inbound`` counts them.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import re
import secrets
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from failover.codec import CLUSTER_ID_SIZE, FLAG_INSECURE, MAX_NAME, MAX_U64, NONCE_SIZE, TAG_SIZE
from failover.core.state import Generation, PeerStatus, State, SubStatus, View
from failover.errors import PeerProtocolError

PROTOCOL_VERSION = 5
"""Version 2 added the ``echo`` header field, version 3 the heartbeat's ``view`` and
``peer_view``, version 4 its ``has_data`` and ``can_serve``, version 5 the round-trip
echo (``rtt_seq``, ``rtt_held_us``) to the header. This node sends version 5, and
version 4 to a peer that has sent it only version 4 (a rolling upgrade: ``Outbound``);
it accepts both (frames of any other version are ``bad_version``)."""
OLDEST_VERSION = 4
"""The oldest version this node still reads and, to such a peer, sends."""
PROBE_EVERY = 8
"""While the peer's current run has been heard only in ``OLDEST_VERSION``, a frame whose
seq is a multiple of this still goes out in ``PROTOCOL_VERSION`` (a probe), ``PROBES``
times per run of the peer: two nodes that speak it find each other even when each first
heard the other in ``OLDEST_VERSION`` (an older peer drops the probes as ``bad_version``)."""
PROBES = 4
"""Probes sent to each run of the peer heard only in ``OLDEST_VERSION`` (see ``PROBE_EVERY``)."""
MAX_FRAME = 65536
"""Largest frame, in bytes, tag included. Anything longer is ``too_large``."""

MAGIC = b"FOVR"
KNOWN_FLAGS = FLAG_INSECURE

# magic, version, kind, flags, sender length, payload length, cluster id, incarnation, seq,
# echo; version 5 then the round-trip echo: rtt_seq, rtt_held_us
_HEADERS = {4: struct.Struct(">4sBBBBH8sQQQ"), 5: struct.Struct(">4sBBBBH8sQQQQI")}
HEADER_SIZE = _HEADERS[PROTOCOL_VERSION].size  # 54
HEADER_SIZE_V4 = _HEADERS[OLDEST_VERSION].size  # 42: the shortest header of any version read
MAX_HELD_US = 2**32 - 1
"""Largest ``rtt_held_us`` (about 71 minutes)."""

_NAME_BYTES = re.compile(rb"[a-z0-9-]{1,64}")


class Reason(enum.StrEnum):
    """Why a frame was dropped: the fixed, documented set (docs/wire.md)."""

    TOO_LARGE = "too_large"
    """Longer than ``MAX_FRAME``."""
    BAD_MAGIC = "bad_magic"
    """Does not start with ``MAGIC``: not one of our frames at all."""
    TRUNCATED = "truncated"
    """Shorter than its header, or than the lengths its header declares."""
    BAD_VERSION = "bad_version"
    """A protocol version this node does not speak."""
    UNKNOWN_KIND = "unknown_kind"
    """A frame kind this version does not define."""
    MALFORMED = "malformed"
    """Structurally wrong: reserved flag bits, a bad name length, trailing bytes,
    a sender name outside ``[a-z0-9-]``."""
    WRONG_CLUSTER = "wrong_cluster"
    """From another cluster (its cluster id differs)."""
    BAD_MAC = "bad_mac"
    """The tag does not verify: forged, corrupted, another key, or a secure /
    insecure mismatch between the two nodes."""
    OWN = "own"
    """Sent by this node (multicast loopback); only ``Inbound`` drops these."""
    UNKNOWN_SENDER = "unknown_sender"
    """Authentic but from a node that is not the configured peer (``Inbound.peer``)."""
    STALE_INCARNATION = "stale_incarnation"
    """From an incarnation of the sender older than one already seen."""
    REPLAYED = "replayed"
    """A sequence number already seen, or older than the replay window."""
    WRONG_ECHO = "wrong_echo"
    """Authentic and new, but its echo is not this node's current incarnation: it
    was made before this node started (a replay after a restart), or the sender
    has not heard this run of the node yet. It still teaches the sender's
    incarnation (the next frames this node sends echo it)."""
    BAD_PAYLOAD = "bad_payload"
    """Authentic frame whose payload is not a valid heartbeat."""
    INTERNAL_ERROR = "internal_error"
    """A bug in this module (an unexpected exception). Never expected; counted
    rather than crashing the daemon, so that it shows in the statistics."""


class FrameRejected(PeerProtocolError):
    """A received frame was refused; ``reason`` says why (one of ``Reason``)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


class FrameKind(enum.IntEnum):
    """What a frame carries. Values 2.. are kept for replication and later kinds;
    a kind this version does not define is rejected (``unknown_kind``)."""

    HEARTBEAT = 1


_KNOWN_KINDS = frozenset(int(k) for k in FrameKind)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded, authenticated frame (not yet checked for replay)."""

    kind: FrameKind
    sender: str
    incarnation: int
    seq: int
    payload: bytes
    echo: int = 0
    """The newest incarnation of the receiver that the sender had heard (0: none)."""
    version: int = PROTOCOL_VERSION
    rtt_seq: int = 0
    """Version 5: the seq of the newest frame of the receiver's that the sender had
    accepted on this frame's link (0: none, and always 0 in version 4)."""
    rtt_held_us: int = 0
    """Version 5: microseconds from accepting ``rtt_seq`` to building this frame."""


def cluster_id(cluster: str) -> bytes:
    """The 8-byte id of a cluster name carried in every frame (a SHA-256 prefix)."""
    return hashlib.sha256(b"failover-cluster\x00" + cluster.encode("utf-8")).digest()[
        :CLUSTER_ID_SIZE
    ]


def _valid_name(name: str) -> bool:
    return name.isascii() and _NAME_BYTES.fullmatch(name.encode("ascii")) is not None


def _check_u64(what: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_U64:
        raise ValueError(f"{what} must be an integer in 0..2**64-1, not {value!r}")


class FrameCodec:
    """Encodes and decodes frames of one cluster.

    With ``key`` (the cluster key, non-empty bytes) every frame ends with an
    HMAC-SHA256 tag over everything before it. With ``key=None`` (the
    ``insecure: true`` configuration) the tag is a plain SHA-256 checksum and
    ``FLAG_INSECURE`` is set: it detects corruption, not forgery. A node with a
    key refuses insecure frames and a node without one refuses authenticated
    frames, both as ``bad_mac``: the two nodes must agree.

    ``version`` is what ``encode`` writes unless told otherwise (``Outbound``
    chooses per frame); ``decode`` reads every version this node speaks.
    """

    def __init__(self, cluster: str, key: bytes | None, *, version: int = PROTOCOL_VERSION) -> None:
        if version not in _HEADERS:
            raise ValueError(f"protocol version {version} is not one of {sorted(_HEADERS)}")
        self.version = version
        if not cluster:
            raise ValueError("the cluster name must not be empty")
        if key is not None and len(key) == 0:
            raise ValueError("an empty cluster key authenticates nothing; use None for insecure")
        self.cluster = cluster
        self.cluster_id = cluster_id(cluster)
        self._key = None if key is None else bytes(key)

    @property
    def authenticated(self) -> bool:
        """True when frames carry an HMAC (a cluster key is configured)."""
        return self._key is not None

    def link_auth(self, local: str, peer: str) -> LinkAuth | None:
        """The connection proof for links between ``local`` and ``peer`` under this
        cluster's key, or None in insecure mode (nothing to prove)."""
        return None if self._key is None else LinkAuth(self._key, self.cluster_id, local, peer)

    def _tag(self, signed: bytes | memoryview) -> bytes:
        if self._key is None:
            return hashlib.sha256(signed).digest()
        return hmac.digest(self._key, signed, "sha256")

    def encode(
        self,
        kind: FrameKind,
        sender: str,
        incarnation: int,
        seq: int,
        payload: bytes,
        *,
        echo: int = 0,
        version: int | None = None,
        rtt_seq: int = 0,
        rtt_held_us: int = 0,
    ) -> bytes:
        """The frame's bytes. Raises ValueError for arguments that no peer would
        accept (an invalid sender name, out-of-range numbers, a frame over
        ``MAX_FRAME``, a round-trip echo in a version 4 frame): that is a local
        bug, never a peer's fault."""
        version = self.version if version is None else version
        if version not in _HEADERS:
            raise ValueError(f"protocol version {version} is not one of {sorted(_HEADERS)}")
        if kind not in _KNOWN_KINDS:
            raise ValueError(f"unknown frame kind {kind!r}")
        if not _valid_name(sender):
            raise ValueError(f"sender must be 1-{MAX_NAME} characters of [a-z0-9-], not {sender!r}")
        _check_u64("incarnation", incarnation)
        _check_u64("seq", seq)
        _check_u64("echo", echo)
        _check_u64("rtt_seq", rtt_seq)
        if (
            isinstance(rtt_held_us, bool)
            or not isinstance(rtt_held_us, int)
            or not 0 <= rtt_held_us <= MAX_HELD_US
        ):
            raise ValueError(f"rtt_held_us must be an integer in 0..2**32-1, not {rtt_held_us!r}")
        header = _HEADERS[version]
        rtt: tuple[int, ...] = (rtt_seq, rtt_held_us)
        if version == OLDEST_VERSION:
            if rtt_seq or rtt_held_us:
                raise ValueError(f"a version {version} frame carries no round-trip echo")
            rtt = ()
        name = sender.encode("ascii")
        size = header.size + len(name) + len(payload) + TAG_SIZE
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds MAX_FRAME ({MAX_FRAME})")
        flags = 0 if self._key is not None else FLAG_INSECURE
        signed = b"".join(
            (
                header.pack(
                    MAGIC,
                    version,
                    int(kind),
                    flags,
                    len(name),
                    len(payload),
                    self.cluster_id,
                    incarnation,
                    seq,
                    echo,
                    *rtt,
                ),
                name,
                payload,
            )
        )
        return signed + self._tag(signed)

    def decode(self, data: bytes) -> Frame:
        """The frame in ``data`` (exactly one whole frame), authenticated.

        Raises ``FrameRejected`` (a ``PeerProtocolError``) and nothing else for
        any input. Checks run in the documented order (docs/wire.md), the
        cheap structural ones first; the tag is verified before any field
        that only matters to an authentic frame (the sender name) is read.
        Does not check for replay: that is ``ReplayGuard``'s job, after this.
        """
        size = len(data)
        if size > MAX_FRAME:
            raise FrameRejected(Reason.TOO_LARGE, f"{size} bytes")
        if data[:4] != MAGIC[: min(size, 4)]:
            raise FrameRejected(Reason.BAD_MAGIC)
        if size < HEADER_SIZE_V4:
            raise FrameRejected(Reason.TRUNCATED, f"{size} bytes, header is {HEADER_SIZE_V4}")
        version = data[4]
        header = _HEADERS.get(version)
        if header is None:
            raise FrameRejected(Reason.BAD_VERSION, f"version {version}")
        if size < header.size:
            raise FrameRejected(Reason.TRUNCATED, f"{size} bytes, header is {header.size}")
        (_, _, kind, flags, name_len, payload_len, cid, incarnation, seq, echo, *rtt) = (
            header.unpack_from(data)
        )
        rtt_seq, rtt_held_us = rtt if rtt else (0, 0)
        if kind not in _KNOWN_KINDS:
            raise FrameRejected(Reason.UNKNOWN_KIND, f"kind {kind}")
        if flags & ~KNOWN_FLAGS:
            raise FrameRejected(Reason.MALFORMED, f"reserved flag bits set ({flags:#04x})")
        if not 1 <= name_len <= MAX_NAME:
            raise FrameRejected(Reason.MALFORMED, f"sender name length {name_len}")
        expected = header.size + name_len + payload_len + TAG_SIZE
        if size < expected:
            raise FrameRejected(Reason.TRUNCATED, f"{size} bytes, header declares {expected}")
        if size > expected:
            raise FrameRejected(Reason.MALFORMED, f"{size - expected} trailing bytes")
        if cid != self.cluster_id:
            raise FrameRejected(Reason.WRONG_CLUSTER, f"cluster id {cid.hex()}")
        insecure = bool(flags & FLAG_INSECURE)
        if insecure and self._key is not None:
            raise FrameRejected(Reason.BAD_MAC, "unauthenticated (insecure) frame refused")
        if not insecure and self._key is None:
            raise FrameRejected(Reason.BAD_MAC, "authenticated frame, but this node is insecure")
        view = memoryview(data)
        signed_end = size - TAG_SIZE
        if not hmac.compare_digest(self._tag(view[:signed_end]), view[signed_end:]):
            raise FrameRejected(Reason.BAD_MAC)
        name_end = header.size + name_len
        name = bytes(view[header.size : name_end])
        if _NAME_BYTES.fullmatch(name) is None:
            raise FrameRejected(Reason.MALFORMED, f"sender name {name!r}")
        return Frame(
            FrameKind(kind),
            name.decode("ascii"),
            incarnation,
            seq,
            bytes(view[name_end:signed_end]),
            echo,
            version,
            rtt_seq,
            rtt_held_us,
        )


@dataclass(slots=True)
class _Window:
    incarnation: int
    top: int  # highest seq accepted in this incarnation
    seen: int  # bit i set: seq (top - i) was accepted


class ReplayGuard:
    """Anti-replay per sender: the newest incarnation and a sliding window of seqs.

    Like IPsec's and WireGuard's windows: for each sender it keeps the highest
    incarnation seen, the highest seq accepted in it, and a bitmap of the
    ``window`` seqs at and below that one. A frame is admitted once: a seq
    already seen or older than the window is ``replayed``; a frame of an older
    incarnation is ``stale_incarnation``; a newer incarnation (the sender
    restarted) starts a fresh window. Frames may arrive out of order (several
    links with different delays) by up to ``window - 1`` seqs.

    It must run only AFTER the frame's MAC was verified (``FrameCodec.decode``):
    ``admit`` records what it admits, so a forged frame fed to it could move
    the window forward and get the authentic frames that follow refused.
    State is never forgotten: forgetting a sender would let old frames in again.
    """

    def __init__(self, window: int = 64) -> None:
        if window < 1:
            raise ValueError("the replay window must hold at least one seq")
        self.window = window
        self._mask = (1 << window) - 1
        self._senders: dict[str, _Window] = {}

    def admit(self, frame: Frame) -> None:
        """Record ``frame`` as seen, or raise ``FrameRejected`` (``replayed`` or
        ``stale_incarnation``) leaving the state unchanged."""
        state = self._senders.get(frame.sender)
        if state is None or frame.incarnation > state.incarnation:
            self._senders[frame.sender] = _Window(frame.incarnation, frame.seq, 1)
            return
        if frame.incarnation < state.incarnation:
            raise FrameRejected(
                Reason.STALE_INCARNATION,
                f"{frame.sender} incarnation {frame.incarnation} < {state.incarnation}",
            )
        if frame.seq > state.top:
            shift = frame.seq - state.top
            # Shifting by a huge gap would build a huge int: past the window, start afresh.
            state.seen = ((state.seen << shift) | 1) & self._mask if shift < self.window else 1
            state.top = frame.seq
            return
        age = state.top - frame.seq
        if age >= self.window:
            raise FrameRejected(Reason.REPLAYED, f"seq {frame.seq} older than the window")
        bit = 1 << age
        if state.seen & bit:
            raise FrameRejected(Reason.REPLAYED, f"seq {frame.seq} already seen")
        state.seen |= bit

    def highest(self, sender: str) -> tuple[int, int] | None:
        """(incarnation, highest seq) admitted from ``sender``, or None if none yet."""
        state = self._senders.get(sender)
        return None if state is None else (state.incarnation, state.top)


# --- heartbeat payload -----------------------------------------------------------------

MAX_REASON = 256
"""Longest ``reason`` (in characters) a heartbeat carries."""
MAX_FINGERPRINT = 128
MAX_COUNTER = 2**63 - 1
_FINGERPRINT = re.compile(r"[A-Za-z0-9._:+/=-]{0,128}")
_STATES = {s.value: s for s in State}
_SUBSTATUSES = {s.value: s for s in SubStatus}
_FIELDS = frozenset(
    (
        "can_serve",
        "consistent",
        "fingerprint",
        "generation",
        "handover",
        "has_data",
        "last_state",
        "node",
        "peer_view",
        "reason",
        "state",
        "substatus",
        "synced_generation",
        "view",
    )
)


def printable_reason(reason: str) -> str:
    """``reason`` as a heartbeat carries it: non-printable characters (newlines,
    controls, lone surrogates) become spaces; cut to ``MAX_REASON`` characters."""
    if len(reason) <= MAX_REASON and reason.isprintable():
        return reason
    return "".join(c if c.isprintable() else " " for c in reason[:MAX_REASON])


def _generation_doc(what: str, generation: Generation) -> list[object]:
    counter, origin = generation.counter, generation.origin
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise ValueError(f"{what}.counter must be an int, not {counter!r}")
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"{what}.counter must be in 0..2**63-1, not {counter}")
    if origin != "" and not _valid_name(origin):
        raise ValueError(f"{what}.origin must be empty or a node name, not {origin!r}")
    return [counter, origin]


def _view_doc(what: str, view: View) -> list[int]:
    if not isinstance(view, tuple) or len(view) != 2:
        raise ValueError(f"{what} must be (epoch, counter), not {view!r}")
    for part in view:
        _check_u64(what, part)
    return [view[0], view[1]]


def encode_heartbeat(status: PeerStatus) -> bytes:
    """The heartbeat payload for ``status``: compact JSON, sorted keys, UTF-8.

    ``reason`` is passed through ``printable_reason``. Raises ValueError when
    ``status`` holds something no peer would accept (a node name that is not
    1-64 characters of ``[a-z0-9-]``, a counter out of range, a fingerprint
    outside ``[A-Za-z0-9._:+/=-]{0,128}``): a local bug or an unchecked config.
    """
    if not _valid_name(status.node):
        raise ValueError(f"node must be 1-{MAX_NAME} characters of [a-z0-9-], not {status.node!r}")
    if not isinstance(status.fingerprint, str) or not _FINGERPRINT.fullmatch(status.fingerprint):
        raise ValueError(
            f"fingerprint must match [A-Za-z0-9._:+/=-]{{0,128}}: {status.fingerprint!r}"
        )
    doc = {
        "can_serve": bool(status.can_serve),
        "consistent": bool(status.consistent),
        "fingerprint": status.fingerprint,
        "generation": _generation_doc("generation", status.generation),
        "handover": bool(status.handover),
        "has_data": bool(status.has_data),
        "last_state": None if status.last_state is None else State(status.last_state).value,
        "node": status.node,
        "peer_view": _view_doc("peer_view", status.peer_view),
        "reason": printable_reason(status.reason),
        "state": State(status.state).value,
        "substatus": SubStatus(status.substatus).value,
        "synced_generation": _generation_doc("synced_generation", status.synced_generation),
        "view": _view_doc("view", status.view),
    }
    text = json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


_E = TypeVar("_E", State, SubStatus)


def _bad(detail: str) -> FrameRejected:
    return FrameRejected(Reason.BAD_PAYLOAD, detail)


def _refuse_constant(name: str) -> object:
    raise _bad(f"{name} is not allowed")


def _name_field(doc: dict[str, object], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str) or not _valid_name(value):
        raise _bad(f"{key} is not a node name")
    return value


def _bool_field(doc: dict[str, object], key: str) -> bool:
    value = doc[key]
    if not isinstance(value, bool):
        raise _bad(f"{key} is not a boolean")
    return value


def _generation_field(doc: dict[str, object], key: str) -> Generation:
    value = doc[key]
    if not isinstance(value, list) or len(value) != 2:
        raise _bad(f"{key} is not [counter, origin]")
    counter, origin = value
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise _bad(f"{key} counter is not an integer")
    if not 0 <= counter <= MAX_COUNTER:
        raise _bad(f"{key} counter out of range")
    if not isinstance(origin, str) or (origin != "" and not _valid_name(origin)):
        raise _bad(f"{key} origin is not a node name")
    return Generation(counter, origin)


def _view_field(doc: dict[str, object], key: str) -> View:
    value = doc[key]
    if not isinstance(value, list) or len(value) != 2:
        raise _bad(f"{key} is not [epoch, counter]")
    epoch, counter = value
    for part in (epoch, counter):
        if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= MAX_U64:
            raise _bad(f"{key} is not two integers in 0..2**64-1")
    return (epoch, counter)


def _enum_field(doc: dict[str, object], key: str, known: dict[str, _E]) -> _E:
    value = doc[key]
    if not isinstance(value, str) or value not in known:
        raise _bad(f"{key} is not one of {sorted(known)}")
    return known[value]


def _optional_state_field(doc: dict[str, object], key: str) -> State | None:
    if doc[key] is None:
        return None
    return _enum_field(doc, key, _STATES)


def decode_heartbeat(payload: bytes) -> PeerStatus:
    """The ``PeerStatus`` in a heartbeat payload, validated field by field.

    Accepts exactly what ``encode_heartbeat`` produces (the canonical form:
    the same fields, sorted, compact, no duplicate keys) and raises
    ``FrameRejected("bad_payload")`` for anything else; no other exception
    escapes, whatever the bytes.
    """
    try:
        doc = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, huge ints
        raise _bad(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise _bad("not a JSON object")
    if doc.keys() != _FIELDS:
        raise _bad(f"fields {sorted(doc)} are not {sorted(_FIELDS)}")
    fingerprint = doc["fingerprint"]
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise _bad("fingerprint is not [A-Za-z0-9._:+/=-]{0,128}")
    reason = doc["reason"]
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
        raise _bad(f"reason is not printable text of at most {MAX_REASON} characters")
    status = PeerStatus(
        node=_name_field(doc, "node"),
        state=_enum_field(doc, "state", _STATES),
        substatus=_enum_field(doc, "substatus", _SUBSTATUSES),
        generation=_generation_field(doc, "generation"),
        synced_generation=_generation_field(doc, "synced_generation"),
        consistent=_bool_field(doc, "consistent"),
        fingerprint=fingerprint,
        handover=_bool_field(doc, "handover"),
        last_state=_optional_state_field(doc, "last_state"),
        reason=reason,
        view=_view_field(doc, "view"),
        peer_view=_view_field(doc, "peer_view"),
        has_data=_bool_field(doc, "has_data"),
        can_serve=_bool_field(doc, "can_serve"),
    )
    # One encoding per status: whitespace, escapes, key order or duplicate keys
    # that json.loads tolerates would make two different frames mean the same thing.
    if encode_heartbeat(status) != payload:
        raise _bad("not in canonical form")
    return status


# --- the two ends the runtime uses --------------------------------------------------------


class Outbound:
    """Builds this node's frames: one incarnation, a seq that increases by one per frame.

    ``incarnation`` must be larger than any this node used before (the peer
    refuses older ones as ``stale_incarnation`` until it restarts itself, and
    a reused one would let frames recorded in an earlier run carry a valid
    echo), for example ``max(time.time_ns(), last + 1)`` persisted before the
    first send. Every frame gets its own seq: build one per link
    (``heartbeats``), never send the same bytes on two links, or the second
    copy is dropped as ``replayed`` and that link looks silent.

    Every frame carries ``echo``: the newest incarnation of the peer heard so
    far (0 before any). The ``Inbound`` paired with this ``Outbound`` keeps it
    up to date; the peer accepts a frame only when its echo is the peer's
    current incarnation.

    Version: frames go out in ``PROTOCOL_VERSION`` unless every frame admitted
    from the peer's current incarnation was of ``OLDEST_VERSION`` (a node not
    yet upgraded, which would drop ours as ``bad_version``): to it, frames go
    out in that version, but for ``PROBES`` probes, one every ``PROBE_EVERY``
    seqs (``heard``, which ``Inbound`` calls, keeps track). Each frame of ``heartbeats`` may
    carry its link's round-trip echo (``rtt_seq``, ``rtt_held_us``; version 5
    only); ``link_seqs`` tells the seq each link's last frame got.
    """

    def __init__(self, codec: FrameCodec, sender: str, incarnation: int, *, echo: int = 0) -> None:
        if not _valid_name(sender):
            raise ValueError(f"sender must be 1-{MAX_NAME} characters of [a-z0-9-], not {sender!r}")
        _check_u64("incarnation", incarnation)
        _check_u64("echo", echo)
        self.codec = codec
        self.sender = sender
        self.incarnation = incarnation
        self.echo = echo
        """The peer's newest incarnation heard (0: none yet), echoed in every frame."""
        self.seq = 0
        """The seq of the last frame built (0: none yet; the first frame has seq 1)."""
        self.link_seqs: dict[str, int] = {}
        """Per link, the seq of the last frame ``heartbeats`` built for it."""
        self._peer = (0, PROTOCOL_VERSION)  # (incarnation, highest version heard in it)
        self._probes = PROBES  # probes left for the peer's current run

    @property
    def peer_version(self) -> int:
        """The highest version heard from the peer's current incarnation (this
        node's own before any frame was heard)."""
        return self._peer[1]

    def heard(self, frame: Frame) -> None:
        """Note an admitted (authentic, not replayed) frame of the peer: its
        incarnation is echoed from now on, its version tells what the peer reads."""
        self.echo = frame.incarnation
        incarnation, version = self._peer
        if frame.incarnation != incarnation:
            self._peer = (frame.incarnation, frame.version)
            self._probes = PROBES
        elif frame.version > version:
            self._peer = (incarnation, frame.version)

    def _version(self, seq: int) -> int:
        heard = self._peer[1]
        if heard >= PROTOCOL_VERSION:
            return PROTOCOL_VERSION
        if seq % PROBE_EVERY == 0 and self._probes > 0:
            self._probes -= 1
            return PROTOCOL_VERSION
        return heard

    def heartbeat(self, status: PeerStatus) -> bytes:
        """A heartbeat frame for ``status`` with the next seq. Raises ValueError if
        ``status`` is not this node's or cannot be encoded (see ``encode_heartbeat``)."""
        return self._next_frame(self._payload(status))

    def heartbeats(
        self,
        status: PeerStatus,
        links: Iterable[str],
        echoes: Mapping[str, tuple[int, int]] | None = None,
    ) -> dict[str, bytes]:
        """One heartbeat frame per link, each with its own seq (same errors as
        ``heartbeat``), carrying ``echoes[link]`` (rtt_seq, rtt_held_us) when
        given and the frame is of version 5. ``link_seqs`` is updated."""
        payload = self._payload(status)
        frames = {}
        for link in links:
            rtt = (0, 0) if echoes is None else echoes.get(link, (0, 0))
            frames[link] = self._next_frame(payload, rtt)
            self.link_seqs[link] = self.seq
        return frames

    def _payload(self, status: PeerStatus) -> bytes:
        if status.node != self.sender:
            raise ValueError(f"status of {status.node!r} sent by {self.sender!r}")
        return encode_heartbeat(status)

    def _next_frame(self, payload: bytes, rtt: tuple[int, int] = (0, 0)) -> bytes:
        seq = self.seq + 1
        version = self._version(seq)
        if version == OLDEST_VERSION:
            rtt = (0, 0)
        frame = self.codec.encode(
            FrameKind.HEARTBEAT,
            self.sender,
            self.incarnation,
            seq,
            payload,
            echo=self.echo,
            version=version,
            rtt_seq=rtt[0],
            rtt_held_us=rtt[1],
        )
        self.seq += 1  # only once the frame exists: a refused encode leaves no gap
        return frame


@dataclass
class InboundStats:
    """What ``Inbound`` did with the frames it was given.

    ``accepted + sum(dropped.values())`` is the number of frames received;
    ``dropped`` is keyed by ``Reason`` value. ``last_rejection`` is the most
    recent drop (with its detail) for logs.
    """

    accepted: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    last_rejection: FrameRejected | None = None
    superseded: int = 0
    """Accepted frames older than one already delivered (a slower link): they prove
    their link works, but the newer status is what is handed on."""

    @property
    def received(self) -> int:
        return self.accepted + sum(self.dropped.values())

    def as_dict(self) -> dict[str, int]:
        """``{"accepted": n, "<reason>": n, ...}`` (non-zero drops only), for status and metrics."""
        return {"accepted": self.accepted, **{k: v for k, v in sorted(self.dropped.items()) if v}}


class Inbound:
    """The receiving end: bytes from any link in, the peer's status out (or nothing).

    ``local`` is this node's ``Outbound``: it names this node and its current
    incarnation, and ``Inbound`` keeps its ``echo`` up to date. ``accept`` runs
    decode (size, header, cluster, MAC) -> drop own frames (``sender ==
    local``, e.g. multicast loopback) -> drop senders other than ``peer`` ->
    replay guard -> echo -> heartbeat payload, and never raises. Each drop is
    counted in ``stats`` under its ``Reason``. One ``Inbound`` serves every
    link of a node: the replay window is per sender, so a frame replayed on
    another link is refused too.

    The echo binds every accepted frame to this run of this node: a frame is
    handed on only when its echo equals ``local.incarnation``, which is larger
    than any incarnation this node used before, so no frame made before this
    start carries it (whatever the replay guard forgot at the restart). A frame
    that passed the replay guard but echoes something else (the peer has not
    heard this run yet) is dropped as ``wrong_echo``, but its incarnation is
    what this node echoes from then on: one frame each way pairs the two runs.

    The status handed on is never older than one already handed on: a frame
    that arrives after a newer one of the same incarnation (queued on a slower
    link, e.g. a TCP stream that buffered through a partition) still counts
    for its link, but carries the newest status seen, not its own. Every link
    carries the same status stream, so nothing is lost, and the core never sees
    its peer go back in time.
    """

    def __init__(self, codec: FrameCodec, local: Outbound, *, peer: str, window: int = 64) -> None:
        if peer == local.sender:
            raise ValueError(f"the peer must be another node than {peer!r}")
        self.codec = codec
        self.local = local
        self.local_node = local.sender
        self.peer = peer
        self.guard = ReplayGuard(window)
        self.stats = InboundStats()
        self._newest: dict[str, tuple[int, int, PeerStatus]] = {}  # (incarnation, seq, status)

    def accept(self, data: bytes) -> tuple[Frame, PeerStatus] | None:
        """The frame and the status it carries, or None when it is dropped (counted)."""
        try:
            frame = self.codec.decode(data)
            if frame.sender == self.local_node:
                raise FrameRejected(Reason.OWN)
            if frame.sender != self.peer:
                raise FrameRejected(Reason.UNKNOWN_SENDER, f"sender {frame.sender}")
            self.guard.admit(frame)
            # Admitted: authentic, and its incarnation is the newest seen from the peer.
            self.local.heard(frame)
            if frame.echo != self.local.incarnation:
                raise FrameRejected(
                    Reason.WRONG_ECHO,
                    f"echoes incarnation {frame.echo}, this node is {self.local.incarnation}",
                )
            status = decode_heartbeat(frame.payload)
            if status.node != frame.sender:
                raise _bad(f"status of {status.node!r} in a frame from {frame.sender!r}")
            status = self._newest_status(frame, status)
        except FrameRejected as rejected:
            self._drop(rejected)
            return None
        except Exception as exc:  # a bug here must not take the daemon down; counted, visible
            self._drop(FrameRejected(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))
            return None
        self.stats.accepted += 1
        return frame, status

    def _newest_status(self, frame: Frame, status: PeerStatus) -> PeerStatus:
        known = self._newest.get(frame.sender)
        if known is not None and (known[0], known[1]) > (frame.incarnation, frame.seq):
            self.stats.superseded += 1
            return known[2]
        self._newest[frame.sender] = (frame.incarnation, frame.seq, status)
        return status

    def _drop(self, rejected: FrameRejected) -> None:
        self.stats.dropped[rejected.reason.value] += 1
        self.stats.last_rejection = rejected


# --- the link handshake: each connection proves the cluster key -----------------------------

LINK_MAGIC = b"FOVA"
LINK_VERSION = 1
_LINK_HEAD = struct.Struct(">4sBB")  # magic, version, message type
_HELLO = struct.Struct(">4sBB8s32s")  # ... cluster id, nonce
_PROOF = struct.Struct(">4sBB32s")  # ... HMAC
HELLO_SIZE = _HELLO.size  # 46
PROOF_SIZE = _PROOF.size  # 38
MAX_LINK_MESSAGE = max(HELLO_SIZE, PROOF_SIZE)
"""The longest handshake message: all a connection may send before it proved the key."""
_PROOF_LABEL = b"failover heartbeat link proof\x00"
"""Starts every signed proof: never ``FOVR`` (a frame) nor ``failover replication``."""


class LinkMessage(enum.IntEnum):
    """The two messages of the link handshake (docs/wire.md)."""

    HELLO = 1
    PROOF = 2


class HandshakeFailed(PeerProtocolError):
    """The other end of a connection did not prove the cluster key (or broke the protocol)."""


class LinkHandshake:
    """One connection's mutual proof of the cluster key, sans-IO.

    Send ``hello`` first. Feed every message that arrives to ``receive``, in
    order, until ``proven``, and send what it returns (when not None): the
    dialer's proof once the acceptor's hello arrived, the acceptor's proof
    only once the dialer's proof verified (so a stranger who connects gets the
    hello and nothing else). ``proven`` is set once the other end's proof
    verified. Anything else (a frame, a second hello, a wrong proof, another
    cluster) raises ``HandshakeFailed``: close the connection.

    Each end proves with ``HMAC(key, label | cluster id | its role | the
    other end's nonce | its own nonce | its name | the other end's name)``.
    Fresh nonces on both sides make a recorded proof useless on another
    connection; the role (dialer or acceptor) makes a proof obtained from one
    node useless when relayed to the other, whose connections from such a
    relay are accepted ones too.
    """

    def __init__(self, auth: LinkAuth, *, dialer: bool, nonce: bytes) -> None:
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes, not {len(nonce)}")
        self._auth = auth
        self.dialer = dialer
        self._nonce = bytes(nonce)
        self._their_nonce: bytes | None = None
        self.proven = False
        self.hello = _HELLO.pack(
            LINK_MAGIC, LINK_VERSION, LinkMessage.HELLO, auth.cluster_id, self._nonce
        )

    def receive(self, message: bytes) -> bytes | None:
        """Take the other end's next message: this end's proof to send, or None."""
        if self.proven:
            raise HandshakeFailed("the handshake is over: no more handshake messages")
        kind = self._kind(message)
        if self._their_nonce is None:
            if kind is not LinkMessage.HELLO or len(message) != HELLO_SIZE:
                raise HandshakeFailed("expected a hello")
            _, _, _, cid, nonce = _HELLO.unpack(message)
            if cid != self._auth.cluster_id:
                raise HandshakeFailed(f"hello from another cluster (id {cid.hex()})")
            if nonce == self._nonce:
                raise HandshakeFailed("our own nonce sent back")
            self._their_nonce = nonce
            return self._own_proof() if self.dialer else None
        if kind is not LinkMessage.PROOF or len(message) != PROOF_SIZE:
            raise HandshakeFailed("expected a proof")
        expected = self._auth._proof(
            dialer=not self.dialer,
            verifier_nonce=self._nonce,
            prover_nonce=self._their_nonce,
            reverse=True,
        )
        if not hmac.compare_digest(_PROOF.unpack(message)[3], expected):
            raise HandshakeFailed("the proof does not verify (another key, node or connection)")
        self.proven = True
        return None if self.dialer else self._own_proof()

    def _own_proof(self) -> bytes:
        assert self._their_nonce is not None
        proof = self._auth._proof(
            dialer=self.dialer, verifier_nonce=self._their_nonce, prover_nonce=self._nonce
        )
        return _PROOF.pack(LINK_MAGIC, LINK_VERSION, LinkMessage.PROOF, proof)

    @staticmethod
    def _kind(message: bytes) -> LinkMessage | None:
        if len(message) < _LINK_HEAD.size:
            raise HandshakeFailed(f"a {len(message)}-byte message is not a handshake message")
        magic, version, kind = _LINK_HEAD.unpack_from(message)
        if magic != LINK_MAGIC:
            raise HandshakeFailed("not a handshake message (bad magic)")
        if version != LINK_VERSION:
            raise HandshakeFailed(f"handshake version {version}, this node speaks {LINK_VERSION}")
        return LinkMessage(kind) if kind in LinkMessage._value2member_map_ else None


class LinkAuth:
    """What a connection-oriented transport needs to make each connection prove the key.

    Made by ``FrameCodec.link_auth`` (None in insecure mode) and handed to
    transports that support it (``failover.transport.ConnectionAuthTransport``).
    It holds the key without exposing it: a transport only gets handshakes.
    """

    def __init__(self, key: bytes, cluster_id_: bytes, local: str, peer: str) -> None:
        if not key:
            raise ValueError("the link proof needs the cluster key")
        for name in (local, peer):
            if not _valid_name(name):
                raise ValueError(f"node names are 1-{MAX_NAME} characters of [a-z0-9-]: {name!r}")
        if local == peer:
            raise ValueError(f"the peer must be another node than {peer!r}")
        self._key = bytes(key)
        self.cluster_id = cluster_id_
        self.local = local
        self.peer = peer

    def handshake(self, *, dialer: bool, nonce: bytes | None = None) -> LinkHandshake:
        """A handshake for one new connection: ``dialer`` if this node connected,
        False if it accepted. The nonce is fresh randomness unless given (tests)."""
        return LinkHandshake(
            self, dialer=dialer, nonce=secrets.token_bytes(NONCE_SIZE) if nonce is None else nonce
        )

    def _proof(
        self, *, dialer: bool, verifier_nonce: bytes, prover_nonce: bytes, reverse: bool = False
    ) -> bytes:
        """The proof that this node (or, ``reverse``, the peer) sends as ``dialer``."""
        prover, verifier = (self.peer, self.local) if reverse else (self.local, self.peer)
        signed = b"".join(
            (
                _PROOF_LABEL,
                self.cluster_id,
                b"D" if dialer else b"A",
                verifier_nonce,
                prover_nonce,
                bytes((len(prover),)),
                prover.encode("ascii"),
                bytes((len(verifier),)),
                verifier.encode("ascii"),
            )
        )
        return hmac.digest(self._key, signed, "sha256")
