"""A TCP proxy on loopback that a test can cut like a cable: bytes stop flowing
both ways, and neither end is told (no FIN, no RST), as when a switch port or a
link between the rooms goes down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc

from failover.testing.transport_contract import free_port


class CuttableProxy:
    """Forwards every connection to ``target``; ``cut()`` drops every byte from then on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port("tcp")
        self._cut = False

    def cut(self) -> None:
        self._cut = True

    async def _pump(
        self, source: anyio.abc.ByteReceiveStream, sink: anyio.abc.ByteSendStream
    ) -> None:
        try:
            async for chunk in source:
                if not self._cut:
                    await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        server = await anyio.connect_tcp("127.0.0.1", self.target_port)
        async with client, server, anyio.create_task_group() as tg:
            tg.start_soon(self._pump, client, server)
            await self._pump(server, client)
            tg.cancel_scope.cancel()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CuttableProxy]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, self._serve)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()
