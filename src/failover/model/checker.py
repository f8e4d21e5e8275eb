"""Exhaustive breadth-first exploration of the simulated cluster.

From each root world, every enabled action is applied to every world of the
current frontier; worlds are deduplicated on their time-relative key. Every
step is checked against every invariant, so the first violation found lies
on a shortest path from the root: its trace is the shortest counterexample.
After the exploration, liveness (L1) and stability (L2) are checked from
every reached world by a fair continuation (see ``liveness``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from failover.core.table import Table
from failover.model.forks import fork_map
from failover.model.invariants import Violation, check_step
from failover.model.liveness import RoundCost, round_cost
from failover.model.sim import Cluster, StepInfo, World, WorldKey

Key = WorldKey


@dataclass
class Counterexample:
    violations: list[Violation]  # every invariant the last step broke
    labels: list[str]
    root: str

    @property
    def violation(self) -> Violation:
        return self.violations[0]

    def render(self, cluster: Cluster, root_world: World) -> str:
        """Replay the trace and show each step with the transitions it caused."""
        lines = [
            f"{self.violation}",
            f"shortest trace from {self.root} ({len(self.labels)} steps):",
        ]
        cluster.load(root_world)
        for n, label in enumerate(self.labels, 1):
            info = cluster.apply(label)
            lines.append(f"  {n:2d}. {label}  (t={cluster.world.now:g})")
            for rec in info.records:
                lines.append(f"        {rec.node}: {rec.source} -> {rec.target}: {rec.reason}")
            for ref in info.refused:
                lines.append(f"        refused {ref.command}: {ref.reason}")
        states = ", ".join(
            f"{name}={'down' if h.core is None else h.core.state.value}"
            for name, h in zip(("alpha", "beta"), cluster.world.hosts, strict=True)
        )
        lines.append(f"  final: {states}; acknowledged writes {sorted(cluster.world.acked)}")
        return "\n".join(lines)


@dataclass
class Exploration:
    root: str
    states: int = 0
    transitions: int = 0
    depth: int = 0
    exhausted: bool = False
    seconds: float = 0.0
    counterexample: Counterexample | None = None
    worlds: dict[Key, World] = field(default_factory=dict)  # key -> a full world
    parents: dict[Key, tuple[Key | None, str]] = field(default_factory=dict)
    ticks: dict[Key, Key] = field(default_factory=dict)  # world -> its successor by "tick"
    # what that tick cost (L4: state changes, mints, records, retries), as found
    # from the world kept for the key
    tick_costs: dict[Key, RoundCost] = field(default_factory=dict)

    def trace_to(self, world: World, horizon: float) -> list[str]:
        """The shortest list of actions from the root to ``world``."""
        return _trace(self.parents, world.key(horizon))


def explore(
    cluster: Cluster,
    root_name: str,
    root: World,
    *,
    depth: int,
    deadline: float | None = None,
    admin: bool = True,
    faults: bool = True,
    writes: bool = True,
    workers: int = 1,
) -> Exploration:
    """Breadth-first search to ``depth`` actions (or until the space is exhausted,
    a violation is found, or a level ends after ``deadline``, a time.monotonic
    value).

    With ``workers`` > 1, each level's frontier is cut into that many
    contiguous pieces expanded by forked processes (see ``forks``); the
    pieces' successors are merged here in frontier order, so the worlds
    found, their parents and the counterexample are exactly those of one
    process."""
    started = time.monotonic()
    horizon = cluster.config.timing.horizon
    result = Exploration(root_name)
    root_key = root.key(horizon)
    parents = result.parents
    parents[root_key] = (None, "")
    result.worlds[root_key] = root
    frontier = [root_key]
    expand = _Expander(cluster, result, admin=admin, faults=faults, writes=writes)
    for level in range(1, depth + 1):
        pieces = _pieces(frontier, workers)
        batches = fork_map(expand, pieces) if len(pieces) > 1 else [expand(frontier)]
        next_frontier: list[Key] = []
        for batch in batches:
            result.transitions += batch.transitions
            result.tick_costs.update(batch.tick_costs)
            for key, label, post_key, post in batch.found:
                if label == "tick":
                    result.ticks[key] = post_key
                if post is not None and post_key not in parents:
                    parents[post_key] = (key, label)
                    result.worlds[post_key] = post
                    next_frontier.append(post_key)
            if batch.violation is not None:
                key, label, violations = batch.violation
                trace = [*_trace(parents, key), label]
                result.counterexample = Counterexample(violations, trace, root_name)
                result.depth = level
                result.states = len(parents)
                result.seconds = time.monotonic() - started
                return result
        result.depth = level
        if deadline is not None and time.monotonic() > deadline:
            result.states = len(parents)
            result.seconds = time.monotonic() - started
            return result
        frontier = next_frontier
        if not frontier:
            result.exhausted = True
            break
    result.states = len(parents)
    result.seconds = time.monotonic() - started
    return result


MIN_PIECE = 500
"""A frontier smaller than this many worlds per worker is expanded here (a
fork costs more than it saves)."""


def _pieces(frontier: list[Key], workers: int) -> list[list[Key]]:
    n = max(1, min(workers, len(frontier) // MIN_PIECE))
    size = -(-len(frontier) // n)
    return [frontier[i : i + size] for i in range(0, len(frontier), size)]


@dataclass
class _Batch:
    """What expanding a piece of the frontier found, in frontier order: each
    successor new to this piece (with its world), and every tick edge (the
    world is left out when it was already known: only its key is needed)."""

    transitions: int = 0
    found: list[tuple[Key, str, Key, World | None]] = field(default_factory=list)
    tick_costs: dict[Key, RoundCost] = field(default_factory=dict)
    violation: tuple[Key, str, list[Violation]] | None = None


class _Expander:
    def __init__(
        self, cluster: Cluster, result: Exploration, *, admin: bool, faults: bool, writes: bool
    ) -> None:
        self.cluster = cluster
        self.result = result
        self.options = {"admin": admin, "faults": faults, "writes": writes}

    def __call__(self, piece: list[Key]) -> _Batch:
        cluster, config = self.cluster, self.cluster.config
        horizon = config.timing.horizon
        known, worlds = self.result.parents, self.result.worlds
        batch = _Batch()
        new: set[Key] = set()
        for key in piece:
            world = worlds[key]
            cluster.load(world)
            for label in list(cluster.actions(**self.options)):
                cluster.load(world)
                info = cluster.apply(label)
                post = cluster.world
                batch.transitions += 1
                violations = check_step(config, world, info, post)
                if violations:
                    batch.violation = (key, label, violations)
                    return batch
                post_key = post.key(horizon)
                if label == "tick":
                    batch.tick_costs[key] = round_cost(world, info, post)
                fresh = post_key not in known and post_key not in new
                if fresh:
                    new.add(post_key)
                    batch.found.append((key, label, post_key, post))
                elif label == "tick":
                    batch.found.append((key, label, post_key, None))
        return batch


def _trace(parents: dict[Key, tuple[Key | None, str]], key: Key) -> list[str]:
    labels: list[str] = []
    current: Key | None = key
    while current is not None:
        parent, label = parents[current]
        if parent is not None:
            labels.append(label)
        current = parent
    return labels[::-1]


def run_prefix(cluster: Cluster, labels: Iterable[str]) -> World:
    """A root world reached by a fixed list of actions from the initial world."""
    cluster.load(cluster.initial())
    for label in labels:
        cluster.apply(label)
    return cluster.world


__all__ = ["Counterexample", "Exploration", "StepInfo", "Table", "explore", "run_prefix"]
