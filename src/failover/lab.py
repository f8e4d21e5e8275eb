"""A throw-away network lab in Linux network namespaces (root only).

Not a test helper: ``failover demo`` runs on it, as do the e2e tests and the
benchmarks. ``Lab`` builds, for one demo, test or benchmark run::

    namespace <name>-br          one bridge per network (br1, br2, ...)
    namespace <name>-alpha       one veth per network, named after the network,
    namespace <name>-beta          with 10.77.<i>.1/24 (alpha) and .2/24 (beta)
    namespace <name>-client      optional: a veth on the first network, .100/24
    namespace <name>-arbitrator  optional: a veth on the network named by
                                   ``arbitrator=``, .50/24 (a witness, etcd)

``<name>`` is ``<prefix>-<pid>-<random>`` so that parallel runs never collide and a
leftover can be traced to the process that made it. Nothing is created in the
root namespace: bridges and veths live in the lab's namespaces, so deleting the
namespaces removes everything. Subnets (10.77.<i>.0/24) are private to the lab.

The API is synchronous (each call runs a few ``ip`` commands, milliseconds);
async code may call it directly or through ``anyio.to_thread.run_sync``::

    from failover.lab import Lab, netns_unavailable_reason

    with Lab(networks=("lan", "crossover"), client=True) as lab:
        lab.address("alpha", "lan")          # "10.77.1.1"
        lab.interface("alpha", "lan")        # "lan" (inside alpha's namespace)
        lab.host_address("lan", 200)         # "10.77.1.200", e.g. for a virtual IP
        proc = lab.run("alpha", ["failover", "run", "-c", cfg, "--node", "alpha"])
        lab.link_down("alpha", "crossover")  # cut one link (the veth, both ends lose carrier)
        lab.link_up("alpha", "crossover")
        lab.drop_towards("alpha", "lan", "beta")    # one way: alpha's frames to beta lost
        lab.undrop_towards("alpha", "lan", "beta")
        lab.exec("client", ["python3", "-c", "..."])   # run to completion
    # close(): every process started kill -9'd by process group, namespaces deleted

Processes are started with ``nsenter --net=/run/netns/NAME`` (network namespace
only: mount namespace and file system are shared, so files, sockets, ptys and
FUSE mounts stay visible).

``close()`` is idempotent and runs from ``__exit__`` and from an ``atexit``
fallback. It SIGKILLs the process group of every process ``run`` started, then
every process still inside one of the lab's namespaces (children a daemon
started, e.g. an application), by PID, then deletes the namespaces.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failover.errors import FailoverError

NODES = ("alpha", "beta")
CLIENT = "client"
ARBITRATOR = "arbitrator"
HOSTS = {"alpha": 1, "beta": 2, CLIENT: 100, ARBITRATOR: 50}
DEFAULT_PREFIX = "failover"
NETNS_DIR = "/run/netns"
UNREACHED_MAC = "02:00:00:00:00:01"  # locally administered; no veth of a lab has it
_COMMAND_TIMEOUT = 10.0


class LabError(FailoverError):
    """A lab could not be built or changed; the message holds the failing command's output."""


def netns_unavailable_reason() -> str | None:
    """Why a ``Lab`` cannot be built here (None when it can).

    Checks root, the ``ip``/``nsenter`` commands, and that a namespace can really be
    created and deleted (containers may forbid it). Takes a few milliseconds.
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"the '{tool}' command is not installed"
    probe = f"{DEFAULT_PREFIX}-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except LabError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _ip("-n", probe, "link", "add", "br-probe", "type", "bridge")
    except LabError as exc:
        return f"cannot create a bridge in a network namespace: {exc}"
    finally:
        with contextlib.suppress(LabError):
            _ip("netns", "del", probe)
    return None


def list_namespaces() -> list[str]:
    """Names shown by ``ip netns list`` now."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_namespaces(names: Sequence[str]) -> list[str]:
    """Kill every process inside each named namespace (by PID), then delete it.

    Returns the names that could not be deleted (empty on success). Missing
    namespaces are ignored. For ``failover demo --clean`` and stale labs.
    """
    present = set(list_namespaces())
    failed: list[str] = []
    for name in names:
        if name not in present:
            continue
        _kill_namespace_pids(name)
        try:
            _ip("netns", "del", name)
        except LabError:
            failed.append(name)
    return failed


def stale_namespaces(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Lab namespaces (``<prefix>-<pid>-...``) whose creating process no longer exists.

    A lab kept on purpose (``Lab.detach``) also shows up here once its creator
    exits; the caller decides.
    """
    stale = []
    for name in list_namespaces():
        parts = name.split("-")
        if len(parts) < 4 or f"{parts[0]}" != prefix or not parts[1].isdigit():
            continue
        if not pid_alive(int(parts[1])):
            stale.append(name)
    return stale


def with_own_disks(binds: Sequence[tuple[Path, Path]], argv: Sequence[str]) -> list[str]:
    """``argv`` run in a mount namespace of its own (``unshare --mount``, private
    propagation) where each ``(source, target)`` of ``binds`` is bind-mounted first:
    a node's own "disk" at the path the cluster file names, as on a real server,
    while two nodes share one machine. The wrapper execs ``argv``: the process
    started becomes ``argv`` itself (its PID is the node's daemon), and every process
    it starts shares the namespace (``mount_namespace_pids``)."""
    script = "".join('mount --bind "$1" "$2" && shift 2 && ' for _ in binds) + 'exec "$@"'
    paths = [str(path) for pair in binds for path in pair]
    return ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "sh", *paths, *argv]  # fmt: skip


def mount_namespace_pids(pid: int) -> list[int]:
    """Every process in the mount namespace of process ``pid``: a node started under
    ``unshare --mount`` (its daemon, its application, its FUSE helpers).

    Only ``[pid]`` while ``pid`` still shares this process's mount namespace (its
    wrapper has not unshared yet), so that the host's processes are never taken
    for the node's; empty once ``pid`` is gone.
    """
    try:
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return []
    if namespace == os.readlink("/proc/self/ns/mnt"):
        return [pid]
    return mount_namespace_members(namespace)


def mount_namespace_members(namespace: str) -> list[int]:
    """Every process whose mount namespace is ``namespace`` (``mnt:[inode]``, as
    ``readlink /proc/PID/ns/mnt`` shows it), this process included if it is one."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                if os.readlink(f"/proc/{entry}/ns/mnt") == namespace:
                    pids.append(int(entry))
    return pids


def kill_mount_namespace(pid: int) -> int:
    """SIGKILL every process of ``mount_namespace_pids(pid)``, as when the node loses
    power (its mount namespace, with its mounts, goes away with the last one); how many."""
    victims = mount_namespace_pids(pid)
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return len(victims)


@dataclass(frozen=True)
class Attachment:
    """One lab member's end of one network."""

    node: str
    network: str
    interface: str  # inside the member's namespace
    address: str  # without prefix length
    prefixlen: int


class Lab:
    """Namespaces, bridges and veths for a two-node cluster; see the module docstring.

    ``networks``: names of the networks (each gets a bridge and subnet
    10.77.<i>.0/24, i from 1); used as interface names inside the nodes, so they
    must be valid interface names (at most 15 characters). ``client``: also add
    a ``client`` namespace on the first network. ``arbitrator``: also add an
    ``arbitrator`` namespace on that network only (the third machine a witness or
    etcd runs on: cutting that network cuts a node from the arbitrator alone, and
    cutting the others leaves it reachable from both). Building happens in ``open()``
    (or ``__enter__``); a failure there cleans up what was made and raises
    ``LabError``.
    """

    def __init__(
        self,
        networks: Sequence[str] = ("lan", "crossover"),
        *,
        client: bool = False,
        prefix: str = DEFAULT_PREFIX,
        arbitrator: str | None = None,
    ) -> None:
        if not networks:
            raise ValueError("a lab needs at least one network")
        if len(set(networks)) != len(networks):
            raise ValueError(f"duplicate network names: {list(networks)}")
        for network in networks:
            if not (0 < len(network) <= 15) or not network.replace("-", "").isalnum():
                raise ValueError(f"network name {network!r} is not a usable interface name")
            if network in ("lo",):
                raise ValueError("network name 'lo' is reserved")
        if "-" in prefix or not prefix:
            raise ValueError("prefix must be non-empty and contain no '-'")
        if arbitrator is not None and arbitrator not in networks:
            raise ValueError(f"arbitrator network {arbitrator!r} is not one of {list(networks)}")
        self.networks: tuple[str, ...] = tuple(networks)
        self.members: tuple[str, ...] = (*NODES, CLIENT) if client else NODES
        self.arbitrator_network = arbitrator
        if arbitrator is not None:
            self.members = (*self.members, ARBITRATOR)
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._closed = False
        self._opened = False

    # -- naming ---------------------------------------------------------------

    @property
    def bridge_namespace(self) -> str:
        return f"{self.name}-br"

    def namespace(self, node: str) -> str:
        """The network namespace name of ``node`` ("alpha", "beta", "client" or
        "arbitrator")."""
        self._check_member(node)
        return f"{self.name}-{node}"

    def namespace_path(self, node: str) -> str:
        """``/run/netns/<name>``: for ``nsenter --net=`` or ``setns``."""
        return f"{NETNS_DIR}/{self.namespace(node)}"

    @property
    def namespaces(self) -> list[str]:
        """Every namespace this lab creates (created or not yet)."""
        return [self.bridge_namespace, *(self.namespace(m) for m in self.members)]

    def attachments(self, node: str) -> list[Attachment]:
        """The networks ``node`` is on (the client: only the first network; the
        arbitrator: only its own)."""
        self._check_member(node)
        networks = self.networks[:1] if node == CLIENT else self.networks
        if node == ARBITRATOR:
            networks = (self.arbitrator_network,) if self.arbitrator_network else ()
        return [
            Attachment(node, net, net, self.host_address(net, HOSTS[node]), 24) for net in networks
        ]

    def interface(self, node: str, network: str) -> str:
        """Name of ``node``'s interface on ``network`` (inside its namespace)."""
        return self._attachment(node, network).interface

    def address(self, node: str, network: str) -> str:
        """``node``'s IPv4 address on ``network``, without prefix length."""
        return self._attachment(node, network).address

    def host_address(self, network: str, host: int) -> str:
        """Address ``host`` (1..254) of ``network``'s subnet, e.g. for a virtual IP.

        alpha is .1, beta .2, the client .100, the arbitrator .50: pick another
        number for a VIP.
        """
        if network not in self.networks:
            raise ValueError(f"unknown network {network!r} (lab has {list(self.networks)})")
        if not 0 < host < 255:
            raise ValueError(f"host number {host} out of range 1..254")
        return f"10.77.{self.networks.index(network) + 1}.{host}"

    def _bridge(self, network: str) -> str:
        return f"br{self.networks.index(network) + 1}"

    def _bridge_port(self, node: str, network: str) -> str:
        return f"v{self.networks.index(network) + 1}-{node}"[:15]

    def _attachment(self, node: str, network: str) -> Attachment:
        for attachment in self.attachments(node):
            if attachment.network == network:
                return attachment
        raise ValueError(f"{node} is not on network {network!r}")

    def _check_member(self, node: str) -> None:
        if node not in self.members:
            raise ValueError(f"unknown lab member {node!r} (lab has {list(self.members)})")

    # -- building -------------------------------------------------------------

    def open(self) -> Lab:
        """Create the namespaces, bridges, veths and addresses. Idempotent.

        Raises ``LabError`` (after removing whatever was made) when a command fails.
        """
        if self._opened:
            return self
        if self._closed:
            raise LabError("this lab was closed; build a new one")
        self._opened = True
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        bridge_ns = self.bridge_namespace
        for namespace in self.namespaces:
            _ip("netns", "add", namespace)
            self._created.append(namespace)
            _ip("-n", namespace, "link", "set", "lo", "up")
        for network in self.networks:
            bridge = self._bridge(network)
            _ip("-n", bridge_ns, "link", "add", bridge, "type", "bridge")
            _ip("-n", bridge_ns, "link", "set", bridge, "up")
        for member in self.members:
            namespace = self.namespace(member)
            for att in self.attachments(member):
                port = self._bridge_port(member, att.network)
                _ip(
                    "-n",
                    bridge_ns,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    att.interface,
                    "netns",
                    namespace,
                )
                _ip("-n", bridge_ns, "link", "set", port, "master", self._bridge(att.network))
                _ip("-n", bridge_ns, "link", "set", port, "up")
                _ip(
                    "-n",
                    namespace,
                    "addr",
                    "add",
                    f"{att.address}/{att.prefixlen}",
                    "dev",
                    att.interface,
                )
                _ip("-n", namespace, "link", "set", att.interface, "up")

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- using ------------------------------------------------------------------

    def command(self, node: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs ``argv`` in ``node``'s network namespace (nsenter --net)."""
        return ["nsenter", f"--net={self.namespace_path(node)}", "--", *argv]

    def run(self, node: str, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``node``'s network namespace; returns at once.

        The process gets its own session (process group) unless ``popen_kw`` says
        otherwise; ``close()`` kills that group. Other keyword arguments go to
        ``subprocess.Popen`` as they are.
        """
        self._require_open()
        popen_kw.setdefault("start_new_session", True)
        process: subprocess.Popen[Any] = subprocess.Popen(self.command(node, argv), **popen_kw)
        self._processes.append(process)
        return process

    def exec(
        self, node: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node``'s namespace to completion (text output captured).

        Raises ``LabError`` on a non-zero exit when ``check``; ``subprocess.TimeoutExpired``
        (after killing it) when it outlives ``timeout``.
        """
        self._require_open()
        result = _run(self.command(node, argv), timeout=timeout)
        if check and result.returncode != 0:
            raise LabError(
                f"{' '.join(argv)} in {node}: exit {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def link_down(self, node: str, network: str) -> None:
        """Set ``node``'s veth on ``network`` down: that link is cut (both ends lose carrier)."""
        self._require_open()
        _ip("-n", self.namespace(node), "link", "set", self.interface(node, network), "down")

    def link_up(self, node: str, network: str) -> None:
        """Undo ``link_down``. The address stays configured while the link is down."""
        self._require_open()
        _ip("-n", self.namespace(node), "link", "set", self.interface(node, network), "up")

    def link_is_up(self, node: str, network: str) -> bool:
        """Whether ``node``'s veth on ``network`` is administratively up."""
        self._require_open()
        out = _ip("-n", self.namespace(node), "-o", "link", "show", self.interface(node, network))
        flags = out.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in out else []
        return "UP" in flags

    def netem(self, node: str, network: str, spec: str | None) -> None:
        """Apply a netem qdisc (e.g. ``"loss 5%"``, ``"delay 20ms"``) on ``node``'s veth.

        ``None`` or ``""`` removes it. Raises ``LabError`` when the kernel has no netem.
        """
        self._require_open()
        dev = self.interface(node, network)
        ns = self.namespace(node)
        if spec:
            _run_checked(
                ["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", *spec.split()]
            )
        else:
            result = _run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"])
            if (
                result.returncode != 0
                and "No such file" not in result.stderr
                and ("Cannot delete qdisc with handle of zero" not in result.stderr)
            ):
                raise LabError(f"tc qdisc del in {node}: {result.stderr.strip()}")

    def drop_towards(self, node: str, network: str, peer: str) -> None:
        """One way only: every frame ``node`` sends to ``peer`` on ``network`` is lost,
        what ``peer`` sends to ``node`` still arrives. A permanent neighbour entry in
        ``node``'s namespace gives ``peer``'s address a MAC no member has
        (``UNREACHED_MAC``): the frames leave, reach nobody, and no error comes back
        (no kernel module needed, unlike netem or a firewall)."""
        self._require_open()
        address, dev = self.address(peer, network), self.interface(node, network)
        _ip("-n", self.namespace(node), "neigh", "replace", address, "lladdr", UNREACHED_MAC,
            "dev", dev, "nud", "permanent")  # fmt: skip

    def undrop_towards(self, node: str, network: str, peer: str) -> None:
        """Undo ``drop_towards`` (the entry removed: ARP finds the real MAC again)."""
        self._require_open()
        address, dev = self.address(peer, network), self.interface(node, network)
        result = _run(["ip", "-n", self.namespace(node), "neigh", "del", address, "dev", dev])
        if result.returncode != 0 and "No such file" not in result.stderr:
            raise LabError(f"ip neigh del in {node}: {result.stderr.strip()}")

    @property
    def processes(self) -> list[subprocess.Popen[Any]]:
        """Processes started by ``run`` (also those that have exited)."""
        return list(self._processes)

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description: namespaces, members' addresses, live PIDs."""
        return {
            "name": self.name,
            "namespaces": self.namespaces,
            "members": {
                member: {
                    "namespace": self.namespace(member),
                    "links": {
                        a.network: {"interface": a.interface, "address": a.address}
                        for a in self.attachments(member)
                    },
                }
                for member in self.members
            },
            "pids": [p.pid for p in self._processes if p.poll() is None],
        }

    def detach(self) -> dict[str, Any]:
        """Leave the lab running (no cleanup at close or exit); returns ``describe()``.

        Remove it later with ``remove_namespaces(desc["namespaces"])`` (which also
        kills the processes inside).
        """
        description = self.describe()
        self._closed = True
        atexit.unregister(self.close)
        return description

    # -- cleaning ---------------------------------------------------------------

    def close(self) -> None:
        """Kill every process of the lab (by PID / process group) and delete its namespaces.

        Never raises for a process or namespace that is already gone; waits for
        each killed process started by ``run`` (at most a few seconds in all).
        Raises ``LabError`` only if a namespace remains after deletion.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for process in self._processes:
            if process.poll() is None:
                _kill_group(process.pid)
        deadline = time.monotonic() + 5.0
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        left = remove_namespaces(self._created)
        self._created.clear()
        if left:
            raise LabError(f"could not delete namespaces: {left}")

    def _require_open(self) -> None:
        if not self._opened or self._closed:
            raise LabError("the lab is not open")


# -- helpers ------------------------------------------------------------------


def _run(
    argv: Sequence[str], *, timeout: float = _COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def _run_checked(argv: Sequence[str]) -> str:
    result = _run(argv)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def _ip(*args: str) -> str:
    return _run_checked(["ip", *args])


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        # Not a group leader any more (or gone): kill the process itself.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _kill_namespace_pids(namespace: str) -> None:
    """SIGKILL every process inside ``namespace`` (by PID) and wait briefly for them."""
    result = _run(["ip", "netns", "pids", namespace])
    pids = [int(tok) for tok in result.stdout.split() if tok.isdigit()]
    for pid in pids:
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3.0
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if pid_alive(pid)]
        if pids:
            time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
