"""sd_notify: the daemon tells systemd when it is ready, what it is doing, that its
event loop is alive, and that it is stopping (docs/operations.md, "systemd").

Invariants.

- Nothing is sent, and nothing changes, without ``NOTIFY_SOCKET`` in the
  environment: ``Notifier.from_environ`` returns None.
- ``READY=1`` is sent once, after the control API and the links are bound and the
  core has taken its first decision (``Daemon.run``): a unit ordered after this
  one finds the daemon answering.
- ``WATCHDOG=1`` is sent only by the task that feeds the project's own watchdog
  (``Daemon._feed_watchdog``), a task of the event loop, at least every half
  of ``WATCHDOG_USEC``: a loop that stalls (SIGSTOP, a call that blocks it)
  sends no more pings, and systemd kills and restarts the daemon after
  ``WatchdogSec``. No thread of its own, no timer outside the loop: a ping sent
  by anything but the loop would prove nothing about the loop.
- ``WATCHDOG_PID``, when set, names the only process that may ping: any other
  (a forked helper that inherited the environment) sends no ``WATCHDOG=1``.
- Sending never blocks and never raises: the socket is non-blocking, a datagram
  that cannot be sent is dropped, the first failure is logged once.

The protocol is a datagram of ``KEY=VALUE`` lines on an ``AF_UNIX`` socket
(sd_notify(3)); a name starting with ``@`` is in the abstract namespace. It is
forty lines here, so no library: ``sdnotify`` (PyPI 0.3.2, its upstream idle, a
fork keeps it alive) sends on a blocking socket, hides every error, and knows
nothing of ``WATCHDOG_USEC``/``WATCHDOG_PID`` (the rate and the PID check would
still be ours); ``systemd-python`` is a C extension built against libsystemd.

The three variables are removed from the environment once read, so that the
scripts and the application (children of the daemon) do not talk to systemd in
its name (``NotifyAccess=main`` would ignore them anyway, with a warning in the
journal; PostgreSQL, for one, sends ``READY=1`` when it sees ``NOTIFY_SOCKET``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

log = structlog.get_logger("failover.notify")

ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
STATUS_MAX = 400
"""Characters of a STATUS line kept (systemctl shows one line)."""


def _address(name: str) -> str | None:
    """The socket address of ``NOTIFY_SOCKET``: a path, or an abstract name."""
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]
    if name.startswith("/"):
        return name
    return None  # (systemd also knows vsock:, which a service on the host never gets)


def _watchdog_interval(env: Mapping[str, str]) -> tuple[float | None, str | None]:
    """Seconds between two pings (half of ``WATCHDOG_USEC``), and a problem if any."""
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec:
        return None, None
    if pid and pid.strip() != str(os.getpid()):
        return None, None  # meant for another process
    try:
        period = int(usec)
    except ValueError:
        return None, f"WATCHDOG_USEC is not a number of microseconds: {usec!r}"
    if period <= 0:
        return None, f"WATCHDOG_USEC is not positive: {usec!r}"
    return period / 2e6, None


class Notifier:
    """One daemon's messages to systemd (see the module docstring)."""

    def __init__(self, address: str, *, watchdog_interval: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self.sent: dict[str, int] = {}  # messages sent, by first key (status shows them)
        self._failed = False
        self._last_ping: float | None = None
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )

    @classmethod
    def from_environ(cls, env: MutableMapping[str, str] | None = None) -> Notifier | None:
        """The notifier systemd asked for, or None when not run by systemd (or asked in
        a form this daemon cannot use, which is logged). Removes the variables."""
        env = os.environ if env is None else env
        name = env.get("NOTIFY_SOCKET", "")
        interval, problem = _watchdog_interval(env)
        for key in ENVIRONMENT:
            env.pop(key, None)
        if not name:
            return None
        address = _address(name)
        if address is None:
            log.error("NOTIFY_SOCKET is neither a path nor an abstract name", value=name)
            return None
        if problem is not None:
            log.error("systemd watchdog not fed", why=problem)
        return cls(address, watchdog_interval=interval)

    def send(self, **fields: Any) -> bool:
        """One datagram of ``KEY=value`` lines (keys upper-cased); False if not sent."""
        lines = [f"{key.upper()}={value}" for key, value in fields.items()]
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # never raises: systemd gone, busy, or never there
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd", socket=self.address, error=str(exc))
            return False
        first = next(iter(fields)).upper()
        self.sent[first] = self.sent.get(first, 0) + 1
        return True

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status[:STATUS_MAX], mainpid=os.getpid())

    def status(self, status: str) -> None:
        self.send(status=status[:STATUS_MAX])

    def stopping(self, why: str) -> None:
        self.send(stopping=1, status=f"stopping: {why}"[:STATUS_MAX])

    def alive(self, now: float) -> float | None:
        """The loop is alive at ``now``: ping if half the watchdog period has passed
        since the last ping. Returns the seconds until the next ping is due (None
        without a systemd watchdog). Called only from the event loop."""
        interval = self.watchdog_interval
        if interval is None:
            return None
        if self._last_ping is None or now - self._last_ping >= interval:
            self.send(watchdog=1)
            self._last_ping = now
            return interval
        return interval - (now - self._last_ping)

    def close(self) -> None:
        self._sock.close()


def status_line(state: str, substatus: str, reason: str, peer: str | None) -> str:
    """What ``systemctl status`` shows: the state, why, and what is heard of the peer."""
    what = state if substatus == "ready" else f"{state} ({substatus})"
    return f"{what}: {reason or 'no reason given'}; peer {peer or 'not heard'}"


__all__ = ["Notifier", "status_line"]
