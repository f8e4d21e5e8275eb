"""Helpers for the replication channel tests: a loopback TCP session pair,
an instrumented sink, tree snapshots."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import anyio
import sniffio

from failover.replication.apply import Applier
from failover.replication.channel import (
    ChannelSettings,
    ItemHandler,
    ReplicationReceiver,
    ReplicationSender,
    SessionIdentity,
)
from failover.replication.ops import Op
from failover.testing.proxy import CuttableProxy
from failover.testing.transport_contract import WAIT_TIMEOUT, free_port
from failover.transport import MessageStream
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import TcpReplicationTransport

KEY = b"k" * 32
ROOT = "data"


def identities(
    key: bytes | None = KEY, receiver_key: bytes | str | None = "same"
) -> tuple[SessionIdentity, SessionIdentity]:
    """(primary's identity, secondary's identity) of one cluster."""
    other = key if receiver_key == "same" else receiver_key
    assert not isinstance(other, str)
    return (
        SessionIdentity("c1", key, "alpha", "beta", "gen-7"),
        SessionIdentity("c1", other, "beta", "alpha", "gen-6"),
    )


class Gate:
    """A point a worker thread cannot pass until the test opens it."""

    def __init__(self, closed: bool = False) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        if not closed:
            self._open.set()

    def close(self) -> None:
        self.entered.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def pass_through(self) -> None:
        self.entered.set()
        if not self._open.wait(WAIT_TIMEOUT):
            raise TimeoutError("gate never opened")


@dataclass
class RecordingSink:
    """An ``Applier`` that records what it applied, with gates before apply and fsync.

    ``record=False``: keeps nothing of an op once applied (a recorded ``Write``
    keeps a view of its received message, which the transport then never reuses).
    """

    applier: Applier
    applied: list[Op] = field(default_factory=list)
    fsynced: list[bytes] = field(default_factory=list)
    apply_gate: Gate = field(default_factory=Gate)
    fsync_gate: Gate = field(default_factory=Gate)
    record: bool = True
    before_apply: Callable[[Op], None] | None = None
    """Called with each op before it is applied (after the gate)."""

    def apply(self, op: Op) -> None:
        self.apply_gate.pass_through()
        if self.before_apply is not None:
            self.before_apply(op)
        self.applier.apply(op)
        if self.record:
            self.applied.append(op)

    def fsync(self, root: str, path: bytes, datasync: bool) -> None:
        self.fsync_gate.pass_through()
        self.applier.fsync(root, path, datasync)
        self.fsynced.append(path)


@asynccontextmanager
async def stream_pair(
    proxy: CuttableProxy | None = None,
) -> AsyncIterator[tuple[MessageStream, MessageStream]]:
    """(primary's stream, secondary's stream) over loopback TCP through the plugin;
    with ``proxy``, the secondary listens on its target port and the primary
    connects through it (a link the test can cut)."""
    transport = TcpReplicationTransport()
    port = free_port("tcp") if proxy is None else proxy.target_port
    endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=port)
    via = endpoint if proxy is None else TcpEndpoint(address=endpoint.address, port=proxy.port)
    async with contextlib.nullcontext() if proxy is None else proxy.running():
        async with transport.listen(endpoint) as listener:
            client = await transport.connect(via, timeout=WAIT_TIMEOUT)
            with anyio.fail_after(WAIT_TIMEOUT):
                server = await listener.accept()
        try:
            yield client, server
        finally:
            await client.aclose()
            await server.aclose()


@dataclass
class Session:
    """A running session: both ends, what the receiver wrote, what ended it."""

    sender: ReplicationSender
    receiver: ReplicationReceiver
    sink: RecordingSink
    backing: Path
    secondary_stream: MessageStream
    broken: list[str] = field(default_factory=list)
    receiver_error: list[Exception] = field(default_factory=list)
    sender_done: anyio.Event = field(default_factory=anyio.Event)

    async def in_thread(self, func: Callable[[], object]) -> object:
        """Run a blocking sender call the way a FUSE thread does."""
        return await anyio.to_thread.run_sync(func)


@asynccontextmanager
async def session(
    backing: Path,
    settings: ChannelSettings | None = None,
    *,
    key: bytes | None = KEY,
    on_item: ItemHandler | None = None,
    proxy: CuttableProxy | None = None,
    record: bool = True,
    inline_bytes: int = 0,
    on_ack_latency: Callable[[float], None] | None = None,
) -> AsyncIterator[Session]:
    """A handshaken session over loopback TCP (through ``proxy`` if given), both
    ends running; stopped on exit. ``record``: as ``RecordingSink``'s.
    ``inline_bytes``: the receiver's (writes applied in its receive task); when
    not 0, the receiver runs in an event loop of its own, in a thread, as on the
    peer node: a sink held at a gate then stops that loop, not the sender's."""
    primary, secondary = identities(key)
    backing.mkdir(exist_ok=True)
    with Applier({ROOT: backing}) as applier:
        sink = RecordingSink(applier, record=record)
        broken: list[str] = []
        sender = ReplicationSender(
            primary, settings, on_broken=broken.append, on_ack_latency=on_ack_latency
        )
        receiver = ReplicationReceiver(
            secondary, sink, on_item=on_item, timeout=WAIT_TIMEOUT, inline_bytes=inline_bytes
        )
        async with stream_pair(proxy) as (a, b):
            running = Session(sender, receiver, sink, backing, b, broken)
            greeted, ended = threading.Event(), threading.Event()

            async def serve() -> None:
                try:
                    await receiver.handshake(b)
                    greeted.set()
                    await receiver.run()
                except Exception as exc:
                    running.receiver_error.append(exc)
                finally:
                    ended.set()

            if inline_bytes:
                backend = sniffio.current_async_library()  # the stream's, as the test's loop
                threading.Thread(
                    target=anyio.run, args=(serve,), kwargs={"backend": backend}
                ).start()
            try:
                async with anyio.create_task_group() as tg:
                    if not inline_bytes:
                        tg.start_soon(serve)
                    with anyio.fail_after(WAIT_TIMEOUT):
                        await sender.handshake(a)
                    assert await waited(greeted), "the receiver's handshake did not end"

                    async def run_sender() -> None:
                        await sender.run()
                        running.sender_done.set()

                    tg.start_soon(run_sender)
                    try:
                        yield running
                    finally:
                        # Let whatever is still blocked in the sink go, then stop both ends.
                        sink.apply_gate.open()
                        sink.fsync_gate.open()
                        tg.cancel_scope.cancel()
            finally:
                await a.aclose()  # the receiver's run ends (in its thread too)
                await waited(ended)


def snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``top``: type, permission bits, and content or link target."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            info = path.lstat()
            rel = str(path.relative_to(top))
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                found[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


async def waited(event: threading.Event, timeout: float = WAIT_TIMEOUT) -> bool:
    """Wait for a thread's event without blocking the event loop."""
    return await anyio.to_thread.run_sync(event.wait, timeout)


async def finished(thread: threading.Thread, timeout: float = WAIT_TIMEOUT) -> bool:
    """Wait for ``thread`` to end (at most ``timeout``) without blocking the event loop."""
    await anyio.to_thread.run_sync(thread.join, timeout)
    return not thread.is_alive()


@contextmanager
def blocking_call(func: Callable[[], object]) -> Iterator[threading.Thread]:
    """Run ``func`` in a plain thread (as FUSE would); joined on exit, its
    exception re-raised."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            func()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(WAIT_TIMEOUT)
    if errors:
        raise errors[0]
