"""The CI run of the model checker: `failover model-check --depth 12` with and
without an arbitrator, exactly as an operator runs it.

Each run uses both cores itself, so the two run one after the other. The
figures (states, depth, seconds per root) are recorded as test properties,
written under the test's tmp directory and shown in any failure message.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from failover.model.run import ROOTS, check_model
from failover.model.sim import ClusterConfig

DEPTH = 12
TIMEOUT = 1800  # seconds; a generous bound on one run, not a performance target
ROOT_LINE = re.compile(
    r"^\s*root (?P<root>\S+): (?P<states>\d+) distinct states, (?P<transitions>\d+) transitions, "
    r"(?P<reach>depth (?P<depth>\d+)|whole reachable space) \(asked \d+\), "
    r"(?P<seconds>[\d.]+) s$",
    re.MULTILINE,
)


def figures(stdout: str) -> str:
    """The lines of the report that carry the figures."""
    keep = ("model check:", "root ", "liveness:", "states explored")
    return "\n".join(line for line in stdout.splitlines() if line.strip().startswith(keep))


@pytest.mark.slow
@pytest.mark.parametrize("arbitrator", ["none", "witness"])
def test_model_check_explores_depth_12_and_every_invariant_holds(
    arbitrator: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    command = [sys.executable, "-m", "failover", "model-check"]
    command += ["--depth", str(DEPTH), "--arbitrator", arbitrator]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    summary = figures(done.stdout)
    (tmp_path / f"model-check-{arbitrator}.txt").write_text(done.stdout, encoding="utf-8")
    record_property(f"model_check_{arbitrator}", summary)
    print(f"\nfailover model-check --depth {DEPTH} --arbitrator {arbitrator}:\n{summary}")
    report = f"{' '.join(command[1:])} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"

    assert done.returncode == 0, report
    assert "all invariants hold" in done.stdout, report
    roots = list(ROOT_LINE.finditer(done.stdout))
    assert sorted(m["root"] for m in roots) == sorted(ROOTS), report
    for m in roots:
        assert m["reach"] == "whole reachable space" or int(m["depth"]) == DEPTH, (
            f"root {m['root']} stopped at {m['reach']}:\n{summary}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("arbitrator", [False, True], ids=["none", "witness"])
def test_without_replicated_directories_every_invariant_holds_to_depth_10(
    arbitrator: bool,
) -> None:
    # The runtime without a data plane ends every resync at once (no_data): the
    # same table must keep every invariant there too.
    report = check_model(ClusterConfig(arbitrator=arbitrator, no_data=True), depth=10)
    assert report.ok, report.render()
    assert report.min_depth == 10 or all(r.exhausted for r in report.results), report.render()
