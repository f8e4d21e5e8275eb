"""A cluster file with ``arbitrator: {type: witness}`` loads, and the daemon gets its client."""

from __future__ import annotations

from pathlib import Path

from failover.config import load_config
from failover.runtime.arbitrator import WitnessArbitrator, build_arbitrator

CLUSTER = """\
cluster:
  name: prod
  key_file: prod.key
  arbitrator: {type: witness, address: "192.0.2.9:7420", lease_ttl: 9}
links:
  - {name: lan, transport: udp}
nodes:
  alpha:
    links: {lan: {address: 127.0.0.1, port: 7401}}
  beta:
    links: {lan: {address: 127.0.0.1, port: 7402}}
"""


def test_a_witness_cluster_loads_and_builds_its_client(tmp_path: Path) -> None:
    (tmp_path / "prod.key").write_bytes(b"k" * 32)
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    config = load_config(path)
    settings = config.core_settings("alpha")
    assert settings.arbitrator and settings.lease_ttl == 9.0
    client = build_arbitrator(config, "alpha", 42)
    assert isinstance(client, WitnessArbitrator)
    assert (client.host, client.port, client.ttl) == ("192.0.2.9", 7420, 9.0)
    assert client.session.incarnation == 42 and client.session.node == "alpha"
    path.write_text(CLUSTER.replace("  arbitrator: {type: witness", "  arbitrator: {type: none"))
    assert build_arbitrator(load_config(path), "alpha", 42) is None
