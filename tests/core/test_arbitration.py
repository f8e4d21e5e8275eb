"""The arbitrator's rule: one holder at a time, and only for the newest data."""

from __future__ import annotations

from dataclasses import replace

from core_support import SETTINGS, Driver, beta, of_type, to_secondary

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.arbitration import LeaseRecord, decide_renewal, decide_request
from failover.core.state import INITIAL, Generation, PeerStatus, State, SubStatus

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


# --- the peer-backed lease (core/arbitration.py's docstring) -------------------------------
# With the witness down, the serving node keeps serving while its peer echoes the
# stamps of its heartbeats; it stops lease_margin before the peer may ask the
# witness (W = min(dead_timeout, startup_timeout) after the last frame it heard).

ARB = replace(SETTINGS, arbitrator=True, lease_ttl=4, lease_renew=1, lease_margin=1)
W = ARB.peer_backed_window  # 3 s here: the peer-backed lease is echo + 2 s


def last_stamp(d: Driver) -> float:
    """The stamp of the newest heartbeat alpha sent."""
    for step in reversed(d.steps):
        for effect in reversed(of_type(step.effects, fx.SendHeartbeat)):
            assert effect.status.stamp is not None
            return effect.status.stamp
    raise AssertionError("alpha sent no heartbeat")


def secondary_echoing(d: Driver, echo: float | None) -> PeerStatus:
    generation = d.node.facts.metadata.generation
    status = beta(State.SECONDARY, generation, synced=generation)
    return replace(status, view=(7, 1), stamp=d.now, echo=echo)


def arbitrated_primary() -> Driver:
    """Alpha granted the lease by the witness, serving, beta in sync."""
    d = Driver(settings=ARB)
    d.do(ev.Start())
    [asked] = of_type(d.do(ev.Prim(), at=W + 0.5), fx.RequestArbitration)
    d.do(ev.ArbitrationGranted(asked.generation))
    d.do(ev.AppStarted())
    generation = d.node.facts.metadata.generation
    d.hear(beta(State.RESYNC, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    d.do(ev.PeerResynced(generation))
    d.hear(secondary_echoing(d, None))
    assert d.state is State.PRIMARY and d.node.facts.lease.held
    return d


def paired_without_witness(d: Driver, until: float, *, beta_hears: bool = True) -> float:
    """Every second up to ``until`` alpha's timers run (renewals go unanswered:
    the witness is down) and beta's heartbeat arrives, echoing the newest stamp
    of alpha it heard (frozen when ``beta_hears`` is false: a one-way cut).
    Returns the last stamp beta echoed."""
    echoed = last_stamp(d)
    while d.now + 1 <= until:
        d.run_until(d.now + 1)
        if d.state is not State.PRIMARY:
            break
        if beta_hears:
            echoed = last_stamp(d)
        d.hear(secondary_echoing(d, echoed))
    return echoed


def stop_time(d: Driver) -> float | None:
    for step in d.steps:
        if of_type(step.effects, fx.StopApp):
            return step.now
    return None


def test_the_witness_down_under_a_connected_pair_keeps_the_primary_serving() -> None:
    d = arbitrated_primary()
    start = d.now
    paired_without_witness(d, start + 30)  # the witness lease ran out at start + 3
    assert d.state is State.PRIMARY and stop_time(d) is None
    # it asked the witness all along (best effort), once per lease_renew
    renewals = [s for s in d.steps if of_type(s.effects, fx.RenewArbitration)]
    assert len(renewals) >= 25
    serve_until = d.node.facts.serve_until
    assert serve_until is not None and serve_until > d.now
    assert d.node.facts.lease.fence_at is not None and d.node.facts.lease.fence_at < d.now


def test_the_witness_down_and_the_peer_lost_stops_by_the_peer_backed_deadline() -> None:
    d = arbitrated_primary()
    echoed = paired_without_witness(d, d.now + 10)
    assert d.state is State.PRIMARY
    deadline = echoed + W - ARB.lease_margin
    assert d.node.facts.serve_until == deadline
    d.run_until(deadline + 5)  # beta silent from now on
    assert d.state is State.WAIT and not d.node.facts.lease.held
    assert stop_time(d) == deadline  # the peer may ask the witness only at echoed + W


def test_a_one_way_cut_stops_the_primary_before_its_peer_may_ask() -> None:
    # alpha hears beta, beta no longer hears alpha: beta's echo stays at the last
    # stamp it heard, and alpha's deadline runs from that stamp, not from beta's
    # frames it keeps receiving
    d = arbitrated_primary()
    paired_without_witness(d, d.now + 5)
    heard_last = last_stamp(d)  # beta's last frame of alpha: sent (and heard) then
    echoed = paired_without_witness(d, d.now + 10, beta_hears=False)
    assert echoed == heard_last
    stopped = stop_time(d)
    assert d.state is State.WAIT and stopped is not None
    # beta may ask the witness at heard_last + dead_timeout at the earliest
    assert stopped <= heard_last + W - ARB.lease_margin < heard_last + ARB.dead_timeout


def test_a_renewal_without_answer_while_paired_does_not_stop_a_refusal_does() -> None:
    d = arbitrated_primary()
    paired_without_witness(d, d.now + 8)
    assert d.state is State.PRIMARY
    # the witness is back, and says the lease is someone else's: stop at once
    effects = d.do(ev.ArbitrationLost("the lease is no longer ours"))
    assert d.state is State.WAIT and of_type(effects, fx.StopApp)


def test_only_an_echo_of_this_stint_from_this_run_backs_the_lease() -> None:
    d = arbitrated_primary()
    since = d.node.facts.lease.since
    assert since is not None
    for echo, view in ((since, d.node.facts.view), (since + 1, (d.node.facts.view[0] + 1, 0))):
        d.hear(replace(secondary_echoing(d, echo), peer_view=view), at=d.now + 0.1, echo=False)
        assert d.node.facts.lease.peer_until is None  # sent before the stint, or another run
    d.hear(secondary_echoing(d, since + 0.5), at=d.now + 0.1, links=["lan"])
    backed = since + 0.5 + W - ARB.lease_margin
    assert d.node.facts.lease.peer_until == backed
    later = since + 0.9
    # a serving peer promises nothing (alpha yields to it: the split brain rule)
    serving = replace(secondary_echoing(d, later), state=State.ALONE)
    other = replace(secondary_echoing(d, later), fingerprint="other-settings")
    for status in (serving, other):
        e = Driver(settings=ARB)
        e.node.restore(d.node.snapshot())
        e.now = d.now
        seen: list[float | None] = []
        original = e.node._note_stamps

        def noting(heard: PeerStatus, note=original, seen=seen, node=e.node) -> None:
            note(heard)
            seen.append(node.facts.lease.peer_until)

        e.node._note_stamps = noting  # type: ignore[method-assign]
        e.hear(status, at=e.now + 0.1, links=["lan"])
        assert seen == [backed], status  # not extended by that echo


def test_a_node_echoes_only_while_it_can_promise_not_to_ask() -> None:
    # beta's side, played by alpha: a secondary echoes the stamps of its primary,
    # and stops echoing once it asked the witness itself (it lost the primary)
    d = Driver(settings=ARB)
    to_secondary(d)
    generation = d.node.facts.metadata.generation
    peer = beta(State.PRIMARY, generation, synced=generation)
    d.hear(replace(peer, view=(9, 0), stamp=0.75), at=d.now + 0.25)
    [sent] = of_type(d.run_until(d.now + 1.1), fx.SendHeartbeat)
    assert sent.status.echo == 0.75
    effects = d.run_until(d.now + 5)  # beta is lost: alpha asks the witness
    assert of_type(effects, fx.RequestArbitration) and d.node.facts.pending is not None
    assert d.node.status().echo is None


def test_a_node_just_started_does_not_ask_the_witness_before_the_window() -> None:
    # its previous run may have echoed the peer's stamps: the peer may serve on
    # them until W after this node last heard it, which is before this start
    d = Driver(settings=ARB)
    d.do(ev.Start())
    effects = d.do(ev.Prim(), at=W - 0.5)
    [refused] = of_type(effects, fx.Refused)
    assert "started moments ago" in refused.reason and not of_type(effects, fx.RequestArbitration)
    assert of_type(d.do(ev.Prim(), at=W), fx.RequestArbitration)
