"""One fixed sample of every binary format, for the golden-bytes tests.

Each sample is a name and a pair (encode, decode): ``encode()`` gives the
format's bytes for a fixed value, ``decode(data)`` gives back something equal
to that value (or raises). ``test_codec_golden.py`` holds the bytes every
sample encoded to when the formats were first pinned: a change of layout shows
there as a failing test, never silently on the wire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from failover.core.state import Generation, PeerStatus, State, SubStatus
from failover.replication import channel_wire, ops, resync_wire, tracking, verify
from failover.replication.channel_wire import Ack, AckLevel, Greeting, ItemKind, Opener, Sealer
from failover.replication.tracking import ChangeMap, ChangeSet, record_all
from failover.replication.verify import EntryDigest, Kind, TreeDigest
from failover.wire import (
    FrameCodec,
    FrameKind,
    LinkAuth,
    cluster_id,
    decode_heartbeat,
    encode_heartbeat,
)

KEY = bytes(range(32))
CLUSTER = "dispatch"
ZONE = 4096

STATUS = PeerStatus(
    node="alpha",
    state=State.PRIMARY,
    substatus=SubStatus.READY,
    generation=Generation(7, "alpha"),
    synced_generation=Generation(6, "beta"),
    consistent=True,
    fingerprint="sha256:abc=",
    handover=False,
    last_state=State.ALONE,
    reason="peer back é",
    view=(3, 4),
    peer_view=(5, 6),
    has_data=True,
    can_serve=True,
)

OPS: tuple[ops.Op, ...] = (
    ops.Create("r", b"d/f", 0o644),
    ops.Write("r", b"d/f", 10, b"hello\x00world"),
    ops.Truncate("r", b"d/f", 2**40),
    ops.Fallocate("r", b"d/f", ops.FALLOC_FL_PUNCH_HOLE | ops.FALLOC_FL_KEEP_SIZE, 4096, 8192),
    ops.Unlink("r", b"d/f"),
    ops.Rename("r", b"a", b"b/c", ops.RENAME_EXCHANGE),
    ops.Mkdir("r", b"d", 0o755),
    ops.Rmdir("r", b"d"),
    ops.Symlink("r", b"l", b"../t"),
    ops.Link("r", b"a", b"b"),
    ops.Chmod("r", b"a", 0o4711),
    ops.Chown("r", b"a", -1, 1000),
    ops.Utimens("r", b"a", -5, 10**18),
    ops.SetXattr("r", b"a", b"user.x", b"v\x00", ops.XATTR_REPLACE),
    ops.RemoveXattr("r", b"a", b"user.x"),
    ops.Fsync("r", b"a", True),
)

CHANGES = record_all(
    [
        ops.Write("r", b"a/f", 10_000, b"x" * 9000),
        ops.Truncate("r", b"t", 5000),
        ops.Create("r", b"n", 0o644),
        ops.SetXattr("s", b"m", b"user.a", b"1", 0),
    ],
    ZONE,
)

ITEMS: tuple[resync_wire.Item, ...] = (
    resync_wire.Begin(False, ("r", "s"), CHANGES),
    resync_wire.Absent("r", b"gone"),
    resync_wire.Dir("r", b"", 0o755, (b"a", b"b c")),
    resync_wire.Link("r", b"l", b"../t"),
    resync_wire.File("r", b"a/f", 0o600),
    resync_wire.Chunk("r", b"a/f", 2, 5, 30_000, ((8192, b"data"), (16384, b"more"))),
    resync_wire.Meta("r", b"a", 0o700, 0, 7, -5, 10**18, ((b"user.a", b""), (b"user.b", b"v"))),
    resync_wire.End(),
)


def _d(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=verify.DIGEST_SIZE).digest()


_ZONES = _d(b"zone0") + _d(b"zone1")
TREE = TreeDigest(
    ZONE,
    {
        b"d": EntryDigest(Kind.DIR, 0o755, 0, 0, 0, 0, xattrs=((b"user.a", _d(b"1")),)),
        b"d/f": EntryDigest(Kind.FILE, 0o644, 1, 2, 1, 5000, content=_d(_ZONES), zones=_ZONES),
        b"l": EntryDigest(Kind.SYMLINK, 0o777, 0, 0, 1, 3, target=_d(b"../t")),
        b"p": EntryDigest(Kind.BLOCK, 0o600, 0, 0, 1, 0, rdev=2049),
    },
)
SUBTREE = TreeDigest(ZONE, {b"d": TREE.entries[b"d"]}, (b"d",))

CHECKPOINT = tracking._State(
    zone_size=ZONE,
    extent_size=4 * 1024 * 1024,
    generation=3,
    in_sync=False,
    since="gen-7",
    hot=[("r", b"a/f", 0), ("r", b"big", 12)],
    changes=CHANGES,
)


def _link_messages() -> tuple[bytes, bytes]:
    auth = LinkAuth(KEY, cluster_id(CLUSTER), "alpha", "beta")
    dialer = auth.handshake(dialer=True, nonce=bytes([1]) * 32)
    acceptor = LinkAuth(KEY, cluster_id(CLUSTER), "beta", "alpha").handshake(
        dialer=False, nonce=bytes([2]) * 32
    )
    proof = dialer.receive(acceptor.hello)
    assert proof is not None
    return dialer.hello, proof


def _frame(
    key: bytes | None, version: int
) -> tuple[Callable[[], bytes], Callable[[bytes], object]]:
    codec = FrameCodec(CLUSTER, key)
    rtt = {} if version == 4 else {"rtt_seq": 7, "rtt_held_us": 1234}

    def encode() -> bytes:
        payload = encode_heartbeat(STATUS)
        return codec.encode(
            FrameKind.HEARTBEAT, "alpha", 3, 9, payload, echo=11, version=version, **rtt
        )

    def decode(data: bytes) -> object:
        frame = codec.decode(data)
        assert decode_heartbeat(frame.payload) == STATUS
        return frame

    return encode, decode


def _replayed(data: bytes) -> tuple[int, int, ChangeSet]:
    into = ChangeMap(ZONE)
    records, torn = tracking._replay(data, into, CHECKPOINT.extent_size)
    return records, torn, into.frozen()


def _heated() -> tuple[int, int, ChangeSet]:
    into = ChangeMap(ZONE)
    into.add_extent(("r", b"a/f"), 5, CHECKPOINT.extent_size)
    return 1, 0, into.frozen()


HELLO = Greeting(
    cluster_id(CLUSTER), AckLevel.FSYNCED, bytes([3]) * 32, bytes(32), "alpha", "beta", "gen-7é"
)
WELCOME = Greeting(
    cluster_id(CLUSTER), AckLevel.WRITTEN, bytes([4]) * 32, HELLO.nonce, "beta", "alpha", "",
    b"request\x00\xff",
)  # fmt: skip
CHANNEL_ITEMS: tuple[tuple[ItemKind, tuple[bytes, ...]], ...] = (
    (ItemKind.OP, (ops.encode(OPS[1]),)),
    (ItemKind.RESYNC, (b"chunk", b" in two")),
    (ItemKind.CONTROL, (b"",)),
)
SESSION_KEY = bytes(range(100, 132))


def _entries(data: bytes) -> list[tuple[int, ItemKind, bytes]]:
    return [
        (e.seq, e.kind, bytes(e.payload)) for e in channel_wire.decode_items(memoryview(data), 5)
    ]


CHANNEL_REENCODE: dict[str, Callable[[object], bytes]] = {}
"""How a channel sample's decoded value encodes again: whatever a channel decoder
accepts must be exactly the bytes that value encodes to (nothing ignored, nothing
read past what was declared)."""


def _sealed(
    name: str,
    key: bytes | None,
    counter: int,
    session: bool,
    kind: channel_wire.Kind,
    body: list[bytes],
) -> tuple[Callable[[], bytes], Callable[[bytes], object], object]:
    def encode() -> bytes:
        return Sealer(key, counter, session=session).seal(kind, body)

    def reencode(opened: object) -> bytes:
        kind, data = opened  # type: ignore[misc]
        return Sealer(key, counter, session=session).seal(kind, [data])

    CHANNEL_REENCODE[name] = reencode

    def decode(data: bytes) -> object:
        opened, view = Opener(key, counter, session=session).open(data, kind)
        return opened, bytes(view)

    return encode, decode, (kind, b"".join(body))


def _reencode_items(entries: object) -> bytes:
    listed: list[tuple[int, ItemKind, bytes]] = entries  # type: ignore[assignment]
    parts = [(kind, [payload]) for _, kind, payload in listed]
    return b"".join(channel_wire.items_parts(listed[0][0], parts))


def channel_samples() -> dict[str, tuple[Callable[[], bytes], Callable[[bytes], object], object]]:
    """The replication channel's messages: each body, the sealed message, the session keys."""
    wire = channel_wire
    CHANNEL_REENCODE.update(
        {
            "channel-hello": wire.encode_greeting,  # type: ignore[dict-item]
            "channel-welcome": wire.encode_greeting,  # type: ignore[dict-item]
            "channel-items": _reencode_items,
            "channel-ack": wire.encode_ack,  # type: ignore[dict-item]
            "channel-probe": wire.encode_probe,  # type: ignore[dict-item]
            "channel-reply": lambda reply: wire.encode_reply(*reply),  # type: ignore[misc]
        }
    )
    hello = wire.encode_greeting(HELLO)
    items = b"".join(wire.items_parts(5, CHANNEL_ITEMS))
    entries = [(5 + i, kind, b"".join(parts)) for i, (kind, parts) in enumerate(CHANNEL_ITEMS)]
    return {
        "channel-hello": (
            lambda: hello,
            lambda data: wire.decode_greeting(wire.Kind.HELLO, memoryview(data)),
            HELLO,
        ),
        "channel-welcome": (
            lambda: wire.encode_greeting(WELCOME),
            lambda data: wire.decode_greeting(wire.Kind.WELCOME, memoryview(data)),
            WELCOME,
        ),
        "channel-items": (lambda: items, _entries, entries),
        "channel-ack": (
            lambda: wire.encode_ack(Ack(9, 7, 5)),
            lambda data: wire.decode_ack(memoryview(data)),
            Ack(9, 7, 5),
        ),
        "channel-probe": (
            lambda: wire.encode_probe(3),
            lambda data: wire.decode_probe(wire.Kind.PROBE_ANSWER, memoryview(data)),
            3,
        ),
        "channel-reply": (
            lambda: wire.encode_reply(4, b"answer"),
            lambda data: wire.decode_reply(memoryview(data)),
            (4, b"answer"),
        ),
        "channel-sealed-hello": _sealed(
            "channel-sealed-hello", KEY, 0, False, wire.Kind.HELLO, [hello]
        ),
        "channel-sealed-items": _sealed(
            "channel-sealed-items", SESSION_KEY, 1, True, wire.Kind.ITEMS, [items]
        ),
        "channel-sealed-insecure": _sealed(
            "channel-sealed-insecure",
            None,
            2,
            False,
            wire.Kind.ACK,
            [wire.encode_ack(Ack(9, 7, 5))],
        ),
        "channel-session-keys": (
            lambda: b"".join(wire.session_keys(KEY, HELLO, WELCOME.nonce)),
            lambda data: data,
            None,
        ),
    }


def samples() -> dict[str, tuple[Callable[[], bytes], Callable[[bytes], object], object]]:
    """name -> (encode, decode, the value decode must give back, or None: not compared)."""
    out: dict[str, tuple[Callable[[], bytes], Callable[[bytes], object], object]] = {}
    frames = (
        ("frame", KEY, 4),
        ("frame-insecure", None, 4),
        ("frame-v5", KEY, 5),
        ("frame-v5-insecure", None, 5),
    )
    for name, key, version in frames:
        encode, decode = _frame(key, version)
        out[name] = (encode, decode, None)
    hello, proof = _link_messages()
    out["link-hello"] = (lambda: hello, lambda data: data, hello)
    out["link-proof"] = (lambda: proof, lambda data: data, proof)
    for op in OPS:
        out[f"op-{type(op).__name__}"] = (lambda op=op: ops.encode(op), ops.decode, op)
    request = resync_wire.ResyncRequest("gen-7", True, CHANGES)
    out["resync-request"] = (request.encode, resync_wire.ResyncRequest.decode, request)
    for item in ITEMS:
        out[f"resync-{type(item).__name__}"] = (
            lambda item=item: resync_wire.encode_item(item),
            resync_wire.decode_item,
            item,
        )
    out["change-set"] = (CHANGES.serialise, ChangeSet.deserialise, CHANGES)
    out["tree"] = (TREE.serialise, TreeDigest.deserialise, TREE)
    out["tree-no-zones"] = (
        lambda: TREE.serialise(zones=False),
        TreeDigest.deserialise,
        TREE.without_zones(),
    )
    out["tree-subset"] = (SUBTREE.serialise, TreeDigest.deserialise, SUBTREE)
    answer = {"s": TREE, "r": SUBTREE}
    out["verify-answer"] = (lambda: verify.encode_answer(answer), verify.decode_answer, answer)
    out["log-heat"] = (lambda: tracking._heat_record(("r", b"a/f", 5)), _replayed, _heated())
    out["log-op"] = (
        lambda: tracking._op_record(OPS[13]),
        _replayed,
        (1, 0, record_all([OPS[13]], ZONE)),
    )
    out["checkpoint"] = (
        lambda: tracking._encode_checkpoint(CHECKPOINT),
        lambda data: tracking._decode_checkpoint(data, Path("checkpoint")),
        CHECKPOINT,
    )
    out.update(channel_samples())
    return out
