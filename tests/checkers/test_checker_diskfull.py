"""A full state disk loses a checker's log lines, never its verdict.

A probe's output goes to ``<output_dir>/checker-<name>.log``; on a full disk
iputils ``ping`` fails to write its output and exits 1 although its address
answers. The probes read their command's output through a pipe
(``run_script(piped=True)``): the verdict is the command's own, the log is
written best-effort. Needs root (a small tmpfs is mounted and filled).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.platform.checkers.probes import CommandProbe, PingProbe

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs"),
]


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tmpfs of 64 KiB with no byte left."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        (mount / "node").mkdir()
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError) as full:
                while True:
                    os.write(fd, b"x" * 4096)
        finally:
            os.close(fd)
        assert full.value.errno == errno.ENOSPC
        yield mount / "node"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.skipif(not shutil.which("ping"), reason="needs iputils-ping")
async def test_a_ping_probe_on_a_full_disk_still_sees_loopback_answer(full_dir: Path) -> None:
    outcome = await PingProbe("ping", "127.0.0.1", full_dir).open().check(2.0)
    assert outcome.ok, outcome.reason


async def test_a_command_probe_on_a_full_disk_keeps_its_verdict_and_tail(full_dir: Path) -> None:
    probe = CommandProbe("echo", "sh -c 'seq 1 20000; echo the last line'", full_dir)
    outcome = await probe.open().check(5.0)
    assert outcome.ok, outcome.reason
    failing = CommandProbe("fail", "sh -c 'seq 1 20000; echo why it failed; exit 3'", full_dir)
    outcome = await failing.open().check(5.0)
    assert not outcome.ok
    assert outcome.reason.endswith(
        "exited with status 3: 19997 | 19998 | 19999 | 20000 | why it failed"
    )
