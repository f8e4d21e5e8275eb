"""Run inside a test network namespace (via nsenter): exercise VirtualIP, print JSON.

Usage: runtime_vip_probe.py announce|stale|missing ADDRESS INTERFACE CAPTURE_INTERFACE
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from typing import Any

import anyio

from failover.platform.vip import ETH_P_ARP, VipError, VirtualIP


def capture_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((interface, ETH_P_ARP))
    sock.setblocking(False)
    return sock


async def read_arp(sock: socket.socket) -> dict[str, Any]:
    await anyio.wait_readable(sock)
    frame = sock.recv(2048)
    op, sender_mac, sender_ip, _, target_ip = struct.unpack_from("!6xH6s4s6s4s", frame, 14)
    return {
        "at": anyio.current_time(),
        "op": op,
        "sender_mac": sender_mac.hex(":"),
        "sender_ip": socket.inet_ntoa(sender_ip),
        "target_ip": socket.inet_ntoa(target_ip),
        "broadcast": frame[:6] == b"\xff" * 6,
    }


async def announce(address: str, interface: str, capture: str) -> dict[str, Any]:
    vip = VirtualIP(address, interface)
    sniffer = capture_socket(capture)
    with capture_socket(interface) as own:  # /sys shows the namespace of the mount, not ours
        mac = own.getsockname()[4].hex(":")
    result: dict[str, Any] = {"mac": mac}
    async with anyio.create_task_group() as tg:
        result["stale_removed"] = await vip.prepare()
        start = anyio.current_time()
        await vip.acquire(repeat_in=tg)
        result["held_after_acquire"] = await vip.held()
        frames = []
        with anyio.fail_after(5):
            while len(frames) < 6:
                frames.append(await read_arp(sniffer))
        for frame in frames:
            frame["at"] = round(frame["at"] - start, 3)
        result["frames"] = frames
        await vip.acquire()  # idempotent
        await vip.release()
        result["held_after_release"] = await vip.held()
        await vip.release()  # idempotent
    vip.close()
    return result


async def stale(address: str, interface: str) -> dict[str, Any]:
    vip = VirtualIP(address, interface)
    held_before = await vip.held()
    removed = await vip.prepare()
    held_after = await vip.held()
    vip.close()
    return {"held_before": held_before, "removed": removed, "held_after": held_after}


async def missing(address: str, interface: str) -> dict[str, Any]:
    vip = VirtualIP(address, interface)
    try:
        await vip.acquire()
    except VipError as exc:
        return {"error": str(exc)}
    return {"error": None}


async def main() -> None:
    mode, address, interface, capture = sys.argv[1:5]
    if mode == "announce":
        result = await announce(address, interface, capture)
    elif mode == "stale":
        result = await stale(address, interface)
    else:
        result = await missing(address, interface)
    print(json.dumps(result))


if __name__ == "__main__":
    anyio.run(main)
