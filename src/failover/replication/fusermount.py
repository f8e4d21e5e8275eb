"""Mounting through ``fusermount3`` with ``auto_unmount``, keeping its helper in hand.

Invariant: after ``FuseMount.release()`` returns, no ``fusermount3`` child of this
process is left for that mount, alive or a zombie, and a mount is never left behind
the process's back: if the process dies (even by kill -9), the helper still removes
its mount.

Why this module exists: with ``auto_unmount``, libfuse runs ``fusermount3``, which
mounts, hands the ``/dev/fuse`` descriptor back over a socket pair and then stays,
waiting for that socket to close, to unmount if the filesystem's process dies.
libfuse keeps its end of the socket open for the life of the process, never closes
it on unmount and never reaps the helper: every mount (a node remounts its mirrors
on every hand-over) left one ``fusermount3`` behind (15 after a few swaps). Here
the helper is run the same way, but its socket and its process belong to the
``FuseMount``: ``release()`` closes the socket once the filesystem is unmounted
(the helper then finds nothing to unmount and exits) and reaps it. libfuse is
given the descriptor as ``/dev/fd/N`` (libfuse 3.3 and later), so that it mounts
nothing itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from failover.errors import UsageError

log = logging.getLogger(__name__)

FUSERMOUNT = "fusermount3"
_COMMFD_ENV = "_FUSE_COMMFD"  # how libfuse and fusermount3 name the socket's descriptor
_ERROR_LIMIT = 4096


@dataclass(eq=False)
class FuseMount:
    """A live FUSE mount: the ``/dev/fuse`` descriptor (``device``, for libfuse as
    ``/dev/fd/N``; libfuse closes it when its loop ends) and the helper watching it."""

    path: str
    device: int
    _control: socket.socket
    _helper: subprocess.Popen[bytes]

    @property
    def libfuse_mountpoint(self) -> str:
        """What to give libfuse instead of the path: it then mounts nothing itself."""
        return f"/dev/fd/{self.device}"

    @property
    def helper_pid(self) -> int:
        return self._helper.pid

    def release(self, timeout: float) -> None:
        """Once the filesystem is unmounted (or detached): let the helper go and reap it.

        Must follow the unmount, never precede it: a helper whose socket closes
        while the mount is still there unmounts it (lazily), as after a crash."""
        self._control.close()
        try:
            self._helper.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) for %s did not exit within %s s after the unmount",
                FUSERMOUNT,
                self._helper.pid,
                self.path,
                timeout,
            )


def fuse_mount(path: str, options: Mapping[str, bool | str], timeout: float) -> FuseMount:
    """Mount a FUSE filesystem on ``path`` with ``fusermount3 -o auto_unmount,...``.

    ``options`` are the mount options (``fsname``, ``ro``, ``allow_other``...):
    a value True is a flag, a string ``key=value``. Raises ``UsageError`` naming
    the path and fusermount3's own message when the mount fails.
    """
    program = shutil.which(FUSERMOUNT)
    if program is None:
        raise UsageError(f"cannot mount {path}: {FUSERMOUNT} not found (Debian package fuse3)")
    flags = ["auto_unmount"]
    flags += [key if value is True else f"{key}={value}" for key, value in options.items() if value]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    helper: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryFile() as errors:
        try:
            with theirs:
                helper = subprocess.Popen(
                    [program, "-o", ",".join(flags), "--", path],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,  # a file: the helper outlives any pipe we would read
                    pass_fds=(theirs.fileno(),),
                    env={**os.environ, _COMMFD_ENV: str(theirs.fileno())},
                    start_new_session=True,
                )
            device = _receive_descriptor(ours, timeout)
        except BaseException:
            _abandon(ours, helper, timeout)
            raise
        if device is None:
            _abandon(ours, helper, timeout)
            errors.seek(0)
            said = errors.read(_ERROR_LIMIT).decode("utf-8", "replace").strip()
            raise UsageError(f"cannot mount the FUSE mirror on {path}: {said or 'no reason given'}")
    os.set_inheritable(device, False)
    return FuseMount(path, device, ours, helper)


def _receive_descriptor(sock: socket.socket, timeout: float) -> int | None:
    """The descriptor fusermount3 sends once the mount is made; None if it ended first."""
    sock.settimeout(timeout)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    except (OSError, TimeoutError):
        return None
    return fds[0] if fds else None


def _abandon(
    control: socket.socket, helper: subprocess.Popen[bytes] | None, timeout: float
) -> None:
    """A mount that failed: close the socket first (a helper that did mount then
    unmounts), then reap the helper, killed if it does not end by itself."""
    control.close()
    if helper is None:
        return
    try:
        helper.wait(timeout)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
