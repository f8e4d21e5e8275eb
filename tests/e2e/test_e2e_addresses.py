"""Virtual addresses of both families between two namespaces, seen from a client.

The cluster holds an IPv4 and an IPv6 address on "lan"; the start script runs a
small HTTP server on each (it answers ``/node`` with the node's name). The
client namespace reaches both across a kill -9 of the serving node's processes
and across a swap, and its kernel neighbour cache must point at the new node
as soon as it serves, with no traffic from the client in between: only the
announcements (gratuitous ARP, unsolicited neighbour advertisement) can have
changed it. The killed node's kernel still holds the addresses and would keep
confirming its own MAC; without the announcements the client would go on
using it until the entry expired.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from e2e_support import APP_PORT, NETNS, NODES, Cluster, cli

from failover.lab import Lab

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}
VIP4 = "10.77.1.200"
VIP6 = "fd77:1::200"
CLIENT6 = "fd77:1::100/64"
ANNOUNCED = 5.0  # s: bound on the wait for the client's cache; the first announcement
# goes out before the node reports it serves, and nothing else changes the cache


def serve_every_address(cluster: Cluster, tmp_path: Path, addresses: list[dict[str, Any]]) -> None:
    """Give ``cluster`` these virtual addresses and scripts that run one HTTP server
    on each (``$FAILOVER_VIPS``, or ``$FAILOVER_VIP`` alone), then check the file."""
    for node in NODES:
        www = tmp_path / f"www-{node}"
        www.mkdir(exist_ok=True)
        (www / "node").write_text(node)
    pidfile = f'"{tmp_path}/app.$FAILOVER_NODE.pids"'
    start, stop = tmp_path / "app-start", tmp_path / "app-stop"
    start.write_text(
        "#!/bin/sh\n"
        "for vip in ${FAILOVER_VIPS:-$FAILOVER_VIP}; do\n"
        f'  {sys.executable} -m http.server --bind "${{vip%/*}}" '
        f'--directory "{tmp_path}/www-$FAILOVER_NODE" {APP_PORT} >/dev/null 2>&1 </dev/null &\n'
        f"  echo $! >> {pidfile}\n"
        "done\n"
    )
    stop.write_text(
        "#!/bin/sh\n"
        f"if [ -f {pidfile} ]; then kill -9 $(cat {pidfile}) 2>/dev/null; rm -f {pidfile}; fi\n"
        "exit 0\n"
    )
    start.chmod(0o755)
    stop.chmod(0o755)
    document = yaml.safe_load(cluster.config_path.read_text())
    document["application"] = {"start": str(start), "stop": str(stop), "timeout": 5}
    if len(addresses) == 1:
        document["virtual_ip"] = addresses[0]  # the single form, as before virtual_ips
    else:
        document["virtual_ips"] = addresses
    cluster.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    checked = cli("check-config", str(cluster.config_path))
    assert checked.returncode == 0, checked.stderr


def mac_of(lab: Lab, node: str) -> str:
    shown = json.loads(lab.exec(node, ["ip", "-j", "link", "show", "lan"]).stdout)
    return str(shown[0]["address"])


def client_cache(lab: Lab, address: str) -> str | None:
    """The MAC the client's kernel has for ``address`` (None: no entry)."""
    shown = json.loads(lab.exec("client", ["ip", "-j", "neigh", "show", address]).stdout)
    return shown[0].get("lladdr") if shown else None


def kill_node(cluster: Cluster, node: str) -> None:
    """SIGKILL the daemon of ``node`` and its application; the kernel (and the
    addresses on its interface) stay, as after a crash of the processes."""
    pids = (cluster.tmp_path / f"app.{node}.pids").read_text().split()
    cluster.kill9(node)
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)


def reached_from(cluster: Cluster, node: str, addresses: tuple[str, ...]) -> None:
    """The client's cache points every address at ``node`` (without the client
    sending anything), then the client reaches ``node``'s service on each."""
    lab, mac = cluster.lab, mac_of(cluster.lab, node)
    for address in addresses:
        cluster.wait(
            f"the client's neighbour cache has {address} at {node}'s MAC",
            lambda address=address: client_cache(lab, address) == mac,
            bound=ANNOUNCED,
        )
    for address in addresses:
        cluster.wait(
            f"{address} answers from {node}", lambda a=address: cluster.fetch_via_vip(a) == node
        )
        assert node in cluster.vip_holders(address)


def test_both_families_follow_the_service_across_a_kill_9_and_a_swap(
    lab: Lab, tmp_path: Path
) -> None:
    lab.exec("client", ["ip", "addr", "add", CLIENT6, "dev", "lan", "nodad"])
    # without the watchdog, which would release the addresses of the killed daemon
    cluster = Cluster(lab, tmp_path, LINKS, watchdog=False)
    serve_every_address(
        cluster,
        tmp_path,
        [
            {"address": f"{VIP4}/24", "interface": "lan"},
            {"address": f"{VIP6}/64", "interface": "lan"},
        ],
    )
    both = (VIP4, VIP6)
    cluster.start_both()
    primary, secondary = cluster.paired()
    for address in both:
        cluster.wait(
            f"{address} answers from {primary}",
            lambda a=address: cluster.fetch_via_vip(a) == primary,
        )
        assert cluster.vip_holders(address) == [primary]
        assert client_cache(lab, address) == mac_of(lab, primary)

    # kill -9: the survivor takes both addresses and announces them while the
    # killed node's kernel still holds them too.
    kill_node(cluster, primary)
    cluster.wait(f"{secondary} serves", lambda: cluster.state(secondary) == "alone")
    for address in both:
        assert cluster.vip_holders(address) == list(NODES), "both kernels hold it: the hard case"
    reached_from(cluster, secondary, both)

    # The killed node comes back: it removes its stale addresses and follows.
    cluster.start(primary)
    assert cluster.paired() == (secondary, primary)
    for address in both:
        assert cluster.vip_holders(address) == [secondary]

    # A swap: the addresses come back, announced again.
    done = cli("swap", "--socket", str(cluster.socket(secondary)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert cluster.paired() == (primary, secondary)
    reached_from(cluster, primary, both)
    for address in both:
        assert cluster.vip_holders(address) == [primary]


def test_an_ipv6_virtual_ip_alone_is_usable_at_once_and_the_pair_is_stable(
    lab: Lab, tmp_path: Path
) -> None:
    """Regression (issue 9): the address stayed tentative, the start script's server
    could not bind it, and the nodes ping-ponged. The single ``virtual_ip`` form."""
    lab.exec("client", ["ip", "addr", "add", CLIENT6, "dev", "lan", "nodad"])
    cluster = Cluster(lab, tmp_path, LINKS)
    serve_every_address(cluster, tmp_path, [{"address": f"{VIP6}/64", "interface": "lan"}])
    cluster.start_both()
    primary, secondary = cluster.paired()
    cluster.wait(f"{VIP6} answers from {primary}", lambda: cluster.fetch_via_vip(VIP6) == primary)
    cluster.hold_steady(primary, secondary, dead_timeouts=2)
    assert cluster.vip_holders(VIP6) == [primary]
