"""Replay after a restart (issue 8): a frame recorded earlier is refused once either side restarts.

Invariant: ``Inbound.accept`` hands a status on only for a frame whose echo
is the receiver's current incarnation. Incarnations only grow and are never
reused, so no frame made before the receiver's current start can carry it,
whatever the receiver's replay guard forgot when it restarted; and a frame of
the sender's previous run is older than the run the receiver has heard since
(``stale_incarnation``) or already seen (``replayed``).

Both nodes are modelled whole (an ``Outbound`` and its paired ``Inbound``) and
exchange frames as the runtime does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from wire_fuzz_corpus import codec

from failover.core.state import Generation, PeerStatus, State, SubStatus
from failover.wire import Inbound, Outbound, Reason

RECORDED = 35  # as in the measured attack: 35 heartbeats recorded, 35 accepted again


def status(node: str, state: State = State.PRIMARY) -> PeerStatus:
    return PeerStatus(
        node=node,
        state=state,
        substatus=SubStatus.READY,
        generation=Generation(3, "alpha"),
        synced_generation=Generation(3, "alpha"),
        consistent=True,
        fingerprint="ab" * 32,
    )


@dataclass
class Node:
    """One run of a daemon: its sending end and its receiving end, paired."""

    name: str
    peer: str
    incarnation: int
    outbound: Outbound = field(init=False)
    inbound: Inbound = field(init=False)

    def __post_init__(self) -> None:
        self.outbound = Outbound(codec(), self.name, self.incarnation)
        self.inbound = Inbound(codec(), self.outbound, peer=self.peer)

    def heartbeat(self) -> bytes:
        return self.outbound.heartbeat(status(self.name))

    def restarted(self) -> Node:
        return Node(self.name, self.peer, self.incarnation + 1)


def exchange(a: Node, b: Node) -> None:
    """One heartbeat each way, then one more from ``a``: the two runs are paired after it."""
    b.inbound.accept(a.heartbeat())
    a.inbound.accept(b.heartbeat())
    assert b.inbound.accept(a.heartbeat()) is not None
    assert a.inbound.accept(b.heartbeat()) is not None


def replay(frames: list[bytes], to: Node) -> int:
    """Feed ``frames`` to ``to``; the number accepted."""
    return sum(to.inbound.accept(frame) is not None for frame in frames)


def test_a_new_pair_pairs_in_one_exchange_each_way() -> None:
    alpha, beta = Node("alpha", "beta", 100), Node("beta", "alpha", 200)
    first = alpha.heartbeat()  # alpha has heard nothing yet: it echoes 0
    assert beta.inbound.accept(first) is None
    assert beta.inbound.stats.dropped == {Reason.WRONG_ECHO: 1}
    assert beta.outbound.echo == 100  # but beta learned alpha's run from it
    answered = alpha.inbound.accept(beta.heartbeat())
    assert answered is not None and answered[0].echo == 100
    assert alpha.outbound.echo == 200
    accepted = beta.inbound.accept(alpha.heartbeat())
    assert accepted is not None and accepted[1] == status("alpha")


def test_frames_recorded_before_the_receiver_restarted_are_all_refused() -> None:
    alpha, beta = Node("alpha", "beta", 100), Node("beta", "alpha", 200)
    exchange(alpha, beta)
    recorded = [alpha.heartbeat() for _ in range(RECORDED)]
    assert replay(recorded, beta) == RECORDED  # they were genuine when sent

    beta = beta.restarted()  # the replay guard is empty again: only the echo can tell
    assert replay(recorded, beta) == 0
    assert beta.inbound.stats.accepted == 0
    assert beta.inbound.stats.dropped == {Reason.WRONG_ECHO: RECORDED}

    # The live peer (alpha is alive here) pairs with the new run in one exchange.
    exchange(alpha, beta)
    assert replay(recorded, beta) == 0


def test_a_dead_peers_frames_replayed_to_a_restarted_receiver_give_it_nothing() -> None:
    # The measured attack: alpha dies, beta restarts, an attacker plays alpha's heartbeats.
    alpha, beta = Node("alpha", "beta", 100), Node("beta", "alpha", 200)
    exchange(alpha, beta)
    recorded = [alpha.heartbeat() for _ in range(RECORDED)]
    for frame in recorded[: RECORDED // 2]:  # some reached beta, some were only recorded
        beta.inbound.accept(frame)
    beta = beta.restarted()
    for _ in range(3):  # in any order, any number of times
        assert replay(recorded, beta) == 0
        assert replay(recorded[::-1], beta) == 0
    # Frames beta itself sends meanwhile change nothing: the recording cannot answer.
    beta.heartbeat()
    assert replay(recorded, beta) == 0


def test_frames_recorded_before_the_sender_restarted_are_refused() -> None:
    # The replay guard's work, not the echo's (the recording echoes beta's current run):
    # this passes without the echo and fails when the guard admits an older incarnation.
    alpha, beta = Node("alpha", "beta", 100), Node("beta", "alpha", 200)
    exchange(alpha, beta)
    recorded = [alpha.heartbeat() for _ in range(RECORDED)]
    assert replay(recorded, beta) == RECORDED

    alpha = alpha.restarted()
    # Before beta hears the new run: beta has seen every one of them.
    assert replay(recorded, beta) == 0
    exchange(alpha, beta)
    # After: they belong to an older run of alpha.
    assert replay(recorded, beta) == 0
    assert beta.inbound.stats.dropped[Reason.STALE_INCARNATION] == RECORDED


def test_frames_recorded_before_both_restarted_are_refused() -> None:
    alpha, beta = Node("alpha", "beta", 100), Node("beta", "alpha", 200)
    exchange(alpha, beta)
    from_alpha = [alpha.heartbeat() for _ in range(RECORDED)]
    from_beta = [beta.heartbeat() for _ in range(RECORDED)]
    alpha, beta = alpha.restarted(), beta.restarted()
    assert replay(from_alpha, beta) == 0
    assert replay(from_beta, alpha) == 0
    exchange(alpha, beta)
    assert replay(from_alpha, beta) == 0
    assert replay(from_beta, alpha) == 0


def test_an_old_run_replayed_first_does_not_stop_the_live_peer_pairing() -> None:
    # A replay reaching a fresh receiver before the live peer does teaches it an old run
    # for a moment; the live peer's newer run replaces it at its first frame.
    alpha, beta = Node("alpha", "beta", 100), Node("beta", "alpha", 200)
    exchange(alpha, beta)
    old = alpha.heartbeat()
    alpha, beta = alpha.restarted(), beta.restarted()
    assert beta.inbound.accept(old) is None
    assert beta.outbound.echo == 100
    exchange(alpha, beta)
    assert beta.outbound.echo == 101 and alpha.outbound.echo == 201
    # From then on the old run teaches nothing: replayed again and again, it never
    # makes beta echo it (alpha would refuse everything beta sends: the link denied).
    for _ in range(3):
        assert beta.inbound.accept(old) is None
        assert beta.outbound.echo == 101
        exchange(alpha, beta)
    assert beta.inbound.stats.dropped[Reason.STALE_INCARNATION] == 3


def test_a_wrong_echo_frame_with_a_newer_status_hands_nothing_on() -> None:
    alpha, beta = Node("alpha", "beta", 100), Node("beta", "alpha", 200)
    exchange(alpha, beta)
    alpha.outbound.echo = 199  # what a frame made during beta's previous run carries
    stale = alpha.outbound.heartbeat(replace(status("alpha"), state=State.ALONE))
    assert beta.inbound.accept(stale) is None
    assert beta.inbound.stats.last_rejection is not None
    assert beta.inbound.stats.last_rejection.reason == Reason.WRONG_ECHO
