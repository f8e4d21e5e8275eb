"""The daemon around a scripted fake core: effect order, commands, reload, stop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import structlog.testing
import yaml
from runtime_support import MemoryNetwork, write_cluster

from failover.config import load_config
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.facts import Lease
from failover.core.state import Generation, Metadata, PeerStatus, Settings, State, SubStatus
from failover.errors import UsageError
from failover.runtime.daemon import Daemon, run_node

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class View:
    up: bool = False
    last_seen: float | None = None


class FakeNode:
    """Serves on Start (after persisting a new generation), refuses prim, stops on Stop."""

    instances: list[FakeNode] = []

    def __init__(self, settings: Settings, metadata: Metadata) -> None:
        self.settings = settings
        self.metadata = metadata
        self.state = State.STOP
        self.substatus = SubStatus.READY
        self.reason = "module stopped"
        self.peer: PeerStatus | None = None
        self.peer_alive = False
        self.in_sync_problem: str | None = "the peer was never heard"
        self.links = tuple((name, View()) for name in settings.links)
        self.app_started = False
        self.lease = Lease()
        self.handled: list[ev.Event] = []
        FakeNode.instances.append(self)

    @property
    def facts(self) -> FakeNode:
        """Its facts are its own attributes (``reason``, ``metadata``, ``peer``...)."""
        return self

    def status(self) -> PeerStatus:
        m = self.metadata
        return PeerStatus(
            self.settings.name,
            self.state,
            self.substatus,
            m.generation,
            m.synced_generation,
            m.consistent,
            self.settings.fingerprint,
        )

    def next_deadline(self) -> float | None:
        return None

    def snapshot(self) -> tuple[Any, ...]:
        return (self.metadata, self.state, self.substatus, self.reason, self.peer)

    def restore(self, snap: tuple[Any, ...]) -> None:
        self.metadata, self.state, self.substatus, self.reason, self.peer = snap

    def reconfigure(self, settings: Settings) -> None:
        self.settings = settings

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        self.handled.append(event)
        if isinstance(event, ev.Start):
            self.metadata = self.metadata.evolve(generation=Generation(5, "alpha"))
            self.state, self.substatus = State.ALONE, SubStatus.TRANSIENT
            return [
                fx.PersistMetadata(self.metadata),
                fx.StartApp(),
                fx.SendHeartbeat(self.status()),
            ]
        if isinstance(event, ev.AppStarted):
            self.substatus, self.app_started = SubStatus.READY, True
        if isinstance(event, ev.Prim):
            return [fx.Refused("prim", "already serving")]
        if isinstance(event, ev.Stop) and self.state is not State.STOP:
            self.state, self.substatus, self.app_started = State.STOP, SubStatus.TRANSIENT, False
            return [fx.StopApp()]
        if isinstance(event, ev.AppStopped):
            self.substatus = SubStatus.READY
        return []


def app_section(tmp_path: Path) -> dict[str, Any]:
    start = tmp_path / "start"
    # The start script records the metadata it finds on disk when it runs.
    start.write_text(f"#!/bin/sh\ncp {tmp_path}/state/alpha/metadata.json {tmp_path}/seen.json\n")
    stop = tmp_path / "stop"
    stop.write_text(f"#!/bin/sh\necho stopped > {tmp_path}/stopped\n")
    for script in (start, stop):
        script.chmod(0o755)
    return {"application": {"start": str(start), "stop": str(stop), "timeout": 5}}


@asynccontextmanager
async def fake_daemon(tmp_path: Path) -> AsyncIterator[tuple[Daemon, FakeNode]]:
    config = load_config(write_cluster(tmp_path, extra=app_section(tmp_path)))
    daemon = Daemon(
        config,
        "alpha",
        node_factory=FakeNode,
        transport_loader=MemoryNetwork().transport,
        handle_signals=False,
    )
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(20):
            await tg.start(lambda task_status: daemon.run(task_status=task_status))
        node = FakeNode.instances[-1]
        yield daemon, node
        tg.cancel_scope.cancel()


async def wait_for(path: Path) -> None:
    with anyio.fail_after(10):
        while not path.exists():
            await anyio.sleep(0.01)


async def test_metadata_is_durable_before_the_following_effects_run(tmp_path: Path) -> None:
    async with fake_daemon(tmp_path) as (daemon, _):
        await wait_for(tmp_path / "seen.json")
        seen = json.loads((tmp_path / "seen.json").read_text())
        assert seen["generation"] == {"counter": 5, "origin": "alpha"}
        assert daemon.controller.status()["generation"] == "5:alpha"


async def test_a_refused_command_returns_the_core_reason(tmp_path: Path) -> None:
    async with fake_daemon(tmp_path) as (daemon, node):
        result = await daemon.controller.command("prim")
        assert not result.accepted
        assert (result.message, result.state) == ("already serving", "alone")
        assert isinstance(node.handled[-1], ev.Prim)


async def test_autostart_injects_start_at_launch(tmp_path: Path) -> None:
    async with fake_daemon(tmp_path) as (_, node):
        with anyio.fail_after(10):
            while not node.handled:
                await anyio.sleep(0.01)
        assert isinstance(node.handled[0], ev.Start)


async def test_a_bad_config_on_reload_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    async with fake_daemon(tmp_path) as (daemon, node):
        path = daemon.config.source_path
        assert path is not None
        good = path.read_text()
        path.write_text(good.replace("profile: fast", "profile: turbo"))
        assert await daemon.reload() is False
        assert node.settings.heartbeat_interval == 0.05

        document = yaml.safe_load(good)
        document["cluster"]["timing"] = {"heartbeat_interval": 0.04}
        path.write_text(yaml.safe_dump(document))
        assert await daemon.reload() is True
        with anyio.fail_after(5):
            while node.settings.heartbeat_interval != 0.04:
                await anyio.sleep(0.01)
        assert daemon.controller.status()["state"] == "alone"


async def test_a_hostile_config_on_reload_is_refused_quickly_and_logged(tmp_path: Path) -> None:
    # The same loader as check-config: an alias bomb and an oversized file are
    # refused (not expanded), the error logged, the running configuration kept.
    bomb = (
        "a0: &a0 ["
        + ", ".join(["lol"] * 9)
        + "]\n"
        + "".join(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]\n" for n in range(1, 10))
    )
    async with fake_daemon(tmp_path) as (daemon, node):
        path = daemon.config.source_path
        assert path is not None
        good = path.read_text()
        for text, gist in ((bomb, "aliases repeat"), (good + "#" * 300_000, "larger than")):
            path.write_text(text)
            with structlog.testing.capture_logs() as logs:
                assert await daemon.reload() is False
            (refused,) = [r for r in logs if r["event"].startswith("configuration reload refused")]
            assert gist in refused["problems"][0]
            assert node.settings.heartbeat_interval == 0.05
            assert daemon.controller.status()["state"] == "alone"


async def test_shutdown_stops_the_application_before_the_daemon_ends(tmp_path: Path) -> None:
    config = load_config(write_cluster(tmp_path, extra=app_section(tmp_path)))
    daemon = Daemon(
        config,
        "alpha",
        node_factory=FakeNode,
        transport_loader=MemoryNetwork().transport,
        handle_signals=False,
    )
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(lambda task_status: daemon.run(task_status=task_status))
            await wait_for(tmp_path / "seen.json")
            while not daemon.app.running:
                await anyio.sleep(0.01)
            await daemon.shutdown("test")
        # daemon.run returned by itself: the task group closed without a cancel.
    assert (tmp_path / "stopped").read_text() == "stopped\n"
    assert FakeNode.instances[-1].state is State.STOP


async def test_corrupt_metadata_refuses_to_start_naming_the_file(tmp_path: Path) -> None:
    config = load_config(write_cluster(tmp_path))
    metadata = tmp_path / "state" / "alpha" / "metadata.json"
    metadata.parent.mkdir(parents=True)
    metadata.write_text("{garbage")
    with pytest.raises(UsageError, match=str(metadata)):
        await run_node(config, "alpha", node_factory=FakeNode, handle_signals=False)
    assert metadata.read_text() == "{garbage"


async def test_a_second_daemon_for_the_same_node_is_refused(tmp_path: Path) -> None:
    async with fake_daemon(tmp_path) as (daemon, _):
        with pytest.raises(UsageError, match="another failover daemon"):
            await run_node(daemon.config, "alpha", node_factory=FakeNode, handle_signals=False)
