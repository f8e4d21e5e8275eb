"""What check-config must catch before the daemon trips on it.

Rules on the file alone (every node): a virtual IP that is a node's own
address, a control socket path too long for sun_path, a script command line
that does not split. Rules on this machine, for the node named with --node
only: the state directory, the replicated directories, the control token file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from config_support import BASE, REPLICATED, WriteConfig, line_of, replace_once

import failover.cli
from failover.api.schema import MIN_TOKEN_CHARS
from failover.cli import main
from failover.config import load_config
from failover.config.checks import APPLICATION_SCRIPTS
from failover.errors import ConfigError

GOOD_TOKEN = "t" * MIN_TOKEN_CHARS


def problems(path: Path, node: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, local_node=node)
    assert all("\n" not in p and "Traceback" not in p for p in caught.value.problems)
    return caught.value.problems


def at(path: Path, text: str, marker: str, key: str, occurrence: int = 1) -> str:
    """The start of a problem reported at ``key``, on the line holding ``marker``."""
    return f"{path}:{line_of(text, marker, occurrence)}: {key}: "


def only_at(found: list[str], start: str, gist: str) -> None:
    assert [p for p in found if p.startswith(start)], f"nothing at {start!r} in {found}"
    assert any(gist in p for p in found if p.startswith(start)), (gist, found)


# --- the file alone ---------------------------------------------------------------------


def test_a_virtual_ip_that_is_a_nodes_own_address_is_refused(write_config: WriteConfig) -> None:
    text = replace_once(
        BASE, "lan: {address: 127.0.0.1, port: 7401}", "lan: {address: 10.0.0.100, port: 7401}"
    )
    path = write_config(text)
    found = problems(path)
    only_at(
        found,
        at(path, text, "address: 10.0.0.100/24", "virtual_ip.address"),
        "nodes.alpha.links.lan",
    )
    assert len(found) == 1


def test_a_control_socket_path_longer_than_sun_path_is_refused(write_config: WriteConfig) -> None:
    long_path = "/run/" + "s" * 103  # 108 bytes: no room for the NUL
    text = replace_once(BASE, "  beta:\n", f"    control: {{socket: {long_path}}}\n  beta:\n")
    path = write_config(text)
    found = problems(path)
    only_at(found, at(path, text, "socket:", "nodes.alpha.control.socket"), "109 bytes")
    ok = replace_once(BASE, "  beta:\n", f"    control: {{socket: {long_path[:-1]}}}\n  beta:\n")
    assert load_config(write_config(ok)).control_of("alpha").socket == Path(long_path[:-1])


def test_a_default_control_socket_too_long_blames_the_state_dir(write_config: WriteConfig) -> None:
    text = replace_once(BASE, "  failback: none\n", f"  failback: none\n  state_dir: /{'d' * 90}\n")
    path = write_config(text)
    found = problems(path)
    start = at(path, text, "state_dir:", "cluster.state_dir")
    only_at(found, start, "node alpha's default control socket")
    only_at(found, start, "node beta's default control socket")


@pytest.mark.parametrize(
    ("old", "new", "key", "gist"),
    [
        (
            "  start: /bin/true\n",
            "  start: /bin/echo 'unterminated\n",
            "application.start",
            "No closing quotation",
        ),
        (
            "  stop: /bin/true\n",
            "  stop: /bin/echo \\\n",
            "application.stop",
            "No escaped character",
        ),
        (
            "    command: /bin/true\n",
            "    command: \"''\"\n",
            "checkers[0].command",
            "names no program",
        ),
        (
            "    command: /bin/true\n",
            "    command: '  '\n",
            "checkers[0].command",
            "names no program",
        ),
    ],
)
def test_a_command_line_that_does_not_split_is_refused(
    write_config: WriteConfig, old: str, new: str, key: str, gist: str
) -> None:
    text = replace_once(BASE, old, new)
    path = write_config(text)
    marker = new.strip().split(":")[0] + ":"
    only_at(problems(path), at(path, text, marker, key), gist)


# --- this machine, for the node being checked --------------------------------------------


def test_a_state_dir_that_is_a_file_is_refused_for_the_checked_node(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "statefile").write_text("not a directory\n")
    text = replace_once(BASE, "  failback: none\n", "  failback: none\n  state_dir: statefile\n")
    path = write_config(text)
    load_config(path)  # without a node: nothing local is checked
    only_at(
        problems(path, "alpha"),
        at(path, text, "state_dir:", "cluster.state_dir"),
        "is not a directory",
    )


def test_a_node_state_dir_that_is_a_file_is_blamed_on_the_nodes_key(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "beta-state").mkdir()
    (tmp_path / "beta-state" / "beta").write_text("a file where the node's directory goes\n")
    text = replace_once(BASE, "  beta:\n", "  beta:\n    state_dir: beta-state\n")
    path = write_config(text)
    load_config(path, local_node="alpha")  # alpha's state directory is fine
    start = at(path, text, "state_dir: beta-state", "nodes.beta.state_dir")
    only_at(problems(path, "beta"), start, "beta-state/beta is not a directory")


def _replicated(write_config: WriteConfig, tmp_path: Path) -> tuple[Path, str]:
    text = REPLICATED.replace("/srv/spool", f"{tmp_path}/spool").replace(
        "/srv/db", f"{tmp_path}/db"
    )
    text = text.replace("/srv/quarantine", f"{tmp_path}/quarantine")
    return write_config(text), text


def test_replicated_directories_missing_or_files_are_refused(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path, text = _replicated(write_config, tmp_path)
    (tmp_path / "db").write_text("a file\n")
    load_config(path)  # without a node: nothing local is checked
    found = problems(path, "beta")
    only_at(found, at(path, text, "/spool", "replication.directories[0].path"), "does not exist")
    only_at(found, at(path, text, "/db", "replication.directories[1].path"), "is not a directory")
    (tmp_path / "spool").mkdir()
    (tmp_path / "db").unlink()
    (tmp_path / "db").mkdir()
    assert load_config(path, local_node="beta").replication is not None


def _with_token(write_config: WriteConfig) -> tuple[Path, str]:
    text = replace_once(
        BASE,
        "  beta:\n",
        "    control:\n      tcp: {address: 127.0.0.1, port: 7480, token_file: token}\n  beta:\n",
    )
    return write_config(text), text


@pytest.mark.parametrize(
    ("content", "mode", "gist"),
    [
        (None, 0o600, "No such file or directory"),
        ("x\n", 0o600, "has 1 characters, at least 16"),
        ("x\n", 0o644, "open to every user (mode 644)"),
        (GOOD_TOKEN, 0o604, "open to every user"),
        (GOOD_TOKEN, 0o602, "open to every user"),
        ("", 0o600, "is empty"),
        ("two words", 0o600, "one word"),
    ],
)
def test_a_missing_or_weak_token_file_is_refused(
    write_config: WriteConfig, tmp_path: Path, content: str | None, mode: int, gist: str
) -> None:
    path, text = _with_token(write_config)
    if content is not None:
        (tmp_path / "token").write_text(content)
        (tmp_path / "token").chmod(mode)
    load_config(path, local_node="beta")  # beta has no TCP control: nothing to check
    start = at(path, text, "token_file", "nodes.alpha.control.tcp.token_file")
    only_at(problems(path, "alpha"), start, gist)


def test_a_token_file_that_is_not_a_regular_file_is_refused_without_blocking(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    path, text = _with_token(write_config)
    start = at(path, text, "token_file", "nodes.alpha.control.tcp.token_file")
    (tmp_path / "token").mkdir()
    only_at(problems(path, "alpha"), start, "is not a regular file")
    (tmp_path / "token").rmdir()
    os.mkfifo(tmp_path / "token", 0o600)  # opening it for reading waits for a writer
    done = subprocess.run(
        [sys.executable, "-m", "failover", "check-config", str(path), "--node", "alpha"],
        capture_output=True,
        text=True,
        timeout=60,  # a bound on the subprocess, not the property
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(start) and "is not a regular file" in done.stderr


def test_a_group_readable_token_is_a_warning(write_config: WriteConfig, tmp_path: Path) -> None:
    path, text = _with_token(write_config)
    (tmp_path / "token").write_text(GOOD_TOKEN)
    (tmp_path / "token").chmod(0o640)
    config = load_config(path, local_node="alpha")
    (warning,) = config.warnings
    assert warning.startswith(at(path, text, "token_file", "nodes.alpha.control.tcp.token_file"))
    assert "readable by its group" in warning


# --- through the commands ------------------------------------------------------------------


def test_check_config_with_node_reports_local_problems_and_exits_1(
    write_config: WriteConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(failover.cli, "COMMAND_MODULES", ("failover.cli.configcmd",))
    path, text = _with_token(write_config)
    (tmp_path / "token").write_text("x")
    (tmp_path / "token").chmod(0o644)
    assert main(["check-config", str(path)]) == 0
    capsys.readouterr()
    assert main(["check-config", str(path), "--node", "alpha"]) == 1
    _, err = capsys.readouterr()
    assert err.startswith(at(path, text, "token_file", "nodes.alpha.control.tcp.token_file"))
    assert "Traceback" not in err


def test_run_with_a_state_dir_that_is_a_file_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "cluster.key").write_bytes(b"k" * 40)
    (tmp_path / "cluster.key").chmod(0o600)
    (tmp_path / "statefile").write_text("x\n")
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "cluster: {name: dispatch, key_file: cluster.key, state_dir: statefile}\n"
        "links: [{name: lan, transport: udp}]\n"
        "nodes:\n"
        "  alpha: {links: {lan: {address: 127.0.0.1, port: 17401}}}\n"
        "  beta: {links: {lan: {address: 127.0.0.1, port: 17402}}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "failover", "run", "-c", str(config), "--node", "alpha"],
        capture_output=True,
        text=True,
        timeout=120,  # a bound on the subprocess, not the property
        check=False,
    )
    assert done.returncode != 0
    where = tmp_path / "statefile" / "alpha"
    assert done.stderr == (
        f"failover run: cannot write the state directory {where}: Not a directory (ENOTDIR)\n"
    )


# --- the application's scripts on this machine (issue 9) ---------------------------------


def _application(tmp_path: Path, **scripts: str) -> str:
    """BASE with an ``application`` section holding ``scripts`` (key: command line)."""
    lines = "".join(f"  {key}: {command}\n" for key, command in scripts.items())
    return replace_once(
        BASE, "application:\n  start: /bin/true\n  stop: /bin/true\n", "application:\n" + lines
    )


def test_a_missing_start_script_is_an_error_for_the_checked_node(
    write_config: WriteConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Regression (issue 9): check-config accepted it, and the node looped on its start.
    missing = tmp_path / "start-suite"
    text = _application(tmp_path, start=f"{missing} --fast", stop="/bin/true")
    path = write_config(text)
    start = at(path, text, "start:", "application.start")
    only_at(problems(path, "alpha"), start, f"{missing} does not exist on this machine")
    # without --node it is said, as a warning (this machine may not be a node)
    assert [w for w in load_config(path).warnings if w.startswith(start)]
    monkeypatch.setattr(failover.cli, "COMMAND_MODULES", ("failover.cli.configcmd",))
    assert main(["check-config", str(path), "--node", "alpha"]) == 1
    _, err = capsys.readouterr()
    assert err.startswith(start) and "Traceback" not in err


def test_every_application_script_is_checked_by_its_key(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    not_executable = tmp_path / "plain"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    directory = tmp_path / "adir"
    directory.mkdir()
    bad = {
        "prestart": (f"{tmp_path}/gone", "does not exist on this machine"),
        "start": (str(not_executable), "is not executable"),
        "stop": (str(directory), "is not a regular file"),
        "prestop": ("no-such-program-i9 arg", "is not found in PATH"),
        "poststop": (f"{tmp_path}/gone2", "does not exist"),
        "start_both": (f"{tmp_path}/gone3", "does not exist"),
        "stop_both": (f"{tmp_path}/gone4", "does not exist"),
        "transition": ('"/bin/echo \'x"', "cannot split this command line"),
        "command": ("'\"\"'", "names no program"),  # YAML '""': the value ""
    }
    assert set(bad) == set(APPLICATION_SCRIPTS)
    text = _application(tmp_path, **{key: command for key, (command, _) in bad.items()})
    path = write_config(text)
    found = problems(path, "alpha")
    for key, (_, gist) in bad.items():
        only_at(found, at(path, text, f"  {key}:", f"application.{key}"), gist)


def test_scripts_that_exist_and_run_pass_for_the_checked_node(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    scripts = {key: f"{script} {key}" for key in APPLICATION_SCRIPTS}
    scripts["command"] = "sleep 3600"  # found in PATH
    path = write_config(_application(tmp_path, **scripts))
    config = load_config(path, local_node="alpha")
    assert config.warnings == ()
    assert config.application is not None
    assert config.application.command == "sleep 3600"


def test_an_application_section_may_hold_any_subset_of_the_scripts(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    only_command = load_config(write_config(_application(tmp_path, command="/bin/true")))
    assert only_command.application is not None
    assert only_command.application.start is None and only_command.application.stop is None
    text = replace_once(BASE, "application:\n", "application:\n  timeout: 10\n")  # start+stop
    old = load_config(write_config(text)).application
    assert old is not None and (old.start, old.stop, old.timeout) == ("/bin/true", "/bin/true", 10)
    assert old.stop_timeout is None
