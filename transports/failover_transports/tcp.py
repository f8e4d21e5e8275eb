"""TCP heartbeat transport: length-prefixed frames over a self-healing connection.

Both nodes listen on their own endpoint and dial the peer's. With a cluster
key (the runtime passes a ``LinkAuth``), every connection, dialled or
accepted, first runs the link handshake (docs/wire.md): each end sends a
hello with a fresh nonce; the dialer then proves the cluster key, and the
acceptor proves it in turn only once the dialer's proof verified. Until the
other end's proof has verified, a connection is *unproven*: nothing is sent on
it but the handshake (to a stranger who connects: the hello alone), nothing
it carries is delivered, anything but the handshake closes it, and it is
closed if the proof is not done within ``PROOF_TIMEOUT``. At most
``MAX_UNPROVEN`` accepted connections from the peer's address, and as many
from anywhere else, may be unproven at once (a new one closes the oldest
unproven one of its kind, never a proven one): strangers elsewhere cannot push
out the peer's connection while it proves the key. Proven connections are kept
(at most ``MAX_CONNECTIONS``, the oldest closed first): frames are sent on the
newest proven one and received from all. So a stranger who connects receives
the hello and nothing else, and cannot take the link from the peer.

Without a key (``insecure: true``) there is no handshake: every connection is
used as it comes, as before version 2 of the wire format, and anyone who can
connect can take the link (docs/plugins.md says so).

A link with no proven connection is redialled with exponential backoff
(``MIN_BACKOFF`` doubling to ``MAX_BACKOFF``; reset when a connection is
proven or a frame arrives), while the peer may dial in at any time.

Where the background work runs: accepting, dialling, proving and reading
happen in a task group that lives inside ``receive()``. The channel therefore
owns no task outside a call, so ``open``/``aclose`` may be called from any
task, and the link heals as long as some task is waiting in ``receive()``
(the runtime always has one per link). ``receive`` does not fail when the
connection drops: it keeps waiting while the channel reconnects, and raises
``TransportError`` only once the channel is closed or the listener fails.

``send`` raises ``TransportError`` at once while no proven connection is up,
and after ``SEND_TIMEOUT`` if the connection cannot take the frame (that
connection is then dropped). A frame sent just before the connection broke
may be lost.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup
from pydantic import BaseModel, ConfigDict, Field

from failover.errors import TransportError
from failover.transport import MAX_FRAME_SIZE, HeartbeatChannel
from failover.wire import MAX_LINK_MESSAGE, HandshakeFailed, LinkAuth, LinkHandshake
from failover_transports.edge import (
    IO_ERRORS,
    accept_stream,
    check_frame_size,
    closed_error,
    map_errors,
)
from failover_transports.framing import (
    FramingError,
    LengthPrefixedDecoder,
    encode_length_prefixed,
)

log = structlog.get_logger("failover.transports.tcp")

MIN_BACKOFF = 0.05
MAX_BACKOFF = 2.0
CONNECT_TIMEOUT = 2.0
SEND_TIMEOUT = 0.1
PROOF_TIMEOUT = 2.0
"""Seconds a new connection has to complete the handshake (one and a half round trips)."""
MAX_CONNECTIONS = 4
"""Proven connections kept; a newer proven one closes the oldest."""
MAX_UNPROVEN = 8
"""Accepted connections still proving the key, counted apart for those from the
peer's address and those from anywhere else; a new one closes the oldest of its kind."""
_READ_SIZE = 65536
_READ_ERRORS: tuple[type[Exception], ...] = (*IO_ERRORS, FramingError, HandshakeFailed)


class TcpEndpoint(BaseModel):
    """One node's end of a TCP link: where it listens, and where the peer dials it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: IPv4Address | IPv6Address
    port: Annotated[int, Field(ge=1, le=65535)]


@dataclass(eq=False)
class _Connection:
    stream: SocketStream
    dialer: bool
    handshake: LinkHandshake | None
    """None: nothing to prove (insecure mode)."""
    from_peer: bool
    """Accepted from the peer's address: strangers elsewhere never push it out."""
    deadline: float
    """When an unproven connection is closed."""
    decoder: LengthPrefixedDecoder
    """Takes handshake-sized messages until the connection is proven (a stranger
    chooses no buffer size), frames up to MAX_FRAME_SIZE from then on."""
    send_lock: anyio.Lock = field(default_factory=anyio.Lock)
    hello_sent: bool = False
    settled: anyio.Event = field(default_factory=anyio.Event)
    """Set once proven or dropped."""

    @property
    def proven(self) -> bool:
        return self.handshake is None or self.handshake.proven


class TcpChannel:
    """An open TCP link; see the module docstring for its guarantees."""

    def __init__(
        self,
        listener: SocketListener,
        local: TcpEndpoint,
        remote: TcpEndpoint,
        auth: LinkAuth | None = None,
    ) -> None:
        self._listener = listener
        self._remote = remote
        self._auth = auth
        # Dial from our own address so the peer sees a predictable source.
        self._dial_from = None if local.address.is_unspecified else str(local.address)
        self._what = f"tcp {local.address}:{local.port}"
        self._proven: list[_Connection] = []  # oldest first
        self._unproven: list[_Connection] = []  # oldest first
        self._dialed: _Connection | None = None  # our own connection while it proves
        self._frames: deque[bytes] = deque()
        self._closed = False
        self._receiving = False
        self._pump: anyio.CancelScope | None = None
        self._failure: TransportError | None = None
        self._dialing = False
        self._backoff = MIN_BACKOFF
        self._next_dial = -math.inf

    async def send(self, frame: bytes) -> None:
        """Send one frame on the newest proven connection, within SEND_TIMEOUT.

        Raises TransportError when closed, oversize, not connected, or the
        connection fails or stalls (that connection is dropped).
        """
        if self._closed:
            raise closed_error(self._what)
        check_frame_size(frame, self._what)
        if not self._proven:
            proving = f" ({len(self._unproven)} proving the key)" if self._unproven else ""
            raise TransportError(f"{self._what}: not connected to the peer{proving}")
        connection = self._proven[-1]
        started = done = False
        try:
            with map_errors(f"{self._what}: send"), anyio.fail_after(SEND_TIMEOUT):
                async with connection.send_lock:
                    started = True
                    await connection.stream.send(encode_length_prefixed(frame))
                    done = True
        finally:
            if started and not done:
                # A frame may be half written: the stream's framing is lost.
                await self._drop(connection)

    async def receive(self) -> bytes:
        """Wait for the next frame from any proven connection, reconnecting meanwhile.

        Raises TransportError when the channel is closed (also while waiting)
        or cannot accept connections any more. Only one task may receive.
        """
        if self._receiving:
            raise RuntimeError(f"{self._what}: receive() is already running in another task")
        self._receiving = True
        try:
            while True:
                if self._closed:
                    raise closed_error(self._what)
                if self._failure is not None:
                    raise self._failure
                if self._frames:
                    return self._frames.popleft()
                await self._pump_until_frame()
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close every connection and the listener (idempotent, prompt).

        A task waiting in ``receive`` gets TransportError.
        """
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
        with anyio.CancelScope(shield=True):
            for connection in [*self._proven, *self._unproven]:
                await self._drop(connection)
            await self._listener.aclose()

    async def _pump_until_frame(self) -> None:
        """Accept, dial, prove and read until a frame is queued, a failure recorded, or closed."""
        async with anyio.create_task_group() as tg:
            self._pump = tg.cancel_scope
            tg.start_soon(self._accept_loop, tg)
            for connection in [*self._proven, *self._unproven]:
                tg.start_soon(self._read_loop, connection)
            if not self._proven:
                self._start_dialing(tg)
        self._pump = None

    def _stop_pump(self) -> None:
        if self._pump is not None:
            self._pump.cancel()

    def _start_dialing(self, tg: TaskGroup) -> None:
        if not self._dialing and not self._closed:
            self._dialing = True
            tg.start_soon(self._dial_loop, tg)

    async def _accept_loop(self, tg: TaskGroup) -> None:
        # accept_stream, not listener.accept(): see there (asyncio's cancelled accept)
        try:
            while True:
                stream = await accept_stream(self._listener)
                await self._adopt(stream, tg, dialer=False)
        except IO_ERRORS as exc:
            if not self._closed:
                self._failure = TransportError(f"{self._what}: listener failed: {exc!r}")
            self._stop_pump()

    async def _dial_loop(self, tg: TaskGroup) -> None:
        """Dial until a connection is proven; one dialled connection proves at a time."""
        try:
            while not self._proven:
                pending = self._dialed
                if pending is not None:
                    await pending.settled.wait()
                    self._dialed = None
                    if not pending.proven:
                        self._schedule_redial()
                    continue
                await anyio.sleep_until(self._next_dial)
                if self._proven:
                    break
                try:
                    with anyio.fail_after(CONNECT_TIMEOUT):
                        stream = await anyio.connect_tcp(
                            str(self._remote.address),
                            self._remote.port,
                            local_host=self._dial_from,
                        )
                except IO_ERRORS:
                    self._schedule_redial()
                    continue
                self._dialed = await self._adopt(stream, tg, dialer=True)
        finally:
            self._dialing = False

    def _schedule_redial(self) -> None:
        self._next_dial = anyio.current_time() + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)

    async def _adopt(self, stream: SocketStream, tg: TaskGroup, *, dialer: bool) -> _Connection:
        handshake = None if self._auth is None else self._auth.handshake(dialer=dialer)
        connection = _Connection(
            stream,
            dialer,
            handshake,
            from_peer=not dialer and self._from_peer(stream),
            deadline=anyio.current_time() + PROOF_TIMEOUT,
            decoder=LengthPrefixedDecoder(
                MAX_FRAME_SIZE if handshake is None else MAX_LINK_MESSAGE
            ),
        )
        if self._closed:  # aclose already closed the others: this one would leak
            await self._drop(connection)
            return connection
        if connection.proven:
            await self._promote(connection)
        else:
            if not dialer:
                rivals = [
                    c
                    for c in self._unproven
                    if not c.dialer and c.from_peer == connection.from_peer
                ]
                if len(rivals) >= MAX_UNPROVEN:
                    log.debug("too many connections proving the key", link=self._what)
                    await self._drop(rivals[0])
            self._unproven.append(connection)
        tg.start_soon(self._read_loop, connection)
        return connection

    def _from_peer(self, stream: SocketStream) -> bool:
        """True when ``stream`` comes from the peer's configured address."""
        try:
            host = ip_address(str(stream.extra(SocketAttribute.remote_address)[0]))
        except (ValueError, TypeError, IndexError, OSError):
            return False
        if isinstance(host, IPv6Address) and host.ipv4_mapped is not None:
            host = host.ipv4_mapped
        return host == self._remote.address

    async def _promote(self, connection: _Connection) -> None:
        if connection in self._unproven:
            self._unproven.remove(connection)
        self._proven.append(connection)
        connection.decoder.max_payload = MAX_FRAME_SIZE
        connection.settled.set()
        self._backoff = MIN_BACKOFF  # this peer holds the key
        if len(self._proven) > MAX_CONNECTIONS:
            await self._drop(self._proven[0])

    async def _read_loop(self, connection: _Connection) -> None:
        # Restarted with the pump (after each frame delivered): the handshake's
        # state and the proof deadline live in the connection, not in this task.
        try:
            while True:
                with anyio.CancelScope(
                    deadline=math.inf if connection.proven else connection.deadline
                ):
                    await self._read(connection)
                if not connection.proven:  # _read only ends at the proof deadline
                    log.debug("connection closed: no proof of the key in time", link=self._what)
                    break
                # The deadline fired just as the proof arrived: read on.
        except _READ_ERRORS as exc:
            if isinstance(exc, HandshakeFailed):
                log.debug("connection refused: handshake failed", link=self._what, error=str(exc))
        await self._drop(connection)

    async def _read(self, connection: _Connection) -> None:
        if not connection.hello_sent and connection.handshake is not None:
            await self._send_handshake(connection, connection.handshake.hello)
            connection.hello_sent = True
        while True:
            # One at a time: the frames after the proof may be larger than a handshake message.
            while (message := connection.decoder.pop()) is not None:
                if connection.proven:
                    self._deliver(message)
                else:
                    await self._prove(connection, message)
            connection.decoder.push(await connection.stream.receive(_READ_SIZE))

    async def _prove(self, connection: _Connection, message: bytes) -> None:
        assert connection.handshake is not None
        reply = connection.handshake.receive(message)
        if reply is not None:
            await self._send_handshake(connection, reply)
        if connection.handshake.proven:
            await self._promote(connection)

    async def _send_handshake(self, connection: _Connection, message: bytes) -> None:
        # Shielded: a handshake message cut in half by a pump restart would break the framing.
        with anyio.CancelScope(shield=True), anyio.fail_after(SEND_TIMEOUT):
            async with connection.send_lock:
                await connection.stream.send(encode_length_prefixed(message))

    def _deliver(self, frame: bytes) -> None:
        self._backoff = MIN_BACKOFF  # this peer speaks our protocol
        self._frames.append(frame)
        self._stop_pump()

    async def _drop(self, connection: _Connection) -> None:
        connection.settled.set()
        if connection in self._unproven:
            self._unproven.remove(connection)
        if connection in self._proven:
            self._proven.remove(connection)
            if not self._proven and not self._closed:
                self._schedule_redial()
                self._stop_pump()  # restart the pump so that it dials again
        with anyio.CancelScope(shield=True):
            await connection.stream.aclose()


class TcpTransport:
    """The ``tcp`` entry point."""

    name = "tcp"
    endpoint_model: type[BaseModel] = TcpEndpoint
    connection_auth = True
    """Every connection proves the cluster key (``ConnectionAuthTransport``)."""

    async def open(
        self, local: BaseModel, remote: BaseModel, *, auth: LinkAuth | None = None
    ) -> HeartbeatChannel:
        """Start listening on ``local``; raises TransportError if it cannot bind.

        Does not wait for the peer: connections are made while a task receives.
        With ``auth``, each connection proves the cluster key before it is used.
        """
        if not isinstance(local, TcpEndpoint) or not isinstance(remote, TcpEndpoint):
            raise TypeError("tcp endpoints must be TcpEndpoint instances")
        with map_errors(f"tcp {local.address}:{local.port}: listen"):
            multi = await anyio.create_tcp_listener(
                local_host=str(local.address), local_port=local.port
            )
        listener = multi.listeners[0] if len(multi.listeners) == 1 else None
        if not isinstance(listener, SocketListener):
            await multi.aclose()
            raise TransportError(f"tcp {local.address}:{local.port}: expected one listening socket")
        return TcpChannel(listener, local, remote, auth)
