"""quarantine: the loser's changed entries move out with a manifest; crash-safe re-runs; listing."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from failover.errors import UsageError
from failover.replication.quarantine import (
    MANIFEST_NAME,
    list_quarantines,
    load_manifest,
    quarantine,
    render_quarantines,
)
from failover.replication.tracking import ChangeSet, Zones

ROOT = "data"
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
CHANGED = [b"a", b"d", b"l", b"gone", b"s/x", b"d/y/z"]
"""Tops moved: a, d (with d/y/z), l; absent: gone; unreachable (below a symlink): s/x."""


def build(top: Path, outside: Path) -> Path:
    root = top / "root"
    (root / "d" / "y").mkdir(parents=True)
    (root / "a").write_bytes(b"alpha" * 1000)
    (root / "b").write_bytes(b"stays")
    (root / "d" / "x").write_bytes(b"x")
    (root / "d" / "y" / "z").write_bytes(b"zz")
    os.chmod(root / "d" / "x", 0o640)
    os.symlink("/etc/passwd", root / "l")
    outside.mkdir(exist_ok=True)
    (outside / "x").write_bytes(b"outside")
    os.symlink(outside, root / "s")
    return root


def changes() -> ChangeSet:
    return ChangeSet(
        4096,
        MappingProxyType({(ROOT, b"a"): Zones(((0, 1),)), ("other", b"b"): Zones((), 0)}),
        frozenset({(ROOT, b"d"), (ROOT, b"gone"), (ROOT, b"s/x"), ("other", b"b")}),
        frozenset({(ROOT, b"l"), (ROOT, b"d/y/z")}),
    )


def snapshot(path: Path) -> dict[str, Any]:
    """Type and content of an entry and everything below it (never following)."""
    out: dict[str, Any] = {}
    if path.is_symlink():
        return {".": ("symlink", os.readlink(path))}
    if path.is_file():
        return {".": ("file", path.read_bytes(), path.stat().st_mode & 0o7777)}
    out["."] = ("dir",)
    for sub in sorted(path.rglob("*")):
        out[str(sub.relative_to(path))] = snapshot(sub)["."]
    return out


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    outside = tmp_path / "outside"
    root = build(tmp_path, outside)
    return root, tmp_path / "quarantine", outside


def run(root: Path, qdir: Path, now: float = NOW) -> Any:
    return quarantine(ROOT, root, changes(), qdir, generation="7:alpha", peer="beta", now=now)


def test_moves_exactly_the_changed_entries(setup: tuple[Path, Path, Path]) -> None:
    root, qdir, outside = setup
    before = {p: snapshot(root / p) for p in ("a", "d", "l", "b", "s")}
    manifest = run(root, qdir)
    assert manifest.directory == qdir / "20231114T221320Z-7%3Aalpha"
    assert sorted(p.name for p in root.iterdir()) == ["b", "s"]
    moved = manifest.directory / ROOT
    for name in ("a", "d", "l"):
        assert snapshot(moved / name) == before[name]
    assert snapshot(root / "b") == before["b"] and snapshot(root / "s") == before["s"]
    assert (outside / "x").read_bytes() == b"outside"
    assert manifest.complete


def test_manifest_lists_every_entry_with_its_facts(setup: tuple[Path, Path, Path]) -> None:
    root, qdir, _ = setup
    mtime = os.stat(root / "d" / "x").st_mtime_ns
    manifest = run(root, qdir)
    data = json.loads((manifest.directory / MANIFEST_NAME).read_text())
    assert data["reason"] == "split brain vs peer beta at generation 7:alpha"
    assert data["created_utc"] == "2023-11-14 22:13:20 UTC"
    entries = {e["path"]: e for e in data["roots"][ROOT]["entries"]}
    assert data["roots"][ROOT]["complete"] is True
    assert set(entries) == {"a", "d", "d/x", "d/y", "d/y/z", "gone", "l", "s/x"}
    assert entries["a"]["sha256"] == hashlib.sha256(b"alpha" * 1000).hexdigest()
    assert (entries["a"]["size"], entries["a"]["moved_to"]) == (5000, "a")
    assert (entries["d/x"]["mode"], entries["d/x"]["mtime_ns"]) == ("0640", mtime)
    assert "moved_to" not in entries["d/x"]
    assert entries["l"]["type"] == "symlink" and entries["l"]["target"] == "/etc/passwd"
    assert entries["gone"] == {"path": "gone", "type": "absent"}
    assert entries["s/x"] == {"path": "s/x", "type": "unreachable"}
    assert load_manifest(manifest.directory) == manifest


def test_a_second_run_changes_nothing_then_adds_only_new_paths(
    setup: tuple[Path, Path, Path],
) -> None:
    root, qdir, _ = setup
    first = run(root, qdir)
    assert run(root, qdir, now=NOW + 3600) == first
    # A destination that exists already is never overwritten.
    (first.directory / ROOT / "b").write_bytes(b"someone else's")
    more = ChangeSet(4096, names=frozenset({(ROOT, b"b"), (ROOT, b"d/x")}))
    second = quarantine(ROOT, root, more, qdir, generation="7:alpha", peer="beta", now=NOW)
    assert second.directory == first.directory
    assert (first.directory / ROOT / "b").read_bytes() == b"someone else's"
    assert (first.directory / ROOT / "b~2").read_bytes() == b"stays"
    assert [e.path for e in second.roots[ROOT].entries].count(b"d/x") == 1


def test_quarantine_directory_inside_the_root_is_refused(setup: tuple[Path, Path, Path]) -> None:
    root, _, _ = setup
    with pytest.raises(UsageError, match="inside the replicated directory"):
        run(root, root / "d" / "q")
    assert not (root / "d" / "q").exists()


def test_bad_names_are_refused(setup: tuple[Path, Path, Path]) -> None:
    root, qdir, _ = setup
    for name in ("", "a/b", "..", MANIFEST_NAME):
        with pytest.raises(UsageError, match="root name"):
            quarantine(name, root, changes(), qdir, generation="1", peer="p", now=NOW)
    with pytest.raises(UsageError, match="generation"):
        quarantine(ROOT, root, changes(), qdir, generation="", peer="p", now=NOW)


def test_across_file_systems_entries_are_copied_then_removed(
    setup: tuple[Path, Path, Path],
) -> None:
    root, _, _ = setup
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(root).st_dev:
        pytest.skip("needs /dev/shm on another file system")
    os.setxattr(root / "d" / "x", "user.kept", b"1")
    before = {p: snapshot(root / p) for p in ("a", "d", "l")}
    qdir = shm / f"failover-q-{os.getpid()}"
    try:
        manifest = run(root, qdir)
        for name, shot in before.items():
            assert snapshot(manifest.directory / ROOT / name) == shot
        assert os.getxattr(manifest.directory / ROOT / "d" / "x", "user.kept") == b"1"
        assert sorted(p.name for p in root.iterdir()) == ["b", "s"]
        assert not [p for p in (manifest.directory / ROOT).iterdir() if "partial" in p.name]
    finally:
        shutil.rmtree(qdir, ignore_errors=True)


# --- kill -9 half-way -----------------------------------------------------------------------------

_COUNTED = ("rename", "replace", "fsync", "mkdir", "unlink", "rmdir")


def _counting(die_at: int | None, calls: list[int]) -> Callable[[], None]:
    """Wrap the os calls that change the disk: count them; SIGKILL self at call ``die_at``."""
    originals = {name: getattr(os, name) for name in _COUNTED}

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        return counted

    for name, original in originals.items():
        setattr(os, name, wrap(original))

    def restore() -> None:
        for name, original in originals.items():
            setattr(os, name, original)

    return restore


def _child(root: Path, qdir: Path, die_at: int, now: float) -> None:
    _counting(die_at, [0])
    run(root, qdir, now=now)


def _where_is(root: Path, qdir: Path, path: str) -> Path | None:
    """Where the changed entry ``path`` is now: in place, or in a recorded destination."""
    found = []
    if os.path.lexists(root / path):
        found.append(root / path)
    for set_dir in qdir.glob("*") if qdir.is_dir() else []:
        if (set_dir / MANIFEST_NAME).exists():
            for entry in load_manifest(set_dir).roots[ROOT].entries:
                target = set_dir / ROOT / os.fsdecode(entry.moved_to or b"")
                if entry.path == path.encode() and os.path.lexists(target):
                    found.append(target)
    assert len(found) <= 1, f"{path} in two places: {found}"
    return found[0] if found else None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_half_way_then_rerun_loses_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    # How many disk-changing calls a whole run makes, on a copy of the tree.
    calls = [0]
    restore = _counting(None, calls)
    try:
        run(build(tmp_path / "count", tmp_path / "outside"), tmp_path / "count" / "q")
    finally:
        restore()
    total = calls[0]
    assert total > 10

    top = tmp_path / "crash"
    top.mkdir()
    root, qdir = build(top, tmp_path / "outside"), top / "q"
    before = {p: snapshot(root / p) for p in ("a", "d", "l", "b")}
    kills = 0
    fork = multiprocessing.get_context("fork")
    for attempt in range(5):
        child = fork.Process(target=_child, args=(root, qdir, rng.randint(1, total), NOW + attempt))
        child.start()
        child.join(timeout=60)
        assert child.exitcode in (0, -signal.SIGKILL), child.exitcode
        kills += child.exitcode == -signal.SIGKILL
        for path, shot in before.items():
            where = _where_is(root, qdir, path)
            assert where is not None, f"{path} lost after kill at attempt {attempt}"
            assert snapshot(where) == shot
    assert kills >= 1
    manifest = run(root, qdir, now=NOW + 99)
    assert manifest.complete and len(list(qdir.iterdir())) == 1
    assert sorted(p.name for p in root.iterdir()) == ["b", "s"]
    for path in ("a", "d", "l"):
        assert snapshot(manifest.directory / ROOT / path) == before[path]


# --- listing ------------------------------------------------------------------------------------


def test_list_and_render(setup: tuple[Path, Path, Path]) -> None:
    root, qdir, _ = setup
    assert render_quarantines(qdir, list_quarantines(qdir)) == f"no quarantined data in {qdir}"
    run(root, qdir)
    damaged = qdir / "20240101T000000Z-8%3Abeta"
    damaged.mkdir()
    (damaged / MANIFEST_NAME).write_text('{"format": 1, "roots": 3}')
    (qdir / "not-a-set").mkdir()
    summaries = list_quarantines(qdir)
    assert [s.directory.name for s in summaries] == [
        "20231114T221320Z-7%3Aalpha",
        "20240101T000000Z-8%3Abeta",
    ]
    first, second = summaries
    assert first.roots == ((ROOT, 3, 3, 5000 + 1 + 2),) and first.complete
    assert second.problem is not None and "roots" in second.problem
    text = render_quarantines(qdir, summaries)
    assert text.splitlines() == [
        f"2 quarantine set(s) in {qdir}:",
        "  20231114T221320Z-7%3Aalpha  2023-11-14 22:13:20 UTC  split brain vs peer beta"
        " at generation 7:alpha  complete",
        f"    {ROOT}: 3 entries moved, 3 files, 4.9 KiB",
        f"  20240101T000000Z-8%3Abeta  UNREADABLE: {second.problem}",
    ]
