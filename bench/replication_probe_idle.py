"""What the idle probe of the replication channel costs: CPU of an idle session.

    .venv/bin/python bench/replication_probe_idle.py [--seconds 20] [--intervals none 0.2 0.05]

Both ends of one session run in this process over loopback TCP (the
``tcp-replication`` plugin); nothing is written. For each heartbeat interval
(``none``: no probes, the baseline), the CPU time of the process over
``--seconds`` of idleness is printed as a share of one core, with the number
of probes and the last round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

import anyio

from failover.replication.apply import Applier
from failover.replication.channel import (
    ChannelSettings,
    ReplicationReceiver,
    ReplicationSender,
    SessionIdentity,
)
from failover.testing.transport_contract import connected_streams, free_port
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import TcpReplicationTransport

KEY = b"b" * 32


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def idle_session(interval: float | None, seconds: float) -> str:
    transport = TcpReplicationTransport()
    endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp"))
    primary = SessionIdentity("bench", KEY, "alpha", "beta", "1")
    secondary = SessionIdentity("bench", KEY, "beta", "alpha", "1")
    settings = ChannelSettings(timeout=5.0, probe_interval=interval)
    with tempfile.TemporaryDirectory() as directory, Applier({"d": Path(directory)}) as applier:
        sender = ReplicationSender(primary, settings)
        receiver = ReplicationReceiver(secondary, applier)
        async with (
            connected_streams(transport, endpoint) as (client, server),
            anyio.create_task_group() as tg,
        ):
            async with anyio.create_task_group() as greeting:
                greeting.start_soon(receiver.handshake, server)
                await sender.handshake(client)

            async def run_receiver() -> None:
                with contextlib.suppress(Exception):
                    await receiver.run()

            tg.start_soon(run_receiver)
            tg.start_soon(sender.run)
            await anyio.sleep(1.0)  # settle
            cpu, start = cpu_seconds(), time.monotonic()
            await anyio.sleep(seconds)
            share = (cpu_seconds() - cpu) / (time.monotonic() - start)
            status = sender.status()
            tg.cancel_scope.cancel()
    rtt = "-" if status.last_probe_rtt is None else f"{status.last_probe_rtt * 1e3:.2f} ms"
    return (
        f"interval {interval if interval is not None else 'none':>5}: "
        f"{share * 100:.2f}% of a core (both ends), {status.probes_sent} probes, last rtt {rtt}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--intervals", nargs="+", default=["none", "0.2", "0.05"])
    args = parser.parse_args()
    for text in args.intervals:
        interval = None if text == "none" else float(text)
        print(anyio.run(idle_session, interval, args.seconds), flush=True)


if __name__ == "__main__":
    main()
