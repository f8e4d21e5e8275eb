"""Virtual addresses taken and given back, with netlink and the raw socket
replaced by stand-ins that only count (no root): the announcement schedule,
the repeat task that ends whenever the address is given back, and what a
group of addresses does when one fails.

The repeats are a year apart, so a repeat task that is still there after a
release is one that outlived it (test_runtime_vip.py shows on real interfaces
that no frame follows a release).
"""

from __future__ import annotations

import anyio
import pytest
from trio.testing import MockClock

from failover.platform.vip import VipError, VirtualAddress, VirtualIP

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


YEAR = 365 * 86400.0


def address(text: str, calls: list[str], *, fails: str | None = None) -> VirtualAddress:
    """A ``VirtualAddress`` whose netlink changes and announcements append to
    ``calls``; the change ``fails`` (``add``, ``del``) raises ``VipError``."""
    vip = VirtualAddress(text, "eth0", announce_count=3, announce_interval=YEAR)

    def change(command: str) -> bool:
        if command == fails:
            raise VipError(f"cannot {command} {text}")
        calls.append(f"{command} {text}")
        return True

    vip._change = change  # type: ignore[method-assign]
    vip._announce = lambda: calls.append(f"announce {text}")  # type: ignore[method-assign]
    return vip


async def repeat_tasks() -> int:
    """How many repeat tasks exist once every task has run as far as it can."""
    await anyio.wait_all_tasks_blocked()
    return sum("_repeat_announcements" in task.name for task in anyio.get_running_tasks())


@pytest.mark.parametrize("anyio_backend", [("trio", {"clock": MockClock(autojump_threshold=0)})])
async def test_the_announcements_follow_their_schedule_in_virtual_time() -> None:
    """``announce_count`` in all: the first at once, then ``announce_interval`` apart."""
    times: list[float] = []
    vip = VirtualAddress("fd00::100/64", "eth0", announce_count=4, announce_interval=0.25)
    vip._change = lambda command: True  # type: ignore[method-assign]
    vip._announce = lambda: times.append(anyio.current_time())  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        await vip.acquire(repeat_in=tg)
    assert [round(t - times[0], 9) for t in times] == [0, 0.25, 0.5, 0.75]


async def test_a_release_before_the_first_repeat_ends_the_repeat_task() -> None:
    calls: list[str] = []
    vip = address("10.0.0.100/24", calls)
    async with anyio.create_task_group() as tg:
        await vip.acquire(repeat_in=tg)
        await vip.release()  # before the repeat task had its first turn
        assert await repeat_tasks() == 0
    assert calls == ["add 10.0.0.100/24", "announce 10.0.0.100/24", "del 10.0.0.100/24"]


async def test_a_release_between_repeats_ends_the_repeat_task() -> None:
    calls: list[str] = []
    vip = address("fd00::100/64", calls)
    async with anyio.create_task_group() as tg:
        await vip.acquire(repeat_in=tg)
        assert await repeat_tasks() == 1
        await vip.release()
        assert await repeat_tasks() == 0


async def test_acquiring_again_leaves_one_schedule() -> None:
    calls: list[str] = []
    vip = address("10.0.0.100/24", calls)
    async with anyio.create_task_group() as tg:
        await vip.acquire(repeat_in=tg)
        await vip.acquire(repeat_in=tg)
        assert await repeat_tasks() == 1
        await vip.release()
        assert await repeat_tasks() == 0


async def test_a_failed_acquire_of_several_addresses_leaves_no_repeats() -> None:
    calls: list[str] = []
    first, second = address("10.0.0.100/24", calls), address("fd00::100/64", calls, fails="add")
    async with anyio.create_task_group() as tg:
        with pytest.raises(VipError, match="cannot add fd00::100/64"):
            await VirtualIP([first, second]).acquire(repeat_in=tg)
        assert await repeat_tasks() == 0
    assert calls == ["add 10.0.0.100/24", "announce 10.0.0.100/24", "del 10.0.0.100/24"]


async def test_a_release_of_several_addresses_tries_each_and_names_every_failure() -> None:
    calls: list[str] = []
    vip = VirtualIP(
        [
            address("10.0.0.100/24", calls, fails="del"),
            address("10.0.0.101/24", calls),
            address("fd00::100/64", calls, fails="del"),
        ]
    )
    with pytest.raises(VipError) as caught:
        await vip.release()
    assert str(caught.value) == "cannot del 10.0.0.100/24; cannot del fd00::100/64"
    assert calls == ["del 10.0.0.101/24"]
