"""Reaching an entry under a replicated directory without ever leaving it.

Paths come from the peer (ops, resync items, verify requests) or from a
change set; ``ops.validate_path`` has checked their shape. What is left is
the walk: from the directory's fd, one component at a time, each opened with
``O_NOFOLLOW``, so a symlink (or a file) anywhere before the last component
stops the walk instead of leading out of the tree. The applier, the resync
and verify all walk with ``open_parent``.
"""

from __future__ import annotations

import errno
import os

DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How each directory on the way is opened (``O_PATH``: no read permission needed)."""

_BLOCKING = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


class Blocked(Exception):
    """A component before the last is missing (``ENOENT``), a symlink (``ELOOP``) or
    not a directory (``ENOTDIR``): ``prefix`` is the path up to it."""

    def __init__(self, prefix: bytes, code: int) -> None:
        super().__init__(f"{prefix!r}: {os.strerror(code)}")
        self.prefix = prefix
        self.errno = code


def open_parent(root_fd: int, path: bytes, flags: int = DIR_FLAGS) -> tuple[int, bytes]:
    """(an fd of the directory that holds ``path``'s last component, that component).

    The fd is ``root_fd`` itself for a path of one component; any other fd is the
    caller's to close. Raises ``Blocked`` (nothing left open) when the walk cannot
    go on, ``OSError`` for any other failure."""
    *parents, name = path.split(b"/")
    fd = root_fd
    try:
        for depth, part in enumerate(parents):
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as error:
                if error.errno in _BLOCKING:
                    raise Blocked(b"/".join(parents[: depth + 1]), error.errno) from None
                raise
            if fd != root_fd:
                os.close(fd)
            fd = child
    except BaseException:
        if fd != root_fd:
            os.close(fd)
        raise
    return fd, name


def close_parent(root_fd: int, fd: int) -> None:
    """Close what ``open_parent`` opened (never the root)."""
    if fd != root_fd:
        os.close(fd)
