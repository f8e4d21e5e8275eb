"""The replication channel over loopback TCP: order, acknowledgement levels, status."""

from __future__ import annotations

import functools
import os
import select
import tempfile
import threading
from pathlib import Path

import anyio
import pytest
from channel_support import (
    ROOT,
    RecordingSink,
    Session,
    blocking_call,
    finished,
    identities,
    session,
    snapshot,
    stream_pair,
    waited,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failover.replication.apply import Applier
from failover.replication.channel import (
    INLINE_BYTES,
    AckLevel,
    ChannelSettings,
    ItemKind,
    ReplicationReceiver,
)
from failover.replication.ops import (
    Chmod,
    Create,
    Fsync,
    Mkdir,
    Op,
    Rename,
    Symlink,
    Truncate,
    Unlink,
    Write,
)
from failover.testing.transport_contract import WAIT_TIMEOUT
from failover_transports.tcp_replication import TcpMessageStream

pytestmark = pytest.mark.anyio


def write(path: bytes, data: bytes, offset: int = 0) -> Write:
    return Write(ROOT, path, offset, data)


async def sync_in_thread(running: Session, op: Fsync) -> None:
    await running.in_thread(lambda: running.sender.sync(op))


async def test_ops_are_applied_in_order_and_sync_waits_for_them(tmp_path: Path) -> None:
    async with session(tmp_path / "b") as running:
        ops: list[Op] = [
            Create(ROOT, b"f", 0o644),
            write(b"f", b"hello"),
            Rename(ROOT, b"f", b"g", 0),
            Fsync(ROOT, b"g", False),
        ]
        for op in ops[:-1]:
            running.sender.after(op)
        await sync_in_thread(running, Fsync(ROOT, b"g", False))
        assert running.sink.applied == ops[:-1]
        assert (tmp_path / "b" / "g").read_bytes() == b"hello"
        status = running.sender.status()
        assert status.acked.written == 4
        assert status.ops_sent == 4
        assert status.in_flight_bytes == 0
        assert status.last_ack_latency is not None
        assert status.broken is None


@pytest.mark.parametrize("inline", [0, INLINE_BYTES], ids=["thread", "inline"])
async def test_sync_does_not_return_before_the_receiver_applied(
    tmp_path: Path, inline: int
) -> None:
    async with session(tmp_path / "b", inline_bytes=inline) as running:
        running.sender.after(Create(ROOT, b"f", 0o644))
        assert await running.in_thread(lambda: running.sender.wait_acked(1))
        running.sink.apply_gate.close()
        running.sender.after(write(b"f", b"data"))
        with blocking_call(lambda: running.sender.sync(Fsync(ROOT, b"f", False))) as call:
            assert await waited(running.sink.apply_gate.entered)
            assert not await finished(call, 0.2), "sync returned before the write was applied"
            running.sink.apply_gate.open()
            assert await finished(call)
        assert (tmp_path / "b" / "f").read_bytes() == b"data"


async def test_writes_applied_inline_and_in_the_thread_keep_their_order(tmp_path: Path) -> None:
    """Invariant: the receiver applies entries in stream order, whether its receive
    task applies them (small writes, the thread idle) or its apply thread does
    (large writes, and whatever arrives while the thread has work). Large and
    small writes overlap the same range, with Fsyncs between them (an Fsync
    received inline leaves its fsync to the thread); the peer's file must end as
    the same writes applied in order. Each large write is held until a later
    write is applied or 0.3 s passed: in order, none can be; a small one applied
    out of turn meanwhile would be overwritten by the large one."""
    big = 2 * INLINE_BYTES
    async with session(tmp_path / "b", inline_bytes=INLINE_BYTES, record=False) as running:
        later = threading.Event()
        appliers: set[str] = set()  # the threads that applied a write

        def hold_large(op: Op) -> None:
            if isinstance(op, Write):
                appliers.add(threading.current_thread().name)
            if isinstance(op, Write) and len(op.data) > INLINE_BYTES:
                later.clear()
                later.wait(0.3)  # a write applied meanwhile arrived after this one
            elif isinstance(op, Write):
                later.set()

        running.sink.before_apply = hold_large
        expected = bytearray(big)
        running.sender.after(Create(ROOT, b"f", 0o644))
        for turn in range(4):  # each turn starts with the apply thread idle
            # small (inline), Fsync (written inline, fsynced by the thread), small,
            # large (the thread), small, small (behind the large one)
            ops: list[Op] = [write(b"f", bytes([10 + turn]) * 4096, turn * 4096)]
            ops.append(Fsync(ROOT, b"f", True))
            ops.append(write(b"f", bytes([20 + turn]) * 4096, (turn + 1) * 4096))
            ops.append(write(b"f", bytes([turn + 1]) * big))
            for small in range(2):
                ops.append(write(b"f", bytes([30 + turn + small]) * 4096, (turn + small) * 4096))
            for op in ops:
                if isinstance(op, Write):
                    expected[op.offset : op.offset + len(op.data)] = op.data
                last = running.sender.queue(op)
            # The last write, behind the large one, is the thread's: its ack leaves
            # once the thread is idle again (an Fsync's ack would leave before its fsync).
            assert await running.in_thread(functools.partial(running.sender.wait_acked, last))
        await sync_in_thread(running, Fsync(ROOT, b"f", False))
        assert (tmp_path / "b" / "f").read_bytes() == expected
        assert len(appliers) == 2, f"writes applied by {appliers}: not both paths"
        assert running.sender.broken is None


def test_only_an_applier_sink_has_its_small_writes_applied_in_the_receive_task(
    tmp_path: Path,
) -> None:
    # Any other sink may block (a test's gate): it keeps the event loop free unless
    # its owner says otherwise (the data plane does for its resync target).
    _, secondary = identities()
    with Applier({ROOT: tmp_path}) as applier:
        assert ReplicationReceiver(secondary, applier)._inline_bytes == INLINE_BYTES
        assert ReplicationReceiver(secondary, RecordingSink(applier))._inline_bytes == 0
        explicit = ReplicationReceiver(secondary, RecordingSink(applier), inline_bytes=4096)
        assert explicit._inline_bytes == 4096


@pytest.mark.parametrize("inline", [0, INLINE_BYTES], ids=["thread", "inline"])
async def test_no_ack_covers_a_write_still_being_applied(tmp_path: Path, inline: int) -> None:
    # The write's own ack (not a later Fsync's): applied in the receive task
    # (inline) or in the apply thread, it is acknowledged only once its pwrite returned.
    async with session(tmp_path / "b", inline_bytes=inline) as running:
        running.sender.after(Create(ROOT, b"f", 0o644))
        assert await running.in_thread(lambda: running.sender.wait_acked(1))
        running.sink.apply_gate.close()
        seq = running.sender.queue(write(b"f", b"data"))
        with blocking_call(lambda: running.sender.wait_acked(seq)) as call:
            assert await waited(running.sink.apply_gate.entered)
            assert not await finished(call, 0.2), "the write was acknowledged before its apply"
            running.sink.apply_gate.open()
            assert await finished(call)
        assert running.sender.status().acked.written == seq
        assert (tmp_path / "b" / "f").read_bytes() == b"data"


@pytest.mark.parametrize("inline", [0, INLINE_BYTES], ids=["thread", "inline"])
@pytest.mark.parametrize(
    ("level", "gate", "waits"),
    [
        (AckLevel.RECEIVED, "apply_gate", False),
        (AckLevel.WRITTEN, "apply_gate", True),
        (AckLevel.WRITTEN, "fsync_gate", False),
        (AckLevel.FSYNCED, "fsync_gate", True),
    ],
)
async def test_ack_level_decides_what_sync_waits_for(
    tmp_path: Path, level: AckLevel, gate: str, waits: bool, inline: int
) -> None:
    settings_ = ChannelSettings(ack_level=level)
    async with session(tmp_path / "b", settings_, inline_bytes=inline) as running:
        running.sender.after(Create(ROOT, b"f", 0o644))
        assert await running.in_thread(lambda: running.sender.wait_acked(1))
        blocker = getattr(running.sink, gate)
        blocker.close()
        running.sender.after(write(b"f", b"x" * 4096))
        with blocking_call(lambda: running.sender.sync(Fsync(ROOT, b"f", True))) as call:
            assert await waited(blocker.entered)
            if waits:
                assert not await finished(call, 0.2), f"sync at {level} passed the {gate}"
                blocker.open()
            assert await finished(call), f"sync at {level} waited for the {gate}"
            blocker.open()
        assert running.sender.broken is None


async def test_fsynced_level_fsyncs_each_fsync_op(tmp_path: Path) -> None:
    settings_ = ChannelSettings(ack_level=AckLevel.FSYNCED)
    async with session(tmp_path / "b", settings_) as running:
        running.sender.after(Create(ROOT, b"f", 0o644))
        running.sender.after(Fsync(ROOT, b"f", False))
        running.sender.after(write(b"f", b"abc"))
        await sync_in_thread(running, Fsync(ROOT, b"f", True))
        assert running.sink.fsynced == [b"f", b"f"]
        assert running.sender.status().acked.fsynced == 4


async def test_resync_and_control_entries_share_the_order_of_ops(tmp_path: Path) -> None:
    seen: list[tuple[ItemKind, bytes, bool]] = []
    target = tmp_path / "b" / "f"

    def on_item(kind: ItemKind, payload: bytes) -> None:
        seen.append((kind, payload, target.exists()))

    async with session(tmp_path / "b", on_item=on_item) as running:
        sender = running.sender
        sender.send_control(b"begin")
        sender.after(Create(ROOT, b"f", 0o644))
        last = sender.send_resync(b"chunk")
        assert await running.in_thread(lambda: sender.wait_acked(last))
    assert seen == [(ItemKind.CONTROL, b"begin", False), (ItemKind.RESYNC, b"chunk", True)]


async def test_a_control_request_is_answered_after_every_entry_before_it(
    tmp_path: Path,
) -> None:
    target = tmp_path / "b" / "f"

    def on_item(kind: ItemKind, payload: bytes) -> bytes | None:
        # the answer describes the secondary's state at the request's place in the stream
        return payload + (b" sees f" if target.exists() else b" sees nothing")

    async with session(tmp_path / "b", on_item=on_item) as running:
        sender = running.sender
        before = await running.in_thread(lambda: sender.request(b"first", WAIT_TIMEOUT))
        sender.after(Create(ROOT, b"f", 0o644))
        after = await running.in_thread(lambda: sender.request(b"second", WAIT_TIMEOUT))
        assert sender.broken is None
    assert (before, after) == (b"first sees nothing", b"second sees f")


async def test_large_writes_stream_through_a_small_window(tmp_path: Path) -> None:
    tiny = ChannelSettings(window_bytes=256 * 1024, max_message_bytes=64 * 1024)
    blocks = [bytes([n]) * 100_000 for n in range(40)]
    async with session(tmp_path / "b", tiny) as running:
        running.sender.after(Create(ROOT, b"f", 0o600))
        for index, block in enumerate(blocks):
            running.sender.after(write(b"f", block, index * len(block)))
        await sync_in_thread(running, Fsync(ROOT, b"f", False))
        assert running.sender.status().in_flight_bytes == 0
    assert (tmp_path / "b" / "f").read_bytes() == b"".join(blocks)


async def test_insecure_mode_replicates_too(tmp_path: Path) -> None:
    async with session(tmp_path / "b", key=None) as running:
        running.sender.after(Mkdir(ROOT, b"d", 0o755))
        await sync_in_thread(running, Fsync(ROOT, b"d", False))
    assert (tmp_path / "b" / "d").is_dir()


# -- random op sequences: the receiver's tree equals a directly applied one ------

NAMES = (b"a", b"b", b"c", b"d/x", b"d/y")


@st.composite
def op_sequences(draw: st.DrawFn) -> list[Op]:
    """Valid op sequences on a few names, tracking which files exist."""
    ops: list[Op] = [Mkdir(ROOT, b"d", 0o755)]
    files: set[bytes] = set()
    for _ in range(draw(st.integers(1, 25))):
        path = draw(st.sampled_from(NAMES))
        if path not in files:
            ops.append(Create(ROOT, path, draw(st.sampled_from([0o600, 0o644]))))
            files.add(path)
            continue
        choice = draw(st.integers(0, 6))
        if choice <= 1:
            data = draw(st.binary(min_size=1, max_size=3000))
            ops.append(Write(ROOT, path, draw(st.integers(0, 5000)), data))
        elif choice == 2:
            ops.append(Truncate(ROOT, path, draw(st.integers(0, 6000))))
        elif choice == 3:
            ops.append(Chmod(ROOT, path, draw(st.sampled_from([0o600, 0o640, 0o755]))))
        elif choice == 4:
            new = draw(st.sampled_from(NAMES))
            if new != path:
                ops.append(Rename(ROOT, path, new, 0))
                files.discard(path)
                files.add(new)
        elif choice == 5:
            ops.append(Unlink(ROOT, path))
            files.discard(path)
        else:
            ops.append(Fsync(ROOT, path, draw(st.booleans())))
    ops.append(Symlink(ROOT, b"link", b"d/x"))
    return ops


async def replicate(ops: list[Op], top: Path) -> None:
    async with session(top / "replica") as running:

        def primary() -> None:
            for op in ops:
                if isinstance(op, Fsync):
                    running.sender.sync(op)
                else:
                    running.sender.after(op)
            running.sender.sync(Fsync(ROOT, b"d", False))

        with anyio.fail_after(WAIT_TIMEOUT):
            await running.in_thread(primary)
        assert running.sender.broken is None, running.sender.broken


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=op_sequences())
def test_random_op_sequences_replicate_exactly(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as top:
        reference = Path(top, "reference")
        reference.mkdir()
        with Applier({ROOT: reference}) as applier:
            for op in ops:
                applier.apply(op)
        anyio.run(replicate, ops, Path(top))
        assert snapshot(Path(top, "replica")) == snapshot(reference)


async def test_an_op_reaches_the_socket_from_the_calling_thread(tmp_path: Path) -> None:
    """The hot path: ``after`` puts the op's message on the socket itself, with no
    hop to the event loop (here the loop cannot run between the call and the look
    at the secondary's socket: nothing awaits in between)."""
    async with session(tmp_path) as running:
        stream = running.secondary_stream
        assert isinstance(stream, TcpMessageStream)
        readable, _, _ = select.select([stream._sock], [], [], 0)
        assert not readable  # nothing since the handshake (no probes configured)
        running.sender.after(Create(ROOT, b"direct", 0o644))
        readable, _, _ = select.select([stream._sock], [], [], 0)
        assert readable, "the op waited for the event loop"
        await running.in_thread(lambda: running.sender.sync(Fsync(ROOT, b"direct", False)))
        assert (tmp_path / "direct").exists()


async def test_vectored_sends_from_threads_arrive_whole_and_in_order() -> None:
    """``send_nowait`` from a thread (buffers uncopied, the rest left for ``flush``
    when the socket is full) and ``receive_view`` (long messages read straight into
    their own buffer): every message whole, in order, with concurrent flushes."""
    messages = [os.urandom(size) for size in (1, 300_000, 2_000_000, 5, 4_000_000, 70_000)] * 3
    async with stream_pair() as (a, b):
        assert isinstance(a, TcpMessageStream) and isinstance(b, TcpMessageStream)

        filled = anyio.Event()  # nothing is read before the socket was full once

        def send_all() -> None:
            for message in messages:
                view = memoryview(message)
                if not a.send_nowait([view[:7], view[7:]]):
                    anyio.from_thread.run_sync(filled.set)
                    anyio.from_thread.run(a.flush)  # the loop sends the rest
            anyio.from_thread.run_sync(filled.set)

        got: list[bytes] = []
        with anyio.fail_after(WAIT_TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, send_all)
                await filled.wait()
                assert a.backlogged  # the socket is full: a partial send, the rest queued
                while len(got) < len(messages):
                    got.append(bytes(await b.receive_view()))
    assert got == messages
