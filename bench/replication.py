"""Replicated writes against the local disk and a bare FUSE passthrough, same run, same disk.

    sudo .venv/bin/python bench/replication.py [--size-mib 1024] [--syncs 2000] [--rounds 3]
        [--rate-mbit 1000] [--dir /var/tmp] [--unshaped-only]

In each round, an application process (``bench/_replication_lab.py turns``)
commits in every target directory, the targets taking turns of 50 calls:
``--syncs`` times a 4 KiB ``pwrite`` at the next offset + ``fsync`` in each
target (p50/p99 latency), then ``--syncs`` times an ``fsync`` of that file with
nothing written since (a clean file: p50). In turns, because an fsync's cost on
ext4 includes a disk cache flush that any other I/O on the disk slows: every
target meets the disk in the same mood (turns of one call would meet ext4's
journal batching, which makes an fsync wait when another thread synced last).
Then an application process (``write``) writes sequentially in each target:
1 MiB ``write`` calls of ``--size-mib`` MiB then one ``fsync`` (MiB/s); the CPU
time (user + system, /proc) of the mirror's process and of its peer's meanwhile
gives CPU seconds per GiB on each side. Targets, all directories
under one temporary directory in ``--dir`` (one disk):

(a) local disk: a plain directory;
(b) FUSE passthrough: a ``Mirror`` with no listener (no replication);
(c) replicated to a peer in another network namespace (``failover.lab.Lab``:
    namespaces alpha and beta joined by veths through a bridge), the application
    writing through alpha's mirror:
    - sender: the mirror's listener is a ``ReplicationSender``; the peer is a
      ``ReplicationReceiver`` + ``Applier`` in a process in beta;
    - relay: a runtime ``DataPlane`` serving in alpha (tracker + sender, the
      daemon's path) and a ``DataPlane`` in beta receiving under its read-only
      mirror. relay vs sender is the tracking cost.
    Ack level ``written`` (the default), replication timeout 30 s.
(d) the same replicated targets with alpha's veth shaped by a ``tbf`` qdisc at
    ``--rate-mbit`` (burst 512 KiB): sequential throughput as a share of the link rate,
    beside raw TCP (``sink``/``source``) over the same shaped link.

Every serving role is a process of its own (mirrors in alpha's network
namespace, peers in beta's), started once and kept for all rounds; targets are
measured in interleaved rounds (``--rounds``, median kept) with ``sync(1)``
before each. The peer's copy is on the same disk, so a replicated write makes
the disk write twice. Prints each figure, ratios against the local disk and the
passthrough, and the issue's targets. Removes its namespaces, mounts, processes
and files on every exit (end, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from _needs import FUSE, NETNS, TC, ensure, fuse_device_reason, require  # the same directory

from failover.lab import Lab, netns_unavailable_reason
from failover.replication.fusermount import mirror_mounts

MIB = 1 << 20
LAB = Path(__file__).with_name("_replication_lab.py")
NETWORK = "repl"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
SENDER_PORT, PLANE_PORT, RAW_PORT = 7601, 7602, 7603
LOCAL, PASSTHROUGH = "local disk", "FUSE passthrough"
SENDER, RELAY = "replicated: sender", "replicated: relay (tracker + sender)"
SIDES: dict[str, tuple[str | None, ...]] = {  # the roles whose CPU time a target costs
    LOCAL: (None, None),
    PASSTHROUGH: ("passthrough", None),
    SENDER: ("sender", "receiver"),
    RELAY: ("plane-alpha", "plane-beta"),
}
TARGETS = {"seq_of_local": 0.50, "seq_of_link": 0.90, "sync_p50_x_local": 2.5, "tracking": 0.10}


class Interrupted(Exception):
    """SIGTERM reached the bench."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@dataclass
class Figures:
    seq_mib_s: float
    sync_p50_us: float
    sync_p99_us: float
    clean_p50_us: float
    cpu_s_per_gib: tuple[float | None, ...]
    """CPU seconds per GiB the application wrote sequentially, of the mirror's process
    and of its peer's (None: no such process), user + system, every thread."""


class Role:
    """One serving process of ``_replication_lab.py``: ready on start, stopped by closing
    stdin. In ``node``'s network namespace of ``lab``, or in this one (``lab`` None);
    ``env``: its environment (default: this process's)."""

    def __init__(
        self,
        lab: Lab | None,
        node: str,
        name: str,
        argv: list[str],
        logs: Path,
        profile: Path | None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        command = [sys.executable, str(LAB), *argv]
        if profile is not None:  # collapsed stacks, written when the role exits
            spy = Path(sys.executable).with_name("py-spy")
            output = profile / f"{name}.txt"
            command = [
                str(spy),
                "record",
                "--threads",
                "-f",
                "raw",
                "-o",
                str(output),
                "--",
                *command,
            ]
        self._stderr: IO[bytes] = self.log.open("wb")
        popen: dict[str, Any] = {
            "stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": self._stderr,
            "env": env, "start_new_session": True,
        }  # fmt: skip
        self.proc = (
            subprocess.Popen(command, **popen) if lab is None else lab.run(node, command, **popen)
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        seen = []  # py-spy, when profiling, prints before the role
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.proc.stdout], [], [], left)[0]:
                break
            line = self.proc.stdout.readline()
            if line.strip() == b"ready":
                return
            if not line:
                break
            seen.append(line.decode(errors="replace"))
        self.stop()
        raise RuntimeError(f"{self.name} did not start: {''.join(seen)}{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the role's process so far (every thread)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._stderr.close()


def measure(
    directory: Path, size_mib: int, roles: list[Role], sides: tuple[str | None, ...]
) -> tuple[float, tuple[float | None, ...]]:
    """The application's sequential writes in ``directory`` (after sync(1)): MiB/s,
    and CPU seconds per GiB of ``sides``, the roles serving it (the mirror's, its
    peer's)."""
    os.sync()
    serving = [next((r for r in roles if r.name == name), None) for name in sides]
    cpu_before = [r.cpu_seconds() if r is not None else 0.0 for r in serving]
    result = subprocess.run(
        [sys.executable, str(LAB), "write", str(directory), "--size", str(size_mib * MIB)],
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    for role in roles:
        role.check()
    if result.returncode != 0:
        raise RuntimeError(f"the writer failed in {directory}: {result.stderr.strip()}")
    gib = size_mib * MIB / (1 << 30)
    cpu = tuple(
        (r.cpu_seconds() - before) / gib if r is not None else None
        for r, before in zip(serving, cpu_before, strict=True)
    )
    return size_mib / json.loads(result.stdout)["seq_seconds"], cpu


def measure_turns(targets: dict[str, Path], count: int) -> dict[str, tuple[float, float, float]]:
    """Commits then clean fsyncs in every target in turn (one process, ``count``
    rounds): per target, commit p50 and p99 and clean fsync p50, microseconds."""
    os.sync()
    result = subprocess.run(
        [sys.executable, str(LAB), "turns", *map(str, targets.values()), "--count", str(count)],
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"the commits failed: {result.stderr.strip()}")
    seconds = json.loads(result.stdout)
    figures = {}
    for name, path in targets.items():
        taken = seconds[str(path)]
        cuts = statistics.quantiles(taken["commit"], n=100, method="inclusive")
        figures[name] = (cuts[49] * 1e6, cuts[98] * 1e6, statistics.median(taken["clean"]) * 1e6)
    return figures


def median(figures: list[Figures]) -> Figures:
    def cpu(side: int) -> float | None:
        values = [v for f in figures if (v := f.cpu_s_per_gib[side]) is not None]
        return statistics.median(values) if values else None

    return Figures(
        statistics.median(f.seq_mib_s for f in figures),
        statistics.median(f.sync_p50_us for f in figures),
        statistics.median(f.sync_p99_us for f in figures),
        statistics.median(f.clean_p50_us for f in figures),
        (cpu(0), cpu(1)),
    )


def raw_tcp(lab: Lab, sink: Role, size_mib: int) -> float:
    """MiB/s of raw TCP from alpha to beta's sink."""
    out = lab.exec(
        "alpha",
        [sys.executable, str(LAB), "source", "--peer",
         f"{lab.address('beta', NETWORK)}:{RAW_PORT}", "--size", str(size_mib * MIB)],
        timeout=3600,
    )  # fmt: skip
    sink.check()
    return size_mib / float(json.loads(out.stdout)["seconds"])


def start_roles(
    lab: Lab, work: Path, logs: Path, roles: list[Role], profile: Path | None
) -> dict[str, Path]:
    """Every serving process; the directory the application writes in, per target."""
    alpha, beta = lab.address("alpha", NETWORK), lab.address("beta", NETWORK)
    dirs = {
        name: work / name
        for name in ("local", "passthrough", "sender", "sender-peer", "plane", "plane-peer")
    }
    for path in dirs.values():
        path.mkdir()

    def start(node: str, name: str, *argv: str) -> None:
        roles.append(Role(lab, node, name, list(argv), logs, profile))

    start("beta", "receiver", "receiver", str(dirs["sender-peer"]),
          "--listen", f"{beta}:{SENDER_PORT}")  # fmt: skip
    start("beta", "plane-beta", "plane", str(dirs["plane-peer"]), "--state", str(work / "st-b"),
          "--listen", f"{beta}:{PLANE_PORT}", "--peer", f"{alpha}:{PLANE_PORT}")  # fmt: skip
    start("beta", "sink", "sink", "--listen", f"{beta}:{RAW_PORT}")
    start("alpha", "passthrough", "mirror", str(dirs["passthrough"]))
    start("alpha", "sender", "mirror", str(dirs["sender"]), "--peer", f"{beta}:{SENDER_PORT}")
    start("alpha", "plane-alpha", "plane", str(dirs["plane"]), "--state", str(work / "st-a"),
          "--listen", f"{alpha}:{PLANE_PORT}", "--peer", f"{beta}:{PLANE_PORT}",
          "--serve")  # fmt: skip
    return {
        LOCAL: dirs["local"],
        PASSTHROUGH: dirs["passthrough"],
        SENDER: dirs["sender"],
        RELAY: dirs["plane"],
    }


def stop_roles(roles: list[Role], work: Path) -> None:
    """Stop the application-side mirrors first (their sessions end), then the peers;
    detach any mount a killed process left behind."""
    for role in reversed(roles):
        with contextlib.suppress(Exception):
            role.stop()
    for path in work.iterdir():
        # a killed process's mirror stays, dead: ismount (a stat) does not see it
        if os.path.ismount(path) or mirror_mounts([str(path)]):
            subprocess.run(["umount", "-l", str(path)], check=False)


def run_rounds(
    targets: dict[str, Path], args: argparse.Namespace, roles: list[Role]
) -> dict[str, Figures]:
    rounds: dict[str, list[Figures]] = {name: [] for name in targets}
    for number in range(args.rounds):
        commits = measure_turns(targets, args.syncs)
        for name, directory in targets.items():  # interleaved: drift hits every target
            seq, cpu = measure(directory, args.size_mib, roles, SIDES[name])
            figures = Figures(seq, *commits[name], cpu)
            rounds[name].append(figures)
            print(
                f"  round {number + 1} {name}: {figures.seq_mib_s:.0f} MiB/s, "
                f"sync p50 {figures.sync_p50_us:.0f} us p99 {figures.sync_p99_us:.0f} us, "
                f"clean fsync p50 {figures.clean_p50_us:.0f} us",
                flush=True,
            )
    return {name: median(figures) for name, figures in rounds.items()}


def shape(lab: Lab, rate_mbit: int) -> None:
    """A token bucket on alpha's veth (this kernel may lack netem; tbf is common)."""
    subprocess.run(
        ["tc", "-n", lab.namespace("alpha"), "qdisc", "replace", "dev",
         lab.interface("alpha", NETWORK), "root", "tbf", "rate", f"{rate_mbit}mbit",
         "burst", "512kb", "latency", "20ms"],
        check=True, capture_output=True,
    )  # fmt: skip


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(
    unshaped: dict[str, Figures],
    shaped: dict[str, Figures] | None,
    raw: dict[str, float],
    args: argparse.Namespace,
) -> None:
    local, passthrough = unshaped[LOCAL], unshaped[PASSTHROUGH]
    print()
    print(
        f"Sequential: {args.size_mib} x 1 MiB write + fsync; commit: {args.syncs} x 4 KiB "
        f"pwrite + fsync, every target in turn; median of {args.rounds} round(s); "
        "ack level written."
    )
    print()
    print(
        "| target | seq MiB/s | vs local | vs passthrough | commit p50 us | p99 us "
        "| p50 vs local | p50 vs passthrough |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, f in unshaped.items():
        print(
            f"| {name} | {f.seq_mib_s:.0f} | {f.seq_mib_s / local.seq_mib_s:.2f} "
            f"| {f.seq_mib_s / passthrough.seq_mib_s:.2f} | {f.sync_p50_us:.0f} "
            f"| {f.sync_p99_us:.0f} | {f.sync_p50_us / local.sync_p50_us:.2f}x "
            f"| {f.sync_p50_us / passthrough.sync_p50_us:.2f}x |"
        )
    print()
    print(
        f"Clean fsync: {args.syncs} x fsync of a file with nothing written since, every "
        "target in turn (p50); CPU seconds per GiB the application wrote sequentially, "
        "of the mirror's process and of its peer's (user + system, every thread):"
    )
    print()
    print("| target | clean fsync p50 us | vs local | CPU s/GiB mirror side | peer side |")
    print("|---|---|---|---|---|")
    for name, f in unshaped.items():
        sides = " | ".join("-" if v is None else f"{v:.2f}" for v in f.cpu_s_per_gib)
        print(
            f"| {name} | {f.clean_p50_us:.0f} | {f.clean_p50_us / local.clean_p50_us:.2f}x "
            f"| {sides} |"
        )
    if shaped is None:
        report_targets(unshaped, None, args)
        return
    link_mib_s = args.rate_mbit * 1e6 / 8 / MIB
    print()
    print(
        f"Link shaped to {args.rate_mbit} Mbit/s ({link_mib_s:.1f} MiB/s) by tbf on alpha's veth:"
    )
    print()
    print("| target | seq MiB/s | of link rate | commit p50 us | p99 us |")
    print("|---|---|---|---|---|")
    print(f"| raw TCP | {raw['shaped']:.0f} | {raw['shaped'] / link_mib_s:.0%} | - | - |")
    for name, f in shaped.items():
        print(
            f"| {name} | {f.seq_mib_s:.0f} | {f.seq_mib_s / link_mib_s:.0%} "
            f"| {f.sync_p50_us:.0f} | {f.sync_p99_us:.0f} |"
        )
    print(f"\nraw TCP alpha -> beta unshaped: {raw['unshaped']:.0f} MiB/s")
    report_targets(unshaped, shaped[RELAY].seq_mib_s / link_mib_s, args)


def report_targets(
    unshaped: dict[str, Figures], of_link: float | None, args: argparse.Namespace
) -> None:
    """The issue's targets on the daemon's path (relay); ``of_link``: its share of the
    shaped link (None: not measured)."""
    local, relay, sender = unshaped[LOCAL], unshaped[RELAY], unshaped[SENDER]
    tracking = 1 - relay.seq_mib_s / sender.seq_mib_s
    print()
    print("Targets (issues 4 and 10), the daemon's path (relay):")
    of_local = relay.seq_mib_s / local.seq_mib_s
    x_local = relay.sync_p50_us / local.sync_p50_us
    clean = relay.clean_p50_us / local.clean_p50_us
    print(f"- replicated seq >= 50% of local: {of_local:.0%} ({met(of_local >= 0.5)})")
    if of_link is not None:
        print(f"- replicated seq >= 90% of the shaped link: {of_link:.0%} ({met(of_link >= 0.9)})")
    print(
        f"- commit p50 <= 2.5 x local: {x_local:.2f}x ({met(x_local <= 2.5)}); "
        f"p99 {relay.sync_p99_us / local.sync_p99_us:.2f}x local"
    )
    print(f"- clean fsync p50 <= 1.5 x local: {clean:.2f}x ({met(clean <= 1.5)})")
    print(
        f"- tracking <= 10% of replicated throughput: {tracking:.1%} unshaped "
        f"({met(tracking <= 0.1)}); commit p50 "
        f"{relay.sync_p50_us - sender.sync_p50_us:+.0f} us with the tracker"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="sequential file size")
    parser.add_argument("--syncs", type=int, default=2000, help="4 KiB write+fsync count")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--rate-mbit", type=int, default=1000, help="shaped link rate")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="on the disk to test")
    parser.add_argument(
        "--profile", type=Path, help="run every role under py-spy; collapsed stacks here"
    )
    parser.add_argument("--keep-logs", type=Path, help="copy the roles' stderr logs here")
    parser.add_argument(
        "--unshaped-only", action="store_true", help="skip the runs over the shaped link"
    )
    args = parser.parse_args()
    ensure("replication.py", [*NETNS, *FUSE, TC], root="network namespaces, FUSE")
    require("replication.py", netns_unavailable_reason() or fuse_device_reason())
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"load average before: {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="replication-bench-", dir=args.dir))
    logs = work / "logs"
    logs.mkdir()
    roles: list[Role] = []
    try:
        with Lab(networks=(NETWORK,), prefix="frepl") as lab:
            try:
                targets = start_roles(lab, work, logs, roles, args.profile)
                sink = next(role for role in roles if role.name == "sink")
                print("unshaped link:", flush=True)
                raw = {"unshaped": raw_tcp(lab, sink, args.size_mib)}
                unshaped = run_rounds(targets, args, roles)
                shaped = None
                if not args.unshaped_only:
                    shape(lab, args.rate_mbit)
                    print(f"link shaped to {args.rate_mbit} Mbit/s:", flush=True)
                    raw["shaped"] = raw_tcp(lab, sink, args.size_mib)
                    replicated = {name: targets[name] for name in (SENDER, RELAY)}
                    shaped = run_rounds(replicated, args, roles)
            finally:
                stop_roles(roles, work)
                if args.keep_logs:
                    shutil.copytree(logs, args.keep_logs, dirs_exist_ok=True)
        report(unshaped, shaped, raw, args)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
