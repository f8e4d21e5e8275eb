"""Regressions at the runtime level: two real daemons, each in a network namespace
of its own, on a LAN (a bridge in a third namespace, as a switch) and a
direct backup link.

- The serving node's LAN port going down (``ip link set lan0 down`` in its
  namespace) is seen by its interface checker and reported to its core
  (before, nothing noticed: the node stayed primary with the service
  unreachable), and the service moves to the peer.
- The application killed on the serving node is seen by the process checker
  (from the application's pidfile) and reported to the core; the
  application runs again.

Waits poll the daemons' logs and control API under a generous bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from failover.api.client import ControlClient
from failover.config import load_config
from failover.errors import FailoverError

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not (shutil.which("ip") and shutil.which("nsenter")), reason="needs iproute2 and nsenter"
    ),
]

MAIN = Path(__file__).parents[1] / "runtime" / "runtime_daemon_main.py"
BOUND = 30.0  # seconds: an upper bound on every wait, not an expected duration
NODES = ("alpha", "beta")
LAN = {"alpha": "10.97.0.1", "beta": "10.97.0.2"}
BACKUP = {"alpha": "10.97.1.1", "beta": "10.97.1.2"}
PORT = 7600


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Lab:
    """The namespaces, the cluster file, the daemons and the application's processes."""

    def __init__(self, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.tmp_path = tmp_path
        self.ns = {node: f"fo-rt-{node[0]}-{tag}" for node in NODES}
        self.switch = f"fo-rt-s-{tag}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pidfile = tmp_path / "app.pid"
        self.every_app = tmp_path / "every-app.pid"  # each application ever started

    def build_network(self) -> None:
        alpha, beta, switch = self.ns["alpha"], self.ns["beta"], self.switch
        for name in (alpha, beta, switch):
            ip("netns", "add", name)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for node, port in (("alpha", "pa"), ("beta", "pb")):
            ns = self.ns[node]
            ip(
                "-n",
                ns,
                "link",
                "add",
                "lan0",
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                switch,
            )
            ip("-n", switch, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{LAN[node]}/24", "dev", "lan0")
            ip("-n", ns, "link", "set", "lan0", "up")
        ip(
            "-n",
            alpha,
            "link",
            "add",
            "bak0",
            "type",
            "veth",
            "peer",
            "name",
            "bak0",
            "netns",
            beta,
        )
        for node in NODES:
            ip("-n", self.ns[node], "addr", "add", f"{BACKUP[node]}/24", "dev", "bak0")
            ip("-n", self.ns[node], "link", "set", "bak0", "up")
            ip("-n", self.ns[node], "link", "set", "lo", "up")

    def write_config(self, checkers: list[dict[str, Any]], app: str = "sleep 3600") -> Path:
        start, stop = self.tmp_path / "app-start", self.tmp_path / "app-stop"
        start.write_text(
            "#!/bin/sh\n"
            f"{app} &\n"
            f"echo $! > {self.pidfile}\n"
            f"echo $! >> {self.every_app}\n"
            f'echo "$FAILOVER_NODE" > {self.tmp_path}/serving\n'
        )
        stop.write_text(
            f"#!/bin/sh\nkill $(cat {self.pidfile}) 2>/dev/null\nrm -f {self.pidfile}\n"
        )
        start.chmod(0o755)
        stop.chmod(0o755)
        document: dict[str, Any] = {
            "cluster": {
                "name": "lab",
                "insecure": True,
                "state_dir": str(self.tmp_path / "state"),
                "profile": "fast",
            },
            "links": [{"name": "lan", "transport": "udp"}, {"name": "backup", "transport": "udp"}],
            "nodes": {
                node: {
                    "links": {
                        "lan": {"address": LAN[node], "port": PORT},
                        "backup": {"address": BACKUP[node], "port": PORT},
                    }
                }
                for node in NODES
            },
            "application": {"start": str(start), "stop": str(stop), "timeout": 5},
            "checkers": checkers,
        }
        path = self.tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        self.config = load_config(path)
        return path

    def start(self, node: str, config: Path) -> None:
        with open(self.tmp_path / f"{node}.stderr", "wb") as stderr:
            self.procs[node] = subprocess.Popen(
                [
                    *("nsenter", f"--net=/run/netns/{self.ns[node]}", sys.executable, str(MAIN)),
                    *("run", "-c", str(config), "--node", node),
                    *("--log-file", str(self.tmp_path / f"{node}.log")),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def records(self, node: str) -> list[dict[str, Any]]:
        path = self.tmp_path / f"{node}.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def state(self, node: str) -> str | None:
        socket_path = self.config.control_of(node).socket
        try:
            status = ControlClient(unix_path=str(socket_path), timeout=2).get_status()
        except FailoverError:
            return None
        return str(status["state"]) if status["substatus"] == "ready" else None

    def wait(self, what: str, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + BOUND
        while not predicate():
            for node, proc in self.procs.items():
                if proc.poll() is not None:
                    stderr = (self.tmp_path / f"{node}.stderr").read_text()
                    pytest.fail(f"{node} exited with {proc.returncode}: {stderr}")
            if time.monotonic() > deadline:
                states = {node: self.state(node) for node in NODES}
                pytest.fail(f"not reached within {BOUND} s: {what} (states {states})")
            time.sleep(0.05)

    def paired(self) -> tuple[str, str]:
        self.wait(
            "primary + secondary",
            lambda: sorted(str(self.state(n)) for n in NODES) == ["primary", "secondary"],
        )
        primary = next(n for n in NODES if self.state(n) == "primary")
        return primary, next(n for n in NODES if n != primary)

    def checker_transitions(self, node: str, checker: str) -> list[dict[str, Any]]:
        """The core's transitions on ``node`` for ``checker``'s events."""
        return [
            r
            for r in self.records(node)
            if r.get("msg") == "transition"
            and r.get("event") in ("checker_down", "checker_up")
            and checker in str(r.get("reason"))
        ]

    def reported_down(self, node: str, checker: str) -> dict[str, Any]:
        """Wait until ``node``'s core handled ``checker``'s CheckerDown; its log record."""
        self.wait(
            f"{node}'s core hears that checker {checker} is down",
            lambda: any(
                r["event"] == "checker_down" for r in self.checker_transitions(node, checker)
            ),
        )
        return next(
            r
            for r in self.records(node)
            if r.get("msg") == "checker down" and r.get("checker") == checker
        )

    def app_alive(self) -> bool:
        try:
            pid = int(self.pidfile.read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        with open(f"/proc/{pid}/stat") as handle:  # a zombie is dead for our purpose
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        if self.every_app.exists():
            for pid in self.every_app.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for name in (*self.ns.values(), self.switch):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    running = Lab(tmp_path)
    try:
        running.build_network()
        yield running
    finally:
        running.close()


def start_pair(lab: Lab, checkers: list[dict[str, Any]], app: str = "sleep 3600") -> None:
    config = lab.write_config(checkers, app)
    for node in NODES:
        lab.start(node, config)


LAN_AND_APP = [
    {"name": "lan", "type": "interface", "interface": "lan0"},
    {"name": "app", "type": "process", "pidfile": "PIDFILE", "interval": 1},
]


def lan_and_app(lab: Lab) -> list[dict[str, Any]]:
    return [{**c, "pidfile": str(lab.pidfile)} if "pidfile" in c else c for c in LAN_AND_APP]


def test_the_serving_nodes_lan_port_down_is_reported_and_moves_the_service(lab: Lab) -> None:
    start_pair(lab, lan_and_app(lab))
    primary, secondary = lab.paired()
    assert lab.checker_transitions(primary, "lan") == []
    ip("-n", lab.ns[primary], "link", "set", "lan0", "down")
    down = lab.reported_down(primary, "lan")
    assert down["reason"] == "interface lan0 is down (administratively)"
    lab.wait(f"{secondary} serves", lambda: lab.state(secondary) in ("alone", "primary"))
    lab.wait("the application runs on the peer", lab.app_alive)
    assert (lab.tmp_path / "serving").read_text() == f"{secondary}\n"
    assert lab.checker_transitions(secondary, "lan") == [], "the peer's own port is fine"


def test_the_application_killed_on_the_serving_node_is_reported_and_runs_again(lab: Lab) -> None:
    start_pair(lab, lan_and_app(lab))
    primary, _ = lab.paired()
    lab.wait("the application runs", lab.app_alive)
    killed = int(lab.pidfile.read_text().split()[0])
    os.kill(killed, signal.SIGKILL)
    down = lab.reported_down(primary, "app")
    assert str(killed) in down["reason"], down
    lab.wait("the application runs again", lab.app_alive)
    assert int(lab.pidfile.read_text().split()[0]) != killed


LISTENER = """\
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    connection, _ = server.accept()
    connection.close()
    with open(sys.argv[2], "a") as seen:
        seen.write("connection\\n")
"""


def test_a_tcp_checker_on_the_applications_port_does_not_block_its_start(
    lab: Lab, tmp_path: Path
) -> None:
    # Before, the checker ran on both nodes from the start: the port is closed
    # until the application starts, so both nodes waited for ever.
    listener, seen = tmp_path / "listener.py", tmp_path / "connections"
    listener.write_text(LISTENER)
    web = {"name": "web", "type": "tcp", "host": "127.0.0.1", "port": 8080}
    checker = {**web, "interval": 0.2, "timeout": 1, "grace": 0.5}
    # a start script that takes longer than the grace (as one that waits for a
    # database's recovery does): the port opens only once it has succeeded
    start_pair(lab, [checker], app=f"sleep 1.5; {sys.executable} {listener} 8080 {seen}")
    primary, secondary = lab.paired()
    lab.wait("the application runs", lab.app_alive)
    lab.wait(
        "the checker probed the application three times",
        lambda: seen.exists() and len(seen.read_text().splitlines()) >= 3,
    )
    assert lab.checker_transitions(primary, "web") == []
    assert lab.checker_transitions(secondary, "web") == [], "it does not run on the standby node"
