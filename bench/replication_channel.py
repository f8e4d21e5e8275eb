"""The replication channel over loopback TCP, against raw TCP in the same run.

    .venv/bin/python bench/replication_channel.py [--mib 512] [--round-trips 2000] [--repeat 3]
        [--discard] [--inline-bytes 65536]

The receiving end runs in a child process (as on the peer node), the sending
end here. Two figures, each with its baseline measured alongside:

(a) streaming: ``--mib`` 1 MiB ``Write`` ops through ``ReplicationSender.after``
    and one ``sync`` at the end (the receiver applies them to a file in a temp
    directory on tmpfs, so the disk is out of the figure), in MiB/s, against a
    raw TCP ``sendall`` of the same bytes to a child that reads them and
    answers one byte at the end; beside it, for both, the CPU each side spends
    per MiB streamed (process CPU time of all its threads, from the handshake
    on). With ``--discard`` the receiver checks and decodes every op but
    applies none: the channel without the file system (writing new tmpfs
    pages alone costs about 0.4 ms of CPU per MiB here; raw TCP writes nothing);
(b) synchronous commit: ``--round-trips`` times a 4 KiB ``Write`` + ``sync(Fsync)``
    at the default ack level (written; the receiver fsyncs on tmpfs), p50 and p99, against a raw TCP
    ping-pong of 4 KiB each way.

``--inline-bytes``: the receiver's (writes of at most that many bytes applied
in its receive task when its apply thread is idle; 0: all in the thread, as
before issue 10's third wave).

Each figure runs ``--repeat`` times, the baseline and the channel alternating,
and prints the median and the range: on a shared machine one run says little.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address

import anyio

from failover.errors import TransportError
from failover.replication.apply import Applier
from failover.replication.channel import (
    INLINE_BYTES,
    ChannelSettings,
    ReplicationReceiver,
    ReplicationSender,
    SessionIdentity,
)
from failover.replication.ops import Create, Fsync, Op, Write
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import TcpReplicationTransport

MiB = 1024 * 1024
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
KEY = b"bench-key-" * 4
PRIMARY = SessionIdentity("bench", KEY, "alpha", "beta", "1")
SECONDARY = SessionIdentity("bench", KEY, "beta", "alpha", "1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(*args: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE)
    assert child.stdout is not None
    child.stdout.readline()  # "ready"
    return child


def child_cpu(child: subprocess.Popen[bytes]) -> float:
    """The CPU seconds a child reported on its last line, once it ended."""
    out, _ = child.communicate()
    return float(out.split()[-1])


# -- children ---------------------------------------------------------------------


class Discard:
    """A sink that applies nothing (``--discard``)."""

    def apply(self, op: Op) -> None:
        pass

    def fsync(self, root: str, path: bytes, datasync: bool) -> None:
        pass


async def serve_channel(port: int, directory: str, discard: bool, inline: int) -> None:
    """The receiving child: applies to ``directory`` (or nothing, ``discard``),
    writes of at most ``inline`` bytes in its receive task."""
    endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=port)
    async with TcpReplicationTransport().listen(endpoint) as listener:
        print("ready", flush=True)
        stream = await listener.accept()
    with Applier({"data": directory}) as applier:
        sink = Discard() if discard else applier
        receiver = ReplicationReceiver(SECONDARY, sink, inline_bytes=inline)
        await receiver.handshake(stream)
        start = time.process_time()
        try:
            await receiver.run()
        except TransportError:
            pass  # the sender closed the session: the normal end of a run
        except Exception as exc:
            print(f"receiver ended: {exc}", file=sys.stderr)
        print(f"cpu {time.process_time() - start}", flush=True)


def serve_raw(port: int, mode: str) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        print("ready", flush=True)
        conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.process_time()
    with conn:
        if mode == "stream":
            buffer = bytearray(MiB)
            total = int.from_bytes(conn.recv(8, socket.MSG_WAITALL), "big")
            while total:
                total -= conn.recv_into(buffer, min(total, MiB))
            conn.sendall(b"!")
        else:
            while data := conn.recv(4096, socket.MSG_WAITALL):
                conn.sendall(data)
    print(f"cpu {time.process_time() - start}", flush=True)


# -- the measuring side -----------------------------------------------------------


class Stream:
    """One streaming run: MiB/s, and CPU milliseconds per MiB on each side."""

    def __init__(self, rate: float, sender_cpu: float, receiver_cpu: float, mib: int) -> None:
        self.rate = rate
        self.sender = sender_cpu * 1000 / mib
        self.receiver = receiver_cpu * 1000 / mib


def raw_stream(mib: int) -> Stream:
    port = free_port()
    child = spawn("--serve-raw", str(port), "stream")
    block = os.urandom(MiB)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        cpu = time.process_time()
        sock.sendall((mib * MiB).to_bytes(8, "big"))
        for _ in range(mib):
            sock.sendall(block)
        assert sock.recv(1) == b"!"
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return Stream(mib / elapsed, cpu, child_cpu(child), mib)


def raw_ping_pong(count: int) -> list[float]:
    port = free_port()
    child = spawn("--serve-raw", str(port), "ping")
    block = os.urandom(4096)
    times: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(block)
            sock.recv(4096, socket.MSG_WAITALL)
            times.append(time.perf_counter() - start)
    child.wait()
    return times


async def with_sender(work: object, discard: bool, inline: int) -> tuple[object, float]:
    """Start a receiving child, connect a sender, run ``work(sender)`` in a thread;
    its result and the child's CPU seconds. ``discard``: the child applies nothing;
    ``inline``: its ``inline_bytes``."""
    port = free_port()
    # tmpfs: the figure is the channel's, not this machine's disk (bench/replication.py
    # measures the disk).
    with tempfile.TemporaryDirectory(dir=SCRATCH) as directory:
        child = spawn(
            "--serve-channel",
            str(port),
            directory,
            f"--inline-bytes={inline}",
            *(["--discard"] * discard),
        )
        endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=port)
        stream = await TcpReplicationTransport().connect(endpoint, timeout=5)
        sender = ReplicationSender(PRIMARY, ChannelSettings(timeout=30))
        await sender.handshake(stream)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run)
            assert callable(work)
            result = await anyio.to_thread.run_sync(work, sender)
            if sender.broken:
                raise SystemExit(f"session broke: {sender.broken}")
            tg.cancel_scope.cancel()
        cpu = child_cpu(child)
    return result, cpu


def channel_stream(sender: ReplicationSender, mib: int) -> tuple[float, float]:
    """MiB/s and this process's CPU seconds (every thread: the loop's too)."""
    block = os.urandom(MiB)
    sender.after(Create("data", b"big", 0o644))
    start = time.perf_counter()
    cpu = time.process_time()
    for index in range(mib):
        sender.after(Write("data", b"big", index * MiB, block))
    sender.sync(Fsync("data", b"big", False))
    return mib / (time.perf_counter() - start), time.process_time() - cpu


def channel_round_trips(sender: ReplicationSender, count: int) -> list[float]:
    block = os.urandom(4096)
    sender.after(Create("data", b"log", 0o644))
    times: list[float] = []
    for index in range(count):
        start = time.perf_counter()
        sender.after(Write("data", b"log", index * 4096, block))
        sender.sync(Fsync("data", b"log", True))
        times.append(time.perf_counter() - start)
    return times


def percentiles(times: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(times, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


def median_range(values: list[float], digits: int = 0) -> str:
    """``median (min-max)`` of ``values``."""
    return (
        f"{statistics.median(values):8.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each figure, baseline and channel alternating",
    )
    parser.add_argument(
        "--discard", action="store_true", help="the receiver applies nothing (see above)"
    )
    parser.add_argument(
        "--inline-bytes",
        type=int,
        default=INLINE_BYTES,
        help="the receiver applies writes up to this size in its receive task (0: never)",
    )
    parser.add_argument("--serve-channel", nargs=2, metavar=("PORT", "DIR"))
    parser.add_argument("--serve-raw", nargs=2, metavar=("PORT", "MODE"))
    args = parser.parse_args()
    if args.serve_channel:
        port, directory = args.serve_channel
        anyio.run(serve_channel, int(port), directory, args.discard, args.inline_bytes)
        return
    if args.serve_raw:
        serve_raw(int(args.serve_raw[0]), args.serve_raw[1])
        return

    raws: list[Stream] = []
    channels: list[Stream] = []
    for _ in range(args.repeat):  # alternating: a busy machine weighs on both alike
        raws.append(raw_stream(args.mib))
        result, child = anyio.run(
            with_sender, lambda s: channel_stream(s, args.mib), args.discard, args.inline_bytes
        )
        assert isinstance(result, tuple)
        channels.append(Stream(result[0], result[1], child, args.mib))
    ratios = [c.rate / r.rate for c, r in zip(channels, raws, strict=True)]
    applied = "discarded" if args.discard else "applied on tmpfs"
    print(
        f"(a) stream {args.mib} x 1 MiB Write + sync, loopback, {applied}, "
        f"median (range) of {args.repeat}"
    )
    for name, runs in (("raw TCP", raws), ("channel", channels)):
        print(
            f"    {name:8} {median_range([r.rate for r in runs])} MiB/s   CPU ms/MiB "
            f"sender {median_range([r.sender for r in runs], 2)} "
            f"receiver {median_range([r.receiver for r in runs], 2)}"
        )
    print(
        f"    ratio channel/raw {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f})"
    )

    raw_p50s: list[float] = []
    raw_p99s: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    for _ in range(args.repeat):
        raw_p50, raw_p99 = percentiles(raw_ping_pong(args.round_trips))
        times, _ = anyio.run(
            with_sender,
            lambda s: channel_round_trips(s, args.round_trips),
            args.discard,
            args.inline_bytes,
        )
        assert isinstance(times, list)
        p50, p99 = percentiles(times)
        raw_p50s.append(raw_p50)
        raw_p99s.append(raw_p99)
        p50s.append(p50)
        p99s.append(p99)
    print(f"(b) {args.round_trips} x 4 KiB Write + sync(Fsync), ack level written, us")
    print(f"    raw TCP ping-pong  p50 {median_range(raw_p50s)}  p99 {median_range(raw_p99s)}")
    print(f"    channel            p50 {median_range(p50s)}  p99 {median_range(p99s)}")
    print(
        f"    ratio p50 {statistics.median(p50s) / statistics.median(raw_p50s):.1f}x  "
        f"p99 {statistics.median(p99s) / statistics.median(raw_p99s):.1f}x (of the medians)"
    )


if __name__ == "__main__":
    main()
