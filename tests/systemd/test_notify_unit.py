"""``Notifier``: what systemd's environment asks for, and sending that never fails."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from systemd_support import NotifySocket, parse

from failover.runtime.notify import Notifier, status_line


def test_nothing_without_notify_socket() -> None:
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(env) is None
    assert env == {}, "the variables are not left for the scripts"


def test_a_path_socket_and_the_watchdog_period(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000", "OTHER": "kept"}
    notifier = Notifier.from_environ(env)
    assert notifier is not None and env == {"OTHER": "kept"}
    assert notifier.watchdog_interval == 1.5
    assert notifier.alive(10.0) == 1.5  # pinged
    assert notifier.alive(11.0) == 0.5  # not yet due
    assert notifier.alive(11.5) == 1.5  # pinged again
    notifier.ready("alone: serving")
    server.settimeout(5)
    received = [parse(server.recv(4096)) for _ in range(3)]
    assert received[:2] == [{"WATCHDOG": "1"}, {"WATCHDOG": "1"}]
    assert received[2] == {"READY": "1", "STATUS": "alone: serving", "MAINPID": str(os.getpid())}
    notifier.close()
    server.close()


@pytest.mark.parametrize(
    ("usec", "pid"), [("1000000", "1"), ("soon", None), ("0", None), ("-5", None)]
)
def test_no_pings_for_another_process_or_a_bad_period(usec: str, pid: str | None) -> None:
    sock = NotifySocket()
    env = {"NOTIFY_SOCKET": sock.name, "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = pid  # PID 1 is never this test
    notifier = Notifier.from_environ(env)
    assert notifier is not None and notifier.watchdog_interval is None
    assert notifier.alive(1.0) is None
    notifier.status("wait: x")
    assert sock.receive(5) == {"STATUS": "wait: x"}
    assert sock.drain() == []
    notifier.close()
    sock.close()


def test_a_socket_that_is_gone_costs_nothing(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert notifier is not None
    assert notifier.send(status="x") is False  # no exception, logged once
    notifier.stopping("SIGTERM")
    notifier.close()
    assert Notifier.from_environ({"NOTIFY_SOCKET": "relative/name"}) is None


def test_status_line() -> None:
    assert status_line("alone", "ready", "peer dead", None) == "alone: peer dead; peer not heard"
    line = status_line("primary", "transient", "swap", "secondary")
    assert line == "primary (transient): swap; peer secondary"
