"""The view echo: no node starts serving on a heartbeat its peer sent before it
heard what the node announces now.

Two real cores, wired by a network that delivers every frame once, in the
order sent (as the wire layer hands them on: never an older status after a
newer one), but lets the test choose which direction delivers next. That is
enough to replay the first meeting seen in the e2e runs: beta hears alpha's
``stop`` heartbeat, sent before alpha's own start, while alpha (started)
hears beta waiting and wins the tie. Without the echo both serve.
"""

from __future__ import annotations

from collections import deque
from dataclasses import fields

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.node import Node
from failover.core.state import PeerStatus, Settings, State, SubStatus, evolve
from failover.core.table import Table
from failover.model.mutants import mutant_table

NAMES = ("alpha", "beta")


def settings(i: int, epoch: int = 1) -> Settings:
    return Settings(
        name=NAMES[i],
        peer=NAMES[1 - i],
        links=("lan",),
        heartbeat_interval=1,
        link_timeout=2,
        dead_timeout=3,
        startup_timeout=3,
        epoch=epoch,
    )


class Pair:
    """alpha and beta on one link; ``wire[i]`` holds what node i sent, in order."""

    def __init__(self, table: Table | None = None) -> None:
        self.nodes = (Node(settings(0), table=table), Node(settings(1), table=table))
        self.wire: tuple[deque[fx.SendHeartbeat], deque[fx.SendHeartbeat]] = (deque(), deque())
        self.now = 0.0
        self.both_served = False

    def handle(self, i: int, event: ev.Event) -> None:
        queue: deque[ev.Event] = deque([event])
        while queue:
            for effect in self.nodes[i].handle(queue.popleft(), self.now):
                if isinstance(effect, fx.SendHeartbeat):
                    self.wire[i].append(effect)
                elif isinstance(effect, fx.StartApp):
                    queue.append(ev.AppStarted())
                elif isinstance(effect, fx.StopApp):
                    queue.append(ev.AppStopped())
                elif isinstance(effect, fx.Quarantine):
                    queue.append(ev.QuarantineDone())
        self.both_served |= all(n.state.serving for n in self.nodes)

    def deliver(self, sender: int) -> None:
        """The oldest frame ``sender`` sent that is still in flight arrives."""
        status = self.wire[sender].popleft().status
        self.handle(1 - sender, ev.HeartbeatReceived("lan", status))

    def settle(self) -> None:
        """Every frame in flight arrives, in order, until none is left."""
        for _ in range(200):
            if not any(self.wire):
                return
            for i in (0, 1):
                while self.wire[i]:
                    self.deliver(i)
        raise AssertionError("the pair never went quiet")

    def states(self) -> tuple[State, State]:
        return self.nodes[0].state, self.nodes[1].state


def first_meeting(table: Table | None = None) -> Pair:
    """Both daemons launched: each sends its first heartbeat (stop), then the
    autostart; beta's frames reach alpha first, then alpha's first frame (the
    stop it sent before its start) reaches beta."""
    pair = Pair(table)
    for i in (0, 1):
        pair.handle(i, ev.Timer())  # the first heartbeat: stop
        pair.handle(i, ev.Start())
    assert [f.status.state for f in pair.wire[0]] == [State.STOP, State.WAIT]
    while pair.wire[1]:
        pair.deliver(1)  # alpha hears beta: stop, then wait
    pair.deliver(0)  # beta hears alpha's stop, sent before alpha started
    return pair


def test_a_stale_stop_heartbeat_makes_no_second_server() -> None:
    pair = first_meeting()
    assert not pair.both_served
    assert State.ALONE not in pair.states()  # neither decided on an unanswered view
    pair.settle()  # frames only, no timer: each answers the other's new view at once
    assert not pair.both_served
    assert sorted(s.value for s in pair.states()) == ["alone", "resync"]
    assert pair.nodes[0].state is State.ALONE  # the tie goes to the lower name


def test_without_the_view_echo_both_serve() -> None:
    # the same frames, the same order, with the echo rows removed from the table
    pair = first_meeting(mutant_table("no-view-echo"))
    assert pair.states() == (State.ALONE, State.ALONE)
    assert pair.both_served


def test_an_echo_of_the_previous_run_is_no_answer() -> None:
    # A peer's frame can echo this run's incarnation while its core still holds
    # the view it heard from the previous run (the wire layer learns the new
    # incarnation from a frame it does not hand on): a run's views start in a
    # new epoch, so such an echo never matches, whatever the counter.
    node = Node(settings(0, epoch=2))  # alpha's second run
    node.handle(ev.Start(), 0.0)
    peer = Node(settings(1)).status()  # beta's status as a template
    waiting = evolve(peer, state=State.WAIT, view=(1, 3))
    node.handle(ev.HeartbeatReceived("lan", evolve(waiting, peer_view=(1, 3))), 0.1)
    epoch, counter = node.facts.view
    assert epoch == 2
    node.handle(ev.HeartbeatReceived("lan", evolve(waiting, peer_view=(1, counter))), 0.2)
    assert node.state is State.WAIT  # the previous run's view with this run's counter
    node.handle(ev.HeartbeatReceived("lan", evolve(waiting, peer_view=node.facts.view)), 0.3)
    assert node.state is State.ALONE  # an answer to this run: alpha wins the tie


def test_the_view_grows_with_what_the_node_announces_never_with_its_reason() -> None:
    node = Node(settings(0))
    node.handle(ev.Start(), 0.0)
    settling = evolve(Node(settings(1)).status(), state=State.STOP, substatus=SubStatus.TRANSIENT)
    node.handle(ev.HeartbeatReceived("lan", settling), 0.1)
    view, reason = node.facts.view, node.facts.reason
    settling = evolve(settling, state=State.WAIT)
    effects = node.handle(ev.HeartbeatReceived("lan", settling), 0.15)
    assert node.state is State.WAIT and node.facts.reason != reason  # new words only:
    assert node.facts.view == view  # the same view,
    assert not any(isinstance(e, fx.SendHeartbeat) for e in effects)  # nothing sent at once
    effects = node.handle(ev.Stop(), 0.2)
    assert node.facts.view == (view[0], view[1] + 1)  # a new state: the next view, sent at once
    [sent] = [e for e in effects if isinstance(e, fx.SendHeartbeat)]
    assert sent.status.view == node.facts.view


ANNOUNCED = ("state", "substatus", "handover", "generation", "synced_generation")
ANNOUNCED += ("consistent", "last_state", "has_data", "can_serve")
SET_ASIDE = {"node", "fingerprint", "reason", "view", "peer_view"}  # fixed, words, the views


def test_what_grows_the_view_is_every_field_of_the_status_the_peer_decides_on() -> None:
    # a tripwire: a new PeerStatus field must be added to Node._announced (the
    # peer decides on it, so a change of it is a new view) or set aside here
    assert {f.name for f in fields(PeerStatus)} == set(ANNOUNCED) | SET_ASIDE
    node = Node(settings(0))
    node.handle(ev.Start(), 0.0)
    status = node.status()
    assert node._announced() == tuple(getattr(status, name) for name in ANNOUNCED)
