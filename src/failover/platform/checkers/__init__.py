"""Checkers: probes run on a schedule, reported to the core as CheckerDown/CheckerUp.

A checker probes its target (``probes``: a command, a TCP port, a ping, a
network interface, the application's process) every ``interval`` seconds, or
at once when its probe sees a change. ``failures`` consecutive failed probes
report it down; one success reports it up again. Every checker starts as
healthy (the core assumes so until told otherwise) and an event is sent only
when the outcome changes: a checker that keeps failing costs the core one
event, not one per probe.

When it runs depends on its class (``when``) and on what the node does
(``CheckerSet.update``, called by the daemon after each decision of the core):

- ``serving``: only on the serving node, once the application has started,
  and only ``grace`` seconds after that; it stops when the application stops
  or restarts. So it never blocks its own application's start.
- ``standby``: only while the node does not serve.
- ``both``: while the node does not serve, and on the serving node as a
  ``serving`` checker does.

A checker that stops running while it last reported down reports up: what is
no longer probed is unknown, and unknown is healthy, as at start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup

from failover.config.models import (
    CheckerConfig,
    CommandChecker,
    InterfaceChecker,
    PingChecker,
    ProcessChecker,
    TcpChecker,
)
from failover.core import events as ev
from failover.platform.checkers.probes import (
    CommandProbe,
    InterfaceProbe,
    MainProcess,
    Outcome,
    PingProbe,
    Probe,
    ProcessProbe,
    Session,
    TcpProbe,
)

log = structlog.get_logger("failover.checkers")

Report = Callable[[ev.Event], Awaitable[None]]
ProbeHook = Callable[[str, float, bool], None]


@dataclass(frozen=True)
class CheckerSpec:
    """One configured checker: probe with ``probe`` every ``interval`` s (each probe
    at most ``timeout`` s); ``failures`` failed probes in a row report it down."""

    name: str
    probe: Probe
    interval: float
    timeout: float
    failures: int = 1
    when: str = "serving"
    grace: float = 0.0


def runs(when: str, *, serving: bool, app_started: bool) -> bool:
    """Whether a checker of class ``when`` runs on a node that ``serving`` or not,
    its application started or not (see the module docstring)."""
    if serving:
        return app_started and when in ("serving", "both")
    return when in ("standby", "both")


class Checker:
    """One checker's task (``run``): it probes while enabled, and reports changes.

    ``enable``, ``disable`` and ``retire`` only set flags and cancel a scope:
    the daemon's event loop calls them and must never wait. Every report comes
    from ``run``, so a checker's events reach the core in the order they happen.
    """

    def __init__(
        self,
        spec: CheckerSpec,
        report: Report,
        after: Checker | None = None,
        on_probe: ProbeHook | None = None,
    ) -> None:
        self.spec = spec
        self.report = report
        self.on_probe = on_probe
        self.healthy = True
        # True from the moment a CheckerDown may have reached the core until a
        # CheckerUp surely did (a report cut short by a stop counts as sent)
        self._maybe_down = False
        self.finished = anyio.Event()
        self._after = after  # a retired checker of the same name: its last report comes first
        self._enabled = False
        self._retired = False
        self._grace = 0.0
        self._wake = anyio.Event()
        self._scope: anyio.CancelScope | None = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    def enable(self, grace: float) -> None:
        """Start probing, after ``grace`` seconds (if not already probing)."""
        if self._enabled or self._retired:
            return
        self._enabled, self._grace = True, grace
        self._wake.set()

    def disable(self) -> None:
        """Stop probing now (reporting up if it last reported down)."""
        if not self._enabled:
            return
        self._enabled = False
        self._wake = anyio.Event()
        if self._scope is not None:
            self._scope.cancel()

    def retire(self) -> None:
        """Stop for good (the checker left the configuration or changed)."""
        self.disable()
        self._retired = True
        self._wake.set()

    async def run(self) -> None:
        try:
            if self._after is not None:
                await self._after.finished.wait()
                self._after = None
            while not self._retired:
                if not self._enabled:
                    await self._wake.wait()
                    continue
                with anyio.CancelScope() as self._scope:
                    await anyio.sleep(self._grace)
                    await self._probe()
                self._scope = None
                self.healthy = True  # unknown from now on, and unknown is healthy
                if self._maybe_down:
                    log.info("checker stopped while down: reported up", checker=self.spec.name)
                    await self._report_up()
        finally:
            self.finished.set()

    async def _probe(self) -> None:
        """Probe until cancelled; report each change of health."""
        spec = self.spec
        failed = 0
        raised = False
        session: Session = spec.probe.open()
        try:
            while True:
                started = anyio.current_time()
                try:
                    outcome = await session.check(spec.timeout)
                    raised = False
                except Exception as exc:  # a probe's bug must not end the daemon
                    if not raised:  # one traceback while it keeps raising
                        log.exception("checker probe raised", checker=spec.name)
                    raised = True
                    outcome = Outcome(False, f"the probe raised {exc!r}")
                failed = 0 if outcome.ok else failed + 1
                if self.on_probe is not None:
                    self.on_probe(spec.name, anyio.current_time() - started, outcome.ok)
                await self._judge(outcome, failed)
                with anyio.move_on_after(started + spec.interval - anyio.current_time()):
                    await session.changed()
        finally:
            session.close()

    async def _judge(self, outcome: Outcome, failed: int) -> None:
        name = self.spec.name
        if outcome.ok and not self.healthy:
            self.healthy = True
            log.info("checker up", checker=name)
            await self._report_up()
        elif not outcome.ok and self.healthy:
            if failed < self.spec.failures:
                log.info("checker probe failed", checker=name, failed=failed, reason=outcome.reason)
                return
            self.healthy = False
            self._maybe_down = True
            log.warning("checker down", checker=name, reason=outcome.reason)
            await self.report(ev.CheckerDown(checker=name, reason=outcome.reason))

    async def _report_up(self) -> None:
        await self.report(ev.CheckerUp(checker=self.spec.name))
        self._maybe_down = False


class CheckerSet:
    """The node's checkers, each run by its class (``update``) in the task group
    of ``run``; ``configure`` replaces the set (a reload)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.checkers: dict[str, Checker] = {}
        self.on_probe: ProbeHook | None = None
        """Called with each probe's checker, duration and success (the metrics)."""
        self._serving = False
        self._app_started = False
        self._tg: TaskGroup | None = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def configure(self, specs: Iterable[CheckerSpec]) -> None:
        """Run ``specs`` from now on: an unchanged checker runs on undisturbed; a
        changed or removed one stops (reporting up if it was down)."""
        assert self._tg is not None, "CheckerSet.run must be started first"
        wanted = {spec.name: spec for spec in specs}
        retired: dict[str, Checker] = {}
        for name, checker in list(self.checkers.items()):
            if wanted.get(name) != checker.spec:
                checker.retire()
                retired[name] = self.checkers.pop(name)
        for name, spec in wanted.items():
            if name not in self.checkers:
                checker = Checker(spec, self.report, retired.get(name), self.on_probe)
                self.checkers[name] = checker
                self._tg.start_soon(checker.run, name=f"checker {name}")
        self._apply()

    def update(self, *, serving: bool, app_started: bool) -> None:
        """What the node does now: it serves or not, its application started or not."""
        if (serving, app_started) != (self._serving, self._app_started):
            self._serving, self._app_started = serving, app_started
            self._apply()

    def _apply(self) -> None:
        for checker in self.checkers.values():
            spec = checker.spec
            if runs(spec.when, serving=self._serving, app_started=self._app_started):
                checker.enable(spec.grace if self._serving else 0.0)
            else:
                checker.disable()


def checker_specs(
    checkers: Iterable[CheckerConfig],
    *,
    output_dir: Path,
    env: Mapping[str, str],
    app: MainProcess | None,
) -> list[CheckerSpec]:
    """The runtime's checkers for the configured ones. Command and ping checkers
    write their output in ``output_dir``; commands get ``env``; a process
    checker without a pidfile watches ``app``'s main process."""
    return [
        CheckerSpec(
            c.name,
            _probe_for(c, output_dir, env, app),
            c.interval,
            c.timeout,
            c.failures,
            c.when,
            c.grace,
        )
        for c in checkers
    ]


def _probe_for(
    checker: CheckerConfig, output_dir: Path, env: Mapping[str, str], app: MainProcess | None
) -> Probe:
    match checker:
        case CommandChecker():
            environment = tuple(sorted(env.items()))
            return CommandProbe(checker.name, checker.command, output_dir, environment)
        case TcpChecker():
            return TcpProbe(checker.host, checker.port)
        case PingChecker():
            return PingProbe(checker.name, checker.address, output_dir)
        case InterfaceChecker():
            return InterfaceProbe(checker.interface)
        case ProcessChecker():
            return ProcessProbe(checker.pidfile, app)


__all__ = ["Checker", "CheckerSet", "CheckerSpec", "Report", "checker_specs", "runs"]
