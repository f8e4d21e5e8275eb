"""The hand-over order, between two namespaces, with a slow stop script.

The serving node is told to stop (``failover stop``, SIGTERM, ``swap``) while
its stop script takes 3 s and writes one last fsynced record into the
replicated directory. Its peer must start the application only after that:
the application scripts mark their start and end on CLOCK_MONOTONIC (shared
by the namespaces) in a file outside them, and an ARP observer in the client
namespace records which MAC answers for the virtual IP, on the same clock.

- never two application instances: the nodes' [start, stopped] intervals
  do not overlap;
- never two holders of the address: the old MAC's last answer comes before
  the new MAC's first;
- the stop script's last write is on the node that serves next.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from e2e_support import APP_PORT, NETNS, SERVING, Cluster, cli

from failover.lab import Lab

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}
WATCH = Path(__file__).with_name("e2e_arp_watch.py")
STOP_SECONDS = 3


def slow_scripts(cluster: Cluster, tmp_path: Path) -> Path:
    """Replace the cluster's application scripts (same paths) with marking ones;
    returns the marks file."""
    marks = tmp_path / "marks"
    mark = tmp_path / "mark"
    mark.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        f"with open({str(marks)!r}, 'a') as f:\n"
        "    f.write(f'{sys.argv[1]} {sys.argv[2]} {time.monotonic_ns()}\\n')\n"
    )
    last = cluster.data / "last-stop"
    write_last = (
        f"{sys.executable} -c 'import os, sys; fd = os.open(sys.argv[1], "
        "os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644); os.write(fd, sys.argv[2].encode()); "
        f'os.fsync(fd); os.close(fd)\' {last} "$FAILOVER_NODE $(date +%s%N)"'
    )
    pidfile = f'"{tmp_path}/app.$FAILOVER_NODE.pid"'
    (tmp_path / "app-start").write_text(
        "#!/bin/sh\n"
        f'{mark} start "$FAILOVER_NODE"\n'
        'addr="${FAILOVER_VIP%/*}"\n'
        f'{sys.executable} -m http.server --bind "$addr" '
        f'--directory "{tmp_path}/www-$FAILOVER_NODE" {APP_PORT} >/dev/null 2>&1 </dev/null &\n'
        f"echo $! > {pidfile}\n"
    )
    (tmp_path / "app-stop").write_text(
        "#!/bin/sh\n"
        f'{mark} stopping "$FAILOVER_NODE"\n'
        f"sleep {STOP_SECONDS}\n"
        f"{write_last}\n"
        f'if [ -f {pidfile} ]; then kill -9 "$(cat {pidfile})" 2>/dev/null; rm -f {pidfile}; fi\n'
        f'{mark} stopped "$FAILOVER_NODE"\n'
    )
    mark.chmod(0o755)
    return marks


def instances(marks: Path) -> dict[str, list[tuple[int, int | None]]]:
    """Each node's application runs, [start, stopped] in ns (None: still running)."""
    runs: dict[str, list[tuple[int, int | None]]] = {}
    for line in marks.read_text().splitlines():
        what, node, ns = line.split()
        if what == "start":
            runs.setdefault(node, []).append((int(ns), None))
        elif what == "stopped" and runs.get(node) and runs[node][-1][1] is None:
            runs[node][-1] = (runs[node][-1][0], int(ns))
    return runs


def overlaps(runs: dict[str, list[tuple[int, int | None]]]) -> list[str]:
    found = []
    forever = 2**63
    for a_start, a_end in runs.get("alpha", []):
        for b_start, b_end in runs.get("beta", []):
            if a_start < (b_end or forever) and b_start < (a_end or forever):
                found.append(f"alpha {a_start}-{a_end} and beta {b_start}-{b_end}")
    return found


def answers(watch_file: Path) -> list[tuple[int, str]]:
    return [
        (int(t), mac) for t, mac in (line.split() for line in watch_file.read_text().splitlines())
    ]


def mac_of(cluster: Cluster, node: str) -> str:
    shown = cluster.lab.exec(node, ["ip", "-o", "link", "show", cluster.lab.interface(node, "lan")])
    words = shown.stdout.split()
    return words[words.index("link/ether") + 1]


@pytest.mark.parametrize("how", ["stop", "sigterm", "swap"])
def test_the_peer_starts_only_after_the_application_stopped_replicated_and_released_the_vip(
    lab: Lab, tmp_path: Path, how: str
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, vip_network="lan", replicate="crossover")
    assert cluster.vip is not None
    marks = slow_scripts(cluster, tmp_path)
    watch_file = tmp_path / "arp-answers"
    watcher = lab.run(
        "client",
        [sys.executable, str(WATCH), lab.interface("client", "lan"),
         lab.address("client", "lan"), cluster.vip, str(watch_file)],
    )  # fmt: skip
    cluster.start_both()
    old, new = cluster.paired()
    cluster.wait("the VIP answers from the primary", lambda: cluster.fetch_via_vip() == old)

    if how == "stop":
        done = cli("stop", "--socket", str(cluster.socket(old)))
        assert done.returncode == 0, done.stderr
    elif how == "swap":
        done = cli("swap", "--socket", str(cluster.socket(old)))
        assert done.returncode == 0, done.stderr
    else:
        cluster.expected_dead.add(old)
        cluster.procs[old].send_signal(signal.SIGTERM)
    cluster.wait(f"{new} serves", lambda: cluster.state(new) in SERVING, bound=30)
    cluster.wait("the VIP answers from the new server", lambda: cluster.fetch_via_vip() == new)
    if how == "sigterm":
        assert cluster.procs[old].wait(timeout=20) == 0
    watcher.send_signal(signal.SIGTERM)
    watcher.wait(timeout=10)

    runs = instances(marks)
    assert runs.get(old) and runs[old][0][1] is not None, f"{old} never finished its stop: {runs}"
    assert runs.get(new), f"{new} never started the application: {runs}"
    assert not overlaps(runs), f"two application instances at once: {overlaps(runs)}"

    heard = answers(watch_file)
    old_mac, new_mac = mac_of(cluster, old), mac_of(cluster, new)
    assert {mac for _, mac in heard} <= {old_mac, new_mac}, heard
    last_old = max(t for t, mac in heard if mac == old_mac)
    first_new = min(t for t, mac in heard if mac == new_mac)
    assert last_old < first_new, (
        f"{old} still answered for the VIP {(last_old - first_new) / 1e6:.1f} ms "
        f"after {new} took it"
    )
    stopped_at = runs[old][0][1]
    assert stopped_at is not None and first_new > stopped_at

    written = (cluster.disk(old) / "last-stop").read_text()
    assert written.startswith(old)
    on_new = cluster.disk(new) / "last-stop"
    assert on_new.exists() and on_new.read_text() == written, (
        f"the stop script's last write is not on {new}: "
        f"{on_new.read_text() if on_new.exists() else 'missing'} != {written}"
    )
    assert os.path.getsize(on_new) > 0
