"""The virtual IP in a network namespace built for the test (a veth pair inside it).

Needs root (namespaces, netlink, raw sockets); skipped otherwise. The probe
runs inside the namespace through ``nsenter --net`` and reports in JSON; the
frames the VIP sends on one end of the veth pair are captured on the other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
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
VIP = "10.99.0.100/24"


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"fo-vip-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ip("-n", name, "link", "set", "v0", "up")
        ip("-n", name, "link", "set", "v1", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def probe(netns: str, mode: str, interface: str = "v0") -> dict[str, Any]:
    result = subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/{netns}",
            sys.executable,
            str(PROBE),
            mode,
            VIP,
            interface,
            "v1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The last line is the result; log records (structlog defaults to stdout) come before.
    document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return document


def addresses(netns: str) -> list[str]:
    shown = json.loads(ip("-n", netns, "-j", "addr", "show", "dev", "v0"))
    return [
        f"{a['local']}/{a['prefixlen']}" for a in shown[0]["addr_info"] if a["family"] == "inet"
    ]


def test_acquire_adds_and_announces_the_vip_three_times_then_release_removes_it(netns: str) -> None:
    result = probe(netns, "announce")
    assert result["stale_removed"] is False
    assert result["held_after_acquire"] is True and result["held_after_release"] is False
    frames = result["frames"]
    assert all(
        f["sender_ip"] == f["target_ip"] == "10.99.0.100"
        and f["sender_mac"] == result["mac"]
        and f["broadcast"]
        for f in frames
    ), frames
    assert sorted(f["op"] for f in frames) == [1, 1, 1, 2, 2, 2], "a request and a reply each time"
    # At once, then repeated later (+0.1 s, +1 s): three distinct bursts, in order.
    bursts = [frames[i]["at"] for i in (0, 2, 4)]
    assert bursts[0] < bursts[1] < bursts[2], bursts
    assert bursts[2] - bursts[0] >= 0.9, "the last repeat waits about a second"
    assert addresses(netns) == []


def test_prepare_removes_a_stale_vip_left_by_a_killed_daemon(netns: str) -> None:
    ip("-n", netns, "addr", "add", VIP, "dev", "v0")
    assert addresses(netns) == [VIP]
    result = probe(netns, "stale")
    assert result == {"held_before": True, "removed": True, "held_after": False}
    assert addresses(netns) == []


def test_a_missing_interface_is_a_clear_error(netns: str) -> None:
    result = probe(netns, "missing", interface="nope0")
    assert result["error"] == "interface 'nope0' does not exist"
