"""Helpers of the change-tracking tests: tree snapshots, the superset check, a random
workload of real file operations, and the child process the crash tests kill.

Run as a program, it is that child: it reopens a ``Tracker`` in a state directory,
applies random ops to a data directory (``Applier``), one line on stdout per op
done, until it is killed (or kills itself at a chosen point, ``--die-at``).
Before each op it appends the op to a ledger (the ops it may have made), so the
parent can bound what recovery may add.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import stat
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from failover.errors import PeerProtocolError
from failover.replication.apply import Applier
from failover.replication.ops import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    RENAME_NOREPLACE,
    Chmod,
    Create,
    Fallocate,
    Link,
    Mkdir,
    Op,
    RemoveXattr,
    Rename,
    Rmdir,
    SetXattr,
    Symlink,
    Truncate,
    Unlink,
    Utimens,
    Write,
    decode,
    encode,
)
from failover.replication.tracking import ChangeSet, Tracker, Zones

ROOT = "data"
PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE

# --- snapshots and the superset check ------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str  # "f", "d", "l"
    mode: int
    mtime_ns: int
    content: bytes  # file content, symlink target, b"" for a directory
    xattrs: tuple[tuple[str, bytes], ...]


def snapshot(top: Path) -> dict[bytes, Entry]:
    """Every entry under ``top`` by relative path (bytes), without following symlinks."""
    out: dict[bytes, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(top)):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, os.fsencode(top))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                kind, content = "l", os.readlink(full)
            elif stat.S_ISDIR(st.st_mode):
                kind, content = "d", b""
            else:
                kind = "f"
                with open(full, "rb") as f:
                    content = f.read()
            xattrs: tuple[tuple[str, bytes], ...] = ()
            if kind != "l":
                xattrs = tuple(sorted((a, os.getxattr(full, a)) for a in os.listxattr(full)))
            out[rel] = Entry(kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns, content, xattrs)
    return out


def _parent(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


def superset_problems(
    changes: ChangeSet, pre: dict[bytes, Entry], post: dict[bytes, Entry], root: str = ROOT
) -> list[str]:
    """Every real difference between ``pre`` and ``post`` that ``changes`` misses.

    An entry whose name (or an ancestor's) changed is covered entirely; a
    directory's times are covered when a name inside it changed; a file's size,
    times and bytes must lie in its dirty zones (or its meta for size/times).
    Link counts are not compared (a link count follows the names).
    """
    problems: list[str] = []
    zs = changes.zone_size
    named_parents = {_parent(p) for r, p in changes.names if r == root}
    for path in sorted(set(pre) | set(post)):
        if changes.name_changed(root, path):
            continue
        before, after = pre.get(path), post.get(path)
        if before is None or after is None or before.kind != after.kind:
            problems.append(f"{path!r}: existence or type changed, not in names")
            continue
        key = (root, path)
        zones = changes.files.get(key, Zones())
        in_meta = key in changes.meta
        if (before.mode != after.mode or before.xattrs != after.xattrs) and not in_meta:
            problems.append(f"{path!r}: mode or xattrs changed, not in meta")
        times_covered = in_meta or key in changes.files or path in named_parents
        if before.mtime_ns != after.mtime_ns and not times_covered:
            problems.append(f"{path!r}: mtime changed, not recorded")
        if before.content == after.content:
            continue
        if after.kind != "f":
            problems.append(f"{path!r}: symlink target changed, not in names")
            continue
        if len(before.content) != len(after.content) and not in_meta and not zones:
            problems.append(f"{path!r}: size changed, not recorded")
        # Setting the size on the peer cuts its copy or extends it with zeros: compare to that.
        resized = before.content[: len(after.content)].ljust(len(after.content), b"\0")
        for zone in range(-(-len(after.content) // zs)):
            a = resized[zone * zs : (zone + 1) * zs]
            b = after.content[zone * zs : (zone + 1) * zs]
            if a != b and zone not in zones:
                problems.append(f"{path!r}: bytes of zone {zone} changed, zone not dirty")
                break
    return problems


def excess_zones(recovered: ChangeSet, exact: ChangeSet) -> int:
    """Dirty zones in ``recovered`` (below its tails) that ``exact`` does not have."""
    excess = 0
    for key, zones in recovered.files.items():
        wanted = exact.files.get(key, Zones())
        for start, end in zones.runs:
            excess += sum(1 for z in range(start, end) if z not in wanted)
    return excess


# --- a random workload of real operations --------------------------------------------------------


class Workload:
    """Random ops over a model of the tree (ops may still fail: fine, they are recorded).

    ``writes_only``: only writes to the files present at the start, each at an
    extent this process has not written yet (for the deterministic intent-order test).
    """

    def __init__(self, top: Path, rng: random.Random, zone_size: int, writes_only: bool) -> None:
        self.rng = rng
        self.zone_size = zone_size
        self.writes_only = writes_only
        self.files: list[bytes] = []
        self.dirs: list[bytes] = []
        for path, entry in snapshot(top).items():
            if entry.kind == "f":
                self.files.append(path)
            elif entry.kind == "d":
                self.dirs.append(path)
        self.files.sort()
        self.dirs.sort()
        self.counter = 0
        self.cursor = 0
        self.last_write: tuple[bytes, int] | None = None

    def _new_name(self) -> bytes:
        self.counter += 1
        parent = self.rng.choice([*self.dirs, b""])
        name = b"n%d-%d" % (os.getpid() % 1000, self.counter)
        return parent + b"/" + name if parent else name

    def next_op(self) -> Op:
        rng, zs = self.rng, self.zone_size
        if self.writes_only:
            path = self.files[self.cursor % len(self.files)]
            self.cursor += 1
            return Write(ROOT, path, (self.cursor * 7 + 3) * 64 * zs, rng.randbytes(zs))
        roll = rng.random()
        if not self.files or roll < 0.06:
            return Create(ROOT, self._new_name(), 0o644)
        path = rng.choice(self.files)
        if roll < 0.6:
            if self.last_write is not None and rng.random() < 0.6 and roll < 0.5:
                path, offset = self.last_write  # locality: hits in the hot set
                offset = max(0, offset + rng.randrange(-2 * zs, 2 * zs))
            else:
                offset = rng.randrange(0, 64 * zs)
            self.last_write = (path, offset)
            size = rng.choice([1, 100, zs, 3 * zs + 5, 20 * zs])
            return Write(ROOT, path, offset, rng.randbytes(size))
        ops: list[Op] = [
            Truncate(ROOT, path, rng.randrange(0, 40 * zs)),
            Fallocate(ROOT, path, PUNCH, rng.randrange(0, 32 * zs), 5 * zs),
            Unlink(ROOT, path),
            Rename(ROOT, path, self._new_name(), 0),
            Rename(ROOT, path, rng.choice(self.files), 0),
            Rename(ROOT, path, rng.choice(self.files), RENAME_NOREPLACE),
            Mkdir(ROOT, self._new_name(), 0o755),
            Symlink(ROOT, self._new_name(), b"../target"),
            Link(ROOT, path, self._new_name()),
            Chmod(ROOT, path, rng.choice([0o600, 0o640, 0o755])),
            Utimens(ROOT, path, 10**18, rng.randrange(10**18)),
            SetXattr(ROOT, path, b"user.k", rng.randbytes(8), 0),
            RemoveXattr(ROOT, path, b"user.k"),
        ]
        if self.dirs:
            directory = rng.choice(self.dirs)
            ops += [Rmdir(ROOT, directory), Rename(ROOT, directory, self._new_name(), 0)]
        return rng.choice(ops)

    def done(self, op: Op) -> None:
        """Update the model after ``op`` succeeded."""
        if isinstance(op, Create | Link):
            self.files.append(op.path if isinstance(op, Create) else op.new)
        elif isinstance(op, Unlink):
            self.files.remove(op.path)
        elif isinstance(op, Mkdir):
            self.dirs.append(op.path)
        elif isinstance(op, Rmdir):
            self.dirs.remove(op.path)
        elif isinstance(op, Rename):
            self._renamed(op.old, op.new)

    def _renamed(self, old: bytes, new: bytes) -> None:
        def moved(path: bytes) -> bytes:
            if path == old or path.startswith(old + b"/"):
                return new + path[len(old) :]
            return path

        self.files = sorted({moved(p) for p in self.files if p != new})
        self.dirs = sorted({moved(p) for p in self.dirs if p != new})


def make_tree(top: Path, rng: random.Random, zone_size: int) -> None:
    """A starting tree: a few files of random content (up to ~40 zones) in two levels."""
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "deep").mkdir()
    for i, where in enumerate(["", "sub/", "sub/deep/", "", "sub/"]):
        data = rng.randbytes(rng.randrange(0, 40 * zone_size))
        (top / f"{where}f{i}").write_bytes(data)


# --- the ledger ----------------------------------------------------------------------------------

_LEDGER = struct.Struct(">II")


def ledger_entry(op: Op) -> bytes:
    """The op without its data (only its length matters to the rules)."""
    length = 0
    if isinstance(op, Write):
        length, op = len(op.data), replace(op, data=b"")
    raw = encode(op)
    return _LEDGER.pack(len(raw), length) + raw


def read_ledger(path: Path) -> Iterator[Op]:
    data = path.read_bytes() if path.exists() else b""
    pos = 0
    while pos + _LEDGER.size <= len(data):
        size, length = _LEDGER.unpack_from(data, pos)
        raw = data[pos + _LEDGER.size : pos + _LEDGER.size + size]
        if len(raw) != size:
            return  # torn by the kill: that op never started
        pos += _LEDGER.size + size
        op = decode(raw)
        yield replace(op, data=bytes(length)) if isinstance(op, Write) else op


# --- the child -----------------------------------------------------------------------------------


def child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--zone", type=int, required=True)
    parser.add_argument("--extent", type=int, required=True)
    parser.add_argument("--hot", type=int, required=True)
    parser.add_argument("--writes-only", action="store_true")
    parser.add_argument("--intent-after-data", action="store_true", help="the mutant order")
    parser.add_argument("--die-at", type=int, default=0, help="SIGKILL self after this write")
    args = parser.parse_args(argv)
    tracker = Tracker(
        args.state, zone_size=args.zone, extent_size=args.extent, hot_extents=args.hot
    )
    workload = Workload(Path(args.data), random.Random(args.seed), args.zone, args.writes_only)
    ledger = os.open(args.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    writes = 0
    with Applier({ROOT: args.data}) as applier:
        while True:
            op = workload.next_op()
            os.write(ledger, ledger_entry(op))
            if not args.intent_after_data:
                tracker.before(op)
            try:
                applier.apply(op)
                workload.done(op)
            except PeerProtocolError:
                pass
            if isinstance(op, Write):
                writes += 1
                if writes == args.die_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            if args.intent_after_data:
                tracker.before(op)
            sys.stdout.write("op\n")
            sys.stdout.flush()


if __name__ == "__main__":
    child(sys.argv[1:])
