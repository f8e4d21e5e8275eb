"""Conformance suite for heartbeat transports, shipped so plugins can run it too.

Subclass ``TransportContract`` in a test module, name your transport and
provide the ``endpoint_options`` fixture (two raw option mappings, one per
node, reachable from each other on this machine)::

    from failover.testing.transport_contract import TransportContract, free_port

    class TestPipeTransport(TransportContract):
        transport_name = "pipe"            # your entry point, loaded like the daemon does
        after_peer_close = "raises"        # or "drops": what send does once the peer closed
        ordered = False                    # True for stream transports
        bad_options = [{"path": ""}]       # options endpoint_model must reject

        @pytest.fixture
        def endpoint_options(self, tmp_path):
            return {"path": str(tmp_path / "a")}, {"path": str(tmp_path / "b")}

``ReplicationContract`` does the same for replication stream transports.

A transport that declares ``connection_auth`` (``ConnectionAuthTransport``)
runs the suite as the daemon uses it: each channel is opened with a
``LinkAuth`` (``contract_link_auths``), so every connection proves the key.
Override the ``link_auths`` fixture to return None to run it without.

Tests run under anyio's pytest plugin (``@pytest.mark.anyio``). Each channel
is driven as the daemon drives it: one task always waiting in ``receive``
(``ChannelPump``), sends from another. Before exchanging frames the suite
sends probe frames until each side has heard the other (``establish``), since
some transports connect only after ``open`` returns.

The module also ships test helpers: ``free_port``, ``socat_pty_pair`` and
``install_plugin_package``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ValidationError

from failover.errors import TransportError
from failover.plugins import load_transport
from failover.transport import (
    MAX_FRAME_SIZE,
    HeartbeatChannel,
    HeartbeatTransport,
    MessageStream,
    ReplicationTransport,
    open_channel,
    supports_connection_auth,
)
from failover.wire import FrameCodec, LinkAuth

PROBE = b"\xfe\xed-probe"
"""Frame ``establish`` sends; ``ChannelPump.next_frame`` skips it."""

ESTABLISH_TIMEOUT = 15.0  # generous: an upper bound on waiting, not a performance claim
WAIT_TIMEOUT = 10.0
PROBE_INTERVAL = 0.05
BURST = 8
"""Frames every transport must accept back to back without raising."""

EndpointOptions = tuple[Mapping[str, Any], Mapping[str, Any]]
LinkAuths = tuple[LinkAuth, LinkAuth]
CONTRACT_CLUSTER = "contract"
CONTRACT_KEY = bytes(range(100, 132))


def contract_link_auths(key: bytes = CONTRACT_KEY) -> LinkAuths:
    """The link proofs of two nodes ``alpha`` and ``beta`` of one cluster under ``key``."""
    codec = FrameCodec(CONTRACT_CLUSTER, key)
    alpha, beta = codec.link_auth("alpha", "beta"), codec.link_auth("beta", "alpha")
    assert alpha is not None and beta is not None
    return alpha, beta


class ChannelPump:
    """Keeps one task in ``channel.receive()`` and queues what arrives, like the runtime."""

    def __init__(self, channel: HeartbeatChannel) -> None:
        self.channel = channel
        self.failure: BaseException | None = None
        self.stopped = anyio.Event()
        self._sink: MemoryObjectSendStream[bytes]
        self._inbox: MemoryObjectReceiveStream[bytes]
        self._sink, self._inbox = anyio.create_memory_object_stream[bytes](math.inf)

    async def run(self) -> None:
        """Receive until the channel fails; the failure is kept in ``failure``."""
        try:
            while True:
                self._sink.send_nowait(await self.channel.receive())
        except Exception as exc:
            self.failure = exc
        finally:
            self._sink.close()
            self.stopped.set()

    async def next_frame(self) -> bytes:
        """The next frame that is not a probe; fails the test if receive failed."""
        while True:
            frame = await self._next()
            if frame != PROBE:
                return frame

    async def wait_probe(self) -> None:
        """Wait until a probe arrives (anything before it is discarded)."""
        while await self._next() != PROBE:
            pass

    async def _next(self) -> bytes:
        try:
            return await self._inbox.receive()
        except anyio.EndOfStream:
            raise AssertionError(f"receive() failed: {self.failure!r}") from self.failure


@asynccontextmanager
async def pumped(channel: HeartbeatChannel) -> AsyncIterator[ChannelPump]:
    """Run a ``ChannelPump`` on ``channel`` for the block; close the channel on exit."""
    pump = ChannelPump(channel)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump.run)
            try:
                yield pump
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await channel.aclose()


@asynccontextmanager
async def open_pair(
    transport: HeartbeatTransport,
    a_end: BaseModel,
    b_end: BaseModel,
    auth: LinkAuths | None = None,
) -> AsyncIterator[tuple[ChannelPump, ChannelPump]]:
    """Open a channel on each endpoint (each facing the other), pumped; close both on exit.

    With ``auth`` (alpha's and beta's), a transport that supports it proves the key.
    """
    a_auth, b_auth = (None, None) if auth is None else auth
    async with (
        pumped(await open_channel(transport, a_end, b_end, a_auth)) as a,
        pumped(await open_channel(transport, b_end, a_end, b_auth)) as b,
    ):
        yield a, b


async def establish(a: ChannelPump, b: ChannelPump) -> None:
    """Send probes each way until each side has received one (sends may fail meanwhile)."""
    with anyio.fail_after(ESTABLISH_TIMEOUT):
        for source, sink in ((a, b), (b, a)):
            while True:
                with suppress(TransportError):
                    await source.channel.send(PROBE)
                with anyio.move_on_after(PROBE_INTERVAL):
                    await sink.wait_probe()
                    break


def sample_frames(count: int) -> list[bytes]:
    """Distinct frames of varied sizes, the first one empty."""
    return [
        i.to_bytes(4, "big")[: min(i, 4)] + bytes([i % 251]) * (i * 37 % 1400) for i in range(count)
    ]


def open_fd_count() -> int:
    """Number of file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def free_port(kind: Literal["tcp", "udp"], host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (the OS picked it)."""
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def install_plugin_package(source: Path, target: Path) -> None:
    """Build the plugin project in ``source`` and install it into ``target`` with pip.

    For tests that run failover in a subprocess with ``PYTHONPATH=target``,
    the way a user's installed plugin is found. Dependencies are not
    installed (they are already here). Uses the project's build backend from
    this environment when importable (no network), else lets pip fetch it.
    Raises ``subprocess.CalledProcessError`` if the build fails.
    """
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    command += ["--target", str(target), str(source)]
    if _build_backend_importable(source):
        command.append("--no-build-isolation")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(command, check=True, timeout=300, env=env)


def _build_backend_importable(source: Path) -> bool:
    with (source / "pyproject.toml").open("rb") as file:
        backend = tomllib.load(file).get("build-system", {}).get("build-backend", "")
    top = backend.split(".")[0].split(":")[0]
    return bool(top) and importlib.util.find_spec(top) is not None


@dataclass(frozen=True)
class PtyPair:
    """Two linked pseudo-terminals made by socat: bytes written to one come out of the other."""

    a: Path
    b: Path
    process: subprocess.Popen[bytes]

    def cut(self) -> None:
        """Kill socat (by PID): both ends vanish, like a pulled cable."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@contextmanager
def socat_pty_pair(directory: Path, startup_timeout: float = 10.0) -> Iterator[PtyPair]:
    """Start ``socat`` linking ``directory/ttyA`` and ``directory/ttyB``; kill it on exit.

    Returns once socat reports its transfer loop started. Skips the test if
    socat is not installed (Debian: ``apt-get install socat``).
    """
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    a, b = directory / "ttyA", directory / "ttyB"
    process = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pair = PtyPair(a, b, process)
    try:
        _wait_for_output(process, b"starting data transfer loop", startup_timeout)
        yield pair
    finally:
        pair.cut()
        if process.stderr is not None:
            process.stderr.close()


def _wait_for_output(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> None:
    assert process.stderr is not None
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while marker not in seen:
            if not selector.select(timeout):
                raise RuntimeError(f"socat did not start within {timeout} s: {seen!r}")
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"socat exited during startup: {seen!r}")
            seen += chunk


class TransportContract:
    """The behaviour every heartbeat transport must show. Subclass it (see module docs)."""

    transport_name: ClassVar[str]
    """Entry-point name in group ``failover.transports``."""
    ordered: ClassVar[bool] = True
    """Frames arrive in the order sent (stream transports). False: datagram semantics."""
    after_peer_close: ClassVar[Literal["raises", "drops"]]
    """What ``send`` does once the peer's channel is closed: eventually raise
    TransportError, or keep accepting frames that are then lost."""
    bad_options: ClassVar[Sequence[Mapping[str, Any]]] = ()
    """Option mappings ``endpoint_model`` must reject (at least one)."""
    frame_count: ClassVar[int] = 100

    @pytest.fixture
    def endpoint_options(self) -> EndpointOptions:
        """Override: raw options of two endpoints that can reach each other."""
        raise NotImplementedError("subclasses provide the endpoint_options fixture")

    @pytest.fixture
    def transport(self) -> HeartbeatTransport:
        return load_transport(self.transport_name)

    @pytest.fixture
    def link_auths(self, transport: HeartbeatTransport) -> LinkAuths | None:
        """What the daemon hands a transport that declares ``connection_auth``."""
        return contract_link_auths() if supports_connection_auth(transport) else None

    @pytest.fixture
    def endpoints(
        self, transport: HeartbeatTransport, endpoint_options: EndpointOptions
    ) -> tuple[BaseModel, BaseModel]:
        a, b = endpoint_options
        return transport.endpoint_model.model_validate(a), transport.endpoint_model.model_validate(
            b
        )

    def test_entry_point_gives_a_transport(self, transport: HeartbeatTransport) -> None:
        assert isinstance(transport, HeartbeatTransport)
        assert transport.name == self.transport_name
        assert issubclass(transport.endpoint_model, BaseModel)

    @pytest.mark.anyio
    async def test_round_trip_both_directions(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        async with open_pair(transport, *endpoints, link_auths) as (a, b):
            await establish(a, b)
            with anyio.fail_after(WAIT_TIMEOUT):
                await a.channel.send(b"ping from a")
                assert await b.next_frame() == b"ping from a"
                await b.channel.send(b"pong from b")
                assert await a.next_frame() == b"pong from b"

    @pytest.mark.anyio
    async def test_many_frames_arrive_whole(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        """Every frame arrives unmerged and uncut; in order for ordered transports.

        Frames go in bursts of BURST sent back to back (heartbeats are paced,
        so no transport has to queue more); datagram transports must not lose
        any on this machine.
        """
        frames = sample_frames(self.frame_count)
        got: list[bytes] = []
        async with open_pair(transport, *endpoints, link_auths) as (a, b):
            await establish(a, b)
            with anyio.fail_after(WAIT_TIMEOUT):
                for start in range(0, len(frames), BURST):
                    burst = frames[start : start + BURST]
                    for frame in burst:
                        await a.channel.send(frame)
                    got += [await b.next_frame() for _ in burst]
        if self.ordered:
            assert got == frames
        else:
            assert sorted(got) == sorted(frames)

    @pytest.mark.anyio
    async def test_max_size_frame_round_trips(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        frame = os.urandom(MAX_FRAME_SIZE)
        async with open_pair(transport, *endpoints, link_auths) as (a, b):
            await establish(a, b)
            with anyio.fail_after(WAIT_TIMEOUT):
                await b.channel.send(frame)
                assert await a.next_frame() == frame

    @pytest.mark.anyio
    async def test_oversize_frame_is_refused_and_link_survives(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        async with open_pair(transport, *endpoints, link_auths) as (a, b):
            await establish(a, b)
            with pytest.raises(TransportError):
                await a.channel.send(bytes(MAX_FRAME_SIZE + 1))
            with anyio.fail_after(WAIT_TIMEOUT):
                await a.channel.send(b"still here")
                assert await b.next_frame() == b"still here"

    @pytest.mark.anyio
    async def test_empty_frame_is_delivered(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        async with open_pair(transport, *endpoints, link_auths) as (a, b):
            await establish(a, b)
            with anyio.fail_after(WAIT_TIMEOUT):
                await a.channel.send(b"")
                assert await b.next_frame() == b""

    @pytest.mark.anyio
    async def test_aclose_is_idempotent_and_fails_receive_and_send(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        async with open_pair(transport, *endpoints, link_auths) as (a, b):
            await establish(a, b)
            with anyio.fail_after(WAIT_TIMEOUT):
                await a.channel.aclose()
                await a.stopped.wait()  # the receive pending in the pump returned
            assert isinstance(a.failure, TransportError)
            await a.channel.aclose()
            with pytest.raises(TransportError):
                await a.channel.receive()
            with pytest.raises(TransportError):
                await a.channel.send(b"after close")

    @pytest.mark.anyio
    async def test_send_after_peer_closed(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        """Per ``after_peer_close``: send eventually raises, or never raises."""
        async with open_pair(transport, *endpoints, link_auths) as (a, b):
            await establish(a, b)
            await b.channel.aclose()
            if self.after_peer_close == "drops":
                for _ in range(10):
                    await a.channel.send(b"into the void")
                return
            with anyio.fail_after(WAIT_TIMEOUT), pytest.raises(TransportError):
                while True:
                    await a.channel.send(b"into the void")
                    # The failure may need the peer's reset to come back first.
                    await anyio.sleep(PROBE_INTERVAL)

    def test_endpoint_model_rejects_bad_options(
        self, transport: HeartbeatTransport, endpoint_options: EndpointOptions
    ) -> None:
        assert self.bad_options, "list some invalid options in bad_options"
        unknown_key = {**endpoint_options[0], "no_such_option": 1}
        for options in [*self.bad_options, unknown_key]:
            with pytest.raises(ValidationError):
                transport.endpoint_model.model_validate(options)

    @pytest.mark.anyio
    async def test_open_and_close_leaks_no_file_descriptor(
        self,
        transport: HeartbeatTransport,
        endpoints: tuple[BaseModel, BaseModel],
        link_auths: LinkAuths | None,
    ) -> None:
        if not Path("/proc/self/fd").is_dir():
            pytest.skip("needs /proc/self/fd")

        async def cycle() -> None:
            async with open_pair(transport, *endpoints, link_auths) as (a, b):
                await establish(a, b)

        await cycle()  # warm up: the event loop may keep descriptors of its own
        before = open_fd_count()
        for _ in range(3):
            await cycle()
        # Some event loops release a closed socket on their next iteration.
        with anyio.fail_after(WAIT_TIMEOUT):
            while open_fd_count() > before:
                await anyio.sleep(0.01)


@asynccontextmanager
async def connected_streams(
    transport: ReplicationTransport, endpoint: BaseModel
) -> AsyncIterator[tuple[MessageStream, MessageStream]]:
    """Listen on ``endpoint``, connect to it: (client side, server side); all closed on exit."""
    async with transport.listen(endpoint) as listener:
        client = await transport.connect(endpoint, timeout=WAIT_TIMEOUT)
        try:
            with anyio.fail_after(WAIT_TIMEOUT):
                server = await listener.accept()
            try:
                yield client, server
            finally:
                await server.aclose()
        finally:
            await client.aclose()


class ReplicationContract:
    """The behaviour every ``ReplicationTransport`` must show.

    Subclasses provide the ``replication_transport`` fixture (an instance) and
    ``endpoint_options`` (raw options of one endpoint to listen on).
    """

    message_sizes: ClassVar[Sequence[int]] = (0, 1, 100, 65_536, 1_000_000)

    @pytest.fixture
    def replication_transport(self) -> ReplicationTransport:
        raise NotImplementedError("subclasses provide the replication_transport fixture")

    @pytest.fixture
    def endpoint_options(self) -> Mapping[str, Any]:
        raise NotImplementedError("subclasses provide the endpoint_options fixture")

    @pytest.fixture
    def endpoint(
        self, replication_transport: ReplicationTransport, endpoint_options: Mapping[str, Any]
    ) -> BaseModel:
        return replication_transport.endpoint_model.model_validate(endpoint_options)

    def test_is_a_replication_transport(self, replication_transport: ReplicationTransport) -> None:
        assert isinstance(replication_transport, ReplicationTransport)

    @pytest.mark.anyio
    async def test_messages_arrive_whole_and_in_order_both_ways(
        self, replication_transport: ReplicationTransport, endpoint: BaseModel
    ) -> None:
        messages = [os.urandom(size) for size in self.message_sizes] * 3
        async with connected_streams(replication_transport, endpoint) as (client, server):
            for sender, receiver in ((client, server), (server, client)):
                got: list[bytes] = []
                with anyio.fail_after(WAIT_TIMEOUT):
                    async with anyio.create_task_group() as tg:

                        async def send_all(to: MessageStream = sender) -> None:
                            for message in messages:
                                await to.send(message)

                        tg.start_soon(send_all)
                        got = [await receiver.receive() for _ in messages]
                assert got == messages

    @pytest.mark.anyio
    async def test_cancelled_receive_loses_nothing(
        self, replication_transport: ReplicationTransport, endpoint: BaseModel
    ) -> None:
        """Receives cancelled at arbitrary points still yield every message intact."""
        messages = [os.urandom(300_000) for _ in range(10)]
        async with connected_streams(replication_transport, endpoint) as (client, server):
            got: list[bytes] = []
            with anyio.fail_after(WAIT_TIMEOUT):
                async with anyio.create_task_group() as tg:

                    async def send_all() -> None:
                        for message in messages:
                            await client.send(message)

                    tg.start_soon(send_all)
                    while len(got) < len(messages):
                        with anyio.move_on_after(0.0005):
                            got.append(await server.receive())
            assert got == messages

    @pytest.mark.anyio
    async def test_a_receive_limit_refuses_a_longer_message(
        self, replication_transport: ReplicationTransport, endpoint: BaseModel
    ) -> None:
        """``receive(limit=N)`` takes a message of N bytes and refuses a longer one
        (``TransportError``): the data plane reads what a stranger sends that way."""
        async with connected_streams(replication_transport, endpoint) as (client, server):
            await client.send(b"x" * 100)
            await client.send(b"y" * 101)
            with anyio.fail_after(WAIT_TIMEOUT):
                assert await server.receive(limit=100) == b"x" * 100
                with pytest.raises(TransportError):
                    await server.receive(limit=100)

    @pytest.mark.anyio
    async def test_peer_close_makes_receive_raise(
        self, replication_transport: ReplicationTransport, endpoint: BaseModel
    ) -> None:
        async with connected_streams(replication_transport, endpoint) as (client, server):
            await client.send(b"last words")
            await client.aclose()
            with anyio.fail_after(WAIT_TIMEOUT):
                assert await server.receive() == b"last words"
                with pytest.raises(TransportError):
                    await server.receive()

    @pytest.mark.anyio
    async def test_aclose_is_idempotent_and_later_calls_raise(
        self, replication_transport: ReplicationTransport, endpoint: BaseModel
    ) -> None:
        async with connected_streams(replication_transport, endpoint) as (client, _server):
            await client.aclose()
            await client.aclose()
            with pytest.raises(TransportError):
                await client.send(b"x")
            with pytest.raises(TransportError):
                await client.receive()

    @pytest.mark.anyio
    async def test_connect_without_listener_raises(
        self, replication_transport: ReplicationTransport, endpoint: BaseModel
    ) -> None:
        with anyio.fail_after(WAIT_TIMEOUT), pytest.raises(TransportError):
            await replication_transport.connect(endpoint, timeout=WAIT_TIMEOUT / 2)

    @pytest.mark.anyio
    async def test_listening_twice_on_one_endpoint_raises(
        self, replication_transport: ReplicationTransport, endpoint: BaseModel
    ) -> None:
        async with replication_transport.listen(endpoint):
            with pytest.raises(TransportError):
                async with replication_transport.listen(endpoint):
                    pass
