"""The audit on synthetic journals: for each invariant a run that keeps it and one
that breaks it, so that every check is shown able to fail."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from audit_support import Journal, acks, ids, paired

from failover.audit import INCOMPLETE, AuditInputError, Report, audit


def run(tmp_path: Path, *journals: Journal, **kwargs: object) -> Report:
    return audit([j.write(tmp_path) for j in journals], **kwargs)  # type: ignore[arg-type]


def kinds(report: Report) -> list[str]:
    return [v.invariant for v in report.violations]


def pair() -> tuple[Journal, Journal, float]:
    alpha, beta = Journal("alpha"), Journal("beta")
    return alpha, beta, paired(alpha, beta)


def test_a_paired_run_holds_every_invariant(tmp_path: Path) -> None:
    alpha, beta, _ = pair()
    report = run(tmp_path, alpha, beta)
    assert report.ok, report
    assert report.checked == ("S1", "S2", "S4", "S5")
    assert report.figures["entries"] == 1 and report.figures["overlaps"]["count"] == 0


# --- S1 ------------------------------------------------------------------------------------


def beta_takes_over(beta: Journal, at: float) -> None:
    """beta stops hearing alpha at ``at`` and takes over (alone, 2:beta) on silence."""
    beta.next_step().link(at + 0.1, False)
    beta.next_step().meta(at + 0.2, "2:beta", "1:alpha")
    beta.transition(at + 0.2, "secondary", "alone", "2:beta", event="peer_lost", synced="1:alpha")
    beta.app(at + 0.201, "start", "begin").app(at + 0.202, "start", "end")


def partition(alpha: Journal, beta: Journal, at: float) -> None:
    """Every link cut at ``at``: both see them down, both serve (blind)."""
    alpha.next_step().link(at + 0.1, False)
    alpha.next_step().meta(at + 0.2, "2:alpha", "1:alpha")
    alpha.transition(at + 0.2, "primary", "alone", "2:alpha", event="peer_lost", synced="1:alpha")
    beta_takes_over(beta, at)


def alpha_yields(alpha: Journal, beta: Journal, at: float) -> None:
    """Healed at ``at``: alpha hears beta serve a higher generation and yields in that step."""
    alpha.next_step().peer(at, "alone", "2:beta").link(at, True)
    alpha.transition(at, "alone", "wait", "2:alpha", synced="1:alpha")
    alpha.app(at + 0.001, "stop", "begin").app(at + 0.5, "stop", "end")
    beta.next_step().peer(at + 0.01, "wait", "2:alpha").link(at + 0.01, True)


def beta_serves_again(beta: Journal, at: float) -> None:
    """beta (alone, 2:beta) is stopped from ``at`` and started again: it serves once
    more at ``at + 2``."""
    beta.app(at, "stop", "begin").app(at + 0.1, "stop", "end")
    beta.next_step().transition(at + 0.2, "alone", "stop", "2:beta", event="stop")
    beta.next_step().transition(at + 1, "stop", "wait", "2:beta", event="start")
    beta.serve(at + 2, "wait", "alone", "2:beta")


def test_s1_both_serve_after_a_takeover_in_silence_and_the_loser_yields(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    partition(alpha, beta, t + 10)
    alpha_yields(alpha, beta, t + 15)
    report = run(tmp_path, alpha, beta)
    assert report.ok, report
    assert report.figures["blind_overlaps"] == 1
    assert report.figures["overlaps"]["count"] == 1


def partitioned(
    tmp_path: Path, alpha_arbitrator: str | None, beta_arbitrator: str | None, heal: bool = True
) -> tuple[Report, float]:
    """The run above (a full partition, beta takes over blind, alpha yields at
    ``t + 15`` when ``heal``) with each node's start record naming its arbitrator."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta)
    for journal, arbitrator in ((alpha, alpha_arbitrator), (beta, beta_arbitrator)):
        if arbitrator is not None:
            journal.records[0]["arbitrator"] = arbitrator  # its start record
    partition(alpha, beta, t + 10)
    if heal:
        alpha_yields(alpha, beta, t + 15)
    return run(tmp_path, alpha, beta), t


@pytest.mark.parametrize("arbitrator", [None, "none"])
def test_s1_without_an_arbitrator_a_blind_takeover_may_serve_beside_its_peer(
    tmp_path: Path, arbitrator: str | None
) -> None:
    """No arbitrator in the start records (``none``, or a journal older than the
    field): a full partition may make both serve until they hear each other."""
    report, _ = partitioned(tmp_path, arbitrator, arbitrator)
    assert report.ok, report
    assert report.figures["blind_overlaps"] == 1
    assert report.figures["arbitrators"] == {"alpha": ["none"], "beta": ["none"]}


@pytest.mark.parametrize(
    ("alpha_arbitrator", "beta_arbitrator"),
    [("witness", "witness"), ("witness", None), (None, "witness")],
)
@pytest.mark.parametrize("heal", [True, False])
def test_s1_with_an_arbitrator_a_blind_takeover_beside_a_serving_peer_is_a_violation(
    tmp_path: Path, alpha_arbitrator: str | None, beta_arbitrator: str | None, heal: bool
) -> None:
    """With an arbitrator (named in either node's start record: both should name
    the same) S1 has no exception for silence: beta's takeover while alpha still
    serves behind the partition is the violation, with the interval both served."""
    report, t = partitioned(tmp_path, alpha_arbitrator, beta_arbitrator, heal)
    assert kinds(report) == ["S1"], report
    violation = report.violations[0]
    assert violation.nodes == ("alpha", "beta") and violation.mono == t + 10.2
    assert "with an arbitrator (witness) configured" in violation.why, violation.why
    assert "beta heard nothing on any link" in violation.why, violation.why
    until = f"to t={t + 15.5:.3f} (5.300 s)" if heal else "to the end of the journals"
    assert f"alpha and beta both served from t={t + 10.2:.3f} {until}" in violation.why
    assert report.figures["blind_overlaps"] == 0


@pytest.mark.parametrize("arbitrator", ["none", "witness"])
def test_s1_a_takeover_from_a_killed_daemon_that_held_the_application(
    tmp_path: Path, arbitrator: str
) -> None:
    """alpha's daemon is killed (its journal just ends): its application and address
    may still run, so beta's takeover makes two servers. Excused as blind without an
    arbitrator; with one, only a fence that stops them by the lease's deadline (and
    says so in the journal) could make that takeover safe."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator=arbitrator)
    beta_takes_over(beta, t + 10)
    report = run(tmp_path, alpha, beta)
    if arbitrator == "none":
        assert report.ok, report
        return
    assert kinds(report) == ["S1"], report
    assert f"its journal has no record after t={t - 0.09:.3f}" in (report.violations[0].why)


@pytest.mark.parametrize(
    ("off_after", "violation"),
    [
        (-0.05, False),  # the machine stopped just after its last record: one server
        (12.0, True),  # it stopped only after beta served: two servers meanwhile
    ],
)
def test_s1_a_node_that_lost_power_serves_nothing_from_then(
    tmp_path: Path, off_after: float, violation: bool
) -> None:
    """The killed daemon of the test above, with what the harness knows: alpha's
    whole machine stopped at ``t + off_after`` (``power_off``). Before beta's
    takeover, nothing of alpha's runs any more: one server; after it, S1 stands,
    with the overlap ending at the power-off."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    beta_takes_over(beta, t + 10)
    report = run(tmp_path, alpha, beta, power_off={"alpha": [t + off_after]})
    assert report.figures["power_offs"] == {"alpha": 1, "beta": 0}
    if not violation:
        assert report.ok, report
        assert report.figures["overlaps"]["count"] == 0
        return
    assert kinds(report) == ["S1"], report
    assert f"to t={t + 12:.3f} (1.800 s)" in report.violations[0].why, report


def test_a_power_off_the_journals_contradict_is_refused(tmp_path: Path) -> None:
    """A power-off is a fact the audit trusts: one its own journals contradict (a
    record of the same run written after it), one before any record, and one of a
    node it has no records of are input errors, not a verdict."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    with pytest.raises(AuditInputError, match="was written after it by the same run"):
        run(tmp_path, alpha, beta, power_off={"alpha": [t - 0.2]})
    with pytest.raises(AuditInputError, match="before its first record"):
        run(tmp_path, alpha, beta, power_off={"beta": [1.0]})
    with pytest.raises(AuditInputError, match="no records of such a node"):
        run(tmp_path, alpha, beta, power_off={"gamma": [t]})
    with pytest.raises(AuditInputError, match="not a finite"):
        run(tmp_path, alpha, beta, power_off={"alpha": [math.nan]})
    alpha.restart(t + 5, "1:alpha", arbitrator="witness")  # a new run may follow it
    assert run(tmp_path, alpha, beta, power_off={"alpha": [t + 1]}).ok


@pytest.mark.parametrize(
    ("fenced_after", "ok", "violation"),
    [
        (1.0, True, False),  # fenced (and journalled) before beta's takeover: one server
        (12.0, True, True),  # the fence came only after beta served: two servers
        (1.0, False, True),  # a fence that failed (a VIP not released): still held
    ],
)
def test_s1_a_killed_daemon_fenced_by_its_watchdog(
    tmp_path: Path, fenced_after: float, ok: bool, violation: bool
) -> None:
    """alpha's daemon is killed while it serves; its watchdog fences the application
    and address and journals it in the daemon's place. With an arbitrator, beta's
    takeover (at t + 10) is one server only if that fence succeeded and came first."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    alpha.fenced(t + fenced_after, ok=ok)
    beta_takes_over(beta, t + 10)
    report = run(tmp_path, alpha, beta)
    if not violation:
        assert report.ok, report
        return
    assert kinds(report) == ["S1"], report
    held = "in primary" if ok else "in stop but still holding the application/address"
    assert f"while alpha served ({held}" in report.violations[0].why, report.violations[0].why


def test_s1_a_fence_journalled_by_the_daemon_and_again_by_its_watchdog(tmp_path: Path) -> None:
    """The daemon resumed, journalled the fence, and was killed before it removed the
    watchdog's record file: the watchdog journals the fence again at EOF. Both
    records are read as one fence; the second also ends the dead daemon's state."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    alpha.app(t + 1, "stop", "end").records[-1].update(fenced_at=t + 0.9, ok=True)
    alpha.fenced(t + 1.1)
    beta_takes_over(beta, t + 10)
    assert run(tmp_path, alpha, beta).ok


@pytest.mark.parametrize(
    ("fenced_after", "ok", "violation"),
    [
        (9.0, True, False),  # fenced before beta's takeover: one server
        (10.5, True, True),  # the fence ended only after beta served: two servers
        (9.0, False, True),  # a fence that failed: the application may still run
    ],
)
def test_s1_a_stalled_daemon_fenced_by_its_watchdog_journals_it_when_it_resumes(
    tmp_path: Path, fenced_after: float, ok: bool, violation: bool
) -> None:
    """alpha's daemon stalls while it serves (its journal pauses, its state still
    primary); its watchdog fences at ``fenced_after``; beta takes over at t + 10;
    alpha resumes at t + 12 and journals the fence with ``fenced_at``. One server
    only if the fence succeeded and ended before beta's takeover."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    beta_takes_over(beta, t + 10)
    alpha.app(t + 12, "stop", "end").records[-1].update(fenced_at=t + fenced_after, ok=ok)
    report = run(tmp_path, alpha, beta)
    if not violation:
        assert report.ok, report
        # the overlap figures judge "serving" as S1 does: none either
        assert report.figures["overlaps"]["count"] == 0, report.figures
        return
    assert kinds(report) == ["S1"], report
    assert "while alpha served (in primary" in report.violations[0].why
    assert report.figures["overlaps"]["count"] == 1, report.figures


def test_s1_a_node_that_hears_its_peer_serve_and_keeps_serving_without_winning(
    tmp_path: Path,
) -> None:
    alpha, beta, t = pair()
    partition(alpha, beta, t + 10)
    alpha.next_step().peer(t + 15, "alone", "2:beta").link(t + 15, True)  # and stays alone
    beta.next_step().peer(t + 15.01, "alone", "2:alpha").link(t + 15.01, True)
    beta.meta(t + 15.01, "3:beta", "1:alpha")  # the winner lifts its generation: fine
    report = run(tmp_path, alpha, beta)
    assert kinds(report) == ["S1"], report
    assert "alpha heard beta serving" in report.violations[0].why


def test_s1_the_configured_winner_keeps_serving(tmp_path: Path) -> None:
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta)
    for journal in (alpha, beta):  # restart both with alpha as the named winner
        journal.restart(t + 1, "1:alpha", synced="1:alpha", winner="alpha")
    alpha.serve(t + 1.1, "wait", "alone", "1:alpha")
    beta.next_step().transition(t + 1.2, "wait", "secondary", "1:alpha")
    partition(alpha, beta, t + 10)
    alpha.next_step().peer(t + 15, "alone", "2:beta").link(t + 15, True)  # alpha wins: stays
    beta.next_step().peer(t + 15.01, "alone", "2:alpha").link(t + 15.01, True)
    beta.transition(t + 15.01, "alone", "wait", "2:beta")
    beta.app(t + 15.02, "stop", "begin").app(t + 15.03, "stop", "end")
    report = run(tmp_path, alpha, beta)
    assert report.ok, report


def test_s1_links_are_not_taken_for_down_when_the_start_record_is_missing(
    tmp_path: Path,
) -> None:
    """Without its boot's start record (rotated away) a node's links are unknown,
    not silent: its start of service beside a serving peer is not exempt as a
    blind takeover, it is listed as not judged."""
    alpha, beta, t = pair()
    beta.serve(t + 1, "secondary", "alone", "2:beta", event="peer_lost")  # every link up
    assert kinds(run(tmp_path / "whole", alpha, beta)) == ["S1"]
    last_link_up = max(i for i, r in enumerate(beta.records) if r["kind"] == "link")
    del beta.records[: last_link_up + 1]  # its start and links up: rotated away
    report = run(tmp_path / "rotated", alpha, beta)
    assert kinds(report) == [INCOMPLETE], report
    assert report.violations[0].nodes == ("beta",)
    assert f"not judged: S1 at t={t + 1:.3f}" in report.violations[0].why


def swap(alpha: Journal, beta: Journal, at: float, stop_ends: float) -> None:
    """alpha hands over: its stop script runs from ``at`` to ``stop_ends``; alpha
    announces secondary at ``at + 0.01``; beta takes over on hearing it."""
    alpha.app(at, "stop", "begin")
    if stop_ends < at + 0.01:
        alpha.app(stop_ends, "stop", "end")
    alpha.next_step().transition(at + 0.01, "primary", "secondary", "1:alpha", synced="1:alpha")
    if stop_ends >= at + 0.01:
        alpha.app(stop_ends, "stop", "end")
    beta.next_step().peer(at + 0.02, "secondary", "1:alpha")
    beta.transition(at + 0.02, "secondary", "primary", "1:alpha", synced="1:alpha")
    beta.app(at + 0.021, "start", "begin").app(at + 0.022, "start", "end")


def test_s1_a_hand_over_after_the_stop_finished(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    swap(alpha, beta, t + 5, stop_ends=t + 5.005)
    report = run(tmp_path, alpha, beta)
    assert report.ok, report
    assert report.figures["overlaps"]["count"] == 0


def test_s1_the_peer_starts_while_the_old_servers_stop_script_still_runs(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    swap(alpha, beta, t + 5, stop_ends=t + 6.5)
    report = run(tmp_path, alpha, beta)
    assert kinds(report) == ["S1"], report
    violation = report.violations[0]
    assert violation.nodes == ("alpha", "beta")
    assert "still holding the application" in violation.why
    assert report.figures["overlaps"]["longest"] > 1.4


def test_s1_a_restarted_node_whose_recovery_timed_out_still_serves(tmp_path: Path) -> None:
    """A killed daemon's successor that could not finish stopping what it left
    running still holds it: the peer may not start beside it while it hears it."""
    for recovered, expected in ((True, []), ("timeout", ["S1"])):
        alpha, beta, t = pair()
        alpha.restart(t + 5, "1:alpha", synced="1:alpha", recovered=recovered)
        beta.next_step().peer(t + 6, "stop", "1:alpha")
        beta.serve(t + 6, "secondary", "alone", "2:beta", event="peer_stopped")
        report = run(tmp_path / str(recovered), alpha, beta)
        assert kinds(report) == expected, report
    assert "still holding the application" in report.violations[0].why


@pytest.mark.parametrize("arbitrator", [None, "witness"])
def test_s1_a_forced_promotion_may_serve_beside_its_peer(
    tmp_path: Path, arbitrator: str | None
) -> None:
    """An operator's forced promotion is the one exception S1 keeps with an
    arbitrator (the model's ``check_s1``: the operator overrode the cluster)."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator=arbitrator)
    beta.next_step().transition(t + 1, "secondary", "wait", "1:alpha", event="second")
    beta.serve(t + 2, "wait", "alone", "2:beta", event="prim", forced=True)
    report = run(tmp_path, alpha, beta)
    assert report.ok, report
    assert report.figures["forced_overlaps"] == 1


def test_s1_an_unforced_start_beside_a_serving_peer_it_hears(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    beta.next_step().transition(t + 1, "secondary", "wait", "1:alpha", event="second")
    beta.serve(t + 2, "wait", "alone", "2:beta", event="prim")
    report = run(tmp_path, alpha, beta)
    assert kinds(report) == ["S1"], report


# --- S2 ------------------------------------------------------------------------------------


def stale_takeover(alpha: Journal, beta: Journal, at: float, **kwargs: object) -> None:
    """alpha serves on alone under 2:alpha, then is stopped; beta (still 1:alpha)
    takes over while it hears alpha."""
    alpha.next_step().meta(at, "2:alpha", "1:alpha")
    alpha.transition(at, "primary", "alone", "2:alpha", event="replication_failed")
    alpha.app(at + 1, "stop", "begin").app(at + 1.1, "stop", "end")
    alpha.next_step().transition(at + 1.2, "alone", "stop", "2:alpha", event="stop")
    beta.next_step().peer(at + 1.3, "stop", "2:alpha")
    beta.serve(at + 1.3, "secondary", "alone", "2:beta", synced="1:alpha", **kwargs)


def test_s2_a_promotion_over_newer_data(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    stale_takeover(alpha, beta, t + 5)
    report = run(tmp_path, alpha, beta)
    assert kinds(report) == ["S2"], report
    assert "holds newer 2:alpha" in report.violations[0].why


def test_s2_a_forced_promotion_over_newer_data_is_the_operators_choice(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    stale_takeover(alpha, beta, t + 5, forced=True)
    assert run(tmp_path, alpha, beta).ok


@pytest.mark.parametrize("arbitrator", [None, "none", "witness"])
def test_s2_a_blind_takeover_cannot_know_the_newer_data(
    tmp_path: Path, arbitrator: str | None
) -> None:
    """Excused without an arbitrator; with one, which grants service only to the
    newest data, a blind takeover is held to S2 as any other (the model's rule)."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator=arbitrator)
    beta.next_step().link(t + 4, False)  # beta hears nothing any more
    stale_takeover(alpha, beta, t + 5)
    report = run(tmp_path, alpha, beta)
    assert kinds(report) == (["S2"] if arbitrator == "witness" else []), report


def test_s2_and_s3_only_a_takeover_from_secondary_is_blind(tmp_path: Path) -> None:
    """beta restarts behind a partition and serves from ``wait``, on older data,
    without alpha's writes: hearing nothing excuses only a secondary's takeover."""
    alpha, beta, t = pair()
    beta.next_step().link(t + 4.9, False)
    alpha.next_step().meta(t + 5, "2:alpha", "1:alpha")
    alpha.transition(t + 5, "primary", "alone", "2:alpha", event="replication_failed")
    beta.restart(t + 8, "1:alpha", synced="1:alpha")  # every link down from its start
    beta.next_step().transition(t + 8.1, "stop", "wait", "1:alpha", event="start", synced="1:alpha")
    beta.serve(t + 9, "wait", "alone", "3:beta", event="peer_lost")
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 6))
    report = run(tmp_path, alpha, beta, acked=acked, found={"beta": ids(tmp_path / "b", 1)})
    assert kinds(report) == ["S2", "S3"], report
    assert report.violations[1].why.endswith("without 1 acknowledged record(s): 2")


# --- S3 ------------------------------------------------------------------------------------


def crash_of_alpha(alpha: Journal, beta: Journal, t: float) -> None:
    """alpha's daemon dies (no more records); beta takes over on silence."""
    beta_takes_over(beta, t)


def test_s3_every_acknowledged_record_is_on_the_node_that_serves_next(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    crash_of_alpha(alpha, beta, t + 5)
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 2), (3, t + 3), (4, t + 9))
    found = {"beta": ids(tmp_path / "beta.ids", 1, 2, 3)}
    report = run(tmp_path, alpha, beta, acked=acked, found=found)
    assert report.ok, report
    assert report.checked == ("S1", "S2", "S3", "S4", "S5")
    assert report.figures["s3_entries"] == 1 and report.figures["acked"] == 4


def test_s3_an_acknowledged_record_missing_on_the_next_server(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    crash_of_alpha(alpha, beta, t + 5)
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 2), (3, t + 3))
    found = {"beta": ids(tmp_path / "beta.ids", 1, 3)}
    report = run(tmp_path, alpha, beta, acked=acked, found=found)
    assert kinds(report) == ["S3"], report
    assert report.violations[0].why.endswith("without 1 acknowledged record(s): 2")


def alone_then_crash(alpha: Journal, beta: Journal, t: float, *, cut: bool) -> None:
    """alpha's replication breaks and it serves alone under 2:alpha; with ``cut``
    every link is down (beta hears nothing), else beta still hears alpha alone."""
    if cut:
        beta.next_step().link(t - 0.1, False)
    alpha.next_step().meta(t, "2:alpha", "1:alpha")
    alpha.transition(t, "primary", "alone", "2:alpha", event="replication_failed")
    if not cut:
        beta.next_step().peer(t + 0.01, "alone", "2:alpha")
    crash_of_alpha(alpha, beta, t + 2)


def test_s3_the_lost_write_chain_of_issue_8(tmp_path: Path) -> None:
    """Records alpha acknowledged alone while beta still heard it (and took itself
    for in sync) are lost when beta takes over: never exempt."""
    alpha, beta, t = pair()
    alone_then_crash(alpha, beta, t + 5, cut=False)
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 6), (3, t + 6.5))
    report = run(tmp_path, alpha, beta, acked=acked, found={"beta": ids(tmp_path / "b", 1)})
    assert kinds(report) == ["S3"], report
    assert "2, 3" in report.violations[0].why


def test_s3_writes_the_peer_acknowledged_in_primary_are_owed_after_a_blind_takeover(
    tmp_path: Path,
) -> None:
    """Only records acknowledged ``alone`` may be missing after a blind takeover:
    one acknowledged in ``primary`` (after the secondary had it) must be held."""
    alpha, beta, t = pair()
    beta.next_step().link(t + 5, False)  # beta hears nothing; alpha, still primary, acks
    beta_takes_over(beta, t + 7)
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 6))
    report = run(tmp_path, alpha, beta, acked=acked, found={"beta": ids(tmp_path / "b", 1)})
    assert kinds(report) == ["S3"], report
    assert report.violations[0].why.endswith("without 1 acknowledged record(s): 2")


def test_s3_writes_made_alone_behind_a_full_partition_are_s6s(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    alone_then_crash(alpha, beta, t + 5, cut=True)
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 6), (3, t + 6.5))
    report = run(tmp_path, alpha, beta, acked=acked, found={"beta": ids(tmp_path / "b", 1)})
    assert report.ok, report


def test_s3_with_an_arbitrator_writes_made_alone_are_owed_after_a_blind_takeover(
    tmp_path: Path,
) -> None:
    """The same run with a witness: silence excuses no takeover (S1: alpha's daemon
    died holding the application), nor the newer data (S2), nor its writes (S3)."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    alone_then_crash(alpha, beta, t + 5, cut=True)
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 6), (3, t + 6.5))
    report = run(tmp_path, alpha, beta, acked=acked, found={"beta": ids(tmp_path / "b", 1)})
    assert kinds(report) == ["S1", "S2", "S3"], report
    assert report.violations[2].why.endswith("without 2 acknowledged record(s): 2, 3")


def test_s3_writes_behind_a_partition_stay_s6s_at_later_starts(tmp_path: Path) -> None:
    """Found by the campaign (seed 2041, round 102): records alpha acknowledged alone
    behind a full partition were exempt at beta's blind takeover, then required
    again when beta served once more, long after the links came back."""
    alpha, beta, t = pair()
    alone_then_crash(alpha, beta, t + 5, cut=True)
    beta.next_step().link(t + 9, True)
    beta_serves_again(beta, t + 20)
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 6), (3, t + 6.5))
    report = run(tmp_path, alpha, beta, acked=acked, found={"beta": ids(tmp_path / "b", 1)})
    # (alpha's journal ends at its crash, so the audit keeps it serving: the S1
    # finding at beta's second start is this synthetic journal's, not S3's)
    assert "S3" not in kinds(report), report


def test_s3_the_writer_behind_a_partition_still_owes_its_own_writes(tmp_path: Path) -> None:
    """The exemption above is the blind taker's only: the node that acknowledged
    the records alone must still hold them (copy or quarantine) when it serves
    again. Named so that the blind taker is audited first (node order must not
    decide): the writer is "beta" in the primary role, the taker "alpha"."""
    writer, taker = Journal("beta"), Journal("alpha")
    t = paired(writer, taker)
    alone_then_crash(writer, taker, t + 5, cut=True)  # taker serves blind from t + 7.2
    taker.next_step().link(t + 9, True)
    writer.restart(t + 10, "2:alpha", synced="1:alpha")  # back, resynced from the taker
    writer.next_step().transition(t + 10.1, "stop", "wait", "2:alpha", event="start")
    writer.next_step().peer(t + 10.2, "alone", "2:beta").link(t + 10.2, True)
    writer.transition(t + 10.2, "wait", "resync", "2:alpha")
    writer.next_step().meta(t + 10.5, "2:beta", "2:beta")
    writer.transition(t + 10.5, "resync", "secondary", "2:beta", synced="2:beta")
    taker.app(t + 20, "stop", "begin").app(t + 20.1, "stop", "end")  # the taker stops
    taker.next_step().transition(t + 20.2, "alone", "stop", "2:beta", event="stop")
    taker.exit(t + 20.3)
    writer.next_step().link(t + 20.4, False)
    writer.serve(t + 21, "secondary", "alone", "3:beta", event="peer_lost")
    acked = acks(tmp_path / "acked", (1, t + 1), (2, t + 6))
    found = {"alpha": ids(tmp_path / "a", 1), "beta": ids(tmp_path / "b", 1)}  # 2 is lost
    report = run(tmp_path, writer, taker, acked=acked, found=found)
    assert kinds(report) == ["S3"], report
    assert report.violations[0].nodes == ("beta",)
    assert report.violations[0].why.endswith("without 1 acknowledged record(s): 2")


def test_s3_a_split_brain_losers_writes_are_not_required_on_the_winner(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    partition(alpha, beta, t + 10)
    alpha_yields(alpha, beta, t + 15)
    beta_serves_again(beta, t + 20)
    during = acks(tmp_path / "acked", (1, t + 1), (2, t + 12, "alpha"))
    report = run(tmp_path, alpha, beta, acked=during, found={"beta": ids(tmp_path / "b", 1)})
    assert report.ok, report
    # acknowledged while paired: required at beta's takeover and again when it restarts
    before = acks(tmp_path / "acked2", (1, t + 1), (2, t + 9))
    report = run(tmp_path, alpha, beta, acked=before, found={"beta": ids(tmp_path / "b", 1)})
    assert kinds(report) == ["S3", "S3"], report
    # one the ack log gives to beta itself: beta's own, owed when it serves again
    own = acks(tmp_path / "acked3", (1, t + 1), (2, t + 12, "beta"))
    report = run(tmp_path, alpha, beta, acked=own, found={"beta": ids(tmp_path / "b", 1)})
    assert kinds(report) == ["S3"], report
    assert report.violations[0].mono == pytest.approx(t + 22)


# --- S4 ------------------------------------------------------------------------------------


def test_s4_resync_ends_in_secondary(tmp_path: Path) -> None:
    alpha, beta, _ = pair()
    assert run(tmp_path, alpha, beta).ok  # paired() resyncs beta into secondary


def test_s4_a_resync_node_that_serves(tmp_path: Path) -> None:
    alpha = Journal("alpha")
    alpha.start(1.0)
    alpha.next_step().transition(1.1, "stop", "wait", "0", event="start")
    alpha.next_step().transition(1.2, "wait", "resync", "0")
    alpha.app(1.25, "start", "begin")
    alpha.next_step().transition(1.3, "resync", "alone", "1:alpha")
    report = run(tmp_path, alpha)
    assert kinds(report) == ["S4", "S4"], report
    assert "started the application in resync" in report.violations[0].why
    assert "from resync to alone" in report.violations[1].why


# --- S5 ------------------------------------------------------------------------------------


def test_s5_generations_grow_across_restarts(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    beta.restart(t + 5, "1:alpha", synced="1:alpha")
    assert run(tmp_path, alpha, beta).ok


def test_s5_a_generation_that_goes_back_after_a_restart(tmp_path: Path) -> None:
    alpha, beta, t = pair()
    beta.restart(t + 5, "0")  # the metadata was lost or rolled back
    report = run(tmp_path, alpha, beta)
    assert kinds(report) == ["S5"], report
    assert report.violations[0].why == "generation went from 1:alpha to 0"
    assert report.violations[0].where.endswith("beta/audit.jsonl:10")


def test_s1_a_fenced_daemon_that_starts_the_application_again_serves_again(
    tmp_path: Path,
) -> None:
    """alpha's fence ends its service only until it acts again: resumed, it
    journals the fence and then starts the application while still primary
    (beta serves since t + 10): two servers from that start."""
    alpha, beta = Journal("alpha"), Journal("beta")
    t = paired(alpha, beta, arbitrator="witness")
    beta_takes_over(beta, t + 10)
    alpha.app(t + 12, "stop", "end").records[-1].update(fenced_at=t + 9, ok=True)
    alpha.app(t + 13, "start", "begin").app(t + 13.01, "start", "end")
    report = run(tmp_path, alpha, beta)
    assert kinds(report) == ["S1"], report
    assert report.figures["overlaps"]["count"] == 1, report.figures
