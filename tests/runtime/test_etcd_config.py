"""A cluster file with ``arbitrator: {type: etcd}`` loads, and the daemon gets its client."""

from __future__ import annotations

from pathlib import Path

from failover.config import load_config
from failover.runtime.arbitrator import build_arbitrator
from failover.runtime.etcdlease import EtcdArbitrator, EtcdTls

CLUSTER = """\
cluster:
  name: prod
  insecure: true
  arbitrator:
    type: etcd
    endpoints: ["https://192.0.2.9:2379", "https://[2001:db8::9]:2379"]
    key_prefix: /ha
    lease_ttl: 9
    tls: {ca_file: ca.pem, cert_file: node.pem, key_file: node.key}
links:
  - {name: lan, transport: udp}
nodes:
  alpha:
    links: {lan: {address: 127.0.0.1, port: 7401}}
  beta:
    links: {lan: {address: 127.0.0.1, port: 7402}}
"""


def test_an_etcd_cluster_loads_and_builds_its_client(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    config = load_config(path)
    settings = config.core_settings("alpha")
    assert settings.arbitrator and settings.lease_ttl == 9.0
    client = build_arbitrator(config, "alpha", 42)
    assert isinstance(client, EtcdArbitrator)
    assert client.ttl == 9 and client.node == "alpha"
    assert client.endpoints == ["https://192.0.2.9:2379", "https://[2001:db8::9]:2379"]
    assert [c.base_url for c in client.clients] == client.endpoints
    assert (client.holder_key, client.record_key) == (b"/ha/prod/holder", b"/ha/prod/record")
    tls = EtcdTls(*(str(tmp_path / name) for name in ("ca.pem", "node.pem", "node.key")))
    assert client.clients[0].session.verify == tls.ca_file
    assert client.clients[0].session.cert == (tls.cert_file, tls.key_file)


def test_the_default_prefix_and_a_witness_fingerprint_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.replace("    key_prefix: /ha\n", "").replace("    tls: {", "    #"))
    path.write_text(path.read_text().replace("https://", "http://"))
    client = build_arbitrator(load_config(path), "beta", 1)
    assert isinstance(client, EtcdArbitrator) and client.holder_key == b"/failover/prod/holder"
    (tmp_path / "prod.key").write_bytes(b"k" * 32)
    witness = '  key_file: prod.key\n  arbitrator: {type: witness, address: "192.0.2.9:7420"}\n'
    path.write_text(
        CLUSTER.split("  insecure:", maxsplit=1)[0] + witness + CLUSTER[CLUSTER.index("links:") :]
    )
    canonical = load_config(path).canonical()["cluster"]["arbitrator"]
    # the keys a witness cluster's fingerprint covered before etcd existed
    assert canonical == {"type": "witness", "address": "192.0.2.9:7420", "lease_ttl": 6.0}
