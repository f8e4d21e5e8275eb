"""Rules that tie several configuration values together.

Each rule runs only on sections that passed their own validation, so one
broken section does not hide the problems of the others. Every problem is
attached to the key an operator has to change.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from failover.config.models import (
    ETCD_KEYS,
    MIN_KEY_BYTES,
    NAME_RE,
    PING_CALL_SLACK,
    PING_KEYS,
    ApplicationConfig,
    ArbitratorConfig,
    CheckerConfig,
    ClusterSection,
    CommandChecker,
    ControlConfig,
    LinkConfig,
    PingChecker,
    ProcessChecker,
    ReplicatedDirectory,
    ReplicationSection,
    ReplicationTls,
    TcpChecker,
    VirtualIpConfig,
)
from failover.config.problems import Loc, Problem, describe_value, format_key, problems_from
from failover.config.timing import resolve_timing
from failover.core.arbitration import ping_timing_holds
from failover.core.state import LEASE_MARGIN, LEASE_RENEW
from failover.errors import PluginNotFound, UsageError
from failover.plugins import load_replication_transport, load_transport
from failover.tls import tls_context

# Float slack for "dead_timeout >= 3 x heartbeat_interval": 3 * 0.05 is 0.15000000000000002.
_EPSILON = 1e-9

# sockaddr_un.sun_path on Linux: the path and its terminating NUL.
SUN_PATH_BYTES = 108


@dataclass
class Sections:
    """The parts of the file that are valid on their own, for the rules to work on.

    ``cluster`` may be partial: only the fields named in ``cluster_ok`` may be
    read. ``links`` and ``checkers`` hold the valid items with their index in
    the file. ``node_names`` lists every node name written (None when
    ``nodes`` is not a mapping). ``endpoints`` maps each node whose ``links``
    is a mapping to its endpoint options by link name (None: not a mapping).
    ``links_complete`` is False when some link is invalid or the section is
    missing, so that "no such link" cannot be concluded.

    ``replication_given`` tells whether the file has a (non-null)
    ``replication`` section; ``replication`` and ``replication_ok`` are its
    valid fields, as for ``cluster``, and ``directories`` its valid items with
    their index. Of the nodes whose section is a mapping,
    ``replication_options`` maps those that give a replication endpoint to its
    options (None: not a mapping), and ``nodes_without_replication`` lists the
    others. ``state_dirs`` maps a node to its state directory and the key
    that sets it, when that is valid. ``controls`` maps a node to its valid
    ``control`` section; ``application`` and ``virtual_ip`` are those sections
    when valid, ``application_given`` whether the file has the first.
    ``virtual_ips`` holds the valid items of that list with their
    index, and ``virtual_ips_given`` whether the file has that key.
    """

    cluster: ClusterSection | None = None
    cluster_ok: frozenset[str] = frozenset()
    links: list[tuple[int, LinkConfig]] = field(default_factory=list)
    links_complete: bool = False
    node_names: tuple[str, ...] | None = None
    endpoints: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    checkers: list[tuple[int, CheckerConfig]] = field(default_factory=list)
    replication_given: bool = False
    replication: ReplicationSection | None = None
    replication_ok: frozenset[str] = frozenset()
    directories: list[tuple[int, ReplicatedDirectory]] = field(default_factory=list)
    replication_options: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    nodes_without_replication: list[str] = field(default_factory=list)
    state_dirs: dict[str, tuple[Loc, Path]] = field(default_factory=dict)
    controls: dict[str, ControlConfig] = field(default_factory=dict)
    application: ApplicationConfig | None = None
    application_given: bool = False
    virtual_ip: VirtualIpConfig | None = None
    virtual_ips: list[tuple[int, VirtualIpConfig]] = field(default_factory=list)
    virtual_ips_given: bool = False


@dataclass
class Findings:
    """What the rules found: errors, warnings, and the endpoints they validated
    (``endpoints`` by node and link, ``replication_endpoints`` by node)."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    endpoints: dict[tuple[str, str], BaseModel] = field(default_factory=dict)
    replication_endpoints: dict[str, BaseModel] = field(default_factory=dict)


def check_all(sections: Sections, *, local: bool = False) -> Findings:
    """Run every rule on the valid parts. Reads the key file; loads transport plugins.
    ``local``: this machine is the node checked (``check-config --node``), so a
    script missing here is an error, not a warning."""
    found = Findings()
    cluster, ok = sections.cluster, sections.cluster_ok
    if cluster is not None:
        if {"profile", "timing"} <= ok:
            _check_timing(cluster, found)
        if "arbitrator" in ok:
            _check_arbitrator(cluster, found)
            if {"profile", "timing"} <= ok and cluster.arbitrator.type == "ping":
                _check_ping_timing(cluster, found)
        if {"insecure", "key_file"} <= ok:
            _check_key(cluster, found)
        if sections.node_names is not None:
            _check_node_references(cluster, ok, sections.node_names, found)
    _check_unique_names(("links",), [(i, link.name) for i, link in sections.links], found)
    _check_unique_names(("checkers",), [(i, c.name) for i, c in sections.checkers], found)
    if sections.node_names is not None:
        _check_node_names(sections.node_names, found)
    _check_endpoints(sections, found)
    _check_replication(sections, found)
    _check_commands(sections, found, local=local)
    _check_control_sockets(sections, found)
    vips = _virtual_ip_entries(sections)
    _check_virtual_ips(sections, vips, found)
    _check_process_checkers(sections, found)
    _check_checkers_of_the_virtual_ips({vip.address.ip for _, vip in vips}, sections, found)
    return found


def _check_process_checkers(sections: Sections, found: Findings) -> None:
    """A process checker without a pidfile watches the foreground ``application``
    command: without one it would be down at every probe."""
    if sections.application_given and sections.application is None:
        return  # an invalid section: whether it has a command cannot be told
    if sections.application is not None and sections.application.command is not None:
        return
    for i, checker in sections.checkers:
        if isinstance(checker, ProcessChecker) and checker.pidfile is None:
            found.problems.append(
                Problem(
                    ("checkers", i),
                    f"checker {checker.name} watches the application's main process, "
                    "which the daemon knows only when it starts it (application.command): "
                    "give the checker a pidfile, or the application a command",
                )
            )


def _virtual_ip_entries(sections: Sections) -> list[tuple[Loc, VirtualIpConfig]]:
    """The valid virtual addresses with their keys: ``virtual_ip``, then ``virtual_ips``
    (the order of ``ClusterConfig.addresses``)."""
    single = [] if sections.virtual_ip is None else [(("virtual_ip",), sections.virtual_ip)]
    return single + [(("virtual_ips", i), vip) for i, vip in sections.virtual_ips]


def _check_checkers_of_the_virtual_ips(
    vips: set[ipaddress.IPv4Address | ipaddress.IPv6Address], sections: Sections, found: Findings
) -> None:
    """A checker that probes a virtual IP must run only where it is held: on the
    node that does not serve it would report down, and block that node's takeover."""
    for i, checker in sections.checkers:
        if isinstance(checker, TcpChecker):
            target = checker.host
        elif isinstance(checker, PingChecker):
            target = checker.address
        else:
            continue
        try:
            probes_vip = ipaddress.ip_address(target) in vips
        except ValueError:
            continue  # a host name: it cannot be told here
        if probes_vip and checker.when != "serving":
            found.problems.append(
                Problem(
                    ("checkers", i, "when"),
                    f"checker {checker.name} probes the virtual IP {target}, which only the "
                    f"serving node holds: with when: {checker.when} it would report down on "
                    "the other node and block its takeover; use when: serving",
                )
            )


APPLICATION_SCRIPTS = (
    "prestart",
    "start",
    "stop",
    "prestop",
    "poststop",
    "start_both",
    "stop_both",
    "transition",
    "command",
)
"""The keys of ``application`` that name a command line, in the order they are checked."""


def _check_commands(sections: Sections, found: Findings, *, local: bool) -> None:
    """Each script command splits into a program and its arguments, as it will be
    run, and that program exists and is executable on this machine: an error
    when ``local`` (``check-config --node``: this machine is that node), else a
    warning."""
    commands: list[tuple[Loc, str]] = []
    application = sections.application
    if application is not None:
        for key in APPLICATION_SCRIPTS:
            command = getattr(application, key)
            if command is not None:
                commands.append((("application", key), command))
    commands.extend(
        (("checkers", i, "command"), c.command)
        for i, c in sections.checkers
        if isinstance(c, CommandChecker)
    )
    for loc, command in commands:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            found.problems.append(
                Problem(loc, f"cannot split this command line ({exc}): check its quotes")
            )
            continue
        if not argv or not argv[0]:
            found.problems.append(Problem(loc, "this command line names no program"))
            continue
        problem = _program_problem(argv[0])
        if problem is not None:
            (found.problems if local else found.warnings).append(Problem(loc, problem))


def _program_problem(program: str) -> str | None:
    """Why ``program`` (a path, or a name looked up in PATH) could not be run
    here, or None."""
    if "/" not in program:
        if shutil.which(program) is None:
            return f"{program!r} is not found in PATH on this machine"
        return None
    path = Path(program)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{program} does not exist on this machine"
    except OSError as exc:
        return f"cannot look at {program}: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return f"{program} is not a regular file"
    if not os.access(path, os.X_OK):
        return f"{program} is not executable (chmod +x {program})"
    return None


def _check_control_sockets(sections: Sections, found: Findings) -> None:
    """A control socket path must fit in sun_path, whether written or the default one."""
    for node, (state_loc, state_dir) in sections.state_dirs.items():
        control = sections.controls.get(node)
        if control is not None and control.socket is not None:
            loc: Loc = ("nodes", node, "control", "socket")
            path = control.socket
            whose = "the control socket"
        elif control is None or control.tcp is None:
            loc, path = state_loc, state_dir / node / "control.sock"
            whose = f"node {node}'s default control socket"
        else:
            continue
        size = len(os.fsencode(path)) + 1
        if size > SUN_PATH_BYTES:
            found.problems.append(
                Problem(
                    loc,
                    f"{whose} {path} takes {size} bytes with its terminating NUL; a Unix "
                    f"socket path holds at most {SUN_PATH_BYTES}: choose a shorter path",
                )
            )


def _check_virtual_ips(
    sections: Sections, entries: list[tuple[Loc, VirtualIpConfig]], found: Findings
) -> None:
    """``virtual_ip`` or ``virtual_ips``, not both; no address twice; none a node's own."""
    if sections.virtual_ip is not None and sections.virtual_ips_given:
        found.problems.append(
            Problem(
                ("virtual_ips",),
                "give either virtual_ip (one address) or virtual_ips (a list), not both",
            )
        )
    first: dict[object, Loc] = {}
    for loc, vip in entries:
        ip = vip.address.ip
        if ip in first:
            found.problems.append(
                Problem(
                    (*loc, "address"),
                    f"{ip} is listed twice (also {format_key(first[ip])}): "
                    "each virtual address once",
                )
            )
        else:
            first[ip] = loc
        _check_not_own_address(loc, vip, found)


def _check_not_own_address(loc: Loc, vip: VirtualIpConfig, found: Findings) -> None:
    """A virtual IP is no node's own address: releasing it would delete that address."""
    own = [(f"nodes.{node}.links.{link}", e) for (node, link), e in found.endpoints.items()]
    own += [(f"nodes.{node}.replication", e) for node, e in found.replication_endpoints.items()]
    for key, endpoint in own:
        address = getattr(endpoint, "address", None)
        try:
            same = ipaddress.ip_address(str(address)) == vip.address.ip
        except ValueError:
            continue  # a host name, or no address: nothing to compare
        if same:
            found.problems.append(
                Problem(
                    (*loc, "address"),
                    f"{vip.address.ip} is also {key}'s address: the virtual IP must be an "
                    "address of its own (the daemon deletes it when the node stops serving)",
                )
            )


def _check_timing(cluster: ClusterSection, found: Findings) -> None:
    given = cluster.timing.given()
    t = resolve_timing(cluster.profile, cluster.timing)

    def blame(*keys: str) -> Loc:
        # The profile's own values are consistent: at least one override is at fault.
        for key in keys:
            if key in given:
                return ("cluster", "timing", key)
        return ("cluster", "timing")

    hb = t.heartbeat_interval
    if t.dead_timeout + _EPSILON < 3 * hb:
        found.problems.append(
            Problem(
                blame("dead_timeout", "heartbeat_interval"),
                f"dead_timeout ({t.dead_timeout:g}) must be at least 3 x heartbeat_interval "
                f"(3 x {hb:g} = {3 * hb:g})",
            )
        )
    if t.link_timeout <= hb:
        found.problems.append(
            Problem(
                blame("link_timeout", "heartbeat_interval"),
                f"link_timeout ({t.link_timeout:g}) must be greater than heartbeat_interval "
                f"({hb:g})",
            )
        )
    if t.link_timeout > t.dead_timeout:
        found.problems.append(
            Problem(
                blame("link_timeout", "dead_timeout"),
                f"link_timeout ({t.link_timeout:g}) must not exceed dead_timeout "
                f"({t.dead_timeout:g})",
            )
        )


def _check_arbitrator(cluster: ClusterSection, found: Findings) -> None:
    arbitrator = cluster.arbitrator
    if arbitrator.type != "ping":
        for key in PING_KEYS:
            if key in arbitrator.model_fields_set:
                found.problems.append(
                    Problem(("cluster", "arbitrator", key), "only for arbitrator type 'ping'")
                )
    if "type" not in arbitrator.model_fields_set:
        # an address or a lease with no type is a forgotten type: the pair would
        # run unarbitrated while the file looks arbitrated (an explicit
        # ``type: none`` is the operator's choice, whatever else is kept)
        for key in ("address", "lease_ttl"):
            if key in arbitrator.model_fields_set:
                found.problems.append(
                    Problem(
                        ("cluster", "arbitrator", key),
                        "only with an arbitrator, and no type is given "
                        "(witness, etcd or ping; none to run without one)",
                    )
                )
    elif arbitrator.type != "ping":
        _check_renewable(arbitrator, found)
    if arbitrator.type == "etcd":
        _check_etcd(arbitrator, found)
        return
    for key in ETCD_KEYS:
        if getattr(arbitrator, key) is not None:
            found.problems.append(
                Problem(("cluster", "arbitrator", key), "only for arbitrator type 'etcd'")
            )
    if arbitrator.type == "ping":
        if arbitrator.address is None:
            found.problems.append(
                Problem(
                    ("cluster", "arbitrator", "address"),
                    "required for arbitrator type 'ping' (the host to reach; port apart)",
                )
            )
        return
    if arbitrator.type != "witness":
        return
    if arbitrator.address is None:
        found.problems.append(
            Problem(
                ("cluster", "arbitrator", "address"),
                "required for arbitrator type 'witness' (the witness's host:port)",
            )
        )
    if cluster.insecure:
        found.problems.append(
            Problem(
                ("cluster", "arbitrator", "type"),
                "a witness grants only requests signed with the cluster key: "
                "it cannot be used with insecure: true",
            )
        )


def _check_ping_timing(cluster: ClusterSection, found: Findings) -> None:
    """The timing a ping witness is safe and live with (docs/arbitration.md, ping).

    No lease runs out anywhere but in the serving node's own count: it stops
    serving at ``asked + lease_ttl - lease_margin`` (``hold_grant``), where
    ``asked`` is its last renewal that reached the address, and is stopped
    ``lease_margin`` later. Its peer asks only after ``dead_timeout`` of
    silence (or ``startup_timeout`` after its own start, having heard
    nothing). A node isolated from everything at once (or from the address
    first) sent a heartbeat less than ``heartbeat_interval`` before its cut,
    so after its last successful ask, and its peer cannot ask sooner than
    ``dead_timeout`` after that heartbeat. So an isolated node is stopped
    before its peer asks as long as (``ping_timing_holds``, the core's rule,
    which the timing model checks)

        lease_ttl + heartbeat_interval <= dead_timeout
        lease_ttl <= startup_timeout

    (and the stop takes less than ``lease_margin``, less the clocks' rate
    difference over ``dead_timeout``: microseconds for working clocks).
    Liveness: a renewal is asked ``lease_renew`` after the last one was
    heard, and each takes up to the call's bound, so the lease is renewed in
    time only if ``lease_ttl - lease_margin > lease_renew + 2 x bound``; and
    the bound stays within half of ``lease_renew``.
    """
    arbitrator = cluster.arbitrator
    t = resolve_timing(cluster.profile, cluster.timing)
    ttl, renew, margin = arbitrator.lease_ttl, LEASE_RENEW, LEASE_MARGIN
    bound = arbitrator.ping_call_bound()

    def problem(loc: Loc, text: str) -> None:
        found.problems.append(Problem(loc, text))

    calls = (
        f"probe_count x probe_timeout + {PING_CALL_SLACK:g} = "
        f"{arbitrator.probe_count} x {arbitrator.probe_timeout:g} + {PING_CALL_SLACK:g} "
        f"= {bound:g} s"
    )
    if bound > renew / 2 + _EPSILON:
        given = arbitrator.model_fields_set
        blamed = "probe_count" if "probe_timeout" not in given else "probe_timeout"
        problem(
            ("cluster", "arbitrator", blamed),
            f"a ping call takes up to {calls}: it must stay within half of lease_renew "
            f"({renew / 2:g} s); lower probe_count or probe_timeout",
        )
    elif ttl - margin <= renew + 2 * bound + _EPSILON:
        problem(
            ("cluster", "arbitrator", "lease_ttl"),
            f"lease_ttl ({ttl:g}) must exceed lease_margin + lease_renew + 2 x the ping "
            f"call ({margin:g} + {renew:g} + 2 x {bound:g} = {margin + renew + 2 * bound:g}, "
            f"the call being {calls}): else the serving node stops between two renewals",
        )
    timing = ("cluster", "timing")
    # the core's rule (ping_timing_holds), with the clocks' drift charged to the
    # margin (rho 0: working clocks drift by microseconds over dead_timeout)
    if not ping_timing_holds(
        ttl=ttl, rho=0.0, dead_timeout=t.dead_timeout, heartbeat_interval=t.heartbeat_interval
    ):
        problem(
            (*timing, "dead_timeout"),
            f"with arbitrator type 'ping', dead_timeout ({t.dead_timeout:g}) must be at least "
            f"cluster.arbitrator.lease_ttl + heartbeat_interval ({ttl:g} + "
            f"{t.heartbeat_interval:g} = {ttl + t.heartbeat_interval:g}): else the peer of a "
            "node cut off from everything takes over before that node stopped serving; "
            "raise dead_timeout or lower lease_ttl",
        )
    if not ping_timing_holds(
        ttl=ttl, rho=0.0, dead_timeout=t.startup_timeout, heartbeat_interval=0.0
    ):
        problem(
            (*timing, "startup_timeout"),
            f"with arbitrator type 'ping', startup_timeout ({t.startup_timeout:g}) must be at "
            f"least cluster.arbitrator.lease_ttl ({ttl:g}): else a node started while its "
            "peer is cut off from everything may serve before that peer stopped; raise "
            "startup_timeout or lower lease_ttl",
        )


def _check_renewable(arbitrator: ArbitratorConfig, found: Findings) -> None:
    """A witness or etcd lease the holder can renew: it stops serving ``lease_ttl -
    lease_margin`` after it asked, and asks again ``lease_renew`` after a renewal was
    heard; at or below their sum it is fenced before its first renewal is even asked
    (ping's own, stricter, rule is ``_check_ping_timing``)."""
    ttl, renew, margin = arbitrator.lease_ttl, LEASE_RENEW, LEASE_MARGIN
    if ttl - margin <= renew:
        found.problems.append(
            Problem(
                ("cluster", "arbitrator", "lease_ttl"),
                f"lease_ttl ({ttl:g}) must exceed lease_margin + lease_renew ({margin:g} + "
                f"{renew:g} = {margin + renew:g}): else the serving node stops at its lease's "
                "deadline before it asks to renew it",
            )
        )


def _check_etcd(arbitrator: ArbitratorConfig, found: Findings) -> None:
    def problem(key: str, text: str) -> None:
        found.problems.append(Problem(("cluster", "arbitrator", key), text))

    if arbitrator.endpoints is None:
        problem("endpoints", "required for arbitrator type 'etcd' (its client URLs, a list)")
    if arbitrator.address is not None:
        problem("address", "a witness's address: arbitrator type 'etcd' takes endpoints")
    if arbitrator.lease_ttl != int(arbitrator.lease_ttl):
        problem("lease_ttl", f"{arbitrator.lease_ttl:g}: etcd counts leases in whole seconds")
    tls = arbitrator.tls
    if tls is None:
        return
    if arbitrator.endpoints and any(not e.startswith("https://") for e in arbitrator.endpoints):
        problem("endpoints", "with tls set, every endpoint must be https://")
    if (tls.cert_file is None) != (tls.key_file is None):
        problem("tls", "cert_file and key_file go together (the client certificate and its key)")
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None and not path.is_file():
            found.warnings.append(
                Problem(("cluster", "arbitrator", "tls", key), f"{path}: no such file here")
            )


def _check_key(cluster: ClusterSection, found: Findings) -> None:
    if cluster.insecure:
        found.warnings.append(
            Problem(
                ("cluster", "insecure"),
                "insecure: true: heartbeats are not authenticated; anyone who can reach "
                "a link can forge them",
            )
        )
        return
    if cluster.key_file is None:
        found.problems.append(
            Problem(
                ("cluster", "key_file"),
                "required unless insecure: true (the cluster key authenticates every heartbeat)",
            )
        )
        return
    _check_key_file(cluster.key_file, found)


def _check_key_file(path: Path, found: Findings) -> None:
    loc: Loc = ("cluster", "key_file")
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            found.problems.append(Problem(loc, f"key file {path} is not a regular file"))
            return
        size = len(path.read_bytes())
    except FileNotFoundError:
        found.problems.append(Problem(loc, f"key file {path} does not exist"))
        return
    except OSError as exc:
        found.problems.append(Problem(loc, f"cannot read key file {path}: {exc.strerror}"))
        return
    if size < MIN_KEY_BYTES:
        found.problems.append(
            Problem(
                loc,
                f"key file {path} holds {size} bytes; at least {MIN_KEY_BYTES} are needed "
                f"(e.g. head -c 32 /dev/urandom > {path})",
            )
        )
    if mode & stat.S_IROTH:
        found.warnings.append(
            Problem(
                loc,
                f"key file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
                f"chmod 600 {path}",
            )
        )


def _check_unique_names(section: Loc, names: list[tuple[int, str]], found: Findings) -> None:
    first: dict[str, int] = {}
    for i, name in names:
        if name in first:
            found.problems.append(
                Problem(
                    (*section, i, "name"),
                    f"duplicate name {describe_value(name)} "
                    f"(also {format_key((*section, first[name]))})",
                )
            )
        else:
            first[name] = i


def _check_node_names(names: tuple[str, ...], found: Findings) -> None:
    if len(names) != 2:
        listed = f" ({', '.join(names)})" if names else ""
        found.problems.append(
            Problem(("nodes",), f"a cluster has exactly two nodes, found {len(names)}{listed}")
        )
    for name in names:
        if not NAME_RE.fullmatch(name):
            found.problems.append(
                Problem(("nodes", name), f"{name!r} is not a valid name: use only a-z, 0-9 and '-'")
            )


def _check_node_references(
    cluster: ClusterSection, ok: frozenset[str], nodes: tuple[str, ...], found: Findings
) -> None:
    names = ", ".join(nodes)
    if {"failback", "preferred"} <= ok:
        if cluster.failback == "preferred" and cluster.preferred is None:
            found.problems.append(
                Problem(("cluster", "preferred"), "required when failback is 'preferred'")
            )
        if cluster.preferred is not None:
            if cluster.preferred not in nodes:
                found.problems.append(
                    Problem(
                        ("cluster", "preferred"),
                        f"{cluster.preferred!r} is not a node (nodes: {names})",
                    )
                )
            elif cluster.failback != "preferred":
                found.warnings.append(
                    Problem(
                        ("cluster", "preferred"),
                        f"ignored: failback is {cluster.failback!r}, not 'preferred'",
                    )
                )
    if "split_brain_winner" in ok:
        winner = cluster.split_brain_winner
        if winner != "auto" and winner not in nodes:
            found.problems.append(
                Problem(
                    ("cluster", "split_brain_winner"),
                    f"must be 'auto' or a node name ({names}), not {winner!r}",
                )
            )


def _check_endpoints(sections: Sections, found: Findings) -> None:
    links = [link for _, link in sections.links]
    names = list(dict.fromkeys(link.name for link in links))
    for node, endpoints in sections.endpoints.items():
        for name in names:
            if name not in endpoints:
                found.problems.append(
                    Problem(("nodes", node, "links", name), f"missing endpoint for link {name!r}")
                )
        if not sections.links_complete:
            continue
        for name in endpoints:
            if name not in names:
                found.problems.append(
                    Problem(
                        ("nodes", node, "links", name),
                        f"no link named {name!r} in links (links: {', '.join(names)})",
                    )
                )
    for i, link in sections.links:
        try:
            model = load_transport(link.transport).endpoint_model
        except PluginNotFound as exc:
            found.problems.append(Problem(("links", i, "transport"), str(exc)))
            continue
        for node, endpoints in sections.endpoints.items():
            options = endpoints.get(link.name)
            if options is None:
                continue
            loc: Loc = ("nodes", node, "links", link.name)
            endpoint = _validate_endpoint(model, options, loc, link.transport, found)
            if endpoint is not None:
                found.endpoints[(node, link.name)] = endpoint
        _check_distinct_nodes(
            [
                (("nodes", node, "links", link.name), node, found.endpoints.get((node, link.name)))
                for node in sections.endpoints
            ],
            found,
        )


def _validate_endpoint(
    model: type[BaseModel], options: dict[str, Any], loc: Loc, transport: str, found: Findings
) -> BaseModel | None:
    """``options`` validated by a transport's ``model``; None (and problems at ``loc``) if not."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        found.problems.extend(problems_from(exc, options, prefix=loc))
    except Exception as exc:  # a plugin's own bug must not crash the check
        found.problems.append(
            Problem(loc, f"transport {transport!r} failed on these options: {exc}")
        )
    return None


def _check_distinct_nodes(
    endpoints: list[tuple[Loc, str, BaseModel | None]], found: Findings
) -> None:
    """Each node's end of one link has its own socket. ``endpoints``: (key, node, endpoint)."""
    seen: dict[tuple[str, str], str] = {}
    for loc, node, endpoint in endpoints:
        pair = _socket_of(endpoint)
        if pair is None:
            continue
        if pair in seen:
            found.problems.append(
                Problem(
                    loc,
                    f"same address and port as node {seen[pair]!r} ({pair[0]}:{pair[1]}); "
                    "each node needs its own endpoint",
                )
            )
        else:
            seen[pair] = node


def _socket_of(endpoint: BaseModel | None) -> tuple[str, str] | None:
    """(address, port) of an endpoint, or None when there is nothing to compare."""
    address = getattr(endpoint, "address", None)
    port = getattr(endpoint, "port", None)
    if address is None or port is None or _ip_is(str(address), "is_multicast"):
        # Without an address and a port there is nothing to compare (serial
        # devices have the same name on both machines); a multicast group
        # is shared by design.
        return None
    return str(address), str(port)


def _ip_is(address: str, attribute: str) -> bool:
    """Whether ``address`` is an IP address with ``attribute`` (``is_multicast``...) true."""
    try:
        return bool(getattr(ipaddress.ip_address(address), attribute))
    except ValueError:
        return False


# --- replication -------------------------------------------------------------------------


def _check_replication(sections: Sections, found: Findings) -> None:
    if not sections.replication_given:
        for node in sections.replication_options:
            found.problems.append(
                Problem(
                    ("nodes", node, "replication"),
                    "no replication section: a node's replication endpoint is only used "
                    "with a top-level replication section",
                )
            )
        return
    for node in sections.nodes_without_replication:
        found.problems.append(
            Problem(
                ("nodes", node, "replication"),
                "required: the replication section needs each node's replication endpoint",
            )
        )
    replication, ok = sections.replication, sections.replication_ok
    if replication is not None and "transport" in ok:
        _check_replication_endpoints(replication.transport, sections, found)
    _check_unique_names(
        ("replication", "directories"), [(i, d.name) for i, d in sections.directories], found
    )
    _check_directory_paths(sections, found)
    if replication is not None and "tls" in ok and replication.tls is not None:
        _check_tls(replication.tls, found)
    if replication is not None and "quarantine_dir" in ok and replication.quarantine_dir:
        for i, directory in sections.directories:
            _report_overlap(
                ("replication", "quarantine_dir"),
                replication.quarantine_dir,
                (("replication", "directories", i, "path"), directory.path),
                "quarantined files must stay out of the replicated directories",
                found,
            )


def _check_tls(tls: ReplicationTls, found: Findings) -> None:
    """Each file readable, and together a usable mutual-TLS setup (the same check
    the daemon makes when it starts)."""
    for name in ("ca_file", "cert_file", "key_file"):
        path: Path = getattr(tls, name)
        try:
            path.read_bytes()
        except OSError as exc:
            found.problems.append(
                Problem(("replication", "tls", name), f"cannot read {path}: {exc.strerror}")
            )
            return
    try:
        tls_context(
            server=True,
            ca_file=str(tls.ca_file),
            cert_file=str(tls.cert_file),
            key_file=str(tls.key_file),
        )
    except UsageError as exc:
        found.problems.append(Problem(("replication", "tls"), str(exc)))


def _check_replication_endpoints(transport: str, sections: Sections, found: Findings) -> None:
    try:
        model = load_replication_transport(transport).endpoint_model
    except PluginNotFound as exc:
        found.problems.append(Problem(("replication", "transport"), str(exc)))
        return
    for node, options in sections.replication_options.items():
        if options is None:
            continue
        loc: Loc = ("nodes", node, "replication")
        endpoint = _validate_endpoint(model, options, loc, transport, found)
        if endpoint is not None:
            found.replication_endpoints[node] = endpoint
    validated = found.replication_endpoints
    _check_distinct_nodes(
        [(("nodes", node, "replication"), node, endpoint) for node, endpoint in validated.items()],
        found,
    )
    for node in validated:
        _check_apart_from_links(node, found)


def _check_apart_from_links(node: str, found: Findings) -> None:
    """``node``'s replication endpoint uses no socket of its own heartbeat endpoints."""
    replication = _socket_of(found.replication_endpoints[node])
    if replication is None:
        return
    for (owner, link), endpoint in found.endpoints.items():
        heartbeat = _socket_of(endpoint)
        if owner != node or heartbeat is None or heartbeat[1] != replication[1]:
            continue
        # A listener on the unspecified address takes the port on every address.
        if heartbeat[0] == replication[0] or any(
            _ip_is(address, "is_unspecified") for address in (heartbeat[0], replication[0])
        ):
            found.problems.append(
                Problem(
                    ("nodes", node, "replication"),
                    f"same address and port as nodes.{node}.links.{link} "
                    f"({heartbeat[0]}:{heartbeat[1]}); replication needs a port of its own",
                )
            )


def _check_directory_paths(sections: Sections, found: Findings) -> None:
    """Replicated directories overlap neither each other nor a state directory."""
    state_dirs: dict[Path, Loc] = {}
    for setting, state_dir in sections.state_dirs.values():
        state_dirs.setdefault(state_dir, setting)
    for n, (i, directory) in enumerate(sections.directories):
        loc: Loc = ("replication", "directories", i, "path")
        for j, other in sections.directories[:n]:
            _report_overlap(
                loc,
                directory.path,
                (("replication", "directories", j, "path"), other.path),
                "replicated directories must not overlap",
                found,
            )
        for state_dir, setting in state_dirs.items():
            _report_overlap(
                loc,
                directory.path,
                (setting, state_dir),
                "node metadata must stay out of the replicated directories",
                found,
            )


def _report_overlap(
    loc: Loc, path: Path, other: tuple[Loc, Path], why: str, found: Findings
) -> None:
    """A problem at ``loc`` if ``path`` overlaps ``other`` (the key that sets it, and its path)."""
    relation = _overlap(path, other[1])
    if relation:
        found.problems.append(
            Problem(loc, f"'{path}' {relation} {format_key(other[0])} ({other[1]}); {why}")
        )


def _overlap(path: Path, other: Path) -> str | None:
    """How ``path`` overlaps ``other`` ("is the same directory as", "is inside",
    "contains"), or None. Compared as written, with "." and ".." folded."""
    a, b = Path(os.path.normpath(path)), Path(os.path.normpath(other))
    if a == b:
        return "is the same directory as"
    if a.is_relative_to(b):
        return "is inside"
    if b.is_relative_to(a):
        return "contains"
    return None
