"""The daemon's scheduling priority: the heartbeat path must run when the machine is busy.

A peer is declared lost after ``dead_timeout`` of silence: a daemon that a
loaded machine does not schedule in time looks dead to its peer. As corosync
does (it runs real-time), the daemon raises its own priority at start, here
with the plain CFS niceness (``DAEMON_NICE``): a CPU hog at the default
niceness then gets a fraction of the daemon's share, and nothing real-time
can starve the rest of the machine. Threads created afterwards (anyio's
workers, the FUSE threads) inherit it. The operator's scripts must not: they
are forked while the forking thread is back at the niceness the daemon
started with (``spawning_as_inherited``), so a script, and whatever it starts
from its first instruction on, never runs favoured.

Raising it needs ``CAP_SYS_NICE`` (root has it); without, the daemon says so
once and runs at its inherited niceness.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

DAEMON_NICE = -10
"""The niceness the daemon asks for (lower is more favoured; -20 to 19)."""

# once raised: "nice", the niceness before raise_priority, and "raised", the one it set
_inherited: dict[str, int] = {}


def raise_priority(nice: int = DAEMON_NICE) -> str | None:
    """Set the calling thread's niceness to ``nice`` (call it from the main thread
    before any other thread starts). None on success, else why it was not done."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current <= nice:
        return None
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        return f"cannot raise the scheduling priority to nice {nice}: {exc.strerror or exc}"
    _inherited.setdefault("nice", current)
    _inherited["raised"] = nice
    return None


@contextlib.contextmanager
def spawning_as_inherited() -> Iterator[None]:
    """Around the spawn of a script: the calling thread (Linux niceness is per
    thread, and a forked child takes its forking thread's) is put back to the
    niceness the daemon had before ``raise_priority``, and raised again after,
    to the niceness ``raise_priority`` set (not the one found on entry: two
    spawns that overlap on the event loop's thread would leave it lowered).
    Nothing to do when the priority was never raised."""
    if "nice" not in _inherited:
        yield
        return
    os.setpriority(os.PRIO_PROCESS, 0, _inherited["nice"])
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # CAP_SYS_NICE raised it once: it can again
            os.setpriority(os.PRIO_PROCESS, 0, _inherited["raised"])
