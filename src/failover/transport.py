"""The seams between the runtime and its transport plugins.

A heartbeat transport carries small opaque frames (``wire.py`` encodes them)
between the two nodes over one configured link. A replication transport
carries a reliable ordered stream of whole messages for data replication.

Plugins are found through the ``failover.transports`` entry-point group (see
``failover.plugins``); the built-ins in ``failover_transports`` register there
too, so the plugin path is always the one exercised.

Every I/O error is mapped to ``failover.errors.TransportError`` at the edge of
the plugin: callers never see ``OSError`` or a library's own exceptions.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeGuard, runtime_checkable

from pydantic import BaseModel

from failover.wire import LinkAuth

MAX_FRAME_SIZE = 65_507
"""Largest heartbeat frame, in bytes, every transport must carry: the "64 KiB"
limit, made exactly what one IPv4 UDP datagram holds (65 535 minus the IP and
UDP headers). Real heartbeats are a few hundred bytes; on a link with a
1500-byte MTU anything above ~1400 bytes travels as IP fragments."""


@runtime_checkable
class HeartbeatChannel(Protocol):
    """One open link to the peer. Frames are opaque ``bytes`` of 0..MAX_FRAME_SIZE.

    A channel is used from one anyio task group: one task may be blocked in
    ``receive`` while another calls ``send``. Frames are delivered whole or not
    at all (never truncated, never merged); datagram transports may drop or
    reorder them, stream transports deliver them in order while connected.
    """

    async def send(self, frame: bytes) -> None:
        """Send one frame, best effort.

        Returns quickly: never blocks longer than about one heartbeat interval
        (a full buffer or a disconnected peer is a failure, not a wait).
        Raises ``TransportError`` when the link cannot carry the frame now
        (disconnected, device gone, frame larger than MAX_FRAME_SIZE, or the
        channel is closed). A frame sent without error may still be lost.
        """
        ...

    async def receive(self) -> bytes:
        """Wait for the next whole frame from the peer and return it.

        Waits without bound while the link is healthy but silent (the caller
        applies its own timeouts). Raises ``TransportError`` when the link is
        broken in a way that will not heal by itself, or when the channel was
        closed (before or during the wait). Malformed input from the peer
        (noise, oversize frames) is dropped and never raised here.
        """
        ...

    async def aclose(self) -> None:
        """Release every socket, file descriptor and task of the channel.

        Idempotent; returns promptly (bounded by a short cleanup timeout even
        when cancelled). After it, ``send`` and ``receive`` raise
        ``TransportError``.
        """
        ...


@runtime_checkable
class HeartbeatTransport(Protocol):
    """What a ``failover.transports`` entry point names.

    The entry point's object is a class, instantiated with no arguments, or an
    instance. It holds no open resources until ``open`` is called.
    """

    name: str
    """The entry-point name, e.g. ``"udp"``."""

    endpoint_model: type[BaseModel]
    """Validates one node's options for a link (``nodes.<node>.links.<link>``).

    Must reject unknown or invalid options with ``pydantic.ValidationError``
    (use ``extra="forbid"``)."""

    async def open(self, local: BaseModel, remote: BaseModel) -> HeartbeatChannel:
        """Open a channel from this node's endpoint ``local`` to the peer's ``remote``.

        Both are validated ``endpoint_model`` instances. Returns once local
        resources are bound (sockets bound, device opened); it does not wait for
        the peer to be reachable. Raises ``TransportError`` when the local side
        cannot be set up (address in use, no such device).
        """
        ...


class ConnectionAuthTransport(HeartbeatTransport, Protocol):
    """An optional addition for transports that make connections (``tcp``).

    Such a link could be used by anyone able to connect, so the runtime
    gives the transport a ``LinkAuth`` (``failover.wire``) and the transport
    runs ``auth.handshake(dialer=...)`` on every connection before using it:
    a connection is used to send, and what it carries is delivered, only after
    the other end proved the cluster key. A transport opts in by setting
    ``connection_auth = True`` and accepting the ``auth`` keyword; the runtime
    checks the attribute (``supports_connection_auth``) and calls ``open``
    without the keyword otherwise, so transports without it keep working.
    """

    connection_auth: bool
    """True: ``open`` takes ``auth`` and proves the key on every connection."""

    async def open(
        self, local: BaseModel, remote: BaseModel, *, auth: LinkAuth | None = None
    ) -> HeartbeatChannel:
        """As ``HeartbeatTransport.open``; with ``auth`` (None in an insecure
        cluster: no proof, connections used as they come), every connection
        runs the handshake first and is closed if it fails or is too slow."""
        ...


def supports_connection_auth(transport: HeartbeatTransport) -> TypeGuard[ConnectionAuthTransport]:
    """True when ``transport`` declares ``connection_auth = True`` (``ConnectionAuthTransport``)."""
    return getattr(transport, "connection_auth", False) is True


async def open_channel(
    transport: HeartbeatTransport, local: BaseModel, remote: BaseModel, auth: LinkAuth | None
) -> HeartbeatChannel:
    """``transport.open`` as the runtime calls it: with ``auth`` when there is one and
    the transport takes it (``supports_connection_auth``), without it otherwise."""
    if auth is not None and supports_connection_auth(transport):
        return await transport.open(local, remote, auth=auth)
    return await transport.open(local, remote)


@runtime_checkable
class MessageStream(Protocol):
    """A reliable, ordered, connected stream of whole messages (bytes of any size).

    Messages arrive exactly once and in the order sent, or the stream breaks:
    after a break no later message is delivered. ``send`` returns once the
    message is handed to the OS (not when the peer has processed it: use an
    application-level acknowledgement for that). A message is atomic: the
    receiver sees all of it or, if the stream breaks mid-way, none of it.
    """

    async def send(self, message: bytes) -> None:
        """Queue one message for delivery; may wait for flow control (backpressure).

        Raises ``TransportError`` when the stream is broken or closed.
        """
        ...

    async def receive(self, *, limit: int | None = None) -> bytes:
        """Wait for the next whole message.

        ``limit``: a message announced longer than this many bytes is refused
        before it is buffered (``TransportError``, the stream closed): the
        callers read what a peer sends before it authenticated with a small
        limit, so a stranger cannot make this node hold large messages.

        Raises ``TransportError`` when the stream is broken, closed by either
        side, or the peer violated the framing.
        """
        ...

    async def aclose(self) -> None:
        """Close the stream (idempotent, prompt); the peer's ``receive`` then raises."""
        ...


@runtime_checkable
class MessageListener(Protocol):
    """Incoming streams on a local endpoint, as yielded by ``ReplicationTransport.listen``."""

    async def accept(self) -> MessageStream:
        """Wait for the next incoming stream.

        Raises ``TransportError`` when the listener is closed or broken.
        """
        ...


@runtime_checkable
class ReplicationTransport(Protocol):
    """A reliable ordered message stream between the two nodes, for replication."""

    name: str
    endpoint_model: type[BaseModel]

    def listen(
        self, local: BaseModel, *, tls: ssl.SSLContext | None = None
    ) -> AbstractAsyncContextManager[MessageListener]:
        """Listen on ``local``; entering binds (``TransportError`` if it cannot),
        leaving closes the listener (already accepted streams stay open).
        With ``tls`` (a server context), every accepted stream is a TLS session
        (a failed handshake is a ``TransportError`` from ``accept``); a
        transport that cannot do TLS raises ``UsageError``."""
        ...

    async def connect(
        self, remote: BaseModel, timeout: float, *, tls: ssl.SSLContext | None = None
    ) -> MessageStream:
        """Connect to the peer's listener at ``remote`` within ``timeout`` seconds
        (the TLS handshake included, with ``tls``, a client context).

        Raises ``TransportError`` on refusal, unreachability, timeout or a failed
        TLS handshake. No retry happens here: the caller owns its backoff.
        """
        ...
