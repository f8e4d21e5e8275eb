"""``arbitrator: {type: ping}``: its keys, its defaults, and the timing it needs,
each mistake named at its key (docs/arbitration.md, ping; docs/configuration.md)."""

from __future__ import annotations

import pytest
from config_support import BASE, Bad, WriteConfig, assert_reported, bad, replace_once

from failover.config import load_config

# BASE (heartbeat_interval 0.5) with a ping witness and the timing it needs:
# dead_timeout >= lease_ttl + heartbeat_interval, startup_timeout >= lease_ttl
PING = replace_once(
    replace_once(
        BASE, "    dead_timeout: 2.0\n", "    dead_timeout: 6.5\n    startup_timeout: 6\n"
    ),
    "  failback: none\n",
    "  failback: none\n  arbitrator:\n    type: ping\n    address: 192.0.2.1\n    lease_ttl: 6\n",
)


def test_a_ping_arbitrator_loads_with_its_defaults(write_config: WriteConfig) -> None:
    config = load_config(write_config(PING))
    arbitrator = config.cluster.arbitrator
    assert (arbitrator.type, arbitrator.address, arbitrator.port) == ("ping", "192.0.2.1", None)
    assert (arbitrator.probe_count, arbitrator.probe_timeout) == (3, 0.25)
    assert arbitrator.ping_call_bound() == pytest.approx(0.95)
    settings = config.core_settings("alpha")
    # the gate is on, but a grant vouches for no data (the core's blind rows)
    assert settings.arbitrator and not settings.arbitrator_records
    assert settings.lease_ttl == 6.0


def test_the_fingerprint_spells_out_the_defaults_and_other_types_keep_theirs(
    write_config: WriteConfig,
) -> None:
    implicit = load_config(write_config(PING, "implicit.yaml"))
    explicit = load_config(
        write_config(
            replace_once(PING, "    lease_ttl: 6\n", "    lease_ttl: 6\n    probe_count: 3\n"),
            "explicit.yaml",
        )
    )
    assert implicit.fingerprint() == explicit.fingerprint()
    assert implicit.canonical()["cluster"]["arbitrator"] == {
        "type": "ping",
        "address": "192.0.2.1",
        "lease_ttl": 6.0,
        "port": None,
        "probe_count": 3,
        "probe_timeout": 0.25,
    }
    tcp = load_config(
        write_config(replace_once(PING, "    lease_ttl: 6\n", "    port: 443\n"), "tcp.yaml")
    )
    assert tcp.fingerprint() != implicit.fingerprint()
    assert tcp.cluster.arbitrator.port == 443
    witness = replace_once(
        BASE,
        "  failback: none\n",
        '  failback: none\n  arbitrator: {type: witness, address: "192.0.2.9:7420"}\n',
    )
    canonical = load_config(write_config(witness, "witness.yaml")).canonical()
    # the keys a witness cluster's fingerprint covered before ping existed
    assert canonical["cluster"]["arbitrator"] == {
        "type": "witness",
        "address": "192.0.2.9:7420",
        "lease_ttl": 6.0,
    }


def test_an_ipv6_address_and_a_host_name_are_targets(write_config: WriteConfig) -> None:
    for target in ("2001:db8::1", "gateway.example"):
        text = replace_once(PING, "192.0.2.1", target)
        assert load_config(write_config(text)).cluster.arbitrator.address == target


LEASE = "    lease_ttl: 6\n"
CASES: dict[str, Bad] = {
    "no address": bad(
        "    address: 192.0.2.1\n",
        "",
        "cluster.arbitrator.address",
        "arbitrator:",
        "required for arbitrator type 'ping'",
        base=PING,
    ),
    "an address with its port": bad(
        "address: 192.0.2.1",
        "address: 192.0.2.1:443",
        "cluster.arbitrator.address",
        "address:",
        "give the port apart",
        base=PING,
    ),
    "an address that looks like an option": bad(
        "address: 192.0.2.1",
        "address: -f",
        "cluster.arbitrator.address",
        "address:",
        "not a host name or IP address",
        base=PING,
    ),
    "a port out of range": bad(
        LEASE, LEASE + "    port: 70000\n", "cluster.arbitrator.port", "port:", base=PING
    ),
    "a port as text": bad(
        LEASE, LEASE + "    port: https\n", "cluster.arbitrator.port", "port:", base=PING
    ),
    "no probe": bad(
        LEASE,
        LEASE + "    probe_count: 0\n",
        "cluster.arbitrator.probe_count",
        "probe_count:",
        base=PING,
    ),
    "a probe count as a float": bad(
        LEASE,
        LEASE + "    probe_count: 2.5\n",
        "cluster.arbitrator.probe_count",
        "probe_count:",
        base=PING,
    ),
    "a negative probe timeout": bad(
        LEASE,
        LEASE + "    probe_timeout: -1\n",
        "cluster.arbitrator.probe_timeout",
        "probe_timeout:",
        base=PING,
    ),
    "an infinite probe timeout": bad(
        LEASE,
        LEASE + "    probe_timeout: .inf\n",
        "cluster.arbitrator.probe_timeout",
        "probe_timeout:",
        base=PING,
    ),
    "probes longer than half a renewal": bad(
        LEASE,
        LEASE + "    probe_count: 4\n    probe_timeout: 0.5\n",
        "cluster.arbitrator.probe_timeout",
        "probe_timeout:",
        "4 x 0.5 + 0.2 = 2.2 s",
        "half of lease_renew (1 s)",
        base=PING,
    ),
    "too many probes": bad(
        LEASE,
        LEASE + "    probe_count: 4\n",
        "cluster.arbitrator.probe_count",
        "probe_count:",
        "4 x 0.25 + 0.2 = 1.2 s",
        base=PING,
    ),
    "a lease too short to be renewed": bad(
        "lease_ttl: 6",
        "lease_ttl: 4.5",
        "cluster.arbitrator.lease_ttl",
        "lease_ttl:",
        "must exceed lease_margin + lease_renew + 2 x the ping call (1 + 2 + 2 x 0.95 = 4.9",
        base=PING,
    ),
    "a dead timeout shorter than the lease and a heartbeat": bad(
        "dead_timeout: 6.5",
        "dead_timeout: 6.4",
        "cluster.timing.dead_timeout",
        "dead_timeout:",
        "must be at least cluster.arbitrator.lease_ttl + heartbeat_interval (6 + 0.5 = 6.5)",
        base=PING,
    ),
    "the default dead timeout": bad(
        "    dead_timeout: 6.5\n",
        "",
        "cluster.timing.dead_timeout",
        "timing:",
        "dead_timeout (2) must be at least cluster.arbitrator.lease_ttl",
        base=PING,
    ),
    "a startup timeout shorter than the lease": bad(
        "startup_timeout: 6",
        "startup_timeout: 5.9",
        "cluster.timing.startup_timeout",
        "startup_timeout:",
        "startup_timeout (5.9) must be at least cluster.arbitrator.lease_ttl (6)",
        base=PING,
    ),
    "ping keys on a witness": bad(
        "type: ping",
        "type: witness",
        "cluster.arbitrator.probe_count",
        "probe_count:",
        "only for arbitrator type 'ping'",
        more=(("    address: 192.0.2.1\n", '    address: "192.0.2.1:7420"\n    probe_count: 2\n'),),
        base=PING,
    ),
    "etcd keys on a ping": bad(
        LEASE,
        LEASE + "    key_prefix: /ha\n",
        "cluster.arbitrator.key_prefix",
        "key_prefix:",
        "only for arbitrator type 'etcd'",
        base=PING,
    ),
    "an unknown key": bad(
        LEASE, LEASE + "    count: 3\n", "cluster.arbitrator.count", "count:", base=PING
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_a_bad_ping_arbitrator_is_named_at_its_key(write_config: WriteConfig, case: Bad) -> None:
    assert_reported(write_config, case)


def test_a_ping_arbitrator_needs_no_cluster_key(write_config: WriteConfig) -> None:
    text = replace_once(PING, "  key_file: cluster.key\n", "  insecure: true\n")
    assert load_config(write_config(text)).cluster.arbitrator.type == "ping"
