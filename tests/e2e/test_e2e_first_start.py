"""A safe first start (issue 9, point 4) with the real daemons in namespaces.

The pair is installed beside an existing application: its files are already in
the replicated directory on one node (or on both), and neither node has any
metadata. Before issue 9 alpha, the lower name, served and resynchronised beta
in full: beta's files were gone and nothing was in quarantine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e_support import NETNS, NODES, Cluster, cli

from failover.lab import Lab
from failover.replication.quarantine import list_quarantines

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}
BOTH = "data on both nodes: choose with `failover prim` on the node whose data to keep"


def install_application(disk: Path, who: str) -> dict[str, bytes]:
    """The existing application's files on one node's own disk; what was written."""
    files = {"app.conf": f"{who}'s settings\n".encode(), "db/table": f"{who}'s rows\n".encode()}
    for name, content in files.items():
        (disk / name).parent.mkdir(parents=True, exist_ok=True)
        (disk / name).write_bytes(content)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def quarantined(cluster: Cluster, node: str) -> list[Any]:
    return list_quarantines(cluster.tmp_path / "state" / node / "quarantine")


def waiting_for_the_operator(cluster: Cluster) -> bool:
    shown = [cluster.status(node) for node in NODES]
    return all(
        s is not None
        and s["state"] == "wait"
        and s["substatus"] == "ready"
        and str(s["reason"]).startswith(BOTH)
        for s in shown
    )


def test_the_application_files_on_one_node_only_survive_and_the_other_follows(
    lab: Lab, tmp_path: Path
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    files = install_application(cluster.disk("beta"), "beta")
    cluster.start_both()
    assert cluster.paired() == ("beta", "alpha")
    assert tree(cluster.disk("beta")) == files
    cluster.wait("alpha holds beta's files", lambda: tree(cluster.disk("alpha")) == files)
    # alpha had nothing to keep, beta kept everything: no quarantine anywhere
    assert quarantined(cluster, "alpha") == [] and quarantined(cluster, "beta") == []
    reasons = [r["reason"] for r in cluster.transitions("beta") if r["to"] == "alone"]
    assert "first start: this node holds data and alpha none: serving" in reasons


def test_files_on_both_nodes_wait_for_prim_and_the_other_copy_is_quarantined(
    lab: Lab, tmp_path: Path
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    kept = install_application(cluster.disk("beta"), "beta")
    replaced = install_application(cluster.disk("alpha"), "alpha")
    cluster.start_both()
    cluster.wait("both wait for the operator", lambda: waiting_for_the_operator(cluster))
    # nothing moves by itself: both still wait, saying why, at every poll while
    # their own clocks advance by three dead timeouts
    before = [len(cluster.transitions(node)) for node in NODES]
    start = cluster.uptime("alpha")

    def still_waiting_long_enough() -> bool:
        assert waiting_for_the_operator(cluster), cluster.describe()
        return cluster.uptime("alpha") - start >= 3 * cluster.dead_timeout

    cluster.wait("three dead timeouts of waiting", still_waiting_long_enough)
    assert [len(cluster.transitions(node)) for node in NODES] == before
    chose = cli("prim", "--socket", str(cluster.socket("beta")))
    assert chose.returncode == 0, chose.stdout + chose.stderr
    assert cluster.paired() == ("beta", "alpha")
    cluster.wait("alpha holds beta's files", lambda: tree(cluster.disk("alpha")) == kept)
    assert tree(cluster.disk("beta")) == kept
    # alpha's own files were set aside before the full copy, with their manifest
    sets = quarantined(cluster, "alpha")
    assert [(s.cause, s.peer, s.complete) for s in sets] == [("full resync", "beta", True)]
    assert tree(sets[0].directory / "data") == replaced
    assert quarantined(cluster, "beta") == []
