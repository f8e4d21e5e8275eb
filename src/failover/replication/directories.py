"""A node's replicated directories, each served through its FUSE ``Mirror``.

Mechanism only (the data plane in ``runtime/dataplane.py`` decides when):

- ``mount``/``unmount``/``remount``: every directory read-only (no listener:
  applications cannot write a secondary's copy; the receiver writes under the
  mount through the directory fd), or read-write with the relay as listener;
- ``dup_roots``: duplicates of the directories' fds taken while no remount runs
  (a remount closes the mirrors' fds, whose numbers may then be reused), for a
  session or a quarantine that outlives a remount;
- ``move_aside``: a quarantine move over every directory in turn, in a worker
  thread, stopping at the first directory that fails: a split brain's tracked
  changes (``quarantine_changes``), or everything before a full resync
  (``set_aside``).

``directories_hold_data`` looks at the directories before any mirror is mounted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from threading import Lock

import anyio
import structlog

from failover.errors import UsageError
from failover.replication.mirror import Mirror, MirrorListener
from failover.replication.quarantine import Manifest, quarantine, quarantine_before_full_resync
from failover.replication.resync_check import CheckCache
from failover.replication.tracking import Tracker

log = structlog.get_logger("failover.dataplane")


class Directories:
    """The mirrors of ``roots`` (name -> path), mounted from ``mount`` on.
    ``remounting`` is held while the mirrors are swapped; ``checks`` (the digests
    of this copy a resync request carries) are voided by every move."""

    def __init__(self, roots: Mapping[str, Path], checks: CheckCache) -> None:
        self.roots = dict(roots)
        self.checks = checks
        self.mirrors: dict[str, Mirror] = {}
        self.remounting = anyio.Lock()

    async def mount(self, listener: MirrorListener | None) -> None:
        """Mount every directory: read-write with ``listener``, else read-only."""
        for name, path in self.roots.items():
            mirror = Mirror(name, path, listener, read_only=listener is None)
            await anyio.to_thread.run_sync(mirror.mount)
            self.mirrors[name] = mirror

    def unmount(self) -> None:
        for name, mirror in list(self.mirrors.items()):
            try:
                mirror.unmount()
            except UsageError:
                # files are still open in it (a process outlived the stop script)
                log.warning("replicated directory busy: detached lazily", directory=name)
                mirror.unmount(lazy=True)
            del self.mirrors[name]

    async def remount(self, listener: MirrorListener | None) -> None:
        """Swap every mirror for one read-write with ``listener`` (or read-only)."""
        async with self.remounting:
            await anyio.to_thread.run_sync(self.unmount)
            await self.mount(listener)

    def answering(self) -> bool:
        """Every mirror mounted and alive (``Mirror.answering``): False after the
        watchdog's fence aborted them (blocking: run it in a worker thread)."""
        return all(mirror.answering() for mirror in self.mirrors.values())

    def backing_fds(self) -> dict[str, int]:
        return {name: mirror.backing_fd for name, mirror in self.mirrors.items()}

    def order_locks(self) -> dict[str, Lock]:
        return {name: mirror.order_lock for name, mirror in self.mirrors.items()}

    async def dup_roots(self) -> dict[str, int]:
        """Each mirror's backing directory fd, duplicated while no remount runs (the
        caller closes them with ``close_all``); all or none."""
        async with self.remounting:
            return dup_roots(self.mirrors)

    async def move_aside(
        self, move: Callable[[str, int], Manifest | None], moved: str, **fields: str
    ) -> tuple[str, Exception] | None:
        """``move(name, fd)`` for each replicated directory in turn, in a worker
        thread, logging ``moved`` for each set made. It works on duplicates of the
        directories' fds (``dup_roots``), as a received session does.
        None once every directory is done; else the first directory that failed
        and why (an ``OSError`` or ``UsageError``; the ones after it untouched)."""
        try:
            roots = await self.dup_roots()
        except OSError as exc:
            return "the replicated directories", exc

        def counted(name: str, fd: int) -> Manifest | None:
            with self.checks.writing():  # digests of this copy for a resync no longer hold
                return move(name, fd)

        try:
            for name, fd in roots.items():
                try:
                    manifest = await anyio.to_thread.run_sync(counted, name, fd)
                except (OSError, UsageError) as exc:
                    return name, exc
                if manifest is not None:
                    log.warning(moved, directory=name, manifest=str(manifest.directory), **fields)
        finally:
            close_all(roots)
        return None

    async def quarantine_changes(
        self, tracker: Tracker, into: Path, generation: str, peer: str, **fields: str
    ) -> tuple[str, Exception] | None:
        """A split brain's losing side: every entry ``tracker`` recorded moves to a
        quarantine set in ``into`` (``quarantine``); the tracker keeps the set.
        The first directory that failed and why, or None (``move_aside``)."""
        changes = tracker.changes()

        def move(name: str, fd: int) -> Manifest:
            return quarantine(
                name,
                fd,
                changes,
                into,
                generation=generation,
                peer=peer,
                now=time.time(),
                tracker=tracker,
            )

        return await self.move_aside(move, "divergent data quarantined", **fields)

    async def set_aside(
        self, into: Path, generation: str, peer: str
    ) -> tuple[str, Exception] | None:
        """Before a full resync from ``peer``: every entry moves to a quarantine set
        in ``into`` (``quarantine_before_full_resync``). As ``move_aside``."""

        def move(name: str, fd: int) -> Manifest | None:
            return quarantine_before_full_resync(
                name, fd, into, generation=generation, peer=peer, now=time.time()
            )

        return await self.move_aside(move, "data quarantined before a full resync")


def directories_hold_data(roots: Mapping[str, Path]) -> bool:
    """Whether any replicated directory holds an entry, looked at before the
    mirrors are mounted over them (a first start decides on it). A directory
    that cannot be read counts as holding data: it is then never served over
    nor overwritten on a guess."""
    for name, path in roots.items():
        try:
            with os.scandir(path) as entries:
                if next(entries, None) is not None:
                    return True
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning(
                "replicated directory unreadable: counted as holding data",
                directory=name,
                error=str(exc),
            )
            return True
    return False


def dup_roots(mirrors: Mapping[str, Mirror]) -> dict[str, int]:
    """Each mirror's backing directory fd, duplicated (the caller closes them); all or none."""
    roots: dict[str, int] = {}
    try:
        for name, mirror in mirrors.items():
            roots[name] = os.dup(mirror.backing_fd)
    except BaseException:
        close_all(roots)
        raise
    return roots


def close_all(fds: Mapping[str, int]) -> None:
    for fd in fds.values():
        os.close(fd)
