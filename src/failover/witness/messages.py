"""What a node and the witness say to each other: requests and answers, pure.

Both travel as one UDP datagram each, a heartbeat-format wire frame
(``failover.wire.FrameCodec``: magic, version, cluster id, sender,
incarnation, seq, echo, HMAC-SHA256) whose payload is encoded here with
``failover.codec``. The frame's tag is computed with the *witness key*,
``HMAC(cluster key, WITNESS_KEY_LABEL)``, never with the cluster key itself:
a witness frame fed to a node's heartbeat link (or a heartbeat frame fed to
the witness) fails its MAC before any replay window sees it, so one protocol
can never be replayed into the other.

Freshness is the heartbeats' scheme (docs/wire.md): every frame carries its
sender's incarnation and a seq (``ReplayGuard``), and an ``echo``:

- a request echoes the witness's current incarnation; one that echoes
  another (it was made before the witness restarted, or the node has not
  heard this run of the witness yet) is answered ``RETRY`` and changes
  nothing; the answer's own incarnation is the one to echo;
- an answer echoes the node's incarnation and names the seq of the request
  it answers: a node takes only the answer to its outstanding request.

Request payload (acquire, renew): ``u8 type (1) | u8 op | u8 forced | u32
ttl_ms | generation wanted | generation base``; a generation is ``u64
counter | u8-prefixed origin``. Release payload: ``u8 type (3) | generation
granted | u64 grant seq``: a release names the grant it ends, the seq of the
acquire request that was granted (by this incarnation of the node, the
frame's) and the generation granted. The witness frees the lease only when
that is the grant it holds for the node, so a release delayed past a new
grant to the same node frees nothing. A release in the type-1 layout (a node
of before payload type 3) names no grant: the witness answers it ``LOST``
and the lease runs out at its ttl; a witness of before type 3 drops a type-3
release as a bad payload (the node hears nothing, the lease runs out). Either
mix is safe, only slower to hand over. Answer payload: ``u8 type (2) | u8-prefixed node |
u64 request seq | u8 outcome | generation | u32 expires_in_ms |
u16-prefixed reason``: the node, its incarnation (the frame's echo) and the
seq name the one request it answers.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

from failover.codec import MAX_NAME, U8, U16, U32, U64, Buffer, Reader, Writer
from failover.core.state import INITIAL, Generation
from failover.wire import OLDEST_VERSION, FrameCodec

WITNESS_KEY_LABEL = b"failover witness key\x00"
"""What the cluster key signs to make the witness key (domain separation)."""
WITNESS_SENDER = "witness"
"""The sender name of every answer."""
MAX_REASON = 512
"""Longest reason an answer carries, in bytes."""
MAX_TTL_MS = 3_600_000
"""Longest lease a node may ask for (one hour)."""
MAX_DATAGRAM = 2048
"""Largest datagram either side reads: every valid message is far shorter."""

_REQUEST = 1
_ANSWER = 2
_RELEASE = 3


class Op(enum.IntEnum):
    ACQUIRE = 1
    RENEW = 2
    RELEASE = 3


class Outcome(enum.IntEnum):
    GRANTED = 1
    """Acquire or renew granted: serve ``generation`` until the lease runs out."""
    DENIED = 2
    """Acquire refused (held by another node, not the newest data, not persisted)."""
    LOST = 3
    """Renew or release refused: the lease (the grant a release names) is not,
    or no longer, the requester's. Nothing changed."""
    RELEASED = 4
    """Release done (or nothing held by anyone to release)."""
    RETRY = 5
    """The request echoed another incarnation of the witness: ask again echoing
    this answer's incarnation. Nothing changed."""


def witness_key(cluster_key: bytes) -> bytes:
    """The key that signs witness frames of a cluster (see the module docstring)."""
    return hmac.digest(cluster_key, WITNESS_KEY_LABEL, "sha256")


def witness_codec(cluster: str, cluster_key: bytes) -> FrameCodec:
    """The frame codec of ``cluster``'s witness traffic (always authenticated).

    Its frames stay in version 4 of the heartbeat format (``OLDEST_VERSION``):
    version 5 only adds the heartbeat round trip, of no use to the witness,
    and a witness or a node not yet upgraded reads version 4 only."""
    return FrameCodec(cluster, witness_key(cluster_key), version=OLDEST_VERSION)


@dataclass(frozen=True)
class Request:
    op: Op
    ttl: float = 0.0
    wanted: Generation = INITIAL
    base: Generation = INITIAL
    forced: bool = False
    grant_seq: int = 0
    """Release only: the seq of the acquire whose grant it ends (``wanted``: the
    generation granted); 0 names no grant (the type-1 layout of older nodes)."""


def release_of(generation: Generation, grant_seq: int) -> Request:
    """The release of the grant answered to acquire ``grant_seq``, for ``generation``."""
    return Request(Op.RELEASE, wanted=generation, grant_seq=grant_seq)


@dataclass(frozen=True)
class Answer:
    node: str
    request_seq: int
    outcome: Outcome
    generation: Generation = INITIAL
    expires_in: float = 0.0
    reason: str = ""


def _write_generation(out: Writer, field: str, generation: Generation) -> None:
    out.number(U64, f"{field}.counter", generation.counter)
    out.text(U8, f"{field}.origin", generation.origin)


def _read_generation(data: Reader, field: str) -> Generation:
    counter = data.number(U64, f"{field}.counter")
    origin = data.text(U8, f"{field}.origin", MAX_NAME)
    return Generation(counter, origin)


def _millis(seconds: float, field: str, out: Writer) -> int:
    value = round(seconds * 1000)
    if not 0 <= value <= MAX_TTL_MS:
        raise out.fail(field, f"{seconds!r} s is outside 0..{MAX_TTL_MS // 1000} s")
    return value


def encode_request(request: Request) -> bytes:
    if request.op is Op.RELEASE and request.grant_seq:
        out = Writer("witness release")
        out.number(U8, "type", _RELEASE)
        _write_generation(out, "granted", request.wanted)
        out.number(U64, "grant_seq", request.grant_seq)
        return out.getvalue()
    out = Writer("witness request")
    out.number(U8, "type", _REQUEST)
    out.number(U8, "op", int(request.op))
    out.number(U8, "forced", int(request.forced))
    out.number(U32, "ttl_ms", _millis(request.ttl, "ttl_ms", out))
    _write_generation(out, "wanted", request.wanted)
    _write_generation(out, "base", request.base)
    return out.getvalue()


def decode_request(payload: Buffer) -> Request:
    """The request in ``payload``; ``DecodeError`` (a ``PeerProtocolError``) otherwise."""
    data = Reader(payload, "witness request")
    kind = data.number(U8, "type")
    if kind == _RELEASE:
        granted = _read_generation(data, "granted")
        grant_seq = data.number(U64, "grant_seq")
        if grant_seq == 0:
            raise data.fail("grant_seq", "a release names the seq of a granted request")
        data.end()
        return release_of(granted, grant_seq)
    if kind != _REQUEST:
        raise data.fail("type", "not a request")
    op = data.number(U8, "op")
    if op not in Op._value2member_map_:
        raise data.fail("op", f"unknown operation {op}")
    forced = data.flag("forced")
    ttl_ms = data.number(U32, "ttl_ms")
    if op != Op.RELEASE and not 0 < ttl_ms <= MAX_TTL_MS:
        raise data.fail("ttl_ms", f"{ttl_ms} is outside 1..{MAX_TTL_MS}")
    wanted = _read_generation(data, "wanted")
    base = _read_generation(data, "base")
    data.end()
    return Request(Op(op), ttl_ms / 1000, wanted, base, forced)


def encode_answer(answer: Answer) -> bytes:
    out = Writer("witness answer")
    out.number(U8, "type", _ANSWER)
    out.text(U8, "node", answer.node)
    out.number(U64, "request_seq", answer.request_seq)
    out.number(U8, "outcome", int(answer.outcome))
    _write_generation(out, "generation", answer.generation)
    out.number(U32, "expires_in_ms", _millis(answer.expires_in, "expires_in_ms", out))
    reason = answer.reason.encode("utf-8")[:MAX_REASON].decode("utf-8", "ignore")
    out.text(U16, "reason", reason)
    return out.getvalue()


def decode_answer(payload: Buffer) -> Answer:
    """The answer in ``payload``; ``DecodeError`` (a ``PeerProtocolError``) otherwise."""
    data = Reader(payload, "witness answer")
    if data.number(U8, "type") != _ANSWER:
        raise data.fail("type", "not an answer")
    node = data.text(U8, "node", MAX_NAME)
    seq = data.number(U64, "request_seq")
    outcome = data.number(U8, "outcome")
    if outcome not in Outcome._value2member_map_:
        raise data.fail("outcome", f"unknown outcome {outcome}")
    generation = _read_generation(data, "generation")
    expires_ms = data.number(U32, "expires_in_ms")
    reason = data.text(U16, "reason", MAX_REASON)
    data.end()
    return Answer(node, seq, Outcome(outcome), generation, expires_ms / 1000, reason)
