"""The secondary's end of a replication session: ``ReplicationReceiver``.

Two tasks: the receive task answers each ``PROBE`` at once, and authenticates
and decodes each ``ITEMS`` message
whole (nothing of a message is applied unless all of it is valid) and hands
it on; the apply task applies the entries in order in a worker thread (file
I/O never blocks the event loop) and acknowledges cumulatively:

- received: as soon as a message is decoded (sent only at that ack level);
- written: after the entries are applied; an ``Fsync`` op counts as written
  once everything before it is applied, so a written ack does not wait for
  the disk;
- fsynced: after the fsync of each ``Fsync`` op (the file is made durable
  before any later entry is applied).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from failover.errors import FailoverError, PeerProtocolError, TransportError
from failover.replication.apply import ApplyError
from failover.replication.channel_session import (
    PeerInfo,
    SessionCipher,
    SessionIdentity,
    greet_as_secondary,
)
from failover.replication.channel_wire import (
    Ack,
    AckLevel,
    ItemKind,
    Kind,
    decode_items,
    decode_probe,
    encode_ack,
    encode_probe,
    encode_reply,
)
from failover.replication.ops import Fsync, Op, decode
from failover.transport import MessageStream


class OpSink(Protocol):
    """Where received ops go: ``failover.replication.apply.Applier`` fits."""

    def apply(self, op: Op) -> None: ...

    def fsync(self, root: str, path: bytes, datasync: bool) -> None: ...


ItemHandler = Callable[[ItemKind, bytes], bytes | None]
"""Takes resync chunks and control records, in stream order, in the apply thread.
What it returns for a ``CONTROL`` record (not None) goes back to the primary as a
``REPLY`` to that entry, once it is applied."""

# (seq, kind, op or opaque payload) for each entry of one message
_Decoded = list[tuple[int, ItemKind, Op | bytes]]


@dataclass(frozen=True, slots=True)
class ReceiverStatus:
    """Counters of one receiving session (a snapshot)."""

    acked: Ack
    entries_applied: int
    bytes_received: int


class ReplicationReceiver:
    """Applies a primary's changes, in order, and acknowledges them.

    Use: ``peer = await receiver.handshake(stream)`` then ``await receiver.run()``.
    ``sink`` applies ops (an ``Applier`` on the backing directories);
    ``on_item`` takes resync chunks and control records (without it, such an
    entry is a protocol error).
    """

    def __init__(
        self,
        identity: SessionIdentity,
        sink: OpSink,
        *,
        on_item: ItemHandler | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._identity = identity
        self._sink = sink
        self._on_item = on_item
        self._timeout = timeout
        self._session: tuple[MessageStream, SessionCipher] | None = None
        self._level = AckLevel.WRITTEN
        self._received = 0
        self._written = 0
        self._fsynced = 0
        self._applied = 0
        self._bytes = 0
        self._acking = True
        self._ack_lock = anyio.Lock()
        self._replies: deque[tuple[int, bytes]] = deque()

    @property
    def status(self) -> ReceiverStatus:
        """A snapshot of the counters."""
        return ReceiverStatus(self._ack(), self._applied, self._bytes)

    def _ack(self) -> Ack:
        return Ack(self._received, self._written, self._fsynced)

    async def handshake(
        self, stream: MessageStream, request: bytes | Callable[[], bytes] = b""
    ) -> PeerInfo:
        """Wait for the primary's ``HELLO`` (at most ``timeout``) and answer it,
        with ``request`` (what this node asks of the primary: a resync request;
        a callable is called once the ``HELLO`` verified).

        Raises ``PeerProtocolError`` or ``TransportError`` (the stream is then closed).
        """
        try:
            peer, cipher = await greet_as_secondary(stream, self._identity, self._timeout, request)
        except FailoverError:
            await stream.aclose()
            raise
        self._level = peer.ack_level
        self._session = (stream, cipher)
        return peer

    async def run(self) -> None:
        """Receive, apply and acknowledge until the session ends; the stream is then closed.

        Everything received intact before the end is applied. Raises
        ``TransportError`` when the stream ends (the primary closed it or the
        connection dropped), ``PeerProtocolError`` for a malformed, forged or
        replayed message (nothing of that message is applied) or a path that
        would leave a replicated directory, and ``ApplyError`` when applying
        fails on this node.
        """
        if self._session is None:
            raise RuntimeError("ReplicationReceiver.run() before a successful handshake()")
        stream, cipher = self._session
        send, receive = anyio.create_memory_object_stream[_Decoded](math.inf)
        failure: list[Exception] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._receive_loop, stream, cipher, send, failure)
                try:
                    await self._apply_loop(stream, cipher, receive)
                except PeerProtocolError as exc:  # ApplyError and PathRejected included
                    failure.insert(0, exc)
                    tg.cancel_scope.cancel()
        finally:
            await stream.aclose()
        raise failure[0]

    async def _receive_loop(
        self,
        stream: MessageStream,
        cipher: SessionCipher,
        send: MemoryObjectSendStream[_Decoded],
        failure: list[Exception],
    ) -> None:
        with send:
            try:
                while True:
                    message = await stream.receive()
                    kind, body = cipher.opener.open(message, Kind.ITEMS, Kind.PROBE)
                    if kind is Kind.PROBE:  # answered at once, ahead of any apply
                        number = decode_probe(kind, body)
                        await self._send(stream, cipher, Kind.PROBE_ANSWER, encode_probe(number))
                        continue
                    decoded = self._decode(body)
                    self._received = decoded[-1][0]
                    self._bytes += len(message)
                    try:
                        send.send_nowait(decoded)
                    except anyio.BrokenResourceError:
                        # The apply task ended (it failed: ``run`` raises its reason); a
                        # read that completed as the session was cancelled is dropped.
                        return
                    if self._level is AckLevel.RECEIVED:
                        await self._send_ack(stream, cipher)
            except (PeerProtocolError, TransportError) as exc:
                failure.append(exc)
                self._acking = False
                await stream.aclose()

    def _decode(self, body: memoryview) -> _Decoded:
        decoded: _Decoded = []
        for entry in decode_items(body, self._received + 1):
            if entry.kind is ItemKind.OP:
                decoded.append((entry.seq, entry.kind, decode(entry.payload)))
            elif self._on_item is None:
                raise PeerProtocolError(
                    f"ITEMS: entry {entry.seq} is a {entry.kind.name} record, "
                    "which this receiver does not take"
                )
            else:
                decoded.append((entry.seq, entry.kind, bytes(entry.payload)))
        return decoded

    async def _apply_loop(
        self,
        stream: MessageStream,
        cipher: SessionCipher,
        receive: MemoryObjectReceiveStream[_Decoded],
    ) -> None:
        with receive:
            async for decoded in receive:
                start = 0
                for index, (seq, _, item) in enumerate(decoded):
                    if isinstance(item, Fsync):
                        await anyio.to_thread.run_sync(self._apply, decoded, start, index)
                        self._written = seq
                        await self._send_ack(stream, cipher)
                        await anyio.to_thread.run_sync(
                            self._sink.fsync, item.root, item.path, item.datasync
                        )
                        self._fsynced = seq
                        start = index + 1
                if start < len(decoded):
                    await anyio.to_thread.run_sync(self._apply, decoded, start, len(decoded))
                    self._written = self._fsynced = decoded[-1][0]
                await self._send_ack(stream, cipher)
                while self._replies:
                    seq, answer = self._replies.popleft()
                    await self._send(stream, cipher, Kind.REPLY, encode_reply(seq, answer))

    def _apply(self, decoded: _Decoded, start: int, stop: int) -> None:
        """In a worker thread: apply entries ``start`` up to (not including) ``stop``.
        A system error of this node's own directory ends the session as an
        ``ApplyError`` naming the entry (never an unexpected exception)."""
        sink = self._sink
        for seq, kind, item in decoded[start:stop]:
            try:
                if isinstance(item, bytes):
                    assert self._on_item is not None
                    answer = self._on_item(kind, item)
                    if answer is not None and kind is ItemKind.CONTROL:
                        self._replies.append((seq, answer))
                else:
                    sink.apply(item)
            except OSError as exc:
                what = kind.name if isinstance(item, bytes) else repr(item)[:200]
                raise ApplyError(f"entry {seq} ({what}): {exc}", exc.errno or 0) from exc
        self._applied += stop - start

    async def _send_ack(self, stream: MessageStream, cipher: SessionCipher) -> None:
        await self._send(stream, cipher, Kind.ACK, encode_ack(self._ack()))

    async def _send(
        self, stream: MessageStream, cipher: SessionCipher, kind: Kind, body: bytes
    ) -> None:
        if not self._acking:
            return
        async with self._ack_lock:  # seal and send in one order: counters must not cross
            try:
                await stream.send(cipher.sealer.seal(kind, [body]))
            except TransportError:
                self._acking = False  # the receive task reports why the session ended
