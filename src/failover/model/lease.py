"""A focused timing model of the arbitrators: two nodes and one arbitrator
(the witness service, the ping witness or an etcd lease), explored
exhaustively to check S1, never two nodes serving at the same real instant.

The full simulator (``model/sim.py``) runs two whole cores on one shared
clock in rounds of a heartbeat; it cannot express a clock that runs fast, a
message that takes a second, or etcd running a lease out half a second late.
This model keeps only what the timing of a lease depends on, and nothing of
the data plane or the state table:

- **real time** in integer ticks (``tick`` seconds, 0.25 s by default);
- **a clock per node and one for the arbitrator**, each running at a rate
  within ``[1 - rho, 1 + rho]`` of real time;
- **messages** between each node and the arbitrator, each delivered within
  ``d`` seconds or lost; heartbeats between the nodes (ping only: the other
  kinds never ask their peer anything that the lease depends on);
- **faults**: the loss of any message, a cut of any direction of any link
  (node-node, node-arbitrator) and its heal, a node paused (its loop hangs:
  no renewal, no heartbeat, no message handled, while its watchdog still
  fences at the core's deadline) and resumed, a node crashed, the
  arbitrator restarted (a witness restart or an etcd leader change: a held
  lease counts again from the restart, never shorter).

**Timers as windows.** A duration ``D`` measured on a clock of rate within
``[1 - rho, 1 + rho]`` from the real instant ``t`` ends in the real interval
``[t + D / (1 + rho), t + D / (1 - rho)]``. Every timer is kept as such a
window in ticks, ``[floor(D / (1 + rho) / tick), ceil(D / (1 - rho) / tick)]``
after the tick it started in; it may fire at any tick of its window, in any
order with anything else at that tick, and time cannot pass its end without
it firing. Messages are windows ``[0, ceil(d / tick)]`` likewise.

**Why this is sound for S1.** Take any real run: events at real instants,
clocks within the rate bound, delays within ``d``. Map each instant ``r`` to
the tick ``ceil(r / tick)`` and keep the events' order. The difference of the
ticks of two instants ``x`` seconds apart is within ``[floor(x / tick),
ceil(x / tick)]``, so each timer of the run fires within its window above and
each message arrives within its window: the mapped run is a run of the model,
with the same events in the same order. A real instant at which both nodes
serve lies between the second node's start and the first node's stop, so in
the mapped run the second start comes before the first stop: the model
reaches a state with both serving. The converse does not hold: rounding can
cost up to two ticks of slack, so a configuration within two ticks of its
inequality may be reported unsafe when it is not (hence the fine tick).
States are kept in time relative to now (every window shifted at each tick),
so the state space is finite and the search ends when nothing new is found.

**The nodes act by the core's rules**, the same functions the daemon runs
(``failover.core.arbitration``): a node counts its lease from its ask, its
fence deadline is ``fence_deadline`` (``requested_at + ttl - margin``) on its
clock, a grant heard after that deadline gives nothing (``grant_run_out``:
the model's pending ask runs out at the same deadline), a node renews every
``renew`` while it serves, and only the answer to its newest ask counts (as
the executor reports). The witness decides by ``decide_request`` and
``decide_renewal``; etcd decides grants by ``decide_request`` too (its
transaction's compares make the ruling hold), runs a lease out at least
``ttl`` after the last keepalive it *received* and at most ``expiry_delay``
later (on its own clock), and a keepalive of a lease run out is lost; the
ping witness keeps no record and grants whoever reaches it.

When a node asks: with a record (witness, etcd), whenever it does not serve
and has no ask pending (an over-approximation of the core's gate: the record
is what must keep two nodes apart), save an ask the record surely denies
(``_surely_denied``); with ping, only once it has heard no
heartbeat from its peer for ``dead_timeout`` (the core's ``peer_lost``).
That timer starts when the peer's heartbeats stop reaching the node (a cut,
the peer paused or crashed): the peer's last heartbeat was sent at most
``heartbeat_interval`` earlier on its clock, and arrived within ``d``.

**Depth** counts events: every step but the passage of time (a tick is
free; it is enabled while no timer or message is due); at most
``max_faults`` of them (2 by default) are faults: a loss, a cut or a heal, a
pause or a resume, a crash, an arbitrator restart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from failover.core.arbitration import (
    LeaseRecord,
    decide_renewal,
    decide_request,
    fence_deadline,
    lease_timing_holds,
    ping_timing_holds,
)
from failover.core.state import Settings
from failover.model.run import no_garbage_collection

KINDS = ("witness", "etcd", "ping")
NODES = ("a", "b")
ARB = "w"
NAMES = {"a": "alpha", "b": "beta", "w": "arbitrator"}

MAX_TICKS = 1000
"""The longest duration, in ticks, a configuration may give (a state holds
timers in ticks from now, so the state space grows with them)."""

Window = tuple[int, int]  # ticks from now: may fire from the first, must by the second


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    kinds: tuple[str, ...]


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant(
            "fence-without-margin",
            "serve after the lease deadline: the node fences at requested_at + ttl (no margin)",
            ("witness", "etcd"),
        ),
        Mutant(
            "fence-from-reply",
            "serve after the lease deadline: the node counts its lease from the reply's "
            "receipt, not from its ask",
            ("witness", "etcd", "ping"),
        ),
        Mutant(
            "expiry-from-grant",
            "take over before expiry: the arbitrator counts the lease from the grant, "
            "renewals (etcd keepalives) do not extend it",
            ("witness", "etcd"),
        ),
        Mutant(
            "early-takeover",
            "take over before expiry: the ping peer asks once dead_timeout (2 s) has passed, "
            "before the holder's deadline (lease_ttl - lease_margin + heartbeat_interval)",
            ("ping",),
        ),
        Mutant(
            "clock-rate-ignored",
            "the margin is smaller than the clock rates need: clocks within 10% of real time "
            "with the default margin",
            ("witness", "etcd"),
        ),
    )
}


@dataclass(frozen=True)
class LeaseConfig:
    """The timing of one arbitrator kind (seconds; ``rho`` a fraction); the
    lease's and the heartbeats' defaults are the core's (``Settings``)."""

    kind: str = "witness"
    ttl: float = Settings.lease_ttl
    renew: float = Settings.lease_renew
    margin: float = Settings.lease_margin
    rho: float = 0.01  # every clock's rate within [1 - rho, 1 + rho] of real time
    d: float = 0.5  # a message arrives within d, or is lost
    expiry_delay: float = 0.5  # etcd: a lease runs out up to this late (its 500 ms check)
    dead_timeout: float = Settings.dead_timeout  # ping: the peer is lost after this silence
    heartbeat_interval: float = Settings.heartbeat_interval
    tick: float = 0.25
    ping_limit: bool = True  # ping: allow a cut between the nodes while both reach the witness
    max_faults: int | None = 2  # at most this many faults per trace (None: the depth)
    mutant: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if not 0 <= self.rho < 1:
            raise ValueError(f"rho must be in [0, 1), not {self.rho}")
        durations = {
            "tick": (self.tick, True),
            "ttl": (self.ttl, True),
            "renew": (self.renew, True),
            "heartbeat_interval": (self.heartbeat_interval, True),
            "dead_timeout": (self.dead_timeout, True),
            "margin": (self.margin, False),
            "d (the delay bound)": (self.d, False),
            "expiry_delay": (self.expiry_delay, False),
        }
        for name, (value, positive) in durations.items():
            # (a NaN fails every comparison: it is caught here, not in a window)
            if not (value > 0 if positive else value >= 0) or not math.isfinite(value):
                bound = "above 0" if positive else "at least 0"
                raise ValueError(f"{name} must be a number of seconds {bound}, not {value}")
            if value / self.tick > MAX_TICKS:
                raise ValueError(
                    f"{name} ({value:g} s) must span at most {MAX_TICKS} ticks of "
                    f"{self.tick:g} s: every timer is a window of ticks in each state"
                )
        if self.ttl <= self.margin:
            raise ValueError(f"ttl ({self.ttl:g}) must be above margin ({self.margin:g})")
        if self.mutant is not None and self.mutant not in MUTANTS:
            raise ValueError(f"unknown mutant {self.mutant!r}")

    def timing_holds(self) -> bool:
        """The core's inequality for this kind (``lease_timing_holds``, or
        ``ping_timing_holds``): what the model is to confirm, or refute."""
        if self.kind == "ping":
            return ping_timing_holds(
                ttl=self.ttl,
                rho=self.rho,
                dead_timeout=self.dead_timeout,
                heartbeat_interval=self.heartbeat_interval,
            )
        return lease_timing_holds(ttl=self.ttl, margin=self.margin, rho=self.rho)

    def window(self, seconds: float, *, late: float = 0.0) -> Window:
        """The ticks in which a duration of ``seconds`` on a clock with the rate
        bound ends (``late``: it may also end up to that much later, on that clock)."""
        lo = math.floor(seconds / (1 + self.rho) / self.tick + 1e-9)
        hi = math.ceil((seconds + late) / (1 - self.rho) / self.tick - 1e-9)
        return (max(lo, 0), max(hi, 0))


def for_kind(kind: str, mutant: str | None = None, **overrides: object) -> LeaseConfig:
    """The configuration checked for ``kind`` (the defaults of the daemon for
    the witness and etcd; for ping, the daemon's renew and margin with a ttl
    and a dead_timeout the configuration accepts), with a mutant's changes."""
    base: dict[str, object] = {"kind": kind}
    if kind == "ping":
        # a setting the configuration accepts (its checks on ping: the renewal and
        # its probes fit in ttl - margin; ping_timing_holds, here at the clock-rate
        # bound: (ttl + heartbeat) / (1 - rho) <= dead_timeout / (1 + rho))
        base.update(ttl=5.0, dead_timeout=5.75, ping_limit=False)
    if mutant == "early-takeover":
        base.update(dead_timeout=2.0)
    if mutant == "clock-rate-ignored":
        base.update(rho=0.1)
    base.update(overrides)
    return LeaseConfig(mutant=mutant, **base)  # type: ignore[arg-type]


class NodeState(NamedTuple):
    status: str = "up"  # up, paused (the loop hangs), crashed
    serving: bool = False
    fence: Window | None = None  # the held lease's fence deadline (the watchdog's too)
    renew: Window | None = None  # the next renewal (the loop's timer)
    pending: Window | None = None  # the newest ask, until its own fence deadline
    renewing: bool = False  # that ask is a renewal
    lost: Window | bool | None = None  # ping: the peer-lost timer; True once it fired


class Msg(NamedTuple):
    src: str
    dst: str
    kind: str  # ask, renew (to the arbitrator); granted, denied, lost (to a node)
    current: bool  # the node's newest ask, or the answer to it
    window: Window


class World(NamedTuple):
    nodes: tuple[NodeState, NodeState]
    record: LeaseRecord | None  # witness, etcd: expires_at None while live, 0.0 run out
    expiry: Window | None  # when the arbitrator's clock runs the held lease out
    msgs: tuple[Msg, ...]
    cuts: frozenset[tuple[str, str]]  # directions cut
    faults: int = 0


RUN_OUT = 0.0  # the record's expires_at once the arbitrator's timer has run it out


def _idx(node: str) -> int:
    return NODES.index(node)


def _shift(w: Window) -> Window:
    # a window past its end is due (nothing lets time pass it) or frozen (its
    # owner is paused): either way it is kept at 0 so the state space stays finite
    return (max(w[0] - 1, 0), max(w[1] - 1, 0))


class LeaseModel:
    """The transition system of one configuration."""

    def __init__(self, config: LeaseConfig) -> None:
        self.config = c = config
        mutant = c.mutant
        margin = 0.0 if mutant == "fence-without-margin" else c.margin
        # the core's own arithmetic, on the node's clock, from an ask at 0
        self.fence_window = c.window(fence_deadline(0.0, ttl=c.ttl, margin=margin))
        self.renew_window = c.window(c.renew)
        late = c.expiry_delay if c.kind == "etcd" else 0.0
        self.expiry_window = c.window(c.ttl, late=late)
        self.msg_window: Window = (0, math.ceil(c.d / c.tick - 1e-9))
        # ping: the peer's last heartbeat left up to one interval (its clock)
        # before its heartbeats stopped, and arrived up to d later
        lo = math.floor(
            (c.dead_timeout / (1 + c.rho) - c.heartbeat_interval / (1 - c.rho)) / c.tick + 1e-9
        )
        hi = math.ceil((c.d + c.dead_timeout / (1 - c.rho)) / c.tick - 1e-9)
        self.lost_window: Window = (max(lo, 0), hi)
        self.directions = [("a", "w"), ("w", "a"), ("b", "w"), ("w", "b")]
        if c.kind == "ping":
            self.directions += [("a", "b"), ("b", "a")]

    # --- roots --------------------------------------------------------------------

    def roots(self) -> dict[str, World]:
        """``held``: alpha was just granted the lease and serves, beta waits;
        ``free`` (witness, etcd): nobody holds it, both may ask."""
        c = self.config
        alpha = NodeState(serving=True, fence=self.fence_window, renew=self.renew_window)
        roots: dict[str, World] = {}
        record = None
        if c.kind != "ping":
            record = LeaseRecord(holder="alpha", granted_to="alpha")
        roots["held"] = World(
            (alpha, NodeState()),
            record,
            self.expiry_window if record else None,
            (),
            frozenset(),
        )
        if c.kind != "ping":
            roots["free"] = World((NodeState(), NodeState()), LeaseRecord(), None, (), frozenset())
        return roots

    # --- the property -------------------------------------------------------------

    @staticmethod
    def both_serve(world: World) -> bool:
        return world.nodes[0].serving and world.nodes[1].serving

    def allowed(self, world: World) -> bool:
        """Without ``ping_limit``: no cut between the nodes while both reach the witness."""
        if self.config.kind != "ping" or self.config.ping_limit:
            return True
        cuts = world.cuts
        if ("a", "b") not in cuts and ("b", "a") not in cuts:
            return True
        return not all((n, ARB) not in cuts and (ARB, n) not in cuts for n in NODES)

    # --- time -----------------------------------------------------------------------

    def _due(self, world: World) -> Iterator[Window]:
        for node in world.nodes:
            if node.status == "crashed":
                continue
            for w in (node.fence, node.pending):  # the watchdog's clock: even paused
                if w is not None:
                    yield w
            if node.status == "up":
                if node.renew is not None:
                    yield node.renew
                if isinstance(node.lost, tuple):
                    yield node.lost
        if world.expiry is not None:
            yield world.expiry
        for m in world.msgs:
            if m.dst == ARB or world.nodes[_idx(m.dst)].status == "up":
                yield m.window

    def tick(self, world: World) -> World | None:
        """One tick of real time, if nothing is due now."""
        if any(w[1] < 1 for w in self._due(world)):
            return None

        def s(w: Window | None) -> Window | None:
            return None if w is None else _shift(w)

        def shift(n: NodeState) -> NodeState:
            return n._replace(
                fence=s(n.fence),
                renew=s(n.renew),
                pending=s(n.pending),
                lost=_shift(n.lost) if isinstance(n.lost, tuple) else n.lost,
            )

        nodes = (shift(world.nodes[0]), shift(world.nodes[1]))
        msgs = tuple(sorted(m._replace(window=_shift(m.window)) for m in world.msgs))
        return world._replace(nodes=nodes, expiry=s(world.expiry), msgs=msgs)

    # --- events -----------------------------------------------------------------------

    def events(self, world: World) -> Iterator[tuple[str, World]]:
        """Every event enabled now, each with the world it leads to."""
        if self.config.kind != "ping":
            yield from self._events(world)
            return
        for label, raw in self._events(world):
            nxt = self._heartbeats(world, raw)
            if self.allowed(nxt):
                yield label, nxt

    def _events(self, world: World) -> Iterator[tuple[str, World]]:
        c = self.config
        faults = c.max_faults is None or world.faults < c.max_faults
        for i, name in enumerate(NODES):
            node = world.nodes[i]
            who = NAMES[name]
            if node.status == "crashed":
                continue
            if node.fence is not None and node.fence[0] == 0:
                yield (
                    f"{who}'s fence deadline passes: it stops serving",
                    self._set(
                        world,
                        i,
                        node._replace(serving=False, fence=None, renew=None)._replace(
                            pending=None if node.renewing else node.pending, renewing=False
                        ),
                    ),
                )
            if node.pending is not None and node.pending[0] == 0 and node.fence is None:
                yield (
                    f"{who}'s ask runs out (grant_run_out)",
                    self._set(world, i, node._replace(pending=None, renewing=False)),
                )
            if node.status == "up":
                if node.renew is not None and node.renew[0] == 0:
                    yield f"{who} renews", self._ask(world, i, renewal=True)
                if isinstance(node.lost, tuple) and node.lost[0] == 0:
                    yield (
                        f"{who} loses its peer (dead_timeout)",
                        self._set(world, i, node._replace(lost=True)),
                    )
                may_ask = not node.serving and node.pending is None
                if c.kind == "ping":
                    may_ask = may_ask and node.lost is True
                else:
                    may_ask = may_ask and not self._surely_denied(world, who)
                if may_ask:
                    yield f"{who} asks for the lease", self._ask(world, i, renewal=False)
            if not faults:
                continue
            if node.status == "up":
                yield f"pause {who}", self._fault(world, i, node._replace(status="paused"))
            if node.status == "paused":
                yield f"resume {who}", self._fault(world, i, node._replace(status="up"))
            crashed = NodeState(status="crashed")
            yield f"crash {who}", self._fault(world, i, crashed, drop_to=name)
        if world.expiry is not None and world.expiry[0] == 0:
            yield "the lease runs out at the arbitrator", self._expire(world)
        if faults and c.kind != "ping" and world.expiry is not None:
            yield "restart the arbitrator", self._restart(world)
        for m in sorted(set(world.msgs)):
            if m.dst == ARB or world.nodes[_idx(m.dst)].status == "up":
                yield f"deliver {self._show(m)}", self._deliver(world, m)
            if faults:
                yield f"lose {self._show(m)}", self._count(self._without(world, m))
        if not faults:
            return
        for src, dst in self.directions:
            arrow = f"{NAMES[src]} -> {NAMES[dst]}"
            if (src, dst) in world.cuts:
                yield f"heal {arrow}", self._count(world._replace(cuts=world.cuts - {(src, dst)}))
            else:
                yield f"cut {arrow}", self._count(world._replace(cuts=world.cuts | {(src, dst)}))

    def _surely_denied(self, world: World, who: str) -> bool:
        """The record is held by the peer and cannot run out before an ask made
        now must have arrived (nothing else frees it). Such an ask is left out:
        it would be denied, a denial changes nothing at the arbitrator, and
        until the denial it only keeps the node from asking again (the answers
        it makes stale are already ignored: the node has no ask pending)."""
        record = world.record
        assert record is not None
        held = record.holder not in (None, who) and record.expires_at != RUN_OUT
        return held and world.expiry is not None and world.expiry[0] > self.msg_window[1]

    @staticmethod
    def _show(m: Msg) -> str:
        old = "" if m.current else " (an older one)"
        return f"{m.kind}{old} {NAMES[m.src]} -> {NAMES[m.dst]}"

    @staticmethod
    def _set(world: World, i: int, node: NodeState) -> World:
        nodes = list(world.nodes)
        nodes[i] = node
        return world._replace(nodes=(nodes[0], nodes[1]))

    def _count(self, world: World) -> World:
        """A fault: counted in the state only when faults are bounded."""
        if self.config.max_faults is None:
            return world
        return world._replace(faults=world.faults + 1)

    @staticmethod
    def _without(world: World, m: Msg) -> World:
        msgs = list(world.msgs)
        msgs.remove(m)
        return world._replace(msgs=tuple(msgs))

    def _send(self, world: World, m: Msg) -> World:
        if (m.src, m.dst) in world.cuts:
            return world
        if m.dst != ARB and world.nodes[_idx(m.dst)].status == "crashed":
            return world
        return world._replace(msgs=tuple(sorted((*world.msgs, m))))

    def _fault(self, world: World, i: int, node: NodeState, drop_to: str = "") -> World:
        world = self._count(self._set(world, i, node))
        if drop_to:
            world = world._replace(msgs=tuple(m for m in world.msgs if m.dst != drop_to))
        return world

    def _ask(self, world: World, i: int, *, renewal: bool) -> World:
        """The core asks (``request_grant``) or renews (``_housekeep``): its lease
        will count from now; any older ask's answer will be dropped."""
        name = NODES[i]
        node = world.nodes[i]
        msgs = tuple(m._replace(current=False) if name in (m.src, m.dst) else m for m in world.msgs)
        node = node._replace(pending=self.fence_window, renewing=renewal)
        if renewal:
            node = node._replace(renew=self.renew_window)
        world = self._set(world._replace(msgs=msgs), i, node)
        kind = "renew" if renewal else "ask"
        return self._send(world, Msg(name, ARB, kind, True, self.msg_window))

    def _deliver(self, world: World, m: Msg) -> World:
        world = self._without(world, m)
        if m.dst == ARB:
            return self._arbitrate(world, m)
        i = _idx(m.dst)
        node = world.nodes[i]
        if not m.current or node.pending is None:
            return world  # the executor reports only the newest ask's answer
        if m.kind == "granted":
            fence = node.pending
            if self.config.mutant == "fence-from-reply":
                fence = self.fence_window
            renew = node.renew if node.renewing else self.renew_window
            node = node._replace(serving=True, fence=fence, renew=renew, pending=None)
        elif m.kind == "lost":
            node = NodeState(status=node.status, lost=node.lost)
        else:  # denied
            node = node._replace(pending=None, renewing=False)
        return self._set(world, i, node._replace(renewing=False))

    def _arbitrate(self, world: World, m: Msg) -> World:
        c = self.config
        requester = NAMES[m.src]
        if c.kind == "ping":
            granted, record, expiry = True, None, None
        else:
            assert world.record is not None
            if m.kind == "ask":
                base = world.record.generation
                verdict = decide_request(
                    world.record,
                    requester=requester,
                    wanted=base,
                    base=base,
                    forced=False,
                    now=RUN_OUT,
                    ttl=c.ttl,
                )
            else:
                verdict = decide_renewal(world.record, requester=requester, now=RUN_OUT, ttl=c.ttl)
            granted = verdict.granted
            record = replace(verdict.record, expires_at=None) if granted else world.record
            expiry = world.expiry
            if granted and not (m.kind == "renew" and c.mutant == "expiry-from-grant"):
                expiry = self.expiry_window
        world = world._replace(record=record, expiry=expiry)
        kind = "granted" if granted else ("lost" if m.kind == "renew" else "denied")
        return self._send(world, Msg(ARB, m.src, kind, m.current, self.msg_window))

    def _expire(self, world: World) -> World:
        assert world.record is not None
        if self.config.kind == "etcd":  # the key is deleted with its lease
            record = replace(world.record, holder=None, expires_at=None)
        else:  # the witness keeps the holder; the lease is free for anyone
            record = replace(world.record, expires_at=RUN_OUT)
        return world._replace(record=record, expiry=None)

    def _restart(self, world: World) -> World:
        """A witness restart or an etcd leader change: the held lease counts
        again from now (never shorter)."""
        assert world.expiry is not None
        lo, hi = self.expiry_window
        expiry = (max(world.expiry[0], lo), max(world.expiry[1], hi))
        return self._count(world._replace(expiry=expiry))

    def _heartbeats(self, before: World, after: World) -> World:
        """Ping: a node's peer-lost timer starts when its peer's heartbeats stop
        reaching it, and stops when they flow again."""
        if self.config.kind != "ping":
            return after
        for i, name in enumerate(NODES):
            peer = NODES[1 - i]
            was, now = self._flows(before, peer, name), self._flows(after, peer, name)
            node = after.nodes[i]
            if was == now or node.status == "crashed":
                continue
            after = self._set(after, i, node._replace(lost=None if now else self.lost_window))
        return after

    @staticmethod
    def _flows(world: World, src: str, dst: str) -> bool:
        return world.nodes[_idx(src)].status == "up" and (src, dst) not in world.cuts


@dataclass
class LeaseReport:
    config: LeaseConfig
    depth: int
    states: int = 0
    per_depth: list[int] = field(default_factory=list)
    seconds: float = 0.0
    takeovers: int = 0  # states in which beta serves: the search reached a takeover
    stuck: int = 0  # states where nothing can happen, not even time passing (must be 0)
    trace: list[tuple[float, str]] | None = None  # (real time, event) to the violation
    root: str = ""

    @property
    def ok(self) -> bool:
        return self.trace is None

    def render(self) -> str:
        c = self.config
        head = (
            f"{c.kind}: ttl {c.ttl:g} s, renew {c.renew:g} s, margin {c.margin:g} s, "
            f"clock rates within {c.rho:.2%}, delays up to {c.d:g} s, tick {c.tick:g} s"
        )
        if c.kind == "etcd":
            head += f", expiry up to {c.expiry_delay:g} s late"
        if c.kind == "ping":
            head += f", dead_timeout {c.dead_timeout:g} s, heartbeat {c.heartbeat_interval:g} s"
            head += ", the ping limit " + ("allowed" if c.ping_limit else "excluded")
        inequality = "ping_timing_holds" if c.kind == "ping" else "lease_timing_holds"
        head += f"; the core's {inequality}: {'yes' if c.timing_holds() else 'no'}"
        if c.mutant:
            head += f"\nmutant {c.mutant}: {MUTANTS[c.mutant].description}"
        lines = [head]
        if self.stuck:
            lines.append(f"model error: {self.stuck} states where nothing, not even time, can pass")
        if self.trace is None:
            lines.append(
                f"S1 holds: never two nodes serving, to depth {self.depth} "
                f"({self.states} states, beta serving in {self.takeovers}, {self.seconds:.1f} s; "
                f"per depth {', '.join(map(str, self.per_depth))})"
            )
        else:
            lines.append(
                f"S1 violated: both nodes serve (from root {self.root}, "
                f"{len(self.trace)} events, {self.states} states, {self.seconds:.1f} s):"
            )
            lines += [f"  {n:2d}. t={t:g} s  {label}" for n, (t, label) in enumerate(self.trace, 1)]
        return "\n".join(lines)


Parent = tuple["World | None", str]


@no_garbage_collection()
def check(
    config: LeaseConfig, depth: int = 12, *, progress: Callable[[str], None] | None = None
) -> LeaseReport:
    """Breadth first to ``depth`` events (time passes for free), checking S1 on
    every state; the first violation found has a shortest trace in events."""
    model = LeaseModel(config)
    report = LeaseReport(config, depth)
    start = time.perf_counter()
    parents: dict[World, Parent] = {}
    frontier: list[World] = []
    for name, root in model.roots().items():
        if root not in parents:
            parents[root] = (None, name)
            frontier.append(root)
    limit = config.max_faults
    for level in range(depth + 1):
        # close the level under the passage of time (free)
        queue = list(frontier)
        for world in queue:
            later = model.tick(world)
            if later is not None and later not in parents:
                parents[later] = (world, "")
                queue.append(later)
        report.per_depth.append(len(queue))
        for world in queue:
            report.takeovers += world.nodes[1].serving
            if model.both_serve(world):
                report.trace, report.root = _trace(world, parents, config.tick)
                report.states = len(parents)
                report.seconds = time.perf_counter() - start
                return report
        if progress is not None:
            progress(f"depth {level}: {len(queue)} states ({time.perf_counter() - start:.1f} s)")
        if level == depth:
            break
        frontier = []
        for world in queue:
            moves = False
            for label, nxt in model.events(world):
                moves = True
                if limit is not None and nxt.faults > limit:
                    continue
                if nxt not in parents:
                    parents[nxt] = (world, label)
                    frontier.append(nxt)
            if not moves and model.tick(world) is None:
                report.stuck += 1  # a model error: it would hide every run past this state
    report.states = len(parents)
    report.seconds = time.perf_counter() - start
    return report


def _trace(
    world: World, parents: dict[World, Parent], tick: float
) -> tuple[list[tuple[float, str]], str]:
    steps: list[str] = []
    current: World | None = world
    root = ""
    while current is not None:
        parent, label = parents[current]
        if parent is None:
            root = label
        else:
            steps.append(label)
        current = parent
    steps.reverse()
    trace: list[tuple[float, str]] = []
    ticks = 0
    for label in steps:
        if label == "":
            ticks += 1
        else:
            trace.append((ticks * tick, label))
    return trace, root
