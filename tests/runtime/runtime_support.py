"""Helpers for the runtime tests: cluster files, an in-memory network with faults.

``MemoryNetwork`` stands in for UDP: its transport has the UDP endpoint
model (so configuration files are the real thing) but frames travel through
anyio memory streams, which lets two real daemons run in one process under
trio's virtual clock. ``cut(endpoint)`` silently drops every frame to or
from an endpoint, as a pulled cable or a firewall rule would.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import yaml
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel

from failover.errors import TransportError
from failover.transport import HeartbeatChannel, HeartbeatTransport
from failover_transports.udp import UdpEndpoint

NODES = ("alpha", "beta")
ADDRESSES = {"alpha": "127.0.0.2", "beta": "127.0.0.3"}


def free_udp_ports(count: int) -> list[int]:
    """Ports free on every loopback address now (the kernel picks them)."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


async def wait_until(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``seconds`` (anyio's clock)."""
    with anyio.fail_after(seconds):
        while not predicate():
            await anyio.sleep(0.01)


def write_cluster(
    tmp_path: Path,
    *,
    links: tuple[str, ...] = ("lan", "backup"),
    secure: bool = True,
    extra: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
) -> Path:
    """A two-node cluster file on loopback (fast profile) and its key; returns its path."""
    ports = free_udp_ports(len(links))
    section: dict[str, Any] = {
        "name": "test",
        "state_dir": str(tmp_path / "state"),
        "profile": "fast",
        "autostart": True,
    }
    if secure:
        key = tmp_path / "cluster.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        section["key_file"] = str(key)
    else:
        section["insecure"] = True
    section.update(cluster or {})
    document: dict[str, Any] = {
        "cluster": section,
        "links": [{"name": name, "transport": "udp"} for name in links],
        "nodes": {
            node: {
                "links": {
                    name: {"address": ADDRESSES[node], "port": port}
                    for name, port in zip(links, ports, strict=True)
                }
            }
            for node in NODES
        },
    }
    document.update(extra or {})
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def endpoint_key(endpoint: BaseModel) -> tuple[str, int]:
    assert isinstance(endpoint, UdpEndpoint)
    return (str(endpoint.address), endpoint.port)


@dataclass
class MemoryNetwork:
    """Delivers frames between ``MemoryChannel``s by UDP endpoint; may cut endpoints."""

    inboxes: dict[tuple[str, int], MemoryObjectSendStream[bytes]] = field(default_factory=dict)
    blocked: set[tuple[str, int]] = field(default_factory=set)
    delivered: int = 0

    def transport(self, name: str) -> HeartbeatTransport:
        assert name == "udp", name
        return MemoryTransport(self)

    def cut(self, *endpoints: tuple[str, int]) -> None:
        self.blocked.update(endpoints)

    def heal(self, *endpoints: tuple[str, int]) -> None:
        self.blocked.difference_update(endpoints)

    def break_channel(self, endpoint: tuple[str, int]) -> None:
        """Make the channel open on ``endpoint`` fail (its receive raises TransportError)."""
        self.inboxes.pop(endpoint).close()

    def deliver(self, source: tuple[str, int], destination: tuple[str, int], frame: bytes) -> None:
        if source in self.blocked or destination in self.blocked:
            return
        inbox = self.inboxes.get(destination)
        if inbox is None:
            return  # nobody listens there: a datagram is simply lost
        try:
            inbox.send_nowait(frame)
            self.delivered += 1
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


class MemoryChannel:
    def __init__(
        self,
        network: MemoryNetwork,
        local: tuple[str, int],
        remote: tuple[str, int],
        inbox: MemoryObjectReceiveStream[bytes],
    ) -> None:
        self.network = network
        self.local = local
        self.remote = remote
        self.inbox = inbox
        self.closed = False

    async def send(self, frame: bytes) -> None:
        if self.closed:
            raise TransportError("closed")
        self.network.deliver(self.local, self.remote, frame)
        await anyio.lowlevel.checkpoint()

    async def receive(self) -> bytes:
        try:
            return await self.inbox.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise TransportError("closed") from exc

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            sender = self.network.inboxes.pop(self.local, None)
            if sender is not None:
                sender.close()
            self.inbox.close()


class FaultyTransport:
    """Wraps a real transport; frames to or from a ``blocked`` endpoint are dropped."""

    def __init__(self, inner: HeartbeatTransport, blocked: set[tuple[str, int]]) -> None:
        self.inner = inner
        self.blocked = blocked
        self.name = inner.name
        self.endpoint_model = inner.endpoint_model

    async def open(self, local: BaseModel, remote: BaseModel) -> HeartbeatChannel:
        channel = await self.inner.open(local, remote)
        return FaultyChannel(channel, (endpoint_key(local), endpoint_key(remote)), self.blocked)


class FaultyChannel:
    def __init__(
        self,
        inner: HeartbeatChannel,
        ends: tuple[tuple[str, int], tuple[str, int]],
        blocked: set[tuple[str, int]],
    ) -> None:
        self.inner = inner
        self.ends = ends
        self.blocked = blocked

    def _cut(self) -> bool:
        return any(end in self.blocked for end in self.ends)

    async def send(self, frame: bytes) -> None:
        if not self._cut():
            await self.inner.send(frame)

    async def receive(self) -> bytes:
        while True:
            frame = await self.inner.receive()
            if not self._cut():
                return frame

    async def aclose(self) -> None:
        await self.inner.aclose()


class MemoryTransport:
    name = "udp"
    endpoint_model: type[BaseModel] = UdpEndpoint

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network

    async def open(self, local: BaseModel, remote: BaseModel) -> HeartbeatChannel:
        key = endpoint_key(local)
        if key in self.network.inboxes:
            raise TransportError(f"{key} already in use")
        send, receive = anyio.create_memory_object_stream[bytes](math.inf)
        self.network.inboxes[key] = send
        return MemoryChannel(self.network, key, endpoint_key(remote), receive)
