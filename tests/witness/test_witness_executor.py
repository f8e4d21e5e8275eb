"""The executor reports a grant only for the newest request or renewal the core made.

The core counts a lease from when it emitted its newest ask (``requested_at``)
and ``arbitration_granted`` does not say which ask it answers: the grant of
an older ask may come from a lease that ends before the core would count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation
from failover.platform.application import Application
from failover.runtime.arbitrator import Granted, Released, Reply
from failover.runtime.executor import ActionExecutor

pytestmark = pytest.mark.anyio
OLD, NEW = Generation(1, "alpha"), Generation(2, "alpha")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Gated:
    """An arbitrator whose every call waits until the test opens it (in call order)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, anyio.Event]] = []
        self.called = anyio.Event()

    async def _call(self, name: str, reply: Reply) -> Reply:
        gate = anyio.Event()
        self.calls.append((name, gate))
        self.called.set()
        await gate.wait()
        return reply

    async def request(self, generation: Generation, base: Generation, forced: bool) -> Reply:
        return await self._call("request", Granted(generation))

    async def renew(self, generation: Generation) -> Reply:
        return await self._call("renew", Granted(generation))

    async def release(self) -> Reply:
        return await self._call("release", Released())

    async def next_call(self, count: int) -> None:
        while len(self.calls) < count:
            self.called = anyio.Event()
            await self.called.wait()


@asynccontextmanager
async def running(
    tmp_path: Path,
) -> AsyncIterator[tuple[ActionExecutor, Gated, MemoryObjectReceiveStream[ev.Event]]]:
    send, receive = anyio.create_memory_object_stream[ev.Event](10)
    arbitrator = Gated()
    app = Application(None, None, output_dir=tmp_path, env={})
    executor = ActionExecutor(app, send.send, arbitrator=arbitrator)
    async with anyio.create_task_group() as tg:
        tg.start_soon(executor.run)
        with anyio.fail_after(10):
            await anyio.wait_all_tasks_blocked()
            yield executor, arbitrator, receive
        tg.cancel_scope.cancel()


async def test_a_renewal_answered_after_a_newer_request_is_not_reported(tmp_path: Path) -> None:
    async with running(tmp_path) as (executor, arbitrator, receive):
        executor.submit(fx.RenewArbitration(generation=OLD))  # beside the queue
        await arbitrator.next_call(1)
        executor.submit(fx.RequestArbitration(generation=NEW, base=OLD))
        await arbitrator.next_call(2)
        assert [name for name, _ in arbitrator.calls] == ["renew", "request"]
        arbitrator.calls[0][1].set()  # the old renewal's grant comes back first
        arbitrator.calls[1][1].set()
        assert await receive.receive() == ev.ArbitrationGranted(generation=NEW)
        await anyio.wait_all_tasks_blocked()
        assert receive.statistics().current_buffer_used == 0


async def test_a_renewal_due_while_a_request_is_pending_follows_it(tmp_path: Path) -> None:
    async with running(tmp_path) as (executor, arbitrator, receive):
        executor.submit(fx.RequestArbitration(generation=NEW, base=OLD))
        await arbitrator.next_call(1)
        executor.submit(fx.RenewArbitration(generation=OLD))
        await anyio.wait_all_tasks_blocked()
        assert len(arbitrator.calls) == 1  # queued behind the request
        arbitrator.calls[0][1].set()
        await arbitrator.next_call(2)
        assert [name for name, _ in arbitrator.calls] == ["request", "renew"]
        arbitrator.calls[1][1].set()
        # only the renewal's answer counts (the core's requested_at is its ask)
        assert await receive.receive() == ev.ArbitrationGranted(generation=OLD)
        await anyio.wait_all_tasks_blocked()
        assert receive.statistics().current_buffer_used == 0
