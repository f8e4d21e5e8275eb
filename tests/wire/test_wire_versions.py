"""A rolling upgrade: a node of version 5 and one of version 4 still hear each other.

Invariants: a version 5 node reads frames of versions 4 and 5; it sends version
5 except to a peer run that has sent it only version 4 frames, to which it
sends version 4 frames (which that peer reads) but for ``PROBES`` version 5
probes, one every ``PROBE_EVERY`` seqs; so two version 5 nodes end up on version 5 whatever
the order their first frames arrived in, and a version 4 node hears every
frame but the probes.

A version 4 node is modelled by what distinguishes it on the wire: it sends
only version 4 frames (the layout test_wire_codec.py checks against
docs/wire.md) and drops every other version as ``bad_version``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from test_wire_echo import status
from wire_fuzz_corpus import KEY, codec

from failover.core.state import PeerStatus
from failover.wire import (
    PROBE_EVERY,
    PROBES,
    PROTOCOL_VERSION,
    Frame,
    FrameKind,
    FrameRejected,
    Inbound,
    Outbound,
    Reason,
)
from failover.witness.messages import witness_codec

ROUNDS = 64
CONVERGED = 16
"""Frames each way within which two version 5 nodes are back on version 5."""


class _Version4Outbound(Outbound):
    def _version(self, seq: int) -> int:
        return 4


class _Version4Inbound(Inbound):
    def accept(self, data: bytes) -> tuple[Frame, PeerStatus] | None:
        if data[4] != 4:  # what a version 4 decoder does with any other version
            self._drop(FrameRejected(Reason.BAD_VERSION, f"version {data[4]}"))
            return None
        return super().accept(data)


@dataclass
class Node:
    name: str
    peer: str
    incarnation: int
    old: bool = False
    outbound: Outbound = field(init=False)
    inbound: Inbound = field(init=False)
    sent_versions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        out_class, in_class = (
            (_Version4Outbound, _Version4Inbound) if self.old else (Outbound, Inbound)
        )
        self.outbound = out_class(codec(), self.name, self.incarnation)
        self.inbound = in_class(codec(), self.outbound, peer=self.peer)

    def send(self) -> bytes:
        data = self.outbound.heartbeat(status(self.name))
        self.sent_versions.append(data[4])
        return data

    def upgraded(self) -> Node:
        """The same node restarted on version 5."""
        return Node(self.name, self.peer, self.incarnation + 1)


def rounds(first: Node, second: Node, count: int = ROUNDS) -> None:
    for _ in range(count):
        second.inbound.accept(first.send())
        first.inbound.accept(second.send())


def test_two_version_5_nodes_speak_version_5_only() -> None:
    alpha, beta = Node("alpha", "beta", 10), Node("beta", "alpha", 20)
    rounds(alpha, beta)
    assert set(alpha.sent_versions) == set(beta.sent_versions) == {PROTOCOL_VERSION}
    # paired after one frame each way: alpha's first was made before it heard beta
    assert alpha.inbound.stats.as_dict() == {"accepted": ROUNDS}
    assert beta.inbound.stats.as_dict() == {"accepted": ROUNDS - 1, "wrong_echo": 1}


def test_a_version_5_node_and_a_version_4_node_hear_each_other() -> None:
    new, old = Node("alpha", "beta", 10), Node("beta", "alpha", 20, old=True)
    rounds(new, old)
    # alpha's first frame (before it heard beta) and then its probes are version 5
    probes = [i for i, v in enumerate(new.sent_versions, start=1) if v == PROTOCOL_VERSION]
    assert probes == [1, *range(PROBE_EVERY, (PROBES + 1) * PROBE_EVERY, PROBE_EVERY)]
    assert set(new.sent_versions) == {4, PROTOCOL_VERSION}
    # beta drops only those; every other frame of alpha's reaches its core
    assert old.inbound.stats.as_dict() == {
        "accepted": ROUNDS - len(probes),
        "bad_version": len(probes),
    }
    # alpha hears beta from beta's second frame on (the first echoed nothing yet)
    assert new.inbound.stats.as_dict() == {"accepted": ROUNDS - 1, "wrong_echo": 1}


def test_after_the_upgrade_both_speak_version_5_whichever_frame_came_first() -> None:
    for upgraded_first in (True, False):
        new, old = Node("alpha", "beta", 10), Node("beta", "alpha", 20, old=True)
        rounds(new, old)
        upgraded = old.upgraded()
        if upgraded_first:
            rounds(upgraded, new, CONVERGED)
        else:  # alpha's version 4 frame (meant for the old run) reaches the new run first
            rounds(new, upgraded, CONVERGED)
        new.sent_versions.clear()
        upgraded.sent_versions.clear()
        dropped_before = dict(upgraded.inbound.stats.dropped)
        rounds(new, upgraded)
        assert set(new.sent_versions) == {PROTOCOL_VERSION}, upgraded_first
        assert set(upgraded.sent_versions) == {PROTOCOL_VERSION}, upgraded_first
        assert dict(upgraded.inbound.stats.dropped) == dropped_before
        assert new.outbound.peer_version == upgraded.outbound.peer_version == PROTOCOL_VERSION


def test_witness_frames_stay_in_version_4_which_a_witness_not_yet_upgraded_reads() -> None:
    data = witness_codec("dispatch", KEY).encode(FrameKind.HEARTBEAT, "alpha", 1, 1, b"req")
    assert data[4] == 4 and len(data) == 42 + len("alpha") + 3 + 32
    assert witness_codec("dispatch", KEY).decode(data).payload == b"req"
