"""The primary's end of a replication session: ``ReplicationSender``.

Two worlds meet here. FUSE worker threads call ``after``/``sync`` (the
``MirrorListener`` contract); the session itself runs on the anyio event loop.

- Hand-off: an op is encoded on the calling thread and appended to a deque
  under a lock; only when the deque goes from empty to non-empty does the
  thread write to an eventfd that the loop's send task waits on. While the
  loop is busy sending, later ops are appended without any wake-up.
- Sending: the send task takes everything queued at that moment (up to
  ``max_message_bytes``, and within the in-flight window), seals it into one
  ``ITEMS`` message and sends it at once. Nothing waits for more ops to come.
- Acknowledgements: the ack task reads ``ACK`` messages and publishes the
  cumulative sequence numbers under the same lock; ``sync`` waits on a
  ``threading.Condition`` for its op's sequence number at the configured level.
- Probing (with ``probe_interval``): a channel that sent nothing for half the
  interval sends a ``PROBE``; the peer answers at once. ``status().quiet``
  says when nothing came back for ``QUIET_INTERVALS`` intervals: a cut shows
  even when no data flows.
- Breaking: a ``sync`` not acknowledged within the timeout, a queue that stays
  full for the timeout, a peer that leaves sent data unacknowledged for the
  timeout, a probed peer that answers nothing for the timeout, a dropped
  connection or a protocol violation all break the session,
  once. From then on ``after``/``sync`` return at once (``sync`` says the
  peer did not acknowledge; the data plane holds it while the peer may take
  over, see ``FenceWrites``; change tracking covers what was not
  acknowledged), and ``run`` calls ``on_broken(reason)`` from the event loop
  and returns.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from failover.errors import PeerProtocolError, TransportError, UsageError
from failover.replication.channel_session import (
    QUIET_INTERVALS,
    ChannelSettings,
    PeerInfo,
    SessionCipher,
    SessionIdentity,
    greet_as_primary,
    log,
)
from failover.replication.channel_wire import (
    ENTRY_OVERHEAD,
    MAX_ENTRY,
    Ack,
    Buffer,
    ItemKind,
    Kind,
    buffer_size,
    decode_ack,
    decode_probe,
    decode_reply,
    encode_probe,
    items_parts,
)
from failover.replication.ops import Fsync, Op, encode_parts
from failover.transport import MessageStream

_WINDOW_FULL = "window full"


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


class _Wakeup:
    """A cheap cross-thread wake-up for one waiting task: an eventfd."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        os.eventfd_write(self.fd, 1)

    async def wait(self) -> None:
        await anyio.wait_readable(self.fd)
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)

    def close(self) -> None:
        os.close(self.fd)


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
    ) -> None:
        self._identity = identity
        self._settings = settings or ChannelSettings()
        self._on_broken = on_broken
        self._level = self._settings.ack_level.rank
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # (kind, payload buffers, entry bytes); guarded by _lock
        self._queue: deque[tuple[ItemKind, Sequence[Buffer], int]] = deque()
        self._queued_bytes = 0
        self._next_seq = 1
        self._acked = Ack(0, 0, 0)
        self._acked_at_level = 0
        self._broken: str | None = None
        self._asked: set[int] = set()  # control entries waiting for an answer
        self._answers: dict[int, bytes] = {}
        self._queue_wakeup = _Wakeup()
        self._break_wakeup = _Wakeup()
        # loop side only
        self._session: tuple[MessageStream, SessionCipher] | None = None
        self._peer: PeerInfo | None = None
        self._sent_seq = 0
        self._in_flight = 0
        self._unapplied: deque[tuple[int, int]] = deque()  # (last seq, bytes)
        self._unacked: deque[tuple[int, float]] = deque()  # (last seq, sent at)
        self._window_open = anyio.Event()
        self._last_progress = time.monotonic()
        self._ops_sent = 0
        self._bytes_sent = 0
        self._last_latency: float | None = None
        self._last_sent = self._last_heard = time.monotonic()
        self._heard = False  # the handshake succeeded: _last_heard means something
        self._probes_sent = self._probes_answered = 0
        self._probe_sent_at = 0.0
        self._last_probe_rtt: float | None = None
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
            while seq not in self._answers and self._broken is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            self._asked.discard(seq)
            return self._answers.pop(seq, None)

    def wait_acked(self, seq: int) -> bool:
        """Wait until entry ``seq`` is acknowledged at the configured level, at
        most the timeout (then the session breaks). True if acknowledged."""
        with self._lock:
            self._wait_locked(
                lambda: self._acked_at_level >= seq,
                lambda: (
                    f"peer did not acknowledge entry {seq} within "
                    f"{self._settings.timeout} s ({self._settings.ack_level})"
                ),
            )
            return self._acked_at_level >= seq

    def flush(self) -> bool:
        """Wait until every entry queued so far is acknowledged at the configured
        level, at most the timeout (then the session breaks). True if it is."""
        with self._lock:
            last = self._next_seq - 1
        return self.wait_acked(last)

    def _enqueue(self, kind: ItemKind, payload: Sequence[Buffer], *, ask: bool = False) -> int:
        """Queue one entry; its sequence number (0 if the session is broken).
        ``ask``: an answer to it is expected (``request``)."""
        size = ENTRY_OVERHEAD + sum(buffer_size(part) for part in payload)
        if size > MAX_ENTRY:
            raise UsageError(f"replication entry of {size} bytes exceeds {MAX_ENTRY}")
        with self._lock:
            if self._broken is not None:
                return 0
            if self._queue and self._queued_bytes + size > self._settings.queue_bytes:
                limit = self._settings.queue_bytes - size
                self._wait_locked(
                    lambda: not self._queue or self._queued_bytes <= limit,
                    lambda: (
                        f"replication queue stayed full ({self._queued_bytes} bytes) "
                        f"for {self._settings.timeout} s"
                    ),
                )
                if self._broken is not None:
                    return 0
            seq = self._next_seq
            self._next_seq = seq + 1
            if ask:
                self._asked.add(seq)
            self._queue.append((kind, payload, size))
            self._queued_bytes += size
            first = len(self._queue) == 1
        if first:
            self._queue_wakeup.set()
        return seq

    def _wait_locked(self, done: Callable[[], bool], failure: Callable[[], str]) -> None:
        """Under the lock: wait until ``done()`` or a break, at most the timeout;
        at the timeout, break the session with reason ``failure()``."""
        deadline = None
        while self._broken is None and not done():
            if deadline is None:
                deadline = time.monotonic() + self._settings.timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._break_locked(failure())
                return
            self._changed.wait(remaining)

    def _break_locked(self, reason: str) -> None:
        if self._broken is not None:
            return
        self._broken = reason
        self._queue.clear()
        self._queued_bytes = 0
        self._changed.notify_all()
        self._break_wakeup.set()

    def _break(self, reason: str, failure: Exception | None = None) -> None:
        with self._lock:
            if self._broken is None and failure is not None:
                self.failure = failure
            self._break_locked(reason)

    # -- status ----------------------------------------------------------------

    @property
    def broken(self) -> str | None:
        """Why the session broke, or None."""
        return self._broken

    @property
    def peer(self) -> PeerInfo | None:
        """The peer, once the handshake succeeded."""
        return self._peer

    def status(self) -> SenderStatus:
        """A snapshot of the counters (from the event loop)."""
        silent = time.monotonic() - self._last_heard if self._heard else None
        with self._lock:
            return SenderStatus(
                ops_sent=self._ops_sent,
                bytes_sent=self._bytes_sent,
                acked=self._acked,
                queued_bytes=self._queued_bytes,
                in_flight_bytes=self._in_flight,
                last_ack_latency=self._last_latency,
                broken=self._broken,
                probes_sent=self._probes_sent,
                last_probe_rtt=self._last_probe_rtt,
                last_heard_ago=None if silent is None else round(silent, 3),
                quiet=self._quiet(silent),
            )

    def _quiet(self, silent: float | None) -> str | None:
        interval = self._settings.probe_interval
        if interval is None or silent is None or self._broken is not None:
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
            self._break(f"replication handshake failed: {exc}", exc)
            await stream.aclose()
            raise
        self._peer = peer
        self._session = (stream, cipher)
        self._last_sent = self._last_heard = time.monotonic()
        self._heard = True
        return peer

    async def run(self) -> None:
        """Stream queued entries and read acknowledgements until the session breaks.

        Then closes the stream, calls ``on_broken(reason)`` once and returns.
        Cancelling ``run`` closes the session locally (``after``/``sync``
        return at once afterwards) without calling ``on_broken``.
        """
        if self._session is None and self._broken is None:
            raise UsageError("ReplicationSender.run() before a successful handshake()")
        try:
            if self._session is not None and self._broken is None:
                stream, cipher = self._session
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._send_loop, stream, cipher)
                    tg.start_soon(self._ack_loop, stream, cipher)
                    await self._break_wakeup.wait()
                    tg.cancel_scope.cancel()
        finally:
            with self._lock:
                reason = self._broken
                self._break_locked("replication session closed locally")
            if self._session is not None:
                with anyio.CancelScope(shield=True):
                    await self._session[0].aclose()
            self._queue_wakeup.close()
            self._break_wakeup.close()
        if reason is not None:
            log.warning("replication session to %s broken: %s", self._identity.peer, reason)
            if self._on_broken is not None:
                self._on_broken(reason)

    def _take(self) -> tuple[int, list[tuple[ItemKind, Sequence[Buffer]]], int] | str | None:
        """(first seq, entries, bytes) to send now; None if nothing is queued,
        ``_WINDOW_FULL`` if the window has no room for the next entry."""
        limit = self._settings.max_message_bytes
        room = self._settings.window_bytes - self._in_flight
        with self._lock:
            if not self._queue:
                return None
            if self._in_flight and self._queue[0][2] > room:
                return _WINDOW_FULL
            limit = min(limit, max(room, self._queue[0][2]))
            taken: list[tuple[ItemKind, Sequence[Buffer]]] = []
            size = 0
            while self._queue and (not taken or size + self._queue[0][2] <= limit):
                kind, payload, entry_size = self._queue.popleft()
                taken.append((kind, payload))
                size += entry_size
            self._queued_bytes -= size
            first = self._sent_seq + 1
            self._sent_seq += len(taken)
            self._ops_sent += len(taken)
            self._changed.notify_all()
            return first, taken, size

    async def _send_loop(self, stream: MessageStream, cipher: SessionCipher) -> None:
        try:
            while True:
                batch = self._take()
                if batch is None:
                    await self._wait_or_probe(self._queue_wakeup.wait, stream, cipher)
                    continue
                if isinstance(batch, str):
                    self._window_open = anyio.Event()
                    await self._wait_or_probe(self._window_open.wait, stream, cipher)
                    continue
                first, taken, size = batch
                message = cipher.sealer.seal(Kind.ITEMS, items_parts(first, taken))
                last = first + len(taken) - 1
                now = time.monotonic()
                if not self._unapplied:
                    self._last_progress = now
                self._unapplied.append((last, size))
                self._unacked.append((last, now))
                self._in_flight += size
                await stream.send(message)
                self._last_sent = time.monotonic()
                self._bytes_sent += len(message)
        except TransportError as exc:
            self._break(f"replication connection lost: {exc}", exc)

    async def _wait_or_probe(
        self, wait: Callable[[], Awaitable[object]], stream: MessageStream, cipher: SessionCipher
    ) -> None:
        """``await wait()``; with probes on, at most until the channel has sent
        nothing for half the probe interval, and then send a ``PROBE``."""
        interval = self._settings.probe_interval
        if interval is None:
            await wait()
            return
        with anyio.move_on_after(self._last_sent + interval / 2 - time.monotonic()) as idle:
            await wait()
        if idle.cancelled_caught:
            self._probes_sent += 1
            message = cipher.sealer.seal(Kind.PROBE, [encode_probe(self._probes_sent)])
            self._probe_sent_at = self._last_sent = time.monotonic()
            await stream.send(message)

    async def _ack_loop(self, stream: MessageStream, cipher: SessionCipher) -> None:
        timeout = self._settings.timeout
        try:
            while True:
                message = None
                with anyio.move_on_after(timeout):
                    message = await stream.receive()
                if message is None:
                    self._silent(timeout)
                    continue
                kind, body = cipher.opener.open(message, Kind.ACK, Kind.REPLY, Kind.PROBE_ANSWER)
                self._last_heard = time.monotonic()
                if kind is Kind.REPLY:
                    self._answer(*decode_reply(body))
                elif kind is Kind.PROBE_ANSWER:
                    self._probe_answered(decode_probe(kind, body))
                else:
                    self._acknowledge(decode_ack(body))
                self._check_stall(timeout)  # it may answer probes and apply nothing
        except TransportError as exc:
            self._break(f"replication connection lost: {exc}", exc)
        except PeerProtocolError as exc:
            self._break(f"replication peer protocol error: {exc}", exc)

    def _silent(self, timeout: float) -> None:
        """Nothing came from the peer for ``timeout`` seconds."""
        if self._settings.probe_interval is not None:
            # probed all along: a healthy peer answers at least every half interval
            self._break(f"no answer from {self._identity.peer} for {timeout} s (probed)")
        else:
            self._check_stall(timeout)

    def _check_stall(self, timeout: float) -> None:
        if self._unapplied and time.monotonic() - self._last_progress >= timeout:
            self._break(f"peer acknowledged nothing for {timeout} s with data in flight")

    def _probe_answered(self, number: int) -> None:
        if not self._probes_answered < number <= self._probes_sent:
            raise PeerProtocolError(
                f"PROBE_ANSWER: number {number}, expected {self._probes_answered + 1} "
                f"to {self._probes_sent}"
            )
        self._probes_answered = number
        if number == self._probes_sent:
            self._last_probe_rtt = self._last_heard - self._probe_sent_at

    def _answer(self, seq: int, answer: bytes) -> None:
        with self._lock:
            if seq not in self._asked:
                raise PeerProtocolError(f"REPLY: answers entry {seq}, which asked nothing")
            self._answers[seq] = answer
            self._changed.notify_all()

    def _acknowledge(self, ack: Ack) -> None:
        old = self._acked
        if ack.received > self._sent_seq:
            raise PeerProtocolError(
                f"ACK: acknowledges entry {ack.received}, only {self._sent_seq} were sent"
            )
        if ack.received < old.received or ack.written < old.written or ack.fsynced < old.fsynced:
            raise PeerProtocolError(f"ACK: went backwards ({ack} after {old})")
        now = time.monotonic()
        if ack.written > old.written:
            self._last_progress = now
        while self._unapplied and self._unapplied[0][0] <= ack.written:
            self._in_flight -= self._unapplied.popleft()[1]
        at_level = ack.at(self._settings.ack_level)
        while self._unacked and self._unacked[0][0] <= at_level:
            self._last_latency = now - self._unacked.popleft()[1]
        with self._lock:
            self._acked = ack
            if at_level > self._acked_at_level:
                self._acked_at_level = at_level
                self._changed.notify_all()
        self._window_open.set()
