"""The forked split of a model check gives the same verdicts as one process."""

from __future__ import annotations

import os

import pytest

from failover.model import checker
from failover.model.forks import ChildFailed, fork_map
from failover.model.mutants import mutant_table
from failover.model.run import explore_root
from failover.model.sim import Bounds, Cluster, ClusterConfig


def _square_with_pid(n: int) -> tuple[int, int]:
    return n * n, os.getpid()


def test_fork_map_keeps_the_order_and_runs_in_children() -> None:
    results = fork_map(_square_with_pid, [1, 2, 3, 4])
    assert [value for value, _ in results] == [1, 4, 9, 16]
    pids = [pid for _, pid in results]
    assert pids[-1] == os.getpid()  # the last item runs here
    assert len(set(pids)) == 4


def _nested(n: int) -> list[int]:
    return fork_map(lambda m: m + n, [10, 20])


def test_a_forked_child_may_fork_again() -> None:
    assert fork_map(_nested, [1, 2]) == [[11, 21], [12, 22]]


def _boom(n: int) -> int:
    if n == 0:
        raise ValueError("piece zero is broken")
    return n


def test_a_failing_child_is_reported_with_its_traceback() -> None:
    with pytest.raises(ChildFailed, match="piece zero is broken"):
        fork_map(_boom, [0, 1])


def _exits(n: int) -> int:
    if n == 0:
        os._exit(3)
    return n


def test_a_child_that_dies_is_reported() -> None:
    with pytest.raises(ChildFailed, match="died"):
        fork_map(_exits, [0, 1])


def test_split_liveness_finds_what_one_process_finds() -> None:
    # restless-swap breaks L2 from many worlds: the merged report must list the
    # same failures, in the same order, as the check made in one process
    kwargs = {
        "depth": 4,
        "bounds": Bounds(),
        "table": mutant_table("restless-swap"),
        "deadline": None,
        "liveness": True,
    }
    config = ClusterConfig()
    one = explore_root(config, "boot", workers=1, **kwargs)  # type: ignore[arg-type]
    split = explore_root(config, "boot", workers=2, **kwargs)  # type: ignore[arg-type]
    assert one.liveness is not None and split.liveness is not None
    assert one.liveness.failures, "the mutant should fail liveness"
    assert (one.liveness.checked, one.liveness.stable_checked) == (
        split.liveness.checked,
        split.liveness.stable_checked,
    )
    assert [f.message for f in one.liveness.failures] == [
        f.message for f in split.liveness.failures
    ]
    assert one.liveness_failure == split.liveness_failure


@pytest.mark.parametrize("table", [None, "no-split-brain-detection"], ids=["real", "mutant"])
def test_split_levels_explore_exactly_what_one_process_explores(
    table: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checker, "MIN_PIECE", 5)  # split even small frontiers
    runs = []
    for workers in (1, 3):
        cluster = Cluster(
            ClusterConfig(),
            table=None if table is None else mutant_table(table),
            bounds=Bounds(),
        )
        runs.append(checker.explore(cluster, "boot", cluster.booted(), depth=5, workers=workers))
    one, split = runs
    figures = [(r.states, r.transitions, r.depth) for r in runs]
    assert figures[0] == figures[1]
    assert one.parents == split.parents  # same worlds, found through the same step
    assert one.ticks == split.ticks
    if table is None:
        assert one.counterexample is None and split.counterexample is None
    else:
        assert one.counterexample is not None and split.counterexample is not None
        assert one.counterexample.labels == split.counterexample.labels
        assert one.counterexample.violations == split.counterexample.violations
