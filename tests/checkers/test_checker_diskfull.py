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
from structlog.testing import capture_logs

from failover.core.state import Generation
from failover.platform.checkers.probes import CommandProbe, PingProbe
from failover.runtime.arbitrator import Granted
from failover.runtime.ping import PingArbitrator

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
        (mount / "filler").unlink(missing_ok=True)
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


@pytest.mark.skipif(not shutil.which("ping"), reason="needs iputils-ping")
async def test_the_ping_arbitrator_on_a_full_disk_grants(full_dir: Path) -> None:
    # The operator's run: renewals of the serving node read "not reached".
    arbitrator = PingArbitrator(
        address="127.0.0.1",
        port=None,
        probe_count=2,
        probe_timeout=1.0,
        call_bound=2.2,
        output_dir=full_dir / "arbitrator",
    )
    for _ in range(3):
        assert await arbitrator.renew(Generation(2, "beta")) == Granted(Generation(2, "beta"))


async def test_a_full_disk_is_warned_of_once_and_its_end_noted(full_dir: Path) -> None:
    probe = CommandProbe("many", "seq 1 3000", full_dir).open()
    with capture_logs() as logs:
        for _ in range(3):
            assert (await probe.check(5.0)).ok
        lost = [entry for entry in logs if entry["event"].startswith("script output")]
        assert len(lost) == 1 and lost[0]["log_level"] == "warning", logs
        (full_dir.parent / "filler").unlink()
        assert (await probe.check(5.0)).ok
    assert logs[-1]["event"] == "script output written again", logs
    assert (full_dir / "checker-many.log").read_text().endswith("2999\n3000\n")
