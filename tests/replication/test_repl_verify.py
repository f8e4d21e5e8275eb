"""verify: digests of two trees, what compare finds, the report, the wire form."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from failover.errors import UsageError
from failover.replication.verify import (
    DIGEST_SIZE,
    Differences,
    Kind,
    TreeDigest,
    compare,
    digest_tree,
)

Z = 4096


def build(top: Path) -> Path:
    """A small tree with one entry of each common kind."""
    top.mkdir()
    (top / "dir" / "sub").mkdir(parents=True)
    (top / "dir" / "file").write_bytes(b"x" * (3 * Z + 100))
    (top / "dir" / "sub" / "deep").write_bytes(b"deep")
    (top / "empty").write_bytes(b"")
    os.symlink("dir/file", top / "link")
    os.setxattr(top / "dir" / "file", "user.tag", b"one")
    os.mkfifo(top / "fifo")
    return top


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return build(tmp_path / "a"), build(tmp_path / "b")


def diff(a: Path, b: Path, **kwargs: object) -> Differences:
    return compare(digest_tree(a, Z, **kwargs), digest_tree(b, Z, **kwargs))  # type: ignore[arg-type]


def test_identical_trees_have_no_difference(pair: tuple[Path, Path]) -> None:
    a, b = pair
    result = diff(a, b)
    assert not result
    assert digest_tree(a, Z).summary == digest_tree(b, Z).summary
    assert result.render("data") == "data: in sync (no difference)"


def test_every_entry_is_digested_and_the_root_is_not(pair: tuple[Path, Path]) -> None:
    tree = digest_tree(pair[0], Z)
    assert sorted(tree.entries) == [
        b"dir",
        b"dir/file",
        b"dir/sub",
        b"dir/sub/deep",
        b"empty",
        b"fifo",
        b"link",
    ]
    assert tree.entries[b"fifo"].kind is Kind.FIFO
    assert tree.entries[b"dir/file"].zone_count() == 4
    assert tree.entries[b"empty"].zone_count() == 0


def only(result: Differences, path: bytes) -> tuple[str, ...]:
    assert not result.missing and not result.extra
    assert [d.path for d in result.differing] == [path]
    return result.differing[0].fields


def test_content_in_one_zone_is_found_with_its_index(pair: tuple[Path, Path]) -> None:
    a, b = pair
    with open(b / "dir" / "file", "r+b") as handle:
        handle.seek(2 * Z + 7)
        handle.write(b"y")
    result = diff(a, b)
    assert only(result, b"dir/file") == ("content",)
    assert result.differing[0].zones == (2,)
    assert "content (zones 2 of 4)" in result.render()


@pytest.mark.parametrize(
    ("change", "path", "fields"),
    [
        (lambda b: os.truncate(b / "dir/file", 3 * Z), b"dir/file", ("size", "content")),
        (lambda b: os.chmod(b / "dir/file", 0o600), b"dir/file", ("mode",)),
        (lambda b: os.chmod(b / "dir", 0o700), b"dir", ("mode",)),
        (lambda b: os.chown(b / "empty", 1234, -1), b"empty", ("uid",)),
        (lambda b: os.chown(b / "dir/sub", -1, 4321), b"dir/sub", ("gid",)),
        (lambda b: os.setxattr(b / "dir/file", "user.tag", b"two"), b"dir/file", ("xattrs",)),
        (lambda b: os.setxattr(b / "dir", "user.new", b""), b"dir", ("xattrs",)),
        (lambda b: os.link(b / "empty", b / "dir/sub/deep2"), b"empty", ("nlink",)),
    ],
    ids=["size", "mode", "dir-mode", "owner", "group", "xattr-value", "xattr-added", "nlink"],
)
def test_each_metadata_difference_is_named(
    pair: tuple[Path, Path], change: Callable[[Path], None], path: bytes, fields: tuple[str, ...]
) -> None:
    a, b = pair
    change(b)
    result = diff(a, b)
    if path == b"empty" and fields == ("nlink",):  # the new link is also extra
        assert result.extra == (b"dir/sub/deep2",)
        result = Differences(differing=result.differing)
    assert only(result, path) == fields


def test_xattr_difference_names_the_attribute(pair: tuple[Path, Path]) -> None:
    a, b = pair
    os.removexattr(b / "dir" / "file", "user.tag")
    result = diff(a, b)
    assert result.differing[0].xattrs == (b"user.tag",)
    assert "xattrs user.tag" in result.render()


def test_symlink_target_difference(pair: tuple[Path, Path]) -> None:
    a, b = pair
    os.unlink(b / "link")
    os.symlink("dir/fil_", b / "link")  # same length
    assert only(diff(a, b), b"link") == ("target",)


def test_missing_and_extra_files_and_subtrees_are_listed_once(pair: tuple[Path, Path]) -> None:
    a, b = pair
    shutil.rmtree(b / "dir" / "sub")
    (b / "new").mkdir()
    (b / "new" / "inside").write_bytes(b"1")
    result = diff(a, b)
    assert result.missing == (b"dir/sub",)
    assert result.extra == (b"new",)
    assert result.differing == ()
    assert result.paths() == (b"dir/sub", b"new")
    text = result.render("data")
    assert "missing on peer  dir/sub" in text and "extra on peer    new" in text
    assert "inside" not in text


def test_type_change_is_one_difference_without_its_subtree(pair: tuple[Path, Path]) -> None:
    a, b = pair
    shutil.rmtree(b / "dir" / "sub")
    (b / "dir" / "sub").write_bytes(b"now a file")
    result = diff(a, b)
    assert only(result, b"dir/sub") == ("type",)
    assert "type dir here, file on peer" in result.render()


def test_sparse_and_dense_copies_are_equal(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    size = 20 * Z + 5
    with open(a / "f", "wb") as sparse:
        sparse.truncate(size)
        sparse.seek(7 * Z)
        sparse.write(b"data")
    dense = bytearray(size)
    dense[7 * Z : 7 * Z + 4] = b"data"
    (b / "f").write_bytes(bytes(dense))
    assert os.stat(a / "f").st_blocks < os.stat(b / "f").st_blocks
    assert not diff(a, b)
    zones = digest_tree(a, Z).entries[b"f"]
    assert zones.zone(0) == zones.zone(1) != zones.zone(7)
    assert zones.zone(20) != zones.zone(19)  # the short last zone digests its own length


def test_a_symlink_pointing_outside_is_reported_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "escape")
    os.symlink(outside / "secret", root / "file-escape")
    tree = digest_tree(root, Z)
    assert sorted(tree.entries) == [b"escape", b"file-escape"]
    for path, target in ((b"escape", outside), (b"file-escape", outside / "secret")):
        entry = tree.entries[path]
        assert entry.kind is Kind.SYMLINK
        assert entry.size == len(os.fsencode(target))
        assert entry.content == bytes(DIGEST_SIZE)
    # Restricted to a path below the symlink: nothing there in this tree.
    assert digest_tree(root, Z, paths=[b"escape/secret"]).entries == {}


def test_subset_digests_only_the_named_paths(pair: tuple[Path, Path]) -> None:
    a, b = pair
    (b / "empty").write_bytes(b"changed")
    (b / "dir" / "sub" / "deep").write_bytes(b"DEEP")
    subset = digest_tree(a, Z, paths=[b"dir/sub", b"dir/sub/deep", b"absent"])
    assert subset.subset == (b"absent", b"dir/sub")
    assert sorted(subset.entries) == [b"dir/sub", b"dir/sub/deep"]
    result = diff(a, b, paths=[b"dir/sub"])
    assert only(result, b"dir/sub/deep") == ("content",)
    with pytest.raises(UsageError, match="different paths"):
        compare(subset, digest_tree(b, Z))
    with pytest.raises(UsageError, match=r"\.\."):
        digest_tree(a, Z, paths=[b"../etc"])


def test_differing_zone_sizes_are_refused(pair: tuple[Path, Path]) -> None:
    with pytest.raises(UsageError, match="zone sizes"):
        compare(digest_tree(pair[0], Z), digest_tree(pair[1], 2 * Z))
    with pytest.raises(UsageError, match="zone size"):
        digest_tree(pair[0], 100)


def test_serialisation_round_trip_with_and_without_zones(pair: tuple[Path, Path]) -> None:
    a, b = pair
    tree = digest_tree(a, Z)
    assert TreeDigest.deserialise(tree.serialise()) == tree
    light = TreeDigest.deserialise(tree.serialise(zones=False))
    assert light == tree.without_zones()
    assert light.summary == tree.summary
    assert len(tree.serialise(zones=False)) < len(tree.serialise())
    assert not compare(light, tree)
    subset = digest_tree(a, Z, paths=[b"dir/sub", b"link"])
    assert TreeDigest.deserialise(subset.serialise()) == subset
    # Without zones a content difference is named, the zones are not.
    with open(b / "dir" / "file", "r+b") as handle:
        handle.write(b"z")
    result = compare(light, digest_tree(b, Z))
    assert only(result, b"dir/file") == ("content",)
    assert result.differing[0].zones is None


def test_report_as_json(pair: tuple[Path, Path]) -> None:
    a, b = pair
    os.chmod(b / "dir" / "file", 0o640)
    os.unlink(b / "empty")
    (b / "\udcff-odd").write_bytes(b"")
    data = json.loads(json.dumps(diff(a, b).to_dict()))
    assert data["in_sync"] is False
    assert data["missing_on_peer"] == ["empty"]
    assert data["extra_on_peer"] == ["\\xff-odd"]
    [entry] = data["differing"]
    assert entry["path"] == "dir/file" and entry["fields"] == ["mode"]
    assert (entry["local"]["mode"], entry["peer"]["mode"]) == ("0644", "0640")


def test_report_is_limited(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i in range(12):
        (a / f"f{i:02}").write_bytes(b"")
    text = diff(a, b).render(limit=10)
    assert text.splitlines()[0] == "12 missing on the peer, 0 extra on the peer, 0 differing"
    assert text.splitlines()[-1] == "  ... and 2 more"


def test_zone_ranges_in_the_report(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_bytes(bytes(10 * Z))
    changed = bytearray(12 * Z)
    for zone in (1, 2, 3, 6, 9, 10, 11):
        changed[zone * Z] = 1
    (b / "f").write_bytes(bytes(changed))
    result = diff(a, b)
    assert result.differing[0].zones == (1, 2, 3, 6, 9, 10, 11)
    assert "content (zones 1-3, 6, 9-11 of 12)" in result.render()
