"""The tcp transport: the conformance suite plus reconnection and framing rules."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import anyio
import pytest

from failover.errors import TransportError
from failover.testing.transport_contract import (
    WAIT_TIMEOUT,
    EndpointOptions,
    TransportContract,
    establish,
    free_port,
    open_pair,
    pumped,
)
from failover.transport import MAX_FRAME_SIZE
from failover_transports.framing import encode_length_prefixed
from failover_transports.tcp import TcpEndpoint, TcpTransport


class TestTcpContract(TransportContract):
    transport_name = "tcp"
    ordered = True
    after_peer_close = "raises"
    bad_options = [
        {"address": "not-an-ip", "port": 7400},
        {"address": "127.0.0.1", "port": 0},
        {"address": "127.0.0.1", "port": "http"},
        {"address": "127.0.0.1"},
        {"port": 7400},
    ]
    frame_count = 300

    @pytest.fixture
    def endpoint_options(self) -> EndpointOptions:
        return (
            {"address": "127.0.0.1", "port": free_port("tcp")},
            {"address": "127.0.0.1", "port": free_port("tcp")},
        )


@pytest.fixture
def tcp_endpoints() -> tuple[TcpEndpoint, TcpEndpoint]:
    return (
        TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp")),
        TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp")),
    )


@pytest.mark.anyio
async def test_send_while_not_connected_raises_at_once(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint],
) -> None:
    local, remote = tcp_endpoints  # nobody listens on remote
    channel = await TcpTransport().open(local, remote)
    try:
        with anyio.fail_after(WAIT_TIMEOUT), pytest.raises(TransportError, match="not connected"):
            await channel.send(b"hello?")
    finally:
        await channel.aclose()


@pytest.mark.anyio
async def test_reconnects_when_the_peer_comes_back(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint],
) -> None:
    a_end, b_end = tcp_endpoints
    transport = TcpTransport()
    async with open_pair(transport, a_end, b_end) as (a, b):
        await establish(a, b)
        await b.channel.aclose()
        async with pumped(await transport.open(b_end, a_end)) as b2:
            await establish(a, b2)
            with anyio.fail_after(WAIT_TIMEOUT):
                await b2.channel.send(b"back again")
                assert await a.next_frame() == b"back again"


@pytest.mark.anyio
async def test_oversize_length_from_peer_drops_only_that_connection(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint],
) -> None:
    a_end, b_end = tcp_endpoints
    async with open_pair(TcpTransport(), a_end, b_end) as (a, b):
        await establish(a, b)
        with anyio.fail_after(WAIT_TIMEOUT):
            intruder = await anyio.connect_tcp(str(a_end.address), a_end.port)
            async with intruder:
                await intruder.send(struct.pack(">I", MAX_FRAME_SIZE + 1) + b"junk")
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await intruder.receive()  # a closed it
            await b.channel.send(b"unaffected")
            assert await a.next_frame() == b"unaffected"


@pytest.mark.anyio
async def test_frames_split_across_segments_are_reassembled(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint],
) -> None:
    a_end, b_end = tcp_endpoints
    async with open_pair(TcpTransport(), a_end, b_end) as (a, _b):
        with anyio.fail_after(WAIT_TIMEOUT):
            peer = await anyio.connect_tcp(str(a_end.address), a_end.port)
            async with peer:
                wire = encode_length_prefixed(b"first") + encode_length_prefixed(b"second")
                for i in range(len(wire)):  # one byte per segment
                    await peer.send(wire[i : i + 1])
                assert await a.next_frame() == b"first"
                assert await a.next_frame() == b"second"
