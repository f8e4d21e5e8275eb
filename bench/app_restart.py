"""PostgreSQL's crash restart on the mirror against the same on the local disk, one run (root).

    sudo .venv/bin/python bench/app_restart.py [--rounds 3] [--load 2] [--dir /var/tmp]
        [--json FILE]

Two PostgreSQL clusters under one temporary directory in ``--dir`` (one disk):

- local: a plain data directory;
- mirror: a data directory in a replicated directory served by a runtime
  ``DataPlane`` (``bench/_replication_lab.py plane --serve``: the mirror with the
  tracker and the sender, the daemon's path), replicating over loopback to a
  second ``DataPlane`` (its read-only mirror and the receiver applying under it);
  ack level written, the default. The cluster is made (``initdb``) through the
  mirror, so the peer holds all of it from the start.

A round, for each cluster in turn: start it (``examples/postgres/pg-start``), let
a client (``failover.testing.postgres.Committer``) commit one row per transaction
over loopback for ``--load`` seconds, kill -9 every process of the server
(``kill_server``, as a power loss ends them), run ``pg-start`` again and time it
(``script``); from PostgreSQL's log (as bench/pg_failover.py reads it): ``pg``, the
server's start to ready to accept connections, and of that ``pg_sync``, the fsync
of every file and directory of the data directory a crash restart begins with
(``recovery_init_sync_method = fsync``). Then the server is stopped (pg-stop).

Prints each round, the median of each measure, the ratios mirror / local (of the
medians; DESIGN.md section 5: application restart on the mirror <= 3 x local),
and how many files and directories the start-up sync fsyncs (every one under
the data directory). Leaves nothing behind: servers and clients killed by pid,
the planes stopped (they unmount), the directory removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from _needs import FUSE, NETNS, ensure, fuse_device_reason, require
from pg_failover import POSTGRESQL, BenchError, pg_restarts, run_script, wait_for

from failover.replication.fusermount import mirror_mounts
from failover.testing.postgres import (
    EXAMPLE_SCRIPTS,
    PG_USER,
    Committer,
    kill_server,
    make_cluster,
    postmaster_of,
    unavailable_reason,
)
from replication import Role

LAB = Path(__file__).with_name("_replication_lab.py")
LOOPBACK = "127.0.0.1"
RETRY_PAUSE = 0.01  # the client's pause between two connection attempts
TARGET = 3.0
MEASURES = ("script", "pg", "pg_sync")


class Interrupted(BaseException):
    """SIGTERM reached the bench."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def free_port() -> int:
    """A TCP port nothing listens on now, on loopback (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class Plane(Role):
    """One ``_replication_lab.py plane`` process (bench/replication.py's ``Role``, in this
    network namespace); ``calls``: where it writes its call counts (``calls_mark``)."""

    def __init__(self, name: str, argv: list[str], logs: Path, calls: Path | None) -> None:
        env = None if calls is None else {**os.environ, "FAILOVER_BENCH_CALLS": str(calls)}
        super().__init__(None, "", name, ["plane", *argv], logs, None, env)
        self.calls = calls
        self._marks = 0

    def calls_mark(self) -> dict[str, list[float]] | None:
        """With ``calls``: the plane's call counts and seconds since the last mark
        (written on SIGUSR1, see ``_replication_lab.py``)."""
        if self.calls is None:
            return None
        self._marks += 1
        dumped = self.calls.with_suffix(f".{self._marks}.json")
        os.kill(self.proc.pid, signal.SIGUSR1)
        wait_for(f"{dumped.name} from {self.name}", dumped.exists)
        return dict(json.loads(dumped.read_text()))


def start_planes(work: Path, calls: bool = False) -> list[Plane]:
    """The peer (read-only mirror + receiver) first, then the serving mirror over
    ``work/mirror``; both on loopback. ``calls``: the serving one counts its calls
    (``_replication_lab.py``'s ``PROFILED``), see ``Plane.calls_mark``."""
    ports = {"alpha": free_port(), "beta": free_port()}
    planes: list[Plane] = []
    for node, other, serve in (("beta", "alpha", False), ("alpha", "beta", True)):
        root = work / ("mirror" if serve else "peer")
        root.mkdir()
        argv = [str(root), "--state", str(work / f"state-{node}"),
                "--listen", f"{LOOPBACK}:{ports[node]}",
                "--peer", f"{LOOPBACK}:{ports[other]}"]  # fmt: skip
        if serve:
            argv.append("--serve")
        counted = work / "calls" if calls and serve else None
        planes.append(Plane(f"plane-{node}", argv, work / "logs", counted))
    return planes


def count_entries(datadir: Path) -> int:
    """Files and directories under ``datadir`` (itself included): what the start-up
    sync fsyncs."""
    return 1 + sum(len(dirs) + len(files) for _, dirs, files in os.walk(datadir))


def crash_restart(
    datadir: Path, log: Path, port: int, first: int, load: float, plane: Plane | None = None
) -> dict[str, float]:
    """One round on one cluster (module docstring); its measures in seconds. With
    ``plane`` counting its calls, prints those of the restart (kill to ready)."""
    start = [str(EXAMPLE_SCRIPTS / "pg-start"), str(datadir), str(log)]
    run_script(start)
    client = Committer([], LOOPBACK, port, first=first, retry_pause=RETRY_PAUSE)
    try:
        wait_for("a first commit", lambda: client.wait_for(1, 0.2))
        time.sleep(load)  # the load the crash interrupts, not a wait for an event
        wall = time.time()
        if plane is not None:
            plane.calls_mark()
        kill_server(datadir)
        began = time.monotonic()
        run_script(start)
        took = time.monotonic() - began
        if plane is not None and (calls := plane.calls_mark()) is not None:
            print_calls(calls, took)
        return {"script": took, **pg_restarts(log, wall)}
    finally:
        client.stop()
        stop = [str(EXAMPLE_SCRIPTS / "pg-stop"), str(datadir)]
        subprocess.run(stop, check=False, capture_output=True, timeout=120)


def print_calls(calls: dict[str, list[float]], wall: float) -> None:
    """The serving plane's calls during one restart, most time first."""
    print(f"  calls in the mirror's process during the restart ({wall:.3f} s of wall time):")
    for name, (count, seconds) in sorted(calls.items(), key=lambda item: -item[1][1]):
        print(
            f"    {name:28} {int(count):7d} calls {seconds:8.3f} s {seconds / count * 1e6:8.0f} us"
        )


def report(rounds: list[dict[str, dict[str, float]]], entries: int) -> dict[str, Any]:
    print()
    print(f"{'measure':10} {'local s':>9} {'mirror s':>9} {'ratio':>7}   (median of {len(rounds)})")
    figures: dict[str, Any] = {"entries_fsynced": entries}
    for measure in MEASURES:
        local = [r["local"][measure] for r in rounds if measure in r["local"]]
        mirror = [r["mirror"][measure] for r in rounds if measure in r["mirror"]]
        if not local or not mirror:
            continue
        lo, mi = statistics.median(local), statistics.median(mirror)
        figures[measure] = {"local": lo, "mirror": mi, "ratio": mi / lo}
        print(f"{measure:10} {lo:9.3f} {mi:9.3f} {mi / lo:6.1f}x")
    pg = figures.get("pg")
    if pg is not None:
        verdict = "met" if pg["ratio"] <= TARGET else "NOT met"
        ratio = pg["ratio"]
        print(f"\ncrash restart (pg) mirror / local: {ratio:.1f}x, target <= {TARGET}x: {verdict}")
    print(f"files and directories the start-up sync fsyncs: {entries}")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=float, default=2.0, help="seconds of commits before a kill")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="on the disk to test")
    parser.add_argument("--json", type=Path, help="write the rounds and figures there")
    parser.add_argument(
        "--calls", action="store_true", help="print the mirror process's calls of each restart"
    )
    args = parser.parse_args()
    postgresql = () if os.environ.get("PG_BINDIR") else POSTGRESQL
    ensure("app_restart.py", [*NETNS, *FUSE, *postgresql], root="network namespaces, FUSE")
    require("app_restart.py", unavailable_reason() or fuse_device_reason())
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"load average before: {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="app-restart-", dir=args.dir))
    work.chmod(0o711)  # the postgres account reaches its data directories below
    logs = work / "logs"
    logs.mkdir()
    shutil.chown(logs, PG_USER)
    planes: list[Plane] = []
    clusters: dict[str, tuple[Path, int]] = {}
    rounds: list[dict[str, dict[str, float]]] = []
    entries = 0
    try:
        planes = start_planes(work, calls=args.calls)
        for name, parent in (("local", work / "local"), ("mirror", work / "mirror")):
            parent.mkdir(exist_ok=True)
            port = free_port()
            datadir = parent / "pg"
            lab = {"listen_addresses": f"'{LOOPBACK}'"}  # this bench runs in the root namespace
            make_cluster(datadir, port=port, settings=lab)
            clusters[name] = (datadir, port)
        for index in range(args.rounds):
            result = {}
            for name, (datadir, port) in clusters.items():
                first = (index * 2 + (name == "mirror")) * 10_000_000
                counted = planes[-1] if args.calls and name == "mirror" else None
                log = logs / f"{name}.log"
                result[name] = crash_restart(datadir, log, port, first, args.load, counted)
                for plane in planes:
                    plane.check()
            rounds.append(result)
            print(
                f"round {index + 1}: "
                + "; ".join(
                    f"{name} " + ", ".join(f"{k} {v:.3f}" for k, v in measures.items())
                    for name, measures in result.items()
                ),
                flush=True,
            )
        entries = count_entries(clusters["mirror"][0])
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({exc or 'SIGINT'})", file=sys.stderr)
    except (BenchError, RuntimeError) as exc:  # RuntimeError: a plane failed (Role)
        print(f"bench failed: {exc}", file=sys.stderr)
        for log in sorted(logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- last lines of {log.name}:", *tail, sep="\n", file=sys.stderr)
    finally:
        for datadir, _ in clusters.values():
            if postmaster_of(datadir) is not None:
                with contextlib.suppress(OSError, AssertionError):
                    kill_server(datadir)
        for plane in reversed(planes):
            with contextlib.suppress(Exception):
                plane.stop()
        for path in (work / "mirror", work / "peer"):
            # a killed process's mirror stays, dead: ismount (a stat) does not see it
            if os.path.ismount(path) or mirror_mounts([str(path)]):
                subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    figures = report(rounds, entries) if rounds else {}
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, **figures}, indent=2))
    return 0 if len(rounds) == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
