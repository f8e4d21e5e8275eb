"""The fault campaign (bench/campaign.py), 10 rounds with a fixed seed: nothing lost,
nothing violated, and nothing left behind.

Seed 635 draws every fault kind in its 10 rounds (link cut, flood, hostile
connects, swap, pause, partition twice, kill, full state disk, restart), the
restart on the primary (SIGTERM: a hand-over) and the full state disk with its
peer killed or its own daemon restarted. Each round is audited by ``failover
audit``; the campaign exits non-zero on any lost record, audit violation,
failed round or other violation, and prints which round failed with its seed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import NETNS

from failover.lab import list_namespaces

pytestmark = [*NETNS, pytest.mark.slow]

CAMPAIGN = Path(__file__).resolve().parents[2] / "bench" / "campaign.py"
FAULTS = {"kill", "pause", "link", "partition", "connect", "flood", "disk-full", "restart", "swap"}
SEED = 635
ROUNDS = 10
BOUND = 330.0  # seconds: the whole campaign, a bound, not an expected time (about 1 minute)


def test_ten_rounds_of_faults_lose_nothing_and_violate_nothing(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    argv = [
        sys.executable, str(CAMPAIGN), "--rounds", str(ROUNDS), "--seed", str(SEED),
        "--json", str(summary_file), "--max-minutes", "4", "--protect-bound", "30",
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its work directory and mounts go here
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = child.communicate(timeout=BOUND)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)  # the campaign cleans up on SIGTERM
        output, _ = child.communicate(timeout=60)
        pytest.fail(f"the campaign outlived {BOUND:g} s:\n{output[-4000:]}")
    assert child.returncode in (0, 1), output[-4000:]
    summary = json.loads(summary_file.read_text())
    assert summary["rounds"] == ROUNDS, output[-4000:]
    assert summary["audited"] == ROUNDS, output[-4000:]
    assert summary["acked"] > 0
    # the draw of each round's kind depends on the seed alone: every kind, as said above
    assert {kind.partition(":")[0] for kind in summary["faults"]} == set(FAULTS), summary["faults"]
    assert summary["lost"] == 0, output[-4000:]
    assert summary["s1_violations"] == 0, output[-4000:]
    assert summary["violations"] == {}, output[-4000:]
    assert summary["failed"] == [], output[-4000:]
    assert child.returncode == 0, output[-4000:]
    # nothing left behind: namespaces, mounts, processes of the campaign
    assert not [n for n in list_namespaces() if n.startswith(f"focampaign-{child.pid}-")]
    mounts = Path("/proc/self/mounts").read_text()
    assert str(tmp_path) not in mounts
    assert not list(tmp_path.glob("failover-campaign-*")), "its work directory is left"
    assert not processes_naming(tmp_path), "processes of the campaign are left"


def processes_naming(path: Path) -> list[str]:
    """Command lines of the running processes that name a file under ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
            if any(str(path).encode() in word for word in words):
                found.append(b" ".join(words).decode(errors="replace"))
    return found
