"""Stateful model test of the sans-IO replication protocol (``replication/protocol.py``).

Hypothesis drives one ``SenderProtocol`` and one ``ReceiverProtocol`` through an
in-memory network that loses, reorders and duplicates messages, with time
passing and a crash of either side at any step (a crash ends the session; a new
one starts with fresh keys, as a reconnection does). The receiver's "disk" is a
list that survives crashes; an op it holds is applied.

Invariants, checked after every step:

- every entry the sender saw acknowledged at the session's level (written) is
  on the disk; at ``fsynced``, every ``Fsync`` entry up to it was fsynced;
- within each session the disk holds entries 1, 2, ... in order, each the one
  the sender queued under that number: none twice, none skipped, none out of
  order; sessions never interleave;
- an answer the sender receives is the answer to the entry it asked with;
- a resync converges: each session starts with one (a file's zones as ``RESYNC``
  entries, interleaved with live writes, then ``END``); once ``END`` is
  acknowledged, the secondary's copy when it applied ``END`` is the primary's
  when ``END`` was queued.

The mutants at the end break the protocol on purpose; each must be caught.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from failover.replication.channel_wire import Ack, AckLevel, ItemKind, Opener, Sealer
from failover.replication.ops import Fsync, Op, Write
from failover.replication.protocol import (
    Acknowledged,
    Answered,
    Broken,
    ChannelSettings,
    Deliver,
    ReceiverProtocol,
    SenderProtocol,
    SessionCipher,
)

ROOT = "data"
SETTINGS = ChannelSettings(
    timeout=5.0,
    window_bytes=64 * 1024,
    max_message_bytes=64 * 1024,
    queue_bytes=64 * 1024,
    probe_interval=1.0,
)
LEVELS = (AckLevel.WRITTEN, AckLevel.FSYNCED)
ZONES = 3
INDEX = st.integers(0, 3) | st.just(0)  # mostly in order
FAULT = st.sampled_from(["none", "none", "none", "duplicate", "lose"])


def ciphers(session: int) -> tuple[SessionCipher, SessionCipher]:
    """(primary's, secondary's) cipher of session ``session``: keys of its own."""
    to_secondary = (b"to-secondary %d" % session).ljust(32, b".")
    to_primary = (b"to-primary %d" % session).ljust(32, b".")
    return (
        SessionCipher(Sealer(to_secondary, 1, session=True), Opener(to_primary, 1, session=True)),
        SessionCipher(Sealer(to_primary, 1, session=True), Opener(to_secondary, 1, session=True)),
    )


class ProtocolMachine(RuleBasedStateMachine):
    """A primary and a secondary over a hostile network, crashing at will."""

    sender_class: type[SenderProtocol] = SenderProtocol
    receiver_class: type[ReceiverProtocol] = ReceiverProtocol

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.session = 0
        self.disk: list[tuple[int, int, str]] = []  # (session, seq, what) applied, durable
        self.fsynced: set[tuple[int, int]] = set()  # (session, seq) of Fsync entries done
        self.queued: dict[int, dict[int, str]] = {}  # session -> seq -> what was queued
        self.contents: dict[tuple[int, int], Op | bytes] = {}  # (session, seq) -> entry
        self.acked: dict[int, int] = {}  # session -> highest seq acked at its level
        self.levels: dict[int, AckLevel] = {}
        self.ops = 0
        # resync, modelled: one file of ZONES zones; the primary's copy, the
        # secondary's (durable), and per session the resync's progress
        self.primary_zones = [b""] * ZONES
        self.secondary_zones = [b""] * ZONES
        self.resync_next: int | None = 0  # next zone to send; None: the resync ended
        self.resync_end: dict[int, tuple[int, list[bytes]]] = {}  # session -> END seq, snapshot
        self.zones_at_end: dict[int, list[bytes]] = {}  # session -> secondary's zones at END

    @initialize(level=st.sampled_from(LEVELS))
    def first_session(self, level: AckLevel) -> None:
        self._start(level, keep_stale=False)

    # -- sessions -------------------------------------------------------------------

    def _start(self, level: AckLevel, *, keep_stale: bool) -> None:
        self.session += 1
        primary, secondary = ciphers(self.session)
        self.sender = self.sender_class(
            primary, ChannelSettings(**{**_fields(SETTINGS), "ack_level": level}), self.now
        )
        self.receiver = self.receiver_class(secondary, level, takes_records=True)
        self.levels[self.session] = level
        self.queued[self.session] = {}
        self.acked[self.session] = 0
        self.pending: deque[tuple[int, ItemKind, Op | bytes]] = deque()
        self.fsync_due: int | None = None
        self.resync_next = 0  # every session starts with a resync (the peer may lack writes)
        if not keep_stale:  # a new connection: nothing of the old one arrives
            self.to_receiver: list[bytes] = []
            self.to_sender: list[bytes] = []

    @rule(side=st.sampled_from(["primary", "secondary"]), level=st.sampled_from(LEVELS))
    def crash(self, side: str, level: AckLevel) -> None:
        """Either side dies (or the session breaks): a new session starts, on a
        new connection. The secondary loses what it received and did not apply;
        the primary forgets the session (change tracking resends, elsewhere)."""
        self._start(level, keep_stale=False)

    @rule(level=st.sampled_from(LEVELS))
    def reconnect_with_stale_messages(self, level: AckLevel) -> None:
        """A new session, while messages of the old one are still on the way."""
        self._start(level, keep_stale=True)

    # -- the primary's application ---------------------------------------------------

    def _queued(self, seq: int, what: str, content: Op | bytes) -> None:
        if seq:
            assert seq not in self.queued[self.session]
            self.queued[self.session][seq] = what
            self.contents[self.session, seq] = content

    @rule(size=st.integers(0, 20_000), zone=st.integers(0, ZONES - 1))
    def write(self, size: int, zone: int) -> None:
        """The application writes zone ``zone`` (locally, then to the peer)."""
        self.ops += 1
        data = bytes([self.ops % 251]) * size
        self.primary_zones[zone] = data
        op = Write(ROOT, b"f", zone, data)
        self._queued(self.sender.send(op), f"write {self.ops}", op)

    skipped_zone: int | None = None
    """A zone the resync forgets (the mutant); None in the real model."""

    @precondition(lambda self: self.resync_next is not None)
    @rule()
    def resync_to_the_end(self) -> None:
        """The resync sends all it has left, at once."""
        while self.resync_next is not None:
            self.resync_step()

    @precondition(lambda self: self.resync_next is not None)
    @rule()
    def resync_step(self) -> None:
        """The resync sends its next zone as it is now (a RESYNC entry in the same
        order as live writes), or, after the last, its END."""
        assert self.resync_next is not None
        zone = self.resync_next
        if zone < ZONES:
            self.resync_next = zone + 1
            if zone == self.skipped_zone:
                return
            record = b"Z" + bytes([zone]) + self.primary_zones[zone]
            self._queued(self.sender.send_entry(ItemKind.RESYNC, [record]), "zone", record)
            return
        self.resync_next = None
        seq = self.sender.send_entry(ItemKind.RESYNC, [b"END"])
        self._queued(seq, "end", b"END")
        if seq:
            self.resync_end[self.session] = (seq, list(self.primary_zones))

    @rule()
    def fsync(self) -> None:
        self.ops += 1
        op = Fsync(ROOT, b"f", self.ops % 2 == 0)
        seq = self.sender.send(op)
        self._queued(seq, f"fsync {self.ops}", op)
        self.sender.expect_ack(seq, self.now)

    @rule(ask=st.booleans())
    def control(self, ask: bool) -> None:
        self.ops += 1
        record = b"record %d" % self.ops
        seq = self.sender.send_entry(ItemKind.CONTROL, [record], ask=ask)
        self._queued(seq, f"{'ask' if ask else 'control'} {self.ops}", record)

    # -- the network -------------------------------------------------------------------

    @rule()
    def sender_sends(self) -> None:
        for message in self.sender.data_to_send(self.now):
            self.to_receiver.append(b"".join(message))
        self._sender_events()

    @rule()
    def receiver_sends(self) -> None:
        for message in self.receiver.data_to_send(self.now):
            self.to_sender.append(b"".join(message))

    @rule()
    def network_carries_everything(self) -> None:
        """A healthy network: everything sent so far arrives, in order, both ways."""
        self.sender_sends()
        while self.to_receiver:
            self.to_receiver_arrives(0, "none")
        self.receiver_sends()
        while self.to_sender:
            self.to_sender_arrives(0, "none")

    @rule(fsync_lags=st.booleans())
    def healthy_round_trip(self, fsync_lags: bool) -> None:
        """Everything travels, the secondary applies (and fsyncs) all it has, and
        its acks travel back; with ``fsync_lags``, the acks travel while the
        secondary still fsyncs (it stops at the first ``Fsync``)."""
        self.network_carries_everything()
        while self.pending or self.fsync_due is not None:
            if self.fsync_due is None:
                self.apply(1)
            elif fsync_lags:
                break
            else:
                self.fsync_done()
        self.network_carries_everything()

    @precondition(lambda self: self.to_receiver)
    @rule(index=INDEX, fault=FAULT)
    def to_receiver_arrives(self, index: int, fault: str) -> None:
        """The message at ``index`` (reordered unless 0) arrives, or stays too
        (duplicated), or is lost."""
        index %= len(self.to_receiver)
        message = self.to_receiver[index] if fault == "duplicate" else self.to_receiver.pop(index)
        if fault == "lose":
            return
        self.receiver.receive(message, self.now)
        for event in self.receiver.events():
            if isinstance(event, Deliver):
                self.pending.extend(event.entries)
            else:
                assert isinstance(event, Broken)

    @precondition(lambda self: self.to_sender)
    @rule(index=INDEX, fault=FAULT)
    def to_sender_arrives(self, index: int, fault: str) -> None:
        index %= len(self.to_sender)
        message = self.to_sender[index] if fault == "duplicate" else self.to_sender.pop(index)
        if fault == "lose":
            return
        self.sender.receive(message, self.now)
        self._sender_events()

    @rule(seconds=st.sampled_from([0.1, 0.1, 0.6, 2.0, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.sender.handle_timer(self.now)
        self._sender_events()

    def _sender_events(self) -> None:
        for event in self.sender.events():
            if isinstance(event, Acknowledged):
                assert event.upto >= self.acked[self.session]
                self.acked[self.session] = event.upto
            elif isinstance(event, Answered):
                asked = (self.session, event.seq, self.queued[self.session][event.seq])
                assert asked in self.disk and asked[2].startswith("ask")
                assert event.answer == b"answer %d" % event.seq

    # -- the secondary's adapter -------------------------------------------------------

    @precondition(lambda self: self.pending and self.fsync_due is None)
    @rule(count=st.integers(1, 4))
    def apply(self, count: int) -> None:
        """Apply the next entries in order (an ``Fsync`` waits for its fsync)."""
        for _ in range(count):
            if not self.pending or self.fsync_due is not None:
                return
            seq, _, item = self.pending.popleft()
            what = self.queued[self.session].get(seq, "?")
            assert item == self.contents.get((self.session, seq)), f"entry {seq} altered"
            self.disk.append((self.session, seq, what))
            self.disk_holds_each_session_in_order()
            if isinstance(item, Write):
                self.secondary_zones[item.offset] = bytes(item.data)
            elif item == b"END":
                self.zones_at_end[self.session] = list(self.secondary_zones)
            elif isinstance(item, bytes) and item.startswith(b"Z"):
                self.secondary_zones[item[1]] = item[2:]
            needs_fsync = self.receiver.needs_fsync(seq)
            self.receiver.applied(seq)
            if needs_fsync:
                self.fsync_due = seq
            elif what.startswith("ask"):
                self.receiver.reply(seq, b"answer %d" % seq)

    @precondition(lambda self: self.fsync_due is not None)
    @rule()
    def fsync_done(self) -> None:
        assert self.fsync_due is not None
        self.fsynced.add((self.session, self.fsync_due))
        self.receiver.fsynced_upto(self.fsync_due)
        self.fsync_due = None

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def disk_holds_each_session_in_order(self) -> None:
        applied: dict[int, int] = {}
        last_session = 0
        for session, seq, what in self.disk:
            assert session >= last_session, "sessions interleaved on the disk"
            last_session = session
            assert seq == applied.get(session, 0) + 1, f"session {session}: {seq} out of order"
            applied[session] = seq
            assert what == self.queued[session][seq], f"{what} applied as entry {seq}"

    @invariant()
    def an_acknowledged_resync_left_identical_copies(self) -> None:
        """Once the resync's END is acknowledged, the secondary's copy was, when it
        applied END, the primary's copy when END was queued."""
        for session, (seq, snapshot) in self.resync_end.items():
            if self.acked[session] >= seq:
                assert session in self.zones_at_end, f"session {session}: END acked, not applied"
                assert self.zones_at_end[session] == snapshot, f"session {session}: copies differ"

    @invariant()
    def every_acknowledged_entry_is_applied(self) -> None:
        applied: dict[int, int] = {}
        for session, seq, _ in self.disk:
            applied[session] = seq
        for session, upto in self.acked.items():
            assert upto <= applied.get(session, 0), (
                f"session {session}: entry {upto} acknowledged, {applied.get(session, 0)} applied"
            )
            if self.levels[session] is AckLevel.FSYNCED:
                for seq, what in self.queued[session].items():
                    if seq <= upto and what.startswith("fsync"):
                        assert (session, seq) in self.fsynced, f"fsync {seq} acknowledged, not done"


def _fields(value: ChannelSettings) -> dict[str, object]:
    return {name: getattr(value, name) for name in ChannelSettings.__slots__}


TestProtocolModel = ProtocolMachine.TestCase
TestProtocolModel.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- mutants: each must be caught --------------------------------------------------------


class AckBeforeApply(ReceiverProtocol):
    """Acknowledges what it received as written (and fsynced) before applying it."""

    def _visible_ack(self) -> Ack:
        return Ack(self.received, self.received, self.received)


class FsyncedAtWritten(ReceiverProtocol):
    """Counts an ``Fsync`` as fsynced once applied, before the fsync ran."""

    def applied(self, seq: int) -> None:
        super().applied(seq)
        self.fsynced = seq


class ReceivedIsEnough(SenderProtocol):
    """Takes the peer's received level for the configured one."""

    def _level_of(self, ack: Ack) -> int:
        return ack.received


class SequenceForgotten(ReceiverProtocol):
    """Forgets where the stream stands after each message: a duplicated or
    replayed message is delivered again (the counter check is off as well)."""

    def receive(self, message: bytes | bytearray | memoryview, now: float) -> None:
        self._cipher.opener.counter = int.from_bytes(bytes(memoryview(message)[8:16]), "big")
        received = self.received
        self.received = int.from_bytes(bytes(memoryview(message)[16:24]), "big") - 1
        super().receive(message, now)
        self.received = max(self.received, received)


def _mutant_machine(
    sender: type[SenderProtocol] = SenderProtocol,
    receiver: type[ReceiverProtocol] = ReceiverProtocol,
    skipped_zone: int | None = None,
) -> type[ProtocolMachine]:
    return type(
        "Mutant",
        (ProtocolMachine,),
        {"sender_class": sender, "receiver_class": receiver, "skipped_zone": skipped_zone},
    )


MUTANT_SETTINGS = settings(
    max_examples=1000,  # each is caught within 100 (derandomized); the rest is margin
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],  # caught is enough: no shrinking
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=False,
)


@pytest.mark.parametrize(
    ("sender", "receiver"),
    [
        (SenderProtocol, AckBeforeApply),
        (SenderProtocol, FsyncedAtWritten),
        (ReceivedIsEnough, ReceiverProtocol),
        (SenderProtocol, SequenceForgotten),
    ],
    ids=["ack-before-apply", "fsynced-at-written", "received-is-enough", "sequence-forgotten"],
)
def test_the_model_catches_the_mutant(
    sender: type[SenderProtocol], receiver: type[ReceiverProtocol]
) -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(_mutant_machine(sender, receiver), settings=MUTANT_SETTINGS)


def test_the_model_catches_a_resync_that_skips_a_zone() -> None:
    with pytest.raises(AssertionError, match="copies differ"):
        run_state_machine_as_test(_mutant_machine(skipped_zone=1), settings=MUTANT_SETTINGS)


# -- timers, one at a time ---------------------------------------------------------------


def _sender(**changes: object) -> SenderProtocol:
    primary, _ = ciphers(1)
    return SenderProtocol(primary, ChannelSettings(**{**_fields(SETTINGS), **changes}), 0.0)


def test_a_wait_for_room_breaks_the_session_only_past_the_timeout() -> None:
    sender = _sender(probe_interval=None)
    big = Write(ROOT, b"f", 0, bytes(40_000))
    sender.send(big)
    sender.send(big)  # the queue (64 KiB) now refuses a third
    assert not sender.has_room(SenderProtocol.entry_size([bytes(40_000)]))
    found = sender.expect_room(0.0)
    waiting = sender.expect_room(1.0)
    sender.room_found(found)
    sender.handle_timer(5.5)  # the first wait ended in time: nothing breaks
    assert sender.broken is None
    assert sender.next_deadline() == 6.0
    sender.handle_timer(6.0)
    assert sender.broken is not None and "queue stayed full" in sender.broken
    assert sender.room_found(waiting) is None


def test_an_awaited_entry_not_acknowledged_in_time_breaks_the_session() -> None:
    sender = _sender(probe_interval=None)
    seq = sender.send(Fsync(ROOT, b"f", False))
    sender.expect_ack(seq, 1.0)
    assert sender.next_deadline() == 6.0
    sender.handle_timer(5.9)
    assert sender.broken is None
    sender.handle_timer(6.0)
    assert sender.broken == f"peer did not acknowledge entry {seq} within 5.0 s (written)"
    assert [type(event) for event in sender.events()] == [Broken]


# -- sans-IO -------------------------------------------------------------------------------

IMPURE = frozenset(
    {"anyio", "asyncio", "trio", "socket", "os", "time", "threading", "select", "logging"}
)


def test_the_protocol_and_what_it_imports_do_no_io_and_read_no_clock() -> None:
    """protocol.py and every failover module it imports, transitively: no I/O, no
    clock, no threads (the adapters bring those)."""
    src = Path(__file__).resolve().parents[2] / "src"
    todo, seen, impure = ["failover.replication.protocol"], set(), []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = src / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = src / module.replace(".", "/") / "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in IMPURE:
                    impure.append(f"{module}: {name}")
                elif name.startswith("failover."):
                    todo.append(name)
    assert "failover.replication.channel_wire" in seen and "failover.replication.ops" in seen
    assert impure == []
