"""What both ends of the replication channel need of their I/O, and nothing more."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import anyio

from failover.replication.channel_wire import Buffer


@runtime_checkable
class VectoredStream(Protocol):
    """A ``MessageStream`` that also sends buffers from any thread without waiting
    (``failover_transports.tcp_replication.TcpMessageStream``)."""

    def send_nowait(self, parts: Sequence[Buffer]) -> bool: ...

    @property
    def backlogged(self) -> bool: ...

    @property
    def buffered(self) -> bool: ...

    async def flush(self) -> None: ...

    async def receive_view(self, *, limit: int | None = None) -> memoryview: ...


class Wakeup:
    """A cheap cross-thread wake-up for one waiting task: an eventfd."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def set(self) -> None:
        os.eventfd_write(self.fd, 1)

    async def wait(self) -> None:
        await anyio.wait_readable(self.fd)
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.fd)

    def close(self) -> None:
        os.close(self.fd)
