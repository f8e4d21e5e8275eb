"""The watchdog's fence ends an application blocked in the mirror of a stopped daemon.

The daemon here is a process serving one FUSE mirror whose listener never
returns from ``sync`` (an fsync waiting for the peer's acknowledgement), then
SIGSTOPped: the writer's fsync is a request already read by the daemon, which
no signal ends (not even SIGKILL: the kernel waits for the answer). The fence's
first step aborts the mirror's connection: the fsync fails, the group's SIGKILL
ends the writer, all while the daemon is still stopped, and nothing was
acknowledged. Order only, never a duration; waits are bounded polls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_watchdog import Rig

from failover.platform.application import _start_time
from failover.replication.fusermount import FSTYPE, mirror_mounts

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse"), reason="needs root and /dev/fuse"
)

BOUND = 15.0  # seconds: an upper bound on every wait, not an expected duration

# a daemon's mirror whose fsync waits for a peer that never answers
_DAEMON = """
import sys, threading
from pathlib import Path
from failover.replication.mirror import Mirror

class Listener:
    def before(self, op): pass
    def after(self, op): pass
    def session(self): return None
    def sync(self, op, local):
        print("sync", flush=True)
        threading.Event().wait()

m = Mirror("data", Path(sys.argv[1]), Listener()); m.mount()
print("mounted", flush=True); sys.stdin.read()
"""

# the application: one record, one fsync; says whether the fsync returned
_WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.pwrite(fd, b"record\\n", 0)
try:
    os.fsync(fd)
except OSError as exc:
    print("failed", exc.errno, flush=True)
else:
    print("acked", flush=True)
"""


def _line(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    return proc.stdout.readline()


def _gone(pid: int) -> bool:
    """Bounded poll: True once the process ``pid`` (our child, reaped by the caller's
    ``wait``) is no longer running."""
    end = time.monotonic() + BOUND
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_the_fence_ends_a_writer_blocked_in_a_stopped_daemon_s_mirror(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    daemon = subprocess.Popen(
        [sys.executable, "-c", _DAEMON, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    rig = Rig(tmp_path, mirrors=(str(directory),))
    writer: subprocess.Popen[bytes] | None = None
    try:
        assert _line(daemon) == b"mounted\n"
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(directory / "records")],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        rig.mark(writer.pid, _start_time(writer.pid))  # the command the fence kills
        assert _line(daemon) == b"sync\n"  # the writer's fsync is in the daemon's hands
        os.kill(daemon.pid, signal.SIGSTOP)  # the daemon's loop stalls
        deadline = time.monotonic() + 0.2
        rig.feed(deadline)
        notice = rig.notice()
        assert notice is not None, rig.log()
        assert notice["steps"]["abort"] == "aborted 1"
        assert notice["aborted_at"] >= deadline
        assert notice["steps"]["kill"] == f"killed group {writer.pid}"
        # the writer is gone while the daemon is still stopped: the fence needed
        # nothing from it; and its fsync never returned success
        assert _gone(writer.pid), "the writer outlived the fence (blocked in the mirror)"
        assert writer.wait(BOUND) in (-signal.SIGKILL, 0)
        assert _line(writer) in (b"", b"failed 103\n"), "an fsync returned success"
        assert daemon.poll() is None
        with open(f"/proc/{daemon.pid}/stat", encoding="ascii") as stat:
            assert stat.read().rsplit(")", 1)[1].split()[0] == "T"  # still stopped
        # the mount stays over the directory, dead: nothing reaches the disk through it
        assert [m.fstype for m in mirror_mounts([str(directory)])] == [FSTYPE]
        with pytest.raises(OSError):
            os.open(directory / "records", os.O_WRONLY)
    finally:
        if writer is not None and writer.poll() is None:
            os.killpg(writer.pid, signal.SIGKILL)
        os.kill(daemon.pid, signal.SIGCONT)
        daemon.kill()
        daemon.wait(BOUND)
        if writer is not None:
            writer.wait(BOUND)
        rig.cleanup()
        while mirror_mounts([str(directory)]):
            subprocess.run(["umount", "-l", str(directory)], check=False)
