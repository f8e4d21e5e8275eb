"""Helpers for the FUSE mirror tests: a recording listener, mounts in temp dirs, tree snapshots."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from failover.replication.mirror import Mirror
from failover.replication.ops import Fsync, Op

needs_fuse = pytest.mark.skipif(
    not os.access("/dev/fuse", os.R_OK | os.W_OK) or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (Debian fuse3, installed by scripts/system-deps.sh)",
)

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    func = _libc.fallocate
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if func(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@dataclass
class RecordingListener:
    """Keeps every call in order; ``fail_with`` makes ``before`` raise it."""

    before_ops: list[Op] = field(default_factory=list)
    after_ops: list[Op] = field(default_factory=list)
    syncs: list[Fsync] = field(default_factory=list)
    fail_with: Exception | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def before(self, op: Op) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        with self._lock:
            self.before_ops.append(op)

    def after(self, op: Op) -> None:
        with self._lock:
            self.after_ops.append(op)

    def sync(self, op: Fsync, local: Callable[[], None]) -> None:
        local()
        with self._lock:
            self.syncs.append(op)

    def session(self) -> None:
        """No sessions: every fsync asks for a sync."""

    def types(self) -> list[str]:
        return [type(op).__name__ for op in self.after_ops]


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def mounted(
    directory: Path, listener: RecordingListener | None = None, *, read_only: bool = False
) -> Iterator[Mirror]:
    """A live Mirror over ``directory``; unmounted at the end even if files were left open."""
    mirror = Mirror("data", directory, listener, read_only=read_only)
    mirror.mount()
    try:
        yield mirror
    finally:
        if mirror.mounted:
            try:
                mirror.unmount()
            except Exception:
                mirror.unmount(lazy=True)
                raise


# -- tree snapshots -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    size: int
    nlink: int
    content: bytes | None
    target: bytes | None
    xattrs: tuple[tuple[str, bytes], ...]
    mtime_ns: int
    blocks: int


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry under ``root`` (not the root itself), by relative path."""
    tree: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            st = full.lstat()
            kind = stat.S_IFMT(st.st_mode)
            is_link = stat.S_ISLNK(st.st_mode)
            xattrs = () if is_link else _xattrs(full)
            tree[str(full.relative_to(root))] = Entry(
                kind={stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}.get(
                    kind, oct(kind)
                ),
                mode=stat.S_IMODE(st.st_mode),
                size=st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                nlink=st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0,
                content=full.read_bytes() if stat.S_ISREG(st.st_mode) else None,
                target=os.readlink(os.fsencode(full)) if is_link else None,
                xattrs=xattrs,
                mtime_ns=st.st_mtime_ns,
                blocks=st.st_blocks,
            )
    return tree


def _xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    names = sorted(os.listxattr(path, follow_symlinks=False))
    return tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)


def assert_same_tree(
    actual: dict[str, Entry], expected: dict[str, Entry], explicit_mtimes: set[int], label: str
) -> None:
    """Names, types, modes, sizes, link counts, contents, targets, xattrs must match; mtimes
    where the expected tree still shows one set explicitly; blocks within a small slack
    (sparse files stay sparse)."""
    assert sorted(actual) == sorted(expected), f"{label}: names differ"
    for name, want in expected.items():
        got = actual[name]
        for attr in ("kind", "mode", "size", "nlink", "content", "target", "xattrs"):
            assert getattr(got, attr) == getattr(want, attr), f"{label}: {name}.{attr} differs"
        if want.mtime_ns in explicit_mtimes:
            assert got.mtime_ns == want.mtime_ns, f"{label}: {name} explicit mtime lost"
        assert got.blocks <= want.blocks + 64, f"{label}: {name} is less sparse ({got.blocks})"
