"""sd_notify from a real daemon, read on a fake ``NOTIFY_SOCKET`` (runtime/notify.py).

The socket is bound in the abstract namespace (``@...``). Every wait is bounded
and awaits a datagram; the only fixed waits are those that assert an absence
(no ping while the loop cannot run), each several ping periods long.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from runtime_support import write_cluster
from systemd_support import BOUND, NotifySocket

from failover.api.client import ControlClient
from failover.config import load_config
from failover.runtime.daemon import run_node

MAIN = Path(__file__).parents[1] / "runtime" / "runtime_daemon_main.py"
PERIOD_USEC = 400_000  # WATCHDOG_USEC: a ping every 0.2 s
SILENCE = 5 * PERIOD_USEC / 2e6  # five ping intervals without a ping: the loop is not pinging


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def _stopped(pid: int) -> bool:
    """The process is in the stopped state (``T``) by now."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _records(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_ready_status_watchdog_and_stopping_from_a_daemon_process(
    tmp_path: Path, notify: NotifySocket
) -> None:
    config_path = write_cluster(tmp_path)
    config = load_config(config_path)
    log_path, stderr_path = tmp_path / "alpha.log", tmp_path / "alpha.stderr"
    env = {**os.environ, "NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": str(PERIOD_USEC)}
    # WATCHDOG_PID names the daemon itself, as systemd sets it: the shell execs it
    argv = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", sys.executable, str(MAIN), "run"]
    argv += ["-c", str(config_path), "--node", "alpha", "--log-file", str(log_path)]
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=stderr)

    def alive() -> None:
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited with {proc.returncode}: {stderr_path.read_text()}")

    client = ControlClient(unix_path=str(config.control_of("alpha").socket), timeout=BOUND)
    try:
        ready = notify.wait_for("READY=1", lambda m: m.get("READY") == "1", alive)
        # At READY the control API answers and the core has decided (autostart's Start)
        transitions = [line for line in _records(log_path) if '"msg": "transition"' in line]
        assert transitions, "READY=1 before the first decision"
        assert client.get_status()["node"] == "alpha"
        assert ready["MAINPID"] == str(proc.pid)
        assert ready["STATUS"], ready

        # STATUS follows a transition (an operator's stop here)
        client.command("stop")
        notify.wait_for("STATUS of the stop", lambda m: m.get("STATUS", "").startswith("stop"))

        # WATCHDOG=1 while the loop runs; none while the process is stopped; again after
        for _ in range(2):
            notify.wait_for("WATCHDOG=1", lambda m: m.get("WATCHDOG") == "1", alive)
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + BOUND
        while not _stopped(proc.pid):  # a bounded poll of the process's state
            assert time.monotonic() < deadline, "SIGSTOP not effective"
            time.sleep(0.01)
        notify.drain()  # sent before it stopped
        assert notify.receive(SILENCE) is None, "a message from a stopped daemon"
        os.kill(proc.pid, signal.SIGCONT)
        notify.wait_for("WATCHDOG=1 after SIGCONT", lambda m: m.get("WATCHDOG") == "1", alive)

        proc.send_signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING=1", lambda m: m.get("STOPPING") == "1")
        assert "SIGTERM" in stopping["STATUS"]
        assert proc.wait(timeout=BOUND) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=BOUND)


@pytest.mark.anyio
async def test_watchdog_pings_come_only_from_the_event_loop(
    tmp_path: Path, notify: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that blocks the event loop stops the pings, whatever else still runs in
    the process (a thread would ping on): the test's own blocking ``recv`` on the
    notify socket *is* the blocked call, run on the loop's thread."""
    config = load_config(write_cluster(tmp_path))
    monkeypatch.setenv("NOTIFY_SOCKET", notify.name)
    monkeypatch.setenv("WATCHDOG_USEC", str(PERIOD_USEC))

    def ping(message: dict[str, str]) -> bool:
        return message.get("WATCHDOG") == "1"

    async with anyio.create_task_group() as tg:
        await tg.start(
            lambda task_status: run_node(
                config, "alpha", task_status=task_status, handle_signals=False
            )
        )
        assert "NOTIFY_SOCKET" not in os.environ, "the scripts would inherit it"
        await anyio.to_thread.run_sync(notify.wait_for, "READY=1", lambda m: "READY" in m)
        await anyio.to_thread.run_sync(notify.wait_for, "WATCHDOG=1", ping)
        notify.drain()
        blocked = notify.receive(SILENCE)  # blocks the event loop
        assert blocked is None, f"sent while the event loop was blocked: {blocked}"
        await anyio.to_thread.run_sync(notify.wait_for, "WATCHDOG=1 after the block", ping)
        tg.cancel_scope.cancel()
