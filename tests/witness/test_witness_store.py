"""The witness's record survives crashes whole: the old one or the new one, never a mix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from failover.core.arbitration import LeaseRecord
from failover.core.state import INITIAL, Generation
from failover.witness.service import Witness
from failover.witness.store import ClusterStore, Grant, WitnessStateError

HELD = LeaseRecord("alpha", 10.0, Generation(3, "alpha"), "alpha", Generation(2, "beta"))


def test_a_saved_record_reads_back_and_a_held_lease_runs_a_whole_ttl(tmp_path: Path) -> None:
    store = ClusterStore(tmp_path, "prod")
    assert store.read() is None
    assert store.load(now=5.0) == (LeaseRecord(), 0.0, None)
    store.save(HELD, 6.0, now=8.0, grant=Grant(7, 42))
    saved = store.read()
    assert saved is not None and saved.ttl == 6.0 and saved.expires_wall is not None
    record, ttl, grant = store.load(now=1000.0)
    assert grant == Grant(7, 42)  # the grant a release must name survives a restart
    # the previous run's clock means nothing now: the lease runs ttl from the load
    assert record == LeaseRecord(
        "alpha", 1006.0, Generation(3, "alpha"), "alpha", HELD.granted_from
    )
    assert ttl == 6.0


def test_a_crash_between_write_and_rename_leaves_the_old_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ClusterStore(tmp_path, "prod")
    store.save(HELD, 6.0, now=0.0)
    freed = LeaseRecord(None, None, HELD.generation, "alpha", HELD.granted_from)

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")  # the process dies before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(WitnessStateError, match="cannot save"):
        store.save(freed, 6.0, now=1.0)
    monkeypatch.undo()
    saved = store.read()
    assert saved is not None and saved.record.holder == "alpha"
    # a temporary file a real crash left behind (written, fsynced, not renamed)
    stale = store.path.parent / f".{store.path.name}.x1y2.tmp"
    stale.write_text("{half")
    witness = Witness(tmp_path, {"prod": b"k" * 32}, now=50.0)
    assert witness.cluster("prod").record.holder == "alpha"
    store.save(freed, 6.0, now=2.0)  # the next save removes it
    assert not stale.exists()
    saved = store.read()
    assert saved is not None and saved.record.holder is None


@pytest.mark.parametrize(
    "text",
    [
        "{half",
        "[]",
        '{"schema": 9}',
        '{"schema": 2, "cluster": "prod", "holder": "a", "generation": [1, "a"],'
        ' "granted_to": "a", "granted_from": [0, ""], "ttl": 6, "expires_wall": null,'
        ' "grant": [1]}',
        '{"schema": 1, "cluster": "other"}',
        # a ttl past what a node may ask (or Infinity): the lease would never run out
        '{"schema": 2, "cluster": "prod", "holder": "a", "generation": [1, "a"],'
        ' "granted_to": "a", "granted_from": [0, ""], "ttl": Infinity, "expires_wall": null,'
        ' "grant": [1, 2]}',
        '{"schema": 2, "cluster": "prod", "holder": "a", "generation": [1, "a"],'
        ' "granted_to": "a", "granted_from": [0, ""], "ttl": 3601, "expires_wall": null,'
        ' "grant": [1, 2]}',
        '{"schema": 2, "cluster": "prod", "holder": "a", "generation": [1, "a"],'
        ' "granted_to": "a", "granted_from": [0, ""], "ttl": 6, "expires_wall": null,'
        ' "grant": [1, 18446744073709551616]}',
        '{"schema": 1, "cluster": "prod", "holder": 3, "generation": [1, "a"],'
        ' "granted_to": null, "granted_from": [0, ""], "ttl": 6, "expires_wall": null}',
        '{"schema": 1, "cluster": "prod", "holder": null, "generation": [-1, "a"],'
        ' "granted_to": null, "granted_from": [0, ""], "ttl": 6, "expires_wall": null}',
    ],
)
def test_a_corrupt_record_stops_the_witness_naming_the_file(tmp_path: Path, text: str) -> None:
    store = ClusterStore(tmp_path, "prod")
    store.path.parent.mkdir(parents=True)
    store.path.write_text(text)
    with pytest.raises(WitnessStateError, match=r"prod\.json"):
        Witness(tmp_path, {"prod": b"k" * 32})


def test_a_new_cluster_starts_free(tmp_path: Path) -> None:
    witness = Witness(tmp_path, {"prod": b"k" * 32})
    assert witness.cluster("prod").record == LeaseRecord(generation=INITIAL)


SCHEMA_1 = (
    '{"schema": 1, "cluster": "prod", "holder": "alpha", "generation": [3, "alpha"],'
    ' "granted_to": "alpha", "granted_from": [2, "beta"], "ttl": 6, "expires_wall": null}'
)


def test_a_schema_1_record_loads_with_no_grant_and_its_lease_is_not_freed_by_a_release(
    tmp_path: Path,
) -> None:
    # a record written before releases named their grant: the lease it holds
    # still stands; no release can match an unknown grant, so it runs out at ttl
    store = ClusterStore(tmp_path, "prod")
    store.path.parent.mkdir(parents=True)
    store.path.write_text(SCHEMA_1)
    record, ttl, grant = store.load(now=100.0)
    assert (record.holder, record.expires_at, ttl, grant) == ("alpha", 106.0, 6.0, None)
    witness = Witness(tmp_path, {"prod": b"k" * 32}, now=100.0)
    assert witness.cluster("prod").grant is None
    assert witness.cluster("prod").record.holder == "alpha"


def test_a_record_of_a_newer_schema_stops_the_witness_with_a_clear_message(
    tmp_path: Path,
) -> None:
    store = ClusterStore(tmp_path, "prod")
    store.path.parent.mkdir(parents=True)
    store.path.write_text('{"schema": 3, "cluster": "prod"}')
    with pytest.raises(WitnessStateError, match=r"prod\.json.*schema 3 is not one this witness"):
        Witness(tmp_path, {"prod": b"k" * 32})
