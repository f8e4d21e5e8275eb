"""FUSE helper processes do not accumulate: every ``fusermount3`` a mount starts
(it watches the mount, to remove it if the process dies) is gone, reaped, once
the mirror is unmounted, however often it is remounted (a node remounts its
mirrors read-write and read-only on every hand-over).

Helpers are counted by parent PID from /proc (zombies included); nothing is
ever signalled by name.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mirror_support import needs_fuse

from failover.errors import UsageError
from failover.replication import mirror as mirror_module
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
            # one helper per live mount: it removes the mount if this process dies
            assert [state for _, state in helpers()] in (["S"], ["R"])
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
        assert len(helpers()) == 1  # still mounted: still watched
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


# The threads a burst of concurrent requests makes libfuse start: each keeps a Python
# thread state for its life (``_Session``), so none may end, and there are at most
# ``FUSE_THREADS`` of them.
BURST = """
import os, sys, threading
paths = sys.argv[1:]
def work(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    for i in range(50):
        os.pwrite(fd, b"x" * 4096, i * 4096)
        os.fsync(fd)
    os.close(fd)
threads = [threading.Thread(target=work, args=(path,)) for path in paths]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def thread_states() -> int:
    """How many Python thread states this interpreter holds (foreign threads' included)."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
    api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
    api.PyThreadState_Next.restype = ctypes.c_void_p
    api.PyThreadState_Next.argtypes = [ctypes.c_void_p]
    count, state = 0, api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Get())
    while state:
        count, state = count + 1, api.PyThreadState_Next(state)
    return count


def test_libfuse_workers_keep_bounded_thread_states_freed_at_unmount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: set[int] = set()
    write = mirror_module._Operations.write

    def counted(self: object, *args: object) -> object:
        served.add(threading.get_native_id())
        return write(self, *args)

    monkeypatch.setattr(mirror_module._Operations, "write", counted)
    before = thread_states()
    with Mirror("data", tmp_path, None):
        for _ in range(2):
            paths = [str(tmp_path / f"f{n}") for n in range(24)]
            subprocess.run([sys.executable, "-c", BURST, *paths], check=True, timeout=120)
        alive = {int(task) for task in os.listdir("/proc/self/task")}
        during = thread_states()
    assert len(served) > 1  # the burst did run requests side by side
    assert len(served) <= mirror_module.FUSE_THREADS
    assert served <= alive  # no worker that held a thread state has ended
    assert during > before  # the workers kept theirs (the loop's thread has one too)
    assert thread_states() == before  # and the unmount freed them
