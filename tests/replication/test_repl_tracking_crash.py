"""Crash tests of change tracking: a child process tracks and makes real changes; it is
killed with SIGKILL at random moments (several times per test, reopening the state in
between); after each kill the recovered set must cover every real difference from the
tree as it was before the workload, and exceed what the child could have done by no
more than the hot sets."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tracking_support import (
    excess_zones,
    make_tree,
    read_ledger,
    snapshot,
    superset_problems,
)

from failover.replication.tracking import ChangeSet, Tracker, record_all

ZONE = 4096
EXTENT = 16 * ZONE
HOT = 4
PER_CRASH = HOT + 4
"""Extents a crash may add to the recovered set beyond what was written."""
SUPPORT = Path(__file__).with_name("tracking_support.py")


class Lab:
    """A data tree, a tracking state directory and a ledger, with the pre-workload snapshot."""

    def __init__(self, top: Path, seed: int) -> None:
        self.data = top / "data"
        self.state = top / "state"
        self.ledger = top / "ledger"
        make_tree(self.data, random.Random(seed), ZONE)
        self.pre = snapshot(self.data)
        with Tracker(self.state, zone_size=ZONE, extent_size=EXTENT, hot_extents=HOT) as tracker:
            tracker.epoch_start("test epoch")
        self.kills = 0

    def spawn(self, seed: int, *extra: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, str(SUPPORT), "--state", str(self.state), "--data", str(self.data)]
        args += ["--ledger", str(self.ledger), "--seed", str(seed), "--zone", str(ZONE)]
        args += ["--extent", str(EXTENT), "--hot", str(HOT), *extra]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run_and_kill(self, seed: int, ops_before_kill: int) -> None:
        """Start a child, let it report ``ops_before_kill`` ops done, SIGKILL it."""
        child = self.spawn(seed)
        try:
            assert child.stdout is not None
            for _ in range(ops_before_kill):
                if not child.stdout.readline():
                    break
            child.send_signal(signal.SIGKILL)
        finally:
            _, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err.decode()
        self.kills += 1

    def check(self) -> ChangeSet:
        """The recovered set covers every real change and is bounded by the hot sets."""
        recovery = Tracker.recover(self.state)
        changes = recovery.changes
        assert not recovery.in_sync and recovery.since == "test epoch"
        assert superset_problems(changes, self.pre, snapshot(self.data)) == []
        exact = record_all(read_ledger(self.ledger), ZONE)
        assert changes.names <= exact.names
        assert changes.meta <= exact.meta
        # Per crash: the extents hot at the checkpoint plus those recorded since: at most
        # HOT, overshot by one write's extents (up to 3 of 21 zones) and its heated-ahead one.
        assert excess_zones(changes, exact) <= self.kills * PER_CRASH * (EXTENT // ZONE)
        return changes


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recovered_set_covers_every_change_after_random_kills(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    lab = Lab(tmp_path, seed)
    for round_ in range(6):
        # 0 kills the child while it starts (recovering and checkpointing the state).
        lab.run_and_kill(seed * 100 + round_, rng.choice([0, 1, 5, 20, 60, 150]))
        lab.check()


def test_recovery_stays_small_while_writing_far_more_than_the_hot_set(tmp_path: Path) -> None:
    lab = Lab(tmp_path, 7)
    lab.run_and_kill(70, 400)
    changes = lab.check()
    written = record_all(read_ledger(lab.ledger), ZONE)
    assert len(changes.files) <= len(written.files) + lab.kills * PER_CRASH


@pytest.mark.parametrize("mutant", [False, True], ids=["intent-first", "data-first"])
def test_kill_between_data_and_intent_is_caught_only_in_the_wrong_order(
    tmp_path: Path, mutant: bool
) -> None:
    """The child kills itself right after the data of its third write (each to an extent it
    has not written before). Recording the intent first, the recovered set covers it;
    writing the data first (the mutant), the check finds the missed zone."""
    lab = Lab(tmp_path, 11)
    extra = ["--writes-only", "--die-at", "3"] + (["--intent-after-data"] if mutant else [])
    child = lab.spawn(12, *extra)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()
    changes = Tracker.recover(lab.state).changes
    problems = superset_problems(changes, lab.pre, snapshot(lab.data))
    if mutant:
        # The third write: its bytes (and so its file's mtime) are not covered.
        assert any("zone not dirty" in problem for problem in problems), problems
        assert len({problem.split(":")[0] for problem in problems}) == 1, problems
    else:
        assert problems == []
