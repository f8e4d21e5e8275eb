"""The timer task: fires ``Timer`` when the core's next deadline is reached.

The event loop publishes ``node.next_deadline()`` after every ``handle``
through a ``DeadlineSignal``; the timer task sleeps until that deadline or
until it changes, whichever comes first. Deadlines are on anyio's clock
(``anyio.current_time()``), which is also the ``now`` given to the core, so a
virtual clock in tests drives both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio


class DeadlineSignal:
    """The core's next deadline, as last published, and a way to wait for a change."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self._changed = anyio.Event()

    def publish(self, deadline: float | None) -> None:
        """Record ``deadline``; wakes the timer task only if it differs."""
        if deadline != self.deadline:
            self.deadline = deadline
            self._changed.set()
            self._changed = anyio.Event()

    def changed(self) -> anyio.Event:
        """An event set at the next change (take it before reading ``deadline``)."""
        return self._changed


async def run_timer(signal: DeadlineSignal, fire: Callable[[], Awaitable[None]]) -> None:
    """Call ``fire`` once each time the published deadline is reached, until cancelled.

    A deadline fires at most once: after firing, the task waits for a new
    deadline to be published (the core moves it when it handles ``Timer``), so
    a core that leaves a past deadline in place cannot make it spin.
    """
    fired: float | None = None
    while True:
        changed = signal.changed()
        deadline = signal.deadline
        if deadline is None or deadline == fired:
            await changed.wait()
            continue
        with anyio.CancelScope(deadline=deadline):
            await changed.wait()
            continue
        fired = deadline
        await fire()
