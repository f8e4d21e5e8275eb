"""A full state disk on the serving node, two real daemons in namespaces with a client:
the node keeps the application and the virtual IP, says it is degraded, decides
nothing it could not record, and resumes once space returns.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

from e2e_support import NETNS, NODES, Cluster, cli

from failover.lab import Lab
from failover.testing.disks import fill, small_tmpfs

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}


@contextlib.contextmanager
def node_disks(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Each node's state directory (``state/<node>``) on a small tmpfs of its own."""
    with contextlib.ExitStack() as stack:
        yield {node: stack.enter_context(small_tmpfs(tmp_path / "state" / node)) for node in NODES}


def test_a_full_state_disk_on_the_serving_node_keeps_the_service_and_the_address(
    lab: Lab, tmp_path: Path
) -> None:
    with node_disks(tmp_path) as disks:
        cluster = Cluster(lab, tmp_path, LINKS, vip_network="lan")
        cluster.start_both()
        primary, secondary = cluster.paired()
        cluster.wait("the VIP answers from the primary", lambda: cluster.fetch_via_vip() == primary)
        generation = cluster.status(primary)["generation"]  # type: ignore[index]

        filler = fill(disks[primary])
        # The secondary stops: the primary must go alone under a new generation,
        # which it cannot record.
        cluster.expected_dead.add(secondary)
        cluster.procs[secondary].send_signal(signal.SIGTERM)
        assert cluster.procs[secondary].wait(timeout=30) == 0

        def degraded() -> bool:
            status = cluster.status(primary)
            return status is not None and status["degraded"] is not None

        cluster.wait(f"{primary} degraded", degraded)
        shown = cli("status", "--socket", str(cluster.socket(primary)))
        assert shown.returncode == 0, shown.stderr
        assert "DEGRADED    cannot write metadata" in shown.stdout, shown.stdout
        assert "No space left on device (ENOSPC)" in shown.stdout
        as_json = json.loads(
            cli("status", "--json", "--socket", str(cluster.socket(primary))).stdout
        )
        assert as_json["degraded"]["error"] == "No space left on device (ENOSPC)"
        assert (as_json["state"], as_json["generation"]) == ("primary", generation)

        # The peer returns while the disk is full: it sees a live primary and
        # never serves; the client keeps reaching the primary through the VIP.
        cluster.start(secondary)
        cluster.wait(
            f"{secondary} hears {primary}",
            lambda: (cluster.status(secondary) or {}).get("peer") is not None,
        )
        # checked at every step while the primary's own clock advances by several
        # dead timeouts (a bound on the span, not a count of steps that may be quick)
        since, checks = cluster.uptime(primary), 0

        def still_serving_for_several_dead_timeouts() -> bool:
            nonlocal checks
            assert cluster.fetch_via_vip() == primary
            assert cluster.vip_holders() == [primary]
            assert cluster.state(secondary) not in ("alone", "primary")
            assert degraded()
            checks += 1
            return checks >= 10 and cluster.uptime(primary) - since >= 5 * cluster.dead_timeout

        cluster.wait(f"{primary} serving on, degraded", still_serving_for_several_dead_timeouts)

        filler.unlink()
        cluster.wait(f"{primary} no longer degraded", lambda: not degraded())
        assert cluster.paired() == (primary, secondary)
        assert cluster.fetch_via_vip() == primary
        assert cluster.vip_holders() == [primary]
        changes = cluster.state_changes(primary)
        assert changes[-2:] == [("primary", "alone"), ("alone", "primary")], changes
        log = (tmp_path / f"{primary}.log").read_text()
        assert log.count("node degraded: metadata cannot be written") == 1
        cluster.audit_now()  # the state directories are unmounted on the way out
