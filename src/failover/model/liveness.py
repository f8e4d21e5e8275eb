"""Liveness (L1) and stability (L2), checked from every explored world.

From a world, the *fair continuation* adds no fault and no command: it heals
every partition and arbitrator cut (and disarms any etcd answer armed to be
lost or late), then lets heartbeat intervals pass (each
tick delivers every message in flight and moves any resync one step on).
Crashed servers stay down. The continuation is deterministic,
so its verdicts are memoised per world key: runs from nearby worlds soon
meet, which keeps checking every reached world affordable.

- L1: when both servers are up, started and healthy, the continuation
  reaches primary + secondary, both ready (but at a first start with data
  on both nodes, where the operator chooses). When only one server is up,
  started and healthy and it can know its data is the newest (it serves, it
  was the last to serve, or the arbitrator records its generation; never
  with a copy not consistent, or one whose resync end its source never
  confirmed, or at a first start), the continuation reaches it serving, ready.
- L2: from a world that is already protected (primary + secondary, ready,
  every link up) or serving alone with the peer down, its application
  running, the continuation changes no state.
- L3: when L1's premise holds and at least one of those servers can run the
  application (it is not broken there; and the node serves already, or its
  restart budget is not spent), the continuation reaches a serving node,
  ready, whose application runs.
- L4: the continuation (deterministic, over finitely many world keys) ends
  in a cycle. Run twice from its first world (the first lap lets the
  reasons, which keys leave out, settle), the cycle changes no state, mints
  no generation, and writes records only for paced retries, two each (the
  retry and its outcome): of the application, at most one per
  ``retry_pause_max``; of the arbitrator's grant by a node that waits
  without its peer, at most one per ``startup_timeout`` (its recheck).
  Before the cycle, it changes state at most ``L4_CHANGES`` times, mints at
  most ``L4_MINTS`` generations and writes at most ``L4_RECORDS`` records.
  So every failure or command costs bounded work, and a failure that
  persists is retried at the capped pace, never in a loop that mints
  generations or changes state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from failover.core.node import unconfirmed_copy
from failover.core.state import State, SubStatus
from failover.model.sim import NAMES, Cluster, StepInfo, World, WorldKey

L4_CHANGES = 12
"""State changes the fair continuation may make from any reached world."""
L4_MINTS = 2
"""Generations it may mint (a takeover, then the one above a peer's)."""
L4_RECORDS = 60
"""Transition records it may write before it settles."""
L4_ROUNDS = 200
"""Rounds after which a continuation that has not cycled is reported."""


@dataclass(frozen=True)
class LivenessFailure:
    invariant: str
    message: str
    world: World


@dataclass
class LivenessReport:
    checked: int = 0
    protected_goal: int = 0
    serving_goal: int = 0
    stable_checked: int = 0
    service_goal: int = 0
    cost_checked: int = 0
    failures: list[LivenessFailure] = field(default_factory=list)


def _started(world: World, i: int) -> bool:
    host = world.hosts[i]
    core = host.core
    return (
        core is not None
        and core.state is not State.STOP
        and not host.site_down  # (ground truth: whatever the core made of it)
        and not core.checkers_down
        and not core.second_only
    )


def goal(cluster: Cluster, world: World) -> str | None:
    """Which L1 goal applies to ``world``: "protected", "serving <node>" or None."""
    up = [h.core is not None for h in world.hosts]
    if all(up):
        if not (_started(world, 0) and _started(world, 1)):
            return None
        if not (world.hosts[0].stored.consistent or world.hosts[1].stored.consistent):
            return None
        if all(h.stored.fresh and h.data for h in world.hosts):
            return None  # a first start with data on both nodes: the operator chooses
        return "protected"
    for i in range(2):
        if up[i] and _started(world, i) and _knows_newest(cluster, world, i):
            return f"serving {NAMES[i]}"
    return None


def _knows_newest(cluster: Cluster, world: World, i: int) -> bool:
    host = world.hosts[i]
    core = host.core
    assert core is not None
    if core.state.serving:
        return True
    meta = host.stored
    if meta.fresh:
        return False  # a first start compares both nodes' data: never decided blind
    if not meta.consistent or unconfirmed_copy(meta):
        # (a copy whose resync end its source never confirmed may lack writes
        # the source acknowledged in that very generation: an arbitrator's
        # record of the generation does not make it the newest data)
        return False
    if cluster.config.kind.keeps_record:  # (a ping witness knows no generation)
        lease = world.lease
        return lease is not None and (
            lease.generation == meta.generation or lease.generation.initial
        )
    return (
        meta.last_state is State.ALONE and meta.generation.counter >= meta.peer_generation.counter
    )


def can_run(cluster: Cluster, world: World, i: int) -> bool:
    """L3's premise for server ``i``: up, started, no blocking checker down, its
    application not broken, and it serves, or its restart budget is not
    spent (a node that spent it announces that it cannot serve: its peer
    keeps retrying rather than hand the service back within the window)."""
    host = world.hosts[i]
    core = host.core
    if core is None or not _started(world, i) or host.app_broken:
        return False
    window = world.now - cluster.settings[i].restart_window
    spent = sum(1 for t in core.restarts if t > window) >= cluster.settings[i].max_restarts
    return core.state.serving or not spent


def service_premise(cluster: Cluster, world: World) -> bool:
    return goal(cluster, world) is not None and any(can_run(cluster, world, i) for i in range(2))


def reached(world: World, target: str) -> bool:
    hosts = world.hosts
    if target == "service":
        return any(
            h.core is not None
            and h.core.state.serving
            and h.core.app_pending is None
            and h.app_running
            and not h.app_stopping
            for h in hosts
        )
    if target == "protected":
        states = {h.core.state for h in hosts if h.core is not None}
        ready = all(h.core is not None and h.core.substatus is SubStatus.READY for h in hosts)
        return states == {State.PRIMARY, State.SECONDARY} and ready
    i = NAMES.index(target.split()[1])
    core = hosts[i].core
    return core is not None and core.state.serving and core.substatus is SubStatus.READY


def fair_round(cluster: Cluster) -> list[str]:
    """One round of the fair continuation on the loaded world (heal, then one
    tick, which delivers everything in flight); returns the state changes it
    caused, as "node: from -> to" strings."""
    return _state_changes(_fair_round_info(cluster))


def _fair_round_info(cluster: Cluster) -> StepInfo:
    """One round of the fair continuation; what the tick did."""
    for label in _to_heal(cluster.world):
        cluster.apply(label)
    return cluster.apply("tick")


def _to_heal(world: World) -> list[str]:
    """What the fair continuation heals before its tick: every partition, the
    arbitrator cut of a running node, an etcd answer armed to be lost or late."""
    labels = [f"heal {link}" for link in sorted(world.partitioned)]
    labels += [
        f"arb_heal {NAMES[i]}"
        for i, h in enumerate(world.hosts)
        if h.core is not None and not h.arb_reachable
    ]
    if world.lease_io.armed:
        labels.append("arb_disarm")
    return labels


def _healed(world: World) -> bool:
    """Nothing for the fair continuation to heal: a tick from ``world`` is one
    of its rounds (so an explored tick edge may stand for it)."""
    return not _to_heal(world)


def _state_changes(info: object) -> list[str]:
    records = getattr(info, "records", [])
    return [f"{r.node}: {r.source} -> {r.target}" for r in records if r.source != r.target]


def check_liveness(
    cluster: Cluster,
    worlds: list[World],
    *,
    rounds: int = 30,
    known: dict[WorldKey, World] | None = None,
    ticks: dict[WorldKey, WorldKey] | None = None,
    tick_costs: dict[WorldKey, RoundCost] | None = None,
    keys: list[WorldKey] | None = None,
) -> LivenessReport:
    """L1 and L2 from every world in ``worlds``. ``known`` (worlds by key) and
    ``ticks`` (each world's successor by one tick, as the exploration found
    it) let the fair continuation follow the explored graph where a tick is
    all it does, instead of simulating it again. ``keys``: the key of each
    world, when known already."""
    report = LivenessReport()
    horizon = cluster.config.timing.horizon
    verdict: dict[tuple[WorldKey, str], bool] = {}
    costs: dict[WorldKey, _Cost] = {}
    graph = _Graph(known or {}, ticks or {}, tick_costs or {})
    if keys is None:
        keys = [world.key(horizon) for world in worlds]
    for world, key in zip(worlds, keys, strict=True):
        graph.rounds.clear()  # the rounds simulated are shared by this world's checks only
        target = goal(cluster, world)
        report.checked += 1
        if target is not None:
            if target == "protected":
                report.protected_goal += 1
            else:
                report.serving_goal += 1
            if not _eventually(cluster, world, key, target, rounds, verdict, horizon, graph):
                report.failures.append(
                    LivenessFailure(
                        "L1", f"{target} is never reached by the fair continuation", world
                    )
                )
        if service_premise(cluster, world):
            report.service_goal += 1
            if not _eventually(cluster, world, key, "service", rounds, verdict, horizon, graph):
                report.failures.append(
                    LivenessFailure(
                        "L3",
                        "a node can run the application, but the fair continuation never "
                        "runs it on a serving node",
                        world,
                    )
                )
        report.cost_checked += 1
        problem = _bounded_cost(cluster, world, key, costs, horizon, graph)
        if problem is not None:
            report.failures.append(LivenessFailure("L4", problem, world))
        if _stable(cluster, world):
            report.stable_checked += 1
            current = world
            for _ in range(rounds // 3):
                current, info = graph.fair_round(cluster, current)
                changes = _state_changes(info)
                if changes:
                    report.failures.append(
                        LivenessFailure(
                            "L2",
                            "state changed without failure or command: " + "; ".join(changes),
                            world,
                        )
                    )
                    break
    return report


@dataclass(frozen=True)
class _Cost:
    """What the fair continuation does from a world until it cycles (the
    cycle's own rounds count zero once they pass L4's test), or why it fails."""

    changes: int = 0
    mints: int = 0
    records: int = 0
    problem: str | None = None

    def plus(self, step: RoundCost) -> _Cost:
        if self.problem is not None:
            return self
        return _Cost(
            self.changes + step.changes, self.mints + step.mints, self.records + step.records
        )


@dataclass(frozen=True)
class RoundCost:
    """What one round (a tick) cost: state changes, generations minted (a
    node's own: one adopted by a resync is not), records, automatic retries."""

    changes: int
    mints: int
    records: int
    retries: int
    asks: int = 0  # requests for the arbitrator's grant


def round_cost(before: World, info: StepInfo, after: World) -> RoundCost:
    mints = 0
    for i, (a, b) in enumerate(zip(before.hosts, after.hosts, strict=True)):
        if a.core is None or b.core is None:
            continue
        new = b.core.metadata.generation
        mints += new != a.core.metadata.generation and new.origin == NAMES[i]
    records = info.records
    return RoundCost(
        changes=sum(1 for r in records if r.source != r.target),
        mints=mints,
        records=len(records),
        retries=sum(1 for r in records if "restart_app" in r.effects),
        asks=sum(1 for r in records if "request_arbitration" in r.effects),
    )


def _bounded_cost(
    cluster: Cluster,
    world: World,
    world_key: WorldKey,
    costs: dict[WorldKey, _Cost],
    horizon: float,
    graph: _Graph,
) -> str | None:
    """L4 from ``world``: follow the fair continuation (along the explored
    tick edges where it can, simulating beyond them) until it meets a world
    whose cost is known or closes a cycle of keys; check the cycle; add the
    rounds up backwards (every world passed gets its cost)."""
    path: list[tuple[WorldKey, RoundCost]] = []
    position: dict[WorldKey, int] = {}
    start: dict[WorldKey, World] = {}
    current, key = world, world_key
    tail: _Cost
    while True:
        if key in costs:
            tail = costs[key]
            break
        if key in position:
            laps = len(path) - position[key]
            tail = _Cost(problem=_cycle_problem(cluster, start[key], laps))
            for cycle_key, _ in path[position[key] :]:
                costs[cycle_key] = tail
            path = path[: position[key]]
            break
        if len(path) >= L4_ROUNDS:
            changes = sum(step.changes for _, step in path)
            mints = sum(step.mints for _, step in path)
            tail = _Cost(
                problem=f"the fair continuation does not settle in {L4_ROUNDS} rounds: "
                f"it changes state {changes} times and mints {mints} generations"
            )
            break
        position[key] = len(path)
        start[key] = current
        following = graph.ticks.get(key)
        healed = _healed(current)
        if healed and following in graph.known and key in graph.tick_costs:
            path.append((key, graph.tick_costs[key]))  # an explored tick edge
            current, key = graph.known[following], following
            continue
        after, info = graph.fair_round(cluster, current)
        path.append((key, round_cost(current, info, after)))
        current = after
        key = current.key(horizon)
    for key, step in reversed(path):
        tail = tail.plus(step)
        if tail.problem is None:
            if tail.changes > L4_CHANGES:
                tail = _Cost(problem=f"the fair continuation changes state {tail.changes} times")
            elif tail.mints > L4_MINTS:
                tail = _Cost(problem=f"the fair continuation mints {tail.mints} generations")
            elif tail.records > L4_RECORDS:
                tail = _Cost(problem=f"the fair continuation writes {tail.records} records")
        costs[key] = tail
    return costs[world_key].problem


def _cycle_problem(cluster: Cluster, world: World, laps: int) -> str | None:
    """Run the cycle that starts at ``world`` (``laps`` rounds long) twice for
    real: the first lap lets reasons settle (keys leave them out), the second
    is judged. No state change, no mint; records only for automatic retries,
    two each, at most one retry per ``retry_pause_max``."""
    cluster.load(world)
    for _ in range(laps):
        _fair_round_info(cluster)
    steps = []
    for _ in range(laps):
        before = cluster.world
        info = _fair_round_info(cluster)
        steps.append(round_cost(before, info, cluster.world))
    changes = sum(step.changes for step in steps)
    mints = sum(step.mints for step in steps)
    if changes or mints:
        return (
            f"without any fault or command the cluster loops for ever: every {laps} "
            f"rounds it changes state {changes} times and mints {mints} generations"
        )
    retries = sum(step.retries for step in steps)
    asks = sum(step.asks for step in steps)
    records = sum(step.records for step in steps)
    timing = cluster.config.timing
    seconds = laps * timing.heartbeat_interval
    allowed = math.ceil(seconds / timing.retry_pause_max)
    allowed_asks = math.ceil(seconds / timing.startup_timeout)
    if records > 2 * (retries + asks) or retries > allowed or asks > allowed_asks:
        return (
            f"without any fault or command the cluster writes {records} records, retries "
            f"{retries} times and asks the arbitrator {asks} times every {laps} rounds (at "
            f"most one retry per {timing.retry_pause_max:g} s and one request per "
            f"{timing.startup_timeout:g} s, two records each)"
        )
    return None


@dataclass
class _Graph:
    known: dict[WorldKey, World]
    ticks: dict[WorldKey, WorldKey]
    tick_costs: dict[WorldKey, RoundCost] = field(default_factory=dict)
    # the fair rounds simulated, by the identity of the world they start from
    # (the round is a function of the whole world): id -> (world, after, info)
    rounds: dict[int, tuple[World, World, StepInfo]] = field(default_factory=dict)

    def fair_round(self, cluster: Cluster, world: World) -> tuple[World, StepInfo]:
        """One round of the fair continuation from ``world``: the world after it
        and what its tick did. A round already simulated from this very world
        object (L1, L3, L4 and L2 from one world follow the same continuation)
        is not simulated again."""
        known = self.rounds.get(id(world))
        if known is not None and known[0] is world:
            return known[1], known[2]
        if cluster.world is not world:  # (after a round, the cluster holds its result)
            cluster.load(world)
        info = _fair_round_info(cluster)
        self.rounds[id(world)] = (world, cluster.world, info)
        return cluster.world, info


def _eventually(
    cluster: Cluster,
    world: World,
    world_key: WorldKey | None,
    target: str,
    rounds: int,
    verdict: dict[tuple[WorldKey, str], bool],
    horizon: float,
    graph: _Graph,
) -> bool:
    current, current_key = world, world_key  # the key: None until it is needed
    path: list[tuple[WorldKey, str]] = []
    result = False
    for _ in range(rounds):
        if reached(current, target):
            result = True
            break
        if current_key is None:
            current_key = current.key(horizon)
        key = (current_key, target)
        if key in verdict:
            result = verdict[key]
            break
        path.append(key)
        following = graph.ticks.get(current_key)
        healed = _healed(current)
        if healed and following is not None and following in graph.known:
            # this round is an explored tick edge
            current, current_key = graph.known[following], following
            continue
        current, _ = graph.fair_round(cluster, current)
        current_key = None
    for key in path:
        verdict[key] = result
    return result


def _stable(cluster: Cluster, world: World) -> bool:
    """Nothing left over from a past fault: no partition or cut, nothing delayed,
    every running node heard its peer within the last heartbeat interval on
    every link (no loss timer is running), and the application runs on the
    serving node (no retry pending)."""
    hosts = world.hosts
    if world.partitioned or world.delayed:
        return False
    if any(not h.arb_reachable for h in hosts if h.core is not None):
        return False
    if world.lease_io.armed or world.lease_io.late:
        return False  # an etcd answer to lose or delay, or one still on its way
    both_up = all(h.core is not None for h in hosts)
    timing = cluster.config.timing
    interval = timing.heartbeat_interval
    for h in hosts:
        lease = None if h.core is None else h.core.lease
        running_down = (  # a renewal was missed
            lease is not None
            and lease.held
            and lease.fence_at is not None
            and lease.fence_at - world.now < timing.lease_ttl - timing.lease_margin - interval
        )
        if running_down:
            return False
    for h in hosts:
        if h.core is None or not both_up:
            continue
        if h.last_heard is None or world.now - h.last_heard > interval:
            return False
        if not all(
            view.up and view.last_seen is not None and world.now - view.last_seen <= interval
            for _name, view in h.core.links
        ):
            return False
    if any(h.core is not None and h.core.substatus is not SubStatus.READY for h in hosts):
        return False
    if any(
        h.core is not None and h.core.state.serving and (not h.app_running or h.core.retry_at)
        for h in hosts
    ):
        return False  # a failing application is being dealt with: a fault not yet over
    states = [None if h.core is None else h.core.state for h in hosts]
    if set(states) == {State.PRIMARY, State.SECONDARY}:
        return True
    return None in states and any(s is State.ALONE for s in states)


__all__ = ["LivenessReport", "SubStatus", "check_liveness", "goal"]


def settle(cluster: Cluster, world: World, target: str = "protected", rounds: int = 30) -> World:
    """Run the fair continuation from ``world`` until ``target`` is reached."""
    cluster.load(world)
    for _ in range(rounds):
        if reached(cluster.world, target):
            return cluster.world
        fair_round(cluster)
    raise RuntimeError(f"{target} not reached from the given world in {rounds} rounds")
