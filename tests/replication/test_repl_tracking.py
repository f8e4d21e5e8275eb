"""Change tracking: the rules of what each op may change, the activity log's costs,
recovery (hot extents, log replay, torn tails, damaged state), epochs and the peer
barrier, and the change set's validated serialisation."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from failover.errors import PeerProtocolError, UsageError
from failover.replication import tracking
from failover.replication.ops import (
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    RENAME_EXCHANGE,
    Chmod,
    Create,
    Fallocate,
    Fsync,
    Link,
    Mkdir,
    Rename,
    Rmdir,
    SetXattr,
    Truncate,
    Unlink,
    Write,
)
from failover.replication.tracking import (
    WHOLE,
    ChangeSet,
    Tracker,
    TrackingStateLost,
    Zones,
    record_all,
)

Z = 4096
E = 4 * Z
R = "r"


def write(path: bytes, offset: int, length: int) -> Write:
    return Write(R, path, offset, b"x" * length)


def tracker(state: Path, **options: object) -> Tracker:
    kwargs: dict[str, object] = {"zone_size": Z, "extent_size": E, "hot_extents": 4}
    kwargs["heat_ahead"] = 0  # one record per extent, unless a test says otherwise
    kwargs.update(options)
    return Tracker(state, **kwargs)  # type: ignore[arg-type]


# --- the rules ------------------------------------------------------------------------------------


def test_write_marks_every_zone_it_touches_and_nothing_else() -> None:
    changes = record_all([write(b"f", Z - 1, 2), write(b"f", 10 * Z, Z)], Z)
    assert changes.zones_of(R, b"f") == Zones(((0, 2), (10, 11)))
    assert not changes.names and not changes.meta


def test_touching_and_overlapping_writes_merge_into_one_run() -> None:
    changes = record_all([write(b"f", 5 * Z, Z), write(b"f", 0, Z), write(b"f", Z, 4 * Z)], Z)
    assert changes.zones_of(R, b"f") == Zones(((0, 6),))


def test_empty_write_and_fsync_change_nothing() -> None:
    assert not record_all([write(b"f", 100, 0), Fsync(R, b"f", False)], Z)


def test_truncate_marks_meta_and_every_zone_from_the_new_size_on() -> None:
    changes = record_all(
        [write(b"f", 0, Z), write(b"f", 9 * Z, Z), Truncate(R, b"f", 3 * Z + 1)], Z
    )
    zones = changes.zones_of(R, b"f")
    assert zones == Zones(((0, 1),), 3)
    assert 0 in zones and 1 not in zones and 3 in zones and 10**9 in zones
    assert (R, b"f") in changes.meta


def test_truncate_to_zero_makes_the_whole_file_dirty() -> None:
    assert record_all([Truncate(R, b"f", 0)], Z).zones_of(R, b"f") == WHOLE


def test_punch_hole_marks_its_range_collapse_range_everything_after() -> None:
    punch = Fallocate(R, b"f", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * Z, 2 * Z)
    collapse = Fallocate(R, b"g", FALLOC_FL_COLLAPSE_RANGE, 4 * Z, Z)
    changes = record_all([punch, collapse], Z)
    assert changes.zones_of(R, b"f") == Zones(((2, 4),))
    assert changes.zones_of(R, b"g") == Zones((), 4)
    assert changes.meta == {(R, b"f"), (R, b"g")}


def test_rename_moves_the_zones_and_records_both_names() -> None:
    changes = record_all([write(b"a", 0, Z), write(b"b", 5 * Z, Z), Rename(R, b"a", b"b", 0)], Z)
    assert changes.zones_of(R, b"b") == Zones(((0, 1),))
    assert (R, b"a") not in changes.files
    assert changes.names == {(R, b"a"), (R, b"b")}


def test_a_rename_chain_carries_the_zones_to_the_last_name() -> None:
    ops = [write(b"a", Z, Z), Rename(R, b"a", b"b", 0), Rename(R, b"b", b"c", 0)]
    ops.append(write(b"c", 3 * Z, 1))
    changes = record_all(ops, Z)
    assert dict(changes.files) == {(R, b"c"): Zones(((1, 2), (3, 4)))}
    assert changes.names == {(R, b"a"), (R, b"b"), (R, b"c")}


def test_rename_exchange_swaps_the_zones() -> None:
    ops = [write(b"a", 0, Z), write(b"b", 2 * Z, Z), Rename(R, b"a", b"b", RENAME_EXCHANGE)]
    changes = record_all(ops, Z)
    assert changes.zones_of(R, b"a") == Zones(((2, 3),))
    assert changes.zones_of(R, b"b") == Zones(((0, 1),))


def test_unlink_then_create_leaves_the_name_changed() -> None:
    changes = record_all([Unlink(R, b"d/f"), Create(R, b"d/f", 0o600), write(b"d/f", 0, 1)], Z)
    assert changes.names == {(R, b"d/f")}
    assert changes.name_changed(R, b"d/f")


def test_a_changed_directory_name_covers_everything_beneath_it() -> None:
    changes = record_all([Mkdir(R, b"d", 0o755), Rename(R, b"e", b"x/e2", 0), Rmdir(R, b"q")], Z)
    assert changes.name_changed(R, b"d/any/file")
    assert changes.name_changed(R, b"x/e2/old/child")
    assert not changes.name_changed(R, b"x/other")
    assert not changes.name_changed(R, b"dd")
    assert not changes.name_changed("other-root", b"d")


def test_link_changes_both_names_metadata_ops_only_meta() -> None:
    ops = [Link(R, b"f", b"g"), Chmod(R, b"h", 0o600), SetXattr(R, b"h", b"user.a", b"v", 0)]
    changes = record_all(ops, Z)
    assert changes.names == {(R, b"f"), (R, b"g")}
    assert changes.meta == {(R, b"h")}
    assert not changes.files


def test_union_covers_both_sides_and_rezoning_never_shrinks() -> None:
    a = record_all([write(b"f", 0, 1), Mkdir(R, b"d", 0o700)], Z)
    b = record_all([write(b"f", 3 * Z, 1), Truncate(R, b"g", 10 * Z), Chmod(R, b"h", 0)], 2 * Z)
    union = a.union(b)
    assert union.zone_size == Z
    assert union.zones_of(R, b"f") == Zones(((0, 1), (2, 4)))
    assert union.zones_of(R, b"g") == Zones((), 10)
    assert union.names == {(R, b"d")} and union.meta == {(R, b"g"), (R, b"h")}
    coarse = union.rezoned(8 * Z)
    assert coarse.zones_of(R, b"f") == Zones(((0, 1),))
    assert coarse.zones_of(R, b"g") == Zones((), 1)


# --- the activity log ----------------------------------------------------------------------------


def test_only_a_write_to_an_extent_not_hot_costs_a_record(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    t.before(write(b"f", 0, 1))
    t.before(write(b"f", E - 1, 1))
    assert t.extent_records == 1
    t.before(write(b"f", E - 1, 2))  # spans into the next extent
    assert t.extent_records == 2
    t.before(write(b"g", 0, 1))
    assert t.extent_records == 3


def test_a_sequential_writer_heats_extents_ahead_in_one_record(tmp_path: Path) -> None:
    t = tracker(tmp_path, hot_extents=64, heat_ahead=3)
    for extent in range(7):
        t.before(write(b"f", extent * E, E))
    # Extent 0 alone (nothing before it is hot); then 1-4 and 5-8, one fdatasync each.
    assert (t.extent_records, t.extent_syncs) == (9, 3)
    t.before(write(b"f", 20 * E, 1))  # a jump: no extent before it is hot
    assert (t.extent_records, t.extent_syncs) == (10, 4)
    assert 8 * 4 + 3 in Tracker.recover(tmp_path).changes.zones_of(R, b"f")  # heated, unwritten


def test_heating_ahead_never_takes_more_than_a_quarter_of_the_hot_set(tmp_path: Path) -> None:
    t = tracker(tmp_path, hot_extents=8, heat_ahead=100)
    t.before(write(b"f", 0, 1))
    t.before(write(b"f", E, 1))
    assert t.extent_records == 1 + 1 + 2


def test_a_full_hot_set_checkpoints_and_cools_the_older_half(tmp_path: Path) -> None:
    t = tracker(tmp_path, hot_extents=4)
    start = t.checkpoints
    for extent in range(4):
        t.before(write(b"f", extent * E, 1))
    assert t.checkpoints == start
    t.before(write(b"f", 4 * E, 1))
    assert t.checkpoints == start + 1
    assert t.hot().zones_of(R, b"f") == Zones(((2 * 4, 5 * 4),))  # extents 2, 3, 4


def test_recovery_after_a_crash_adds_whole_hot_extents_only(tmp_path: Path) -> None:
    t = tracker(tmp_path, hot_extents=4)
    t.epoch_start("gen 4")
    for extent in range(6):
        t.before(write(b"f", extent * E + Z, 1))
    recovery = Tracker.recover(tmp_path)  # what a kill -9 now would leave
    zones = recovery.changes.zones_of(R, b"f")
    assert recovery.since == "gen 4" and not recovery.in_sync
    for extent in range(6):
        assert extent * 4 + 1 in zones
    cold_extra = [z for z in range(8) if z in zones and z % 4 != 1]
    assert cold_extra == []  # extents 0, 1 cooled at a checkpoint: exact zones only
    assert zones.count(24) == 2 + 4 * 4  # extents 2..5 are hot: whole


def test_a_write_to_an_extent_kept_hot_across_a_checkpoint_is_recovered(tmp_path: Path) -> None:
    t = tracker(tmp_path, hot_extents=4)
    t.before(write(b"f", 0, 1))
    t.checkpoint()
    t.before(write(b"f", 3 * Z, 1))  # hot: no record, only the checkpoint's hot list covers it
    assert 3 in Tracker.recover(tmp_path).changes.zones_of(R, b"f")


def test_clean_close_leaves_exactly_the_changes(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    t.epoch_start("gen 1")
    ops = [write(b"f", Z, 10), Rename(R, b"f", b"g", 0), Chmod(R, b"g", 0o600), write(b"h", E, 1)]
    for op in ops:
        t.before(op)
    t.close()
    assert Tracker.recover(tmp_path).changes == record_all(ops, Z) == t.changes()


def test_namespace_ops_are_recovered_from_the_log(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    t.before(Create(R, b"new", 0o644))
    t.before(Rename(R, b"a", b"b", 0))
    recovery = Tracker.recover(tmp_path)
    assert recovery.records == 2
    assert recovery.changes.names == {(R, b"new"), (R, b"a"), (R, b"b")}


def _log(state: Path) -> Path:
    (log,) = state.glob("log.*")
    return log


KEPT = Create(R, b"kept", 0o644)


def _damage(state: Path, offset: int, data: bytes) -> None:
    """Overwrite the log at ``offset`` bytes after the record of ``KEPT`` (the first)."""
    with open(_log(state), "r+b") as log:
        log.seek(len(tracking._op_record(KEPT)) + offset)
        log.write(data)


@pytest.mark.parametrize("cut", [5, 9, 12])
def test_a_torn_last_record_is_ignored_and_counted(tmp_path: Path, cut: int) -> None:
    t = tracker(tmp_path)
    t.before(KEPT)
    t.before(Create(R, b"torn", 0o644))
    _damage(tmp_path, cut, bytes(100))  # only the first ``cut`` bytes reached the disk
    recovery = Tracker.recover(tmp_path)
    assert recovery.changes.names == {(R, b"kept")}
    assert recovery.records == 1
    assert 0 < recovery.torn_bytes <= cut


def test_a_corrupt_record_ends_the_replay_there(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    t.before(KEPT)
    t.before(Create(R, b"bad", 0o644))
    t.before(Create(R, b"after", 0o644))
    _damage(tmp_path, 12, b"\xff")
    recovery = Tracker.recover(tmp_path)
    assert recovery.changes.names == {(R, b"kept")}
    assert recovery.torn_bytes > 0


def test_missing_or_damaged_state_means_a_full_sync(tmp_path: Path) -> None:
    with pytest.raises(TrackingStateLost, match="no tracking checkpoint"):
        Tracker.recover(tmp_path)
    tracker(tmp_path).close()
    checkpoint = tmp_path / tracking.CHECKPOINT_NAME
    data = bytearray(checkpoint.read_bytes())
    data[-1] ^= 1
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(TrackingStateLost, match="checksum"):
        Tracker.recover(tmp_path)


def test_reopening_continues_from_the_recovered_changes_in_new_zones(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    t.epoch_start("gen 2")
    t.before(write(b"f", 9 * Z, 1))  # crash: no close
    again = Tracker(tmp_path, zone_size=2 * Z, extent_size=E, hot_extents=4)
    assert again.recovered is not None and again.recovered.zone_size == Z
    assert again.since == "gen 2" and not again.in_sync
    zones = again.changes().zones_of(R, b"f")
    assert 4 in zones  # zone 9 of 4 KiB is in zone 4 of 8 KiB
    again.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", _log(tmp_path).name]


def test_sync_makes_batched_namespace_records_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tracker(tmp_path, flush_every=3)
    synced: list[int] = []
    monkeypatch.setattr(tracking.os, "fdatasync", synced.append)
    t.before(Create(R, b"a", 0o644))
    t.before(Create(R, b"b", 0o644))
    assert synced == []
    t.sync(Fsync(R, b"a", False))
    assert len(synced) == 1
    t.sync(Fsync(R, b"a", False))  # nothing new: no fdatasync
    for name in (b"c", b"d", b"e"):
        t.before(Create(R, name, 0o644))
    assert len(synced) == 2  # every third record


def test_sync_namespace_fsyncs_each_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = tracker(tmp_path, sync_namespace=True)
    synced: list[int] = []
    monkeypatch.setattr(tracking.os, "fdatasync", synced.append)
    t.before(Unlink(R, b"a"))
    assert len(synced) == 1


def test_after_a_failed_record_ops_are_refused_until_a_checkpoint_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = tracker(tmp_path)
    t.before(Create(R, b"e", 0o644))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracking.os, "fdatasync", full)
    with pytest.raises(OSError, match="No space"):
        t.before(write(b"f", 0, 1))
    monkeypatch.setattr(tracking.os, "fsync", full)  # no checkpoint either
    with pytest.raises(OSError, match="failed earlier and cannot write yet"):
        t.before(Create(R, b"g", 0o644))
    with pytest.raises(OSError, match="cannot write yet"):
        t.sync(Fsync(R, b"e", False))
    monkeypatch.undo()
    checkpoints = t.checkpoints
    t.before(Create(R, b"h", 0o644))  # a checkpoint first, then the op
    assert t.checkpoints == checkpoints + 1
    recovered = Tracker.recover(t.state_dir).changes
    assert recovered.name_changed(R, b"e") and recovered.name_changed(R, b"h")


def test_misuse_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="multiple of the zone size"):
        tracker(tmp_path, extent_size=Z + 1)
    with pytest.raises(UsageError, match="zone size"):
        tracker(tmp_path, zone_size=100)
    t = tracker(tmp_path)
    with pytest.raises(UsageError, match="longer than 1024"):
        t.epoch_start("x" * 2000)
    t.close()
    with pytest.raises(UsageError, match="closed"):
        t.before(write(b"f", 0, 1))


# --- epochs and the peer barrier -----------------------------------------------------------------


def test_clear_forgets_everything_and_replicates_in_sync(tmp_path: Path) -> None:
    t = tracker(tmp_path)
    t.epoch_start("gen 5")
    t.before(Create(R, b"a", 0o644))
    t.before(write(b"a", 0, 1))
    t.clear()
    assert not t.changes() and t.in_sync and t.since is None
    recovery = Tracker.recover(tmp_path)
    assert recovery.in_sync and recovery.since is None
    assert recovery.changes == t.hot()  # only the hot extent may hold unacknowledged writes


@pytest.mark.parametrize("acknowledged", [True, False])
def test_in_sync_a_checkpoint_forgets_only_what_the_peer_acknowledged(
    tmp_path: Path, acknowledged: bool
) -> None:
    asked: list[bool] = []

    def barrier() -> bool:
        asked.append(acknowledged)
        return acknowledged

    t = tracker(tmp_path, hot_extents=2, peer_barrier=barrier)
    for extent in range(3):  # the third extent needs room: a checkpoint
        t.before(write(b"f", extent * E, 1))
    assert asked == [acknowledged]
    # Extents 1 and 2 are hot (whole); extent 0 cooled: forgotten if acknowledged.
    recovered = Tracker.recover(tmp_path).changes.zones_of(R, b"f")
    assert recovered == (Zones(((4, 12),)) if acknowledged else Zones(((0, 1), (4, 12))))
    kept = t.changes().zones_of(R, b"f")
    assert kept == (Zones(((8, 9),)) if acknowledged else Zones(((0, 1), (4, 5), (8, 9))))


def test_alone_the_barrier_is_never_asked(tmp_path: Path) -> None:
    def barrier() -> bool:
        raise AssertionError("asked while alone")

    t = tracker(tmp_path, hot_extents=2, peer_barrier=barrier)
    t.epoch_start("gen 1")
    for extent in range(5):
        t.before(write(b"f", extent * E, 1))
    assert len(t.changes().zones_of(R, b"f").runs) == 5


# --- serialisation -------------------------------------------------------------------------------


def _sample() -> ChangeSet:
    ops = [write(b"f", 0, 3 * Z), write(b"f", 10 * Z, 1), Truncate(R, b"g", 7), Mkdir(R, b"d", 0)]
    ops += [Chmod("other", b"x/y", 0o700), Rename(R, b"a", b"b", 0)]
    return record_all(ops, Z)


def test_serialise_round_trips() -> None:
    sample = _sample()
    assert ChangeSet.deserialise(sample.serialise()) == sample
    assert ChangeSet.deserialise(ChangeSet(Z).serialise()) == ChangeSet(Z)


def _patched(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: _patched(d, 4, b"\x09"), "unknown version"),
        (lambda d: _patched(d, 5, b"\x00\x00\x00\x10"), "zone size 16"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: d.replace(b"x/y", b"../"), "meta 0 path"),
        (lambda d: d.replace(b"other", b"ot/er"), "invalid root name"),
    ],
)
def test_deserialise_names_what_is_wrong(mangle: object, message: str) -> None:
    data = mangle(_sample().serialise())  # type: ignore[operator]
    with pytest.raises(PeerProtocolError, match=message):
        ChangeSet.deserialise(data)


def test_deserialise_rejects_runs_out_of_order() -> None:
    changes = record_all([write(b"f", 0, 1), write(b"f", 5 * Z, 1)], Z)
    data = changes.serialise()
    first = data.index(b"\x00" * 7 + b"\x00" + b"\x00" * 7 + b"\x01")  # run (0, 1)
    swapped = _patched(data, first, (5).to_bytes(8, "big") + (6).to_bytes(8, "big"))
    with pytest.raises(PeerProtocolError, match="run 1"):
        ChangeSet.deserialise(swapped)


def test_the_log_grows_past_its_zero_filled_chunk(tmp_path: Path) -> None:
    t = tracker(tmp_path, flush_every=1000)
    names = {(R, b"file-%05d" % i) for i in range(4000)}  # about 130 KiB of records
    for _, name in sorted(names):
        t.before(Create(R, name, 0o644))
    recovery = Tracker.recover(tmp_path)
    assert (recovery.records, recovery.torn_bytes) == (4000, 0)
    assert recovery.changes.names == names


def test_changes_recovered_after_a_crash_in_sync_survive_the_barrier_until_clear(
    tmp_path: Path,
) -> None:
    t = tracker(tmp_path)
    t.before(write(b"f", 0, 1))  # in sync, then a crash: possibly not on the peer
    again = tracker(tmp_path, hot_extents=2, peer_barrier=lambda: True)
    for extent in range(1, 4):
        again.before(write(b"g", extent * E, 1))
    assert again.checkpoints >= 2
    assert 0 in Tracker.recover(tmp_path).changes.zones_of(R, b"f")
    again.clear()
    assert not Tracker.recover(tmp_path).changes.zones_of(R, b"f").runs
