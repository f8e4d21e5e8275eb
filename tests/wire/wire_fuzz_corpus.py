"""A seeded stream of hostile and valid frames, each with the outcome the spec expects.

Shared by tests/wire/test_wire_fuzz.py and bench/wire_fuzz.py. Frames are
built here from the byte table in docs/wire.md (``raw_frame``), not through
the codec's private helpers, so the fuzz run also checks the documented
layout. Every case is (bytes, expected), where expected is a ``Reason``
value or ``ACCEPTED``; the stream is meant to be fed, in order, to one
``receiver()`` (``beta`` in its incarnation ``RECEIVER_INCARNATION``):
replay expectations depend on what came before.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from collections.abc import Iterator
from functools import partial

from failover.core.state import Generation, PeerStatus, State, SubStatus
from failover.wire import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    FrameCodec,
    Inbound,
    Outbound,
    Reason,
    cluster_id,
    encode_heartbeat,
)

CLUSTER = "dispatch"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
LOCAL = "beta"
PEER = "alpha"
WINDOW = 64
ACCEPTED = "accepted"
RECEIVER_INCARNATION = 5_000
"""beta's incarnation during the run: what alpha's frames must echo."""

# The byte table of docs/wire.md: offset and size of each header field (version 5;
# version 4 ends after the echo, its sender starts at 42).
HEADER = struct.Struct(">4sBBBBH8sQQQQI")
HEADER_V4 = struct.Struct(">4sBBBBH8sQQQ")
OFF_MAGIC, OFF_VERSION, OFF_KIND, OFF_FLAGS, OFF_NAME_LEN, OFF_PAYLOAD_LEN = 0, 4, 5, 6, 7, 8
OFF_CLUSTER, OFF_INCARNATION, OFF_SEQ, OFF_ECHO, OFF_RTT_SEQ, OFF_HELD = 10, 18, 26, 34, 42, 50
OFF_SENDER = 54
TAG = 32


def codec(key: bytes | None = KEY, cluster: str = CLUSTER) -> FrameCodec:
    return FrameCodec(cluster, key)


def receiver(
    *,
    key: bytes | None = KEY,
    incarnation: int = RECEIVER_INCARNATION,
    window: int = WINDOW,
    local: str = LOCAL,
    peer: str = PEER,
) -> Inbound:
    """The receiving end of ``local`` (beta) in run ``incarnation``, hearing ``peer``."""
    return Inbound(codec(key), Outbound(codec(key), local, incarnation), peer=peer, window=window)


def sender(
    incarnation: int = 1, *, echo: int = RECEIVER_INCARNATION, key: bytes | None = KEY
) -> Outbound:
    """alpha's sending end, having heard beta's run ``echo``."""
    return Outbound(codec(key), PEER, incarnation, echo=echo)


def raw_frame(
    *,
    key: bytes | None = KEY,
    magic: bytes = b"FOVR",
    version: int = PROTOCOL_VERSION,
    kind: int = 1,
    flags: int | None = None,
    sender: bytes = PEER.encode(),
    name_len: int | None = None,
    payload: bytes = b"",
    payload_len: int | None = None,
    cluster: bytes | None = None,
    incarnation: int = 1,
    seq: int = 1,
    echo: int = RECEIVER_INCARNATION,
    rtt_seq: int = 0,
    rtt_held_us: int = 0,
) -> bytes:
    """A frame laid out per docs/wire.md and sealed with ``key`` (HMAC-SHA256) or,
    with ``key=None``, the SHA-256 checksum; any field may be set to a wrong value.
    ``version=4`` lays out the previous version's header (no round-trip echo); any
    other version, the current layout."""
    rtt = () if version == 4 else (rtt_seq, rtt_held_us)
    header = (HEADER_V4 if version == 4 else HEADER).pack(
        magic,
        version,
        kind,
        (0 if key is not None else 1) if flags is None else flags,
        len(sender) if name_len is None else name_len,
        len(payload) if payload_len is None else payload_len,
        cluster_id(CLUSTER) if cluster is None else cluster,
        incarnation,
        seq,
        echo,
        *rtt,
    )
    signed = header + sender + payload
    if key is None:
        return signed + hashlib.sha256(signed).digest()
    return signed + hmac.new(key, signed, "sha256").digest()


_REASON_CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789:-_,.()'éèàçøß€→✓日本"


def random_status(rng: random.Random, node: str = PEER, big: bool = False) -> PeerStatus:
    """A valid status of ``node`` (counters up to 2**63-1 when ``big``)."""
    top = 2**63 - 1 if big else 1000

    def generation() -> Generation:
        counter = rng.randint(0, top)
        return Generation(counter, rng.choice(("", "alpha", "beta")) if counter else "")

    return PeerStatus(
        node=node,
        state=rng.choice(list(State)),
        substatus=rng.choice(list(SubStatus)),
        generation=generation(),
        synced_generation=generation(),
        consistent=rng.random() < 0.8,
        fingerprint=rng.choice(("", hashlib.sha256(rng.randbytes(8)).hexdigest())),
        handover=rng.random() < 0.1,
        can_serve=rng.random() < 0.9,
        reason="".join(rng.choice(_REASON_CHARS) for _ in range(rng.randint(0, 40))),
        view=(rng.randint(0, 2**64 - 1 if big else top), rng.randint(0, top)),
        peer_view=(rng.randint(0, 2**64 - 1 if big else top), rng.randint(0, top)),
    )


def flip_expectation(frame: bytes, bit: int) -> str:
    """The reason a secure receiver must give for ``frame`` with ``bit`` flipped
    (bit ``b`` is ``1 << (b % 8)`` of byte ``b // 8``), by the field it lands in."""
    index, mask = divmod(bit, 8)
    mask = 1 << mask
    name_len = frame[OFF_NAME_LEN]
    payload_len = int.from_bytes(frame[OFF_PAYLOAD_LEN : OFF_PAYLOAD_LEN + 2], "big")
    if index < OFF_VERSION:
        return Reason.BAD_MAGIC
    if index == OFF_VERSION:
        # 5 -> 4 is the previous version, whose shorter header leaves 12 bytes over
        return Reason.MALFORMED if frame[OFF_VERSION] ^ mask == 4 else Reason.BAD_VERSION
    if index == OFF_KIND:  # only kind 1 exists; no single flip of 1 lands on it
        return Reason.UNKNOWN_KIND
    if index == OFF_FLAGS:  # bit 0 claims "insecure", which a keyed receiver refuses
        return Reason.BAD_MAC if mask == 1 else Reason.MALFORMED
    if index == OFF_NAME_LEN:
        new = name_len ^ mask
        if not 1 <= new <= 64:
            return Reason.MALFORMED
        return Reason.TRUNCATED if new > name_len else Reason.MALFORMED
    if index in (OFF_PAYLOAD_LEN, OFF_PAYLOAD_LEN + 1):
        new = payload_len ^ (mask << (8 if index == OFF_PAYLOAD_LEN else 0))
        return Reason.TRUNCATED if new > payload_len else Reason.MALFORMED
    if OFF_CLUSTER <= index < OFF_INCARNATION:
        return Reason.WRONG_CLUSTER
    return Reason.BAD_MAC  # incarnation, seq, echoes, sender, payload or tag: the MAC catches it


def flip(frame: bytes, bit: int) -> bytes:
    index, shift = divmod(bit, 8)
    out = bytearray(frame)
    out[index] ^= 1 << shift
    return bytes(out)


_BAD_PAYLOADS: tuple[bytes, ...] = (
    b"",
    b"{}",
    b"null",
    b"[]",
    b"\xff\xfe",
    b"[" * 60_000,  # deep nesting: json would recurse
    b'{"node":"alpha"}',
    b"1" * 5000,  # an integer beyond int-max-str-digits
    b'{"consistent":NaN}',
)


def bad_payloads(rng: random.Random) -> Iterator[bytes]:
    """Payloads that are not valid heartbeats of ``PEER``: fixed oddities, then
    valid documents with one field broken (cycled, with random choices)."""
    yield from _BAD_PAYLOADS
    while True:
        good = encode_heartbeat(random_status(rng)).decode()
        mutations = (
            good.replace('"consistent":', '"consistent":0,"x":'),  # extra field
            good.replace(',"handover":false', "").replace(',"handover":true', ""),  # missing
            good.replace('"node":"alpha"', '"node":"gamma"'),  # not the frame's sender
            good.replace('"node":"alpha"', '"node":"Alpha!"'),
            good.replace('"state":"', '"state":"x'),
            good.replace('"substatus":"', '"substatus":"x'),
            good.replace('"generation":[', '"generation":[-'),
            good.replace('"generation":[', '"generation":[1e3,'),
            good.replace('"generation":[', '"generation":[9223372036854775808,'),
            good.replace('"view":[', '"view":[-'),
            good.replace('"peer_view":[', '"peer_view":[18446744073709551616,'),
            good.replace('"view":[', '"view":[0,'),
            good.replace('"consistent":', '"consistent":1 or '),
            good.replace('"fingerprint":"', '"fingerprint":"<'),
            good.replace('"reason":"', '"reason":"' + "r" * 257),
            good.replace('"reason":"', '"reason":"\\n'),
            good.replace(":", ": "),  # not canonical
            good + " ",
            '{"node":"alpha",' + good[1:],  # duplicate key
        )
        mutated = rng.choice(mutations).encode()
        if mutated != good.encode():
            yield mutated


class Corpus:
    """Yields (frame, expected) pairs until at least ``target`` were produced.

    The stream plays a peer ``alpha`` talking to a receiver ``beta``, with an
    attacker and a broken network in between: valid heartbeats (some held
    back and delivered out of order within the window), truncations at every
    length, single-bit flips, random bytes, forgeries with another key,
    replays of accepted frames, frames outside the window, wrong versions,
    wrong cluster, unknown kinds, malformed structure, oversize frames, an
    insecure peer, our own frames looped back, an unknown sender, authentic
    frames with bad payloads, authentic frames made before the receiver's
    start (an older echo), and restarts of the peer (new incarnation: its first
    frame echoes nothing yet) followed by replays of the previous incarnation.
    """

    def __init__(self, seed: int, target: int) -> None:
        self.rng = random.Random(seed)
        self.target = target
        self.produced = 0
        self.by_category: dict[str, int] = {}
        self.incarnation = 1000
        self.alpha = sender(self.incarnation)
        self.accepted: list[bytes] = []  # this incarnation's accepted frames
        self.previous: list[bytes] = []  # the previous incarnation's accepted frames
        self._bad_payloads = bad_payloads(self.rng)

    def __iter__(self) -> Iterator[tuple[bytes, str]]:
        round_no = 0
        while self.produced < self.target:
            yield from self._round(round_no)
            round_no += 1

    def _emit(self, category: str, data: bytes, expected: str) -> tuple[bytes, str]:
        self.produced += 1
        self.by_category[category] = self.by_category.get(category, 0) + 1
        return data, expected

    def _valid(self) -> bytes:
        # The round-trip echo is any pair: judging it is the runtime's business, not the wire's.
        rtt = (self.rng.choice((0, self.rng.randint(0, 2**64 - 1))), self.rng.randint(0, 2**32 - 1))
        return self.alpha.heartbeats(random_status(self.rng), ["lan"], {"lan": rtt})["lan"]

    def _next_seq(self) -> int:
        self.alpha.seq += 1  # an authentic frame built by hand still uses up a seq
        return self.alpha.seq

    def _round(self, round_no: int) -> Iterator[tuple[bytes, str]]:
        rng = self.rng
        emit = self._emit
        if round_no and round_no % 50 == 0:  # the peer restarts
            self.previous = self.accepted
            self.accepted = []
            self.incarnation += 1
            # The restarted peer has not heard this receiver yet: it echoes nothing,
            # but the receiver learns its incarnation from that frame.
            self.alpha = sender(self.incarnation, echo=0)
            yield emit("restart", self._valid(), Reason.WRONG_ECHO)
            self.alpha.echo = RECEIVER_INCARNATION  # it heard the receiver's answer
            frame = self._valid()
            self.accepted.append(frame)
            yield emit("restart", frame, ACCEPTED)
            for old in rng.sample(self.previous, min(5, len(self.previous))):
                yield emit("old incarnation", old, Reason.STALE_INCARNATION)

        frame = self._valid()
        self.accepted.append(frame)
        yield emit("valid", frame, ACCEPTED)

        for length in range(len(frame)):
            yield emit("truncation", frame[:length], Reason.TRUNCATED)

        bits = (
            range(len(frame) * 8) if round_no % 10 == 0 else rng.sample(range(len(frame) * 8), 64)
        )
        for bit in bits:
            yield emit("bit flip", flip(frame, bit), flip_expectation(frame, bit))

        for _ in range(40):
            size = rng.choice((0, 1, 2, 3, 4, 20, 33, 34, 35, rng.randint(0, 600)))
            data = rng.randbytes(size)
            if data[:1] == b"F":
                data = b"G" + data[1:]
            yield emit("random bytes", data, Reason.BAD_MAGIC if data else Reason.TRUNCATED)

        # A held-back frame arrives after newer ones, within the window: accepted once.
        held = self._valid()
        later = [self._valid() for _ in range(rng.randint(1, 5))]
        for newer in later:
            self.accepted.append(newer)
            yield emit("valid", newer, ACCEPTED)
        self.accepted.append(held)
        yield emit("out of order", held, ACCEPTED)
        # A peer not yet upgraded: the previous version is accepted too.
        older = raw_frame(
            version=4,
            incarnation=self.incarnation,
            seq=self._next_seq(),
            payload=encode_heartbeat(random_status(rng)),
        )
        self.accepted.append(older)
        yield emit("previous version", older, ACCEPTED)
        yield emit("replay", held, Reason.REPLAYED)

        for old in rng.sample(self.accepted, min(5, len(self.accepted))):
            yield emit("replay", old, Reason.REPLAYED)

        seq, inc = self.alpha.seq, self.incarnation
        payload = encode_heartbeat(random_status(rng))
        if seq > WINDOW:
            too_old = rng.randint(max(1, seq - WINDOW - 20), seq - WINDOW)
            yield emit(
                "too old", raw_frame(incarnation=inc, seq=too_old, payload=payload), Reason.REPLAYED
            )
        yield emit(
            "stale incarnation",
            raw_frame(incarnation=inc - 1 - rng.randint(0, 10), seq=seq + 1, payload=payload),
            Reason.STALE_INCARNATION,
        )

        # Authentic-looking frames with a seq never used: only the broken field can refuse them.
        fresh = partial(raw_frame, incarnation=inc, seq=seq + 1000, payload=payload)
        yield emit("forged", fresh(key=OTHER_KEY), Reason.BAD_MAC)
        yield emit("forged", frame[:-TAG] + rng.randbytes(TAG), Reason.BAD_MAC)
        yield emit("insecure peer", fresh(key=None), Reason.BAD_MAC)
        yield emit(
            "wrong version",
            fresh(version=rng.choice((0, 1, 2, 3, 6, 255))),
            Reason.BAD_VERSION,
        )
        yield emit("wrong cluster", fresh(cluster=cluster_id("other")), Reason.WRONG_CLUSTER)
        yield emit("unknown kind", fresh(kind=rng.randint(2, 255)), Reason.UNKNOWN_KIND)
        yield emit("malformed", fresh(flags=rng.choice((2, 4, 0x80))), Reason.MALFORMED)
        yield emit("malformed", frame + rng.randbytes(rng.randint(1, 8)), Reason.MALFORMED)
        yield emit("malformed", fresh(sender=b"Alpha"), Reason.MALFORMED)
        yield emit("malformed", fresh(sender=b""), Reason.MALFORMED)
        yield emit("malformed", fresh(sender=b"a" * 65), Reason.MALFORMED)
        beta = Outbound(codec(), LOCAL, inc).heartbeat(random_status(rng, node=LOCAL))
        yield emit("own", beta, Reason.OWN)
        gamma = Outbound(codec(), "gamma", inc).heartbeat(random_status(rng, node="gamma"))
        yield emit("unknown sender", gamma, Reason.UNKNOWN_SENDER)

        # Authentic and new, made before the receiver's start: its echo is an older run.
        before = rng.choice((0, RECEIVER_INCARNATION - 1, rng.randint(1, RECEIVER_INCARNATION - 1)))
        yield emit(
            "made before the receiver started",
            raw_frame(incarnation=inc, seq=self._next_seq(), payload=payload, echo=before),
            Reason.WRONG_ECHO,
        )

        bad = next(self._bad_payloads)
        yield emit(
            "bad payload",
            raw_frame(incarnation=inc, seq=self._next_seq(), payload=bad),
            Reason.BAD_PAYLOAD,
        )

        if round_no % 20 == 0:
            pad = rng.randint(1, 64)
            big = frame + bytes(MAX_FRAME - len(frame) + pad)
            yield emit("oversize", big, Reason.TOO_LARGE)
            huge = raw_frame(
                incarnation=inc, seq=seq + 1000, payload=bytes(MAX_FRAME), payload_len=0xFFFF
            )
            yield emit("oversize", huge, Reason.TOO_LARGE)
