"""A pair whose arbitrator is a ping witness: the ``client`` namespace's address on "lan".

Topology (the ``lab`` fixture): the heartbeats run on "crossover" only; each
node pings the client's address on "lan". Cutting both of a node's links
isolates it from its peer and from the address at once: the node cut off
from everything must stop serving before its peer, which still reaches the
address, takes over (the timing rule of docs/arbitration.md, ping). The
known limit (both nodes reach the address while the link between them is
cut: both serve) is shown by the model checker, not here. Every test ends
with the audit of the journals (conftest.py): two nodes serving at once
anywhere in the run fails it.

To run the lab with a ping witness elsewhere (a benchmark, the campaign):
``ping_arbitrator`` and ``PING_TIMING`` are the cluster file's pieces.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from e2e_support import (
    NETNS,
    Arbitrated,
    arbitrator_down_stops_the_pair_until_it_is_back,
    audited_with_arbitrator,
)

from failover.lab import Lab

pytestmark = NETNS

LINKS = {"crossover": "udp"}
LEASE_TTL = 5.0
# the fast profile (heartbeat_interval 0.05) with what a ping witness needs:
# dead_timeout >= lease_ttl + heartbeat_interval, startup_timeout >= lease_ttl
PING_TIMING = {"dead_timeout": 5.1, "startup_timeout": 5.0}


def ping_arbitrator(address: str) -> dict[str, Any]:
    """``cluster.arbitrator`` for a ping witness at ``address`` (ICMP): two probes
    of 0.3 s per call, so a lease of 5 s is renewed in time (docs/arbitration.md)."""
    return {
        "type": "ping",
        "address": address,
        "lease_ttl": LEASE_TTL,
        "probe_count": 2,
        "probe_timeout": 0.3,
    }


class PingCluster(Arbitrated):
    """``Cluster`` with ``arbitrator: {type: ping}`` at the client's "lan" address."""

    def __init__(self, lab: Lab, tmp_path: Path) -> None:
        super().__init__(lab, tmp_path, LINKS)
        self.target = lab.address("client", "lan")
        document = yaml.safe_load(self.config_path.read_text())
        document["cluster"]["arbitrator"] = ping_arbitrator(self.target)
        document["cluster"]["timing"] = PING_TIMING
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def isolate(self, node: str) -> None:
        """Cut ``node`` from its peer and from the address at once."""
        for network in ("crossover", "lan"):
            self.lab.link_down(node, network)

    def holder(self) -> str | None:
        serving = self.serving()
        return serving[0] if len(serving) == 1 else None


def one_at_most(cluster: PingCluster, done: Any) -> Any:
    """A predicate for ``wait``: fails at once if two nodes serve, else ``done()``."""

    def check() -> bool:
        assert len(cluster.serving()) <= 1, cluster.describe()
        return bool(done())

    return check


def test_the_secondary_cut_off_from_everything_never_serves(lab: Lab, tmp_path: Path) -> None:
    """The node that lost both its peer and the address stays out; the one that
    still reaches the address serves on, renewing on its pings."""
    cluster = PingCluster(lab, tmp_path)
    cluster.start_both()
    primary, secondary = cluster.paired()
    changes = len(cluster.state_changes(primary))
    cluster.isolate(secondary)
    cut_at = cluster.uptime(primary)
    refused = f"{cluster.target} not reached"

    def settled() -> bool:
        status = cluster.status(secondary) or {}
        return (
            refused in str(status.get("reason"))
            and cluster.state(primary) == "alone"
            # a whole lease after the cut: the primary renewed on its pings
            and cluster.uptime(primary) - cut_at >= LEASE_TTL
        )

    cluster.wait(f"{secondary} refused, {primary} serving on", one_at_most(cluster, settled), 60)
    assert cluster.serving() == [primary], cluster.describe()
    # serving on, not fenced at its deadline and granted again between two polls
    assert cluster.state_changes(primary)[changes:] == [("primary", "alone")], cluster.describe()
    audited_with_arbitrator(cluster, "ping")


def test_the_primary_cut_off_from_everything_stops_before_the_peer_serves(
    lab: Lab, tmp_path: Path
) -> None:
    """The isolated primary's renewals fail: it fences itself at its deadline, and
    the secondary, silence for dead_timeout and the address reached, takes over;
    never both (observed here, and judged by the audit on the journals)."""
    cluster = PingCluster(lab, tmp_path)
    cluster.start_both()
    primary, secondary = cluster.paired()
    cut_at = time.monotonic()
    cluster.isolate(primary)
    cluster.wait(
        f"{secondary} serves, {primary} fenced",
        one_at_most(
            cluster,
            lambda: cluster.serving() == [secondary] and cluster.state(primary) == "wait",
        ),
        bound=60,
    )
    took = time.monotonic() - cut_at
    print(
        f"takeover with a ping witness after the primary's isolation: {took:.2f} s "
        f"(lease_ttl {LEASE_TTL:g} s, dead_timeout {PING_TIMING['dead_timeout']:g} s)"
    )
    fenced = [
        r
        for r in cluster.transitions(primary)
        if r["from"] in ("primary", "alone") and r["to"] == "wait"
    ]
    print("the primary's fence:", [(r["event"], r["reason"]) for r in fenced])
    assert fenced and all("lease" in r["reason"] for r in fenced), fenced
    for network in ("crossover", "lan"):
        lab.link_up(primary, network)
    cluster.wait(
        f"{primary} back as the secondary",
        one_at_most(
            cluster,
            lambda: (cluster.state(secondary), cluster.state(primary)) == ("primary", "secondary"),
        ),
        bound=60,
    )
    audited_with_arbitrator(cluster, "ping")


def test_the_address_down_under_a_healthy_pair(lab: Lab, tmp_path: Path) -> None:
    """The address stops answering: the serving node cannot renew and stops at its
    deadline; nobody serves until it answers again, then the same node serves."""
    cluster = PingCluster(lab, tmp_path)
    arbitrator_down_stops_the_pair_until_it_is_back(
        cluster,
        lambda: lab.link_down("client", "lan"),
        lambda: lab.link_up("client", "lan"),
        "the pinged address",
    )
    audited_with_arbitrator(cluster, "ping")
