"""The programs bench/replication.py runs in its processes (one role each).

    python bench/_replication_lab.py write DIR --size BYTES
    python bench/_replication_lab.py turns DIR... --count N
    python bench/_replication_lab.py mirror ROOT [--peer ADDR:PORT]
    python bench/_replication_lab.py receiver ROOT --listen ADDR:PORT
    python bench/_replication_lab.py plane ROOT --state DIR --listen ADDR:PORT --peer ADDR:PORT
        [--serve]
    python bench/_replication_lab.py sink --listen ADDR:PORT
    python bench/_replication_lab.py source --peer ADDR:PORT --size BYTES

- ``write``: the application's sequential writes. In DIR: 1 MiB ``write``
  calls up to ``--size`` bytes then one ``fsync`` (file ``seq``). Prints one
  JSON line: the seconds.
- ``turns``: the application's commits, the DIRs taking turns of ``TURN``
  calls: ``--count`` times a 4 KiB ``pwrite`` at the next offset + ``fsync`` in
  each DIR, then ``--count`` times an ``fsync`` of that file with nothing
  written since (a clean file). Prints every commit's and every clean fsync's
  seconds per DIR.
  Both files are removed before it exits.
- ``mirror``: a FUSE ``Mirror`` over ROOT; without ``--peer`` a passthrough
  (no listener), with it a ``ReplicationSender`` whose session goes to the
  receiver at ``--peer`` (no tracker).
- ``receiver``: the peer of ``mirror``: accepts sessions one after the other
  and applies each with a ``ReplicationReceiver`` and an ``Applier`` on ROOT.
- ``plane``: a runtime ``DataPlane`` (node alpha with ``--serve``, else beta)
  with ROOT as its one replicated directory named ``data``. With ``--serve``
  it mounts read-write and replicates to ``--peer`` through the data plane's
  relay: the tracker's ``before``/``sync`` and the sender, the daemon's path.
  Without, it is the secondary: a read-only mirror and the receiver applying
  the peer's sessions under it.
- ``sink``/``source``: raw TCP, the link's own throughput (``source`` prints
  the seconds for ``--size`` bytes, answered by one byte from the sink).

Every long-lived role prints ``ready`` once it serves, runs until its stdin
closes, then cleans up (unmounts) and exits 0. A session that breaks is
printed on stderr and makes the role exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from functools import wraps
from ipaddress import IPv4Address
from pathlib import Path

import anyio
import structlog

from failover.core import events as ev
from failover.errors import FailoverError
from failover.replication.apply import Applier
from failover.replication.channel import (
    ChannelSettings,
    ReplicationReceiver,
    ReplicationSender,
    SessionIdentity,
)
from failover.replication.mirror import Mirror
from failover.replication.ops import Fsync, Op
from failover.runtime.dataplane import DataPlane, DataPlaneSettings
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import TcpReplicationTransport

MIB = 1 << 20
ROOT = "data"
KEY = b"bench-replication-key-0123456789"
GENERATION = "1:alpha"


def _endpoint(text: str) -> TcpEndpoint:
    address, port = text.rsplit(":", 1)
    return TcpEndpoint(address=IPv4Address(address), port=int(port))


def _identity(local: str, peer: str) -> SessionIdentity:
    return SessionIdentity("bench", KEY, local, peer, GENERATION)


def _ready() -> None:
    print("ready", flush=True)


async def _until_stdin_closes() -> None:
    await anyio.to_thread.run_sync(sys.stdin.read)


def _fail(reason: str) -> None:
    print(f"session broken: {reason}", file=sys.stderr, flush=True)
    os._exit(1)


# -- the application ----------------------------------------------------------------------


def write(directory: Path, size: int) -> None:
    block = os.urandom(MIB)
    fd = os.open(directory / "seq", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(size // MIB):
            os.write(fd, block)
        os.fsync(fd)
        seq_seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(directory / "seq")
    print(json.dumps({"seq_seconds": seq_seconds}), flush=True)


TURN = 50
"""Commits (or clean fsyncs) in one directory before the next one's turn."""


def turns(directories: list[Path], count: int) -> None:
    """In each directory a file ``log``: ``count`` commits (a 4 KiB ``pwrite`` at the
    next offset + ``fsync``), then ``count`` fsyncs with nothing written since (a clean
    file); the directories take turns of ``TURN`` calls, so that each meets the disk in
    the same mood, yet each turn is one writer's run of fsyncs (ext4's journal makes an
    fsync wait for more writers when the last one was another thread). Prints
    {directory: {"commit": [seconds...], "clean": [seconds...]}}."""
    block = os.urandom(4096)
    fds: dict[str, int] = {}
    figures: dict[str, dict[str, list[float]]] = {}
    try:
        for directory in directories:
            path = directory / "log"
            fds[str(directory)] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            figures[str(directory)] = {"commit": [], "clean": []}
        for first in range(0, count, TURN):
            for name, fd in fds.items():
                for index in range(first, min(first + TURN, count)):
                    start = time.perf_counter()
                    os.pwrite(fd, block, index * 4096)
                    os.fsync(fd)
                    figures[name]["commit"].append(time.perf_counter() - start)
        for first in range(0, count, TURN):
            for name, fd in fds.items():
                for _ in range(first, min(first + TURN, count)):
                    start = time.perf_counter()
                    os.fsync(fd)
                    figures[name]["clean"].append(time.perf_counter() - start)
    finally:
        for name, fd in fds.items():
            os.close(fd)
            os.unlink(Path(name) / "log")
    print(json.dumps(figures), flush=True)


# -- mirror + sender / receiver ---------------------------------------------------------


class _SenderListener:
    """A ``ReplicationSender`` as the mirror's listener, without a tracker: one session
    for the role's life (token 1 while it is unbroken), the local fsync run while the
    peer works, as the data plane's relay does."""

    def __init__(self, sender: ReplicationSender) -> None:
        self._sender = sender

    def before(self, op: Op) -> None:
        pass

    def after(self, op: Op) -> None:
        self._sender.after(op)

    def sync(self, op: Fsync, local: Callable[[], None] | None = None) -> int | None:
        if local is None:  # a mirror older than issue 10 (a "before" run): fsynced already
            return 1 if self._sender.sync(op) else None
        seq = self._sender.queue(op)
        local()
        return 1 if seq and self._sender.wait_acked(seq) else None

    def session(self) -> int | None:
        return 1 if self._sender.broken is None else None


async def mirror(root: Path, peer: str | None) -> None:
    if peer is None:
        with Mirror(ROOT, root, None):
            _ready()
            await _until_stdin_closes()
        return
    stream = await TcpReplicationTransport().connect(_endpoint(peer), 10)
    sender = ReplicationSender(
        _identity("alpha", "beta"), ChannelSettings(timeout=30), on_broken=_fail
    )
    await sender.handshake(stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sender.run)
        listened = Mirror(ROOT, root, _SenderListener(sender))
        await anyio.to_thread.run_sync(listened.mount)
        try:
            _ready()
            await _until_stdin_closes()
        finally:
            await anyio.to_thread.run_sync(listened.unmount)
            tg.cancel_scope.cancel()


async def receiver(root: Path, listen: str) -> None:
    async with TcpReplicationTransport().listen(_endpoint(listen)) as listener:
        _ready()
        with Applier({ROOT: root}) as applier:
            async with anyio.create_task_group() as tg:

                async def sessions() -> None:
                    while True:  # one at a time: the bench opens one, then closes it
                        stream = await listener.accept()
                        session = ReplicationReceiver(_identity("beta", "alpha"), applier)
                        try:
                            await session.handshake(stream)
                            await session.run()
                        except FailoverError as exc:
                            print(f"session ended: {exc}", file=sys.stderr, flush=True)
                        finally:
                            await stream.aclose()

                tg.start_soon(sessions)
                await _until_stdin_closes()
                tg.cancel_scope.cancel()


# -- the runtime's data plane -------------------------------------------------------------

PROFILED = {
    "failover.replication.mirror:_Operations": (
        "getattr", "readdir", "open", "create", "read", "write", "fsync", "fsyncdir", "flush",
        "release", "truncate", "unlink", "rename", "mkdir", "rmdir", "utimens", "chmod",
        "chown", "statfs", "link", "symlink", "fallocate", "setxattr", "getxattr",
    ),
    "failover.replication.relay:Relay": ("before", "after", "sync"),
    "failover.replication.channel_sender:ReplicationSender": ("after", "queue", "wait_acked"),
    "failover.replication.tracking:Tracker": (
        "before", "sync", "flush", "_append", "_checkpoint", "_before_write",
    ),
}  # fmt: skip


def _profile_calls(out: Path) -> None:
    """Count and time every call of ``PROFILED`` (from any thread: libfuse's threads are
    not Python's, so cProfile and threading.setprofile miss them). Each SIGUSR1 writes
    the totals so far to ``out`` with the signal's number as suffix (``calls.1.json``...)
    as JSON {name: [calls, seconds]} and starts again from zero."""
    totals: dict[str, list[float]] = {}
    lock = threading.Lock()

    def timed(name: str, func: Callable[..., object]) -> Callable[..., object]:
        @wraps(func)
        def wrapper(*args: object, **kwargs: object) -> object:
            began = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent = time.perf_counter() - began
                with lock:
                    entry = totals.setdefault(name, [0, 0.0])
                    entry[0] += 1
                    entry[1] += spent

        return wrapper

    for where, names in PROFILED.items():
        module, _, cls_name = where.partition(":")
        cls = getattr(importlib.import_module(module), cls_name)
        for name in names:
            if name in vars(cls):
                setattr(cls, name, timed(f"{cls_name}.{name}", vars(cls)[name]))

    def dumps() -> None:
        number = 0
        while True:
            signal.sigwait({signal.SIGUSR1})
            number += 1
            with lock:
                text = json.dumps(totals, indent=1, sort_keys=True)
                totals.clear()
            partial = out.with_suffix(f".{number}.part")
            partial.write_text(text)
            partial.rename(out.with_suffix(f".{number}.json"))

    # blocked in every thread (libfuse's inherit the mask): only the dumping thread takes it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    threading.Thread(target=dumps, name="calls-dump", daemon=True).start()


async def plane(root: Path, state: Path, listen: str, peer: str, serve: bool) -> None:
    node, other = ("alpha", "beta") if serve else ("beta", "alpha")
    settings = DataPlaneSettings(
        cluster="bench",
        node=node,
        peer=other,
        key=KEY,
        roots={ROOT: root},
        state_dir=state,
        quarantine_dir=state.parent / f"{state.name}-quarantine",
        transport=TcpReplicationTransport(),
        local=_endpoint(listen),
        remote=_endpoint(peer),
        channel=ChannelSettings(timeout=30),
    )

    async def report(event: ev.Event) -> None:
        if isinstance(event, ev.ReplicationFailed):
            _fail(event.reason)
        print(f"event: {event}", file=sys.stderr, flush=True)

    # stdout carries only "ready": the data plane's log goes to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    data_plane = DataPlane(settings, report, generation=lambda: GENERATION)
    async with anyio.create_task_group() as tg:
        await tg.start(data_plane.run)
        if serve:
            await data_plane.serve()
            await data_plane.start_replication()
        _ready()
        await _until_stdin_closes()
        tg.cancel_scope.cancel()


# -- raw TCP ----------------------------------------------------------------------------------


def sink(listen: str) -> None:
    address, port = listen.rsplit(":", 1)
    with socket.create_server((address, int(port))) as server:
        _ready()
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
        while True:
            conn, _ = server.accept()
            with conn:
                total = int.from_bytes(conn.recv(8, socket.MSG_WAITALL), "big")
                buffer = bytearray(MIB)
                while total > 0:
                    got = conn.recv_into(buffer, min(total, MIB))
                    if not got:
                        break
                    total -= got
                conn.sendall(b"!")


def source(peer: str, size: int) -> None:
    address, port = peer.rsplit(":", 1)
    block = os.urandom(MIB)
    with socket.create_connection((address, int(port))) as sock:
        start = time.perf_counter()
        sock.sendall(size.to_bytes(8, "big"))
        for _ in range(size // MIB):
            sock.sendall(block)
        if sock.recv(1) != b"!":
            sys.exit("the sink did not answer")
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    p = roles.add_parser("write")
    p.add_argument("dir", type=Path)
    p.add_argument("--size", type=int, required=True)
    p = roles.add_parser("turns")
    p.add_argument("dirs", type=Path, nargs="+")
    p.add_argument("--count", type=int, required=True)
    p = roles.add_parser("mirror")
    p.add_argument("root", type=Path)
    p.add_argument("--peer")
    p = roles.add_parser("receiver")
    p.add_argument("root", type=Path)
    p.add_argument("--listen", required=True)
    p = roles.add_parser("plane")
    p.add_argument("root", type=Path)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--serve", action="store_true")
    p = roles.add_parser("sink")
    p.add_argument("--listen", required=True)
    p = roles.add_parser("source")
    p.add_argument("--peer", required=True)
    p.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    if args.role == "write":
        write(args.dir, args.size)
    elif args.role == "turns":
        turns(args.dirs, args.count)
    elif args.role == "mirror":
        anyio.run(mirror, args.root, args.peer)
    elif args.role == "receiver":
        anyio.run(receiver, args.root, args.listen)
    elif args.role == "plane":
        if os.environ.get("FAILOVER_BENCH_CALLS"):  # bench/app_restart.py --calls
            _profile_calls(Path(os.environ["FAILOVER_BENCH_CALLS"]))
        anyio.run(plane, args.root, args.state, args.listen, args.peer, args.serve)
    elif args.role == "sink":
        sink(args.listen)
    else:
        source(args.peer, args.size)


if __name__ == "__main__":
    main()
