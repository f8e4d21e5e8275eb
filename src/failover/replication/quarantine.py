"""Keep what a resync would destroy in a quarantine directory: the losing
side's divergent entries after a split brain, and everything a full resync
is about to overwrite (``quarantine_before_full_resync``).

When both nodes served during a partition, the node that loses (by policy)
must resync from the winner, which would overwrite what its application wrote
alone. Before that, ``quarantine`` moves every entry its tracker recorded as
changed (``ChangeSet``: files with dirty zones, names, meta) out of the
replicated directory into::

    <quarantine_dir>/<UTC timestamp>-<generation>/<root>/<path>

with ``manifest.json`` beside the root directories, listing for each entry its
path, type, size, mode, mtime, the sha256 of files and the symlink target, and
the reason (split brain against which peer at which generation). A directory
moves with its subtree (every entry beneath it is listed too). On the same file
system an entry is renamed, never copied; across file systems it is copied to a
temporary name, made durable, renamed into place, and only then removed.

Crash-safe and idempotent: the manifest is written first (an intent, marked
incomplete, written with ``write_atomic``), then the entries are moved, each
rename made durable (both directories fsync'd), then the manifest is marked
complete. Running ``quarantine`` again for the same generation, after a crash
at any point, finds the same directory and finishes the recorded plan: every
changed entry is at all times either still in place or in quarantine. A path
already under a recorded entry is not planned twice; a destination that exists
already is never overwritten (the entry gets ``~2``, ``~3``... appended).

A full resync rebuilds the target's directories from the source's: every
file is rewritten and every entry the source lacks deleted. Before one
starts, ``quarantine_before_full_resync`` moves every top-level entry of the
directory into a set named ``<generation>-full`` (cause ``full resync`` in the
manifest), the same way: at a first start beside existing data, or after
``prim`` on the wrong node, nothing that was there is lost.

Symlinks are never followed: paths are resolved from the root's fd one
component at a time (``verify.parent_of``); a path below a symlink names
nothing and is recorded as ``unreachable``, a path with nothing there as
``absent``. The quarantine directory must be outside the replicated directory.

``list_quarantines`` and ``render_quarantines`` are ``failover quarantine list``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from failover.errors import PeerProtocolError, UsageError
from failover.fsutil import fsync_directory, write_atomic
from failover.replication.ops import Unlink, validate_path
from failover.replication.tracking import DEFAULT_ZONE_SIZE, ChangeSet, Tracker
from failover.replication.verify import open_root, parent_of

MANIFEST_NAME: Final = "manifest.json"
FORMAT: Final = 1
_PARTIAL: Final = ".partial-"
_STAMP: Final = re.compile(r"^\d{8}T\d{6}Z(?:~\d+)?-(.+)$")
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TYPES: Final = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFSOCK: "socket",
}
NOT_THERE: Final = ("absent", "unreachable")
"""Types of a planned path with nothing to move."""
SPLIT_BRAIN: Final = "split brain"
FULL_RESYNC: Final = "full resync"
CAUSES: Final = (SPLIT_BRAIN, FULL_RESYNC)
"""Why a set was made: this node lost a split brain, or a full resync was about
to overwrite its directories (a first start beside existing data, ``prim`` on
the other node, ``fullsync``)."""


def _reason(cause: str, peer: str, generation: str) -> str:
    if cause == FULL_RESYNC:
        return f"full resync from peer {peer} over generation {generation}"
    return f"split brain vs peer {peer} at generation {generation}"


@dataclass(frozen=True, slots=True)
class QuarantinedEntry:
    """One entry of the manifest.

    ``path``: relative to the replicated directory. ``type``: ``file``, ``dir``,
    ``symlink``, ``fifo``, ``char``, ``block``, ``socket``, or one of
    ``NOT_THERE``. ``moved_to``: for an entry moved as a whole, its path below
    ``<root>/`` in the quarantine set (None for an entry inside a moved
    directory, and for one not there). ``sha256``: hex, files only. ``target``:
    symlinks only.
    """

    path: bytes
    type: str
    size: int = 0
    mode: int = 0
    mtime_ns: int = 0
    sha256: str | None = None
    target: bytes | None = None
    moved_to: bytes | None = None


@dataclass(frozen=True, slots=True)
class RootQuarantine:
    complete: bool
    entries: tuple[QuarantinedEntry, ...]


@dataclass(frozen=True)
class Manifest:
    """A quarantine set: ``directory`` holds ``manifest.json`` and one directory per root."""

    directory: Path
    generation: str
    peer: str
    created: float
    roots: Mapping[str, RootQuarantine]
    cause: str = SPLIT_BRAIN

    @property
    def reason(self) -> str:
        return _reason(self.cause, self.peer, self.generation)

    @property
    def complete(self) -> bool:
        return all(part.complete for part in self.roots.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "generation": self.generation,
            "peer": self.peer,
            "created": self.created,
            "created_utc": _utc(self.created),
            "cause": self.cause,
            "reason": self.reason,
            "roots": {
                name: {"complete": part.complete, "entries": [_entry_json(e) for e in part.entries]}
                for name, part in sorted(self.roots.items())
            },
        }


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _entry_json(entry: QuarantinedEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"path": os.fsdecode(entry.path), "type": entry.type}
    if entry.type not in NOT_THERE:
        out.update(size=entry.size, mode=f"{entry.mode:04o}", mtime_ns=entry.mtime_ns)
    if entry.sha256 is not None:
        out["sha256"] = entry.sha256
    if entry.target is not None:
        out["target"] = os.fsdecode(entry.target)
    if entry.moved_to is not None:
        out["moved_to"] = os.fsdecode(entry.moved_to)
    return out


# --- reading a manifest back ----------------------------------------------------------------------


class _Fields:
    """Typed access to a JSON object; a problem is a ``UsageError`` naming file and field."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise UsageError(f"{where}: not an object")
        self.data: dict[str, Any] = data
        self.where = where

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise UsageError(f"{self.where}.{key}: missing")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise UsageError(f"{self.where}.{key}: wrong type {type(value).__name__}")
        return value


def load_manifest(directory: Path) -> Manifest:
    """Read ``directory/manifest.json``. Raises ``UsageError`` naming the file and
    field if it is missing, not JSON or not a manifest."""
    path = directory / MANIFEST_NAME
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}: {error}") from None
    top = _Fields(data, str(path))
    if top.get("format", int) != FORMAT:
        raise UsageError(f"{path}.format: unknown format {top.data['format']}")
    roots = {}
    for name, part in top.get("roots", dict).items():
        fields = _Fields(part, f"{path}.roots.{name}")
        entries = []
        for i, raw in enumerate(fields.get("entries", list)):
            entries.append(_entry_from_json(_Fields(raw, f"{fields.where}.entries[{i}]")))
        roots[name] = RootQuarantine(fields.get("complete", bool), tuple(entries))
    return Manifest(
        directory,
        top.get("generation", str),
        top.get("peer", str),
        float(top.get("created", (int, float))),
        MappingProxyType(roots),
        _cause(top, path),
    )


def _cause(top: _Fields, path: Path) -> str:
    cause = top.get("cause", str, SPLIT_BRAIN)  # sets written before issue 9 have none
    if cause not in CAUSES:
        raise UsageError(f"{path}.cause: unknown {cause!r}")
    return str(cause)


def _entry_from_json(fields: _Fields) -> QuarantinedEntry:
    def path_field(key: str, default: Any = ...) -> bytes | None:
        value = fields.get(key, str, default)
        return None if value is None else os.fsencode(value)

    raw_path = path_field("path")
    assert raw_path is not None
    kind = fields.get("type", str)
    if kind not in (*_TYPES.values(), *NOT_THERE):
        raise UsageError(f"{fields.where}.type: unknown {kind!r}")
    try:
        mode = int(fields.get("mode", str, "0"), 8)
    except ValueError:
        raise UsageError(f"{fields.where}.mode: not octal") from None
    return QuarantinedEntry(
        raw_path,
        kind,
        fields.get("size", int, 0),
        mode,
        fields.get("mtime_ns", int, 0),
        fields.get("sha256", str, None),
        path_field("target", None),
        path_field("moved_to", None),
    )


# --- planning -------------------------------------------------------------------------------------


def _sha256(dir_fd: int, name: bytes) -> str:
    hasher = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        while chunk := os.read(fd, 1 << 20):
            hasher.update(chunk)
    finally:
        os.close(fd)
    return hasher.hexdigest()


def _describe(dir_fd: int, name: bytes, path: bytes, moved_to: bytes | None) -> QuarantinedEntry:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    kind = _TYPES.get(stat.S_IFMT(st.st_mode), "file")
    return QuarantinedEntry(
        path,
        kind,
        st.st_size,
        stat.S_IMODE(st.st_mode),
        st.st_mtime_ns,
        _sha256(dir_fd, name) if kind == "file" else None,
        os.readlink(name, dir_fd=dir_fd) if kind == "symlink" else None,
        moved_to,
    )


def _subtree(dir_fd: int, path: bytes) -> Iterator[QuarantinedEntry]:
    """Every entry below the directory ``dir_fd`` (which is at ``path``), never following."""
    for child in sorted(os.fsencode(n) for n in os.listdir(dir_fd)):
        entry = _describe(dir_fd, child, path + b"/" + child, None)
        yield entry
        if entry.type == "dir":
            fd = os.open(child, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                yield from _subtree(fd, entry.path)
            finally:
                os.close(fd)


def _plan_one(root_fd: int, path: bytes, moved_to: bytes) -> list[QuarantinedEntry]:
    with parent_of(root_fd, path) as parent:
        if parent is None:
            return [QuarantinedEntry(path, "unreachable")]
        dir_fd, name = parent
        try:
            top = _describe(dir_fd, name, path, moved_to)
        except FileNotFoundError:
            return [QuarantinedEntry(path, "absent")]
        if top.type != "dir":
            return [top]
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            return [top, *_subtree(fd, path)]
        finally:
            os.close(fd)


def _tops(paths: Iterator[bytes] | list[bytes], covered: list[bytes]) -> list[bytes]:
    """Sorted paths, without those at or under another one or under ``covered``."""
    out: list[bytes] = []
    for path in sorted(set(paths)):
        if any(path == c or path.startswith(c + b"/") for c in [*covered, *out[-1:]]):
            continue
        out.append(path)
    return out


def _destination(set_dir: Path, root_name: str, path: bytes, taken: set[bytes]) -> bytes:
    """``path``, or ``path~N``, whichever is neither on disk nor planned in the set."""
    base = set_dir / root_name
    candidate, n = path, 1
    while (
        candidate in taken
        or any(t.startswith(candidate + b"/") for t in taken)
        or os.path.lexists(os.fsencode(base) + b"/" + candidate)
    ):
        n += 1
        candidate = path + b"~%d" % n
    return candidate


# --- moving ---------------------------------------------------------------------------------------


def _fsync_fd(fd: int) -> None:
    os.fsync(fd)


def _makedirs(top_fd: int, parts: list[bytes]) -> int:
    """An fd of the directory ``parts`` below ``top_fd``, created as needed (durably)."""
    fd = os.dup(top_fd)
    for part in parts:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o700, dir_fd=fd)
        _fsync_fd(fd)  # also after a crash between the mkdir and its fsync
        child = os.open(part, _DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def _move(root_fd: int, set_fd: int, root_name: str, entry: QuarantinedEntry) -> None:
    """Move one planned entry into the set, durably; nothing if already done."""
    assert entry.moved_to is not None
    *dest_parts, dest_name = entry.moved_to.split(b"/")
    with parent_of(root_fd, entry.path) as parent:
        if parent is None:
            return  # nothing left at the source: moved before a crash
        src_fd, name = parent
        try:
            os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        dest_fd = _makedirs(set_fd, [os.fsencode(root_name), *dest_parts])
        try:
            if _exists(dest_fd, dest_name):
                # Only a finished cross-device copy leaves both (the rename of a
                # partial copy into place comes before the removal of the source).
                _remove(src_fd, name)
            else:
                try:
                    os.rename(name, dest_name, src_dir_fd=src_fd, dst_dir_fd=dest_fd)
                except OSError as error:
                    if error.errno != errno.EXDEV:
                        raise
                    _copy_across(src_fd, name, dest_fd, dest_name)
                    _remove(src_fd, name)
            _fsync_fd(dest_fd)
            _fsync_fd(src_fd)
        finally:
            os.close(dest_fd)


def _exists(dir_fd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _proc(dir_fd: int, name: bytes) -> bytes:
    # The parent through its fd's /proc link: the last component is the one acted on.
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def _remove(dir_fd: int, name: bytes) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(_proc(dir_fd, name))  # fd-based, never follows a symlink
    else:
        os.unlink(name, dir_fd=dir_fd)


def _copy_across(src_fd: int, name: bytes, dest_fd: int, dest_name: bytes) -> None:
    """Copy an entry to another file system: to a partial name, durably, then into place."""
    partial = _PARTIAL.encode() + dest_name
    if _exists(dest_fd, partial):
        _remove(dest_fd, partial)
    source, target = os.fsdecode(_proc(src_fd, name)), os.fsdecode(_proc(dest_fd, partial))
    if stat.S_ISDIR(os.stat(source, follow_symlinks=False).st_mode):
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target, follow_symlinks=False)
    _fsync_tree(target)
    os.rename(partial, dest_name, src_dir_fd=dest_fd, dst_dir_fd=dest_fd)


def _fsync_tree(path: str) -> None:
    for top, dirs, files, top_fd in os.fwalk(path, follow_symlinks=False):
        del top, dirs
        for name in files:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=top_fd)
            except OSError as error:
                if error.errno == errno.ELOOP:  # a symlink: its directory's fsync covers it
                    continue
                raise
            try:
                _fsync_fd(fd)
            finally:
                os.close(fd)
        _fsync_fd(top_fd)


# --- the public operations ------------------------------------------------------------------------


def _check_names(root_name: str, generation: str, peer: str) -> None:
    if (
        not root_name
        or "/" in root_name
        or "\x00" in root_name
        or root_name in (".", "..", MANIFEST_NAME)
        or root_name.startswith(_PARTIAL)
    ):
        raise UsageError(f"quarantine: invalid root name {root_name!r}")
    if not generation or len(generation) > 200:
        raise UsageError(f"quarantine: generation {generation[:64]!r}: empty or too long")
    if len(peer) > 200:
        raise UsageError(f"quarantine: peer name {peer[:64]!r}: too long")


def _check_outside(root_fd: int, quarantine_dir: Path) -> None:
    root = os.fstat(root_fd)
    where = quarantine_dir.resolve()
    for place in (where, *where.parents):
        try:
            st = os.stat(place)
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
            raise UsageError(
                f"quarantine directory {quarantine_dir} is inside the replicated directory"
            )


def _set_dir(quarantine_dir: Path, generation: str, now: float) -> Path:
    """The newest set of this generation (a re-run), else a new one named at ``now``."""
    encoded = urllib.parse.quote(generation, safe="")
    for entry in sorted(quarantine_dir.iterdir(), reverse=True):
        match = _STAMP.match(entry.name)
        if match and match[1] == encoded and entry.is_dir():
            return entry
    return _new_set_dir(quarantine_dir, encoded, now)


def _new_set_dir(quarantine_dir: Path, encoded: str, now: float) -> Path:
    """A set directory named at ``now`` that does not exist yet (``~N`` after the stamp
    when a set of the same second is there)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    candidate, n = quarantine_dir / f"{stamp}-{encoded}", 1
    while candidate.exists():
        n += 1
        candidate = quarantine_dir / f"{stamp}~{n}-{encoded}"
    return candidate


def _covered(part: RootQuarantine) -> list[bytes]:
    """The paths a set's part has dealt with: moved, or found absent."""
    return [e.path for e in part.entries if e.moved_to is not None or e.type in NOT_THERE]


def _present(root_fd: int, paths: list[bytes]) -> bool:
    """True when anything lies at one of ``paths`` under ``root_fd``."""
    for path in paths:
        with parent_of(root_fd, path) as parent:
            if parent is not None and _exists(*parent):
                return True
    return False


def quarantine(
    root_name: str,
    root: int | os.PathLike[str] | str,
    changes: ChangeSet,
    quarantine_dir: Path,
    *,
    generation: str,
    peer: str,
    now: float,
    tracker: Tracker | None = None,
    cause: str = SPLIT_BRAIN,
) -> Manifest:
    """Move the entries ``changes`` lists for ``root_name`` out of ``root`` (its
    backing directory, an fd or path) into the quarantine set of ``generation``.

    ``tracker``: the tracker that recorded ``changes`` (the runtime passes it).
    Before anything moves, every planned path is recorded in it, durably, as a
    changed *name* (``Unlink``: it leaves the directory): the suspect set the
    node then sends with its resync request lists it whole, so the source
    rebuilds the entry whole (its name, then all its content) and a live op
    for it is applied only once the entry is there, never dirty zones into a
    file this node no longer has. Recorded first, so a crash between the two
    leaves a suspect set that is merely larger than needed.

    Blocks for the moves, two fsyncs per entry, sha256 reads of the files and a
    few manifest writes. Idempotent: call it again after a crash (with the same
    generation) to finish; a set already complete for this root with nothing
    new to move is returned as is, and one complete while something lies again
    at a path it moved is left as it is: that goes to a new set. Raises
    ``UsageError`` for a bad name, a quarantine directory inside ``root`` or a
    damaged manifest, ``OSError`` if the disk fails (nothing is lost: run it
    again).
    """
    _check_names(root_name, generation, peer)
    paths = [
        path
        for (name, path) in (*changes.files, *changes.names, *changes.meta)
        if name == root_name
    ]
    for path in paths:
        try:
            validate_path(path)
        except PeerProtocolError as error:
            raise UsageError(f"quarantine {root_name}:{path[:64]!r}: {error}") from None
    with open_root(root) as root_fd:
        _check_outside(root_fd, quarantine_dir)
        if tracker is not None:
            for path in _tops(paths, []):
                tracker.before(Unlink(root_name, path))
            tracker.flush()
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        set_dir = _set_dir(quarantine_dir, generation, now)
        manifest = _load_or_start(set_dir, generation, peer, now, cause)
        part = manifest.roots.get(root_name)
        if part is not None and part.complete and _present(root_fd, _tops(_covered(part), [])):
            # A finished set holds what lay at its paths then: anything there now was
            # written since (or is the start of a copy that stopped). It never counts
            # as moved, nor is it deleted as a duplicate: it goes to a new set.
            encoded = urllib.parse.quote(generation, safe="")
            set_dir = _new_set_dir(quarantine_dir, encoded, now)
            manifest = _load_or_start(set_dir, generation, peer, now, cause)
        planned = _plan(manifest, root_fd, root_name, paths)
        if planned is manifest and manifest.roots[root_name].complete:
            return manifest
        manifest = planned
        write_atomic(set_dir / MANIFEST_NAME, _dump(manifest))  # the intent, before any move
        set_fd = os.open(set_dir, _DIR_FLAGS)
        try:
            for entry in manifest.roots[root_name].entries:
                if entry.moved_to is not None:
                    _move(root_fd, set_fd, root_name, entry)
        finally:
            os.close(set_fd)
    roots = dict(manifest.roots)
    roots[root_name] = RootQuarantine(True, roots[root_name].entries)
    done = Manifest(
        set_dir, generation, peer, manifest.created, MappingProxyType(roots), manifest.cause
    )
    write_atomic(set_dir / MANIFEST_NAME, _dump(done))
    return done


def _dump(manifest: Manifest) -> bytes:
    return json.dumps(manifest.to_json(), indent=1).encode("ascii") + b"\n"


def _load_or_start(set_dir: Path, generation: str, peer: str, now: float, cause: str) -> Manifest:
    if (set_dir / MANIFEST_NAME).exists():
        manifest = load_manifest(set_dir)
        if manifest.generation != generation:
            raise UsageError(f"{set_dir}: manifest of generation {manifest.generation!r}")
        return manifest
    set_dir.mkdir(exist_ok=True)
    fsync_directory(set_dir.parent)
    return Manifest(set_dir, generation, peer, now, MappingProxyType({}), cause)


def _plan(manifest: Manifest, root_fd: int, root_name: str, paths: list[bytes]) -> Manifest:
    """The manifest with ``paths`` planned for ``root_name`` (those not yet covered)."""
    part = manifest.roots.get(root_name, RootQuarantine(False, ()))
    covered = _covered(part)
    taken = {e.moved_to for e in part.entries if e.moved_to is not None}
    new_entries: list[QuarantinedEntry] = []
    for path in _tops(paths, covered):
        moved_to = _destination(manifest.directory, root_name, path, taken)
        taken.add(moved_to)
        new_entries += _plan_one(root_fd, path, moved_to)
    if not new_entries and root_name in manifest.roots:
        return manifest
    roots = dict(manifest.roots)
    entries = sorted((*part.entries, *new_entries), key=lambda e: e.path)
    roots[root_name] = RootQuarantine(False, tuple(entries))
    return Manifest(
        manifest.directory,
        manifest.generation,
        manifest.peer,
        manifest.created,
        MappingProxyType(roots),
        manifest.cause,
    )


def quarantine_before_full_resync(
    root_name: str,
    root: int | os.PathLike[str] | str,
    quarantine_dir: Path,
    *,
    generation: str,
    peer: str,
    now: float,
) -> Manifest | None:
    """Move everything in ``root`` (its backing directory) into a quarantine set
    before a full resync from ``peer`` rebuilds it: a full copy rewrites every
    file the source has and deletes every entry it lacks, so all of it would
    be overwritten or deleted. None when ``root`` is empty (nothing to keep).

    The set is named after ``generation`` with a ``-full`` suffix, so that a
    resync interrupted and started again (after a crash at any point) finds
    the same set and finishes it; entries already recorded there are not
    moved twice (what sits at their path now is a partial copy of the
    source's). Raises as ``quarantine`` does."""
    with open_root(root) as root_fd:
        tops = sorted(os.fsencode(name) for name in os.listdir(root_fd))
        if not tops:
            return None
        changes = ChangeSet(DEFAULT_ZONE_SIZE, names=frozenset((root_name, p) for p in tops))
        return quarantine(
            root_name,
            root_fd,
            changes,
            quarantine_dir,
            generation=f"{generation}-full",
            peer=peer,
            now=now,
            cause=FULL_RESYNC,
        )


# --- listing --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestSummary:
    """One quarantine set as ``failover quarantine list`` shows it. ``problem`` is
    set (and the rest empty) for a set whose manifest cannot be read."""

    directory: Path
    generation: str = ""
    peer: str = ""
    created: float = 0.0
    complete: bool = False
    roots: tuple[tuple[str, int, int, int], ...] = ()
    """Per root: (name, entries moved as a whole, files, bytes of files)."""
    problem: str | None = None
    cause: str = SPLIT_BRAIN


def list_quarantines(quarantine_dir: Path) -> list[ManifestSummary]:
    """Every quarantine set under ``quarantine_dir``, oldest first (none if it does
    not exist). A damaged manifest is listed with its problem, not raised."""
    if not quarantine_dir.is_dir():
        return []
    out = []
    for entry in sorted(quarantine_dir.iterdir()):
        if not (_STAMP.match(entry.name) and entry.is_dir()):
            continue
        try:
            manifest = load_manifest(entry)
        except UsageError as error:
            out.append(ManifestSummary(entry, problem=str(error)))
            continue
        roots = tuple(
            (
                name,
                sum(e.moved_to is not None for e in part.entries),
                sum(e.type == "file" for e in part.entries),
                sum(e.size for e in part.entries if e.type == "file"),
            )
            for name, part in sorted(manifest.roots.items())
        )
        out.append(
            ManifestSummary(
                entry,
                manifest.generation,
                manifest.peer,
                manifest.created,
                manifest.complete,
                roots,
                cause=manifest.cause,
            )
        )
    return out


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def render_quarantines(quarantine_dir: Path, summaries: list[ManifestSummary]) -> str:
    """The text of ``failover quarantine list``."""
    if not summaries:
        return f"no quarantined data in {quarantine_dir}"
    lines = [f"{len(summaries)} quarantine set(s) in {quarantine_dir}:"]
    for summary in summaries:
        if summary.problem is not None:
            lines.append(f"  {summary.directory.name}  UNREADABLE: {summary.problem}")
            continue
        state = "complete" if summary.complete else "INCOMPLETE (run again to finish)"
        lines.append(
            f"  {summary.directory.name}  {_utc(summary.created)}  "
            f"{_reason(summary.cause, summary.peer, summary.generation)}  {state}"
        )
        for name, moved, files, size in summary.roots:
            lines.append(f"    {name}: {moved} entries moved, {files} files, {_size(size)}")
    return "\n".join(lines)
