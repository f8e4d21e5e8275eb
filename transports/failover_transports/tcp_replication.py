"""Replication streams over TCP: whole messages, reliable and ordered.

Implements ``failover.transport.ReplicationTransport``. Each message travels
as a 4-byte big-endian length and its bytes (at most ``MAX_MESSAGE_SIZE``).
Nagle's algorithm is off (``TCP_NODELAY``), so a small message leaves at once.

Guarantees of both stream classes: messages arrive exactly once, whole and in
order, or the stream breaks and every later call raises ``TransportError``. A
``receive`` cancelled half-way keeps what it read for the next call, so
cancellation never loses or splits a message. A ``send`` cancelled half-way
breaks the stream (the peer would see a cut message): the stream is closed
and later calls raise.

Without TLS a stream drives its socket itself (``TcpMessageStream``: non-blocking,
woken by ``anyio.wait_readable``/``wait_writable``), which gives the replication
channel its hot path:

- ``send_nowait(parts)``: a vectored ``sendmsg`` of the buffers, length prefixes
  included, with no join and no copy; callable from any thread (a FUSE thread
  sends its op itself, without a hop to the event loop). What the socket does
  not take at once stays queued, in order, for ``flush`` (from the loop).
- ``receive_view()``: the next message as a view of a buffer of its own, which
  the caller keeps: a long message is read straight from the socket into a
  buffer of a pool, small ones are cut (copied) from one read buffer. A pool
  buffer is reused only once no view of it is left anywhere (Python's buffer
  protocol counts them: the views a decoded ``Write`` keeps of its data
  included), so a message is never overwritten while any part of it is still
  in use; the pool holds at most ``POOL_BYTES``.

With TLS, ``TlsMessageStream`` runs over anyio's ``TLSStream`` (plain ``send``
and ``receive``).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream, SocketListener, SocketStream
from anyio.streams.tls import TLSStream
from pydantic import BaseModel

from failover.errors import TransportError
from failover.transport import MessageListener, MessageStream
from failover_transports.edge import accept_socket, closed_error, map_errors
from failover_transports.framing import FramingError, LengthPrefixedDecoder, encode_length_prefixed
from failover_transports.tcp import TcpEndpoint

MAX_MESSAGE_SIZE = 64 * 1024 * 1024
_READ_SIZE = 256 * 1024
POOL_BYTES = 32 * 1024 * 1024
"""Most bytes of receive buffers a stream keeps for reuse (the sender's window,
16 MiB by default, in flight, and room for what is being read)."""
_POOL_ROUND = 256 * 1024  # pool buffers are allocated in multiples of this
_LENGTH = struct.Struct(">I")
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16

Buffer = bytes | bytearray | memoryview


def _size(part: Buffer) -> int:
    return len(part) if type(part) is bytes else memoryview(part).nbytes


def _unshared(buffer: bytearray) -> bool:
    """Whether no view of ``buffer`` is alive (a bytearray with views cannot
    change its size: the probe is one append, refused while any view lives)."""
    try:
        buffer.append(0)
    except BufferError:
        return False
    del buffer[-1]
    return True


class _Pool:
    """Receive buffers for long messages, each reused once no view of it is left.

    Invariant: a buffer is handed out again only when ``_unshared``: no view
    made of it (the message, a slice of it, a ``Write``'s data) is alive, so
    whatever still uses a message never sees it overwritten. Holds at most
    ``limit`` bytes; a buffer beyond that is the caller's alone.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffers: list[bytearray] = []
        self._bytes = 0
        self.reused = 0  # buffers handed out again (for tests and status)

    def take(self, size: int) -> bytearray:
        """A buffer of at least ``size`` bytes that nothing else uses."""
        for buffer in self._buffers:
            if len(buffer) >= size and _unshared(buffer):
                self.reused += 1
                return buffer
        buffer = bytearray(-(-size // _POOL_ROUND) * _POOL_ROUND)
        if self._bytes + len(buffer) <= self._limit:
            self._buffers.append(buffer)
            self._bytes += len(buffer)
        return buffer


class TcpMessageStream:
    """One connected replication stream on a socket of its own; see the module docstring."""

    def __init__(self, sock: socket.socket, what: str) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._what = what
        self._read = bytearray(_READ_SIZE)
        self._start = self._end = 0  # unread bytes of _read
        self._partial: tuple[bytearray, int, int] | None = None  # long message: buffer,
        # its length, bytes in it so far
        self._pool = _Pool(POOL_BYTES)
        # fast: receive_view yields once itself (its checkpoint), not again here
        self._receive_lock = anyio.Lock(fast_acquire=True)
        self._write_lock = threading.Lock()  # one sendmsg at a time, any thread
        self._backlog: list[Buffer] = []  # accepted, not yet taken by the socket
        self._failure: str | None = None  # why sending failed, once it did
        self._closed = False

    @property
    def description(self) -> str:
        """Which connection this is, for log lines (local and remote address)."""
        return self._what

    # -- sending -------------------------------------------------------------------

    def send_nowait(self, parts: Sequence[Buffer]) -> bool:
        """Queue one message (its buffers, uncopied) and send all that the socket
        takes now, without waiting; True if nothing is left for ``flush``.
        Callable from any thread. Raises TransportError as ``send`` does."""
        size = sum(_size(part) for part in parts)
        if size > MAX_MESSAGE_SIZE:
            raise TransportError(f"{self._what}: message of {size} bytes is too large")
        with self._write_lock:
            self._check_send()
            self._backlog.append(_LENGTH.pack(size))
            self._backlog.extend(parts)
            return self._write_locked()

    @property
    def backlogged(self) -> bool:
        """Whether bytes wait for ``flush`` (the socket did not take them all)."""
        return bool(self._backlog)

    def _check_send(self) -> None:
        if self._closed:
            raise closed_error(self._what)
        if self._failure is not None:
            raise TransportError(self._failure)

    def _write_locked(self) -> bool:
        """Send from the backlog until it is empty (True) or the socket is full."""
        backlog = self._backlog
        while backlog:
            try:
                sent = self._sock.sendmsg(backlog[:_IOV_MAX])
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as exc:
                self._failure = f"{self._what}: send: {type(exc).__name__}: {exc}"
                backlog.clear()
                raise TransportError(self._failure) from exc
            taken = 0
            while taken < len(backlog) and sent >= _size(backlog[taken]):
                sent -= _size(backlog[taken])
                taken += 1
            del backlog[:taken]
            if sent:
                backlog[0] = memoryview(backlog[0]).cast("B")[sent:]
        return True

    async def flush(self) -> None:
        """Wait until the socket took everything queued (from the event loop)."""
        while True:
            with self._write_lock:
                self._check_send()
                if self._write_locked():
                    return
            try:
                await anyio.wait_writable(self._sock)
            except (anyio.ClosedResourceError, OSError):
                raise closed_error(self._what) from None

    async def send_parts(self, parts: Sequence[Buffer]) -> None:
        """Send one message given as buffers; see ``send``."""
        if self.send_nowait(parts):
            await anyio.lowlevel.checkpoint()  # every send lets other tasks run
            return
        done = False
        try:
            await self.flush()
            done = True
        finally:
            if not done:
                await self.aclose()

    async def send(self, message: bytes) -> None:
        """Send one whole message, waiting for the peer's flow control as needed.

        Raises TransportError when the stream is broken or closed, or the
        message exceeds MAX_MESSAGE_SIZE.
        """
        await self.send_parts((message,))

    # -- receiving -----------------------------------------------------------------

    async def receive(self, *, limit: int | None = None) -> bytes:
        """Wait for the next whole message.

        Raises TransportError when the peer closed or broke the stream, sent a
        length above ``limit`` or MAX_MESSAGE_SIZE, whichever is lower (the stream
        is then closed, before that message is buffered), or the stream is closed.
        """
        return bytes(await self.receive_view(limit=limit))

    @property
    def buffered(self) -> bool:
        """Whether the next message is already whole in this stream's buffers:
        ``receive_view`` returns it without reading the socket (the caller may
        take it before answering what came before: one ack for both)."""
        if self._partial is not None:
            return self._partial[2] == self._partial[1]
        unread = self._end - self._start - _LENGTH.size
        return unread >= 0 and unread >= _LENGTH.unpack_from(self._read, self._start)[0]

    async def receive_view(self, *, limit: int | None = None) -> memoryview:
        """The next whole message, as a view of a buffer the caller keeps; raises
        as ``receive``."""
        allowed = MAX_MESSAGE_SIZE if limit is None else min(limit, MAX_MESSAGE_SIZE)
        await anyio.lowlevel.checkpoint()  # every receive lets other tasks run
        async with self._receive_lock:
            while True:
                if self._closed:
                    raise closed_error(self._what)
                if self._partial is not None:
                    message, length, have = self._partial
                    if have == length:
                        self._partial = None
                        return memoryview(message)[:length]
                    got = await self._recv_into(memoryview(message)[have:length])
                    self._partial = (message, length, have + got)
                    continue
                if self._end - self._start >= _LENGTH.size:
                    (length,) = _LENGTH.unpack_from(self._read, self._start)
                    if length > allowed:
                        await self.aclose()
                        raise TransportError(
                            f"{self._what}: peer announced a {length}-byte message, "
                            f"the limit is {allowed}"
                        )
                    first = self._start + _LENGTH.size
                    have = min(length, self._end - first)
                    self._start = first + have
                    if have == length:
                        return memoryview(self._read[first : first + have])
                    message = self._pool.take(length)  # read straight into it from here on
                    message[:have] = memoryview(self._read)[first : first + have]
                    self._partial = (message, length, have)
                    continue
                if self._start:  # keep the unread bytes at the front
                    rest = self._end - self._start
                    self._read[:rest] = self._read[self._start : self._end]
                    self._start, self._end = 0, rest
                self._end += await self._recv_into(memoryview(self._read)[self._end :])

    async def _recv_into(self, view: memoryview) -> int:
        """Read into ``view`` once data is there; the count (never 0)."""
        while True:
            try:
                got = self._sock.recv_into(view)
            except (BlockingIOError, InterruptedError):
                try:
                    await anyio.wait_readable(self._sock)
                except (anyio.ClosedResourceError, OSError):
                    raise closed_error(self._what) from None
                continue
            except OSError as exc:
                await self.aclose()
                raise TransportError(f"{self._what}: receive: {type(exc).__name__}: {exc}") from exc
            if not got:
                await self.aclose()
                raise TransportError(f"{self._what}: receive: closed by the peer")
            return got

    async def aclose(self) -> None:
        """Close the stream (idempotent, prompt); the peer's receive then raises."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            anyio.notify_closing(self._sock)
            self._sock.close()


class TlsMessageStream:
    """One connected replication stream under TLS; see the module docstring."""

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

    @property
    def description(self) -> str:
        """Which connection this is, for log lines (local and remote address)."""
        return self._what

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
            sock = await accept_socket(self._listener)  # not listener.accept(): see there
        try:
            what = f"{self._what} <- {sock.getpeername()}"
            if self._tls is None:
                return TcpMessageStream(sock, what)
            with anyio.CancelScope(shield=True):  # the connection is ours: never lose it
                stream = await SocketStream.from_socket(sock)
        except BaseException:
            sock.close()
            raise
        return TlsMessageStream(stream, what, tls_server=self._tls)


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
            if tls is None:
                return TcpMessageStream(await _connect(str(remote.address), remote.port), what)
            stream: ByteStream = await anyio.connect_tcp(str(remote.address), remote.port)
            stream = await _tls_wrap(stream, tls, what, server=False)
        return TlsMessageStream(stream, what)


async def _connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host`` (an IP address), ``TCP_NODELAY`` set."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex((host, port))
        if code == errno.EINPROGRESS:
            await anyio.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock


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
