"""Valid configurations: examples, profiles, overrides, fingerprint and the derived API."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import BASE, KEY, REPLICATED, WriteConfig, replace_once
from pydantic import ValidationError

from failover.config import PROFILES, ClusterConfig, load_config
from failover.core.state import CheckerPolicy, Settings
from failover.errors import ConfigError, UsageError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _edited(edits: tuple[str, ...]) -> str:
    """BASE with each (old, new) pair of ``edits`` applied in turn."""
    text = BASE
    for old, new in zip(edits[::2], edits[1::2], strict=True):
        text = replace_once(text, old, new)
    return text


def _only_permission_warnings(config: ClusterConfig) -> None:
    # A fresh clone may give the demo key mode 0644: that warning is expected.
    assert all("readable by other users" in w for w in config.warnings), config.warnings


def test_loopback_example_loads_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(EXAMPLES / "loopback.yaml")
    _only_permission_warnings(config)
    assert config.node_names == ("alpha", "beta")
    assert [link.transport for link in config.links] == ["udp", "tcp"]
    assert config.cluster.key_file == EXAMPLES / "demo.key"
    key = config.read_key()
    assert key is not None and len(key) >= 32
    ports = {
        getattr(config.endpoint(node, link.name), "port")  # noqa: B009 - any endpoint model
        for node in config.nodes
        for link in config.links
    }
    assert len(ports) == 4


def test_two_rooms_example_loads_once_its_key_exists(tmp_path: Path) -> None:
    text = (EXAMPLES / "two-rooms.yaml").read_text()
    text = text.replace("/etc/failover/cluster.key", "cluster.key")
    (tmp_path / "cluster.key").write_bytes(KEY)
    (tmp_path / "cluster.key").chmod(0o600)
    path = tmp_path / "two-rooms.yaml"
    path.write_text(text)
    config = load_config(path)
    # its scripts exist on the dispatch servers, not here: said, but not an error
    # without --node (docs/configuration.md)
    assert [w.split(": ", 2)[1:] for w in config.warnings] == [
        [key, f"{script} does not exist on this machine"]
        for key, script in [
            ("application.start", "/opt/dispatch/bin/start-suite"),
            ("application.stop", "/opt/dispatch/bin/stop-suite"),
            ("checkers[0].command", "/opt/dispatch/bin/check-db"),
            ("checkers[1].command", "/opt/dispatch/bin/check-sip-trunk"),
        ]
    ]
    assert [link.transport for link in config.links] == ["udp", "tcp", "serial"]
    assert str(config.virtual_ip.address) == "10.10.0.100/24"  # type: ignore[union-attr]
    assert config.timing.dead_timeout == 3.0
    assert config.endpoint("room-b", "serial").device == "/dev/ttyS0"  # type: ignore[attr-defined]
    assert config.replication is not None
    assert [(d.name, str(d.path)) for d in config.replication.directories] == [
        ("db", "/srv/dispatch/db")
    ]
    assert config.replication_endpoint("room-a").port == 7410  # type: ignore[attr-defined]
    assert config.quarantine_dir_of("room-a") == Path("/var/lib/failover/room-a/quarantine")


def test_loopback_example_has_no_replication() -> None:
    # A replicated directory needs root and FUSE: the loopback demo stays runnable without.
    assert load_config(EXAMPLES / "loopback.yaml").replication is None


def test_two_rooms_example_without_its_key_names_only_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "two-rooms.yaml")
    (problem,) = caught.value.problems
    assert ": cluster.key_file: key file /etc/failover/cluster.key does not exist" in problem


def test_base_config_loads_with_the_documented_defaults(write_config: WriteConfig) -> None:
    config = load_config(write_config())
    cluster = config.cluster
    assert (cluster.insecure, cluster.failback, cluster.preferred) == (False, "none", None)
    assert (cluster.split_brain_winner, cluster.autostart) == ("auto", True)
    assert cluster.state_dir == Path("/var/lib/failover")
    assert cluster.arbitrator.type == "none"
    assert config.application is not None and config.application.timeout == 30.0
    assert config.warnings == ()


def test_default_profile_values(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "    heartbeat_interval: 0.5\n    dead_timeout: 2.0\n", "")
    text = replace_once(text, "  timing:\n", "")
    timing = load_config(write_config(text)).timing
    assert timing.model_dump() == {
        "heartbeat_interval": 0.2,  # a pause of 0.8 x dead_timeout is no takeover (operations.md)
        "link_timeout": 1.0,
        "dead_timeout": 2.0,
        "startup_timeout": 2.0,
    }


def test_fast_profile_values(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "    heartbeat_interval: 0.5\n    dead_timeout: 2.0\n", "")
    text = replace_once(text, "  timing:\n", "")
    text = replace_once(text, "profile: default", "profile: fast")
    timing = load_config(write_config(text)).timing
    assert timing == PROFILES["fast"]
    assert (
        timing.heartbeat_interval,
        timing.link_timeout,
        timing.dead_timeout,
        timing.startup_timeout,
    ) == (0.05, 0.1, 0.2, 0.5)


def test_overrides_apply_on_top_of_the_profile(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "profile: default", "profile: fast")
    text = replace_once(
        text,
        "    heartbeat_interval: 0.5\n    dead_timeout: 2.0\n",
        "    dead_timeout: 0.3\n    startup_timeout: 5\n",
    )
    timing = load_config(write_config(text)).timing
    assert timing.heartbeat_interval == 0.05  # from the profile
    assert timing.link_timeout == 0.1  # from the profile
    assert timing.dead_timeout == 0.3
    assert timing.startup_timeout == 5.0


def test_dead_timeout_exactly_three_intervals_is_accepted(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "heartbeat_interval: 0.5", "heartbeat_interval: 0.05")
    text = replace_once(text, "dead_timeout: 2.0", "dead_timeout: 0.15")
    text = replace_once(text, "  timing:\n", "  timing:\n    link_timeout: 0.1\n")
    assert load_config(write_config(text)).timing.dead_timeout == 0.15


def test_insecure_without_key_warns(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "  key_file: cluster.key\n", "  insecure: true\n")
    path = write_config(text)
    config = load_config(path)
    assert config.read_key() is None
    assert config.warnings == (
        f"{path}:3: cluster.insecure: insecure: true: heartbeats are not authenticated; "
        "anyone who can reach a link can forge them",
    )


def test_key_readable_by_others_is_a_warning_not_an_error(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "cluster.key").chmod(0o644)
    path = write_config()
    (warning,) = load_config(path).warnings
    assert warning.startswith(f"{path}:3: cluster.key_file: ")
    assert "readable by other users (mode 644)" in warning


def test_preferred_without_failback_preferred_warns(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "  failback: none\n", "  failback: none\n  preferred: alpha\n")
    path = write_config(text)
    assert load_config(path).warnings == (
        f"{path}:9: cluster.preferred: ignored: failback is 'none', not 'preferred'",
    )


def test_read_key_returns_the_file_bytes(write_config: WriteConfig) -> None:
    assert load_config(write_config()).read_key() == KEY


def test_relative_paths_are_relative_to_the_config_file(
    write_config: WriteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = replace_once(BASE, "  profile: default\n", "  profile: default\n  state_dir: state\n")
    path = write_config(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / path.name)
    assert config.cluster.key_file is not None
    assert config.cluster.key_file.resolve() == (tmp_path / "cluster.key").resolve()
    assert config.node_dir("alpha").resolve() == (tmp_path / "state" / "alpha").resolve()


def test_node_state_dir_and_control_defaults_and_overrides(write_config: WriteConfig) -> None:
    text = replace_once(
        BASE,
        "  beta:\n",
        "  beta:\n    state_dir: /srv/ha\n    control: {socket: /run/beta.sock}\n",
    )
    config = load_config(write_config(text))
    assert config.node_dir("alpha") == Path("/var/lib/failover/alpha")
    assert config.control_of("alpha").socket == Path("/var/lib/failover/alpha/control.sock")
    assert config.node_dir("beta") == Path("/srv/ha/beta")
    assert config.control_of("beta").socket == Path("/run/beta.sock")


def test_control_over_tcp(write_config: WriteConfig, tmp_path: Path) -> None:
    text = replace_once(
        BASE,
        "  alpha:\n",
        "  alpha:\n    control:\n      tcp: {address: 127.0.0.1, port: 7480, token_file: token}\n",
    )
    control = load_config(write_config(text)).control_of("alpha")
    assert control.socket is None and control.tcp is not None
    assert (control.tcp.address, control.tcp.port) == ("127.0.0.1", 7480)
    assert control.tcp.token_file == tmp_path / "token"


def test_serial_baudrate_defaults_in_the_endpoint(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "    transport: tcp\n", "    transport: serial\n")
    text = text.replace("admin: {address: 127.0.0.1, port: 7411}", "admin: {device: /dev/ttyS0}")
    text = text.replace("admin: {address: 127.0.0.1, port: 7412}", "admin: {device: /dev/ttyS0}")
    # The same device name on both machines is normal for a serial cable.
    config = load_config(write_config(text))
    assert config.endpoint("beta", "admin").baudrate == 115200  # type: ignore[attr-defined]


def test_multicast_group_may_be_shared_by_both_nodes(write_config: WriteConfig) -> None:
    text = BASE.replace("port: 7401}", "port: 7400, group: 239.1.2.3}")
    text = text.replace("port: 7402}", "port: 7400, group: 239.1.2.3}")
    text = text.replace(
        "lan: {address: 127.0.0.1, port: 7400", "lan: {address: 127.0.0.2, port: 7400", 1
    )
    endpoint = load_config(write_config(text)).endpoint("beta", "lan")
    assert str(endpoint.group) == "239.1.2.3"  # type: ignore[attr-defined]


def test_yaml_anchors_and_merge_keys_are_understood(write_config: WriteConfig) -> None:
    text = replace_once(
        BASE,
        "  - name: db\n    command: /bin/true\n    interval: 5\n    timeout: 3\n",
        "  - &db {name: db, command: /bin/true, interval: 5, timeout: 3}\n"
        "  - {<<: *db, name: db-replica}\n",
    )
    config = load_config(write_config(text))
    assert [(c.name, c.interval) for c in config.checkers] == [("db", 5.0), ("db-replica", 5.0)]


def test_a_merge_of_a_mapping_that_merges_in_turn(write_config: WriteConfig) -> None:
    text = replace_once(
        BASE,
        "  - name: db\n    command: /bin/true\n    interval: 5\n    timeout: 3\n",
        "  - &db {name: db, command: /bin/true, interval: 5, timeout: 3}\n"
        "  - &replica {<<: *db, name: db-replica}\n"
        "  - {<<: *replica, name: db-replica-2, interval: 7}\n",
    )
    config = load_config(write_config(text))
    assert [(c.name, c.interval, c.timeout) for c in config.checkers] == [
        ("db", 5.0, 3.0),
        ("db-replica", 5.0, 3.0),
        ("db-replica-2", 7.0, 3.0),
    ]


# --- fingerprint --------------------------------------------------------------------------


def test_fingerprint_is_a_sha256_hex_digest(write_config: WriteConfig) -> None:
    fingerprint = load_config(write_config()).fingerprint()
    assert len(fingerprint) == 64
    int(fingerprint, 16)


def test_fingerprint_equal_for_the_same_file_on_two_machines(tmp_path: Path) -> None:
    # Two "machines": two directories with the same file and different keys.
    fingerprints = []
    for name, key in (("one", KEY), ("two", b"z" * 64)):
        machine = tmp_path / name
        machine.mkdir()
        (machine / "cluster.key").write_bytes(key)
        (machine / "cluster.key").chmod(0o600)
        (machine / "cluster.yaml").write_text(BASE)
        fingerprints.append(load_config(machine / "cluster.yaml").fingerprint())
    assert fingerprints[0] == fingerprints[1]


def test_fingerprint_does_not_contain_the_key(write_config: WriteConfig) -> None:
    config = load_config(write_config())
    canonical = repr(config.canonical())
    assert "cluster.key" not in canonical
    assert KEY.decode() not in canonical


SAME_MEANING = {
    "comments and blank lines": ("  failback: none\n", "\n  # policy\n  failback: none  # why\n"),
    "key order": (
        "  profile: default\n  timing:\n    heartbeat_interval: 0.5\n    dead_timeout: 2.0\n",
        "  timing:\n    dead_timeout: 2.0\n    heartbeat_interval: 0.5\n  profile: default\n",
    ),
    "section order": (
        "virtual_ip:\n  address: 10.0.0.100/24\n  interface: eth0\n",
        "",
        "cluster:\n",
        "virtual_ip: {interface: eth0, address: 10.0.0.100/24}\ncluster:\n",
    ),
    "defaults written out": (
        "  failback: none\n",
        "  failback: none\n  split_brain_winner: auto\n  autostart: true\n  insecure: false\n",
    ),
    "profile value restated as an override": (
        "dead_timeout: 2.0\n",
        "dead_timeout: 2.0\n    link_timeout: 1.0\n",
    ),
    "integer instead of float": ("dead_timeout: 2.0", "dead_timeout: 2"),
    "local settings only": (
        "  alpha:\n",
        "  alpha:\n    state_dir: /srv/x\n    control: {socket: /run/a.sock}\n",
    ),
    "link order": (
        "  - name: lan\n    transport: udp\n  - name: admin\n    transport: tcp\n",
        "  - name: admin\n    transport: tcp\n  - name: lan\n    transport: udp\n",
    ),
}


@pytest.mark.parametrize("edits", list(SAME_MEANING.values()), ids=list(SAME_MEANING))
def test_fingerprint_unchanged_when_only_form_changes(
    write_config: WriteConfig, edits: tuple[str, ...]
) -> None:
    before = load_config(write_config(BASE, "before.yaml")).fingerprint()
    assert load_config(write_config(_edited(edits), "after.yaml")).fingerprint() == before


CLUSTER_WIDE = {
    "a timing": ("dead_timeout: 2.0", "dead_timeout: 2.5"),
    "the profile": (
        "profile: default",
        "profile: fast",
        "    dead_timeout: 2.0\n",
        "    dead_timeout: 2.0\n    link_timeout: 1.0\n",
    ),
    "the cluster name": ("name: dispatch", "name: dispatch-2"),
    "a port": ("port: 7412", "port: 7413"),
    "an address": ("address: 127.0.0.1, port: 7401", "address: 127.0.0.2, port: 7401"),
    "a transport": ("transport: tcp", "transport: udp"),
    "the failback policy": ("failback: none", "failback: last-primary"),
    "the virtual ip": ("10.0.0.100/24", "10.0.0.101/24"),
    "a checker": ("interval: 5", "interval: 6"),
    "the application": ("  stop: /bin/true", "  stop: /bin/false"),
    "an application script": ("  stop: /bin/true\n", "  stop: /bin/true\n  poststop: /bin/true\n"),
    "the stop timeout": ("  stop: /bin/true\n", "  stop: /bin/true\n  stop_timeout: 10\n"),
    "a node name": ("  beta:", "  gamma:"),
    "insecure": ("  key_file: cluster.key\n", "  insecure: true\n"),
}


@pytest.mark.parametrize("edits", list(CLUSTER_WIDE.values()), ids=list(CLUSTER_WIDE))
def test_fingerprint_changes_with_any_cluster_wide_value(
    write_config: WriteConfig, edits: tuple[str, ...]
) -> None:
    before = load_config(write_config(BASE, "before.yaml")).fingerprint()
    after = load_config(write_config(_edited(edits), "after.yaml")).fingerprint()
    assert after != before


def test_unset_scripts_are_left_out_of_the_fingerprint(write_config: WriteConfig) -> None:
    # Only the scripts a file sets are in the canonical form; the restart
    # budget always is (fingerprint version 2): both nodes upgrade together.
    config = load_config(write_config())
    assert config.canonical()["application"] == {
        "start": "/bin/true",
        "stop": "/bin/true",
        "timeout": 30.0,
        "max_restarts": 3,
        "restart_window": 86400.0,
    }
    assert config.canonical()["version"] == 2


# --- the API other modules use -----------------------------------------------------------


def test_core_settings_round_trip(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "  failback: none\n", "  failback: preferred\n  preferred: beta\n")
    text = replace_once(text, "  profile: default\n", "  split_brain_winner: alpha\n")
    config = load_config(write_config(text))
    settings = config.core_settings("alpha")
    assert settings == Settings(
        name="alpha",
        peer="beta",
        links=("lan", "admin"),
        fingerprint=config.fingerprint(),
        heartbeat_interval=0.5,
        link_timeout=1.0,
        dead_timeout=2.0,
        startup_timeout=2.0,
        arbitrator=False,
        lease_ttl=6.0,
        failback="preferred",
        preferred="beta",
        split_brain_winner="alpha",
        checkers=(CheckerPolicy("db"),),
        replicated=False,  # no replication section: the core emits no data effect
    )
    beta = config.core_settings("beta")
    assert (beta.name, beta.peer, beta.fingerprint) == ("beta", "alpha", settings.fingerprint)


def test_core_settings_say_whether_anything_is_replicated(write_config: WriteConfig) -> None:
    assert load_config(write_config(REPLICATED)).core_settings("alpha").replicated


def test_core_settings_auto_split_brain_winner_is_none(write_config: WriteConfig) -> None:
    assert load_config(write_config()).core_settings("beta").split_brain_winner is None


def test_core_settings_for_an_unknown_node_is_a_usage_error(write_config: WriteConfig) -> None:
    with pytest.raises(UsageError, match="'gamma' is not a node"):
        load_config(write_config()).core_settings("gamma")


def test_peer_of(write_config: WriteConfig) -> None:
    config = load_config(write_config())
    assert (config.peer_of("alpha"), config.peer_of("beta")) == ("beta", "alpha")


def test_endpoint_is_the_transports_validated_model(write_config: WriteConfig) -> None:
    from failover.plugins import load_transport  # noqa: PLC0415

    endpoint = load_config(write_config()).endpoint("beta", "admin")
    assert isinstance(endpoint, load_transport("tcp").endpoint_model)
    assert endpoint.port == 7412  # type: ignore[attr-defined]


def test_endpoint_of_an_unknown_link_is_a_usage_error(write_config: WriteConfig) -> None:
    with pytest.raises(UsageError, match="no endpoint for link 'wifi'"):
        load_config(write_config()).endpoint("alpha", "wifi")


def test_resolve_local_node_explicit(write_config: WriteConfig) -> None:
    config = load_config(write_config())
    assert config.resolve_local_node("beta") == "beta"
    with pytest.raises(UsageError, match="nodes: alpha, beta"):
        config.resolve_local_node("gamma")


@pytest.mark.parametrize("hostname", ["beta", "BETA", "beta.example.org"])
def test_resolve_local_node_from_hostname(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, hostname: str
) -> None:
    config = load_config(write_config())
    monkeypatch.setattr("socket.gethostname", lambda: hostname)
    assert config.resolve_local_node(None) == "beta"


def test_resolve_local_node_unknown_hostname_is_a_clear_error(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write_config())
    monkeypatch.setattr("socket.gethostname", lambda: "gamma")
    with pytest.raises(UsageError, match=r"hostname 'gamma' is not a node.*--node"):
        config.resolve_local_node(None)


def test_config_is_frozen(write_config: WriteConfig) -> None:
    config = load_config(write_config())
    with pytest.raises(ValidationError):
        config.cluster.name = "other"


def test_source_path_is_recorded(write_config: WriteConfig) -> None:
    path = write_config()
    assert load_config(path).source_path == path


def test_demo_key_is_long_enough_and_says_it_is_for_demos() -> None:
    key = (EXAMPLES / "demo.key").read_bytes()
    assert len(key) >= 32
    assert b"demo" in key
