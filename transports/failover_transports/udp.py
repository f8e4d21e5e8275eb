"""UDP heartbeat transport: unicast, or IP multicast when an endpoint names a ``group``.

Unicast: the channel binds ``local.address:local.port`` and sends to
``remote.address:remote.port``; datagrams from any other source are dropped.
Multicast: the channel binds ``local.group:local.port``, joins the group (on
``interface`` when given, else on the interface owning ``address``) and sends
to ``remote.group:remote.port``. Multicast loopback stays on, so with equal
ports a node receives its own frames: dropping them is the wire layer's job.

Datagram semantics: a frame may be lost, duplicated or reordered; ``send`` never
waits for the peer and does not fail when the peer is down (the frame is
dropped). ``receive`` raises only once the channel is closed.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated, Any, Self

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from failover.errors import UsageError
from failover.transport import MAX_FRAME_SIZE, HeartbeatChannel
from failover_transports.edge import check_frame_size, closed_error, map_errors

Port = Annotated[int, Field(ge=1, le=65535)]
InterfaceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:@-]{1,15}$")]


class UdpEndpoint(BaseModel):
    """One node's end of a UDP link."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: IPv4Address | IPv6Address
    """Unicast: the address bound and sent to. Multicast: this node's interface address."""
    port: Port
    interface: InterfaceName | None = None
    """Network interface for multicast (e.g. ``eth1``); only valid with ``group``."""
    group: IPv4Address | IPv6Address | None = None
    """Multicast group; when set, the link is multicast."""

    @model_validator(mode="after")
    def _check_multicast(self) -> Self:
        if self.group is None:
            if self.interface is not None:
                raise ValueError("interface is only used with a multicast group")
            if self.address.is_multicast:
                raise ValueError("address must be a unicast address; put a multicast one in group")
            return self
        if not self.group.is_multicast:
            raise ValueError(f"group {self.group} is not a multicast address")
        if self.group.version != self.address.version:
            raise ValueError("group and address must be the same IP version")
        if self.group.version == 6 and self.interface is None:
            raise ValueError("an IPv6 multicast group needs an interface")
        return self


def _membership_request(endpoint: UdpEndpoint) -> tuple[int, int, bytes]:
    """(level, option, value) joining the endpoint's group on its interface."""
    assert endpoint.group is not None
    index = socket.if_nametoindex(endpoint.interface) if endpoint.interface else 0
    if endpoint.group.version == 6:
        return (
            socket.IPPROTO_IPV6,
            socket.IPV6_JOIN_GROUP,
            endpoint.group.packed + struct.pack("@I", index),
        )
    # struct ip_mreqn: group, local interface address, interface index
    mreqn = endpoint.group.packed + endpoint.address.packed + struct.pack("@i", index)
    return socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn


def _join_group(raw: socket.socket, endpoint: UdpEndpoint) -> None:
    level, option, value = _membership_request(endpoint)
    raw.setsockopt(level, option, value)
    if endpoint.group is not None and endpoint.group.version == 6:
        raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, value[-4:])
    else:
        # Linux accepts the same struct ip_mreqn to pick the outgoing interface.
        raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, value)


class UdpChannel:
    """An open UDP link; see the module docstring for its guarantees."""

    def __init__(self, sock: socket.socket, local: UdpEndpoint, remote: UdpEndpoint) -> None:
        self._sock = sock
        self._what = f"udp {local.address}:{local.port}"
        self._destination = (str(remote.group or remote.address), remote.port)
        self._peer_port = remote.port
        # A peer bound to a wildcard or sending to a group may use any source address.
        self._peer_host = (
            None if remote.group is not None or remote.address.is_unspecified else remote.address
        )
        self._closed = False

    async def send(self, frame: bytes) -> None:
        """Send one datagram without waiting.

        Raises TransportError if closed, oversize, or the OS refuses it
        (no route, full buffer).
        """
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise closed_error(self._what)
        check_frame_size(frame, self._what)
        with map_errors(f"{self._what}: send"):
            self._sock.sendto(frame, self._destination)

    async def receive(self) -> bytes:
        """Wait for the next datagram from the peer; raises TransportError once closed."""
        while True:
            if self._closed:
                raise closed_error(self._what)
            with map_errors(f"{self._what}: receive"):
                await anyio.wait_readable(self._sock)
                try:
                    frame, source = self._sock.recvfrom(MAX_FRAME_SIZE + 1)
                except BlockingIOError:
                    continue
            if self._accepts(frame, source):
                return frame

    def _accepts(self, frame: bytes, source: tuple[Any, ...]) -> bool:
        if source[1] != self._peer_port or len(frame) > MAX_FRAME_SIZE:
            return False
        return self._peer_host is None or ip_address(source[0]) == self._peer_host

    async def aclose(self) -> None:
        """Close the socket (idempotent); a pending receive raises TransportError."""
        if self._closed:
            return
        self._closed = True
        anyio.notify_closing(self._sock)
        self._sock.close()
        await anyio.lowlevel.checkpoint()


def _bound_socket(local: UdpEndpoint) -> socket.socket:
    """A non-blocking socket bound to the endpoint (its group, for multicast)."""
    host = local.group or local.address
    sock = socket.socket(
        socket.AF_INET6 if host.version == 6 else socket.AF_INET, socket.SOCK_DGRAM
    )
    try:
        sock.setblocking(False)
        if local.group is not None:
            # Lets two nodes on one host (tests, demos) share a multicast port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((str(host), local.port))
        if local.group is not None:
            _join_group(sock, local)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpTransport:
    """The ``udp`` entry point."""

    name = "udp"
    endpoint_model: type[BaseModel] = UdpEndpoint

    async def open(self, local: BaseModel, remote: BaseModel) -> HeartbeatChannel:
        """Bind the local socket (and join the group); raises TransportError if that fails."""
        if not isinstance(local, UdpEndpoint) or not isinstance(remote, UdpEndpoint):
            raise TypeError("udp endpoints must be UdpEndpoint instances")
        if (local.group is None) != (remote.group is None):
            raise UsageError("udp link: both endpoints must be unicast, or both multicast")
        with map_errors(f"udp {local.group or local.address}:{local.port}: open"):
            sock = _bound_socket(local)
        return UdpChannel(sock, local, remote)
