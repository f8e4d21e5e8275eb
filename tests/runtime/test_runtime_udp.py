"""Two daemons in one process over real UDP sockets, with a fault-injecting wrapper.

The same link-health claims as test_runtime_links.py, in real time on
loopback: waits are bounded generously, never timed.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from runtime_support import FaultyTransport, endpoint_key, wait_until, write_cluster

from failover.config import load_config
from failover.plugins import load_transport
from failover.runtime.control import NodeController
from failover.runtime.daemon import run_node
from failover.transport import HeartbeatTransport

pytestmark = pytest.mark.anyio


def link_up(controller: NodeController, link: str) -> bool:
    return next(item["up"] for item in controller.status()["links"] if item["name"] == link)


async def test_one_cut_link_shows_down_without_takeover_and_all_cut_means_takeover(
    tmp_path: Path,
) -> None:
    config = load_config(write_cluster(tmp_path))
    blocked: set[tuple[str, int]] = set()

    def loader(name: str) -> HeartbeatTransport:
        return FaultyTransport(load_transport(name), blocked)

    def ends(link: str) -> set[tuple[str, int]]:
        return {endpoint_key(config.endpoint(node, link)) for node in ("alpha", "beta")}

    async with anyio.create_task_group() as tg:
        nodes: dict[str, NodeController] = {}
        for name in ("alpha", "beta"):
            nodes[name] = await tg.start(
                lambda task_status, name=name: run_node(
                    config,
                    name,
                    task_status=task_status,
                    transport_loader=loader,
                    handle_signals=False,
                )
            )

        def states() -> dict[str, str]:
            return {name: c.status()["state"] for name, c in nodes.items()}

        await wait_until(lambda: sorted(states().values()) == ["primary", "secondary"])
        secondary = next(c for c in nodes.values() if c.status()["state"] == "secondary")
        paired = states()
        received = secondary.status()["frames"]["received"]

        blocked.update(ends("lan"))
        await wait_until(lambda: not link_up(secondary, "lan"))
        # Ten dead timeouts' worth of heartbeats over the other link: still paired.
        await wait_until(lambda: secondary.status()["frames"]["received"] >= received + 40)
        assert states() == paired and link_up(secondary, "backup")

        blocked.update(ends("backup"))
        await wait_until(lambda: secondary.status()["state"] == "alone")
        assert secondary.status()["peer"]["alive"] is False
        tg.cancel_scope.cancel()
