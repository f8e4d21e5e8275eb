"""``python e2e_mutant_daemon.py run ...``: the ``failover`` command with a runtime
mutant that breaks S1, for the audit's e2e test (never used in production code).

The mutant: the executor reports ``AppStopped`` as soon as a ``StopApp`` begins and
runs the real stop (stop script, then the virtual IP's release) in the background.
The core believes the application is down, announces it (a swap's hand-over, a
``stop``), and the peer starts its application while this node's stop script is
still running: two applications at once, the runtime bug the audit must catch.
The executor's journal records stay truthful (they are written by the real stop).
"""

from __future__ import annotations

import sys

from failover.cli import main
from failover.core import effects as fx
from failover.core import events as ev
from failover.runtime.executor import ActionExecutor

_real_perform = ActionExecutor._perform


async def _announce_before_stopping(self: ActionExecutor, effect: fx.Effect) -> ev.Event | None:
    if isinstance(effect, fx.StopApp) and self.repeat_in is not None:
        self.repeat_in.start_soon(_real_perform, self, effect)
        return ev.AppStopped()
    return await _real_perform(self, effect)


ActionExecutor._perform = _announce_before_stopping  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
