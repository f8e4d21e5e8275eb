"""Resync over loopback TCP: incremental, ex-primary, concurrent writes, interruption,
full sync, sparse files, bandwidth limit."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import anyio
import pytest
from resync_support import ROOT, FakeMirror, Pair, base_ops, build, resync_pair, snapshot

from failover.replication.apply import ApplyError
from failover.replication.ops import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    Chmod,
    Create,
    Fallocate,
    Fsync,
    Mkdir,
    Op,
    RemoveXattr,
    Rename,
    Rmdir,
    SetXattr,
    Symlink,
    Truncate,
    Unlink,
    Utimens,
    Write,
)
from failover.replication.resync import (
    BandwidthLimiter,
    ResyncPlan,
    ResyncRequest,
    ResyncSource,
    ResyncTarget,
    narrow,
    request_for,
)
from failover.replication.tracking import ChangeSet, Tracker
from failover.testing.transport_contract import WAIT_TIMEOUT

pytestmark = pytest.mark.anyio

ZONE = 4096
GEN = "gen-6"


def start(tmp_path: Path, seed: int = 1) -> tuple[Path, Path, FakeMirror, random.Random]:
    """Identical source and target trees; a mirror on the source tracking from now on."""
    rng = random.Random(seed)
    source, target = tmp_path / "source", tmp_path / "target"
    build(base_ops(rng), source, target)
    tracker = Tracker(tmp_path / "state", zone_size=ZONE)
    tracker.epoch_start(GEN)
    return source, target, FakeMirror(source, tracker), rng


def own_plan(mirror: FakeMirror) -> ResyncPlan:
    """The source's changes; the target (a secondary that was away) suspects nothing."""
    assert mirror.tracker is not None
    return ResyncPlan.make(mirror.tracker.changes(), ResyncRequest(GEN, False, ChangeSet(ZONE)))


async def resync(
    pair: Pair, mirror: FakeMirror, source_dir: Path, plan: ResyncPlan, **options: object
) -> tuple[bool, ResyncSource]:
    source = ResyncSource(pair.sender, {ROOT: source_dir}, mirror.lock, plan, **options)  # type: ignore[arg-type]
    mirror.listeners[:] = [pair.sender.after, source.after]
    ok = await pair.run_source(source)
    return ok, source


def away_ops(rng: random.Random) -> list[Op]:
    """Changes of every kind made while the peer was away."""
    return [
        Write(ROOT, b"big0", 300_000, rng.randbytes(5000)),
        Write(ROOT, b"big1", 4096 * 100, rng.randbytes(8192)),
        Truncate(ROOT, b"big2", 500_000),
        Truncate(ROOT, b"f3", 20_000),
        Rename(ROOT, b"d/f1", b"d/e/moved", 0),
        Unlink(ROOT, b"f6"),
        Rename(ROOT, b"d/e", b"renamed-e", 0),
        Mkdir(ROOT, b"new", 0o700),
        Mkdir(ROOT, b"new/deeper", 0o755),
        Create(ROOT, b"new/deeper/file", 0o640),
        Write(ROOT, b"new/deeper/file", 0, rng.randbytes(10_000)),
        Symlink(ROOT, b"new/ln", b"deeper/file"),
        Chmod(ROOT, b"f9", 0o600),
        SetXattr(ROOT, b"f0", b"user.k", b"changed", 0),
        SetXattr(ROOT, b"d", b"user.dir", b"x", 0),
        Utimens(ROOT, b"f0", 10**18, 10**18 + 5),
    ]


async def test_incremental_resync_makes_the_trees_identical(tmp_path: Path) -> None:
    source_dir, target_dir, mirror, rng = start(tmp_path)
    for op in away_ops(rng):
        mirror.do(op)
    assert snapshot(source_dir) != snapshot(target_dir)
    async with resync_pair(target_dir) as pair:
        ok, source = await resync(pair, mirror, source_dir, own_plan(mirror))
        assert ok and pair.done.is_set() and pair.target.consistent
        assert source.status().state == "done"
    assert snapshot(source_dir) == snapshot(target_dir)


async def test_write_in_place_sends_at_most_1_1_times_the_changed_bytes(tmp_path: Path) -> None:
    source_dir, target_dir, mirror, rng = start(tmp_path)
    for i in range(3):
        for _ in range(8):  # 4 KiB-aligned writes in the middle of the big files
            length = ZONE * rng.randrange(1, 5)
            offset = ZONE * rng.randrange(0, (1 << 20) // ZONE - 4)
            mirror.do(Write(ROOT, f"big{i}".encode(), offset, rng.randbytes(length)))
    assert mirror.tracker is not None
    changes = mirror.tracker.changes()
    changed = sum(sum(b - a for a, b in z.runs) * ZONE for z in changes.files.values())
    files = len(changes.files)
    async with resync_pair(target_dir) as pair:
        ok, source = await resync(pair, mirror, source_dir, own_plan(mirror))
        assert ok
        sent = pair.sender.status().bytes_sent
    assert snapshot(source_dir) == snapshot(target_dir)
    # Overhead: a CHUNK per run of dirty zones (at most 256 KiB: about 50 bytes + the
    # path) and a META per file (about 50 bytes + the path), 5 bytes per channel entry,
    # 48 per message; BEGIN carries the plan (about 40 bytes per run).
    assert sent <= 1.1 * changed
    items = source.status().items_done
    assert items >= files
    assert sent - changed <= 160 * items


@pytest.mark.parametrize("checked", [False, True], ids=["blind", "checked"])
async def test_ex_primary_garbage_and_files_the_source_never_had_are_reverted(
    tmp_path: Path, checked: bool
) -> None:
    """Blind: the request as before issue 10. Checked: with the target's digests,
    narrowed by the source (``resync_check``), as the runtime does."""
    source_dir, target_dir, mirror, _ = start(tmp_path)
    mirror.do(Write(ROOT, b"big0", 1000, b"written since the takeover"))
    # The target was primary and crashed: what it may have written unacknowledged.
    ghost = Tracker(tmp_path / "ghost-state", zone_size=ZONE)
    ghost_mirror = FakeMirror(target_dir, ghost)
    for op in [
        Write(ROOT, b"big1", 200_000, b"unacknowledged garbage" * 100),
        Write(ROOT, b"big2", 1 << 20, b"appended past the source's end"),
        Truncate(ROOT, b"f3", 1),
        Create(ROOT, b"only-on-the-ex-primary", 0o644),
        Write(ROOT, b"only-on-the-ex-primary", 0, b"never acknowledged"),
        Mkdir(ROOT, b"ghost-dir", 0o755),
        Create(ROOT, b"ghost-dir/x", 0o644),
        Rename(ROOT, b"d/f4", b"d/f4-renamed", 0),
        RemoveXattr(ROOT, b"f0", b"user.k"),
    ]:
        ghost_mirror.do(op)
    recovery = Tracker.recover(tmp_path / "ghost-state")  # as after kill -9
    ghost_mirror.close()
    assert mirror.tracker is not None

    def ask(target: ResyncTarget) -> bytes:
        if checked:
            return target.request(GEN, recovery.changes)
        return request_for(GEN, recovery).encode()

    async with resync_pair(target_dir, request=ask) as pair:
        assert pair.sender.peer is not None
        request = ResyncRequest.decode(pair.sender.peer.request)  # as the source gets it
        assert request.suspect == recovery.changes
        assert (request.checks is not None) == checked
        request = narrow(request, {ROOT: source_dir})
        plan = ResyncPlan.make(mirror.tracker.changes(), request)
        ok, _ = await resync(pair, mirror, source_dir, plan)
        assert ok
    assert snapshot(source_dir) == snapshot(target_dir)


class Interleaver:
    """A writer thread doing one random live op through the fake mirror each time the
    resync pays for an item (the limiter's wait, outside the order lock)."""

    def __init__(self, mirror: FakeMirror, rng: random.Random) -> None:
        self.mirror = mirror
        self.rng = rng
        self.go = threading.Semaphore(0)
        self.did = threading.Semaphore(0)
        self.stop = False
        self.ops = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.clock = 0.0
        self.thread.start()

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        condition.release()
        try:
            self.go.release()
            assert self.did.acquire(timeout=WAIT_TIMEOUT)
        finally:
            condition.acquire()
        self.clock += seconds

    def _loop(self) -> None:
        while self.go.acquire(timeout=WAIT_TIMEOUT) and not self.stop:
            try:
                self.mirror.do(self._op())
                self.ops += 1
            except ApplyError:
                pass  # the application's call failed locally (ENOENT, EEXIST...): no after()
            except Exception as exc:
                self.errors.append(exc)
            self.did.release()

    def _op(self) -> Op:
        rng = self.rng
        i = self.ops
        choice = rng.randrange(8)
        name = rng.choice([b"big0", b"big1", b"f0", b"f3", b"d/f1", b"live", b"new/a"])
        if choice == 0:
            return Write(
                ROOT, name, rng.randrange(0, 1 << 20), rng.randbytes(rng.randrange(1, 9000))
            )
        if choice == 1:
            return Truncate(ROOT, name, rng.randrange(0, 1 << 20))
        if choice == 2:
            return Create(ROOT, f"live{i}".encode(), 0o644)
        if choice == 3:
            return Rename(ROOT, name, rng.choice([b"live", b"d/e/moved", b"new/a"]), 0)
        if choice == 4:
            return Mkdir(ROOT, rng.choice([b"new", b"new/sub", b"d/e/sub"]), 0o755)
        if choice == 5:
            return Unlink(ROOT, name)
        if choice == 6:
            return Rmdir(ROOT, rng.choice([b"new/sub", b"d/e/sub", b"new"]))
        return SetXattr(ROOT, name, b"user.live", rng.randbytes(8), 0)

    def close(self) -> None:
        self.stop = True
        self.go.release()
        self.thread.join(WAIT_TIMEOUT)


async def test_live_writes_during_the_resync_are_neither_lost_nor_reordered(
    tmp_path: Path,
) -> None:
    source_dir, target_dir, mirror, rng = start(tmp_path, seed=3)
    for op in away_ops(rng):
        mirror.do(op)
    writer = Interleaver(mirror, random.Random(5))
    limiter = BandwidthLimiter(1 << 20, clock=lambda: writer.clock, wait=writer.wait)
    try:
        async with resync_pair(target_dir) as pair:
            ok, source = await resync(
                pair, mirror, source_dir, own_plan(mirror), limiter=limiter, chunk_bytes=ZONE * 4
            )
            assert ok
            mirror.do(Create(ROOT, b"after-the-end", 0o644))
            await anyio.to_thread.run_sync(pair.sender.sync, Fsync(ROOT, b"after-the-end", False))
            assert not pair.receiver_error
    finally:
        writer.close()
    assert not writer.errors
    assert writer.ops > 20, "the writer must have run during the resync"
    assert source.status().items_done > 20
    assert snapshot(source_dir, times=False) == snapshot(target_dir, times=False)


async def test_an_interrupted_resync_restarted_from_scratch_ends_identical(
    tmp_path: Path,
) -> None:
    source_dir, target_dir, mirror, rng = start(tmp_path)
    for op in away_ops(rng):
        mirror.do(op)
    for i in range(3):
        mirror.do(Write(ROOT, f"big{i}".encode(), 0, rng.randbytes(600_000)))
    async with resync_pair(target_dir) as pair:
        clock = [0.0]
        waits = [0]

        def drop_after_a_few(condition: threading.Condition, seconds: float) -> None:
            clock[0] += seconds  # virtual time: one wait per item
            waits[0] += 1
            if waits[0] == 4:
                anyio.from_thread.run(pair.secondary_stream.aclose)

        limiter = BandwidthLimiter(1 << 20, clock=lambda: clock[0], wait=drop_after_a_few)
        ok, source = await resync(
            pair, mirror, source_dir, own_plan(mirror), limiter=limiter, chunk_bytes=ZONE
        )
        assert not ok
        assert source.status().state == "failed"
        assert not pair.done.is_set()
    assert snapshot(source_dir) != snapshot(target_dir)
    async with resync_pair(target_dir) as pair:
        ok, _ = await resync(pair, mirror, source_dir, own_plan(mirror))
        assert ok
    assert snapshot(source_dir) == snapshot(target_dir)


async def test_full_sync_removes_extras_and_keeps_sparse_files_sparse(tmp_path: Path) -> None:
    source_dir, target_dir, mirror, rng = start(tmp_path)
    mirror.do(Create(ROOT, b"sparse", 0o644))
    mirror.do(Truncate(ROOT, b"sparse", 64 << 20))
    mirror.do(Write(ROOT, b"sparse", 10 << 20, b"island"))
    mirror.do(Write(ROOT, b"big0", 0, rng.randbytes(100)))
    extra = FakeMirror(target_dir)
    for op in [
        Mkdir(ROOT, b"extra-dir", 0o755),
        Create(ROOT, b"extra-dir/f", 0o644),
        Create(ROOT, b"extra", 0o644),
        Write(ROOT, b"big1", 0, b"different"),
        Unlink(ROOT, b"d/link"),
        Mkdir(ROOT, b"d/link", 0o755),  # a directory where the source has a symlink
        Fallocate(ROOT, b"big2", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 << 20),
    ]:
        extra.do(op)
    extra.close()
    assert mirror.tracker is not None
    plan = ResyncPlan.make(None, request_for(GEN, None, full=True))
    assert plan.full
    async with resync_pair(target_dir) as pair:
        ok, source = await resync(pair, mirror, source_dir, plan)
        assert ok
        assert source.status().full
        sent = pair.sender.status().bytes_sent
    assert snapshot(source_dir) == snapshot(target_dir)
    assert (target_dir / "sparse").stat().st_blocks * 512 <= 1 << 20
    assert sent < 16 << 20, "holes must not cross the network"


async def test_bandwidth_limit_changes_mid_run_and_is_accounted(tmp_path: Path) -> None:
    source_dir, target_dir, mirror, rng = start(tmp_path)
    for i in range(3):
        mirror.do(Write(ROOT, f"big{i}".encode(), 0, rng.randbytes(1 << 20)))
    clock = [0.0]
    waits = [0]
    limiter_box: list[BandwidthLimiter] = []

    def wait(condition: threading.Condition, seconds: float) -> None:
        waits[0] += 1
        if waits[0] == 5:
            condition.release()
            try:
                limiter_box[0].set_rate(4 << 20)  # from another thread: as the admin would
            finally:
                condition.acquire()
            return
        clock[0] += seconds

    limiter = BandwidthLimiter(1 << 20, clock=lambda: clock[0], wait=wait)
    limiter_box.append(limiter)
    async with resync_pair(target_dir) as pair:
        ok, source = await resync(pair, mirror, source_dir, own_plan(mirror), limiter=limiter)
        assert ok
        assert source.status().bandwidth_limit == 4 << 20
    slow, fast = limiter.charged[1 << 20], limiter.charged[4 << 20]
    assert slow > 0 and fast > 0
    assert slow + fast == source.status().bytes_done
    # Virtual time paid: every byte at the rate it was charged at, except what was
    # still owed when the rate changed (rescaled) and the last item's (never waited for).
    expected = slow / (1 << 20) + fast / (4 << 20)
    slack = 2 * (256 << 10) / (1 << 20)
    assert expected - slack <= limiter.waited <= expected + slack
    assert snapshot(source_dir) == snapshot(target_dir)
