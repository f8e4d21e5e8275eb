"""What a checker looks at: one probe per checker type.

A probe opens a ``Session`` for each period a checker runs. ``check`` probes
once, within the timeout it is given, and says whether the thing is healthy
and, if not, why. ``changed`` returns as soon as what the session watches may
have changed, so that the next probe runs at once rather than at the next
interval: the interface probe listens to netlink's link notifications, the
process probe waits on a pidfd of the process. The other probes have nothing
to watch: only the interval paces them.

- ``CommandProbe``: an operator's command exits 0 within the timeout.
- ``TcpProbe``: a TCP connection opens within the timeout.
- ``PingProbe``: one ICMP echo is answered, by iputils ``ping`` (IPv4 and
  IPv6, with the privileges its package gives it; a probe every few seconds
  costs one short process).
- ``InterfaceProbe``: the interface is administratively up, has a carrier and
  an operational state of UP (or UNKNOWN, for interfaces that do not report
  one), read through netlink (pyroute2) in the daemon's network namespace.
- ``ProcessProbe``: the application's main process lives: the process a
  pidfile names (read again at every probe), or the one the runtime started.
  A process that has exited but is not reaped yet (a zombie) counts as dead,
  and so does a later process that the pidfile's stale id now names (PID
  reuse): a session watches the process of an id, not the number.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio
import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from failover.platform.scripts import run_script

log = structlog.get_logger("failover.checkers")

IFF_UP = 0x1
RTMGRP_LINK = 0x1
NOTIFICATION_BATCH = 64
"""Reads of netlink notifications in one go: the daemon's event loop runs
between two batches, however fast other links change (a host starting many
containers)."""
PIDFILE_HEAD = 64
"""Bytes of a pidfile read: a process id and then some (whatever else it holds)."""
PID_MAX_LIMIT = 1 << 22
"""The largest process id Linux gives (PID_MAX_LIMIT on 64-bit systems)."""
PING_MARGIN = 1.0
"""Seconds a ping process gets beyond its own wait (-W) before it is killed:
it says itself why it failed, unless a name lookup hangs."""


@dataclass(frozen=True)
class Outcome:
    """One probe's result: healthy or not, and why not."""

    ok: bool
    reason: str = ""


class Session:
    """One period of probes (see the module docstring). Never raises for what it
    probes: a failure to probe is an unhealthy ``Outcome``."""

    async def check(self, timeout: float) -> Outcome:
        raise NotImplementedError

    async def changed(self) -> None:
        """Return when what is probed may have changed; by default never."""
        await anyio.sleep_forever()

    def close(self) -> None:
        """Release what the session holds (sockets, descriptors)."""


class Probe(Protocol):
    """A checker's target. Equal probes look at the same thing."""

    def open(self) -> Session: ...


class _Stateless(Session):
    """A probe that needs nothing between two checks is its own session."""

    def open(self) -> Session:
        return self


def _output_file(output_dir: Path, name: str) -> Path:
    return output_dir / f"checker-{name}.log"


@dataclass(frozen=True)
class CommandProbe(_Stateless):
    """Healthy while ``command`` exits 0 within the timeout. Its output goes to
    ``<output_dir>/checker-<name>.log`` through a pipe (``run_script(piped=True)``:
    a log that cannot be written never changes the verdict); ``env`` is added
    to the daemon's."""

    name: str
    command: str
    output_dir: Path
    env: tuple[tuple[str, str], ...] = ()

    async def check(self, timeout: float) -> Outcome:
        result = await run_script(
            self.command,
            timeout=timeout,
            label=f"checker {self.name}",
            output=_output_file(self.output_dir, self.name),
            env=dict(self.env),
            piped=True,
        )
        return Outcome(result.ok, result.reason)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(exc: OSError) -> str:
    """The system's reason (anyio keeps it as the cause of its own message)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    if cause.errno and cause.errno > 0:  # a name lookup's error numbers are negative
        return os.strerror(cause.errno)
    return cause.strerror or str(cause)


@dataclass(frozen=True)
class TcpProbe(_Stateless):
    """Healthy while a TCP connection to ``host``:``port`` opens within the timeout
    (it is closed at once; nothing is sent)."""

    host: str
    port: int

    async def check(self, timeout: float) -> Outcome:
        target = _host_port(self.host, self.port)
        with anyio.move_on_after(timeout):
            try:
                stream = await anyio.connect_tcp(self.host, self.port)
            except OSError as exc:
                return Outcome(False, f"cannot connect to {target}: {_why(exc)}")
            await stream.aclose()
            return Outcome(True)
        return Outcome(False, f"no connection to {target} within {timeout:g} s")


@dataclass(frozen=True)
class PingProbe(_Stateless):
    """Healthy while ``address`` answers one ICMP echo within the timeout (the exit
    status of ``ping``, whose output is piped like a ``CommandProbe``'s)."""

    name: str
    address: str
    output_dir: Path

    async def check(self, timeout: float) -> Outcome:
        argv = ["ping", "-n", "-c", "1", "-W", f"{timeout:g}", "--", self.address]
        result = await run_script(
            argv,
            timeout=timeout + PING_MARGIN,
            label=f"checker {self.name} (ping {self.address})",
            output=_output_file(self.output_dir, self.name),
            piped=True,
        )
        return Outcome(result.ok, result.reason)


def link_state(interface: str) -> Outcome:
    """Whether ``interface`` is up with a carrier, asked of netlink (blocking: a
    few milliseconds; run it in a worker thread)."""
    try:
        with IPRoute() as ipr:
            links = list(ipr.link("get", ifname=interface))
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return Outcome(False, f"there is no interface {interface}")
        return Outcome(False, f"cannot read interface {interface}: {exc}")
    except OSError as exc:
        return Outcome(False, f"cannot read interface {interface}: {exc.strerror or exc}")
    if not links:
        return Outcome(False, f"there is no interface {interface}")
    link = links[0]
    operstate = link.get_attr("IFLA_OPERSTATE") or "UNKNOWN"
    if not link["flags"] & IFF_UP:
        return Outcome(False, f"interface {interface} is down (administratively)")
    if link.get_attr("IFLA_CARRIER") == 0 or operstate not in ("UP", "UNKNOWN"):
        return Outcome(
            False, f"interface {interface} has no carrier (operational state {operstate})"
        )
    return Outcome(True)


@dataclass(frozen=True)
class InterfaceProbe:
    """Healthy while ``interface`` is up with a carrier; a link notification from
    the kernel makes the next probe run at once."""

    interface: str

    def open(self) -> Session:
        return _LinkSession(self.interface)


def _link_notifications(interface: str) -> socket.socket | None:
    """A netlink socket that receives every link change of this network namespace,
    or None (logged) when there is none to be had: the interval paces the probes."""
    try:
        events = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
    except OSError as exc:
        problem = exc.strerror
    else:
        try:
            events.bind((0, RTMGRP_LINK))
        except OSError as exc:
            events.close()
            problem = exc.strerror
        else:
            return events
    log.warning(
        "no netlink notifications: the interface is probed at the interval only",
        interface=interface,
        error=problem,
    )
    return None


class _LinkSession(Session):
    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._events = _link_notifications(interface)
        self._marshal = MarshalRtnl()

    def _read_notifications(self) -> bool:
        """Read the notifications queued, at most ``NOTIFICATION_BATCH`` reads (what
        is left stays queued); True if one may concern the interface (it names
        it, or some were lost or could not be read)."""
        assert self._events is not None
        concerned = False
        for _ in range(NOTIFICATION_BATCH):
            try:
                data = self._events.recv(65536)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: the queue overflowed, notifications were lost
                concerned = True
                continue
            try:
                names = [message.get_attr("IFLA_IFNAME") for message in self._marshal.parse(data)]
            except Exception:  # what cannot be parsed may be our link's change
                names = [None]
            concerned = concerned or any(name in (self.interface, None) for name in names)
        return concerned

    async def check(self, timeout: float) -> Outcome:
        if self._events is not None:
            self._read_notifications()  # the probe sees what they announced
        with anyio.move_on_after(timeout):
            return await anyio.to_thread.run_sync(
                link_state, self.interface, abandon_on_cancel=True
            )
        return Outcome(False, f"netlink gave no state of {self.interface} within {timeout:g} s")

    async def changed(self) -> None:
        if self._events is None:
            await anyio.sleep_forever()
            return
        while True:  # other links' changes (a container's veth...) do not wake the probe
            await anyio.wait_readable(self._events)
            if self._read_notifications():
                return

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None


class MainProcess(Protocol):
    """Who knows the application's main process (``Application``)."""

    @property
    def main_pid(self) -> int | None: ...


@dataclass(frozen=True)
class ProcessProbe:
    """Healthy while the process ``pidfile`` names, or else ``app``'s main
    process, lives. Its death wakes the next probe at once (pidfd)."""

    pidfile: Path | None = None
    app: MainProcess | None = field(default=None, compare=False)

    def open(self) -> Session:
        return _ProcessSession(self)


def _read_head(path: Path) -> bytes | None:
    """The first ``PIDFILE_HEAD`` bytes of ``path``, or None if it is not a
    regular file (opened without blocking: a FIFO would wait for a writer)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, PIDFILE_HEAD)
    finally:
        os.close(fd)


def _has_exited(pidfd: int) -> bool:
    """A pidfd turns readable when its process exits (zombies included)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


class _ProcessSession(Session):
    """Watches the process of one id through a pidfd for as long as that id is the
    target: once that process has exited, a later process given the same id
    (PID reuse) is not taken for it. The id is watched again only when the
    target changes (the pidfile names another process)."""

    def __init__(self, probe: ProcessProbe) -> None:
        self.probe = probe
        self._pid: int | None = None  # the id watched
        self._pidfd: int | None = None  # its process, None if it was gone at once

    def _target(self) -> tuple[int | None, str]:
        """The process id to watch and how it was found, or None and why not."""
        pidfile = self.probe.pidfile
        if pidfile is None:
            pid = None if self.probe.app is None else self.probe.app.main_pid
            if pid is None:
                return None, (
                    "the application's main process is not known (it has no foreground "
                    "command: give the checker a pidfile)"
                )
            return pid, "the application's main process"
        try:
            head = _read_head(pidfile)
        except FileNotFoundError:
            return None, f"pidfile {pidfile} does not exist"
        except OSError as exc:
            return None, f"cannot read pidfile {pidfile}: {exc.strerror or exc}"
        if head is None:
            return None, f"pidfile {pidfile} is not a regular file"
        words = head.split()
        if not words or not words[0].isdigit() or not 0 < int(words[0]) <= PID_MAX_LIMIT:
            return None, f"pidfile {pidfile} holds no process id"
        return int(words[0]), f"from {pidfile}"

    async def check(self, timeout: float) -> Outcome:
        pid, source = self._target()
        if pid is None:
            self.close()
            return Outcome(False, source)
        if pid != self._pid:
            self.close()
            try:
                self._pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pass
            except OSError as exc:  # not known dead: tried again at the next probe
                return Outcome(False, f"cannot watch process {pid} ({source}): {exc.strerror}")
            self._pid = pid
        if self._pidfd is None:
            return Outcome(False, f"process {pid} ({source}) is not running")
        if _has_exited(self._pidfd):
            return Outcome(False, f"process {pid} ({source}) has exited")
        return Outcome(True)

    async def changed(self) -> None:
        if self._pidfd is None or _has_exited(self._pidfd):
            await anyio.sleep_forever()
        else:
            await anyio.wait_readable(self._pidfd)

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._pid = None
