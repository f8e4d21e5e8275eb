"""Fault campaign: rounds of random faults against a replicating pair, every round audited.

    sudo .venv/bin/python bench/campaign.py [--rounds 20] [--seed N] [--profile fast]
        [--protect-bound 60] [--max-minutes M] [--keep-logs DIR] [--json FILE]
        [--first-round I] [--faults kill,pause,...] [--in-order]
        [--arbitrator none|witness|etcd] [--lease-ttl 6]

The lab (``failover.lab.Lab``): namespaces alpha and beta (the
nodes) and client, on a ``lan`` bridge (UDP heartbeats, the replication
channel, the control API over TCP with a bearer token, the virtual IP) and a
``crossover`` bridge (TCP heartbeats). Each daemon runs in a mount namespace
of its own where the replicated directory is its node's own disk and its
quarantine directory its own; its state directory is a small tmpfs (mounted
by the campaign, so that it can be filled).

With ``--arbitrator witness`` or ``etcd`` the lab has a third network, ``arb``,
that only the two nodes and an ``arbitrator`` namespace are on
(``Lab(arbitrator="arb")``): there runs ``failover witness run``
(``failover.testing.witness.WitnessServer``) or a one-member etcd
(``failover.testing.etcd.EtcdServer``), and the cluster file names it with
``lease_ttl`` ``--lease-ttl`` (6 s, the default of the cluster file; whole
seconds, at least 4). Cutting ``lan`` and ``crossover`` then separates the
nodes but not from the arbitrator; cutting ``arb`` separates one node from the
arbitrator only. ``ARBITRATORS`` maps each ``--arbitrator`` to a function that
builds it in the lab (an ``Arbiter``: its cluster file section, start, kill,
pause, resume); another kind is one more entry there. With ``--arbitrator
ping`` the arbitrator namespace runs nothing: its own address on ``arb`` is
pinged (ICMP), killing or pausing it sets its link down, and the cluster's
``dead_timeout`` and ``startup_timeout`` are raised to what ping needs
(``ping_timing``; the lease must then be at least 5 s).

The application is a writer (``bench/_campaign_app.py``) started by the
serving node's start script and stopped by its stop script: numbered records,
each ``pwrite`` + ``fsync`` through the node's mirror, each acknowledged one
logged with its time. The observer is this process: it reads both nodes' status over the control
API (TCP), each from inside that node's network namespace (the node's own
address: no cut hides a node from it; attackers and ``under_attack`` still
ask from the client namespace), every ``POLL`` (50 ms) while a fault acts and
until the pair is protected again, and reads every log. A cycle where both
nodes answered serving (state primary or alone), the two answers within
``OBSERVED_TOGETHER`` (0.2 s) of each other, is the observer's ``S1
(observer)`` violation with an arbitrator (without one, a full partition makes
both serve by design: counted, not a violation).

Each round draws its faults from ``random.Random(f"{seed}/{round}")`` (so
``--seed S --first-round I --rounds 1`` replays round I's draw on a fresh
pair), targets chosen by role (primary or secondary), never by name:

- ``kill``: SIGKILL of every process of the node (its mount namespace: daemon,
  application, FUSE), restarted after a random time.
- ``pause``: SIGSTOP of the daemon for 0.1 to 0.8 x the dead timeout, SIGCONT.
- ``link``: one link cut (``ip link set down`` on the node's veth), healed.
- ``partition``: every link of the node cut, healed.
- ``connect``: hostile TCP connects with no key for 1 to 6 s (some held open and silent,
  one more every 0.1 to 0.5 s) to one of: the TCP heartbeat port, the
  replication port, the control API; half the time the serving node is
  killed during the attack (the lost-write chain of issue 8).
- ``flood``: random bytes to one of: the UDP heartbeat port, the TCP
  heartbeat port, the replication port, the control API; half the time with
  the kill.
- ``disk-full``: the node's state directory filled (ENOSPC), then freed;
  during it, sometimes its peer is killed (the node must serve on) or the
  node's daemon is restarted (it must refuse with one clear line).
- ``restart``: SIGTERM of the daemon (a clean stop), started again.
- ``swap``: ``failover swap`` on the primary.

Kinds for a pair with an arbitrator (the default set with ``--arbitrator``:
these and ``kill``, ``pause``); each cut lasts from 5 dead timeouts to twice
``--lease-ttl``, so that some end before a lease could run out and some after
(with an arbitrator, ``pause``'s time stopped is drawn so too: a paused
primary's watchdog must fence it before its lease runs out; and half of the
``kill`` rounds SIGKILL the daemon alone, down as long as a cut: its watchdog
fences the application and journals it, then the peer takes over once the
lease ran out. The other half kill the whole node, as before, down 0.5 to 5
dead timeouts: the audit, which cannot see when a node without power stopped
serving, is told when each whole-node kill was done, ``--power-off``,
docs/audit.md):

- ``cut``: both links between the nodes (``lan``, ``crossover``) cut on one
  node; both still reach the arbitrator.
- ``cut-arbitrator``: one node cut from the arbitrator (its ``arb`` link);
  the nodes still see each other.
- ``asymmetric``: one direction only: every frame one node sends to its peer
  (on both links; or, 30% of the time, to the arbitrator) is lost, what it
  receives arrives (``Lab.drop_towards``: a neighbour entry that sends them to
  a MAC nobody has; this kernel has neither netem nor a packet filter).
- ``flap``: one link of one node (``lan``, ``crossover`` or ``arb``) down and
  up 3 to 8 times, each time down for 0.3 to 0.9 dead timeouts.
- ``arbitrator-kill``: SIGKILL of the witness or etcd, started again after
  0.2 to 2 leases. A healthy pair stops serving once its lease runs out
  (docs/arbitration.md): unavailability, not a failure.
- ``arbitrator-pause``: SIGSTOP of the witness or etcd for 0.2 to 2 leases,
  SIGCONT.

``--in-order``: round I does kind ``I mod n`` of ``--faults`` instead of a
drawn one (the draws of its durations and targets stay those of its seed).

Lan-side attacks come from the client namespace; attacks on the crossover
(TCP heartbeats) from a process in the peer's network namespace. During
every attack the observer keeps asking both daemons for their status: a
request refused (503) or unanswered counts as ``control API requests denied``.

A round ends with every fault undone (links up, SIGCONT, attackers stopped,
disk freed, dead daemons started again) and then waits, at most
``--protect-bound`` seconds, until the pair is protected again (primary +
secondary, both ready, each sees the other, the primary shows ``in_sync``
and replicating): that wait is the "time to protected again". Then:

- the application must write again (an acknowledged record after that);
- every record acknowledged so far must be on the primary's disk (``lost``
  otherwise, counted once), and on the secondary's (``acked record missing on
  the in-sync secondary`` otherwise: the status claimed in sync); a record
  written by the loser of a split brain that is not on the winner counts as
  ``kept in quarantine`` when the loser's quarantine holds it, else as lost;
- ``failover audit`` (docs/audit.md) checks both nodes' journals so far, the
  acknowledged records so far (``acked.jsonl``: each record's id is its number
  and its writer's token, ``number << 24 | token``) and what each node holds
  now (``--found``: its copy and its quarantine); a violation it did not
  report in an earlier round counts for this round (``audit_run``);
- a daemon that exited by itself, or printed a traceback, is a violation (an
  arbitrator too);
- the unavailability: the gaps longer than ``GAP`` (0.25 s, 25 write
  intervals) between consecutive acknowledged records, from the last one
  before the round to the end of its checks, summed (the writer's view: a
  record acknowledged is a service that answered; the start of the
  application, a held write, a lease waited for all count). The observer's
  time with no node answering serving is given beside it.

A round that does not reach protection within the bound fails; the pair is
then restarted (both daemons SIGTERM'd and started again); if even that does
not protect it, a fresh pair (new lab, new directories) takes over the
remaining rounds, at most ``MAX_PAIRS`` in all. ``--max-minutes`` bounds the
whole run. Every pair's files are in ``pair-N`` of the work directory.

Prints one line per round, then: rounds, faults of each kind, acknowledged
records, lost (must be 0), S1 violations (must be 0), other violations by
kind, time to protected again (median, p95, max), the unavailability per
fault kind (median, p95, max; the observer's median beside it), the observer's
cycles with both nodes serving, failed rounds with their seed. Exit 0 when
nothing was lost or violated and every round passed, 1 otherwise, 2 when it
cannot run (not root, no namespaces or FUSE, no etcd for ``--arbitrator etcd``).

Cleans up on every exit (end, error, Ctrl-C, SIGTERM, SIGHUP): every process
of both nodes killed by PID (mount namespace) or process group, namespaces
deleted, the tmpfs mounts detached (their journals copied to
``state-<node>-copy`` first), the work directory removed (unless
``--keep-logs DIR``, where it is copied first).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import yaml
from _needs import ETCD, PING, REPLICATING_LAB, UMOUNT, ensure, fuse_device_reason, require

from failover.api.client import ControlClient
from failover.config.timing import PROFILES
from failover.errors import FailoverError
from failover.lab import (
    ARBITRATOR,
    Lab,
    kill_mount_namespace,
    mount_namespace_members,
    netns_unavailable_reason,
    with_own_disks,
)
from failover.testing.disks import fill, small_tmpfs
from failover.testing.etcd import NO_ETCD, EtcdServer
from failover.testing.witness import WitnessServer

SCRIPT = "campaign.py"

APP = Path(__file__).resolve().with_name("_campaign_app.py")
NODES = ("alpha", "beta")
LINKS = {"lan": "udp", "crossover": "tcp"}
LINK_PORTS = {"lan": 7400, "crossover": 7401}
REPLICATION_PORT = 7500
CONTROL_PORT = 7600
VIP_HOST = 200
RECORD = 16  # _campaign_app.RECORD
STATE_TMPFS = "64m"
FAULTS = ("kill", "pause", "link", "partition", "connect", "flood", "disk-full", "restart", "swap")
ARBITRATOR_FAULTS = ("arbitrator-kill", "arbitrator-pause")  # need --arbitrator
CUTS = ("cut", "cut-arbitrator", "asymmetric", "flap")
ALL_FAULTS = (*FAULTS, *CUTS, *ARBITRATOR_FAULTS)
ARBITRATED = ("cut", "cut-arbitrator", "asymmetric", "flap", *ARBITRATOR_FAULTS, "kill", "pause")
"""The default kinds with an arbitrator (issue 11, point 6)."""
ARB_NETWORK = "arb"  # the arbitrator's network: both nodes and the arbitrator, nothing else
GAP = 0.25  # seconds between two acknowledged records that count as unavailability
SERVING = ("primary", "alone")  # the states a node serves in (failover.core.table)
OBSERVED_TOGETHER = 0.2  # seconds: both answers of an observer's cycle within this
POLL = 0.05
FILLER = "filler"  # failover.testing.disks.fill
CLONE_NEWNET = 0x40000000
STOP_BOUND = 30.0  # a clean daemon stop (its stop script has a 10 s timeout)
WRITE_BOUND = 15.0  # the application writes again after protection
ATTACK_MAX = 6.0  # seconds: longer than the replication timeout (2 s), so that a primary
# whose session the attack broke goes alone (or holds its writes) before the attack ends


class Interrupted(BaseException):
    """SIGTERM or SIGHUP reached the campaign (a BaseException, like KeyboardInterrupt)."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


# -- results ---------------------------------------------------------------------------------


@dataclass
class RoundResult:
    index: int
    seed: str
    faults: list[str]
    detail: list[str] = field(default_factory=list)
    acked: int = 0
    lost: int = 0
    quarantined: int = 0
    violations: Counter[str] = field(default_factory=Counter)
    protected_after: float | None = None
    seconds: float = 0.0
    failure: str | None = None
    audited: bool = False
    kind: str = ""
    unavailable: float | None = None  # s: the ack log's gaps longer than GAP, summed
    longest_gap: float | None = None
    observed_both: int = 0  # observer cycles with both nodes serving
    observed_none: float = 0.0  # s: observer cycles with no node answering serving

    @property
    def passed(self) -> bool:
        return self.failure is None and self.lost == 0 and not self.violations


@dataclass
class Totals:
    seed: int
    rounds_wanted: int
    arbitrator: str = "none"
    rounds: list[RoundResult] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    stopped_early: str | None = None

    def summary(self) -> dict[str, Any]:
        violations: Counter[str] = Counter()
        for result in self.rounds:
            violations.update(result.violations)
        times = [r.protected_after for r in self.rounds if r.protected_after is not None]
        return {
            "seed": self.seed,
            "rounds_wanted": self.rounds_wanted,
            "rounds": len(self.rounds),
            "faults": dict(sorted(self.faults.items())),
            "acked": sum(r.acked for r in self.rounds),
            "lost": sum(r.lost for r in self.rounds),
            "quarantined": sum(r.quarantined for r in self.rounds),
            "s1_violations": violations.get("S1", 0),
            "violations": dict(sorted(violations.items())),
            "protected_median": statistics.median(times) if times else None,
            "protected_p95": _p95(times),
            "protected_max": max(times) if times else None,
            "round_seconds_median": (
                statistics.median([r.seconds for r in self.rounds]) if self.rounds else None
            ),
            "failed": [
                {"round": r.index, "seed": r.seed, "faults": r.detail, "why": _why(r)}
                for r in self.rounds
                if not r.passed
            ],
            "audited": sum(r.audited for r in self.rounds),
            "stopped_early": self.stopped_early,
            "arbitrator": self.arbitrator,
            "observed_both_serving": sum(r.observed_both for r in self.rounds),
            "unavailability": self.unavailability(),
        }

    def unavailability(self) -> dict[str, dict[str, Any]]:
        """Per fault kind drawn: rounds, and the unavailability (the ack log's gaps,
        see the module docstring) and the observer's time with no node serving:
        median, p95, max."""
        kinds: dict[str, list[RoundResult]] = {}
        for result in self.rounds:
            kinds.setdefault(result.kind, []).append(result)
        table = {}
        for kind, results in sorted(kinds.items()):
            gaps = [r.unavailable for r in results if r.unavailable is not None]
            dark = [r.observed_none for r in results]
            table[kind] = {
                "rounds": len(results),
                "median": statistics.median(gaps) if gaps else None,
                "p95": _p95(gaps),
                "max": max(gaps) if gaps else None,
                "observer_median": statistics.median(dark) if dark else None,
                "observer_max": max(dark) if dark else None,
            }
        return table


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def _why(result: RoundResult) -> str:
    parts = [result.failure] if result.failure else []
    if result.lost:
        parts.append(f"{result.lost} lost")
    parts += [f"{kind}: {n}" for kind, n in sorted(result.violations.items())]
    return "; ".join(parts)


# -- the acknowledged records --------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    number: int
    token: str
    node: str
    time: float

    @property
    def id(self) -> int:
        """Unique among acknowledged records: the number with the writer's token."""
        return self.number << 24 | int(self.token, 16)


def read_acks(path: Path, offset: int = 0, end: int | None = None) -> tuple[list[Ack], int]:
    """The complete lines of the acknowledgement log from ``offset`` (to ``end``); and
    the offset after the last complete line."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read() if end is None else handle.read(max(0, end - offset))
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    acks = []
    for line in data[:end].splitlines():
        words = line.decode("ascii", "replace").split()
        if len(words) == 4 and words[0].isdigit():
            acks.append(Ack(int(words[0]), words[1], words[2], float(words[3])))
    return acks, offset + end


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


# -- the network namespace of this process ----------------------------------------------------


def setns(fd: int) -> None:
    """Move this thread into the network namespace open as ``fd`` (setns(2), CLONE_NEWNET)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


# -- the arbitrator -----------------------------------------------------------------------------


class Arbiter(Protocol):
    """What the campaign needs of an arbitrator (``WitnessServer``, ``EtcdServer``):
    its cluster file section, and a process to start, kill, pause and resume."""

    def arbitrator(self, lease_ttl: int) -> dict[str, Any]: ...
    def start(self) -> None: ...
    def running(self) -> bool: ...
    def kill(self) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


def witness(lab: Lab, work: Path, key: Path) -> Arbiter:
    """``failover witness run`` in the arbitrator's namespace."""
    host = lab.address(ARBITRATOR, ARB_NETWORK)
    return WitnessServer(work, host, "campaign", key, prefix=lab.command(ARBITRATOR, []))


def etcd(lab: Lab, work: Path, key: Path) -> Arbiter:
    """A one-member etcd in the arbitrator's namespace (the key is not needed)."""
    host = lab.address(ARBITRATOR, ARB_NETWORK)
    prefix = lab.command(ARBITRATOR, [])
    return EtcdServer(work / "etcd", host, client_port=2379, peer_port=2380, prefix=prefix)


class PingTarget:
    """A ping witness: the arbitrator namespace's address on ``arb``, answered by
    that namespace's kernel (ICMP). Killing it sets its link down (nothing
    answers any more); so does pausing it (a kernel does not pause)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.up = False

    def arbitrator(self, lease_ttl: int) -> dict[str, Any]:
        # two probes of 0.3 s per call: renewed in time from a lease of 5 s
        # (the config checks it, docs/arbitration.md, ping)
        host = self.lab.address(ARBITRATOR, ARB_NETWORK)
        return {
            "type": "ping",
            "address": host,
            "lease_ttl": lease_ttl,
            "probe_count": 2,
            "probe_timeout": 0.3,
        }

    def start(self) -> None:
        self.lab.link_up(ARBITRATOR, ARB_NETWORK)
        self.up = True

    def running(self) -> bool:
        return self.up

    def kill(self) -> None:
        self.lab.link_down(ARBITRATOR, ARB_NETWORK)
        self.up = False

    pause = kill
    resume = start


def ping(lab: Lab, work: Path, key: Path) -> Arbiter:
    """The arbitrator namespace's own address, pinged (no process, no key)."""
    return PingTarget(lab)


def ping_timing(profile: str, lease_ttl: int) -> dict[str, float]:
    """``cluster.timing`` with a ping witness: nobody makes the peer wait for
    the holder's lease, so the peer may ask only once an isolated holder has
    stopped: ``dead_timeout >= lease_ttl + heartbeat_interval`` and
    ``startup_timeout >= lease_ttl`` (the config refuses less)."""
    beat = PROFILES[profile].heartbeat_interval
    return {"dead_timeout": round(lease_ttl + beat + 0.1, 3), "startup_timeout": float(lease_ttl)}


ARBITRATORS: dict[str, Callable[[Lab, Path, Path], Arbiter] | None] = {
    "none": None,
    "witness": witness,
    "etcd": etcd,
    "ping": ping,
}
"""``--arbitrator``: how to build each kind in a lab (see the module docstring)."""

UNAVAILABLE = {"etcd": NO_ETCD}  # why a kind cannot run on this machine (None: it can)


# -- the pair ----------------------------------------------------------------------------------


class Pair:
    """The lab, the cluster file and the two daemons (see the module docstring)."""

    def __init__(
        self,
        work: Path,
        profile: str,
        interval: float,
        arbitrator: str = "none",
        lease_ttl: int = 6,
    ) -> None:
        self.work = work
        self.profile = profile
        self.timing = PROFILES[profile]
        self.interval = interval
        self.kind = arbitrator
        self.lease_ttl = lease_ttl
        self.arbiter: Arbiter | None = None
        if arbitrator == "none":
            self.lab = Lab(networks=tuple(LINKS), client=True, prefix="focampaign")
        else:
            networks = (*LINKS, ARB_NETWORK)
            self.lab = Lab(networks, client=True, prefix="focampaign", arbitrator=ARB_NETWORK)
        self.netns: dict[str, int] = {}  # open network namespaces: each node's, the client's
        self.observed: list[Observation] = []
        self.dropped: set[tuple[str, str, str]] = set()  # drop_towards in force
        # node: an open descriptor of the mount namespace its killed daemon left; held
        # open so that the namespace, and with it its inode number, cannot be freed and
        # handed to another node's (or another campaign's) new namespace meanwhile
        self.orphans: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.expected_down: set[str] = set()
        # (node, CLOCK_MONOTONIC) of each whole-node kill, once every process of it
        # is dead: what the audit is told (--power-off), as it cannot see it
        self.power_offs: list[tuple[str, float]] = []
        self.paused: set[str] = set()
        self.mounts = contextlib.ExitStack()  # the state directories' tmpfs
        self.attackers: list[subprocess.Popen[bytes]] = []
        self.fillers: list[Path] = []
        self.home_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.token = secrets.token_hex(16)
        self.acks = work / "acks.log"
        self.acked = work / "acked.jsonl"  # the same, in the audit's format
        self.config = work / "cluster.yaml"

    # -- paths --

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def quarantine(self) -> Path:
        return self.work / "quarantine"

    def disk(self, node: str) -> Path:
        return self.work / f"disk-{node}"

    def quarantine_of(self, node: str) -> Path:
        return self.work / f"quarantine-{node}"

    def state_dir(self, node: str) -> Path:
        return self.work / f"state-{node}"

    def journal(self, node: str) -> Path:
        """The directory of ``node``'s audit journal (``audit.jsonl`` and its rotations)."""
        return self.state_dir(node) / node

    def log(self, node: str) -> Path:
        return self.work / f"{node}.log"

    def stderr(self, node: str) -> Path:
        return self.work / f"{node}.stderr"

    # -- building --

    def open(self) -> None:
        self.lab.open()
        for path in (self.data, self.quarantine):
            path.mkdir()
        for node in NODES:
            self.disk(node).mkdir()
            self.quarantine_of(node).mkdir()
            self.mounts.enter_context(small_tmpfs(self.state_dir(node), STATE_TMPFS))
        key = self.work / "cluster.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        build = ARBITRATORS[self.kind]
        if build is not None:
            self.arbiter = build(self.lab, self.work, key)
            self.arbiter.start()
        self.write_config(key)
        for member in (*NODES, "client"):
            self.netns[member] = os.open(self.lab.namespace_path(member), os.O_RDONLY)
        setns(self.netns["client"])

    def write_config(self, key: Path) -> None:
        token = self.work / "control.token"
        token.write_text(self.token + "\n")
        token.chmod(0o600)
        app = [sys.executable, "-S", str(APP)]
        pidfile = f"{self.work}/app.$FAILOVER_NODE.pid"
        start, stop = self.work / "app-start", self.work / "app-stop"
        start.write_text(
            "#!/bin/sh\n"
            f"exec {' '.join(app)} start --records {self.data}/records --acks {self.acks} "
            f'--pidfile "{pidfile}" --log "{self.work}/app.$FAILOVER_NODE.log" '
            f"--interval {self.interval}\n"
        )
        stop.write_text(f'#!/bin/sh\nexec {" ".join(app)} stop --pidfile "{pidfile}"\n')
        start.chmod(0o755)
        stop.chmod(0o755)
        nodes: dict[str, Any] = {}
        for node in NODES:
            lan = self.lab.address(node, "lan")
            nodes[node] = {
                "state_dir": str(self.state_dir(node)),
                "links": {
                    link: {"address": self.lab.address(node, link), "port": port}
                    for link, port in LINK_PORTS.items()
                },
                "control": {
                    "tcp": {"address": lan, "port": CONTROL_PORT, "token_file": str(token)}
                },
                "replication": {"address": lan, "port": REPLICATION_PORT},
            }
        document = {
            "cluster": {
                "name": "campaign",
                "key_file": str(key),
                "state_dir": str(self.work / "state"),
                "profile": self.profile,
                "failback": "none",
                **(
                    {"arbitrator": self.arbiter.arbitrator(self.lease_ttl)}
                    if self.arbiter is not None
                    else {}
                ),
                **(
                    {"timing": ping_timing(self.profile, self.lease_ttl)}
                    if self.kind == "ping"
                    else {}
                ),
            },
            "links": [{"name": name, "transport": kind} for name, kind in LINKS.items()],
            "nodes": nodes,
            "application": {"start": str(start), "stop": str(stop), "timeout": 10},
            "virtual_ip": {
                "address": f"{self.lab.host_address('lan', VIP_HOST)}/24",
                "interface": self.lab.interface("alpha", "lan"),
            },
            "replication": {
                "directories": [{"name": "data", "path": str(self.data)}],
                "timeout": 2.0,
                "quarantine_dir": str(self.quarantine),
            },
        }
        self.config.write_text(yaml.safe_dump(document, sort_keys=False))
        checked = subprocess.run(
            [sys.executable, "-m", "failover", "check-config", str(self.config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if checked.returncode != 0:
            raise RuntimeError(f"check-config refused the campaign's file: {checked.stderr}")

    # -- daemons --

    def start(self, node: str) -> None:
        """Start ``node``'s daemon in a mount namespace of its own (its disk, its quarantine);
        first, what its killed daemon left (``kill_daemon``) is killed."""
        self.kill_orphans(node)
        argv = with_own_disks(
            [(self.disk(node), self.data), (self.quarantine_of(node), self.quarantine)],
            [sys.executable, "-m", "failover", "run", "-c", str(self.config),
             "--node", node, "--log-file", str(self.log(node))],
        )  # fmt: skip
        with self.stderr(node).open("ab") as stderr:
            self.procs[node] = self.lab.run(
                node, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.expected_down.discard(node)
        self.paused.discard(node)

    def running(self, node: str) -> bool:
        proc = self.procs.get(node)
        return proc is not None and proc.poll() is None

    def kill_node(self, node: str) -> int:
        """SIGKILL every process of ``node`` (as a power loss); how many."""
        self.expected_down.add(node)
        proc = self.procs[node]
        killed = kill_mount_namespace(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self.power_offs.append((node, time.monotonic()))
        self.paused.discard(node)
        return killed

    def kill_daemon(self, node: str) -> None:
        """SIGKILL of ``node``'s daemon alone: its watchdog fences the application and
        the address, and journals it; the rest of its mount namespace (the watchdog,
        the FUSE helpers) is killed before the node starts again."""
        self.expected_down.add(node)
        proc = self.procs[node]
        with contextlib.suppress(OSError):
            self.orphans[node] = os.open(f"/proc/{proc.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self.resume(node)
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def kill_orphans(self, node: str) -> None:
        held = self.orphans.pop(node, None)
        if held is None:
            return
        try:
            namespace = f"mnt:[{os.fstat(held).st_ino}]"
            if namespace != os.readlink("/proc/self/ns/mnt"):
                for pid in mount_namespace_members(namespace):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        finally:
            os.close(held)

    def pause(self, node: str) -> None:
        self.paused.add(node)
        os.kill(self.procs[node].pid, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        if node in self.paused:
            self.paused.discard(node)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.procs[node].pid, signal.SIGCONT)

    def stop_daemon(self, node: str) -> int | None:
        """SIGTERM (a clean stop); the exit code, or None when it outlived ``STOP_BOUND``
        (then it is killed with every process of the node)."""
        self.expected_down.add(node)
        proc = self.procs[node]
        self.resume(node)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_BOUND)
        except subprocess.TimeoutExpired:
            self.kill_node(node)
            return None

    # -- the observer --

    def client(self, node: str, timeout: float = 1.0) -> ControlClient:
        address = (self.lab.address(node, "lan"), CONTROL_PORT)
        return ControlClient(tcp=address, token=self.token, timeout=timeout)

    def status(self, node: str) -> dict[str, Any] | None:
        """``node``'s status over its control API, asked from inside its own network
        namespace (its own address: no cut of a link hides it); None when it does
        not answer, is paused or is not running."""
        if not self.running(node) or node in self.paused:
            return None
        setns(self.netns[node])
        try:
            return self.client(node).get_status()
        except FailoverError:
            return None
        finally:
            setns(self.netns["client"])

    def observe(self) -> dict[str, dict[str, Any] | None]:
        """One cycle of the observer: both nodes' status, recorded (``observed``)."""
        began = time.monotonic()
        statuses = {node: self.status(node) for node in NODES}
        serving = tuple(
            node for node, status in statuses.items() if status and status.get("state") in SERVING
        )
        answered = sum(status is not None for status in statuses.values())
        self.observed.append(Observation(began, time.monotonic(), serving, answered))
        return statuses

    def protected(self) -> str | None:
        """The primary's name when the pair is protected (see the module docstring)."""
        statuses = self.observe()
        states = {}
        for node, status in statuses.items():
            if status is None or status.get("substatus") != "ready":
                return None
            states[node] = status.get("state")
        if sorted(map(str, states.values())) != ["primary", "secondary"]:
            return None
        for node, status in statuses.items():
            peer = status.get("peer") if status else None
            if not isinstance(peer, dict) or not peer.get("alive"):
                return None
            if peer.get("state") != states[_other(node)]:
                return None
        primary = next(node for node, state in states.items() if state == "primary")
        shown = statuses[primary] or {}
        replication = shown.get("replication") or {}
        if shown.get("in_sync") is not True or not replication.get("replicating"):
            return None
        return primary

    def describe(self) -> str:
        parts = []
        for node in NODES:
            if not self.running(node):
                parts.append(f"{node}: daemon not running")
                continue
            status = self.status(node)
            if status is None:
                parts.append(f"{node}: no answer")
            else:
                parts.append(
                    f"{node}: {status.get('state')} ({status.get('substatus')}): "
                    f"{status.get('reason')}"
                )
        return "; ".join(parts)

    def wait(self, predicate: Callable[[], Any], bound: float) -> Any:
        """Poll ``predicate`` until it returns something true; None after ``bound`` s."""
        deadline = time.monotonic() + bound
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL)

    # -- faults on the network and the disk --

    def cut(self, node: str, networks: tuple[str, ...], *, down: bool) -> None:
        """``node``'s veth on each of ``networks`` down (or up again)."""
        for network in networks:
            (self.lab.link_down if down else self.lab.link_up)(node, network)

    def drop_towards(self, node: str, peer: str, networks: tuple[str, ...]) -> None:
        """Every frame ``node`` sends to ``peer`` (a node or the arbitrator) on
        ``networks`` lost, what it receives still delivered: a one-way cut."""
        for network in networks:
            self.lab.drop_towards(node, network, peer)
            self.dropped.add((node, network, peer))

    def heal_network(self) -> None:
        """Every veth up, every one-way cut undone."""
        for node, network, peer in sorted(self.dropped):
            self.lab.undrop_towards(node, network, peer)
        self.dropped.clear()
        for node in NODES:
            for network in self.lab.networks:
                if not self.lab.link_is_up(node, network):
                    self.lab.link_up(node, network)

    def attack(self, origin: str, argv: list[str]) -> None:
        """Start an attacker program of ``_campaign_app.py`` in ``origin``'s namespace."""
        self.attackers.append(
            self.lab.run(
                origin, [sys.executable, "-S", str(APP), *argv],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip

    def stop_attackers(self) -> None:
        for proc in self.attackers:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.attackers.clear()

    def fill(self, node: str) -> int:
        """Fill ``node``'s state directory (a tmpfs) until ENOSPC; the bytes written."""
        filler = fill(self.state_dir(node))
        self.fillers.append(filler)
        return filler.stat().st_size

    def free(self) -> None:
        for filler in self.fillers:
            filler.unlink(missing_ok=True)
        self.fillers.clear()

    # -- leaving --

    def close(self) -> None:
        for proc in self.attackers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for node in list(self.procs):
            self.resume(node)
            self.kill_node(node)
            self.kill_orphans(node)
        if self.arbiter is not None:
            self.arbiter.kill()
        with contextlib.suppress(OSError):
            setns(self.home_netns)
        os.close(self.home_netns)
        for fd in self.netns.values():
            os.close(fd)
        self.netns.clear()
        try:
            self.lab.close()
        finally:
            for node in NODES:  # the journals, for --keep-logs (the tmpfs goes away)
                with contextlib.suppress(OSError):
                    shutil.copytree(
                        self.state_dir(node), self.work / f"state-{node}-copy",
                        ignore=shutil.ignore_patterns(FILLER), dirs_exist_ok=True,
                    )  # fmt: skip
            self.mounts.close()


@dataclass(frozen=True)
class Observation:
    """One cycle of the observer: when it began and ended, the nodes that answered
    serving (state primary or alone), how many answered."""

    began: float
    ended: float
    serving: tuple[str, ...]
    answered: int


def _other(node: str) -> str:
    return "beta" if node == "alpha" else "alpha"


# -- the audit ----------------------------------------------------------------------------------


def held_ids(copy: Path, quarantine: Path) -> tuple[set[int], set[int]]:
    """The ids of the records a node holds: (on its copy, in its quarantine).

    On the copy, the slot of record N must hold record N; in quarantine (files as
    the split brain's loser moved them) any well-formed record counts.
    """
    on_copy = set(_records(_read(copy / "records"), in_place=True))
    kept: set[int] = set()
    if quarantine.is_dir():
        for path in quarantine.rglob("*"):
            if path.is_file() and not path.is_symlink():
                kept.update(_records(_read(path), in_place=False))
    return on_copy, kept


def _records(data: bytes, *, in_place: bool) -> Iterator[int]:
    for slot in range(len(data) // RECORD):
        record = data[slot * RECORD : (slot + 1) * RECORD]
        number, token = record[:8], record[9:15]
        if record[8:9] != b" " or record[15:] != b"\n" or not number.isdigit():
            continue
        try:
            tag = int(token, 16)
        except ValueError:
            continue
        if not in_place or int(number) == slot:
            yield int(number) << 24 | tag


def audit_run(
    journals: list[Path],
    acked: Path,
    found: dict[str, Path],
    out: Path,
    power_offs: Sequence[tuple[str, float]] = (),
) -> list[dict[str, Any]]:
    """``failover audit --json`` on both nodes' journals (docs/audit.md): the violations.

    An input the audit cannot read (exit 2) comes back as one violation of kind
    ``audit input``. The report is kept in ``out``.
    """
    argv = [sys.executable, "-m", "failover", "audit", "--json", "--acked", str(acked)]
    for node, path in found.items():
        argv += ["--found", f"{node}={path}"]
    for node, t in power_offs:
        argv += ["--power-off", f"{node}={t!r}"]
    done = subprocess.run(
        [*argv, *map(str, journals)], capture_output=True, text=True, timeout=300, check=False
    )
    out.write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 1):
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return [{"invariant": "audit input", "mono": 0.0, "why": why, "where": ""}]
    try:
        violations = json.loads(done.stdout)["violations"]
    except (ValueError, KeyError, TypeError):
        return [{"invariant": "audit input", "mono": 0.0, "why": "no JSON report", "where": ""}]
    return list(violations)


# -- the campaign --------------------------------------------------------------------------------

MAX_PAIRS = 5  # fresh pairs built after a pair that did not recover


class Campaign:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.lease_ttl: int = args.lease_ttl
        self.dead = (
            ping_timing(args.profile, self.lease_ttl)["dead_timeout"]
            if args.arbitrator == "ping"
            else PROFILES[args.profile].dead_timeout
        )
        self.totals = Totals(seed=args.seed, rounds_wanted=args.rounds, arbitrator=args.arbitrator)
        self.kinds = tuple(args.faults)
        self.pairs = 0
        self._pair: Pair | None = None
        self.primary = ""
        self.reset()

    def reset(self) -> None:
        """The bookkeeping of one pair."""
        self.lost: set[int] = set()
        self.kept: set[int] = set()
        self.seen: set[str] = set()
        self.s3_named: set[int] = set()
        self.stderr_offsets: dict[str, int] = {}
        self.ack_offset = 0
        self.last_ack: float | None = None  # the time of the last acknowledged record read
        self.measured_to: float | None = None  # the end of the last round's measure

    @property
    def pair(self) -> Pair:
        assert self._pair is not None, "no pair yet"
        return self._pair

    def say(self, line: str) -> None:
        print(line, flush=True)

    # -- the run --

    def new_pair(self) -> None:
        """Build a pair (lab, directories, daemons) in ``pair-N`` and wait until it is
        protected; a previous pair is closed first and the bookkeeping starts again."""
        self.close()
        self.pairs += 1
        directory = self.work / f"pair-{self.pairs}"
        directory.mkdir()
        self.reset()
        self._pair = Pair(
            directory, self.args.profile, self.args.write_interval, self.args.arbitrator,
            self.lease_ttl,
        )  # fmt: skip
        self.pair.open()
        for node in NODES:
            self.pair.start(node)
        primary = self.pair.wait(self.pair.protected, self.args.protect_bound)
        if primary is None:
            raise RuntimeError(f"the pair never formed: {self.pair.describe()}")
        self.primary = primary
        self.say(f"pair formed: {primary} primary (lab {self.pair.lab.name}, {directory})")
        acks, _ = read_acks(self.pair.acks)
        self.last_ack = acks[-1].time if acks else None
        self.measured_to = time.monotonic()

    def close(self) -> None:
        if self._pair is not None:
            pair, self._pair = self._pair, None
            pair.close()

    def run(self) -> None:
        self.new_pair()
        deadline = time.monotonic() + self.args.max_minutes * 60
        for index in range(self.args.first_round, self.args.first_round + self.args.rounds):
            if time.monotonic() > deadline:
                self.totals.stopped_early = f"--max-minutes {self.args.max_minutes} reached"
                break
            result = self.one_round(index)
            self.totals.rounds.append(result)
            self.say(self.round_line(result))
            if result.failure is not None and not self.recover():
                if self.pairs >= MAX_PAIRS:
                    self.totals.stopped_early = f"round {index}: {self.pairs} pairs did not recover"
                    break
                self.say("the pair did not recover: building a fresh one")
                self.new_pair()

    def round_line(self, r: RoundResult) -> str:
        took = "-" if r.protected_after is None else f"{r.protected_after:.2f} s"
        gone = "-" if r.unavailable is None else f"{r.unavailable:.2f} s"
        verdict = "ok" if r.passed else f"FAILED ({_why(r)})"
        return (
            f"round {r.index} [seed {r.seed}] {'; '.join(r.detail)}: {r.acked} acked, "
            f"unavailable {gone}, protected after {took}, {r.seconds:.1f} s: {verdict}"
        )

    def one_round(self, index: int) -> RoundResult:
        seed = f"{self.args.seed}/{index}"
        rng = random.Random(seed)
        began = time.monotonic()
        round_dir = self.pair.work / f"round-{index:04d}"
        round_dir.mkdir()
        kind = rng.choice(self.kinds)
        if self.args.in_order:
            kind = self.kinds[index % len(self.kinds)]
        result = RoundResult(index, seed, [], kind=kind)
        self.pair.observed.clear()
        try:
            self.inject(kind, rng, result)
        finally:
            self.heal(result)
        healed = time.monotonic()
        primary = self.pair.wait(self.pair.protected, self.args.protect_bound)
        if primary is None:
            result.failure = (
                f"not protected within {self.args.protect_bound:g} s: {self.pair.describe()}"
            )
        else:
            result.protected_after = time.monotonic() - healed
            self.primary = primary
            self.wait_for_writes(result)
        self.check_daemons(result)
        acks, self.ack_offset = read_acks(self.pair.acks, self.ack_offset)
        result.acked = len(acks)
        self.measure(result, acks, began)
        with self.pair.acked.open("a") as out:
            out.writelines(
                json.dumps({"id": a.id, "mono": a.time, "node": a.node}) + "\n" for a in acks
            )
        # every record acknowledged so far (read above), then what each node holds
        held = {
            node: held_ids(self.pair.disk(node), self.pair.quarantine_of(node)) for node in NODES
        }
        if primary is not None:
            self.check_records(result, held)
        self.audit(round_dir, held, result)
        result.seconds = time.monotonic() - began
        self.totals.faults.update(result.faults)
        return result

    def measure(self, result: RoundResult, acks: list[Ack], began: float) -> None:
        """The round's unavailability from the ack log: the gaps longer than ``GAP``
        between consecutive acknowledged records, from the last one before the round
        to now, summed, each counted only from the end of the previous round's
        measure (a gap across two rounds counts once); and the observer's verdicts
        (module docstring)."""
        times = sorted(a.time for a in acks)
        since = self.measured_to if self.measured_to is not None else began
        now = time.monotonic()  # a service that did not come back counts to now
        points = [self.last_ack if self.last_ack is not None else since, *times, now]
        gaps = [(a, b) for a, b in itertools.pairwise(points) if b - a > GAP]
        result.unavailable = sum(b - max(a, since) for a, b in gaps)
        result.longest_gap = max((b - a for a, b in gaps), default=0.0)
        self.measured_to = now
        if times:
            self.last_ack = times[-1]
        observed = self.pair.observed
        for this, after in itertools.pairwise(observed):
            if not this.serving:
                result.observed_none += after.began - this.began
        both = [
            o for o in observed if len(o.serving) == 2 and o.ended - o.began <= OBSERVED_TOGETHER
        ]
        result.observed_both = len(both)
        if both and self.args.arbitrator != "none":
            result.violations["S1 (observer)"] += 1
            self.say(
                f"  observer: both nodes serving at t={both[0].began:.3f} ({len(both)} cycles)"
            )

    def wait_for_writes(self, result: RoundResult) -> None:
        """Once protected, the application on the primary writes again."""
        since = time.monotonic()

        def wrote_again() -> bool:
            self.pair.observe()
            acks, _ = read_acks(self.pair.acks, self.ack_offset)
            return any(a.time > since and a.node == self.primary for a in acks)

        if self.pair.wait(wrote_again, WRITE_BOUND) is None:
            result.violations["application not writing on the primary"] += 1

    def check_records(
        self, result: RoundResult, held: dict[str, tuple[set[int], set[int]]]
    ) -> None:
        """Every record acknowledged so far is on the primary's copy (else lost, or kept
        in the quarantine of the split brain's loser that wrote it), and on the in-sync
        secondary's (else the status claimed in sync without it)."""
        acks, _ = read_acks(self.pair.acks, 0, self.ack_offset)
        on_primary, _ = held[self.primary]
        on_secondary, _ = held[_other(self.primary)]
        missing_secondary = 0
        for ack in acks:
            if ack.id in self.lost or ack.id in self.kept:
                continue
            if ack.id not in on_primary:
                if ack.node != self.primary and ack.id in held[ack.node][1]:
                    self.kept.add(ack.id)
                    result.quarantined += 1
                else:
                    self.lost.add(ack.id)
                    result.lost += 1
            elif ack.id not in on_secondary:
                missing_secondary += 1
        if missing_secondary:
            result.violations["acked record missing on the in-sync secondary"] += 1

    def check_daemons(self, result: RoundResult) -> None:
        for node in NODES:
            text = _tail(self.pair.stderr(node), self.stderr_offsets.get(node, 0))
            self.stderr_offsets[node] = _size(self.pair.stderr(node))
            if "Traceback" in text:
                result.violations["traceback on a daemon's stderr"] += 1

    def audit(
        self, round_dir: Path, held: dict[str, tuple[set[int], set[int]]], result: RoundResult
    ) -> None:
        """``failover audit`` of both journals so far, the acknowledged records so far and
        what each node holds now; a violation not reported in an earlier round counts."""
        found = {}
        for node, (on_copy, kept) in held.items():
            found[node] = round_dir / f"found-{node}.jsonl"
            found[node].write_text("".join(f'{{"id": {i}}}\n' for i in sorted(on_copy | kept)))
        journals = [self.pair.journal(node) for node in NODES if self.pair.journal(node).is_dir()]
        violations = audit_run(
            journals, self.pair.acked, found, round_dir / "audit.json", self.pair.power_offs
        )
        result.audited = True
        for violation in violations:
            key = json.dumps(violation, sort_keys=True)
            if key in self.seen or self.s3_repeat(violation):
                continue
            self.seen.add(key)
            result.violations[str(violation.get("invariant"))] += 1
            self.say(
                f"  audit: {violation.get('invariant')} t={violation.get('mono')}: "
                f"{violation.get('why')} [{violation.get('where')}]"
            )

    def s3_repeat(self, violation: dict[str, Any]) -> bool:
        """An S3 violation that names only records an earlier one named (the same lost
        records, at a later start of service): not counted again."""
        if violation.get("invariant") != "S3":
            return False
        why = str(violation.get("why"))
        named = {
            int(n) for n in re.findall(r"\d+", why.partition("record(s):")[2].split(" and ")[0])
        }
        if not named:
            return False
        repeat = named <= self.s3_named
        self.s3_named |= named
        return repeat

    def recover(self) -> bool:
        """After a failed round: both daemons stopped and started again; True once protected."""
        self.say(f"recovering: restarting both daemons ({self.pair.describe()})")
        for node in NODES:
            if self.pair.running(node):
                self.pair.stop_daemon(node)
        for node in NODES:
            self.pair.start(node)
        primary = self.pair.wait(self.pair.protected, self.args.protect_bound)
        if primary is None:
            self.say(f"not protected after the restart either: {self.pair.describe()}")
            return False
        self.primary = primary
        return True

    # -- faults --

    def role(self, rng: random.Random) -> str:
        return self.primary if rng.random() < 0.5 else _other(self.primary)

    def inject(self, kind: str, rng: random.Random, result: RoundResult) -> None:
        result.faults.append(kind)
        getattr(self, "fault_" + kind.replace("-", "_"))(rng, result)

    def hold(self, seconds: float) -> None:
        """Let the fault act for ``seconds`` (the fault's duration, not a wait for an
        event), the observer polling meanwhile."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pair.observe()
            time.sleep(max(0.0, min(POLL, end - time.monotonic())))

    def who(self, node: str) -> str:
        return f"{node} ({'primary' if node == self.primary else 'secondary'})"

    def fault_kill(self, rng: random.Random, result: RoundResult) -> None:
        node = self.primary if rng.random() < 0.7 else _other(self.primary)
        self.hold(rng.uniform(0, 1.0))
        if self.pair.arbiter is not None and rng.random() < 0.5:
            # the daemon alone, down for up to 2 leases: its watchdog fences the
            # application and journals it before the lease can run out at the arbitrator
            self.pair.kill_daemon(node)
            down = self.cut_time(rng)
            result.detail.append(f"kill -9 of the daemon of {self.who(node)}, {down:.2f} s")
            self.hold(down)
            return
        killed = self.pair.kill_node(node)
        down = rng.uniform(0.5, 5) * self.dead
        result.detail.append(f"kill -9 of {self.who(node)}: {killed} processes, {down:.2f} s")
        self.hold(down)  # down for a while: restarted by heal()

    def fault_pause(self, rng: random.Random, result: RoundResult) -> None:
        node, pause = self.role(rng), rng.uniform(0.1, 0.8) * self.dead
        if self.pair.arbiter is not None:  # past the lease: the watchdog must fence it
            pause = self.cut_time(rng)
        result.detail.append(f"SIGSTOP {self.who(node)} {pause:.3f} s")
        self.pair.pause(node)
        self.hold(pause)
        self.pair.resume(node)

    def fault_link(self, rng: random.Random, result: RoundResult) -> None:
        node, network = self.role(rng), rng.choice(tuple(LINKS))
        cut = rng.uniform(0.5, 10) * self.dead
        result.detail.append(f"{network} of {self.who(node)} down {cut:.2f} s")
        self.pair.lab.link_down(node, network)
        self.hold(cut)
        self.pair.lab.link_up(node, network)

    def fault_partition(self, rng: random.Random, result: RoundResult) -> None:
        node, cut = self.role(rng), rng.uniform(0.5, 10) * self.dead
        result.detail.append(f"every link of {self.who(node)} down {cut:.2f} s")
        networks = self.pair.lab.networks  # the arbitrator's too: the node is alone
        self.pair.cut(node, networks, down=True)
        self.hold(cut)
        self.pair.cut(node, networks, down=False)

    def cut_time(self, rng: random.Random) -> float:
        """How long a cut lasts: from a few dead timeouts to twice the lease, so that
        some cuts end before a lease could run out and some after."""
        return rng.uniform(5 * self.dead, 2 * self.lease_ttl)

    def fault_cut(self, rng: random.Random, result: RoundResult) -> None:
        """Both links between the nodes cut; each still reaches the arbitrator."""
        node, cut = self.role(rng), self.cut_time(rng)
        result.detail.append(f"{' and '.join(LINKS)} of {self.who(node)} down {cut:.2f} s")
        self.pair.cut(node, tuple(LINKS), down=True)
        self.hold(cut)
        self.pair.cut(node, tuple(LINKS), down=False)

    def fault_cut_arbitrator(self, rng: random.Random, result: RoundResult) -> None:
        """One node cut from the arbitrator; the nodes still see each other."""
        node, cut = self.role(rng), self.cut_time(rng)
        result.detail.append(f"{self.who(node)} cut from the arbitrator {cut:.2f} s")
        self.pair.cut(node, (ARB_NETWORK,), down=True)
        self.hold(cut)
        self.pair.cut(node, (ARB_NETWORK,), down=False)

    def fault_asymmetric(self, rng: random.Random, result: RoundResult) -> None:
        """One direction only: every frame one node sends to its peer (on both links)
        or to the arbitrator is lost; what it receives arrives."""
        node, cut = self.role(rng), self.cut_time(rng)
        to_arbitrator = self.pair.arbiter is not None and rng.random() < 0.3
        networks = (ARB_NETWORK,) if to_arbitrator else tuple(LINKS)
        towards = "the arbitrator" if to_arbitrator else "its peer"
        result.detail.append(f"what {self.who(node)} sends to {towards} lost {cut:.2f} s")
        self.pair.drop_towards(node, ARBITRATOR if to_arbitrator else _other(node), networks)
        self.hold(cut)
        self.pair.heal_network()

    def fault_flap(self, rng: random.Random, result: RoundResult) -> None:
        """A link of one node down and up again 3 to 8 times, each time down for less
        than the dead timeout."""
        node = self.role(rng)
        networks = [*LINKS, ARB_NETWORK] if self.pair.arbiter is not None else list(LINKS)
        network, flaps = rng.choice(networks), rng.randint(3, 8)
        result.detail.append(f"{network} of {self.who(node)} flapping {flaps} times")
        for _ in range(flaps):
            self.pair.cut(node, (network,), down=True)
            self.hold(rng.uniform(0.3, 0.9) * self.dead)
            self.pair.cut(node, (network,), down=False)
            self.hold(rng.uniform(0.2, 1.0) * self.dead)

    def fault_arbitrator_kill(self, rng: random.Random, result: RoundResult) -> None:
        arbiter = self.arbiter()
        detail = "kill -9 of {}, started again after {:.2f} s"
        self.arbitrator_out(rng, result, detail, arbiter.kill, arbiter.start)

    def fault_arbitrator_pause(self, rng: random.Random, result: RoundResult) -> None:
        arbiter = self.arbiter()
        self.arbitrator_out(rng, result, "SIGSTOP of {} {:.2f} s", arbiter.pause, arbiter.resume)

    def arbitrator_out(
        self,
        rng: random.Random,
        result: RoundResult,
        detail: str,
        stop: Callable[[], None],
        back: Callable[[], None],
    ) -> None:
        """The arbitrator out of service (``stop``, then ``back``) for 0.2 to 2 leases."""
        seconds = rng.uniform(0.2, 2) * self.lease_ttl
        result.detail.append(detail.format(self.args.arbitrator, seconds))
        stop()
        self.hold(seconds)
        back()

    def arbiter(self) -> Arbiter:
        assert self.pair.arbiter is not None, "an arbitrator's fault without --arbitrator"
        return self.pair.arbiter

    def target(self, rng: random.Random, kinds: tuple[str, ...]) -> tuple[str, str, str, str, str]:
        """An attack target: (what, victim node, origin namespace, address:port, protocol).
        The replication port is mostly the secondary's (it accepts the primary's session)."""
        name = rng.choice(kinds)
        node = self.role(rng)
        if name == "replication" and rng.random() < 0.6:
            node = _other(self.primary)
        lan = self.pair.lab.address(node, "lan")
        crossover = self.pair.lab.address(node, "crossover")
        every = {
            "heartbeat-udp": ("client", f"{lan}:{LINK_PORTS['lan']}", "udp"),
            "heartbeat-tcp": (_other(node), f"{crossover}:{LINK_PORTS['crossover']}", "tcp"),
            "replication": ("client", f"{lan}:{REPLICATION_PORT}", "tcp"),
            "control": ("client", f"{lan}:{CONTROL_PORT}", "tcp"),
        }
        return (name, node, *every[name])

    def fault_connect(self, rng: random.Random, result: RoundResult) -> None:
        name, node, origin, target, _ = self.target(
            rng, ("heartbeat-tcp", "replication", "control")
        )
        seconds, idle, every = (
            rng.uniform(1.0, ATTACK_MAX),
            rng.choice((0, 20, 300)),
            rng.uniform(0.1, 0.5),
        )
        result.faults[-1] = f"connect:{name}"
        result.detail.append(
            f"connects to {name} of {self.who(node)} from {origin}: {idle} idle, "
            f"one every {every:.2f} s, {seconds:.2f} s"
        )
        argv = ["connect", "--target", target, "--seconds", f"{seconds:.2f}"]
        self.pair.attack(origin, [*argv, "--idle", str(idle), "--every", f"{every:.2f}"])
        self.under_attack(rng, result, seconds)

    def fault_flood(self, rng: random.Random, result: RoundResult) -> None:
        name, node, origin, target, proto = self.target(
            rng, ("heartbeat-udp", "heartbeat-tcp", "replication", "control")
        )
        seconds = rng.uniform(1.0, ATTACK_MAX)
        result.faults[-1] = f"flood:{name}"
        result.detail.append(f"{proto} junk to {name} of {self.who(node)}, {seconds:.2f} s")
        argv = ["flood", "--target", target, "--proto", proto, "--seconds", f"{seconds:.2f}"]
        self.pair.attack(origin, argv)
        self.under_attack(rng, result, seconds)

    def under_attack(self, rng: random.Random, result: RoundResult, seconds: float) -> None:
        """While the attack runs: the observer keeps asking for status (each refusal of a
        running daemon counts); half the time the primary is killed during it."""
        began = time.monotonic()
        end = began + seconds
        kill_at = began + rng.uniform(0.3, 1.0) * seconds if rng.random() < 0.5 else None
        denied = 0
        while time.monotonic() < end:
            if kill_at is not None and time.monotonic() >= kill_at:
                kill_at = None
                result.detail.append(f"kill -9 of {self.who(self.primary)} during the attack")
                self.pair.kill_node(self.primary)
                result.faults.append("kill")
            for node in NODES:
                if self.pair.running(node):
                    try:
                        self.pair.client(node, timeout=2.0).get_status()
                    except FailoverError:
                        denied += 1
            time.sleep(0.1)
        if denied:
            result.violations["control API requests denied"] += denied

    def fault_disk_full(self, rng: random.Random, result: RoundResult) -> None:
        node, held = self.role(rng), rng.uniform(1.0, 3.0)
        filled = self.pair.fill(node)
        result.detail.append(f"state directory of {self.who(node)} full ({filled} bytes added)")
        draw = rng.random()
        if draw < 0.4:
            # the node must serve on (alone: a new generation it cannot write yet)
            result.detail.append(f"kill -9 of its peer {self.who(_other(node))}")
            self.pair.kill_node(_other(node))
            result.faults.append("kill")
        elif draw < 0.6:
            result.detail.append("its daemon restarted with the disk full")
            self.pair.stop_daemon(node)
            result.faults.append("restart")
            self.pair.start(node)
            # with its state directory full, it must refuse (a non-zero exit) with one
            # clear line; one that runs on, or exits 0, did not refuse
            exited = self.pair.wait(lambda: self.pair.procs[node].poll() is not None, 30)
            if not exited or self.pair.procs[node].returncode == 0:
                result.violations["started with a full state directory"] += 1
            self.pair.expected_down.add(node)
        self.hold(held)
        self.pair.free()

    def fault_restart(self, rng: random.Random, result: RoundResult) -> None:
        node, down = self.role(rng), rng.uniform(0, 2) * self.dead
        result.detail.append(f"SIGTERM of {self.who(node)}, started again after {down:.2f} s")
        if self.pair.stop_daemon(node) is None:
            result.violations["daemon did not stop on SIGTERM"] += 1
        self.hold(down)

    def fault_swap(self, rng: random.Random, result: RoundResult) -> None:
        result.detail.append(f"swap on {self.who(self.primary)}")
        try:
            answer = self.pair.client(self.primary, timeout=10).command("swap")
        except FailoverError as exc:
            result.violations["swap not answered"] += 1
            self.say(f"swap: {exc}")
            return
        if not answer.accepted:
            result.violations["swap refused on a protected pair"] += 1

    def heal(self, result: RoundResult) -> None:
        """Undo every fault: attackers gone, links up, daemons resumed, disk freed,
        every daemon that is not running started (an exit nobody asked for is a violation)."""
        self.pair.stop_attackers()
        self.pair.heal_network()
        for node in NODES:
            self.pair.resume(node)
        if self.pair.arbiter is not None:
            self.pair.arbiter.resume()
            if not self.pair.arbiter.running():
                result.violations["arbitrator exited by itself"] += 1
                self.pair.arbiter.start()
        self.pair.free()
        for node in NODES:
            if self.pair.running(node):
                continue
            if node not in self.pair.expected_down:
                code = self.pair.procs[node].returncode
                result.violations["daemon exited by itself"] += 1
                self.say(
                    f"{node}'s daemon exited by itself with {code}: {_last_line(self.pair, node)}"
                )
            self.pair.start(node)

    # -- the report --

    def report(self, elapsed: float) -> dict[str, Any]:
        summary = self.totals.summary()
        summary["wall_seconds"] = round(elapsed, 1)
        self.say("")
        self.say(f"seed: {summary['seed']} (replay a round: --seed {summary['seed']} "
                 "--first-round I --rounds 1)")  # fmt: skip
        self.say(
            f"rounds: {summary['rounds']} of {summary['rounds_wanted']}"
            + (f" (stopped: {summary['stopped_early']})" if summary["stopped_early"] else "")
        )
        faults = ", ".join(f"{k} {n}" for k, n in summary["faults"].items())
        self.say(f"faults: {faults or 'none'}")
        self.say(f"acknowledged records: {summary['acked']}")
        self.say(f"lost: {summary['lost']} (kept in a split brain loser's quarantine: "
                 f"{summary['quarantined']})")  # fmt: skip
        self.say(f"S1 violations: {summary['s1_violations']} (failover audit: "
                 f"{summary['audited']} of {summary['rounds']} rounds)")  # fmt: skip
        other = {k: n for k, n in summary["violations"].items() if k != "S1"}
        self.say(f"other violations: {sum(other.values())}"
                 + "".join(f"; {k}: {n}" for k, n in other.items()))  # fmt: skip
        median, p95, top = (summary[f"protected_{k}"] for k in ("median", "p95", "max"))
        if median is not None:
            self.say(f"time to protected again: median {median:.2f} s, p95 {p95:.2f} s, "
                     f"max {top:.2f} s")  # fmt: skip
        self.say("unavailability per fault kind (ack log gaps > "
                 f"{GAP:g} s; observer: no node serving), median / p95 / max:")  # fmt: skip
        for kind, row in summary["unavailability"].items():
            if row["median"] is None:
                continue
            figures = " / ".join(f"{row[k]:.2f}" for k in ("median", "p95", "max"))
            self.say(f"  {kind}: {row['rounds']} rounds, {figures} s "
                     f"(observer median {row['observer_median']:.2f} s)")  # fmt: skip
        both = summary["observed_both_serving"]
        excused = " (no arbitrator: not a violation)" if self.args.arbitrator == "none" else ""
        self.say(f"observer cycles with both nodes serving: {both}{excused}")
        if summary["round_seconds_median"] is not None:
            self.say(f"seconds per round: median {summary['round_seconds_median']:.1f} "
                     f"(wall {elapsed:.0f} s)")  # fmt: skip
        self.say(f"failed rounds: {len(summary['failed'])}")
        for failed in summary["failed"]:
            self.say(f"  round {failed['round']} seed {failed['seed']} "
                     f"({'; '.join(failed['faults'])}): {failed['why']}")  # fmt: skip
        return summary


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tail(path: Path, start: int) -> str:
    """``path`` from byte ``start`` on, as text ("" when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _last_line(pair: Pair, node: str) -> str:
    lines = _tail(pair.stderr(node), 0).strip().splitlines()
    return lines[-1] if lines else "(nothing on stderr)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, help="default: random (printed)")
    parser.add_argument("--first-round", type=int, default=0, help="index of the first round")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="fast")
    parser.add_argument(
        "--faults", type=lambda s: s.split(","),
        help=f"comma-separated subset of {','.join(ALL_FAULTS)} (default: "
        f"{','.join(FAULTS)}; with an arbitrator {','.join(ARBITRATED)})",
    )  # fmt: skip
    parser.add_argument("--arbitrator", choices=list(ARBITRATORS), default="none")
    parser.add_argument("--lease-ttl", type=int, default=6, metavar="S",
                        help="the arbitrator's lease_ttl (whole seconds, at least 4)")  # fmt: skip
    parser.add_argument("--in-order", action="store_true",
                        help="round I does kind I of --faults (cycling)")  # fmt: skip
    parser.add_argument("--protect-bound", type=float, default=60.0, metavar="S")
    parser.add_argument("--max-minutes", type=float, default=240.0)
    parser.add_argument("--write-interval", type=float, default=0.01, metavar="S")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR")
    parser.add_argument("--json", type=Path, metavar="FILE", help="the summary as JSON")
    args = parser.parse_args(argv)
    if args.faults is None:
        args.faults = list(FAULTS if args.arbitrator == "none" else ARBITRATED)
    unknown = [kind for kind in args.faults if kind not in ALL_FAULTS]
    if unknown:
        parser.error(f"unknown fault kinds {unknown} (known: {', '.join(ALL_FAULTS)})")
    if args.arbitrator == "none" and set(args.faults) & set(ARBITRATOR_FAULTS):
        parser.error(f"{', '.join(ARBITRATOR_FAULTS)} need --arbitrator")
    if args.lease_ttl < 4:
        parser.error("--lease-ttl must be at least 4 (a renewal every 2 s, a margin of 1 s)")
    if args.arbitrator == "ping" and args.lease_ttl < 5:
        parser.error("--lease-ttl must be at least 5 with ping (its calls fit between renewals)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.seed is None:
        args.seed = secrets.randbelow(1 << 31)
    return args


def check_machine(arbitrator: str) -> None:
    """Return when this machine can run the campaign (installing what Debian has, as
    root); else one line on stderr and exit 2."""
    extra = {"etcd": [ETCD], "ping": [PING]}.get(arbitrator, [])
    ensure(SCRIPT, [*REPLICATING_LAB, UMOUNT, *extra], root="network namespaces, mounts")
    require(SCRIPT, netns_unavailable_reason())
    require(SCRIPT, fuse_device_reason())
    require(SCRIPT, UNAVAILABLE.get(arbitrator))


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run through the same cleanup as Ctrl-C (SIGINT, made
    KeyboardInterrupt even where the shell started the campaign with it ignored)."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_machine(args.arbitrator)
    print(f"seed {args.seed}, {args.rounds} rounds, profile {args.profile}, arbitrator "
          f"{args.arbitrator} (lease_ttl {args.lease_ttl} s), load average {os.getloadavg()}",
          flush=True)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="failover-campaign-"))
    campaign = Campaign(args, work)
    started = time.monotonic()
    interrupted = None
    with stop_signals():
        try:
            campaign.run()
        except (KeyboardInterrupt, Interrupted) as exc:
            interrupted = str(exc) or "SIGINT"
            campaign.totals.stopped_early = f"interrupted ({interrupted})"
        except Exception as exc:
            campaign.totals.stopped_early = f"error: {exc}"
            print(f"campaign error: {exc!r}", file=sys.stderr, flush=True)
        finally:
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)  # the cleanup runs to its end
            try:
                campaign.close()
            finally:
                if args.keep_logs is not None:
                    shutil.copytree(work, args.keep_logs, dirs_exist_ok=True)
                shutil.rmtree(work, ignore_errors=True)
    summary = campaign.report(time.monotonic() - started)
    summary["load_average_after"] = os.getloadavg()
    print(f"load average after: {os.getloadavg()}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({**summary, "args": _jsonable(vars(args))}, indent=2))
    bad = summary["lost"] or summary["violations"] or summary["failed"]
    return 1 if bad or summary["stopped_early"] or interrupted else 0


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


if __name__ == "__main__":
    sys.exit(main())
