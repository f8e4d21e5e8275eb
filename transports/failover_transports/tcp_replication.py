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

import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener
from anyio.streams.tls import TLSStream
from pydantic import BaseModel

from failover.errors import TransportError
from failover.transport import MessageListener, MessageStream
from failover_transports.edge import accept_stream, closed_error, map_errors
from failover_transports.framing import FramingError, LengthPrefixedDecoder, encode_length_prefixed
from failover_transports.tcp import TcpEndpoint

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
_READ_SIZE = 256 * 1024


class TcpMessageStream:
    """One connected replication stream; see the module docstring."""

    def __init__(
        self, stream: ByteStream, what: str, *, tls_server: ssl.SSLContext | None = None
    ) -> None:
        self._stream = stream
        self._what = what
        self._decoder = LengthPrefixedDecoder(MAX_MESSAGE_SIZE)
        self._send_lock = anyio.Lock()
        self._receive_lock = anyio.Lock()
        self._tls_lock = anyio.Lock()
        self._tls_pending = tls_server
        self._closed = False

    async def _ready(self) -> ByteStream:
        """The byte stream, after the server side's TLS handshake (done on first
        use, so that it runs under the caller's deadline, never in ``accept``)."""
        if self._tls_pending is not None:
            async with self._tls_lock:
                context, self._tls_pending = self._tls_pending, None
                if context is not None:
                    try:
                        self._stream = await _tls_wrap(
                            self._stream, context, self._what, server=True
                        )
                    except BaseException:  # cancelled half-way too: the stream is unusable
                        self._closed = True
                        with anyio.CancelScope(shield=True):
                            await self._stream.aclose()
                        raise
        if self._closed:
            raise closed_error(self._what)
        return self._stream

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
            stream = await self._ready()
            done = False
            try:
                with map_errors(f"{self._what}: send"):
                    await stream.send(encode_length_prefixed(message))
                done = True
            finally:
                if not done:
                    await self.aclose()

    async def receive(self, *, limit: int | None = None) -> bytes:
        """Wait for the next whole message.

        Raises TransportError when the peer closed or broke the stream, sent a
        length above ``limit`` or MAX_MESSAGE_SIZE, whichever is lower (the stream
        is then closed, before that message is buffered), or the stream is closed.
        """
        async with self._receive_lock:
            self._decoder.max_payload = min(
                MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE if limit is None else limit
            )
            while True:
                if self._closed:
                    raise closed_error(self._what)
                try:
                    message = self._decoder.pop()
                except FramingError as exc:
                    await self.aclose()
                    raise TransportError(f"{self._what}: {exc}") from exc
                if message is not None:
                    return message
                stream = await self._ready()
                with map_errors(f"{self._what}: receive"):
                    self._decoder.push(await stream.receive(_READ_SIZE))

    async def aclose(self) -> None:
        """Close the stream (idempotent, prompt); the peer's receive then raises."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


class TcpMessageListener:
    """Accepts replication streams on one listening socket."""

    def __init__(
        self, listener: SocketListener, what: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self._listener = listener
        self._what = what
        self._tls = tls

    async def accept(self) -> MessageStream:
        """Wait for the next incoming stream; raises TransportError once closed.
        With TLS, the handshake runs on the stream's first send or receive (a
        client that fails it breaks that stream only, and never holds up
        ``accept``)."""
        with map_errors(f"{self._what}: accept"):
            stream = await accept_stream(self._listener)  # not listener.accept(): see there
        peer = stream.extra(SocketAttribute.remote_address)
        return TcpMessageStream(stream, f"{self._what} <- {peer}", tls_server=self._tls)


class TcpReplicationTransport:
    """Reliable ordered message streams between the nodes over TCP."""

    name = "tcp-replication"
    endpoint_model: type[BaseModel] = TcpEndpoint

    def listen(
        self, local: BaseModel, *, tls: ssl.SSLContext | None = None
    ) -> AbstractAsyncContextManager[MessageListener]:
        """Listen on ``local``: entering binds (TransportError if it cannot), leaving
        closes. With ``tls``, each accepted stream completes a TLS handshake first."""
        if not isinstance(local, TcpEndpoint):
            raise TypeError("tcp endpoints must be TcpEndpoint instances")
        return self._listening(local, tls)

    @asynccontextmanager
    async def _listening(
        self, local: TcpEndpoint, tls: ssl.SSLContext | None
    ) -> AsyncIterator[MessageListener]:
        what = f"tcp replication {local.address}:{local.port}"
        with map_errors(f"{what}: listen"):
            multi = await anyio.create_tcp_listener(
                local_host=str(local.address), local_port=local.port
            )
        try:
            listener = multi.listeners[0]
            assert isinstance(listener, SocketListener)
            yield TcpMessageListener(listener, what, tls)
        finally:
            with anyio.CancelScope(shield=True):
                await multi.aclose()

    async def connect(
        self, remote: BaseModel, timeout: float, *, tls: ssl.SSLContext | None = None
    ) -> MessageStream:
        """Connect to ``remote`` within ``timeout`` seconds (TLS handshake included
        with ``tls``); TransportError if not."""
        if not isinstance(remote, TcpEndpoint):
            raise TypeError("tcp endpoints must be TcpEndpoint instances")
        what = f"tcp replication -> {remote.address}:{remote.port}"
        with map_errors(f"{what}: connect"), anyio.fail_after(timeout):
            stream: ByteStream = await anyio.connect_tcp(str(remote.address), remote.port)
            if tls is not None:
                stream = await _tls_wrap(stream, tls, what, server=False)
        return TcpMessageStream(stream, what)


TLS_HANDSHAKE_TIMEOUT = 10.0
"""Seconds an accepted connection has to complete its TLS handshake."""


async def _tls_wrap(
    stream: ByteStream, context: ssl.SSLContext, what: str, *, server: bool
) -> ByteStream:
    """``stream`` as a TLS session; TransportError (the stream closed) if the
    handshake fails: a certificate not from the cluster's CA, or no TLS at all."""
    try:
        with anyio.fail_after(TLS_HANDSHAKE_TIMEOUT):
            return await TLSStream.wrap(
                stream, server_side=server, ssl_context=context, standard_compatible=False
            )
    except (
        ssl.SSLError,
        OSError,
        anyio.BrokenResourceError,
        anyio.EndOfStream,
        TimeoutError,
    ) as exc:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        raise TransportError(f"{what}: TLS handshake failed: {exc}") from exc
