"""The primary's end of a replication session: ``ReplicationSender``, an adapter.

The session's logic (sequencing, the window, acks, timeouts, probes) is the
sans-IO ``SenderProtocol`` (``replication/protocol.py``); this module only
moves its bytes and wakes whoever waits. Two worlds meet here: FUSE worker
threads call ``after``/``sync`` (the ``MirrorListener`` contract); the session's
reading runs on the anyio event loop. One lock guards the protocol.

- Hot path: a FUSE thread queues its op in the protocol and, on a stream that
  takes vectored sends from any thread (``send_nowait``: the TCP transport
  without TLS), sends the resulting message itself, under the lock that keeps
  messages in order: no hop to the event loop, no join, no copy of the data.
  What the socket does not take at once stays queued in the stream, and the
  loop's send task flushes it. Other streams (TLS, test doubles): the loop's
  send task takes the messages and sends them, woken through an eventfd.
- Acknowledgements: the loop's receive task feeds each message to the protocol
  and wakes the threads waiting in ``sync`` (a ``threading.Condition``).
- Timers: the send task sleeps until the protocol's ``next_deadline()`` and
  calls ``handle_timer`` (a probe to send, a session to break); a thread waiting
  in ``sync`` also runs the timers when its own deadline comes.
- Breaking: the protocol breaks the session once (see there); a dropped
  connection breaks it too. From then on ``after``/``sync`` return at once
  (``sync`` says the peer did not acknowledge; the data plane holds it while
  the peer may take over, see ``FenceWrites``; change tracking covers what was
  not acknowledged), and ``run`` calls ``on_broken(reason)`` from the event
  loop and returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from failover.errors import PeerProtocolError, TransportError, UsageError
from failover.replication.channel_io import VectoredStream, Wakeup
from failover.replication.channel_session import (
    QUIET_INTERVALS,
    ChannelSettings,
    PeerInfo,
    SessionIdentity,
    greet_as_primary,
    log,
)
from failover.replication.channel_wire import Ack, Buffer, ItemKind
from failover.replication.ops import Fsync, Op, encode_parts
from failover.replication.protocol import (
    Acknowledged,
    Answered,
    Broken,
    Message,
    SenderProtocol,
)
from failover.transport import MessageStream


@dataclass(frozen=True, slots=True)
class SenderStatus:
    """Counters of one sending session (a snapshot)."""

    ops_sent: int
    """Entries sent (ops, resync chunks and control records)."""
    bytes_sent: int
    """Message bytes handed to the transport."""
    acked: Ack
    """Cumulative sequence numbers the peer acknowledged, at each level."""
    queued_bytes: int
    """Queued, not yet sent."""
    in_flight_bytes: int
    """Sent, not yet applied by the peer."""
    last_ack_latency: float | None
    """Seconds from sending a message to its acknowledgement at the configured level."""
    broken: str | None
    """Why the session ended, or None while it runs."""
    probes_sent: int = 0
    """Probes of the idle channel sent so far."""
    last_probe_rtt: float | None = None
    """Seconds from the last answered probe to its answer."""
    last_heard_ago: float | None = None
    """Seconds since the last message from the peer (None before the handshake)."""
    quiet: str | None = None
    """Why the channel is not known to carry (probed, and nothing came back for
    ``QUIET_INTERVALS`` probe intervals), or None. The session goes on until the
    timeout; a cut shows here first."""


class ReplicationSender:
    """Streams a primary's changes to its secondary over one ``MessageStream``.

    Use: ``peer = await sender.handshake(stream)`` then ``await sender.run()``
    (in the event loop), while FUSE threads call ``after``/``sync``. Ops queued
    before the handshake are sent once it succeeds. One sender serves one
    session; after a break, make a new one.

    ``on_broken(reason)`` is called once, from ``run``, in the event loop, when
    the session breaks (not when it is closed locally by cancelling ``run``).
    """

    def __init__(
        self,
        identity: SessionIdentity,
        settings: ChannelSettings | None = None,
        on_broken: Callable[[str], None] | None = None,
        on_ack_latency: Callable[[float], None] | None = None,
    ) -> None:
        self._identity = identity
        self._settings = settings or ChannelSettings()
        self._on_broken = on_broken
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # guarded by _lock
        self._protocol = SenderProtocol(None, self._settings, time.monotonic(), peer=identity.peer)
        self._protocol.on_latency = on_ack_latency
        self._waiting: set[int] = set()  # control entries someone waits to see answered
        self._answers: dict[int, bytes] = {}
        self._direct: VectoredStream | None = None
        self._wakeup = Wakeup()
        self._break_wakeup = Wakeup()
        self._wakeups_open = True
        # loop side only
        self._stream: MessageStream | None = None
        self._peer: PeerInfo | None = None
        self.failure: Exception | None = None
        """The PeerProtocolError or TransportError that broke the session, if any."""

    # -- the MirrorListener side (any thread) --------------------------------

    def before(self, op: Op) -> None:
        """Nothing to do before a local change: the channel acts after it."""

    def after(self, op: Op) -> None:
        """Queue ``op`` for the peer; returns at once unless the queue is full
        (then waits at most the timeout, and breaks the session if still full)."""
        self._enqueue(ItemKind.OP, encode_parts(op))

    def sync(self, op: Fsync) -> bool:
        """Queue ``op`` and wait until the peer acknowledged everything up to it
        at the configured level, at most the timeout (then the session breaks).
        True if the peer acknowledged it; False (at once when the session is
        already broken) if not: the caller decides whether the write may be
        acknowledged to the application without the peer."""
        seq = self.queue(op)
        return bool(seq) and self.wait_acked(seq)

    def queue(self, op: Op) -> int:
        """Queue ``op`` like ``after``; its sequence number (0 if the session is
        broken), for ``wait_acked``: ``sync`` in two halves, so that the caller
        can work (its local fsync) while the peer does."""
        return self._enqueue(ItemKind.OP, encode_parts(op))

    def send_resync(self, chunk: bytes) -> int:
        """Queue an opaque resync chunk in the same order as live ops; its
        sequence number (0 if the session is broken)."""
        return self._enqueue(ItemKind.RESYNC, (chunk,))

    def send_control(self, record: bytes) -> int:
        """Queue an opaque control record in the same order as live ops; its
        sequence number (0 if the session is broken)."""
        return self._enqueue(ItemKind.CONTROL, (record,))

    def request(self, record: bytes, timeout: float) -> bytes | None:
        """Send a control ``record`` in the stream's order and wait, at most
        ``timeout`` seconds, for the secondary's answer to it (its handler runs
        when every entry before it is applied). None if the session broke or no
        answer came in time (the session goes on)."""
        return self.answer(self.ask(record), timeout)

    def ask(self, record: bytes) -> int:
        """Queue a control ``record`` that expects an answer; its sequence number
        (0 if the session is broken). Collect the answer with ``answer``."""
        return self._enqueue(ItemKind.CONTROL, (record,), ask=True)

    def answer(self, seq: int, timeout: float) -> bytes | None:
        """The answer to the control entry ``seq`` (from ``ask``), waiting at most
        ``timeout`` seconds; None if it did not come or the session broke."""
        if not seq:
            return None
        deadline = time.monotonic() + timeout
        with self._lock:
            while seq not in self._answers and self._protocol.broken is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            self._waiting.discard(seq)
            return self._answers.pop(seq, None)

    def wait_acked(self, seq: int) -> bool:
        """Wait until entry ``seq`` is acknowledged at the configured level, at
        most the timeout (then the session breaks). True if acknowledged."""
        protocol = self._protocol
        with self._lock:
            protocol.expect_ack(seq, time.monotonic())
            self._wait_locked(lambda: protocol.upto >= seq)
            return protocol.upto >= seq

    def flush(self) -> bool:
        """Wait until every entry queued so far is acknowledged at the configured
        level, at most the timeout (then the session breaks). True if it is."""
        with self._lock:
            last = self._protocol.next_seq - 1
        return self.wait_acked(last)

    def _enqueue(self, kind: ItemKind, payload: Sequence[Buffer], *, ask: bool = False) -> int:
        """Queue one entry and send what can leave now; its sequence number (0 if
        the session is broken). ``ask``: an answer to it is expected (``request``)."""
        protocol = self._protocol
        size = protocol.entry_size(payload)
        with self._lock:
            if not protocol.has_room(size):
                token = protocol.expect_room(time.monotonic())
                self._wait_locked(lambda: protocol.has_room(size))
                protocol.room_found(token)
            seq = protocol.send_entry(kind, payload, ask=ask)
            if seq and ask:
                self._waiting.add(seq)
            self._output_locked()
        return seq

    def _wait_locked(self, done: Callable[[], bool]) -> None:
        """Under the lock: wait until ``done()`` or a break, running the
        protocol's timers when they are due (a timeout breaks the session)."""
        protocol = self._protocol
        while protocol.broken is None and not done():
            now = time.monotonic()
            deadline = protocol.next_deadline()
            if deadline is not None and deadline <= now:
                protocol.handle_timer(now)
                self._output_locked()
                continue
            self._changed.wait(None if deadline is None else deadline - now)

    def _output_locked(self, *, loop: bool = False) -> None:
        """Under the lock: take the protocol's events, and its messages when this
        context may send them (a ``VectoredStream`` that is not backlogged: else
        what is queued waits, to leave packed together once the loop flushed,
        ``loop`` being that moment); else wake the send task."""
        protocol = self._protocol
        if self._direct is not None and self._direct.backlogged and not loop:
            self._wake()
        elif self._direct is not None:
            stream = self._direct
            for message in protocol.data_to_send(time.monotonic()):
                try:
                    if not stream.send_nowait(message):
                        self._wake()  # the rest waits in the stream: the loop flushes it
                except TransportError as exc:
                    self._fail_locked(exc)
                    break
        elif protocol.wants_to_send:
            self._wake()
        self._events_locked()

    def _events_locked(self) -> None:
        notify = False
        for event in self._protocol.events():
            notify = notify or isinstance(event, Acknowledged | Answered | Broken)
            if isinstance(event, Answered) and event.seq in self._waiting:
                self._answers[event.seq] = event.answer
            elif isinstance(event, Broken):
                if self.failure is None:
                    self.failure = event.failure
                self._direct = None
                self._wake(self._break_wakeup)
        if notify:  # a probe answer changes status only
            self._changed.notify_all()

    def _wake(self, wakeup: Wakeup | None = None) -> None:
        if self._wakeups_open:
            (wakeup or self._wakeup).set()

    def _fail_locked(self, exc: TransportError) -> None:
        if self._protocol.broken is None:
            self.failure = exc
        self._protocol.close(f"replication connection lost: {exc}")
        self._events_locked()

    def _fail(self, exc: TransportError) -> None:
        with self._lock:
            self._fail_locked(exc)

    # -- status ----------------------------------------------------------------

    @property
    def broken(self) -> str | None:
        """Why the session broke, or None."""
        return self._protocol.broken

    @property
    def peer(self) -> PeerInfo | None:
        """The peer, once the handshake succeeded."""
        return self._peer

    def status(self) -> SenderStatus:
        """A snapshot of the counters (from the event loop)."""
        with self._lock:
            protocol = self._protocol
            silent = time.monotonic() - protocol.last_heard if protocol.started else None
            return SenderStatus(
                ops_sent=protocol.entries_sent,
                bytes_sent=protocol.bytes_sent,
                acked=protocol.acked,
                queued_bytes=protocol.queued_bytes,
                in_flight_bytes=protocol.in_flight,
                last_ack_latency=protocol.last_latency,
                broken=protocol.broken,
                probes_sent=protocol.probes_sent,
                last_probe_rtt=protocol.last_probe_rtt,
                last_heard_ago=None if silent is None else round(silent, 3),
                quiet=self._quiet(silent),
            )

    def _quiet(self, silent: float | None) -> str | None:
        interval = self._settings.probe_interval
        if interval is None or silent is None or self._protocol.broken is not None:
            return None
        if silent <= QUIET_INTERVALS * interval:
            return None
        return f"no answer from {self._identity.peer} for {silent:.1f} s"

    # -- the event-loop side ---------------------------------------------------

    async def handshake(self, stream: MessageStream) -> PeerInfo:
        """Open the session on ``stream`` (a ``MessageStream``): ``HELLO``/``WELCOME``.

        Returns the peer's identity and generation. On failure the session is
        broken and the error (``PeerProtocolError``, ``TransportError``) raised.
        """
        try:
            peer, cipher = await greet_as_primary(
                stream, self._identity, self._settings.ack_level, self._settings.timeout
            )
        except (PeerProtocolError, TransportError) as exc:
            with self._lock:
                self.failure = exc
                self._protocol.close(f"replication handshake failed: {exc}")
                self._events_locked()
            await stream.aclose()
            raise
        self._peer = peer
        self._stream = stream
        with self._lock:
            self._protocol.start(cipher, time.monotonic())
            if isinstance(stream, VectoredStream):
                self._direct = stream
            self._output_locked()
        return peer

    async def run(self) -> None:
        """Stream queued entries and read acknowledgements until the session breaks.

        Then closes the stream, calls ``on_broken(reason)`` once and returns.
        Cancelling ``run`` closes the session locally (``after``/``sync``
        return at once afterwards) without calling ``on_broken``.
        """
        if self._stream is None and self._protocol.broken is None:
            raise UsageError("ReplicationSender.run() before a successful handshake()")
        try:
            if self._stream is not None and self._protocol.broken is None:
                stream = self._stream
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._send_loop, stream)
                    tg.start_soon(self._receive_loop, stream)
                    await self._break_wakeup.wait()
                    tg.cancel_scope.cancel()
        finally:
            with self._lock:
                reason = self._protocol.broken
                self._protocol.close("replication session closed locally")
                self._events_locked()
                self._wakeups_open = False
            if self._stream is not None:
                with anyio.CancelScope(shield=True):
                    await self._stream.aclose()
            self._wakeup.close()
            self._break_wakeup.close()
        if reason is not None:
            log.warning("replication session to %s broken: %s", self._identity.peer, reason)
            if self._on_broken is not None:
                self._on_broken(reason)

    async def _send_loop(self, stream: MessageStream) -> None:
        """Run the timers; send what the threads could not (a full socket, or a
        stream that only the loop may use)."""
        protocol = self._protocol
        try:
            while True:
                with self._lock:
                    now = time.monotonic()
                    protocol.handle_timer(now)
                    direct = self._direct
                    if direct is not None:
                        self._output_locked(loop=True)
                        messages: list[Message] = []
                    else:
                        messages = protocol.data_to_send(now)
                        self._events_locked()
                    deadline = protocol.next_deadline()
                delay = None if deadline is None else max(0.0, deadline - time.monotonic())
                if direct is not None:
                    with anyio.move_on_after(delay):  # a full socket does not stop the timers
                        await direct.flush()
                for message in messages:
                    await stream.send(b"".join(message))
                if messages:
                    continue  # the window may have room for more
                if deadline is not None:
                    delay = max(0.0, deadline - time.monotonic())
                with anyio.move_on_after(delay):
                    await self._wakeup.wait()
        except TransportError as exc:
            self._fail(exc)

    async def _receive_loop(self, stream: MessageStream) -> None:
        protocol = self._protocol
        receive = stream.receive_view if isinstance(stream, VectoredStream) else stream.receive
        try:
            while True:
                message = await receive()
                with self._lock:
                    protocol.receive(message, time.monotonic())
                    self._output_locked()  # the window may have opened
        except TransportError as exc:
            self._fail(exc)
