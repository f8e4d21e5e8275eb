"""Prometheus metrics of one daemon, served at ``GET /metrics`` (docs/metrics.md).

Each daemon has a registry of its own (never prometheus-client's global one),
so that several daemons can run in one process (the tests do).

Two kinds of metric live here:

- What the status already says (state, links, replication counters, resync
  progress, checkers' health) is read from the daemon's status snapshot at
  scrape time by ``_StatusCollector``: ``/metrics`` never disagrees with
  ``/v1/status`` and nothing is maintained for it between scrapes.
- What happens between scrapes (transitions, heartbeat gaps, acknowledgement
  latencies, script and probe durations, probe failures) is counted as it
  happens, by hooks that call the counters and histograms of ``DaemonMetrics``.
  The per-frame hook (``link_heard``) holds its label child and does one
  ``observe``: no lookup and no allocation of its own per frame.

Labels ``node`` and ``cluster`` appear only on ``failover_info`` and
``failover_state``: what a rule over a pair's two scrapes groups by (the
others join on the scrape's ``instance``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from failover import __version__
from failover.core.state import State

if TYPE_CHECKING:
    from failover.platform.checkers import CheckerSet
    from failover.platform.scripts import ScriptLog
    from failover.replication.sending import Sending
    from failover.runtime.links import LinkRunner

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text exposition format 0.0.4, which every Prometheus 2.x reads."""

# Seconds between two heartbeats heard on a link: around the heartbeat interval
# (0.05 s fast profile to 1 s), up to the dead timeout and past it.
GAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A heartbeat's round trip: a LAN's fraction of a millisecond (plus two task wake-ups)
# to a 9600-baud serial link's second (a 400-byte frame takes 0.4 s each way).
RTT_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip
# Acknowledgement of a replicated write: from a LAN round trip to a stall.
ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# Scripts and probes: from an instant check to a slow application start.
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class CheckerHealth(Protocol):
    """What the collector reads of a running checker."""

    @property
    def healthy(self) -> bool: ...

    @property
    def enabled(self) -> bool: ...


Snapshot = Callable[[], dict[str, Any]]
Checkers = Callable[[], Mapping[str, CheckerHealth]]


class DaemonMetrics:
    """One daemon's registry, its event metrics and its status collector.

    ``snapshot`` is the daemon's ``Controller.status``; ``checkers`` returns the
    running checkers by name.
    """

    def __init__(self, snapshot: Snapshot, checkers: Checkers) -> None:
        # No ``*_created`` series: in the 0.0.4 format each is one more gauge per
        # counter and histogram, which says only when the daemon started. (The
        # switch is prometheus-client's, process-wide: the daemon is the process.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # auto_describe off: registering the status collector must not read the status
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.transitions = Counter(
            "failover_transitions",
            "Transitions of the core (state, substatus or reason changed), by event, states "
            "and reason (the table row's reason template, before its values are filled in).",
            ["event", "from_state", "to_state", "reason"],
            registry=registry,
        )
        self.heartbeat_gap = Histogram(
            "failover_link_heartbeat_gap_seconds",
            "Seconds between two heartbeats of the peer accepted on a link.",
            ["link"],
            buckets=GAP_BUCKETS,
            registry=registry,
        )
        self.heartbeat_rtt = Histogram(
            "failover_link_heartbeat_rtt_seconds",
            "Round trip of a heartbeat on a link: sent, echoed by the peer, minus its hold.",
            ["link"],
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        self.ack_latency = Histogram(
            "failover_replication_ack_latency_seconds",
            "Seconds from sending a message of replicated entries to its acknowledgement.",
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.script_duration = Histogram(
            "failover_script_duration_seconds",
            "Seconds each application script ran (start, stop, prestart, ...).",
            ["script"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.script_failures = Counter(
            "failover_script_failures",
            "Application script runs that failed (non-zero, killed or timed out).",
            ["script"],
            registry=registry,
        )
        self.probe_duration = Histogram(
            "failover_checker_probe_duration_seconds",
            "Seconds each checker probe took.",
            ["checker"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.probe_failures = Counter(
            "failover_checker_probe_failures",
            "Checker probes that failed (the checker is reported down after its `failures`).",
            ["checker"],
            registry=registry,
        )
        registry.register(_StatusCollector(snapshot, checkers))

    def page(self) -> tuple[bytes, str]:
        """The scrape's body and content type (text format 0.0.4)."""
        return generate_latest(self.registry), CONTENT_TYPE

    def attach(
        self,
        *,
        links: Iterable[LinkRunner],
        scripts: ScriptLog,
        checkers: CheckerSet,
        sending: Sending | None,
    ) -> None:
        """Hook the event metrics into what produces the events."""
        for link in links:
            link.on_heard = self.link_heard(link.name)
            link.on_rtt = self.heartbeat_rtt.labels(link.name).observe
        scripts.on_run = self.script_ran
        checkers.on_probe = self.probed
        if sending is not None:
            sending.on_ack_latency = self.ack_latency.observe

    # --- hooks --------------------------------------------------------------------------------

    def transition(self, event: str, source: str, target: str, reason: str) -> None:
        """Count one transition; ``reason`` is the reason's template (``reason_kind``),
        one per table row, so the label stays bounded."""
        self.transitions.labels(event, source, target, reason).inc()

    def link_heard(self, link: str) -> Callable[[], None]:
        """The hook a link calls for each heartbeat accepted on it (per frame: cheap)."""
        child = self.heartbeat_gap.labels(link)
        last: float | None = None

        def heard() -> None:
            nonlocal last
            now = anyio.current_time()
            if last is not None:
                child.observe(now - last)
            last = now

        return heard

    def script_ran(self, name: str, seconds: float, ok: bool) -> None:
        self.script_duration.labels(name).observe(seconds)
        if not ok:
            self.script_failures.labels(name).inc()

    def probed(self, checker: str, seconds: float, ok: bool) -> None:
        self.probe_duration.labels(checker).observe(seconds)
        if not ok:
            self.probe_failures.labels(checker).inc()


def _gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _number(value: Any) -> float:
    """A status field as a sample value: None (unknown) is NaN."""
    return math.nan if value is None else float(value)


class _StatusCollector(Collector):
    """Metrics read from the status snapshot at scrape time (see the module docstring).

    Every family is yielded at every scrape, with no samples where the status has
    nothing to say (no replication configured, no resync): a scrape always lists
    the same names.
    """

    def __init__(self, snapshot: Snapshot, checkers: Checkers) -> None:
        self._snapshot = snapshot
        self._checkers = checkers

    def collect(self) -> Iterator[Metric]:
        status = self._snapshot()
        node, cluster = status["node"], status["cluster"]
        yield from self._node(status, node, cluster)
        yield from self._links(status)
        yield from self._replication(status.get("replication"), status)
        yield from self._checker_health()

    def _node(self, status: dict[str, Any], node: str, cluster: str) -> Iterator[Metric]:
        info = _gauge(
            "failover_info", "This daemon: always 1.", ("node", "cluster", "peer", "version")
        )
        peer = status.get("peer")
        info.add_metric([node, cluster, "" if peer is None else peer["node"], __version__], 1)
        yield info
        state = _gauge(
            "failover_state",
            "The node's state: 1 for the current one, 0 for the others.",
            ("node", "cluster", "state"),
        )
        current = status["state"]
        for each in State:
            state.add_metric([node, cluster, each.value], 1.0 if each.value == current else 0.0)
        yield state
        peer_state = _gauge(
            "failover_peer_state",
            "The peer's state as last heard: 1 for that state (no sample before any).",
            ("state",),
        )
        if peer is not None:
            peer_state.add_metric([peer["state"]], 1)
        yield peer_state
        alive = _gauge("failover_peer_alive", "1 while the peer is heard within the dead timeout.")
        alive.add_metric([], 1.0 if peer is not None and peer["alive"] else 0.0)
        yield alive
        degraded = _gauge(
            "failover_degraded", "1 while the node cannot write its metadata (it decides nothing)."
        )
        degraded.add_metric([], 0.0 if status.get("degraded") is None else 1.0)
        yield degraded
        in_sync = _gauge(
            "failover_in_sync", "1 while the pair is in sync as /v1/status says (in_sync)."
        )
        in_sync.add_metric([], 1.0 if status["in_sync"] else 0.0)
        yield in_sync
        uptime = _gauge("failover_uptime_seconds", "Seconds since this daemon started.")
        uptime.add_metric([], status["uptime"])
        yield uptime

    def _links(self, status: dict[str, Any]) -> Iterator[Metric]:
        up = _gauge("failover_link_up", "1 while the core counts the link up.", ("link",))
        seen = _gauge(
            "failover_link_last_seen_seconds",
            "Seconds since the peer was last heard on the link (+Inf: never).",
            ("link",),
        )
        rtt_dropped = _counter(
            "failover_link_heartbeat_rtt_dropped",
            "Round-trip echoes of the peer not used as a sample, by link and reason.",
            ("link", "reason"),
        )
        for link in status["links"]:
            up.add_metric([link["name"]], 1.0 if link["up"] else 0.0)
            ago = link["last_seen_ago"]
            seen.add_metric([link["name"]], math.inf if ago is None else ago)
            for reason, count in link["rtt_dropped"].items():
                rtt_dropped.add_metric([link["name"], reason], count)
        yield up
        yield seen
        yield rtt_dropped
        frames = status["frames"]
        received = _counter("failover_frames_received", "Heartbeat frames received, on any link.")
        received.add_metric([], frames["received"])
        yield received
        dropped = _counter(
            "failover_frames_dropped", "Heartbeat frames dropped, by reason.", ("reason",)
        )
        for reason, count in frames["dropped"].items():
            dropped.add_metric([reason], count)
        yield dropped

    def _replication(
        self, replication: dict[str, Any] | None, status: dict[str, Any]
    ) -> Iterator[Metric]:
        replicating = _gauge(
            "failover_replication_session", "1 while a replication session to the peer runs."
        )
        ops = _counter(
            "failover_replication_sent_ops", "Entries sent in the current replication session."
        )
        sent = _counter(
            "failover_replication_sent_bytes", "Bytes sent in the current replication session."
        )
        acked = _counter(
            "failover_replication_acked_ops",
            "Entries of the current session the peer acknowledged, by level.",
            ("level",),
        )
        in_flight = _gauge(
            "failover_replication_in_flight_bytes", "Bytes sent and not yet applied by the peer."
        )
        queued = _gauge("failover_replication_queued_bytes", "Bytes queued, not yet sent.")
        resync = _gauge(
            "failover_resync_progress",
            "The current or last resync: items and bytes done and total.",
            ("unit", "of"),
        )
        eta = _gauge("failover_resync_eta_seconds", "Seconds the resync still needs (NaN: unknown)")
        running = _gauge("failover_resync_running", "1 while a resync runs.")
        if replication is not None:
            replicating.add_metric([], 1.0 if replication.get("replicating") else 0.0)
            sender = replication.get("sender")
            if sender is not None:
                ops.add_metric([], sender["ops_sent"])
                sent.add_metric([], sender["bytes_sent"])
                for level, seq in sender["acked"].items():
                    acked.add_metric([level], seq)
                in_flight.add_metric([], sender["in_flight_bytes"])
                queued.add_metric([], sender["queued_bytes"])
            progress = replication.get("resync")
            if progress is not None:
                for unit in ("items", "bytes"):
                    resync.add_metric([unit, "done"], progress[f"{unit}_done"])
                    resync.add_metric([unit, "total"], progress[f"{unit}_total"])
                eta.add_metric([], _number(progress["eta"]))
                running.add_metric([], 1.0 if progress["state"] == "running" else 0.0)
        yield from (replicating, ops, sent, acked, in_flight, queued, resync, eta, running)

    def _checker_health(self) -> Iterator[Metric]:
        healthy = _gauge(
            "failover_checker_healthy",
            "The checker's last reported result: 1 healthy (or not probing), 0 down.",
            ("checker",),
        )
        probing = _gauge(
            "failover_checker_probing",
            "1 while the checker probes (its class runs now).",
            ("checker",),
        )
        for name, checker in sorted(self._checkers().items()):
            healthy.add_metric([name], 1.0 if checker.healthy else 0.0)
            probing.add_metric([name], 1.0 if checker.enabled else 0.0)
        yield healthy
        yield probing
