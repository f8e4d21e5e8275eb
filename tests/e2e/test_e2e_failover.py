"""Two daemons in two namespaces, UDP on "lan" and TCP on "crossover": pairing,
kill -9 of the serving daemon, one link cut, every link cut (split brain),
pauses (SIGSTOP) of either daemon that must not be taken over.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from e2e_support import NETNS, NODES, SERVING, Cluster, cli, other

from failover.lab import Lab

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}


def test_pair_then_kill_9_of_the_serving_daemon_moves_service_and_vip(
    lab: Lab, tmp_path: Path
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, vip_network="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()

    # The operator's view: the CLI over the control socket.
    shown = cli("status", "--json", "--socket", str(cluster.socket(primary)))
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "primary" and status["peer"]["state"] == "secondary"
    assert {link["name"]: link["up"] for link in status["links"]} == {
        "lan": True,
        "crossover": True,
    }
    assert cli("state", "-q", "--socket", str(cluster.socket(secondary))).returncode == 3

    # The application answers on the virtual IP, from the primary.
    cluster.wait("the VIP answers from the primary", lambda: cluster.fetch_via_vip() == primary)
    assert cluster.vip_holders() == [primary]

    killed_at = time.monotonic()
    cluster.kill9(primary)
    cluster.wait(f"{secondary} serves", lambda: cluster.state(secondary) == "alone")
    took = time.monotonic() - killed_at
    # A generous bound derived from the dead timeout (the wait above polls every 20 ms).
    assert took < cluster.dead_timeout + 2.0, f"takeover took {took:.2f} s"
    status = cluster.status(secondary)
    assert status is not None and status["peer"]["alive"] is False
    assert ("secondary", "alone") in cluster.state_changes(secondary)

    # A dead daemon cannot clean up: its watchdog, reading EOF, fenced the
    # application and released the VIP at once (without it, gratuitous ARP
    # still sends the client to the node that serves now: test_e2e_addresses).
    cluster.wait("the killed daemon's VIP released", lambda: cluster.vip_holders() == [secondary])
    cluster.wait("the VIP answers from the survivor", lambda: cluster.fetch_via_vip() == secondary)

    # The killed node comes back: it stops what it had left running, then follows.
    cluster.start(primary)
    assert cluster.paired() == (secondary, primary)
    assert cluster.vip_holders() == [secondary]
    assert not (tmp_path / f"app.{primary}.pid").exists(), "the stop script ran at restart"
    assert cluster.fetch_via_vip() == secondary


def test_cutting_one_of_two_links_shows_it_down_and_does_not_take_over(
    lab: Lab, tmp_path: Path
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS)
    cluster.start_both()
    primary, secondary = cluster.paired()
    changes = {node: cluster.state_changes(node) for node in NODES}

    lab.link_down(secondary, "crossover")
    cluster.wait(
        "crossover down, lan up", lambda: cluster.links_shown({"crossover": False, "lan": True})
    )
    cluster.hold_steady(primary, secondary)
    assert {node: cluster.state_changes(node) for node in NODES} == changes
    assert cluster.status(secondary)["peer"]["alive"] is True  # type: ignore[index]

    lab.link_up(secondary, "crossover")
    cluster.wait(
        "crossover up again", lambda: cluster.links_shown({"crossover": True, "lan": True})
    )
    assert cluster.state(primary) == "primary" and cluster.state(secondary) == "secondary"


@pytest.mark.parametrize(
    "crossover",
    [
        "udp",
        "tcp",
    ],
)
def test_cutting_every_link_takes_over_and_healing_resolves_the_split_brain(
    lab: Lab, tmp_path: Path, crossover: str
) -> None:
    cluster = Cluster(lab, tmp_path, {"lan": "udp", "crossover": crossover})
    cluster.start_both()
    primary, secondary = cluster.paired()

    for network in LINKS:
        lab.link_down(secondary, network)
    cluster.wait(f"{secondary} takes over", lambda: cluster.state(secondary) in SERVING)
    assert cluster.state(primary) in (*SERVING, None)  # still serving (the other side of it)
    status = cluster.status(secondary)
    assert status is not None and status["peer"]["alive"] is False
    assert not any(link["up"] for link in status["links"])

    for network in LINKS:
        lab.link_up(secondary, network)
    winner, loser = cluster.paired()
    assert {winner, loser} == set(NODES)
    assert cluster.state(loser) == "secondary" and cluster.state(winner) == "primary"
    # TCP reconnects with a backoff: it may come back after the pair has re-formed.
    cluster.wait("both links up", lambda: cluster.links_shown({"crossover": True, "lan": True}))
    cluster.hold_steady(winner, loser, dead_timeouts=2)  # resolved, not flapping


def heard_ago(cluster: Cluster, node: str) -> float:
    """Seconds since ``node`` last heard its peer (0 while it does not answer)."""
    status = cluster.status(node)
    return 0.0 if status is None else float(status["peer"]["last_seen_ago"])


def test_pausing_either_daemon_for_most_of_the_dead_timeout_is_no_takeover(
    lab: Lab, tmp_path: Path
) -> None:
    """SIGSTOP of the primary's or the secondary's daemon for 0.8 x dead_timeout,
    then SIGCONT, three times each: no state changes anywhere. The shipped
    default profile (dead timeout 2 s, heartbeat 0.2 s)."""
    cluster = Cluster(lab, tmp_path, LINKS, profile="default")
    cluster.start_both()
    primary, secondary = cluster.paired()
    changes = {node: cluster.state_changes(node) for node in NODES}
    for victim in (primary, secondary) * 3:
        pid = cluster.procs[victim].pid
        # the worst phase: the victim's next heartbeat is due (its peer last
        # heard it most of an interval ago), so the silence its peer sees is
        # the pause plus almost a whole interval
        cluster.wait(
            f"{victim}'s next heartbeat is due",
            lambda victim=victim: (
                heard_ago(cluster, other(victim)) >= 0.75 * cluster.heartbeat_interval
            ),
        )
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(0.8 * cluster.dead_timeout)  # the pause under test (not a wait)
        finally:
            os.kill(pid, signal.SIGCONT)
        # a takeover would happen within one dead timeout of the resume
        cluster.hold_steady(primary, secondary, dead_timeouts=1.5)
    assert {node: cluster.state_changes(node) for node in NODES} == changes
