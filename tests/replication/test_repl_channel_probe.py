"""The idle probe: a replication channel cut while no data flows shows in status
(``SenderStatus.quiet``) within two heartbeat intervals, and breaks the session
once the replication timeout passes without an answer.

The channel runs through a proxy the test cuts like a cable (no FIN, no RST):
without the probe, an idle sender has nothing in flight and never notices.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from channel_support import ROOT, session

from failover.errors import PeerProtocolError, UsageError
from failover.replication.channel import (
    ChannelSettings,
    ReplicationSender,
)
from failover.replication.channel_wire import Kind, decode_probe, encode_probe
from failover.replication.ops import Write
from failover.testing.proxy import CuttableProxy
from failover.testing.transport_contract import WAIT_TIMEOUT, free_port

pytestmark = pytest.mark.anyio

INTERVAL = 0.1  # the heartbeat interval of these tests


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def until(done: Callable[[], bool], limit: float = WAIT_TIMEOUT) -> float:
    """Poll ``done`` (a status, as an operator would) for at most ``limit``
    seconds; how long it took. Fails the test when it never holds."""
    start = time.monotonic()
    with anyio.fail_after(limit):
        while not done():
            await anyio.sleep(INTERVAL / 10)
    return time.monotonic() - start


@asynccontextmanager
async def through_proxy(
    tmp_path: Path, settings: ChannelSettings
) -> AsyncIterator[tuple[ReplicationSender, CuttableProxy, list[str]]]:
    """A running session whose bytes pass through a ``CuttableProxy``: (its sender,
    the proxy, the reasons the session broke)."""
    proxy = CuttableProxy(free_port("tcp"))
    async with session(tmp_path / "backing", settings, proxy=proxy) as running:
        yield running.sender, proxy, running.broken


async def test_a_cut_of_an_idle_channel_shows_within_two_intervals(tmp_path: Path) -> None:
    settings = ChannelSettings(timeout=60.0, probe_interval=INTERVAL)
    async with through_proxy(tmp_path, settings) as (sender, proxy, broken):
        await until(lambda: sender.status().last_probe_rtt is not None)
        healthy = sender.status()
        assert healthy.quiet is None and healthy.broken is None
        proxy.cut()

        def shown() -> bool:
            seen = sender.status()
            assert seen.last_heard_ago is not None
            # the promise in the sender's own measure of the silence (no wall clock
            # here): silent for more than two intervals is always shown
            assert seen.quiet is not None or seen.last_heard_ago <= 2 * INTERVAL, seen
            return seen.quiet is not None

        took = await until(shown)
        status = sender.status()
        assert status.quiet is not None and status.quiet.startswith("no answer from beta for")
        assert status.broken is None and not broken  # status first; the timeout is far
        print(f"cut seen after {took:.3f} s (heartbeat interval {INTERVAL} s)")


async def test_a_healthy_idle_channel_is_never_quiet(tmp_path: Path) -> None:
    settings = ChannelSettings(timeout=60.0, probe_interval=INTERVAL)
    async with through_proxy(tmp_path, settings) as (sender, _, _):
        # many intervals of idleness, each answered
        await until(lambda: sender.status().probes_sent >= 20)
        assert sender.status().quiet is None


async def test_a_cut_channel_breaks_the_session_after_the_timeout(tmp_path: Path) -> None:
    settings = ChannelSettings(timeout=1.0, probe_interval=INTERVAL)
    async with through_proxy(tmp_path, settings) as (sender, proxy, broken):
        await until(lambda: sender.status().last_probe_rtt is not None)
        proxy.cut()
        await until(lambda: bool(broken))
        assert broken == ["no answer from beta for 1.0 s (probed)"]
        assert sender.status().quiet is None  # broken now: status says so instead


async def test_data_still_flows_with_probes_on(tmp_path: Path) -> None:
    settings = ChannelSettings(timeout=60.0, probe_interval=INTERVAL)
    (tmp_path / "backing").mkdir()
    (tmp_path / "backing" / "f").write_bytes(b"-----")
    async with through_proxy(tmp_path, settings) as (sender, _, broken):
        await until(lambda: sender.status().probes_sent >= 3)
        for n in range(5):
            sender.after(Write(ROOT, b"f", n, b"x"))
            probes = sender.status().probes_sent
            await until(lambda probes=probes: sender.status().probes_sent > probes)  # mixed
        assert await anyio.to_thread.run_sync(sender.flush)
        assert (tmp_path / "backing" / "f").read_bytes() == b"xxxxx"
        assert sender.status().quiet is None and not broken


def test_probe_bodies_round_trip_and_bad_ones_are_the_peers_error() -> None:
    assert decode_probe(Kind.PROBE, memoryview(encode_probe(7))) == 7
    with pytest.raises(
        PeerProtocolError, match=r"^PROBE_ANSWER\.number: truncated: 8 bytes needed, 3 left"
    ):
        decode_probe(Kind.PROBE_ANSWER, memoryview(b"abc"))


def test_the_probe_interval_must_be_below_the_timeout() -> None:
    with pytest.raises(UsageError, match="probe interval"):
        ChannelSettings(timeout=1.0, probe_interval=1.0)
    with pytest.raises(UsageError, match="probe interval"):
        ChannelSettings(probe_interval=0.0)
