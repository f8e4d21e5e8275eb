"""FrameCodec: round trip, the documented layout, and each rejection reason."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from wire_fuzz_corpus import CLUSTER, KEY, OTHER_KEY, codec, raw_frame

from failover.errors import PeerProtocolError
from failover.wire import (
    HEADER_SIZE,
    MAX_FRAME,
    PROTOCOL_VERSION,
    TAG_SIZE,
    Frame,
    FrameCodec,
    FrameKind,
    FrameRejected,
    Reason,
    cluster_id,
)


def reason_of(codec_: FrameCodec, data: bytes) -> Reason:
    with pytest.raises(FrameRejected) as caught:
        codec_.decode(data)
    assert isinstance(caught.value, PeerProtocolError)
    return caught.value.reason


def test_round_trip_gives_back_every_field() -> None:
    data = codec().encode(FrameKind.HEARTBEAT, "alpha", 2**64 - 1, 7, b"hello", echo=2**64 - 2)
    assert codec().decode(data) == Frame(
        FrameKind.HEARTBEAT, "alpha", 2**64 - 1, 7, b"hello", 2**64 - 2
    )


def test_round_trip_in_insecure_mode() -> None:
    insecure = codec(key=None)
    data = insecure.encode(FrameKind.HEARTBEAT, "a-1", 0, 0, b"")
    assert insecure.decode(data) == Frame(FrameKind.HEARTBEAT, "a-1", 0, 0, b"")


def test_layout_matches_the_documented_byte_table() -> None:
    data = codec().encode(
        FrameKind.HEARTBEAT, "alpha", 3, 9, b"xyz", echo=11, rtt_seq=7, rtt_held_us=1234
    )
    assert data == raw_frame(
        incarnation=3, seq=9, payload=b"xyz", echo=11, rtt_seq=7, rtt_held_us=1234
    )
    assert data[:4] == b"FOVR" and data[4] == PROTOCOL_VERSION == 5 and data[5] == 1
    assert HEADER_SIZE == 54 and data[34:42] == (11).to_bytes(8, "big")
    assert data[42:50] == (7).to_bytes(8, "big") and data[50:54] == (1234).to_bytes(4, "big")
    assert data[10:18] == hashlib.sha256(b"failover-cluster\x00" + CLUSTER.encode()).digest()[:8]
    assert len(data) == HEADER_SIZE + 5 + 3 + TAG_SIZE
    assert data[-TAG_SIZE:] == hmac.new(KEY, data[:-TAG_SIZE], "sha256").digest()


def test_the_previous_version_is_read_and_written_without_the_round_trip_echo() -> None:
    data = codec().encode(FrameKind.HEARTBEAT, "alpha", 3, 9, b"xyz", echo=11, version=4)
    assert data == raw_frame(version=4, incarnation=3, seq=9, payload=b"xyz", echo=11)
    assert data[4] == 4 and len(data) == 42 + 5 + 3 + TAG_SIZE
    assert codec().decode(data) == Frame(FrameKind.HEARTBEAT, "alpha", 3, 9, b"xyz", 11, 4)
    with pytest.raises(ValueError, match="no round-trip echo"):
        codec().encode(FrameKind.HEARTBEAT, "alpha", 3, 9, b"", version=4, rtt_seq=1)
    with pytest.raises(ValueError, match="rtt_held_us"):
        codec().encode(FrameKind.HEARTBEAT, "alpha", 3, 9, b"", rtt_held_us=2**32)
    # a version 5 header cut after the version 4 one is truncated, not misread
    assert reason_of(codec(), raw_frame(payload=b"")[:50]) == Reason.TRUNCATED


def test_insecure_frames_carry_the_flag_and_a_plain_checksum() -> None:
    data = codec(key=None).encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"p")
    assert data[6] == 0x01
    assert data[-TAG_SIZE:] == hashlib.sha256(data[:-TAG_SIZE]).digest()


def test_largest_frame_is_accepted_and_one_byte_more_is_too_large() -> None:
    payload = bytes(MAX_FRAME - HEADER_SIZE - 1 - TAG_SIZE)
    data = codec().encode(FrameKind.HEARTBEAT, "a", 1, 1, payload)
    assert len(data) == MAX_FRAME
    assert codec().decode(data).payload == payload
    assert reason_of(codec(), data + b"\x00") == Reason.TOO_LARGE


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.TRUNCATED),
        (b"FO", Reason.TRUNCATED),
        (b"FOVR\x01", Reason.TRUNCATED),
        (raw_frame(payload=b"abc")[:-1], Reason.TRUNCATED),
        (raw_frame(payload=b"abc", payload_len=4), Reason.TRUNCATED),
        (b"X", Reason.BAD_MAGIC),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(40), Reason.BAD_MAGIC),
        (raw_frame(magic=b"FOVr"), Reason.BAD_MAGIC),
        (raw_frame(version=0), Reason.BAD_VERSION),
        (raw_frame(version=1), Reason.BAD_VERSION),  # before the echo field
        (raw_frame(version=2), Reason.BAD_VERSION),  # before the view and peer_view fields
        (raw_frame(version=3), Reason.BAD_VERSION),  # before has_data and can_serve
        (raw_frame(version=PROTOCOL_VERSION + 1), Reason.BAD_VERSION),
        (raw_frame(kind=0), Reason.UNKNOWN_KIND),
        (raw_frame(kind=2), Reason.UNKNOWN_KIND),
        (raw_frame(flags=0x02), Reason.MALFORMED),
        (raw_frame(sender=b""), Reason.MALFORMED),
        (raw_frame(sender=b"a" * 65), Reason.MALFORMED),
        (raw_frame(sender=b"Alpha"), Reason.MALFORMED),
        (raw_frame(sender=b"al\xffa"), Reason.MALFORMED),
        (raw_frame(payload=b"abc") + b"\x00", Reason.MALFORMED),
        (raw_frame(payload=b"abc", payload_len=2), Reason.MALFORMED),
        (raw_frame(cluster=cluster_id("elsewhere")), Reason.WRONG_CLUSTER),
        (raw_frame(key=OTHER_KEY), Reason.BAD_MAC),
        (raw_frame(key=None), Reason.BAD_MAC),
        (raw_frame()[:-1] + b"\x00", Reason.BAD_MAC),
        (bytes(MAX_FRAME + 1), Reason.TOO_LARGE),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_crafted_frame_is_rejected_with_its_reason(data: bytes, reason: Reason) -> None:
    assert reason_of(codec(), data) == reason


def test_checks_run_in_the_documented_order() -> None:
    # A frame wrong in every way is reported by the first check in the table.
    everything_wrong = raw_frame(
        version=9, kind=9, flags=0x80, cluster=bytes(8), key=OTHER_KEY, sender=b"X"
    )
    assert reason_of(codec(), everything_wrong) == Reason.BAD_VERSION
    assert reason_of(codec(), raw_frame(kind=9, flags=0x80)) == Reason.UNKNOWN_KIND
    assert reason_of(codec(), raw_frame(flags=0x80, cluster=bytes(8))) == Reason.MALFORMED
    assert reason_of(codec(), raw_frame(cluster=bytes(8), key=OTHER_KEY)) == Reason.WRONG_CLUSTER
    assert reason_of(codec(), raw_frame(key=OTHER_KEY, sender=b"X")) == Reason.BAD_MAC


def test_a_different_key_is_bad_mac_both_ways() -> None:
    ours, theirs = FrameCodec(CLUSTER, KEY), FrameCodec(CLUSTER, OTHER_KEY)
    assert reason_of(ours, theirs.encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"")) == Reason.BAD_MAC
    assert reason_of(theirs, ours.encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"")) == Reason.BAD_MAC


def test_secure_and_insecure_nodes_refuse_each_other() -> None:
    secure, insecure = codec(), codec(key=None)
    from_insecure = insecure.encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"")
    from_secure = secure.encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"")
    assert reason_of(secure, from_insecure) == Reason.BAD_MAC
    assert reason_of(insecure, from_secure) == Reason.BAD_MAC


def test_an_insecure_receiver_still_detects_corruption() -> None:
    data = bytearray(codec(key=None).encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"payload"))
    data[-40] ^= 0x01
    assert reason_of(codec(key=None), bytes(data)) == Reason.BAD_MAC


def test_a_frame_of_another_cluster_is_refused_even_with_the_same_key() -> None:
    other = FrameCodec("other", KEY).encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"")
    assert reason_of(codec(), other) == Reason.WRONG_CLUSTER


def test_decode_accepts_bytearray_and_memoryview_like_bytes() -> None:
    data = codec().encode(FrameKind.HEARTBEAT, "alpha", 1, 2, b"p")
    assert codec().decode(bytearray(data)) == codec().decode(data)  # type: ignore[arg-type]
    assert codec().decode(memoryview(data)) == codec().decode(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "arguments",
    [
        (2, "alpha", 1, 1, b""),
        (FrameKind.HEARTBEAT, "", 1, 1, b""),
        (FrameKind.HEARTBEAT, "Alpha", 1, 1, b""),
        (FrameKind.HEARTBEAT, "a" * 65, 1, 1, b""),
        (FrameKind.HEARTBEAT, "alpha", -1, 1, b""),
        (FrameKind.HEARTBEAT, "alpha", 1, 2**64, b""),
        (FrameKind.HEARTBEAT, "alpha", 1, 1, b"", -1),
        (FrameKind.HEARTBEAT, "alpha", True, 1, b""),
        (FrameKind.HEARTBEAT, "alpha", 1, 1, bytes(MAX_FRAME)),
    ],
)
def test_encode_refuses_what_no_peer_would_accept(arguments: tuple[object, ...]) -> None:
    *positional, echo = arguments if len(arguments) == 6 else (*arguments, 0)
    with pytest.raises(ValueError):
        codec().encode(*positional, echo=echo)  # type: ignore[arg-type]


def test_codec_refuses_an_empty_key_or_cluster() -> None:
    with pytest.raises(ValueError):
        FrameCodec(CLUSTER, b"")
    with pytest.raises(ValueError):
        FrameCodec("", KEY)


def test_frame_rejected_message_names_the_reason() -> None:
    rejected = FrameRejected(Reason.BAD_MAC, "detail")
    assert str(rejected) == "bad_mac: detail"
    assert rejected.reason == "bad_mac"
