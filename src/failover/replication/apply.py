"""The receiver side of replication: apply ops to the peer's backing directories.

A malicious or buggy peer must never change anything outside the replicated
directories. So every op is checked (``ops.check``), then its path is resolved
from the root's directory fd one component at a time with
``O_PATH|O_DIRECTORY|O_NOFOLLOW`` (a symlink or non-directory anywhere before the
last component is refused), and the change itself is made relative to that
parent fd with the ``*at`` call and without following a symlink in the last
component:

- data ops (Create, Write, Truncate, Fallocate, Fsync) open the file with
  ``O_NOFOLLOW`` and refuse anything but a regular file (Fsync: or a directory);
- Chmod and the xattr ops act on an ``O_PATH|O_NOFOLLOW`` fd of the object
  through ``/proc/self/fd`` (Chmod refuses a symlink: FUSE hands the mirror the
  target of a following chmod, so a symlink here is never legitimate);
- Chown and Utimens use ``follow_symlinks=False`` (they change a symlink itself);
- Unlink, Rename, Link, Symlink, Mkdir, Rmdir never follow the last component.

Refusals raise ``PathRejected``; a failed system call raises ``ApplyError``
naming the op, root and path. Both are ``PeerProtocolError``: the peer sent an
op that does not fit this tree (``ApplyError.errno`` tells a local failure such
as ENOSPC or EIO apart). Nothing else escapes ``apply``.

The fds of recently written files stay open (``Applier(open_files=...)``); any
namespace op (Unlink, Rmdir, Mkdir, Symlink, Rename, Link) closes the ones at or
below its paths first, so a cached fd is always the file now at its path, as
long as nothing but the applier changes the backing directory (on the peer it
is not mounted for applications).

Not thread-safe: one thread applies a peer's ops in order.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from failover.errors import PeerProtocolError, UsageError
from failover.replication.ops import (
    Chmod,
    Chown,
    Create,
    Fallocate,
    Fsync,
    Link,
    Mkdir,
    Op,
    PathRejected,
    RemoveXattr,
    Rename,
    Rmdir,
    SetXattr,
    Symlink,
    Truncate,
    Unlink,
    Utimens,
    Write,
    check,
    paths_of,
)
from failover.replication.paths import DIR_FLAGS, Blocked, close_parent, open_parent

__all__ = ["Applier", "ApplyError", "PathRejected"]

# O_NONBLOCK: opening a FIFO planted in the tree must fail, not hang the applier.
_DIR_FLAGS = DIR_FLAGS  # a module name: the fuzz test's mutant swaps it
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_OBJECT_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
OPEN_FILES = 16
"""Default number of written files whose fd the applier keeps open (see ``Applier``)."""

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = _libc.renameat2
_renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_renameat2.restype = ctypes.c_int
_fallocate = _libc.fallocate64
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


class ApplyError(PeerProtocolError):
    """A system call applying a peer's op failed; names op, root and path."""

    def __init__(self, message: str, errno_: int) -> None:
        super().__init__(message)
        self.errno = errno_


def _check_libc(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class Applier:
    """Applies ops to the backing directories named by their root.

    ``roots`` maps each configured root name to an open directory fd (preferred:
    the daemon opens it before the mirror is mounted over the directory; the
    applier keeps its own duplicate, the caller still owns its fd) or a path
    (opened here). ``close()`` closes what the applier holds. Raises
    ``UsageError`` if a root is not a directory.

    ``open_files`` (at least 1): how many written files keep their fd open between ops
    (sequential writes to a file then cost one pwrite each, not a path walk and
    an open); a namespace op closes those at or below its paths first.
    """

    def __init__(
        self, roots: Mapping[str, int | os.PathLike[str] | str], open_files: int = OPEN_FILES
    ) -> None:
        if open_files < 1:
            raise UsageError(f"Applier: open_files must be at least 1, not {open_files}")
        self._roots: dict[str, int] = {}
        self._open_files: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._max_open_files = open_files
        try:
            for name, where in roots.items():
                self._roots[name] = self._open_root(name, where)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_root(name: str, where: int | os.PathLike[str] | str) -> int:
        try:
            if isinstance(where, int):
                fd = os.dup(where)
                os.set_inheritable(fd, False)
            else:
                fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise UsageError(f"replicated directory {name!r}: {error.strerror}: {where}") from None
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(f"replicated directory {name!r}: fd {where} is not a directory")
        return fd

    def close(self) -> None:
        """Close every fd the applier holds. Idempotent."""
        while self._open_files:
            os.close(self._open_files.popitem()[1])
        while self._roots:
            os.close(self._roots.popitem()[1])

    def __enter__(self) -> Applier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- the public operations --------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        """Apply one op to its root's backing directory, synchronously.

        Returns once the system calls returned (not durable: see ``fsync``; an
        ``Fsync`` op does that). Raises ``PathRejected`` for a path that is
        invalid or would leave the root, ``ApplyError`` when a system call fails,
        ``PeerProtocolError`` for any other invalid field.
        """
        check(op)
        handler = _HANDLERS[type(op)]
        if type(op) in _NAMESPACE_OPS:
            self._forget(op)
        try:
            handler(self, op)
        except PeerProtocolError:
            self._forget(op)
            raise
        except OSError as error:
            self._forget(op)
            raise self._error(op, error) from None

    def fsync(self, root: str, path: bytes, datasync: bool) -> None:
        """Make the file or directory at ``path`` durable (fdatasync when ``datasync``).

        Blocks until the disk has it; raises like ``apply``.
        """
        self.apply(Fsync(root, path, datasync))

    # --- resolution -------------------------------------------------------------------------------

    def _error(self, op: Op, error: OSError) -> PeerProtocolError:
        where = " -> ".join(repr(p) for p in paths_of(op))
        message = f"{type(op).__name__} {op.root}:{where}: {error.strerror or error}"
        if error.errno == errno.ELOOP:
            return PathRejected(f"{message} (symlink in the last component)")
        return ApplyError(message, error.errno or 0)

    @contextmanager
    def _parent(self, op: Op, path: bytes) -> Iterator[tuple[int, bytes]]:
        """The parent directory of ``path`` (an fd valid in the block) and its last name.

        Walks from the root one component at a time without following symlinks:
        a symlink or a non-directory before the last component is ``PathRejected``.
        """
        root_fd = self._roots.get(op.root)
        if root_fd is None:
            raise PathRejected(f"{type(op).__name__}: unknown root {op.root!r}")
        try:
            fd, name = open_parent(root_fd, path, _DIR_FLAGS)
        except Blocked as blocked:
            if blocked.errno == errno.ENOENT:  # an ordinary failure, reported as ApplyError
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)) from None
            raise PathRejected(
                f"{type(op).__name__} {op.root}:{path!r}: {blocked.prefix!r} is a symlink "
                "or not a directory"
            ) from None
        try:
            yield fd, name
        finally:
            close_parent(root_fd, fd)

    def _open_file(self, op: Op, flags: int, mode: int = 0) -> int:
        """An fd of the regular file (or, for Fsync, directory) at ``op.path``."""
        assert not isinstance(op, Rename | Link)
        with self._parent(op, op.path) as (parent, name):
            fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=parent)
        kind = os.fstat(fd).st_mode
        if stat.S_ISREG(kind) or (stat.S_ISDIR(kind) and isinstance(op, Fsync)):
            return fd
        os.close(fd)
        raise ApplyError(
            f"{type(op).__name__} {op.root}:{op.path!r}: not a regular file", errno.EINVAL
        )

    def _writable(self, op: Op, flags: int = 0, mode: int = 0) -> int:
        """A write-only fd of the regular file at ``op.path``, kept open for the next ops.

        The applier keeps up to ``open_files`` of them (least recently used
        closed first) and drops every one at or below a path a namespace op
        touches, so a cached fd is always the file now at its path.
        """
        assert not isinstance(op, Rename | Link)
        key = (op.root, op.path)
        fd = self._open_files.get(key)
        if fd is not None:
            self._open_files.move_to_end(key)
            return fd
        fd = self._open_file(op, os.O_WRONLY | flags, mode)
        self._open_files[key] = fd
        if len(self._open_files) > self._max_open_files:
            os.close(self._open_files.popitem(last=False)[1])
        return fd

    def _forget(self, op: Op) -> None:
        """Close the cached fds of every path at or below the paths ``op`` names."""
        if not self._open_files:
            return
        for path in paths_of(op):
            below = path + b"/"
            for key in [
                key
                for key in self._open_files
                if key[0] == op.root and (key[1] == path or key[1].startswith(below))
            ]:
                os.close(self._open_files.pop(key))

    @contextmanager
    def _object(self, op: Op, path: bytes) -> Iterator[tuple[str, int]]:
        """Whatever is at ``path`` (never followed): its ``/proc/self/fd`` name and mode.

        A call on that name reaches this very inode (a symlink itself, never its
        target); the fd behind it is valid in the block.
        """
        with self._parent(op, path) as (parent, name):
            fd = os.open(name, _OBJECT_FLAGS, dir_fd=parent)
        try:
            yield f"/proc/self/fd/{fd}", os.fstat(fd).st_mode
        finally:
            os.close(fd)

    # --- one method per op type -------------------------------------------------------------------

    def _create(self, op: Create) -> None:
        # The umask applied at creation; an existing file gets the mode too.
        os.fchmod(self._writable(op, os.O_CREAT, op.mode), op.mode)

    def _write(self, op: Write) -> None:
        fd = self._writable(op)
        view = memoryview(op.data).cast("B")
        offset = op.offset
        while view:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done

    def _truncate(self, op: Truncate) -> None:
        os.ftruncate(self._writable(op), op.size)

    def _fallocate(self, op: Fallocate) -> None:
        _check_libc(_fallocate(self._writable(op), op.mode, op.offset, op.length))

    def _fsync(self, op: Fsync) -> None:
        sync = os.fdatasync if op.datasync else os.fsync
        cached = self._open_files.get((op.root, op.path))
        if cached is not None:
            sync(cached)
            return
        fd = self._open_file(op, os.O_RDONLY)
        try:
            sync(fd)
        finally:
            os.close(fd)

    def _unlink(self, op: Unlink) -> None:
        with self._parent(op, op.path) as (parent, name):
            os.unlink(name, dir_fd=parent)

    def _rmdir(self, op: Rmdir) -> None:
        with self._parent(op, op.path) as (parent, name):
            os.rmdir(name, dir_fd=parent)

    def _mkdir(self, op: Mkdir) -> None:
        with self._parent(op, op.path) as (parent, name):
            os.mkdir(name, op.mode, dir_fd=parent)
        with self._object(op, op.path) as (inode, _):
            os.chmod(inode, op.mode)  # the umask applied at creation

    def _symlink(self, op: Symlink) -> None:
        with self._parent(op, op.path) as (parent, name):
            os.symlink(op.target, name, dir_fd=parent)

    def _rename(self, op: Rename) -> None:
        with self._parent(op, op.old) as (old_dir, old), self._parent(op, op.new) as (new_dir, new):
            if op.flags == 0:
                os.rename(old, new, src_dir_fd=old_dir, dst_dir_fd=new_dir)
            else:
                _check_libc(_renameat2(old_dir, old, new_dir, new, op.flags))

    def _link(self, op: Link) -> None:
        with (
            self._parent(op, op.existing) as (old_dir, old),
            self._parent(op, op.new) as (new_dir, new),
        ):
            os.link(old, new, src_dir_fd=old_dir, dst_dir_fd=new_dir, follow_symlinks=False)

    def _chmod(self, op: Chmod) -> None:
        with self._object(op, op.path) as (inode, mode):
            if stat.S_ISLNK(mode):
                raise PathRejected(f"Chmod {op.root}:{op.path!r}: is a symlink")
            os.chmod(inode, op.mode)

    def _chown(self, op: Chown) -> None:
        with self._parent(op, op.path) as (parent, name):
            os.chown(name, op.uid, op.gid, dir_fd=parent, follow_symlinks=False)

    def _utimens(self, op: Utimens) -> None:
        with self._parent(op, op.path) as (parent, name):
            os.utime(name, ns=(op.atime_ns, op.mtime_ns), dir_fd=parent, follow_symlinks=False)

    def _setxattr(self, op: SetXattr) -> None:
        with self._object(op, op.path) as (inode, _):
            os.setxattr(inode, op.name, op.value, op.flags)

    def _removexattr(self, op: RemoveXattr) -> None:
        with self._object(op, op.path) as (inode, _):
            os.removexattr(inode, op.name)


_NAMESPACE_OPS = frozenset({Unlink, Rmdir, Mkdir, Symlink, Rename, Link})
"""Ops that change which file a path names: cached fds at or below their paths are dropped."""

_HANDLERS: dict[type, Callable[[Applier, Any], None]] = {
    Create: Applier._create,
    Write: Applier._write,
    Truncate: Applier._truncate,
    Fallocate: Applier._fallocate,
    Fsync: Applier._fsync,
    Unlink: Applier._unlink,
    Rmdir: Applier._rmdir,
    Mkdir: Applier._mkdir,
    Symlink: Applier._symlink,
    Rename: Applier._rename,
    Link: Applier._link,
    Chmod: Applier._chmod,
    Chown: Applier._chown,
    Utimens: Applier._utimens,
    SetXattr: Applier._setxattr,
    RemoveXattr: Applier._removexattr,
}
