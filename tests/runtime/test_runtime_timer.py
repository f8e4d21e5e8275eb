"""The timer task on trio's virtual clock: it fires exactly at the core's deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from runtime_support import NODES, MemoryNetwork, write_cluster
from trio.testing import MockClock

from failover.config import load_config
from failover.runtime.control import NodeController
from failover.runtime.daemon import run_node
from failover.runtime.timer import DeadlineSignal, run_timer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


class FakeCore:
    """Hands out a scripted sequence of deadlines, one more each time the timer fires."""

    def __init__(self, signal: DeadlineSignal, deadlines: list[float | None]) -> None:
        self.signal = signal
        self.deadlines = deadlines
        self.fired_at: list[float] = []

    async def fire(self) -> None:
        self.fired_at.append(anyio.current_time())
        self.signal.publish(self.deadlines.pop(0) if self.deadlines else None)


async def test_the_timer_fires_at_each_deadline_and_not_before() -> None:
    start = anyio.current_time()
    signal = DeadlineSignal()
    core = FakeCore(signal, [start + 1.5, start + 4.0, None])
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_timer, signal, core.fire)
        signal.publish(start + 1.0)
        await anyio.sleep(100)
        tg.cancel_scope.cancel()
    assert [t - start for t in core.fired_at] == [1.0, 1.5, 4.0]


async def test_an_earlier_deadline_wakes_the_timer_early() -> None:
    start = anyio.current_time()
    signal = DeadlineSignal()
    core = FakeCore(signal, [])
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_timer, signal, core.fire)
        signal.publish(start + 10.0)
        await anyio.sleep(1.0)
        signal.publish(start + 2.0)
        await anyio.sleep(100)
        tg.cancel_scope.cancel()
    assert [t - start for t in core.fired_at] == [2.0]


async def test_a_later_deadline_postpones_the_timer() -> None:
    start = anyio.current_time()
    signal = DeadlineSignal()
    core = FakeCore(signal, [])
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_timer, signal, core.fire)
        signal.publish(start + 1.0)
        await anyio.sleep(0.5)
        signal.publish(start + 3.0)
        await anyio.sleep(100)
        tg.cancel_scope.cancel()
    assert [t - start for t in core.fired_at] == [3.0]


async def test_a_deadline_left_in_the_past_fires_once_without_spinning() -> None:
    start = anyio.current_time()
    signal = DeadlineSignal()
    fired: list[float] = []

    async def stubborn_core() -> None:  # handles Timer but leaves its deadline unchanged
        fired.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_timer, signal, stubborn_core)
        signal.publish(start + 1.0)
        await anyio.sleep(50)
        tg.cancel_scope.cancel()
    assert [t - start for t in fired] == [1.0]


async def test_no_deadline_means_no_timer() -> None:
    signal = DeadlineSignal()
    core = FakeCore(signal, [])
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_timer, signal, core.fire)
        signal.publish(None)
        await anyio.sleep(1000)
        tg.cancel_scope.cancel()
    assert core.fired_at == []


async def test_time_the_daemons_did_not_run_is_not_their_peers_silence(tmp_path: Path) -> None:
    """The whole process frozen (SIGSTOP, a VM paused) for several dead timeouts:
    when it runs again every deadline is overdue and the timer fires first, yet
    neither node declares its peer lost; both go on as a protected pair."""
    config = load_config(write_cluster(tmp_path))
    dead = config.timing.dead_timeout
    network = MemoryNetwork()
    async with anyio.create_task_group() as tg:
        controllers: dict[str, NodeController] = {}
        for name in NODES:

            async def run(name: str = name, *, task_status: Any) -> None:
                await run_node(
                    config,
                    name,
                    task_status=task_status,
                    transport_loader=network.transport,
                    handle_signals=False,
                )

            controllers[name] = await tg.start(run)

        def states() -> list[str]:
            return sorted(str(c.status()["state"]) for c in controllers.values())

        with anyio.fail_after(30):
            while states() != ["primary", "secondary"]:
                await anyio.sleep(0.001)
        before = {name: len(c.transitions(1000)) for name, c in controllers.items()}
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, MockClock)
        for _ in range(3):
            clock.jump(2.5 * dead)  # nothing ran meanwhile: a pause of both daemons
            await anyio.sleep(4 * dead)  # then they run again for a while
            assert states() == ["primary", "secondary"]
        after = {name: len(c.transitions(1000)) for name, c in controllers.items()}
        assert after == before, [c.transitions(1000)[-3:] for c in controllers.values()]
        tg.cancel_scope.cancel()
