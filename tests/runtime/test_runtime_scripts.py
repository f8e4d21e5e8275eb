"""Operator commands: time limits, process groups, output tails (checkers: tests/checkers)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from failover.platform import priority
from failover.platform.scripts import read_tail, run_script

pytestmark = pytest.mark.anyio


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(")")[-1].split()[0] != "Z"


async def test_a_successful_script_reports_ok_with_its_output(tmp_path: Path) -> None:
    command = script(tmp_path, "ok", 'echo "node is $FAILOVER_NODE"\n')
    result = await run_script(
        command,
        timeout=5,
        label="start script",
        output=tmp_path / "o.log",
        env={"FAILOVER_NODE": "alpha"},
    )
    assert result.ok and not result.timed_out
    assert result.tail == ("node is alpha",)


async def test_a_failing_script_gives_its_status_and_last_lines(tmp_path: Path) -> None:
    lines = "".join(f"echo line{i}\n" for i in range(10))
    command = script(tmp_path, "bad", lines + "echo oops >&2\nexit 3\n")
    result = await run_script(command, timeout=5, label="start script", output=tmp_path / "o.log")
    assert not result.ok and result.returncode == 3
    assert result.tail == ("line6", "line7", "line8", "line9", "oops")
    assert result.reason.startswith("start script exited with status 3: line6")


async def test_a_hung_script_and_its_children_are_killed_at_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    command = script(tmp_path, "hang", f"sleep 60 &\necho $! > {pidfile}\necho started\nwait\n")
    started = anyio.current_time()
    result = await run_script(command, timeout=0.5, label="start script", output=tmp_path / "o.log")
    assert anyio.current_time() - started < 5  # generous bound: killed, not waited for
    assert result.timed_out and not result.ok
    assert "timed out" in result.reason and "started" in result.reason
    child = int(pidfile.read_text())
    with anyio.fail_after(5):
        while alive(child):
            await anyio.sleep(0.01)


async def test_a_missing_command_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    result = await run_script(
        str(tmp_path / "nope"), timeout=1, label="start script", output=tmp_path / "o.log"
    )
    assert not result.ok and "could not run" in result.reason


async def test_a_command_with_arguments_is_split_like_a_shell(tmp_path: Path) -> None:
    command = script(tmp_path, "args", 'echo "$1|$2"\n')
    result = await run_script(
        f"{command} one 'two words'", timeout=5, label="s", output=tmp_path / "o.log"
    )
    assert result.tail == ("one|two words",)


def test_read_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "none") == ()


def group_of(leader: int) -> list[int]:
    """The processes of the process group ``leader`` leads."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(fields[2]) == leader:
                members.append(int(entry.name))
    return members


@pytest.mark.skipif(os.geteuid() != 0, reason="raising the niceness back needs CAP_SYS_NICE")
async def test_a_script_runs_at_the_daemons_inherited_niceness_from_its_first_instruction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon runs favoured (raise_priority); a start script that launches its
    # application in the background at once must not leave the application
    # favoured, even for a moment: the script and its child read their own
    # niceness as their first instruction. (Here "favoured" is the current
    # niceness, the inherited one 5 higher.)
    before = os.getpriority(os.PRIO_PROCESS, 0)
    inherited = min(before + 5, 19)
    monkeypatch.setitem(priority._inherited, "nice", inherited)
    seen = tmp_path / "seen"
    body = (
        f"(cut -d' ' -f19 /proc/self/stat >> {seen}) &\n"
        f"cut -d' ' -f19 /proc/self/stat >> {seen}\n"
        "wait\n"
    )
    result = await run_script(
        script(tmp_path, "start", body), timeout=10, label="start", output=tmp_path / "out"
    )
    assert result.ok, result
    assert sorted(int(n) for n in seen.read_text().split()) == [inherited, inherited]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before, "the daemon's thread is raised again"
