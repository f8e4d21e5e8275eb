"""Two daemons as real processes on loopback UDP: kill -9, SIGHUP, SIGTERM.

Each daemon runs ``failover run`` (through ``runtime_daemon_main.py``) with
its own log file; the tests read state through the control API and wait by
polling it under a generous overall bound, never by fixed sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import yaml
from runtime_support import write_cluster

from failover.api.client import ControlClient
from failover.config import load_config
from failover.errors import FailoverError

MAIN = Path(__file__).with_name("runtime_daemon_main.py")
BOUND = 20.0  # seconds: an upper bound on every wait, not an expected duration


def app_scripts(tmp_path: Path) -> dict[str, Any]:
    start, stop = tmp_path / "app-start", tmp_path / "app-stop"
    start.write_text(f'#!/bin/sh\necho "$FAILOVER_NODE" > {tmp_path}/serving.$FAILOVER_NODE\n')
    stop.write_text(f"#!/bin/sh\nrm -f {tmp_path}/serving.$FAILOVER_NODE\n")
    start.chmod(0o755)
    stop.chmod(0o755)
    return {"application": {"start": str(start), "stop": str(stop), "timeout": 5}}


class Processes:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.config_path = write_cluster(tmp_path, extra=app_scripts(tmp_path))
        self.config = load_config(self.config_path)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str) -> None:
        with open(self.tmp_path / f"{node}.stderr", "wb") as stderr:
            self.procs[node] = self._spawn(node, stderr)

    def _spawn(self, node: str, stderr: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                str(MAIN),
                "run",
                "-c",
                str(self.config_path),
                "--node",
                node,
                "--log-file",
                str(self.log_path(node)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    def log_path(self, node: str) -> Path:
        return self.tmp_path / f"{node}.log"

    def records(self, node: str) -> list[dict[str, Any]]:
        path = self.log_path(node)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def status(self, node: str) -> dict[str, Any] | None:
        socket_path = self.config.control_of(node).socket
        try:
            return ControlClient(unix_path=str(socket_path), timeout=2).get_status()
        except FailoverError:
            return None

    def state(self, node: str) -> str | None:
        """The node's state once its effects are done (None while it is transient)."""
        status = self.status(node)
        if status is None or status["substatus"] != "ready":
            return None
        return str(status["state"])

    def wait(self, what: str, predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + BOUND
        while not predicate():
            for node, proc in self.procs.items():
                if proc.poll() is not None and node not in self.expected_dead:
                    stderr = (self.tmp_path / f"{node}.stderr").read_text()
                    pytest.fail(f"{node} exited with {proc.returncode}: {stderr}")
            if time.monotonic() > deadline:
                states = {node: self.state(node) for node in self.procs}
                pytest.fail(f"not reached within {BOUND} s: {what} (states {states})")
            time.sleep(0.02)

    expected_dead: set[str] = set()

    def paired(self) -> tuple[str, str]:
        """Wait for primary + secondary; returns (primary, secondary)."""
        self.wait(
            "primary + secondary",
            lambda: (
                sorted(str(self.state(n)) for n in ("alpha", "beta")) == ["primary", "secondary"]
            ),
        )
        primary = next(n for n in ("alpha", "beta") if self.state(n) == "primary")
        return primary, ("beta" if primary == "alpha" else "alpha")

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    running.expected_dead = set()
    try:
        yield running
    finally:
        running.kill_all()


def test_kill_9_of_the_serving_daemon_makes_the_peer_serve(
    procs: Processes, tmp_path: Path
) -> None:
    procs.start("alpha")
    procs.start("beta")
    primary, secondary = procs.paired()
    assert (tmp_path / f"serving.{primary}").exists()
    assert not (tmp_path / f"serving.{secondary}").exists()

    procs.expected_dead.add(primary)
    procs.procs[primary].kill()
    procs.procs[primary].wait(timeout=10)
    procs.wait(f"{secondary} serves", lambda: procs.state(secondary) == "alone")
    assert (tmp_path / f"serving.{secondary}").read_text() == f"{secondary}\n"
    status = procs.status(secondary)
    assert status is not None and status["peer"]["alive"] is False
    transitions = [r for r in procs.records(secondary) if r.get("msg") == "transition"]
    takeover = next(r for r in reversed(transitions) if r["from"] == "secondary")
    assert takeover["to"] == "alone"

    # Killed with the application running: its watchdog fences it at once (the
    # stop script runs), and the next daemon stops it again (the marker stays),
    # then follows the node that took over.
    procs.wait(
        "the watchdog stops the killed daemon's application",
        lambda: not (tmp_path / f"serving.{primary}").exists(),
    )
    assert (procs.config.node_dir(primary) / "application.started").exists()
    procs.expected_dead.discard(primary)
    procs.start(primary)
    assert procs.paired() == (secondary, primary)
    assert not (tmp_path / f"serving.{primary}").exists()
    assert {"node", "from", "event", "to", "effects", "reason", "generation"} <= set(takeover)


def test_sighup_with_a_bad_config_keeps_running_and_sigterm_stops_cleanly(
    procs: Processes, tmp_path: Path
) -> None:
    procs.start("alpha")
    procs.start("beta")
    primary, secondary = procs.paired()

    good = procs.config_path.read_text()
    document = yaml.safe_load(good)
    document["cluster"]["timing"] = {"heartbeat_interval": "fast"}
    document["cluster"]["bogus"] = True
    procs.config_path.write_text(yaml.safe_dump(document))
    os.kill(procs.procs[secondary].pid, signal.SIGHUP)

    def refused() -> list[dict[str, Any]]:
        records = procs.records(secondary)
        return [r for r in records if r["msg"].startswith("configuration reload refused")]

    procs.wait("reload refused in the log", lambda: bool(refused()))
    problems = refused()[0]["problems"]
    assert len(problems) == 2 and any("bogus" in p for p in problems), problems
    assert procs.state(secondary) == "secondary" and procs.procs[secondary].poll() is None
    procs.config_path.write_text(good)

    procs.expected_dead.add(primary)
    os.kill(procs.procs[primary].pid, signal.SIGTERM)
    assert procs.procs[primary].wait(timeout=BOUND) == 0
    assert not (tmp_path / f"serving.{primary}").exists(), "the stop script ran"
    assert procs.records(primary)[-1]["msg"] == "node stopped"
    procs.wait(f"{secondary} takes over", lambda: procs.state(secondary) == "alone")
    transitions = [r for r in procs.records(secondary) if r["msg"] == "transition"]
    takeover = next(r for r in reversed(transitions) if r["from"] == "secondary")
    assert takeover["event"] == "heartbeat", "the peer saw the last heartbeat announce 'stop'"

    procs.expected_dead.add(secondary)
    os.kill(procs.procs[secondary].pid, signal.SIGTERM)
    assert procs.procs[secondary].wait(timeout=BOUND) == 0
    assert not (tmp_path / f"serving.{secondary}").exists()


def test_run_with_an_invalid_config_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cluster: {name: Bad_Name}\nlinks: []\nnodes: {}\n")
    result = subprocess.run(
        [sys.executable, str(MAIN), "run", "-c", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 3 and all(line.startswith(f"{path}:") for line in lines), lines
