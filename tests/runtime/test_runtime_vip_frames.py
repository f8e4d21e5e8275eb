"""The announcement frames, byte by byte (no root needed).

The network-namespace tests (test_runtime_vip.py) show that a Linux
neighbour accepts them; these pin down the fields where that test cannot run.
"""

from __future__ import annotations

import ipaddress
import struct

from failover.platform.vip import garp_frames, na_frame

MAC = bytes.fromhex("020000000001")


def ones_complement_sum(data: bytes) -> int:
    """The receiver's check: the 16-bit one's complement sum, 0xFFFF when intact."""
    total = 0
    for (word,) in struct.iter_unpack("!H", data + b"\x00" * (len(data) % 2)):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_the_neighbour_advertisement_has_every_field_a_receiver_checks() -> None:
    address = ipaddress.IPv6Address("2001:db8::100")
    frame = na_frame(MAC, address)
    assert frame[:6] == bytes.fromhex("333300000001")  # all-nodes multicast MAC
    assert frame[6:12] == MAC
    assert frame[12:14] == b"\x86\xdd"
    ipv6, icmp = frame[14:54], frame[54:]
    version, length, next_header, hop_limit = struct.unpack_from("!IHBB", ipv6)
    assert (version >> 28, length, next_header, hop_limit) == (6, len(icmp), 58, 255)
    assert ipv6[8:24] == address.packed
    assert ipv6[24:40] == ipaddress.IPv6Address("ff02::1").packed
    kind, code, _, flags = struct.unpack_from("!BBHI", icmp)
    assert (kind, code) == (136, 0)
    assert flags == 0x20000000, "override only: not a router, not solicited"
    assert icmp[8:24] == address.packed
    assert icmp[24:] == b"\x02\x01" + MAC  # target link-layer address option
    pseudo = ipv6[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert ones_complement_sum(pseudo + icmp) == 0xFFFF
    flipped = icmp[:-1] + bytes([icmp[-1] ^ 0x01])
    assert ones_complement_sum(pseudo + flipped) != 0xFFFF, "the check above can fail"


def test_the_gratuitous_arp_is_a_request_and_a_reply_for_the_address_itself() -> None:
    address = ipaddress.IPv4Address("10.0.0.100")
    for frame, op, target_mac in zip(
        garp_frames(MAC, address), (1, 2), (b"\x00" * 6, b"\xff" * 6), strict=True
    ):
        assert len(frame) == 60
        assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
        fields = struct.unpack_from("!HHBBH6s4s6s4s", frame, 14)
        assert fields == (1, 0x0800, 6, 4, op, MAC, address.packed, target_mac, address.packed)
