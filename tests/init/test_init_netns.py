"""``failover init`` guesses the virtual IP's interface and prefix from the real
machine's addresses (netlink), in a network namespace built for the test: the
interface whose network holds the address, never one that merely exists.

Needs root (namespaces); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.config import load_config

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(
        not (shutil.which("ip") and shutil.which("nsenter")), reason="needs iproute2 and nsenter"
    ),
]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace with two interfaces: 'near' on 10.42.0.1/24, 'far' on 10.43.0.1/24."""
    name = f"fo-init-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "add", "near", "type", "veth", "peer", "name", "far")
        ip("-n", name, "addr", "add", "10.42.0.1/24", "dev", "near")
        ip("-n", name, "addr", "add", "10.43.0.1/24", "dev", "far")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.parametrize(("vip", "expected"), [("10.43.0.100", "far"), ("10.42.0.7", "near")])
def test_the_interface_and_prefix_come_from_this_machines_addresses(
    namespace: str, tmp_path: Path, vip: str, expected: str
) -> None:
    path = tmp_path / "cluster.yaml"
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{namespace}", sys.executable, "-m", "failover", "init",
         "--non-interactive", "-o", str(path), "--cluster", "lab",
         "--node", "alpha=10.42.0.1", "--node", "beta=10.42.0.2", "--vip", vip],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = load_config(path)
    assert config.virtual_ip is not None
    assert (str(config.virtual_ip.address), config.virtual_ip.interface) == (f"{vip}/24", expected)
    assert f"on interface {expected} (it holds 10.4" in result.stdout
