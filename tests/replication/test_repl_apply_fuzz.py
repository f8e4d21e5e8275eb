"""Fuzz of the applier with hostile ops: nothing outside the root may ever change.

Each example builds a fresh tree: the root holds symlinks planted to escape it
(to a sibling "sentinel" directory, to "/", "../.." from a subdirectory, a
dangling one into the sentinel, one to a sentinel file), and the sentinel holds
files with contents, modes, times and xattrs. Then a sequence of ops is applied:
ops with hostile paths (absolute, "..", ".", NUL, over-long names, symlinks as
middle or last component, for every op type) and records decoded from mutated
encodings. The properties: only ``PeerProtocolError`` subclasses come out, and
a snapshot of everything beside the root (names, types, contents, modes, owners,
link counts, mtimes and ctimes, xattrs, symlink targets) is unchanged.

Can this test fail? ``test_the_snapshot_catches_an_applier_that_follows_symlinks``
below runs the same check against the applier with O_NOFOLLOW removed from its
flags and requires each escape to be seen. Done by hand as well while writing
this file, removing O_NOFOLLOW from one set of flags at a time, the hypothesis
test failed each time, shrunk to: ``_FILE_FLAGS`` -> ``[Create(b'out'),
Create(b'secretlink')]``; ``_DIR_FLAGS`` -> ``[Create(b'out/out')]``;
``_OBJECT_FLAGS`` -> ``[Create(b'out'), SetXattr(b'out', b'user.a')]``.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_repl_ops import ops_of

from failover.errors import PeerProtocolError
from failover.replication import apply, ops
from failover.replication.apply import Applier
from failover.replication.ops import Op

ROOT = "data"
TOP = Path(tempfile.gettempdir()) / f"repl-fuzz-{os.getpid()}"
"""Where each example's tree is built (a fixed place: the strategies know its path)."""

Snapshot = dict[bytes, tuple[object, ...]]


@contextmanager
def hostile_tree() -> Iterator[Path]:
    """``TOP`` with ``data/`` (the root, full of escape symlinks) and ``sentinel/``."""
    top = TOP
    top.mkdir()
    try:
        sentinel = top / "sentinel"
        (sentinel / "sub").mkdir(parents=True)
        (sentinel / "secret").write_bytes(b"keep out")
        (sentinel / "sub" / "deep").write_bytes(b"deep")
        os.setxattr(sentinel / "secret", "user.tag", b"orig")
        os.utime(sentinel / "secret", ns=(1, 2))
        root = top / "data"
        (root / "d" / "e").mkdir(parents=True)
        (root / "file").write_bytes(b"inside")
        (root / "out").symlink_to(sentinel)
        (root / "slash").symlink_to("/")
        (root / "d" / "up").symlink_to("../..")
        (root / "secretlink").symlink_to(sentinel / "secret")
        (root / "dangling").symlink_to(sentinel / "new")
        yield top
    finally:
        shutil.rmtree(top)


def snapshot(top: Path) -> Snapshot:
    """Everything beside ``data/`` (and the top directory's own entry list)."""
    seen: Snapshot = {b".": tuple(sorted(os.listdir(top)))}
    for entry in sorted(top.rglob("*")):
        relative = entry.relative_to(top)
        if relative.parts[0] == "data":
            continue
        info = entry.lstat()
        if stat.S_ISLNK(info.st_mode):
            content: object = os.readlink(entry)
        elif stat.S_ISREG(info.st_mode):
            content = entry.read_bytes()
        else:
            content = tuple(sorted(os.listdir(entry)))
        xattrs = (
            ()
            if stat.S_ISLNK(info.st_mode)
            else tuple(sorted((n, os.getxattr(entry, n)) for n in os.listxattr(entry)))
        )
        seen[bytes(relative)] = (
            info.st_mode,
            info.st_uid,
            info.st_gid,
            info.st_nlink,
            info.st_size,
            info.st_mtime_ns,
            info.st_ctime_ns,
            content,
            xattrs,
        )
    return seen


def run(top: Path, records: list[Op | bytes]) -> list[str]:
    """Apply (or decode then apply) each record; only peer errors may come out.

    Returns each record's outcome: "applied" or the error's type name.
    """
    outcomes = []
    with Applier({ROOT: top / "data"}) as applier:
        for record in records:
            try:
                applier.apply(ops.decode(record) if isinstance(record, bytes) else record)
            except PeerProtocolError as error:
                outcomes.append(type(error).__name__)
            else:
                outcomes.append("applied")
    return outcomes


# --- hostile paths --------------------------------------------------------------------------------

_VOCABULARY = [
    b"out",
    b"slash",
    b"d",
    b"up",
    b"e",
    b"file",
    b"secretlink",
    b"dangling",
    b"secret",
    b"sub",
    b"deep",
    b"new",
    b"x",
    b"y",
    b"..",
    b".",
    b"",
    b"n" * 256,
    b"a\x00b",
]


_PLANTED_LINKS = {b"out", b"slash", b"up", b"secretlink", b"dangling"}


def _sentinel_via_slash(top: Path) -> list[bytes]:
    """From ``slash`` (a symlink to "/") down to the sentinel: a real path, never the host's."""
    return [b"slash", *os.fsencode(top / "sentinel").strip(b"/").split(b"/")]


def escape_paths(top: Path) -> st.SearchStrategy[bytes]:
    """Well-formed paths (``encode`` takes them), some through the planted symlinks."""
    well_formed = [n for n in _VOCABULARY if ops._path_problem(n) is None]
    plain = [n for n in well_formed if n not in _PLANTED_LINKS]
    via_slash = b"/".join(_sentinel_via_slash(top))
    # Plain names twice as likely: enough ops succeed to move symlinks and build directories.
    names = st.sampled_from([*well_formed, *plain, b"d/e", b"d/up", b"d/e/x", via_slash])
    return st.lists(names, min_size=1, max_size=2).map(b"/".join)


def malformed_paths() -> st.SearchStrategy[bytes]:
    """Paths ``validate_path`` must refuse (and a few it accepts by chance)."""
    parts = st.lists(st.sampled_from(_VOCABULARY) | st.binary(min_size=1, max_size=4), max_size=5)
    path = parts.map(b"/".join)
    return st.one_of(path, path.map(lambda p: b"/" + p), path.map(lambda p: p + b"/"))


def hostile_ops(top: Path) -> st.SearchStrategy[Op | bytes]:
    """Ops on well-formed and malformed paths, and mutated encodings (which also garble
    the root name); weighted so that a fair share of the ops succeed and change the tree."""
    well_formed = escape_paths(top)
    root = st.just(ROOT)
    changes = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=3)
    mutated = st.builds(_mutate, ops_of(root, well_formed), changes)
    return st.one_of(*[ops_of(root, well_formed)] * 4, ops_of(root, malformed_paths()), mutated)


def _mutate(op: Op, changes: list[tuple[int, int]]) -> bytes:
    """The encoding of ``op`` with some bytes changed."""
    data = bytearray(ops.encode(op))
    for where, value in changes:
        data[where % len(data)] = value
    return bytes(data)


# --- the properties -------------------------------------------------------------------------------


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.lists(hostile_ops(TOP), min_size=1, max_size=12))
def test_hostile_ops_never_change_anything_outside_the_root(records: list[Op | bytes]) -> None:
    with hostile_tree() as top:
        before = snapshot(top)
        for outcome in run(top, records):
            event(outcome)  # --hypothesis-show-statistics: how many ops changed the tree
        assert snapshot(top) == before


ESCAPES: list[Op] = [
    ops.Write(ROOT, b"secretlink", 0, b"pwned"),
    ops.Truncate(ROOT, b"out/secret", 0),
    ops.Create(ROOT, b"dangling", 0o644),
    ops.Mkdir(ROOT, b"d/up/sentinel/made", 0o755),
    ops.Chmod(ROOT, b"secretlink", 0o777),
    ops.SetXattr(ROOT, b"out/secret", b"user.tag", b"pwned", 0),
    ops.Link(ROOT, b"out/secret", b"stolen"),
    ops.Unlink(ROOT, b"out/sub/deep"),
    ops.Rename(ROOT, b"out/secret", b"moved", 0),
    ops.Utimens(ROOT, b"out/secret", 5, 5),
]


@pytest.mark.parametrize("op", ESCAPES, ids=lambda op: type(op).__name__)
def test_each_escape_is_rejected_and_leaves_the_sentinel_alone(op: Op) -> None:
    with hostile_tree() as top:
        before = snapshot(top)
        with Applier({ROOT: top / "data"}) as applier, pytest.raises(apply.PathRejected):
            applier.apply(op)
        assert snapshot(top) == before


def test_escapes_through_slash_are_rejected() -> None:
    with hostile_tree() as top:
        before = snapshot(top)
        path = b"/".join([*_sentinel_via_slash(top), b"secret"])
        with Applier({ROOT: top / "data"}) as applier, pytest.raises(apply.PathRejected):
            applier.apply(ops.Write(ROOT, path, 0, b"pwned"))
        assert snapshot(top) == before


@pytest.mark.parametrize("op", ESCAPES, ids=lambda op: type(op).__name__)
def test_the_snapshot_catches_an_applier_that_follows_symlinks(
    monkeypatch: pytest.MonkeyPatch, op: Op
) -> None:
    """The check above is not vacuous: without O_NOFOLLOW each escape is seen."""
    monkeypatch.setattr(apply, "_DIR_FLAGS", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    monkeypatch.setattr(apply, "_FILE_FLAGS", os.O_CLOEXEC | os.O_NONBLOCK)
    monkeypatch.setattr(apply, "_OBJECT_FLAGS", os.O_PATH | os.O_CLOEXEC)
    with hostile_tree() as top:
        before = snapshot(top)
        run(top, [op])
        assert snapshot(top) != before


def test_a_symlink_renamed_or_linked_deeper_still_cannot_be_crossed() -> None:
    with hostile_tree() as top:
        before = snapshot(top)
        with Applier({ROOT: top / "data"}) as applier:
            applier.apply(ops.Rename(ROOT, b"out", b"d/e/moved", 0))
            applier.apply(ops.Link(ROOT, b"d/up", b"d/e/uplink"))
            applier.apply(ops.Symlink(ROOT, b"d/e/fresh", os.fsencode(top / "sentinel")))
            for path in [b"d/e/moved/secret", b"d/e/uplink/sentinel/secret", b"d/e/fresh/x"]:
                with pytest.raises(apply.PathRejected, match="is a symlink or not a directory"):
                    applier.apply(ops.Create(ROOT, path, 0o644))
        assert snapshot(top) == before
