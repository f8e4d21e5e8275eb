"""MetadataStore and IncarnationStore: crash-safe, and never silently reset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from failover.core.state import Generation, Metadata, State
from failover.errors import UsageError
from failover.fsutil import write_atomic
from failover.runtime.store import IncarnationStore, MetadataStore

SAMPLE = Metadata(
    generation=Generation(7, "alpha"),
    synced_generation=Generation(6, "beta"),
    consistent=False,
    last_state=State.ALONE,
    peer_generation=Generation(6, "beta"),
)


def test_absent_file_loads_fresh_metadata(tmp_path: Path) -> None:
    assert MetadataStore(tmp_path / "metadata.json").load() == Metadata()


def test_saved_metadata_loads_back_equal(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path / "node" / "metadata.json")
    store.save(SAMPLE)
    assert MetadataStore(store.path).load() == SAMPLE
    assert json.loads(store.path.read_text())["schema"] == 1


def test_a_crash_before_the_rename_keeps_the_old_content_and_its_temp_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MetadataStore(tmp_path / "metadata.json")
    store.save(Metadata())

    # The process "dies" between writing the temp file and renaming it: the
    # temp file stays behind, fully written but never renamed.
    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(os, "unlink", lambda path: None)  # the crash also skips cleanup
    with pytest.raises(KeyboardInterrupt):
        store.save(SAMPLE)
    monkeypatch.undo()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "metadata.json"]
    assert leftovers, "the simulated crash should leave a temp file behind"

    assert MetadataStore(store.path).load() == Metadata()
    store.save(SAMPLE)
    assert MetadataStore(store.path).load() == SAMPLE
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"schema": 99}',
        b"",
        json.dumps({"schema": 1, "generation": {"counter": -1, "origin": "a"}}).encode(),
    ],
    ids=["truncated-json", "binary", "not-an-object", "future-schema", "empty", "bad-values"],
)
def test_a_corrupt_file_is_refused_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "metadata.json"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=str(path)):
        MetadataStore(path).load()
    assert path.read_bytes() == content, "a corrupt file must never be reset"


def test_a_document_with_an_invalid_state_is_refused(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path / "metadata.json")
    store.save(SAMPLE)
    document = json.loads(store.path.read_text())
    document["last_state"] = "serving"
    store.path.write_text(json.dumps(document))
    with pytest.raises(UsageError, match="unreadable"):
        store.load()


def test_write_atomic_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_incarnation_increases_at_every_start(tmp_path: Path) -> None:
    store = IncarnationStore(tmp_path / "incarnation.json")
    first = store.next()
    second = IncarnationStore(store.path).next()
    assert second > first > 0
    assert IncarnationStore(store.path).current() == second


def test_incarnation_stays_ahead_of_a_saved_value_beyond_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "incarnation.json"
    far_future = 2**62
    path.write_text(json.dumps({"schema": 1, "incarnation": far_future}))
    assert IncarnationStore(path).next() == far_future + 1


def test_a_corrupt_incarnation_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "incarnation.json"
    path.write_text('{"schema": 1, "incarnation": "x"}')
    with pytest.raises(UsageError, match=str(path)):
        IncarnationStore(path).next()
