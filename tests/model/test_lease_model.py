"""The lease timing model (``failover.model.lease``, docs/arbitration.md,
"Timing"): S1 at depth 12 for each arbitrator kind, the ping witness's known
limit as a counterexample, and each mutant caught.

Cost in CI: 20 s of CPU (58 s of wall time on the shared 2-core machine at
load average 12), most of it the two depth-12 checks with a record (witness,
etcd)."""

from __future__ import annotations

import gc

import pytest

from failover.cli import main
from failover.core.arbitration import (
    fence_deadline,
    grant_run_out,
    lease_timing_holds,
    ping_timing_holds,
)
from failover.core.state import Settings
from failover.model.lease import KINDS, MUTANTS, check, for_kind

DEPTH = 12


@pytest.mark.parametrize("kind", KINDS)
def test_s1_holds_to_depth_12(kind: str) -> None:
    config = for_kind(kind)
    assert config.timing_holds()
    # the daemon's lease, as the core defines it (ping: a longer dead_timeout than
    # the default needs a shorter lease than the default, docs/arbitration.md)
    assert (config.renew, config.margin) == (Settings.lease_renew, Settings.lease_margin)
    assert kind == "ping" or config.ttl == Settings.lease_ttl
    report = check(config, DEPTH)
    print(report.render())
    assert report.ok, report.render()
    assert "timing_holds: yes" in report.render()
    assert len(report.per_depth) == DEPTH + 1  # every depth explored
    # not vacuous: the search reaches takeovers (beta serving), from the root
    # where alpha holds the lease and from a free one
    assert report.takeovers > 1000
    assert report.stuck == 0  # no state where time stops: no run is cut short


def test_ping_limit_is_shown_as_a_counterexample() -> None:
    """Both nodes reach the witness while the link between them is cut: both serve."""
    report = check(for_kind("ping", ping_limit=True, max_faults=1), DEPTH)
    print(report.render())
    assert report.trace is not None
    labels = [label for _, label in report.trace]
    assert any(label.startswith("cut") for label in labels)
    cuts = [label for label in labels if label.startswith("cut")]
    assert cuts in (["cut alpha -> beta"], ["cut beta -> alpha"])  # the witness stays reachable
    assert labels[-1].startswith("deliver granted arbitrator ->")
    assert "S1 violated" in report.render()


# (kind, mutant, faults): each mutant on the kinds it applies to; one fault is
# enough for all but ping's fence-from-reply (alpha cut from the witness and beta)
CAUGHT = [
    ("witness", "fence-without-margin", 1),
    ("etcd", "fence-without-margin", 1),
    ("witness", "fence-from-reply", 1),
    ("etcd", "fence-from-reply", 1),
    ("ping", "fence-from-reply", 2),
    ("witness", "expiry-from-grant", 1),
    ("etcd", "expiry-from-grant", 1),
    ("ping", "early-takeover", 1),
    ("witness", "clock-rate-ignored", 1),
    ("etcd", "clock-rate-ignored", 1),
]


def test_every_mutant_is_tried() -> None:
    assert {(k, m) for k, m, _ in CAUGHT} == {
        (k, m.name) for m in MUTANTS.values() for k in m.kinds
    }


@pytest.mark.parametrize(("kind", "mutant", "faults"), CAUGHT)
def test_mutant_is_caught(kind: str, mutant: str, faults: int) -> None:
    config = for_kind(kind, mutant, max_faults=faults)
    report = check(config, DEPTH)
    print(report.render())
    assert report.trace is not None, report.render()
    assert f"mutant {mutant}" in report.render()
    if mutant in ("early-takeover", "clock-rate-ignored"):
        assert not config.timing_holds()  # a configuration the inequality refuses
        assert "timing_holds: no" in report.render()


def test_the_inequalities() -> None:
    assert lease_timing_holds(ttl=6, margin=1, rho=0.01)
    assert lease_timing_holds(ttl=6, margin=1, rho=0.09)
    assert not lease_timing_holds(ttl=6, margin=1, rho=0.1)
    assert not lease_timing_holds(ttl=6, margin=0, rho=0)
    assert ping_timing_holds(ttl=3, rho=0.01, dead_timeout=3.75, heartbeat_interval=0.5)
    # the holder must be stopped, not only fenced: margin to stop after its deadline
    assert not ping_timing_holds(ttl=3, rho=0.01, dead_timeout=3.5, heartbeat_interval=0.5)
    assert ping_timing_holds(ttl=6, rho=0.0, dead_timeout=6.5, heartbeat_interval=0.5)
    assert ping_timing_holds(ttl=2.2, rho=0.0, dead_timeout=2.3, heartbeat_interval=0.1)
    assert not ping_timing_holds(ttl=6, rho=0.0, dead_timeout=6.4, heartbeat_interval=0.5)
    # the shipped defaults (dead_timeout 2, lease_ttl 6) do not hold for ping
    assert not ping_timing_holds(ttl=6, rho=0.0, dead_timeout=2, heartbeat_interval=0.5)
    assert not ping_timing_holds(ttl=3, rho=0.0, dead_timeout=2.5, heartbeat_interval=0.5)


def test_fence_arithmetic() -> None:
    assert fence_deadline(10.0, ttl=6.0, margin=1.0) == 15.0
    assert not grant_run_out(10.0, 14.9, ttl=6.0, margin=1.0)
    assert grant_run_out(10.0, 15.0, ttl=6.0, margin=1.0)
    assert not grant_run_out(None, 99.0, ttl=6.0, margin=1.0)


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["model-check-lease", "--kind", "ping", "--ping-limit", "--faults", "1", "--depth", "10"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "S1 violated" in out and "cut alpha -> beta" in out
    assert main(["model-check-lease", "--kind", "ping", "--mutant", "clock-rate-ignored"]) == 2
    assert "applies to witness, etcd only" in capsys.readouterr().out
    assert main(["model-check-lease", "--kind", "witness", "--rho", "1.5"]) == 2
    assert "rho must be in [0, 1)" in capsys.readouterr().out


def test_the_search_runs_without_the_cycle_collector_and_restores_it() -> None:
    seen: list[bool] = []
    assert gc.isenabled()
    check(for_kind("ping"), 2, progress=lambda _: seen.append(gc.isenabled()))
    assert seen == [False] * 3  # (a line per depth, 0 to 2)
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--ttl", "nan"], "ttl must be a number of seconds above 0, not nan"),
        (["--renew", "inf"], "renew must be a number of seconds above 0, not inf"),
        (["--delay", "nan"], "d (the delay bound) must be a number of seconds at least 0"),
        (["--margin", "-1"], "margin must be a number of seconds at least 0"),
        (["--ttl", "1e300"], "ttl (1e+300 s) must span at most 1000 ticks of 0.25 s"),
        (["--ttl", "1", "--margin", "1"], "ttl (1) must be above margin (1)"),
    ],
)
def test_cli_refuses_a_timing_it_cannot_check(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NaN or an infinity passed every comparison and ended in a traceback
    (or a search that never ends): each is refused, named, with exit 2."""
    assert main(["model-check-lease", "--kind", "witness", "--depth", "1", *argv]) == 2
    assert f"failover model-check-lease: {error}" in capsys.readouterr().out
