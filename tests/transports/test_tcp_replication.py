"""TCP replication streams: the replication conformance suite plus framing rules."""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Address
from typing import Any

import anyio
import pytest

from failover.errors import TransportError
from failover.testing.transport_contract import WAIT_TIMEOUT, ReplicationContract, free_port
from failover.transport import ReplicationTransport
from failover_transports.tcp import TcpEndpoint
from failover_transports.tcp_replication import MAX_MESSAGE_SIZE, TcpReplicationTransport


class TestTcpReplication(ReplicationContract):
    @pytest.fixture
    def replication_transport(self) -> ReplicationTransport:
        return TcpReplicationTransport()

    @pytest.fixture
    def endpoint_options(self) -> dict[str, Any]:
        return {"address": "127.0.0.1", "port": free_port("tcp")}


@pytest.mark.anyio
@pytest.mark.parametrize("limit", [None, 2 * MAX_MESSAGE_SIZE], ids=["default", "above-max"])
async def test_oversize_length_from_peer_breaks_the_stream(limit: int | None) -> None:
    """MAX_MESSAGE_SIZE bounds every receive: a caller's limit may lower it, never raise it."""
    endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp"))
    transport = TcpReplicationTransport()
    async with transport.listen(endpoint) as listener:
        raw = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        async with raw:
            with anyio.fail_after(WAIT_TIMEOUT):
                server = await listener.accept()
                await raw.send(struct.pack(">I", MAX_MESSAGE_SIZE + 1))
                with pytest.raises(TransportError, match="announced"):
                    await server.receive(limit=limit)
                with pytest.raises(TransportError):
                    await server.receive()
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await raw.receive()  # closed by the server


@pytest.mark.anyio
async def test_a_limited_receive_refuses_a_long_message_before_its_body() -> None:
    # What a stranger sends before it authenticated is read with a small limit:
    # announcing 1 MiB is refused at once, nothing of it buffered or waited for
    # (the body never comes: without the limit, receive would wait for it).
    endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp"))
    async with TcpReplicationTransport().listen(endpoint) as listener:
        raw = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        async with raw:
            with anyio.fail_after(WAIT_TIMEOUT):
                server = await listener.accept()
                await raw.send(struct.pack(">I", 1 << 20) + b"x" * 100)
                with pytest.raises(TransportError, match="announced"):
                    await server.receive(limit=64 * 1024)
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await raw.receive()  # closed by the server


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the bug is asyncio's
async def test_an_accept_cancelled_as_a_connection_arrives_loses_nothing() -> None:
    """Campaign round 99: the data plane's accept is cancelled (its listener
    stops) in the same loop turn as a connection becomes acceptable. On asyncio,
    ``sock_accept`` then takes the connection for a cancelled future: the loop
    raises InvalidStateError (a traceback in the daemon's log) and the connection
    is dropped. The transport must leave it queued for the next accept, quietly."""
    endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp"))
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with TcpReplicationTransport().listen(endpoint) as listener:
            for _ in range(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(listener.accept)
                    await anyio.wait_all_tasks_blocked()  # the accept waits for a connection
                    client = socket.create_connection(("127.0.0.1", endpoint.port))
                    # one loop turn: the listener's readiness is queued behind this task
                    await asyncio.sleep(0)
                    tg.cancel_scope.cancel()
                with client, anyio.fail_after(WAIT_TIMEOUT):
                    stream = await listener.accept()  # the same connection, still queued
                    await stream.send(b"hello")
                    assert client.recv(9) == b"\0\0\0\x05hello"
                    await stream.aclose()
            await anyio.wait_all_tasks_blocked()
    finally:
        loop.set_exception_handler(None)
    assert not errors, errors
