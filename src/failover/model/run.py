"""The model checker as a product feature: run it, report it.

``check_model`` explores each root world of a cluster configuration, checks
the safety invariants on every step and liveness/stability from every
reached world, and returns a ``ModelReport`` that renders as the text
``failover model-check`` prints.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from failover.core.state import evolve
from failover.core.table import Table
from failover.model.checker import Counterexample, Exploration, explore
from failover.model.forks import cores, fork_map
from failover.model.invariants import INVARIANTS, Violation
from failover.model.liveness import (
    LivenessFailure,
    LivenessReport,
    check_liveness,
    fair_round,
    settle,
)
from failover.model.sim import NAMES, Bounds, Cluster, ClusterConfig, World

ROOTS = ("boot", "protected")


@dataclass
class RootResult:
    """What exploring one root found (plain data: it crosses process boundaries)."""

    name: str
    states: int
    transitions: int
    depth: int
    exhausted: bool
    seconds: float
    violations: list[str] = field(default_factory=list)  # invariant names, first one first
    counterexample: str | None = None
    liveness: LivenessReport | None = None
    liveness_failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.counterexample is None and self.liveness_failure is None


@dataclass
class ModelReport:
    config: ClusterConfig
    bounds: Bounds
    depth: int
    results: list[RootResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def states(self) -> int:
        return sum(r.states for r in self.results)

    @property
    def min_depth(self) -> int:
        return min((r.depth for r in self.results), default=0)

    def violated(self) -> set[str]:
        """Every invariant a counterexample step or a liveness check broke."""
        names: set[str] = set()
        for r in self.results:
            names.update(r.violations)
            if r.liveness is not None:
                names.update(f.invariant for f in r.liveness.failures)
        return names

    def _app_faults(self) -> str:
        if not self.config.resource_faults or self.bounds.app_faults == 0:
            return " (no application faults)"
        return f" (of which {min(self.bounds.app_faults, self.bounds.faults)} application)"

    def render(self) -> str:
        cfg = self.config
        arb = cfg.kind.value
        if not cfg.partition_with_witness:
            arb += " (every link cut only while a node cannot reach it)"
        lines = [
            f"model check: links {', '.join(cfg.links)}; arbitrator {arb}; "
            f"{'' if cfg.stale_frames else 'newest frames only; '}"
            f"{'no data; ' if cfg.no_data else ''}"
            f"{_initial_data(cfg)}"
            f"bounds: {self.bounds.faults} faults"
            f"{self._app_faults()}, {self.bounds.admin} commands, "
            f"{self.bounds.writes} writes per trace",
        ]
        violated: dict[str, str] = {}
        for r in self.results:
            reach = "whole reachable space" if r.exhausted else f"depth {r.depth}"
            lines.append(
                f"  root {r.name}: {r.states} distinct states, {r.transitions} transitions, "
                f"{reach} (asked {self.depth}), {r.seconds:.1f} s"
            )
            if r.counterexample is not None:
                violated.setdefault(r.violations[0], r.counterexample)
            if r.liveness is not None:
                lv = r.liveness
                lines.append(
                    f"    liveness: {lv.checked} states; {lv.protected_goal} must reach a "
                    f"protected pair, {lv.serving_goal} a serving node, {lv.service_goal} "
                    f"a running application; {lv.stable_checked} stable states checked; "
                    f"cost bounded from {lv.cost_checked}"
                )
                if r.liveness_failure is not None and lv.failures:
                    violated.setdefault(lv.failures[0].invariant, r.liveness_failure)
        lines.append("invariants:")
        for name, text in {**INVARIANTS, **LIVENESS}.items():
            verdict = "VIOLATED" if name in violated else "holds"
            lines.append(f"  {name:3s} {verdict:8s} {text}")
        for name, detail in violated.items():
            lines.append("")
            lines.append(f"counterexample for {name}:")
            lines.append(detail)
        lines.append("")
        lines.append(
            "all invariants hold" if self.ok else "VIOLATION FOUND (see counterexample above)"
        )
        lines.append(f"{self.states} states explored in {self.seconds:.1f} s")
        return "\n".join(lines)


def _initial_data(config: ClusterConfig) -> str:
    holders = [name for name, there in zip(NAMES, config.initial_data, strict=True) if there]
    return f"data before the first start on {' and '.join(holders)}; " if holders else ""


LIVENESS = {
    "L1": "liveness: a healthy, started pair reaches primary + secondary; a lone node that "
    "knows its data is newest serves",
    "L2": "stability: with no failure and no command, a protected pair (or a node serving "
    "alone with its peer down) changes no state",
    "L3": "service: if a node can run the application, the service eventually runs",
    "L4": "bounded cost: after a failure or command, bounded transitions, generations and "
    "records; a persisting failure is only retried, at a pace capped by retry_pause_max",
}


def _describe_failure(failure: object) -> str:
    world = getattr(failure, "world")  # noqa: B009 - a LivenessFailure
    states = ", ".join(
        f"{name}=down" if h.core is None else f"{name}={h.core.state.value} ({h.core.reason})"
        for name, h in zip(("alpha", "beta"), world.hosts, strict=True)
    )
    return f"{getattr(failure, 'message')} from the world: {states}"  # noqa: B009


@contextlib.contextmanager
def no_garbage_collection() -> Iterator[None]:
    """Python's cycle collector off for a search (this one, and the lease
    model's): the explored graph is millions of immutable objects without
    cycles, which every full collection would walk again (a quarter of the
    search's time), and walking them writes to every page a forked worker
    shares with its parent, so each worker would copy the whole heap. The
    collector is restored afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@no_garbage_collection()
def explore_root(
    config: ClusterConfig,
    name: str,
    *,
    depth: int,
    bounds: Bounds,
    table: Table | None,
    deadline: float | None,
    liveness: bool,
    workers: int = 1,
) -> RootResult:
    """Explore one root world and check liveness from every world reached,
    each level of the search and the liveness check split across ``workers``
    forked processes."""
    cluster = Cluster(config, table=table, bounds=bounds)
    root = cluster.booted()
    if name == "protected":
        if all(config.initial_data):
            # a first start with data on both nodes waits for the operator: the
            # pair forms once alpha is chosen (a command the bounds do not count)
            cluster.apply("prim alpha")
            root = evolve(cluster.world, commands=0)
        try:
            root = settle(cluster, root)
        except RuntimeError as exc:
            # a table that never forms a pair cannot start from a protected one
            result = RootResult(name, 0, 0, 0, False, 0.0, violations=["L1"])
            result.counterexample = f"L1: the protected root cannot be built: {exc}"
            return result
    e = explore(cluster, name, root, depth=depth, deadline=deadline, workers=workers)
    result = RootResult(name, e.states, e.transitions, e.depth, e.exhausted, e.seconds)
    if e.counterexample is not None:
        result.violations = [v.invariant for v in e.counterexample.violations]
        result.counterexample = e.counterexample.render(cluster, root)
        return result
    if liveness:
        report = _liveness(cluster, e, workers)
        result.liveness = report
        if report.failures:
            failure = report.failures[0]
            labels = e.trace_to(failure.world, config.timing.horizon)
            trace = Counterexample([Violation(failure.invariant, failure.message)], labels, name)
            result.liveness_failure = (
                trace.render(cluster, root) + "\n" + _fair_tail(cluster, failure.world)
            )
        # worlds are heavy: keep the first failure of each invariant for the report
        first: dict[str, LivenessFailure] = {}
        for failure in report.failures:
            first.setdefault(failure.invariant, failure)
        report.failures = list(first.values())
    return result


def _liveness(cluster: Cluster, e: Exploration, workers: int) -> LivenessReport:
    """L1/L2 from every world ``e`` reached; with several workers each forked
    child takes every n-th world (the graph is shared by the fork, not copied)
    and the reports are merged, failures in the order of the worlds."""
    worlds = list(e.worlds.values())
    keys = list(e.worlds)

    def part(index: int) -> tuple[LivenessReport, list[int]]:
        chunk = worlds[index::workers]
        report = check_liveness(
            cluster,
            chunk,
            known=e.worlds,
            ticks=e.ticks,
            tick_costs=e.tick_costs,
            keys=keys[index::workers],
        )
        position = {id(w): index + n * workers for n, w in enumerate(chunk)}
        return report, [position[id(f.world)] for f in report.failures]

    if workers <= 1:
        return part(0)[0]
    merged = LivenessReport()
    failures: list[tuple[int, LivenessFailure]] = []
    for r, positions in fork_map(part, range(workers)):
        merged.checked += r.checked
        merged.protected_goal += r.protected_goal
        merged.serving_goal += r.serving_goal
        merged.stable_checked += r.stable_checked
        merged.service_goal += r.service_goal
        merged.cost_checked += r.cost_checked
        failures.extend(zip(positions, r.failures, strict=True))
    merged.failures = [f for _, f in sorted(failures, key=lambda pair: pair[0])]
    return merged


def _fair_tail(cluster: Cluster, world: World, rounds: int = 6) -> str:
    """What the fair continuation does from ``world`` (for liveness reports)."""
    cluster.load(world)
    lines = ["  then, with every fault healed and no command (fair continuation):"]
    for n in range(1, rounds + 1):
        changes = fair_round(cluster)
        states = ", ".join(
            f"{h.core.state.value}" if h.core is not None else "down" for h in cluster.world.hosts
        )
        lines.append(f"    tick {n}: {'; '.join(changes) or 'no state change'} -> {states}")
    reasons = "; ".join(
        f"{n}: {h.core.reason}"
        for n, h in zip(("alpha", "beta"), cluster.world.hosts, strict=True)
        if h.core is not None
    )
    lines.append(f"    reasons: {reasons}")
    return "\n".join(lines)


def check_model(
    config: ClusterConfig,
    *,
    depth: int,
    bounds: Bounds | None = None,
    table: Table | None = None,
    roots: tuple[str, ...] = ROOTS,
    time_limit: float | None = None,
    liveness: bool = True,
    parallel: bool = True,
) -> ModelReport:
    """Explore ``roots`` to ``depth`` and check every invariant. With
    ``parallel`` each root is explored in its own forked process, and each
    root's liveness check is split across every core once its graph is
    built (a root that finishes early leaves its core to the others); each
    exploration stops deepening when ``time_limit`` seconds have passed."""
    bounds = bounds or Bounds()
    started = time.monotonic()
    report = ModelReport(config=config, bounds=bounds, depth=depth)
    jobs = [
        functools.partial(
            explore_root,
            config,
            name,
            depth=depth,
            bounds=bounds,
            table=table,
            deadline=None if time_limit is None else started + time_limit,
            liveness=liveness,
            workers=cores() if parallel else 1,
        )
        for name in roots
    ]
    if parallel and cores() > 1:
        report.results = fork_map(_call, jobs)
    else:
        report.results = [job() for job in jobs]
    report.seconds = time.monotonic() - started
    return report


def _call(job: functools.partial[RootResult]) -> RootResult:
    return job()
