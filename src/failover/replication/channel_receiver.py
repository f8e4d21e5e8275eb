"""The secondary's end of a replication session: ``ReplicationReceiver``, an adapter.

The session's logic (checking, decoding, what to acknowledge when) is the
sans-IO ``ReceiverProtocol`` (``replication/protocol.py``); this module moves
its bytes and applies what it delivers. One lock guards the protocol.

- The receive task (event loop) feeds each message to the protocol: a
  ``PROBE`` is answered at once, ahead of any queued apply; the entries of an
  ``ITEMS`` message (all of it valid, or none of it delivered) go to the apply
  thread, or, when they are only small writes (and ``Fsync`` ops: their fsync
  still goes to the thread) and the thread has nothing queued, the receive
  task applies them itself (``inline_bytes``): no thread hop, and the order
  kept. It sends the protocol's ack once no further whole message waits in
  the stream's buffer: one ack for a write and the fsync read with it.
- The apply thread (one per session, not one hop per op) applies the entries
  in order (file I/O never blocks the event loop) and tells the protocol;
  the protocol's acks (received / written / fsynced, see there) are coalesced:
  one ``ACK`` when the thread has nothing more to apply, and one before each
  ``Fsync`` op's fsync (a written ack does not wait for the disk). On a stream
  that takes sends from any thread (``send_nowait``), the apply thread sends
  the ack itself: no hop to the event loop; elsewhere the loop's send task
  does.
- Memory is bounded whatever the primary sends: once ``BACKLOG_BYTES`` are
  received but not yet applied, the receive task reads no more until the apply
  thread catches up (TCP backpressure: the primary's sends wait, and its own
  timeout ends the session if the apply stays stuck). A primary that keeps its
  window (16 MiB by default) never gets near it. Nor is more read while the
  socket holds answers the primary has not read (a primary that probes and
  never reads would otherwise queue them without end).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel

from failover.codec import buffer_size
from failover.errors import FailoverError, PeerProtocolError, TransportError
from failover.replication.apply import Applier, ApplyError
from failover.replication.channel_io import VectoredStream, Wakeup
from failover.replication.channel_session import (
    PeerInfo,
    SessionIdentity,
    greet_as_secondary,
)
from failover.replication.channel_wire import Ack, AckLevel, ItemKind
from failover.replication.ops import Fsync, Op, Write
from failover.replication.protocol import Broken, Deliver, ReceiverProtocol
from failover.transport import MessageStream

_Entries = list[tuple[int, ItemKind, Op | bytes]]
_Batch = tuple[_Entries, int, int | None]
"""The entries of one message, its size, and None, or the index of an ``Fsync``
entry the receive task applied (written) and left to the apply thread: it
fsyncs that one, then applies the entries after it."""
INLINE_BYTES = 64 * 1024
"""The default ``inline_bytes`` of an ``Applier`` sink: a pwrite of at most this
many bytes to a local file system, cheap enough for the receive task."""
ACK_EVERY = 8
"""Messages applied at most before an ack goes out although more are waiting."""
BACKLOG_BYTES = 64 * 1024 * 1024
"""Most bytes received but not yet applied before the receive task stops reading
(the limit of one message more): four default windows of the primary."""


class OpSink(Protocol):
    """Where received ops go: ``failover.replication.apply.Applier`` fits."""

    def apply(self, op: Op) -> None: ...

    def fsync(self, root: str, path: bytes, datasync: bool) -> None: ...


ItemHandler = Callable[[ItemKind, bytes], bytes | None]
"""Takes resync chunks and control records, in stream order, in the apply thread.
What it returns for a ``CONTROL`` record (not None) goes back to the primary as a
``REPLY`` to that entry, once it is applied."""


@dataclass(frozen=True, slots=True)
class ReceiverStatus:
    """Counters of one receiving session (a snapshot)."""

    acked: Ack
    entries_applied: int
    bytes_received: int
    backlog_bytes: int = 0
    """Bytes received but not yet applied."""


class ReplicationReceiver:
    """Applies a primary's changes, in order, and acknowledges them.

    Use: ``peer = await receiver.handshake(stream)`` then ``await receiver.run()``.
    ``sink`` applies ops (an ``Applier`` on the backing directories);
    ``on_item`` takes resync chunks and control records (without it, such an
    entry is a protocol error). ``inline_bytes``: a message of only ``Write``
    ops of at most that many bytes in all (and ``Fsync`` ops) is applied by the
    receive task itself when the apply thread has nothing to do, without a
    thread hop (an ``Fsync``'s fsync still goes to the thread), unless the
    primary asked for acks at the received level (they wait for no apply). It
    is for a sink whose apply of such a write never blocks for long; by default
    ``INLINE_BYTES`` for an ``Applier`` (a pwrite to a local file system), else
    0: every entry goes to the thread (a sink of unknown cost, a test's sink
    held at a gate, keeps the event loop free; the resync target passes
    ``INLINE_BYTES``: its bookkeeping around the ``Applier`` is a few lookups).
    """

    def __init__(
        self,
        identity: SessionIdentity,
        sink: OpSink,
        *,
        on_item: ItemHandler | None = None,
        timeout: float = 5.0,
        inline_bytes: int | None = None,
    ) -> None:
        self._identity = identity
        if inline_bytes is None:
            inline_bytes = INLINE_BYTES if isinstance(sink, Applier) else 0
        self._inline_bytes = inline_bytes
        self._sink = sink
        self._on_item = on_item
        self._timeout = timeout
        self._lock = threading.Lock()
        self._stream: MessageStream | None = None
        self._protocol: ReceiverProtocol | None = None
        self._direct: VectoredStream | None = None
        self._wakeup = Wakeup()
        self._drained = Wakeup()  # the apply thread made room in the backlog
        self._backlog = 0  # bytes received, not yet applied (under the lock)
        self._queued = 0  # batches given to the apply thread, not yet done (under the lock)
        self._flushed = anyio.Event()  # the send task flushed the stream (event loop only)
        self._abandon = False  # run() was cancelled: the apply thread stops at once
        self._applied = 0

    @property
    def status(self) -> ReceiverStatus:
        """A snapshot of the counters."""
        protocol = self._protocol
        if protocol is None:
            return ReceiverStatus(Ack(0, 0, 0), self._applied, 0)
        return ReceiverStatus(protocol.ack, self._applied, protocol.bytes_received, self._backlog)

    async def handshake(
        self, stream: MessageStream, request: bytes | Callable[[], bytes] = b""
    ) -> PeerInfo:
        """Wait for the primary's ``HELLO`` (at most ``timeout``) and answer it,
        with ``request`` (what this node asks of the primary: a resync request;
        a callable is called once the ``HELLO`` verified).

        Raises ``PeerProtocolError`` (naming the connection when the stream has a
        ``description``) or ``TransportError`` (the stream is then closed).
        """
        try:
            peer, cipher = await greet_as_secondary(stream, self._identity, self._timeout, request)
        except FailoverError as exc:
            await stream.aclose()
            where = getattr(stream, "description", None)
            if isinstance(exc, PeerProtocolError) and isinstance(where, str):
                # who sent it: the violation alone does not say (a TransportError does)
                raise PeerProtocolError(f"{where}: {exc}") from exc
            raise
        self._protocol = ReceiverProtocol(
            cipher, peer.ack_level, takes_records=self._on_item is not None
        )
        self._stream = stream
        if isinstance(stream, VectoredStream):
            self._direct = stream
        if peer.ack_level is AckLevel.RECEIVED:  # its acks wait for no apply: nothing to gain
            self._inline_bytes = 0
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
        if self._stream is None or self._protocol is None:
            raise RuntimeError("ReplicationReceiver.run() before a successful handshake()")
        stream = self._stream
        batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        failure: list[Exception] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._apply_task, batches, failure, tg.cancel_scope)
                tg.start_soon(self._send_loop, stream)
                # here, not in a child task: its ``finally`` always ends the apply thread
                await self._receive_loop(stream, batches, failure)
        finally:
            ended = self._protocol.broken
            self._close("replication session closed locally")
            await stream.aclose()
            self._wakeup.close()
            self._drained.close()
        if not failure:  # a send failed first: the connection is gone all the same
            failure.append(TransportError(ended or "replication session ended"))
        raise failure[0]

    async def _apply_task(
        self,
        batches: queue.SimpleQueue[_Batch | None],
        failure: list[Exception],
        scope: anyio.CancelScope,
    ) -> None:
        """Run the apply thread to its end, then end the session's other tasks."""
        try:
            await anyio.to_thread.run_sync(self._apply_thread, batches)
        except PeerProtocolError as exc:  # ApplyError and PathRejected included
            failure.insert(0, exc)
        scope.cancel()

    def _close(self, reason: str) -> None:
        """Send nothing more on this session."""
        with self._lock:
            assert self._protocol is not None
            self._protocol.close(reason)
            self._protocol.events()
            self._direct = None

    async def _receive_loop(
        self,
        stream: MessageStream,
        batches: queue.SimpleQueue[_Batch | None],
        failure: list[Exception],
    ) -> None:
        protocol = self._protocol
        assert protocol is not None
        receive = stream.receive_view if isinstance(stream, VectoredStream) else stream.receive
        try:
            while protocol.broken is None:
                await anyio.lowlevel.checkpoint_if_cancelled()  # ended meanwhile: read no more
                message = await receive()
                inline: _Entries | None = None
                with self._lock:
                    protocol.receive(message, time.monotonic())
                    for event in protocol.events():
                        if isinstance(event, Deliver):
                            if not self._queued and self._cheap(event.entries):
                                inline = event.entries  # the thread is idle: order kept
                            else:
                                self._queue_locked(batches, (event.entries, len(message), None))
                        elif isinstance(event, Broken) and event.failure is not None:
                            failure.append(event.failure)
                rest: _Batch | None = None
                if inline is not None:
                    try:
                        rest = self._apply_inline(inline, len(message))
                    except PeerProtocolError as exc:  # ApplyError and PathRejected included
                        failure.insert(0, exc)
                        self._close(f"replication apply failed: {exc}")
                        break
                direct = self._direct
                with self._lock:
                    if direct is None or not direct.buffered:  # else one ack for both
                        self._output_locked()  # a probe answer; an ack
                    if rest is not None:  # after the ack: the thread's wake-up does not delay it
                        self._queue_locked(batches, rest)
                    full = self._backlog > BACKLOG_BYTES
                while full:  # read no more until the apply thread catches up
                    await self._drained.wait()
                    with self._lock:
                        full = self._backlog > BACKLOG_BYTES and protocol.broken is None
                while (direct := self._direct) is not None and direct.backlogged:
                    # read no more until the primary reads our answers (the send task
                    # flushes them)
                    flushed = self._flushed = anyio.Event()
                    self._wakeup.set()
                    await flushed.wait()
            await stream.aclose()  # a violation: the primary sees the end at once
        except TransportError as exc:
            failure.append(exc)
            self._close(f"replication connection lost: {exc}")
        except BaseException:
            self._abandon = True
            raise
        finally:
            batches.put(None)  # the apply thread ends after what came before

    def _queue_locked(self, batches: queue.SimpleQueue[_Batch | None], batch: _Batch) -> None:
        """Under the lock: give ``batch`` to the apply thread."""
        batches.put(batch)
        self._queued += 1
        self._backlog += batch[1]

    def _cheap(self, entries: _Entries) -> bool:
        """Whether the receive task may apply ``entries`` itself: ops only, every
        one a ``Write`` or an ``Fsync``, at most ``inline_bytes`` written in all."""
        budget = self._inline_bytes
        for _, kind, item in entries:
            if kind is not ItemKind.OP:
                return False
            if isinstance(item, Write):
                budget -= buffer_size(item.data)
            elif not isinstance(item, Fsync):
                return False
        return self._inline_bytes > 0 and budget >= 0

    def _apply_inline(self, entries: _Entries, size: int) -> _Batch | None:
        """In the receive task, the apply thread idle: apply ``entries`` up to the
        first ``Fsync`` entry (that one included: written); what is left for the
        thread (that fsync and the entries after it), to queue before anything
        received later."""
        protocol = self._protocol
        assert protocol is not None
        for index, (seq, _, _) in enumerate(entries):
            with self._lock:
                fsync = protocol.needs_fsync(seq)
            if fsync:
                self._apply(entries, 0, index, seq)
                return entries, size, index
        self._apply(entries, 0, len(entries), entries[-1][0])
        return None

    async def _send_loop(self, stream: MessageStream) -> None:
        """Send what the apply thread could not: a full socket's rest, or every
        message on a stream that only the loop may use."""
        protocol = self._protocol
        assert protocol is not None
        try:
            while True:
                await self._wakeup.wait()
                with self._lock:
                    direct = self._direct
                    messages = [] if direct is not None else protocol.data_to_send(time.monotonic())
                if direct is not None:
                    await direct.flush()
                    self._flushed.set()
                for message in messages:
                    await stream.send(b"".join(message))
        except TransportError as exc:
            self._close(f"replication connection lost: {exc}")
        finally:
            self._flushed.set()  # the receive task waits for nothing more from here

    def _output_locked(self) -> None:
        """Under the lock: send the protocol's messages from this context, or wake
        the send task."""
        protocol = self._protocol
        assert protocol is not None
        if self._direct is None:
            if protocol.wants_to_send:
                self._wakeup.set()
            return
        for message in protocol.data_to_send(time.monotonic()):
            try:
                if not self._direct.send_nowait(message):
                    self._wakeup.set()
            except TransportError as exc:  # the receive task reports why the session ended
                protocol.close(f"replication connection lost: {exc}")
                self._direct = None
                return

    def _output(self) -> None:
        with self._lock:
            self._output_locked()

    def _apply_thread(self, batches: queue.SimpleQueue[_Batch | None]) -> None:
        """The apply thread: every delivered entry, in order, until the end."""
        protocol = self._protocol
        assert protocol is not None
        unacked = 0
        while (batch := batches.get()) is not None and not self._abandon:
            entries, size, resume = batch
            start = 0
            if resume is not None:  # the receive task applied everything up to here
                self._fsync(entries[resume])
                start = resume + 1
            with self._lock:
                fsyncs = {seq for seq, _, _ in entries[start:] if protocol.needs_fsync(seq)}
            for index in range(start, len(entries)):
                seq = entries[index][0]
                if seq in fsyncs:
                    self._apply(entries, start, index, seq)  # written: the ack goes now
                    self._output()
                    self._fsync(entries[index])
                    start = index + 1
            if start < len(entries):
                self._apply(entries, start, len(entries), entries[-1][0])
            with self._lock:
                self._queued -= 1
                was_full = self._backlog > BACKLOG_BYTES
                self._backlog -= size
                if was_full and self._backlog <= BACKLOG_BYTES:
                    self._drained.set()
            unacked += 1
            if batches.empty() or unacked >= ACK_EVERY:
                self._output()
                unacked = 0

    def _fsync(self, entry: tuple[int, ItemKind, Op | bytes]) -> None:
        """Fsync the file of the ``Fsync`` entry (written already), and tell the protocol."""
        seq, _, item = entry
        assert isinstance(item, Fsync)
        self._sink.fsync(item.root, item.path, item.datasync)
        protocol = self._protocol
        assert protocol is not None
        with self._lock:
            protocol.fsynced_upto(seq)

    def _apply(self, entries: _Entries, start: int, stop: int, upto: int) -> None:
        """Apply entries ``start`` up to (not including) ``stop``, then tell the
        protocol everything up to ``upto`` is applied. A system error of this
        node's own directory ends the session as an ``ApplyError`` naming the
        entry (never an unexpected exception)."""
        sink = self._sink
        replies: list[tuple[int, bytes]] = []
        for seq, kind, item in entries[start:stop]:
            try:
                if isinstance(item, bytes):
                    assert self._on_item is not None
                    answer = self._on_item(kind, item)
                    if answer is not None and kind is ItemKind.CONTROL:
                        replies.append((seq, answer))
                else:
                    sink.apply(item)
            except OSError as exc:
                what = kind.name if isinstance(item, bytes) else repr(item)[:200]
                raise ApplyError(f"entry {seq} ({what}): {exc}", exc.errno or 0) from exc
        self._applied += stop - start
        protocol = self._protocol
        assert protocol is not None
        with self._lock:
            protocol.applied(upto)
            for seq, answer in replies:
                protocol.reply(seq, answer)
