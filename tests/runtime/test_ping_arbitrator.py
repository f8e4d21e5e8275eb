"""The ping arbitrator (``runtime/ping.py``): granted while the address is reached,
by TCP against a local listener and by ICMP in network namespaces of the test's own.

The replies become the core's events as for any arbitrator
(``arbitration_event``): what matters here is that a renewal that does not
reach the address is ``Unreachable`` (no event: the core's deadline fences),
never ``Lost``, that a grant carries the generation asked for, and that a
call ends within its bound whatever its probes do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from failover.config import load_config
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation
from failover.platform.checkers.probes import Outcome, Session
from failover.runtime.arbitrator import (
    Granted,
    Released,
    Unreachable,
    arbitration_event,
    build_arbitrator,
)
from failover.runtime.ping import PingArbitrator

pytestmark = pytest.mark.anyio

WANTED, BASE = Generation(4, "alpha"), Generation(3, "beta")


def tcp_arbitrator(port: int, tmp_path: Path, count: int = 2) -> PingArbitrator:
    return PingArbitrator(
        address="127.0.0.1",
        port=port,
        probe_count=count,
        probe_timeout=0.2,
        call_bound=count * 0.2 + 0.2,
        output_dir=tmp_path / "arbitrator",
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield server
    finally:
        server.close()


def closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_reached_listener_grants_the_generation_asked_for(
    listener: socket.socket, tmp_path: Path
) -> None:
    arbitrator = tcp_arbitrator(listener.getsockname()[1], tmp_path)
    # no record to raise it against: the generation asked for is the one granted
    assert await arbitrator.request(WANTED, BASE, forced=False) == Granted(WANTED)
    assert await arbitrator.request(WANTED, WANTED, forced=True) == Granted(WANTED)
    assert await arbitrator.renew(WANTED) == Granted(WANTED)
    assert await arbitrator.release() == Released()
    granted = arbitration_event(fx.RenewArbitration(WANTED), Granted(WANTED))
    assert granted == ev.ArbitrationGranted(generation=WANTED)


async def test_a_refused_connection_is_unreachable_never_lost(tmp_path: Path) -> None:
    port = closed_port()
    arbitrator = tcp_arbitrator(port, tmp_path)
    reply = await arbitrator.renew(WANTED)
    assert isinstance(reply, Unreachable), reply
    assert f"127.0.0.1 port {port} (TCP) not reached (2 of 2 probes" in reply.reason
    assert "refused" in reply.reason.lower(), reply.reason
    # a renewal that did not get through says nothing: the core's deadline fences
    assert arbitration_event(fx.RenewArbitration(WANTED), reply) is None
    request = await arbitrator.request(WANTED, BASE, forced=False)
    assert isinstance(request, Unreachable)
    assert isinstance(
        arbitration_event(fx.RequestArbitration(WANTED, BASE, False), request),
        ev.ArbitrationDenied,
    )


async def test_the_listener_closed_then_back(listener: socket.socket, tmp_path: Path) -> None:
    port = listener.getsockname()[1]
    arbitrator = tcp_arbitrator(port, tmp_path)
    assert await arbitrator.renew(WANTED) == Granted(WANTED)
    listener.close()
    assert isinstance(await arbitrator.renew(WANTED), Unreachable)
    with socket.create_server(("127.0.0.1", port)):
        assert await arbitrator.renew(WANTED) == Granted(WANTED)


class Scripted(Session):
    """A probe that answers from a script of outcomes (None: it never answers)."""

    def __init__(self, *outcomes: bool | None) -> None:
        self.outcomes = list(outcomes)
        self.checks = 0

    async def check(self, timeout: float) -> Outcome:
        self.checks += 1
        outcome = self.outcomes.pop(0)
        if outcome is None:
            await anyio.sleep_forever()
        return Outcome(bool(outcome), "" if outcome else f"probe {self.checks} failed")


def scripted(probe: Scripted, tmp_path: Path, count: int = 3) -> PingArbitrator:
    arbitrator = tcp_arbitrator(1, tmp_path, count)
    arbitrator.probe = probe
    arbitrator.probe_timeout = 0.05
    arbitrator.call_bound = count * 0.05 + 0.05
    return arbitrator


async def test_several_probes_the_first_that_reaches_grants(tmp_path: Path) -> None:
    probe = Scripted(False, False, True)
    assert await scripted(probe, tmp_path).request(WANTED, BASE, False) == Granted(WANTED)
    assert probe.checks == 3
    probe = Scripted(True)
    assert await scripted(probe, tmp_path).renew(WANTED) == Granted(WANTED)
    assert probe.checks == 1, "no probe after the first that reached it"
    probe = Scripted(False, False, False)
    reply = await scripted(probe, tmp_path).renew(WANTED)
    assert reply == Unreachable(
        "127.0.0.1 port 1 (TCP) not reached (3 of 3 probes of 0.05 s failed within 0.2 s): "
        "probe 3 failed"
    )


async def test_a_probe_that_hangs_is_cut_at_the_call_bound(tmp_path: Path) -> None:
    probe = Scripted(False, None, True)
    reply = await scripted(probe, tmp_path).renew(WANTED)
    assert isinstance(reply, Unreachable), reply
    assert "(1 of 3 probes" in reply.reason and probe.checks == 2, (reply, probe.checks)


async def test_an_output_directory_that_cannot_be_made_changes_no_verdict(
    listener: socket.socket, tmp_path: Path
) -> None:
    # The directory only holds the probe's log: a state disk that cannot take it
    # (full, read-only, a file in the way) loses the log, never the grant.
    (tmp_path / "file").write_text("")
    arbitrator = tcp_arbitrator(listener.getsockname()[1], tmp_path)
    arbitrator.output_dir = tmp_path / "file" / "arbitrator"
    assert await arbitrator.request(WANTED, BASE, False) == Granted(WANTED)
    if shutil.which("ping"):
        icmp = PingArbitrator(
            address="127.0.0.1",
            port=None,
            probe_count=1,
            probe_timeout=2.0,
            call_bound=3.0,
            output_dir=tmp_path / "file" / "arbitrator",
        )
        assert await icmp.renew(WANTED) == Granted(WANTED)


CLUSTER = """\
cluster:
  name: prod
  insecure: true
  state_dir: {state}
  timing: {{dead_timeout: 6.5, startup_timeout: 6}}
  arbitrator: {{type: ping, address: 192.0.2.1, {extra}}}
links:
  - {{name: lan, transport: udp}}
nodes:
  alpha:
    links: {{lan: {{address: 127.0.0.1, port: 7401}}}}
  beta:
    links: {{lan: {{address: 127.0.0.1, port: 7402}}}}
"""


def test_build_arbitrator_gives_a_ping_or_a_tcp_probe(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.format(state=tmp_path, extra="probe_count: 2, probe_timeout: 0.3"))
    built = build_arbitrator(load_config(path), "beta", 1)
    assert isinstance(built, PingArbitrator)
    assert (built.target, built.probe_count, built.probe_timeout) == ("192.0.2.1", 2, 0.3)
    assert built.call_bound == pytest.approx(0.8)
    assert built.output_dir == tmp_path / "beta" / "arbitrator"
    assert type(built.probe).__name__ == "PingProbe"
    path.write_text(CLUSTER.format(state=tmp_path, extra="port: 443"))
    built = build_arbitrator(load_config(path), "beta", 1)
    assert isinstance(built, PingArbitrator) and type(built.probe).__name__ == "TcpProbe"
    assert built.target == "192.0.2.1 port 443 (TCP)"


# --- ICMP, in network namespaces ---------------------------------------------------------

CALLS = Path(__file__).with_name("runtime_ping_calls.py")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def namespaces() -> Iterator[list[str]]:
    """Names for two namespaces; every one created is deleted at the end."""
    names = [f"fo-ping-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def calls_in(
    namespace: str, tmp_path: Path, target: str, timeout: float, *calls: str
) -> list[dict[str, Any]]:
    options = {
        "address": target,
        "probe_count": 3,
        "probe_timeout": timeout,
        "output_dir": str(tmp_path / "arbitrator"),
        "calls": calls,
    }
    argv = ["nsenter", f"--net=/run/netns/{namespace}", sys.executable, str(CALLS)]
    done = subprocess.run(
        [*argv, json.dumps(options)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(not shutil.which("nsenter"), reason="needs nsenter")
@pytest.mark.skipif(not shutil.which("ping"), reason="needs iputils-ping")
def test_icmp_granted_while_the_peer_namespace_answers(
    namespaces: list[str], tmp_path: Path
) -> None:
    here, there = namespaces
    ip("netns", "add", here)
    ip("netns", "add", there)
    ip("-n", here, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", there)
    ip("-n", here, "addr", "add", "10.97.0.1/24", "dev", "a0", "nodad")
    ip("-n", there, "addr", "add", "10.97.0.2/24", "dev", "b0", "nodad")
    ip("-n", here, "link", "set", "a0", "up")
    ip("-n", there, "link", "set", "b0", "up")
    granted = {"reply": "Granted", "generation": str(WANTED)}
    # three probes of 0.5 s: room for the veth's carrier to come up
    replies = calls_in(here, tmp_path, "10.97.0.2", 0.5, "request", "renew", "release")
    assert replies == [
        {"call": "request", **granted},
        {"call": "renew", **granted},
        {"call": "release", "reply": "Released"},
    ]
    ip("-n", there, "link", "set", "b0", "down")
    replies = calls_in(here, tmp_path, "10.97.0.2", 0.2, "renew", "request")
    assert [r["reply"] for r in replies] == ["Unreachable", "Unreachable"], replies
    assert "10.97.0.2 not reached (3 of 3 probes of 0.2 s failed" in replies[0]["reason"]
    assert "ping 10.97.0.2" in replies[0]["reason"], replies[0]
    assert (tmp_path / "arbitrator" / "checker-ping.log").exists()
