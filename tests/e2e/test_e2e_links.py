"""Other links between namespaced daemons: a serial line over a socat pty pair
alongside UDP, and an out-of-tree transport plugin (``pipe``) carrying a cluster.

Serial devices and Unix sockets are files, so they work across network
namespaces (the daemons change only their network namespace).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from e2e_support import NETNS, NODES, SERVING, Cluster

from failover.lab import Lab
from failover.testing.transport_contract import install_plugin_package, socat_pty_pair

pytestmark = NETNS

PLUGIN_SOURCE = Path(__file__).parents[1] / "transports" / "plugin_pkg"


def test_serial_link_alone_keeps_the_pair_when_udp_is_cut(lab: Lab, tmp_path: Path) -> None:
    with socat_pty_pair(tmp_path) as pty:
        devices = {"alpha": str(pty.a), "beta": str(pty.b)}

        def endpoints(node: str, link: str) -> dict[str, Any]:
            if link == "serial":
                return {"device": devices[node]}
            return {"address": lab.address(node, "lan"), "port": 7400}

        cluster = Cluster(lab, tmp_path, {"lan": "udp", "serial": "serial"}, endpoints=endpoints)
        cluster.start_both()
        primary, secondary = cluster.paired()
        cluster.wait("both links up", lambda: cluster.links_shown({"lan": True, "serial": True}))

        lab.link_down(primary, "lan")
        cluster.wait(
            "lan down, serial up", lambda: cluster.links_shown({"lan": False, "serial": True})
        )
        cluster.hold_steady(primary, secondary)

        # The serial line was what kept them paired: pulling it too is a takeover.
        pty.cut()
        cluster.wait(f"{secondary} takes over", lambda: cluster.state(secondary) in SERVING)


@pytest.fixture(scope="module")
def pipe_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `failover-pipe-transport` package installed into a directory for PYTHONPATH."""
    target = tmp_path_factory.mktemp("pipe-plugin")
    install_plugin_package(PLUGIN_SOURCE, target)
    return target


def test_an_out_of_tree_plugin_carries_a_cluster(
    lab: Lab, tmp_path: Path, pipe_plugin: Path
) -> None:
    def endpoints(node: str, link: str) -> dict[str, Any]:
        return {"path": str(tmp_path / f"{node}.pipe")}

    cluster = Cluster(
        lab, tmp_path, {"pipe": "pipe"}, endpoints=endpoints, env={"PYTHONPATH": str(pipe_plugin)}
    )
    cluster.start_both()
    primary, secondary = cluster.paired()
    for node in NODES:
        status = cluster.status(node)
        assert status is not None
        assert [(link["name"], link["transport"], link["up"]) for link in status["links"]] == [
            ("pipe", "pipe", True)
        ]
        assert status["frames"]["received"] > 0

    killed_at = time.monotonic()
    cluster.kill9(primary)
    cluster.wait(f"{secondary} serves", lambda: cluster.state(secondary) == "alone")
    assert time.monotonic() - killed_at < cluster.dead_timeout + 2.0
