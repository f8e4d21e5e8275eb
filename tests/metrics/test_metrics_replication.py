"""The acknowledgement latency histogram sees the acknowledgements of a session:
one observation per message of entries acknowledged (a message carries one or
more), at least one per sync, and the last one is what the status shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from channel_support import ROOT, session
from prometheus_client import CollectorRegistry, Histogram

from failover.replication.ops import Create, Fsync, Write

pytestmark = pytest.mark.anyio


async def test_each_acknowledged_sync_is_one_latency_observed(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    histogram = Histogram("ack_latency_seconds", "", registry=registry)
    seen: list[float] = []

    def observe(seconds: float) -> None:
        seen.append(seconds)
        histogram.observe(seconds)

    async with session(tmp_path / "b", on_ack_latency=observe) as running:
        running.sender.after(Create(ROOT, b"f", 0o644))
        observed = 0
        for round_ in range(3):
            running.sender.after(Write(ROOT, b"f", round_, b"x"))
            synced = await running.in_thread(lambda: running.sender.sync(Fsync(ROOT, b"f", False)))
            assert synced
            assert len(seen) > observed
            observed = len(seen)
            assert seen[-1] == running.sender.status().last_ack_latency
        assert all(seconds >= 0 for seconds in seen)
    assert registry.get_sample_value("ack_latency_seconds_count") == len(seen)
