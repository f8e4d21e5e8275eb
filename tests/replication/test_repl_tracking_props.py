"""Properties of change tracking under random input (hypothesis): union and serialisation
of change sets, garbage never decoded into anything but a PeerProtocolError, and the
superset property of a tracker fed random real operations, checked after every op
against what recovery would give after a kill -9 right there."""

from __future__ import annotations

import contextlib
import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tracking_support import (
    ROOT,
    Workload,
    excess_zones,
    make_tree,
    snapshot,
    superset_problems,
)

from failover.errors import PeerProtocolError
from failover.replication.apply import Applier
from failover.replication.ops import (
    RENAME_EXCHANGE,
    Chmod,
    Create,
    Fallocate,
    Op,
    Rename,
    Truncate,
    Write,
)
from failover.replication.tracking import ChangeSet, Tracker, Zones, record_all

Z = 512
PATHS = [b"a", b"b", b"d/c", b"d/e/f"]
paths = st.sampled_from(PATHS)
offsets = st.integers(0, 64 * Z)
roots = st.sampled_from([ROOT, "other"])

ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(Write, roots, paths, offsets, st.binary(min_size=0, max_size=3 * Z)),
    st.builds(Truncate, roots, paths, offsets),
    st.builds(Fallocate, roots, paths, st.sampled_from([0, 3, 8]), offsets, st.integers(1, 9 * Z)),
    st.builds(Rename, roots, paths, paths, st.sampled_from([0, RENAME_EXCHANGE])),
    st.builds(Create, roots, paths, st.just(0o644)),
    st.builds(Chmod, roots, paths, st.just(0o600)),
)
change_sets = st.builds(record_all, st.lists(ops, max_size=25), st.sampled_from([Z, 2 * Z, 8 * Z]))


def _covers(big: ChangeSet, small: ChangeSet) -> bool:
    """Every byte, name and meta entry of ``small`` is in ``big``."""
    if not (small.names <= big.names and small.meta <= big.meta):
        return False
    for key, zones in small.files.items():
        wanted = big.zones_of(*key)
        for zone in range(70 * 8):  # beyond every offset the strategies use
            if zone in zones:
                first, last = zone * small.zone_size, (zone + 1) * small.zone_size - 1
                if first // big.zone_size not in wanted or last // big.zone_size not in wanted:
                    return False
    return True


@given(change_sets)
def test_serialise_round_trips(changes: ChangeSet) -> None:
    assert ChangeSet.deserialise(changes.serialise()) == changes


@given(change_sets, change_sets)
def test_union_covers_both_and_is_commutative_in_the_same_zones(a: ChangeSet, b: ChangeSet) -> None:
    union = a.union(b)
    assert _covers(union, a) and _covers(union, b)
    assert union == b.rezoned(a.zone_size).union(a)


@given(change_sets, st.sampled_from([Z, 4 * Z, 16 * Z]))
def test_rezoning_never_loses_a_byte(changes: ChangeSet, zone_size: int) -> None:
    assert _covers(changes.rezoned(zone_size), changes)


@given(change_sets, st.data())
def test_damaged_bytes_decode_to_a_change_set_or_a_peer_protocol_error(
    changes: ChangeSet, data: st.DataObject
) -> None:
    raw = bytearray(changes.serialise())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(PeerProtocolError):
        ChangeSet.deserialise(bytes(raw[:cut]))


@given(st.binary(max_size=200))
def test_garbage_is_a_peer_protocol_error(raw: bytes) -> None:
    with contextlib.suppress(PeerProtocolError):
        ChangeSet.deserialise(b"FOCS" + raw)


HOT = 3
EXTENT = 8 * Z


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(10, 45), st.data())
def test_recovery_at_any_op_boundary_is_a_bounded_superset(
    seed: int, steps: int, data: st.DataObject
) -> None:
    rng = random.Random(seed)  # the workload's randomness (file contents are large)
    with tempfile.TemporaryDirectory() as temp:
        top = Path(temp)
        make_tree(top / "data", rng, Z)
        pre = snapshot(top / "data")
        sizes = {"zone_size": Z, "extent_size": EXTENT, "hot_extents": HOT}
        tracker = Tracker(top / "state", **sizes)
        tracker.epoch_start("gen 1")
        workload = Workload(top / "data", rng, Z, writes_only=False)
        done: list[Op] = []
        crashes = 1
        with Applier({ROOT: top / "data"}) as applier:
            for _ in range(steps):
                op = workload.next_op()
                done.append(op)
                tracker.before(op)
                try:
                    applier.apply(op)
                    workload.done(op)
                except PeerProtocolError:
                    pass
                post = snapshot(top / "data")
                recovered = Tracker.recover(top / "state").changes
                assert superset_problems(tracker.changes(), pre, post) == []
                assert superset_problems(recovered, pre, post) == []
                exact = record_all(done, Z)
                assert excess_zones(recovered, exact) <= crashes * (HOT + 4) * (EXTENT // Z)
                action = data.draw(st.sampled_from(["op"] * 6 + ["checkpoint", "reopen"]))
                if action == "checkpoint":
                    tracker.checkpoint()
                elif action == "reopen":  # as after a kill -9: no close
                    tracker = Tracker(top / "state", **sizes)
                    crashes += 1
        tracker.close()
        assert superset_problems(Tracker.recover(top / "state").changes, pre, post) == []


def test_a_zone_outside_every_run_is_not_dirty() -> None:
    assert 5 not in Zones(((0, 5), (6, 7)))
    assert 5 in Zones(((0, 5),), 5)
