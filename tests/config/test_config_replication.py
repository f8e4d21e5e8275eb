"""The replication section: its rules, defaults, derived paths and its part of the fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import (
    ALPHA_REPLICATION,
    BASE,
    BETA_REPLICATION,
    REPLICATED,
    REPLICATION,
    Bad,
    WriteConfig,
    assert_reported,
    bad,
    edited,
    problems_of,
    replace_once,
)

from failover.config import load_config
from failover.errors import PluginNotFound, UsageError
from failover.plugins import load_replication_transport

SPOOL = "      path: /srv/spool\n"
DB = "      path: /srv/db\n"


def replicated(old: str, new: str, key: str, at: str | tuple[str, int], *gist: str) -> Bad:
    """A bad case made from REPLICATED (a valid file with a replication section)."""
    return bad(old, new, key, at, *gist, base=REPLICATED)


CASES: dict[str, Bad] = {
    # --- each node's replication endpoint
    "replication endpoint without a replication section": bad(
        "  beta:\n",
        ALPHA_REPLICATION + "  beta:\n",
        "nodes.alpha.replication",
        "replication: {",
        "no replication section",
    ),
    "node without a replication endpoint": replicated(
        BETA_REPLICATION,
        "",
        "nodes.beta.replication",
        "  beta:",
        "required: the replication section needs each node's replication endpoint",
    ),
    "replication endpoint port is not a number": replicated(
        "port: 7421",
        "port: seven",
        "nodes.alpha.replication.port",
        "port: seven",
        "must be a valid integer, not 'seven'",
    ),
    "replication endpoint without an address": replicated(
        BETA_REPLICATION,
        "    replication: {port: 7422}\n",
        "nodes.beta.replication.address",
        "replication: {port: 7422}",
        "required",
    ),
    "unknown replication endpoint option": replicated(
        "port: 7421}",
        "port: 7421, colour: red}",
        "nodes.alpha.replication.colour",
        "colour: red",
        "unknown key",
    ),
    "replication endpoint is not a mapping": replicated(
        ALPHA_REPLICATION,
        "    replication: 7421\n",
        "nodes.alpha.replication",
        "replication: 7421",
        "must be a mapping, not 7421",
    ),
    "same replication endpoint on both nodes": replicated(
        "port: 7422}",
        "port: 7421}",
        "nodes.beta.replication",
        ("replication: {", 2),
        "same address and port as node 'alpha' (127.0.0.1:7421)",
    ),
    "replication endpoint on a heartbeat endpoint of the same node": replicated(
        "port: 7421}",
        "port: 7411}",
        "nodes.alpha.replication",
        "replication: {",
        "same address and port as nodes.alpha.links.admin (127.0.0.1:7411)",
        "a port of its own",
    ),
    "replication on the unspecified address takes a heartbeat port": replicated(
        BETA_REPLICATION,
        "    replication: {address: 0.0.0.0, port: 7402}\n",
        "nodes.beta.replication",
        "0.0.0.0",
        "same address and port as nodes.beta.links.lan (127.0.0.1:7402)",
    ),
    # --- the transport
    "unknown replication transport": replicated(
        "transport: tcp-replication",
        "transport: carrier-pigeon",
        "replication.transport",
        "carrier-pigeon",
        "'carrier-pigeon' is not installed",
        "install a package providing entry point 'carrier-pigeon' in group failover.transports",
    ),
    "heartbeat transport for replication": replicated(
        "transport: tcp-replication",
        "transport: tcp",
        "replication.transport",
        ("transport: tcp", 2),
        "transport 'tcp' (",
        "is a heartbeat transport, not a replication transport",
    ),
    "replication transport for a heartbeat link": bad(
        "transport: tcp",
        "transport: tcp-replication",
        "links[1].transport",
        "tcp-replication",
        "is a replication transport, not a heartbeat transport",
    ),
    # --- the section's own values
    "replication is not a mapping": bad(
        "application:\n",
        "replication: yes\napplication:\n",
        "replication",
        "replication: yes",
        "must be a mapping",
    ),
    "unknown ack level": replicated(
        "ack: written",
        "ack: flushed",
        "replication.ack",
        "ack: flushed",
        "'received', 'written' or 'fsynced'",
    ),
    "zone size not a power of two": replicated(
        "zone_size: 65536",
        "zone_size: 65535",
        "replication.zone_size",
        "zone_size: 65535",
        "65535 is not a power of two from 4096 (4 KiB) to 16777216 (16 MiB)",
    ),
    "zone size below 4 KiB": replicated(
        "zone_size: 65536",
        "zone_size: 2048",
        "replication.zone_size",
        "zone_size: 2048",
        "2048 is not a power of two from 4096",
    ),
    "zone size above 16 MiB": replicated(
        "zone_size: 65536",
        "zone_size: 33554432",
        "replication.zone_size",
        "zone_size: 33554432",
        "33554432 is not a power of two",
    ),
    "zone size written as a string": replicated(
        "zone_size: 65536",
        'zone_size: "65536"',
        "replication.zone_size",
        "zone_size:",
        "valid integer",
    ),
    "negative bandwidth": replicated(
        "  ack: written\n",
        "  ack: written\n  bandwidth: -1\n",
        "replication.bandwidth",
        "bandwidth: -1",
        "greater than or equal to 0",
    ),
    "zero replication timeout": replicated(
        "  ack: written\n",
        "  ack: written\n  timeout: 0\n",
        "replication.timeout",
        "timeout: 0",
        "greater than 0",
    ),
    "unknown key in replication": replicated(
        "  ack: written\n",
        "  ack: written\n  port: 7421\n",
        "replication.port",
        "  port: 7421",
        "unknown key",
        "go under nodes.<name>.replication",
    ),
    "misspelt key in replication": replicated(
        "  zone_size: 65536\n",
        "  zonesize: 65536\n",
        "replication.zonesize",
        "zonesize",
        "did you mean 'zone_size'?",
    ),
    # --- the directories
    "no directory": replicated(
        "  directories:\n    - name: spool\n" + SPOOL + "    - name: db\n" + DB,
        "  directories: []\n",
        "replication.directories",
        "directories: []",
        "must hold at least 1 item",
    ),
    "directories missing": replicated(
        "  directories:\n    - name: spool\n" + SPOOL + "    - name: db\n" + DB,
        "",
        "replication.directories",
        ("replication:", 3),
        "required key is missing",
    ),
    "directory without a path": replicated(
        DB, "", "replication.directories[1].path", "- name: db", "required key is missing"
    ),
    "unknown key in a directory": replicated(
        DB,
        DB + "      mode: sync\n",
        "replication.directories[1].mode",
        "mode: sync",
        "unknown key",
    ),
    "duplicate directory names": replicated(
        "    - name: db\n",
        "    - name: spool\n",
        "replication.directories[1].name",
        ("- name: spool", 2),
        "duplicate name 'spool' (also replication.directories[0])",
    ),
    "directory name with bad characters": replicated(
        "    - name: db\n",
        "    - name: Data_Base\n",
        "replication.directories[1].name",
        "Data_Base",
        "only a-z, 0-9 and '-'",
    ),
    "relative directory path": replicated(
        DB,
        "      path: srv/db\n",
        "replication.directories[1].path",
        "path: srv/db",
        "'srv/db' is not an absolute path",
    ),
    "directory path with ..": replicated(
        DB,
        "      path: /srv/spool/../db\n",
        "replication.directories[1].path",
        "/srv/spool/../db",
        "must not contain '..'",
    ),
    "the same directory twice": replicated(
        DB,
        "      path: /srv/spool/\n",
        "replication.directories[1].path",
        "/srv/spool/",
        "'/srv/spool' is the same directory as replication.directories[0].path",
    ),
    "directory inside another": replicated(
        DB,
        "      path: /srv/spool/db\n",
        "replication.directories[1].path",
        "/srv/spool/db",
        "is inside replication.directories[0].path (/srv/spool)",
        "must not overlap",
    ),
    "directory containing another": replicated(
        DB,
        "      path: /srv\n",
        "replication.directories[1].path",
        ("path: /srv", 2),
        "'/srv' contains replication.directories[0].path (/srv/spool)",
    ),
    "directory inside the cluster state_dir": replicated(
        DB,
        "      path: /var/lib/failover/db\n",
        "replication.directories[1].path",
        "/var/lib/failover/db",
        "is inside cluster.state_dir (/var/lib/failover)",
    ),
    "directory containing the cluster state_dir": replicated(
        DB,
        "      path: /var\n",
        "replication.directories[1].path",
        "path: /var",
        "contains cluster.state_dir (/var/lib/failover)",
    ),
    "directory inside a node's own state_dir": replicated(
        "  beta:\n",
        "  beta:\n    state_dir: /srv/db/state\n",
        "replication.directories[1].path",
        DB.strip(),
        "contains nodes.beta.state_dir (/srv/db/state)",
    ),
    "quarantine_dir inside a replicated directory": replicated(
        "quarantine_dir: /srv/quarantine",
        "quarantine_dir: /srv/db/quarantine",
        "replication.quarantine_dir",
        "quarantine_dir:",
        "'/srv/db/quarantine' is inside replication.directories[1].path (/srv/db)",
    ),
    # --- mutual TLS on the stream
    "tls file that does not exist": replicated(
        "  quarantine_dir: /srv/quarantine\n",
        "  quarantine_dir: /srv/quarantine\n  tls:\n    ca_file: /nonexistent/ca.pem\n"
        "    cert_file: /nonexistent/cert.pem\n    key_file: /nonexistent/key.pem\n",
        "replication.tls.ca_file",
        "ca_file:",
        "cannot read /nonexistent/ca.pem",
    ),
    "tls without a key file": replicated(
        "  quarantine_dir: /srv/quarantine\n",
        "  quarantine_dir: /srv/quarantine\n  tls:\n    ca_file: /etc/hostname\n"
        "    cert_file: /etc/hostname\n",
        "replication.tls.key_file",
        "tls:",
        "required key is missing",
    ),
}


def test_there_is_a_bad_case_per_replication_rule() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_replication_is_reported_at_its_file_line_and_key(
    write_config: WriteConfig, case: Bad
) -> None:
    assert_reported(write_config, case)


def test_replication_problems_are_reported_with_the_others(write_config: WriteConfig) -> None:
    text = replace_once(REPLICATED, "dead_timeout: 2.0", "dead_timeout: 1.0")
    text = replace_once(text, "zone_size: 65536", "zone_size: 3")
    text = replace_once(text, "port: 7422}", "port: 7421}")
    text = replace_once(text, DB, "      path: db\n")
    keys = [p.split(": ", 2)[1] for p in problems_of(write_config(text))]
    assert keys == [
        "cluster.timing.dead_timeout",
        "nodes.beta.replication",
        "replication.zone_size",
        "replication.directories[1].path",
    ]


# --- valid files -------------------------------------------------------------------------


def test_replicated_config_loads_with_the_documented_defaults(write_config: WriteConfig) -> None:
    text = replace_once(REPLICATED, "  transport: tcp-replication\n  ack: written\n", "")
    text = replace_once(text, "  zone_size: 65536\n  quarantine_dir: /srv/quarantine\n", "")
    config = load_config(write_config(text))
    replication = config.replication
    assert replication is not None
    assert (replication.transport, replication.ack) == ("tcp-replication", "written")
    assert (replication.timeout, replication.zone_size, replication.bandwidth) == (5.0, 65536, 0)
    assert [(d.name, d.path) for d in replication.directories] == [
        ("spool", Path("/srv/spool")),
        ("db", Path("/srv/db")),
    ]
    assert config.quarantine_dir_of("alpha") == Path("/var/lib/failover/alpha/quarantine")
    assert config.warnings == ()


@pytest.mark.parametrize("size", [4096, 1 << 20, 16 * 1024 * 1024])
def test_zone_sizes_within_bounds_are_accepted(write_config: WriteConfig, size: int) -> None:
    text = replace_once(REPLICATED, "zone_size: 65536", f"zone_size: {size}")
    replication = load_config(write_config(text)).replication
    assert replication is not None and replication.zone_size == size


def test_replication_endpoint_is_the_transports_validated_model(
    write_config: WriteConfig,
) -> None:
    config = load_config(write_config(REPLICATED))
    endpoint = config.replication_endpoint("beta")
    assert isinstance(endpoint, load_replication_transport("tcp-replication").endpoint_model)
    assert (str(endpoint.address), endpoint.port) == ("127.0.0.1", 7422)  # type: ignore[attr-defined]
    assert config.replication_endpoint("beta") is endpoint


def test_replication_endpoint_is_validated_when_built_in_code(write_config: WriteConfig) -> None:
    loaded = load_config(write_config(REPLICATED))
    config = type(loaded).model_validate(loaded.model_dump())
    assert config.replication_endpoint("alpha").port == 7421  # type: ignore[attr-defined]


def test_replication_endpoint_of_a_built_config_with_a_heartbeat_transport_fails_clearly(
    write_config: WriteConfig,
) -> None:
    data = load_config(write_config(REPLICATED)).model_dump()
    data["replication"]["transport"] = "tcp"
    config = type(load_config(write_config(REPLICATED))).model_validate(data)
    with pytest.raises(PluginNotFound, match="is a heartbeat transport"):
        config.replication_endpoint("alpha")


def test_replication_endpoint_without_replication_is_a_usage_error(
    write_config: WriteConfig,
) -> None:
    config = load_config(write_config(BASE))
    assert config.replication is None
    with pytest.raises(UsageError, match="has no replication section"):
        config.replication_endpoint("alpha")
    with pytest.raises(UsageError, match="'gamma' is not a node"):
        load_config(write_config(REPLICATED, "r.yaml")).replication_endpoint("gamma")


def test_empty_replication_key_means_no_replication(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "application:\n", "replication:\napplication:\n")
    config = load_config(write_config(text))
    assert config.replication is None
    assert config.quarantine_dir_of("beta") == Path("/var/lib/failover/beta/quarantine")


def test_quarantine_dir_is_relative_to_the_config_file(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    text = replace_once(REPLICATED, "quarantine_dir: /srv/quarantine", "quarantine_dir: q")
    config = load_config(write_config(text))
    assert config.quarantine_dir_of("alpha") == tmp_path / "q"
    assert config.quarantine_dir_of("beta") == tmp_path / "q"


def test_quarantine_dir_follows_a_node_state_dir(write_config: WriteConfig) -> None:
    text = replace_once(REPLICATED, "  quarantine_dir: /srv/quarantine\n", "")
    text = replace_once(text, "  beta:\n", "  beta:\n    state_dir: /srv/ha\n")
    config = load_config(write_config(text))
    assert config.quarantine_dir_of("beta") == Path("/srv/ha/beta/quarantine")


def test_sibling_directories_with_a_common_prefix_do_not_overlap(
    write_config: WriteConfig,
) -> None:
    text = replace_once(REPLICATED, DB, "      path: /srv/spool-old\n")
    replication = load_config(write_config(text)).replication
    assert replication is not None
    assert replication.directories[1].path == Path("/srv/spool-old")


# --- fingerprint -------------------------------------------------------------------------


def test_fingerprint_without_replication_has_no_replication_part(
    write_config: WriteConfig,
) -> None:
    assert "replication" not in load_config(write_config(BASE)).canonical()


REPLICATION_FORM_ONLY = {
    "quarantine_dir (local to a node)": (
        ("quarantine_dir: /srv/quarantine", "quarantine_dir: /data/quarantine"),
    ),
    "directory order": (
        ("    - name: spool\n" + SPOOL, ""),
        (DB, DB + "    - name: spool\n" + SPOOL),
    ),
    "defaults written out": (
        ("  ack: written\n", "  ack: written\n  timeout: 5\n  bandwidth: 0\n"),
    ),
}


@pytest.mark.parametrize(
    "edits", list(REPLICATION_FORM_ONLY.values()), ids=list(REPLICATION_FORM_ONLY)
)
def test_fingerprint_ignores_local_and_formal_replication_changes(
    write_config: WriteConfig, edits: tuple[tuple[str, str], ...]
) -> None:
    before = load_config(write_config(REPLICATED, "before.yaml")).fingerprint()
    after = load_config(write_config(edited(REPLICATED, edits), "after.yaml")).fingerprint()
    assert after == before


REPLICATION_WIDE = {
    "the replication section itself": (
        (REPLICATION, ""),
        (ALPHA_REPLICATION, ""),
        (BETA_REPLICATION, ""),
    ),
    "ack": (("ack: written", "ack: fsynced"),),
    "zone size": (("zone_size: 65536", "zone_size: 131072"),),
    "timeout": (("  ack: written\n", "  ack: written\n  timeout: 2\n"),),
    "bandwidth": (("  ack: written\n", "  ack: written\n  bandwidth: 1000000\n"),),
    "a directory path": ((DB, "      path: /srv/db2\n"),),
    "a directory name": (("    - name: db\n", "    - name: database\n"),),
    "a replication endpoint": (("port: 7422", "port: 7423"),),
}


@pytest.mark.parametrize("edits", list(REPLICATION_WIDE.values()), ids=list(REPLICATION_WIDE))
def test_fingerprint_changes_with_any_shared_replication_value(
    write_config: WriteConfig, edits: tuple[tuple[str, str], ...]
) -> None:
    before = load_config(write_config(REPLICATED, "before.yaml")).fingerprint()
    after = load_config(write_config(edited(REPLICATED, edits), "after.yaml")).fingerprint()
    assert after != before


def test_tls_files_that_are_not_certificates_are_reported(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    tls = f"  tls:\n    ca_file: {junk}\n    cert_file: {junk}\n    key_file: {junk}\n"
    text = REPLICATED.replace(
        "  quarantine_dir: /srv/quarantine\n", "  quarantine_dir: /srv/quarantine\n" + tls, 1
    )
    problems = problems_of(write_config(text))
    assert any(": replication.tls: TLS CA file" in p for p in problems), problems
