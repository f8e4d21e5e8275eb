"""The virtual addresses: added to and removed from local interfaces, announced.

Addresses are changed through netlink (pyroute2 ``IPRoute``, in the network
namespace of the daemon). Its synchronous API runs its own event loop, so every
netlink call runs in a worker thread, never in the daemon's event loop.

``VirtualAddress`` is one address on one interface; ``VirtualIP`` is all of the
cluster's addresses, taken and given back together (what the application
holds while it serves).

IPv6 addresses are added with ``IFA_F_NODAD``: without it the address stays
*tentative* for the duplicate address detection (a second here, forever if the
node that was killed still holds it), and the application cannot bind it
(``EADDRNOTAVAIL``). A takeover is the one case where the address is known to
be duplicated for a moment, so the detection could only get in the way.

After the address is added it is announced at once, then repeated
(``announce_count`` announcements in all, ``announce_interval`` seconds
apart), so that clients and switches that missed one update their caches
(without any, a client kept the dead node's MAC for 30-45 s here):

- IPv4: a gratuitous ARP, a request and a reply, both saying "address is at
  my MAC", broadcast;
- IPv6: an unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes
  (``ff02::1``), with the override flag and the node's link-layer address as
  the target link-layer address option. A neighbour that has the address in
  its cache replaces the MAC at once.

Releasing the address stops the repeats. Frames are built here and sent on a
raw ``AF_PACKET`` socket opened once per address at daemon start and kept,
because opening one costs about 24 ms, which would be paid on every failover
otherwise. The socket receives nothing (protocol 0). An interface that does
not carry Ethernet frames (a tunnel) has no neighbours to tell: nothing is sent.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence

import anyio
import structlog
from anyio.abc import TaskGroup
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from failover.errors import FailoverError

log = structlog.get_logger("failover.vip")

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ARPHRD_ETHER = 1
_EEXIST = 17
_EADDRNOTAVAIL = 99
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
ICMPV6 = 58
NEIGHBOR_ADVERTISEMENT = 136
NA_OVERRIDE = 0x20000000
OPTION_TARGET_LINK_LAYER = 2


class VipError(FailoverError):
    """The virtual IP could not be added or removed (no such interface, no permission)."""


def garp_frames(mac: bytes, address: ipaddress.IPv4Address) -> tuple[bytes, bytes]:
    """A gratuitous ARP request and reply announcing ``address`` at ``mac``, as
    broadcast Ethernet frames padded to the 60-byte minimum."""
    ip = address.packed
    broadcast = b"\xff" * 6
    header = broadcast + mac + struct.pack("!H", ETH_P_ARP)
    frames = []
    # Request: target MAC unknown (zeros); reply: target MAC broadcast. Hosts
    # differ in which one they honour, so both are sent (as arping -U / -A do).
    for op, target_mac in ((1, b"\x00" * 6), (2, broadcast)):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, mac, ip, target_mac, ip)
        frames.append((header + arp).ljust(60, b"\x00"))
    return frames[0], frames[1]


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def na_frame(mac: bytes, address: ipaddress.IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement of ``address`` at ``mac``: an Ethernet
    frame to all nodes (``ff02::1``), from ``address``, hop limit 255, override set."""
    source, target = address.packed, ALL_NODES.packed
    option = struct.pack("!BB6s", OPTION_TARGET_LINK_LAYER, 1, mac)  # length in units of 8 bytes
    body = struct.pack("!I16s", NA_OVERRIDE, source) + option
    length = 4 + len(body)  # ICMPv6 header (type, code, checksum) + body
    pseudo = source + target + struct.pack("!I3xB", length, ICMPV6)
    unsummed = struct.pack("!BBH", NEIGHBOR_ADVERTISEMENT, 0, 0) + body
    icmp = struct.pack("!BBH", NEIGHBOR_ADVERTISEMENT, 0, _checksum(pseudo + unsummed)) + body
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, length, ICMPV6, 255, source, target)
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ipv6 + icmp


class VirtualAddress:
    """One virtual address on one interface.

    ``acquire`` and ``release`` are idempotent. Each returns once netlink has
    applied the change (a few milliseconds) and raises ``VipError`` when it
    cannot be made. ``acquire`` also sends the first announcement before it
    returns; the repeats (``announce_count - 1`` of them, ``announce_interval``
    seconds apart) run in the task group it is given, and stop when the address
    is released or acquired again.
    """

    def __init__(
        self,
        address: str,
        interface: str,
        *,
        announce_count: int,
        announce_interval: float,
    ) -> None:
        try:
            self.address = ipaddress.ip_interface(address)
        except ValueError as exc:
            raise VipError(f"invalid virtual IP {address!r}: {exc}") from exc
        if announce_count < 1 or not announce_interval > 0:
            raise VipError(
                f"{address}: announce_count must be at least 1 and announce_interval above 0"
            )
        self.interface = interface
        self.announce_count = announce_count
        self.announce_interval = announce_interval
        self._packet: socket.socket | None = None
        # the scope of the repeats scheduled by the last acquire: cancelled at a
        # release or another acquire, even before the task entered it
        self._repeats: anyio.CancelScope | None = None
        self._announced = True  # False on an interface without Ethernet frames

    def __str__(self) -> str:
        return f"{self.address} on {self.interface}"

    # --- netlink (in a worker thread) -------------------------------------------------

    def _index(self, ipr: IPRoute) -> int:
        found: Sequence[int] = ipr.link_lookup(ifname=self.interface)
        if not found:
            raise VipError(f"interface {self.interface!r} does not exist")
        return found[0]

    def _change(self, command: str) -> bool:
        """Apply ``add``/``del``; True if something changed."""
        options = {}
        if command == "add" and self.address.version == 6:
            # usable at once: no duplicate address detection (module docstring)
            options["flags"] = IFA_F_NODAD
        try:
            with IPRoute() as ipr:
                ipr.addr(
                    command,
                    index=self._index(ipr),
                    address=str(self.address.ip),
                    prefixlen=self.address.network.prefixlen,
                    **options,
                )
        except NetlinkError as exc:
            if (command, exc.code) in (("add", _EEXIST), ("del", _EADDRNOTAVAIL)):
                return False
            verb = "add" if command == "add" else "remove"
            raise VipError(f"cannot {verb} {self}: {exc}") from exc
        return True

    def _present(self) -> bool:
        with IPRoute() as ipr:
            index = self._index(ipr)
            for message in ipr.get_addr(index=index):
                if message.get("IFA_ADDRESS") == str(self.address.ip):
                    return True
        return False

    async def held(self) -> bool:
        """True when the address is on the interface now. ``VipError`` if it does not exist."""
        return await anyio.to_thread.run_sync(self._present)

    # --- announcements ----------------------------------------------------------------

    def _open_packet_socket(self) -> socket.socket | None:
        if self._packet is not None or not self._announced:
            return self._packet
        try:
            # protocol 0: a socket that only sends (each frame says its own type)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except OSError as exc:
            log.error("cannot open a raw socket for announcements", vip=str(self), error=str(exc))
            return None
        try:
            sock.bind((self.interface, 0))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.error("cannot bind the announcement socket", vip=str(self), error=str(exc))
            return None
        if sock.getsockname()[3] != ARPHRD_ETHER:
            # a tunnel or point-to-point link: no neighbour cache to update
            sock.close()
            self._announced = False
            log.info("not announced: the interface is not Ethernet", vip=str(self))
            return None
        self._packet = sock
        return sock

    def frames(self, mac: bytes) -> list[tuple[bytes, int]]:
        """The frames of one announcement of this address at ``mac``, each with its
        Ethernet type."""
        if isinstance(self.address, ipaddress.IPv4Interface):
            return [(frame, ETH_P_ARP) for frame in garp_frames(mac, self.address.ip)]
        assert isinstance(self.address, ipaddress.IPv6Interface)
        return [(na_frame(mac, self.address.ip), ETH_P_IPV6)]

    def _announce(self) -> None:
        sock = self._open_packet_socket()
        if sock is None:
            return
        mac: bytes = sock.getsockname()[4]
        for frame, kind in self.frames(mac):
            try:
                sock.sendto(frame, (self.interface, kind))
            except OSError as exc:
                log.warning("announcement not sent", vip=str(self), error=str(exc))

    async def _repeat_announcements(self, scope: anyio.CancelScope, start: float) -> None:
        with scope:
            for n in range(1, self.announce_count):
                await anyio.sleep_until(start + n * self.announce_interval)
                self._announce()

    def _stop_repeats(self) -> None:
        if self._repeats is not None:
            self._repeats.cancel()
            self._repeats = None

    # --- public -----------------------------------------------------------------------

    async def prepare(self) -> bool:
        """Called once at daemon start: open the raw socket and remove a stale address.

        A daemon that was killed leaves the address on its interface; the peer
        may hold it by now. Returns True when a stale address was removed.
        Raises ``VipError`` when the address cannot be removed.
        """
        await anyio.to_thread.run_sync(self._open_packet_socket)
        removed = await anyio.to_thread.run_sync(self._change, "del")
        if removed:
            log.warning("removed a stale virtual IP left by a previous run", vip=str(self))
        return removed

    async def acquire(self, repeat_in: TaskGroup | None = None) -> None:
        """Add the address, announce it, and schedule the repeated announcements."""
        self._stop_repeats()
        await anyio.to_thread.run_sync(self._change, "add")
        self._announce()
        if repeat_in is not None and self.announce_count > 1:
            self._repeats = anyio.CancelScope()
            repeat_in.start_soon(self._repeat_announcements, self._repeats, anyio.current_time())
        log.info("virtual IP acquired", vip=str(self))

    async def release(self) -> None:
        """Stop the announcements and remove the address (no error if it is not there)."""
        self._stop_repeats()
        await anyio.to_thread.run_sync(self._change, "del")
        log.info("virtual IP released", vip=str(self))

    def close(self) -> None:
        """Close the raw socket (the address itself is left as it is)."""
        if self._packet is not None:
            self._packet.close()
            self._packet = None


class VirtualIP:
    """The cluster's virtual addresses (one or more), taken and given back together.

    ``acquire`` adds every address in order; if one fails, those already added
    are removed again before ``VipError`` is raised, so a failed start holds
    none. ``release`` removes every address, even when one of them fails, and
    then raises ``VipError`` naming each failure.
    """

    def __init__(self, addresses: Sequence[VirtualAddress]) -> None:
        if not addresses:
            raise ValueError("VirtualIP needs at least one address")
        self.addresses: tuple[VirtualAddress, ...] = tuple(addresses)

    def __str__(self) -> str:
        return ", ".join(str(address) for address in self.addresses)

    @property
    def address(self) -> str:
        """The addresses with their prefix lengths, comma-separated (for records)."""
        return ", ".join(str(address.address) for address in self.addresses)

    async def prepare(self) -> None:
        """``VirtualAddress.prepare`` of each; ``VipError`` naming each one that failed."""
        await self._each(VirtualAddress.prepare)

    async def acquire(self, repeat_in: TaskGroup | None = None) -> None:
        """Add and announce every address, or none (see the class docstring)."""
        taken: list[VirtualAddress] = []
        for address in self.addresses:
            try:
                await address.acquire(repeat_in)
            except VipError:
                for done in reversed(taken):
                    try:
                        await done.release()
                    except VipError as exc:
                        log.error("cannot release after a failed acquire", error=str(exc))
                raise
            taken.append(address)

    async def release(self) -> None:
        """Remove every address; ``VipError`` naming each one that could not be."""
        await self._each(VirtualAddress.release)

    async def _each(self, step: Callable[[VirtualAddress], Awaitable[object]]) -> None:
        """``step`` on every address, even after one failed; then ``VipError``
        naming each failure."""
        problems: list[str] = []
        for address in self.addresses:
            try:
                await step(address)
            except VipError as exc:
                problems.append(str(exc))
        if problems:
            raise VipError("; ".join(problems))

    def close(self) -> None:
        """Close every address's raw socket."""
        for address in self.addresses:
            address.close()
