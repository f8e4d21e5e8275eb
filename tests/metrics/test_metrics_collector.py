"""The status collector maps the replication part of a status, made from the data
plane's own snapshot types (``SenderStatus``, ``ResyncStatus``), to its metrics;
a status without replication or resync gives the same names with no samples."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from metrics_support import documented, parse

from failover.replication.channel_sender import SenderStatus
from failover.replication.channel_wire import Ack
from failover.replication.resync import ResyncStatus
from failover.runtime.metrics import DaemonMetrics


def _status(replication: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "node": "alpha",
        "cluster": "prod",
        "state": "primary",
        "peer": {"node": "beta", "state": "secondary", "alive": True},
        "degraded": None,
        "in_sync": False,
        "uptime": 12.5,
        "links": [
            {"name": "lan", "up": True, "last_seen_ago": None, "rtt": None, "rtt_dropped": {}}
        ],
        "frames": {"received": 7, "dropped": {"replayed": 2}},
        "replication": replication,
    }


def _replication(eta: float | None) -> dict[str, Any]:
    sender = SenderStatus(
        ops_sent=40,
        bytes_sent=9000,
        acked=Ack(received=39, written=38, fsynced=30),
        queued_bytes=100,
        in_flight_bytes=250,
        last_ack_latency=0.002,
        broken=None,
    )
    resync = ResyncStatus(
        state="running",
        full=True,
        items_done=3,
        items_total=10,
        bytes_done=4096,
        bytes_total=65536,
        rate=1000.0,
        eta=eta,
        bandwidth_limit=0,
        error=None,
    )
    return {"replicating": True, "sender": asdict(sender), "resync": asdict(resync)}


def test_replication_and_resync_are_read_from_the_status() -> None:
    metrics = DaemonMetrics(lambda: _status(_replication(61.4)), dict)
    scrape = parse(metrics.page()[0])
    assert scrape.types == documented()
    assert scrape.value("failover_replication_session") == 1
    assert scrape.value("failover_replication_sent_ops_total") == 40
    assert scrape.value("failover_replication_sent_bytes_total") == 9000
    assert scrape.value("failover_replication_acked_ops_total", level="written") == 38
    assert scrape.value("failover_replication_acked_ops_total", level="fsynced") == 30
    assert scrape.value("failover_replication_in_flight_bytes") == 250
    assert scrape.value("failover_replication_queued_bytes") == 100
    assert scrape.value("failover_resync_progress", unit="items", of="done") == 3
    assert scrape.value("failover_resync_progress", unit="bytes", of="total") == 65536
    assert scrape.value("failover_resync_eta_seconds") == 61.4
    assert scrape.value("failover_resync_running") == 1
    # the rest of the status
    assert scrape.value("failover_link_last_seen_seconds", link="lan") == math.inf
    assert scrape.value("failover_frames_dropped_total", reason="replayed") == 2
    assert scrape.value("failover_in_sync") == 0


def test_an_unknown_eta_is_nan_and_no_replication_gives_no_samples() -> None:
    scrape = parse(DaemonMetrics(lambda: _status(_replication(None)), dict).page()[0])
    assert math.isnan(scrape.value("failover_resync_eta_seconds"))
    bare = parse(DaemonMetrics(lambda: _status(None), dict).page()[0])
    assert bare.types == documented()
    status_read = [
        s.name
        for s in bare.samples
        if s.name.startswith(("failover_replication_", "failover_resync_"))
        and not s.name.startswith("failover_replication_ack_latency_seconds")  # counted, at 0
    ]
    assert status_read == []
