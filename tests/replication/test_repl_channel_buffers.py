"""The receiving path without copies, and what keeps it safe.

A long message is read into a buffer of the stream's pool and decoded in place:
a ``Write``'s data is a view of that buffer until the apply wrote it. The
invariant: a pool buffer is handed out again only once no view of it is left,
so nothing received is overwritten before it was applied, however many
messages are in flight and however small the pool.

And the receiver's output stays bounded when the primary probes faster than it
reads the answers (on TLS the receive task keeps reading then).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from channel_support import ROOT, session, stream_pair

from failover.replication.channel import AckLevel, ChannelSettings, ItemKind
from failover.replication.channel_wire import Opener, Sealer
from failover.replication.ops import Create, Write, decode, encode
from failover.replication.protocol import (
    ProbeAnswered,
    ReceiverProtocol,
    SenderProtocol,
    SessionCipher,
)
from failover_transports import tcp_replication
from failover_transports.tcp_replication import TcpMessageStream

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def test_a_decoded_write_carries_its_data_uncopied_and_read_only() -> None:
    received = bytearray(encode(Write(ROOT, b"f", 7, b"payload")))
    op = decode(memoryview(received))
    assert isinstance(op, Write) and op == Write(ROOT, b"f", 7, b"payload")
    assert isinstance(op.data, memoryview) and op.data.readonly
    received[-1:] = b"!"  # the same bytes: a view, not a copy
    assert bytes(op.data) == b"payloa!"


async def test_a_received_message_is_never_overwritten_while_a_view_of_it_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pool of one buffer: every long message wants it. The messages held (a slice
    # of each odd one, as a decoded Write keeps) must stay intact while the later
    # ones are read; the ones dropped free the buffer for the next (reuse happens).
    monkeypatch.setattr(tcp_replication, "POOL_BYTES", 2 * MiB)
    messages = [bytes([index]) * (MiB - 1000 + index) for index in range(8)]
    held: list[tuple[int, memoryview]] = []
    async with stream_pair() as (a, b):
        assert isinstance(a, TcpMessageStream) and isinstance(b, TcpMessageStream)
        for index, message in enumerate(messages):
            await a.send(message)
            view = await b.receive_view()
            assert view == message
            if index % 2:
                held.append((index, view[100:].toreadonly()))
            del view
        assert b._pool.reused >= 1, "the pool never reused a buffer: nothing was tested"
    for index, part in held:
        assert part == messages[index][100:], f"message {index} was overwritten"


def test_the_pool_keeps_at_most_its_limit_and_hands_out_only_unused_buffers() -> None:
    pool = tcp_replication._Pool(4 * MiB)
    held = [memoryview(pool.take(MiB + 1)) for _ in range(10)]  # all in use at once
    assert len({id(view.obj) for view in held}) == 10  # ten distinct buffers
    assert pool._bytes <= 4 * MiB and len(pool._buffers) == 3  # 1.25 MiB each
    del held
    again = [memoryview(pool.take(MiB)) for _ in range(3)]  # the kept ones, free now
    assert pool.reused == 3
    assert {id(view.obj) for view in again} == {id(kept) for kept in pool._buffers}


async def test_large_writes_in_flight_reach_the_disk_intact_with_a_small_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The apply of the first large Write is held while the next ones are received
    # (acknowledged at the received level): each is in a receive buffer, the pool
    # has room for one. Every byte on disk must be what was sent; a second round
    # shows the buffers are reused once applied.
    monkeypatch.setattr(tcp_replication, "POOL_BYTES", 2 * MiB)
    rounds = [[os.urandom(MiB) for _ in range(4)] for _ in range(2)]
    settings = ChannelSettings(ack_level=AckLevel.RECEIVED)
    applied = f"{ROOT} applied".encode()

    def on_item(kind: ItemKind, record: bytes) -> bytes | None:
        return applied if kind is ItemKind.CONTROL else None

    async with session(tmp_path / "b", settings, on_item=on_item, record=False) as running:
        sender = running.sender
        sender.after(Create(ROOT, b"f", 0o644))
        offset = 0
        for blocks in rounds:
            running.sink.apply_gate.close()
            for block in blocks:
                sender.after(Write(ROOT, b"f", offset, block))
                offset += len(block)
            last = sender.queue(Create(ROOT, b"g", 0o644))
            assert await running.in_thread(lambda seq=last: sender.wait_acked(seq))
            running.sink.apply_gate.open()  # all received: now apply them
            answer = await running.in_thread(lambda: sender.request(b"?", 30))
            assert answer == applied  # answered once everything before it is applied
        stream = running.secondary_stream
        assert isinstance(stream, TcpMessageStream)
        assert stream._pool.reused >= 1, "the pool never reused a buffer: nothing was tested"
    assert (tmp_path / "b" / "f").read_bytes() == b"".join(b"".join(r) for r in rounds)


def _pair() -> tuple[SenderProtocol, ReceiverProtocol]:
    to_secondary, to_primary = os.urandom(32), os.urandom(32)
    sender = SenderProtocol(
        SessionCipher(Sealer(to_secondary, 1, session=True), Opener(to_primary, 1, session=True)),
        ChannelSettings(probe_interval=1.0, timeout=1e6),
        0.0,
    )
    receiver = ReceiverProtocol(
        SessionCipher(Sealer(to_primary, 1, session=True), Opener(to_secondary, 1, session=True)),
        AckLevel.WRITTEN,
        takes_records=False,
    )
    return sender, receiver


def test_probes_not_yet_answered_get_one_answer_the_latest() -> None:
    # The receiver's adapter takes no output while 1000 probes arrive (a TLS send
    # blocked on a primary that does not read): what waits must not grow with them.
    sender, receiver = _pair()
    now = 0.0
    for _ in range(1000):
        now += 0.5
        sender.handle_timer(now)  # idle for half the interval: a probe
        (probe,) = sender.data_to_send(now)
        receiver.receive(b"".join(probe), now)
        assert receiver.wants_to_send
    assert sender.probes_sent == 1000
    out = receiver.data_to_send(now)
    assert len(out) == 1, f"{len(out)} messages waited for a primary that does not read"
    sender.receive(b"".join(out[0]), now)  # the primary takes it for all 1000
    assert sender.broken is None
    assert sender.events() == [ProbeAnswered(1000, 0.0)]
    assert not receiver.wants_to_send and receiver.data_to_send(now) == []


async def test_buffered_says_whether_the_next_message_is_already_whole() -> None:
    # What the receiver relies on to answer two messages with one ack: True only
    # when receive_view would return a whole message without reading the socket.
    async with stream_pair() as (a, b):
        assert isinstance(a, TcpMessageStream) and isinstance(b, TcpMessageStream)
        assert not b.buffered
        long = b"L" * (tcp_replication._READ_SIZE + 10)  # read into a pool buffer
        for message in (b"one", b"two", long, b"four"):
            await a.send(message)
        assert await b.receive_view() == b"one"  # one read took them all (or most)
        assert b.buffered
        assert await b.receive_view() == b"two"
        assert await b.receive_view() == long
        assert await b.receive_view() == b"four"
        assert not b.buffered
