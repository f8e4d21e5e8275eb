"""Pauses that must not be failovers: SIGSTOP of either daemon, then SIGCONT.

    sudo .venv/bin/python bench/pause.py [--rounds 50] [--ratio 0.8] [--load]
        [--baseline-rounds 5] [--baseline-ratio 1.2] [--hog SECONDS] [--profile default]

Run by hand as root (it builds network namespaces); not part of the test suite.

One lab (``failover.lab.Lab``): namespaces alpha and beta, joined by
"lan" (UDP heartbeats) and "crossover" (TCP heartbeats). Both run ``failover
run`` with the chosen timing profile and no application.

- Each round waits for a protected pair (primary + secondary, both ready),
  then stops one daemon (SIGSTOP; the primary on even rounds, the secondary on
  odd ones) for ``--ratio`` x dead_timeout, resumes it (SIGCONT) and watches
  both for two dead timeouts. A round is a *takeover* when either node changed
  state during it (a transition record whose state differs).
- The baseline, in the same run: ``--baseline-rounds`` pauses of the primary
  for ``--baseline-ratio`` x dead_timeout, which must be taken over: the ratio
  shows that the detector still detects.
- ``--load``: a CPU hog (two busy processes per core, default niceness) runs
  for the whole bench. ``--hog SECONDS``: before the rounds, the hog alone for
  that long with no pause: any state change counts as a takeover.

Prints one line per series: takeovers/rounds, and the pauses measured (the
time between SIGSTOP and SIGCONT as this process saw it). The run ends with
``failover audit`` of both nodes' journals (S1, S2, S4, S5; docs/audit.md):
exit 1 when it finds a violation.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from _needs import NETNS, ensure, require  # the same directory

from failover.api.client import ControlClient
from failover.audit import JOURNAL_NAME, Report, audit
from failover.config.timing import PROFILES
from failover.errors import FailoverError
from failover.lab import Lab, netns_unavailable_reason

SCRIPT = "pause.py"

NODES = ("alpha", "beta")
LINKS = {"lan": "udp", "crossover": "tcp"}
BOUND = 60.0


class Pair:
    """Two daemons in the lab, their control sockets and their transition counts."""

    def __init__(self, lab: Lab, work: Path, profile: str) -> None:
        self.lab, self.work = lab, work
        key = work / "cluster.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        document: dict[str, Any] = {
            "cluster": {
                "name": "pause",
                "key_file": str(key),
                "state_dir": str(work / "state"),
                "profile": profile,
            },
            "links": [{"name": name, "transport": kind} for name, kind in LINKS.items()],
            "nodes": {
                node: {
                    "links": {
                        link: {"address": lab.address(node, link), "port": 7400 + index}
                        for index, link in enumerate(LINKS)
                    },
                    "control": {"socket": str(work / f"{node}.sock")},
                }
                for node in NODES
            },
        }
        self.config = work / "cluster.yaml"
        self.config.write_text(yaml.safe_dump(document, sort_keys=False))
        timing = PROFILES[profile]
        self.dead = timing.dead_timeout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for node in NODES:
            argv = [sys.executable, "-m", "failover", "run", "-c", str(self.config)]
            argv += ["--node", node, "--log-file", str(self.work / f"{node}.log")]
            with open(self.work / f"{node}.stderr", "ab") as stderr:
                self.procs[node] = self.lab.run(
                    node, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
                )

    def audit(self) -> Report:
        """``failover audit`` of both nodes' journals written so far."""
        return audit(sorted((self.work / "state").glob(f"*/{JOURNAL_NAME}*")))

    def stop(self) -> None:
        for proc in self.procs.values():
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=30)

    def client(self, node: str) -> ControlClient:
        return ControlClient(unix_path=str(self.work / f"{node}.sock"), timeout=2)

    def state(self, node: str) -> str | None:
        try:
            status = self.client(node).get_status()
        except FailoverError:
            return None
        return str(status["state"]) if status["substatus"] == "ready" else None

    def changes(self, node: str) -> int:
        records = self.client(node).get_transitions(1000)
        return sum(1 for r in records if r["from"] != r["to"])

    def wait(self, what: str, predicate: Callable[[], bool], bound: float = BOUND) -> None:
        deadline = time.monotonic() + bound
        while not predicate():
            for node, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SystemExit(f"{node}'s daemon exited: {proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not reached within {bound} s: {what}")
            time.sleep(0.02)

    def protected(self) -> tuple[str, str]:
        def paired() -> bool:
            return sorted(str(self.state(n)) for n in NODES) == ["primary", "secondary"]

        self.wait("primary + secondary", paired)
        primary = next(n for n in NODES if self.state(n) == "primary")
        return primary, next(n for n in NODES if n != primary)

    def pause(self, node: str, seconds: float) -> float:
        """SIGSTOP ``node``'s daemon for ``seconds``; returns the pause as measured here."""
        pid = self.procs[node].pid
        stopped = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(pid, signal.SIGCONT)
        return time.monotonic() - stopped

    def round(self, victim_role: str, ratio: float) -> tuple[bool, float]:
        """One pause of the primary or the secondary; (taken over, pause seconds)."""
        primary, secondary = self.protected()
        before = {node: self.changes(node) for node in NODES}
        victim = primary if victim_role == "primary" else secondary
        paused = self.pause(victim, ratio * self.dead)
        time.sleep(2 * self.dead)  # a takeover would happen within one dead timeout
        after = {node: self.changes(node) for node in NODES}
        return after != before, paused

    def steady(self, seconds: float) -> bool:
        """Watch a protected pair for ``seconds``; True if either node changed state."""
        self.protected()
        before = {node: self.changes(node) for node in NODES}
        time.sleep(seconds)
        return {node: self.changes(node) for node in NODES} != before


@contextmanager
def cpu_hog(enabled: bool) -> Iterator[None]:
    """Two busy processes per core at the default niceness while the block runs."""
    procs = []
    if enabled:
        count = 2 * (os.cpu_count() or 1)
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def series(pair: Pair, rounds: int, ratio: float, roles: tuple[str, ...]) -> str:
    taken = {role: 0 for role in roles}
    played = {role: 0 for role in roles}
    pauses = []
    for n in range(rounds):
        role = roles[n % len(roles)]
        took, paused = pair.round(role, ratio)
        taken[role] += took
        played[role] += 1
        pauses.append(paused)
        print(f"  round {n + 1}/{rounds}: {role} paused {paused:.3f} s: "
              f"{'TAKEOVER' if took else 'no takeover'}", flush=True)  # fmt: skip
    total = sum(taken.values())
    by_role = ", ".join(f"{role} {taken[role]}/{played[role]}" for role in roles)
    return (
        f"pause {ratio:g} x dead ({ratio * pair.dead:.2f} s; measured "
        f"{min(pauses):.3f}-{max(pauses):.3f} s): takeovers {total}/{rounds} ({by_role})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--baseline-rounds", type=int, default=5)
    parser.add_argument("--baseline-ratio", type=float, default=1.2)
    parser.add_argument("--load", action="store_true", help="a CPU hog during the whole run")
    parser.add_argument("--hog", type=float, default=0.0, help="seconds of hog alone, no pause")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    args = parser.parse_args()
    ensure(SCRIPT, NETNS, root="network namespaces")
    require(SCRIPT, netns_unavailable_reason())
    lines = [
        f"profile {args.profile} (dead {PROFILES[args.profile].dead_timeout:g} s, heartbeat "
        f"{PROFILES[args.profile].heartbeat_interval:g} s), load: {'yes' if args.load else 'no'}"
    ]
    with (
        tempfile.TemporaryDirectory(prefix="failover-pause-") as tmp,
        Lab(networks=tuple(LINKS), prefix="fopause") as lab,
    ):
        pair = Pair(lab, Path(tmp), args.profile)
        pair.start()
        try:
            if args.hog:
                with cpu_hog(True):
                    changed = pair.steady(args.hog)
                lines.append(f"CPU hog {2 * (os.cpu_count() or 1)} processes for {args.hog:g} s, "
                             f"no pause: takeovers {int(changed)}/1")  # fmt: skip
                print(lines[-1], flush=True)
            with cpu_hog(args.load):
                if args.rounds:
                    lines.append(series(pair, args.rounds, args.ratio, ("primary", "secondary")))
                    print(lines[-1], flush=True)
                if args.baseline_rounds:
                    lines.append(
                        "baseline: "
                        + series(pair, args.baseline_rounds, args.baseline_ratio, ("primary",))
                    )
                    print(lines[-1], flush=True)
        finally:
            pair.stop()
        report = pair.audit()
    figures = report.figures
    lines.append(
        f"audit: checked {', '.join(report.checked)}: {len(report.violations)} violation(s); "
        f"overlaps {figures['overlaps']['count']} (blind {figures['blind_overlaps']}, "
        f"forced {figures['forced_overlaps']})"
    )
    lines += [f"  {violation}" for violation in report.violations]
    print("\n".join(lines))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
