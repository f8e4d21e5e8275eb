"""`failover status|log|state` and the admin commands, through failover.cli.main."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_fakes import CLUSTER, FakeController, serving_in_thread

from failover.api.protocol import COMMANDS
from failover.cli import main
from failover.cli.controlcmd import (
    EXIT_DEGRADED,
    EXIT_PROTECTED,
    EXIT_UNKNOWN,
    EXIT_UNREACHABLE,
    NOT_SERVING_EXIT_CODES,
)

TOKEN = "cli-test-token-0123"


@pytest.fixture
def socket_path(controller: FakeController, sock_dir: Path) -> Iterator[str]:
    path = str(sock_dir / "c.sock")
    with serving_in_thread(controller, unix_path=path):
        yield path


def test_status_shows_node_peer_links_and_recent_transitions(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--socket", socket_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "alpha (cluster dispatch): primary (ready)"
    assert "  reason      peer beta in sync" in lines
    assert "  generation  3:alpha, data consistent" in lines
    assert "  uptime      1h02m" in lines
    assert "peer beta: secondary (ready), generation 3:alpha, alive, last seen 0.2 s ago" in lines
    assert "  lan     udp     up    last seen 0.1 s ago" in lines
    assert "  serial  serial  DOWN  last seen 12.5 s ago" in lines
    assert "frames: 1234 received, 3 dropped (bad_mac 2, replay 1)" in lines
    recent = lines[lines.index("recent transitions:") + 1 :]
    assert len(recent) == 5
    assert recent[-1].endswith("wait -> alone  event119  reason 119")


def test_status_of_a_lost_peer_says_so(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    original = controller.status

    def lost() -> dict[str, object]:
        status = original()
        status["peer"] = dict(status["peer"], alive=False, last_seen_ago=75.0)
        return status

    controller.status = lost  # type: ignore[method-assign]
    assert main(["status", "--socket", socket_path]) == 0
    assert "peer beta: LOST, last seen 1m15s ago (was secondary (ready)" in capsys.readouterr().out


def test_status_json_prints_the_api_object(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--json", "--socket", socket_path]) == 0
    assert json.loads(capsys.readouterr().out) == controller.status()


@pytest.mark.parametrize("name", COMMANDS)
def test_an_accepted_command_exits_0(
    socket_path: str, controller: FakeController, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([name, "--socket", socket_path]) == 0
    assert capsys.readouterr().out == f"{name} accepted: {name} done (state: primary)\n"
    assert controller.commands == [name]


def test_a_refused_command_exits_1_with_the_reason(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    controller.state = "wait"
    controller.refusals["swap"] = "the peer is not secondary"
    assert main(["swap", "--socket", socket_path]) == 1
    captured = capsys.readouterr()
    assert captured.err == "swap refused: the peer is not secondary (state: wait)\n"
    assert captured.out == ""


@pytest.mark.parametrize("argv", [["status"], ["start"], ["log"]])
def test_no_daemon_exits_2_with_a_clear_message(
    sock_dir: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = sock_dir / "none.sock"
    assert main([*argv, "--socket", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"failover {argv[0]}: no daemon listening on {path} (is `failover run` started?)\n"
    )


def test_log_prints_one_line_per_transition(
    socket_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "-n", "3", "--socket", socket_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert [line.split("  ", 1)[1] for line in lines] == [
        "wait -> alone  event117  reason 117",
        "alone -> primary  event118  reason 118",
        "wait -> alone  event119  reason 119",
    ]
    assert lines[0].startswith(_local_time(1_700_000_117.0))


def test_log_json_prints_the_records(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["log", "--json", "-n", "4", "--socket", socket_path]) == 0
    assert json.loads(capsys.readouterr().out) == controller.records[-4:]


@pytest.mark.parametrize("count", ["0", "1001", "x"])
def test_log_rejects_a_bad_count(socket_path: str, count: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["log", "-n", count, "--socket", socket_path])
    assert caught.value.code == 2


def _all_links_up(controller: FakeController) -> None:
    for link in controller.links:
        link["up"] = True


@pytest.mark.parametrize(("state", "code"), sorted(NOT_SERVING_EXIT_CODES.items()))
def test_state_quiet_exits_with_the_code_of_each_state_that_does_not_serve(
    socket_path: str,
    controller: FakeController,
    state: str,
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _all_links_up(controller)
    controller.state = state
    controller.in_sync, controller.in_sync_reason = False, f"this node is {state}"
    assert main(["state", "-q", "--socket", socket_path]) == code
    assert capsys.readouterr() == ("", "")


def test_state_of_a_protected_primary_exits_0(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    _all_links_up(controller)
    assert main(["state", "--socket", socket_path]) == EXIT_PROTECTED
    assert capsys.readouterr() == ("primary\n", "")


def test_state_of_a_primary_with_a_link_down_is_degraded_not_0(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    # regression: exited 0 (protected) with the serial link down
    assert controller.links[1] == dict(controller.links[1], name="serial", up=False)
    assert main(["state", "--socket", socket_path]) == EXIT_DEGRADED
    assert capsys.readouterr() == ("primary\n", "failover state: degraded: link serial down\n")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"peer_alive": False, "in_sync": False}, "peer beta lost (silent on every link)"),
        ({"peer_state": "resync", "in_sync": False}, "peer beta is resync"),
        ({"in_sync": False}, "replication channel: no answer from beta for 2.1 s"),
        ({"in_sync": None}, "the peer is not in sync"),  # a status that does not say
        ({"state": "alone", "peer_alive": False, "in_sync": False}, "peer beta lost"),
    ],
    ids=["peer-lost", "peer-resync", "channel-quiet", "unsaid", "alone"],
)
def test_state_of_a_serving_node_not_protected_is_degraded(
    socket_path: str,
    controller: FakeController,
    change: dict[str, object],
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _all_links_up(controller)
    for name, value in change.items():
        setattr(controller, name, value)
    if controller.in_sync is False:
        controller.in_sync_reason = reason
    assert main(["state", "--socket", socket_path]) == EXIT_DEGRADED
    out, err = capsys.readouterr()
    assert out == f"{controller.state}\n"
    assert err == f"failover state: degraded: {reason}\n"
    assert main(["state", "-q", "--socket", socket_path]) == EXIT_DEGRADED
    assert capsys.readouterr() == ("", "")


def test_status_says_whether_the_pair_is_protected(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--socket", socket_path]) == 0
    assert "  protection  DEGRADED: link serial down" in capsys.readouterr().out.splitlines()
    _all_links_up(controller)
    assert main(["status", "--socket", socket_path]) == 0
    assert "  protection  protected" in capsys.readouterr().out.splitlines()


def test_state_prints_the_state_without_quiet(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    controller.state = "secondary"
    assert main(["state", "--socket", socket_path]) == NOT_SERVING_EXIT_CODES["secondary"]
    assert capsys.readouterr().out == "secondary\n"


def test_state_codes_are_distinct_and_serving_is_0_or_1() -> None:
    codes = [
        EXIT_PROTECTED,
        EXIT_DEGRADED,
        *NOT_SERVING_EXIT_CODES.values(),
        EXIT_UNREACHABLE,
        EXIT_UNKNOWN,
    ]
    assert len(set(codes)) == len(codes)
    assert {EXIT_PROTECTED, EXIT_DEGRADED} == {0, 1}
    assert 2 not in codes  # argparse's usage error


def test_state_quiet_without_daemon_exits_unreachable_silently(
    sock_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["state", "-q", "--socket", str(sock_dir / "none.sock")]) == EXIT_UNREACHABLE
    assert capsys.readouterr() == ("", "")


def test_state_with_bad_options_never_looks_like_a_state(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAILOVER_SOCKET", raising=False)
    assert main(["state"]) == EXIT_UNKNOWN
    assert "where is the daemon?" in capsys.readouterr().err


def test_state_of_an_unknown_state_is_not_a_state_code(
    socket_path: str, controller: FakeController
) -> None:
    controller.state = "limbo"
    assert main(["state", "-q", "--socket", socket_path]) == EXIT_UNKNOWN


def test_the_socket_can_come_from_the_environment(
    socket_path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAILOVER_SOCKET", socket_path)
    assert main(["state"]) == EXIT_DEGRADED  # the serial link is down
    assert capsys.readouterr().out == "primary\n"


def test_no_address_at_all_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FAILOVER_SOCKET", raising=False)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "--socket PATH" in err
    assert "Traceback" not in err


def test_tcp_with_a_token_file(
    controller: FakeController, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with serving_in_thread(controller, tcp=("127.0.0.1", 0), token=TOKEN) as ends:
        assert ends.tcp is not None
        address = f"127.0.0.1:{ends.tcp[1]}"
        assert main(["state", "--tcp", address, "--token-file", str(token_file)]) == EXIT_DEGRADED
        assert main(["status", "--tcp", address]) == 2
    assert "--tcp needs --token-file" in capsys.readouterr().err


CONFIG = CLUSTER.replace("{control}", "socket: {socket}")


def test_the_socket_can_come_from_the_config(
    socket_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG.format(socket=socket_path))
    assert main(["state", "-c", str(config), "--node", "alpha"]) == EXIT_DEGRADED  # serial down
    assert capsys.readouterr().out == "primary\n"


def test_an_unknown_node_of_the_config_is_a_usage_error(
    socket_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(CONFIG.format(socket=socket_path))
    assert main(["status", "-c", str(config), "--node", "gamma"]) == 2
    err = capsys.readouterr().err
    assert "gamma" in err
    assert "Traceback" not in err


def _local_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def test_log_shows_iso_times_in_local_time_and_forced_transitions(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    controller.records = [
        {
            "time": "2024-05-01T10:00:01.250+00:00",
            "from": "wait",
            "to": "alone",
            "event": "prim",
            "reason": "operator forced",
            "forced": True,
        }
    ]
    assert main(["log", "--socket", socket_path]) == 0
    expected = (
        f"{_local_time(datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC).timestamp())}  "
        "wait -> alone  prim  operator forced  [forced by the operator]\n"
    )
    assert capsys.readouterr().out == expected


def test_log_with_no_transitions_says_so(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    controller.records = []
    assert main(["log", "--socket", socket_path]) == 0
    assert capsys.readouterr().out == "no transitions yet\n"


def test_a_tcp_control_from_the_config_uses_its_token_file(
    controller: FakeController, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    with serving_in_thread(controller, tcp=("127.0.0.1", 0), token=TOKEN) as ends:
        assert ends.tcp is not None
        tcp = f"{{tcp: {{address: 127.0.0.1, port: {ends.tcp[1]}, token_file: {token_file}}}}}"
        config = tmp_path / "cluster.yaml"
        text = CONFIG.format(socket="/unused").replace("\n      socket: /unused", f" {tcp}")
        config.write_text(text)
        assert main(["state", "-c", str(config), "--node", "alpha"]) == EXIT_DEGRADED  # serial down
    assert capsys.readouterr().out == "primary\n"


@pytest.mark.parametrize(("given", "rate"), [("0", 0), ("800k", 800_000), ("50M", 50_000_000)])
def test_bandwidth_sets_the_rate(
    socket_path: str,
    controller: FakeController,
    given: str,
    rate: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bandwidth", given, "--socket", socket_path]) == 0
    assert controller.bandwidths == [rate]
    assert capsys.readouterr().out == f"bandwidth accepted: bandwidth {rate}\n"


@pytest.mark.parametrize("given", ["-1", "fast", "1.5M", "10T", ""])
def test_a_bad_bandwidth_is_refused_before_asking(
    socket_path: str, controller: FakeController, given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bandwidth", given, "--socket", socket_path])
    assert exited.value.code == 2
    assert "is not a rate" in capsys.readouterr().err
    assert controller.bandwidths == []


def test_status_shows_replication_and_resync_progress(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    original = controller.status

    def replicating() -> dict[str, object]:
        status = original()
        status["replication"] = {
            "directories": {"db": "/srv/db"},
            "mode": "read-write",
            "replicating": True,
            "ack": "written",
            "sender": {"ops_sent": 12, "bytes_sent": 4096, "in_flight_bytes": 0,
                       "last_ack_latency": 0.0004},
            "resync": {"state": "running", "full": False, "items_done": 3, "items_total": 9,
                       "bytes_done": 250, "bytes_total": 1000, "rate": 2_000_000.0, "eta": 90.0,
                       "bandwidth_limit": 0, "error": None},
            "resync_wanted": False,
            "bandwidth": 0,
            "tracked": {"since": "3:alpha", "files": 2, "names": 1, "meta": 0},
        }  # fmt: skip
        return status

    controller.status = replicating  # type: ignore[method-assign]
    assert main(["status", "--socket", socket_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  directories db (/srv/db), read-write" in lines
    assert "  replicating (ack written)" in lines
    assert "  sent 12 entries, 4096 bytes; in flight 0 bytes; last ack 0.40 ms" in lines
    assert "  resync running: 25% (250 of 1000 bytes, 3 items), 2.0 MB/s, eta 1m30s" in lines
    assert "  tracked since 3:alpha: 2 files with changed zones, 1 names, 0 metadata" in lines
    assert not any("CHANNEL QUIET" in line for line in lines)


def with_replication(controller: FakeController, replication: dict[str, object]) -> None:
    """``controller``'s status from now on has this ``replication`` part."""
    original = controller.status

    def status() -> dict[str, object]:
        return {**original(), "replication": replication}

    controller.status = status  # type: ignore[method-assign]


def test_status_shows_a_quiet_replication_channel(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    problem = "no answer from beta for 0.4 s"
    with_replication(controller, {"replicating": True, "channel_problem": problem})
    controller.in_sync, controller.in_sync_reason = False, f"replication channel: {problem}"
    assert main(["status", "--socket", socket_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"  CHANNEL QUIET: {problem}" in lines
    assert f"  protection  DEGRADED: link serial down; replication channel: {problem}" in lines


def test_verify_exits_by_the_verdict(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--socket", socket_path]) == 2  # nothing replicated: usage error
    assert "no replicated directories" in capsys.readouterr().err
    controller.verify_report = {"at": 1.8e9, "in_sync": False, "directories": {}, "text": "db: b"}
    assert main(["verify", "--socket", socket_path]) == 1
    assert capsys.readouterr().out == "db: b\n"
    controller.verify_report = {"at": 1.8e9, "in_sync": True, "directories": {}, "text": "same"}
    assert main(["verify", "--json", "--socket", socket_path]) == 0
    assert json.loads(capsys.readouterr().out)["in_sync"] is True


def test_status_shows_a_held_full_resync(
    socket_path: str, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    # lab trial: the secondary's replicated disk full; its full resync was held
    # (what it would overwrite could not be quarantined) and stayed held after
    # the disk was mended: the text status said only "waiting for the peer to
    # resynchronise this node", the reason and the way out were in the log.
    # Since issue 10 the core retries it by itself and says why in its reason.
    controller.reason = (
        "could not set this node's data aside before a full resync (could not quarantine "
        "data before a full resync: [Errno 28] No space left on device): nothing copied "
        "over it; retrying in 5 s"
    )
    with_replication(controller, {"resync_wanted": True})
    assert main(["status", "--socket", socket_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"  reason      {controller.reason}" in lines
    assert "  waiting for the peer to resynchronise this node" in lines
