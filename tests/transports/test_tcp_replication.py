"""TCP replication streams: the replication conformance suite plus framing rules."""

from __future__ import annotations

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
async def test_oversize_length_from_peer_breaks_the_stream() -> None:
    endpoint = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp"))
    transport = TcpReplicationTransport()
    async with transport.listen(endpoint) as listener:
        raw = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        async with raw:
            with anyio.fail_after(WAIT_TIMEOUT):
                server = await listener.accept()
                await raw.send(struct.pack(">I", MAX_MESSAGE_SIZE + 1))
                with pytest.raises(TransportError, match="announced"):
                    await server.receive()
                with pytest.raises(TransportError):
                    await server.receive()
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await raw.receive()  # closed by the server
