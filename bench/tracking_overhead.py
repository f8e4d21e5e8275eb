"""The write-path cost of change tracking, against the same writes without it.

    .venv/bin/python bench/tracking_overhead.py [--dir DIR] [--mib 256] [--syncs 2000]
        [--rounds 3] [--replicated-mibs R]

Two workloads on a file in DIR (default: a temporary directory under /var/tmp,
so on a real disk, not tmpfs), each run with and without ``Tracker.before`` in
front of every ``pwrite`` (the state directory beside the file, on the same
disk: the log's fdatasync competes with the data, the worst case):

- sequential: ``--mib`` MiB in 1 MiB ``pwrite`` calls, one fsync at the end
  (MiB/s). Tracked twice: with the default tracker (64 KiB zones, 4 MiB
  extents, 256 hot extents, 8 heated ahead: one log fdatasync per 36 MiB) and
  with a hot set of 16 extents (4 heated ahead; the file is larger than the hot
  set: checkpoints cool extents as it goes, the steady state of a large write).
- sync: ``--syncs`` times a 4 KiB ``pwrite`` appended to the file then
  ``fdatasync`` (a commit log), tracked with the mirror's calls (``before``,
  the write, the fdatasync, ``sync``). Writes/s, p50 and p99 latency.

Rounds alternate untracked and tracked runs; the median round is shown. The
ratio is tracked/untracked throughput, the overhead 1 - ratio. The issue's
target is tracking <= 10% of *replicated* write throughput; the replicated
path does not exist yet, so the stricter comparison with the local disk is
printed, and the added time per MiB, which with ``--replicated-mibs R`` (the
replicated throughput, once measured) gives the share of a replicated write.
Also prints the cost of one ``before`` of a write to a hot extent (no I/O).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from failover.replication.ops import Fsync, Write
from failover.replication.tracking import DEFAULT_HOT_EXTENTS, Tracker

MIB = 1024 * 1024
TARGET = 0.10


def _sequential(path: Path, mib: int, tracker: Tracker | None) -> float:
    """Seconds to write ``mib`` MiB in 1 MiB pwrites and fsync once."""
    block = os.urandom(MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        for i in range(mib):
            if tracker is not None:
                tracker.before(Write("bench", b"seq", i * MIB, block))
            os.pwrite(fd, block, i * MIB)
        os.fsync(fd)
        return time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()


def _syncs(path: Path, count: int, tracker: Tracker | None) -> list[float]:
    """Latency (s) of each 4 KiB pwrite + fdatasync appended to a file."""
    block = os.urandom(4096)
    latencies = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for i in range(count):
            start = time.perf_counter()
            if tracker is not None:
                tracker.before(Write("bench", b"log", i * 4096, block))
            os.pwrite(fd, block, i * 4096)
            os.fdatasync(fd)
            if tracker is not None:
                tracker.sync(Fsync("bench", b"log", True))
            latencies.append(time.perf_counter() - start)
        return latencies
    finally:
        os.close(fd)
        path.unlink()


def _tracked(state: Path, hot_extents: int = DEFAULT_HOT_EXTENTS) -> Tracker:
    shutil.rmtree(state, ignore_errors=True)
    tracker = Tracker(state, hot_extents=hot_extents)
    tracker.epoch_start("bench")
    return tracker


def _hot_before_cost(state: Path, calls: int) -> float:
    """Microseconds per ``before`` of a 4 KiB write to an extent already hot."""
    tracker = _tracked(state)
    block = bytes(4096)
    ops = [Write("bench", b"hot", (i % 1024) * 4096, block) for i in range(calls)]
    tracker.before(ops[0])
    start = time.perf_counter()
    for op in ops:
        tracker.before(op)
    elapsed = time.perf_counter() - start
    tracker.close()
    return elapsed / calls * 1e6


def _medians(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Each figure's median over the rounds."""
    return tuple(statistics.median(column) for column in zip(*runs, strict=True))


def _ratios(runs: list[tuple[float, ...]], tracked: int, untracked: int = 0) -> str:
    """Each round's tracked/untracked ratio, to show the noise."""
    return " ".join(f"{r[tracked] / r[untracked]:.2f}" for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a real disk)")
    parser.add_argument("--mib", type=int, default=256, help="size of the sequential file")
    parser.add_argument("--syncs", type=int, default=2000, help="4 KiB write+fdatasync count")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicated-mibs", type=float, default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fo-track-", dir=args.dir or "/var/tmp"))
    data, state = workdir / "data", workdir / "state"
    try:
        print(f"directory {workdir} (data and tracking state on the same filesystem)")
        print(f"load average before: {os.getloadavg()}")
        seq_runs: list[tuple[float, ...]] = []
        sync_runs: list[tuple[float, ...]] = []
        stats: dict[str, tuple[int, int]] = {}
        _sequential(data, args.mib, None)  # warm-up, not counted
        for round_ in range(args.rounds):
            # Odd rounds run the tracked variants first: no order bias in the medians.
            order = [None, DEFAULT_HOT_EXTENTS, 16]
            seconds: dict[int | None, float] = {}
            for hot in order if round_ % 2 == 0 else order[::-1]:
                tracker = None if hot is None else _tracked(state, hot)
                seconds[hot] = _sequential(data, args.mib, tracker)
                if tracker is not None:
                    label = "default" if hot == DEFAULT_HOT_EXTENTS else "hot=16"
                    stats[label] = (tracker.extent_syncs, tracker.checkpoints)
                    tracker.close()
            seq_runs.append(tuple(args.mib / seconds[hot] for hot in order))
            tracker = _tracked(state)
            if round_ % 2 == 0:
                plain, tracked = _syncs(data, args.syncs, None), _syncs(data, args.syncs, tracker)
            else:
                tracked, plain = _syncs(data, args.syncs, tracker), _syncs(data, args.syncs, None)
            stats["sync"] = (tracker.extent_syncs, tracker.checkpoints)
            tracker.close()
            sync_runs.append(_sync_figures(plain) + _sync_figures(tracked))
        hot_us = _hot_before_cost(state, 100_000)
        print(f"load average after:  {os.getloadavg()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    base, default, small = _medians(seq_runs)
    print(f"\nsequential 1 MiB writes, {args.mib} MiB + fsync, median of {args.rounds} rounds")
    print(f"  local, untracked           {base:8.0f} MiB/s")
    for column, label, value in ((1, "default", default), (2, "hot=16", small)):
        records, checkpoints = stats[label]
        print(
            f"  tracked ({label:7s})        {value:8.0f} MiB/s  ratio {value / base:.3f}  "
            f"overhead {_pct(1 - value / base)}  ({records} log fdatasyncs, "
            f"{checkpoints} checkpoints)"
        )
        print(f"      ratio per round: {_ratios(seq_runs, column)}")
        _replicated_share(args.replicated_mibs, 1 / value - 1 / base)
    plain_rate, plain_p50, plain_p99, rate, p50, p99 = _medians(sync_runs)
    print(f"\n4 KiB write + fdatasync, {args.syncs} appends, median of {args.rounds} rounds")
    print(f"  local, untracked   {plain_rate:8.0f}/s  p50 {plain_p50:7.1f} us  ", end="")
    print(f"p99 {plain_p99:7.1f} us")
    records, checkpoints = stats["sync"]
    print(
        f"  tracked            {rate:8.0f}/s  p50 {p50:7.1f} us  p99 {p99:7.1f} us  "
        f"ratio {rate / plain_rate:.3f}  overhead {_pct(1 - rate / plain_rate)}  "
        f"({records} log fdatasyncs)"
    )
    print(f"      ratio per round: {_ratios(sync_runs, 3)}")
    _replicated_share(args.replicated_mibs, (1 / rate - 1 / plain_rate) * 256)
    print(f"\none before() of a write to a hot extent: {hot_us:.2f} us (no I/O)")
    print(f"target: overhead <= {_pct(TARGET)} of replicated throughput (local is stricter)")
    return 0


def _sync_figures(latencies: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / sum(latencies), q[49] * 1e6, q[98] * 1e6


def _pct(fraction: float) -> str:
    return f"{fraction * 100:5.1f}%"


def _replicated_share(replicated_mibs: float | None, added_s_per_mib: float) -> None:
    added_us = added_s_per_mib * 1e6
    if replicated_mibs is None:
        print(f"      added {added_us:.0f} us per MiB (pass --replicated-mibs for its share)")
    else:
        share = added_s_per_mib * replicated_mibs
        print(f"      added {added_us:.0f} us per MiB = {_pct(share)} of {replicated_mibs} MiB/s")


if __name__ == "__main__":
    sys.exit(main())
