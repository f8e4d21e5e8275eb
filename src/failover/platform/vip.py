"""The virtual IP: added to and removed from a local interface, announced by ARP.

Addresses are changed through netlink (pyroute2 ``IPRoute``, in the network
namespace of the daemon). Its synchronous API runs its own event loop, so every
netlink call runs in a worker thread, never in the daemon's event loop.

After the address is added, a gratuitous ARP (a request and a reply, both
saying "VIP is at my MAC") is broadcast at once and repeated at +0.1 s and
+1 s, so that clients and switches that missed the first one update their
caches (without it a client kept the old MAC for 30-45 s here). The raw
AF_PACKET socket is opened once per interface and kept, because opening one
costs about 24 ms, which would be paid on every failover otherwise.

IPv6 addresses are added and removed, but not announced (no unsolicited
neighbour advertisement yet): neighbours learn the new MAC when their entry
goes stale.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Sequence

import anyio
import structlog
from anyio.abc import TaskGroup
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from failover.errors import FailoverError

log = structlog.get_logger("failover.vip")

ETH_P_ARP = 0x0806
_EEXIST = 17
_EADDRNOTAVAIL = 99
ANNOUNCE_REPEATS: tuple[float, ...] = (0.1, 1.0)


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


class VirtualIP:
    """One virtual address on one interface.

    ``acquire`` and ``release`` are idempotent. Each returns once netlink has
    applied the change (a few milliseconds) and raises ``VipError`` when it
    cannot be made. ``acquire`` also sends the first announcement before it
    returns; the repeats run in the task group it is given.
    """

    def __init__(self, address: str, interface: str) -> None:
        try:
            self.address = ipaddress.ip_interface(address)
        except ValueError as exc:
            raise VipError(f"invalid virtual IP {address!r}: {exc}") from exc
        self.interface = interface
        self._packet: socket.socket | None = None
        self._epoch = 0  # changes at every acquire/release: stale repeats stop

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
        try:
            with IPRoute() as ipr:
                ipr.addr(
                    command,
                    index=self._index(ipr),
                    address=str(self.address.ip),
                    prefixlen=self.address.network.prefixlen,
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
        if self._packet is not None or self.address.version != 4:
            return self._packet
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        except OSError as exc:
            log.error(
                "cannot open a raw socket for ARP announcements", vip=str(self), error=str(exc)
            )
            return None
        try:
            sock.bind((self.interface, ETH_P_ARP))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            log.error("cannot bind the ARP socket", vip=str(self), error=str(exc))
            return None
        self._packet = sock
        return sock

    def _announce(self) -> None:
        sock = self._open_packet_socket()
        if sock is None or not isinstance(self.address, ipaddress.IPv4Interface):
            return
        mac: bytes = sock.getsockname()[4]
        for frame in garp_frames(mac, self.address.ip):
            try:
                sock.send(frame)
            except OSError as exc:
                log.warning("gratuitous ARP not sent", vip=str(self), error=str(exc))

    async def _repeat_announcements(self, epoch: int) -> None:
        start = anyio.current_time()
        for delay in ANNOUNCE_REPEATS:
            await anyio.sleep_until(start + delay)
            if self._epoch != epoch:
                return
            self._announce()

    # --- public -----------------------------------------------------------------------

    async def prepare(self) -> bool:
        """Called once at daemon start: open the ARP socket and remove a stale VIP.

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
        self._epoch += 1
        await anyio.to_thread.run_sync(self._change, "add")
        self._announce()
        if repeat_in is not None:
            repeat_in.start_soon(self._repeat_announcements, self._epoch)
        log.info("virtual IP acquired", vip=str(self))

    async def release(self) -> None:
        """Remove the address (no error if it is not there)."""
        self._epoch += 1
        await anyio.to_thread.run_sync(self._change, "del")
        log.info("virtual IP released", vip=str(self))

    def close(self) -> None:
        """Close the ARP socket (the address itself is left as it is)."""
        if self._packet is not None:
            self._packet.close()
            self._packet = None
