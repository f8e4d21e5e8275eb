"""SafeKit's script set in the executor (issue 9): order of the scripts in a start,
a stop and a restart, start_both/stop_both, the transition hook, the foreground
command and its supervision, the marker that outlives a killed daemon."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from runtime_support import MemoryNetwork, wait_until, write_cluster
from structlog.testing import capture_logs
from test_runtime_executor import _JournalingData, make_script
from test_runtime_scripts import alive

from failover.config import load_config
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import State
from failover.platform.application import Application, Scripts, _start_time
from failover.runtime.daemon import Daemon
from failover.runtime.executor import HOOK_BACKLOG, ActionExecutor

pytestmark = pytest.mark.anyio

SCRIPT_NAMES = ("prestart", "start", "stop", "prestop", "poststop", "start_both", "stop_both")


class JournalingVip:
    """A virtual IP that only writes what happens to it in the journal (duck-typed)."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self.address = "10.0.0.100/24"

    async def acquire(self, repeat_in: object = None) -> None:
        with open(self.journal, "a") as handle:
            handle.write("vip-up\n")

    async def release(self) -> None:
        with open(self.journal, "a") as handle:
            handle.write("vip-down\n")


def journaled_app(
    tmp_path: Path,
    *,
    vip: bool = True,
    command: str | None = None,
    bodies: dict[str, str] | None = None,
    **limits: Any,
) -> tuple[Application, Path]:
    """An application whose every script appends its name (and args) to a journal."""
    journal = tmp_path / "journal"
    scripts = {
        name: make_script(
            tmp_path,
            name,
            (bodies or {}).get(name, "") + f'echo {name} "$@" >> {journal}\n',
        )
        for name in SCRIPT_NAMES
    }
    hook = make_script(
        tmp_path,
        "hook",
        f'echo "hook $1>$2 ($3) $FAILOVER_OLD_STATE>$FAILOVER_NEW_STATE" >> {tmp_path}/hooks\n',
    )
    app = Application(
        Scripts(**scripts, transition=hook, command=command, **limits),
        JournalingVip(journal) if vip else None,  # type: ignore[arg-type]
        output_dir=tmp_path / "out",
        env={"FAILOVER_NODE": "alpha"},
        marker=tmp_path / "state" / "application.started",
    )
    return app, journal


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Harness:
    """An executor running in a task group; reported events land in ``events``."""

    def __init__(self, executor: ActionExecutor) -> None:
        self.executor = executor
        self.events: list[ev.Event] = []
        self._arrived = anyio.Event()

        async def report(event: ev.Event) -> None:
            self.events.append(event)
            self._arrived.set()
            self._arrived = anyio.Event()

        executor.report = report

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        with anyio.fail_after(20):
            while not predicate():
                await anyio.sleep(0.01)  # a bounded poll of external processes
        assert predicate(), what

    async def idle(self) -> None:
        await self.until(lambda: self.executor.idle, "the executor drained its queue")


@contextlib.asynccontextmanager
async def running(app: Application, **kwargs: Any) -> AsyncIterator[Harness]:
    """An executor for ``app`` running until the block ends."""
    async with anyio.create_task_group() as tg:
        executor = ActionExecutor(app, lambda event: anyio.sleep(0), **kwargs)
        tg.start_soon(executor.run)
        yield Harness(executor)
        tg.cancel_scope.cancel()


def record(source: str, target: str, reason: str = "why") -> fx.TransitionRecord:
    return fx.TransitionRecord(
        node="alpha",
        source=source,
        event="e",
        target=target,
        substatus="ready",
        effects=(),
        reason=reason,
        generation="1",
    )


class _Serving(_JournalingData):
    async def serve(self) -> None:
        self.journal.append("read-write")


# --- order --------------------------------------------------------------------------------


async def test_start_stop_and_restart_run_the_scripts_in_safekits_order(tmp_path: Path) -> None:
    app, journal = journaled_app(tmp_path)
    data_journal: list[str] = []
    async with running(app, data=_Serving(data_journal)) as h:
        h.executor.submit(fx.StartApp())
        await h.idle()
        assert lines(journal) == ["prestart", "vip-up", "start"]
        assert data_journal == ["read-write"]
        data_journal.clear()
        assert h.events == [ev.AppStarted()] and app.running
        journal.unlink()
        h.executor.submit(fx.RestartApp())
        await h.idle()
        # the VIP stays where it is, and so do the mirrors: the data plane is only
        # asked to serve again (nothing on live mirrors; mirrors the watchdog's
        # fence aborted are mounted again: tests/runtime/test_dataplane.py)
        assert lines(journal) == ["prestop", "stop", "poststop", "prestart", "start"]
        assert h.events[1:] == [ev.AppStarted()] and app.running
        assert data_journal == ["read-write"]
        data_journal.clear()
        journal.unlink()
        h.executor.submit(fx.StopApp())
        await h.idle()
        assert lines(journal) == ["prestop", "stop", "vip-down", "poststop"]
        assert data_journal == ["flush", "read-only"]
        assert h.events[2:] == [ev.AppStopped()] and not app.running


async def test_the_stop_hands_over_in_order_with_the_data_between_the_scripts(
    tmp_path: Path,
) -> None:
    # One journal for scripts and data plane: the flush comes after the stop
    # script and before the VIP release, poststop after it.
    app, journal = journaled_app(tmp_path)
    order: list[str] = []

    class Both(_Serving):
        async def flush_replication(self) -> str | None:
            order.extend(lines(journal))
            journal.unlink()
            order.append("flush")
            return None

    async with running(app, data=Both([])) as h:
        h.executor.submit(fx.StopApp())
        await h.idle()
        assert [*order, *lines(journal)] == ["prestop", "stop", "flush", "vip-down", "poststop"]


async def test_a_failing_prestart_starts_nothing(tmp_path: Path) -> None:
    app, journal = journaled_app(tmp_path, bodies={"prestart": "echo 'no licence'\nexit 2\n"})
    async with running(app) as h:
        h.executor.submit(fx.StartApp())
        await h.idle()
        assert h.events == [ev.AppFailed(reason="prestart script exited with status 2: no licence")]
        assert lines(journal) == [] and not app.running


async def test_a_failing_restart_reports_app_failed_and_keeps_the_vip(tmp_path: Path) -> None:
    app, journal = journaled_app(tmp_path)
    async with running(app) as h:
        h.executor.submit(fx.StartApp())
        await h.idle()
        journal.unlink()
        app.scripts = Scripts(
            **{**app.scripts.__dict__, "start": make_script(tmp_path, "bad", "exit 7\n")}  # type: ignore[union-attr]
        )
        h.executor.submit(fx.RestartApp())
        await h.idle()
        assert h.events[1:] == [ev.AppFailed(reason="start script exited with status 7")]
        assert lines(journal) == ["prestop", "stop", "poststop", "prestart"]
        assert app.running, "the VIP is still held: only a stop gives it back"


async def test_a_restart_after_a_failed_start_takes_the_vip_again(tmp_path: Path) -> None:
    # lab trial: a start that failed once gave the VIP back; the core's local
    # restart then started the application without it (primary, ready, and
    # every client refused) until a stop
    app, journal = journaled_app(tmp_path, bodies={"start": f"[ -e {tmp_path}/ok ] || exit 1\n"})
    async with running(app) as h:
        h.executor.submit(fx.StartApp())
        await h.idle()
        assert h.events == [ev.AppFailed(reason="start script exited with status 1")]
        assert lines(journal) == ["prestart", "vip-up", "vip-down"] and not app.running
        journal.unlink()
        (tmp_path / "ok").touch()
        h.executor.submit(fx.RestartApp())
        await h.idle()
        assert h.events[1:] == [ev.AppStarted()]
        assert lines(journal) == ["prestop", "stop", "poststop", "prestart", "vip-up", "start"]
        assert app.running
        journal.unlink()
        h.executor.submit(fx.StopApp())
        await h.idle()
        assert "vip-down" in lines(journal) and not app.running


# --- start_both, stop_both, the hook ---------------------------------------------------------


async def test_both_scripts_frame_the_module_and_the_hook_sees_every_state_change(
    tmp_path: Path,
) -> None:
    app, journal = journaled_app(tmp_path, vip=False)
    async with running(app) as h:
        # prim from stop: leaves stop and starts the application in one step
        h.executor.submit_step([fx.StartApp(), record("stop", "alone", "forced (prim)")])
        await h.idle()
        # a quiet step (no state change): no hook, no script
        h.executor.submit_step([record("alone", "alone", "application started")])
        h.executor.submit_step([fx.StopApp(), record("alone", "stop", "stopped by the operator")])
        await h.idle()
        assert lines(journal) == [
            *("start_both", "prestart", "start"),
            *("prestop", "stop", "poststop", "stop_both"),
        ]
        await h.until(lambda: len(lines(tmp_path / "hooks")) == 2, "both hooks ran")
        assert lines(tmp_path / "hooks") == [
            "hook stop>alone (forced (prim)) stop>alone",
            "hook alone>stop (stopped by the operator) alone>stop",
        ]
        assert not app.both_running
        assert [run["ok"] for run in app.history.view()["transition"]] == [True, True]


async def test_a_hanging_hook_never_holds_up_an_action(tmp_path: Path) -> None:
    app, _ = journaled_app(tmp_path, vip=False)
    release = tmp_path / "release"
    hook = make_script(tmp_path, "slow-hook", f"while ! test -e {release}; do sleep 0.02; done\n")
    app.scripts = Scripts(**{**app.scripts.__dict__, "transition": hook})  # type: ignore[union-attr]
    async with running(app) as h:
        h.executor.submit_step([record("stop", "wait")])
        h.executor.submit_step([fx.StartApp(), record("wait", "alone")])
        await h.until(lambda: h.events == [ev.AppStarted()], "started while the hook runs")
        assert "transition" not in app.history.view(), "the first hook still runs"
        release.touch()
        await h.until(lambda: len(app.history.view().get("transition", [])) == 2, "hooks done")


async def test_hook_runs_past_the_backlog_are_dropped_with_a_warning(tmp_path: Path) -> None:
    app, _ = journaled_app(tmp_path, vip=False)
    release, running_hook = tmp_path / "release", tmp_path / "running"
    hook = make_script(
        tmp_path,
        "slow-hook",
        f"touch {running_hook}\nwhile ! test -e {release}; do sleep 0.02; done\n"
        f"echo ran >> {tmp_path}/ran\n",
    )
    app.scripts = Scripts(**{**app.scripts.__dict__, "transition": hook})  # type: ignore[union-attr]
    async with running(app) as h:
        h.executor.submit_step([record("stop", "wait")])
        await h.until(running_hook.exists, "the first hook runs (and hangs)")
        with capture_logs() as logs:
            for _ in range(HOOK_BACKLOG + 1):
                h.executor.submit_step([record("wait", "alone")])
        dropped = [e for e in logs if e["event"].startswith("transition hook not run")]
        assert len(dropped) == 1, "one run past the backlog is dropped, and said"
        release.touch()
        await h.until(
            lambda: len(lines(tmp_path / "ran")) == 1 + HOOK_BACKLOG, "the others all ran"
        )


# --- the foreground command -----------------------------------------------------------------


async def test_the_death_of_the_foreground_command_is_reported_with_its_status(
    tmp_path: Path,
) -> None:
    command = make_script(tmp_path, "app", f"echo $$ > {tmp_path}/pid\nexec sleep 60\n")
    app, _ = journaled_app(tmp_path, vip=False, command=command)
    async with running(app) as h:
        h.executor.submit(fx.StartApp())
        await h.idle()
        assert h.events == [ev.AppStarted()]
        pid = app.main_pid
        assert pid is not None
        marker = json.loads((tmp_path / "state" / "application.started").read_text())
        assert marker["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        await h.until(lambda: len(h.events) == 2, "the death reported")
        assert h.events[1] == ev.AppFailed(reason="application command killed by signal 9")
        assert app.main_pid is None


async def test_a_command_that_dies_while_its_start_is_reported_is_not_forgotten(
    tmp_path: Path,
) -> None:
    # The daemon's report waits while the core is busy (its event stream is
    # bounded): a command that dies meanwhile, right after its start, must
    # still be reported once AppStarted is, or the node serves a dead
    # application ("a dead application is not noticed").
    command = make_script(tmp_path, "app", "echo 'no config'\nexit 3\n")
    app, _ = journaled_app(tmp_path, vip=False, command=command)
    async with running(app) as h:
        events: list[ev.Event] = []

        async def busy_core(event: ev.Event) -> None:
            main = app.main
            if isinstance(event, ev.AppStarted) and main is not None:
                await h.until(lambda: main.returncode is not None, "the command exited")
            events.append(event)

        h.executor.report = busy_core
        h.executor.submit(fx.StartApp())
        await h.until(lambda: len(events) == 2, "the death reported after the start")
        assert events == [
            ev.AppStarted(),
            ev.AppFailed(reason="application command exited with status 3: no config"),
        ]


async def test_a_command_that_cannot_run_fails_the_start_and_says_why_in_its_history(
    tmp_path: Path,
) -> None:
    app, journal = journaled_app(tmp_path, command=f"{tmp_path}/no-such-app --serve")
    async with running(app) as h:
        with capture_logs() as logs:
            h.executor.submit(fx.StartApp())
            await h.idle()
    why = f"application command could not run: {tmp_path}/no-such-app: No such file or directory"
    assert h.events == [ev.AppFailed(reason=why)]
    assert lines(journal) == ["prestart", "vip-up", "start", "vip-down"]
    [run] = app.history.view()["command"]
    assert run["error"] == why.removeprefix("application command could not run: ")
    assert [e["reason"] for e in logs if e["event"] == "script failed"][-1] == why
    assert not app.running and app.main_pid is None


async def test_a_stop_ends_the_command_without_reporting_a_failure(tmp_path: Path) -> None:
    # The command ignores SIGTERM (and so does its child): after the stop
    # timeout its whole group is killed, and its end is no failure.
    body = (
        "trap 'echo term' TERM\n"
        f"sh -c 'trap \"\" TERM; echo $$ > {tmp_path}/child; exec sleep 60' &\n"
        "while :; do sleep 0.05; done\n"
    )
    command = make_script(tmp_path, "app", body)
    app, journal = journaled_app(tmp_path, vip=False, command=command, stop_timeout=0.5)
    async with running(app) as h:
        h.executor.submit(fx.StartApp())
        await h.until((tmp_path / "child").exists, "the command started its child")
        main = app.main_pid
        assert main is not None
        h.executor.submit(fx.StopApp())
        await h.idle()
        assert h.events == [ev.AppStarted(), ev.AppStopped()]
        await h.until(
            lambda: not alive(main) and not alive(int((tmp_path / "child").read_text())),
            "nothing of the command is left",
        )
        [run] = app.history.view()["command"]
        assert run["timed_out"] and run["returncode"] == -signal.SIGKILL
        assert "term" in run["tail"], "SIGTERM came first"
        assert lines(journal)[-3:] == ["prestop", "stop", "poststop"]
        assert app.main_pid is None and not app.running


@pytest.mark.parametrize("then", [fx.RestartApp(), fx.StopApp()])
async def test_what_a_dead_command_left_in_its_group_is_ended_by_the_next_stop(
    tmp_path: Path, then: fx.Effect
) -> None:
    # A pre-forking server whose main process crashes leaves its workers (in its
    # process group): the restart or hand-over that follows must end them
    # before it starts a new command or releases the VIP, as it ends a live one.
    worker_file = tmp_path / "worker"
    body = (
        f"test -e {worker_file} && exec sleep 60\n"  # the restarted command just runs
        f"sh -c 'trap \"\" TERM; echo $$ > {worker_file}; exec sleep 60' &\n"
        f"while ! test -s {worker_file}; do sleep 0.02; done\nexit 3\n"
    )
    command = make_script(tmp_path, "app", body)
    app, journal = journaled_app(tmp_path, command=command, stop_timeout=0.5)
    try:
        async with running(app) as h:
            h.executor.submit(fx.StartApp())
            await h.until(lambda: len(h.events) == 2, "the death reported")
            assert h.events[1] == ev.AppFailed(reason="application command exited with status 3")
            worker = int(worker_file.read_text())
            assert alive(worker) and app.main_pid is None
            journal.unlink()
            h.executor.submit(then)
            await h.idle()
            assert not alive(worker), "the worker the dead command left was ended"
            # ... before the VIP was released (a stop) or a new command started (a restart)
            assert lines(journal)[:2] == ["prestop", "stop"]
    finally:
        with anyio.fail_after(20):
            await app.stop()  # the restarted command
        if worker_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(worker_file.read_text()), signal.SIGKILL)


async def test_a_restart_replaces_the_command_and_watches_the_new_one(tmp_path: Path) -> None:
    command = make_script(tmp_path, "app", "exec sleep 60\n")
    app, _ = journaled_app(tmp_path, vip=False, command=command)
    async with running(app) as h:
        h.executor.submit(fx.StartApp())
        await h.idle()
        first = app.main_pid
        h.executor.submit(fx.RestartApp())
        await h.idle()
        second = app.main_pid
        assert first is not None and second is not None and second != first
        await h.until(lambda: not alive(first), "the first command ended")
        assert h.events == [ev.AppStarted(), ev.AppStarted()], "its end was no failure"
        os.kill(second, signal.SIGTERM)
        await h.until(lambda: len(h.events) == 3, "the new one is watched")
        assert h.events[2] == ev.AppFailed(reason="application command killed by signal 15")


async def test_a_command_left_by_a_killed_daemon_is_ended_at_the_next_start(
    tmp_path: Path,
) -> None:
    # The command runs in a session of its own: a daemon killed with -9 leaves
    # it running. The marker names it; the next daemon's recover ends it.
    command = make_script(tmp_path, "app", "trap '' TERM\nexec sleep 60\n")
    app, journal = journaled_app(tmp_path, vip=False, command=command, stop_timeout=0.3)
    async with anyio.create_task_group() as tg:
        assert await app.start(tg) is None
        tg.cancel_scope.cancel()
    orphan = app.main_pid
    assert orphan is not None
    journal.unlink()
    successor, _ = journaled_app(tmp_path, vip=False, command=command, stop_timeout=0.3)
    with anyio.fail_after(20):
        assert await successor.recover()
    await Harness(ActionExecutor(successor, lambda event: anyio.sleep(0))).until(
        lambda: not alive(orphan), "the orphan command is gone"
    )
    assert lines(journal) == ["prestop", "stop", "poststop"]
    assert not (tmp_path / "state" / "application.started").exists()


async def test_a_marker_naming_a_reused_pid_ends_nothing(tmp_path: Path) -> None:
    # The PID in the marker now belongs to another process (its start time differs).
    bystander = await anyio.open_process(["sleep", "60"], start_new_session=True)
    try:
        marker = tmp_path / "state" / "application.started"
        marker.parent.mkdir()
        marker.write_text(json.dumps({"pid": bystander.pid, "start_time": 1}))
        app, _ = journaled_app(tmp_path, vip=False, command="sleep 60")
        assert await app.recover()
        assert bystander.returncode is None and alive(bystander.pid)
    finally:
        bystander.kill()
        await bystander.aclose()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (lambda pid, started: b"\x00\xffnot json", "not a JSON object"),
        (lambda pid, started: b" " * 300 + b"{}", "longer than 256 bytes"),
        (lambda pid, started: json.dumps([pid, started]).encode(), "not a JSON object"),
        # what the daemon writes, with the types confused: never int()-ed into a PID
        (
            lambda pid, started: json.dumps({"pid": str(pid), "start_time": started}).encode(),
            "no valid process id",
        ),
        (
            lambda pid, started: json.dumps({"pid": pid + 0.5, "start_time": started}).encode(),
            "no valid process id",
        ),
        (
            lambda pid, started: json.dumps({"pid": pid, "start_time": str(started)}).encode(),
            "no valid start time",
        ),
    ],
)
async def test_a_garbled_marker_ends_nothing_says_why_and_still_stops(
    tmp_path: Path, body: Callable[[int, int | None], bytes], why: str
) -> None:
    bystander = await anyio.open_process(["sleep", "60"], start_new_session=True)
    try:
        marker = tmp_path / "state" / "application.started"
        marker.parent.mkdir()
        marker.write_bytes(body(bystander.pid, _start_time(bystander.pid)))
        app, journal = journaled_app(tmp_path, vip=False, command="sleep 60")
        with capture_logs() as logs:
            assert await app.recover()
        assert alive(bystander.pid), "nothing was signalled on a garbled marker"
        [error] = [e for e in logs if e["event"].startswith("start marker unreadable")]
        assert error["why"] == why and error["file"] == str(marker)
        assert lines(journal) == ["prestop", "stop", "poststop"], "the stop still ran"
        assert not marker.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            bystander.kill()
        await bystander.aclose()


async def test_a_death_while_a_stop_is_pending_is_not_taken_for_the_stops_outcome(
    tmp_path: Path,
) -> None:
    # The core awaits StopApp's outcome: an AppFailed now would read as "stopped"
    # before the replication is flushed and the VIP released (the peer would
    # start too early). The prestop script is where the command dies.
    command = make_script(tmp_path, "app", "exec sleep 60\n")
    gate = tmp_path / "gate"
    app, journal = journaled_app(
        tmp_path,
        command=command,
        bodies={"prestop": f"while ! test -e {gate}; do sleep 0.02; done\n"},
    )
    async with running(app) as h:
        h.executor.submit(fx.StartApp())
        await h.idle()
        pid = app.main_pid
        assert pid is not None
        h.executor.submit(fx.StopApp())
        os.kill(pid, signal.SIGKILL)
        await h.until(lambda: "command" in app.history.view(), "the death was noticed")
        gate.touch()
        await h.idle()
        assert h.events == [ev.AppStarted(), ev.AppStopped()]
    assert lines(journal)[-3:] == ["stop", "vip-down", "poststop"]


# --- in the daemon, with the real core --------------------------------------------------------


def daemon_scripts(tmp_path: Path) -> dict[str, Any]:
    """An application section whose scripts write their name to ``journal``."""
    journal = tmp_path / "journal"
    section: dict[str, Any] = {
        name: make_script(tmp_path, name, f"echo {name} >> {journal}\n")
        for name in ("start", "stop", "start_both", "stop_both")
    }
    section["transition"] = make_script(tmp_path, "hook", f'echo "$1>$2" >> {tmp_path}/hooks\n')
    section["timeout"] = 5
    return {"application": section}


@contextlib.asynccontextmanager
async def real_daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, anyio.abc.TaskGroup]]:
    config = load_config(write_cluster(tmp_path, extra=daemon_scripts(tmp_path)))
    daemon = Daemon(
        config, "alpha", transport_loader=MemoryNetwork().transport, handle_signals=False
    )
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: daemon.run(task_status=task_status))
            yield daemon, tg


async def test_the_daemon_frames_the_module_with_the_both_scripts_and_calls_the_hook(
    tmp_path: Path,
) -> None:
    async with real_daemon(tmp_path) as (daemon, _):
        await wait_until(lambda: daemon.node.state is State.WAIT)
        result = await daemon.controller.command("prim")
        assert result.accepted, result
        await wait_until(lambda: daemon.app.running)
        await wait_until(lambda: "start" in daemon.controller.status()["scripts"])
        [run] = daemon.controller.status()["scripts"]["start"]
        assert run["ok"] and run["returncode"] == 0 and run["duration"] >= 0
        await daemon.shutdown("test")
    assert lines(tmp_path / "journal") == ["start_both", "start", "stop", "stop_both"]
    await wait_until(lambda: len(lines(tmp_path / "hooks")) >= 3)
    assert lines(tmp_path / "hooks")[:3] == ["stop>wait", "wait>alone", "alone>stop"]


async def test_a_daemon_that_exits_without_stopping_the_module_runs_stop_both(
    tmp_path: Path,
) -> None:
    async with real_daemon(tmp_path) as (daemon, tg):
        await wait_until(lambda: daemon.app.both_running)
        tg.cancel_scope.cancel()  # no Stop: the exit cleanup must still run stop_both
    assert lines(tmp_path / "journal") == ["start_both", "stop_both"]


async def test_a_command_is_still_ended_after_a_reload_removed_the_section(
    tmp_path: Path,
) -> None:
    app, _ = journaled_app(tmp_path, vip=False, command="sleep 60")
    async with anyio.create_task_group() as tg:
        assert await app.start(tg) is None
        tg.cancel_scope.cancel()
    pid = app.main_pid
    assert pid is not None
    app.scripts = None  # SIGHUP with no application section any more
    with anyio.fail_after(20):
        assert await app.stop() is None
    assert not alive(pid)
