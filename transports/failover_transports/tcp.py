"""TCP heartbeat transport: length-prefixed frames over a self-healing connection.

Both nodes listen on their own endpoint and dial the peer's; whichever
connections are up are kept (at most ``MAX_CONNECTIONS``): frames are sent on
the newest and received from all. A dropped connection is redialled with
exponential backoff (``MIN_BACKOFF`` doubling to ``MAX_BACKOFF``; reset when a
frame arrives), while the peer may dial in at any time.

Where the background work runs: accepting, dialling and reading happen in a
task group that lives inside ``receive()``. The channel therefore owns no task
outside a call, so ``open``/``aclose`` may be called from any task, and the link
heals as long as some task is waiting in ``receive()`` (the runtime always
has one per link). ``receive`` does not fail when the connection drops: it
keeps waiting while the channel reconnects, and raises ``TransportError``
only once the channel is closed or the listener fails.

``send`` raises ``TransportError`` at once while no connection is up, and
after ``SEND_TIMEOUT`` if the connection cannot take the frame (that
connection is then dropped). A frame sent just before the connection broke
may be lost.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup
from pydantic import BaseModel, ConfigDict, Field

from failover.errors import TransportError
from failover.transport import MAX_FRAME_SIZE, HeartbeatChannel
from failover_transports.edge import IO_ERRORS, check_frame_size, closed_error, map_errors
from failover_transports.framing import (
    FramingError,
    LengthPrefixedDecoder,
    encode_length_prefixed,
)

MIN_BACKOFF = 0.05
MAX_BACKOFF = 2.0
CONNECT_TIMEOUT = 2.0
SEND_TIMEOUT = 0.1
MAX_CONNECTIONS = 4
_READ_SIZE = 65536
_READ_ERRORS: tuple[type[Exception], ...] = (*IO_ERRORS, FramingError)


class TcpEndpoint(BaseModel):
    """One node's end of a TCP link: where it listens, and where the peer dials it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: IPv4Address | IPv6Address
    port: Annotated[int, Field(ge=1, le=65535)]


@dataclass(eq=False)
class _Connection:
    stream: SocketStream
    decoder: LengthPrefixedDecoder = field(
        default_factory=lambda: LengthPrefixedDecoder(MAX_FRAME_SIZE)
    )
    send_lock: anyio.Lock = field(default_factory=anyio.Lock)


class TcpChannel:
    """An open TCP link; see the module docstring for its guarantees."""

    def __init__(self, listener: SocketListener, local: TcpEndpoint, remote: TcpEndpoint) -> None:
        self._listener = listener
        self._remote = remote
        # Dial from our own address so the peer sees a predictable source.
        self._dial_from = None if local.address.is_unspecified else str(local.address)
        self._what = f"tcp {local.address}:{local.port}"
        self._connections: list[_Connection] = []  # oldest first
        self._frames: deque[bytes] = deque()
        self._closed = False
        self._receiving = False
        self._pump: anyio.CancelScope | None = None
        self._failure: TransportError | None = None
        self._dialing = False
        self._backoff = MIN_BACKOFF
        self._next_dial = -math.inf

    async def send(self, frame: bytes) -> None:
        """Send one frame on the newest connection, within SEND_TIMEOUT.

        Raises TransportError when closed, oversize, not connected, or the
        connection fails or stalls (that connection is dropped).
        """
        if self._closed:
            raise closed_error(self._what)
        check_frame_size(frame, self._what)
        if not self._connections:
            raise TransportError(f"{self._what}: not connected to the peer")
        connection = self._connections[-1]
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
        """Wait for the next frame from any connection, reconnecting meanwhile.

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
            for connection in list(self._connections):
                await self._drop(connection)
            await self._listener.aclose()

    async def _pump_until_frame(self) -> None:
        """Accept, dial and read until a frame is queued, a failure recorded, or closed."""
        async with anyio.create_task_group() as tg:
            self._pump = tg.cancel_scope
            tg.start_soon(self._accept_loop, tg)
            for connection in self._connections:
                tg.start_soon(self._read_loop, connection)
            if not self._connections:
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
        # Accept on the raw socket once it is readable rather than through
        # listener.accept(): on asyncio, an accept cancelled (at aclose) just as a
        # connection arrives makes the event loop raise InvalidStateError.
        sock = self._listener.extra(SocketAttribute.raw_socket)
        try:
            while True:
                await anyio.wait_readable(sock)
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # the connection went away before we took it
                stream = await SocketStream.from_socket(conn)
                await self._adopt(stream, tg)
        except IO_ERRORS as exc:
            if not self._closed:
                self._failure = TransportError(f"{self._what}: listener failed: {exc!r}")
            self._stop_pump()

    async def _dial_loop(self, tg: TaskGroup) -> None:
        try:
            while not self._connections:
                await anyio.sleep_until(self._next_dial)
                if self._connections:
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
                await self._adopt(stream, tg)
        finally:
            self._dialing = False

    def _schedule_redial(self) -> None:
        self._next_dial = anyio.current_time() + self._backoff
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)

    async def _adopt(self, stream: SocketStream, tg: TaskGroup) -> None:
        if self._closed:  # aclose already closed the others: this one would leak
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            return
        connection = _Connection(stream)
        self._connections.append(connection)
        if len(self._connections) > MAX_CONNECTIONS:
            await self._drop(self._connections[0])
        tg.start_soon(self._read_loop, connection)

    async def _read_loop(self, connection: _Connection) -> None:
        try:
            while True:
                chunk = await connection.stream.receive(_READ_SIZE)
                frames = connection.decoder.feed(chunk)
                if frames:
                    self._backoff = MIN_BACKOFF  # this peer speaks our protocol
                    self._frames.extend(frames)
                    self._stop_pump()
        except _READ_ERRORS:
            await self._drop(connection)

    async def _drop(self, connection: _Connection) -> None:
        if connection in self._connections:
            self._connections.remove(connection)
            if not self._connections and not self._closed:
                self._schedule_redial()
                self._stop_pump()  # restart the pump so that it dials again
        with anyio.CancelScope(shield=True):
            await connection.stream.aclose()


class TcpTransport:
    """The ``tcp`` entry point."""

    name = "tcp"
    endpoint_model: type[BaseModel] = TcpEndpoint

    async def open(self, local: BaseModel, remote: BaseModel) -> HeartbeatChannel:
        """Start listening on ``local``; raises TransportError if it cannot bind.

        Does not wait for the peer: connections are made while a task receives.
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
        return TcpChannel(listener, local, remote)
