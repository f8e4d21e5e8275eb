"""The configuration file's schema as pydantic models (frozen, unknown keys rejected).

These models check each value on its own. Rules that tie several values
together (two nodes, an endpoint per link, timing ratios, the key file) live
in ``failover.config.checks`` so that every problem can be reported at the
key it concerns; ``load_config`` runs both.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from annotated_types import Ge, Le, MinLen
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    IPvAnyInterface,
    PrivateAttr,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from failover.config.timing import ProfileName, Seconds, Timing, TimingOverrides, resolve_timing
from failover.core.state import CheckerPolicy, Settings
from failover.errors import ConfigError, UsageError

NAME_RE = re.compile(r"[a-z0-9-]+")
MIN_KEY_BYTES = 32
DEFAULT_STATE_DIR = Path("/var/lib/failover")
# 2: the application part gained max_restarts and restart_window (issue 9), which
# every file now carries; with version 1 such a file could not be told from the
# same file read by a release without them
FINGERPRINT_VERSION = 2
DEFAULT_REPLICATION_TRANSPORT = "tcp-replication"
MIN_ZONE_SIZE = 4 * 1024
MAX_ZONE_SIZE = 16 * 1024 * 1024
# A virtual address is announced 5 times, 0.25 s apart: a lost frame costs a
# quarter of a second, and the last one, a second later, reaches a neighbour
# that ignored the first (older Linux kernels ignore a change to an ARP entry
# within its locktime, 1 s, of the last).
DEFAULT_ANNOUNCE_COUNT = 5
DEFAULT_ANNOUNCE_INTERVAL = 0.25


def check_name(value: str) -> str:
    """Accept a cluster, node, link or checker name: one or more of a-z, 0-9 and '-'."""
    if not NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name: use only a-z, 0-9 and '-'")
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    # Relative paths are relative to the configuration file, not to the
    # directory the daemon happens to be started from.
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if isinstance(base, Path) and not value.is_absolute():
        return base / value
    return value


def _check_absolute(value: Path) -> Path:
    # The file is identical on both nodes, so a replicated directory must mean
    # the same place on both: a path relative to wherever the file happens to
    # be kept would not.
    if not value.is_absolute():
        raise ValueError(f"'{value}' is not an absolute path (it must start with /)")
    if ".." in value.parts:
        raise ValueError(f"'{value}' must not contain '..' (write the path it leads to)")
    return value


def _check_zone_size(value: int) -> int:
    if not MIN_ZONE_SIZE <= value <= MAX_ZONE_SIZE or value & (value - 1):
        raise ValueError(
            f"{value} is not a power of two from {MIN_ZONE_SIZE} (4 KiB) "
            f"to {MAX_ZONE_SIZE} (16 MiB)"
        )
    return value


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or not 1 <= int(port) <= 65535
    ):
        raise ValueError(f"{value!r} must be host:port (port 1-65535)")
    return value


def _host_port_text(value: object) -> object:
    if not isinstance(value, str):  # YAML reads a bare 7420 as a number
        raise ValueError(f"{value!r} must be host:port as text, e.g. 0.0.0.0:7420")
    return value


HostPort = Annotated[str, BeforeValidator(_host_port_text), AfterValidator(_check_host_port)]
"""An address to listen on or to reach: ``host:port`` (``[v6]:port``), port 1-65535."""


def _check_interface(value: str) -> str:
    if not value or len(value) > 15 or "/" in value or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not a network interface name")
    return value


def _check_host(value: str) -> str:
    # an IP address or a host name: no port, no spaces, nothing a command would
    # take for an option
    if _is_ipv6(value):
        return value
    if not value or value.startswith("-") or any(c.isspace() or c in "/:" for c in value):
        raise ValueError(f"{value!r} is not a host name or IP address (give the port apart)")
    return value


def _is_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _none_is_empty(value: object) -> object:
    # `lan:` with nothing after it means "no options", as `lan: {}` does.
    return {} if value is None else value


Name = Annotated[StrictStr, AfterValidator(check_name)]
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
Command = Annotated[StrictStr, MinLen(1)]
Port = Annotated[int, Ge(1), Le(65535)]
EndpointOptions = Annotated[dict[str, Any], BeforeValidator(_none_is_empty)]
AbsolutePath = Annotated[Path, AfterValidator(_check_absolute)]


class Section(BaseModel):
    """Base of every section: frozen, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_etcd_endpoint(value: str) -> str:
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        port = None
    else:
        if (
            url.scheme in ("http", "https")
            and url.hostname
            and port is not None
            and url.path in ("", "/")
            and not (url.query or url.fragment or url.username or url.password)
        ):
            return value
    raise ValueError(
        f"{value!r} must be http://host:port or https://host:port (an etcd client URL)"
    )


def _check_key_prefix(value: str) -> str:
    if not value.startswith("/") or value == "/" or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must start with / and hold no spaces (e.g. /failover)")
    return value


class EtcdTlsConfig(Section):
    """``cluster.arbitrator.tls``: the CA that signs etcd's certificate (else the
    system's), and this node's client certificate and key when etcd asks for one."""

    ca_file: ConfigPath | None = None
    cert_file: ConfigPath | None = None
    key_file: ConfigPath | None = None


ETCD_KEYS = ("endpoints", "key_prefix", "tls")
PING_KEYS = ("port", "probe_count", "probe_timeout")
PING_PROBE_COUNT = 3
PING_PROBE_TIMEOUT = 0.25
PING_CALL_SLACK = 0.2
"""Seconds a ping arbitrator's call may take beyond its probes' timeouts (starting
the ping processes): the call is cancelled then (``ArbitratorConfig.ping_call_bound``)."""


def _check_arbitrator_address(value: str, info: ValidationInfo) -> str:
    # a witness listens on host:port; a ping target is a host, its port (for a
    # TCP connect instead of an ICMP echo) apart
    if info.data.get("type") == "ping":
        return _check_host(value)
    if info.data.get("type") in ("etcd", "none"):
        return value  # not theirs: _check_arbitrator says so, naming the type
    return _check_host_port(value)


class ArbitratorConfig(Section):
    """``cluster.arbitrator``: ``none``; ``witness`` at ``address`` (host:port,
    UDP); ``etcd``: a lease in the etcd cluster at ``endpoints`` (client
    URLs), under ``key_prefix``, over TLS when ``tls`` is set; or ``ping``:
    serve only while ``address`` (a host) answers an ICMP echo, or accepts a
    TCP connection on ``port`` when one is given, one of ``probe_count``
    probes of ``probe_timeout`` seconds each (docs/arbitration.md). A lease
    runs ``lease_ttl`` seconds."""

    type: Literal["none", "witness", "etcd", "ping"] = "none"
    address: Annotated[StrictStr, AfterValidator(_check_arbitrator_address)] | None = None
    lease_ttl: Seconds = 6.0
    endpoints: (
        Annotated[list[Annotated[StrictStr, AfterValidator(_check_etcd_endpoint)]], MinLen(1)]
        | None
    ) = None
    key_prefix: Annotated[StrictStr, AfterValidator(_check_key_prefix)] | None = None
    tls: EtcdTlsConfig | None = None
    port: Port | None = None
    probe_count: Annotated[StrictInt, Ge(1), Le(10)] = PING_PROBE_COUNT
    probe_timeout: Annotated[Seconds, Le(10)] = PING_PROBE_TIMEOUT

    def ping_call_bound(self) -> float:
        """The longest a ping arbitrator's call takes: its probes, one after the
        other, and the slack to start them."""
        return self.probe_count * self.probe_timeout + PING_CALL_SLACK

    def canonical(self) -> dict[str, Any]:
        """For the fingerprint: the etcd keys only when set and the ping keys
        only for a ping arbitrator (with their defaults spelt out), so a witness
        or etcd cluster keeps the fingerprint it had before either existed."""
        unset = {key for key in ETCD_KEYS if getattr(self, key) is None}
        if self.type != "ping":
            unset.update(PING_KEYS)
        return self.model_dump(mode="json", exclude=unset)


class ClusterSection(Section):
    """``cluster``: the settings both nodes share."""

    name: Name
    key_file: ConfigPath | None = None
    insecure: StrictBool = False
    state_dir: ConfigPath = DEFAULT_STATE_DIR
    profile: ProfileName = "default"
    timing: TimingOverrides = TimingOverrides()
    failback: Literal["none", "preferred", "last-primary"] = "none"
    preferred: Name | None = None
    split_brain_winner: StrictStr = "auto"
    arbitrator: ArbitratorConfig = ArbitratorConfig()
    autostart: StrictBool = True


class LinkConfig(Section):
    """One entry of ``links``: a heartbeat link carried by a transport plugin."""

    name: Name
    transport: Annotated[StrictStr, MinLen(1)]


class ControlTls(Section):
    """``nodes.<node>.control.tcp.tls``: the control listener speaks TLS only,
    presenting ``cert_file`` (and its ``key_file``). ``ca_file``: what the CLI,
    reading this file (``-c``), verifies the daemon with; without it, the CLI
    trusts ``cert_file`` itself (docs/api.md)."""

    cert_file: ConfigPath
    key_file: ConfigPath
    ca_file: ConfigPath | None = None


class ControlTcp(Section):
    """``nodes.<node>.control.tcp``: the control API on TCP, with a bearer token
    (``token_file``, the admin role), optionally a read-only one
    (``read_token_file``: GET only) and TLS."""

    address: Annotated[StrictStr, MinLen(1)]
    port: Port
    token_file: ConfigPath
    read_token_file: ConfigPath | None = None
    tls: ControlTls | None = None
    # the web console on this listener (docs/console.md); off: /console/ answers 404
    console: StrictBool = False


class ControlConfig(Section):
    """``nodes.<node>.control``: exactly one of ``socket`` or ``tcp``."""

    socket: ConfigPath | None = None
    tcp: ControlTcp | None = None

    @model_validator(mode="after")
    def _one_listener(self) -> ControlConfig:
        if (self.socket is None) == (self.tcp is None):
            raise ValueError("give exactly one of socket or tcp")
        return self


class NodeConfig(Section):
    """``nodes.<node>``: where this node keeps its state and how it reaches the links.

    ``replication`` holds this node's end of the replication channel (options
    of the replication transport); it is required exactly when the file has a
    ``replication`` section.
    """

    state_dir: ConfigPath | None = None
    control: ControlConfig | None = None
    links: dict[StrictStr, EndpointOptions]
    replication: EndpointOptions | None = None


class ApplicationConfig(Section):
    """``application``: SafeKit's scripts (each optional), the foreground ``command``
    the daemon supervises, and their time limits (docs/configuration.md)."""

    prestart: Command | None = None
    start: Command | None = None
    stop: Command | None = None
    prestop: Command | None = None
    poststop: Command | None = None
    start_both: Command | None = None
    stop_both: Command | None = None
    transition: Command | None = None
    command: Command | None = None
    timeout: Seconds = 30.0
    stop_timeout: Seconds | None = None
    # the restart budget: local restarts allowed within restart_window seconds
    max_restarts: Annotated[StrictInt, Ge(0)] = 3
    restart_window: Seconds = 86400.0


def _check_virtual_address(value: IPv4Interface | IPv6Interface) -> IPv4Interface | IPv6Interface:
    ip, network = value.ip, value.network
    for kind, bad in (
        ("the unspecified address", ip.is_unspecified),
        ("a multicast address", ip.is_multicast),
        ("a loopback address", ip.is_loopback),
    ):
        if bad:
            raise ValueError(f"{value} is {kind}, not one a client can reach")
    if ip.version == 4 and network.prefixlen < 31 and ip in (network[0], network[-1]):
        which = "network" if ip == network[0] else "broadcast"
        raise ValueError(f"{value} is the {which} address of {network}: choose a host address")
    return value


class VirtualIpConfig(Section):
    """``virtual_ip``, or one entry of ``virtual_ips``: an address that follows the
    serving node, and how it is announced when it moves."""

    address: Annotated[IPvAnyInterface, AfterValidator(_check_virtual_address)]
    interface: Annotated[StrictStr, AfterValidator(_check_interface)]
    # gratuitous ARP (IPv4) / unsolicited neighbour advertisement (IPv6): how many
    # in all (the first at once) and the seconds between two
    announce_count: Annotated[StrictInt, Ge(1), Le(100)] = DEFAULT_ANNOUNCE_COUNT
    announce_interval: Annotated[Seconds, Le(60)] = DEFAULT_ANNOUNCE_INTERVAL


class WatchdogConfig(Section):
    """``watchdog``: the process that fences the application when the daemon's event
    loop stalls (``runtime/watchdog.py``). On by default; it acts only where
    there is something to fence (an application or a virtual IP), or an
    arbitrator (it journals the end of service of a daemon that died). ``device``
    (a hardware or softdog device, e.g. ``/dev/watchdog``) is fed by it when
    set: off by default, for opening one arms a reset of the machine."""

    enabled: StrictBool = True
    device: AbsolutePath | None = None
    device_interval: Annotated[Seconds, Le(60)] = 1.0

    @model_validator(mode="after")
    def _device_needs_the_watchdog(self) -> WatchdogConfig:
        if self.device is not None and not self.enabled:
            raise ValueError(
                "device is set but enabled is false: only the watchdog process feeds the device"
            )
        return self


CheckerClass = Literal["serving", "standby", "both"]
CheckerAction = Literal["restart", "failover", "stop"]
GraceSeconds = Annotated[float, Strict(), AllowInfNan(False), Ge(0)]
CHECKER_TYPES = ("command", "tcp", "ping", "interface", "process")


class _Checker(Section):
    """What every checker has. ``failures`` consecutive failed probes report it
    down, one success reports it up; ``grace`` seconds pass after the application
    started before it runs on the serving node. The defaults depend on the type."""

    name: Name
    interval: Seconds = 5.0
    timeout: Seconds = 3.0
    failures: Annotated[StrictInt, Ge(1)] = 1
    grace: GraceSeconds = 5.0
    when: CheckerClass = "serving"
    action: CheckerAction = "restart"


class CommandChecker(_Checker):
    """``type: command`` (the type of an entry that names none): healthy while
    ``command`` exits 0 within the timeout."""

    type: Literal["command"] = "command"
    command: Command


class TcpChecker(_Checker):
    """``type: tcp``: healthy while a TCP connection to ``host``:``port`` opens
    within the timeout."""

    type: Literal["tcp"]
    host: Annotated[StrictStr, AfterValidator(_check_host)]
    port: Port
    failures: Annotated[StrictInt, Ge(1)] = 3


class PingChecker(_Checker):
    """``type: ping``: healthy while ``address`` answers an ICMP echo within the timeout."""

    type: Literal["ping"]
    address: Annotated[StrictStr, AfterValidator(_check_host)]
    failures: Annotated[StrictInt, Ge(1)] = 3


class InterfaceChecker(_Checker):
    """``type: interface``: healthy while ``interface`` is up with a carrier."""

    type: Literal["interface"]
    interface: Annotated[StrictStr, AfterValidator(_check_interface)]
    grace: GraceSeconds = 0.0
    when: CheckerClass = "both"
    action: CheckerAction = "failover"


class ProcessChecker(_Checker):
    """``type: process``: healthy while the application's main process lives: the
    one ``pidfile`` names (read again at every probe), else the one the runtime
    started (a foreground ``application`` command)."""

    type: Literal["process"]
    pidfile: AbsolutePath | None = None
    grace: GraceSeconds = 0.0


def _checker_tag(value: object) -> object:
    # An entry without a type is a command checker: configurations written
    # before the other types existed keep their meaning. (The tags are no key
    # of the file, so that error locations keep only real keys.)
    if isinstance(value, dict):
        kind = value.get("type", "command")
    else:  # a checker model given in code, or a value that is no mapping
        kind = getattr(value, "type", "command")
    return f"{kind} checker" if kind in CHECKER_TYPES else kind


CheckerConfig = Annotated[
    Annotated[CommandChecker, Tag("command checker")]
    | Annotated[TcpChecker, Tag("tcp checker")]
    | Annotated[PingChecker, Tag("ping checker")]
    | Annotated[InterfaceChecker, Tag("interface checker")]
    | Annotated[ProcessChecker, Tag("process checker")],
    Discriminator(
        _checker_tag,
        custom_error_type="checker_type",
        custom_error_message=f"type must be one of {', '.join(CHECKER_TYPES)}",
    ),
]
"""One entry of ``checkers``: a probe whose failure marks the node unhealthy."""


class ReplicatedDirectory(Section):
    """One entry of ``replication.directories``: a directory mirrored to the peer."""

    name: Name
    path: AbsolutePath


class ReplicationTls(Section):
    """``replication.tls``: mutual TLS on the replication stream. The same paths on
    both nodes; each node's files hold its own certificate and key, both signed by
    the cluster's CA (``ca_file``)."""

    ca_file: ConfigPath
    cert_file: ConfigPath
    key_file: ConfigPath


class ReplicationSection(Section):
    """``replication``: which directories are mirrored to the peer, and how."""

    transport: Annotated[StrictStr, MinLen(1)] = DEFAULT_REPLICATION_TRANSPORT
    ack: Literal["received", "written", "fsynced"] = "written"
    timeout: Seconds = 5.0
    zone_size: Annotated[StrictInt, AfterValidator(_check_zone_size)] = 64 * 1024
    bandwidth: Annotated[StrictInt, Ge(0)] = 0
    quarantine_dir: ConfigPath | None = None
    tls: ReplicationTls | None = None
    directories: Annotated[tuple[ReplicatedDirectory, ...], MinLen(1)]


class ClusterConfig(Section):
    """A whole configuration file, as loaded by ``failover.config.load_config``.

    Build it through ``load_config``: it runs the cross-field rules, validates
    every endpoint with its transport plugin and records ``source_path`` and
    ``warnings``. A model built directly skips those rules.
    """

    cluster: ClusterSection
    links: Annotated[tuple[LinkConfig, ...], MinLen(1)]
    nodes: dict[StrictStr, NodeConfig]
    application: ApplicationConfig | None = None
    virtual_ip: VirtualIpConfig | None = None
    virtual_ips: tuple[VirtualIpConfig, ...] = ()
    checkers: tuple[CheckerConfig, ...] = ()
    replication: ReplicationSection | None = None
    watchdog: WatchdogConfig = WatchdogConfig()

    _source_path: Path | None = PrivateAttr(default=None)
    _warnings: tuple[str, ...] = PrivateAttr(default=())
    _endpoints: dict[tuple[str, str], BaseModel] = PrivateAttr(default_factory=dict)
    _replication_endpoints: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    def attach(
        self,
        source_path: Path,
        warnings: tuple[str, ...],
        endpoints: dict[tuple[str, str], BaseModel],
        replication_endpoints: dict[str, BaseModel] | None = None,
    ) -> None:
        """Record what the loader learnt (called once by ``load_config``)."""
        self._source_path = source_path
        self._warnings = warnings
        self._endpoints = dict(endpoints)
        self._replication_endpoints = dict(replication_endpoints or {})

    @property
    def addresses(self) -> tuple[VirtualIpConfig, ...]:
        """Every virtual address: ``virtual_ip`` (if given), then ``virtual_ips``."""
        return (*((self.virtual_ip,) if self.virtual_ip else ()), *self.virtual_ips)

    @property
    def source_path(self) -> Path | None:
        """The file this configuration was loaded from (None if built in code)."""
        return self._source_path

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that do not stop the cluster, formatted like errors; print them at start."""
        return self._warnings

    @property
    def timing(self) -> Timing:
        """The profile's timings with ``cluster.timing`` overrides applied."""
        return resolve_timing(self.cluster.profile, self.cluster.timing)

    @property
    def node_names(self) -> tuple[str, ...]:
        """The node names, in file order."""
        return tuple(self.nodes)

    def _node(self, node: str) -> NodeConfig:
        try:
            return self.nodes[node]
        except KeyError:
            raise UsageError(
                f"{node!r} is not a node of cluster {self.cluster.name!r} "
                f"(nodes: {', '.join(self.nodes)})"
            ) from None

    def peer_of(self, node: str) -> str:
        """The other node's name. Raises ``UsageError`` for an unknown node."""
        self._node(node)
        others = [name for name in self.nodes if name != node]
        if len(others) != 1:
            raise UsageError(f"cluster {self.cluster.name!r} does not have exactly two nodes")
        return others[0]

    def state_dir_of(self, node: str) -> Path:
        """The state directory that applies to ``node``: its own, else the cluster's."""
        return self._node(node).state_dir or self.cluster.state_dir

    def node_dir(self, node: str) -> Path:
        """Where ``node`` keeps its metadata and sockets: ``<state_dir>/<node>``."""
        return self.state_dir_of(node) / node

    def control_of(self, node: str) -> ControlConfig:
        """``node``'s control listener; by default the unix socket <node_dir>/control.sock."""
        return self._node(node).control or ControlConfig(
            socket=self.node_dir(node) / "control.sock"
        )

    def endpoint(self, node: str, link: str) -> BaseModel:
        """``node``'s options for ``link``, validated by the link's transport plugin.

        Loads the plugin if the loader has not already done so; raises
        ``UsageError`` for an unknown node or link, ``PluginNotFound`` when the
        transport is not installed, ``ConfigError`` when the options are invalid.
        """
        cached = self._endpoints.get((node, link))
        if cached is not None:
            return cached
        options = self._node(node).links.get(link)
        transport = next((item.transport for item in self.links if item.name == link), None)
        if options is None or transport is None:
            raise UsageError(f"node {node!r} has no endpoint for link {link!r}")
        from failover.plugins import load_transport  # noqa: PLC0415 - plugins load lazily

        model = load_transport(transport).endpoint_model
        try:
            validated = model.model_validate(options)
        except ValidationError as exc:
            raise ConfigError([f"nodes.{node}.links.{link}: {exc}"]) from exc
        self._endpoints[(node, link)] = validated
        return validated

    def replication_endpoint(self, node: str) -> BaseModel:
        """``node``'s replication endpoint, validated by the replication transport's model.

        Loads the plugin if the loader has not already done so; raises
        ``UsageError`` for an unknown node or when the file has no replication
        section, ``PluginNotFound`` when the transport is not installed or is
        not a replication transport, ``ConfigError`` when the options are invalid.
        """
        cached = self._replication_endpoints.get(node)
        if cached is not None:
            return cached
        options = self._node(node).replication
        if self.replication is None or options is None:
            raise UsageError(f"cluster {self.cluster.name!r} has no replication section")
        from failover.plugins import load_replication_transport  # noqa: PLC0415 - lazy

        model = load_replication_transport(self.replication.transport).endpoint_model
        try:
            validated = model.model_validate(options)
        except ValidationError as exc:
            raise ConfigError([f"nodes.{node}.replication: {exc}"]) from exc
        self._replication_endpoints[node] = validated
        return validated

    def quarantine_dir_of(self, node: str) -> Path:
        """Where ``node`` moves divergent files after a split brain:
        ``replication.quarantine_dir``, else ``<node_dir>/quarantine``."""
        configured = self.replication.quarantine_dir if self.replication else None
        return configured or self.node_dir(node) / "quarantine"

    def read_key(self) -> bytes | None:
        """The cluster key's bytes, exactly as stored; None when ``insecure`` is true.

        Reads ``cluster.key_file`` on every call. Raises ``ConfigError`` when it
        is missing, unreadable or shorter than 32 bytes.
        """
        if self.cluster.insecure:
            return None
        path = self.cluster.key_file
        where = f"{self._source_path or '<config>'}: cluster.key_file"
        if path is None:
            raise ConfigError([f"{where}: required unless insecure: true"])
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise ConfigError([f"{where}: cannot read {path}: {exc.strerror}"]) from exc
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError([f"{where}: {path} holds {len(key)} bytes, at least 32 are needed"])
        return key

    def canonical(self) -> dict[str, Any]:
        """The cluster-wide settings as plain JSON data, in a canonical order.

        Left out: everything about the key (path and content), and what is
        local to one machine (state directories, control listeners, the
        quarantine directory). Lists whose order means nothing (links,
        checkers, replicated directories) are sorted by name, and the profile
        is replaced by the timings it resolves to. The ``replication`` key is
        there only when the file has that section, so a cluster without
        replication keeps the fingerprint it had before replication existed.
        """
        cluster = self.cluster
        canonical: dict[str, Any] = {
            "version": FINGERPRINT_VERSION,
            "cluster": {
                "name": cluster.name,
                "insecure": cluster.insecure,
                "timing": self.timing.model_dump(mode="json"),
                "failback": cluster.failback,
                "preferred": cluster.preferred,
                "split_brain_winner": cluster.split_brain_winner,
                "arbitrator": cluster.arbitrator.canonical(),
                "autostart": cluster.autostart,
            },
            "links": _by_name(link.model_dump(mode="json") for link in self.links),
            "nodes": {
                node: {
                    link.name: self.endpoint(node, link.name).model_dump(mode="json")
                    for link in self.links
                }
                for node in self.nodes
            },
            # unset scripts left out: setting one is what changes the fingerprint
            "application": (
                self.application.model_dump(mode="json", exclude_none=True)
                if self.application
                else None
            ),
            "virtual_ips": sorted(
                (vip.model_dump(mode="json") for vip in self.addresses),
                key=lambda vip: str(vip["address"]),
            ),
            "checkers": _by_name(checker.model_dump(mode="json") for checker in self.checkers),
        }
        if self.replication is not None:
            canonical["replication"] = self._canonical_replication(self.replication)
        return canonical

    def _canonical_replication(self, replication: ReplicationSection) -> dict[str, Any]:
        shared = replication.model_dump(mode="json", exclude={"quarantine_dir", "directories"})
        return {
            **shared,
            "directories": _by_name(
                directory.model_dump(mode="json") for directory in replication.directories
            ),
            "endpoints": {
                node: self.replication_endpoint(node).model_dump(mode="json") for node in self.nodes
            },
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex) of ``canonical()`` as sorted, compact JSON.

        Equal on both nodes when they load the same settings, whatever the
        comments, key order or spelling of defaults; different as soon as a
        cluster-wide value differs.
        """
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def core_settings(self, node: str) -> Settings:
        """What the decision core needs to run as ``node``."""
        timing = self.timing
        cluster = self.cluster
        winner = cluster.split_brain_winner
        return Settings(
            name=node,
            peer=self.peer_of(node),
            links=tuple(link.name for link in self.links),
            fingerprint=self.fingerprint(),
            heartbeat_interval=timing.heartbeat_interval,
            link_timeout=timing.link_timeout,
            dead_timeout=timing.dead_timeout,
            startup_timeout=timing.startup_timeout,
            arbitrator=cluster.arbitrator.type != "none",
            # a ping witness grants to whoever reaches it: no record of the newest
            # generation vouches for a node's data when it decides without its peer
            arbitrator_records=cluster.arbitrator.type != "ping",
            lease_ttl=cluster.arbitrator.lease_ttl,
            replicated=self.replication is not None,
            failback=cluster.failback,
            preferred=cluster.preferred,
            split_brain_winner=None if winner == "auto" else winner,
            checkers=tuple(
                CheckerPolicy(checker.name, checker.when, checker.action)
                for checker in self.checkers
            ),
            **self._restart_budget(),
        )

    def _restart_budget(self) -> dict[str, Any]:
        app = self.application
        if app is None:
            return {}
        return {"max_restarts": app.max_restarts, "restart_window": app.restart_window}

    def resolve_local_node(self, explicit: str | None) -> str:
        """Which node this machine is: ``explicit`` if given, else the one named like the host.

        The hostname is compared case-insensitively, in full and up to its
        first dot. Raises ``UsageError`` naming the nodes when neither works.
        """
        if explicit is not None:
            self._node(explicit)
            return explicit
        hostname = socket.gethostname().lower()
        for candidate in (hostname, hostname.split(".", 1)[0]):
            if candidate in self.nodes:
                return candidate
        raise UsageError(
            f"cannot tell which node this machine is: hostname {hostname!r} is not a node "
            f"of cluster {self.cluster.name!r} (nodes: {', '.join(self.nodes)}); "
            "name the node explicitly (--node)"
        )


def _by_name(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dumped sections in name order (their order in the file means nothing)."""
    return sorted(items, key=lambda d: str(d["name"]))
