"""``failover demo [--keep] [--fast] [--loopback] [--clean]``: a two-node cluster on this machine.

As root, where network namespaces work, the two nodes run in namespaces of a
``failover.lab.Lab`` (UDP on a "lan" bridge, TCP on a "crossover"
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
usage error (for example a kept demo is still running); 128 + the signal's
number when SIGTERM or SIGHUP stopped it (after the same cleanup).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from failover.api.client import ControlClient
from failover.errors import FailoverError, UsageError
from failover.lab import (
    Lab,
    mount_namespace_members,
    netns_unavailable_reason,
    pid_alive,
    remove_namespaces,
    with_own_disks,
)

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

# Run on a node (python -c CODE ARGS...): write ARGS[1] to the file ARGS[0], fsync
# it, print how long the fsync took (it returns once the peer acknowledged).
WRITER = """\
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
data = sys.argv[2].encode()
while data:
    data = data[os.write(fd, data):]
began = time.monotonic()
os.fsync(fd)
print(time.monotonic() - began)
os.close(fd)
"""
# Try to create the file ARGS[0]; print why it was refused, or fail.
READ_ONLY_PROBE = """\
import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
except OSError as exc:
    print(exc.strerror)
else:
    sys.exit("an application could write the secondary's copy")
"""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


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
    # SIGTERM and SIGHUP (a killed make, a closed terminal) end the demo through
    # the same cleanup as a failed step; SIGINT does already (KeyboardInterrupt).
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
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
    except Interrupted as exc:
        demo.say(f"stopped by {exc.signal.name}")
        return 128 + exc.signal.value
    finally:
        for sig in previous:  # the cleanup itself runs to its end
            signal.signal(sig, signal.SIG_IGN)
        if not kept:
            demo.teardown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Interrupted(BaseException):
    """The demo received one of ``STOP_SIGNALS``. Not an ``Exception``, like
    KeyboardInterrupt, so that no handler of ordinary errors swallows it."""

    def __init__(self, received: signal.Signals) -> None:
        super().__init__(f"stopped by {received.name}")
        self.signal = received


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum))


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
        self.replicates = False  # namespace mode with FUSE: a replicated directory

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
            why_not = _replication_unavailable_reason()
            self.replicates = why_not is None
            if why_not is not None:
                self.detail(f"(nothing replicated: {why_not})")
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
        if self.replicates:
            self.detail(
                f"replicated directory: {self.data} (name {DATA!r}, channel: TCP on crossover, "
                f"port {REPLICATION_PORT})"
            )
            self.detail(
                f"each node's own disk, {self.workdir}/disk-<node>, is bind-mounted on that "
                "path in the node's"
            )
            self.detail(
                "own mount namespace; its daemon mounts the mirror (FUSE) over it: read-write "
                "while serving"
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
        if self.lab is not None and self.replicates:
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
        if self.lab is not None:
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
        if not self.replicates:
            return argv
        return with_own_disks([(self.disk(node), self.data)], argv)

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
        """One node primary, the other secondary, both ready, and each sees the other so."""
        statuses = {n: self.status(n) or {} for n in NODES}
        states = {n: s.get("state") for n, s in statuses.items() if s.get("substatus") == "ready"}
        if sorted(str(s) for s in states.values()) != ["primary", "secondary"]:
            return False
        for node, status in statuses.items():
            peer = status.get("peer")
            if not isinstance(peer, dict) or not peer.get("alive"):
                return False
            if peer.get("state") != states[_other(node)]:
                return False
        return True

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
        first = self.replicate_first(primary, secondary, bound) if self.replicates else None

        killed = time.monotonic()
        self.kill(primary)
        self.wait(f"{secondary} takes over", lambda: self.ready_state(secondary) == "alone", bound)
        took = time.monotonic() - killed
        self.say(f"{secondary} took over {took:.2f} s after the kill")
        self.detail(f"(dead timeout {self.dead_timeout:g} s, counted from the last heartbeat)")
        self.show_transitions(secondary, last=1)
        self.table()
        self.show_client(secondary, bound)
        if first is not None:
            self.write_on_survivor(primary, secondary, first, bound)

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
        if first is not None:
            self.show_resynced(primary, secondary, bound)

    def kill(self, node: str) -> None:
        """When replicating, SIGKILL every process of ``node`` (as a power loss);
        otherwise its daemon only."""
        pid = self.procs[node].pid
        if not self.replicates:
            self.say(f"kill -9 {pid}: {node}'s daemon dies without a word")
            self.procs[node].kill()
            self.dead.add(node)
            self.procs[node].wait(timeout=10)
            self.detail(f"(a dead daemon cleans nothing up: {node}'s application keeps running)")
            return
        victims = mount_namespace_members(self.mount_namespace(node))
        app = self.app_pid(node)
        names = Counter(
            "its application" if victim == app else Path(_cmdline(victim).split(" ")[0]).name
            for victim in victims
            if victim != pid
        )
        others = "".join(f", {n} x {name}" if n > 1 else f", {name}" for name, n in names.items())
        self.say(f"kill -9 of every process of {node}, as if it lost power:")
        self.detail(f"its daemon (pid {pid}){others}: {len(victims)} processes")
        self.dead.add(node)
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        self.procs[node].wait(timeout=10)
        self.detail(
            f"(its mount namespace went with them, and its mirror; the virtual IP stays "
            f"on {node}'s interface: nothing removed it)"
        )

    # -- replication (namespace mode) --

    def mount_namespace(self, node: str) -> str:
        """``node``'s daemon's mount namespace (``mnt:[inode]``). Raises StepFailed when
        the daemon is gone or shares this process's namespace (nothing to isolate)."""
        proc = self.procs[node]
        try:
            namespace = os.readlink(f"/proc/{proc.pid}/ns/mnt")
        except OSError as exc:
            raise StepFailed(f"{node}'s daemon (pid {proc.pid}) is gone: {exc}") from None
        if proc.poll() is not None or namespace == os.readlink("/proc/self/ns/mnt"):
            raise StepFailed(f"{node}'s daemon (pid {proc.pid}) has no mount namespace of its own")
        return namespace

    def node_command(self, node: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as one of ``node``'s processes: its mount and network namespaces."""
        assert self.lab is not None
        self.mount_namespace(node)
        mount = f"--mount=/proc/{self.procs[node].pid}/ns/mnt"
        return ["nsenter", mount, *self.lab.command(node, argv)]

    def on_node(self, node: str, code: str, *args: str, bound: float) -> str:
        """Run the Python ``code`` as one of ``node``'s processes; its stdout."""
        argv = self.node_command(node, [sys.executable, "-c", code, *args])
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=bound, check=False
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(f"a process on {node} did not finish within {bound:g} s") from None
        if result.returncode != 0:
            why = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise StepFailed(f"on {node}: {why}")
        return result.stdout.strip()

    def write_file(self, node: str, name: str, text: str, bound: float) -> bytes:
        """Write ``name`` in the data directory on ``node`` (through its mirror) and fsync
        it; prints how long the fsync took. Returns the bytes written."""
        fsync_took = float(self.on_node(node, WRITER, str(self.data / name), text, bound=bound))
        content = text.encode()
        self.say(
            f"{node} writes {DATA}/{name} ({len(content)} bytes) through its mirror: "
            f"write + fsync returned (the fsync took {fsync_took * 1000:.1f} ms)"
        )
        return content

    def replicate_first(self, primary: str, secondary: str, bound: float) -> tuple[str, bytes]:
        """A file written (and fsynced) on the primary, shown on the secondary's disk."""
        name = "hello.txt"
        text = f"written on {primary} before the kill, token {secrets.token_hex(4)}\n"
        content = self.write_file(primary, name, text, bound)
        copy = self.disk(secondary) / name
        if _read(copy) == content:
            self.detail(
                f"on {secondary}'s own disk, byte-identical, when the fsync returned "
                f"(it waits for {secondary}'s acknowledgement):"
            )
        else:
            took = self.wait(f"{name} on {secondary}'s disk", lambda: _read(copy) == content, bound)
            self.detail(f"on {secondary}'s own disk, byte-identical, {took:.2f} s after the fsync:")
        self.detail(f"  {copy}: {content.decode().strip()!r}")
        refused = self.on_node(secondary, READ_ONLY_PROBE, str(self.data / "nope"), bound=bound)
        self.detail(f"an application on {secondary} cannot write {DATA}/: {refused}")
        return name, content

    def write_on_survivor(
        self, dead: str, survivor: str, first: tuple[str, bytes], bound: float
    ) -> None:
        """The survivor's copy still holds the first file; it writes a second one."""
        name, content = first
        kept = _read(self.disk(survivor) / name)
        if kept != content:
            raise StepFailed(f"{survivor}'s copy of {name} is {kept!r}, not {content!r}")
        self.say(f"{survivor}'s copy still has {name}, byte-identical ({len(content)} bytes)")
        text = f"written on {survivor} while {dead} was down, token {secrets.token_hex(4)}\n"
        self.write_file(survivor, "after-takeover.txt", text, bound)
        self.detail(f"(no peer to wait for: {survivor} tracks the change for the resync)")
        self.detail(f"{dead}'s disk meanwhile: {_listing(self.disk(dead))}")

    def show_resynced(self, returned: str, serving: str, bound: float) -> None:
        """The returned node went through resync, and both copies are byte-identical."""
        changes = ControlClient(unix_path=str(self.socket(returned)), timeout=2).get_transitions()
        if not any(r.get("from") == "resync" and r.get("to") == "secondary" for r in changes):
            raise StepFailed(f"{returned} became secondary without a resync -> secondary step")
        ours, theirs = _tree(self.disk(returned)), _tree(self.disk(serving))
        if ours != theirs:
            raise StepFailed(
                f"{returned}'s disk ({_listing(self.disk(returned))}) differs from "
                f"{serving}'s ({_listing(self.disk(serving))})"
            )
        self.say(f"{returned}'s disk after the resync: {_listing(self.disk(returned))}")
        self.detail(f"(byte-identical to {serving}'s: {len(ours)} files compared)")
        replication = (self.status(serving) or {}).get("replication") or {}
        resync = replication.get("resync") or {}
        if resync.get("state") == "done":
            kind = "a full copy" if resync.get("full") else "incremental (not a full copy)"
            self.detail(
                f"{serving}'s resync of {returned}: {kind}, {resync.get('items_done')} items, "
                f"{resync.get('bytes_done')} bytes sent"
            )
        try:
            client = ControlClient(unix_path=str(self.socket(serving)), timeout=bound)
            report = client.verify()
        except FailoverError as exc:
            raise StepFailed(f"failover verify on {serving}: {exc}") from None
        verdict = str(report.get("text") or "").strip().splitlines() or ["(no text)"]
        if not report["in_sync"]:
            raise StepFailed(f"failover verify on {serving} found differences: {verdict}")
        self.detail(f"failover verify on {serving} (by digest, over the network): {verdict[-1]}")

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

    def app_pid(self, node: str) -> int | None:
        """The pid in ``node``'s application pid file, if it names a live process."""
        pidfile = self.workdir / f"app.{node}.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def app_text(self, node: str) -> str:
        pid = self.app_pid(node)
        return "-" if pid is None else f"running (pid {pid})"

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
        restart = shlex.join(self.launch_argv(primary))
        if self.lab is not None:
            restart = f"nsenter --net={self.lab.namespace_path(primary)} {restart}"
            if self.replicates:
                self.keep_replication(primary)
            self.detail(
                f"nsenter --net={self.lab.namespace_path('client')} {sys.executable} -c "
                f"\"import urllib.request as u; print(u.urlopen('http://{self.vip}:{APP_PORT}/')"
                '.read().decode())"    # ask the virtual IP who serves'
            )
        self.detail(f"{restart} &    # restart {primary} after killing it")
        self.detail(f"logs: {self.workdir}/alpha.log, {self.workdir}/beta.log (JSON lines)")
        self.detail(f"clean up: {failover} demo --clean")

    def keep_replication(self, primary: str) -> None:
        """The commands to look at both copies and to write through the serving mirror."""
        secondary = _other(primary)
        note = shlex.quote(str(self.data / "note.txt"))
        write = f"echo hello > {note} && sync {note}"
        self.detail(
            f"{shlex.join(self.node_command(primary, ['sh', '-c', write]))}"
            f"    # write + fsync through {primary}'s mirror"
        )
        for node in (primary, secondary):
            self.detail(f"ls -l {self.disk(node)}    # {node}'s own disk (its real copy)")
        self.detail(
            f"{shlex.join(self.node_command(secondary, ['ls', '-l', str(self.data)]))}"
            f"    # {secondary}'s read-only view, as its applications see it"
        )


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
    # Each replicating daemon has a mount namespace of its own (its disk and its
    # mirror): once the daemon has stopped, whatever is left in it is killed, and
    # the namespace, with every mount in it, goes away with its last process.
    mounts = set()
    for pid in daemons:
        with contextlib.suppress(OSError):
            mounts.add(os.readlink(f"/proc/{pid}/ns/mnt"))
    mounts.discard(os.readlink("/proc/self/ns/mnt"))
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 25.0
    while any(pid_alive(pid) for pid in daemons) and time.monotonic() < deadline:
        time.sleep(POLL)
    for pid in daemons + [p for mount in mounts for p in mount_namespace_members(mount)]:
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


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative path -> content), symlinks not followed."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _listing(root: Path) -> str:
    files = [(name, len(data)) for name, data in _tree(root).items()]
    return ", ".join(f"{name} ({size} bytes)" for name, size in files) or "(empty)"


def _replication_unavailable_reason() -> str | None:
    """Why this machine cannot run the replicated directory (None when it can)."""
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "no usable /dev/fuse"
    tools = ("fusermount3", "unshare", "nsenter", "mount")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found on PATH"
    return None


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


__all__: Sequence[str] = ("register", "run_demo")
