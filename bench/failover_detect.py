"""Failover time after kill -9 of the serving node: failover vs keepalived, same lab, same run.

    sudo .venv/bin/python bench/failover_detect.py [--runs 10] [--profiles default,fast]
        [--keepalived | --no-keepalived] [--keepalived-advert design|heartbeat|both]
        [--links 1|2] [--json FILE] [--keep-files DIR]

Run by hand as root (it builds network namespaces); not part of the test suite.

For each timing profile, one lab (``failover.lab.Lab``): namespaces
alpha and beta (the nodes) and client, joined by a bridge ("lan"; with
``--links 2`` a second bridge, "crossover", carries a second heartbeat link).

failover: both nodes run ``failover run`` with a UDP heartbeat link per
network, a virtual IP on "lan" and an application whose start script starts a
tiny TCP listener bound to the virtual IP (``bench/_lab.py listen``: returns
once it listens, its PID in a pidfile) and whose stop script kills it.

keepalived (Debian package; as root, installed with apt-get if missing): one
``keepalived -n -P`` per node namespace, VRRPv3 unicast on "lan", ``advert_int``
1 s for the default profile and 0.1 s for fast, ``nopreempt`` (as failover's
``failback: none``), and a ``notify`` script that starts the same listener on
MASTER and stops it otherwise. Its config, pid and state files live in the
bench's temporary directory. ``--keepalived-advert heartbeat`` (or ``both``)
adds a series "keepalived-hb" whose ``advert_int`` equals failover's heartbeat
interval (0.5 s, 0.05 s) instead.

Each run: wait until the pair is protected (one node serving with its
listener up, the other standing by), then a random pause of 1 s to 1 s + one
heartbeat/advertisement interval (so kills fall at random phases). A probe in
the client namespace connects to the virtual IP every 5 ms (20 ms timeout)
and must have connected once before the kill. Then, at t0, SIGKILL the
serving node's daemon (its whole process group) and its listener; once the
listener is gone, the probe counts only attempts that start from then on.
Measured from t0:

- detect: until the survivor shows that it has decided to serve. failover:
  its status (control API, polled every 10 ms) says ``alone`` or ``primary``
  (any substatus). keepalived: its notify script has recorded MASTER (a state
  file, polled every 10 ms; keepalived runs the script as it enters MASTER).
- takeover: until the survivor shows that it serves with the application
  started. failover: status ``alone``/``primary`` with substatus ``ready``
  (the start script has returned). keepalived: the notify script has started
  the listener (its pidfile exists).
- connect: until the probe's first successful TCP connect to the virtual IP
  (timestamps from CLOCK_MONOTONIC, which all network namespaces share).

Then the killed node is restarted and the next run waits for the pair to be
protected again (so the serving node alternates). The summary gives median,
p95 (linear interpolation between order statistics), min and max, and the
ratio failover / keepalived of medians and of p95s, next to the targets of
DESIGN.md section 5. A run whose takeover or connect is not seen within 30 s
is counted as failed and left out of the figures. Nothing is asserted: the
bench prints figures.

Everything it creates (namespaces, processes, the temporary directory) is
removed at the end, on failure and on Ctrl-C/SIGTERM; processes are killed by
PID or by the process group of a process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import random
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import yaml
from _needs import NETNS, Need, ensure, find, require  # the same directory

from failover import __version__
from failover.api.client import ControlClient
from failover.config import load_config
from failover.errors import FailoverError
from failover.lab import Lab, LabError, netns_unavailable_reason

SCRIPT = "failover_detect.py"
KEEPALIVED = Need("keepalived", command="keepalived")

HELPER = Path(__file__).resolve().with_name("_lab.py")
NODES = ("alpha", "beta")
APP_PORT = 8080
HEARTBEAT_PORT = 7400
# One virtual IP per series, so that nothing one series leaves behind touches the next.
VIP_HOST = {"failover": 200, "keepalived": 201, "keepalived-hb": 202}
POLL = 0.010  # takeover polling period (status call / pidfile check)
RUN_BOUND = 30.0  # a takeover or connect not seen within this is a failed run
SETTLE_BOUND = 60.0  # bound on waiting for a (re)started pair to be protected
DEFAULT_TARGET = 2.5  # DESIGN.md section 5: default profile, kill -9 -> client connect


@dataclass(frozen=True)
class Profile:
    name: str
    interval: float  # failover's heartbeat interval (the shipped profile)
    advert_int: float  # keepalived's advert_int DESIGN.md section 5 compares with


PROFILES = {
    "default": Profile("default", interval=0.5, advert_int=1.0),
    "fast": Profile("fast", interval=0.05, advert_int=0.1),
}


class BenchError(Exception):
    """A cluster did not reach the expected state; the message says what and why."""


@dataclass
class Run:
    system: str
    profile: str
    index: int
    killed: str
    detect: float | None
    takeover: float | None
    connect: float | None
    probe_attempts: int | None = None
    note: str = ""


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


T = TypeVar("T")


def wait_until(
    what: str,
    check: Callable[[], T | None],
    bound: float,
    *,
    alive: Callable[[], None] | None = None,
    interval: float = 0.02,
) -> T:
    """Poll ``check`` every ``interval`` s until it returns non-None; returns that value.

    Raises ``BenchError`` after ``bound`` seconds, or whatever ``alive`` raises
    (it is called before each check to notice a process that died).
    """
    deadline = time.monotonic() + bound
    while True:
        if alive is not None:
            alive()
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"not reached within {bound:g} s: {what}")
        time.sleep(interval)


def other(node: str) -> str:
    return NODES[1] if node == NODES[0] else NODES[0]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a process this bench started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def wait_exit(pid: int, bound: float) -> bool:
    """Wait (pidfd, no polling) until ``pid`` has exited; False if it is still alive."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(bound * 1000))
    finally:
        os.close(fd)


class LineReader:
    """Lines from a child's unbuffered stdout, each read under a time limit."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""

    def readline(self, bound: float) -> str | None:
        """The next line (without newline), or None at EOF or after ``bound`` seconds."""
        deadline = time.monotonic() + bound
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return None
            chunk = os.read(self._fd, 4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


class Probe:
    """The client: ``_lab.py probe`` in the client namespace (see its docstring)."""

    def __init__(self, lab: Lab, address: str) -> None:
        argv = [sys.executable, "-S", str(HELPER), "probe", "--address", address,
                "--port", str(APP_PORT), "--limit", str(RUN_BOUND + 10)]  # fmt: skip
        self._proc = lab.run(
            "client", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        assert self._proc.stdout is not None
        self._lines = LineReader(self._proc.stdout)

    def wait_ready(self, bound: float = 10.0) -> None:
        """Return once the probe has connected to the virtual IP; BenchError otherwise."""
        line = self._lines.readline(bound)
        if line != "ready":
            raise BenchError(f"the client could not connect to the virtual IP ({line!r})")

    def gate(self, since: float) -> None:
        """Count only the attempts that start at or after ``since`` (monotonic)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"GATE {since:.6f}\n".encode())
        self._proc.stdin.flush()

    def result(self, bound: float) -> tuple[float | None, int | None]:
        """(monotonic time of the first counted successful connect, attempts) or Nones."""
        line = self._lines.readline(bound)
        words = (line or "").split()
        if len(words) == 3 and words[0] == "ok":
            return float(words[1]), int(words[2])
        return None, None

    def close(self) -> None:
        if self._proc.poll() is None:
            kill_group(self._proc.pid)
        self._proc.wait(timeout=5)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()


class Cluster(Protocol):
    """What a measurement needs from a two-node cluster (failover or keepalived)."""

    system: str
    vip: str

    def start(self) -> None: ...
    def protected(self) -> str | None:
        """The serving node when one serves (listener up) and the other stands by."""
        ...

    def observe(self, node: str) -> tuple[bool, bool]:
        """(``node`` has decided to serve, ``node`` serves with the application started)."""
        ...

    def listener_pid(self, node: str) -> int | None: ...
    def pidfile(self, node: str) -> Path: ...
    def kill(self, node: str) -> None:
        """SIGKILL the node's daemon (process group) at once; returns without waiting."""
        ...

    def reap(self, node: str) -> None: ...
    def restart(self, node: str) -> None: ...
    def check_alive(self) -> None: ...
    def stop(self) -> None: ...
    def describe(self) -> str: ...


class _Processes:
    """The two node processes of a cluster under test (kill -9 of a node kills
    its whole process group: a keepalived parent and its VRRP child, or a daemon)."""

    procs: dict[str, subprocess.Popen[bytes]]
    dead: set[str]

    def exit_detail(self, node: str) -> str:
        raise NotImplementedError

    def kill(self, node: str) -> None:
        self.dead.add(node)
        kill_group(self.procs[node].pid)

    def reap(self, node: str) -> None:
        self.procs[node].wait(timeout=10)

    def check_alive(self) -> None:
        for node, proc in self.procs.items():
            if node not in self.dead and proc.poll() is not None:
                raise BenchError(self.exit_detail(node))


def stop_processes(
    cluster: Cluster, procs: Iterable[subprocess.Popen[bytes]], *, grace: float
) -> None:
    """SIGTERM every process still running, SIGKILL (its group) after ``grace`` s."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait(timeout=10)
    stop_listeners(cluster)


class FailoverCluster(_Processes):
    """Two ``failover run`` daemons in the lab's node namespaces."""

    system = "failover"

    def __init__(
        self,
        lab: Lab,
        workdir: Path,
        profile: Profile,
        *,
        system: str = "failover",
        vip_host: int = VIP_HOST["failover"],
    ) -> None:
        """``system`` names the series (and its directory), ``vip_host`` its virtual IP:
        several clusters can run one after the other in one lab (arbitrator_takeover.py)."""
        self.lab = lab
        self.profile = profile
        self.system = system
        self.dir = workdir / f"{system}-{profile.name}"
        self.dir.mkdir()
        self.vip = lab.host_address("lan", vip_host)
        self.config_path = self._write_config()
        config = load_config(self.config_path)
        self.sockets = {node: str(config.control_of(node).socket) for node in NODES}
        self.timing = config.timing
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.dead: set[str] = set()
        binary = Path(sys.executable).with_name("failover")
        self.binary = str(binary) if binary.exists() else (shutil.which("failover") or "failover")

    def describe(self) -> str:
        t = self.timing
        return f"heartbeat {t.heartbeat_interval:g} s, dead {t.dead_timeout:g} s"

    def _write_config(self) -> Path:
        key = self.dir / "cluster.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        helper = [sys.executable, "-S", str(HELPER)]
        app = ["--address", self.vip, "--port", str(APP_PORT)]
        pidfile = str(self.dir / "listener.{node}.pid")
        document: dict[str, Any] = {
            "cluster": {
                "name": "bench",
                "key_file": str(key),
                "state_dir": str(self.dir / "state"),
                "profile": self.profile.name,
                "failback": "none",
            },
            "links": [{"name": net, "transport": "udp"} for net in self.lab.networks],
            "nodes": {
                node: {
                    "links": {
                        net: {"address": self.lab.address(node, net), "port": HEARTBEAT_PORT}
                        for net in self.lab.networks
                    }
                }
                for node in NODES
            },
            "application": {
                "start": shlex.join([*helper, "listen", *app, "--pidfile", pidfile]),
                "stop": shlex.join([*helper, "stop", "--pidfile", pidfile]),
                "timeout": 5,
            },
            "virtual_ip": {
                "address": f"{self.vip}/24",
                "interface": self.lab.interface("alpha", "lan"),
            },
        }
        path = self.dir / "cluster.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def pidfile(self, node: str) -> Path:
        return self.dir / f"listener.{node}.pid"

    def listener_pid(self, node: str) -> int | None:
        return read_pid(self.pidfile(node))

    def _start_node(self, node: str) -> None:
        argv = [self.binary, "run", "-c", str(self.config_path), "--node", node,
                "--log-file", str(self.dir / f"{node}.log")]  # fmt: skip
        with open(self.dir / f"{node}.stderr", "ab") as stderr:
            self.procs[node] = self.lab.run(
                node, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.dead.discard(node)

    def start(self) -> None:
        for node in NODES:
            self._start_node(node)

    def restart(self, node: str) -> None:
        self._start_node(node)

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            return ControlClient(unix_path=self.sockets[node], timeout=1.0).get_status()
        except FailoverError:
            return None

    def observe(self, node: str) -> tuple[bool, bool]:
        status = self.status(node)
        if status is None or status.get("state") not in ("alone", "primary"):
            return False, False
        return True, status.get("substatus") == "ready"

    def protected(self) -> str | None:
        states = {}
        for node in NODES:
            status = self.status(node)
            if status is None or status.get("substatus") != "ready":
                return None
            states[node] = status.get("state")
        for node in NODES:
            if (
                states[node] == "primary"
                and states[other(node)] == "secondary"
                and self.pidfile(node).exists()
                and not self.pidfile(other(node)).exists()
            ):
                return node
        return None

    def exit_detail(self, node: str) -> str:
        return (
            f"failover daemon {node} exited with {self.procs[node].returncode}:\n"
            f"{tail(self.dir / f'{node}.stderr')}\n{tail(self.dir / f'{node}.log')}"
        )

    def stop(self) -> None:
        """SIGTERM both daemons (they stop the application); SIGKILL after 20 s."""
        stop_processes(self, self.procs.values(), grace=20.0)


class KeepalivedCluster(_Processes):
    """One ``keepalived -n -P`` per node namespace (VRRPv3, unicast, nopreempt).

    ``system`` names the series: "keepalived" (``advert_int`` as DESIGN.md
    compares with) or "keepalived-hb" (``advert_int`` = failover's heartbeat).
    """

    PRIORITY = {"alpha": 150, "beta": 100}

    def __init__(
        self,
        lab: Lab,
        workdir: Path,
        profile: Profile,
        binary: str,
        *,
        system: str = "keepalived",
        advert_int: float | None = None,
    ) -> None:
        self.lab = lab
        self.profile = profile
        self.binary = binary
        self.system = system
        self.advert_int = profile.advert_int if advert_int is None else advert_int
        self.dir = workdir / f"{system}-{profile.name}"
        self.dir.mkdir()
        self.vip = lab.host_address("lan", VIP_HOST[system])
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.dead: set[str] = set()
        self.starts = 0
        for node in NODES:
            (self.dir / f"{node}.conf").write_text(self._config(node))

    def describe(self) -> str:
        return f"VRRPv3 advert_int {self.advert_int:g} s"

    def _config(self, node: str) -> str:
        peer = other(node)
        notify = shlex.join([
            sys.executable, "-S", str(HELPER), "notify", "--address", self.vip,
            "--port", str(APP_PORT), "--pidfile", str(self.pidfile(node)),
            "--state-file", str(self.state_file(node)),
        ])  # fmt: skip
        interface = self.lab.interface(node, "lan")
        return f"""\
global_defs {{
    router_id bench_{node}
    vrrp_version 3
    script_user root
    enable_script_security
}}
vrrp_instance bench {{
    state BACKUP
    nopreempt
    interface {interface}
    virtual_router_id 51
    priority {self.PRIORITY[node]}
    advert_int {self.advert_int:g}
    unicast_src_ip {self.lab.address(node, "lan")}
    unicast_peer {{
        {self.lab.address(peer, "lan")}
    }}
    virtual_ipaddress {{
        {self.vip}/24 dev {interface}
    }}
    notify "{notify}"
}}
"""

    def pidfile(self, node: str) -> Path:
        return self.dir / f"listener.{node}.pid"

    def state_file(self, node: str) -> Path:
        return self.dir / f"state.{node}"

    def listener_pid(self, node: str) -> int | None:
        return read_pid(self.pidfile(node))

    def state(self, node: str) -> str | None:
        try:
            return self.state_file(node).read_text().strip()
        except FileNotFoundError:
            return None

    def _start_node(self, node: str) -> None:
        # Fresh pid files at every start: keepalived refuses to start over the pid
        # file of a killed instance ("daemon is already running").
        self.starts += 1
        self.state_file(node).unlink(missing_ok=True)
        argv = [self.binary, "-n", "-l", "-D", "-G", "-P", "-f", str(self.dir / f"{node}.conf"),
                "-p", str(self.dir / f"{node}.{self.starts}.pid"),
                "-r", str(self.dir / f"{node}.{self.starts}.vrrp.pid")]  # fmt: skip
        with open(self.dir / f"{node}.log", "ab") as log:
            self.procs[node] = self.lab.run(
                node, argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.dead.discard(node)

    def start(self) -> None:
        for node in NODES:
            self._start_node(node)

    def restart(self, node: str) -> None:
        self._start_node(node)

    def observe(self, node: str) -> tuple[bool, bool]:
        # The listener's pidfile first: once it exists, MASTER was recorded before it.
        started = self.pidfile(node).exists()
        return started or self.state(node) == "MASTER", started

    def protected(self) -> str | None:
        for node in NODES:
            if (
                self.state(node) == "MASTER"
                and self.state(other(node)) == "BACKUP"
                and self.pidfile(node).exists()
                and not self.pidfile(other(node)).exists()
            ):
                return node
        return None

    def exit_detail(self, node: str) -> str:
        return (
            f"keepalived {node} exited with {self.procs[node].returncode}:\n"
            f"{tail(self.dir / f'{node}.log')}"
        )

    def stop(self) -> None:
        """SIGTERM both instances (they release the VIP); SIGKILL after 10 s."""
        stop_processes(self, self.procs.values(), grace=10.0)


def stop_listeners(cluster: Cluster) -> None:
    """Kill whatever listener a pidfile still names (a notify or stop that did not run)."""
    for node in NODES:
        pid = cluster.listener_pid(node)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cluster.pidfile(node).unlink(missing_ok=True)


def settled(cluster: Cluster, profile: Profile) -> str:
    """The serving node of a protected pair, after a random pause of 1 s to 1 s + one
    interval once it is protected (so that a fault falls at a random phase)."""
    wait_until(
        f"{cluster.system}: pair protected", cluster.protected, SETTLE_BOUND,
        alive=cluster.check_alive,
    )  # fmt: skip
    time.sleep(1.0 + random.uniform(0.0, profile.advert_int))
    return wait_until(
        f"{cluster.system}: pair protected", cluster.protected, SETTLE_BOUND,
        alive=cluster.check_alive,
    )  # fmt: skip


def measure_once(lab: Lab, cluster: Cluster, profile: Profile, index: int) -> Run:
    """One kill -9 of the serving node, measured; leaves the killed node restarted."""
    serving = settled(cluster, profile)
    survivor = other(serving)
    listener = cluster.listener_pid(serving)
    if listener is None:
        raise BenchError(f"{cluster.system}: no listener pid for {serving}")
    probe = Probe(lab, cluster.vip)
    try:
        probe.wait_ready()
        t0 = time.monotonic()
        cluster.kill(serving)
        with contextlib.suppress(ProcessLookupError):
            os.kill(listener, signal.SIGKILL)
        if not wait_exit(listener, 5.0):
            raise BenchError(f"listener {listener} survived SIGKILL")
        probe.gate(time.monotonic())
        # Its pid may be reused: the stop script run at restart must not find it.
        cluster.pidfile(serving).unlink(missing_ok=True)

        detect: float | None = None
        takeover: float | None = None
        tick = time.monotonic()
        while time.monotonic() - t0 < RUN_BOUND:
            decided, serving_now = cluster.observe(survivor)
            seen = time.monotonic() - t0
            if decided and detect is None:
                detect = seen
            if serving_now:
                takeover = seen
                break
            tick += POLL
            time.sleep(max(0.0, tick - time.monotonic()))
        connected, attempts = probe.result(max(1.0, RUN_BOUND - (time.monotonic() - t0)))
        connect = None if connected is None else connected - t0
    finally:
        probe.close()
    cluster.reap(serving)
    note = ""
    if takeover is None or connect is None:
        note = f"not seen within {RUN_BOUND:g} s: " + ", ".join(
            what for what, value in (("takeover", takeover), ("connect", connect)) if value is None
        )
    cluster.restart(serving)
    return Run(
        cluster.system, profile.name, index, serving, detect, takeover, connect, attempts, note
    )


def bench_cluster(
    lab: Lab, cluster: Cluster, profile: Profile, runs: int, results: Results
) -> None:
    """``runs`` measured kills of one cluster; errors end this cluster's series only."""
    print(f"\n{cluster.system}, profile {profile.name} ({cluster.describe()}):", flush=True)
    try:
        cluster.start()
        for index in range(1, runs + 1):
            run = measure_once(lab, cluster, profile, index)
            results.runs.append(run)
            print(
                f"  run {index:2}/{runs}: killed {run.killed:5}  detect {fmt(run.detect)}"
                f"  takeover {fmt(run.takeover)}"
                f"  connect {fmt(run.connect)}  {run.note}",
                flush=True,
            )
    except (BenchError, LabError, subprocess.TimeoutExpired) as exc:
        message = f"{cluster.system} {profile.name}: {exc}"
        results.errors.append(message)
        print(f"  ERROR {message}", flush=True)
    # Not on Ctrl-C: closing the lab then kills every process of it at once.
    cluster.stop()


def keepalived_binary() -> tuple[str, str]:
    """keepalived's path (``ensure`` installed it when missing) and its version."""
    found = find("keepalived")
    assert found is not None, "ensure() saw keepalived"
    out = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    first = (out.stderr or out.stdout).splitlines()
    return found, (first[0].strip() if first else "keepalived")


# -- figures ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "p95": percentile(values, 0.95),
        "min": min(values),
        "max": max(values),
    }


def fmt(value: float | None) -> str:
    return "   -   " if value is None else f"{value:6.3f}s"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


MEASURES = ("detect", "takeover", "connect")
MEASURE_LABEL = {
    "detect": "kill -> survivor shows it decided to serve (detection)",
    "takeover": "kill -> survivor serves with the application started (detection + takeover)",
    "connect": "kill -> first client TCP connect to the VIP",
}


def figures(
    results: Results, profiles: Sequence[str], systems: Sequence[str]
) -> list[dict[str, Any]]:
    rows = []
    for profile in profiles:
        for system in systems:
            runs = [r for r in results.runs if r.profile == profile and r.system == system]
            if not runs:
                continue
            for measure in MEASURES:
                values = [v for r in runs if (v := getattr(r, measure)) is not None]
                rows.append({
                    "system": system, "profile": profile, "measure": measure,
                    "runs": len(runs), "failed": len(runs) - len(values),
                    "stats": summary(values),
                })  # fmt: skip
    return rows


def render(
    results: Results,
    profiles: Sequence[str],
    systems: Sequence[str],
    intervals: dict[tuple[str, str], str],
) -> str:
    rows = figures(results, profiles, systems)
    out = ["All figures in seconds from the kill -9 (t0).", ""]
    out.append(
        "| system | profile | settings | measure | runs (failed) | median | p95 | min | max |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        s = row["stats"] or {}
        out.append(
            f"| {row['system']} | {row['profile']} | {intervals[(row['system'], row['profile'])]}"
            f" | {row['measure']} | {row['runs']} ({row['failed']})"
            f" | {seconds(s.get('median'))} | {seconds(s.get('p95'))}"
            f" | {seconds(s.get('min'))} | {seconds(s.get('max'))} |"
        )
    out += ["", "| profile | measure | failover median / p95 | keepalived series "
            "| keepalived median / p95 | ratio failover/keepalived median (p95) "
            "| target (DESIGN §5) |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    by_key = {(r["system"], r["profile"], r["measure"]): r["stats"] for r in rows}
    references = [system for system in systems if system != "failover"] or ["keepalived"]
    for profile in profiles:
        for reference in references:
            for measure in MEASURES:
                fo = by_key.get(("failover", profile, measure))
                ka = by_key.get((reference, profile, measure))
                if fo is None and ka is None:
                    continue
                ratio = "-"
                if fo and ka and ka["median"] > 0 and ka["p95"] > 0:
                    ratio = f"{fo['median'] / ka['median']:.2f} ({fo['p95'] / ka['p95']:.2f})"
                settings = intervals.get((reference, profile), "not run")
                goal = target(profile, measure, fo, ka) if reference == "keepalived" else "-"
                out.append(
                    f"| {profile} | {measure} | {pair(fo)} | {settings} | {pair(ka)} | {ratio}"
                    f" | {goal} |"
                )
    out += [""] + [f"{measure}: {MEASURE_LABEL[measure]}" for measure in MEASURES]
    return "\n".join(out)


def pair(stats: dict[str, float] | None) -> str:
    return "-" if stats is None else f"{stats['median']:.3f} / {stats['p95']:.3f}"


def target(
    profile: str, measure: str, fo: dict[str, float] | None, ka: dict[str, float] | None
) -> str:
    if measure != "connect":
        return "-"
    if profile == "default":
        text = f"<= {DEFAULT_TARGET:g} s"
        if fo is not None:
            met = (yes(fo["median"] <= DEFAULT_TARGET), yes(fo["p95"] <= DEFAULT_TARGET))
            text += f": median {met[0]}, p95 {met[1]}"
        return text
    if profile == "fast":
        text = "<= keepalived at 0.1 s"
        if fo is not None and ka is not None:
            text += (
                f": median {yes(fo['median'] <= ka['median'])}, p95 {yes(fo['p95'] <= ka['p95'])}"
            )
        return text
    return "-"


def yes(flag: bool) -> str:
    return "met" if flag else "NOT met"


# -- main ---------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def work_directory(keep: str | None, prefix: str) -> Iterator[Path]:
    """A fresh temporary directory for configs and logs: removed at the end, or,
    given ``keep``, made under it and kept (its path printed)."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=keep))
    else:
        workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if keep:
            print(f"files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def environment(keepalived_version: str) -> dict[str, str]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "failover": __version__,
        "keepalived": keepalived_version or "not run",
        "load average before": loadavg(),
    }


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews figures)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def conclude(
    env: dict[str, str],
    began: float,
    table: str,
    notes: Sequence[str],
    json_path: str | None,
    document: dict[str, Any],
) -> int:
    """A bench's end: the load average after and the duration into ``env`` (which
    ``document`` names), the table and the notes printed, ``document`` written as JSON
    to ``json_path`` if given; the exit status (130 if ``document`` says interrupted)."""
    env["load average after"] = loadavg()
    env["duration"] = f"{time.monotonic() - began:.0f} s"
    print(f"\n{table}")
    print(f"\nload average before: {env['load average before']}; after: {env['load average after']}"
          f"; duration {env['duration']}")  # fmt: skip
    for line in notes:
        print(f"note: {line}")
    if json_path:
        Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
    return 130 if document["interrupted"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="kills per profile and system")
    parser.add_argument("--profiles", default="default,fast", help="comma-separated")
    parser.add_argument(
        "--keepalived", action=argparse.BooleanOptionalAction, default=True,
        help="also measure keepalived (default: yes; as root, installs the Debian package "
        "if missing)",
    )  # fmt: skip
    parser.add_argument(
        "--keepalived-advert", choices=("design", "heartbeat", "both"), default="design",
        help="keepalived's advert_int: as DESIGN.md compares (1 s default, 0.1 s fast), "
        "equal to failover's heartbeat interval (0.5 s, 0.05 s: series keepalived-hb), or both",
    )  # fmt: skip
    parser.add_argument("--links", type=int, choices=(1, 2), default=1, help="heartbeat links")
    parser.add_argument("--json", metavar="FILE", help="also write every run and figure as JSON")
    parser.add_argument(
        "--keep-files", metavar="DIR",
        help="keep configs and logs under DIR (default: a temporary directory, removed)",
    )  # fmt: skip
    args = parser.parse_args()

    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown or not profiles or args.runs < 1:
        parser.error(f"profiles must be among {', '.join(PROFILES)}; runs >= 1")
    ensure(SCRIPT, [*NETNS, KEEPALIVED] if args.keepalived else NETNS, root="network namespaces")
    require(SCRIPT, netns_unavailable_reason())
    ka_binary, ka_version = keepalived_binary() if args.keepalived else (None, "")
    results = Results()
    series = {
        "design": ["keepalived"], "heartbeat": ["keepalived-hb"],
        "both": ["keepalived", "keepalived-hb"],
    }[args.keepalived_advert] if ka_binary else []  # fmt: skip
    systems = ["failover", *series]
    env = environment(ka_version)
    command = " ".join(["failover_detect.py", *sys.argv[1:]])
    print(f"{command}\n{env}", flush=True)

    signal.signal(signal.SIGTERM, _raise_interrupt)
    began = time.monotonic()
    intervals: dict[tuple[str, str], str] = {}
    networks = ("lan", "crossover")[: args.links]
    interrupted = False
    try:
        with work_directory(args.keep_files, "fobench-") as workdir:
            for name in profiles:
                profile = PROFILES[name]
                with Lab(networks=networks, client=True, prefix="fobench") as lab:
                    clusters: list[Cluster] = [FailoverCluster(lab, workdir, profile)]
                    for system in series:
                        assert ka_binary is not None
                        advert = profile.interval if system == "keepalived-hb" else None
                        clusters.append(
                            KeepalivedCluster(
                                lab,
                                workdir,
                                profile,
                                ka_binary,
                                system=system,
                                advert_int=advert,
                            )
                        )
                    for cluster in clusters:
                        intervals[(cluster.system, name)] = cluster.describe()
                        bench_cluster(lab, cluster, profile, args.runs, results)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up; figures so far:", file=sys.stderr)
    table = render(results, profiles, systems, intervals)
    document = {
        "command": command,
        "environment": env,
        "runs": [asdict(r) for r in results.runs],
        "figures": figures(results, profiles, systems),
        "errors": results.errors,
        "skipped": results.skipped,
        "interrupted": interrupted,
    }
    return conclude(env, began, table, results.errors + results.skipped, args.json, document)


if __name__ == "__main__":
    raise SystemExit(main())
