"""A real daemon (``failover run``) serving alone, SIGSTOPped: its watchdog ends
the application while the daemon is still stopped; after SIGCONT the daemon
learns it and the core gets it as the application's failure.

Waits are bounded polls of external processes (the daemon, its command, its
log), never fixed sleeps; no duration is asserted, only order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from runtime_support import write_cluster
from test_runtime_daemon import fake_daemon

from failover.api.client import ControlClient
from failover.audit import JOURNAL_NAME, audit
from failover.config import load_config
from failover.core import events as ev
from failover.core.facts import Lease, watchdog_deadline
from failover.core.state import Generation, PeerStatus, Settings, State, SubStatus
from failover.errors import FailoverError
from failover.runtime.watchdog import wait_for_previous

MAIN = Path(__file__).with_name("runtime_daemon_main.py")
BOUND = 30.0  # seconds: an upper bound on every wait, not an expected duration


def proc_state(pid: int) -> str | None:
    """The state letter of process ``pid`` (``T`` stopped, ``Z`` zombie), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat.rsplit(b")", 1)[-1].split()[0].decode()


def wait(what: str, predicate: Callable[[], bool]) -> None:
    end = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"not reached within {BOUND} s: {what}")
        time.sleep(0.02)


class Alone:
    """Node alpha of a two-node cluster whose peer never starts: it serves alone,
    with a foreground command and a stop script that says who ran it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        stop = tmp_path / "app-stop"
        stop.write_text(f'#!/bin/sh\necho "${{FAILOVER_FENCED:-daemon}}" >> {tmp_path}/stops\n')
        stop.chmod(0o755)
        app = {"command": "sleep 1000", "stop": str(stop), "timeout": 5}
        self.config_path = write_cluster(tmp_path, extra={"application": app})
        self.config = load_config(self.config_path)
        self.log_path = tmp_path / "alpha.log"
        self.marker = self.config.node_dir("alpha") / "application.started"
        with open(tmp_path / "alpha.stderr", "wb") as stderr:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, str(MAIN), "run", "-c", str(self.config_path)),
                    *("--node", "alpha", "--log-file", str(self.log_path)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def status(self) -> dict[str, Any] | None:
        socket_path = self.config.control_of("alpha").socket
        try:
            return ControlClient(unix_path=str(socket_path), timeout=2).get_status()
        except FailoverError:
            return None

    def prim(self) -> bool:
        """At a first start the node waits for its peer: serve anyway (``failover prim``)."""
        status = self.status()
        if status is None or (status["state"], status["substatus"]) != ("wait", "ready"):
            return False
        socket_path = self.config.control_of("alpha").socket
        ControlClient(unix_path=str(socket_path), timeout=2).command("prim")
        return True

    def serving(self) -> bool:
        status = self.status()
        return status is not None and (status["state"], status["substatus"]) == ("alone", "ready")

    def command_pid(self) -> int | None:
        try:
            marked = json.loads(self.marker.read_text() or "{}")
        except (OSError, ValueError):
            return None
        pid = marked.get("pid")
        return pid if isinstance(pid, int) else None

    def records(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stops(self) -> list[str]:
        path = self.tmp_path / "stops"
        return path.read_text().split() if path.exists() else []

    def end(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=BOUND)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=BOUND)


@pytest.fixture
def alone(tmp_path: Path) -> Iterator[Alone]:
    node = Alone(tmp_path)
    try:
        yield node
    finally:
        node.end()


def test_a_stopped_daemon_is_fenced_and_learns_it_when_it_resumes(alone: Alone) -> None:
    wait("alpha waits for its peer", alone.prim)
    wait("alpha serves with its command", lambda: alone.serving() and bool(alone.command_pid()))
    command = alone.command_pid()
    assert command is not None and proc_state(command) not in (None, "Z")

    os.kill(alone.proc.pid, signal.SIGSTOP)
    wait("the daemon stopped", lambda: proc_state(alone.proc.pid) == "T")
    # its command ends (a zombie: only its stopped parent can reap it) while
    # the daemon is still stopped: the watchdog did it, not the daemon
    wait("the command ended", lambda: proc_state(command) in (None, "Z"))
    assert proc_state(alone.proc.pid) == "T"
    wait("the fence's stop script ran", lambda: alone.stops() == ["1"])
    assert proc_state(alone.proc.pid) == "T"

    os.kill(alone.proc.pid, signal.SIGCONT)

    def learnt() -> bool:
        return any(r.get("msg") == "the watchdog fenced the application" for r in alone.records())

    wait("the daemon logs the fence", learnt)

    def reported() -> bool:
        return any(
            "fenced by the watchdog" in str(r.get("reason", ""))
            for r in alone.records()
            if r.get("msg") == "transition"
        )

    wait("the core gets it as the application's failure", reported)
    status = alone.status()
    assert status is not None
    runs = status.get("scripts", {}).get("command", [])
    assert any("fenced by the watchdog" in str(run) for run in runs), runs


@pytest.mark.parametrize("stalled_first", [False, True])
def test_a_killed_daemon_s_fence_is_journalled_by_its_watchdog(
    alone: Alone, stalled_first: bool
) -> None:
    """kill -9 of the serving daemon (after a SIGSTOP long enough to be fenced at the
    deadline, or not): its watchdog journals the fence in its place, once, in its
    boot right after its last record, and the audit reads the node as stopped."""
    wait("alpha waits for its peer", alone.prim)
    wait("alpha serves with its command", lambda: alone.serving() and bool(alone.command_pid()))
    journal = alone.config.node_dir("alpha") / JOURNAL_NAME
    if stalled_first:
        os.kill(alone.proc.pid, signal.SIGSTOP)
        wait("the fence's stop script ran", lambda: alone.stops() == ["1"])
    alone.proc.kill()
    alone.proc.wait(timeout=BOUND)

    def fence_journalled() -> bool:
        lines = journal.read_text().splitlines()
        return bool(lines) and json.loads(lines[-1]).get("watchdog") is True

    wait("the watchdog journals its fence", fence_journalled)
    wait("the watchdog ends", lambda: wait_for_lock(alone))
    written = [json.loads(line) for line in journal.read_text().splitlines()]
    fence, before = written[-1], written[-2]
    assert (fence["boot"], fence["seq"]) == (before["boot"], before["seq"] + 1)
    assert (fence["kind"], fence["action"], fence["phase"], fence["ok"]) == (
        "resource",
        "stop",
        "end",
        True,
    )
    assert fence["fenced_at"] <= fence["mono"]
    assert sum(1 for r in written if r.get("watchdog")) == 1  # journalled once
    assert alone.stops() == ["1"]  # fenced once too
    report = audit([journal])
    assert report.ok, report


def wait_for_lock(alone: Alone) -> bool:
    """True once no watchdog holds the node's lock (it exited)."""
    lock = alone.config.node_dir("alpha") / "watchdog.lock"
    return anyio.run(wait_for_previous, lock, 0.0)


@pytest.mark.anyio
async def test_the_deadline_fed_follows_the_core(tmp_path: Path) -> None:
    """None while stopped; serving: the last heartbeat + dead_timeout - half an
    interval, or the lease's fence_at with an arbitrator."""
    async with fake_daemon(tmp_path) as (daemon, node):
        assert daemon._watchdog_deadline() is None
        await daemon.submit(ev.Start())  # the fake core serves and emits a heartbeat
        beat = daemon._last_beat
        assert beat is not None
        timing = daemon.config.timing
        expected = beat + timing.dead_timeout - timing.heartbeat_interval / 2
        assert daemon._watchdog_deadline() == expected
        node.lease = Lease(held=True, fence_at=beat + 100.0)
        assert daemon._watchdog_deadline() == expected  # no arbitrator: not the lease
        node.settings = replace(node.settings, arbitrator=True)
        assert daemon._watchdog_deadline() == beat + 100.0


def test_no_deadline_while_the_peer_that_could_take_over_announced_its_stop() -> None:
    """Without an arbitrator the deadline is the peer's takeover on our silence: a
    peer that announced its stop, and did not serve last, takes nothing over (started
    again, it waits: blind rows serve only the last server), so a stalled loop costs
    no fence; a peer heard in any other state, or one that served last, does."""
    settings = Settings(
        name="alpha", peer="beta", links=("lan",), heartbeat_interval=0.2, dead_timeout=2.0
    )
    zero = Generation(1, "alpha")

    def peer(state: State, last: State | None = State.SECONDARY) -> PeerStatus:
        return PeerStatus("beta", state, SubStatus.READY, zero, zero, True, "", last_state=last)

    counted = 10.0 + 2.0 - 0.1
    assert watchdog_deadline(settings, Lease(), None, 10.0) == counted
    assert watchdog_deadline(settings, Lease(), peer(State.SECONDARY), 10.0) == counted
    assert watchdog_deadline(settings, Lease(), peer(State.WAIT), 10.0) == counted
    assert watchdog_deadline(settings, Lease(), peer(State.STOP), 10.0) is None
    assert watchdog_deadline(settings, Lease(), peer(State.STOP, None), 10.0) is None
    # a peer that served last may serve alone when started again: the deadline stands
    last_server = peer(State.STOP, State.ALONE)
    assert watchdog_deadline(settings, Lease(), last_server, 10.0) == counted
    # with an arbitrator, its lease: a peer started again may be granted once it ends
    arbitrated = replace(settings, arbitrator=True)
    lease = Lease(held=True, fence_at=15.0)
    assert watchdog_deadline(arbitrated, lease, peer(State.STOP), 10.0) == 15.0
    assert watchdog_deadline(arbitrated, Lease(), peer(State.STOP), 10.0) == counted
