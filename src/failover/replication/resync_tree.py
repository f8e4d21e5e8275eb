"""Reading a replicated directory for a resync without ever leaving it: ``Tree``.

Paths come from the peer (its suspect set, the source's items), so they are
resolved like ``apply.Applier`` resolves them: from the root's directory fd one
component at a time with ``O_PATH|O_DIRECTORY|O_NOFOLLOW``, the last component
never followed. A path whose walk meets a missing entry, a symlink or a
non-directory names nothing in this tree (``None``), which is what it is for a
resync: that entry does not exist here. Other failures raise ``OSError``.
Writes never go through here: the target writes with the ``Applier``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress

from failover.errors import PeerProtocolError, UsageError
from failover.replication.paths import DIR_FLAGS
from failover.replication.verify import parent_of

_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


class Tree:
    """Read-only access to replicated directories by (root, relative path).

    ``roots`` maps root names to directory fds (duplicated; the caller keeps
    its own) or paths. A root name not in it is the peer's error
    (``PeerProtocolError``). ``close()`` closes what the tree holds.
    """

    def __init__(self, roots: Mapping[str, int | os.PathLike[str] | str]) -> None:
        self._roots: dict[str, int] = {}
        try:
            for name, where in roots.items():
                if isinstance(where, int):
                    fd = os.dup(where)
                    os.set_inheritable(fd, False)
                else:
                    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self._roots[name] = fd
        except OSError as error:
            self.close()
            raise UsageError(f"replicated directory: {error.strerror}: {error.filename}") from None

    @property
    def root_names(self) -> tuple[str, ...]:
        return tuple(self._roots)

    def close(self) -> None:
        while self._roots:
            os.close(self._roots.popitem()[1])

    def root_fd(self, root: str) -> int:
        fd = self._roots.get(root)
        if fd is None:
            raise PeerProtocolError(f"resync: unknown replicated directory {root!r}")
        return fd

    def parent(self, root: str, path: bytes) -> AbstractContextManager[tuple[int, bytes] | None]:
        """The parent directory's fd (valid in the block) and the last name, or None
        if the parent is not a directory of this tree."""
        return parent_of(self.root_fd(root), path, DIR_FLAGS)

    def lstat(self, root: str, path: bytes) -> os.stat_result | None:
        """The entry at ``path`` (never followed), or None if there is none."""
        if not path:
            return os.fstat(self.root_fd(root))
        with self.parent(root, path) as where:
            if where is None:
                return None
            try:
                return os.stat(where[1], dir_fd=where[0], follow_symlinks=False)
            except OSError as error:
                if error.errno in _NOT_THERE:
                    return None
                raise

    def children(self, root: str, path: bytes) -> list[bytes]:
        """The names in directory ``path`` (``b""``: the root), sorted."""
        if not path:
            fd = os.open(".", _LIST_FLAGS, dir_fd=self.root_fd(root))
        else:
            with self.parent(root, path) as where:
                if where is None:
                    return []
                fd = os.open(where[1], _LIST_FLAGS, dir_fd=where[0])
        try:
            return sorted(os.fsencode(name) for name in os.listdir(fd))
        finally:
            os.close(fd)

    def readlink(self, root: str, path: bytes) -> bytes | None:
        with self.parent(root, path) as where:
            if where is None:
                return None
            return os.fsencode(os.readlink(where[1], dir_fd=where[0]))

    def xattrs(self, root: str, path: bytes) -> list[tuple[bytes, bytes]]:
        """Every extended attribute of the entry (never followed), sorted by name."""
        with self.parent(root, path) as where:
            if where is None:
                return []
            name = f"/proc/self/fd/{where[0]}/{os.fsdecode(where[1])}"
            out = []
            for attr in sorted(os.listxattr(name, follow_symlinks=False)):
                with suppress(OSError):  # removed meanwhile: it is not there
                    value = os.getxattr(name, attr, follow_symlinks=False)
                    out.append((os.fsencode(attr), value))
            return out

    @contextmanager
    def regular_file(self, root: str, path: bytes) -> Iterator[tuple[int, os.stat_result] | None]:
        """A read-only fd of the regular file at ``path`` and its status, or None."""
        with self.parent(root, path) as where:
            if where is None:
                yield None
                return
            try:
                fd = os.open(where[1], _READ_FLAGS, dir_fd=where[0])
            except OSError as error:
                if error.errno in (*_NOT_THERE, errno.ENXIO, errno.EISDIR):
                    yield None
                    return
                raise
        try:
            info = os.fstat(fd)
            yield ((fd, info) if stat.S_ISREG(info.st_mode) else None)
        finally:
            os.close(fd)


def data_extents(fd: int, start: int, end: int) -> list[tuple[int, bytes]]:
    """The data of bytes [start, end) of a file, without its holes (SEEK_DATA/SEEK_HOLE)."""
    extents: list[tuple[int, bytes]] = []
    position = start
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # only a hole up to the end of the file
                break
            raise
        if data >= end:
            break
        stop = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        chunk = os.pread(fd, stop - data, data)
        if not chunk:
            break
        extents.append((data, chunk))
        position = data + len(chunk)
    return extents
