"""The replication protocol, sans-IO: one session's logic, for both ends.

The shape of ``failover.core`` and of aioquic's ``QuicConnection``: no
sockets, no threads, no clock of its own. The caller feeds it whole messages
(``receive(message, now)``) and the time (``handle_timer(now)`` at
``next_deadline()``), and takes out what to send (``data_to_send(now)``: the
messages, each as a list of buffers for one vectored send) and what happened
(``events()``). The adapters (``channel_sender``, ``channel_receiver``) only
move bytes between this and a ``MessageStream`` and call the application.

A session runs after the handshake (``channel_session``) gave both ends a
``SessionCipher``. The messages and their order are those of
``channel_wire``; this module decides what is sent when, and what a received
message means:

- **Sequencing** (``SenderProtocol``): every entry (an op, a resync chunk, a
  control record) gets the next sequence number at ``send``; queued entries
  leave packed into ``ITEMS`` messages of at most ``max_message_bytes``, with at
  most ``window_bytes`` sent but not yet applied by the peer.
- **Acknowledgement** (``ReceiverProtocol``): cumulative, at three levels.
  *received* once a message is decoded, *written* once the adapter reports
  the entries applied (an ``Fsync`` op counts as written once everything
  before it is applied), *fsynced* once every ``Fsync`` op up to it was
  fsynced. Nothing is acknowledged at a level before the adapter reported
  it: that is the property the model test (``tests/replication/
  test_protocol_model.py``) checks under loss, reordering, duplication and
  crashes. Acks are coalesced: one ``ACK`` per ``data_to_send`` call, with the
  latest numbers.
- **Breaking** (sender): an entry waited for (``expect_ack``) not
  acknowledged within the timeout, a queue that stays full for the timeout
  (``expect_room``), data in flight with no progress for the timeout, a probed
  peer silent for the timeout, or any protocol violation. Once broken, a
  protocol sends nothing and accepts nothing; ``Broken`` is its last event.
- **Idle probe** (sender, with ``probe_interval``): a channel with nothing to
  send that sent nothing for half the interval sends a ``PROBE``; the
  receiver answers ``PROBE_ANSWER`` ahead of any apply. Probes that arrive
  before the receiver's adapter took its output get one answer, to the
  latest (the sender takes it for all of them): the receiver's output stays
  bounded however fast the sender probes.
- **Requests** (control records that expect an answer): the receiver's
  adapter hands the answer to ``reply`` once the record is applied; it
  travels as a ``REPLY`` after the ack that covers the record.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from failover.codec import Buffer, DecodeError, buffer_size
from failover.errors import PeerProtocolError, UsageError
from failover.replication.channel_wire import (
    ENTRY_OVERHEAD,
    MAX_ENTRY,
    Ack,
    AckLevel,
    ItemKind,
    Kind,
    Opener,
    Sealer,
    decode_ack,
    decode_items,
    decode_probe,
    decode_reply,
    encode_ack,
    encode_probe,
    encode_reply,
    items_parts,
)
from failover.replication.ops import Fsync, Op, decode, encode_parts

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Tuning of the primary's side of a session (the secondary follows its ack level).

    - ``ack_level``: how far the peer must have taken an op before ``sync``
      returns (received, written, fsynced); default written.
    - ``timeout``: the replication timeout, in seconds: the longest the
      application is ever blocked by the channel, and the longest the peer may
      leave sent data unacknowledged before the session is declared broken.
    - ``window_bytes``: most bytes sent but not yet applied by the peer.
    - ``max_message_bytes``: most entry bytes packed into one message (an entry
      larger than this travels alone).
    - ``queue_bytes``: most bytes queued but not yet sent; beyond it ``after``
      waits (at most ``timeout``) for the channel to catch up.
    - ``probe_interval``: the heartbeat interval, in seconds; None: no probes.
      A channel that sent nothing for half of it is probed, so that a healthy
      one carries a message each way at least that often. Heard nothing for
      ``QUIET_INTERVALS`` of it: status says so (the channel is ``quiet``);
      heard nothing for ``timeout``: the session breaks.
    """

    ack_level: AckLevel = AckLevel.WRITTEN
    timeout: float = 5.0
    window_bytes: int = 16 * MiB
    max_message_bytes: int = 2 * MiB
    queue_bytes: int = 64 * MiB
    probe_interval: float | None = None

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise UsageError(f"replication timeout must be positive, not {self.timeout}")
        if self.probe_interval is not None and not 0 < self.probe_interval < self.timeout:
            raise UsageError(
                f"replication probe interval must be positive and below the timeout "
                f"({self.timeout}), not {self.probe_interval}"
            )
        for name in ("window_bytes", "max_message_bytes", "queue_bytes"):
            if getattr(self, name) < 64 * 1024:
                raise UsageError(f"replication {name} must be at least 65536")


@dataclass(frozen=True, slots=True)
class SessionCipher:
    """The sealer of outgoing and the opener of incoming messages of one session."""

    sealer: Sealer
    opener: Opener


Message = list[Buffer]
"""One sealed message as buffers, in order (the transport frames it)."""


# -- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The peer acknowledged more: ``ack`` (cumulative), ``upto`` at the session's level."""

    ack: Ack
    upto: int


@dataclass(frozen=True, slots=True)
class Answered:
    """The peer answered the control entry ``seq`` (sent with ``ask=True``)."""

    seq: int
    answer: bytes


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    """The peer answered probe ``number``; ``rtt`` seconds after the last probe left."""

    number: int
    rtt: float


@dataclass(frozen=True, slots=True)
class Broken:
    """The session ended: ``reason`` for the log; ``failure`` the violation, if one."""

    reason: str
    failure: PeerProtocolError | None = None


@dataclass(frozen=True, slots=True)
class Deliver:
    """(Receiver) entries to apply, in order: (seq, kind, op or opaque record)."""

    entries: list[tuple[int, ItemKind, Op | bytes]]


Event = Acknowledged | Answered | ProbeAnswered | Broken | Deliver


class _Session:
    """What both ends share: the cipher, the event queue, breaking once."""

    def __init__(self, cipher: SessionCipher | None) -> None:
        self._cipher = cipher
        self._events: deque[Event] = deque()
        self._out: list[Message] = []
        self.broken: str | None = None
        self.failure: PeerProtocolError | None = None

    def events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def close(self, reason: str, failure: PeerProtocolError | None = None) -> None:
        """End the session (once): nothing more is sent or accepted."""
        if self.broken is not None:
            return
        self.broken = reason
        self.failure = failure
        self._out.clear()
        self._closed()
        self._events.append(Broken(reason, failure))

    def _closed(self) -> None:
        """Hook: drop what the side queued."""

    def _seal(self, kind: Kind, body: Sequence[Buffer]) -> Message:
        assert self._cipher is not None, "sealing before the session started"
        return self._cipher.sealer.seal_parts(kind, body)

    def _open(self, message: Buffer, *kinds: Kind) -> tuple[Kind, memoryview] | None:
        """(kind, body), or None once broken (a violation breaks the session)."""
        if self.broken is not None:
            return None
        if self._cipher is None:
            raise UsageError("a message received before the session started")
        try:
            return self._cipher.opener.open(message, *kinds)
        except PeerProtocolError as exc:
            self.close(f"replication peer protocol error: {exc}", exc)
            return None


# -- the primary's end ------------------------------------------------------------


class SenderProtocol(_Session):
    """The primary's end of one session (see the module docstring).

    Not thread-safe: the adapter serialises every call (one lock). Entries may
    be queued before the handshake (``cipher=None``); they leave after ``start``.
    """

    def __init__(
        self,
        cipher: SessionCipher | None,
        settings: ChannelSettings,
        now: float,
        peer: str = "peer",
    ) -> None:
        super().__init__(cipher)
        self._settings = settings
        self._peer = peer
        self._timeout = settings.timeout
        self._queue: deque[tuple[ItemKind, Sequence[Buffer], int]] = deque()
        self.queued_bytes = 0
        self.next_seq = 1
        self.sent_seq = 0
        self.in_flight = 0
        self._unapplied: deque[tuple[int, int]] = deque()  # (last seq, bytes)
        self._unacked: deque[tuple[int, float]] = deque()  # (last seq, sent at)
        self.acked = Ack(0, 0, 0)
        self.upto = 0
        """Highest sequence number acknowledged at the session's level."""
        self._asked: set[int] = set()
        self._ack_waits: list[tuple[float, int]] = []  # heap of (deadline, seq)
        self._room_waits: dict[int, float] = {}  # token -> deadline of a wait for room
        self._room_tokens = 0
        self._last_progress = self.last_sent = self.last_heard = now
        self.entries_sent = self.bytes_sent = 0
        self.probes_sent = self._probes_answered = 0
        self._probe_sent_at = now
        self.last_probe_rtt: float | None = None
        self.last_latency: float | None = None
        self.on_latency: Callable[[float], None] | None = None
        """Called with each acknowledgement latency (the metrics' histogram)."""

    # -- inputs --------------------------------------------------------------------

    def start(self, cipher: SessionCipher, now: float) -> None:
        """The handshake succeeded: entries queued so far may leave."""
        self._cipher = cipher
        self._last_progress = self.last_sent = self.last_heard = now

    @property
    def started(self) -> bool:
        """Whether ``start`` ran (or the protocol was made with its cipher)."""
        return self._cipher is not None

    def send(self, op: Op) -> int:
        """Queue ``op``; its sequence number (0 once broken)."""
        return self.send_entry(ItemKind.OP, encode_parts(op))

    def send_entry(self, kind: ItemKind, payload: Sequence[Buffer], *, ask: bool = False) -> int:
        """Queue one entry (its payload as buffers, uncopied); its sequence number
        (0 once broken). ``ask``: an ``Answered`` event is expected for it."""
        size = self.entry_size(payload)
        if self.broken is not None:
            return 0
        seq = self.next_seq
        self.next_seq = seq + 1
        if ask:
            self._asked.add(seq)
        self._queue.append((kind, payload, size))
        self.queued_bytes += size
        return seq

    def has_room(self, size: int) -> bool:
        """Whether an entry of ``size`` bytes fits in the queue now (an empty
        queue takes any entry)."""
        return not self._queue or self.queued_bytes + size <= self._settings.queue_bytes

    def expect_room(self, now: float) -> int:
        """Someone waits for room in the queue: if they still wait after the
        timeout, the session breaks. A token for ``room_found``."""
        self._room_tokens += 1
        self._room_waits[self._room_tokens] = now + self._timeout
        return self._room_tokens

    def room_found(self, token: int) -> None:
        """The wait of ``token`` (from ``expect_room``) is over."""
        self._room_waits.pop(token, None)

    def expect_ack(self, seq: int, now: float) -> None:
        """Someone waits for entry ``seq`` at the session's level: if it is not
        acknowledged within the timeout, the session breaks."""
        if seq > self.upto and self.broken is None:
            heapq.heappush(self._ack_waits, (now + self._timeout, seq))

    def receive(self, message: Buffer, now: float) -> None:
        """One whole message from the peer."""
        opened = self._open(message, Kind.ACK, Kind.REPLY, Kind.PROBE_ANSWER)
        if opened is None:
            return
        kind, body = opened
        self.last_heard = now
        try:
            if kind is Kind.REPLY:
                self._on_reply(*decode_reply(body))
            elif kind is Kind.PROBE_ANSWER:
                self._on_probe_answer(decode_probe(kind, body), now)
            else:
                self._on_ack(decode_ack(body), now)
        except PeerProtocolError as exc:
            self.close(f"replication peer protocol error: {exc}", exc)

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must run next (None: nothing timed is pending)."""
        if self.broken is not None:
            return None
        deadlines: list[float] = []
        while self._ack_waits and self._ack_waits[0][1] <= self.upto:
            heapq.heappop(self._ack_waits)
        if self._ack_waits:
            deadlines.append(self._ack_waits[0][0])
        if self._room_waits:
            deadlines.append(min(self._room_waits.values()))
        if self._unapplied:
            deadlines.append(self._last_progress + self._timeout)
        interval = self._settings.probe_interval
        if interval is not None and self.started:
            deadlines.append(self.last_heard + self._timeout)
            if not self._sendable():
                deadlines.append(self.last_sent + interval / 2)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Break the session for what timed out; queue a probe when it is time."""
        if self.broken is not None:
            return
        while self._ack_waits and self._ack_waits[0][0] <= now:
            _, seq = heapq.heappop(self._ack_waits)
            if seq > self.upto:
                level = self._settings.ack_level
                self.close(
                    f"peer did not acknowledge entry {seq} within {self._timeout} s ({level})"
                )
                return
        if self._room_waits and min(self._room_waits.values()) <= now:
            self.close(
                f"replication queue stayed full ({self.queued_bytes} bytes) for {self._timeout} s"
            )
            return
        if self._unapplied and now - self._last_progress >= self._timeout:
            self.close(f"peer acknowledged nothing for {self._timeout} s with data in flight")
            return
        interval = self._settings.probe_interval
        if interval is None or not self.started:
            return
        if now - self.last_heard >= self._timeout:
            self.close(f"no answer from {self._peer} for {self._timeout} s (probed)")
        elif not self._sendable() and now - self.last_sent >= interval / 2:
            self.probes_sent += 1
            self._out.append(self._seal(Kind.PROBE, [encode_probe(self.probes_sent)]))
            self._probe_sent_at = self.last_sent = now

    # -- outputs -------------------------------------------------------------------

    def data_to_send(self, now: float) -> list[Message]:
        """The messages to send now, in order (queued entries within the window)."""
        if self.broken is not None or not self.started:
            return []
        out = self._out
        self._out = []
        while (batch := self._take()) is not None:
            first, taken, size = batch
            last = first + len(taken) - 1
            if not self._unapplied:
                self._last_progress = now
            self._unapplied.append((last, size))
            self._unacked.append((last, now))
            self.in_flight += size
            out.append(self._seal(Kind.ITEMS, items_parts(first, taken)))
        if out:
            self.last_sent = now
            self.bytes_sent += sum(buffer_size(part) for message in out for part in message)
        return out

    @property
    def wants_to_send(self) -> bool:
        """Whether ``data_to_send`` would return something now."""
        return self.broken is None and self.started and (bool(self._out) or self._sendable())

    @staticmethod
    def entry_size(payload: Sequence[Buffer]) -> int:
        """The bytes an entry with ``payload`` takes in the queue and the window.
        Raises UsageError (local misuse) beyond ``MAX_ENTRY``."""
        size = ENTRY_OVERHEAD + sum(buffer_size(part) for part in payload)
        if size > MAX_ENTRY:
            raise UsageError(f"replication entry of {size} bytes exceeds {MAX_ENTRY}")
        return size

    def _sendable(self) -> bool:
        if not self._queue:
            return False
        return not self.in_flight or self._queue[0][2] <= self._room_in_window()

    def _room_in_window(self) -> int:
        return self._settings.window_bytes - self.in_flight

    def _take(self) -> tuple[int, list[tuple[ItemKind, Sequence[Buffer]]], int] | None:
        if not self._sendable():
            return None
        limit = min(
            self._settings.max_message_bytes, max(self._room_in_window(), self._queue[0][2])
        )
        taken: list[tuple[ItemKind, Sequence[Buffer]]] = []
        size = 0
        while self._queue and (not taken or size + self._queue[0][2] <= limit):
            kind, payload, entry_size = self._queue.popleft()
            taken.append((kind, payload))
            size += entry_size
        self.queued_bytes -= size
        first = self.sent_seq + 1
        self.sent_seq += len(taken)
        self.entries_sent += len(taken)
        return first, taken, size

    def _closed(self) -> None:
        self._queue.clear()
        self.queued_bytes = 0
        self._ack_waits.clear()
        self._room_waits.clear()

    def _on_reply(self, seq: int, answer: bytes) -> None:
        if seq not in self._asked:
            raise PeerProtocolError(f"REPLY.seq: answers entry {seq}, which asked nothing")
        self._asked.discard(seq)
        self._events.append(Answered(seq, answer))

    def _on_probe_answer(self, number: int, now: float) -> None:
        if not self._probes_answered < number <= self.probes_sent:
            raise PeerProtocolError(
                f"PROBE_ANSWER.number: {number}, expected {self._probes_answered + 1} "
                f"to {self.probes_sent}"
            )
        self._probes_answered = number
        if number == self.probes_sent:
            self.last_probe_rtt = now - self._probe_sent_at
            self._events.append(ProbeAnswered(number, self.last_probe_rtt))

    def _on_ack(self, ack: Ack, now: float) -> None:
        old = self.acked
        if ack.received > self.sent_seq:
            raise PeerProtocolError(
                f"ACK.levels: acknowledges entry {ack.received}, only {self.sent_seq} were sent"
            )
        if ack.received < old.received or ack.written < old.written or ack.fsynced < old.fsynced:
            raise PeerProtocolError(f"ACK.levels: went backwards ({ack} after {old})")
        if ack.written > old.written:
            self._last_progress = now
        while self._unapplied and self._unapplied[0][0] <= ack.written:
            self.in_flight -= self._unapplied.popleft()[1]
        upto = self._level_of(ack)
        while self._unacked and self._unacked[0][0] <= upto:
            self.last_latency = now - self._unacked.popleft()[1]
            if self.on_latency is not None:
                self.on_latency(self.last_latency)
        self.acked = ack
        if upto > self.upto:
            self.upto = upto
            self._events.append(Acknowledged(ack, upto))

    def _level_of(self, ack: Ack) -> int:
        """The sequence number ``ack`` acknowledges at the session's level."""
        return ack.at(self._settings.ack_level)


# -- the secondary's end ----------------------------------------------------------


class ReceiverProtocol(_Session):
    """The secondary's end of one session (see the module docstring).

    ``level`` is the ack level the primary asked for in its ``HELLO``;
    ``takes_records``: resync chunks and control records are accepted (else
    such an entry is a protocol violation).
    """

    def __init__(self, cipher: SessionCipher, level: AckLevel, *, takes_records: bool) -> None:
        super().__init__(cipher)
        self._level = level
        self._takes_records = takes_records
        self.received = self.written = self.fsynced = 0
        self._fsyncs: deque[int] = deque()  # Fsync entries written, not yet fsynced
        self._fsync_seqs: set[int] = set()  # Fsync entries received, not yet written
        self._ack_sent = Ack(0, 0, 0)
        self._replies: list[tuple[int, bytes]] = []
        self._probe: int | None = None  # the latest probe, not yet answered
        self.bytes_received = 0

    @property
    def wants_to_send(self) -> bool:
        """Whether ``data_to_send`` would return something now."""
        if self.broken is not None:
            return False
        if self._probe is not None or self._replies:
            return True
        return self._visible_ack() != self._ack_sent

    @property
    def ack(self) -> Ack:
        """The cumulative acknowledgement as it stands."""
        return Ack(self.received, self.written, self.fsynced)

    def receive(self, message: Buffer, now: float) -> None:
        """One whole message from the peer: a ``Deliver`` event for ``ITEMS``
        (nothing of a message is delivered unless all of it is valid)."""
        opened = self._open(message, Kind.ITEMS, Kind.PROBE)
        if opened is None:
            return
        kind, body = opened
        try:
            if kind is Kind.PROBE:  # answered ahead of any apply
                # Only the latest one: a primary that probes faster than it reads
                # the answers cannot make this side queue them without end.
                self._probe = decode_probe(kind, body)
                return
            entries = self._decode(body)
        except PeerProtocolError as exc:
            self.close(f"replication peer protocol error: {exc}", exc)
            return
        self.received = entries[-1][0]
        self.bytes_received += buffer_size(message)
        self._events.append(Deliver(entries))

    def _decode(self, body: memoryview) -> list[tuple[int, ItemKind, Op | bytes]]:
        entries: list[tuple[int, ItemKind, Op | bytes]] = []
        for entry in decode_items(body, self.received + 1):
            if entry.kind is ItemKind.OP:
                op = decode(entry.payload)
                if isinstance(op, Fsync):
                    self._fsync_seqs.add(entry.seq)
                entries.append((entry.seq, entry.kind, op))
            elif not self._takes_records:
                raise DecodeError(
                    "ITEMS",
                    f"entry {entry.seq - self.received - 1} kind",
                    f"a {entry.kind.name} record (seq {entry.seq}), which this receiver "
                    "does not take",
                )
            else:
                entries.append((entry.seq, entry.kind, bytes(entry.payload)))
        return entries

    def applied(self, seq: int) -> None:
        """The adapter applied every delivered entry up to ``seq``. An ``Fsync``
        entry counts as written once everything before it is applied; its
        fsync is reported with ``fsynced``."""
        if not self.written < seq <= self.received:
            raise UsageError(f"applied({seq}): written {self.written}, received {self.received}")
        self.written = seq
        if seq in self._fsync_seqs:
            self._fsync_seqs.discard(seq)
            self._fsyncs.append(seq)
        self.fsynced = self._fsyncs[0] - 1 if self._fsyncs else seq

    def fsynced_upto(self, seq: int) -> None:
        """The adapter fsynced the ``Fsync`` entry ``seq`` (the oldest not yet fsynced)."""
        if not self._fsyncs or self._fsyncs[0] != seq:
            raise UsageError(f"fsynced({seq}): the next Fsync entry is {list(self._fsyncs)[:1]}")
        self._fsyncs.popleft()
        self.fsynced = self._fsyncs[0] - 1 if self._fsyncs else self.written

    def needs_fsync(self, seq: int) -> bool:
        """Whether entry ``seq`` is an ``Fsync`` whose file the adapter must fsync
        (after ``applied(seq)``, before applying anything later)."""
        return seq in self._fsync_seqs

    def reply(self, seq: int, answer: bytes) -> None:
        """The answer to control entry ``seq``, sent after the ack that covers it."""
        self._replies.append((seq, answer))

    def data_to_send(self, now: float) -> list[Message]:
        """The answer to the latest probe (probes not answered yet are answered
        together: the primary accepts the latest number for all of them), then one
        ``ACK`` if the acknowledgement moved at a level the primary listens to,
        then replies."""
        if self.broken is not None:
            return []
        out: list[Message] = []
        if self._probe is not None:
            out.append(self._seal(Kind.PROBE_ANSWER, [encode_probe(self._probe)]))
            self._probe = None
        ack = self._visible_ack()
        if ack != self._ack_sent:
            self._ack_sent = ack
            out.append(self._seal(Kind.ACK, [encode_ack(ack)]))
        for seq, answer in self._replies:
            out.append(self._seal(Kind.REPLY, [encode_reply(seq, answer)]))
        self._replies.clear()
        return out

    def _visible_ack(self) -> Ack:
        """The ack to send. ``written`` progress always makes one (it frees the
        primary's window and shows progress); ``received`` and ``fsynced`` only
        at their own level (elsewhere they ride along with the next one)."""
        sent = self._ack_sent
        if self.written != sent.written:
            return self.ack
        if self._level is AckLevel.RECEIVED and self.received != sent.received:
            return self.ack
        if self._level is AckLevel.FSYNCED and self.fsynced != sent.fsynced:
            return self.ack
        return sent
