"""Two real daemons in one process on trio's virtual clock, over an in-memory network.

Everything but the network is real: config file, core, wire codec with a
key, metadata store, control API. Faults are injected by the network
(``MemoryNetwork.cut``) and by cancelling a node (a crash, for the peer).
Virtual time makes the timing claims exact: "within two heartbeat intervals"
is checked as such, with no wall clock involved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from runtime_support import ADDRESSES, MemoryNetwork, endpoint_key, write_cluster
from trio.testing import MockClock

from failover.config import ClusterConfig, load_config
from failover.runtime.control import NodeController
from failover.runtime.daemon import run_node
from failover.runtime.store import IncarnationStore

pytestmark = pytest.mark.anyio

HB = 0.05  # the fast profile
LINK_TIMEOUT = 0.1
DEAD = 0.2
POLL = 0.001
RECORDED = 35  # heartbeats an attacker recorded: 35 of 35 were accepted again before the echo


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


@dataclass
class RunningNode:
    name: str
    controller: NodeController
    scope: anyio.CancelScope
    stopped: anyio.Event

    def status(self) -> dict[str, Any]:
        return self.controller.status()

    @property
    def state(self) -> str:
        return str(self.status()["state"])

    def link_up(self, link: str) -> bool:
        return next(item["up"] for item in self.status()["links"] if item["name"] == link)


class Cluster:
    def __init__(self, config: ClusterConfig, network: MemoryNetwork, tg: TaskGroup) -> None:
        self.config = config
        self.network = network
        self.tg = tg
        self.nodes: dict[str, RunningNode] = {}

    async def start(self, name: str) -> RunningNode:
        scope = anyio.CancelScope()
        stopped = anyio.Event()

        async def run(*, task_status: anyio.abc.TaskStatus[NodeController]) -> None:
            try:
                with scope:
                    await run_node(
                        self.config,
                        name,
                        task_status=task_status,
                        transport_loader=self.network.transport,
                        handle_signals=False,
                    )
            finally:
                stopped.set()

        controller = await self.tg.start(run)
        node = RunningNode(name, controller, scope, stopped)
        self.nodes[name] = node
        return node

    def crash(self, name: str) -> None:
        self.nodes.pop(name).scope.cancel()

    async def crashed(self, name: str) -> None:
        """Crash ``name`` and wait until its daemon is gone (its lock released)."""
        node = self.nodes[name]
        self.crash(name)
        await node.stopped.wait()

    def endpoints(self, link: str) -> list[tuple[str, int]]:
        return [endpoint_key(self.config.endpoint(node, link)) for node in ADDRESSES]


class RecordingNetwork(MemoryNetwork):
    """Keeps a copy of every frame delivered, by (source, destination): an eavesdropper."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: dict[tuple[tuple[str, int], tuple[str, int]], list[bytes]] = {}

    def deliver(self, source: tuple[str, int], destination: tuple[str, int], frame: bytes) -> None:
        self.recorded.setdefault((source, destination), []).append(frame)
        super().deliver(source, destination, frame)

    def inject(self, destination: tuple[str, int], frame: bytes) -> None:
        """Put ``frame`` in the inbox at ``destination``, as a spoofed datagram would."""
        self.inboxes[destination].send_nowait(frame)


@asynccontextmanager
async def cluster(tmp_path: Path, network: MemoryNetwork | None = None) -> AsyncIterator[Cluster]:
    config = load_config(write_cluster(tmp_path))
    async with anyio.create_task_group() as tg:
        running = Cluster(config, MemoryNetwork() if network is None else network, tg)
        yield running
        tg.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> float:
    """Poll ``predicate`` on the virtual clock; returns the virtual time it took."""
    start = anyio.current_time()
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(POLL)
    return anyio.current_time() - start


def states(c: Cluster) -> dict[str, str]:
    return {name: node.state for name, node in c.nodes.items()}


async def paired(c: Cluster) -> None:
    await wait_until(lambda: sorted(states(c).values()) == ["primary", "secondary"])


def serving(c: Cluster) -> RunningNode:
    return next(n for n in c.nodes.values() if n.state in ("primary", "alone"))


def standing_by(c: Cluster) -> RunningNode:
    return next(n for n in c.nodes.values() if n.state == "secondary")


async def test_two_daemons_pair_as_primary_and_secondary(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        alpha = await c.start("alpha")
        await c.start("beta")
        await paired(c)
        status = alpha.status()
        assert status["peer"]["alive"] is True
        assert all(link["up"] for link in status["links"])
        assert [t["to"] for t in alpha.controller.transitions(100)][-1] == status["state"]
        # each core numbers its views in its run's own epoch: the daemon's incarnation
        for node in c.nodes.values():
            incarnation = IncarnationStore(c.config.node_dir(node.name) / "incarnation.json")
            assert node.controller.node.status().view[0] == incarnation.current() > 0
        # The only frames dropped are those each node sent before it had heard the
        # other's run (they echo nothing yet): at the start, never once paired.
        startup = {n.name: n.status()["frames"] for n in c.nodes.values()}
        for frames in startup.values():
            assert frames["received"] > 0 and set(frames["dropped"]) <= {"wrong_echo"}
        await anyio.sleep(20 * HB)
        for node in c.nodes.values():
            frames = node.status()["frames"]
            assert frames["received"] > startup[node.name]["received"] + 20
            assert frames["dropped"] == startup[node.name]["dropped"]
            # every link measured its round trip, and no echo was bogus (docs/wire.md)
            for link in node.status()["links"]:
                assert link["rtt"] is not None and 0 <= link["rtt"] < HB, link
                assert set(link["rtt_dropped"]) <= {"repeated"}, link


async def test_cutting_one_of_two_links_shows_it_down_without_takeover(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("alpha")
        await c.start("beta")
        await paired(c)
        before = states(c)
        primary, secondary = serving(c), standing_by(c)
        transitions_before = len(secondary.controller.transitions(1000))

        c.network.cut(*c.endpoints("lan"))
        took = await wait_until(lambda: not secondary.link_up("lan") and not primary.link_up("lan"))
        assert took <= 2 * HB + POLL, f"link shown down after {took:.3f} s"

        # Many dead timeouts later, over the remaining link: nothing else changed.
        await anyio.sleep(20 * DEAD)
        assert states(c) == before
        assert secondary.link_up("backup") and primary.link_up("backup")
        new = secondary.controller.transitions(1000)[transitions_before:]
        assert [t for t in new if t["from"] != t["to"]] == []
        assert secondary.status()["peer"]["alive"] is True

        # The link comes back and is used again.
        c.network.heal(*c.endpoints("lan"))
        await wait_until(lambda: secondary.link_up("lan") and primary.link_up("lan"), timeout=1)
        assert states(c) == before


async def test_cutting_every_link_makes_the_secondary_take_over(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("alpha")
        await c.start("beta")
        await paired(c)
        secondary = standing_by(c)
        c.network.cut(*c.endpoints("lan"), *c.endpoints("backup"))
        took = await wait_until(lambda: secondary.state == "alone")
        assert took <= DEAD + HB, f"took over after {took:.3f} s"
        assert secondary.status()["peer"]["alive"] is False
        # Both serve during the partition (no arbitrator); the swap is refused alone.
        assert {n.state for n in c.nodes.values()} == {"alone"}
        result = await secondary.controller.command("swap")
        assert not result.accepted and result.message and result.state == "alone"

        # Healing: the split brain is resolved and the cluster is protected again.
        c.network.heal(*c.endpoints("lan"), *c.endpoints("backup"))
        await paired(c)


async def test_a_crashed_primary_is_replaced_within_the_dead_timeout(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("alpha")
        await c.start("beta")
        await paired(c)
        victim, survivor = serving(c), standing_by(c)
        c.crash(victim.name)
        took = await wait_until(lambda: survivor.state == "alone")
        assert took <= DEAD + HB, f"took over after {took:.3f} s"

        # The crashed node comes back with its persisted metadata and follows.
        returned = await c.start(victim.name)
        await paired(c)
        assert returned.state == "secondary" and survivor.state == "primary"


async def test_commands_reach_the_core_and_report_its_answer(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("alpha")
        await c.start("beta")
        await paired(c)
        primary, secondary = serving(c), standing_by(c)
        result = await primary.controller.command("swap")
        assert result.accepted, result.message
        await wait_until(lambda: primary.state == "secondary" and secondary.state == "primary")

        stopped = await primary.controller.command("stop")
        assert stopped.accepted and stopped.state == "stop"
        assert stopped.message == "stopped by the operator", "the core's reason, not an echo"
        unknown = await primary.controller.command("reboot")
        assert not unknown.accepted and "unknown command" in unknown.message


async def test_a_broken_channel_is_reported_then_reopened_and_used_again(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        await c.start("alpha")
        await c.start("beta")
        await paired(c)
        before = states(c)
        secondary = standing_by(c)
        own_lan = endpoint_key(c.config.endpoint(secondary.name, "lan"))

        c.network.break_channel(own_lan)  # the transport raises TransportError
        await wait_until(lambda: not secondary.link_up("lan"), timeout=HB)
        # Reopened after the first backoff (0.1 s), then heartbeats flow again.
        took = await wait_until(lambda: secondary.link_up("lan"), timeout=1)
        assert took <= 0.1 + HB + POLL
        assert states(c) == before


async def replay_paced(
    network: RecordingNetwork, destination: tuple[str, int], frames: list[bytes]
) -> None:
    """Inject ``frames`` one per heartbeat interval, as a replaying attacker would."""
    for frame in frames:
        network.inject(destination, frame)
        await anyio.sleep(HB)


async def test_heartbeats_recorded_before_the_receiver_restarted_are_refused(
    tmp_path: Path,
) -> None:
    """The measured attack: beta restarts, alpha is dead, an attacker replays alpha's
    recorded heartbeats to beta. Before the echo, beta showed alpha "primary, alive"."""
    network = RecordingNetwork()
    async with cluster(tmp_path, network) as c:
        await c.start("alpha")
        await c.start("beta")
        await paired(c)
        alpha_lan, beta_lan = (endpoint_key(c.config.endpoint(n, "lan")) for n in ("alpha", "beta"))
        network.recorded.clear()
        await anyio.sleep(40 * HB)
        recorded = network.recorded[alpha_lan, beta_lan][-RECORDED:]
        assert len(recorded) == RECORDED

        await c.crashed("alpha")
        await c.crashed("beta")
        beta = await c.start("beta")  # a new incarnation; its replay guard is empty
        await replay_paced(network, beta_lan, recorded)
        await anyio.sleep(HB)
        assert beta.status()["peer"] is None or beta.status()["peer"]["alive"] is False
        frames = beta.status()["frames"]
        assert frames["received"] == RECORDED
        assert frames["dropped"] == {"wrong_echo": RECORDED}  # 0 accepted


async def test_heartbeats_recorded_before_the_sender_restarted_are_refused(
    tmp_path: Path,
) -> None:
    """Alpha's recorded heartbeats replayed once beta heard alpha's next run: refused as
    ``stale_incarnation`` by the replay guard, which beta kept (it did not restart).
    Not the echo's work (they echo beta's current run): this passes without the echo,
    and fails when the guard lets an older incarnation in."""
    network = RecordingNetwork()
    async with cluster(tmp_path, network) as c:
        await c.start("alpha")
        beta = await c.start("beta")
        await paired(c)
        alpha_lan, beta_lan = (endpoint_key(c.config.endpoint(n, "lan")) for n in ("alpha", "beta"))
        network.recorded.clear()
        await anyio.sleep(40 * HB)
        recorded = network.recorded[alpha_lan, beta_lan][-RECORDED:]

        await c.crashed("alpha")
        await c.start("alpha")  # a new incarnation, heard by beta
        await paired(c)
        await c.crashed("alpha")  # and now dead
        await wait_until(lambda: beta.status()["peer"]["alive"] is False)
        before = beta.status()["frames"]
        await replay_paced(network, beta_lan, recorded)
        await anyio.sleep(HB)
        after = beta.status()["frames"]
        assert after["received"] == before["received"] + RECORDED
        dropped = {
            reason: count - before["dropped"].get(reason, 0)
            for reason, count in after["dropped"].items()
            if count != before["dropped"].get(reason, 0)
        }
        assert dropped == {"stale_incarnation": RECORDED}  # 0 accepted
        assert beta.status()["peer"]["alive"] is False
