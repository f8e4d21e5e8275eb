"""A pair with a witness in a third namespace: the witness decides who serves.

Topology (the ``lab`` fixture): the heartbeats run on "crossover" only; the
witness runs in the ``client`` namespace on "lan", which both nodes reach. So
cutting "crossover" separates the nodes from each other but not from the
witness. Every test ends with the audit of the journals (conftest.py): two
nodes serving at once anywhere in the run fails it.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from e2e_support import (
    NETNS,
    SERVING,
    Arbitrated,
    arbitrator_down_stops_the_pair_until_it_is_back,
    audited_with_arbitrator,
    cli,
    cut_between_the_nodes_only_one_serves,
)

from failover.lab import Lab
from failover.testing.witness import WitnessServer

pytestmark = NETNS

LINKS = {"crossover": "udp"}
WITNESS_PORT = 7420
LEASE_TTL = 6.0


class WitnessedCluster(Arbitrated):
    """``Cluster`` with ``arbitrator: {type: witness}`` and the witness in ``client``."""

    def __init__(self, lab: Lab, tmp_path: Path) -> None:
        super().__init__(lab, tmp_path, LINKS)
        self.witness = WitnessServer(
            tmp_path, lab.address("client", "lan"), "e2e", tmp_path / "cluster.key",
            port=WITNESS_PORT, prefix=lab.command("client", []), env=self.env,
        )  # fmt: skip
        document = yaml.safe_load(self.config_path.read_text())
        document["cluster"]["arbitrator"] = self.witness.arbitrator(LEASE_TTL)
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def start_witness(self) -> None:
        self.witness.start()

    def kill_witness(self) -> None:
        self.witness.kill()

    def holder(self) -> str | None:
        return self.witness.holder()


def audited_with_the_witness(cluster: WitnessedCluster, killed: str | None = None) -> None:
    audited_with_arbitrator(cluster, "witness", killed)


def test_cut_between_the_nodes_only_one_serves(lab: Lab, tmp_path: Path) -> None:
    cluster = WitnessedCluster(lab, tmp_path)
    cluster.start_witness()
    cut_between_the_nodes_only_one_serves(lab, cluster, "crossover", LEASE_TTL)
    audited_with_the_witness(cluster)


def test_the_witness_killed_under_a_healthy_pair(lab: Lab, tmp_path: Path) -> None:
    """With the core's lease model the serving node needs a renewed lease at all
    times: without the witness it stops (docs/arbitration.md, its limits)."""
    cluster = WitnessedCluster(lab, tmp_path)
    cluster.start_witness()
    arbitrator_down_stops_the_pair_until_it_is_back(
        cluster, cluster.kill_witness, cluster.start_witness, "the witness"
    )
    audited_with_the_witness(cluster)


def test_kill_9_of_the_primary_the_peer_serves_once_the_lease_ran_out(
    lab: Lab, tmp_path: Path
) -> None:
    """The dead primary's lease must run out at the witness before the peer is
    granted it (the audit judges the run; the takeover time is printed)."""
    cluster = WitnessedCluster(lab, tmp_path)
    cluster.start_witness()
    cluster.start_both()
    primary, secondary = cluster.paired()
    killed_at = time.monotonic()
    cluster.kill9(primary)
    cluster.wait(f"{secondary} serves", lambda: cluster.state(secondary) == "alone", bound=60)
    took = cluster.entered(secondary, "alone") - killed_at
    print(f"takeover with a witness after kill -9: {took:.2f} s (lease_ttl {LEASE_TTL:g} s)")
    assert cluster.holder() == secondary
    audited_with_the_witness(cluster, killed=primary)


def test_a_stopped_primary_releases_the_lease_and_the_peer_serves_at_once(
    lab: Lab, tmp_path: Path
) -> None:
    """``failover stop`` gives the lease back once the application is stopped: the
    peer is granted it without waiting for it to run out."""
    cluster = WitnessedCluster(lab, tmp_path)
    cluster.start_witness()
    cluster.start_both()
    primary, secondary = cluster.paired()
    stopped_at = time.monotonic()
    done = cli("stop", "--socket", str(cluster.socket(primary)))
    assert done.returncode == 0, done.stderr
    cluster.wait(f"{secondary} serves", lambda: cluster.serving() == [secondary], bound=60)
    # timed by the secondary's own record, not by when this process polled it
    took = cluster.entered(secondary, *SERVING) - stopped_at
    print(f"hand-over by stop with a witness: {took:.2f} s (lease_ttl {LEASE_TTL:g} s)")
    assert took < LEASE_TTL - 1, took  # sooner than the lease could have run out
    assert cluster.holder() == secondary
    audited_with_the_witness(cluster)
