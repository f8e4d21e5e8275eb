"""Resync bench: our resync vs ``rsync -a`` to an rsync daemon, same change, same run.

Two scenarios (``--scenario``):

``crash`` (the default; issue 10's "resync after a primary crash"): a database-like
tree (``--db-mib``, default 160: WAL segments of 16 MiB, the current one half
written, two old ones; data files of 1..8 MiB) is built and copied (``cp -a``) to
the peer. A child process, the *primary*, writes the activity window through a
``Tracker`` (default settings, in sync): ``--window-mib`` (2) of 8 KiB WAL records
appended to the current segment with an fdatasync of the log every 4, an 8 KiB
page at a random place of a data file every 32 records, and an old segment
recycled by rename halfway (as PostgreSQL's checkpoints do). Each op reaches the
peer's copy ``--lag`` (8) ops later (its acknowledgement), so the last ones are on
the primary only (``--history-mib`` first writes that much of acknowledged pages
at random places of the data files: the tracker's in-sync map keeps them too,
until the next resync). The child is killed with SIGKILL; the peer serves (its
tracker starts an epoch; it writes nothing); the crashed node asks for its resync
with the suspect set its tracker recovers. Three copies of the crashed tree are brought
back to the survivor's:

(a) ours, checked: the request carries the digests of the suspect zones; the
    source sends only what differs (``resync_check``);
(b) ours, blind: the same request without digests (the resync before issue 10);
(c) ``rsync -a --checksum`` from the survivor to an rsync daemon on a copy of the
    crashed tree.

It prints the bytes written in the window, the bytes each exchanged (ours: the
resync stream the source sent plus the request; rsync: sent plus received) and
their ratio to the window, the seconds, and checks that every copy equals the
survivor's (``diff -r``).

``inplace``: a tree of ``--files`` files (default 100 000, about 2 GiB: sizes
4..40 KiB), copied twice; 1% of the files changed in place (4 KiB-aligned
writes) through a ``Tracker`` (zone 4 KiB) while the peer was away; ours (bytes
sent / bytes changed, seconds) against rsync (seconds).

Our receiver (``ReplicationReceiver`` + ``ResyncTarget``) runs in a child process
over TCP. As root, the receiving side of both (ours, the rsync daemon) runs in
the "beta" network namespace of a ``Lab`` and this process in "alpha"'s, so the
bytes cross a veth pair and a bridge; ``--loopback`` (or not root) keeps both on
loopback. rsync is Debian's: as root it is installed (after ``apt-get update``)
if missing; otherwise the bench says so in one line and exits with status 2.

    .venv/bin/python bench/resync.py                         # the crash scenario
    .venv/bin/python bench/resync.py --scenario inplace --files 2000
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
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import anyio
from _needs import Need, ensure  # the same directory
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
from failover.replication.ops import Create, Mkdir, Op, Rename, Write
from failover.replication.resync import (
    ResyncPlan,
    ResyncRequest,
    ResyncSource,
    ResyncTarget,
    narrow,
)
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


def serve_target(
    target: Path, port: int, address: str, suspect: ChangeSet, *, checked: bool
) -> None:
    """The child: accept one session (asking with ``suspect``, with the digests of what it
    holds there if ``checked``), apply until the source closes it after END."""

    async def main() -> None:
        transport = TcpReplicationTransport()
        endpoint = TcpEndpoint(address=IPv4Address(address), port=port)
        async with transport.listen(endpoint) as listener:
            print("ready", flush=True)
            stream = await listener.accept()
        with Applier({ROOT: target}) as applier:
            resync = ResyncTarget(applier, {ROOT: target})
            receiver = ReplicationReceiver(SECONDARY, resync, on_item=resync.on_item)
            if checked:
                request = resync.request("gen-1", suspect)
            else:
                request = ResyncRequest("gen-1", False, suspect).encode()
            await receiver.handshake(stream, request)
            with contextlib.suppress(TransportError):
                await receiver.run()  # until the source closes the session after END
            if not resync.consistent:
                sys.exit("the resync did not end")

    anyio.run(main)


def ours(
    source: Path,
    target: Path,
    changes: ChangeSet,
    peer: Peer,
    suspect: Path | None = None,
    *,
    checked: bool = True,
) -> tuple[float, int, int]:
    """One resync of ``target`` from ``source`` whose own changes are ``changes``; the
    target asks with the suspect set in the file ``suspect`` (none if None):
    (seconds, bytes the source sent, bytes of the target's request)."""
    port = free_port("tcp")
    argv = [sys.executable, __file__, "--serve-target", str(target), "--port", str(port)]
    if suspect is not None:
        argv += ["--suspect", str(suspect)] + ([] if checked else ["--blind"])
    child = peer.popen([*argv, "--address", peer.address], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"

        async def main() -> tuple[float, int, int]:
            transport = TcpReplicationTransport()
            endpoint = TcpEndpoint(address=IPv4Address(peer.address), port=port)
            stream = await transport.connect(endpoint, timeout=10)
            sender = ReplicationSender(PRIMARY, ChannelSettings(timeout=30))
            started = time.perf_counter()
            greeted = await sender.handshake(stream)
            request = ResyncRequest.decode(greeted.request)
            request = await anyio.to_thread.run_sync(narrow, request, {ROOT: source})
            plan = ResyncPlan.make(changes, request)
            lock = threading.Lock()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender.run)
                source_run = ResyncSource(sender, {ROOT: source}, lock, plan)
                ok = await anyio.to_thread.run_sync(source_run.run)
                seconds = time.perf_counter() - started
                assert ok, source_run.status().error
                sent = sender.status().bytes_sent
                tg.cancel_scope.cancel()
            return seconds, sent, len(greeted.request)

        return anyio.run(main)
    finally:
        child.wait(30)
        if child.returncode:
            sys.exit(f"our resync target failed (exit status {child.returncode})")


# --- (b) rsync ---------------------------------------------------------------------------------


def ensure_rsync() -> str:
    """rsync's path: ``_needs.ensure`` installs it as root, or exits 2 saying it is missing."""
    ensure("resync.py", [Need("rsync", command="rsync")])
    found = shutil.which("rsync")
    assert found is not None  # ensure returned: it is on PATH
    return found


def rsync(
    binary: str, source: Path, target: Path, work: Path, peer: Peer, *options: str
) -> tuple[float, int]:
    """``rsync -a [options] source/`` to a daemon serving ``target``: (seconds, bytes sent
    + received)."""
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
        done = subprocess.run(
            [binary, "-a", "--stats", *options, f"{source}/", f"{url}/t/"],
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        sent = _stat(done.stdout, "Total bytes sent")
        return seconds, sent + _stat(done.stdout, "Total bytes received")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)


def _stat(output: str, name: str) -> int:
    for line in output.splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1].split()[0].replace(",", ""))
    raise RuntimeError(f"rsync --stats printed no {name!r}")


# --- the crash scenario -------------------------------------------------------------------------

SEGMENT = 16 * 2**20
PAGE = 8192


def build_database(top: Path, mib: int, rng: random.Random) -> None:
    """A database-like tree of about ``mib`` MiB: WAL segments (the current one half
    written, two old full ones) and data files of 1..8 MiB."""
    wal, base = top / "pg_wal", top / "base"
    wal.mkdir(parents=True)
    base.mkdir()
    (wal / "seg3").write_bytes(rng.randbytes(SEGMENT // 2) + bytes(SEGMENT // 2))
    for old in ("seg1", "seg2"):
        (wal / old).write_bytes(rng.randbytes(SEGMENT))
    left, i = max(8, mib - 48) * 2**20, 0
    while left > 0:
        size = min(left, rng.randrange(1, 9) * 2**20)
        (base / f"rel{i}").write_bytes(rng.randbytes(size))
        left -= size
        i += 1


def window_ops(top: Path, window: int, rng: random.Random) -> Iterator[Op]:
    """The activity window (module docstring): ``window`` bytes of WAL records."""
    rels = sorted(p.relative_to(top) for p in (top / "base").iterdir())
    records = window // PAGE
    for i in range(records):
        yield Write(ROOT, b"pg_wal/seg3", SEGMENT // 2 + i * PAGE, rng.randbytes(PAGE))
        if i % 32 == 31:
            rel = rng.choice(rels)
            offset = rng.randrange((top / rel).stat().st_size // PAGE) * PAGE
            yield Write(ROOT, os.fsencode(rel), offset, rng.randbytes(PAGE))
        if i == records // 2:
            yield Rename(ROOT, b"pg_wal/seg1", b"pg_wal/seg4", 0)


def history_ops(top: Path, history: int, rng: random.Random) -> Iterator[Op]:
    """Acknowledged activity since the pair was protected, before the window: 8 KiB
    pages at random places of the data files, ``history`` bytes."""
    rels = sorted(p.relative_to(top) for p in (top / "base").iterdir())
    for _ in range(history // PAGE):
        rel = rng.choice(rels)
        offset = rng.randrange((top / rel).stat().st_size // PAGE) * PAGE
        yield Write(ROOT, os.fsencode(rel), offset, rng.randbytes(PAGE))


def primary(work: Path, window: int, lag: int, seed: int, history: int) -> None:
    """The child: write the history (acknowledged), then the window through a tracker,
    the peer ``lag`` ops behind; print the window's bytes, then wait for SIGKILL (the
    tracker is never closed)."""
    rng = random.Random(seed)
    tracker = Tracker(work / "state-crashed")  # default settings; a new state is in sync
    written = 0
    behind: list[Op] = []
    with Applier({ROOT: work / "crashed"}) as local, Applier({ROOT: work / "survivor"}) as peer:
        for op in history_ops(work / "crashed", history, rng):
            tracker.before(op)
            local.apply(op)
            peer.apply(op)
        for n, op in enumerate(window_ops(work / "crashed", window, rng)):
            tracker.before(op)
            local.apply(op)
            written += len(op.data) if isinstance(op, Write) else 0
            behind.append(op)
            if len(behind) > lag:
                peer.apply(behind.pop(0))  # acknowledged
            if n % 4 == 3:
                tracker.flush()  # the application's fdatasync
        print(f"window {written}", flush=True)
        signal.pause()


def crash(args: argparse.Namespace, work: Path, peer: Peer, binary: str) -> None:
    crashed, survivor = work / "crashed", work / "survivor"
    build_database(crashed, args.db_mib, random.Random(args.seed))
    subprocess.run(["cp", "-a", str(crashed), str(survivor)], check=True)
    argv = [sys.executable, __file__, "--primary", str(work), "--window-mib", str(args.window_mib)]
    argv += ["--history-mib", str(args.history_mib), "--lag", str(args.lag)]
    child = subprocess.Popen([*argv, "--seed", str(args.seed)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline().split()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    if len(line) != 2 or line[0] != "window":
        sys.exit("the primary did not finish its window")
    written = int(line[1])
    suspect = Tracker.recover(work / "state-crashed").changes  # as its daemon finds it
    (work / "suspect").write_bytes(suspect.serialise())
    with Tracker(work / "state-survivor") as own:  # the survivor serves from here on
        own.epoch_start("gen-2")
        changes = own.changes()
    copies = {name: work / name for name in ("checked", "blind", "rsync")}
    for copy in copies.values():
        subprocess.run(["cp", "-a", str(crashed), str(copy)], check=True)
    subprocess.run(["sync"], check=True)
    size = sum(p.stat().st_size for p in survivor.rglob("*") if p.is_file())
    print(
        f"tree: {size / 2**20:.0f} MiB; written in the window before the crash: "
        f"{written / 2**20:.2f} MiB ({args.lag} ops never acknowledged), after "
        f"{args.history_mib} MiB of acknowledged pages since the pair was protected"
    )
    print(f"peer: {peer.where}")
    for name in ("checked", "blind"):
        seconds, sent, asked = ours(
            survivor, copies[name], changes, peer, work / "suspect", checked=name == "checked"
        )
        total = sent + asked
        print(
            f"ours ({name}): {seconds:.2f} s, {sent / 2**20:.2f} MiB sent + request "
            f"{asked / 2**10:.1f} KiB = {total / 2**20:.2f} MiB; / window = {total / written:.2f}"
        )
    # --checksum: both copies were written within the same second, same sizes; rsync's
    # quick check (size and mtime in seconds) would skip files that differ.
    seconds, exchanged = rsync(binary, survivor, copies["rsync"], work, peer, "--checksum")
    print(
        f"rsync         : {seconds:.2f} s, {exchanged / 2**20:.2f} MiB sent + received; "
        f"/ window = {exchanged / written:.2f} (rsync -a --checksum to an rsync daemon)"
    )
    for copy in copies.values():
        subprocess.run(["diff", "-r", "-q", str(survivor), str(copy)], check=True)
    print("every copy identical to the survivor's (diff -r)")


def inplace(args: argparse.Namespace, work: Path, peer: Peer, binary: str) -> None:
    rng = random.Random(args.seed)
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
    seconds, sent, _ = ours(source, target_ours, changes, peer)
    print(
        f"ours : {seconds:.2f} s, {sent / 2**20:.2f} MiB sent, "
        f"bytes sent / bytes changed = {sent / written:.3f}"
    )
    rsync_seconds, _ = rsync(binary, source, target_rsync, work, peer)
    print(f"rsync: {rsync_seconds:.2f} s (rsync -a to an rsync daemon in {peer.where})")
    print(f"time ours / rsync = {seconds / rsync_seconds:.3f}")
    for copy in (target_ours, target_rsync):
        subprocess.run(["diff", "-r", "-q", str(source), str(copy)], check=True)
    print("both copies identical to the source (diff -r)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("crash", "inplace"), default="crash")
    parser.add_argument("--files", type=int, default=100_000, help="inplace: files in the tree")
    parser.add_argument("--db-mib", type=int, default=160, help="crash: size of the tree")
    parser.add_argument("--window-mib", type=float, default=2, help="crash: WAL in the window")
    parser.add_argument("--lag", type=int, default=8, help="crash: ops not acknowledged")
    parser.add_argument(
        "--history-mib", type=float, default=0, help="crash: acknowledged pages before the window"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve-target", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--primary", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--suspect", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--blind", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument(
        "--loopback", action="store_true", help="no network namespaces (the default when not root)"
    )
    args = parser.parse_args()
    if args.serve_target is not None:
        suspect = (
            ChangeSet.deserialise(args.suspect.read_bytes()) if args.suspect else ChangeSet(ZONE)
        )
        serve_target(args.serve_target, args.port, args.address, suspect, checked=not args.blind)
        return
    if args.primary is not None:
        window, history = (int(mib * 2**20) for mib in (args.window_mib, args.history_mib))
        primary(args.primary, window, args.lag, args.seed, history)
        return
    binary = ensure_rsync()  # before anything is built: a missing baseline ends the run
    work = Path(tempfile.mkdtemp(prefix="resync-bench-"))
    peer = Peer(use_netns=not args.loopback and netns_unavailable_reason() is None)
    try:
        (crash if args.scenario == "crash" else inplace)(args, work, peer, binary)
    finally:
        peer.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
