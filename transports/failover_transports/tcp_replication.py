"""Replication streams over TCP: whole messages, reliable and ordered.

Implements ``failover.transport.ReplicationTransport``. Each message travels
as a 4-byte big-endian length and its bytes (at most ``MAX_MESSAGE_SIZE``).
Nagle's algorithm is off (anyio sets TCP_NODELAY), so a small message leaves
at once.

Guarantees of a ``TcpMessageStream``: messages arrive exactly once, whole and
in order, or the stream breaks and every later call raises
``TransportError``. A ``receive`` cancelled half-way keeps what it read for the
next call, so cancellation never loses or splits a message. A ``send``
cancelled half-way breaks the stream (the peer would see a cut message):
the stream is closed and later calls raise.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from pydantic import BaseModel

from failover.errors import TransportError
from failover.transport import MessageListener, MessageStream
from failover_transports.edge import closed_error, map_errors
from failover_transports.framing import FramingError
from failover_transports.tcp import TcpEndpoint

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_READ_SIZE = 256 * 1024


class TcpMessageStream:
    """One connected replication stream; see the module docstring."""

    def __init__(self, stream: SocketStream, what: str) -> None:
        self._stream = stream
        self._what = what
        self._buffer = bytearray()
        self._send_lock = anyio.Lock()
        self._receive_lock = anyio.Lock()
        self._closed = False

    async def send(self, message: bytes) -> None:
        """Send one whole message, waiting for the peer's flow control as needed.

        Raises TransportError when the stream is broken or closed, or the
        message exceeds MAX_MESSAGE_SIZE.
        """
        if self._closed:
            raise closed_error(self._what)
        if len(message) > MAX_MESSAGE_SIZE:
            raise TransportError(f"{self._what}: message of {len(message)} bytes is too large")
        async with self._send_lock:
            done = False
            try:
                with map_errors(f"{self._what}: send"):
                    await self._stream.send(_LENGTH.pack(len(message)) + message)
                done = True
            finally:
                if not done:
                    await self.aclose()

    async def receive(self) -> bytes:
        """Wait for the next whole message.

        Raises TransportError when the peer closed or broke the stream, sent a
        length above MAX_MESSAGE_SIZE (the stream is then closed), or the
        stream is closed.
        """
        async with self._receive_lock:
            while True:
                if self._closed:
                    raise closed_error(self._what)
                try:
                    message = self._take_message()
                except FramingError as exc:
                    await self.aclose()
                    raise TransportError(f"{self._what}: {exc}") from exc
                if message is not None:
                    return message
                with map_errors(f"{self._what}: receive"):
                    self._buffer += await self._stream.receive(_READ_SIZE)

    def _take_message(self) -> bytes | None:
        if len(self._buffer) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > MAX_MESSAGE_SIZE:
            raise FramingError(f"peer announced a {length}-byte message")
        end = _LENGTH.size + length
        if len(self._buffer) < end:
            return None
        message = bytes(self._buffer[_LENGTH.size : end])
        del self._buffer[:end]
        return message

    async def aclose(self) -> None:
        """Close the stream (idempotent, prompt); the peer's receive then raises."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


class TcpMessageListener:
    """Accepts replication streams on one listening socket."""

    def __init__(self, listener: SocketListener, what: str) -> None:
        self._listener = listener
        self._what = what

    async def accept(self) -> MessageStream:
        """Wait for the next incoming stream; raises TransportError once closed."""
        with map_errors(f"{self._what}: accept"):
            stream = await self._listener.accept()
        peer = stream.extra(SocketAttribute.remote_address)
        return TcpMessageStream(stream, f"{self._what} <- {peer}")


class TcpReplicationTransport:
    """Reliable ordered message streams between the nodes over TCP."""

    name = "tcp-replication"
    endpoint_model: type[BaseModel] = TcpEndpoint

    def listen(self, local: BaseModel) -> AbstractAsyncContextManager[MessageListener]:
        """Listen on ``local``: entering binds (TransportError if it cannot), leaving closes."""
        if not isinstance(local, TcpEndpoint):
            raise TypeError("tcp endpoints must be TcpEndpoint instances")
        return self._listening(local)

    @asynccontextmanager
    async def _listening(self, local: TcpEndpoint) -> AsyncIterator[MessageListener]:
        what = f"tcp replication {local.address}:{local.port}"
        with map_errors(f"{what}: listen"):
            multi = await anyio.create_tcp_listener(
                local_host=str(local.address), local_port=local.port
            )
        try:
            listener = multi.listeners[0]
            assert isinstance(listener, SocketListener)
            yield TcpMessageListener(listener, what)
        finally:
            with anyio.CancelScope(shield=True):
                await multi.aclose()

    async def connect(self, remote: BaseModel, timeout: float) -> MessageStream:
        """Connect to ``remote`` within ``timeout`` seconds; TransportError if not."""
        if not isinstance(remote, TcpEndpoint):
            raise TypeError("tcp endpoints must be TcpEndpoint instances")
        what = f"tcp replication -> {remote.address}:{remote.port}"
        with map_errors(f"{what}: connect"), anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(str(remote.address), remote.port)
        return TcpMessageStream(stream, what)
