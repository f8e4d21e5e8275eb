"""The arbitrator's rule: one holder at a time, and only for the newest data."""

from __future__ import annotations

from failover.core.arbitration import LeaseRecord, decide_renewal, decide_request
from failover.core.state import INITIAL, Generation

G1A, G2A, G2B = Generation(1, "alpha"), Generation(2, "alpha"), Generation(2, "beta")
TTL = 4.0


def ask(
    record: LeaseRecord,
    *,
    requester: str = "alpha",
    base: Generation = G1A,
    wanted: Generation = G2A,
    forced: bool = False,
    now: float = 10.0,
) -> tuple[bool, LeaseRecord, str]:
    verdict = decide_request(
        record, requester=requester, wanted=wanted, base=base, forced=forced, now=now, ttl=TTL
    )
    return verdict.granted, verdict.record, verdict.reason


def test_a_free_lease_is_granted_for_the_wanted_generation() -> None:
    granted, record, _ = ask(LeaseRecord(generation=G1A))
    assert granted
    assert (record.holder, record.expires_at, record.generation) == ("alpha", 10.0 + TTL, G2A)


def test_a_lease_nobody_was_ever_granted_is_granted_from_any_base() -> None:
    granted, record, _ = ask(LeaseRecord(), base=INITIAL, wanted=Generation(1, "alpha"))
    assert granted
    assert record.holder == "alpha"


def test_a_lease_held_by_the_other_node_is_refused() -> None:
    held = LeaseRecord(holder="beta", expires_at=12.0, generation=G1A)
    granted, record, reason = ask(held)
    assert not granted
    assert record == held
    assert "held by beta" in reason


def test_an_expired_lease_is_granted_to_the_other_node() -> None:
    held = LeaseRecord(holder="beta", expires_at=10.0, generation=G1A)
    granted, record, _ = ask(held, now=10.0)
    assert granted
    assert record.holder == "alpha"
    assert record.expires_at == 10.0 + TTL


def test_a_request_from_a_stale_base_is_refused() -> None:
    newest = LeaseRecord(generation=G2B, granted_to="beta", granted_from=G1A)
    granted, record, reason = ask(newest, base=G1A, wanted=G2A)
    assert not granted
    assert record == newest
    assert "not the newest" in reason


def test_a_forced_request_is_granted_from_a_stale_base() -> None:
    newest = LeaseRecord(generation=G2B, granted_to="beta", granted_from=G1A)
    granted, record, _ = ask(newest, base=G1A, wanted=Generation(3, "alpha"), forced=True)
    assert granted
    assert record.generation == Generation(3, "alpha")


def test_a_new_generation_is_granted_above_the_newest_known() -> None:
    # alpha, forced from an old base, asks for 2:alpha while 2:beta was granted
    # last: it gets 3:alpha, so "the higher generation wins" agrees with the
    # arbitrator when the two histories meet (no split-brain deadlock)
    newest = LeaseRecord(generation=G2B, granted_to="beta", granted_from=G1A)
    granted, record, _ = ask(newest, base=G1A, wanted=G2A, forced=True)
    assert granted
    assert record.generation == Generation(3, "alpha")
    assert record.generation > G2B


def test_serving_the_same_generation_again_keeps_it() -> None:
    newest = LeaseRecord(generation=G2A, granted_to="alpha", granted_from=G1A)
    granted, record, _ = ask(newest, base=G2A, wanted=G2A)
    assert granted
    assert record.generation == G2A


def test_a_forced_request_is_still_refused_while_the_other_holds_the_lease() -> None:
    held = LeaseRecord(holder="beta", expires_at=12.0, generation=G2B)
    granted, _, reason = ask(held, forced=True)
    assert not granted
    assert "held by beta" in reason


def test_the_last_grantee_may_retry_from_the_base_it_asked_from() -> None:
    """It never adopted the generation granted (it crashed first), so its base is newest."""
    record = LeaseRecord(generation=G2A, granted_to="alpha", granted_from=G1A)
    assert ask(record, base=G1A, wanted=G2A)[0]
    assert not ask(record, requester="beta", base=G1A, wanted=G2B)[0]


def test_the_holder_renews_its_lease() -> None:
    held = LeaseRecord(holder="alpha", expires_at=12.0, generation=G2A)
    verdict = decide_renewal(held, requester="alpha", now=11.0, ttl=TTL)
    assert verdict.granted
    assert verdict.record.expires_at == 11.0 + TTL
    assert verdict.record.generation == G2A


def test_a_renewal_by_anyone_else_is_refused() -> None:
    held = LeaseRecord(holder="beta", expires_at=12.0, generation=G2B)
    verdict = decide_renewal(held, requester="alpha", now=11.0, ttl=TTL)
    assert not verdict.granted
    assert verdict.record == held
    assert "no longer ours" in verdict.reason


def test_a_lost_lease_cannot_be_renewed() -> None:
    verdict = decide_renewal(LeaseRecord(generation=G2A), requester="alpha", now=11.0, ttl=TTL)
    assert not verdict.granted
