"""The FUSE mirror through real mounts: every operation, its records, errors, modes, unmount."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror_support import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    RecordingListener,
    fallocate,
    mounted,
    needs_fuse,
    renameat2,
    temp_dir,
)

from failover.errors import UsageError
from failover.replication.apply import Applier
from failover.replication.mirror import Mirror
from failover.replication.ops import (
    Chmod,
    Chown,
    Create,
    Fallocate,
    Fsync,
    Link,
    Mkdir,
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

pytestmark = needs_fuse
GIB = 1 << 30


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def mnt(listener: RecordingListener) -> Iterator[Path]:
    with temp_dir("fo-mirror-") as directory, mounted(directory, listener):
        yield directory


def _write_file(path: Path, data: bytes, flags: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# -- the mount itself ---------------------------------------------------------------------------


def test_mount_hides_the_directory_and_shows_its_contents(listener: RecordingListener) -> None:
    with temp_dir("fo-mirror-") as directory:
        (directory / "before").write_bytes(b"old")
        device = directory.stat().st_dev
        with mounted(directory, listener):
            assert directory.stat().st_dev != device
            assert (directory / "before").read_bytes() == b"old"
            assert os.listdir(directory) == ["before"]
        assert directory.stat().st_dev == device


def test_unmount_leaves_every_change_in_the_directory(listener: RecordingListener) -> None:
    with temp_dir("fo-mirror-") as directory:
        with mounted(directory, listener):
            (directory / "sub").mkdir()
            (directory / "sub" / "f").write_bytes(b"kept")
        assert not os.path.ismount(directory)
        assert (directory / "sub" / "f").read_bytes() == b"kept"


def test_unmount_refuses_while_a_file_is_open(listener: RecordingListener) -> None:
    with temp_dir("fo-mirror-") as directory, mounted(directory, listener) as mirror:
        fd = os.open(directory / "open", os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            with pytest.raises(UsageError, match="files are open"):
                mirror.unmount()
            assert mirror.mounted
        finally:
            os.close(fd)


def test_mount_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="missing"):
        Mirror("data", tmp_path / "missing", None).mount()


_SERVE = (
    "import sys; from pathlib import Path; from failover.replication.mirror import Mirror\n"
    "m = Mirror('data', Path(sys.argv[1]), None); m.mount()\n"
    "print('mounted', flush=True); sys.stdin.read()\n"
)


class _Writer(threading.Thread):
    """The campaign's application: a record then an fsync, again and again; on an error
    it closes the file and opens it again by name (an application that keeps trying).
    ``acked`` holds, for each fsync that returned success, when that fsync began."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.acked: list[float] = []
        self.errors: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        fd, number = -1, 0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                if fd < 0:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                os.pwrite(fd, b"%08d\n" % number, number * 9)
                os.fsync(fd)
            except OSError as exc:
                self.errors.append(exc.errno)
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    fd = -1
                self.stop.wait(0.01)
                continue
            self.acked.append(began)
            number += 1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_killed_daemon_leaves_its_mirror_dead_and_nothing_acknowledged(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """The fence's invariant (replication/fusermount.py): once the process serving the
    mirror is dead, no fsync begun through the mirror's path returns success (the
    directory underneath is never uncovered under the writer), and the process died of
    its signal (libfuse's loop does not swallow SIGTERM). The next mount of the path
    detaches the dead mirror; the directory holds every byte."""
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "f").write_bytes(b"survives")
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    writer = _Writer(directory / "records")
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"mounted\n"
        assert os.path.ismount(directory)
        writer.start()
        deadline = time.monotonic() + 10
        while len(writer.acked) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # a bounded poll of the writer's progress
        assert len(writer.acked) >= 5, "the writer made no progress through the mirror"
        child.send_signal(sig)
        assert child.wait(10) == -sig
        dead = time.monotonic()
        writer.stop.wait(0.5)  # the writer keeps trying meanwhile
        writer.stop.set()
        writer.join(10)
        after = [began for began in writer.acked if began > dead]
        assert after == [], f"{len(after)} fsync(s) begun after the death returned success"
        assert set(writer.errors) <= {errno.ENOTCONN, errno.ECONNABORTED}, writer.errors
        assert writer.errors, "the writer saw no error after the death"
        assert _in_mount_table(directory)
        with pytest.raises(OSError) as raised:
            (directory / "f").read_bytes()
        assert raised.value.errno == errno.ENOTCONN
        with Mirror("data", directory, None):  # detaches the dead mirror first
            assert (directory / "f").read_bytes() == b"survives"
        assert not _in_mount_table(directory)
        assert (directory / "f").read_bytes() == b"survives"
        acked = b"".join(b"%08d\n" % n for n in range(len(writer.acked)))
        assert (directory / "records").read_bytes().startswith(acked)  # every acked record
    finally:
        writer.stop.set()
        if child.poll() is None:
            child.kill()
            child.wait()
        while _in_mount_table(directory):
            subprocess.run(["umount", "-l", str(directory)], check=False)


def _in_mount_table(directory: Path) -> bool:
    """os.path.ismount says False for a dead FUSE mount (its stat fails): read the table."""
    with open("/proc/self/mounts", encoding="utf-8") as table:
        return any(line.split()[1] == str(directory) for line in table)


# -- data -------------------------------------------------------------------------------------


def test_create_and_write_are_recorded_in_order(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"hello")
    assert (mnt / "f").read_bytes() == b"hello"
    assert listener.after_ops == [Create("data", b"f", 0o644), Write("data", b"f", 0, b"hello")]
    assert listener.before_ops == listener.after_ops


def test_open_with_o_trunc_records_a_truncate(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"long content")
    _write_file(mnt / "f", b"ab", os.O_TRUNC)
    assert (mnt / "f").read_bytes() == b"ab"
    assert Truncate("data", b"f", 0) in listener.after_ops


def test_append_writes_record_the_offset_they_landed_at(
    mnt: Path, listener: RecordingListener
) -> None:
    _write_file(mnt / "f", b"12345")
    _write_file(mnt / "f", b"678", os.O_APPEND)
    assert (mnt / "f").read_bytes() == b"12345678"
    assert listener.after_ops[-1] == Write("data", b"f", 5, b"678")


def test_truncate_and_ftruncate_are_recorded(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"0123456789")
    os.truncate(mnt / "f", 4)
    fd = os.open(mnt / "f", os.O_WRONLY)
    try:
        os.ftruncate(fd, 2)
    finally:
        os.close(fd)
    assert (mnt / "f").read_bytes() == b"01"
    truncates = [op for op in listener.after_ops if isinstance(op, Truncate)]
    assert truncates == [Truncate("data", b"f", 4), Truncate("data", b"f", 2)]


def test_punch_hole_keeps_size_and_frees_blocks(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", os.urandom(1 << 20))
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.fsync(fd)
        before = os.fstat(fd).st_blocks
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 << 19)
    finally:
        os.close(fd)
    st = (mnt / "f").stat()
    assert st.st_size == 1 << 20
    assert st.st_blocks < before
    assert (mnt / "f").read_bytes()[: 1 << 19] == bytes(1 << 19)
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
    assert listener.after_ops[-1] == Fallocate("data", b"f", mode, 0, 1 << 19)


def test_sparse_files_stay_sparse(mnt: Path) -> None:
    fd = os.open(mnt / "seek", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.lseek(fd, GIB, os.SEEK_SET)
        os.write(fd, b"end")
    finally:
        os.close(fd)
    _write_file(mnt / "grown", b"")
    os.truncate(mnt / "grown", GIB)
    assert (mnt / "seek").stat().st_size == GIB + 3
    assert (mnt / "seek").stat().st_blocks <= 64
    assert (mnt / "grown").stat().st_blocks == 0


def test_fsync_and_fdatasync_ask_the_listener_for_durability(
    mnt: Path, listener: RecordingListener
) -> None:
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x")
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    assert listener.syncs == [Fsync("data", b"f", False), Fsync("data", b"f", True)]


@pytest.mark.parametrize(("flag", "datasync"), [(os.O_SYNC, False), (os.O_DSYNC, True)])
def test_writes_on_an_o_sync_file_are_synced_and_so_is_its_close(
    mnt: Path, listener: RecordingListener, flag: int, datasync: bool
) -> None:
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT | flag, 0o644)
    try:
        os.write(fd, b"a")
        assert listener.syncs == [Fsync("data", b"f", datasync)]
        os.write(fd, b"b")
    finally:
        os.close(fd)
    assert listener.syncs == [Fsync("data", b"f", datasync)] * 3


def test_plain_writes_and_closes_ask_no_sync(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"data")
    assert listener.syncs == []


# -- namespace --------------------------------------------------------------------------------


def test_directories_symlinks_and_hard_links(mnt: Path, listener: RecordingListener) -> None:
    (mnt / "d").mkdir(0o750)
    _write_file(mnt / "d" / "f", b"x")
    os.symlink("d/f", mnt / "ln")
    os.link(mnt / "d" / "f", mnt / "hard")
    assert os.readlink(mnt / "ln") == "d/f"
    assert (mnt / "ln").read_bytes() == b"x"
    assert (mnt / "hard").stat().st_nlink == 2
    assert (mnt / "hard").stat().st_ino == (mnt / "d" / "f").stat().st_ino
    os.unlink(mnt / "hard")
    os.unlink(mnt / "d" / "f")
    os.rmdir(mnt / "d")
    assert sorted(os.listdir(mnt)) == ["ln"]
    assert listener.after_ops == [
        Mkdir("data", b"d", 0o750),
        Create("data", b"d/f", 0o644),
        Write("data", b"d/f", 0, b"x"),
        Symlink("data", b"ln", b"d/f"),
        Link("data", b"d/f", b"hard"),
        Unlink("data", b"hard"),
        Unlink("data", b"d/f"),
        Rmdir("data", b"d"),
    ]


def test_rename_over_an_existing_file_and_across_directories(
    mnt: Path, listener: RecordingListener
) -> None:
    (mnt / "a").mkdir()
    (mnt / "b").mkdir()
    _write_file(mnt / "a" / "f", b"new")
    _write_file(mnt / "b" / "g", b"old")
    os.rename(mnt / "a" / "f", mnt / "b" / "g")
    assert (mnt / "b" / "g").read_bytes() == b"new"
    assert not (mnt / "a" / "f").exists()
    assert listener.after_ops[-1] == Rename("data", b"a/f", b"b/g", 0)


def test_rename_noreplace_and_exchange(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "x", b"X")
    _write_file(mnt / "y", b"Y")
    with pytest.raises(FileExistsError):
        renameat2(mnt / "x", mnt / "y", RENAME_NOREPLACE)
    assert (mnt / "y").read_bytes() == b"Y"
    renameat2(mnt / "x", mnt / "y", RENAME_EXCHANGE)
    assert (mnt / "x").read_bytes() == b"Y"
    assert (mnt / "y").read_bytes() == b"X"
    renameat2(mnt / "x", mnt / "z", RENAME_NOREPLACE)
    renames = [op for op in listener.after_ops if isinstance(op, Rename)]
    assert renames == [
        Rename("data", b"x", b"y", RENAME_EXCHANGE),
        Rename("data", b"x", b"z", RENAME_NOREPLACE),
    ]


def test_rename_whiteout_is_refused_unrecorded(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "x", b"X")
    recorded = len(listener.after_ops)
    with pytest.raises(OSError) as raised:
        renameat2(mnt / "x", mnt / "y", 4)  # RENAME_WHITEOUT
    assert raised.value.errno in (errno.EINVAL, errno.EPERM)
    assert (mnt / "x").exists()
    assert len(listener.after_ops) == recorded


def test_an_open_file_is_recorded_under_its_current_name(
    mnt: Path, listener: RecordingListener
) -> None:
    (mnt / "d").mkdir()
    fd = os.open(mnt / "d" / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.rename(mnt / "d", mnt / "e")
        os.write(fd, b"after dir rename")
        os.rename(mnt / "e" / "f", mnt / "g")
        os.ftruncate(fd, 3)
    finally:
        os.close(fd)
    assert Write("data", b"e/f", 0, b"after dir rename") in listener.after_ops
    assert listener.after_ops[-1] == Truncate("data", b"g", 3)


def test_an_unlinked_open_file_records_no_more_writes(
    mnt: Path, listener: RecordingListener
) -> None:
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.unlink(mnt / "f")
        count = len(listener.after_ops)
        os.write(fd, b"gone")
        os.ftruncate(fd, 1)
        os.fsync(fd)
        assert os.pread(fd, 10, 0) == b"g"
        assert len(listener.after_ops) == count
        assert listener.syncs == []
    finally:
        os.close(fd)


def test_an_open_file_follows_its_other_hard_link_when_unlinked(
    mnt: Path, listener: RecordingListener
) -> None:
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.link(mnt / "f", mnt / "other")
        os.unlink(mnt / "f")
        os.write(fd, b"still named")
    finally:
        os.close(fd)
    assert listener.after_ops[-1] == Write("data", b"other", 0, b"still named")


# -- attributes -------------------------------------------------------------------------------


def test_chmod_chown_and_utimens_are_recorded(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"")
    os.chown(mnt / "f", 1234, 5678)  # before chmod: a chown clears the set-user-ID bit
    os.chmod(mnt / "f", 0o4711)
    os.utime(mnt / "f", ns=(1_000_000_007, 2_000_000_009))
    st = (mnt / "f").stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o4711, 1234, 5678)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_007, 2_000_000_009)
    assert listener.after_ops[-3:] == [
        Chown("data", b"f", 1234, 5678),
        Chmod("data", b"f", 0o4711),
        Utimens("data", b"f", 1_000_000_007, 2_000_000_009),
    ]


def test_utimens_with_omit_keeps_the_other_time(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"")
    os.utime(mnt / "f", ns=(3_000_000_000, 4_000_000_000))
    subprocess.run(["touch", "-m", "-d", "@5", str(mnt / "f")], check=True)
    st = (mnt / "f").stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (3_000_000_000, 5_000_000_000)
    assert listener.after_ops[-1] == Utimens("data", b"f", 3_000_000_000, 5_000_000_000)


def test_symlink_times_change_the_link_itself(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"")
    os.symlink("f", mnt / "ln")
    os.utime(mnt / "ln", ns=(7, 8), follow_symlinks=False)
    assert (mnt / "ln").lstat().st_mtime_ns == 8
    assert listener.after_ops[-1] == Utimens("data", b"ln", 7, 8)


def test_extended_attributes(mnt: Path, listener: RecordingListener) -> None:
    _write_file(mnt / "f", b"")
    os.setxattr(mnt / "f", "user.a", b"1")
    os.setxattr(mnt / "f", "user.b", b"22")
    with pytest.raises(FileExistsError):
        os.setxattr(mnt / "f", "user.a", b"x", os.XATTR_CREATE)
    assert sorted(os.listxattr(mnt / "f")) == ["user.a", "user.b"]
    assert os.getxattr(mnt / "f", "user.b") == b"22"
    os.removexattr(mnt / "f", "user.a")
    with pytest.raises(OSError) as missing:
        os.getxattr(mnt / "f", "user.a")
    assert missing.value.errno == errno.ENODATA
    assert listener.after_ops[-3:] == [
        SetXattr("data", b"f", b"user.a", b"1", 0),
        SetXattr("data", b"f", b"user.b", b"22", 0),
        RemoveXattr("data", b"f", b"user.a"),
    ]


def test_statfs_reports_the_backing_filesystem(mnt: Path) -> None:
    st = os.statvfs(mnt)
    assert st.f_blocks > 0
    assert st.f_namemax == 255


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda m: os.open(m / "missing", os.O_RDONLY), errno.ENOENT),
        (lambda m: os.mkdir(m / "d"), errno.EEXIST),
        (lambda m: os.rmdir(m / "d"), errno.ENOTEMPTY),
        (lambda m: os.unlink(m / "d"), errno.EISDIR),
        (lambda m: os.rename(m / "d", m / "d" / "f" / "x"), errno.ENOTDIR),
        (lambda m: os.link(m / "d", m / "l"), errno.EPERM),
        (lambda m: os.removexattr(m / "d" / "f", "user.none"), errno.ENODATA),
    ],
)
def test_backing_errors_reach_the_application_unrecorded(
    mnt: Path, listener: RecordingListener, call: object, code: int
) -> None:
    (mnt / "d").mkdir()
    _write_file(mnt / "d" / "f", b"")
    recorded = len(listener.after_ops)
    with pytest.raises(OSError) as raised:
        call(mnt)  # type: ignore[operator]
    assert raised.value.errno == code
    assert len(listener.after_ops) == recorded


def test_the_root_itself_cannot_be_changed(mnt: Path, listener: RecordingListener) -> None:
    with pytest.raises(PermissionError):
        os.chmod(mnt, 0o700)
    with pytest.raises(PermissionError):
        os.setxattr(mnt, "user.x", b"1")
    assert listener.after_ops == []


def test_a_failing_listener_fails_the_call_with_eio(listener: RecordingListener) -> None:
    listener.fail_with = RuntimeError("peer gone")
    with temp_dir("fo-mirror-") as directory, mounted(directory, listener):
        with pytest.raises(OSError) as raised:
            os.mkdir(directory / "d")
        assert raised.value.errno == errno.EIO
        assert not (directory / "d").exists()


# -- read-only ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        lambda m: os.open(m / "f", os.O_WRONLY),
        lambda m: os.open(m / "new", os.O_WRONLY | os.O_CREAT, 0o644),
        lambda m: os.truncate(m / "f", 0),
        lambda m: os.mkdir(m / "d"),
        lambda m: os.unlink(m / "f"),
        lambda m: os.rename(m / "f", m / "g"),
        lambda m: os.symlink("f", m / "ln"),
        lambda m: os.chmod(m / "f", 0o600),
        lambda m: os.utime(m / "f", ns=(1, 1)),
        lambda m: os.setxattr(m / "f", "user.a", b"1"),
    ],
)
def test_read_only_mirror_refuses_every_change_with_erofs(change: object) -> None:
    listener = RecordingListener()
    with temp_dir("fo-mirror-") as directory:
        (directory / "f").write_bytes(b"replica")
        with mounted(directory, listener, read_only=True):
            assert (directory / "f").read_bytes() == b"replica"
            with pytest.raises(OSError) as raised:
                change(directory)  # type: ignore[operator]
            assert raised.value.errno == errno.EROFS
        assert listener.before_ops == []
        assert (directory / "f").read_bytes() == b"replica"


def test_read_only_mirror_shows_changes_made_underneath() -> None:
    with temp_dir("fo-mirror-") as directory, mounted(directory, None, read_only=True) as mirror:
        fd = os.open("new", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=mirror.backing_fd)
        os.write(fd, b"applied")
        os.close(fd)
        assert (directory / "new").read_bytes() == b"applied"


def test_entries_created_by_another_user_are_theirs_with_their_mode_also_on_the_peer(
    listener: RecordingListener,
) -> None:
    nobody = 65534
    program = (
        "import os, sys; d = sys.argv[1]\n"
        "os.mkdir(os.path.join(d, 'dir'), 0o755)\n"
        "os.close(os.open(os.path.join(d, 'dir', 'f'), os.O_CREAT | os.O_WRONLY, 0o600))\n"
        "os.umask(0)\n"
        "os.close(os.open(os.path.join(d, 'shared'), os.O_CREAT | os.O_WRONLY, 0o666))\n"
        "os.close(os.open(os.path.join(d, 'setuid'), os.O_CREAT | os.O_WRONLY, 0o4755))\n"
    )
    with temp_dir("fo-mirror-") as directory:
        directory.chmod(0o777)
        with mounted(directory, listener):
            subprocess.run(
                ["/usr/bin/python3", "-c", program, str(directory)],
                user=nobody,
                group=nobody,
                check=True,
                cwd="/",
            )
            expected = {"dir": 0o755, "dir/f": 0o600, "shared": 0o666, "setuid": 0o4755}
            for name, mode in expected.items():
                st = (directory / name).stat()
                # the caller's umask (0), not the daemon's; set-ID bits kept over the chown
                assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (nobody, nobody, mode)
        assert Chown("data", b"dir", nobody, nobody) in listener.after_ops
        with temp_dir("fo-mirror-peer-") as peer, Applier({"data": peer}) as applier:
            for op in listener.after_ops:
                applier.apply(op)
            for name, mode in expected.items():
                st = (peer / name).stat()
                assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (nobody, nobody, mode)
