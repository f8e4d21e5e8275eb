"""FUSE helper processes do not accumulate: every ``fusermount3`` a mount starts
is gone, reaped, once the mount is made (no ``auto_unmount``: nothing watches
the mount, which stays dead if the process dies, see replication/fusermount.py),
however often it is remounted (a node remounts its mirrors read-write and
read-only on every hand-over).

Helpers are counted by parent PID from /proc (zombies included); nothing is
ever signalled by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mirror_support import needs_fuse

from failover.errors import UsageError
from failover.replication.fusermount import fuse_mount
from failover.replication.mirror import Mirror
from failover.testing.processes import children_named

pytestmark = needs_fuse

CYCLES = 6


def helpers() -> list[tuple[int, str]]:
    """(pid, state) of every fusermount3 child of this process, zombies included."""
    return children_named(os.getpid(), "fusermount")


def test_remount_cycles_leave_no_fusermount_helper(tmp_path: Path) -> None:
    assert helpers() == []
    (tmp_path / "f").write_bytes(b"kept")
    for cycle in range(CYCLES):
        mirror = Mirror("data", tmp_path, None, read_only=cycle % 2 == 1)
        mirror.mount()
        try:
            assert helpers() == []  # the helper mounted, handed the device over and went
            assert (tmp_path / "f").read_bytes() == b"kept"
        finally:
            mirror.unmount()
        assert helpers() == [], f"after cycle {cycle + 1}"
    assert fuse_devices() == []  # and libfuse closed every /dev/fuse it was given


def fuse_devices() -> list[str]:
    """This process's descriptors open on /dev/fuse."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "/dev/fuse":
                found.append(fd)
        except OSError:  # the listing's own descriptor, closed meanwhile
            continue
    return found


def test_a_lazy_unmount_of_a_busy_mirror_leaves_no_helper(tmp_path: Path) -> None:
    mirror = Mirror("data", tmp_path, None)
    mirror.mount()
    fd = os.open(tmp_path / "open", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        with pytest.raises(UsageError, match="files are open"):
            mirror.unmount()
        assert helpers() == []
        mirror.unmount(lazy=True)
        assert helpers() == []
    finally:
        os.close(fd)
    assert mirror.wait_unmounted(10)


def test_a_mount_fusermount3_refuses_names_its_reason_and_leaves_no_helper(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match=f"cannot mount the FUSE mirror on {tmp_path}: .+"):
        fuse_mount(str(tmp_path), {"no_such_option": True}, 10.0)
    assert helpers() == []
    assert not os.path.ismount(tmp_path)
