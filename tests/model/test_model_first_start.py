"""A safe first start (issue 9, point 4), on two real cores in the simulator.

Neither node ever served nor synced; the replicated directories hold whatever
was there before the cluster was installed (``initial_data``). Data on one
side only: that side serves and the other is resynchronised from it; data on
both: both wait until an operator chooses with ``prim``, and the other side's
data ends in quarantine; data on neither: the tie policy, as before."""

from __future__ import annotations

import pytest

from failover.core import events as ev
from failover.core.state import State
from failover.model.liveness import fair_round
from failover.model.run import check_model
from failover.model.sim import NAMES, PREEXISTING, Cluster, ClusterConfig, StepInfo, World

ALPHA, BETA = 0, 1
DATA_ON = {"alpha": (True, False), "beta": (False, True), "both": (True, True)}


def settle(cluster: Cluster, rounds: int = 12) -> World:
    for _ in range(rounds):
        fair_round(cluster)
    return cluster.world


def states(world: World) -> tuple[State | None, State | None]:
    return tuple(None if h.core is None else h.core.state for h in world.hosts)  # type: ignore[return-value]


def start_one_after_the_other(cluster: Cluster, first: int, gap: int) -> None:
    """Both daemons run with the module stopped; ``first`` is started, then
    ``gap`` heartbeat intervals later the other one."""
    cluster.load(cluster.initial())
    for i in (first, 1 - first):
        cluster._handle(i, ev.Timer(), StepInfo("boot"))  # the first heartbeat (stop)
    cluster._handle(first, ev.Start(), StepInfo("start"))
    for _ in range(gap):
        fair_round(cluster)
    cluster._handle(1 - first, ev.Start(), StepInfo("start"))


@pytest.mark.parametrize("holder", ["alpha", "beta"])
@pytest.mark.parametrize("order", ["together", "alpha-first", "beta-first"])
def test_data_on_one_side_only_that_side_serves_and_the_other_follows(
    holder: str, order: str
) -> None:
    cluster = Cluster(ClusterConfig(initial_data=DATA_ON[holder]))
    if order == "together":
        cluster.load(cluster.booted())
    else:
        # the first one waits beside a stopped peer longer than discovery lasts
        start_one_after_the_other(cluster, NAMES.index(order.split("-", maxsplit=1)[0]), gap=8)
    world = settle(cluster)
    h = NAMES.index(holder)
    assert states(world)[h] is State.PRIMARY, world.hosts
    assert states(world)[1 - h] is State.SECONDARY, world.hosts
    # the holder's data is the pair's: on both disks, nothing set aside
    assert all(PREEXISTING[h] in host.data for host in world.hosts)
    assert all(not host.quarantine for host in world.hosts)


def test_data_on_both_sides_both_wait_with_the_reason_until_prim_on_one() -> None:
    cluster = Cluster(ClusterConfig(initial_data=DATA_ON["both"]))
    cluster.load(cluster.booted())
    world = settle(cluster)
    assert states(world) == (State.WAIT, State.WAIT)
    for host in world.hosts:
        assert host.core is not None
        assert host.core.reason.startswith(
            "data on both nodes: choose with `failover prim` on the node whose data to keep"
        )
    cluster.apply("prim beta")
    world = settle(cluster)
    assert states(world) == (State.SECONDARY, State.PRIMARY)
    # beta's data is the pair's; alpha's was set aside before the full copy
    assert PREEXISTING[BETA] in world.hosts[ALPHA].data
    assert PREEXISTING[ALPHA] not in world.hosts[ALPHA].data
    assert PREEXISTING[ALPHA] in world.hosts[ALPHA].quarantine


def test_data_on_neither_side_the_tie_policy_decides_as_before() -> None:
    cluster = Cluster(ClusterConfig())
    cluster.load(cluster.booted())
    assert states(settle(cluster)) == (State.PRIMARY, State.SECONDARY)


@pytest.mark.parametrize("data", ["alpha", "beta", "both"])
@pytest.mark.parametrize("arbitrator", [False, True], ids=["none", "witness"])
def test_every_invariant_holds_at_a_first_start_beside_existing_data(
    data: str, arbitrator: bool
) -> None:
    config = ClusterConfig(arbitrator=arbitrator, initial_data=DATA_ON[data])
    report = check_model(config, depth=5, roots=("boot",), parallel=False)
    assert report.ok, report.render()


def test_with_data_on_both_the_protected_root_is_the_pair_the_operator_chose() -> None:
    report = check_model(
        ClusterConfig(initial_data=DATA_ON["both"]), depth=3, roots=("protected",), parallel=False
    )
    assert report.ok and report.states > 1, report.render()


@pytest.mark.parametrize("data", ["beta", "both"])
def test_s7_catches_a_data_plane_that_overwrites_without_quarantine(data: str) -> None:
    # the data plane before issue 9: a full resync overwrote the target's files
    # (with data on beta only, prim on alpha is the operator's wrong choice)
    config = ClusterConfig(initial_data=DATA_ON[data], quarantine_full_resync=False)
    report = check_model(config, depth=5, roots=("boot",), liveness=False, parallel=False)
    assert not report.ok
    assert "S7" in report.violated(), report.render()
    assert "held before the first start is gone" in report.render()
