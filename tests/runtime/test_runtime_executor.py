"""The action executor: one action at a time, in order, each under its deadline."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation
from failover.platform.application import Application, Scripts
from failover.runtime import executor as executor_module
from failover.runtime.executor import ActionExecutor

pytestmark = pytest.mark.anyio


def make_script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def app_with(tmp_path: Path, start: str, stop: str, timeout: float = 5.0) -> Application:
    scripts = Scripts(
        make_script(tmp_path, "start", start), make_script(tmp_path, "stop", stop), timeout
    )
    return Application(scripts, None, output_dir=tmp_path / "out", env={"FAILOVER_NODE": "alpha"})


async def run_actions(
    executor: ActionExecutor, effects: list[fx.Effect], outcomes: int
) -> list[ev.Event]:
    """Submit ``effects`` and collect the first ``outcomes`` events reported."""
    send, receive = anyio.create_memory_object_stream[ev.Event](100)
    executor.report = send.send
    got: list[ev.Event] = []
    async with send, receive, anyio.create_task_group() as tg:
        tg.start_soon(executor.run)
        for effect in effects:
            executor.submit(effect)
        with anyio.fail_after(20):
            while len(got) < outcomes:
                got.append(await receive.receive())
            while not executor.idle:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    return got


async def test_actions_run_in_order_and_report_each_outcome(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    # The start script is slow: if actions overlapped, "stop" would be written first.
    app = app_with(tmp_path, f"sleep 0.3\necho start >> {journal}\n", f"echo stop >> {journal}\n")
    executor = ActionExecutor(app, lambda event: anyio.sleep(0))
    effects: list[fx.Effect] = [
        fx.StartApp(),
        fx.StartTracking(since=Generation(1, "alpha")),
        fx.StartResync(
            role="source",
            mode="incremental",
            since=Generation(1, "alpha"),
            generation=Generation(2, "alpha"),
        ),
        fx.Quarantine(since=Generation(1, "alpha")),
        fx.StartResync(
            role="target", mode="full", since=Generation(), generation=Generation(2, "beta")
        ),
        fx.StopApp(),
    ]
    with capture_logs() as logs:
        outcomes = await run_actions(executor, effects, 2)
    # without replicated directories the core completes a resync or quarantine of
    # nothing itself: the executor invents no outcome for a data effect
    assert outcomes == [ev.AppStarted(), ev.AppStopped()]
    ignored = [r["effect"] for r in logs if r["event"].startswith("data effect without")]
    assert ignored == ["start_tracking", "start_resync", "quarantine", "start_resync"]
    assert journal.read_text().split() == ["start", "stop"]
    assert not app.running


async def test_a_hanging_start_script_is_killed_at_its_timeout_and_reported_failed(
    tmp_path: Path,
) -> None:
    app = app_with(tmp_path, "echo starting\nexec sleep 60\n", "true\n", timeout=0.5)
    executor = ActionExecutor(app, lambda event: anyio.sleep(0))
    [outcome] = await run_actions(executor, [fx.StartApp()], 1)
    assert isinstance(outcome, ev.AppFailed)
    assert "timed out" in outcome.reason and "starting" in outcome.reason
    assert not app.running


async def test_a_failing_start_script_reports_its_output(tmp_path: Path) -> None:
    app = app_with(tmp_path, "echo 'database missing' >&2\nexit 4\n", "true\n")
    executor = ActionExecutor(app, lambda event: anyio.sleep(0))
    [outcome] = await run_actions(executor, [fx.StartApp()], 1)
    assert outcome == ev.AppFailed(reason="start script exited with status 4: database missing")


class StuckApplication(Application):
    """An application whose start never returns (a hung netlink call, say)."""

    async def start(self, repeat_in: object = None) -> str | None:
        await anyio.sleep_forever()
        return None

    @property
    def budget(self) -> float:
        return 0.3


async def test_an_action_over_its_deadline_is_abandoned_and_reported_failed(tmp_path: Path) -> None:
    app = StuckApplication(None, None, output_dir=tmp_path, env={})
    executor = ActionExecutor(app, lambda event: anyio.sleep(0))
    [failed, stopped] = await run_actions(executor, [fx.StartApp(), fx.StopApp()], 2)
    assert failed == ev.AppFailed(reason="start_app did not finish within 0.3 s")
    assert stopped == ev.AppStopped(), "the queue goes on after an abandoned action"


async def test_effects_without_an_outcome_report_nothing(tmp_path: Path) -> None:
    app = Application(None, None, output_dir=tmp_path, env={})
    executor = ActionExecutor(app, lambda event: anyio.sleep(0))
    quiet: list[fx.Effect] = [
        fx.StartReplication(),
        fx.StopReplication(),
        fx.StopTracking(),
        fx.StopResync(),
        fx.RequestArbitration(generation=Generation(2, "alpha"), base=Generation(1, "alpha")),
    ]
    outcomes = await run_actions(executor, [*quiet, fx.StartApp()], 1)
    assert outcomes == [ev.AppStarted()], "only StartApp has an outcome here"


class _JournalingData:
    """The data plane's part in a stop, journaled (duck-typed DataPlane)."""

    def __init__(self, journal: list[str]) -> None:
        self.journal = journal

    async def flush_replication(self) -> str | None:
        self.journal.append("flush")
        return None

    async def unserve(self) -> None:
        self.journal.append("read-only")

    async def stop_replication(self) -> None:
        self.journal.append("stop replication")


class _JournalingApp(Application):
    def __init__(self, tmp_path: Path, journal: list[str]) -> None:
        super().__init__(None, None, output_dir=tmp_path, env={})
        self.journal = journal

    async def run_stop_script(self) -> str | None:
        await anyio.sleep(0.05)  # a slow script: nothing after it may start meanwhile
        self.journal.append("stop script")
        return None

    async def release_vip(self) -> str | None:
        self.journal.append("release VIP")
        return None


async def test_a_stop_replicates_what_the_script_wrote_before_it_releases_the_vip(
    tmp_path: Path,
) -> None:
    journal: list[str] = []
    executor = ActionExecutor(
        _JournalingApp(tmp_path, journal),
        lambda event: anyio.sleep(0),
        data=_JournalingData(journal),  # type: ignore[arg-type]
    )

    async def report(event: ev.Event) -> None:
        journal.append(type(event).__name__)

    executor.report = report
    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.run)
        executor.submit(fx.StopApp())
        executor.submit(fx.StopReplication())
        with anyio.fail_after(10):
            while not executor.idle:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert journal == [
        "stop script",
        "flush",
        "read-only",
        "release VIP",
        "AppStopped",
        "stop replication",
    ]


class _StuckQuarantine:
    """A data plane whose quarantine never ends (a hung disk; duck-typed DataPlane)."""

    async def quarantine(self, effect: fx.Quarantine) -> ev.Event:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_quarantine_over_its_deadline_is_reported_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # never swallowed: the core hears it, keeps the quarantine pending and retries
    monkeypatch.setattr(executor_module, "QUARANTINE_DEADLINE", 0.2)
    app = Application(None, None, output_dir=tmp_path, env={})
    executor = ActionExecutor(
        app,
        lambda event: anyio.sleep(0),
        data=_StuckQuarantine(),  # type: ignore[arg-type]
    )
    [outcome] = await run_actions(executor, [fx.Quarantine(since=Generation(1, "alpha"))], 1)
    assert outcome == ev.QuarantineFailed(reason="quarantine did not finish within 0.2 s")
