"""Checked resync: send only the suspect zones that differ (DRBD's ``csums-alg``, per zone).

A crashed ex-primary's suspect set (``Tracker.recover``) is a coarse superset
of what it may hold without acknowledgement: whole activity extents that were
hot (4 MiB each, up to the hot set), every zone written since the tracker was
last cleared, and every name created or renamed (a file there would go whole).
Almost all of it is, in fact, identical on both nodes: it was acknowledged.

So the target digests what it holds in its suspect set (``checks_for``: per
file its size and a SHA-256 digest per suspect zone; for a suspect *name*
that is a regular file of one link, every zone) and sends the digests in its
request. The source (``narrow``) reads the same zones of its own files and
drops from the suspect set every zone whose bytes are provably equal on both
sides; a suspect name that is a regular file on both becomes its differing
zones plus its metadata (and its parent's). Everything else stays as it was.

Why it is safe (the plan is ``own | narrowed suspect``, ``own`` taken after
``narrow`` under the order locks, ``BEGIN`` sent in the same hold):

- A zone the source changed since the epoch began is in ``own``: sent anyway.
  Any other zone holds on the source what it held at the epoch start, up to
  ``BEGIN``; if its digest equals the target's, the target holds those bytes.
- The target holds them still at ``BEGIN``: only its sessions write its copy
  while it waits for a resync, and each session's ``ResyncTarget`` counts its
  writes in the node's ``CheckCache`` (the runtime counts its quarantine moves
  there too, and forgets the cache when a resync target period begins). The
  request carries digests only if no write began or ended since their pass
  began, and ``BEGIN`` refuses the resync if one did since the request (an
  earlier session still applying, say): the source retries, the next pass
  digests again. Counting, not digesting again at ``BEGIN``: a second pass
  there would hold the acknowledgements back longer than the channel timeout.
- Sizes: a zone lying past one side's end of file reads short there, so it
  differs; the zone holding the shorter end is always kept when the sizes
  differ, so the ``CHUNK`` that sets the size is sent.

The target digests at most ``budget`` bytes; files beyond it are sent blind, as
before. The request is made in the handshake, in the event loop, where reading
and hashing hundreds of MiB would stall the heartbeats: the runtime digests in a
worker thread before the handshake (``CheckCache.prepare``) and the request takes
the digests from the cache (``get``); a later session reuses them while nothing
wrote, so a flood of connections costs one digest pass, not one per connection.
"""

from __future__ import annotations

import hashlib
import os
import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import replace
from os import PathLike
from types import MappingProxyType
from typing import Final

from failover.replication.resync_tree import Tree
from failover.replication.resync_wire import (
    FileCheck,
    ResyncRequest,
    ZoneChecks,
    zone_runs,
)
from failover.replication.tracking import (
    DEFAULT_EXTENT_SIZE,
    DEFAULT_HOT_EXTENTS,
    WHOLE,
    ChangeSet,
    Key,
    Zones,
)

Roots = Mapping[str, int | PathLike[str] | str]

CHECK_BUDGET: Final = DEFAULT_HOT_EXTENTS * DEFAULT_EXTENT_SIZE
"""Default most suspect bytes the target digests for its request: the largest hot set
(1 GiB), so that hot extents are never sent blind."""
_READ: Final = 1024 * 1024


def zone_digests(fd: int, first: int, end: int, size: int, zone_size: int) -> list[bytes]:
    """The digests of zones [first, end) of a file of ``size`` bytes (a zone past the
    end of file reads short or empty; holes read as zeros)."""
    out: list[bytes] = []
    for zone in range(first, end):
        start = zone * zone_size
        stop = min(start + zone_size, size)
        hasher = hashlib.sha256()
        hasher.update(max(0, stop - start).to_bytes(8, "big"))
        position = start
        while position < stop:
            data = os.pread(fd, min(_READ, stop - position), position)
            if not data:  # shrank meanwhile: reads as what is there
                break
            hasher.update(data)
            position += len(data)
        out.append(hasher.digest())
    return out


def _zone_list(zones: Zones, limit: int) -> Iterator[int]:
    """The zones of ``zones`` below ``limit``, ascending."""
    for start, end in zones.runs:
        yield from range(start, min(end, limit))
    if zones.tail is not None:
        yield from range(zones.tail, limit)


def _count(size: int, zone_size: int) -> int:
    return -(-size // zone_size)


def _under_a_name(key: Key, names: frozenset[Key]) -> bool:
    root, path = key
    parts = path.split(b"/")
    return any((root, b"/".join(parts[:i])) in names for i in range(1, len(parts)))


# --- the target ---------------------------------------------------------------------------------


def checks_for(roots: Roots | Tree, suspect: ChangeSet, budget: int = CHECK_BUDGET) -> ZoneChecks:
    """The target's digests of its suspect set (module docstring), at most ``budget``
    bytes read. Unreadable files are left out (sent blind)."""
    zs = suspect.zone_size
    files: dict[Key, FileCheck] = {}
    tree = roots if isinstance(roots, Tree) else Tree(roots)
    try:
        known = set(tree.root_names)
        wanted = [(key, True) for key in sorted(suspect.names)]
        wanted += [(key, False) for key in sorted(suspect.files) if key not in suspect.names]
        for key, whole in wanted:
            root, path = key
            if root not in known or _under_a_name(key, suspect.names):
                continue
            try:
                with tree.regular_file(root, path) as found:
                    if found is None or (whole and found[1].st_nlink != 1):
                        continue
                    fd, info = found
                    zones = WHOLE if whole else suspect.files[key]
                    if zones.count(_count(info.st_size, zs)) * zs > budget:
                        continue
                    indices = list(_zone_list(zones, _count(info.st_size, zs)))
                    digests: dict[int, bytes] = {}
                    for first, end in zone_runs(indices):
                        digests.update(
                            zip(
                                range(first, end),
                                zone_digests(fd, first, end, info.st_size, zs),
                                strict=True,
                            )
                        )
            except OSError:
                continue  # unreadable here: sent blind
            budget -= len(indices) * zs
            files[key] = FileCheck(info.st_size, whole, MappingProxyType(digests))
    finally:
        if tree is not roots:
            tree.close()
    return ZoneChecks(zs, MappingProxyType(files))


class CheckCache:
    """The target's checks for one suspect set, shared by every session of the node
    (each session's ``ResyncTarget`` counts its writes here; the runtime counts its
    quarantine moves and calls ``forget`` when a resync target period begins).
    ``prepare`` digests off the event loop; ``get`` gives the digests only while no
    write began or ended since their pass began (with the write sequence they hold
    at), and ``unchanged_since`` tells ``BEGIN`` whether they still hold. Thread-safe."""

    def __init__(self, budget: int = CHECK_BUDGET) -> None:
        self.budget = budget
        self._lock = threading.Lock()  # one digest pass at a time
        self._counts = threading.Lock()
        self._sequence = 0  # every write's start and end
        self._active = 0  # writes in progress
        self._entry: tuple[ChangeSet, ZoneChecks, int | None] | None = None
        self.passes = 0
        """Digest passes made (each reads up to ``budget`` bytes)."""

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around every change a session makes to the directories."""
        with self._counts:
            self._sequence += 1
            self._active += 1
        try:
            yield
        finally:
            with self._counts:
                self._sequence += 1
                self._active -= 1

    def _quiet(self) -> int | None:
        """The write sequence, or None while a write is in progress."""
        with self._counts:
            return None if self._active else self._sequence

    def prepare(self, roots: Roots | Tree, suspect: ChangeSet) -> None:
        """Digest ``suspect`` unless the cache holds fresh checks of it. Blocks."""
        with self._lock:
            if self.get(suspect) is not None:
                return
            sequence = self._quiet()
            self._entry = (suspect, checks_for(roots, suspect, self.budget), sequence)
            self.passes += 1

    def get(self, suspect: ChangeSet) -> tuple[ZoneChecks, int] | None:
        """(the checks of ``suspect``, the write sequence they hold at) if prepared and
        no write began or ended since; else None (a request without them)."""
        entry = self._entry
        if entry is None or entry[0] != suspect or entry[2] is None:
            return None
        return (entry[1], entry[2]) if self.unchanged_since(entry[2]) else None

    def unchanged_since(self, sequence: int) -> bool:
        return self._quiet() == sequence

    def forget(self) -> None:
        """Drop the checks, and any a pass under way would store: the copy may have
        changed by other means than a session's writes (the node served, or is about to
        be quarantined)."""
        with self._counts:
            self._sequence += 1
        self._entry = None


# --- the source ---------------------------------------------------------------------------------


def narrow(request: ResyncRequest, roots: Roots) -> ResyncRequest:
    """``request`` with its suspect set narrowed to what may differ from this node's
    directories (module docstring); unchanged if it carries no checks or asks for a
    full sync, or if a file cannot be read here. Reads files: call it outside the
    order locks, before ``own`` is taken."""
    checks = request.checks
    if checks is None or request.full or checks.zone_size != request.suspect.zone_size:
        return request
    try:
        return _narrowed(request, checks, roots)
    except OSError:
        return request  # the suspect set as it came: a superset, only larger


def _narrowed(request: ResyncRequest, checks: ZoneChecks, roots: Roots) -> ResyncRequest:
    suspect = request.suspect
    zs = suspect.zone_size
    files = dict(suspect.files)
    names = set(suspect.names)
    meta = set(suspect.meta)
    with closing(Tree(roots)) as tree:
        known = set(tree.root_names)
        for key, check in checks.files.items():
            root, path = key
            if root not in known or key not in (names if check.whole else files):
                continue  # only what the target suspects can be narrowed
            with tree.regular_file(root, path) as found:
                if found is None:
                    continue  # not a regular file here: reconciled as planned
                fd, info = found
                zones = WHOLE if check.whole else files[key]
                kept = _differing(fd, info.st_size, check, zones, zs)
            if check.whole:
                names.discard(key)
                meta.add(key)
                parent = path.rpartition(b"/")[0]
                if parent:
                    meta.add((root, parent))
            files.pop(key, None)
            meta.add(key)  # its times may differ still (a plan lists every file's metadata)
            if kept.runs:
                files[key] = kept
    narrowed = ChangeSet(zs, MappingProxyType(files), frozenset(names), frozenset(meta))
    return replace(request, suspect=narrowed, checks=None)


def _differing(fd: int, size: int, check: FileCheck, zones: Zones, zone_size: int) -> Zones:
    """The zones of ``zones`` that may differ between this file (``size`` bytes) and
    the target's (``check``). Its work is bounded by the digests the target sent and
    the zones read here, never by the size it claims (run arithmetic, no zone lists)."""
    here, there = _count(size, zone_size), _count(check.size, zone_size)
    both, top = min(here, there), max(here, there)
    compared = [z for z in sorted(check.digests) if z < both and z in zones]
    mine: dict[int, bytes] = {}
    for first, end in zone_runs(compared):
        mine.update(
            zip(range(first, end), zone_digests(fd, first, end, size, zone_size), strict=True)
        )
    equal = [z for z in compared if mine[z] == check.digests[z]]
    kept = _without(_runs_below(zones, top), equal)
    if size != check.size:
        end = min(size, check.size) // zone_size  # the CHUNK that sets the size
        kept = _merged([*kept, (end, end + 1)])
    return Zones(tuple(kept))


def _runs_below(zones: Zones, limit: int) -> list[tuple[int, int]]:
    """The zones of ``zones`` below ``limit`` as runs [first, end), ascending."""
    runs = [(start, min(end, limit)) for start, end in zones.runs if start < limit]
    if zones.tail is not None and zones.tail < limit:
        runs.append((zones.tail, limit))
    return _merged(runs)


def _without(runs: list[tuple[int, int]], zones: list[int]) -> list[tuple[int, int]]:
    """``runs`` (ascending, disjoint) less the sorted zone indices ``zones``."""
    out: list[tuple[int, int]] = []
    for start, end in runs:
        position = start
        for zone in zones[bisect_left(zones, start) : bisect_left(zones, end)]:
            if position < zone:
                out.append((position, zone))
            position = zone + 1
        if position < end:
            out.append((position, end))
    return out


def _merged(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Runs [first, end) sorted, with overlapping or touching ones joined."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(runs):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
