"""Resync bench: our incremental resync vs ``rsync -a`` to an rsync daemon, same change, same run.

A tree of ``--files`` files (default 100 000, about 2 GiB: sizes 4..40 KiB) is
built and copied twice (``cp -a``: one copy per contender, identical to the
source). Then 1% of the files are changed in place (4 KiB-aligned writes inside
the file) through a ``Tracker`` (zone 4 KiB) as while the peer was away, and:

(a) our resync: ``ResyncSource`` to a ``ReplicationReceiver`` + ``ResyncTarget``
    in a child process over loopback TCP: bytes sent / bytes changed, seconds;
(b) ``rsync -a source/ rsync://127.0.0.1:PORT/t/`` to an rsync daemon (Debian
    rsync, installed with apt-get if missing) over loopback: seconds.

Prints the figures and the ratio ours/rsync, checks both copies equal the source
(``diff -r``), removes everything. Loopback for both, in the machine's namespace.

    .venv/bin/python bench/resync.py --files 2000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

import anyio

from failover.errors import TransportError
from failover.replication.apply import Applier
from failover.replication.channel import (
    ChannelSettings,
    ReplicationReceiver,
    ReplicationSender,
    SessionIdentity,
)
from failover.replication.ops import Create, Mkdir, Write
from failover.replication.resync import ResyncPlan, ResyncRequest, ResyncSource, ResyncTarget
from failover.replication.tracking import ChangeSet, Tracker
from failover.testing.transport_contract import free_port
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import TcpReplicationTransport

ROOT = "data"
ZONE = 4096
KEY = b"bench-key-" * 4
PRIMARY = SessionIdentity("bench", KEY, "alpha", "beta", "gen-2")
SECONDARY = SessionIdentity("bench", KEY, "beta", "alpha", "gen-1")


def build_tree(top: Path, files: int, rng: random.Random) -> int:
    """``files`` files of 4..40 KiB in 100 directories; returns the total size."""
    total = 0
    with Applier({ROOT: top}) as applier:
        for d in range(100):
            applier.apply(Mkdir(ROOT, f"d{d:02}".encode(), 0o755))
        for i in range(files):
            path = f"d{i % 100:02}/f{i}".encode()
            size = rng.randrange(4096, 40960)
            applier.apply(Create(ROOT, path, 0o644))
            applier.apply(Write(ROOT, path, 0, rng.randbytes(size)))
            total += size
    return total


def change_tree(top: Path, state: Path, files: int, rng: random.Random) -> tuple[ChangeSet, int]:
    """Change 1% of the files in place through a tracker; (its changes, bytes written)."""
    written = 0
    with Tracker(state, zone_size=ZONE) as tracker, Applier({ROOT: top}) as applier:
        tracker.epoch_start("gen-1")
        for i in rng.sample(range(files), max(1, files // 100)):
            path = f"d{i % 100:02}/f{i}".encode()
            size = (top / os.fsdecode(path)).stat().st_size
            zones = size // ZONE
            first = rng.randrange(zones)
            count = rng.randrange(1, zones - first + 1)
            op = Write(ROOT, path, first * ZONE, rng.randbytes(count * ZONE))
            tracker.before(op)
            applier.apply(op)
            written += count * ZONE
        return tracker.changes(), written


# --- (a) ours ----------------------------------------------------------------------------------


def serve_target(target: Path, port: int) -> None:
    """The child: accept one session, apply until the source closes it after END."""

    async def main() -> None:
        transport = TcpReplicationTransport()
        endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=port)
        async with transport.listen(endpoint) as listener:
            print("ready", flush=True)
            stream = await listener.accept()
        with Applier({ROOT: target}) as applier:
            resync = ResyncTarget(applier, {ROOT: target})
            receiver = ReplicationReceiver(SECONDARY, resync, on_item=resync.on_item)
            request = ResyncRequest("gen-1", False, ChangeSet(ZONE)).encode()
            await receiver.handshake(stream, request)
            with contextlib.suppress(TransportError):
                await receiver.run()  # until the source closes the session after END
            if not resync.consistent:
                sys.exit("the resync did not end")

    anyio.run(main)


def ours(source: Path, target: Path, changes: ChangeSet) -> tuple[float, int]:
    port = free_port("tcp")
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-target", str(target), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"

        async def main() -> tuple[float, int]:
            transport = TcpReplicationTransport()
            endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=port)
            stream = await transport.connect(endpoint, timeout=10)
            sender = ReplicationSender(PRIMARY, ChannelSettings(timeout=30))
            peer = await sender.handshake(stream)
            plan = ResyncPlan.make(changes, ResyncRequest.decode(peer.request))
            lock = threading.Lock()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender.run)
                started = time.perf_counter()
                source_run = ResyncSource(sender, {ROOT: source}, lock, plan)
                ok = await anyio.to_thread.run_sync(source_run.run)
                seconds = time.perf_counter() - started
                assert ok, source_run.status().error
                sent = sender.status().bytes_sent
                tg.cancel_scope.cancel()
            return seconds, sent

        return anyio.run(main)
    finally:
        child.wait(30)


# --- (b) rsync ---------------------------------------------------------------------------------


def ensure_rsync() -> str:
    found = shutil.which("rsync")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "rsync"], check=True, capture_output=True)
        found = shutil.which("rsync")
    assert found is not None
    return found


def rsync(source: Path, target: Path, work: Path) -> float:
    binary = ensure_rsync()
    port = free_port("tcp")
    config = work / "rsyncd.conf"
    config.write_text(
        f"port = {port}\naddress = 127.0.0.1\nuse chroot = no\npid file = {work}/rsyncd.pid\n"
        f"[t]\npath = {target}\nread only = false\nuid = 0\ngid = 0\n"
    )
    daemon = subprocess.Popen([binary, "--daemon", "--no-detach", f"--config={config}"])
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(
            [binary, f"rsync://127.0.0.1:{port}/"], check=False, capture_output=True
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("rsync daemon did not start")
        started = time.perf_counter()
        subprocess.run([binary, "-a", f"{source}/", f"rsync://127.0.0.1:{port}/t/"], check=True)
        return time.perf_counter() - started
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve-target", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_target is not None:
        serve_target(args.serve_target, args.port)
        return
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="resync-bench-"))
    try:
        source, target_ours, target_rsync = work / "source", work / "ours", work / "rsync"
        source.mkdir()
        total = build_tree(source, args.files, rng)
        for copy in (target_ours, target_rsync):
            subprocess.run(["cp", "-a", str(source), str(copy)], check=True)
        changes, written = change_tree(source, work / "state", args.files, rng)
        subprocess.run(["sync"], check=True)
        print(
            f"tree: {args.files} files, {total / 2**20:.0f} MiB; changed in place: "
            f"{len(changes.files)} files, {written / 2**20:.2f} MiB"
        )
        seconds, sent = ours(source, target_ours, changes)
        print(
            f"ours : {seconds:.2f} s, {sent / 2**20:.2f} MiB sent, "
            f"bytes sent / bytes changed = {sent / written:.3f}"
        )
        rsync_seconds = rsync(source, target_rsync, work)
        print(f"rsync: {rsync_seconds:.2f} s (rsync -a to an rsync daemon over loopback)")
        print(f"time ours / rsync = {seconds / rsync_seconds:.3f}")
        for copy in (target_ours, target_rsync):
            subprocess.run(["diff", "-r", "-q", str(source), str(copy)], check=True)
        print("both copies identical to the source (diff -r)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
