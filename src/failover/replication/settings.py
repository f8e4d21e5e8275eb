"""What the data plane needs of the configuration, already validated: one record
that ``runtime/daemon.py`` builds and every part of the data plane reads."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from failover.replication.channel import ChannelSettings
from failover.transport import ReplicationTransport


@dataclass(frozen=True)
class DataPlaneSettings:
    """What the data plane needs of the configuration, already validated."""

    cluster: str
    node: str
    peer: str
    key: bytes | None
    roots: dict[str, Path]  # replicated directory name -> its path
    state_dir: Path  # where the tracker keeps its log and checkpoints
    transport: ReplicationTransport
    local: BaseModel  # this node's replication endpoint
    remote: BaseModel  # the peer's
    quarantine_dir: Path  # where a split brain's losing changes are moved
    channel: ChannelSettings = field(default_factory=ChannelSettings)
    zone_size: int = 64 * 1024
    bandwidth: int = 0  # resync bytes/s, 0 = unlimited
    tls_server: ssl.SSLContext | None = None  # mutual TLS on the stream (both or neither)
    tls_client: ssl.SSLContext | None = None
