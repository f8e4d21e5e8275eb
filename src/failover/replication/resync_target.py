"""The target side of a resync: what this node waits for, and asks of its source.

``expect(mode, generation)`` starts a wait (one at a time: a new one replaces
the last). An incremental one digests the suspect set at once, in a worker
thread, so that the request a session's ``WELCOME`` carries finds the digests
cached: that disk work follows the data plane's decision, never a connection
(a stranger's connection never causes a digest pass; ``Receiving`` waits for a
pass under way before it answers a ``HELLO``). A full one first sets every
directory's contents aside (``set_aside``), and is ``wanted`` only once that
is done: nothing is received over data that was not set aside. A set-aside
that fails answers no source (``on_set_aside_failed``); one stopped or
replaced meanwhile still ends its moves in its thread, and ``settled()`` waits
for it (the application never gets the directories while files still move).

``done`` (END applied, in the apply thread) ends the wait (``on_done`` with its
generation; an END nobody waited for is logged only); ``apply_failed`` reports a
change that failed during one (``on_failed``). Mechanism only: the data plane
(``runtime/dataplane.py``) maps these callbacks to the core's events.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import structlog
from anyio.abc import TaskGroup

from failover.errors import FailoverError
from failover.replication.apply import ApplyError
from failover.replication.directories import Directories, close_all
from failover.replication.resync import ResyncTarget
from failover.replication.resync_check import CheckCache
from failover.replication.tracking import Tracker

log = structlog.get_logger("failover.dataplane")

G = TypeVar("G")


@dataclass(frozen=True, eq=False)
class _Wait(Generic[G]):
    full: bool
    generation: G


class ResyncWait(Generic[G]):
    """This node as the target of resyncs (see the module docstring). ``attach``
    gives it the tracker and the task group once the data plane runs."""

    def __init__(
        self,
        directories: Directories,
        *,
        base: Callable[[], str],
        set_aside: Callable[[], Awaitable[tuple[str, Exception] | None]],
        on_done: Callable[[G], Awaitable[None]],
        on_failed: Callable[[str], Awaitable[None]],
        on_set_aside_failed: Callable[[str], Awaitable[None]],
    ) -> None:
        self.directories = directories
        self.checks = directories.checks
        self.base = base  # the last generation both copies held: a request's base
        self.set_aside = set_aside
        self.on_done, self.on_failed = on_done, on_failed
        self.on_set_aside_failed = on_set_aside_failed
        self.tracker: Tracker | None = None
        self._group: TaskGroup | None = None
        self._target: _Wait[G] | None = None  # answered: a source's session gets our request
        self._setting_aside: _Wait[G] | None = None  # a full one, before it may be answered
        self._lock = anyio.Lock()  # one set-aside at a time
        self._digested = anyio.Event()  # no digest pass under way
        self._digested.set()
        self._again = False  # an expect came during a pass: digest once more
        self.received = 0  # resyncs whose END was applied here

    def attach(self, tracker: Tracker, group: TaskGroup) -> None:
        self.tracker, self._group = tracker, group

    @property
    def wanted(self) -> bool | None:
        """None when no resync is answered; else whether it is a full one."""
        return None if self._target is None else self._target.full

    def expect(self, mode: str, generation: G) -> None:
        assert self._group is not None
        self.checks.forget()  # digested before: the copy may have changed since
        wait = _Wait(mode == "full", generation)
        if wait.full:  # nothing is received before what the copy overwrites is set aside
            self._target, self._setting_aside = None, wait
            self._group.start_soon(self._set_aside_then_answer, wait)
        else:  # replaces any full one still being, or held from being, set aside
            self._target, self._setting_aside = wait, None
            self.digest()

    def stop(self) -> None:
        self._target = self._setting_aside = None

    def status(self) -> dict[str, Any]:
        return {
            "resync_wanted": self._target is not None or self._setting_aside is not None,
            "resyncs_received": self.received,
        }

    @contextlib.asynccontextmanager
    async def settled(self) -> AsyncIterator[None]:
        """Held while no set-aside moves files (and none starts)."""
        async with self._lock:
            yield

    async def _set_aside_then_answer(self, wait: _Wait[G]) -> None:
        async with self._lock:  # an earlier resync's may still be moving
            if self._setting_aside is not wait:
                return  # stopped or replaced before it began
            failed = await self.set_aside()
            if self._setting_aside is not wait:
                return  # the core stopped or replaced this resync meanwhile
            self._setting_aside = None
            if failed is None:
                self._target = wait
                return
        name, exc = failed  # never copy over data that was not set aside
        log.error("full resync held: data left in place", directory=name, error=str(exc))
        await self.on_set_aside_failed(f"could not quarantine {name} before a full resync: {exc}")

    # -- the request --------------------------------------------------------------------

    def digest(self) -> None:
        """Digest the suspect set in the background, unless a pass is under way or
        no incremental resync is answered (called on ``expect``, and when an
        authenticated session ended: its writes voided the digests)."""
        if self.wanted is not False:
            return
        if not self._digested.is_set():
            self._again = True  # what the pass under way digests may be voided
            return
        assert self._group is not None and self.tracker is not None
        self._digested = done = anyio.Event()
        self._group.start_soon(self._digest, self.tracker, done)

    async def _digest(self, tracker: Tracker, done: anyio.Event) -> None:
        try:
            self._again = True
            while self._again and self.wanted is False:
                self._again = False
                roots = await self.directories.dup_roots()
                try:
                    await anyio.to_thread.run_sync(_prepare, self.checks, roots, tracker)
                finally:
                    close_all(roots)
        except (OSError, FailoverError) as exc:  # the request then goes without digests
            log.warning("resync request: suspect set not digested", error=str(exc))
        finally:
            done.set()

    async def digested(self) -> None:
        """Until no digest pass is under way (it does not start one)."""
        await self._digested.wait()

    def request(self, session: ResyncTarget) -> bytes:
        """What this node asks of the source (``b""``: nothing): its base generation,
        full or not, and every change it may hold that the source does not (the
        tracker's map), with the cached digests of what it holds there."""
        full = self.wanted
        if full is None:
            return b""
        assert self.tracker is not None
        # the base: the last point both copies held (after a split brain, before our own
        # changes, which the suspect set lists), where the source's tracking starts
        return session.request(self.base(), self.tracker.changes(), full=full)

    # -- outcomes -----------------------------------------------------------------------

    def done(self) -> None:
        """END of a resync applied (in the receiver's apply thread)."""
        target, self._target = self._target, None
        self.received += 1
        if target is None:
            log.warning("a resync ended that this node did not wait for")
            return
        anyio.from_thread.run(self._report_done, target.generation)

    async def _report_done(self, generation: G) -> None:
        await self.on_done(generation)

    async def apply_failed(self, peer: str, exc: ApplyError) -> None:
        """A change from ``peer`` failed here: during a resync this copy is not what
        the plan assumed (``on_failed``)."""
        log.error(
            "replication session from the peer ended: a change failed here",
            peer=peer,
            error=str(exc),
        )
        if self._target is not None:
            await self.on_failed(f"a change from {peer} failed here: {exc}")


def _prepare(checks: CheckCache, roots: dict[str, int], tracker: Tracker) -> None:
    checks.prepare(roots, tracker.changes())
