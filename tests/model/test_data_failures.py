"""The data plane's failures as the model injects them (issue 10, point 3): a
resync attempt that fails (``resync_fail``) and a move of data aside that fails
(``move_fail``: a split brain's quarantine, or the set-aside before a full
resync). The core retries each at its own deadline; the invariants hold and the
pair heals. Tables that ignore the failure, or take it for success, are caught."""

from __future__ import annotations

import pytest

from failover.core.table import Table
from failover.model.invariants import check_step
from failover.model.liveness import fair_round, goal, reached, settle
from failover.model.mutants import mutant_table
from failover.model.sim import Bounds, Cluster, ClusterConfig

UNBOUNDED = Bounds(faults=10**6, admin=10**6, writes=10**6, app_faults=10**6)

# both serve after a full partition (each wrote); healed, beta wins the split
# brain (the higher generation) and alpha's quarantine fails once
SPLIT_BRAIN = (
    "partition lan, partition serial, tick, tick, tick, tick, write alpha, write beta, "
    "move_fail alpha, heal lan, heal serial, tick, tick, tick"
)
# beta returns after alpha served alone; alpha's first resync attempt breaks
RESYNC_BREAKS = "crash beta, tick, tick, tick, tick, restart beta, tick, resync_fail alpha"
# a first start with data on both nodes: the operator keeps alpha's; beta's
# set-aside before the full copy fails once
SET_ASIDE_FAILS = "move_fail beta, prim alpha, tick, tick"


def replay(
    program: str, table: Table | None = None, config: ClusterConfig | None = None
) -> tuple[Cluster, list[str], list[str]]:
    """``program`` from a settled pair (or, with initial data, from boot): the
    cluster, every invariant violated on the way, every transition reason."""
    config = config or ClusterConfig()
    cluster = Cluster(config, table=table, bounds=UNBOUNDED)
    booted = cluster.booted()
    cluster.load(booted if any(config.initial_data) else settle(cluster, booted))
    violations: list[str] = []
    reasons: list[str] = []
    for label in program.split(", "):
        pre = cluster.world
        info = cluster.apply(label)
        violations += [str(v) for v in check_step(config, pre, info, cluster.world)]
        reasons += [r.reason for r in info.records]
    return cluster, violations, reasons


def heals(cluster: Cluster, rounds: int = 30) -> bool:
    """L1 from where the trace ended: healed, no command, the goal is reached."""
    target = goal(cluster, cluster.world)
    for _ in range(rounds):
        if target is None or reached(cluster.world, target):
            return True
        fair_round(cluster)
    return False


def test_a_failed_quarantine_is_retried_and_keeps_the_loser_s_writes() -> None:
    cluster, violations, reasons = replay(SPLIT_BRAIN)
    assert violations == []
    assert any(r.startswith("could not move divergent data to quarantine") for r in reasons)
    alpha = cluster.world.hosts[0]
    assert 0 in alpha.quarantine  # alpha's divergent write, moved at the retry
    assert heals(cluster)


def test_a_quarantine_failure_taken_as_done_loses_the_loser_s_writes() -> None:
    _, violations, _ = replay(SPLIT_BRAIN, mutant_table("quarantine-failure-as-done"))
    assert "S6: acknowledged writes [0] are on no disk nor quarantine" in violations


def test_a_failed_resync_attempt_is_retried_by_the_core_and_the_pair_heals() -> None:
    cluster, violations, reasons = replay(RESYNC_BREAKS)
    assert violations == []
    assert any(r.startswith("resync attempt of beta failed") for r in reasons)
    assert heals(cluster)


def test_a_failed_resync_attempt_ignored_never_heals() -> None:
    cluster, violations, _ = replay(RESYNC_BREAKS, mutant_table("resync-failure-ignored"))
    assert violations == []
    assert not heals(cluster)


@pytest.mark.parametrize("mutant", [None, "set-aside-failure-ignored"])
def test_a_failed_set_aside_is_retried_before_anything_is_copied(mutant: str | None) -> None:
    config = ClusterConfig(initial_data=(True, True))
    table = None if mutant is None else mutant_table(mutant)
    cluster, violations, reasons = replay(SET_ASIDE_FAILS, table, config)
    assert violations == []
    assert heals(cluster) is (mutant is None)
    if mutant is None:
        assert any("could not set this node's data aside" in r for r in reasons)
        assert -2 in cluster.world.hosts[1].quarantine  # beta's data, moved at the retry
