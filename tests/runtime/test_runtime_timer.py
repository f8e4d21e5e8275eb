"""The timer task on trio's virtual clock: it fires exactly at the core's deadlines."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from trio.testing import MockClock

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
