"""The action executor: runs the core's slow effects one at a time, in order.

Slow effects touch the machine (scripts, the virtual IP, later the data):
``StartApp``, ``StopApp``, ``StartResync``, ``Quarantine`` and the
replication effects. Each runs under its own deadline and its outcome is
reported back to the core as an event, exactly once per effect that has one.

With replicated directories configured, the data effects go to the
``DataPlane``: the mirrors turn read-write just before the application
starts and read-only just after it stops; replication and tracking start
and stop; a resync runs in the background and the data plane reports its
outcome itself (it may take hours: the queue must not wait for it).
Without replicated directories the core emits no data effect (it knows from
its settings, and completes a resync or quarantine of nothing itself): one
that arrives anyway is logged as an error and ignored.
Arbitration effects go to the ``Arbitrator`` (``runtime/arbitrator.py``)
when one is configured, and its reply is reported as the event
``arbitration_event`` names. A request and a release keep their place in the
queue (a release must leave only after the ``StopApp`` before it: the peer
may take the lease as soon as it is free). A renewal runs beside the queue,
so that a long start script cannot hold it back until the node fences,
unless a request is queued or running: then it waits behind it.

The core counts a grant from when it emitted its *newest* request or
renewal (``requested_at``), and ``arbitration_granted`` does not say which
one it answers. So a grant is reported only when it answers the newest
request or renewal submitted: the grant of an older one is dropped (it may
have left before the core's newest ask, so its lease may end sooner than the
core would count), and a renewal still waiting for the one before it is not
sent once a newer one is due. Refusals are always reported (acting on a
stale refusal costs a recheck, never safety). A request abandoned at its
deadline is reported as denied. Without an arbitrator an arbitration effect
is logged as an error and ignored.

``submit_step`` takes all the effects of one core step and adds what its state
changes imply for SafeKit's scripts (a mechanical consequence, not a decision):
``start_both`` queued ahead of the step's actions when the node leaves
``stop``, ``stop_both`` behind them when it enters ``stop``, and the
``transition`` hook for each state change. The hook runs beside the queue,
one at a time in order, from a bounded backlog (a hook that hangs costs its
timeout, never a decision; past ``HOOK_BACKLOG`` waiting runs, new ones are
dropped and logged).

A foreground ``command`` started by ``StartApp`` or ``RestartApp`` is watched
from the moment that action's ``AppStarted`` is reported (so the start never
counts as the pending action below): its death, unless a stop ended it, is
reported as ``AppFailed`` with its exit status, but only while no action on
the application (``APP_EFFECTS``) is queued or running: the core awaits that
action's outcome, and an ``AppFailed`` then would read as that outcome (a
``StopApp`` taken as done before the replication is flushed and the VIP
released would let the peer start too early). The death is logged and kept in the script log; the
pending action's own outcome follows.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import anyio
import structlog
from anyio.abc import Process, TaskGroup

from failover.core import effects as fx
from failover.core import events as ev
from failover.platform.application import Application
from failover.runtime.arbitrator import Arbitrator, arbitration_event
from failover.runtime.dataplane import DataPlane

log = structlog.get_logger("failover.executor")

Report = Callable[[ev.Event], Awaitable[None]]
Journal = Callable[..., None]
"""``AuditJournal.write``: the application's real start and stop, for ``failover audit``."""

DEFAULT_DEADLINE = 5.0
"""Seconds allowed to an action that runs no operator script."""
QUARANTINE_DEADLINE = 300.0
"""Seconds allowed to move a split brain's divergent files aside (renames)."""
HOOK_BACKLOG = 16
"""Transition hook runs that may wait behind the one running."""


@dataclass(frozen=True)
class StartBoth(fx.Effect):
    """Not the core's: the module started on this node (it left ``stop``)."""

    name: ClassVar[str] = "start_both"


@dataclass(frozen=True)
class StopBoth(fx.Effect):
    """Not the core's: the module stopped on this node (it entered ``stop``)."""

    name: ClassVar[str] = "stop_both"


APP_EFFECTS: tuple[type[fx.Effect], ...] = (fx.StartApp, fx.StopApp, fx.RestartApp)
"""The actions whose outcome the core awaits as the application's."""

ACTION_EFFECTS: tuple[type[fx.Effect], ...] = (
    fx.StartApp,
    fx.StopApp,
    fx.RestartApp,
    fx.StartReplication,
    fx.StopReplication,
    fx.StartTracking,
    fx.StopTracking,
    fx.StartResync,
    fx.StopResync,
    fx.Quarantine,
    fx.RequestArbitration,
    fx.RenewArbitration,
    fx.ReleaseArbitration,
)
"""The effects this executor runs; the event loop applies the others itself."""

DATA_EFFECTS: tuple[type[fx.Effect], ...] = (
    fx.StartReplication,
    fx.StopReplication,
    fx.StartTracking,
    fx.StopTracking,
    fx.StartResync,
    fx.StopResync,
    fx.Quarantine,
)
"""The effects the data plane executes when directories are replicated."""


class ActionExecutor:
    """A FIFO of actions drained by ``run`` (one task), each bounded by ``deadline_for``.

    ``submit`` never blocks. ``idle`` is True when nothing is queued or running;
    ``on_progress`` is called after every action (the daemon uses it to learn
    when a shutdown's effects are done).
    """

    def __init__(
        self,
        app: Application,
        report: Report,
        *,
        repeat_in: TaskGroup | None = None,
        on_progress: Callable[[], None] = lambda: None,
        data: DataPlane | None = None,
        journal: Journal | None = None,
        arbitrator: Arbitrator | None = None,
    ) -> None:
        self.journal = journal
        self.arbitrator = arbitrator
        self._asks = 0  # requests and renewals submitted: the newest one's number
        self._queued_asks: deque[int] = deque()  # numbers of those in the queue, in order
        self._requests = 0  # requests queued or running
        self._renewal_lock = anyio.Lock()
        self.app = app
        self.data = data
        self.report = report
        self.repeat_in = repeat_in
        self.on_progress = on_progress
        self._send, self._receive = anyio.create_memory_object_stream[fx.Effect](math.inf)
        self._outstanding = 0
        self._app_actions = 0  # StartApp, StopApp, RestartApp queued or running
        self._hooks_in, self._hooks_out = anyio.create_memory_object_stream[fx.TransitionRecord](
            HOOK_BACKLOG
        )
        self._watchers: TaskGroup | None = None

    @property
    def idle(self) -> bool:
        return self._outstanding == 0

    @property
    def app_action_pending(self) -> bool:
        """An action on the application (``APP_EFFECTS``) is queued or running: the
        core awaits its outcome, and an ``AppFailed`` now would read as that."""
        return self._app_actions > 0

    def submit(self, effect: fx.Effect) -> None:
        """Queue ``effect`` behind the actions already queued (a renewal runs beside them)."""
        if isinstance(effect, fx.RequestArbitration | fx.RenewArbitration):
            self._asks += 1
            if isinstance(effect, fx.RenewArbitration) and self._renew_beside(effect):
                return
            self._queued_asks.append(self._asks)
            self._requests += isinstance(effect, fx.RequestArbitration)
        self._outstanding += 1
        if isinstance(effect, APP_EFFECTS):
            self._app_actions += 1
        self._send.send_nowait(effect)

    def submit_step(self, effects: Sequence[fx.Effect]) -> None:
        """Queue the actions among ``effects`` (one core step), with the scripts its
        state changes imply (see the module docstring)."""
        changes = [
            e for e in effects if isinstance(e, fx.TransitionRecord) and e.source != e.target
        ]
        if any(change.source == "stop" for change in changes):
            self.submit(StartBoth())
        for effect in effects:
            if isinstance(effect, ACTION_EFFECTS):
                self.submit(effect)
        if any(change.target == "stop" for change in changes):
            self.submit(StopBoth())
        if self.app.scripts is not None and self.app.scripts.transition is not None:
            for change in changes:
                try:
                    self._hooks_in.send_nowait(change)
                except anyio.WouldBlock:
                    log.warning(
                        "transition hook not run: too many runs waiting",
                        source=change.source,
                        target=change.target,
                        waiting=HOOK_BACKLOG,
                    )

    def _renew_beside(self, effect: fx.RenewArbitration) -> bool:
        """Start ``effect`` beside the queue; False when it must be queued instead."""
        if self.arbitrator is None or self._watchers is None or self._requests:
            return False
        self._watchers.start_soon(self._renew, effect, self._asks)
        return True

    async def _renew(self, effect: fx.RenewArbitration, number: int) -> None:
        async with self._renewal_lock:
            if number != self._asks:
                log.info("lease renewal not sent: a newer request or renewal is due")
                return
            outcome = self._newest(await self._execute(effect), number)
        if outcome is not None:
            await self.report(outcome)

    def _newest(self, outcome: ev.Event | None, number: int) -> ev.Event | None:
        """``outcome`` of request or renewal ``number``, unless it is a grant that a
        newer request or renewal supersedes (see the module docstring)."""
        if isinstance(outcome, ev.ArbitrationGranted) and number != self._asks:
            log.info("arbitration grant dropped: a newer request or renewal was sent since")
            return None
        return outcome

    def deadline_for(self, effect: fx.Effect) -> float:
        """Seconds ``effect`` may take before it is abandoned and reported as failed."""
        if isinstance(effect, fx.StartApp | fx.StopApp | fx.RestartApp | StartBoth | StopBoth):
            # the data plane's remount is part of starting and stopping
            return self.app.budget + (DEFAULT_DEADLINE if self.data is not None else 0.0)
        if isinstance(effect, fx.Quarantine) and self.data is not None:
            return QUARANTINE_DEADLINE
        return DEFAULT_DEADLINE

    async def run(self) -> None:
        """Execute queued actions until cancelled; run the hooks and watch the
        foreground command meanwhile."""
        async with (
            self._send,
            self._receive,
            self._hooks_in,
            self._hooks_out,
            anyio.create_task_group() as tg,
        ):
            self._watchers = tg
            tg.start_soon(self._run_hooks)
            async for effect in self._receive:
                outcome = None
                try:
                    outcome = await self._execute(effect)
                    if isinstance(effect, fx.RequestArbitration | fx.RenewArbitration):
                        outcome = self._newest(outcome, self._queued_asks.popleft())
                    if outcome is not None:
                        await self.report(outcome)
                finally:
                    self._outstanding -= 1
                    self._requests -= isinstance(effect, fx.RequestArbitration)
                    if isinstance(effect, APP_EFFECTS):
                        self._app_actions -= 1
                    self.on_progress()
                if isinstance(outcome, ev.AppStarted):
                    # Only now: a death before the start is reported and counted
                    # done would be taken for a death while an action is pending.
                    self._watch_main()

    async def _run_hooks(self) -> None:
        async for change in self._hooks_out:
            await self.app.run_hook(change.source, change.target, change.reason)

    def _watch_main(self) -> None:
        """Report the death of the foreground command ``StartApp``/``RestartApp`` started
        (called once that action's ``AppStarted`` is reported)."""
        process = self.app.main
        if process is not None and self._watchers is not None:
            self._watchers.start_soon(self._wait_main, process)

    async def _wait_main(self, process: Process) -> None:
        await process.wait()
        reason = self.app.main_exited(process)
        if reason is None:
            return
        if self._app_actions:
            log.error("the application command died; an action on it is pending", reason=reason)
            return
        log.error("the application command died", reason=reason)
        await self.report(ev.AppFailed(reason=reason))

    async def _execute(self, effect: fx.Effect) -> ev.Event | None:
        deadline = self.deadline_for(effect)
        with anyio.move_on_after(deadline) as scope:
            outcome = await self._perform(effect)
        if not scope.cancelled_caught:
            return outcome
        reason = f"{effect.name} did not finish within {deadline:g} s"
        log.error("action abandoned at its deadline", effect=effect.name, deadline=deadline)
        if isinstance(effect, fx.StartApp | fx.RestartApp):
            self._note(
                "restart" if isinstance(effect, fx.RestartApp) else "start",
                "abandoned",
                ok=False,
                problem=reason,
            )
            return ev.AppFailed(reason=reason)
        if isinstance(effect, fx.StopApp):
            # The core must learn the stop is over; the VIP release is retried
            # here so that a hung script cannot leave the address behind.
            with anyio.move_on_after(DEFAULT_DEADLINE):
                await self.app.release_vip()
            self.app.running = False
            self._note("stop", "abandoned", ok=False, problem=reason)
            return ev.AppStopped()
        if isinstance(effect, fx.StartResync) and effect.role == "target":
            return ev.ResyncFailed(reason=reason)
        if isinstance(effect, fx.Quarantine):
            return ev.QuarantineFailed(reason=reason)
        if isinstance(effect, fx.RequestArbitration):
            return ev.ArbitrationDenied(reason=reason)
        return None

    async def _perform(self, effect: fx.Effect) -> ev.Event | None:
        if isinstance(effect, DATA_EFFECTS):
            if self.data is not None:
                return await self._perform_data(self.data, effect)
            log.error("data effect without replicated directories: ignored", effect=effect.name)
            return None
        match effect:
            case fx.StartApp():
                self._note("start", "begin")
                if self.data is not None:
                    await self.data.serve()
                failure = await self.app.start(self.repeat_in)
                return self._started("start", failure)
            case fx.RestartApp():
                # the VIP, the mirrors (read-write) and the replication stay as they are,
                # unless the watchdog's fence aborted the mirrors: then mounted again
                self._note("restart", "begin")
                if self.data is not None:
                    await self.data.serve()
                return self._started("restart", await self.app.restart(self.repeat_in))
            case fx.StopApp():
                return await self.stop_app()
            case StartBoth():
                await self.app.start_both()
                return None
            case StopBoth():
                await self.app.stop_both()
                return None
            case fx.RequestArbitration() | fx.RenewArbitration() | fx.ReleaseArbitration():
                return await self._arbitrate(effect)
            case _:
                log.error("effect not supported by this runtime: ignored", effect=effect.name)
                return None

    async def _arbitrate(
        self, effect: fx.RequestArbitration | fx.RenewArbitration | fx.ReleaseArbitration
    ) -> ev.Event | None:
        if self.arbitrator is None:
            log.error("arbitration effect without an arbitrator: ignored", effect=effect.name)
            return None
        match effect:
            case fx.RequestArbitration(generation=wanted, base=base, forced=forced):
                reply = await self.arbitrator.request(wanted, base, forced)
            case fx.RenewArbitration(generation=generation):
                reply = await self.arbitrator.renew(generation)
            case fx.ReleaseArbitration():
                reply = await self.arbitrator.release()
        log.info("arbitrator replied", effect=effect.name, reply=repr(reply))
        return arbitration_event(effect, reply)

    def _started(self, action: str, failure: str | None) -> ev.Event:
        """The outcome of a start or restart (journaled)."""
        self._note(action, "end", ok=failure is None, problem=failure)
        return ev.AppStarted() if failure is None else ev.AppFailed(reason=failure)

    def _note(self, action: str, phase: str, **fields: object) -> None:
        """Journal the application's (and virtual IP's) real start or stop."""
        if self.journal is not None:
            vip = None if self.app.vip is None else str(self.app.vip.address)
            self.journal("resource", action=action, phase=phase, vip=vip, **fields)

    async def stop_app(self) -> ev.Event:
        """The hand-over order (``StopApp``'s contract): ``prestop``, the stop script
        and the end of the foreground command; then what
        the application wrote is replicated and acknowledged, and the replicated
        directories turn read-only; then the virtual IP is released, then
        ``poststop``. Only then is ``AppStopped`` reported, and the core
        announces the node ready."""
        self._note("stop", "begin")
        problem = await self.app.run_stop_script()
        if self.data is not None:
            unflushed = await self.data.flush_replication()
            if unflushed is not None:
                log.error("writes made while stopping may be missing on the peer", why=unflushed)
            await self.data.unserve()
        problem = await self.app.release() or problem
        if problem is not None:
            log.error("application stopped with a problem", problem=problem)
        self._note("stop", "end", ok=problem is None, problem=problem)
        return ev.AppStopped()

    async def _perform_data(self, data: DataPlane, effect: fx.Effect) -> ev.Event | None:
        """A data effect on the replicated directories: its outcome, if it has one now."""
        match effect:
            case fx.StartReplication():
                await data.start_replication()
            case fx.StopReplication():
                await data.stop_replication()
            case fx.StartTracking(since=since):
                await anyio.to_thread.run_sync(data.start_tracking, str(since))
            case fx.StopTracking():
                await anyio.to_thread.run_sync(data.stop_tracking)
            case fx.StartResync():
                data.start_resync(effect)  # reports its outcome when it ends
            case fx.StopResync():
                data.stop_resync()
            case fx.Quarantine():
                return await data.quarantine(effect)
        return None
