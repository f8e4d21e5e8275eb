"""The model checker as a product feature: run it, report it.

``check_model`` explores each root world of a cluster configuration, checks
the safety invariants on every step and liveness/stability from every
reached world, and returns a ``ModelReport`` that renders as the text
``failover model-check`` prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from failover.core.table import Table
from failover.model.checker import Exploration, explore
from failover.model.invariants import INVARIANTS
from failover.model.liveness import LivenessReport, check_liveness, settle
from failover.model.sim import Bounds, Cluster, ClusterConfig, World

ROOTS = ("boot", "protected")


@dataclass
class RootResult:
    name: str
    root: World
    exploration: Exploration
    liveness: LivenessReport | None = None


@dataclass
class ModelReport:
    config: ClusterConfig
    bounds: Bounds
    depth: int
    results: list[RootResult] = field(default_factory=list)
    seconds: float = 0.0
    cluster: Cluster | None = None

    @property
    def ok(self) -> bool:
        return all(
            r.exploration.counterexample is None and (r.liveness is None or not r.liveness.failures)
            for r in self.results
        )

    @property
    def states(self) -> int:
        return sum(r.exploration.states for r in self.results)

    def render(self) -> str:
        cfg = self.config
        arb = "witness" if cfg.arbitrator else "none"
        lines = [
            f"model check: links {', '.join(cfg.links)}; arbitrator {arb}; "
            f"bounds: {self.bounds.faults} faults, {self.bounds.admin} commands, "
            f"{self.bounds.writes} writes per trace",
        ]
        violated: dict[str, str] = {}
        for r in self.results:
            e = r.exploration
            reach = "whole reachable space" if e.exhausted else f"depth {e.depth}"
            lines.append(
                f"  root {r.name}: {e.states} distinct states, {e.transitions} transitions, "
                f"{reach} (asked {self.depth}), {e.seconds:.1f} s"
            )
            if e.counterexample is not None and self.cluster is not None:
                violated.setdefault(
                    e.counterexample.violation.invariant,
                    e.counterexample.render(self.cluster, r.root),
                )
            if r.liveness is not None:
                lv = r.liveness
                lines.append(
                    f"    liveness: {lv.checked} states; {lv.protected_goal} must reach a "
                    f"protected pair, {lv.serving_goal} a serving node; "
                    f"{lv.stable_checked} stable states checked"
                )
                for failure in lv.failures[:1]:
                    violated.setdefault(failure.invariant, _describe_failure(failure))
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


LIVENESS = {
    "L1": "liveness: a healthy, started pair reaches primary + secondary; a lone node that "
    "knows its data is newest serves",
    "L2": "stability: with no failure and no command, a protected pair (or a node serving "
    "alone with its peer down) changes no state",
}


def _describe_failure(failure: object) -> str:
    world = getattr(failure, "world")  # noqa: B009 - a LivenessFailure
    states = ", ".join(
        f"{name}=down" if h.core is None else f"{name}={h.core.state.value} ({h.core.reason})"
        for name, h in zip(("alpha", "beta"), world.hosts, strict=True)
    )
    return f"{getattr(failure, 'message')} from the world: {states}"  # noqa: B009


def check_model(
    config: ClusterConfig,
    *,
    depth: int,
    bounds: Bounds | None = None,
    table: Table | None = None,
    roots: tuple[str, ...] = ROOTS,
    time_limit: float | None = None,
    liveness: bool = True,
) -> ModelReport:
    """Explore ``roots`` to ``depth`` (sharing ``time_limit`` seconds between
    them) and check every invariant; stops at the first violation."""
    bounds = bounds or Bounds()
    started = time.monotonic()
    cluster = Cluster(config, table=table, bounds=bounds)
    report = ModelReport(config=config, bounds=bounds, depth=depth, cluster=cluster)
    for index, name in enumerate(roots):
        root = cluster.booted()
        if name == "protected":
            root = settle(cluster, root)
        deadline = None
        if time_limit is not None:
            remaining = time_limit - (time.monotonic() - started)
            deadline = time.monotonic() + remaining / (len(roots) - index)
        exploration = explore(cluster, name, root, depth=depth, deadline=deadline)
        result = RootResult(name, root, exploration)
        report.results.append(result)
        if exploration.counterexample is not None:
            break
        if liveness:
            result.liveness = check_liveness(cluster, list(exploration.worlds.values()))
            if result.liveness.failures:
                break
        exploration.worlds.clear()
    report.seconds = time.monotonic() - started
    return report
