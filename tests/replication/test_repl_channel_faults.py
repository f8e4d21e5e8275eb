"""The replication channel under attack and failure: forged, mutated, replayed,
truncated messages, wrong keys and names, dropped and stalled peers."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest
from channel_support import (
    KEY,
    ROOT,
    RecordingSink,
    blocking_call,
    finished,
    identities,
    session,
    stream_pair,
    waited,
)

from failover.errors import PeerProtocolError, TransportError
from failover.replication import channel_receiver
from failover.replication.apply import Applier, ApplyError
from failover.replication.channel import (
    INLINE_BYTES,
    ChannelSettings,
    ReplicationReceiver,
    ReplicationSender,
    SessionIdentity,
)
from failover.replication.channel_session import PeerInfo, greet_as_primary, greet_as_secondary
from failover.replication.channel_wire import (
    NONCE_SIZE,
    Ack,
    AckLevel,
    Buffer,
    Greeting,
    ItemKind,
    Kind,
    Sealer,
    cluster_id,
    decode_greeting,
    encode_ack,
    encode_greeting,
    encode_probe,
    items_parts,
)
from failover.replication.ops import Create, Fsync, Op, Write, encode, encode_parts
from failover.replication.protocol import SessionCipher
from failover.testing.transport_contract import WAIT_TIMEOUT
from failover.transport import MessageStream
from failover_transports.tcp_replication import TcpMessageStream

pytestmark = pytest.mark.anyio

TIMEOUT = 0.3
FLOOD_S = 2.0


def items(first: int, *names: bytes) -> list[Buffer]:
    return items_parts(first, [(ItemKind.OP, [encode(Create(ROOT, n, 0o644))]) for n in names])


def flip(message: bytes) -> bytes:
    middle = len(message) // 2
    return message[:middle] + bytes([message[middle] ^ 0x01]) + message[middle + 1 :]


def sealed(sealer: Sealer, first: int, name: bytes) -> bytes:
    return sealer.seal(Kind.ITEMS, items(first, name))


def replayed(sealer: Sealer) -> list[bytes]:
    good = sealed(sealer, 1, b"good")
    return [good, good]


TAMPERINGS: dict[str, tuple[Callable[[Sealer], list[bytes]], str]] = {
    "mutated": (lambda s: [flip(sealed(s, 1, b"evil"))], "bad tag"),
    "truncated": (lambda s: [sealed(s, 1, b"evil")[:-7]], "bad tag"),
    "cut to a header": (lambda s: [sealed(s, 1, b"evil")[:20]], "truncated"),
    "replayed": (replayed, "counter"),
    "forged with another key": (
        lambda _s: [sealed(Sealer(b"x" * 32, 1, session=True), 1, b"evil")],
        "bad tag",
    ),
    "an ack kind from the primary": (
        lambda s: [s.seal(Kind.ACK, [encode_ack(Ack(0, 0, 0))])],
        "kind",
    ),
    "a sequence gap": (lambda s: [sealed(s, 5, b"evil")], "sequence"),
    "a garbage op": (
        lambda s: [s.seal(Kind.ITEMS, items_parts(1, [(ItemKind.OP, [b"\xff\x00"])]))],
        "unknown op code",
    ),
}


async def started_handshake(
    tg: anyio.abc.TaskGroup, receiver: ReplicationReceiver, stream: MessageStream
) -> anyio.Event:
    """Start the receiver's handshake on ``stream``; the event is set once it is done."""
    done = anyio.Event()

    async def handshake() -> None:
        await receiver.handshake(stream)
        done.set()

    tg.start_soon(handshake)
    return done


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
async def test_bad_messages_end_the_session_and_write_nothing(
    tmp_path: Path, tampering: str
) -> None:
    tamper, expected = TAMPERINGS[tampering]
    primary, secondary = identities()
    with Applier({ROOT: tmp_path}) as applier:
        sink = RecordingSink(applier)
        receiver = ReplicationReceiver(secondary, sink, timeout=WAIT_TIMEOUT)
        async with stream_pair() as (a, b), anyio.create_task_group() as tg:
            greeted = await started_handshake(tg, receiver, b)
            with anyio.fail_after(WAIT_TIMEOUT):
                _, cipher = await greet_as_primary(a, primary, AckLevel.WRITTEN, WAIT_TIMEOUT)
            for message in tamper(cipher.sealer):
                await a.send(message)
            with anyio.fail_after(WAIT_TIMEOUT), pytest.raises(PeerProtocolError, match=expected):
                await greeted.wait()
                await receiver.run()
    applied = [op.path for op in sink.applied]  # type: ignore[union-attr]
    assert b"evil" not in applied
    assert not (tmp_path / "evil").exists()
    assert applied in ([], [b"good"])


async def test_a_recorded_session_cannot_be_replayed_into_a_new_one(tmp_path: Path) -> None:
    primary, secondary = identities()
    recorded: list[bytes] = []
    async with stream_pair() as (a, b), anyio.create_task_group() as tg:
        tg.start_soon(greet_as_secondary, b, secondary, WAIT_TIMEOUT)
        _, cipher = await greet_as_primary(a, primary, AckLevel.WRITTEN, WAIT_TIMEOUT)
        recorded.append(cipher.sealer.seal(Kind.ITEMS, items(1, b"old")))
    with Applier({ROOT: tmp_path}) as applier:
        receiver = ReplicationReceiver(secondary, RecordingSink(applier), timeout=WAIT_TIMEOUT)
        async with stream_pair() as (a, b), anyio.create_task_group() as tg:
            greeted = await started_handshake(tg, receiver, b)
            await greet_as_primary(a, primary, AckLevel.WRITTEN, WAIT_TIMEOUT)
            await a.send(recorded[0])
            with anyio.fail_after(WAIT_TIMEOUT), pytest.raises(PeerProtocolError, match="bad tag"):
                await greeted.wait()
                await receiver.run()
    assert not (tmp_path / "old").exists()


@pytest.mark.parametrize(
    ("secondary_identity", "expected"),
    [
        (SessionIdentity("c1", b"other key", "beta", "alpha", "g"), "bad tag"),
        (SessionIdentity("c1", None, "beta", "alpha", "g"), "insecure"),
        (SessionIdentity("c2", KEY, "beta", "alpha", "g"), "another cluster"),
        (SessionIdentity("c1", KEY, "gamma", "alpha", "g"), "addressed to node 'beta'"),
        (SessionIdentity("c1", KEY, "beta", "delta", "g"), "from node 'alpha'"),
    ],
)
async def test_handshake_refuses_a_peer_that_does_not_match(
    tmp_path: Path, secondary_identity: SessionIdentity, expected: str
) -> None:
    primary, _ = identities()
    broken: list[str] = []
    sender = ReplicationSender(primary, ChannelSettings(timeout=TIMEOUT), broken.append)
    with Applier({ROOT: tmp_path}) as applier:
        receiver = ReplicationReceiver(secondary_identity, RecordingSink(applier))
        async with stream_pair() as (a, b), anyio.create_task_group() as tg:

            async def secondary() -> None:
                with pytest.raises(PeerProtocolError, match=expected):
                    await receiver.handshake(b)

            tg.start_soon(secondary)
            with pytest.raises((TransportError, PeerProtocolError)):
                await sender.handshake(a)
    await sender.run()
    assert len(broken) == 1 and "handshake failed" in broken[0]
    sender.after(Create(ROOT, b"f", 0o644))  # returns at once: the session is broken
    sender.sync(Fsync(ROOT, b"f", False))


async def test_a_forged_ack_breaks_the_sender_once(tmp_path: Path) -> None:
    primary, secondary = identities()
    broken: list[str] = []
    sender = ReplicationSender(primary, ChannelSettings(timeout=WAIT_TIMEOUT), broken.append)
    async with stream_pair() as (a, b):
        async with anyio.create_task_group() as greeting:  # both ends done before run()
            greeting.start_soon(sender.handshake, a)
            _, cipher = await greet_as_secondary(b, secondary, WAIT_TIMEOUT)
        await b.send(cipher.sealer.seal(Kind.ACK, [encode_ack(Ack(9, 9, 9))]))
        with anyio.fail_after(WAIT_TIMEOUT):
            await sender.run()
    assert len(broken) == 1
    assert "only 0 were sent" in broken[0]
    assert isinstance(sender.failure, PeerProtocolError)


async def test_a_stalled_peer_breaks_the_session_and_frees_sync(tmp_path: Path) -> None:
    async with session(tmp_path, ChannelSettings(timeout=TIMEOUT)) as running:
        running.sink.apply_gate.close()
        running.sender.after(Create(ROOT, b"f", 0o644))
        with blocking_call(lambda: running.sender.sync(Fsync(ROOT, b"f", False))) as call:
            assert await finished(call), "sync stayed blocked beyond the timeout"
        with anyio.fail_after(WAIT_TIMEOUT):
            await running.sender_done.wait()
        assert len(running.broken) == 1
        # the sync's own deadline, or the stall of the data sent just before it
        assert "did not acknowledge" in running.broken[0] or (
            "acknowledged nothing" in running.broken[0]
        )
        # From now on the node continues alone: nothing blocks.
        with blocking_call(lambda: running.sender.sync(Fsync(ROOT, b"f", False))) as call:
            assert await finished(call, WAIT_TIMEOUT)
        assert len(running.broken) == 1


async def test_a_stalled_peer_without_sync_is_detected_too(tmp_path: Path) -> None:
    async with session(tmp_path, ChannelSettings(timeout=TIMEOUT)) as running:
        running.sink.apply_gate.close()
        running.sender.after(Create(ROOT, b"f", 0o644))
        with anyio.fail_after(WAIT_TIMEOUT):
            await running.sender_done.wait()
        assert running.broken == [f"peer acknowledged nothing for {TIMEOUT} s with data in flight"]


async def test_a_dropped_connection_breaks_the_session_and_frees_sync(tmp_path: Path) -> None:
    async with session(tmp_path, ChannelSettings(timeout=WAIT_TIMEOUT)) as running:
        running.sink.apply_gate.close()
        running.sender.after(Create(ROOT, b"f", 0o644))
        with blocking_call(lambda: running.sender.sync(Fsync(ROOT, b"f", False))) as call:
            assert await anyio.to_thread.run_sync(running.sink.apply_gate.entered.wait, 5)
            await running.secondary_stream.aclose()
            assert await finished(call), "sync stayed blocked after the connection dropped"
        with anyio.fail_after(WAIT_TIMEOUT):
            await running.sender_done.wait()
        assert len(running.broken) == 1
        assert "connection lost" in running.broken[0]


async def test_the_secondary_request_reaches_the_primary_and_a_hello_cannot_carry_one() -> None:
    primary_id, secondary_id = identities()
    request = b"resync request \x00\xff" * 1000
    async with stream_pair() as (client, server), anyio.create_task_group() as tg:
        answered: list[PeerInfo] = []

        async def answer() -> None:
            peer, _ = await greet_as_secondary(server, secondary_id, WAIT_TIMEOUT, request)
            answered.append(peer)

        tg.start_soon(answer)
        peer, _ = await greet_as_primary(client, primary_id, AckLevel.WRITTEN, WAIT_TIMEOUT)
    assert peer.request == request
    assert answered[0].request == b""
    forged = Greeting(
        cluster_id("c1"), AckLevel.WRITTEN, b"n" * NONCE_SIZE, b"\0" * NONCE_SIZE,
        "alpha", "beta", "gen", b"sneaky",
    )  # fmt: skip
    with pytest.raises(
        PeerProtocolError, match=r"^HELLO\.request: present \(only a WELCOME may carry one\)"
    ):
        decode_greeting(Kind.HELLO, memoryview(encode_greeting(forged)))


async def test_a_reply_nobody_asked_for_ends_the_session(tmp_path: Path) -> None:
    async with session(tmp_path / "b") as running:
        # one acknowledged round trip: the receiver's side of the handshake is done
        running.sender.after(Create(ROOT, b"x", 0o644))
        await running.in_thread(lambda: running.sender.sync(Fsync(ROOT, b"x", False)))
        assert running.sender.broken is None
        receiver = running.receiver
        with receiver._lock:  # the receiver's protocol answers an entry that asked nothing
            assert receiver._protocol is not None
            receiver._protocol.reply(1, b"forged")
            receiver._output_locked()
        with anyio.fail_after(WAIT_TIMEOUT):
            await running.sender_done.wait()
    assert running.broken and "asked nothing" in running.broken[0]


class _LateMessage:
    """The secondary's stream, where the second message is delivered although the
    receiving task was cancelled meanwhile (it arrived as the session ended: a
    completed read is not undone by the cancellation)."""

    def __init__(self, inner: MessageStream) -> None:
        self.inner = inner
        self.received = -1  # counting starts after the handshake (``armed``)

    def arm(self) -> None:
        self.received = 0

    async def send(self, message: bytes) -> None:
        await self.inner.send(message)

    async def receive(self, *, limit: int | None = None) -> bytes:
        if self.received >= 0:
            self.received += 1
        message = await self.inner.receive(limit=limit)
        if self.received == 2:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                return message  # the read completed; the next checkpoint cancels
        return message

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("inline", [0, INLINE_BYTES], ids=["thread", "inline"])
async def test_an_apply_error_ends_the_session_with_its_reason_whatever_arrives_meanwhile(
    tmp_path: Path, inline: int
) -> None:
    """Invariant: a change this node cannot apply ends the session with that reason
    (``ApplyError``, a ``FailoverError`` the runtime reports); a message that arrives
    as the session ends never turns it into another error (it killed the daemon).
    The same whether the apply thread or the receive task (a small write) fails."""
    primary, secondary = identities()
    with Applier({ROOT: tmp_path}) as applier:
        receiver = ReplicationReceiver(
            secondary, RecordingSink(applier), timeout=WAIT_TIMEOUT, inline_bytes=inline
        )
        async with stream_pair() as (a, b):
            late = _LateMessage(b)
            with anyio.fail_after(WAIT_TIMEOUT):
                async with anyio.create_task_group() as greeting:  # both ends done
                    greeting.start_soon(receiver.handshake, late)
                    _, cipher = await greet_as_primary(a, primary, AckLevel.WRITTEN, WAIT_TIMEOUT)
            late.arm()
            bad = Write(ROOT, b"missing-dir/file", 0, b"x")  # cannot be applied
            await a.send(
                cipher.sealer.seal(Kind.ITEMS, items_parts(1, [(ItemKind.OP, [encode(bad)])]))
            )
            await a.send(sealed(cipher.sealer, 2, b"next"))
            with anyio.fail_after(WAIT_TIMEOUT), pytest.raises(ApplyError, match="missing-dir"):
                await receiver.run()
    assert late.received == (1 if inline else 2)  # inline: the receive task failed itself
    assert not (tmp_path / "next").exists()


async def test_a_request_is_computed_only_for_a_hello_under_the_cluster_key() -> None:
    """A stranger's connection (a HELLO without the key) makes the secondary
    compute nothing: the resync request (its tracker's suspect set) is taken only
    once a HELLO verified, and then carried by the WELCOME as before."""
    primary_id, secondary_id = identities()
    calls: list[bytes] = []

    def request() -> bytes:
        calls.append(b"asked")
        return b"resync request"

    stranger = SessionIdentity("c1", b"x" * 32, "alpha", "beta", "gen")
    async with stream_pair() as (client, server), anyio.create_task_group() as tg:
        tg.start_soon(greet_as_primary, client, stranger, AckLevel.WRITTEN, WAIT_TIMEOUT)
        with pytest.raises(PeerProtocolError, match="bad tag"):
            await greet_as_secondary(server, secondary_id, WAIT_TIMEOUT, request)
        tg.cancel_scope.cancel()
    assert calls == []
    async with stream_pair() as (client, server), anyio.create_task_group() as tg:
        tg.start_soon(greet_as_secondary, server, secondary_id, WAIT_TIMEOUT, request)
        peer, _ = await greet_as_primary(client, primary_id, AckLevel.WRITTEN, WAIT_TIMEOUT)
    assert calls == [b"asked"] and peer.request == b"resync request"


async def test_a_stranger_cannot_make_the_secondary_hold_a_long_hello() -> None:
    """Before it authenticated, a connection's messages are read with a small
    limit: a HELLO announced at 1 MiB is refused when its length arrives, never
    buffered or waited for (eight handshake slots times the 64 MiB message limit
    would otherwise be half a gigabyte held for strangers)."""
    _, secondary_id = identities()
    async with stream_pair() as (client, server), anyio.create_task_group() as tg:
        tg.start_soon(client.send, b"h" * (1 << 20))
        with pytest.raises(TransportError, match="announced"), anyio.fail_after(WAIT_TIMEOUT):
            await greet_as_secondary(server, secondary_id, WAIT_TIMEOUT)
        tg.cancel_scope.cancel()


async def running_receiver(
    tg: anyio.abc.TaskGroup, receiver: ReplicationReceiver, a: MessageStream, b: MessageStream
) -> SessionCipher:
    """The handshake of ``receiver`` on ``b`` with a primary on ``a`` driven by the
    test (its cipher returned), then the receiver running."""
    primary, _ = identities()
    greeted = await started_handshake(tg, receiver, b)
    with anyio.fail_after(WAIT_TIMEOUT):
        _, cipher = await greet_as_primary(a, primary, AckLevel.WRITTEN, WAIT_TIMEOUT)
        await greeted.wait()
    tg.start_soon(receiver.run)
    return cipher


async def test_a_primary_beyond_its_window_cannot_fill_the_secondary_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broken primary ignores its window while the secondary's apply is stuck: the
    # secondary reads no more than its backlog bound (and one message) until the apply
    # catches up, and then applies everything, in order.
    backlog, chunk, count = 1024 * 1024, 256 * 1024, 96
    monkeypatch.setattr(channel_receiver, "BACKLOG_BYTES", backlog)
    _, secondary = identities()
    with Applier({ROOT: tmp_path}) as applier:
        sink = RecordingSink(applier)
        sink.apply_gate.close()
        receiver = ReplicationReceiver(secondary, sink, timeout=WAIT_TIMEOUT)
        sent = anyio.Event()
        async with stream_pair() as (a, b), anyio.create_task_group() as tg:
            cipher = await running_receiver(tg, receiver, a, b)

            async def flood() -> None:
                ops: list[Op] = [Create(ROOT, b"big", 0o644)]
                ops += [Write(ROOT, b"big", i * chunk, bytes([i]) * chunk) for i in range(count)]
                for seq, op in enumerate(ops, 1):
                    parts = items_parts(seq, [(ItemKind.OP, encode_parts(op))])
                    await a.send(cipher.sealer.seal(Kind.ITEMS, parts))
                sent.set()

            tg.start_soon(flood)
            assert await waited(sink.apply_gate.entered)
            with anyio.fail_after(WAIT_TIMEOUT):
                await anyio.wait_all_tasks_blocked()  # the flood or the receive task waits
            assert receiver.status.bytes_received <= backlog + chunk + 1024
            sink.apply_gate.open()
            with anyio.fail_after(WAIT_TIMEOUT):
                await sent.wait()
                while receiver.status.entries_applied < count + 1:
                    await anyio.sleep(0.01)  # bounded poll of the apply thread
            tg.cancel_scope.cancel()
    data = (tmp_path / "big").read_bytes()
    assert data == b"".join(bytes([i]) * chunk for i in range(count))


@pytest.mark.parametrize("hello", [b"garbage after the length prefix", b"FOxx" + bytes(60)])
async def test_a_stranger_refused_at_the_handshake_is_named(hello: bytes) -> None:
    """What a refused connection sent and who it was (the node logs the reason):
    the violation alone does not say where it came from."""
    _, secondary = identities()
    with Applier({}) as applier:
        receiver = ReplicationReceiver(secondary, RecordingSink(applier), timeout=WAIT_TIMEOUT)
        async with stream_pair() as (a, b):
            await a.send(hello)
            with anyio.fail_after(WAIT_TIMEOUT), pytest.raises(PeerProtocolError) as caught:
                await receiver.handshake(b)
    assert "<- ('127.0.0.1', " in str(caught.value)
    assert "message 0" in str(caught.value)  # and what was wrong


async def test_a_primary_that_probes_and_never_reads_cannot_fill_the_secondary_memory(
    tmp_path: Path,
) -> None:
    # Each PROBE is answered at once; a primary that never reads the answers must meet
    # backpressure (the secondary stops reading), not a queue of answers without end.
    # The queue is sampled after each probe sent, for at most FLOOD_S seconds (a bound
    # of the test's length, not the property).
    count = 100_000
    _, secondary = identities()
    most: list[int] = [0]
    with Applier({ROOT: tmp_path}) as applier:
        receiver = ReplicationReceiver(secondary, RecordingSink(applier), timeout=WAIT_TIMEOUT)
        sent = anyio.Event()
        async with stream_pair() as (a, b), anyio.create_task_group() as tg:
            assert isinstance(a, TcpMessageStream) and isinstance(b, TcpMessageStream)
            a._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            b._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            cipher = await running_receiver(tg, receiver, a, b)

            async def flood() -> None:
                for number in range(1, count + 1):
                    await a.send(cipher.sealer.seal(Kind.PROBE, [encode_probe(number)]))
                    queued = sum(memoryview(part).nbytes for part in b._backlog)
                    most[0] = max(most[0], queued)
                sent.set()

            tg.start_soon(flood)
            with anyio.move_on_after(FLOOD_S):
                await sent.wait()
            tg.cancel_scope.cancel()
    assert most[0] <= 1024, f"{most[0]} bytes of answers queued for a primary not reading"
