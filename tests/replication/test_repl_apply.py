"""Applier: every op type changes the backing directory as the mirror did, and only it."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.errors import PeerProtocolError, UsageError
from failover.replication import ops
from failover.replication.apply import Applier, ApplyError, PathRejected
from failover.replication.ops import (
    Chmod,
    Chown,
    Create,
    Fallocate,
    Fsync,
    Link,
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

ROOT = "data"
MiB = 1024 * 1024
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"keep")
    return tmp_path / "data"


@pytest.fixture
def applier(tree: Path) -> Iterator[Applier]:
    with Applier({ROOT: tree}) as it:
        yield it


def apply_all(applier: Applier, *records: Op) -> None:
    for op in records:
        applier.apply(op)


def refused(applier: Applier, op: Op, error: type[PeerProtocolError] = PathRejected) -> str:
    with pytest.raises(error) as caught:
        applier.apply(op)
    return str(caught.value)


# --- roots ----------------------------------------------------------------------------------------


def test_a_root_given_as_fd_is_duplicated_and_the_caller_keeps_its_own(tree: Path) -> None:
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    with Applier({ROOT: fd}) as applier:
        os.close(fd)
        applier.apply(Create(ROOT, b"f", 0o600))
    assert (tree / "f").exists()


def test_a_root_fd_keeps_working_after_the_directory_is_mounted_over_or_moved(
    tree: Path,
) -> None:
    with Applier({ROOT: tree}) as applier:
        tree.rename(tree.parent / "moved")
        applier.apply(Mkdir(ROOT, b"d", 0o755))
    assert (tree.parent / "moved" / "d").is_dir()


def test_unknown_root_is_rejected(applier: Applier) -> None:
    assert "unknown root 'other'" in refused(applier, Create("other", b"f", 0o644))


def test_a_root_that_is_not_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UsageError, match="replicated directory 'data'"):
        Applier({ROOT: tmp_path / "file"})
    with pytest.raises(UsageError, match="replicated directory 'data'"):
        Applier({ROOT: tmp_path / "missing"})


def test_close_is_idempotent_and_closes_the_roots(tree: Path) -> None:
    applier = Applier({ROOT: tree})
    applier.close()
    applier.close()
    assert "unknown root" in refused(applier, Create(ROOT, b"f", 0o644))


# --- files ----------------------------------------------------------------------------------------


def test_create_makes_an_empty_file_with_exactly_the_mode(applier: Applier, tree: Path) -> None:
    old = os.umask(0o077)
    try:
        applier.apply(Create(ROOT, b"f", 0o664))
    finally:
        os.umask(old)
    assert (tree / "f").read_bytes() == b""
    assert stat.S_IMODE((tree / "f").stat().st_mode) == 0o664


def test_create_of_an_existing_file_keeps_its_content_and_sets_the_mode(
    applier: Applier, tree: Path
) -> None:
    (tree / "f").write_bytes(b"content")
    applier.apply(Create(ROOT, b"f", 0o600))
    assert (tree / "f").read_bytes() == b"content"
    assert stat.S_IMODE((tree / "f").stat().st_mode) == 0o600


def test_write_puts_data_at_the_offset(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"0123456789")
    applier.apply(Write(ROOT, b"f", 3, b"abc"))
    applier.apply(Write(ROOT, b"f", 12, memoryview(b"xy")))  # type: ignore[arg-type]
    assert (tree / "f").read_bytes() == b"012abc6789\0\0xy"


def test_write_far_beyond_the_end_leaves_a_hole(applier: Applier, tree: Path) -> None:
    apply_all(applier, Create(ROOT, b"f", 0o644), Write(ROOT, b"f", 64 * MiB, b"x" * 4096))
    info = (tree / "f").stat()
    assert info.st_size == 64 * MiB + 4096
    assert info.st_blocks * 512 < MiB


def test_write_to_a_missing_file_is_an_apply_error(applier: Applier) -> None:
    with pytest.raises(ApplyError) as caught:
        applier.apply(Write(ROOT, b"d/missing", 0, b"x"))
    assert caught.value.errno == errno.ENOENT
    assert str(caught.value).startswith("Write data:b'd/missing': ")


def test_truncate_extends_without_writing_and_shrinks(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"abcdef")
    applier.apply(Truncate(ROOT, b"f", 256 * MiB))
    assert (tree / "f").stat().st_size == 256 * MiB
    assert (tree / "f").stat().st_blocks * 512 < MiB
    applier.apply(Truncate(ROOT, b"f", 2))
    assert (tree / "f").read_bytes() == b"ab"


def test_fallocate_punches_a_hole_keeping_the_size(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"x" * MiB)
    mode = ops.FALLOC_FL_PUNCH_HOLE | ops.FALLOC_FL_KEEP_SIZE
    applier.apply(Fallocate(ROOT, b"f", mode, 0, MiB // 2))
    data = (tree / "f").read_bytes()
    assert data == bytes(MiB // 2) + b"x" * (MiB // 2)
    assert (tree / "f").stat().st_blocks * 512 <= MiB // 2 + 4096


def test_fallocate_reserves_space_with_or_without_growing(applier: Applier, tree: Path) -> None:
    applier.apply(Create(ROOT, b"f", 0o644))
    applier.apply(Fallocate(ROOT, b"f", ops.FALLOC_FL_KEEP_SIZE, 0, MiB))
    assert (tree / "f").stat().st_size == 0
    assert (tree / "f").stat().st_blocks * 512 >= MiB
    applier.apply(Fallocate(ROOT, b"f", 0, 0, 2 * MiB))
    assert (tree / "f").stat().st_size == 2 * MiB


def test_fallocate_failure_names_the_op(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"x")
    # Collapse range needs block-aligned offsets: the kernel refuses this one.
    message = refused(
        applier, Fallocate(ROOT, b"f", ops.FALLOC_FL_COLLAPSE_RANGE, 1, 1), ApplyError
    )
    assert message.startswith("Fallocate data:b'f': ")


def test_fsync_of_a_file_and_of_a_directory(applier: Applier, tree: Path) -> None:
    apply_all(applier, Mkdir(ROOT, b"d", 0o755), Create(ROOT, b"d/f", 0o644))
    applier.apply(Fsync(ROOT, b"d/f", True))
    applier.apply(Fsync(ROOT, b"d", False))
    applier.fsync(ROOT, b"d/f", datasync=False)
    assert "No such file" in refused(applier, Fsync(ROOT, b"d/gone", False), ApplyError)


# --- namespace ------------------------------------------------------------------------------------


def test_unlink_removes_a_file(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"")
    applier.apply(Unlink(ROOT, b"f"))
    assert not (tree / "f").exists()


def test_unlink_of_a_symlink_removes_the_link_not_its_target(applier: Applier, tree: Path) -> None:
    (tree / "link").symlink_to(tree.parent / "outside" / "secret")
    applier.apply(Unlink(ROOT, b"link"))
    assert not (tree / "link").is_symlink()
    assert (tree.parent / "outside" / "secret").read_bytes() == b"keep"


def test_rename_across_directories_and_over_an_existing_file(applier: Applier, tree: Path) -> None:
    apply_all(applier, Mkdir(ROOT, b"a", 0o755), Mkdir(ROOT, b"b", 0o755))
    (tree / "a" / "f").write_bytes(b"new")
    (tree / "b" / "g").write_bytes(b"old")
    applier.apply(Rename(ROOT, b"a/f", b"b/g", 0))
    assert (tree / "b" / "g").read_bytes() == b"new"
    assert not (tree / "a" / "f").exists()


def test_rename_noreplace_refuses_an_existing_target(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"1")
    (tree / "g").write_bytes(b"2")
    with pytest.raises(ApplyError) as caught:
        applier.apply(Rename(ROOT, b"f", b"g", ops.RENAME_NOREPLACE))
    assert caught.value.errno == errno.EEXIST
    assert "Rename data:b'f' -> b'g'" in str(caught.value)
    applier.apply(Rename(ROOT, b"f", b"h", ops.RENAME_NOREPLACE))
    assert (tree / "h").read_bytes() == b"1"


def test_rename_exchange_swaps_a_file_and_a_directory(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"file")
    (tree / "d").mkdir()
    applier.apply(Rename(ROOT, b"f", b"d", ops.RENAME_EXCHANGE))
    assert (tree / "f").is_dir()
    assert (tree / "d").read_bytes() == b"file"


def test_mkdir_with_exact_mode_and_rmdir(applier: Applier, tree: Path) -> None:
    applier.apply(Mkdir(ROOT, b"d", 0o2770))
    assert stat.S_IMODE((tree / "d").stat().st_mode) == 0o2770
    applier.apply(Rmdir(ROOT, b"d"))
    assert not (tree / "d").exists()


def test_rmdir_of_a_non_empty_directory_is_an_apply_error(applier: Applier, tree: Path) -> None:
    (tree / "d").mkdir()
    (tree / "d" / "f").write_bytes(b"")
    with pytest.raises(ApplyError) as caught:
        applier.apply(Rmdir(ROOT, b"d"))
    assert caught.value.errno == errno.ENOTEMPTY


def test_symlink_stores_its_target_verbatim(applier: Applier, tree: Path) -> None:
    applier.apply(Symlink(ROOT, b"abs", b"/etc/passwd"))
    applier.apply(Symlink(ROOT, b"rel", b"../../x"))
    assert os.readlink(tree / "abs") == "/etc/passwd"
    assert os.readlink(tree / "rel") == "../../x"


def test_link_makes_a_hard_link(applier: Applier, tree: Path) -> None:
    (tree / "d").mkdir()
    (tree / "f").write_bytes(b"x")
    applier.apply(Link(ROOT, b"f", b"d/g"))
    assert (tree / "d" / "g").stat().st_ino == (tree / "f").stat().st_ino


def test_link_of_a_symlink_links_the_symlink_itself(applier: Applier, tree: Path) -> None:
    secret = tree.parent / "outside" / "secret"
    (tree / "link").symlink_to(secret)
    applier.apply(Link(ROOT, b"link", b"other"))
    assert (tree / "other").is_symlink()
    assert secret.stat().st_nlink == 1


# --- attributes -----------------------------------------------------------------------------------


def test_chmod_sets_special_bits_too(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"")
    applier.apply(Chmod(ROOT, b"f", 0o4751))
    assert stat.S_IMODE((tree / "f").stat().st_mode) == 0o4751


@as_root
def test_chown_changes_ids_and_minus_one_keeps_one(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"")
    applier.apply(Chown(ROOT, b"f", 1234, 5678))
    applier.apply(Chown(ROOT, b"f", -1, 4321))
    info = (tree / "f").stat()
    assert (info.st_uid, info.st_gid) == (1234, 4321)


@as_root
def test_chown_of_a_symlink_changes_the_link_only(applier: Applier, tree: Path) -> None:
    secret = tree.parent / "outside" / "secret"
    (tree / "link").symlink_to(secret)
    applier.apply(Chown(ROOT, b"link", 1234, 1234))
    assert (tree / "link").lstat().st_uid == 1234
    assert secret.stat().st_uid == 0


def test_utimens_sets_nanosecond_times(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"")
    applier.apply(Utimens(ROOT, b"f", 1_000_000_001, -2_000_000_000))
    info = (tree / "f").stat()
    assert (info.st_atime_ns, info.st_mtime_ns) == (1_000_000_001, -2_000_000_000)


def test_utimens_of_a_symlink_changes_the_link_only(applier: Applier, tree: Path) -> None:
    secret = tree.parent / "outside" / "secret"
    before = secret.stat().st_mtime_ns
    (tree / "link").symlink_to(secret)
    applier.apply(Utimens(ROOT, b"link", 5, 7))
    assert (tree / "link").lstat().st_mtime_ns == 7
    assert secret.stat().st_mtime_ns == before


def test_xattrs_are_set_replaced_and_removed(applier: Applier, tree: Path) -> None:
    (tree / "d").mkdir()
    applier.apply(SetXattr(ROOT, b"d", b"user.k", b"v1", ops.XATTR_CREATE))
    applier.apply(SetXattr(ROOT, b"d", b"user.k", b"v2", ops.XATTR_REPLACE))
    assert os.getxattr(tree / "d", "user.k") == b"v2"
    with pytest.raises(ApplyError) as caught:
        applier.apply(SetXattr(ROOT, b"d", b"user.k", b"v3", ops.XATTR_CREATE))
    assert caught.value.errno == errno.EEXIST
    applier.apply(RemoveXattr(ROOT, b"d", b"user.k"))
    assert os.listxattr(tree / "d") == []


def test_xattr_on_a_symlink_never_reaches_its_target(applier: Applier, tree: Path) -> None:
    secret = tree.parent / "outside" / "secret"
    (tree / "link").symlink_to(secret)
    refused(applier, SetXattr(ROOT, b"link", b"user.k", b"v", 0), ApplyError)
    assert os.listxattr(secret) == []


# --- refusals -------------------------------------------------------------------------------------


def test_invalid_paths_in_locally_built_ops_are_rejected(applier: Applier) -> None:
    assert refused(applier, Create(ROOT, b"../x", 0o644)).startswith("Create.path: ")
    assert refused(applier, Rename(ROOT, b"a", b"/etc/x", 0)).startswith("Rename.new: ")


def test_other_invalid_fields_are_protocol_errors(applier: Applier) -> None:
    message = refused(applier, Truncate(ROOT, b"f", -1), PeerProtocolError)
    assert message.startswith("Truncate.size: ")


OUTSIDE_FILE_OPS: list[Op] = [
    Create(ROOT, b"link", 0o777),
    Write(ROOT, b"link", 0, b"pwned"),
    Truncate(ROOT, b"link", 0),
    Fallocate(ROOT, b"link", ops.FALLOC_FL_PUNCH_HOLE | ops.FALLOC_FL_KEEP_SIZE, 0, 4),
    Fsync(ROOT, b"link", False),
    Chmod(ROOT, b"link", 0o777),
]


@pytest.mark.parametrize("op", OUTSIDE_FILE_OPS, ids=lambda op: type(op).__name__)
def test_a_symlink_as_last_component_is_never_followed(
    applier: Applier, tree: Path, op: Op
) -> None:
    secret = tree.parent / "outside" / "secret"
    (tree / "link").symlink_to(secret)
    assert "symlink" in refused(applier, op)
    assert secret.read_bytes() == b"keep"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644


def test_a_symlink_in_the_middle_of_a_path_is_rejected(applier: Applier, tree: Path) -> None:
    (tree / "d").mkdir()
    (tree / "d" / "escape").symlink_to(tree.parent / "outside")
    message = refused(applier, Write(ROOT, b"d/escape/secret", 0, b"pwned"))
    assert "b'd/escape' is a symlink or not a directory" in message
    assert (tree.parent / "outside" / "secret").read_bytes() == b"keep"


def test_a_file_in_the_middle_of_a_path_is_rejected(applier: Applier, tree: Path) -> None:
    (tree / "f").write_bytes(b"")
    assert "b'f' is a symlink or not a directory" in refused(applier, Mkdir(ROOT, b"f/d", 0o755))


def test_a_fifo_in_the_tree_fails_at_once_instead_of_blocking(applier: Applier, tree: Path) -> None:
    os.mkfifo(tree / "fifo")
    with pytest.raises(ApplyError) as caught:
        applier.apply(Write(ROOT, b"fifo", 0, b"x"))
    assert caught.value.errno == errno.ENXIO


# --- the cache of open files ----------------------------------------------------------------------


def test_a_write_after_rename_and_recreate_goes_to_the_new_file(
    applier: Applier, tree: Path
) -> None:
    apply_all(applier, Create(ROOT, b"f", 0o644), Write(ROOT, b"f", 0, b"first"))
    apply_all(applier, Rename(ROOT, b"f", b"g", 0), Create(ROOT, b"f", 0o644))
    applier.apply(Write(ROOT, b"f", 0, b"second"))
    assert (tree / "g").read_bytes() == b"first"
    assert (tree / "f").read_bytes() == b"second"


def test_a_write_after_unlink_fails_instead_of_reaching_the_deleted_file(
    applier: Applier,
) -> None:
    apply_all(applier, Create(ROOT, b"f", 0o644), Write(ROOT, b"f", 0, b"x"), Unlink(ROOT, b"f"))
    assert refused(applier, Write(ROOT, b"f", 0, b"y"), ApplyError).startswith("Write data:b'f'")


def test_renaming_a_directory_drops_the_files_below_it(applier: Applier, tree: Path) -> None:
    apply_all(applier, Mkdir(ROOT, b"a", 0o755), Create(ROOT, b"a/f", 0o644))
    apply_all(applier, Write(ROOT, b"a/f", 0, b"old"), Rename(ROOT, b"a", b"b", 0))
    apply_all(applier, Mkdir(ROOT, b"a", 0o755), Create(ROOT, b"a/f", 0o644))
    applier.apply(Write(ROOT, b"a/f", 0, b"new"))
    assert (tree / "b" / "f").read_bytes() == b"old"
    assert (tree / "a" / "f").read_bytes() == b"new"


def test_exchange_swaps_what_later_writes_reach(applier: Applier, tree: Path) -> None:
    apply_all(applier, Create(ROOT, b"f", 0o644), Create(ROOT, b"g", 0o644))
    apply_all(applier, Write(ROOT, b"f", 0, b"F"), Write(ROOT, b"g", 0, b"G"))
    applier.apply(Rename(ROOT, b"f", b"g", ops.RENAME_EXCHANGE))
    applier.apply(Write(ROOT, b"f", 1, b"f"))
    assert (tree / "f").read_bytes() == b"Gf"
    assert (tree / "g").read_bytes() == b"F"


def test_at_most_open_files_fds_stay_open(tree: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    baseline = open_fds()
    with Applier({ROOT: tree}, open_files=4) as applier:
        for n in range(20):
            path = f"f{n}".encode()
            apply_all(applier, Create(ROOT, path, 0o644), Write(ROOT, path, 0, b"x"))
        assert open_fds() == baseline + 1 + 4
        assert all((tree / f"f{n}").read_bytes() == b"x" for n in range(20))
    assert open_fds() == baseline


def test_open_files_below_one_is_a_usage_error(tree: Path) -> None:
    with pytest.raises(UsageError, match="open_files must be at least 1"):
        Applier({ROOT: tree}, open_files=0)
