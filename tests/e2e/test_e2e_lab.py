"""The shipped lab builder (failover.lab): topology, link cuts, cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from e2e_support import NETNS

from failover import lab as lab_module
from failover.lab import Lab, LabError, list_namespaces

pytestmark = NETNS

LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 9000)); s.listen(); print('ready', flush=True)\n"
    "while True: s.accept()[0].close()\n"
)


def connects(lab: Lab, source: str, address: str) -> bool:
    code = f"import socket; socket.create_connection(('{address}', 9000), timeout=1).close()"
    return lab.exec(source, [sys.executable, "-c", code], check=False).returncode == 0


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def listening(lab: Lab) -> Iterator[Lab]:
    """``lab`` with a TCP listener on port 9000 in beta (every address)."""
    server = lab.run("beta", [sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    yield lab


def test_topology_addresses_and_names(lab: Lab) -> None:
    assert lab.address("alpha", "lan") == "10.77.1.1"
    assert lab.address("beta", "crossover") == "10.77.2.2"
    assert lab.address("client", "lan") == "10.77.1.100"
    assert lab.host_address("lan", 200) == "10.77.1.200"
    assert lab.interface("alpha", "crossover") == "crossover"
    with pytest.raises(ValueError, match="not on network"):
        lab.address("client", "crossover")
    assert set(lab.namespaces) <= set(list_namespaces())
    shown = lab.exec("alpha", ["ip", "-o", "-4", "addr", "show", "dev", "lan"]).stdout
    assert "10.77.1.1/24" in shown
    # Nothing was added to the root namespace.
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    root_links = root.stdout
    assert lab.name not in root_links and "v1-alpha" not in root_links


def test_networks_connect_members_and_a_link_can_be_cut(listening: Lab) -> None:
    lab = listening
    assert connects(lab, "alpha", lab.address("beta", "lan"))
    assert connects(lab, "alpha", lab.address("beta", "crossover"))
    assert connects(lab, "client", lab.address("beta", "lan"))
    assert not connects(lab, "client", lab.address("beta", "crossover"))  # not on it

    lab.link_down("alpha", "crossover")
    assert not lab.link_is_up("alpha", "crossover")
    assert not connects(lab, "alpha", lab.address("beta", "crossover"))
    assert connects(lab, "alpha", lab.address("beta", "lan"))
    lab.link_up("alpha", "crossover")
    assert lab.link_is_up("alpha", "crossover")
    assert connects(lab, "alpha", lab.address("beta", "crossover"))


def test_close_kills_processes_and_their_children_and_removes_namespaces() -> None:
    lab = Lab(networks=("lan",)).open()
    parent = lab.run("alpha", ["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    # A process in the namespace that the lab did not start itself (own session).
    stray = subprocess.Popen([*lab.command("beta", ["sleep", "300"])], start_new_session=True)
    lab.close()
    assert parent.poll() == -signal.SIGKILL
    assert stray.wait(timeout=5) == -signal.SIGKILL
    assert gone(child)
    assert not [name for name in list_namespaces() if name.startswith(lab.name)]
    lab.close()  # idempotent
    with pytest.raises(LabError, match="not open"):
        lab.run("alpha", ["true"])


def test_a_failed_build_removes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    real_ip = lab_module._ip
    calls = 0

    def failing_ip(*args: str) -> str:
        nonlocal calls
        calls += 1
        if args[:3] == ("-n", f"{lab.name}-br", "link") and "bridge" in args:
            raise LabError("simulated failure")
        return real_ip(*args)

    lab = Lab(networks=("lan",))
    monkeypatch.setattr(lab_module, "_ip", failing_ip)
    with pytest.raises(LabError, match="simulated"):
        lab.open()
    assert calls > 3, "namespaces were created before the failure"
    assert not [name for name in list_namespaces() if name.startswith(lab.name)]


def test_names_are_unique_per_lab_and_validated() -> None:
    assert Lab().name != Lab().name
    assert Lab().name.startswith(f"failover-{os.getpid()}-")
    with pytest.raises(ValueError):
        Lab(networks=("a-network-name-too-long",))
    with pytest.raises(ValueError):
        Lab(networks=("lan", "lan"))


RECEIVE = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9001))\n"
    "s.settimeout(1.0); print('ready', flush=True)\n"
    "try:\n    print(s.recv(100).decode(), flush=True)\n"
    "except TimeoutError:\n    print('nothing')\n"
)
SEND = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(5):\n    s.sendto(b'hello', (sys.argv[1], 9001)); time.sleep(0.05)\n"
)


def delivered(lab: Lab, source: str, target: str, network: str) -> bool:
    """Whether UDP datagrams ``source`` sends to ``target``'s address on ``network`` arrive."""
    receiver = lab.run(target, [sys.executable, "-c", RECEIVE], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    lab.exec(source, [sys.executable, "-c", SEND, lab.address(target, network)])
    got = receiver.stdout.readline().strip()
    receiver.wait(timeout=10)
    return got == "hello"


def test_an_arbitrator_on_its_own_network_and_a_one_way_cut() -> None:
    with Lab(networks=("lan", "arb"), arbitrator="arb") as lab:
        assert lab.address("arbitrator", "arb") == "10.77.2.50"
        with pytest.raises(ValueError, match="not on network"):
            lab.address("arbitrator", "lan")
        assert delivered(lab, "alpha", "arbitrator", "arb")
        lab.link_down("alpha", "lan")  # the nodes cut from each other, not from it
        assert delivered(lab, "beta", "arbitrator", "arb")
        assert not delivered(lab, "beta", "alpha", "lan")
        lab.link_up("alpha", "lan")

        lab.drop_towards("alpha", "lan", "beta")  # one way: alpha -> beta lost
        assert not delivered(lab, "alpha", "beta", "lan")
        assert delivered(lab, "beta", "alpha", "lan")
        lab.undrop_towards("alpha", "lan", "beta")
        assert delivered(lab, "alpha", "beta", "lan")
    with pytest.raises(ValueError, match="arbitrator network"):
        Lab(networks=("lan",), arbitrator="arb")
