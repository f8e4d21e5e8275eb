"""When checkers probe and what they report, on trio's virtual clock with a probe
the test controls: failures before down, one success up, events only on
change, the grace after the application started, the classes, a stopped
checker that was down reporting up, and a reload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from structlog.testing import capture_logs
from trio.testing import MockClock

from failover.core import events as ev
from failover.platform.checkers import Checker, CheckerSet, CheckerSpec, runs
from failover.platform.checkers.probes import Outcome, Session

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@dataclass(eq=False)
class Target:
    """What the fake probe looks at: its health, and the virtual time of each probe."""

    healthy: bool = True
    probes: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class FakeProbe(Session):
    target: Target
    label: str = ""  # two probes differing only by label differ (a changed configuration)

    def open(self) -> Session:
        return self

    async def check(self, timeout: float) -> Outcome:
        self.target.probes.append(anyio.current_time())
        return Outcome(self.target.healthy, "" if self.target.healthy else "broken")


class Recorder:
    """The core's side: every event with the virtual time it arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, ev.Event]] = []

    async def report(self, event: ev.Event) -> None:
        self.events.append((anyio.current_time(), event))

    @property
    def kinds(self) -> list[str]:
        return [event.kind for _, event in self.events]


def spec(target: Target, label: str = "", **changes: object) -> CheckerSpec:
    values: dict[str, object] = {
        "name": "web",
        "probe": FakeProbe(target, label),
        "interval": 1.0,
        "timeout": 0.5,
        "failures": 3,
        "when": "both",
        "grace": 0.0,
    }
    values.update(changes)
    return CheckerSpec(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running(core: Recorder, *specs: CheckerSpec) -> AsyncIterator[CheckerSet]:
    """A CheckerSet running ``specs`` on a node that does not serve (yet); stopped
    at the end."""
    checkers = CheckerSet(core.report)
    async with anyio.create_task_group() as tg:
        await tg.start(checkers.run)
        checkers.configure(specs)
        yield checkers
        tg.cancel_scope.cancel()


async def probes_until(target: Target, count: int) -> None:
    while len(target.probes) < count:
        await anyio.sleep(0.25)


async def test_down_after_failures_in_a_row_up_after_one_success_events_only_on_change() -> None:
    target, core = Target(), Recorder()
    checker = Checker(spec(target, failures=3), core.report)
    async with anyio.create_task_group() as tg:
        tg.start_soon(checker.run)
        checker.enable(0.0)
        await probes_until(target, 2)
        target.healthy = False
        await probes_until(target, 4)  # two failures, then a success resets the count
        target.healthy = True
        await probes_until(target, 5)
        target.healthy = False
        await probes_until(target, 7)
        assert core.events == [], "two failures in a row are not three"
        await probes_until(target, 8)
        assert core.kinds == ["checker_down"], "the third failure in a row reports down"
        assert core.events[0] == (target.probes[7], ev.CheckerDown("web", "broken"))
        await probes_until(target, 14)
        assert core.kinds == ["checker_down"], "still down: nothing new"
        target.healthy = True
        await probes_until(target, 15)
        assert core.events[1:] == [(target.probes[14], ev.CheckerUp("web"))]
        await probes_until(target, 20)
        assert len(core.events) == 2, "a steady state reports nothing"
        checker.retire()
    # probes are paced by the interval
    assert target.probes[1] - target.probes[0] == 1.0


async def test_the_first_probe_on_the_serving_node_waits_the_grace() -> None:
    target, core = Target(), Recorder()
    async with running(core, spec(target, when="serving", grace=7.0)) as checkers:
        checkers.update(serving=True, app_started=False)
        await anyio.sleep(30)
        assert target.probes == [], "the application has not started"
        started = anyio.current_time()
        checkers.update(serving=True, app_started=True)
        await probes_until(target, 1)
        assert target.probes[0] - started == 7.0
        await probes_until(target, 3)
        # the application restarts: the checker stops, and waits the grace again
        checkers.update(serving=True, app_started=False)
        await anyio.sleep(10)
        count = len(target.probes)
        assert count == 3, "stopped with the application"
        restarted = anyio.current_time()
        checkers.update(serving=True, app_started=True)
        await probes_until(target, count + 1)
        assert target.probes[count] - restarted == 7.0


async def test_a_standby_checker_runs_without_grace() -> None:
    target, core = Target(), Recorder()
    async with running(core, spec(target, when="standby", grace=7.0)):
        begin = anyio.current_time()
        await probes_until(target, 1)
        assert target.probes[0] == begin


CLASSES = [
    # when, serving, app_started -> runs
    ("serving", False, False, False),
    ("serving", True, False, False),
    ("serving", True, True, True),
    ("standby", False, False, True),
    ("standby", True, False, False),
    ("standby", True, True, False),
    ("both", False, False, True),
    ("both", True, False, False),
    ("both", True, True, True),
]


@pytest.mark.parametrize(("when", "serving", "app_started", "expected"), CLASSES)
def test_which_class_runs_where(
    when: str, serving: bool, app_started: bool, expected: bool
) -> None:
    assert runs(when, serving=serving, app_started=app_started) is expected


async def test_checkers_start_and_stop_with_the_nodes_role() -> None:
    serving, standby, both = Target(), Target(), Target()
    specs = (
        spec(serving, name="s", when="serving"),
        spec(standby, name="t", when="standby"),
        spec(both, name="b", when="both"),
    )
    async with running(Recorder(), *specs) as checkers:

        def enabled() -> set[str]:
            return {name for name, c in checkers.checkers.items() if c.enabled}

        assert enabled() == {"t", "b"}  # a node that does not serve
        await probes_until(standby, 3)
        checkers.update(serving=True, app_started=False)  # the application is starting
        assert enabled() == set()
        await anyio.sleep(5)
        assert serving.probes == []
        probed = len(standby.probes)
        checkers.update(serving=True, app_started=True)
        assert enabled() == {"s", "b"}
        await probes_until(serving, 3)
        assert len(standby.probes) == probed, "a standby checker is still on the serving node"
        checkers.update(serving=False, app_started=False)
        assert enabled() == {"t", "b"}


@asynccontextmanager
async def down_on_standby(target: Target, core: Recorder) -> AsyncIterator[CheckerSet]:
    """A set with one standby checker, started on a node that does not serve, once
    its first probe has reported it down."""
    async with running(core, spec(target, when="standby", failures=1)) as checkers:
        await probes_until(target, 1)
        await anyio.sleep(0.5)
        assert core.kinds == ["checker_down"]
        yield checkers


async def test_a_checker_stopped_while_down_reports_up_once() -> None:
    target, core = Target(healthy=False), Recorder()
    async with down_on_standby(target, core) as checkers:
        checkers.update(serving=True, app_started=False)
        await anyio.sleep(5)
        assert core.kinds == ["checker_down", "checker_up"], "no longer probed: unknown is up"
        checkers.update(serving=False, app_started=False)
        await probes_until(target, 2)
        await anyio.sleep(0.5)
        assert core.kinds == ["checker_down", "checker_up", "checker_down"], "probed again"
        # a healthy checker that stops says nothing
        target.healthy = True
        await probes_until(target, 3)
        checkers.update(serving=True, app_started=False)
        await anyio.sleep(5)
        assert core.kinds == ["checker_down", "checker_up", "checker_down", "checker_up"]


async def test_a_reload_keeps_an_unchanged_checker_and_replaces_a_changed_one() -> None:
    target, core = Target(healthy=False), Recorder()
    async with down_on_standby(target, core) as checkers:
        kept = checkers.checkers["web"]
        checkers.configure([spec(target, when="standby", failures=1)])
        await probes_until(target, 3)
        assert checkers.checkers["web"] is kept and core.kinds == ["checker_down"]
        # a changed checker: the old one reports up before the new one reports down
        checkers.configure([spec(target, when="standby", failures=1, label="changed")])
        await probes_until(target, 5)
        assert core.kinds == ["checker_down", "checker_up", "checker_down"]
        # a removed checker that was down reports up
        checkers.configure([])
        await anyio.sleep(5)
        assert core.kinds == ["checker_down", "checker_up", "checker_down", "checker_up"]


@dataclass(frozen=True)
class RaisingProbe(Session):
    target: Target

    def open(self) -> Session:
        return self

    async def check(self, timeout: float) -> Outcome:
        self.target.probes.append(anyio.current_time())
        raise RuntimeError("a bug")


async def test_a_probe_that_raises_is_down_and_the_checker_goes_on() -> None:
    target, core = Target(), Recorder()
    checker = Checker(spec(target, probe=RaisingProbe(target), failures=1), core.report)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(checker.run)
            checker.enable(0.0)
            await probes_until(target, 3)
            checker.retire()
    assert core.events[0][1] == ev.CheckerDown("web", "the probe raised RuntimeError('a bug')")
    assert core.kinds == ["checker_down", "checker_up"]  # retired while down
    raised = [entry for entry in logs if entry["event"] == "checker probe raised"]
    assert len(raised) == 1, "one traceback while it keeps raising, not one a probe"
