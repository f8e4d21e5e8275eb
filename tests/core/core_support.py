"""Helpers for the core's behaviour tests (a module name unique across tests/).

A ``Driver`` wraps one ``Node`` named alpha with a virtual clock (plain
floats): tests say what happens at which time and read the effects back.
``beta(...)`` builds the peer's heartbeat status. The ``to_*`` functions walk
a fresh node into each state through the same inputs a real cluster gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.node import Node
from failover.core.state import (
    INITIAL,
    CheckerPolicy,
    Generation,
    Metadata,
    PeerStatus,
    Settings,
    State,
    SubStatus,
    evolve,
)

SETTINGS = Settings(
    name="alpha",
    peer="beta",
    links=("lan", "serial"),
    heartbeat_interval=1,
    link_timeout=2,
    dead_timeout=3,
    startup_timeout=3,
    # the checker of the older tests: it blocks a takeover and stops a serving node
    checkers=(CheckerPolicy("app-check", when="both", action="stop"),),
)
LINKS = SETTINGS.links
G1 = Generation(1, "alpha")
G1_BETA = Generation(1, "beta")
G2_BETA = Generation(2, "beta")


def beta(
    state: State,
    generation: Generation = INITIAL,
    *,
    synced: Generation = INITIAL,
    substatus: SubStatus = SubStatus.READY,
    consistent: bool = True,
    node: str = "beta",
) -> PeerStatus:
    """The status the peer announces in its heartbeats."""
    return PeerStatus(
        node=node,
        state=state,
        substatus=substatus,
        generation=generation,
        synced_generation=synced,
        consistent=consistent,
        fingerprint=SETTINGS.fingerprint,
    )


@dataclass
class Step:
    """One ``handle`` call as the test saw it."""

    event: ev.Event
    now: float
    before: Metadata
    after: Metadata
    effects: list[fx.Effect]


@dataclass
class Driver:
    """Alpha's node on a virtual clock; every call is recorded in ``steps``."""

    metadata: Metadata = field(default_factory=Metadata)
    settings: Settings = SETTINGS
    now: float = 0.0
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node = Node(self.settings, self.metadata)

    @property
    def state(self) -> State:
        return self.node.state

    def do(self, event: ev.Event, at: float | None = None) -> list[fx.Effect]:
        """Give the node ``event`` at time ``at`` (default: now)."""
        if at is not None:
            assert at >= self.now, "the virtual clock never goes back"
            self.now = at
        before = self.node.facts.metadata
        effects = self.node.handle(event, self.now)
        self.steps.append(Step(event, self.now, before, self.node.facts.metadata, effects))
        return effects

    def hear(
        self,
        status: PeerStatus,
        at: float | None = None,
        links: Iterable[str] = LINKS,
        *,
        echo: bool = True,
    ) -> list[fx.Effect]:
        """A heartbeat from the peer arrives on each of ``links`` at ``at``. With
        ``echo`` it echoes alpha's current view (the peer sent it after hearing
        what alpha announces now); without, it carries ``status.peer_view``."""
        effects: list[fx.Effect] = []
        for link in links:
            heard = evolve(status, peer_view=self.node.facts.view) if echo else status
            effects += self.do(ev.HeartbeatReceived(link, heard), at)
        return effects

    def run_until(self, until: float) -> list[fx.Effect]:
        """Fire the timer at every deadline up to ``until``, then set the clock there."""
        effects: list[fx.Effect] = []
        while (deadline := self.node.next_deadline()) is not None and deadline <= until:
            effects += self.do(ev.Timer(), max(deadline, self.now))
        self.now = until
        return effects


E = TypeVar("E", bound=fx.Effect)


def of_type(effects: Iterable[fx.Effect], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


def records(effects: Iterable[fx.Effect]) -> list[fx.TransitionRecord]:
    return of_type(effects, fx.TransitionRecord)


# --- walking a node into each state -----------------------------------------------------


def to_wait(d: Driver) -> None:
    d.do(ev.Start())
    assert d.state is State.WAIT


def to_alone(d: Driver) -> None:
    """The operator forces a stopped node to serve; the application starts."""
    d.do(ev.Prim())
    d.do(ev.AppStarted())
    assert d.state is State.ALONE


def to_resync(d: Driver) -> None:
    """Started, alpha hears beta serving newer data and resynchronises from it."""
    to_wait(d)
    d.hear(beta(State.ALONE, G1_BETA), at=d.now + 0.5)
    assert d.state is State.RESYNC


def to_secondary(d: Driver) -> None:
    to_resync(d)
    d.do(ev.ResyncDone(G1_BETA))
    d.hear(beta(State.PRIMARY, G1_BETA, synced=G1_BETA))
    assert d.state is State.SECONDARY


def to_primary(d: Driver) -> None:
    """Alpha serves alone, resynchronises beta, which confirms it is in sync."""
    to_alone(d)
    generation = d.node.facts.metadata.generation
    d.hear(beta(State.RESYNC, substatus=SubStatus.TRANSIENT), at=d.now + 0.5)
    d.do(ev.PeerResynced(generation))
    d.hear(beta(State.SECONDARY, generation, synced=generation))
    assert d.state is State.PRIMARY


def stay_stopped(d: Driver) -> None:
    assert d.state is State.STOP


WALKS: dict[State, Callable[[Driver], None]] = {
    State.STOP: stay_stopped,
    State.WAIT: to_wait,
    State.ALONE: to_alone,
    State.PRIMARY: to_primary,
    State.SECONDARY: to_secondary,
    State.RESYNC: to_resync,
}
