"""Crash soak: the e2e replication crash test for many rounds (root, network namespaces).

    sudo .venv/bin/python bench/replication_soak.py --rounds 1000 [--max-failures 5]
        [--log FILE]

Runs ``tests/e2e/test_e2e_replication.py`` (two real daemons in network and mount
namespaces; a writer makes numbered write+fsync records on the serving node;
every process of that node is killed with SIGKILL at a random moment; every
record the writer was told is durable must be on the survivor; the killed node
returns, is resynchronised, and both trees must be byte-identical) with
``FAILOVER_E2E_CRASH_ROUNDS`` set to the rounds still to do. A failed round
ends that pytest run; the soak counts the failure, keeps the log, and starts a
new run for the remaining rounds, until ``--rounds`` are done or
``--max-failures`` runs failed.

The e2e conftest audits the run's journals when the test ends (all of its
rounds at once, S1, S2, S4, S5); the soak reads that audit's line (``-rA``)
and counts a run that passed without it as failed.

Prints one line per round as the test reports it, then: rounds done, records
acknowledged (each one checked on the survivor: a missing one fails the round),
failures with the failing test's last lines, and seconds per round (median,
p95, max; a run's first round also counts the cluster's start).

Every pytest run gets its own process group and temporary directory; on any
exit (end, error, Ctrl-C, SIGTERM) the run is interrupted (SIGINT, so its
``Lab`` fixture kills its processes and deletes its namespaces), killed by
process group if it lingers, and any namespace it left is removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from _needs import REPLICATING_LAB, Need, ensure, fuse_device_reason, require

from failover.lab import list_namespaces, netns_unavailable_reason, remove_namespaces

SCRIPT = "replication_soak.py"
SNAPSHOT = (Need("git", command="git"), Need("tar", command="tar"))
"""What ``snapshot`` runs (not with ``--live``)."""

REPO = Path(__file__).resolve().parent.parent
TEST = "tests/e2e/test_e2e_replication.py"
CRASH_TEST = "killing_every_process"  # -k: the crash test only, not the file's other tests
ROUND_LINE = re.compile(r"^round (\d+): (\d+) acked, last (-?\d+), killed (\d+)")
# the audit of the run's journals by tests/e2e/conftest.py, shown by pytest -rA
AUDIT_LINE = re.compile(r": checked ([S\d, ]+); (\d+) violation\(s\)")
STOP_GRACE_S = 30.0


@dataclass
class Soak:
    """What the runs reported so far."""

    rounds: int = 0
    audited_runs: int = 0
    acked: int = 0
    round_seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Interrupted(Exception):
    """SIGTERM (or SIGINT) reached the soak."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def stop_run(child: subprocess.Popen[str], out: TextIO) -> None:
    """End one pytest run and everything it started; remove namespaces it left.

    The run's output is drained into ``out`` meanwhile (a full pipe would stall its
    clean-up); a run still alive after ``STOP_GRACE_S`` is killed by process group.
    """
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGINT)  # its fixtures clean up
        watchdog = threading.Timer(STOP_GRACE_S, os.killpg, (child.pid, signal.SIGKILL))
        watchdog.start()
        try:
            assert child.stdout is not None
            for line in child.stdout:
                out.write(line)
            child.wait()
        finally:
            watchdog.cancel()
    left = [name for name in list_namespaces() if name.startswith(f"failover-{child.pid}-")]
    if left:
        print(f"removing namespaces the run left: {left}", flush=True)
        remove_namespaces(left)


def snapshot(work: Path) -> tuple[Path, str]:
    """The committed tree (HEAD) exported to ``work``: a soak takes many minutes,
    and edits to the working tree meanwhile must not change the code under test
    (a daemon restarted with other code than its peer's is a false failure)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    tree = work / "tree"
    tree.mkdir()
    archive = subprocess.Popen(["git", "archive", "HEAD"], cwd=REPO, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError("git archive HEAD failed")
    return tree, commit


def one_run(rounds: int, soak: Soak, tree: Path, work: Path, log: Path) -> bool:
    """One pytest run of ``rounds`` rounds in ``tree``; True when it passed."""
    env = dict(os.environ, FAILOVER_E2E_CRASH_ROUNDS=str(rounds))
    if tree != REPO:  # the snapshot's code before the venv's editable install
        env["PYTHONPATH"] = os.pathsep.join(
            [str(tree / "src"), str(tree / "transports"), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
    basetemp = work / f"run-{len(soak.failures)}"
    argv = [
        sys.executable, "-m", "pytest", TEST, "-k", CRASH_TEST, "-s", "-x", "-q", "-rA",
        "-p", "no:cacheprovider", f"--basetemp={basetemp}",
    ]  # fmt: skip
    tail: list[str] = []
    before = soak.rounds
    audited: re.Match[str] | None = None
    with log.open("a") as out:
        out.write(f"\n=== {' '.join(argv)} (FAILOVER_E2E_CRASH_ROUNDS={rounds})\n")
        child = subprocess.Popen(
            argv, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert child.stdout is not None
            last = time.monotonic()
            for line in child.stdout:
                out.write(line)
                tail = [*tail[-39:], line.rstrip()]
                audited = AUDIT_LINE.search(line) or audited
                match = ROUND_LINE.match(line)
                if match is None:
                    continue
                now = time.monotonic()
                soak.round_seconds.append(now - last)
                last = now
                soak.rounds += 1
                soak.acked += int(match[2])
                print(f"[{soak.rounds}] {line.rstrip()}", flush=True)
            passed = child.wait() == 0
        finally:
            stop_run(child, out)
        shutil.rmtree(basetemp, ignore_errors=True)
    if passed and soak.rounds == before:
        passed = False
        tail.append("the run passed without reporting a round (skipped?)")
    if passed and audited is None:
        passed = False
        tail.append("the run passed without an audit of its journals (conftest hook not loaded?)")
    if audited is not None:
        soak.audited_runs += 1
        print(f"audit of rounds {before + 1}-{soak.rounds}: checked {audited[1]}: "
              f"{audited[2]} violation(s)", flush=True)  # fmt: skip
    if not passed:
        soak.failures.append("\n".join(tail[-25:]))
        print(f"run FAILED after round {soak.rounds}; last lines:\n{soak.failures[-1]}")
    return passed


def report(soak: Soak, wanted: int, elapsed: float, log: Path) -> None:
    print()
    print(f"rounds done: {soak.rounds} of {wanted}")
    print(f"records acknowledged (each checked on the survivor): {soak.acked}")
    print(f"failed runs: {len(soak.failures)} (log: {log})")
    print(f"runs audited (tests/e2e/conftest.py, all of a run's rounds): {soak.audited_runs}")
    times = soak.round_seconds
    if times:
        p95 = times[0]
        if len(times) > 1:
            p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
        print(
            f"seconds per round: median {statistics.median(times):.2f}, p95 {p95:.2f}, "
            f"max {max(times):.2f}, mean {elapsed / len(times):.2f} (wall {elapsed:.0f} s)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--max-failures", type=int, default=5, help="stop after this many")
    parser.add_argument("--log", type=Path, help="full pytest output (default: a temp file)")
    parser.add_argument(
        "--live", action="store_true", help="test the working tree, not a snapshot of HEAD"
    )
    args = parser.parse_args()
    needs = [*REPLICATING_LAB, *(() if args.live else SNAPSHOT)]
    ensure(SCRIPT, needs, root="network and mount namespaces, FUSE mounts")
    require(SCRIPT, netns_unavailable_reason())
    require(SCRIPT, fuse_device_reason())
    signal.signal(signal.SIGTERM, _interrupt)
    # Caught (not ignored, as in a shell's background job) so that each pytest run
    # starts with SIGINT at its default and turns it into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="replication-soak-"))
    log = args.log or Path(tempfile.mkstemp(prefix="replication-soak-", suffix=".log")[1])
    soak = Soak()
    started = time.monotonic()
    try:
        print(f"load average before: {os.getloadavg()}", flush=True)
        tree, commit = (REPO, "working tree") if args.live else snapshot(work)
        print(f"testing {commit} in {tree}", flush=True)
        while soak.rounds < args.rounds and len(soak.failures) < args.max_failures:
            one_run(args.rounds - soak.rounds, soak, tree, work, log)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({exc or 'SIGINT'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        report(soak, args.rounds, time.monotonic() - started, log)
        print(f"load average after: {os.getloadavg()}")
    return 1 if soak.failures or soak.rounds < args.rounds else 0


if __name__ == "__main__":
    sys.exit(main())
