"""A lost split brain, end to end at the replication level: the loser's changes go to
quarantine, then the winner's incremental resync runs while its application keeps
writing the very file the loser quarantined.

Invariant: after quarantine, the target's copy of every quarantined path is rebuilt
whole from the source (the quarantined paths are names in the target's suspect set,
so the plan carries them whole), and no live op for such a path is applied before
its content; the session never breaks and both trees end identical.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import anyio
import pytest
from resync_support import ROOT, FakeMirror, base_ops, build, resync_pair, snapshot

from failover.replication.ops import Create, Fsync, Write
from failover.replication.quarantine import load_manifest, quarantine
from failover.replication.resync import BandwidthLimiter, ResyncPlan, ResyncRequest, ResyncSource
from failover.replication.tracking import Tracker

pytestmark = pytest.mark.anyio

ZONE = 4096
GEN = "gen-6"  # the last generation both copies held
RECORD = 64


def record(number: int, side: bytes) -> bytes:
    return f"{number:08d} ".encode().ljust(RECORD - len(side) - 1, b".") + side + b"\n"


async def test_the_quarantined_file_is_rebuilt_whole_while_the_winner_keeps_writing_it(
    tmp_path: Path,
) -> None:
    source_dir, target_dir = tmp_path / "winner", tmp_path / "loser"
    build([*base_ops(random.Random(1)), Create(ROOT, b"records", 0o644)], source_dir, target_dir)
    winner = FakeMirror(source_dir, Tracker(tmp_path / "winner-state", zone_size=ZONE))
    loser = FakeMirror(target_dir, Tracker(tmp_path / "loser-state", zone_size=ZONE))
    for mirror in (winner, loser):
        assert mirror.tracker is not None
        mirror.tracker.epoch_start(GEN)  # both served during the partition
    # Both applications append to the same file, each its own records.
    for number in range(40):
        winner.do(Write(ROOT, b"records", number * RECORD, record(number, b"winner")))
    for number in range(25):
        loser.do(Write(ROOT, b"records", number * RECORD, record(number, b"loser")))
    loser.do(Create(ROOT, b"only-on-the-loser", 0o600))
    loser.do(Write(ROOT, b"only-on-the-loser", 0, b"divergent"))
    divergent = (target_dir / "records").read_bytes()
    assert loser.tracker is not None and winner.tracker is not None

    manifest = quarantine(
        ROOT,
        target_dir,
        loser.tracker.changes(),
        tmp_path / "quarantine",
        generation="7:loser",
        peer="winner",
        now=1.8e9,
        tracker=loser.tracker,
    )
    assert not (target_dir / "records").exists()
    kept = manifest.directory / ROOT / "records"
    assert kept.read_bytes() == divergent
    assert load_manifest(manifest.directory).complete

    # The loser restarts its tracker (as a restarted daemon would): the set survives.
    loser.close()
    loser.tracker.close()
    suspect = Tracker(tmp_path / "loser-state", zone_size=ZONE)
    request = ResyncRequest(GEN, False, suspect.changes())
    suspect.close()
    assert request.suspect.name_changed(ROOT, b"records")

    # The winner's writer appends a record (write + fsync) each time the resync paces.
    written = [40]
    clock = [0.0]

    def keep_writing(condition: threading.Condition, seconds: float) -> None:
        condition.release()
        try:
            number = written[0]
            winner.do(Write(ROOT, b"records", number * RECORD, record(number, b"winner")))
            winner.do(Fsync(ROOT, b"records", False))
            written[0] += 1
        finally:
            condition.acquire()
        clock[0] += seconds

    limiter = BandwidthLimiter(1 << 16, clock=lambda: clock[0], wait=keep_writing)
    async with resync_pair(target_dir, request=request.encode()) as pair:
        assert pair.sender.peer is not None
        plan = ResyncPlan.make(
            winner.tracker.changes(), ResyncRequest.decode(pair.sender.peer.request)
        )
        source = ResyncSource(
            pair.sender, {ROOT: source_dir}, winner.lock, plan, limiter=limiter, chunk_bytes=ZONE
        )
        winner.listeners[:] = [pair.sender.after, source.after]
        ok = await pair.run_source(source)
        assert ok, (source.status().error, pair.receiver_error)
        assert pair.done.is_set() and pair.target.consistent
        # The live stream goes on in the same session, on the rebuilt file.
        for number in range(written[0], written[0] + 10):
            winner.do(Write(ROOT, b"records", number * RECORD, record(number, b"winner")))
        assert await anyio.to_thread.run_sync(pair.sender.sync, Fsync(ROOT, b"records", False))
        assert not pair.receiver_error
    assert written[0] > 40, "the winner must have written during the resync"
    assert snapshot(source_dir, times=False) == snapshot(target_dir, times=False)
    assert not (target_dir / "only-on-the-loser").exists()
    assert (manifest.directory / ROOT / "only-on-the-loser").read_bytes() == b"divergent"
    winner.close()
