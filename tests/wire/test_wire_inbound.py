"""Outbound and Inbound: what the runtime calls, end to end, with counted drops."""

from __future__ import annotations

from dataclasses import replace

import pytest
from wire_fuzz_corpus import (
    KEY,
    OTHER_KEY,
    codec,
    raw_frame,
    receiver,
    sender,
)

from failover.core.state import Generation, PeerStatus, State, SubStatus
from failover.wire import (
    FrameKind,
    FrameRejected,
    Inbound,
    Outbound,
    Reason,
    encode_heartbeat,
)

ALPHA = PeerStatus(
    node="alpha",
    state=State.SECONDARY,
    substatus=SubStatus.READY,
    generation=Generation(4, "beta"),
    synced_generation=Generation(4, "beta"),
    consistent=True,
    fingerprint="ab" * 32,
)


def test_a_heartbeat_goes_through_with_an_increasing_seq() -> None:
    alpha = sender(42)
    inbound = receiver()
    for seq in (1, 2, 3):
        result = inbound.accept(alpha.heartbeat(ALPHA))
        assert result is not None
        frame, status = result
        assert (frame.kind, frame.sender, frame.incarnation, frame.seq) == (
            FrameKind.HEARTBEAT,
            "alpha",
            42,
            seq,
        )
        assert status == ALPHA
    assert alpha.seq == 3
    assert inbound.stats.accepted == 3 and inbound.stats.as_dict() == {"accepted": 3}


def test_heartbeats_for_several_links_each_get_their_own_seq_and_all_arrive() -> None:
    alpha = sender(1)
    inbound = receiver()
    frames = alpha.heartbeats(ALPHA, ["lan", "serial", "wan"])
    assert list(frames) == ["lan", "serial", "wan"]
    # The serial copy is the slowest: arriving last, out of order, it is still accepted.
    for link in ("lan", "wan", "serial"):
        assert inbound.accept(frames[link]) is not None
    assert inbound.accept(frames["lan"]) is None  # a copy replayed on any link
    assert inbound.stats.as_dict() == {"accepted": 3, "replayed": 1}


def test_the_same_bytes_sent_on_two_links_count_as_a_replay() -> None:
    # Why Outbound.heartbeats exists: one frame per link, never one frame for all.
    frame = sender(1).heartbeat(ALPHA)
    inbound = receiver()
    assert inbound.accept(frame) is not None
    assert inbound.accept(frame) is None
    assert inbound.stats.dropped == {"replayed": 1}


def test_own_frames_are_dropped_as_own() -> None:
    beta = Outbound(codec(), "beta", 1)
    inbound = receiver()
    assert inbound.accept(beta.heartbeat(replace(ALPHA, node="beta"))) is None
    assert inbound.stats.dropped == {"own": 1}


def test_a_forged_own_frame_is_bad_mac_not_own() -> None:
    forged = raw_frame(key=OTHER_KEY, sender=b"beta", payload=b"{}")
    inbound = receiver()
    assert inbound.accept(forged) is None
    assert inbound.stats.dropped == {"bad_mac": 1}


def test_with_a_peer_configured_other_senders_are_unknown() -> None:
    gamma = Outbound(codec(), "gamma", 1)
    inbound = receiver()
    assert inbound.accept(gamma.heartbeat(replace(ALPHA, node="gamma"))) is None
    assert inbound.stats.dropped == {"unknown_sender": 1}
    # ... and did not reach the replay guard.
    assert inbound.guard.highest("gamma") is None


def test_the_peer_must_be_another_node() -> None:
    with pytest.raises(ValueError):
        Inbound(codec(), Outbound(codec(), "beta", 1), peer="beta")


def test_a_status_of_another_node_inside_a_frame_is_bad_payload() -> None:
    payload = encode_heartbeat(replace(ALPHA, node="gamma"))
    inbound = receiver()
    assert inbound.accept(raw_frame(payload=payload)) is None
    assert inbound.stats.dropped == {"bad_payload": 1}


def test_a_forged_frame_does_not_advance_the_replay_window() -> None:
    alpha = sender(5)
    inbound = receiver()
    payload = encode_heartbeat(ALPHA)
    forged = raw_frame(key=OTHER_KEY, incarnation=2**64 - 1, seq=2**64 - 1, payload=payload)
    assert inbound.accept(forged) is None
    assert inbound.guard.highest("alpha") is None
    assert inbound.accept(alpha.heartbeat(ALPHA)) is not None


def test_a_restarted_peer_is_accepted_and_its_old_frames_are_stale() -> None:
    inbound = receiver()
    before = sender(10)
    old = [before.heartbeat(ALPHA) for _ in range(3)]
    assert inbound.accept(old[0]) is not None
    after = sender(11)
    assert inbound.accept(after.heartbeat(ALPHA)) is not None
    assert inbound.accept(old[1]) is None
    assert inbound.stats.dropped == {"stale_incarnation": 1}


def test_counts_add_up_and_last_rejection_says_why() -> None:
    inbound = receiver()
    alpha = sender(1)
    feed = [alpha.heartbeat(ALPHA), b"", b"junk", raw_frame(version=7), raw_frame(key=None)]
    for data in feed:
        inbound.accept(data)
    assert inbound.stats.received == len(feed)
    assert inbound.stats.as_dict() == {
        "accepted": 1,
        "bad_mac": 1,
        "bad_magic": 1,
        "bad_version": 1,
        "truncated": 1,
    }
    assert inbound.stats.last_rejection is not None
    assert inbound.stats.last_rejection.reason == Reason.BAD_MAC


def test_an_insecure_cluster_works_end_to_end() -> None:
    alpha = sender(1, key=None)
    inbound = receiver(key=None)
    assert inbound.accept(alpha.heartbeat(ALPHA)) is not None
    assert inbound.accept(sender(2).heartbeat(ALPHA)) is None
    assert inbound.stats.dropped == {"bad_mac": 1}


def test_an_unexpected_exception_is_counted_not_raised() -> None:
    inbound = receiver()
    assert inbound.accept(None) is None  # type: ignore[arg-type]
    assert inbound.stats.dropped == {"internal_error": 1}


def test_outbound_refuses_to_speak_for_another_node() -> None:
    alpha = sender(1)
    with pytest.raises(ValueError):
        alpha.heartbeat(replace(ALPHA, node="beta"))
    with pytest.raises(ValueError):
        alpha.heartbeats(replace(ALPHA, node="beta"), ["lan"])
    assert alpha.seq == 0


def test_outbound_refuses_a_bad_sender_or_incarnation() -> None:
    with pytest.raises(ValueError):
        Outbound(codec(), "Alpha", 1)
    with pytest.raises(ValueError):
        Outbound(codec(), "alpha", -1)
    with pytest.raises(ValueError):
        Outbound(codec(), "alpha", 2**64)


def test_a_failed_encode_does_not_use_up_a_seq() -> None:
    alpha = sender(1)
    with pytest.raises(ValueError):
        alpha.heartbeat(replace(ALPHA, generation=Generation(-1, "alpha")))
    assert alpha.seq == 0


def test_frame_rejected_is_a_peer_protocol_error_with_a_reason() -> None:
    from failover.errors import PeerProtocolError  # noqa: PLC0415

    with pytest.raises(PeerProtocolError) as caught:
        codec().decode(b"")
    assert isinstance(caught.value, FrameRejected)
    assert caught.value.reason == "truncated"


def test_nodes_with_different_keys_never_accept_each_other() -> None:
    ours = receiver()
    theirs = sender(1, key=OTHER_KEY)
    for _ in range(5):
        assert ours.accept(theirs.heartbeat(ALPHA)) is None
    assert ours.stats.dropped == {"bad_mac": 5}
    assert KEY != OTHER_KEY


def test_a_late_frame_counts_for_its_link_but_never_hands_on_an_older_status() -> None:
    alpha = sender(1)
    inbound = receiver()
    old = alpha.heartbeat(ALPHA)  # queued on a slow link (a TCP stream through a partition)
    newer = replace(ALPHA, state=State.ALONE, generation=Generation(5, "alpha"))
    fresh = alpha.heartbeat(newer)
    assert inbound.accept(fresh) is not None
    late = inbound.accept(old)
    assert late is not None  # accepted: the slow link works
    frame, status = late
    assert frame.seq == 1
    assert status == newer  # but the peer's view does not go back in time
    assert inbound.stats.superseded == 1
    # a restarted sender (new incarnation) starts afresh
    restarted = sender(2)
    back = inbound.accept(restarted.heartbeat(ALPHA))
    assert back is not None and back[1] == ALPHA
