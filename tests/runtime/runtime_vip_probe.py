"""Run inside a test network namespace (via nsenter): exercise the virtual IP, print JSON.

Usage: runtime_vip_probe.py MODE INTERFACE ADDRESS [ADDRESS...]

Modes:
- ``announce``: prepare, acquire (3 announcements 0.3 s apart), bind a TCP socket
  to the address at once, capture the announcements leaving INTERFACE, release.
- ``release-early``: acquire (5 announcements 0.3 s apart), release after the
  first; report every announcement seen until the schedule would have ended.
- ``stale``: prepare over an address left on the interface.
- ``group``: ``VirtualIP`` of every ADDRESS (``ADDRESS@IFACE`` for another
  interface): acquire, then report what is held; release.

The capture socket sees the frames the node sends (``PACKET_OUTGOING``), so the
probe needs no second interface in its namespace.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys
from typing import Any

import anyio

from failover.platform.vip import ETH_P_ARP, ETH_P_IPV6, VipError, VirtualAddress, VirtualIP

ETH_P_ALL = 0x0003
COUNT, INTERVAL = 3, 0.3


def capture_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, ETH_P_ALL))
    sock.setblocking(False)
    return sock


def parse(frame: bytes) -> dict[str, Any] | None:
    """An ARP or neighbour advertisement frame's fields (None for any other frame)."""
    kind = struct.unpack_from("!H", frame, 12)[0]
    fields: dict[str, Any] = {"dst_mac": frame[:6].hex(":"), "src_mac": frame[6:12].hex(":")}
    if kind == ETH_P_ARP:
        op, sender_mac, sender_ip, target_mac, target_ip = struct.unpack_from(
            "!6xH6s4s6s4s", frame, 14
        )
        return fields | {
            "family": 4,
            "op": op,
            "sender_mac": sender_mac.hex(":"),
            "target_mac": target_mac.hex(":"),
            "sender_ip": socket.inet_ntoa(sender_ip),
            "target_ip": socket.inet_ntoa(target_ip),
        }
    if kind != ETH_P_IPV6 or frame[20] != 58 or frame[54] != 136:  # ICMPv6, NA
        return None
    hop_limit, source, destination = frame[21], frame[22:38], frame[38:54]
    code, _, flags, target = struct.unpack_from("!BHI16s", frame, 55)
    options = frame[78:]
    return (
        fields
        | {
            "family": 6,
            "hop_limit": hop_limit,
            "src_ip": str(ipaddress.IPv6Address(source)),
            "dst_ip": str(ipaddress.IPv6Address(destination)),
            "code": code,
            "flags": flags >> 29,  # router, solicited, override
            "target": str(ipaddress.IPv6Address(target)),
            "option": options[:2].hex(),
            "option_mac": options[2:8].hex(":"),
        }
    )


async def announcements(
    sniffer: socket.socket, start: float, wanted: int, frames: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Announcement frames, each with its time since ``start``, appended to ``frames``
    (kept if cancelled) until it holds ``wanted``."""
    frames = [] if frames is None else frames
    while len(frames) < wanted:
        await anyio.wait_readable(sniffer)
        frame, address = sniffer.recvfrom(2048)
        fields = parse(frame)
        if fields is not None and address[2] == socket.PACKET_OUTGOING:
            frames.append(fields | {"at": round(anyio.current_time() - start, 3)})
    return frames


def try_bind(address: str) -> str | None:
    """None when a TCP socket binds to ``address`` now, else the error."""
    ip = ipaddress.ip_interface(address).ip
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((str(ip), 0))
        except OSError as exc:
            return exc.strerror
    return None


def per_announcement(address: str) -> int:
    return 2 if ipaddress.ip_interface(address).version == 4 else 1  # ARP: request + reply


async def announce(interface: str, address: str) -> dict[str, Any]:
    vip = VirtualAddress(address, interface, announce_count=COUNT, announce_interval=INTERVAL)
    sniffer = capture_socket(interface)
    result: dict[str, Any] = {"mac": sniffer.getsockname()[4].hex(":")}
    async with anyio.create_task_group() as tg:
        result["stale_removed"] = await vip.prepare()
        start = anyio.current_time()
        await vip.acquire(repeat_in=tg)
        result["bind_error"] = try_bind(address)  # before anything else: at once
        result["held_after_acquire"] = await vip.held()
        with anyio.fail_after(10):
            result["frames"] = await announcements(
                sniffer, start, COUNT * per_announcement(address)
            )
        await vip.acquire()  # idempotent
        await vip.release()
        result["held_after_release"] = await vip.held()
        await vip.release()  # idempotent
    vip.close()
    sniffer.close()
    return result


async def release_early(interface: str, address: str) -> dict[str, Any]:
    count = 5
    vip = VirtualAddress(address, interface, announce_count=count, announce_interval=INTERVAL)
    sniffer = capture_socket(interface)
    await vip.prepare()
    async with anyio.create_task_group() as tg:
        start = anyio.current_time()
        await vip.acquire(repeat_in=tg)
        with anyio.fail_after(10):
            frames = await announcements(sniffer, start, per_announcement(address))
        await vip.release()
        # Absence can only be shown by waiting: until the whole schedule would have
        # ended, plus a margin.
        with anyio.move_on_after(count * INTERVAL + 0.5):
            await announcements(sniffer, start, 1000, frames)
    vip.close()
    sniffer.close()
    return {"frames": frames}


async def stale(interface: str, address: str) -> dict[str, Any]:
    vip = VirtualAddress(address, interface, announce_count=1, announce_interval=1.0)
    held_before = await vip.held()
    removed = await vip.prepare()
    held_after = await vip.held()
    vip.close()
    return {"held_before": held_before, "removed": removed, "held_after": held_after}


async def group(interface: str, *addresses: str) -> dict[str, Any]:
    members = []
    for spec in addresses:
        address, _, on = spec.partition("@")
        members.append(
            VirtualAddress(address, on or interface, announce_count=1, announce_interval=1.0)
        )
    vip = VirtualIP(members)
    result: dict[str, Any] = {"error": None}
    try:
        await vip.acquire()
    except VipError as exc:
        result["error"] = str(exc)
    local = [m for m in members if m.interface == interface]
    result["held"] = [str(m.address) for m in local if await m.held()]
    result["bind_errors"] = [try_bind(str(m.address)) for m in local]
    try:
        await vip.release()
    except VipError as exc:
        result["release_error"] = str(exc)
    result["held_after_release"] = [str(m.address) for m in local if await m.held()]
    vip.close()
    return result


async def main() -> None:
    mode, interface, *addresses = sys.argv[1:]
    if mode == "announce":
        result = await announce(interface, addresses[0])
    elif mode == "release-early":
        result = await release_early(interface, addresses[0])
    elif mode == "stale":
        result = await stale(interface, addresses[0])
    else:
        result = await group(interface, *addresses)
    print(json.dumps(result))


if __name__ == "__main__":
    anyio.run(main)
