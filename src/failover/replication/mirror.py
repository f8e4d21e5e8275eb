"""The FUSE mirror: serves one replicated directory at its own path and reports every change.

``Mirror`` opens the replicated directory, then mounts a FUSE filesystem over that same
path (an over-mount). Applications see the mount; the daemon reaches the real directory
underneath through the file descriptor it opened first, with ``*at`` system calls relative
to it (and ``/proc/self/fd/N/...`` for extended attributes). After ``unmount`` the directory
holds all the data: nothing is ever stored anywhere else.

Every mutating FUSE operation builds the matching ``ops`` record and tells the listener:
``before(op)``, then the local change, then ``after(op)``. One lock covers "local change +
``after``" for every mutation, so ``after`` calls come in exactly the order the changes were
applied locally. ``fsync``/``fdatasync``/``fsyncdir`` and the close (flush) of a handle
opened with ``O_SYNC``/``O_DSYNC`` call ``listener.sync(op, local)`` outside the lock: the
listener queues the op for the peer, runs ``local`` (the local fsync) while the peer works,
and returns once both are done; the application's call returns only then. A write on an
``O_SYNC`` handle is followed by the kernel's own fsync request, so it is synced the same way.

Clean files (the invariant the fsync shortcut keeps): a file or directory is *clean* in a
session when no op touched it since the last ``sync`` of it that the listener reported as
acknowledged by the peer (at the configured level) under that session's token, and the
session is still the listener's current one (``listener.session()``). An fsync of a clean
file runs only the local fsync: the peer already holds everything the application could ask
for. Kept by: every recorded change bumps an op counter and *touches* the inodes it changes
(the file written, the entry named, created, removed or renamed, its parent directory); a
touch forgets the file's acknowledged sync; a sync that completes records its file as clean
only if no touch of it came after the counter value read before the sync was queued (so a
write racing an fsync leaves the file pending). A local change whose ``after`` fails touches
everything. A new session (another token) starts with
everything pending; a listener without sessions (``session()`` None) never gets the shortcut.
Errors of the backing filesystem reach the application with the same errno; an exception
other than ``OSError`` from the listener becomes ``EIO``.

The FUSE library is mfusepy (ctypes over libfuse3; Debian package ``fuse3``): its
multithreaded loop runs in one background thread per mirror. docs/replication.md records
why, with the figures of bench/fuse_choice.py.

Limits: the root directory's own metadata (mode, owner, times, xattrs) cannot be changed
through the mirror (``EPERM``): an op record cannot name the root itself. Device nodes,
FIFOs and sockets cannot be created (no op record for them; ``ENOSYS``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from failover.errors import UsageError
from failover.replication.fusermount import FuseMount, detach_dead, fuse_mount
from failover.replication.ops import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Chmod,
    Chown,
    Create,
    Fallocate,
    Fsync,
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
)

# mfusepy silently prefers libfuse2 when both are installed; the mirror is built for libfuse3.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
try:
    import mfusepy
except (OSError, ImportError) as exc:  # pragma: no cover - depends on the machine
    raise UsageError(f"the FUSE mirror needs libfuse3 (Debian package fuse3): {exc}") from exc

log = logging.getLogger(__name__)

MOUNT_TIMEOUT_S = 15.0
"""How long ``mount`` waits for the kernel's first request before giving up."""
ATTR_TIMEOUT_S = 1.0
"""How long the kernel may cache a read-write mirror's attributes, until the mount meets
a file with several names (then never again for that mount: see ``_Operations``)."""
ATTR_EXPIRY_MARGIN_S = 0.25
"""Added to ``ATTR_TIMEOUT_S`` when waiting for cached attributes to expire: the kernel
counts the timeout in jiffies from when it reads the reply, rounded up (4 ms at 250 Hz),
and a reply libfuse built just before the stop may reach it a little later (a worker
thread preempted in between on a loaded machine)."""
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
_ACCESS_MODES = os.O_WRONLY | os.O_RDWR
# The backing file is written at the offsets the kernel gives: O_APPEND would make pwrite
# ignore them (and the recorded offset could differ from where the bytes went); O_DIRECT
# needs aligned buffers Python bytes do not have; creation flags belong to create().
_BACKING_FLAGS_DROPPED = os.O_APPEND | os.O_DIRECT | os.O_CREAT | os.O_EXCL | os.O_NOCTTY
_FUSE_STAT_KEYS = (
    "st_mode",
    "st_ino",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_rdev",
    "st_size",
    "st_blocks",
    "st_blksize",
)
_STATVFS_KEYS = (
    "f_bsize",
    "f_frsize",
    "f_blocks",
    "f_bfree",
    "f_bavail",
    "f_files",
    "f_ffree",
    "f_favail",
    "f_namemax",
)

T = TypeVar("T")


class MirrorListener(Protocol):
    """What the mirror tells the replication layer, from FUSE worker threads.

    ``before`` and ``after`` are called with the mirror's lock held: they must not block
    for long (queue, do not wait for the peer). ``sync`` is called without the lock and may
    block until the peer made the file durable; the application's call waits for it.
    """

    def before(self, op: Op) -> None:
        """Called before the local change (intent / activity-log records)."""

    def after(self, op: Op) -> None:
        """Called after the local change succeeded, in local application order."""

    def sync(self, op: Fsync, local: Callable[[], None]) -> object:
        """The application asked for durability: queue ``op`` for the peer, call ``local``
        (the local fsync; its ``OSError`` propagates) while the peer works, and return once
        both are done. Returns the token of the session whose peer acknowledged ``op`` at
        the configured level (what ``session()`` returned before ``op`` was queued and
        still returns), or None when the peer did not (or the session changed meanwhile)."""

    def session(self) -> object:
        """The current session's token: the peer acknowledges in order and every change
        made before it began is on the peer. None when there is no such session (none,
        broken, or a resync still running): no fsync may then skip the peer."""


_Key = tuple[int, int]
"""A file's identity for the fsync shortcut: (st_dev, st_ino)."""


@dataclass(slots=True)
class _Handle:
    """One open file: where it is now (None once its last name is gone), its O_*SYNC,
    and its identity (``_Key``)."""

    path: bytes | None
    synchronous: bool
    datasync: bool
    key: _Key


@dataclass(frozen=True, slots=True)
class _Synced:
    """A file's last sync the peer acknowledged: under which session, and whether it was
    a full fsync (a datasync does not cover the metadata a later fsync asks for)."""

    token: object
    full: bool


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino)


# -- libc calls Python's os module lacks ------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
# The library mfusepy loaded (its choice on Linux: FUSE_LIBRARY_PATH, else FUSE_LIBRARY_NAME).
_libfuse = ctypes.CDLL(
    os.environ.get("FUSE_LIBRARY_PATH")
    or ctypes.util.find_library(os.environ.get("FUSE_LIBRARY_NAME", "fuse3"))
)
_libfuse.fuse_get_context.restype = ctypes.POINTER(mfusepy.fuse_context)
_libfuse.fuse_invalidate_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_libc.renameat2.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_uint,
]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_MNT_DETACH = 2
_SIGACTION_SIZE = 512  # more than glibc's struct sigaction (152 bytes on x86-64): kept opaque
_LIBFUSE_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


def _signal_dispositions() -> dict[int, ctypes.Array[ctypes.c_char]]:
    """The process's C-level handlers of the signals libfuse takes over, as opaque copies."""
    saved: dict[int, ctypes.Array[ctypes.c_char]] = {}
    for sig in _LIBFUSE_SIGNALS:
        buffer = ctypes.create_string_buffer(_SIGACTION_SIZE)
        _checked(_libc.sigaction(sig, None, buffer), "sigaction")
        saved[sig] = buffer
    return saved


def _restore_signal_dispositions(saved: dict[int, ctypes.Array[ctypes.c_char]]) -> None:
    """libfuse's loop catches SIGHUP/SIGINT/SIGTERM where they had no handler, and would end
    the mount on them while the process goes on: give the process its own handling back."""
    for sig, buffer in saved.items():
        _checked(_libc.sigaction(sig, buffer, None), "sigaction")


def _checked(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _process_umask() -> int:
    """The daemon's umask, read without changing it (os.umask would race other threads)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # pragma: no cover - every Linux since 4.7 has the line


# -- the operations -----------------------------------------------------------------------------


class _Operations(mfusepy.Operations):  # type: ignore[misc]
    """The FUSE callbacks. Private attributes start with ``_``: mfusepy registers any
    attribute named like a FUSE operation as that operation.

    The attribute cache of a read-write mirror (the only writer of its directory while
    it serves): libfuse's high-level API gives each name of a file its own kernel inode,
    so attributes cached for one name go stale when the file changes through another.
    The kernel may cache attributes for ``ATTR_TIMEOUT_S`` only while every file the
    mount has shown has one name: the first ``getattr`` of a non-directory with several
    links sets libfuse's timeout to 0 for the rest of the mount, before libfuse reads it
    for that very reply; a ``link`` does the same, then waits until whatever was cached
    before has expired, and only then makes the new name. Attributes cached with the
    timeout therefore only ever belong to files with one name and one kernel inode. A
    read-only mirror never caches (the applier writes underneath it)."""

    use_ns = True

    def __init__(
        self,
        root_name: str,
        root_fd: int,
        listener: MirrorListener | None,
        read_only: bool,
        ready: threading.Event,
    ) -> None:
        self._root_name = root_name
        self._fd = root_fd
        self._proc = f"/proc/self/fd/{root_fd}".encode()
        self._listener = listener
        self._read_only = read_only
        self._lock = threading.Lock()
        self._handles: dict[int, _Handle] = {}
        self._names: dict[_Key, dict[int, _Handle]] = {}  # the open handles of each file
        self._fuse: int | None = None  # libfuse's struct fuse, for fuse_invalidate_path
        # The fsync shortcut (module docstring), all under ``_lock``: the op counter, the
        # syncs in flight, and while any is, the count of each file's last touch (and of
        # the last "touch everything"); every file's last acknowledged sync.
        self._count = 0
        self._syncing = 0
        self._touched: dict[_Key, int] = {}
        self._all_touched = 0
        self._synced: dict[_Key, _Synced] = {}
        self._umask = _process_umask()
        self._euid, self._egid = os.geteuid(), os.getegid()
        self.live = False
        self._ready = ready
        # The attribute cache: libfuse's config once the kernel's INIT came, the timeout
        # it started with, and when this mount stopped caching (None: it has not).
        self._config: Any = None
        self._attr_cache_s = 0.0 if read_only else ATTR_TIMEOUT_S
        self._attr_cache_stopped: float | None = None

    # -- paths and records

    @staticmethod
    def _rel(path: str | None) -> bytes:
        """FUSE's "/a/b" as a path relative to the root fd; the root itself is b"."."""
        if path is None:
            raise OSError(errno.ENOENT, "no path")
        raw = path.encode("utf-8", "surrogateescape")
        return raw[1:] or b"."

    def _named(self, path: str | None) -> bytes:
        """The relative path of an entry a mutation names: never the root itself."""
        rel = self._rel(path)
        if rel == b".":
            raise OSError(errno.EPERM, "the root of a replicated directory cannot be changed")
        return rel

    def _change(self, op: Op, action: Callable[[], T]) -> T:
        """before(op), the local change, after(op). The caller holds ``_lock``."""
        if self._read_only:
            raise OSError(errno.EROFS, "read-only mirror")
        self._tell("before", op)
        result = action()
        self._tell("after", op)
        return result

    def _tell(self, what: str, op: Op) -> None:
        """``before`` or ``after`` of the listener; the caller holds ``_lock``."""
        if self._listener is None:
            return
        try:
            getattr(self._listener, what)(op)
        except BaseException as exc:
            if what == "after":  # a local change made, its record refused: nothing is clean
                self._touch_all()
            if isinstance(exc, OSError) or not isinstance(exc, Exception):
                raise
            log.exception("mirror %s: listener.%s(%r) failed", self._root_name, what, op)
            raise OSError(errno.EIO, f"replication listener failed: {exc}") from exc

    # -- the fsync shortcut (module docstring)

    def _touch(self, *keys: _Key) -> None:
        """The caller holds ``_lock`` and changed these files: each is pending again."""
        self._count += 1
        for key in keys:
            self._synced.pop(key, None)
            if self._syncing:
                self._touched[key] = self._count

    def _touch_all(self) -> None:
        """The caller holds ``_lock`` and cannot tell which files it changed: all of them."""
        self._count += 1
        self._synced.clear()
        if self._syncing:
            self._all_touched = self._count

    def _touch_at(self, *rels: bytes) -> None:
        """``_touch`` the entries at these paths (relative to the root) as they are now;
        a path with nothing there has nothing to touch. The caller holds ``_lock``."""
        if self._listener is None:
            return
        keys = []
        for rel in rels:
            try:
                keys.append(_key(os.stat(rel, dir_fd=self._fd, follow_symlinks=False)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                self._touch_all()
                return
        self._touch(*keys)

    def _durable(
        self, path: bytes | None, key: _Key, datasync: bool, local: Callable[[], None]
    ) -> None:
        """An fsync (``local`` makes it durable here): skip the peer if the file is clean,
        else ask the listener, and remember the file clean if the peer acknowledged it and
        nothing touched it meanwhile. Returns once the local fsync and the peer are done."""
        listener = self._listener
        if path is None or listener is None:
            local()  # the root has no op path: changes in it are ordered before later syncs
            return
        token = self._ask(listener.session)
        with self._lock:
            synced = self._synced.get(key)
            clean = (
                token is not None
                and synced is not None
                and synced.token == token
                and (datasync or synced.full)
            )
            if not clean:
                start = self._count
                self._syncing += 1
        if clean:
            local()
            return
        ran = False

        def local_once() -> None:
            nonlocal ran
            ran = True
            local()

        acked: object = None
        try:
            acked = self._ask(
                lambda: listener.sync(Fsync(self._root_name, path, datasync), local_once)
            )
            if not ran:
                local()
        finally:
            with self._lock:
                self._syncing -= 1
                if (
                    acked is not None
                    and self._touched.get(key, 0) <= start
                    and self._all_touched <= start
                ):
                    old = self._synced.get(key)
                    full = not datasync or (old is not None and old.token == acked and old.full)
                    self._synced[key] = _Synced(acked, full)
                if not self._syncing:
                    self._touched.clear()
                    self._all_touched = 0

    def _ask(self, call: Callable[[], T]) -> T:
        """A listener call outside the lock; an exception other than OSError becomes EIO."""
        try:
            return call()
        except OSError:
            raise
        except Exception as exc:
            log.exception("mirror %s: listener call failed", self._root_name)
            raise OSError(errno.EIO, f"replication listener failed: {exc}") from exc

    # -- ownership of new entries

    def _give_to_caller(self, rel: bytes) -> bool:
        """A new entry belongs to the calling process's user (the daemon runs as root).
        The caller holds ``_lock``; the change is recorded as a Chown. True if it chowned."""
        uid, gid, _pid = mfusepy.fuse_get_context()
        if (uid, gid) == (self._euid, self._egid):
            return False
        parent = rel.rpartition(b"/")[0] or b"."
        if os.stat(parent, dir_fd=self._fd).st_mode & stat.S_ISGID:
            gid = -1  # a set-group-ID directory gives its group, as the kernel did
        self._change(
            Chown(self._root_name, rel, uid, gid),
            lambda: os.chown(rel, uid, gid, dir_fd=self._fd, follow_symlinks=False),
        )
        return True

    def _settle_mode(self, rel: bytes, mode: int, chowned: bool) -> None:
        """Give a new entry the mode the caller asked for (the kernel already applied the
        caller's umask), undoing the daemon's own umask and a chown's clearing of the
        set-ID bits; recorded as a Chmod so the peer ends the same. The caller holds
        ``_lock``."""
        bits = mode & 0o7777
        if bits & self._umask or (chowned and bits & (stat.S_ISUID | stat.S_ISGID)):
            self._change(
                Chmod(self._root_name, rel, bits), lambda: os.chmod(rel, bits, dir_fd=self._fd)
            )

    # -- reading

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        if fh is not None:
            st = os.fstat(fh)
        else:
            st = os.stat(self._rel(path), dir_fd=self._fd, follow_symlinks=False)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            self._stop_attr_cache()  # before libfuse reads the timeout for this reply
        attrs: dict[str, Any] = {key: getattr(st, key) for key in _FUSE_STAT_KEYS}
        attrs["st_atime"] = st.st_atime_ns
        attrs["st_mtime"] = st.st_mtime_ns
        attrs["st_ctime"] = st.st_ctime_ns
        return attrs

    def readlink(self, path: str) -> str:
        return os.readlink(self._rel(path), dir_fd=self._fd).decode("utf-8", "surrogateescape")

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # Entries carry their inode (use_ino: readdir(3) hides an entry whose inode is 0)
        # and type. A fresh descriptor each time: a shared one's offset would move.
        rel = self._rel(path)
        fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self._fd)
        try:
            here = os.fstat(fd)
            up = os.stat(b"..", dir_fd=fd)
            listing = [
                (".", {"st_ino": here.st_ino, "st_mode": stat.S_IFDIR}, 0),
                ("..", {"st_ino": up.st_ino, "st_mode": stat.S_IFDIR}, 0),
            ]
            with os.scandir(fd) as entries:
                for entry in entries:
                    attrs = {"st_ino": entry.inode(), "st_mode": _entry_type(entry)}
                    listing.append((entry.name, attrs, 0))
        finally:
            os.close(fd)
        return listing

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._fd)
        return {key: getattr(st, key) for key in _STATVFS_KEYS}

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return os.getxattr(self._xattr_target(path), name, follow_symlinks=False)

    def listxattr(self, path: str) -> list[str]:
        return os.listxattr(self._xattr_target(path), follow_symlinks=False)

    def _xattr_target(self, path: str | None) -> bytes | int:
        # No *xattrat calls before Linux 6.13: reach the entry through the root fd's /proc link.
        rel = self._rel(path)
        return self._fd if rel == b"." else self._proc + b"/" + rel

    # -- open files

    def create(self, path: str, mode: int, flags: int) -> int:
        rel = self._named(path)
        backing = (flags & ~_BACKING_FLAGS_DROPPED) | os.O_CREAT | os.O_EXCL
        with self._lock:
            fd = self._change(
                Create(self._root_name, rel, mode & 0o7777),
                lambda: os.open(rel, backing, mode & 0o7777, dir_fd=self._fd),
            )
            try:
                self._settle_mode(rel, mode, self._give_to_caller(rel))
                handle = self._handle(rel, flags, fd)
            except BaseException:
                os.close(fd)  # the create fails: libfuse will never release this handle
                raise
            self._touch(handle.key)
            self._touch_at(_parent(rel))
            self._opened(fd, handle)
        return fd

    def open(self, path: str, flags: int) -> int:
        rel = self._rel(path)
        if self._read_only and flags & (_ACCESS_MODES | os.O_TRUNC):
            raise OSError(errno.EROFS, "read-only mirror")
        backing = flags & ~_BACKING_FLAGS_DROPPED

        def opened() -> int:
            return os.open(rel, backing, dir_fd=self._fd)

        with self._lock:
            if flags & os.O_TRUNC:
                fd = self._change(Truncate(self._root_name, self._named(path), 0), opened)
            else:
                fd = opened()
            try:
                handle = self._handle(rel, flags, fd)
            except BaseException:
                os.close(fd)
                raise
            if flags & os.O_TRUNC:
                self._touch(handle.key)
            self._opened(fd, handle)
        return fd

    def _opened(self, fd: int, handle: _Handle) -> None:
        """The caller holds ``_lock``."""
        self._handles[fd] = handle
        self._names.setdefault(handle.key, {})[fd] = handle

    @staticmethod
    def _handle(rel: bytes, flags: int, fd: int) -> _Handle:
        synchronous = bool(flags & os.O_DSYNC)  # O_SYNC includes the O_DSYNC bit
        full = (flags & os.O_SYNC) == os.O_SYNC
        return _Handle(rel, synchronous, synchronous and not full, _key(os.fstat(fd)))

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        handle = self._handles[fh]
        written = 0

        def action() -> None:
            nonlocal written
            written = os.pwrite(fh, data, offset)

        with self._lock:
            where = handle.path
            if where is None:  # its last name is gone: nothing on the peer to write to
                action()
                return written
            op = Write(self._root_name, where, offset, data)
            if self._read_only:
                raise OSError(errno.EROFS, "read-only mirror")
            self._tell("before", op)
            action()
            self._tell("after", op if written == len(data) else replace(op, data=data[:written]))
            self._touch(handle.key)
        # An O_SYNC/O_DSYNC write needs no sync here: the kernel follows it with an fsync
        # request (generic_write_sync; datasync for O_DSYNC), which calls listener.sync.
        return written

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        handle = self._handles[fh]
        self._flush_other_names(handle)
        sync = os.fdatasync if datasync else os.fsync
        self._durable(handle.path, handle.key, bool(datasync), lambda: sync(fh))
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        rel = self._rel(path)
        fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self._fd)
        try:
            key = _key(os.fstat(fd))
            self._durable(None if rel == b"." else rel, key, bool(datasync), lambda: os.fsync(fd))
        finally:
            os.close(fd)
        return 0

    def flush(self, path: str | None, fh: int) -> int:
        handle = self._handles[fh]
        if handle.synchronous:  # its writes were fsynced here by the kernel's requests
            self._durable(handle.path, handle.key, handle.datasync, _nothing)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self._lock:
            handle = self._handles.pop(fh)
            names = self._names[handle.key]
            del names[fh]
            if not names:
                del self._names[handle.key]
        os.close(fh)
        return 0

    def _flush_other_names(self, handle: _Handle) -> None:
        """An fsync covers the file's writes through every name: libfuse's high-level API
        gives each name of a hard-linked file its own kernel inode, and the kernel flushes
        only the fsynced inode's dirty pages (an mmap's). The other names open now (a
        mapping keeps its file open) are invalidated: the kernel writes their dirty pages
        back first (FUSE ``write`` requests, recorded as usual) and returns only then, so
        their ops reach the listener before this fsync's. Costs nothing unless the file is
        open under another name."""
        if len(self._names.get(handle.key, ())) < 2:  # read without the lock: atomic
            return  # (a name opened after this check wrote nothing this fsync must cover)
        with self._lock:
            handles = self._names.get(handle.key, {})
            others = {other.path for other in handles.values() if other.path is not None}
        others.discard(handle.path)
        fuse = self._fuse
        for other in sorted(others):
            if fuse is not None:  # -ENOENT: libfuse caches no such name, nothing to write
                _libfuse.fuse_invalidate_path(fuse, b"/" + other)

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        handle = self._handles[fh]
        with self._lock:
            self._change_named(
                handle.path,
                lambda p: Fallocate(self._root_name, p, mode, offset, size),
                lambda: _checked(_libc.fallocate(fh, mode, offset, size), "fallocate"),
            )
            self._touch(handle.key)
        return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._lock:
            where, target = self._target(path, fh)
            if isinstance(target, int):
                action: Callable[[], None] = lambda: os.ftruncate(target, length)  # noqa: E731
            else:
                action = lambda: self._truncate_at(target, length)  # noqa: E731
            self._change_named(where, lambda p: Truncate(self._root_name, p, length), action)
            self._touch_target(target)
        return 0

    def _truncate_at(self, rel: bytes, length: int) -> None:
        fd = os.open(rel, os.O_WRONLY, dir_fd=self._fd)
        try:
            os.ftruncate(fd, length)
        finally:
            os.close(fd)

    # -- metadata (path, or the handle for f* calls on an open file)

    def _target(self, path: str | None, fh: int | None) -> tuple[bytes | None, bytes | int]:
        """(op path, what to pass to os.*): the handle's fd for an f* call, else the path."""
        if fh is not None:
            return self._handles[fh].path, fh
        rel = self._named(path)
        return rel, rel

    def _touch_target(self, target: bytes | int) -> None:
        """``_touch`` what ``_target`` named: an open file's or a path's entry."""
        if isinstance(target, int):
            self._touch(self._handles[target].key)
        else:
            self._touch_at(target)

    def chmod(self, path: str | None, mode: int, fh: int | None = None) -> int:
        bits = mode & 0o7777
        with self._lock:
            where, target = self._target(path, fh)

            def action() -> None:
                if isinstance(target, int):
                    os.chmod(target, bits)
                else:
                    os.chmod(target, bits, dir_fd=self._fd)

            self._change_named(where, lambda p: Chmod(self._root_name, p, bits), action)
            self._touch_target(target)
        return 0

    def chown(self, path: str | None, uid: int, gid: int, fh: int | None = None) -> int:
        with self._lock:
            where, target = self._target(path, fh)

            def action() -> None:
                if isinstance(target, int):
                    os.chown(target, uid, gid)
                else:
                    os.chown(target, uid, gid, dir_fd=self._fd, follow_symlinks=False)

            self._change_named(where, lambda p: Chown(self._root_name, p, uid, gid), action)
            self._touch_target(target)
        return 0

    def utimens(
        self, path: str | None, times: tuple[int, int] | None = None, fh: int | None = None
    ) -> int:
        with self._lock:
            where, target = self._target(path, fh)
            current = (
                os.fstat(target)
                if isinstance(target, int)
                else os.stat(target, dir_fd=self._fd, follow_symlinks=False)
            )
            now = time.time_ns()
            wanted = times if times is not None else (UTIME_NOW, UTIME_NOW)
            atime = _resolve_time(wanted[0], current.st_atime_ns, now)
            mtime = _resolve_time(wanted[1], current.st_mtime_ns, now)

            def action() -> None:
                if isinstance(target, int):
                    os.utime(target, ns=(atime, mtime))
                else:
                    os.utime(target, ns=(atime, mtime), dir_fd=self._fd, follow_symlinks=False)

            self._change_named(where, lambda p: Utimens(self._root_name, p, atime, mtime), action)
            self._touch_target(target)
        return 0

    def _change_named(
        self, where: bytes | None, record: Callable[[bytes], Op], action: Callable[[], T]
    ) -> T:
        """``_change`` with the record for ``where``; a handle whose file lost its last name
        (``where`` None) changes it without recording anything. The caller holds ``_lock``."""
        if where is None:
            if self._read_only:
                raise OSError(errno.EROFS, "read-only mirror")
            return action()
        return self._change(record(where), action)

    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        rel = self._named(path)
        raw = name.encode("utf-8", "surrogateescape")
        with self._lock:
            self._change(
                SetXattr(self._root_name, rel, raw, value, options),
                lambda: os.setxattr(
                    self._xattr_target(path), raw, value, options, follow_symlinks=False
                ),
            )
            self._touch_at(rel)
        return 0

    def removexattr(self, path: str, name: str) -> int:
        rel = self._named(path)
        raw = name.encode("utf-8", "surrogateescape")
        with self._lock:
            self._change(
                RemoveXattr(self._root_name, rel, raw),
                lambda: os.removexattr(self._xattr_target(path), raw, follow_symlinks=False),
            )
            self._touch_at(rel)
        return 0

    # -- namespace

    def mkdir(self, path: str, mode: int) -> int:
        rel = self._named(path)
        with self._lock:
            self._change(
                Mkdir(self._root_name, rel, mode & 0o7777),
                lambda: os.mkdir(rel, mode & 0o7777, dir_fd=self._fd),
            )
            self._touch_at(rel, _parent(rel))
            self._settle_mode(rel, mode, self._give_to_caller(rel))
        return 0

    def rmdir(self, path: str) -> int:
        rel = self._named(path)
        with self._lock:
            self._touch_at(rel)
            self._change(Rmdir(self._root_name, rel), lambda: os.rmdir(rel, dir_fd=self._fd))
            self._touch_at(_parent(rel))
        return 0

    def symlink(self, target: str, source: str) -> int:
        # mfusepy's names: ``target`` is the new link, ``source`` what it points to.
        rel = self._named(target)
        content = source.encode("utf-8", "surrogateescape")
        with self._lock:
            self._change(
                Symlink(self._root_name, rel, content),
                lambda: os.symlink(content, rel, dir_fd=self._fd),
            )
            self._touch_at(rel, _parent(rel))
            self._give_to_caller(rel)
        return 0

    def link(self, target: str, source: str) -> int:
        # mfusepy's names: ``target`` is the new name, ``source`` the existing file.
        new, existing = self._named(target), self._named(source)
        self._stop_attr_cache()
        self._wait_attr_cache_expired()  # no name of the file has attributes cached
        with self._lock:
            self._change(
                Link(self._root_name, existing, new),
                lambda: os.link(
                    existing, new, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False
                ),
            )
            self._touch_at(new, _parent(new))
        return 0

    def unlink(self, path: str) -> int:
        rel = self._named(path)
        with self._lock:
            self._touch_at(rel)  # its other names (hard links) see the change of nlink
            self._change(Unlink(self._root_name, rel), lambda: os.unlink(rel, dir_fd=self._fd))
            self._touch_at(_parent(rel))
            self._forget_name(rel)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):  # RENAME_WHITEOUT: overlayfs only
            raise OSError(errno.EINVAL, f"rename flags {flags:#x} are not replicated")
        src, dst = self._named(old), self._named(new)

        def action() -> None:
            _checked(_libc.renameat2(self._fd, src, self._fd, dst, flags), "renameat2")

        with self._lock:
            self._touch_at(dst)  # replaced (or exchanged): its other names see the change
            self._change(Rename(self._root_name, src, dst, flags), action)
            self._touch_at(dst, _parent(src), _parent(dst))
            if flags & RENAME_EXCHANGE:
                self._move_names({src: dst, dst: src})
            else:
                self._forget_name(dst)
                self._move_names({src: dst})
        return 0

    # -- handle paths (the caller holds ``_lock``)

    def _forget_name(self, rel: bytes) -> None:
        """``rel`` no longer names the file its handles had open (unlinked, or replaced by
        a rename): they follow the file's other name, or record nothing."""
        for fh, handle in self._handles.items():
            if handle.path == rel:
                handle.path = self._other_name(fh)

    def _other_name(self, fh: int) -> bytes | None:
        """Another hard link of the open file, found by a walk: rare (a hard-linked file
        unlinked while open), and without it later writes would not be recorded."""
        st = os.fstat(fh)
        if st.st_nlink == 0 or not stat.S_ISREG(st.st_mode):
            return None
        for name in self._walk(b"."):
            found = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
            if (found.st_ino, found.st_dev) == (st.st_ino, st.st_dev):
                return name
        return None

    def _walk(self, rel: bytes) -> Iterator[bytes]:
        fd = os.open(rel, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self._fd)
        try:
            entries = list(os.scandir(fd))
        finally:
            os.close(fd)
        for entry in entries:
            name = entry.name.encode("utf-8", "surrogateescape")
            child = name if rel == b"." else rel + b"/" + name
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(child)
            else:
                yield child

    def _move_names(self, moves: dict[bytes, bytes]) -> None:
        for handle in self._handles.values():
            if handle.path is None:
                continue
            for old, new in moves.items():
                if handle.path == old:
                    handle.path = new
                    break
                if handle.path.startswith(old + b"/"):
                    handle.path = new + handle.path[len(old) :]
                    break

    # -- lifecycle

    def init_with_config(self, conn: Any, config: Any) -> None:
        self._config = config  # libfuse's own struct: read at each reply
        self._fuse = _libfuse.fuse_get_context().contents.fuse
        self.live = True  # the kernel's INIT request: the mount is in place and answered
        self._ready.set()

    # -- the attribute cache (read-write mirrors)

    def _stop_attr_cache(self) -> None:
        """From now on the kernel caches no attributes of this mount (see the class)."""
        config = self._config
        if config is not None and config.attr_timeout > 0:
            config.attr_timeout = 0.0
            self._attr_cache_stopped = time.monotonic()

    def _wait_attr_cache_expired(self) -> None:
        """Return once every attribute the kernel cached before ``_stop_attr_cache`` has
        expired: a kernel cache's expiry, which no event announces (a bounded wait, at
        most ``ATTR_TIMEOUT_S`` and a margin, paid only by links made that soon after
        the stop)."""
        stopped = self._attr_cache_stopped
        if stopped is not None:
            left = stopped + self._attr_cache_s + ATTR_EXPIRY_MARGIN_S - time.monotonic()
            if left > 0:
                time.sleep(left)


def _parent(rel: bytes) -> bytes:
    """The directory holding the entry at ``rel`` (relative to the root)."""
    return rel.rpartition(b"/")[0] or b"."


def _nothing() -> None:
    """No local fsync to run (the kernel already had each write of the handle fsynced)."""


def _entry_type(entry: os.DirEntry[str]) -> int:
    """The S_IFMT bits of a directory entry, from d_type when the filesystem gives it."""
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    return stat.S_IFMT(entry.stat(follow_symlinks=False).st_mode)


def _resolve_time(value: int, current_ns: int, now_ns: int) -> int:
    """A utimensat time as libfuse passes it (ns, or the UTIME_NOW/OMIT markers with tv_sec 0)."""
    if value == UTIME_NOW:
        return now_ns
    if value == UTIME_OMIT:
        return current_ns
    return value


class _Session(mfusepy.FUSE):  # type: ignore[misc]
    """mfusepy's FUSE with what its libfuse3 glue drops: rename flags (RENAME_NOREPLACE,
    RENAME_EXCHANGE) and the file handle of ftruncate/fchmod/fchown/futimens."""

    def _decoded(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    @staticmethod
    def _fh(fip: Any) -> int | None:
        return int(fip.contents.fh) if fip else None

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        result: int = self.operations.rename(self._decoded(old), self._decoded(new), flags)
        return result

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        result: int = self.operations.chmod(self._decoded(path), mode, self._fh(fip))
        return result

    def chown_fuse_3(self, path: bytes | None, uid: int, gid: int, fip: Any) -> int:
        uid = -1 if uid == 0xFFFFFFFF else uid
        gid = -1 if gid == 0xFFFFFFFF else gid
        result: int = self.operations.chown(self._decoded(path), uid, gid, self._fh(fip))
        return result

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        result: int = self.operations.truncate(self._decoded(path), length, self._fh(fip))
        return result

    def utimens_fuse_3(self, path: bytes | None, buf: Any, fip: Any) -> int:
        times = None
        if buf:
            atime, mtime = buf.contents.actime, buf.contents.modtime
            times = (_timespec_ns(atime), _timespec_ns(mtime))
        result: int = self.operations.utimens(self._decoded(path), times, self._fh(fip))
        return result


def _timespec_ns(ts: Any) -> int:
    if ts.tv_nsec in (UTIME_NOW, UTIME_OMIT):
        return int(ts.tv_nsec)
    return int(ts.tv_sec) * 1_000_000_000 + int(ts.tv_nsec)


# -- the mount ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Mount:
    """One mount's state, kept apart so a lazily detached loop never touches the next one."""

    fd: int
    ready: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    device: int | None = None
    failure: BaseException | None = None
    order_lock: threading.Lock | None = None
    fuse: FuseMount | None = None  # the mount and its fusermount3 helper


class Mirror:
    """One replicated directory served through FUSE at its own path.

    ``mount()`` opens ``path``, mounts over it and returns once the kernel's first request
    was answered (the mount is live); the FUSE loop runs in a background thread. If the
    process dies (even by kill -9), or the watchdog aborts the connection, the mount stays
    over the directory, dead (every request fails): nothing the application writes after
    that is acknowledged, nor lands unreplicated in the directory underneath (see
    ``replication/fusermount.py``). The next ``mount()`` of the path detaches such a dead
    mirror first; the directory holds all the data. ``unmount()`` unmounts and waits for
    the thread; while files are open it refuses with ``UsageError`` (the mount stays), unless
    ``lazy``: then the mount is detached at once and its loop ends when the last file closes.
    ``read_only=True`` is the secondary's view: every change is refused with ``EROFS``.
    A process must unmount (or close every file of the mount) before it exits: closing a
    file of a mount whose loop died with the process would wait for an answer forever.
    """

    def __init__(
        self,
        root_name: str,
        path: Path,
        listener: MirrorListener | None,
        *,
        read_only: bool = False,
    ) -> None:
        self.root_name = root_name
        self.path = Path(path)
        self.read_only = read_only
        self._listener = listener
        self._mount: _Mount | None = None

    def __enter__(self) -> Self:
        self.mount()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unmount()

    @property
    def mounted(self) -> bool:
        return self._mount is not None and not self._mount.ended.is_set()

    def answering(self) -> bool:
        """Mounted and its connection alive: False once the loop ended or the
        connection was aborted (a fence), the mount dead (``ENOTCONN``). Asks the
        kernel (a ``stat`` of the path): call it from a thread other than the
        mirror's own, never while the process that serves it is stopped."""
        if not self.mounted:
            return False
        try:
            os.stat(self.path)
        except OSError as exc:
            return exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED)
        return True

    @property
    def backing_fd(self) -> int:
        """The directory under the mount, opened before mounting: the way to reach the real
        contents while mounted (the peer's ``Applier`` writes through it under a read-only
        mirror). Valid until ``unmount``; ``UsageError`` when not mounted."""
        if self._mount is None:
            raise UsageError(f"{self.path}: the mirror {self.root_name!r} is not mounted")
        return self._mount.fd

    @property
    def order_lock(self) -> threading.Lock:
        """The lock held around every local change and its ``listener.after``: whoever
        reads the backing directory under it (a resync) sees a state that every op
        ``after`` delivered so far has reached and no later one has. ``UsageError``
        when not mounted."""
        if self._mount is None or self._mount.order_lock is None:
            raise UsageError(f"{self.path}: the mirror {self.root_name!r} is not mounted")
        return self._mount.order_lock

    def mount(self) -> None:
        """Mount over ``path``; returns once the mount is live. ``UsageError`` if it fails."""
        if self._mount is not None:
            raise UsageError(f"{self.path}: the mirror {self.root_name!r} is already mounted")
        try:
            detach_dead(str(self.path))  # left by a daemon killed or fenced: the app is stopped
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UsageError(f"replicated directory {self.path}: {exc.strerror}") from exc
        state = _Mount(fd)
        try:
            state.fuse = fuse_mount(str(self.path), self._mount_options(), MOUNT_TIMEOUT_S)
        except BaseException:
            os.close(fd)
            raise
        operations = _Operations(self.root_name, fd, self._listener, self.read_only, state.ready)
        state.order_lock = operations._lock
        state.thread = threading.Thread(
            target=self._serve, args=(operations, state), name=f"fuse-{self.root_name}", daemon=True
        )
        self._mount = state
        dispositions = _signal_dispositions()
        state.thread.start()
        state.ready.wait(MOUNT_TIMEOUT_S)  # set by the kernel's first request or the loop's end
        _restore_signal_dispositions(dispositions)
        reason: object = state.failure or "no answer from the kernel"
        if operations.live:
            try:
                state.device = os.stat(self.path).st_dev
            except OSError as exc:  # libfuse may still refuse the session after INIT
                reason = exc
        if state.device is None:
            self._stop(lazy=True)
            raise UsageError(f"cannot mount the FUSE mirror on {self.path}: {reason}")

    def _mount_options(self) -> dict[str, bool | str]:
        """The kernel's mount options (never ``auto_unmount``: a dead mirror must stay
        dead over the directory, see ``replication/fusermount.py``)."""
        return {
            "fsname": f"failover:{self.root_name}",
            "subtype": "failover",
            "default_permissions": True,
            "allow_other": os.geteuid() == 0,
            "ro": self.read_only,
        }

    def _serve(self, operations: _Operations, state: _Mount) -> None:
        assert state.fuse is not None
        options: dict[str, Any] = {  # libfuse's own: the mount is already made
            "foreground": True,
            "fsname": f"failover:{self.root_name}",
            "hard_remove": True,
            "use_ino": True,
            # libfuse 3.14 defaults this to UINT_MAX and then complains about its own value.
            "max_idle_threads": 8,
            # The high-level API gives each name of a hard-linked file its own kernel inode:
            # cached attributes of one name would go stale when the file changes through
            # another (a read there would stop at the old size). Cached (the read-write
            # mirror is the only writer) until the mount meets such a file: see _Operations.
            "attr_timeout": operations._attr_cache_s,
        }
        if self.read_only:
            # The applier changes the directory underneath: no cached attributes or names.
            options.update(entry_timeout=0, negative_timeout=0)
        try:
            _Session(operations, state.fuse.libfuse_mountpoint, **options)
        except BaseException as exc:
            state.failure = exc
            log.error("FUSE mirror %s on %s ended: %s", self.root_name, self.path, exc)
        finally:
            os.close(state.fd)
            state.ended.set()
            state.ready.set()

    def wait_unmounted(self, timeout: float | None = None) -> bool:
        """Wait until the FUSE loop has ended (unmounted by us or from outside)."""
        state = self._mount
        return state is None or state.ended.wait(timeout)

    def unmount(self, *, lazy: bool = False) -> None:
        """Unmount and wait for the FUSE thread (see the class docstring for ``lazy``)."""
        if self._mount is not None:
            self._stop(lazy)

    def _stop(self, lazy: bool) -> None:
        state = self._mount
        assert state is not None and state.thread is not None
        if state.ended.is_set():  # aborted (a fence) or unmounted from outside
            with contextlib.suppress(OSError):
                detach_dead(str(self.path))
        elif self._ours_on_top(state):
            try:
                flags = _MNT_DETACH if lazy else 0
                _checked(_libc.umount2(os.fsencode(self.path), flags), "umount")
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise UsageError(f"{self.path}: files are open in the mirror") from exc
                if exc.errno not in (errno.EINVAL, errno.ENOENT):  # already gone
                    raise
        self._mount = None
        if state.fuse is not None:  # unmounted or detached: its helper may go
            state.fuse.release(MOUNT_TIMEOUT_S)
        if lazy:
            return
        if not state.ended.wait(MOUNT_TIMEOUT_S):
            raise UsageError(f"{self.path}: the FUSE loop did not end after unmount")
        state.thread.join()

    def _ours_on_top(self, state: _Mount) -> bool:
        """Never unmount what lies under our mount (the directory may be a mount point)."""
        try:
            top = os.stat(self.path).st_dev
        except OSError:
            return True  # a mount is there but does not answer: ours
        if state.device is not None:
            return top == state.device
        return top != os.fstat(state.fd).st_dev
