"""Bad configurations: each is rejected with the right file, line, dotted key and reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from config_support import (
    BASE,
    Bad,
    WriteConfig,
    assert_reported,
    bad,
    line_of,
    problems_of,
    replace_once,
)

ALPHA_LAN = "      lan: {address: 127.0.0.1, port: 7401}\n"
BETA_LAN = "      lan: {address: 127.0.0.1, port: 7402}\n"
BETA_ADMIN = "      admin: {address: 127.0.0.1, port: 7412}\n"
BETA_BLOCK = "  beta:\n    links:\n" + BETA_LAN + BETA_ADMIN
GAMMA_BLOCK = (
    "  gamma:\n    links:\n"
    "      lan: {address: 127.0.0.1, port: 7403}\n"
    "      admin: {address: 127.0.0.1, port: 7413}\n"
)

CASES: dict[str, Bad] = {
    "unknown top-level key": bad(
        "application:\n", "colour: blue\napplication:\n", "colour", "colour: blue", "unknown key"
    ),
    "unknown nested key, misspelt": bad(
        "  failback: none\n",
        "  failback: none\n  failbak: preferred\n",
        "cluster.failbak",
        "failbak:",
        "unknown key",
        "did you mean 'failback'?",
    ),
    "unknown key in timing": bad(
        "    dead_timeout: 2.0\n",
        "    dead_timeout: 2.0\n    grace: 4\n",
        "cluster.timing.grace",
        "grace: 4",
        "unknown key",
    ),
    "unknown key in a node": bad(
        "  alpha:\n",
        "  alpha:\n    stat_dir: /srv\n",
        "nodes.alpha.stat_dir",
        "stat_dir",
        "did you mean 'state_dir'?",
    ),
    "dead_timeout directly under cluster": bad(
        "  failback: none\n",
        "  failback: none\n  dead_timeout: 3.0\n",
        "cluster.dead_timeout",
        "  dead_timeout: 3.0",
        "unknown key",
        "belongs under cluster.timing",
    ),
    "address in the links section": bad(
        "    transport: udp\n",
        "    transport: udp\n    address: 10.0.0.1\n",
        "links[0].address",
        "address: 10.0.0.1",
        "unknown key",
        "nodes.<name>.links.<link>",
    ),
    "key_file under a node": bad(
        "  alpha:\n",
        "  alpha:\n    key_file: other.key\n",
        "nodes.alpha.key_file",
        "other.key",
        "unknown key",
        "belongs under cluster",
    ),
    "timing is not a number": bad(
        "heartbeat_interval: 0.5",
        "heartbeat_interval: fast",
        "cluster.timing.heartbeat_interval",
        "heartbeat_interval: fast",
        "valid number",
        "'fast'",
    ),
    "timing given as a quoted string": bad(
        "dead_timeout: 2.0",
        'dead_timeout: "2.0"',
        "cluster.timing.dead_timeout",
        "dead_timeout:",
        "valid number",
    ),
    "insecure is not a boolean": bad(
        "  failback: none\n",
        "  failback: none\n  insecure: maybe\n",
        "cluster.insecure",
        "insecure: maybe",
        "valid boolean",
    ),
    "checkers is not a list": bad(
        "checkers:\n  - name: db\n    command: /bin/true\n    interval: 5\n    timeout: 3\n",
        "checkers: db\n",
        "checkers",
        "checkers: db",
        "must be a list",
    ),
    "cluster section is empty": bad(
        "cluster:\n  name: dispatch\n  key_file: cluster.key\n  profile: default\n"
        "  timing:\n    heartbeat_interval: 0.5\n    dead_timeout: 2.0\n  failback: none\n",
        "cluster:\n",
        "cluster",
        "cluster:",
        "must be a mapping, not null",
    ),
    "missing cluster name": bad(
        "  name: dispatch\n", "", "cluster.name", "cluster:", "required key is missing"
    ),
    "missing links section": bad(
        "links:\n  - name: lan\n    transport: udp\n  - name: admin\n    transport: tcp\n",
        "",
        "links",
        "cluster:",
        "required key is missing",
    ),
    "link without a transport": bad(
        "    transport: tcp\n",
        "",
        "links[1].transport",
        "- name: admin",
        "required key is missing",
    ),
    "application script misspelt": bad(
        "  stop: /bin/true\n",
        "  post_stop: /bin/true\n",
        "application.post_stop",
        "post_stop:",
        "unknown key",
        "did you mean 'poststop'?",
    ),
    "application stop timeout not a duration": bad(
        "  stop: /bin/true\n",
        "  stop: /bin/true\n  stop_timeout: soon\n",
        "application.stop_timeout",
        "stop_timeout: soon",
    ),
    "dead timeout under 3 x heartbeat interval": bad(
        "dead_timeout: 2.0",
        "dead_timeout: 1.0",
        "cluster.timing.dead_timeout",
        "dead_timeout: 1.0",
        "at least 3 x heartbeat_interval",
    ),
    "heartbeat interval too long for the profile's dead timeout": bad(
        "    dead_timeout: 2.0\n",
        "",
        "cluster.timing.heartbeat_interval",
        "heartbeat_interval: 0.8",
        "at least 3 x heartbeat_interval",
        more=(("heartbeat_interval: 0.5", "heartbeat_interval: 0.8"),),
    ),
    "link timeout longer than dead timeout": bad(
        "    dead_timeout: 2.0\n",
        "    dead_timeout: 2.0\n    link_timeout: 2.5\n",
        "cluster.timing.link_timeout",
        "link_timeout: 2.5",
        "must not exceed dead_timeout",
    ),
    "link timeout not above heartbeat interval": bad(
        "    dead_timeout: 2.0\n",
        "    dead_timeout: 2.0\n    link_timeout: 0.5\n",
        "cluster.timing.link_timeout",
        "link_timeout: 0.5",
        "greater than heartbeat_interval",
    ),
    "negative timing": bad(
        "heartbeat_interval: 0.5",
        "heartbeat_interval: -0.5",
        "cluster.timing.heartbeat_interval",
        "heartbeat_interval: -0.5",
        "greater than 0",
    ),
    "duplicate node (YAML duplicate key)": bad(
        "  beta:\n",
        "  alpha:\n",
        "nodes.alpha",
        ("  alpha:", 2),
        "duplicate key",
        "first defined at line 15",
    ),
    "duplicate top-level section": bad(
        "checkers:\n",
        "cluster:\n  name: other\ncheckers:\n",
        "cluster",
        ("cluster:", 2),
        "duplicate key (first defined at line 1)",
    ),
    "three nodes": bad(
        "application:\n",
        GAMMA_BLOCK + "application:\n",
        "nodes",
        "nodes:",
        "exactly two nodes, found 3",
    ),
    "one node": bad(BETA_BLOCK, "", "nodes", "nodes:", "exactly two nodes, found 1"),
    "node name with bad characters": bad(
        "  beta:\n", "  Beta_2:\n", "nodes.Beta_2", "Beta_2:", "only a-z, 0-9 and '-'"
    ),
    "node name that is not a string": bad(
        "  beta:\n", "  2:\n", "nodes.2", "  2:", "read as 2, not as a name: quote it ('2')"
    ),
    "node name read as a boolean": bad("  beta:\n", "  on:\n", "nodes.on", "  on:", "read as true"),
    "cluster name with bad characters": bad(
        "name: dispatch", "name: Dispatch", "cluster.name", "name: Dispatch", "only a-z"
    ),
    "link name with bad characters": bad(
        "  - name: admin\n",
        "  - name: admin link\n",
        "links[1].name",
        "admin link",
        "only a-z",
    ),
    "link endpoint without an address": bad(
        ALPHA_LAN,
        "      lan: {port: 7401}\n",
        "nodes.alpha.links.lan.address",
        "lan: {port: 7401}",
        "required",
    ),
    "endpoint port is not a number": bad(
        "port: 7401",
        "port: seven",
        "nodes.alpha.links.lan.port",
        "port: seven",
        "must be a valid integer, not 'seven'",
    ),
    "endpoint address is not an IP address": bad(
        BETA_LAN,
        "      lan: {address: 127.0.0.300, port: 7402}\n",
        "nodes.beta.links.lan.address",
        "127.0.0.300",
        "'127.0.0.300' is not a valid IPv4",
    ),
    "endpoint is not a mapping": bad(
        BETA_ADMIN,
        "      admin: [127.0.0.1, 7412]\n",
        "nodes.beta.links.admin",
        "admin: [",
        "must be a mapping, not a list",
    ),
    "unknown endpoint option": bad(
        "port: 7411}",
        "port: 7411, colour: red}",
        "nodes.alpha.links.admin.colour",
        "colour: red",
        "unknown key",
    ),
    "endpoint for an unknown link": bad(
        BETA_ADMIN,
        BETA_ADMIN + "      wifi: {address: 127.0.0.1, port: 7422}\n",
        "nodes.beta.links.wifi",
        "wifi:",
        "no link named 'wifi'",
    ),
    "missing endpoint": bad(
        BETA_ADMIN,
        "",
        "nodes.beta.links.admin",
        ("    links:", 2),
        "missing endpoint for link 'admin'",
    ),
    "unknown transport": bad(
        "transport: tcp",
        "transport: carrier-pigeon",
        "links[1].transport",
        "carrier-pigeon",
        "'carrier-pigeon' is not installed",
        "install a package providing entry point 'carrier-pigeon' in group failover.transports",
    ),
    "duplicate link names": bad(
        "  - name: admin\n",
        "  - name: lan\n",
        "links[1].name",
        ("- name: lan", 2),
        "duplicate name 'lan'",
    ),
    "same endpoint on both nodes": bad(
        BETA_LAN,
        ALPHA_LAN,
        "nodes.beta.links.lan",
        (ALPHA_LAN.strip(), 2),
        "same address and port as node 'alpha'",
    ),
    "no key_file without insecure": bad(
        "  key_file: cluster.key\n",
        "",
        "cluster.key_file",
        "cluster:",
        "required unless insecure: true",
    ),
    "key file too short": bad(
        "key_file: cluster.key",
        "key_file: short.key",
        "cluster.key_file",
        "short.key",
        "holds 10 bytes; at least 32",
    ),
    "key file missing": bad(
        "key_file: cluster.key",
        "key_file: nowhere.key",
        "cluster.key_file",
        "nowhere.key",
        "does not exist",
    ),
    "key file path goes through a file": bad(
        "key_file: cluster.key",
        "key_file: cluster.key/inner",
        "cluster.key_file",
        "cluster.key/inner",
        "cannot read key file",
        "Not a directory",
    ),
    "key file is a directory": bad(
        "key_file: cluster.key",
        "key_file: .",
        "cluster.key_file",
        "key_file: .",
        "not a regular file",
    ),
    "bad profile": bad(
        "profile: default",
        "profile: turbo",
        "cluster.profile",
        "profile: turbo",
        "'default' or 'fast'",
        "'turbo'",
    ),
    "bad failback policy": bad(
        "failback: none", "failback: sometimes", "cluster.failback", "failback:", "'last-primary'"
    ),
    "preferred node unknown": bad(
        "  failback: none\n",
        "  failback: preferred\n  preferred: gamma\n",
        "cluster.preferred",
        "preferred: gamma",
        "'gamma' is not a node",
    ),
    "failback preferred without preferred": bad(
        "failback: none",
        "failback: preferred",
        "cluster.preferred",
        "cluster:",
        "required when failback is 'preferred'",
    ),
    "split brain winner unknown": bad(
        "  failback: none\n",
        "  failback: none\n  split_brain_winner: gamma\n",
        "cluster.split_brain_winner",
        "split_brain_winner",
        "'auto' or a node name",
    ),
    "witness arbitrator without its address": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: witness\n",
        "cluster.arbitrator.address",
        "arbitrator:",
        "required for arbitrator type 'witness'",
    ),
    "witness arbitrator without a key": bad(
        "  failback: none\n",
        "  failback: none\n  insecure: true\n"
        "  arbitrator: {type: witness, address: 10.0.0.9:7420}\n",
        "cluster.arbitrator.type",
        "arbitrator:",
        "cannot be used with insecure: true",
    ),
    "arbitrator port in other digits": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: witness\n    address: 10.0.0.9:\u0661\u0662\n",
        "cluster.arbitrator.address",
        "address:",
        "must be host:port",
    ),
    "unknown arbitrator type": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator: {type: zookeeper}\n",
        "cluster.arbitrator.type",
        "arbitrator:",
        "'none', 'witness', 'etcd' or 'ping'",
    ),
    "etcd arbitrator without endpoints": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator: {type: etcd}\n",
        "cluster.arbitrator.endpoints",
        "arbitrator:",
        "required for arbitrator type 'etcd' (its client URLs, a list)",
    ),
    "etcd endpoint without a scheme": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n    endpoints: [10.0.0.9:2379]\n",
        "cluster.arbitrator.endpoints[0]",
        "endpoints:",
        "must be http://host:port or https://host:port",
    ),
    "etcd endpoints not a list": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n    endpoints: http://h:2379\n",
        "cluster.arbitrator.endpoints",
        "endpoints:",
        "list",
    ),
    "etcd lease in fractions of a second": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n    lease_ttl: 6.5\n"
        "    endpoints: [http://10.0.0.9:2379]\n",
        "cluster.arbitrator.lease_ttl",
        "lease_ttl:",
        "6.5: etcd counts leases in whole seconds",
    ),
    "etcd given a witness's address": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n    address: 10.0.0.9\n"
        "    endpoints: [http://10.0.0.9:2379]\n",
        "cluster.arbitrator.address",
        "address:",
        "a witness's address: arbitrator type 'etcd' takes endpoints",
    ),
    "a witness lease too short to renew": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: witness\n    address: 10.0.0.9:7420\n"
        "    lease_ttl: 3\n",
        "cluster.arbitrator.lease_ttl",
        "lease_ttl:",
        "lease_ttl (3) must exceed lease_margin + lease_renew (1 + 2 = 3)",
    ),
    "an etcd lease too short to renew": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n    lease_ttl: 2\n"
        "    endpoints: [http://10.0.0.9:2379]\n",
        "cluster.arbitrator.lease_ttl",
        "lease_ttl:",
        "lease_ttl (2) must exceed lease_margin + lease_renew",
    ),
    "an address with no arbitrator type": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    address: 10.0.0.9:7420\n",
        "cluster.arbitrator.address",
        "address:",
        "only with an arbitrator, and no type is given (witness, etcd or ping; none to run",
    ),
    "etcd tls over http": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n"
        "    endpoints: [http://10.0.0.9:2379]\n    tls: {ca_file: /etc/ssl/ca.pem}\n",
        "cluster.arbitrator.endpoints",
        "endpoints:",
        "with tls set, every endpoint must be https://",
    ),
    "etcd client certificate without its key": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n"
        "    endpoints: [https://10.0.0.9:2379]\n    tls: {cert_file: /etc/ssl/me.pem}\n",
        "cluster.arbitrator.tls",
        "tls:",
        "cert_file and key_file go together",
    ),
    "etcd key prefix relative": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: etcd\n"
        "    endpoints: [https://10.0.0.9:2379]\n    key_prefix: failover\n",
        "cluster.arbitrator.key_prefix",
        "key_prefix:",
        "must start with /",
    ),
    "etcd endpoints on a witness": bad(
        "  failback: none\n",
        "  failback: none\n  arbitrator:\n    type: witness\n    address: 10.0.0.9:7420\n"
        "    endpoints: [http://10.0.0.9:2379]\n",
        "cluster.arbitrator.endpoints",
        "endpoints:",
        "only for arbitrator type 'etcd'",
    ),
    "bad virtual_ip address": bad(
        "10.0.0.100/24",
        "10.0.0.300/24",
        "virtual_ip.address",
        "10.0.0.300/24",
        "not a valid IPv4 or IPv6 interface",
    ),
    "bad virtual_ip interface": bad(
        "interface: eth0",
        "interface: eth0/1",
        "virtual_ip.interface",
        "eth0/1",
        "not a network interface name",
    ),
    "checker with zero interval": bad(
        "interval: 5", "interval: 0", "checkers[0].interval", "    interval: 0", "greater than 0"
    ),
    "checker without a command": bad(
        "    command: /bin/true\n",
        "",
        "checkers[0].command",
        "- name: db",
        "required key is missing",
    ),
    "control with both socket and tcp": bad(
        "  alpha:\n",
        "  alpha:\n    control:\n      socket: /run/a.sock\n"
        "      tcp: {address: 127.0.0.1, port: 7480, token_file: token}\n",
        "nodes.alpha.control",
        "control:",
        "exactly one of socket or tcp",
    ),
    "control tcp port out of range": bad(
        "  alpha:\n",
        "  alpha:\n    control:\n      tcp: {address: 127.0.0.1, port: 70000, token_file: t}\n",
        "nodes.alpha.control.tcp.port",
        "port: 70000",
        "less than or equal to 65535",
    ),
}


def test_there_are_at_least_30_bad_configurations() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_configuration_is_reported_at_its_file_line_and_key(
    write_config: WriteConfig, case: Bad
) -> None:
    assert_reported(write_config, case)


def test_every_problem_in_a_file_is_reported_not_just_the_first(
    write_config: WriteConfig,
) -> None:
    text = replace_once(BASE, "dead_timeout: 2.0", "dead_timeout: 1.0")
    text = replace_once(text, "transport: tcp", "transport: carrier-pigeon")
    text = replace_once(text, "interval: 5", "interval: 0")
    text = replace_once(text, "10.0.0.100/24", "10.0.0.300/24")
    text = replace_once(text, "  name: dispatch\n", "")
    problems = problems_of(write_config(text))
    keys = [p.split(": ", 2)[1] for p in problems]
    assert keys == [
        "cluster.name",
        "cluster.timing.dead_timeout",
        "links[1].transport",
        "virtual_ip.address",
        "checkers[0].interval",
    ]


def test_yaml_syntax_error_names_the_line(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "  failback: none\n", "  failback: none: really\n")
    path = write_config(text)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{line_of(text, 'really', 1)}: invalid YAML: ")
    assert "mapping values are not allowed here" in problem


def test_unclosed_flow_mapping_is_a_syntax_error(write_config: WriteConfig) -> None:
    text = replace_once(BASE, ALPHA_LAN, "      lan: {address: 127.0.0.1, port: 7401\n")
    path = write_config(text)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:")
    assert "invalid YAML" in problem


def test_several_documents_in_one_file_are_refused(write_config: WriteConfig) -> None:
    path = write_config(BASE + "---\n" + BASE)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:{BASE.count(chr(10)) + 1}: invalid YAML: ")
    assert "single document" in problem


@pytest.mark.parametrize(
    "text", ["", "# only a comment\n", "---\n"], ids=["empty", "comment", "marker"]
)
def test_empty_file_is_refused(write_config: WriteConfig, text: str) -> None:
    path = write_config(text)
    assert problems_of(path) == [
        f"{path}:1: (top level): the file is empty (it must hold cluster, links and nodes)"
    ]


@pytest.mark.parametrize(
    ("text", "given"), [("- alpha\n- beta\n", "a list"), ("just words\n", "'just words'")]
)
def test_top_level_must_be_a_mapping(write_config: WriteConfig, text: str, given: str) -> None:
    path = write_config(text)
    assert problems_of(path) == [
        f"{path}:1: (top level): must be a mapping with cluster, links and nodes, not {given}"
    ]


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert problems_of(path) == [f"{path}: cannot read the file: No such file or directory"]


def test_directory_instead_of_file_is_one_clear_line(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path)
    assert problem.startswith(f"{tmp_path}: cannot read the file: ")


def test_binary_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    (problem,) = problems_of(path)
    assert problem == f"{path}:1: not UTF-8 text: byte 0xff at column 1 (invalid start byte)"


def test_non_string_keys_and_duplicates_are_all_reported(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "  profile: default\n", "  profile: default\n  profile: fast\n")
    text = replace_once(text, "    interval: 5\n", "    interval: 5\n    interval: 6\n")
    path = write_config(text)
    problems = problems_of(path)
    assert problems == [
        f"{path}:5: cluster.profile: duplicate key (first defined at line 4)",
        f"{path}:{line_of(text, 'interval: 6', 1)}: checkers[0].interval: "
        f"duplicate key (first defined at line {line_of(text, 'interval: 5', 1)})",
    ]


def test_yaml_merge_keys_are_not_duplicates(write_config: WriteConfig) -> None:
    text = replace_once(
        BASE,
        "checkers:\n",
        "x-defaults: &checker\n  interval: 5\n  timeout: 3\ncheckers:\n",
    )
    text = replace_once(
        text,
        "    interval: 5\n    timeout: 3\n",
        "    <<: *checker\n    timeout: 2\n",
    )
    path = write_config(text)
    # The merge itself is fine; only the helper section at the top level is unknown.
    assert problems_of(path) == [
        f"{path}:{line_of(text, 'x-defaults', 1)}: x-defaults: unknown key"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_key_file_is_reported(write_config: WriteConfig, tmp_path: Path) -> None:
    (tmp_path / "cluster.key").chmod(0)
    path = write_config()
    assert any("cannot read key file" in p for p in problems_of(path))


def test_problems_in_several_nodes_and_endpoints_are_all_reported(
    write_config: WriteConfig,
) -> None:
    text = replace_once(BASE, "port: 7401", "port: seven")
    text = replace_once(text, "port: 7411}", "port: 7411, colour: red}")
    text = replace_once(text, "127.0.0.1, port: 7402", "127.0.0.300, port: 7402")
    text = replace_once(text, BETA_ADMIN, "      admin: [1, 2]\n")
    problems = problems_of(write_config(text))
    assert [p.split(": ", 2)[1] for p in problems] == [
        "nodes.alpha.links.lan.port",
        "nodes.alpha.links.admin.colour",
        "nodes.beta.links.lan.address",
        "nodes.beta.links.admin",
    ]


def test_unsafe_yaml_tags_are_refused(write_config: WriteConfig) -> None:
    path = write_config("cluster: !!python/object/apply:os.system [true]\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:1: invalid YAML: could not determine a constructor")


def test_absurd_nesting_is_one_clear_line(write_config: WriteConfig) -> None:
    path = write_config("cluster: " + "[" * 1200 + "]" * 1200 + "\n")
    assert problems_of(path) == [f"{path}: invalid YAML: nested too deeply"]
