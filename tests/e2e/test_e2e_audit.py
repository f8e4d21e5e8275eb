"""The audit on real runs: it catches a runtime that lets the peer start before the
old server's stop finished (a mutant injected from the test), passes the same run
without the mutant, and accepts a split brain for the right reason (every link down).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from e2e_support import NETNS, NODES, SERVING, WRITER, Cluster, cli, held

from failover.audit import Ack
from failover.lab import Lab

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}
MUTANT = Path(__file__).with_name("e2e_mutant_daemon.py")
STOP_DELAY = 1.5  # seconds the stop script takes: the window the mutant opens


def swap_with_a_slow_stop(cluster: Cluster) -> tuple[str, str]:
    """Pair, swap, and wait until the old primary's stop script has finished."""
    cluster.start_both()
    primary, secondary = cluster.paired()
    cluster.wait("the VIP answers from the primary", lambda: cluster.fetch_via_vip() == primary)
    done = cli("swap", "--socket", str(cluster.socket(primary)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert cluster.paired() == (secondary, primary)
    pidfile = cluster.tmp_path / f"app.{primary}.pid"
    cluster.wait(f"{primary}'s stop script finished", lambda: not pidfile.exists())
    cluster.wait(
        "the VIP answers from the new primary", lambda: cluster.fetch_via_vip() == secondary
    )
    return primary, secondary


def test_a_swap_hands_over_only_after_the_stop_finished(lab: Lab, tmp_path: Path) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, vip_network="lan", stop_delay=STOP_DELAY)
    swap_with_a_slow_stop(cluster)
    report = cluster.audit()
    assert report is not None and report.ok, report
    assert report.figures["overlaps"]["count"] == 0


def test_the_audit_catches_a_peer_started_before_the_old_servers_stop_ended(
    lab: Lab, tmp_path: Path
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, vip_network="lan", stop_delay=STOP_DELAY)
    cluster.entry = [str(MUTANT)]
    cluster.expect_violations("S1")
    _, new = swap_with_a_slow_stop(cluster)
    report = cluster.audit()
    assert report is not None
    assert [v.invariant for v in report.violations] == ["S1"], report
    why = report.violations[0].why
    assert why.startswith(f"{new} started serving (secondary -> primary on heartbeat)")
    assert "still holding the application/address" in why
    # the two served together for about the stop script's duration
    assert report.figures["overlaps"]["longest"] > STOP_DELAY / 2


def test_a_split_brain_is_accepted_because_every_link_was_down(lab: Lab, tmp_path: Path) -> None:
    cluster = Cluster(lab, tmp_path, LINKS)
    cluster.start_both()
    _, secondary = cluster.paired()
    for network in LINKS:
        lab.link_down(secondary, network)
    cluster.wait(f"{secondary} takes over", lambda: cluster.state(secondary) in SERVING)
    for network in LINKS:
        lab.link_up(secondary, network)
    cluster.paired()
    report = cluster.audit()
    assert report is not None and report.ok, report
    # both served at once, and the audit says why it accepted it: a takeover in silence
    assert report.figures["overlaps"]["count"] >= 1
    assert report.figures["blind_overlaps"] >= 1
    assert report.figures["forced_overlaps"] == 0
    assert set(report.figures["records"]) == set(NODES)


def test_stop_of_the_serving_node_lets_the_peer_start_only_after_the_stop(
    lab: Lab, tmp_path: Path
) -> None:
    """Issue 8's "two applications at once": the peer must not start while the
    stopped node's stop script still runs (the audit at the end judges it)."""
    cluster = Cluster(lab, tmp_path, LINKS, vip_network="lan", stop_delay=STOP_DELAY)
    cluster.start_both()
    primary, secondary = cluster.paired()
    done = cli("stop", "--socket", str(cluster.socket(primary)))
    assert done.returncode == 0, done.stdout + done.stderr
    cluster.wait(f"{secondary} serves", lambda: cluster.state(secondary) in SERVING)
    pidfile = cluster.tmp_path / f"app.{primary}.pid"
    cluster.wait(f"{primary}'s stop script finished", lambda: not pidfile.exists())


def acknowledged(cluster: Cluster, node: str, count: int) -> list[Ack]:
    """Run the numbered-record writer on ``node`` until ``count`` records are
    acknowledged; each ack is timed when its line is read (after its fsync)."""
    argv = [sys.executable, str(WRITER), str(cluster.data / "records"), "0"]
    proc = subprocess.Popen(cluster.node_command(node, argv), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acks = []
    for line in proc.stdout:
        acks.append(Ack(int(line), time.clock_gettime(time.CLOCK_MONOTONIC), node))
        if len(acks) >= count:
            break
    proc.kill()
    proc.wait(timeout=10)
    return acks


def test_s3_on_a_real_crash_every_acknowledged_record_is_on_the_next_server(
    lab: Lab, tmp_path: Path
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()
    acks = acknowledged(cluster, primary, 50)
    cluster.kill_node(primary)
    cluster.wait(f"{secondary} serves", lambda: cluster.state(secondary) in SERVING)
    cluster.acked, cluster.found = acks, {secondary: held(cluster, secondary)}
    report = cluster.audit()
    assert report is not None and report.ok, report
    assert "S3" in report.checked and report.figures["s3_entries"] == 1
    # the same journals, had the survivor lost one acknowledged record: S3 says so
    lost = acks[len(acks) // 2].id
    cluster.found = {secondary: held(cluster, secondary) - {lost}}
    report = cluster.audit()
    assert report is not None
    assert [v.invariant for v in report.violations] == ["S3"]
    assert report.violations[0].why.endswith(f"acknowledged record(s): {lost}")
    cluster.found = {secondary: held(cluster, secondary)}  # the hook audits the truth
