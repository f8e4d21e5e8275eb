"""What both ends of a replication session share: identity, settings, the handshake.

The primary sends ``HELLO``, the secondary answers ``WELCOME`` (see
``channel_wire``); each side checks the other's cluster, node names and
nonce, then both derive the per-direction session keys, and the primary
proves it holds its key with ``CONFIRM``. A ``HELLO`` proves nothing on its
own (a recorded one can be replayed): the secondary's side of the session is
authenticated only once ``CONFIRM`` opened, within the same deadline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

from failover.errors import PeerProtocolError, TransportError, UsageError
from failover.replication.channel_wire import (
    NONCE_SIZE,
    AckLevel,
    Greeting,
    Kind,
    Opener,
    Sealer,
    cluster_id,
    decode_greeting,
    encode_greeting,
    session_keys,
)
from failover.replication.protocol import ChannelSettings, SessionCipher
from failover.transport import MessageStream

__all__ = [  # ChannelSettings and SessionCipher live with the protocol, pure
    "QUIET_INTERVALS",
    "STRANGER_LIMIT",
    "ChannelSettings",
    "PeerInfo",
    "SessionCipher",
    "SessionIdentity",
    "greet_as_primary",
    "greet_as_secondary",
    "log",
]

log = logging.getLogger("failover.replication.channel")

_NO_NONCE = bytes(NONCE_SIZE)

STRANGER_LIMIT = 64 * 1024
"""The longest message an incoming connection may send before it authenticated
(its ``HELLO``, its ``CONFIRM``: a few hundred bytes): with at most a few
handshakes at once, strangers can make this node hold little memory."""
QUIET_INTERVALS = 1.5
"""A channel that answered nothing for this many probe intervals is ``quiet``: a cut
shows in status within two heartbeat intervals (a healthy channel is probed every
half interval)."""


@dataclass(frozen=True, slots=True)
class SessionIdentity:
    """Who this end is and whom it expects: the same on every session of a node.

    ``key`` is the cluster key; ``None`` is insecure mode (messages carry a
    checksum only, anyone on the network can forge them). ``generation`` is
    this node's data generation, opaque here, shown to the peer in the handshake.
    """

    cluster: str
    key: bytes | None
    local: str
    peer: str
    generation: str

    def __post_init__(self) -> None:
        if not self.cluster:
            raise UsageError("replication channel: the cluster name must not be empty")
        if self.key is not None and not self.key:
            raise UsageError("replication channel: an empty cluster key authenticates nothing")
        if self.local == self.peer:
            raise UsageError(f"replication channel: local and peer are both {self.local!r}")

    @property
    def authenticated(self) -> bool:
        """False in insecure mode (no cluster key)."""
        return self.key is not None


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the handshake established about the other end."""

    node: str
    generation: str
    ack_level: AckLevel
    authenticated: bool
    request: bytes = b""  # what the secondary asked for in its WELCOME


def _check_greeting(identity: SessionIdentity, kind: Kind, greeting: Greeting) -> None:
    if greeting.cluster_id != cluster_id(identity.cluster):
        raise PeerProtocolError(f"{kind.name}: from another cluster (its id differs)")
    if greeting.peer != identity.local:
        raise PeerProtocolError(
            f"{kind.name}: addressed to node {greeting.peer!r}, this node is {identity.local!r}"
        )
    if greeting.local != identity.peer:
        raise PeerProtocolError(
            f"{kind.name}: from node {greeting.local!r}, the peer is {identity.peer!r}"
        )


async def _receive_greeting(
    stream: MessageStream, identity: SessionIdentity, kind: Kind, limit: int | None = None
) -> Greeting:
    message = await stream.receive(limit=limit)
    _, body = Opener(identity.key).open(message, kind)
    greeting = decode_greeting(kind, body)
    _check_greeting(identity, kind, greeting)
    return greeting


@contextmanager
def _deadline(timeout: float) -> Iterator[None]:
    try:
        with anyio.fail_after(timeout):
            yield
    except TimeoutError:
        raise TransportError(f"replication handshake: not done within {timeout} s") from None


def _cipher(
    key: bytes | None, hello: Greeting, welcome_nonce: bytes, primary: bool
) -> SessionCipher:
    if key is None:
        return SessionCipher(Sealer(None, 1), Opener(None, 1))
    to_secondary, to_primary = session_keys(key, hello, welcome_nonce)
    if primary:
        return SessionCipher(
            Sealer(to_secondary, 1, session=True), Opener(to_primary, 1, session=True)
        )
    return SessionCipher(Sealer(to_primary, 1, session=True), Opener(to_secondary, 1, session=True))


def _warn_insecure(identity: SessionIdentity) -> None:
    if identity.key is None:
        log.warning(
            "replication channel %s <-> %s is INSECURE: no cluster key, messages are "
            "checksummed only and can be forged by anyone on the network",
            identity.local,
            identity.peer,
        )


async def greet_as_primary(
    stream: MessageStream, identity: SessionIdentity, level: AckLevel, timeout: float
) -> tuple[PeerInfo, SessionCipher]:
    """Send ``HELLO``, check the ``WELCOME``; the session's cipher.

    Raises ``PeerProtocolError`` for a bad answer, ``TransportError`` for a
    broken stream or no answer within ``timeout`` seconds.
    """
    _warn_insecure(identity)
    hello = Greeting(
        cluster_id(identity.cluster),
        level,
        os.urandom(NONCE_SIZE),
        _NO_NONCE,
        identity.local,
        identity.peer,
        identity.generation,
    )
    with _deadline(timeout):
        await stream.send(Sealer(identity.key).seal(Kind.HELLO, [encode_greeting(hello)]))
        welcome = await _receive_greeting(stream, identity, Kind.WELCOME)
    if welcome.echo != hello.nonce:
        raise PeerProtocolError("WELCOME: answers another HELLO (replayed)")
    if welcome.ack_level != level:
        raise PeerProtocolError(f"WELCOME: ack level {welcome.ack_level}, asked for {level}")
    peer = PeerInfo(
        welcome.local, welcome.generation, level, identity.authenticated, welcome.request
    )
    cipher = _cipher(identity.key, hello, welcome.nonce, primary=True)
    with _deadline(timeout):
        await stream.send(cipher.sealer.seal(Kind.CONFIRM, [b""]))
    return peer, cipher


async def greet_as_secondary(
    stream: MessageStream,
    identity: SessionIdentity,
    timeout: float,
    request: bytes | Callable[[], bytes] = b"",
) -> tuple[PeerInfo, SessionCipher]:
    """Wait for ``HELLO``, check it, answer ``WELCOME`` (carrying ``request``),
    then wait for the primary's ``CONFIRM`` under the new session key; the
    session's cipher. All of it within ``timeout`` seconds: a connection that
    does not authenticate in time is refused. A callable ``request`` is called
    only once a ``HELLO`` under the cluster key arrived: a stranger's connection
    makes this node compute nothing.

    Raises like ``greet_as_primary``; a replayed ``HELLO`` fails at ``CONFIRM``.
    """
    _warn_insecure(identity)
    with _deadline(timeout):
        hello = await _receive_greeting(stream, identity, Kind.HELLO, STRANGER_LIMIT)
        welcome = Greeting(
            hello.cluster_id,
            hello.ack_level,
            os.urandom(NONCE_SIZE),
            hello.nonce,
            identity.local,
            identity.peer,
            identity.generation,
            request() if callable(request) else request,
        )
        await stream.send(Sealer(identity.key).seal(Kind.WELCOME, [encode_greeting(welcome)]))
        cipher = _cipher(identity.key, hello, welcome.nonce, primary=False)
        cipher.opener.open(await stream.receive(limit=STRANGER_LIMIT), Kind.CONFIRM)
    peer = PeerInfo(hello.local, hello.generation, hello.ack_level, identity.authenticated)
    return peer, cipher
