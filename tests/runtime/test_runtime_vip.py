"""The virtual addresses in network namespaces built for the test, both families.

Two namespaces joined by a veth pair: the node (``v0``, where the probe adds
the address) and a neighbour (``v1``), whose kernel neighbour cache shows
whether it accepted the announcements: it holds an entry for the virtual
address at a made-up MAC before, and must point at the node's MAC after.

Needs root (namespaces, netlink, raw sockets); skipped otherwise. The probe
runs inside the node's namespace through ``nsenter --net`` and reports in JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not (shutil.which("ip") and shutil.which("nsenter")), reason="needs iproute2 and nsenter"
    ),
]

PROBE = Path(__file__).with_name("runtime_vip_probe.py")
VIP4, VIP6 = "10.99.0.100/24", "fd99::100/64"
OLD_MAC = "02:00:00:00:00:99"  # where the neighbour believes the address is, before
NEIGHBOUR_ADDRESSES = ("10.99.0.1/24", "fd99::1/64")
COUNT, INTERVAL = 3, 0.3  # the probe's announcement schedule


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class Pair:
    node: str  # namespace of the node, interface v0
    neighbour: str  # namespace of the neighbour, interface v1


@pytest.fixture
def pair() -> Iterator[Pair]:
    tag = uuid.uuid4().hex[:8]
    made = Pair(f"fo-vip-{tag}", f"fo-vipn-{tag}")
    ip("netns", "add", made.node)
    try:
        ip("netns", "add", made.neighbour)
        ip("-n", made.node, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ip("-n", made.node, "link", "set", "v1", "netns", made.neighbour)
        for address in NEIGHBOUR_ADDRESSES:
            ip("-n", made.neighbour, "addr", "add", address, "dev", "v1", "nodad")
        ip("-n", made.node, "link", "set", "v0", "up")
        ip("-n", made.neighbour, "link", "set", "v1", "up")
        yield made
    finally:
        for namespace in (made.node, made.neighbour):
            subprocess.run(["ip", "netns", "del", namespace], check=False)


def nsenter(namespace: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{namespace}"]


def probe(pair: Pair, mode: str, *addresses: str, interface: str = "v0") -> dict[str, Any]:
    """The probe's result; ``log``: the log records it printed before it."""
    result = subprocess.run(
        [*nsenter(pair.node), sys.executable, str(PROBE), mode, interface, *addresses],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The last line is the result; log records (structlog defaults to stdout) come before.
    *log, last = result.stdout.strip().splitlines()
    document: dict[str, Any] = json.loads(last)
    return document | {"log": "\n".join(log)}


def addresses(namespace: str) -> list[dict[str, Any]]:
    shown = json.loads(ip("-n", namespace, "-j", "addr", "show", "dev", "v0"))
    return [a for a in shown[0]["addr_info"] if a["family"] in ("inet", "inet6")]


def virtual(namespace: str) -> list[str]:
    """The addresses on v0 other than its link-local one."""
    return [f"{a['local']}/{a['prefixlen']}" for a in addresses(namespace) if a["scope"] != "link"]


def neighbour_mac(pair: Pair, address: str) -> str | None:
    shown = json.loads(ip("-n", pair.neighbour, "-j", "neigh", "show", address.partition("/")[0]))
    return shown[0].get("lladdr") if shown else None


def believe_old_mac(pair: Pair, address: str) -> None:
    """The neighbour has the address in its cache, at a MAC that is not the node's."""
    target = address.partition("/")[0]
    ip("-n", pair.neighbour, "neigh", "replace", target, "lladdr", OLD_MAC, "dev", "v1")
    ip("-n", pair.neighbour, "neigh", "change", target, "dev", "v1", "nud", "stale")
    assert neighbour_mac(pair, address) == OLD_MAC


def test_ipv4_acquire_adds_binds_and_announces_by_repeated_gratuitous_arp(pair: Pair) -> None:
    believe_old_mac(pair, VIP4)
    result = probe(pair, "announce", VIP4)
    assert result["stale_removed"] is False
    assert result["bind_error"] is None
    assert result["held_after_acquire"] is True and result["held_after_release"] is False
    frames = result["frames"]
    assert all(
        f["family"] == 4
        and f["sender_ip"] == f["target_ip"] == "10.99.0.100"
        and f["sender_mac"] == f["src_mac"] == result["mac"]
        and f["dst_mac"] == "ff:ff:ff:ff:ff:ff"
        for f in frames
    ), frames
    assert sorted(f["op"] for f in frames) == ([1] * COUNT + [2] * COUNT), (
        "a request and a reply each time"
    )
    bursts = [frames[i]["at"] for i in range(0, 2 * COUNT, 2)]
    assert all(bursts[n] >= n * INTERVAL - 0.01 for n in range(COUNT)), bursts
    # The neighbour's kernel took the announcement: the cache points at the node.
    assert neighbour_mac(pair, VIP4) == result["mac"]
    assert virtual(pair.node) == []


def test_ipv6_is_usable_at_once_and_announced_by_unsolicited_neighbour_advertisements(
    pair: Pair,
) -> None:
    """Regression (issue 9): the address stayed tentative (duplicate address
    detection), the application could not bind it, and no advertisement was sent."""
    believe_old_mac(pair, VIP6)
    result = probe(pair, "announce", VIP6)
    assert result["bind_error"] is None, "the application can bind the address at once"
    assert result["held_after_acquire"] is True and result["held_after_release"] is False
    frames = result["frames"]
    assert len(frames) == COUNT
    for frame in frames:
        assert frame == frame | {
            "family": 6,
            "dst_mac": "33:33:00:00:00:01",  # all-nodes multicast
            "src_mac": result["mac"],
            "hop_limit": 255,
            "src_ip": "fd99::100",
            "dst_ip": "ff02::1",
            "code": 0,
            "flags": 0b001,  # override; not a router, not solicited
            "target": "fd99::100",
            "option": "0201",  # target link-layer address, 8 bytes
            "option_mac": result["mac"],
        }, frame
    assert all(frames[n]["at"] >= n * INTERVAL - 0.01 for n in range(COUNT)), frames
    # The neighbour's kernel accepted it (checksum, hop limit, flags): its cache
    # now points at the node, without a solicitation of its own.
    assert neighbour_mac(pair, VIP6) == result["mac"]
    assert virtual(pair.node) == []


def test_ipv6_address_is_not_tentative(pair: Pair) -> None:
    result = probe(pair, "group", VIP6)
    assert result["error"] is None and result["bind_errors"] == [None]
    assert result["held"] == [VIP6] and result["held_after_release"] == []


@pytest.mark.parametrize("address", [VIP4, VIP6])
def test_releasing_the_address_stops_the_repeats(pair: Pair, address: str) -> None:
    frames = probe(pair, "release-early", address)["frames"]
    per_announcement = 2 if address == VIP4 else 1
    assert len(frames) == per_announcement, frames


@pytest.mark.parametrize("address", [VIP4, VIP6])
def test_prepare_removes_an_address_left_by_a_killed_daemon(pair: Pair, address: str) -> None:
    ip("-n", pair.node, "addr", "add", address, "dev", "v0", "nodad")
    assert virtual(pair.node) == [address]
    result = probe(pair, "stale", address)
    assert result | {"log": ""} == {
        "held_before": True,
        "removed": True,
        "held_after": False,
        "log": "",
    }
    assert "removed a stale virtual IP left by a previous run" in result["log"]
    assert virtual(pair.node) == []


def test_several_addresses_of_both_families_are_taken_and_released_together(
    pair: Pair,
) -> None:
    result = probe(pair, "group", VIP4, VIP6, "10.99.0.101/24")
    assert result["error"] is None
    assert result["held"] == [VIP4, VIP6, "10.99.0.101/24"]
    assert result["bind_errors"] == [None, None, None]
    assert result["held_after_release"] == []
    assert virtual(pair.node) == []


def test_a_partial_failure_releases_what_was_taken(pair: Pair) -> None:
    result = probe(pair, "group", VIP4, VIP6, "10.99.0.101/24@nope0")
    assert result["error"] == "interface 'nope0' does not exist"
    assert result["held"] == [], "the two addresses taken before the failure were given back"
    assert virtual(pair.node) == []


def test_an_interface_without_ethernet_frames_gets_the_address_and_no_announcement(
    pair: Pair,
) -> None:
    ip("-n", pair.node, "tuntap", "add", "dev", "t0", "mode", "tun")
    ip("-n", pair.node, "link", "set", "t0", "up")
    result = probe(pair, "group", "10.99.1.100/24", VIP6, interface="t0")
    assert result["error"] is None and result["held"] == ["10.99.1.100/24", VIP6]
    assert result["held_after_release"] == []
    assert result["log"].count("not announced: the interface is not Ethernet") == 2
    assert "announcement not sent" not in result["log"]
