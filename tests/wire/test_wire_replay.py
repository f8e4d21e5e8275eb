"""ReplayGuard: per-sender incarnation and sliding sequence window."""

from __future__ import annotations

import pytest

from failover.wire import Frame, FrameKind, FrameRejected, Reason, ReplayGuard


def frame(seq: int, incarnation: int = 1, sender: str = "alpha") -> Frame:
    return Frame(FrameKind.HEARTBEAT, sender, incarnation, seq, b"")


def refused(guard: ReplayGuard, f: Frame) -> Reason:
    with pytest.raises(FrameRejected) as caught:
        guard.admit(f)
    return caught.value.reason


def test_increasing_seqs_are_admitted() -> None:
    guard = ReplayGuard()
    for seq in (1, 2, 3, 10, 11):
        guard.admit(frame(seq))
    assert guard.highest("alpha") == (1, 11)


def test_the_first_frame_of_a_sender_may_have_any_seq() -> None:
    guard = ReplayGuard()
    guard.admit(frame(123_456))
    guard.admit(frame(0, sender="gamma"))
    assert guard.highest("alpha") == (1, 123_456)
    assert guard.highest("gamma") == (1, 0)
    assert guard.highest("nobody") is None


def test_a_duplicate_is_replayed() -> None:
    guard = ReplayGuard()
    guard.admit(frame(5))
    assert refused(guard, frame(5)) == Reason.REPLAYED


def test_out_of_order_within_the_window_is_admitted_exactly_once() -> None:
    guard = ReplayGuard(window=64)
    guard.admit(frame(100))
    guard.admit(frame(37))  # age 63: the oldest seq the window still holds
    guard.admit(frame(99))
    assert refused(guard, frame(37)) == Reason.REPLAYED
    assert refused(guard, frame(99)) == Reason.REPLAYED
    assert guard.highest("alpha") == (1, 100)


def test_older_than_the_window_is_replayed_even_if_never_seen() -> None:
    guard = ReplayGuard(window=64)
    guard.admit(frame(100))
    assert refused(guard, frame(36)) == Reason.REPLAYED
    assert refused(guard, frame(0)) == Reason.REPLAYED


def test_the_window_slides_and_keeps_what_it_saw() -> None:
    guard = ReplayGuard(window=8)
    for seq in (1, 3, 5):
        guard.admit(frame(seq))
    guard.admit(frame(9))  # window now holds 2..9
    assert refused(guard, frame(1)) == Reason.REPLAYED  # slid out
    assert refused(guard, frame(3)) == Reason.REPLAYED  # still remembered
    assert refused(guard, frame(5)) == Reason.REPLAYED
    guard.admit(frame(2))
    guard.admit(frame(4))


def test_a_jump_far_beyond_the_window_starts_afresh() -> None:
    guard = ReplayGuard(window=64)
    guard.admit(frame(1))
    guard.admit(frame(2**64 - 1))  # must not build a 2**64-bit integer
    assert refused(guard, frame(2**64 - 1)) == Reason.REPLAYED
    guard.admit(frame(2**64 - 2))
    assert refused(guard, frame(2)) == Reason.REPLAYED


def test_an_older_incarnation_is_stale() -> None:
    guard = ReplayGuard()
    guard.admit(frame(1, incarnation=7))
    assert refused(guard, frame(2, incarnation=6)) == Reason.STALE_INCARNATION
    assert refused(guard, frame(2**64 - 1, incarnation=0)) == Reason.STALE_INCARNATION


def test_a_newer_incarnation_resets_the_window() -> None:
    guard = ReplayGuard()
    guard.admit(frame(500, incarnation=1))
    guard.admit(frame(1, incarnation=2))  # the sender restarted and counts from 1 again
    guard.admit(frame(2, incarnation=2))
    assert refused(guard, frame(2, incarnation=2)) == Reason.REPLAYED
    assert refused(guard, frame(501, incarnation=1)) == Reason.STALE_INCARNATION
    assert guard.highest("alpha") == (2, 2)


def test_senders_have_separate_windows() -> None:
    guard = ReplayGuard()
    guard.admit(frame(1, sender="alpha"))
    guard.admit(frame(1, sender="gamma"))
    assert refused(guard, frame(1, sender="gamma")) == Reason.REPLAYED


def test_a_refused_frame_leaves_the_state_unchanged() -> None:
    guard = ReplayGuard(window=4)
    guard.admit(frame(10, incarnation=3))
    for bad in (frame(10, incarnation=3), frame(1, incarnation=3), frame(99, incarnation=2)):
        with pytest.raises(FrameRejected):
            guard.admit(bad)
    assert guard.highest("alpha") == (3, 10)
    guard.admit(frame(9, incarnation=3))


def test_a_window_of_one_admits_only_increasing_seqs() -> None:
    guard = ReplayGuard(window=1)
    guard.admit(frame(5))
    assert refused(guard, frame(4)) == Reason.REPLAYED
    guard.admit(frame(6))


def test_the_window_must_hold_a_seq() -> None:
    with pytest.raises(ValueError):
        ReplayGuard(window=0)
