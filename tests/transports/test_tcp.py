"""The tcp transport: the conformance suite (with and without the key proof), the
proof itself against strangers (issue 8: an idle connection took the link), and
reconnection and framing rules."""

from __future__ import annotations

import struct
from contextlib import suppress
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import anyio
import pytest
from anyio.abc import SocketStream, TaskGroup

from failover.errors import TransportError
from failover.testing.transport_contract import (
    ESTABLISH_TIMEOUT,
    PROBE_INTERVAL,
    WAIT_TIMEOUT,
    EndpointOptions,
    LinkAuths,
    TransportContract,
    contract_link_auths,
    establish,
    free_port,
    open_pair,
    pumped,
)
from failover.transport import MAX_FRAME_SIZE, supports_connection_auth
from failover.wire import (
    HELLO_SIZE,
    LINK_MAGIC,
    MAX_LINK_MESSAGE,
    HandshakeFailed,
    LinkAuth,
    LinkHandshake,
    LinkMessage,
)
from failover_transports import tcp
from failover_transports.framing import LengthPrefixedDecoder, encode_length_prefixed
from failover_transports.tcp import MAX_CONNECTIONS, MAX_UNPROVEN, TcpEndpoint, TcpTransport

AUTH = contract_link_auths()
SHORT_PROOF = 0.5  # the proof deadline in these tests, to keep them short


class TestTcpContract(TransportContract):
    """As the daemon runs it with a cluster key: every connection proves the key."""

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

    def test_declares_connection_auth(self, link_auths: LinkAuths | None) -> None:
        assert supports_connection_auth(TcpTransport()) and link_auths is not None


class TestTcpInsecureContract(TestTcpContract):
    """An ``insecure: true`` cluster: no key, no proof, connections used as they come."""

    @pytest.fixture
    def link_auths(self) -> LinkAuths | None:
        return None

    def test_declares_connection_auth(self, link_auths: LinkAuths | None) -> None:
        assert link_auths is None


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
@pytest.mark.parametrize("auth", [AUTH, None], ids=["proven", "insecure"])
async def test_reconnects_when_the_peer_comes_back(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint], auth: LinkAuths | None
) -> None:
    a_end, b_end = tcp_endpoints
    transport = TcpTransport()
    async with open_pair(transport, a_end, b_end, auth) as (a, b):
        await establish(a, b)
        await b.channel.aclose()
        b_auth = None if auth is None else auth[1]
        async with pumped(await transport.open(b_end, a_end, auth=b_auth)) as b2:
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


# --- strangers on the heartbeat port (issue 8: an idle connection took the link) ---


@dataclass(eq=False)
class Stranger:
    """A connection to a node's heartbeat port, made without the key; records what it gets."""

    stream: SocketStream
    received: bytearray = field(default_factory=bytearray)
    closed: anyio.Event = field(default_factory=anyio.Event)
    got_something: anyio.Event = field(default_factory=anyio.Event)

    async def listen(self) -> None:
        try:
            while True:
                self.received += await self.stream.receive()
                self.got_something.set()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            self.closed.set()

    def messages(self) -> list[bytes]:
        return LengthPrefixedDecoder(MAX_FRAME_SIZE).feed(bytes(self.received))


async def stranger(tg: TaskGroup, endpoint: TcpEndpoint, source: str | None = None) -> Stranger:
    connected = Stranger(
        await anyio.connect_tcp(str(endpoint.address), endpoint.port, local_host=source)
    )
    tg.start_soon(connected.listen)
    return connected


def only_a_hello(messages: list[bytes]) -> bool:
    """Nothing, or the one hello every new connection gets: never a frame."""
    if not messages:
        return True
    (hello,) = messages
    return len(hello) == HELLO_SIZE and hello[:4] == LINK_MAGIC and hello[5] == LinkMessage.HELLO


@pytest.mark.anyio
async def test_idle_strangers_neither_receive_heartbeats_nor_take_the_link(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strangers connect before the peer is there and while the link runs, more than
    both limits: the link carries every frame both ways, strangers get only a hello."""
    monkeypatch.setattr(tcp, "PROOF_TIMEOUT", SHORT_PROOF)
    a_end, b_end = tcp_endpoints
    transport = TcpTransport()
    everyone: list[Stranger] = []
    async with anyio.create_task_group() as tg:
        async with pumped(await transport.open(a_end, b_end, auth=AUTH[0])) as a:
            with anyio.fail_after(WAIT_TIMEOUT):
                early = [await stranger(tg, a_end) for _ in range(MAX_CONNECTIONS + 2)]
                for idle in early:
                    await idle.got_something.wait()  # accepted: a sent its hello
            everyone += early
            async with pumped(await transport.open(b_end, a_end, auth=AUTH[1])) as b:
                await establish(a, b)
                with anyio.fail_after(WAIT_TIMEOUT):
                    late = [
                        await stranger(tg, end)
                        for end in (a_end, b_end)
                        for _ in range(MAX_UNPROVEN + 2)
                    ]
                    for idle in late:
                        await idle.got_something.wait()
                everyone += late
                with anyio.fail_after(WAIT_TIMEOUT):
                    for i in range(50):
                        await a.channel.send(b"heartbeat from alpha %d" % i)
                        assert await b.next_frame() == b"heartbeat from alpha %d" % i
                        await b.channel.send(b"heartbeat from beta %d" % i)
                        assert await a.next_frame() == b"heartbeat from beta %d" % i
            with anyio.fail_after(WAIT_TIMEOUT):
                for idle in everyone:
                    await idle.closed.wait()  # the proof deadline closed every one
        tg.cancel_scope.cancel()
    assert len(everyone) == MAX_CONNECTIONS + 2 + 2 * (MAX_UNPROVEN + 2)
    got = [idle.messages() for idle in everyone]
    assert all(only_a_hello(messages) for messages in got), got


@pytest.mark.anyio
async def test_unproven_connections_are_bounded_in_number_apart_from_the_peers_address(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Strangers beyond MAX_UNPROVEN close the oldest unproven ones, not only the proof
    deadline; a flood from other addresses fills its own quota, so the connection from
    the peer's address (127.0.0.1 here), still proving, is never closed for it."""
    monkeypatch.setattr(tcp, "PROOF_TIMEOUT", 3600.0)  # only the limit can close them
    a_end, b_end = tcp_endpoints
    async with (
        pumped(await TcpTransport().open(a_end, b_end, auth=AUTH[0])),
        anyio.create_task_group() as tg,
    ):
        with anyio.fail_after(WAIT_TIMEOUT):
            proving = await stranger(tg, a_end, source=str(b_end.address))
            await proving.got_something.wait()
            flood = []
            for _ in range(2 * MAX_UNPROVEN):
                flood.append(await stranger(tg, a_end, source="127.0.0.2"))
                await flood[-1].got_something.wait()
            for pushed_out in flood[:MAX_UNPROVEN]:
                await pushed_out.closed.wait()
        assert not proving.closed.is_set()
        assert not any(idle.closed.is_set() for idle in flood[MAX_UNPROVEN:])
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_frames_from_a_stranger_are_dropped_with_its_connection(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint],
) -> None:
    a_end, b_end = tcp_endpoints
    async with (
        open_pair(TcpTransport(), a_end, b_end, AUTH) as (a, b),
        anyio.create_task_group() as tg,
    ):
        with anyio.fail_after(WAIT_TIMEOUT):
            intruder = await stranger(tg, a_end)
            await intruder.stream.send(encode_length_prefixed(b"forged heartbeat"))
            await intruder.closed.wait()  # a closed it at once: not a handshake message
            assert only_a_hello(intruder.messages())
        with anyio.fail_after(ESTABLISH_TIMEOUT):
            while True:  # not establish(): it would discard what came before its probe
                with suppress(TransportError):
                    await b.channel.send(b"the real one")
                with anyio.move_on_after(PROBE_INTERVAL):
                    # The first frame a delivers is the peer's: the forged one never came out.
                    assert await a.next_frame() == b"the real one"
                    break
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_stranger_announcing_a_large_message_is_closed_before_it_is_buffered(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the proof only handshake messages are read: a length prefix above the
    longest of them closes the connection at once, instead of buffering what the
    stranger announced (a heartbeat's 64 KiB) until the proof deadline."""
    monkeypatch.setattr(tcp, "PROOF_TIMEOUT", 3600.0)  # only the size limit can close it
    a_end, b_end = tcp_endpoints
    async with (
        pumped(await TcpTransport().open(a_end, b_end, auth=AUTH[0])),
        anyio.create_task_group() as tg,
    ):
        with anyio.fail_after(WAIT_TIMEOUT):
            intruder = await stranger(tg, a_end)
            await intruder.stream.send(struct.pack(">I", MAX_LINK_MESSAGE + 1) + LINK_MAGIC)
            await intruder.closed.wait()
        tg.cancel_scope.cancel()
    assert only_a_hello(intruder.messages()), intruder.messages()


@pytest.mark.anyio
async def test_a_stranger_who_says_hello_gets_the_hello_and_no_proof(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tcp, "PROOF_TIMEOUT", SHORT_PROOF)
    a_end, b_end = tcp_endpoints
    keyless = contract_link_auths(bytes(32))[1]  # the right cluster, not the key
    async with (
        pumped(await TcpTransport().open(a_end, b_end, auth=AUTH[0])),
        anyio.create_task_group() as tg,
    ):
        with anyio.fail_after(WAIT_TIMEOUT):
            intruder = await stranger(tg, a_end)
            hello = keyless.handshake(dialer=True).hello
            await intruder.stream.send(encode_length_prefixed(hello))
            await intruder.closed.wait()  # at the proof deadline
        tg.cancel_scope.cancel()
    assert only_a_hello(intruder.messages()), intruder.messages()


@pytest.mark.anyio
async def test_a_handshake_relayed_between_the_two_nodes_proves_nothing(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint],
) -> None:
    """A stranger connects to both nodes and relays their handshakes to each other:
    each node accepted its connection, so each answers as an acceptor, and each wants
    a dialer's proof. Neither connection is ever used."""
    a_end, b_end = tcp_endpoints
    nowhere = TcpEndpoint(address=IPv4Address("127.0.0.1"), port=free_port("tcp"))
    transport = TcpTransport()
    async with (
        pumped(await transport.open(a_end, nowhere, auth=AUTH[0])) as a,
        pumped(await transport.open(b_end, nowhere, auth=AUTH[1])) as b,
        anyio.create_task_group() as tg,
    ):
        with anyio.fail_after(WAIT_TIMEOUT):
            to_a = await anyio.connect_tcp(str(a_end.address), a_end.port)
            to_b = await anyio.connect_tcp(str(b_end.address), b_end.port)
            closed = anyio.Event()

            async def pipe(source: SocketStream, sink: SocketStream) -> None:
                try:
                    while True:
                        await sink.send(await source.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    closed.set()

            tg.start_soon(pipe, to_a, to_b)
            tg.start_soon(pipe, to_b, to_a)
            await closed.wait()  # a node closed the relayed connection
        for node in (a, b):
            with pytest.raises(TransportError, match="not connected"):
                await node.channel.send(b"heartbeat")
        tg.cancel_scope.cancel()
        await to_a.aclose()
        await to_b.aclose()


def counting_refusals(auth: LinkAuth, monkeypatch: pytest.MonkeyPatch) -> list[HandshakeFailed]:
    """Every handshake ``auth`` makes from now on adds to the list each time it refuses."""
    refused: list[HandshakeFailed] = []
    make = auth.handshake

    def handshake(*, dialer: bool, nonce: bytes | None = None) -> LinkHandshake:
        made = make(dialer=dialer, nonce=nonce)
        receive = made.receive

        def counted(message: bytes) -> bytes | None:
            try:
                return receive(message)
            except HandshakeFailed as exc:
                refused.append(exc)
                raise

        monkeypatch.setattr(made, "receive", counted)
        return made

    monkeypatch.setattr(auth, "handshake", handshake)
    return refused


@pytest.mark.anyio
async def test_a_node_with_another_key_never_gets_the_link(
    tcp_endpoints: tuple[TcpEndpoint, TcpEndpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    a_end, b_end = tcp_endpoints
    alpha, beta = contract_link_auths()[0], contract_link_auths(bytes(32))[1]
    refused = [counting_refusals(auth, monkeypatch) for auth in (alpha, beta)]
    async with open_pair(TcpTransport(), a_end, b_end, (alpha, beta)) as (a, b):
        with anyio.fail_after(WAIT_TIMEOUT):
            # Until each node refused the other's proof three times (each dials and is
            # dialled again and again), neither ever has a connection to send on.
            while min(map(len, refused)) < 3:
                for node in (a, b):
                    with pytest.raises(TransportError, match="not connected"):
                        await node.channel.send(b"heartbeat")
                await anyio.sleep(0.01)
    assert all("does not verify" in str(exc) for exc in refused[0] + refused[1])
