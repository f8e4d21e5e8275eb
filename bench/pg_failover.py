"""PostgreSQL failover, timed: kill -9 of the serving node, split into its phases (root).

    sudo .venv/bin/python bench/pg_failover.py [--rounds 5] [--profile default|fast]
        [--load 2] [--json FILE]

The lab of tests/e2e/test_e2e_postgres.py: network namespaces alpha, beta and
client (``failover.lab.Lab``), UDP heartbeats on lan, TCP on
crossover, PostgreSQL's data directory in the replicated directory (mirrored
over lan), started and stopped by the operator's scripts of
``examples/postgres/`` on the virtual IP's node. A client in the client
namespace commits one row per transaction through the virtual IP all along
(``failover.testing.postgres``, reconnecting every 10 ms while it cannot).

A round: the pair is protected (primary + secondary, in sync); the client
commits for ``--load`` seconds; at t0 every process of the serving node is
killed (SIGKILL of its whole mount namespace: daemon, FUSE helpers,
PostgreSQL), as a power loss. Measured, in seconds:

- ``detect``: t0 to the survivor's decision to serve (its journal's
  ``secondary -> alone`` transition);
- ``start``: the decision to the end of the application's start (its
  journal's ``resource start end``: mirror read-write, virtual IP, start
  script; the script returns once PostgreSQL accepts connections);
- ``pg``: of ``start``, PostgreSQL's own crash restart, from its log: the
  server starts to ready to accept connections; ``pg_sync``: of that, the
  fsync of every file of the data directory that a crash restart begins with
  (from "database system was interrupted" to "automatic recovery in progress");
- ``client``: the end of the start to the client's first commit acknowledged after
  the decision (by the survivor's server: it may precede the end of the start a little);
- ``total``: t0 to that commit.

Then the killed node restarts and is resynchronised; the next round kills the
other node. The baseline, in the same round: the same kind of PostgreSQL
cluster on the local disk (no mirror, in the client namespace), loaded by
the same client for ``--load`` seconds, every process of it killed with
SIGKILL and ``pg-start`` run again once none runs: ``local_start`` (the script's run) and
``local_pg`` / ``local_pg_sync`` from its log. Ratios mirror / local: of the
medians, and the median of each round's ratio (a round's two restarts ran
under the same machine load) (DESIGN.md section 5: application restart on
the mirror <= 3 x local).

Prints one line per round, then the median, min and max of each measure and
the ratios. Leaves nothing behind: every process it started is killed by
pid, the lab's namespaces are removed, the working directory is deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from _needs import REPLICATING_LAB, Need, ensure, fuse_device_reason, require

from failover.api.client import ControlClient
from failover.errors import FailoverError
from failover.lab import (
    Lab,
    kill_mount_namespace,
    netns_unavailable_reason,
    with_own_disks,
)
from failover.testing.postgres import (
    EXAMPLE_SCRIPTS,
    PG_USER,
    Committer,
    kill_server,
    make_cluster,
    unavailable_reason,
)

SCRIPT = "pg_failover.py"
POSTGRESQL = (
    Need("postgresql", path="/usr/lib/postgresql/*/bin/initdb"),
    Need("util-linux", command="runuser"),
)
"""Debian's PostgreSQL (``$PG_BINDIR`` instead when set) and runuser, to run it as its
own account."""

NODES = ("alpha", "beta")
LINKS = {"lan": ("udp", 7400), "crossover": ("tcp", 7401)}
REPLICATION_PORT = 7500
VIP_HOST = 200
PORT = 5432
LOCAL_PORT = 5433  # the baseline's server, in the client namespace
POLL = 0.01
BOUND = 120.0  # seconds: a phase not done by then fails the bench
RETRY_PAUSE = 0.01  # the client's pause between two connection attempts
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[\d+\] \w+:\s+(.*)$")
PG_MARKS = {
    "starting PostgreSQL": "start",
    "database system was interrupted": "interrupted",
    "automatic recovery in progress": "recovering",
    "database system is ready to accept connections": "ready",
}


class BenchError(Exception):
    """A phase did not end within its bound, or the lab misbehaved."""


class Interrupted(BaseException):
    """SIGTERM reached the bench."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def other(node: str) -> str:
    return "beta" if node == "alpha" else "alpha"


def wait_for(what: str, predicate: Callable[[], Any], bound: float = BOUND) -> Any:
    """Poll ``predicate`` every ``POLL`` s until it returns something true; that value."""
    deadline = time.monotonic() + bound
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise BenchError(f"not within {bound} s: {what}")
        time.sleep(POLL)
    return value


def pg_restarts(log: Path, since_wall: float) -> dict[str, float]:
    """From PostgreSQL's log, the first server start after ``since_wall`` (time.time()):
    ``pg`` (start to ready) and ``pg_sync`` (interrupted to recovery in progress), s."""
    marks: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        stamp = datetime.datetime.fromisoformat(match[1] + "+00:00").timestamp()
        if stamp < since_wall:
            continue
        for text, mark in PG_MARKS.items():
            if match[2].startswith(text) or text in match[2]:
                marks.setdefault(mark, stamp)
        if "ready" in marks:
            break
    if "start" not in marks or "ready" not in marks:
        raise BenchError(f"no server start after the kill in {log}")
    found = {"pg": marks["ready"] - marks["start"]}
    if "interrupted" in marks and "recovering" in marks:
        found["pg_sync"] = marks["recovering"] - marks["interrupted"]
    return found


def first_mono(records: list[dict[str, Any]], **fields: str) -> float:
    """``mono`` of the first record whose keys hold ``fields``."""
    for record in records:
        if all(record.get(key) == value for key, value in fields.items()):
            return float(record["mono"])
    raise BenchError(f"no journal record {fields}")


def run_script(argv: list[str]) -> None:
    """Run a start or stop script to its end; BenchError with its output if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BOUND, check=False)
    if done.returncode != 0:
        raise BenchError(f"{argv} exited with {done.returncode}: {done.stdout}{done.stderr}")


def journal_after(path: Path, since: float) -> list[dict[str, Any]]:
    """The records of a daemon's audit journal written after ``since`` (monotonic)."""
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("mono", 0) > since:
                records.append(record)
    return records


class Bench:
    """The lab, the cluster file, the daemons, the client and the baseline server."""

    def __init__(self, work: Path, profile: str, load: float) -> None:
        self.work = work
        self.profile = profile
        self.load = load
        self.lab = Lab(networks=tuple(LINKS), client=True, prefix="fopgbench")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.config = work / "cluster.yaml"
        self.data = work / "data"
        self.logs = work / "pg-logs"
        self.local = work / "local" / "pg"
        self.vip = ""
        self.client: Committer | None = None
        self.local_first = 0  # the first id the baseline's client commits in a round

    def disk(self, node: str) -> Path:
        return self.work / f"disk-{node}"

    def socket(self, node: str) -> Path:
        return self.work / f"{node}.sock"

    def journal(self, node: str) -> Path:
        return self.work / "state" / node / "audit.jsonl"

    # -- building --

    def open(self) -> None:
        self.lab.open()
        self.vip = self.lab.host_address("lan", VIP_HOST)
        for path in (
            self.data,
            self.logs,
            self.disk("alpha"),
            self.disk("beta"),
            self.local.parent,
        ):
            path.mkdir()
        shutil.chown(self.logs, PG_USER)
        make_cluster(self.disk("alpha") / "pg", port=PORT)
        make_cluster(self.local, port=LOCAL_PORT)
        key = self.work / "cluster.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        datadir = self.data / "pg"
        document = {
            "cluster": {"name": "pgbench", "key_file": str(key),
                        "state_dir": str(self.work / "state"), "profile": self.profile},
            "links": [{"name": name, "transport": kind} for name, (kind, _) in LINKS.items()],
            "nodes": {
                node: {
                    "links": {
                        link: {"address": self.lab.address(node, link), "port": port}
                        for link, (_, port) in LINKS.items()
                    },
                    "control": {"socket": str(self.socket(node))},
                    "replication": {"address": self.lab.address(node, "lan"),
                                    "port": REPLICATION_PORT},
                }
                for node in NODES
            },
            "replication": {"directories": [{"name": "data", "path": str(self.data)}],
                            "timeout": 2.0},
            "application": {
                "start": f"{EXAMPLE_SCRIPTS / 'pg-start'} {datadir} {self.logs / 'mirror.log'}",
                "stop": f"{EXAMPLE_SCRIPTS / 'pg-stop'} {datadir}",
                "timeout": 60,
            },
            "virtual_ip": {"address": f"{self.vip}/24",
                           "interface": self.lab.interface("alpha", "lan")},
        }  # fmt: skip
        self.config.write_text(yaml.safe_dump(document, sort_keys=False))
        checked = subprocess.run(
            [sys.executable, "-m", "failover", "check-config", str(self.config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if checked.returncode != 0:
            raise BenchError(f"check-config refused the bench's file: {checked.stderr}")

    def start(self, node: str) -> None:
        """``node``'s daemon in a mount namespace of its own, its disk on ``data``."""
        argv = with_own_disks(
            [(self.disk(node), self.data)],
            [sys.executable, "-m", "failover", "run", "-c", str(self.config),
             "--node", node, "--log-file", str(self.work / f"{node}.log")],
        )  # fmt: skip
        with open(self.work / f"{node}.stderr", "ab") as stderr:
            self.procs[node] = self.lab.run(
                node, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def kill_node(self, node: str) -> None:
        kill_mount_namespace(self.procs[node].pid)
        self.procs[node].wait(timeout=10)

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            return ControlClient(unix_path=str(self.socket(node)), timeout=2).get_status()
        except FailoverError:
            return None

    def protected(self) -> str | None:
        """The primary's name once primary + secondary are ready and in sync."""
        shown = {node: self.status(node) for node in NODES}
        if any(s is None or s["substatus"] != "ready" for s in shown.values()):
            return None
        states = {node: s["state"] for node, s in shown.items() if s is not None}
        if sorted(states.values()) != ["primary", "secondary"]:
            return None
        primary = next(node for node, state in states.items() if state == "primary")
        status = shown[primary]
        return primary if status is not None and status["in_sync"] is True else None

    # -- one round --

    def commits_for(self, seconds: float) -> None:
        """Let the client commit for ``seconds`` (at least one commit)."""
        assert self.client is not None
        wanted = len(self.client.acked) + 1
        wait_for(
            "a commit through the virtual IP",
            lambda: self.client and self.client.wait_for(wanted, 0.2),
        )
        time.sleep(seconds)  # the load the crash interrupts, not a wait for an event

    def failover_round(self, serving: str) -> dict[str, float]:
        survivor = other(serving)
        self.commits_for(self.load)
        wall, t0 = time.time(), time.monotonic()
        self.kill_node(serving)
        wait_for(
            f"{survivor} serves",
            lambda: (
                (s := self.status(survivor)) and s["state"] == "alone" and s["substatus"] == "ready"
            ),
        )
        records = journal_after(self.journal(survivor), t0)
        decided = first_mono(records, kind="transition", **{"from": "secondary", "to": "alone"})
        started = first_mono(records, kind="resource", action="start", phase="end")
        assert self.client is not None
        client = self.client
        # acknowledged after the survivor's decision: by the survivor's server (a commit
        # the killed server acknowledged just before t0 may be read just after it)
        first = wait_for(
            "a commit after the takeover",
            lambda: next((m for _, m in client.acked if m > decided), None),
        )
        result = {
            "detect": decided - t0,
            "start": started - decided,
            **pg_restarts(self.logs / "mirror.log", wall),
            "client": first - started,
            "total": first - t0,
        }
        self.start(serving)
        wait_for("the pair protected again", lambda: self.protected() == survivor)
        return result

    def local_round(self) -> dict[str, float]:
        """The baseline: crash restart of the local-disk server under the same load."""
        start = [str(EXAMPLE_SCRIPTS / "pg-start"), str(self.local), str(self.logs / "local.log")]
        run = self.lab.command("client", start)
        run_script(run)
        # ids above every earlier round's: the table keeps them (a duplicate is an error)
        self.local_first += 10_000_000
        client = Committer(
            self.lab.command("client", []),
            self.lab.address("client", "lan"),
            LOCAL_PORT,
            first=self.local_first,
            retry_pause=RETRY_PAUSE,
        )
        try:
            wait_for("a local commit", lambda: client.wait_for(1, 0.2))
            time.sleep(self.load)  # the load the crash interrupts
            wall = time.time()
            kill_server(self.local)  # every process of it, and none runs any more
            began = time.monotonic()
            run_script(run)
            took = time.monotonic() - began
            restart = pg_restarts(self.logs / "local.log", wall)
            result = {"local_start": took, **{f"local_{k}": v for k, v in restart.items()}}
        finally:
            client.stop()
            stop = [str(EXAMPLE_SCRIPTS / "pg-stop"), str(self.local)]
            subprocess.run(self.lab.command("client", stop), check=False, capture_output=True)
        return result

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(AssertionError):
                self.client.stop()
        for node, proc in self.procs.items():
            if proc.poll() is None:
                self.kill_node(node)
        with contextlib.suppress(OSError, AssertionError):
            kill_server(self.local)
        self.lab.close()


MEASURES = (
    "detect",
    "start",
    "pg",
    "pg_sync",
    "client",
    "total",
    "local_start",
    "local_pg",
    "local_pg_sync",
)


def report(rounds: list[dict[str, float]]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    print()
    print(f"{'measure':14} {'median':>8} {'min':>8} {'max':>8}   ({len(rounds)} rounds)")
    for measure in MEASURES:
        values = [r[measure] for r in rounds if measure in r]
        if not values:
            continue
        stats[measure] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
        print(f"{measure:14} {stats[measure]['median']:8.3f} {min(values):8.3f} {max(values):8.3f}")
    ratios: dict[str, dict[str, float]] = {}
    for mirror, local in (
        ("start", "local_start"),
        ("pg", "local_pg"),
        ("pg_sync", "local_pg_sync"),
    ):
        paired = [r[mirror] / r[local] for r in rounds if mirror in r and r.get(local, 0) > 0]
        if not paired:
            continue
        ratios[mirror] = {
            "of_medians": stats[mirror]["median"] / stats[local]["median"],
            "median_of_rounds": statistics.median(paired),
        }
        print(
            f"ratio {mirror} mirror / local: {ratios[mirror]['of_medians']:.1f} x of the medians, "
            f"{ratios[mirror]['median_of_rounds']:.1f} x median of the rounds' "
            f"({', '.join(f'{x:.1f}' for x in paired)}); DESIGN.md target <= 3 x"
        )
    return {"stats": stats, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=("default", "fast"), default="default")
    parser.add_argument(
        "--load", type=float, default=2.0, help="seconds of commits before each kill"
    )
    parser.add_argument("--json", type=Path, help="write the rounds and figures there")
    args = parser.parse_args()
    postgresql = () if os.environ.get("PG_BINDIR") else POSTGRESQL
    ensure(SCRIPT, [*REPLICATING_LAB, *postgresql], root="network namespaces")
    require(SCRIPT, netns_unavailable_reason() or unavailable_reason())
    require(SCRIPT, fuse_device_reason())
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="pg-failover-"))
    work.chmod(0o711)  # the postgres account reaches its data directories below
    bench = Bench(work, args.profile, args.load)
    rounds: list[dict[str, float]] = []
    try:
        print(
            f"load average before: {os.getloadavg()}; profile {args.profile}, "
            f"{args.load} s of commits before each kill",
            flush=True,
        )
        bench.open()
        for node in NODES:
            bench.start(node)
        serving = wait_for("the pair protected", bench.protected)
        bench.client = Committer(
            bench.lab.command("client", []), bench.vip, PORT, retry_pause=RETRY_PAUSE
        )
        for index in range(args.rounds):
            result = bench.failover_round(serving)
            result.update(bench.local_round())
            rounds.append(result)
            print(
                f"round {index + 1}: kill {serving}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in result.items()),
                flush=True,
            )
            serving = other(serving)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({exc or 'SIGINT'})")
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        for log in sorted(bench.logs.glob("*.log")):  # before the directory goes
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- last lines of {log.name}:", *tail, sep="\n", file=sys.stderr)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    figures = report(rounds) if rounds else {}
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, **figures}, indent=2))
    return 0 if len(rounds) == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
