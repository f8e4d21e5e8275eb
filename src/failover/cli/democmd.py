"""``failover demo [--keep] [--fast] [--loopback] [--clean]``: a two-node cluster on this machine.

As root, where network namespaces work, the two nodes run in namespaces of a
``failover.testing.netns.Lab`` (UDP on a "lan" bridge, TCP on a "crossover"
bridge, a virtual IP on lan served by a tiny web server, a client namespace
that fetches it). Otherwise both daemons run on loopback (127.0.0.2 and
127.0.0.3, ports chosen by the kernel) with a placeholder application.

The demo writes a cluster file into a fresh temporary directory, starts both
``failover run`` daemons, waits for them to pair, kills the serving node with
SIGKILL, measures the takeover, restarts the killed node and shows it come back
as secondary. Then it stops everything and removes every namespace, process and
file it made (exit 0), or with ``--keep`` leaves the cluster running, prints
the commands to explore it and records what to remove for ``failover demo --clean``.

In namespaces the cluster also replicates one directory, ``<workdir>/data``.
As on two real servers, the path is the same for both nodes and each node has
its own disk: each daemon runs in a mount namespace of its own where that path
is bind-mounted from ``<workdir>/disk-<node>``, and the daemon mounts its FUSE
mirror over it. The demo writes a file through the serving node's mirror (as one
of that node's processes: ``nsenter`` into its mount and network namespaces),
shows it on the peer's disk, kills every process of the serving node, shows the
survivor still has it, writes another one there, and shows the returning node
resynchronised, byte for byte. On loopback (no root) nothing is replicated:
FUSE mounts and mount namespaces need root.

Exit codes: 0 when every step happened; 1 when a step did not happen within
its bound (what was seen is printed; everything is still cleaned up); 2 for a
usage error (for example a kept demo is still running).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from failover.api.client import ControlClient
from failover.errors import FailoverError, UsageError
from failover.testing.netns import Lab, netns_unavailable_reason, remove_namespaces

NODES = ("alpha", "beta")
LOOPBACK = {"alpha": "127.0.0.2", "beta": "127.0.0.3"}
VIP_HOST = 200
APP_PORT = 8080
REPLICATION_PORT = 7410  # on the crossover network, in namespaces made for this demo
DATA = "data"  # the replicated directory, <workdir>/data, and its configured name
POLL = 0.05
EXIT_OK = 0
EXIT_STEP_FAILED = 1
STATE_FILE = Path(tempfile.gettempdir()) / f"failover-demo-{os.getuid()}.json"


class StepFailed(FailoverError):
    """A demo step did not happen within its bound."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a two-node cluster on this machine and show a failover",
        description=(
            "Start two nodes (in network namespaces as root, else on loopback), show "
            "their status, kill -9 the serving node, show the takeover and the return "
            "of the killed node, then clean up. In namespaces, a replicated directory "
            "shows a file written on the serving node appear on the peer, survive the "
            "takeover, and reach the returning node by resync."
        ),
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the cluster running and print what to try"
    )
    parser.add_argument(
        "--fast", action="store_true", help="use the fast timing profile (dead timeout 0.2 s)"
    )
    parser.add_argument(
        "--loopback", action="store_true", help="use loopback even when namespaces work"
    )
    parser.add_argument(
        "--clean", action="store_true", help="stop and remove a demo left running by --keep"
    )
    parser.add_argument(
        "--live-only",
        action="store_true",
        help="skip the model check and the simulated timeline shown before the live cluster",
    )
    parser.set_defaults(handler=run_demo)


def formal_prologue() -> bool:
    """Before the live cluster: a bounded model check of the state machine and
    a simulated failover timeline replayed against the real core. True when
    every invariant held and the scenario passed."""
    from importlib import resources  # noqa: PLC0415 - only the demo needs these

    from failover.model.run import check_model  # noqa: PLC0415
    from failover.model.scenario import load_scenario, run_scenario  # noqa: PLC0415
    from failover.model.sim import ClusterConfig  # noqa: PLC0415

    print("== 1. the state machine, model-checked")
    print("   (failover model-check --depth 8 --root protected)")
    report = check_model(ClusterConfig(), depth=8, roots=("protected",), parallel=False)
    for line in report.render().splitlines():
        print("   " + line)
    print("   (the full check, depth 12 on both roots, runs in make test: failover model-check)")
    print()
    print("== 2. a failover, simulated on the real core (failover simulate primary-crash.yaml)")
    path = resources.files("failover").joinpath("spec", "scenarios", "primary-crash.yaml")
    with resources.as_file(path) as scenario_file:
        outcome = run_scenario(load_scenario(scenario_file), lambda line: print("   " + line))
    print("   " + outcome.verdict())
    print()
    print("== 3. the same, live: two daemons, a real kill -9")
    return report.ok and outcome.passed


def run_demo(args: argparse.Namespace) -> int:
    if args.clean:
        return clean_kept()
    if STATE_FILE.exists():
        raise UsageError(
            f"a demo kept with --keep is still recorded in {STATE_FILE}: "
            "remove it first with 'failover demo --clean'"
        )
    if not args.live_only and not args.keep and not formal_prologue():
        return EXIT_STEP_FAILED
    reason = "--loopback was given" if args.loopback else netns_unavailable_reason()
    demo = Demo(fast=args.fast, use_netns=reason is None)
    kept = False
    try:
        demo.setup(reason)
        demo.scenario()
        if args.keep:
            demo.keep()
            kept = True
        return EXIT_OK
    except StepFailed as exc:
        demo.say(f"step failed: {exc}")
        demo.show_logs()
        return EXIT_STEP_FAILED
    finally:
        if not kept:
            demo.teardown()


# --- the scenario ------------------------------------------------------------------------


class Demo:
    """One demo run: its directory, its daemons, and (as root) its lab."""

    def __init__(self, *, fast: bool, use_netns: bool) -> None:
        self.fast = fast
        self.use_netns = use_netns
        self.started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="failover-demo-"))
        self.lab: Lab | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.config_path = self.workdir / "cluster.yaml"
        self.vip: str | None = None
        self.dead: set[str] = set()  # daemons killed on purpose
        self.links: tuple[str, ...] = ()
        self.dead_timeout = 0.0

    # -- output --

    def say(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:6.2f}s] {line}", flush=True)

    def detail(self, line: str) -> None:
        print(f"           {line}", flush=True)

    # -- building --

    def setup(self, netns_reason: str | None) -> None:
        if self.use_netns:
            self.lab = Lab(networks=("lan", "crossover"), client=True, prefix="fodemo").open()
            self.links = ("lan", "crossover")
            members = ", ".join(self.lab.namespace(m) for m in self.lab.members)
            self.say(f"network namespaces {members}")
            self.detail("bridges lan (10.77.1.0/24, UDP heartbeats), crossover (10.77.2.0/24, TCP)")
        else:
            self.links = ("lan", "backup")
            self.say(f"loopback mode ({netns_reason}): alpha on 127.0.0.2, beta on 127.0.0.3")
            self.detail(
                "(replication is shown only in the namespace mode, as root: "
                "its FUSE mirrors and mount namespaces need root)"
            )
        self.write_config()
        profile = "fast" if self.fast else "default"
        self.say(
            f"cluster file {self.config_path} (profile {profile}, "
            f"dead timeout {self.dead_timeout:g} s)"
        )
        if self.vip is not None:
            self.detail(f"application: a web server on the virtual IP {self.vip}:{APP_PORT}")
        else:
            self.detail("application: a placeholder process per serving node (a pid file)")
        if self.lab is not None:
            self.detail(
                f"replicated directory {self.data} (name {DATA!r}), over TCP on crossover "
                f"port {REPLICATION_PORT}; each node's own disk is {self.workdir}/disk-<node>,"
            )
            self.detail(
                "bind-mounted on that path in the node's own mount namespace, "
                "where its daemon mounts the mirror over it"
            )

    def write_config(self) -> None:
        key = self.workdir / "cluster.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        transports = dict(zip(self.links, ("udp", "tcp"), strict=True))
        ports = _free_ports(len(self.links))
        nodes: dict[str, Any] = {}
        for node in NODES:
            endpoints = {}
            for link, port in zip(self.links, ports, strict=True):
                address = self.lab.address(node, link) if self.lab else LOOPBACK[node]
                endpoints[link] = {"address": address, "port": port}
            nodes[node] = {"links": endpoints, "control": {"socket": str(self.socket(node))}}
        document: dict[str, Any] = {
            "cluster": {
                "name": "demo",
                "key_file": str(key),
                "state_dir": str(self.workdir / "state"),
                "profile": "fast" if self.fast else "default",
                "failback": "none",
            },
            "links": [{"name": link, "transport": transports[link]} for link in self.links],
            "nodes": nodes,
            "application": self.write_scripts(),
        }
        if self.lab is not None:
            self.data.mkdir()
            for node in NODES:
                self.disk(node).mkdir()
                nodes[node]["replication"] = {
                    "address": self.lab.address(node, "crossover"),
                    "port": REPLICATION_PORT,
                }
            document["replication"] = {
                "timeout": 2.0,
                "directories": [{"name": DATA, "path": str(self.data)}],
            }
            self.vip = self.lab.host_address("lan", VIP_HOST)
            document["virtual_ip"] = {
                "address": f"{self.vip}/24",
                "interface": self.lab.interface("alpha", "lan"),
            }
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        from failover.config import load_config  # noqa: PLC0415 - pydantic only for the demo

        self.dead_timeout = load_config(self.config_path).timing.dead_timeout

    def write_scripts(self) -> dict[str, Any]:
        start, stop = self.workdir / "app-start", self.workdir / "app-stop"
        pidfile = f'"{self.workdir}/app.$FAILOVER_NODE.pid"'
        if self.use_netns:
            www = f'"{self.workdir}/www-$FAILOVER_NODE"'
            launch = (
                f'mkdir -p {www}\necho "$FAILOVER_NODE" > {www}/index.html\n'
                f'{sys.executable} -m http.server --bind "${{FAILOVER_VIP%/*}}" '
                f"--directory {www} {APP_PORT}"
            )
        else:
            launch = "sleep 2147483647"
        start.write_text(
            "#!/bin/sh\n# The demo application, started when this node starts serving.\n"
            f"{launch} >/dev/null 2>&1 </dev/null &\necho $! > {pidfile}\n"
        )
        stop.write_text(
            "#!/bin/sh\n# Stops the demo application started by app-start.\n"
            f'if [ -f {pidfile} ]; then kill "$(cat {pidfile})" 2>/dev/null; rm -f {pidfile}; fi\n'
            "exit 0\n"
        )
        start.chmod(0o755)
        stop.chmod(0o755)
        return {"start": str(start), "stop": str(stop), "timeout": 10}

    def socket(self, node: str) -> Path:
        return self.workdir / f"{node}.sock"

    @property
    def data(self) -> Path:
        """The replicated directory's path, the same for both nodes (namespace mode)."""
        return self.workdir / DATA

    def disk(self, node: str) -> Path:
        """``node``'s own copy of the replicated directory, as seen from this host."""
        return self.workdir / f"disk-{node}"

    # -- daemons --

    def daemon_argv(self, node: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "failover",
            "run",
            "-c",
            str(self.config_path),
            "--node",
            node,
            "--log-file",
            str(self.workdir / f"{node}.log"),
        ]

    def launch_argv(self, node: str) -> list[str]:
        """The daemon's argv; when replicating, wrapped so that it runs in a mount
        namespace of its own where the data path is ``node``'s disk."""
        argv = self.daemon_argv(node)
        if self.lab is None:
            return argv
        bind = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        wrapper = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", bind]
        return [*wrapper, "sh", str(self.disk(node)), str(self.data), *argv]

    def start(self, node: str) -> None:
        argv = self.launch_argv(node)
        with open(self.workdir / f"{node}.stderr", "ab") as err:
            kw: dict[str, Any] = {
                "stdin": subprocess.DEVNULL,
                "stdout": subprocess.DEVNULL,
                "stderr": err,
                "start_new_session": True,
            }
            if self.lab is not None:
                self.procs[node] = self.lab.run(node, argv, **kw)
            else:
                self.procs[node] = subprocess.Popen(argv, **kw)

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            return ControlClient(unix_path=str(self.socket(node)), timeout=2).get_status()
        except FailoverError:
            return None

    def ready_state(self, node: str) -> str | None:
        status = self.status(node)
        if status is None or status.get("substatus") != "ready":
            return None
        return str(status.get("state"))

    def wait(self, what: str, predicate: Callable[[], bool], bound: float) -> float:
        """Poll until ``predicate`` holds; returns the seconds it took. Raises StepFailed
        after ``bound`` seconds or when a daemon that should run has exited."""
        began = time.monotonic()
        while not predicate():
            for node, proc in self.procs.items():
                code = proc.poll()
                if code is not None and node not in self.dead:
                    raise StepFailed(f"{what}: {node}'s daemon exited with code {code}")
            if time.monotonic() - began > bound:
                states = ", ".join(f"{n} {self.ready_state(n) or 'not ready'}" for n in NODES)
                raise StepFailed(f"{what} did not happen within {bound:g} s ({states})")
            time.sleep(POLL)
        return time.monotonic() - began

    def paired(self) -> tuple[str, str]:
        states = {n: self.ready_state(n) for n in NODES}
        if sorted(str(s) for s in states.values()) != ["primary", "secondary"]:
            raise StepFailed(f"not paired: {states}")
        primary = next(n for n, s in states.items() if s == "primary")
        return primary, _other(primary)

    def is_paired(self) -> bool:
        return sorted(str(self.ready_state(n)) for n in NODES) == ["primary", "secondary"]

    # -- the story --

    def scenario(self) -> None:
        bound = 20.0 + 5 * self.dead_timeout
        self.say("starting both daemons (failover run)")
        for node in NODES:
            self.start(node)
        took = self.wait("pairing", self.is_paired, bound)
        primary, secondary = self.paired()
        self.say(f"paired after {took:.1f} s: {primary} serves, {secondary} is its secondary")
        self.table()
        self.show_client(primary, bound)

        pid = self.procs[primary].pid
        self.say(f"kill -9 {pid}: {primary}'s daemon dies without a word")
        killed = time.monotonic()
        self.procs[primary].kill()
        self.dead.add(primary)
        self.procs[primary].wait(timeout=10)
        self.detail(f"(a dead daemon cleans nothing up: {primary}'s application keeps running)")
        self.wait(f"{secondary} takes over", lambda: self.ready_state(secondary) == "alone", bound)
        took = time.monotonic() - killed
        self.say(f"{secondary} took over {took:.2f} s after the kill")
        self.detail(f"(dead timeout {self.dead_timeout:g} s, counted from the last heartbeat)")
        self.show_transitions(secondary, last=1)
        self.table()
        self.show_client(secondary, bound)

        self.say(f"restarting {primary}'s daemon")
        self.dead.discard(primary)
        restarted = time.monotonic()
        self.start(primary)
        self.wait(f"{primary} comes back", self.is_paired, bound)
        took = time.monotonic() - restarted
        self.say(f"{primary} is back as secondary after {took:.1f} s")
        self.detail("(its daemon first ran the stop script for what the killed one left running)")
        self.show_transitions(primary)
        self.table()

    def table(self) -> None:
        rows = [("node", "state", "peer", "links", "generation", "application")]
        for node in NODES:
            status = self.status(node)
            if status is None:
                rows.append((node, "(daemon down)", "", "", "", self.app_text(node)))
                continue
            state = str(status.get("state"))
            if status.get("substatus") != "ready":
                state += " (transient)"
            peer = status.get("peer")
            peer_text = "never seen"
            if isinstance(peer, dict):
                peer_text = str(peer.get("state")) if peer.get("alive") else "LOST"
            links = ", ".join(
                f"{link.get('name')} {'up' if link.get('up') else 'DOWN'}"
                for link in status.get("links") or []
            )
            generation = str(status.get("generation"))
            rows.append((node, state, peer_text, links, generation, self.app_text(node)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.detail("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())

    def app_text(self, node: str) -> str:
        pidfile = self.workdir / f"app.{node}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return "-"
        return f"running (pid {pid})" if _pid_alive(pid) else "-"

    def show_client(self, expected: str, bound: float) -> None:
        if self.lab is None or self.vip is None:
            return
        answers: list[str] = []

        def fetched() -> bool:
            answers[:] = [self.fetch_vip()]
            return answers[0] == expected

        with contextlib.suppress(StepFailed):
            self.wait(f"the VIP answers from {expected}", fetched, bound)
        self.detail(f"client: http://{self.vip}:{APP_PORT}/ answers {answers[0] or 'nothing'!r}")

    def fetch_vip(self) -> str:
        assert self.lab is not None
        code = (
            "import urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen('http://{self.vip}:{APP_PORT}/', timeout=1)"
            ".read().decode().strip())\n"
            "except OSError:\n"
            "    pass\n"
        )
        result = self.lab.exec("client", [sys.executable, "-c", code], check=False, timeout=10)
        return result.stdout.strip()

    def show_transitions(self, node: str, last: int | None = None) -> None:
        """``node``'s state changes (the ``last`` ones), one line each, from its API."""
        try:
            records = ControlClient(unix_path=str(self.socket(node)), timeout=2).get_transitions()
        except FailoverError as exc:
            self.detail(f"(no transitions: {exc})")
            return
        changes = [r for r in records if r.get("from") != r.get("to")]
        for record in changes[-last:] if last else changes:
            change = f"{record.get('from')} -> {record.get('to')}"
            self.detail(f"{node}: {change}: {record.get('reason')}")

    def show_logs(self) -> None:
        for node in NODES:
            for name in (f"{node}.stderr", f"{node}.log"):
                path = self.workdir / name
                if path.exists() and path.stat().st_size:
                    tail = path.read_text(errors="replace").splitlines()[-5:]
                    self.detail(f"last lines of {name}:")
                    for line in tail:
                        self.detail(f"  {line[:160]}")

    # -- leaving --

    def teardown(self) -> None:
        """Stop both daemons (SIGTERM: the application is stopped), then remove everything."""
        self.say("stopping both daemons and removing everything the demo made")
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 25.0
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        _kill_apps(self.workdir)  # left by a daemon that was killed and not restarted
        if self.lab is not None:
            try:
                self.lab.close()
            except FailoverError as exc:
                self.say(f"cleanup incomplete: {exc}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.say("done: nothing left behind")

    def keep(self) -> None:
        description: dict[str, Any] = {
            "workdir": str(self.workdir),
            "config": str(self.config_path),
            "pids": {node: proc.pid for node, proc in self.procs.items() if proc.poll() is None},
            "namespaces": [],
        }
        if self.lab is not None:
            description["namespaces"] = self.lab.detach()["namespaces"]
        STATE_FILE.write_text(json.dumps(description, indent=2))
        failover = _failover_command()
        self.say("the cluster keeps running (--keep). Try:")
        for node in NODES:
            self.detail(f"{failover} status --socket {self.socket(node)}")
        primary = next((n for n in NODES if self.ready_state(n) == "primary"), "alpha")
        self.detail(f"{failover} swap --socket {self.socket(primary)}    # hand over to the peer")
        self.detail(f"{failover} log --socket {self.socket(primary)}")
        self.detail(f"kill -9 {self.procs[primary].pid}    # the serving daemon ({primary})")
        restart = " ".join(self.daemon_argv(primary))
        if self.lab is not None:
            restart = f"nsenter --net={self.lab.namespace_path(primary)} {restart}"
            self.detail(
                f"nsenter --net={self.lab.namespace_path('client')} {sys.executable} -c "
                f"\"import urllib.request as u; print(u.urlopen('http://{self.vip}:{APP_PORT}/')"
                '.read().decode())"    # ask the virtual IP who serves'
            )
        self.detail(f"{restart} &    # restart {primary} after killing it")
        self.detail(f"logs: {self.workdir}/alpha.log, {self.workdir}/beta.log (JSON lines)")
        self.detail(f"clean up: {failover} demo --clean")


# --- --clean -----------------------------------------------------------------------------


def clean_kept() -> int:
    """Stop and remove the demo recorded by ``--keep``; 0 also when there is nothing."""
    try:
        description = json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        print("failover demo --clean: no kept demo recorded; nothing to clean")
        return EXIT_OK
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {STATE_FILE}: {exc}") from None
    workdir = Path(description.get("workdir", ""))
    config = str(description.get("config", ""))
    # The daemons recorded, and any the operator restarted since: processes whose
    # command line names this demo's cluster file (its directory is unique). A
    # recorded pid that now belongs to something else (reused) is left alone.
    daemons = _processes_running(config) if config else []
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 25.0
    while any(_pid_alive(pid) for pid in daemons) and time.monotonic() < deadline:
        time.sleep(POLL)
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if workdir.name.startswith("failover-demo-"):
        _kill_apps(workdir)
    left = remove_namespaces(list(description.get("namespaces", [])))
    if workdir.name.startswith("failover-demo-"):
        shutil.rmtree(workdir, ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)
    stopped = f"{len(daemons)} daemon(s) stopped"
    if left:
        print(f"failover demo --clean: {stopped}; could not delete namespaces {', '.join(left)}")
        return EXIT_STEP_FAILED
    namespaces = len(description.get("namespaces", []))
    print(f"failover demo --clean: {stopped}, {namespaces} namespace(s) and {workdir} removed")
    return EXIT_OK


# --- helpers -----------------------------------------------------------------------------


def _other(node: str) -> str:
    return "beta" if node == "alpha" else "alpha"


def _free_ports(count: int) -> list[int]:
    """Ports the kernel says are free on loopback now (used on both nodes' addresses)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _failover_command() -> str:
    script = Path(sys.executable).with_name("failover")
    if script.exists():
        return str(script)
    return shutil.which("failover") or f"{sys.executable} -m failover"


def _kill_apps(workdir: Path) -> None:
    """Kill the demo application processes recorded in ``workdir``'s pid files."""
    for pidfile in workdir.glob("app.*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            cmdline = _cmdline(pid)
            if "http.server" in cmdline or "sleep" in cmdline:
                os.kill(pid, signal.SIGKILL)


def _processes_running(config: str) -> list[int]:
    """PIDs of processes whose argv holds ``config`` as one argument."""
    found = []
    for entry in Path("/proc").iterdir():
        pid = int(entry.name) if entry.name.isdigit() else os.getpid()
        if pid != os.getpid() and config in _cmdline(pid).split(" "):
            found.append(pid)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


__all__: Sequence[str] = ("register", "run_demo")
