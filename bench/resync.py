"""Resync bench: our incremental resync vs ``rsync -a`` to an rsync daemon, same change, same run.

A tree of ``--files`` files (default 100 000, about 2 GiB: sizes 4..40 KiB) is
built and copied twice (``cp -a``: one copy per contender, identical to the
source). Then 1% of the files are changed in place (4 KiB-aligned writes inside
the file) through a ``Tracker`` (zone 4 KiB) as while the peer was away, and:

(a) our resync: ``ResyncSource`` to a ``ReplicationReceiver`` + ``ResyncTarget``
    in a child process over loopback TCP: bytes sent / bytes changed, seconds;
(b) ``rsync -a source/ rsync://PEER:PORT/t/`` to an rsync daemon (Debian
    rsync, installed with apt-get if missing): seconds.

As root, the receiving side of both (our receiver, the rsync daemon) runs in
the "beta" network namespace of a ``Lab`` and this process in "alpha"'s, so
the bytes cross a veth pair and a bridge; ``--loopback`` (or not root) keeps
both on loopback.

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
from typing import Any

import anyio
from pyroute2.netns import setns

from failover.errors import TransportError
from failover.lab import Lab, netns_unavailable_reason
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
            # In real life the change comes well after the copies were made; a small
            # tree is built and changed within one second, and rsync's quick check
            # (same size, same mtime) would then skip the changed files.
            stat = (top / os.fsdecode(path)).stat()
            os.utime(top / os.fsdecode(path), ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
        return tracker.changes(), written


# --- (a) ours ----------------------------------------------------------------------------------


class Peer:
    """Where the receiving side runs: loopback, or (as root) the "beta" namespace of a
    ``Lab``, with this process moved into "alpha"'s: the bytes then cross a veth pair
    and a bridge, as between two servers."""

    def __init__(self, use_netns: bool) -> None:
        self.lab: Lab | None = None
        self.address = "127.0.0.1"
        if use_netns:
            self.lab = Lab(networks=("lan",), prefix="fobench").open()
            self.address = self.lab.address("beta", "lan")
            self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
            setns(self.lab.namespace_path("alpha"))  # this process: the source's side

    @property
    def where(self) -> str:
        return "a peer network namespace (veth + bridge)" if self.lab else "loopback"

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        if self.lab is None:
            return subprocess.Popen(argv, **kw)
        return self.lab.run("beta", argv, start_new_session=False, **kw)

    def close(self) -> None:
        if self.lab is not None:
            setns(self._home)
            os.close(self._home)
            self.lab.close()


def serve_target(target: Path, port: int, address: str) -> None:
    """The child: accept one session, apply until the source closes it after END."""

    async def main() -> None:
        transport = TcpReplicationTransport()
        endpoint = TcpEndpoint(address=IPv4Address(address), port=port)
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


def ours(source: Path, target: Path, changes: ChangeSet, peer: Peer) -> tuple[float, int]:
    port = free_port("tcp")
    argv = [sys.executable, __file__, "--serve-target", str(target), "--port", str(port)]
    child = peer.popen([*argv, "--address", peer.address], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"

        async def main() -> tuple[float, int]:
            transport = TcpReplicationTransport()
            endpoint = TcpEndpoint(address=IPv4Address(peer.address), port=port)
            stream = await transport.connect(endpoint, timeout=10)
            sender = ReplicationSender(PRIMARY, ChannelSettings(timeout=30))
            greeted = await sender.handshake(stream)
            plan = ResyncPlan.make(changes, ResyncRequest.decode(greeted.request))
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


def rsync(source: Path, target: Path, work: Path, peer: Peer) -> float:
    binary = ensure_rsync()
    port = free_port("tcp")
    config = work / "rsyncd.conf"
    config.write_text(
        f"port = {port}\naddress = {peer.address}\nuse chroot = no\n"
        f"pid file = {work}/rsyncd.pid\n"
        f"[t]\npath = {target}\nread only = false\nuid = 0\ngid = 0\n"
    )
    daemon = peer.popen([binary, "--daemon", "--no-detach", f"--config={config}"])
    url = f"rsync://{peer.address}:{port}"
    try:
        deadline = time.monotonic() + 10
        while subprocess.run([binary, f"{url}/"], check=False, capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("rsync daemon did not start")
        started = time.perf_counter()
        subprocess.run([binary, "-a", f"{source}/", f"{url}/t/"], check=True)
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
    parser.add_argument("--address", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument(
        "--loopback", action="store_true", help="no network namespaces (the default when not root)"
    )
    args = parser.parse_args()
    if args.serve_target is not None:
        serve_target(args.serve_target, args.port, args.address)
        return
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="resync-bench-"))
    peer = Peer(use_netns=not args.loopback and netns_unavailable_reason() is None)
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
        print(f"peer: {peer.where}")
        seconds, sent = ours(source, target_ours, changes, peer)
        print(
            f"ours : {seconds:.2f} s, {sent / 2**20:.2f} MiB sent, "
            f"bytes sent / bytes changed = {sent / written:.3f}"
        )
        rsync_seconds = rsync(source, target_rsync, work, peer)
        print(f"rsync: {rsync_seconds:.2f} s (rsync -a to an rsync daemon in {peer.where})")
        print(f"time ours / rsync = {seconds / rsync_seconds:.3f}")
        for copy in (target_ours, target_rsync):
            subprocess.run(["diff", "-r", "-q", str(source), str(copy)], check=True)
        print("both copies identical to the source (diff -r)")
    finally:
        peer.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
