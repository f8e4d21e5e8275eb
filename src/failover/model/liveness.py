"""Liveness (L1) and stability (L2), checked from every explored world.

From a world, the *fair continuation* adds no fault and no command: it heals
every partition and arbitrator cut, then lets heartbeat intervals pass (each
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
  every link up) or serving alone with the peer down, the continuation
  changes no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from failover.core.node import unconfirmed_copy
from failover.core.state import State, SubStatus
from failover.model.sim import NAMES, Cluster, World


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
    failures: list[LivenessFailure] = field(default_factory=list)


def _started(world: World, i: int) -> bool:
    core = world.hosts[i].core
    return (
        core is not None
        and core.state is not State.STOP
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
    if cluster.config.arbitrator:
        lease = world.lease
        return lease is not None and (
            lease.generation == meta.generation or lease.generation.initial
        )
    return (
        meta.last_state is State.ALONE and meta.generation.counter >= meta.peer_generation.counter
    )


def reached(world: World, target: str) -> bool:
    hosts = world.hosts
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
    w = cluster.world
    for link in sorted(w.partitioned):
        cluster.apply(f"heal {link}")
    for i in range(2):
        if w.hosts[i].core is not None and not cluster.world.hosts[i].arb_reachable:
            cluster.apply(f"arb_heal {NAMES[i]}")
    return _state_changes(cluster.apply("tick"))


def _state_changes(info: object) -> list[str]:
    records = getattr(info, "records", [])
    return [f"{r.node}: {r.source} -> {r.target}" for r in records if r.source != r.target]


def check_liveness(
    cluster: Cluster,
    worlds: list[World],
    *,
    rounds: int = 30,
    known: dict[tuple[object, ...], World] | None = None,
    ticks: dict[tuple[object, ...], tuple[object, ...]] | None = None,
) -> LivenessReport:
    """L1 and L2 from every world in ``worlds``. ``known`` (worlds by key) and
    ``ticks`` (each world's successor by one tick, as the exploration found
    it) let the fair continuation follow the explored graph where a tick is
    all it does, instead of simulating it again."""
    report = LivenessReport()
    horizon = cluster.config.timing.horizon
    verdict: dict[tuple[tuple[object, ...], str], bool] = {}
    graph = _Graph(known or {}, ticks or {})
    for world in worlds:
        target = goal(cluster, world)
        report.checked += 1
        if target is not None:
            if target == "protected":
                report.protected_goal += 1
            else:
                report.serving_goal += 1
            if not _eventually(cluster, world, target, rounds, verdict, horizon, graph):
                report.failures.append(
                    LivenessFailure(
                        "L1", f"{target} is never reached by the fair continuation", world
                    )
                )
        if _stable(cluster, world):
            report.stable_checked += 1
            cluster.load(world)
            for _ in range(rounds // 3):
                changes = fair_round(cluster)
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


@dataclass
class _Graph:
    known: dict[tuple[object, ...], World]
    ticks: dict[tuple[object, ...], tuple[object, ...]]


def _eventually(
    cluster: Cluster,
    world: World,
    target: str,
    rounds: int,
    verdict: dict[tuple[tuple[object, ...], str], bool],
    horizon: float,
    graph: _Graph,
) -> bool:
    current = world
    loaded = False
    path: list[tuple[tuple[object, ...], str]] = []
    result = False
    for _ in range(rounds):
        if reached(current, target):
            result = True
            break
        world_key = current.key(horizon)
        key = (world_key, target)
        if key in verdict:
            result = verdict[key]
            break
        path.append(key)
        following = graph.ticks.get(world_key)
        healed = not current.partitioned and all(h.arb_reachable for h in current.hosts)
        if healed and following is not None and following in graph.known:
            current = graph.known[following]  # this round is an explored tick edge
            loaded = False
            continue
        if not loaded:
            cluster.load(current)
        fair_round(cluster)
        current = cluster.world
        loaded = True
    for key in path:
        verdict[key] = result
    return result


def _stable(cluster: Cluster, world: World) -> bool:
    """Nothing left over from a past fault: no partition or cut, nothing delayed,
    and every running node heard its peer within the last heartbeat interval
    on every link (no loss timer is running)."""
    hosts = world.hosts
    if world.partitioned or world.delayed:
        return False
    if any(not h.arb_reachable for h in hosts if h.core is not None):
        return False
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
