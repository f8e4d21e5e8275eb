"""Two real ``failover run`` daemons in two network namespaces, for the e2e tests.

``Cluster`` writes a cluster file for a ``Lab`` (fast profile unless told, a fresh key,
state and control sockets under ``tmp_path``), starts each daemon with
``python -m failover run`` inside its node's namespace, and reads state
through the control API. Every wait polls the API under a generous overall
bound (``BOUND``); nothing sleeps for a fixed time hoping something happened.

Every cluster a test builds is recorded in ``CLUSTERS``; when the test ends,
``tests/e2e/conftest.py`` audits each one's journals (``Cluster.audit``,
docs/audit.md) and fails the test on any violation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from failover.api.client import ControlClient
from failover.audit import JOURNAL_NAME, Ack, Report, audit
from failover.config.timing import PROFILES
from failover.errors import FailoverError
from failover.lab import (
    Lab,
    kill_mount_namespace,
    netns_unavailable_reason,
    with_own_disks,
)

NODES = ("alpha", "beta")
BOUND = 20.0  # seconds: an upper bound on every wait, never an expected duration
POLL = 0.02
VIP_HOST = 200
REPLICATION_PORT = 7500
APP_PORT = 8080
SERVING = ("primary", "alone")
CLUSTERS: list[Cluster] = []
"""The clusters built by the running test, audited when it ends (conftest.py)."""


WRITER = Path(__file__).with_name("e2e_writer.py")
"""The application of the data tests: numbered records, each fsynced (e2e_writer.py)."""
RECORD = 9  # bytes per numbered record


def records(path: Path) -> dict[int, bytes]:
    """The numbered records' slots in ``path`` (missing file: none)."""
    data = path.read_bytes() if path.exists() else b""
    return {n: data[n * RECORD : (n + 1) * RECORD] for n in range(len(data) // RECORD)}


def held(cluster: Cluster, node: str) -> set[int]:
    """The record numbers ``node``'s own disk holds, each at its place."""
    slots = records(cluster.disk(node) / "records")
    return {n for n, slot in slots.items() if slot == b"%08d\n" % n}


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``failover ARGS...`` as an operator types it (text output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "failover", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def other(node: str) -> str:
    return "beta" if node == "alpha" else "alpha"


def app_section(tmp_path: Path, stop_delay: float = 0.0) -> dict[str, Any]:
    """Start/stop scripts: a tiny HTTP server on the virtual IP that serves ``/node``.

    The start script runs after the daemon has added the VIP; it starts the server
    in the background (its pid in a file) and returns. The stop script kills that
    pid, after ``stop_delay`` seconds (an application that is slow to stop).
    """
    for node in NODES:
        www = tmp_path / f"www-{node}"
        www.mkdir(exist_ok=True)
        (www / "node").write_text(node)
    start, stop = tmp_path / "app-start", tmp_path / "app-stop"
    start.write_text(
        "#!/bin/sh\n"
        'addr="${FAILOVER_VIP%/*}"\n'
        f'{sys.executable} -m http.server --bind "$addr" '
        f'--directory "{tmp_path}/www-$FAILOVER_NODE" {APP_PORT} >/dev/null 2>&1 </dev/null &\n'
        f'echo $! > "{tmp_path}/app.$FAILOVER_NODE.pid"\n'
    )
    stop.write_text(
        "#!/bin/sh\n"
        f"sleep {stop_delay}\n"
        f'pidfile="{tmp_path}/app.$FAILOVER_NODE.pid"\n'
        'if [ -f "$pidfile" ]; then kill -9 "$(cat "$pidfile")" 2>/dev/null; rm -f "$pidfile"; fi\n'
        "exit 0\n"
    )
    start.chmod(0o755)
    stop.chmod(0o755)
    return {"start": str(start), "stop": str(stop), "timeout": 5}


class Cluster:
    """A cluster file for ``lab`` and the two daemons running it.

    ``links`` maps link name to transport; each node's endpoint for a link comes
    from ``endpoints(node, link)`` (default: its lab address on the network named
    like the link, port 7400 + link index).
    """

    def __init__(
        self,
        lab: Lab,
        tmp_path: Path,
        links: Mapping[str, str],
        *,
        endpoints: Callable[[str, str], dict[str, Any]] | None = None,
        vip_network: str | None = None,
        env: Mapping[str, str] | None = None,
        replicate: str | None = None,
        stop_delay: float = 0.0,
        profile: str = "fast",
        watchdog: bool = True,
    ) -> None:
        CLUSTERS.append(self)
        self.expected_violations: frozenset[str] = frozenset()
        self.lab = lab
        self.replicate = replicate
        self.entry = ["-m", "failover"]
        self.acked: list[Ack] | None = None
        self.found: dict[str, set[int]] = {}
        self.final_report: Report | None = None
        self.tmp_path = tmp_path
        self.links = dict(links)
        self.env = {**os.environ, **(env or {})}
        if env and "PYTHONPATH" in env and os.environ.get("PYTHONPATH"):
            # added to, not replaced: the daemons run the same sources as the test
            self.env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{os.environ['PYTHONPATH']}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.expected_dead: set[str] = set()
        self.vip: str | None = None
        key = tmp_path / "cluster.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)

        def default_endpoint(node: str, link: str) -> dict[str, Any]:
            port = 7400 + list(self.links).index(link)
            return {"address": lab.address(node, link), "port": port}

        endpoint = endpoints or default_endpoint
        document: dict[str, Any] = {
            "cluster": {
                "name": "e2e",
                "key_file": str(key),
                "state_dir": str(tmp_path / "state"),
                "profile": profile,
            },
            "links": [{"name": name, "transport": kind} for name, kind in self.links.items()],
            "nodes": {
                node: {
                    "links": {link: endpoint(node, link) for link in self.links},
                    "control": {"socket": str(self.socket(node))},
                }
                for node in NODES
            },
        }
        if not watchdog:  # a daemon killed leaves its VIP behind (its watchdog gone too)
            document["watchdog"] = {"enabled": False}
        if replicate is not None:
            # One path in the file, as on two real servers: each daemon runs in a
            # mount namespace of its own where that path is its node's own "disk".
            self.data = tmp_path / "data"
            self.data.mkdir()
            for node in NODES:
                self.disk(node).mkdir()
            document["replication"] = {
                "directories": [{"name": "data", "path": str(self.data)}],
                "timeout": 2.0,
            }
            for node in NODES:
                document["nodes"][node]["replication"] = {
                    "address": lab.address(node, replicate),
                    "port": REPLICATION_PORT,
                }
        if vip_network is not None:
            self.vip = lab.host_address(vip_network, VIP_HOST)
            document["application"] = app_section(tmp_path, stop_delay)
            document["virtual_ip"] = {
                "address": f"{self.vip}/24",
                "interface": lab.interface("alpha", vip_network),
            }
        self.config_path = tmp_path / "cluster.yaml"
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        # Checked as the daemons will see it (their environment may hold plugins
        # this process does not have): a broken file fails here, not as a timeout.
        checked = subprocess.run(
            [sys.executable, "-m", "failover", "check-config", str(self.config_path)],
            capture_output=True, text=True, timeout=60, env=self.env, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
        timing = PROFILES[profile]
        self.dead_timeout = timing.dead_timeout
        self.heartbeat_interval = timing.heartbeat_interval

    def journals(self) -> list[Path]:
        """The nodes' audit journals written so far (rotated ones included)."""
        return sorted((self.tmp_path / "state").glob(f"*/{JOURNAL_NAME}*"))

    def audit(self) -> Report | None:
        """``failover audit`` on this cluster's journals, with the acknowledged records
        and what each node holds when the test set them. None when there is no journal:
        no daemon ran, or the state directory is gone (then ``audit_now`` must have
        audited it while it was there, and its report is returned)."""
        journals = self.journals()
        if not journals:
            return self.final_report
        found = self.found if self.acked is not None else None
        return audit(journals, acked=self.acked, found=found)

    def audit_now(self) -> None:
        """Audit now and keep the report: for a test that removes the state directory
        (an unmounted tmpfs) before it ends."""
        self.final_report = self.audit()

    def expect_violations(self, *invariants: str) -> None:
        """This test breaks ``invariants`` on purpose (a mutant): the audit at its end
        must find at least one violation, and only of these."""
        self.expected_violations = frozenset(invariants)

    def socket(self, node: str) -> Path:
        return self.tmp_path / f"{node}.sock"

    def disk(self, node: str) -> Path:
        """``node``'s real copy of the replicated directory (its "disk")."""
        return self.tmp_path / f"disk-{node}"

    # -- processes ------------------------------------------------------------

    def start(self, node: str) -> None:
        argv = [sys.executable, *self.entry, "run", "-c", str(self.config_path)]
        argv += ["--node", node, "--log-file", str(self.tmp_path / f"{node}.log")]
        if self.replicate is not None:
            argv = with_own_disks([(self.disk(node), self.data)], argv)
        with open(self.tmp_path / f"{node}.stderr", "ab") as stderr:
            self.procs[node] = self.lab.run(
                node, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, env=self.env,
            )  # fmt: skip
        self.expected_dead.discard(node)

    def start_both(self) -> None:
        for node in NODES:
            self.start(node)

    def mount_namespace(self, node: str) -> str:
        """``/proc/<pid>/ns/mnt`` of ``node``'s daemon (replicating clusters only)."""
        return f"/proc/{self.procs[node].pid}/ns/mnt"

    def node_command(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` run as one of ``node``'s processes: its network and mount namespaces."""
        return ["nsenter", f"--mount={self.mount_namespace(node)}", *self.lab.command(node, argv)]

    def kill_node(self, node: str) -> int:
        """SIGKILL every process of ``node`` (all of its mount namespace: the daemon,
        its application, the FUSE helpers), as when the server loses power; returns
        how many. The mount namespace, and the mirror with it, goes away."""
        self.expected_dead.add(node)
        killed = kill_mount_namespace(self.procs[node].pid)
        self.procs[node].wait(timeout=10)
        return killed

    def kill9(self, node: str) -> None:
        """SIGKILL the daemon of ``node`` (only the daemon: its application keeps running)."""
        self.expected_dead.add(node)
        self.procs[node].kill()
        self.procs[node].wait(timeout=10)

    # -- observing ------------------------------------------------------------

    def status(self, node: str) -> dict[str, Any] | None:
        """The node's status, or None while its daemon does not answer."""
        try:
            return ControlClient(unix_path=str(self.socket(node)), timeout=2).get_status()
        except FailoverError:
            return None

    def state(self, node: str) -> str | None:
        """The node's state once its effects are done (None while transient or down)."""
        status = self.status(node)
        if status is None or status["substatus"] != "ready":
            return None
        return str(status["state"])

    def transitions(self, node: str) -> list[dict[str, Any]]:
        return ControlClient(unix_path=str(self.socket(node)), timeout=2).get_transitions(1000)

    def entered(self, node: str, *states: str) -> float:
        """When ``node`` last moved into one of ``states``: its transition record's
        ``mono`` (``CLOCK_MONOTONIC``, this process's ``time.monotonic()``), the moment
        its core decided, however late this process's polling saw it."""
        into = [r for r in self.transitions(node) if r["to"] in states and r["from"] != r["to"]]
        assert into, f"{node} never moved into {' or '.join(states)}"
        return float(into[-1]["mono"])

    def wait(self, what: str, predicate: Callable[[], bool], bound: float = BOUND) -> None:
        """Poll ``predicate`` until true; fail the test after ``bound`` s or if a daemon died."""
        deadline = time.monotonic() + bound
        while not predicate():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"not reached within {bound} s: {what} ({self.describe()})")
            time.sleep(POLL)

    def describe(self) -> str:
        """Each node's state, sub-status and reason, for failure messages."""
        parts = []
        for node in NODES:
            status = self.status(node)
            if status is None:
                parts.append(f"{node}: no answer")
            else:
                parts.append(
                    f"{node}: {status['state']} ({status['substatus']}): {status['reason']}"
                )
        return "; ".join(parts)

    def check_alive(self) -> None:
        for node, proc in self.procs.items():
            if proc.poll() is not None and node not in self.expected_dead:
                stderr = (self.tmp_path / f"{node}.stderr").read_text()
                pytest.fail(f"{node}'s daemon exited with {proc.returncode}: {stderr}")

    def paired(self, bound: float = BOUND) -> tuple[str, str]:
        """Wait (up to ``bound``) for primary + secondary (both ready); returns
        (primary, secondary)."""
        self.wait(
            "primary + secondary",
            lambda: sorted(str(self.state(n)) for n in NODES) == ["primary", "secondary"],
            bound,
        )
        primary = next(n for n in NODES if self.state(n) == "primary")
        return primary, other(primary)

    def link(self, node: str, name: str) -> dict[str, Any]:
        status = self.status(node)
        assert status is not None, f"{node} does not answer"
        return next(link for link in status["links"] if link["name"] == name)

    def links_shown(self, expected: Mapping[str, bool]) -> bool:
        """Both nodes show each named link up (True) or down (False)."""
        for node in NODES:
            status = self.status(node)
            if status is None:
                return False
            shown = {link["name"]: link["up"] for link in status["links"]}
            if any(shown.get(name) != up for name, up in expected.items()):
                return False
        return True

    def hold_steady(self, primary: str, secondary: str, dead_timeouts: float = 4.0) -> None:
        """Check at every poll that the pair stays as it is while the daemons' own
        clocks (status ``uptime``) advance by ``dead_timeouts`` dead timeouts and
        each receives a heartbeat for at least every other interval of that span.
        """
        span = dead_timeouts * self.dead_timeout
        minimum_frames = int(span / self.heartbeat_interval / 2)
        start = {node: self._clock(node) for node in NODES}
        expected = {primary: "primary", secondary: "secondary"}

        def steady_long_enough() -> bool:
            now = {node: self._clock(node) for node in NODES}
            for node in NODES:
                status = self.status(node)
                assert status is not None and status["state"] == expected[node], (
                    f"{node} left {expected[node]}: {status}"
                )
            return all(
                now[n][0] - start[n][0] >= span and now[n][1] - start[n][1] >= minimum_frames
                for n in NODES
            )

        self.wait(f"{span:.1f} s of steady pairing", steady_long_enough)

    def uptime(self, node: str) -> float:
        """The daemon's own clock (status ``uptime``, s): a span measured on it is one
        the daemon lived through, however slowly this process polls."""
        status = self.status(node)
        assert status is not None, f"{node} does not answer"
        return float(status["uptime"])

    def _clock(self, node: str) -> tuple[float, int]:
        status = self.status(node)
        assert status is not None, f"{node} does not answer"
        return float(status["uptime"]), int(status["frames"]["received"])

    def state_changes(self, node: str) -> list[tuple[str, str]]:
        """(from, to) of every recorded transition that changed the state."""
        return [(r["from"], r["to"]) for r in self.transitions(node) if r["from"] != r["to"]]

    def fetch_via_vip(self, address: str | None = None) -> str | None:
        """GET http://VIP:8080/node from the client namespace: the serving node's name.
        ``address``: another virtual address than ``vip`` (IPv6 allowed)."""
        address = address or self.vip
        assert address is not None
        host = f"[{address}]" if ":" in address else address
        code = (
            "import sys, urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen('http://{host}:{APP_PORT}/node', timeout=1)"
            ".read().decode())\n"
            "except OSError as exc:\n"
            "    sys.exit(str(exc))\n"
        )
        result = self.lab.exec("client", [sys.executable, "-c", code], check=False, timeout=10)
        return result.stdout.strip() if result.returncode == 0 else None

    def vip_holders(self, address: str | None = None) -> list[str]:
        """Nodes whose interfaces carry the virtual IP now. ``address``: another
        virtual address than ``vip`` (IPv6 allowed)."""
        address = address or self.vip
        assert address is not None
        holders = []
        for node in NODES:
            shown = self.lab.exec(node, ["ip", "-o", "addr", "show"]).stdout
            if f" {address}/" in shown:
                holders.append(node)
        return holders


_UNAVAILABLE = netns_unavailable_reason()
NETNS = [
    pytest.mark.netns,
    pytest.mark.skipif(
        _UNAVAILABLE is not None, reason=f"needs network namespaces: {_UNAVAILABLE}"
    ),
]


class Arbitrated(Cluster):
    """A ``Cluster`` with an arbitrator: ``holder()`` reads who holds its lease."""

    def serving(self) -> list[str]:
        return [node for node in NODES if (self.status(node) or {}).get("state") in SERVING]

    def holder(self) -> str | None:
        raise NotImplementedError


def cut_between_the_nodes_only_one_serves(
    lab: Lab, cluster: Arbitrated, crossover: str, lease_ttl: float
) -> None:
    """Heartbeats on ``crossover`` only, the arbitrator reachable from both: cut
    ``crossover``. Each node loses the other; the primary keeps the lease (it
    renews), the secondary is refused at each recheck; two lease times later
    still one serves, and once the link is back they pair again."""
    cluster.start_both()
    primary, secondary = cluster.paired()
    assert cluster.holder() == primary

    lab.link_down(primary, crossover)
    cluster.wait(
        f"{primary} alone, {secondary} waiting",
        lambda: cluster.state(primary) == "alone" and cluster.state(secondary) == "wait",
    )
    started = cluster.uptime(secondary)

    def never_two() -> bool:
        assert len(cluster.serving()) <= 1, cluster.describe()
        return cluster.uptime(secondary) - started >= 2 * lease_ttl

    cluster.wait("two lease times with one node serving", never_two, bound=60)
    assert cluster.state(primary) == "alone" and cluster.holder() == primary
    status = cluster.status(secondary)
    assert status is not None and "held by" in status["reason"], status["reason"]

    lab.link_up(primary, crossover)
    cluster.wait(
        "paired again",
        lambda: sorted(str(cluster.state(n)) for n in NODES) == ["primary", "secondary"],
        bound=60,
    )
    assert cluster.serving() == [primary]


def arbitrator_down_stops_the_pair_until_it_is_back(
    cluster: Arbitrated, kill: Callable[[], None], restart: Callable[[], None], what: str
) -> None:
    """A paired cluster whose arbitrator (``what``) dies: the serving node stops
    before its lease can run out (it cannot renew), nobody serves, and once the
    arbitrator is back the same node serves again (its record still names it)."""
    cluster.start_both()
    primary, _ = cluster.paired()
    seen = len(cluster.transitions(primary))
    killed_at = time.monotonic()
    kill()
    cluster.wait("nobody serves", lambda: cluster.serving() == [], bound=60)
    print(f"the primary stopped {time.monotonic() - killed_at:.2f} s after {what} was killed")
    # it stopped on its own lease (its renewals failed), not for another reason
    stops = [
        r
        for r in cluster.transitions(primary)[seen:]
        if r["from"] in SERVING and r["to"] not in SERVING
    ]
    assert stops and all("lease" in r["reason"] for r in stops), stops
    restarted_at = time.monotonic()
    restart()
    cluster.wait("someone serves again", lambda: len(cluster.serving()) == 1, bound=90)
    print(f"served again {time.monotonic() - restarted_at:.2f} s after {what} restarted")
    assert cluster.serving() == [primary]


def audited_with_arbitrator(cluster: Cluster, kind: str, killed: str | None = None) -> None:
    """The audit of the run so far knows of the arbitrator ``kind`` (each daemon's
    start record names it), so it excuses no two nodes serving at once, blind or not
    (docs/audit.md, S1); conftest.py fails the test on any violation at its end.

    ``killed``: a node whose daemon was SIGKILLed while serving. Its watchdog fenced
    its application and address at once (EOF on its pipe) and journalled that fence
    in the daemon's place, before the lease ran out at the arbitrator: the audit sees
    them released before the peer's takeover, so no S1 either (issue 11, point 4)."""
    report = cluster.audit()
    assert report is not None
    figures = report.figures
    assert figures["arbitrators"] == {node: [kind] for node in NODES}, figures
    assert figures["blind_overlaps"] == 0, figures
    s1 = [v for v in report.violations if v.invariant == "S1"]
    assert not s1, str(report)
    if killed is not None:  # not excused by chance: the watchdog's record is there
        path = cluster.tmp_path / "state" / killed / JOURNAL_NAME
        last = json.loads(path.read_text().splitlines()[-1])
        assert last["kind"] == "resource" and last.get("watchdog") is True, last
        assert (last["action"], last["phase"]) == ("stop", "end"), last
