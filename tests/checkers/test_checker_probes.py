"""Each checker type against the real thing: a command, a TCP listener on
loopback, a real child process, and (in network namespaces the tests create)
a veth pair for ``interface`` and a peer namespace for ``ping``.

Each test shows: down after ``failures`` failed probes in a row, up again
after one success, an event only on change; for ``process`` and
``interface``, a change noticed without waiting for the interval (the
interval is an hour: the event could not come otherwise). Waits are bounded
polls, never a timing assertion.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from failover.core import events as ev
from failover.platform.checkers import Checker, CheckerSpec
from failover.platform.checkers.probes import (
    CommandProbe,
    InterfaceProbe,
    Outcome,
    Probe,
    ProcessProbe,
    Session,
    TcpProbe,
)

pytestmark = pytest.mark.anyio

BOUND = 20.0  # seconds: an upper bound on every wait, not an expected duration
HOUR = 3600.0


@dataclass
class Log:
    """Every outcome of the probes, and every event with how many probes preceded it."""

    outcomes: list[Outcome] = field(default_factory=list)
    events: list[tuple[int, ev.Event]] = field(default_factory=list)
    _grown: anyio.Event = field(default_factory=anyio.Event)

    def _grow(self) -> None:
        self._grown.set()
        self._grown = anyio.Event()

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self._grow()

    async def report(self, event: ev.Event) -> None:
        self.events.append((len(self.outcomes), event))
        self._grow()

    async def wait_for(self, events: int = 0, outcomes: int = 0) -> None:
        with anyio.fail_after(BOUND):
            while len(self.events) < events or len(self.outcomes) < outcomes:
                await self._grown.wait()

    @property
    def kinds(self) -> list[str]:
        return [event.kind for _, event in self.events]


class Counted(Session):
    def __init__(self, inner: Session, log: Log) -> None:
        self.inner, self.log = inner, log

    async def check(self, timeout: float) -> Outcome:
        outcome = await self.inner.check(timeout)
        self.log.outcome(outcome)
        return outcome

    async def changed(self) -> None:
        await self.inner.changed()

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class CountedProbe:
    inner: Probe
    log: Log

    def open(self) -> Session:
        return Counted(self.inner.open(), self.log)


@asynccontextmanager
async def checking(probe: Probe, *, interval: float, failures: int) -> AsyncIterator[Log]:
    log = Log()
    spec = CheckerSpec("web", CountedProbe(probe, log), interval, timeout=2.0, failures=failures)
    checker = Checker(spec, log.report)
    async with anyio.create_task_group() as tg:
        tg.start_soon(checker.run)
        checker.enable(0.0)
        yield log
        tg.cancel_scope.cancel()


# --- command --------------------------------------------------------------------------


async def test_a_command_checker_reports_only_changes(tmp_path: Path) -> None:
    flag = tmp_path / "healthy"
    flag.touch()
    command = tmp_path / "check"
    command.write_text(f'#!/bin/sh\ntest -e {flag} || {{ echo "db down"; exit 1; }}\n')
    command.chmod(0o755)
    probe = CommandProbe("db", str(command), tmp_path)
    async with checking(probe, interval=0.02, failures=2) as log:
        await log.wait_for(outcomes=3)
        assert log.events == []
        flag.unlink()
        await log.wait_for(events=1)
        at, down = log.events[0]
        assert [o.ok for o in log.outcomes[:at]][-3:] == [True, False, False]
        await log.wait_for(outcomes=at + 3)
        assert len(log.events) == 1, "still down: nothing new"
        flag.touch()
        await log.wait_for(events=2)
        at_up, up = log.events[1]
        assert [o.ok for o in log.outcomes[:at_up]][-2:] == [False, True]
        await log.wait_for(outcomes=at_up + 3)
    assert down == ev.CheckerDown(checker="web", reason="checker db exited with status 1: db down")
    assert up == ev.CheckerUp(checker="web")
    assert len(log.events) == 2, "a steady state reports nothing"


# --- tcp ------------------------------------------------------------------------------


def listen(port: int = 0) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(16)  # connections wait in the backlog: nothing needs to accept them
    return server


async def test_a_tcp_checker_follows_a_listener_on_loopback() -> None:
    server = listen()
    port = server.getsockname()[1]
    try:
        async with checking(TcpProbe("127.0.0.1", port), interval=0.02, failures=3) as log:
            await log.wait_for(outcomes=3)
            assert log.events == []
            server.close()
            await log.wait_for(events=1)
            at, down = log.events[0]
            assert [o.ok for o in log.outcomes[:at]][-4:] == [True, False, False, False]
            assert isinstance(down, ev.CheckerDown)
            assert down.reason.startswith(f"cannot connect to 127.0.0.1:{port}: ")
            assert down.reason.endswith(": Connection refused")
            server = listen(port)
            await log.wait_for(events=2)
            assert log.events[1][1] == ev.CheckerUp("web")
            await log.wait_for(outcomes=log.events[1][0] + 3)
            assert len(log.events) == 2
    finally:
        server.close()


# --- process --------------------------------------------------------------------------


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
        child.wait(timeout=10)


def spawn(children: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["sleep", "3600"])
    children.append(child)
    return child


async def test_the_death_of_a_pidfile_process_is_noticed_at_once(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    pidfile = tmp_path / "app.pid"
    child = spawn(children)
    pidfile.write_text(f"{child.pid}\n")
    async with checking(ProcessProbe(pidfile), interval=HOUR, failures=1) as log:
        await log.wait_for(outcomes=1)
        assert log.outcomes == [Outcome(True)] and log.events == []
        # killed and not reaped (a zombie, as an orphan is until init reaps it)
        os.kill(child.pid, signal.SIGKILL)
        await log.wait_for(events=1)
    assert log.events == [
        (2, ev.CheckerDown("web", f"process {child.pid} (from {pidfile}) has exited"))
    ]


async def test_a_process_seen_to_exit_stays_dead_though_another_one_gets_its_id(
    tmp_path: Path, children: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = tmp_path / "app.pid"
    child, other = spawn(children), spawn(children)
    pidfile.write_text(f"{child.pid}\n")
    opened = os.pidfd_open

    def reused(pid: int, flags: int = 0) -> int:
        # the kernel gives the dead process's id to another one (PID reuse)
        return opened(other.pid if pid == child.pid else pid, flags)

    async with checking(ProcessProbe(pidfile), interval=0.02, failures=3) as log:
        await log.wait_for(outcomes=1)
        assert log.outcomes == [Outcome(True)]
        monkeypatch.setattr(os, "pidfd_open", reused)
        child.kill()
        child.wait()  # reaped: its id is free for another process
        await log.wait_for(events=1)
    assert log.events[0][1] == ev.CheckerDown(
        "web", f"process {child.pid} (from {pidfile}) has exited"
    )
    assert [o.ok for o in log.outcomes[1:4]] == [False, False, False]


@dataclass
class App:
    main_pid: int | None = None


async def test_the_death_of_the_applications_main_process_is_noticed_at_once(
    children: list[subprocess.Popen[bytes]],
) -> None:
    child = spawn(children)
    app = App(child.pid)
    async with checking(ProcessProbe(app=app), interval=HOUR, failures=1) as log:
        await log.wait_for(outcomes=1)
        assert log.events == []
        child.kill()
        child.wait()  # reaped, as the runtime reaps the foreground command it started
        await log.wait_for(events=1)
    reason = f"process {child.pid} (the application's main process) has exited"
    assert log.events == [(2, ev.CheckerDown("web", reason))]


async def test_a_process_checker_reads_the_pidfile_again_at_every_probe(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    pidfile = tmp_path / "app.pid"
    async with checking(ProcessProbe(pidfile), interval=0.02, failures=2) as log:
        await log.wait_for(events=1)
        assert log.events == [(2, ev.CheckerDown("web", f"pidfile {pidfile} does not exist"))]
        pidfile.write_text("not a pid\n")
        await log.wait_for(outcomes=log.events[0][0] + 2)
        assert log.outcomes[-1] == Outcome(False, f"pidfile {pidfile} holds no process id")
        child = spawn(children)
        pidfile.write_text(f"{child.pid}\n")  # the application started again
        await log.wait_for(events=2)
        assert log.events[1][1] == ev.CheckerUp("web")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("9" * 30, "holds no process id"),  # no process can have it (pid_max is 2**22)
        ("0", "holds no process id"),
        (None, "is not a regular file"),  # a FIFO: opening it would wait for a writer
    ],
    ids=["a huge number", "zero", "a FIFO"],
)
async def test_a_pidfile_that_names_no_process_is_down_without_blocking(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    pidfile = tmp_path / "app.pid"
    if content is None:
        os.mkfifo(pidfile)
    else:
        pidfile.write_text(content + "\n")
    session = ProcessProbe(pidfile).open()
    try:
        outcome = await session.check(1.0)
    finally:
        session.close()
    assert outcome == Outcome(False, f"pidfile {pidfile} {reason}")


async def test_a_process_checker_without_a_known_process_is_down() -> None:
    async with checking(ProcessProbe(app=App(None)), interval=0.02, failures=1) as log:
        await log.wait_for(events=1)
    (_, down), *_ = log.events
    assert isinstance(down, ev.CheckerDown) and "give the checker a pidfile" in down.reason


# --- interface: a flood of link notifications ------------------------------------------

RTM_NEWLINK = 16


def link_notification(interface: str) -> bytes:
    message = ifinfmsg()
    message["header"]["type"] = RTM_NEWLINK
    message["attrs"] = [("IFLA_IFNAME", interface)]
    message.encode()
    return bytes(message.data)


class Flood:
    """A netlink socket that never runs dry: one link notification at every read."""

    def __init__(self, notification: bytes) -> None:
        self.notification = notification
        self.reads = 0
        self._readable, self._writer = socket.socketpair()
        self._writer.send(b"x")  # never read: the socket stays readable

    def fileno(self) -> int:
        return self._readable.fileno()

    def recv(self, size: int) -> bytes:
        self.reads += 1
        if self.reads > 100_000:
            raise AssertionError("the notifications are read without end")
        return self.notification

    def close(self) -> None:
        self._readable.close()
        self._writer.close()


async def test_other_links_flooding_netlink_neither_wake_the_probe_nor_hold_the_loop() -> None:
    session = InterfaceProbe("lan0").open()
    session.close()  # its netlink socket, replaced by the flood
    flood = Flood(link_notification("veth9"))
    session._events = flood  # type: ignore[attr-defined]
    woke = False

    async def watch() -> None:
        nonlocal woke
        await session.changed()
        woke = True

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            while flood.reads < 1000:  # the event loop runs between two batches
                await anyio.sleep(0)
            tg.cancel_scope.cancel()
    session.close()
    assert not woke, "another link's changes do not wake the probe"


# --- interface and ping, in network namespaces ------------------------------------------

PROBE = Path(__file__).with_name("checkers_netns_probe.py")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def namespaces() -> Iterator[list[str]]:
    """Names for up to two namespaces; every one created is deleted at the end."""
    names = [f"fo-chk-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


class NetnsChecker:
    """The probe script inside a namespace: its printed probes and events, read as they come."""

    def __init__(self, namespace: str, options: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [
                *("nsenter", f"--net=/run/netns/{namespace}", sys.executable, str(PROBE)),
                json.dumps(options),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.probes: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.at: list[int] = []  # how many probes preceded each event
        self._buffer = b""

    def _read(self, deadline: float) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select(
            [self.proc.stdout], [], [], max(0.0, deadline - time.monotonic())
        )
        if not ready:
            return
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            assert self.proc.stderr is not None
            pytest.fail(f"the probe exited: {self.proc.stderr.read().decode()}")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            record = json.loads(line)
            if "probe" in record:
                self.probes.append(record)
            else:
                self.events.append(record)
                self.at.append(len(self.probes))

    def wait_for(self, *, events: int = 0, probes: int = 0) -> None:
        deadline = time.monotonic() + BOUND
        while len(self.events) < events or len(self.probes) < probes:
            if time.monotonic() > deadline:
                pytest.fail(f"not within {BOUND} s: probes {self.probes}, events {self.events}")
            self._read(deadline)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(not shutil.which("nsenter"), reason="needs nsenter")
def test_an_interface_checker_sees_a_carrier_loss_and_an_admin_down_at_once(
    namespaces: list[str],
) -> None:
    ns = namespaces[0]
    ip("netns", "add", ns)
    ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    ip("-n", ns, "link", "set", "v0", "up")
    ip("-n", ns, "link", "set", "v1", "up")
    options = {"type": "interface", "interface": "v0", "interval": HOUR, "timeout": 2.0}
    checker = NetnsChecker(ns, {**options, "failures": 1})
    try:
        checker.wait_for(probes=1)
        while not checker.probes[-1]["probe"]:  # a veth's carrier may come a moment late
            checker.wait_for(probes=len(checker.probes) + 1)
        checker.events.clear()  # the carrier's arrival, if it came late
        checker.at.clear()
        ip("-n", ns, "link", "set", "v1", "down")  # the cable's other end: no carrier
        checker.wait_for(events=1)
        assert checker.events[0]["event"] == "checker_down"
        assert "interface v0 has no carrier" in checker.events[0]["reason"]
        ip("-n", ns, "link", "set", "v1", "up")
        checker.wait_for(events=2)
        assert checker.events[1]["event"] == "checker_up"
        ip("-n", ns, "link", "set", "v0", "down")  # the port itself
        checker.wait_for(events=3)
        assert checker.events[2] == {
            "event": "checker_down",
            "reason": "interface v0 is down (administratively)",
        }
        ip("-n", ns, "link", "del", "v0")
        probes = len(checker.probes)
        checker.wait_for(probes=probes + 1)
        assert checker.probes[-1]["reason"] == "there is no interface v0"
        assert len(checker.events) == 3, "still down: nothing new"
    finally:
        checker.stop()


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(not shutil.which("nsenter"), reason="needs nsenter")
@pytest.mark.skipif(not shutil.which("ping"), reason="needs iputils-ping")
@pytest.mark.parametrize(
    ("mine", "peer"), [("10.98.0.1/24", "10.98.0.2/24"), ("fd98::1/64", "fd98::2/64")]
)
def test_a_ping_checker_follows_a_peer_namespace(
    namespaces: list[str], tmp_path: Path, mine: str, peer: str
) -> None:
    here, there = namespaces
    ip("netns", "add", here)
    ip("netns", "add", there)
    ip("-n", here, "link", "add", "a0", "type", "veth", "peer", "name", "b0", "netns", there)
    ip("-n", here, "addr", "add", mine, "dev", "a0", "nodad")
    ip("-n", there, "addr", "add", peer, "dev", "b0", "nodad")
    ip("-n", here, "link", "set", "a0", "up")
    ip("-n", there, "link", "set", "b0", "up")
    target = peer.split("/", maxsplit=1)[0]
    options = {"type": "ping", "address": target, "output_dir": str(tmp_path)}
    checker = NetnsChecker(here, {**options, "interval": 0.1, "timeout": 2.0, "failures": 2})
    try:
        checker.wait_for(probes=1)
        while not checker.probes[-1]["probe"]:  # the veth's carrier may come a moment late
            checker.wait_for(probes=len(checker.probes) + 1)
        checker.events.clear()
        checker.at.clear()
        ip("-n", there, "link", "set", "b0", "down")
        checker.wait_for(events=1)
        assert checker.events[0]["event"] == "checker_down"
        assert f"checker ping (ping {target}) exited with status 1" in checker.events[0]["reason"]
        before = [p["probe"] for p in checker.probes[: checker.at[0]]]
        assert before[-3:] == [True, False, False], "down after two failed probes in a row"
        ip("-n", there, "link", "set", "b0", "up")
        # an IPv6 address goes with its interface's admin down (keep_addr_on_down)
        ip("-n", there, "addr", "replace", peer, "dev", "b0", "nodad")
        checker.wait_for(events=2)
        assert checker.events[1] == {"event": "checker_up", "reason": ""}
        assert checker.probes[checker.at[1] - 1]["probe"], "up after one answered probe"
        checker.wait_for(probes=checker.at[1] + 3)
        assert len(checker.events) == 2, "a steady state reports nothing"
    finally:
        checker.stop()
