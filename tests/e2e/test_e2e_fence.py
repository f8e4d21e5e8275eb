"""kill -9 of the serving node's daemon alone, while its application keeps writing.

The fence's invariant for the data (issue 11, the partition campaign's S3): no
fsync through the mirror returns success unless its bytes are on the peer (or the
core had decided to serve alone); a dead daemon decides nothing, so after its
death every fsync fails or blocks. The application here outlives the daemon (the
watchdog's fence does not know it: no start marker names it) and does what a
real one does: on an error it opens the file again by name and retries. Before
the fix fusermount3's ``auto_unmount`` removed the dead mirror at once and the
retries wrote into the replicated directory itself, acknowledged by the local
disk alone and lost when the peer took over.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from e2e_support import BOUND, NETNS, RECORD, Cluster, records

from failover.lab import Lab
from failover.testing.processes import AckedWriter

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}

# numbered records, one fsync each; on an error: close, open again by name, retry.
# Prints "<number> <monotonic time the write began>" once the fsync returned.
RETRYING_WRITER = f"""
import os, sys, time
path, number, fd = sys.argv[1], 0, -1
while True:
    began = time.monotonic()
    try:
        if fd < 0:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(fd, b"%08d\\n" % number, number * {RECORD})
        os.fsync(fd)
    except OSError as exc:
        print("error", exc.errno, file=sys.stderr, flush=True)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
            fd = -1
        time.sleep(0.02)
        continue
    print(number, began, flush=True)
    number += 1
"""


def serves(cluster: Cluster, node: str) -> bool:
    return cluster.state(node) == "alone"


def test_no_fsync_is_acknowledged_after_the_daemon_s_death(lab: Lab, tmp_path: Path) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()
    argv = [sys.executable, "-c", RETRYING_WRITER, str(cluster.data / "records")]
    writer = AckedWriter(cluster.node_command(primary, argv))
    try:
        assert writer.wait_for(20, BOUND), "the writer does not write"
        cluster.kill9(primary)  # the daemon alone: the writer and the watchdog live on
        dead = time.monotonic()
        cluster.wait(f"{secondary} serves", functools.partial(serves, cluster, secondary))
    finally:
        acked = writer.stop()
    after = [number for number, began in acked if began > dead]
    assert after == [], f"fsyncs begun after the daemon's death returned success: {after}"
    assert "error" in writer.errors, "the writer never failed after the daemon's death"
    on_survivor = records(cluster.disk(secondary) / "records")
    lost = [n for n, _ in acked if on_survivor.get(n) != b"%08d\n" % n]
    assert lost == [], f"acknowledged on {primary}, missing on {secondary}: {lost}"
    print(f"{len(acked)} acked before the kill, none after; none lost")
