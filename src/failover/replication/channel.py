"""The replication channel: one session streams a primary's changes to its secondary.

``ReplicationSender`` (primary; the FUSE mirror's ``MirrorListener``) and
``ReplicationReceiver`` (secondary; applies with an ``Applier``) talk over one
``failover.transport.MessageStream``, normally from the ``tcp-replication``
transport plugin. The pieces:

- ``channel_wire``: the message codec, tags and session keys (pure);
- ``channel_session``: identity, settings and the ``HELLO``/``WELCOME`` handshake;
- ``channel_sender`` / ``channel_receiver``: the two ends.

TLS, when added, goes under the message framing inside the transport (anyio's
``TLSStream`` around the socket stream): the channel only sees a ``MessageStream``.
"""

from __future__ import annotations

from failover.replication.channel_receiver import (
    INLINE_BYTES,
    ItemHandler,
    OpSink,
    ReceiverStatus,
    ReplicationReceiver,
)
from failover.replication.channel_sender import ReplicationSender, SenderStatus
from failover.replication.channel_session import ChannelSettings, PeerInfo, SessionIdentity
from failover.replication.channel_wire import Ack, AckLevel, ItemKind

__all__ = [
    "INLINE_BYTES",
    "Ack",
    "AckLevel",
    "ChannelSettings",
    "ItemHandler",
    "ItemKind",
    "OpSink",
    "PeerInfo",
    "ReceiverStatus",
    "ReplicationReceiver",
    "ReplicationSender",
    "SenderStatus",
    "SessionIdentity",
]
