"""Helpers of the resync tests: a source/target session over loopback TCP, a fake mirror,
full tree snapshots (metadata included) and a base tree to start from."""

from __future__ import annotations

import os
import random
import stat
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from channel_support import identities, stream_pair

from failover.replication.apply import Applier
from failover.replication.channel import ChannelSettings, ReplicationReceiver, ReplicationSender
from failover.replication.ops import Create, Mkdir, Op, SetXattr, Symlink, Write
from failover.replication.resync import CheckCache, ResyncSource, ResyncTarget
from failover.replication.tracking import Tracker
from failover.testing.transport_contract import WAIT_TIMEOUT
from failover.transport import MessageStream

ROOT = "data"


class FakeMirror:
    """What the mirror does for replication: under one lock, the tracker's ``before``,
    the local change (an ``Applier`` on the source's directory), every ``after``."""

    def __init__(self, backing: Path, tracker: Tracker | None = None) -> None:
        self.lock = threading.Lock()
        self.applier = Applier({ROOT: backing})
        self.tracker = tracker
        self.listeners: list[Callable[[Op], None]] = []

    def do(self, op: Op) -> None:
        with self.lock:
            if self.tracker is not None:
                self.tracker.before(op)
            self.applier.apply(op)
            for after in self.listeners:
                after(op)

    def close(self) -> None:
        self.applier.close()


@dataclass
class Pair:
    """A running session: the source's sender, the target's resync handler."""

    sender: ReplicationSender
    target: ResyncTarget
    secondary_stream: MessageStream
    receiver_error: list[Exception] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    async def run_source(self, source: ResyncSource) -> bool:
        """``source.run()`` in a worker thread, as the runtime does."""
        return await anyio.to_thread.run_sync(source.run)


@asynccontextmanager
async def resync_pair(
    target_dir: Path,
    settings: ChannelSettings | None = None,
    request: bytes | Callable[[ResyncTarget], bytes] = b"",
    checks: CheckCache | None = None,
) -> AsyncIterator[Pair]:
    """A handshaken replication session whose receiver applies with a ``ResyncTarget``;
    ``request`` (an encoded ``ResyncRequest``, or a callable making it with the
    session's target, as the runtime does) travels in the handshake's WELCOME;
    ``checks``: the node's digest cache the target shares (its own if None)."""
    primary, secondary = identities()
    with Applier({ROOT: target_dir}) as applier:
        done = threading.Event()
        target = ResyncTarget(applier, {ROOT: target_dir}, on_done=done.set, checks=checks)
        sender = ReplicationSender(primary, settings or ChannelSettings(timeout=WAIT_TIMEOUT))
        receiver = ReplicationReceiver(
            secondary, target, on_item=target.on_item, timeout=WAIT_TIMEOUT
        )
        try:
            async with stream_pair() as (a, b), anyio.create_task_group() as tg:
                with anyio.fail_after(WAIT_TIMEOUT):
                    async with anyio.create_task_group() as greeting:  # both ends done
                        asked = request if isinstance(request, bytes) else lambda: request(target)
                        greeting.start_soon(receiver.handshake, b, asked)
                        await sender.handshake(a)
                pair = Pair(sender, target, b, done=done)

                async def run_receiver() -> None:
                    try:
                        await receiver.run()
                    except Exception as exc:
                        pair.receiver_error.append(exc)

                tg.start_soon(run_receiver)
                tg.start_soon(sender.run)
                try:
                    yield pair
                finally:
                    tg.cancel_scope.cancel()
        finally:
            target.close()


def snapshot(top: Path, *, times: bool = True) -> dict[str, tuple[object, ...]]:
    """Every entry under ``top``: type, mode, owner, xattrs, link count, and content or
    target; modification times too if ``times`` (access times never: reading sets them)."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            info = path.lstat()
            xattrs = sorted(
                (attr, os.getxattr(path, attr, follow_symlinks=False))
                for attr in os.listxattr(path, follow_symlinks=False)
            )
            common = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, tuple(xattrs))
            when = (info.st_mtime_ns,) if times else ()
            rel = str(path.relative_to(top))
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path), *when)
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", *common, *when)
            else:
                found[rel] = ("file", *common, info.st_nlink, path.read_bytes(), *when)
    return found


def base_ops(rng: random.Random, files: int = 12, big: int = 3) -> list[Op]:
    """A small starting tree: directories, small files, a few big files, a symlink, xattrs."""
    ops: list[Op] = [Mkdir(ROOT, b"d", 0o755), Mkdir(ROOT, b"d/e", 0o750)]
    for i in range(files):
        path = [b"f", b"d/f", b"d/e/f"][i % 3] + str(i).encode()
        ops += [
            Create(ROOT, path, 0o644),
            Write(ROOT, path, 0, rng.randbytes(rng.randrange(1, 9000))),
        ]
    for i in range(big):
        path = f"big{i}".encode()
        ops += [Create(ROOT, path, 0o600), Write(ROOT, path, 0, rng.randbytes(1 << 20))]
    ops += [Symlink(ROOT, b"d/link", b"../f0"), SetXattr(ROOT, b"f0", b"user.k", b"v", 0)]
    return ops


def build(ops: list[Op], *dirs: Path) -> None:
    """Apply ``ops`` to each directory (identical trees), then give them identical times."""
    for top in dirs:
        top.mkdir(exist_ok=True)
        with Applier({ROOT: top}) as applier:
            for op in ops:
                applier.apply(op)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                os.utime(Path(dirpath, name), ns=(10**18, 10**18), follow_symlinks=False)
