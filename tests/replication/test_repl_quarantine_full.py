"""Quarantine before a full resync: everything the copy would overwrite or
delete is set aside, with the manifest a split brain's quarantine writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from failover.errors import UsageError
from failover.replication.quarantine import (
    list_quarantines,
    load_manifest,
    quarantine_before_full_resync,
    render_quarantines,
)


def populate(root: Path) -> None:
    (root / "app.conf").write_bytes(b"settings")
    (root / "db").mkdir()
    (root / "db" / "table").write_bytes(b"rows")
    (root / "link").symlink_to("app.conf")


def test_everything_moves_aside_and_the_manifest_says_why(tmp_path: Path) -> None:
    root, aside = tmp_path / "data", tmp_path / "quarantine"
    root.mkdir()
    populate(root)
    manifest = quarantine_before_full_resync(
        "data", root, aside, generation="0", peer="alpha", now=0.0
    )
    assert manifest is not None and manifest.complete
    assert list(root.iterdir()) == []
    assert (manifest.directory / "data" / "db" / "table").read_bytes() == b"rows"
    assert {e.path for e in manifest.roots["data"].entries} == {
        b"app.conf",
        b"db",
        b"db/table",
        b"link",
    }
    assert manifest.reason == "full resync from peer alpha over generation 0-full"
    assert load_manifest(manifest.directory) == manifest
    text = render_quarantines(aside, list_quarantines(aside))
    assert "full resync from peer alpha over generation 0-full  complete" in text


def test_an_empty_directory_makes_no_set(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    made = quarantine_before_full_resync(
        "data", tmp_path / "data", tmp_path / "q", generation="0", peer="alpha", now=0.0
    )
    assert made is None
    assert not (tmp_path / "q").exists()


def test_an_interrupted_resync_started_again_keeps_the_same_set(tmp_path: Path) -> None:
    root, aside = tmp_path / "data", tmp_path / "quarantine"
    root.mkdir()
    populate(root)
    first = quarantine_before_full_resync("data", root, aside, generation="0", peer="a", now=0.0)
    # the copy had begun: a partial copy of the source's sits at a recorded path
    (root / "app.conf").write_bytes(b"partial copy")
    (root / "new").write_bytes(b"partial copy")
    again = quarantine_before_full_resync("data", root, aside, generation="0", peer="a", now=9.0)
    assert first is not None and again is not None
    assert again.directory == first.directory
    # what was there before the first start is still what the set holds
    assert (again.directory / "data" / "app.conf").read_bytes() == b"settings"
    assert (again.directory / "data" / "new").read_bytes() == b"partial copy"


def test_a_set_written_before_causes_existed_reads_as_a_split_brain(tmp_path: Path) -> None:
    root, aside = tmp_path / "data", tmp_path / "quarantine"
    root.mkdir()
    populate(root)
    made = quarantine_before_full_resync("data", root, aside, generation="3", peer="b", now=0.0)
    assert made is not None
    path = made.directory / "manifest.json"
    doc = json.loads(path.read_bytes())
    del doc["cause"]
    path.write_text(json.dumps(doc))
    assert load_manifest(made.directory).reason.startswith("split brain vs peer b")
    doc["cause"] = "boredom"
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=r"manifest.json.cause: unknown 'boredom'"):
        load_manifest(made.directory)
