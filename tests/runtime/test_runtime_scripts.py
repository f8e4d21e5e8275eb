"""Operator commands: time limits, process groups, output tails (checkers: tests/checkers)."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from failover.platform import priority, scripts
from failover.platform.scripts import ScriptLog, ScriptResult, read_tail, run_script

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


@pytest.mark.parametrize("piped", [False, True])
async def test_a_hung_script_and_its_children_are_killed_at_the_timeout(
    tmp_path: Path, piped: bool
) -> None:
    pidfile = tmp_path / "child.pid"
    command = script(tmp_path, "hang", f"sleep 60 &\necho $! > {pidfile}\necho started\nwait\n")
    started = anyio.current_time()
    result = await run_script(
        command, timeout=0.5, label="start script", output=tmp_path / "o.log", piped=piped
    )
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


@pytest.mark.parametrize("piped", [False, True])
async def test_the_output_file_and_the_tail_are_the_same_piped_or_not(
    tmp_path: Path, piped: bool
) -> None:
    # Piped, the daemon copies the output to the file: with room on the disk, the
    # file holds all of it and the tail is the file's, as when the command writes it.
    body = "seq 1 30000\necho to stderr >&2\nprintf 'no newline'\nexit 4\n"
    output = tmp_path / "out" / "o.log"
    result = await run_script(
        script(tmp_path, "many", body), timeout=10, label="c", output=output, piped=piped
    )
    assert result.returncode == 4
    numbers = "".join(f"{i}\n" for i in range(1, 30001))
    assert output.read_text() == numbers + "to stderr\nno newline"
    assert result.tail == ("29998", "29999", "30000", "to stderr", "no newline")


async def test_a_piped_command_that_leaves_a_process_holding_the_pipe_does_not_wait_for_it(
    tmp_path: Path,
) -> None:
    # The command starts a daemon that keeps the pipe open and exits: the run
    # ends DRAIN seconds later with the output read so far, not when the daemon
    # ends (an hour).
    pidfile = tmp_path / "daemon.pid"
    body = f"sleep 3600 &\necho $! > {pidfile}\necho started\n"
    try:
        with anyio.fail_after(scripts.DRAIN + 10):  # a bound on a hang, not the property
            result = await run_script(
                script(tmp_path, "d", body),
                timeout=30,
                label="c",
                output=tmp_path / "o",
                piped=True,
            )
        assert result.ok and result.tail == ("started",)
        assert (tmp_path / "o").read_text() == "started\n"
    finally:
        os.kill(int(pidfile.read_text()), 9)


async def test_a_piped_run_leaves_no_descriptor_open(tmp_path: Path) -> None:
    # Ended, timed out, left a holder of the pipe, could not start: the daemon
    # holds no pipe or output file afterwards.
    def descriptors() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    pidfile = tmp_path / "daemon.pid"
    bodies = ["echo ok\n", "sleep 60\n", f"sleep 3600 &\necho $! > {pidfile}\n"]
    await run_script(
        script(tmp_path, "warm", "true\n"), timeout=5, label="c", output=tmp_path / "o", piped=True
    )
    before = descriptors()
    try:
        for index, body in enumerate(bodies):
            command = script(tmp_path, f"s{index}", body)
            await run_script(command, timeout=0.5, label="c", output=tmp_path / "o", piped=True)
        await run_script(
            str(tmp_path / "nope"), timeout=1, label="c", output=tmp_path / "o", piped=True
        )
    finally:
        os.kill(int(pidfile.read_text()), 9)
    assert descriptors() == before


def test_read_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "none") == ()


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
    monkeypatch.setitem(priority._inherited, "raised", before)
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


@pytest.mark.skipif(os.geteuid() != 0, reason="raising the niceness back needs CAP_SYS_NICE")
async def test_overlapping_spawns_leave_the_daemon_favoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A checker's command and a script spawn at the same time (two tasks on
    # the event loop's thread): the second one in sees the niceness the first
    # lowered; the daemon's thread must still be favoured once both are done.
    before = os.getpriority(os.PRIO_PROCESS, 0)
    monkeypatch.setitem(priority._inherited, "nice", min(before + 5, 19))
    monkeypatch.setitem(priority._inherited, "raised", before)
    second_in, first_out = anyio.Event(), anyio.Event()

    async def first() -> None:
        with priority.spawning_as_inherited():
            await second_in.wait()
        first_out.set()

    async def second() -> None:
        with priority.spawning_as_inherited():
            second_in.set()
            await first_out.wait()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
        assert os.getpriority(os.PRIO_PROCESS, 0) == before
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


# --- escalation at the timeout: SIGTERM to the group, then SIGKILL (issue 9) -------------


async def wait_dead(pids: list[int]) -> None:
    """Bounded poll: the processes ``pids`` are gone (or zombies awaiting init)."""
    with anyio.fail_after(10):
        while any(alive(pid) for pid in pids):
            await anyio.sleep(0.01)


async def overrun(tmp_path: Path, name: str, body: str, grace: float) -> ScriptResult:
    """Run script ``body`` with a timeout of 0.5 s (it overruns it)."""
    with anyio.fail_after(30):  # a bound on a hang (a group never killed), not the property
        return await run_script(
            script(tmp_path, name, body),
            timeout=0.5,
            grace=grace,
            label="stop script",
            output=tmp_path / "o.log",
        )


async def test_an_overrunning_script_gets_sigterm_then_its_stubborn_group_sigkill(
    tmp_path: Path,
) -> None:
    # The script and its child both trap TERM (they note it and go on): the
    # group must first be asked (SIGTERM, seen by both), then killed.
    pids, seen = tmp_path / "pids", tmp_path / "seen"
    body = (
        f"trap 'echo script-term >> {seen}' TERM\n"
        f'sh -c \'trap "echo child-term >> {seen}" TERM; echo $$ >> {pids}; '
        "while :; do sleep 0.05; done' &\n"
        f"echo $$ >> {pids}\n"
        "while :; do sleep 0.05; done\n"
    )
    result = await overrun(tmp_path, "stubborn", body, grace=0.5)
    assert result.timed_out and not result.ok
    assert sorted(seen.read_text().split()) == ["child-term", "script-term"]
    members = [int(pid) for pid in pids.read_text().split()]
    assert len(members) == 2
    await wait_dead(members)


async def test_a_child_that_outlives_its_terminated_script_is_killed(tmp_path: Path) -> None:
    # The script obeys SIGTERM at once; its child ignores it: nothing of the group may stay.
    pids = tmp_path / "pids"
    body = (
        f"sh -c 'trap \"\" TERM; echo $$ >> {pids}; while :; do sleep 0.05; done' &\n"
        f"while ! test -s {pids}; do sleep 0.01; done\n"
        "exec sleep 60\n"
    )
    result = await overrun(tmp_path, "leaves", body, grace=0.3)
    assert result.timed_out
    await wait_dead([int(pids.read_text())])


async def test_a_script_in_time_keeps_its_background_children(tmp_path: Path) -> None:
    # A start script that launches the application in the background ends in
    # time: its group is left alone (the application is its remaining member).
    pidfile = tmp_path / "app.pid"
    body = f"sleep 60 &\necho $! > {pidfile}\n"
    result = await run_script(
        script(tmp_path, "start", body), timeout=5, label="start script", output=tmp_path / "o"
    )
    child = int(pidfile.read_text())
    try:
        assert result.ok and alive(child)
    finally:
        os.kill(child, 9)


# --- the last runs of each script ---------------------------------------------------------


async def test_the_script_log_keeps_the_last_runs_of_each_script(tmp_path: Path) -> None:
    history = ScriptLog(keep=2)
    for status in (0, 1, 2):
        command = script(tmp_path, f"s{status}", f"echo run {status}\nexit {status}\n")
        history.record(
            "stop", await run_script(command, timeout=5, label="stop", output=tmp_path / "o")
        )
    history.record("start", ScriptResult("start script", None, False, (), "no such file"))
    view = history.view()
    assert list(view) == ["start", "stop"]
    assert [(run["returncode"], run["tail"]) for run in view["stop"]] == [
        (1, ["run 1"]),
        (2, ["run 2"]),
    ]
    assert all(run["duration"] >= 0 and run["ended_ago"] >= 0 for run in view["stop"])
    assert view["start"] == [
        {
            "ok": False,
            "returncode": None,
            "timed_out": False,
            "error": "no such file",
            "duration": 0.0,
            "ended_ago": view["start"][0]["ended_ago"],
            "tail": [],
        }
    ]


# --- a killed process the kernel does not let go -------------------------------------------


class _Unreaped:
    """A SIGKILLed leader stuck in the kernel (uninterruptible I/O on a hung mount,
    a FUSE flush nobody answers): it is reaped only when ``let_go`` is set."""

    pid = 2**22 + 1  # above any pid_max: no such process group

    def __init__(self) -> None:
        self.let_go = anyio.Event()

    async def wait(self) -> int:
        await self.let_go.wait()
        return -9

    async def aclose(self) -> None:
        await self.wait()


async def test_ending_a_group_never_waits_for_ever_for_its_leader_to_be_reaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The wait for the killed leader is shielded (a stop must not leave it
    # unreaped when cancelled) but bounded: a stop or the daemon's exit must
    # not outlast every deadline. The stuck process is let go only by a
    # watchdog well after the bound.
    monkeypatch.setattr(scripts, "REAP_LIMIT", 0.1)
    leader = _Unreaped()
    watchdog_fired = False

    async def watchdog() -> None:
        nonlocal watchdog_fired
        await anyio.sleep(10)
        watchdog_fired = True
        leader.let_go.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog)
        with anyio.CancelScope() as outer:
            outer.cancel()  # cancelled from outside, as at a deadline
            await scripts.end_group(leader.pid, 0.1, leader)  # type: ignore[arg-type]
        assert not watchdog_fired, "end_group waited for the stuck leader"
        tg.cancel_scope.cancel()
