"""``GET /metrics`` of two real daemons paired over the in-memory network.

The scrape parses, lists exactly what docs/metrics.md lists, and its values
follow the daemon: they agree with ``/v1/status``, a transition increments the
counter, a cut link reads ``up`` 0 and stops its heartbeat gaps.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from metrics_support import Scrape, documented, get, parse
from runtime_support import ADDRESSES, MemoryNetwork, endpoint_key, write_cluster

from failover.config import ClusterConfig, load_config
from failover.runtime.control import NodeController
from failover.runtime.daemon import run_node

pytestmark = pytest.mark.anyio

WAIT = 20.0
PROMTOOL = shutil.which("promtool")


@dataclass
class Pair:
    config: ClusterConfig
    network: MemoryNetwork
    controllers: dict[str, NodeController]

    def socket(self, node: str) -> str:
        return str(self.config.node_dir(node) / "control.sock")

    async def scrape(self, node: str) -> Scrape:
        answer = await get("/metrics", unix=self.socket(node))
        assert answer.status == 200, answer.body
        return parse(answer.body)

    def status(self, node: str) -> dict[str, Any]:
        return self.controllers[node].status()

    def serving(self) -> str:
        return next(n for n in self.controllers if self.status(n)["state"] == "primary")

    def cut(self, link: str) -> None:
        self.network.cut(*(endpoint_key(self.config.endpoint(n, link)) for n in ADDRESSES))


def _scripts(tmp_path: Path) -> dict[str, Any]:
    scripts = {}
    for name in ("start", "stop"):
        path = tmp_path / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
        scripts[name] = str(path)
    return {
        "application": {**scripts, "timeout": 5},
        "watchdog": {"enabled": False},
        # a standby checker, healthy until the test creates the file ``fail``
        "checkers": [
            {
                "name": "standby-disk",
                "command": f"test ! -e {tmp_path / 'fail'}",
                "when": "standby",
                "interval": 0.05,
                "failures": 2,
            },
        ],
    }


async def _run(config: ClusterConfig, network: MemoryNetwork, tg: TaskGroup, node: str) -> Any:
    async def run(*, task_status: anyio.abc.TaskStatus[NodeController]) -> None:
        await run_node(
            config,
            node,
            task_status=task_status,
            transport_loader=network.transport,
            handle_signals=False,
        )

    return await tg.start(run)


@asynccontextmanager
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    config = load_config(write_cluster(tmp_path, extra=_scripts(tmp_path)))
    network = MemoryNetwork()
    async with anyio.create_task_group() as tg:
        controllers = {node: await _run(config, network, tg, node) for node in ADDRESSES}
        running = Pair(config, network, controllers)
        await until(
            lambda: (
                sorted(running.status(n)["state"] for n in ADDRESSES) == ["primary", "secondary"]
            )
        )
        yield running
        tg.cancel_scope.cancel()


async def until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not predicate():
            await anyio.sleep(0.01)


async def test_the_scrape_lists_exactly_what_the_docs_list(tmp_path: Path) -> None:
    async with pair(tmp_path) as running:
        for node in ADDRESSES:
            answer = await get("/metrics", unix=running.socket(node))
            assert answer.status == 200
            assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            scrape = parse(answer.body)
            assert scrape.types == documented(), "docs/metrics.md and the scrape differ"
            if PROMTOOL is not None:  # its linter: names, units, suffixes, help texts
                done = subprocess.run(
                    [PROMTOOL, "check", "metrics"],
                    input=answer.body,
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
                assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


async def test_the_values_follow_the_daemon(tmp_path: Path) -> None:
    async with pair(tmp_path) as running:
        primary = running.serving()
        standby = next(n for n in ADDRESSES if n != primary)
        await until(lambda: running.status(primary)["in_sync"])
        await until(lambda: "start" in running.status(primary)["scripts"])

        scrape = await running.scrape(primary)
        status = running.status(primary)
        for state in ("stop", "wait", "alone", "primary", "secondary", "resync"):
            expected = 1.0 if state == status["state"] else 0.0
            assert scrape.value("failover_state", state=state, node=primary) == expected
        assert scrape.value("failover_info", node=primary, peer=standby, cluster="test") == 1
        assert scrape.value("failover_in_sync") == 1
        assert scrape.value("failover_peer_alive") == 1
        assert scrape.value("failover_peer_state", state="secondary") == 1
        # the primary ran its start script; nothing failed
        assert scrape.value("failover_script_duration_seconds_count", script="start") >= 1
        assert scrape.total("failover_script_failures_total") == 0
        # one count per transition record (none fell out of the 1000 kept)
        await counts_every_transition(running, primary)

        # the standby's checker fails: each probe counted, then reported down
        healthy = await running.scrape(standby)
        assert healthy.value("failover_checker_healthy", checker="standby-disk") == 1
        assert healthy.total("failover_checker_probe_failures_total") == 0
        (tmp_path / "fail").touch()
        await until_scraped(
            running, standby, "failover_checker_healthy", 0.0, checker="standby-disk"
        )
        scrape = await running.scrape(standby)
        assert scrape.value("failover_checker_probe_failures_total", checker="standby-disk") >= 2
        probes = "failover_checker_probe_duration_seconds_count"
        assert scrape.value(probes, checker="standby-disk") >= 2

        # a transition increments the counter, by event and states
        before = await running.scrape(standby)
        stops = before.total("failover_transitions_total", event="stop", from_state="secondary")
        result = await running.controllers[standby].command("stop")
        assert result.accepted, result.message
        after = await running.scrape(standby)
        assert after.value("failover_state", state="stop") == 1
        assert after.value("failover_state", state="secondary") == 0
        stopped = after.total("failover_transitions_total", event="stop", from_state="secondary")
        assert stopped == stops + 1
        # by the kind of reason: the table row's template, not the filled-in sentence
        record = running.controllers[standby].transitions(1)[-1]
        assert record["event"] == "stop", record
        kind = "stopped by the operator"
        assert record["reason"] == kind, record  # this row's reason has no value to fill in
        by_kind = after.total("failover_transitions_total", event="stop", reason=kind)
        assert by_kind == before.total("failover_transitions_total", event="stop", reason=kind) + 1
        reasons = {
            s.labels["reason"] for s in after.samples if s.name == "failover_transitions_total"
        }
        assert any("{" in r for r in reasons), f"no reason is a template: {reasons}"
        assert not any("alpha" in r or "beta" in r for r in reasons), reasons
        await counts_every_transition(running, standby)


async def counts_every_transition(running: Pair, node: str) -> None:
    """The counter's total is the number of transition records (read around the
    scrape: one may happen while it is on its way)."""
    controller = running.controllers[node]
    first = len(controller.transitions(1000))
    total = (await running.scrape(node)).total("failover_transitions_total")
    assert first <= total <= len(controller.transitions(1000))
    assert total >= 1


async def until_scraped(running: Pair, node: str, name: str, value: float, **labels: str) -> None:
    with anyio.fail_after(WAIT):
        while True:
            scrape = await running.scrape(node)
            if scrape.total(name, **labels) == value and any(
                s.name == name for s in scrape.samples
            ):
                return
            await anyio.sleep(0.05)


async def test_a_cut_link_reads_down_and_its_heartbeats_stop(tmp_path: Path) -> None:
    async with pair(tmp_path) as running:
        node = running.serving()
        await until_scraped(running, node, "failover_link_up", 2.0)
        running.cut("lan")
        await until(lambda: [link["up"] for link in running.status(node)["links"]] == [False, True])
        scrape = await running.scrape(node)
        assert scrape.value("failover_link_up", link="lan") == 0
        assert scrape.value("failover_link_up", link="backup") == 1
        lan_seen = scrape.value("failover_link_last_seen_seconds", link="lan")
        assert lan_seen > scrape.value("failover_link_last_seen_seconds", link="backup")
        heard_once_per_accepted_frame(scrape)
        # heartbeats go on over the backup link only
        gaps = "failover_link_heartbeat_gap_seconds_count"
        lan, backup = scrape.value(gaps, link="lan"), scrape.value(gaps, link="backup")
        with anyio.fail_after(WAIT):
            while (later := await running.scrape(node)).value(gaps, link="backup") < backup + 10:
                await anyio.sleep(0.05)
        assert later.value(gaps, link="lan") == lan
        assert later.value("failover_link_last_seen_seconds", link="lan") > lan_seen
        heard_once_per_accepted_frame(later)


def heard_once_per_accepted_frame(scrape: Scrape) -> None:
    """Every heartbeat accepted is one heard on its link: a link's first gives no
    gap, each later one gives one (a scrape reads both in one turn of the loop)."""
    accepted = scrape.value("failover_frames_received_total") - scrape.total(
        "failover_frames_dropped_total"
    )
    counts = [
        s.value for s in scrape.samples if s.name == "failover_link_heartbeat_gap_seconds_count"
    ]
    assert len(counts) == 2
    assert sum(count + 1 for count in counts) == accepted
