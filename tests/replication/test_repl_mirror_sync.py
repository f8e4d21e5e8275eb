"""The mirror's fsync against the peer: the shortcut for clean files, and the local fsync
run while the peer works.

The invariant (mirror.py's docstring): an fsync skips the peer only when no op touched the
file since the last sync of it the peer acknowledged in the current session. These tests
mount a real ``Mirror`` whose listener is the data plane's ``Relay`` (``replication/relay.py``)
with a fake sender (it counts the ``Fsync`` ops queued: each one is a wait on the peer) and a
fake tracker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from mirror_support import mounted, needs_fuse, temp_dir

from failover.replication.ops import Fsync, Op, Write
from failover.replication.relay import Relay

pytestmark = needs_fuse
WAIT_S = 10.0  # bound of a wait on another thread (an event, not a timing)


@dataclass
class FakeSender:
    """What ``Relay`` uses of a ``ReplicationSender``; acknowledges every entry at once
    unless ``hold`` is set: then ``wait_acked`` blocks until ``release`` is set."""

    ops: list[Op] = field(default_factory=list)
    broken: str | None = None
    hold: bool = False
    waiting: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    events: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def after(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def queue(self, op: Op) -> int:
        with self._lock:
            self.ops.append(op)
            self.events.append("queue")
            return len(self.ops)

    def wait_acked(self, seq: int) -> bool:
        self.events.append("wait")
        if self.hold:
            self.waiting.set()
            assert self.release.wait(WAIT_S)
        return self.broken is None

    def syncs(self) -> list[Fsync]:
        with self._lock:
            return [op for op in self.ops if isinstance(op, Fsync)]


class FakeTracker:
    def before(self, op: Op) -> None:
        pass

    def sync(self, op: Fsync) -> None:
        pass


@pytest.fixture
def relay() -> Relay:
    relay = Relay(cast(Any, FakeTracker()))
    relay.sender = cast(Any, FakeSender())
    return relay


@pytest.fixture
def mnt(relay: Relay) -> Iterator[Path]:
    with temp_dir("fo-mirror-sync-") as directory, mounted(directory, cast(Any, relay)):
        yield directory


def sender_of(relay: Relay) -> FakeSender:
    return cast(FakeSender, relay.sender)


def fsync_count(relay: Relay) -> int:
    return len(sender_of(relay).syncs())


def test_a_clean_file_fsyncs_without_the_peer_and_a_write_makes_it_pending(
    mnt: Path, relay: Relay
) -> None:
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a" * 4096, 0)
        os.fsync(fd)
        assert fsync_count(relay) == 1  # written since the last sync: waits on the peer
        os.fsync(fd)
        os.fdatasync(fd)
        assert fsync_count(relay) == 1  # nothing pending: the peer is not asked
        os.pwrite(fd, b"b" * 4096, 4096)
        os.fsync(fd)
        assert fsync_count(relay) == 2  # written again: waits
    finally:
        os.close(fd)


def test_a_write_racing_an_fsync_leaves_the_file_pending(mnt: Path, relay: Relay) -> None:
    """The write comes after the counter was read for the fsync in flight: the peer's
    acknowledgement of that fsync does not cover it, so the next fsync must wait. (The
    kernel holds a FUSE inode's lock during its fsync: the racing write goes through
    another name of the file, which the high-level API gives an inode of its own.)"""
    sender = sender_of(relay)
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    os.link(mnt / "f", mnt / "g")
    other = os.open(mnt / "g", os.O_RDWR)
    try:
        os.pwrite(fd, b"a" * 4096, 0)
        sender.hold = True
        syncing = threading.Thread(target=os.fsync, args=(fd,))
        syncing.start()
        assert sender.waiting.wait(WAIT_S)  # the fsync's op is queued, its ack not in
        os.pwrite(other, b"b" * 4096, 4096)
        sender.hold = False
        sender.release.set()
        syncing.join(WAIT_S)
        assert not syncing.is_alive()
        before = fsync_count(relay)
        os.fsync(fd)
        assert fsync_count(relay) == before + 1
    finally:
        os.close(other)
        os.close(fd)


def test_other_handles_names_and_metadata_make_a_file_pending(mnt: Path, relay: Relay) -> None:
    def clean(path: Path) -> Callable[[], int]:
        """fsync ``path`` twice; how many of the two asked the peer."""

        def run() -> int:
            before = fsync_count(relay)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
            return fsync_count(relay) - before

        return run

    (mnt / "a").write_bytes(b"x")
    os.link(mnt / "a", mnt / "b")
    by_a, by_b = clean(mnt / "a"), clean(mnt / "b")
    assert by_a() == 1 and by_b() == 0  # one file, two names: synced once
    with open(mnt / "a", "r+b") as other:  # another handle, another name
        other.write(b"y")
    assert by_b() == 1
    os.chmod(mnt / "a", 0o600)  # metadata by path
    assert by_b() == 1
    os.setxattr(mnt / "b", "user.k", b"v")
    assert by_a() == 1
    os.truncate(mnt / "a", 0)
    assert by_b() == 1
    os.unlink(mnt / "a")  # its other name's link count changed
    assert by_b() == 1
    (mnt / "c").write_bytes(b"z")
    assert clean(mnt / "c")() == 1
    os.rename(mnt / "b", mnt / "c")  # replaced: c is now the file b was
    assert clean(mnt / "c")() == 1
    assert clean(mnt / "c")() == 0


def test_a_directory_is_pending_after_a_change_of_its_entries(mnt: Path, relay: Relay) -> None:
    (mnt / "d").mkdir()

    def fsyncdir() -> int:
        before = fsync_count(relay)
        fd = os.open(mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return fsync_count(relay) - before

    assert fsyncdir() == 1 and fsyncdir() == 0
    (mnt / "d" / "x").write_bytes(b"")
    assert fsyncdir() == 1 and fsyncdir() == 0
    os.rename(mnt / "d" / "x", mnt / "x")
    assert fsyncdir() == 1 and fsyncdir() == 0
    (mnt / "d" / "sub").mkdir()
    assert fsyncdir() == 1 and fsyncdir() == 0
    (mnt / "d" / "sub").rmdir()
    assert fsyncdir() == 1


def test_a_new_session_starts_with_everything_pending(mnt: Path, relay: Relay) -> None:
    (mnt / "f").write_bytes(b"x")
    fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fsync(fd)
        assert fsync_count(relay) == 1
        relay.sender = cast(Any, FakeSender())  # a new session
        os.fsync(fd)
        os.fsync(fd)
        assert fsync_count(relay) == 1  # the new sender's count: waited once
        relay.resync = cast(Any, object())  # a resync runs: no session to skip against
        os.fsync(fd)
        assert fsync_count(relay) == 2
        relay.resync = None
        os.fsync(fd)  # the resync's end is a new epoch: pending once more
        os.fsync(fd)
        assert fsync_count(relay) == 3
        sender_of(relay).broken = "cut"  # a broken session acknowledges nothing:
        os.fsync(fd)  # (the fence is down: the fsync returns without the peer)
        os.fsync(fd)
        assert fsync_count(relay) == 5
    finally:
        os.close(fd)


def test_a_datasync_does_not_make_a_full_fsync_clean(mnt: Path, relay: Relay) -> None:
    (mnt / "f").write_bytes(b"x")
    fd = os.open(mnt / "f", os.O_RDWR)
    try:
        os.fdatasync(fd)
        os.fdatasync(fd)
        assert [op.datasync for op in sender_of(relay).syncs()] == [True]
        os.fsync(fd)
        os.fsync(fd)
        os.fdatasync(fd)
        assert [op.datasync for op in sender_of(relay).syncs()] == [True, False]
    finally:
        os.close(fd)


def test_the_local_fsync_runs_after_the_op_is_queued_and_before_the_wait(
    mnt: Path, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer's round trip and the local fsync overlap: the relay queues the op, runs
    the mirror's local fsync, then waits for the acknowledgement; the application's call
    returns only after both."""
    sender = sender_of(relay)
    real_fsync = os.fsync
    main = threading.current_thread()

    def recording_fsync(fd: int) -> None:
        if threading.current_thread() is not main:  # the mirror's, not the application's
            sender.events.append("local")
        real_fsync(fd)

    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a", 0)
        monkeypatch.setattr(os, "fsync", recording_fsync)
        sender.events.clear()
        os.fsync(fd)
        assert sender.events == ["queue", "local", "wait"]
        sender.events.clear()
        os.fsync(fd)  # clean: the local fsync alone
        assert sender.events == ["local"]
    finally:
        os.close(fd)


def test_a_change_whose_record_failed_leaves_every_file_pending(mnt: Path, relay: Relay) -> None:
    """The local write is made, then the listener's ``after`` fails (EIO to the
    application): the file changed here, so its next fsync must ask the peer."""
    sender = sender_of(relay)
    fd = os.open(mnt / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a", 0)
        os.fsync(fd)
        os.fsync(fd)
        assert fsync_count(relay) == 1

        def refuse(op: Op) -> None:
            raise RuntimeError("queue gone")

        sender.after = refuse  # type: ignore[method-assign]
        with pytest.raises(OSError):
            os.pwrite(fd, b"b", 1)
        del sender.after
        os.fsync(fd)
        assert fsync_count(relay) == 2
    finally:
        os.close(fd)


# -- an fsync through one name covers the writes through another ------------------------------
#
# POSIX: fsync makes every change of the *file* durable, whichever name or descriptor made
# it. libfuse's high-level API gives each name of a file its own kernel inode, so what the
# kernel holds dirty for one name (an mmap's pages) is not flushed by an fsync of another.
# The mirror's promise: once an fsync returns, the peer holds every byte the application
# wrote to the file before it, so the ``Write`` ops of those bytes reach the listener
# before that fsync's ``Fsync`` op.

SIZE = 8192
# The mmap write runs in a process of its own: a page fault of this process on its own
# mount would hold the GIL while the mirror's FUSE thread needs it to answer the read.
MMAP_WRITE_THEN_FSYNC = """
import mmap, os, sys
a = os.open(sys.argv[1], os.O_RDWR)
b = os.open(sys.argv[2], os.O_RDWR)
with mmap.mmap(a, int(sys.argv[3])) as mapped:
    mapped[:5] = b"hello"  # dirty in the kernel's inode of the first name; no msync
    os.fsync(b)
    print("synced", flush=True)
    sys.stdin.read()  # the mapping stays until the test has looked
"""


def two_names(mnt: Path) -> tuple[Path, Path]:
    with open(mnt / "a", "wb") as new:
        new.truncate(SIZE)
    os.link(mnt / "a", mnt / "b")
    return mnt / "a", mnt / "b"


def peer_image_at_sync(relay: Relay, path: bytes) -> bytes:
    """The file's bytes on the peer when the first ``Fsync`` of ``path`` is applied:
    every ``Write`` queued before it, in order, over zeros."""
    image = bytearray(SIZE)
    for op in sender_of(relay).ops:
        if isinstance(op, Fsync) and op.path == path:
            return bytes(image)
        if isinstance(op, Write):
            image[op.offset : op.offset + len(op.data)] = op.data
    raise AssertionError(f"no Fsync of {path!r} was queued")


def test_an_fsync_through_one_name_sends_an_mmap_write_made_through_another(
    mnt: Path, relay: Relay
) -> None:
    a, b = two_names(mnt)
    with subprocess.Popen(
        [sys.executable, "-c", MMAP_WRITE_THEN_FSYNC, str(a), str(b), str(SIZE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        try:
            assert child.stdout.readline() == b"synced\n"
            assert peer_image_at_sync(relay, b"b")[:5] == b"hello"
        finally:
            child.stdin.close()
            child.wait(WAIT_S)


def test_an_fsync_through_one_name_sends_a_write_made_through_another(
    mnt: Path, relay: Relay
) -> None:
    """write(2) goes through FUSE at once (no writeback cache): recorded before it returns."""
    a, b = (os.open(name, os.O_RDWR) for name in two_names(mnt))
    try:
        os.pwrite(a, b"hello", 0)
        os.fsync(b)
        assert peer_image_at_sync(relay, b"b")[:5] == b"hello"
    finally:
        os.close(b)
        os.close(a)
