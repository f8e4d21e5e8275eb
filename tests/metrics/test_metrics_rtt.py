"""Two real daemons over loopback UDP measure the heartbeat round trip of each link.

Each daemon's ``/metrics`` gets ``failover_link_heartbeat_rtt_seconds`` samples
on every link and ``/v1/status`` shows the latest one (``rtt``) in each link
entry; every sample lies in ``(0, MAX_RTT]``. Real time on loopback: the wait
is bounded, no duration is asserted.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from metrics_support import get, parse
from runtime_support import ADDRESSES, write_cluster

from failover.config import load_config
from failover.plugins import load_transport
from failover.runtime.control import NodeController
from failover.runtime.daemon import run_node
from failover.runtime.links import MAX_RTT

pytestmark = pytest.mark.anyio

LINKS = ("lan", "backup")
SAMPLES = 5
"""Round trips each link of each node must have measured (a few heartbeat intervals)."""


async def test_two_daemons_over_udp_measure_each_link_s_round_trip(tmp_path: Path) -> None:
    config = load_config(write_cluster(tmp_path, links=LINKS))
    async with anyio.create_task_group() as tg:
        nodes: dict[str, NodeController] = {}
        for name in ADDRESSES:
            nodes[name] = await tg.start(
                lambda task_status, name=name: run_node(
                    config,
                    name,
                    task_status=task_status,
                    transport_loader=load_transport,
                    handle_signals=False,
                )
            )
        scrapes = {}

        async def measured() -> bool:
            for name in ADDRESSES:
                answer = await get("/metrics", unix=str(config.node_dir(name) / "control.sock"))
                assert answer.status == 200, answer.body
                scrapes[name] = parse(answer.body)
            return all(
                scrape.value("failover_link_heartbeat_rtt_seconds_count", link=link) >= SAMPLES
                for scrape in scrapes.values()
                for link in LINKS
            )

        with anyio.fail_after(30):
            while not await measured():
                await anyio.sleep(0.05)
        for name, controller in nodes.items():
            links = {link["name"]: link for link in controller.status()["links"]}
            for link in LINKS:
                assert 0 < links[link]["rtt"] <= MAX_RTT, (name, links[link])
                scrape = scrapes[name]
                count = scrape.value("failover_link_heartbeat_rtt_seconds_count", link=link)
                total = scrape.value("failover_link_heartbeat_rtt_seconds_sum", link=link)
                assert 0 < total <= count * MAX_RTT, (name, link, count, total)
                print(f"{name} {link}: {count:.0f} samples, mean {total / count * 1e3:.3f} ms")
                # Nothing bogus was echoed: only the normal "the peer sent again first".
                assert set(links[link]["rtt_dropped"]) <= {"repeated"}, (name, links[link])
        tg.cancel_scope.cancel()
