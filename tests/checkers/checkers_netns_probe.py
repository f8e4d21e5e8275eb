"""``python checkers_netns_probe.py JSON``: one checker, run inside a network namespace.

The tests start it through ``nsenter --net`` so that the checker sees the
namespace's interfaces and routes. JSON gives the probe (``type`` interface
or ping, and its target) and the checker's interval, timeout and failures.
Every probe's outcome and every event the checker reports are printed as
JSON lines, in the order they happen; log records go to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import structlog

from failover.core import events as ev
from failover.platform.checkers import Checker, CheckerSpec
from failover.platform.checkers.probes import InterfaceProbe, Outcome, PingProbe, Probe, Session


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Printed(Session):
    """A session that prints each outcome of ``inner``."""

    def __init__(self, inner: Session) -> None:
        self.inner = inner

    async def check(self, timeout: float) -> Outcome:
        outcome = await self.inner.check(timeout)
        emit(probe=outcome.ok, reason=outcome.reason)
        return outcome

    async def changed(self) -> None:
        await self.inner.changed()

    def close(self) -> None:
        self.inner.close()


class PrintedProbe:
    def __init__(self, inner: Probe) -> None:
        self.inner = inner

    def open(self) -> Session:
        return Printed(self.inner.open())


async def report(event: ev.Event) -> None:
    emit(event=event.kind, reason=getattr(event, "reason", ""))


async def main(options: dict[str, Any]) -> None:
    probe: Probe
    if options["type"] == "interface":
        probe = InterfaceProbe(options["interface"])
    else:
        probe = PingProbe("ping", options["address"], Path(options["output_dir"]))
    spec = CheckerSpec(
        "probe",
        PrintedProbe(probe),
        interval=options["interval"],
        timeout=options["timeout"],
        failures=options["failures"],
    )
    checker = Checker(spec, report)
    checker.enable(0.0)
    await checker.run()


if __name__ == "__main__":
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    anyio.run(main, json.loads(sys.argv[1]))
