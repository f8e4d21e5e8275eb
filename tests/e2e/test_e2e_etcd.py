"""A pair whose arbitrator is a lease in etcd, run in a third namespace: etcd decides who serves.

Topology (the ``lab`` fixture): the heartbeats run on "crossover" only; etcd
runs in the ``client`` namespace on "lan", which both nodes reach. So cutting
"crossover" separates the nodes from each other but not from etcd. Every
test ends with the audit of the journals (conftest.py): two nodes serving at
once anywhere in the run fails it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_support import (
    NETNS,
    Arbitrated,
    arbitrator_down_stops_the_pair_until_it_is_back,
    audited_with_arbitrator,
    cut_between_the_nodes_only_one_serves,
)

from failover.lab import Lab
from failover.testing.etcd import NO_ETCD, EtcdServer

pytestmark = [*NETNS, pytest.mark.skipif(NO_ETCD is not None, reason=str(NO_ETCD))]

LINKS = {"crossover": "udp"}
LEASE_TTL = 6

# run in the client namespace: the holder key's node, or "" when nobody holds it
READ_HOLDER = """
import base64, json, sys, urllib.request
body = json.dumps({"key": base64.b64encode(sys.argv[2].encode()).decode()}).encode()
with urllib.request.urlopen(sys.argv[1] + "/v3/kv/range", body, timeout=5) as answer:
    kvs = json.load(answer).get("kvs") or []
print(json.loads(base64.b64decode(kvs[0]["value"]))["node"] if kvs else "")
"""


class EtcdCluster(Arbitrated):
    """``Cluster`` with ``arbitrator: {type: etcd}`` and etcd in ``client``."""

    def __init__(self, lab: Lab, tmp_path: Path, etcd: EtcdServer) -> None:
        super().__init__(lab, tmp_path, LINKS)
        self.etcd = etcd
        document = yaml.safe_load(self.config_path.read_text())
        document["cluster"]["arbitrator"] = etcd.arbitrator(LEASE_TTL)
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def holder(self) -> str:
        argv = [sys.executable, "-c", READ_HOLDER, self.etcd.url, "/failover/e2e/holder"]
        return self.lab.exec("client", argv).stdout.strip()


@pytest.fixture
def etcd(lab: Lab, tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(
        tmp_path / "etcd",
        lab.address("client", "lan"),
        client_port=2379,
        peer_port=2380,
        prefix=lab.command("client", []),
    )
    server.start()
    yield server
    server.remove()


def test_cut_between_the_nodes_only_one_serves(lab: Lab, tmp_path: Path, etcd: EtcdServer) -> None:
    cluster = EtcdCluster(lab, tmp_path, etcd)
    cut_between_the_nodes_only_one_serves(lab, cluster, "crossover", LEASE_TTL)
    audited_with_arbitrator(cluster, "etcd")


def test_etcd_killed_under_a_healthy_pair(lab: Lab, tmp_path: Path, etcd: EtcdServer) -> None:
    cluster = EtcdCluster(lab, tmp_path, etcd)
    arbitrator_down_stops_the_pair_until_it_is_back(cluster, etcd.kill, etcd.start, "etcd")
    audited_with_arbitrator(cluster, "etcd")


def test_kill_9_of_the_primary_the_peer_serves_once_the_lease_ran_out(
    lab: Lab, tmp_path: Path, etcd: EtcdServer
) -> None:
    """The dead primary's lease must run out at etcd before the peer is granted
    it: the takeover takes longer than the time the primary's last keepalive
    could still hold (the audit judges the run; the time is printed)."""
    cluster = EtcdCluster(lab, tmp_path, etcd)
    cluster.start_both()
    primary, secondary = cluster.paired()
    killed_at = time.monotonic()
    cluster.kill9(primary)
    cluster.wait(f"{secondary} serves", lambda: cluster.state(secondary) == "alone", bound=60)
    took = cluster.entered(secondary, "alone") - killed_at
    print(f"takeover with etcd after kill -9: {took:.2f} s (lease_ttl {LEASE_TTL} s)")
    # safety, not speed: the last keepalive came at most lease_renew (2 s) before
    # the kill, so no grant can come sooner (a loaded machine only makes it later);
    # timed by the secondary's own record, not by when this process polled it
    assert took >= LEASE_TTL - 2, took
    assert cluster.holder() == secondary
    audited_with_arbitrator(cluster, "etcd", killed=primary)
