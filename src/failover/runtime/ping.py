"""``type: ping``: SafeKit's split-brain checker, as an ``Arbitrator``.

A node serves only while it reaches an address that both nodes should reach
(a router, a gateway, a third machine): an ICMP echo answered, or a TCP
connection opened when a port is given. Each call makes up to
``probe_count`` probes, one after the other, each in a slot of
``probe_timeout`` seconds, and stops at the first that reaches the address;
the whole call is cancelled after ``probe_count x probe_timeout`` plus a
small slack (``ArbitratorConfig.ping_call_bound``), which the configuration
keeps within half of ``lease_renew``. The probes are the checkers' own
(``PingProbe``: iputils ``ping``; ``TcpProbe``).

- request: granted, with the generation the node asked for, if it reaches
  the address now; else unreachable (the core reports a denial and asks
  again at the next recheck);
- renew: granted if it reaches the address; else unreachable, never "lost":
  one missed renewal says nothing of the peer, and the core's own deadline
  (``fence_at``) stops the node if no later renewal gets through;
- release: nothing to give back.

There is no shared record: nothing is written anywhere, and nobody counts a
lease but the node itself. Two consequences make this arbitrator weaker
than the witness or etcd (docs/arbitration.md, ping):

- no generation rule: the address cannot tell a node holding the newest
  data from one that fell behind, so a grant vouches for nothing but
  reachability (the core does not let a node that decides without its peer
  serve on such a grant: ``Settings.arbitrator_records`` is false);
- no exclusion: two nodes that both reach the address while the link
  between them is cut are both granted, and both serve, as without an
  arbitrator. What protects the pair is that a node cut off from everything
  stops serving (its renewals fail) before its peer takes over, which the
  configuration's timing rule ensures (``config.checks._check_ping_timing``:
  ``lease_ttl + heartbeat_interval <= dead_timeout`` and
  ``lease_ttl <= startup_timeout``).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog

from failover.core.state import Generation
from failover.platform.checkers.probes import PingProbe, Session, TcpProbe
from failover.runtime.arbitrator import Granted, Released, Reply, Unreachable

log = structlog.get_logger("failover.arbitrator")

PROBE_NAME = "ping"
"""The ping probe's output goes to ``<output_dir>/checker-ping.log``."""


class PingArbitrator:
    """``Arbitrator`` that grants while ``address`` (or ``address:port``, TCP) is reached."""

    def __init__(
        self,
        *,
        address: str,
        port: int | None,
        probe_count: int,
        probe_timeout: float,
        call_bound: float,
        output_dir: Path,
    ) -> None:
        self.output_dir = output_dir
        self.probe: Session = (
            PingProbe(PROBE_NAME, address, output_dir) if port is None else TcpProbe(address, port)
        )
        self.target = address if port is None else f"{address} port {port} (TCP)"
        self.probe_count = probe_count
        self.probe_timeout = probe_timeout
        self.call_bound = call_bound
        self._lock = anyio.Lock()

    async def request(self, generation: Generation, base: Generation, forced: bool) -> Reply:
        return await self._reached(generation)

    async def renew(self, generation: Generation) -> Reply:
        return await self._reached(generation)

    async def release(self) -> Reply:
        return Released()

    async def _reached(self, generation: Generation) -> Reply:
        """Granted ``generation`` if a probe reaches the address within the call's bound."""
        async with self._lock:
            # (the probe's log directory is made by the probe, best-effort: a
            # verdict never depends on whether the log can be written)
            reasons: list[str] = []
            with anyio.move_on_after(self.call_bound):
                for _ in range(self.probe_count):
                    slot_end = anyio.current_time() + self.probe_timeout
                    outcome = await self.probe.check(self.probe_timeout)
                    if outcome.ok:
                        return Granted(generation)
                    reasons.append(outcome.reason)
                    # a probe that failed at once (no route) does not hasten the next
                    await anyio.sleep(max(0.0, slot_end - anyio.current_time()))
            last = f": {reasons[-1]}" if reasons else ""
            return Unreachable(
                f"{self.target} not reached ({len(reasons)} of {self.probe_count} probes "
                f"of {self.probe_timeout:g} s failed within {self.call_bound:g} s){last}"
            )
