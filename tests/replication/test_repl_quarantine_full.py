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


def held(aside: Path) -> dict[bytes, int]:
    """Contents of every regular file in every set, with how many times each is held."""
    found: dict[bytes, int] = {}
    for path in aside.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name != "manifest.json":
            found[path.read_bytes()] = found.get(path.read_bytes(), 0) + 1
    return found


def test_an_interrupted_set_aside_started_again_finishes_the_same_set(tmp_path: Path) -> None:
    root, aside = tmp_path / "data", tmp_path / "quarantine"
    root.mkdir()
    populate(root)
    first = quarantine_before_full_resync("data", root, aside, generation="0", peer="a", now=0.0)
    assert first is not None
    # a crash before the manifest said complete: the run is started again
    doc = json.loads((first.directory / "manifest.json").read_bytes())
    doc["roots"]["data"]["complete"] = False
    (first.directory / "manifest.json").write_text(json.dumps(doc))
    (root / "new").write_bytes(b"written meanwhile")
    again = quarantine_before_full_resync("data", root, aside, generation="0", peer="a", now=9.0)
    assert again is not None and again.complete
    assert again.directory == first.directory
    assert (again.directory / "data" / "app.conf").read_bytes() == b"settings"
    assert (again.directory / "data" / "new").read_bytes() == b"written meanwhile"


def test_a_finished_set_never_counts_for_what_lies_at_its_paths_now(tmp_path: Path) -> None:
    # The same generation again after a finished set (a fresh node's metadata
    # reset with its quarantine directory kept; a full copy that began, then
    # stopped): what lies at the set's paths now is not what it moved. It is set
    # aside as well, never overwritten by the copy nor deleted as a duplicate.
    root, aside = tmp_path / "data", tmp_path / "quarantine"
    root.mkdir()
    populate(root)
    first = quarantine_before_full_resync("data", root, aside, generation="0", peer="a", now=0.0)
    (root / "app.conf").write_bytes(b"new settings")  # at a path the first set holds
    (root / "new").write_bytes(b"new file")
    again = quarantine_before_full_resync("data", root, aside, generation="0", peer="a", now=9.0)
    assert first is not None and again is not None and again.complete
    assert list(root.iterdir()) == []
    assert held(aside) == {b"settings": 1, b"rows": 1, b"new settings": 1, b"new file": 1}
    assert again.directory != first.directory
    assert [m.directory for m in list_quarantines(aside)].count(again.directory) == 1
    # nothing there any more: the finished set is returned as it is, no new set
    assert quarantine_before_full_resync(
        "data", root, aside, generation="0", peer="a", now=20.0
    ) in (None, again)
    assert len(list_quarantines(aside)) == 2


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
