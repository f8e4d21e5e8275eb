"""Who answers ARP for an address: run in the lab's client namespace.

``e2e_arp_watch.py IFACE MY_IP TARGET_IP OUT`` sends an ARP request for
TARGET_IP every 10 ms from IFACE and appends to OUT one line per answer (and
per gratuitous announcement) of TARGET_IP heard: ``<CLOCK_MONOTONIC ns> <mac>``.
It runs until killed. The namespaces share CLOCK_MONOTONIC, so the test can put
these lines on one time axis with the nodes' own marks.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806
PROBE_EVERY = 0.01


def main(iface: str, my_ip: str, target: str, out_path: str) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((iface, 0))
    my_mac = sock.getsockname()[4]
    target_ip, source_ip = socket.inet_aton(target), socket.inet_aton(my_ip)
    request = (
        b"\xff" * 6
        + my_mac
        + struct.pack("!HHHBBH", ETH_P_ARP, 1, 0x0800, 6, 4, 1)
        + my_mac
        + source_ip
        + b"\x00" * 6
        + target_ip
    )
    with open(out_path, "a", buffering=1) as out:
        next_probe = 0.0
        while True:
            now = time.monotonic()
            if now >= next_probe:
                sock.send(request)
                next_probe = now + PROBE_EVERY
            readable, _, _ = select.select([sock], [], [], max(0.0, next_probe - now))
            if not readable:
                continue
            frame = sock.recv(128)
            if len(frame) < 42:
                continue
            sender_mac, sender_ip = frame[22:28], frame[28:32]
            if sender_ip == target_ip and sender_mac != my_mac:
                out.write(f"{time.monotonic_ns()} {sender_mac.hex(':')}\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
