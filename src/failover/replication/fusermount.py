"""Mounting through ``fusermount3``, keeping its helper in hand; finding, aborting and
detaching the mirrors' FUSE connections.

Invariant (the fence): a mirror's mount is never removed behind the back of the
application that writes through it. When the filesystem's process dies (even by
kill -9) the kernel aborts the connection (the process held the only ``/dev/fuse``
descriptor) and the mount stays, dead: every request pending fails
(``ECONNABORTED``), every later one too (``ENOTCONN``), so nothing written after
the death is acknowledged. It is detached only by the next mount of the same
directory (``detach_dead``), once the daemon's start has stopped the application.
``auto_unmount`` is therefore not used: its helper unmounted the dead mirror at
once, uncovering the replicated directory itself under the application, whose
next ``open`` wrote there, acknowledged by the local disk alone and lost at the
peer's takeover (the partition campaign's S3, issue 11).

``abort_connections`` aborts the connections of the mirrors at given paths
(through ``/sys/fs/fuse/connections/<id>/abort``): the watchdog's first step of a
fence, which ends the application's requests even while the filesystem's process
is stopped (SIGSTOP) and cannot answer them.

After ``FuseMount.release()`` returns, no ``fusermount3`` child of this process is
left for that mount, alive or a zombie (without ``auto_unmount`` the helper exits
as soon as it has handed the ``/dev/fuse`` descriptor back over the socket pair,
and ``fuse_mount`` reaps it then; ``release`` reaps one that lingered). libfuse
is given the descriptor as ``/dev/fd/N`` (libfuse 3.3 and later), so that it
mounts nothing itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from failover.errors import UsageError

log = logging.getLogger(__name__)

FUSERMOUNT = "fusermount3"
_COMMFD_ENV = "_FUSE_COMMFD"  # how libfuse and fusermount3 name the socket's descriptor
_ERROR_LIMIT = 4096
FSTYPE = "fuse.failover"
"""The mirrors' filesystem type in the mount table (``fuse`` with subtype ``failover``)."""
CONNECTIONS = "/sys/fs/fuse/connections"
_MNT_DETACH = 2
_DETACH_TIMEOUT = 10.0
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]


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
    """Mount a FUSE filesystem on ``path`` with ``fusermount3 -o ...`` (no
    ``auto_unmount``: see the module docstring).

    ``options`` are the mount options (``fsname``, ``ro``, ``allow_other``...):
    a value True is a flag, a string ``key=value``. Raises ``UsageError`` naming
    the path and fusermount3's own message when the mount fails.
    """
    program = shutil.which(FUSERMOUNT)
    if program is None:
        raise UsageError(f"cannot mount {path}: {FUSERMOUNT} not found (Debian package fuse3)")
    flags = [key if value is True else f"{key}={value}" for key, value in options.items() if value]
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
    try:  # without auto_unmount it exits once the descriptor is handed over: reaped here
        helper.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) for %s still runs after the mount", FUSERMOUNT, helper.pid, path)
    return FuseMount(path, device, ours, helper)


def _receive_descriptor(sock: socket.socket, timeout: float) -> int | None:
    """The descriptor fusermount3 sends once the mount is made; None if it ended first."""
    sock.settimeout(timeout)
    try:
        # close-on-exec from the start: no process started meanwhile inherits it
        _, fds, _, _ = socket.recv_fds(sock, 1, 1, socket.MSG_CMSG_CLOEXEC)
    except (OSError, TimeoutError):
        return None
    return fds[0] if fds else None


def _abandon(
    control: socket.socket, helper: subprocess.Popen[bytes] | None, timeout: float
) -> None:
    """A mount that failed: close the socket, then reap the helper, killed if it
    does not end by itself. A mount the helper made but whose descriptor never
    reached us is left dead (its descriptor closed with the socket): the next mount
    of the path detaches it (``detach_dead``)."""
    control.close()
    if helper is None:
        return
    try:
        helper.wait(timeout)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()


# --- the mount table and the connections ------------------------------------------------


@dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``: where, what type, and the device (for
    FUSE, the minor number is the connection's id under ``/sys/fs/fuse/connections``)."""

    mount_point: str
    fstype: str
    major: int
    minor: int


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount points as octal."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def mount_table(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """This process's mount table, bottom to top (a later entry at the same point is
    mounted over an earlier one). Reads the table only: never touches a mount (a
    paused filesystem's ``stat`` would block)."""
    entries = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as table:
        for line in table:
            fields = line.split()
            try:
                major, minor = fields[2].split(":")
                fstype = fields[fields.index("-", 6) + 1]
                entries.append(MountEntry(_unescape(fields[4]), fstype, int(major), int(minor)))
            except (ValueError, IndexError):
                continue  # a line this parser does not know: not one of ours
    return entries


def mirror_mounts(paths: Iterable[str], table: list[MountEntry] | None = None) -> list[MountEntry]:
    """The mirrors (``FSTYPE``) mounted at ``paths``, stacked dead ones included."""
    wanted = {os.path.abspath(path) for path in paths}
    entries = mount_table() if table is None else table
    return [e for e in entries if e.fstype == FSTYPE and e.mount_point in wanted]


def abort_connections(paths: Iterable[str]) -> str:
    """Abort the FUSE connection of every mirror mounted at ``paths``: each request
    pending fails at once (``ECONNABORTED``), every later one too (``ENOTCONN``), and
    the mount stays (dead) over the directory. Works while the filesystem's process
    is stopped. Uses ``/sys/fs/fuse/connections``, mounting the ``fusectl``
    filesystem on a private temporary directory for the time of the abort when it
    is not mounted there (root only). Returns what was done, for the fence's record
    ("aborted N", "none: ...", "failed: ...")."""
    try:
        mounts = mirror_mounts(paths)
    except OSError as exc:
        return f"failed: cannot read the mount table: {exc.strerror}"
    if not mounts:
        return "none: no mirror mounted"
    ids = sorted({entry.minor for entry in mounts})
    if all(os.path.exists(f"{CONNECTIONS}/{i}") for i in ids):
        return _abort_in(CONNECTIONS, ids)
    try:  # (a full /tmp must cost this step only, never the fence's next ones)
        directory = tempfile.TemporaryDirectory(
            prefix="failover-fusectl-", ignore_cleanup_errors=True
        )
    except OSError as exc:
        return f"failed: fusectl not mounted, no directory to mount it on: {exc.strerror}"
    with directory as private:
        if _libc.mount(b"fusectl", private.encode(), b"fusectl", 0, None) != 0:
            code = ctypes.get_errno()
            return f"failed: fusectl not mounted and cannot be: {os.strerror(code)}"
        try:
            return _abort_in(private, ids)
        finally:
            _libc.umount2(private.encode(), _MNT_DETACH)


def _abort_in(directory: str, ids: list[int]) -> str:
    failed = []
    for connection in ids:
        try:
            with open(f"{directory}/{connection}/abort", "w", encoding="ascii") as abort:
                abort.write("1")
        except FileNotFoundError:
            continue  # the connection ended (unmounted) since the table was read
        except OSError as exc:
            failed.append(f"{connection}: {exc.strerror}")
    if failed:
        return "failed: " + ", ".join(failed)
    return f"aborted {len(ids)}"


def detach_dead(path: str) -> bool:
    """Detach the mirror left dead on top of ``path`` (its process died or its
    connection was aborted): True when one was detached. Anything else at ``path``
    (a live mount, another filesystem) is left alone. Only for a mount about to be
    made again, the application stopped: detaching uncovers the directory."""
    try:
        os.stat(path)
        return False
    except OSError as exc:
        if exc.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
            return False
    mounts = [e for e in mount_table() if e.mount_point == os.path.abspath(path)]
    if not mounts or mounts[-1].fstype != FSTYPE:
        return False
    if _libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code != errno.EPERM:
            raise OSError(code, f"umount {path}: {os.strerror(code)}")
        program = shutil.which(FUSERMOUNT)
        if program is None:
            raise OSError(code, f"umount {path}: {os.strerror(code)} and no {FUSERMOUNT}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [program, "-u", "-z", "--", path],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_DETACH_TIMEOUT,
                check=False,
            )
    log.warning("a dead mirror left on %s (its daemon died or was fenced): detached", path)
    return True
