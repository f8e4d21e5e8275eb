"""Long random runs of the simulated cluster (hypothesis stateful testing).

The exhaustive checker covers every short trace within its bounds; these
runs cover long ones (hundreds of steps, with no bound on faults, commands or
writes) on the same simulator, checking every safety invariant after every
step. A failure is shrunk to a short program hypothesis prints.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from failover.core.table import Table
from failover.model.invariants import check_step
from failover.model.liveness import goal, reached
from failover.model.mutants import mutant_table
from failover.model.sim import COMMANDS, NAMES, Bounds, Cluster, ClusterConfig, StepInfo, World

UNBOUNDED = Bounds(faults=10**6, admin=10**6, writes=10**6, app_faults=10**6)
STEPS = 200
MESSAGE_FAULTS = ("drop", "delay", "duplicate", "stale")
RESOURCE_FAULTS = ("app_fail", "app_break", "app_check", "checker_down", "checker_up")
FAIR_ROUNDS = 30


class ClusterMachine(RuleBasedStateMachine):
    """Two real cores in the simulated cluster, from both daemons just booted.
    Rules pick among the actions the simulator enables; after each step the
    invariants of spec/INVARIANTS.md are checked on (before, step, after)."""

    config: ClassVar[ClusterConfig] = ClusterConfig()
    table: ClassVar[Table | None] = None
    lengths: ClassVar[list[int]]  # steps per run, for the test to check

    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster(self.config, table=self.table, bounds=UNBOUNDED)
        self.cluster.booted()
        self.steps: list[tuple[World, StepInfo, World]] = []
        self.labels: list[str] = []

    # --- helpers ------------------------------------------------------------------------

    def enabled(self, *verbs: str) -> list[str]:
        return [label for label in self.cluster.actions() if label.split()[0] in verbs]

    def apply(self, label: str) -> None:
        pre = self.cluster.world
        info = self.cluster.apply(label)
        self.steps.append((pre, info, self.cluster.world))
        self.labels.append(label)

    def pick(self, data: st.DataObject, *verbs: str) -> None:
        self.apply(data.draw(st.sampled_from(self.enabled(*verbs)), label="action"))

    # --- rules --------------------------------------------------------------------------

    @rule()
    def tick(self) -> None:
        self.apply("tick")

    @precondition(lambda self: bool(self.enabled(*MESSAGE_FAULTS)))
    @rule(data=st.data())
    def disturb_a_message(self, data: st.DataObject) -> None:
        self.pick(data, *MESSAGE_FAULTS)

    @precondition(lambda self: bool(self.enabled("partition", "heal")))
    @rule(data=st.data())
    def partition_or_heal_a_link(self, data: st.DataObject) -> None:
        self.pick(data, "partition", "heal")

    @precondition(lambda self: bool(self.enabled("crash", "restart")))
    @rule(data=st.data())
    def crash_or_restart_a_node(self, data: st.DataObject) -> None:
        self.pick(data, "crash", "restart")

    @precondition(lambda self: bool(self.enabled("arb_cut", "arb_heal")))
    @rule(data=st.data())
    def cut_or_heal_the_arbitrator(self, data: st.DataObject) -> None:
        self.pick(data, "arb_cut", "arb_heal")

    @precondition(lambda self: bool(self.enabled(*RESOURCE_FAULTS)))
    @rule(data=st.data())
    def fail_an_application_or_checker(self, data: st.DataObject) -> None:
        self.pick(data, *RESOURCE_FAULTS)

    @precondition(lambda self: bool(self.enabled(*COMMANDS)))
    @rule(data=st.data())
    def admin_command(self, data: st.DataObject) -> None:
        self.pick(data, *COMMANDS)

    @precondition(lambda self: bool(self.enabled("write")))
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        self.pick(data, "write")

    # --- checks -------------------------------------------------------------------------

    @invariant()
    def the_last_step_broke_no_invariant(self) -> None:
        if self.steps:
            self._check(*self.steps[-1])

    def _check(self, pre: World, info: StepInfo, post: World) -> None:
        violations = check_step(self.config, pre, info, post)
        assert not violations, (
            f"{'; '.join(map(str, violations))} after {len(self.labels)} steps; "
            f"last ones: {self.labels[-12:]}"
        )

    def teardown(self) -> None:
        """L1 from where the run ended: with every fault healed and no command,
        the goal the world calls for is reached (each step still checked)."""
        type(self).lengths.append(len(self.labels))
        target = goal(self.cluster, self.cluster.world)
        if target is None:
            return
        for _ in range(FAIR_ROUNDS):
            if reached(self.cluster.world, target):
                return
            self._fair_round()
        raise AssertionError(f"L1: {target} not reached after {self.labels[-12:]}")

    def _fair_round(self) -> None:
        world = self.cluster.world
        heals = [f"heal {link}" for link in sorted(world.partitioned)]
        heals += [
            f"arb_heal {NAMES[i]}"
            for i, host in enumerate(world.hosts)
            if host.core is not None and not host.arb_reachable
        ]
        for label in [*heals, "tick"]:
            self.apply(label)
            self._check(*self.steps[-1])


class WitnessClusterMachine(ClusterMachine):
    """The same, with an arbitrator (a witness) that each node can be cut from."""

    config = ClusterConfig(arbitrator=True)


class ResourceClusterMachine(ClusterMachine):
    """The same, also failing applications and checkers (no arbitrator)."""

    config = ClusterConfig(resource_faults=True)


class WitnessResourceClusterMachine(ClusterMachine):
    """Resource faults with an arbitrator."""

    config = ClusterConfig(arbitrator=True, resource_faults=True)


class FirstStartClusterMachine(ClusterMachine):
    """A first start beside data on both nodes (S7), with an arbitrator: nothing
    serves until an operator's command, and no datum from before is lost."""

    config = ClusterConfig(arbitrator=True, initial_data=(True, True))


MACHINES = {
    "none": ClusterMachine,
    "witness": WitnessClusterMachine,
    "none-resources": ResourceClusterMachine,
    "witness-resources": WitnessResourceClusterMachine,
    "witness-data-on-both": FirstStartClusterMachine,
}

RUN = settings(
    max_examples=20,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _run(machine: type[ClusterMachine], **changes: Any) -> list[int]:
    machine.lengths = []
    run_state_machine_as_test(machine, settings=settings(RUN, **changes))
    return machine.lengths


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_long_random_runs_break_no_invariant(name: str) -> None:
    lengths = _run(MACHINES[name])
    # hypothesis also tries a few tiny programs; the rest run the full length
    assert sum(n >= STEPS for n in lengths) >= RUN.max_examples // 2, lengths


def _mutant_machine(name: str) -> type[ClusterMachine]:
    return type(
        f"Mutant{name.title().replace('-', '')}", (ClusterMachine,), {"table": mutant_table(name)}
    )


@pytest.mark.parametrize("name", ["stop-leaves-app", "no-split-brain-detection"])
def test_the_runs_catch_a_mutant(name: str) -> None:
    # finding the failure is the point here: no shrinking (it would take minutes)
    with pytest.raises(AssertionError, match=r"S6|R:"):
        _run(_mutant_machine(name), max_examples=50, phases=[Phase.generate])
