"""Periodic checker commands, reported to the core as CheckerDown/CheckerUp.

A checker is healthy while its command exits 0 within its timeout. Every
checker starts as healthy (the core assumes so until told otherwise); an event
is sent only when the outcome changes, so a checker that keeps failing costs
the core one event, not one per run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from failover.core import events as ev
from failover.platform.scripts import ScriptResult, run_script

log = structlog.get_logger("failover.checkers")

Report = Callable[[ev.Event], Awaitable[None]]


@dataclass(frozen=True)
class CheckerSpec:
    """One configured checker: run ``command`` every ``interval`` s, for at most ``timeout`` s."""

    name: str
    command: str
    interval: float
    timeout: float


async def run_checker(
    spec: CheckerSpec,
    report: Report,
    *,
    output_dir: Path,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``spec`` forever (until cancelled), calling ``report`` on every change.

    The first run starts at once; later runs start ``interval`` seconds after
    the previous one started (or as soon as it ends, if it took longer).
    """
    healthy = True
    output = output_dir / f"checker-{spec.name}.log"
    while True:
        started = anyio.current_time()
        result = await run_script(
            spec.command,
            timeout=spec.timeout,
            label=f"checker {spec.name}",
            output=output,
            env=env,
        )
        if result.ok != healthy:
            healthy = result.ok
            await report(_event_for(spec.name, result))
        await anyio.sleep_until(started + spec.interval)


def _event_for(name: str, result: ScriptResult) -> ev.Event:
    if result.ok:
        log.info("checker up", checker=name)
        return ev.CheckerUp(checker=name)
    log.warning("checker down", checker=name, reason=result.reason)
    return ev.CheckerDown(checker=name, reason=result.reason)
