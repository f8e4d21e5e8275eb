"""``failover check-config``, driven through ``failover.cli.main``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from config_support import BASE, WriteConfig, replace_once

import failover.cli
from failover.cli import main
from failover.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def only_config_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # The other subcommand modules belong to other parts of the project and may
    # be mid-work; main() itself is what these tests exercise.
    monkeypatch.setattr(failover.cli, "COMMAND_MODULES", ("failover.cli.configcmd",))


def test_check_config_is_registered() -> None:
    assert "failover.cli.configcmd" in failover.cli.COMMAND_MODULES


def test_valid_file_prints_a_summary_and_exits_0(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    fingerprint = load_config(path).fingerprint()[:8]
    assert out == (
        f"{path}: ok (cluster dispatch, nodes alpha, beta, links lan, admin; "
        f"fingerprint {fingerprint})\n"
    )
    assert err == ""


def test_loopback_example_checks_ok(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "loopback.yaml"
    assert main(["check-config", str(path)]) == 0
    out, _ = capsys.readouterr()
    assert re.fullmatch(
        rf"{re.escape(str(path))}: ok \(cluster loopback-demo, nodes alpha, beta, "
        r"links lan, backup; fingerprint [0-9a-f]{8}\)\n",
        out,
    )


def test_node_option_names_this_node_and_its_peer(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    assert main(["check-config", str(path), "--node", "beta"]) == 0
    assert ", this node beta (peer alpha); fingerprint " in capsys.readouterr().out


def test_unknown_node_option_exits_1(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config()
    assert main(["check-config", str(path), "--node", "gamma"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"{path}: 'gamma' is not a node of cluster 'dispatch' (nodes: alpha, beta)\n")


def test_warnings_are_printed_but_exit_0(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(replace_once(BASE, "  key_file: cluster.key\n", "  insecure: true\n"))
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert ": ok (" in out
    assert err.startswith(f"warning: {path}:3: cluster.insecure: ")


def test_every_problem_is_printed_one_per_line_and_exit_1(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    text = replace_once(BASE, "dead_timeout: 2.0", "dead_timeout: 1.0")
    text = replace_once(text, "transport: tcp", "transport: carrier-pigeon")
    path = write_config(text)
    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:7: cluster.timing.dead_timeout: ")
    assert lines[1].startswith(f"{path}:13: links[1].transport: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text",
    ["", "- a list\n", "cluster: {name: x\n", "nodes:\n  a: 1\n  a: 2\n", "\t: tab\n"],
    ids=["empty", "list", "syntax", "duplicate", "tab"],
)
def test_broken_files_give_one_line_and_exit_1(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    path = write_config(text)
    assert main(["check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"{path}:")
    assert "Traceback" not in err


def test_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nowhere.yaml"
    assert main(["check-config", str(path)]) == 1
    assert capsys.readouterr().err == f"{path}: cannot read the file: No such file or directory\n"


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    # `failover check-config ... | head -0`: the pipe is closed before the output
    process = subprocess.Popen(
        [sys.executable, "-m", "failover", "check-config", str(EXAMPLES / "loopback.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
