"""``failover init``: from nothing to a two-node cluster file and a fresh key.

It asks only for what it cannot guess: the cluster's name, the two nodes' names
and addresses (one network, or two: ``--node NAME=ADDR[,ADDR]``), the virtual IP
and its interface (the interface is guessed from this machine's addresses), the
replicated directories and the application's scripts or command. Everything
else takes the project's defaults: the ``default`` timing profile, a UDP link
(``lan``) over each node's first address and a TCP link (``backup``) over its
second (or its first again), the replication channel over the second.

With ``--non-interactive`` nothing is asked: a missing required answer is an
error, a missing optional one is left out. Otherwise each answer not given as a
flag is asked for on the terminal (a wrong one is asked again).

The invariants:

- nothing is written unless every answer is valid: the file is first built and
  loaded by the project's own loader beside a throwaway key, and each problem
  it finds is reported as one line naming the answer (``--vip: ...``);
- an existing file or key is never replaced without ``--force``;
- the key is 32 random bytes in a file of mode 0600, written atomically;
- what was written is then checked as ``failover check-config`` does, and the
  command prints what to copy to the other node.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import secrets
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any, TypeVar

from failover.errors import ConfigError, UsageError

DEFAULT_CONFIG = Path("/etc/failover/cluster.yaml")
KEY_NAME = "cluster.key"
KEY_BYTES = 32
LAN_LINK, BACKUP_LINK = "lan", "backup"
LAN_PORT, BACKUP_PORT, REPLICATION_PORT = 7400, 7401, 7410
DOCS = "docs/configuration.md"

IpAddress = IPv4Address | IPv6Address
IpInterface = IPv4Interface | IPv6Interface
T = TypeVar("T")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "init",
        help="write a commented two-node cluster file and a fresh key",
        description=(
            "Write a commented two-node cluster configuration and a fresh cluster key, "
            "asking only for what cannot be guessed (every answer can be given as a flag), "
            "check them as check-config does, and print what to copy to the other node."
        ),
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the configuration file to write (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        type=Path,
        help=f"the key file to write (default: {KEY_NAME} beside the configuration)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing file or key")
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="ask nothing: a missing required answer is an error, a missing optional one "
        "is left out",
    )
    answers = parser.add_argument_group("answers (asked for when not given)")
    answers.add_argument("--cluster", metavar="NAME", help="the cluster's name (a-z, 0-9, -)")
    answers.add_argument(
        "--node",
        metavar="NAME=ADDR[,ADDR]",
        action="append",
        help=(
            "a node, twice: its name and its address on the first network (the UDP link "
            f"{LAN_LINK!r}), then optionally on a second one (the TCP link {BACKUP_LINK!r} "
            "and the replication channel; default: the first address)"
        ),
    )
    answers.add_argument(
        "--vip", metavar="ADDRESS[/PREFIX]", help="the virtual IP that follows the serving node"
    )
    answers.add_argument(
        "--vip-interface",
        metavar="NAME",
        help="its network interface (default: guessed from this machine's addresses)",
    )
    answers.add_argument(
        "--dir",
        metavar="PATH",
        action="append",
        help="a directory replicated to the other node (absolute path; repeat for several)",
    )
    answers.add_argument("--start", metavar="COMMAND", help="the application's start script")
    answers.add_argument("--stop", metavar="COMMAND", help="the application's stop script")
    answers.add_argument(
        "--command",
        dest="app_command",  # not "command": the subcommand's name lives there
        metavar="COMMAND",
        help="the application's foreground process, supervised by the daemon",
    )
    parser.set_defaults(handler=init)


# --- the answers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    lan: IpAddress
    backup: IpAddress


@dataclass(frozen=True)
class Answers:
    cluster: str
    nodes: tuple[Node, Node]
    vip: IpInterface | None = None
    vip_interface: str | None = None
    directories: tuple[Path, ...] = ()
    start: str | None = None
    stop: str | None = None
    command: str | None = None


def local_addresses() -> list[tuple[str, IpInterface]]:
    """(interface, address with prefix) of every address of this machine, through
    netlink; empty when netlink cannot be read (nothing is then guessed)."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - only init guesses interfaces
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415

    found: list[tuple[str, IpInterface]] = []
    try:
        with IPRoute() as ipr:
            names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
            for message in ipr.get_addr():
                address = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
                name = names.get(message["index"])
                if address and name:
                    found.append(
                        (name, ipaddress.ip_interface(f"{address}/{message['prefixlen']}"))
                    )
    except (OSError, NetlinkError, ValueError):
        return []
    return found


class Asker:
    """Gets each answer from its flag, else from the terminal (unless non-interactive)."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def get(
        self,
        flag: str,
        given: str | None,
        parse: Callable[[str], T],
        question: str,
        *,
        default: str | None = None,
        required: bool = True,
    ) -> T | None:
        """The parsed answer; None for an optional one left out. A flag's value that
        does not parse is an error naming the flag; a typed one is asked again."""
        if given is not None:
            return _parsed(flag, given, parse)
        if not self.interactive:
            if default is not None:
                return _parsed(flag, default, parse)
            if required:
                raise UsageError(f"{flag}: required (give it, or leave out --non-interactive)")
            return None
        hint = f" [{default}]" if default else ("" if required else " (Enter: none)")
        while True:
            print(f"{question}{hint}: ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                raise UsageError(f"{flag}: no answer (the input ended); give it as a flag")
            text = line.strip() or default
            if not text:
                if not required:
                    return None
                print("  an answer is needed", file=sys.stderr)
                continue
            try:
                return parse(text)
            except ValueError as exc:
                print(f"  {exc}", file=sys.stderr)


def _parsed(flag: str, text: str, parse: Callable[[str], T]) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _name(text: str) -> str:
    from failover.config.models import check_name  # noqa: PLC0415

    return check_name(text)


def _address(text: str) -> IpAddress:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{text} is not a unicast address of a node")
    return address


def _node(text: str) -> tuple[str, IpAddress, IpAddress]:
    name, sep, addresses = text.partition("=")
    if not sep or not addresses:
        raise ValueError(f"{text!r} must be NAME=ADDRESS or NAME=ADDRESS,ADDRESS")
    parts = addresses.split(",")
    if len(parts) > 2:
        raise ValueError(f"{text!r} has {len(parts)} addresses: one or two (one per network)")
    lan = _address(parts[0].strip())
    backup = _address(parts[1].strip()) if len(parts) == 2 else lan
    return _name(name.strip()), lan, backup


def _field_check(model: str, field: str) -> Callable[[object], Any]:
    """Validates one value as the configuration model's field does; ``ValueError``
    with the model's own reason when it does not."""
    from typing import Annotated  # noqa: PLC0415

    from pydantic import TypeAdapter, ValidationError  # noqa: PLC0415

    from failover.config import models  # noqa: PLC0415

    info = getattr(models, model).model_fields[field]
    annotation: Any = Annotated[info.annotation, *info.metadata]
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)

    def check(value: object) -> Any:
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            reason = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise ValueError(reason) from None

    return check


def _directory(text: str) -> Path:
    path: Path = _field_check("ReplicatedDirectory", "path")(text)
    return path


def _interface(text: str) -> str:
    name: str = _field_check("VirtualIpConfig", "interface")(text)
    return name


def _command(text: str) -> str:
    return text


def _vip_text(text: str) -> tuple[IpInterface, bool]:
    """The address, and whether it was given with its prefix length."""
    try:
        return ipaddress.ip_interface(text), "/" in text
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (with an optional /prefix)") from None


def guess_interface(
    vip: IpInterface, prefixed: bool, nodes: Sequence[Node], here: list[tuple[str, IpInterface]]
) -> tuple[IpInterface, str, str] | None:
    """(the address, with the prefix of its network here when ``prefixed`` is false;
    the interface; why) for ``vip`` from this machine's addresses ``here``: the
    interface whose network holds it (the most specific), else the one that holds
    a node's own first address. None when neither is on this machine."""
    holding = [
        (address, name)
        for name, address in here
        if address.version == vip.version and vip.ip in address.network and not address.is_loopback
    ]
    if holding:
        address, name = max(holding, key=lambda item: item[0].network.prefixlen)
        if not prefixed:
            vip = ipaddress.ip_interface(f"{vip.ip}/{address.network.prefixlen}")
        return vip, name, f"it holds {address}, in the same network"
    for node in nodes:
        for name, address in here:
            if address.ip == node.lan and not address.is_loopback:
                return vip, name, f"it holds {node.name}'s address {node.lan}"
    return None


def gather(args: argparse.Namespace, asker: Asker) -> tuple[Answers, list[str]]:
    """Every answer, from the flags or the terminal; and notes on what was guessed."""
    notes: list[str] = []
    cluster = asker.get("--cluster", args.cluster, _name, "Cluster name (a-z, 0-9, -)")
    assert cluster is not None
    given_nodes: list[str] = list(args.node or [])
    if len(given_nodes) not in (0, 2):
        raise UsageError(
            f"--node: given {len(given_nodes)} times; a cluster has two nodes: "
            "--node NAME=ADDR[,ADDR] --node NAME=ADDR[,ADDR]"
        )
    nodes: list[Node] = []
    for i in range(2):
        spec = given_nodes[i] if given_nodes else None
        nodes.append(_ask_node(asker, i, spec, nodes))
    first, second = nodes
    vip_given = asker.get(
        "--vip",
        args.vip,
        _vip_text,
        "Virtual IP that follows the serving node, ADDRESS[/PREFIX]",
        required=False,
    )
    vip = interface = None
    if vip_given is None and args.vip_interface is not None:
        raise UsageError("--vip-interface: given without a virtual IP (--vip)")
    if vip_given is not None:
        vip, interface = _ask_vip_interface(asker, args, *vip_given, (first, second), notes)
    directories = _ask_directories(asker, args.dir)
    start = asker.get(
        "--start",
        args.start,
        _command,
        "Application start script",
        required=False,
    )
    stop = command = None
    if start is not None or args.stop is not None:
        stop = asker.get("--stop", args.stop, _command, "Application stop script", required=False)
    if args.app_command is not None or start is None:
        command = asker.get(
            "--command",
            args.app_command,
            _command,
            "Application foreground command, supervised by the daemon",
            required=False,
        )
    answers = Answers(
        cluster=cluster,
        nodes=(first, second),
        vip=vip,
        vip_interface=interface,
        directories=directories,
        start=start,
        stop=stop,
        command=command,
    )
    return answers, notes


def _ask_node(asker: Asker, i: int, spec: str | None, before: list[Node]) -> Node:
    ordinal = ("First", "Second")[i]
    if spec is not None:
        name, lan, backup = _parsed(f"--node {spec}", spec, _node)
    else:
        others = {node.name for node in before}
        taken = {address for node in before for address in (node.lan, node.backup)}

        def new_name(text: str) -> str:
            if _name(text) in others:
                raise ValueError(f"{text!r} is the other node's name: give another")
            return text

        def new_address(text: str) -> IpAddress:
            if _address(text) in taken:
                raise ValueError(f"{text} is the other node's address: give this node's own")
            return _address(text)

        got = asker.get(
            "--node", None, new_name, f"{ordinal} node's name", default=_hostname_name(i)
        )
        assert got is not None
        name = got
        lan_got = asker.get(
            "--node",
            None,
            new_address,
            f"{name}'s address on the first network (link {LAN_LINK})",
            default=_only_address(i),
        )
        assert lan_got is not None
        lan = lan_got
        backup = (
            asker.get(
                "--node",
                None,
                new_address,
                f"{name}'s address on a second network (link {BACKUP_LINK})",
                default=str(lan),
            )
            or lan
        )
    for other in before:
        if other.name == name:
            raise UsageError(f"--node {name}: both nodes are named {name!r}: give two names")
        for link, mine, theirs in ((LAN_LINK, lan, other.lan), (BACKUP_LINK, backup, other.backup)):
            if mine == theirs:
                raise UsageError(
                    f"--node {name}: {mine} is also {other.name}'s address on link {link}: "
                    "each node needs its own"
                )
            if mine.version != theirs.version:
                raise UsageError(
                    f"--node {name}: {mine} is IPv{mine.version} but {other.name}'s address on "
                    f"link {link} is IPv{theirs.version}: the two ends of a link must match"
                )
    return Node(name, lan, backup)


def _hostname_name(i: int) -> str | None:
    """The first node's default name: this machine's, if it is a valid name."""
    if i != 0:
        return None
    short = socket.gethostname().lower().split(".", 1)[0]
    try:
        return _name(short)
    except ValueError:
        return None


def _only_address(i: int) -> str | None:
    """The first node's default address: this machine's only global one, if it has one."""
    if i != 0:
        return None
    found = {
        address.ip
        for _, address in local_addresses()
        if address.ip.is_global or address.ip.is_private
        if not (address.ip.is_loopback or address.ip.is_link_local)
    }
    return str(found.pop()) if len(found) == 1 else None


def _ask_vip_interface(
    asker: Asker,
    args: argparse.Namespace,
    vip: IpInterface,
    prefixed: bool,
    nodes: Sequence[Node],
    notes: list[str],
) -> tuple[IpInterface, str]:
    guessed = None
    if not args.vip_interface:
        guessed = guess_interface(vip, prefixed, nodes, local_addresses())
    default = why = None
    if guessed is not None:
        vip, default, why = guessed
    interface = asker.get(
        "--vip-interface",
        args.vip_interface,
        _interface,
        f"Network interface of {vip} (the same name on both nodes)",
        default=default,
        required=False,
    )
    if interface is not None and interface == default:
        notes.append(f"virtual IP {vip} on interface {interface} ({why} on this machine)")
    if interface is None:
        raise UsageError(
            f"--vip-interface: cannot guess the interface of {vip.ip} (no interface of this "
            "machine is in its network); give --vip-interface"
        )
    return vip, interface


def _ask_directories(asker: Asker, given: list[str] | None) -> tuple[Path, ...]:
    if given is not None:
        return tuple(_parsed("--dir", text, _directory) for text in given)
    found: list[Path] = []
    while asker.interactive:
        path = asker.get(
            "--dir",
            None,
            _directory,
            "Directory replicated to the other node" + (" (another one)" if found else ""),
            required=False,
        )
        if path is None:
            break
        found.append(path)
    return tuple(found)


# --- the file -------------------------------------------------------------------------


def _scalar(value: object) -> str:
    """``value`` as a YAML scalar, quoted by the YAML library when it has to be."""
    import yaml  # noqa: PLC0415

    text: str = yaml.safe_dump(value, default_flow_style=True, width=1 << 20)
    return text.removesuffix("\n...\n").rstrip("\n")


def directory_names(paths: Sequence[Path]) -> list[str]:
    """A unique configuration name for each replicated directory, from its last part."""
    names: list[str] = []
    for path in paths:
        base = re.sub(r"[^a-z0-9]+", "-", path.name.lower()).strip("-") or "data"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def render(answers: Answers, key_file: str) -> str:
    """The commented configuration file for ``answers``, its key at ``key_file``."""
    first, second = answers.nodes
    lines = [
        f"# The failover cluster {answers.cluster}: the nodes {first.name} and {second.name}.",
        "# Written by `failover init`. The same file goes on both nodes; each finds its",
        "# own section by its hostname (or by --node). Every key is described in",
        f"# {DOCS}; check the file on each node with",
        f"#   failover check-config FILE --node {first.name}   (and --node {second.name})",
        "",
        "# cluster: the settings both nodes share (docs/configuration.md, `cluster`).",
        "cluster:",
        f"  name: {_scalar(answers.cluster)}",
        "  # The key authenticates every heartbeat: the same file, mode 600, on both nodes.",
        f"  key_file: {_scalar(key_file)}",
        "  # Each node keeps its metadata and control socket in <state_dir>/<node>/.",
        "  state_dir: /var/lib/failover",
        "  # Timings: heartbeats every 0.2 s, the peer is lost after 2 s of silence on",
        "  # every link (docs/configuration.md, `Profiles`).",
        "  profile: default",
        "  # A node that comes back stays secondary: the service moves on a failure or a swap.",
        "  failback: none",
        "",
        "# links: the heartbeat paths. The peer is declared lost only when every link is",
        "# silent, so a second network keeps one failure from looking like a dead peer",
        "# (docs/configuration.md, `links`).",
        "links:",
        f"  - name: {LAN_LINK}",
        "    transport: udp",
        f"  - name: {BACKUP_LINK}",
        "    transport: tcp",
        "",
        "# nodes: each node's own end of every link (docs/configuration.md, `nodes`).",
        "nodes:",
    ]
    for node in answers.nodes:
        lines += [
            f"  {node.name}:",
            "    links:",
            f"      {LAN_LINK}: {{address: {_scalar(str(node.lan))}, port: {LAN_PORT}}}",
            f"      {BACKUP_LINK}: {{address: {_scalar(str(node.backup))}, port: {BACKUP_PORT}}}",
        ]
        if answers.directories:
            lines.append(
                f"    replication: {{address: {_scalar(str(node.backup))}, "
                f"port: {REPLICATION_PORT}}}"
            )
    lines.append("")
    lines += _replication(answers)
    lines += _application(answers)
    lines += _virtual_ip(answers)
    lines += [
        "# checkers: probes of what the service needs (a process, a port, a gateway);",
        "# none yet (docs/configuration.md, `checkers`).",
    ]
    return "\n".join(lines) + "\n"


def _replication(answers: Answers) -> list[str]:
    if not answers.directories:
        return [
            "# replication: none. To mirror directories to the other node, add a",
            "# replication section (docs/configuration.md, `replication`).",
            "",
        ]
    lines = [
        "# replication: these directories are mirrored synchronously to the other node",
        "# (the same absolute path on both); an fsync returns once the peer has written",
        "# the change (docs/configuration.md, `replication`).",
        "replication:",
        "  ack: written",
        "  directories:",
    ]
    for name, path in zip(directory_names(answers.directories), answers.directories, strict=True):
        lines += [f"    - name: {name}", f"      path: {_scalar(str(path))}"]
    return [*lines, ""]


def _application(answers: Answers) -> list[str]:
    scripts = [
        (key, value)
        for key, value in (
            ("start", answers.start),
            ("stop", answers.stop),
            ("command", answers.command),
        )
        if value is not None
    ]
    if not scripts:
        return [
            "# application: none. Add its start and stop scripts, or its foreground",
            "# command (docs/configuration.md, `application`).",
            "",
        ]
    return [
        "# application: run on the serving node only: start after the virtual IP is up,",
        "# command kept running by the daemon, stop before the IP is released",
        "# (docs/configuration.md, `application`).",
        "application:",
        *(f"  {key}: {_scalar(value)}" for key, value in scripts),
        "",
    ]


def _virtual_ip(answers: Answers) -> list[str]:
    if answers.vip is None:
        return [
            "# virtual_ip: none. Add one for an address that follows the serving node",
            "# (docs/configuration.md, `virtual_ip`).",
            "",
        ]
    return [
        "# virtual_ip: the address clients use; it follows the serving node. The",
        "# interface must have this name on both nodes (docs/configuration.md, `virtual_ip`).",
        "virtual_ip:",
        f"  address: {_scalar(str(answers.vip))}",
        f"  interface: {_scalar(answers.vip_interface)}",
        "",
    ]


# --- checking the answers with the loader ---------------------------------------------


def answer_of(key: str, answers: Answers) -> str:
    """The flag (and value) that set the configuration key ``key``."""
    parts = key.split(".")
    if key.startswith("cluster.name"):
        return "--cluster"
    if parts[0] == "nodes":
        return f"--node {parts[1]}" if len(parts) > 1 else "--node"
    if key.startswith("virtual_ip.interface"):
        return "--vip-interface"
    if parts[0] == "virtual_ip":
        return "--vip"
    match = re.match(r"replication\.directories\[(\d+)\]", key)
    if match and int(match.group(1)) < len(answers.directories):
        return f"--dir {answers.directories[int(match.group(1))]}"
    if parts[0] == "replication":
        return "--dir"
    if parts[0] == "application" and len(parts) > 1:
        return f"--{parts[1]}"
    return key


def check_answers(answers: Answers) -> None:
    """Build the file in a throwaway directory beside a throwaway key and load it:
    ``UsageError`` with one line per answer the loader finds fault with."""
    from failover.config import load_config  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="failover-init-") as scratch:
        key = Path(scratch, KEY_NAME)
        _write_private(key, secrets.token_bytes(KEY_BYTES))
        path = Path(scratch, "cluster.yaml")
        path.write_text(render(answers, str(key)), encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as exc:
            raise UsageError(_blame(exc.problems, str(path), answers)) from None


def _blame(problems: Sequence[str], shown: str, answers: Answers) -> str:
    lines: dict[str, str] = {}
    for problem in problems:
        # "<file>:<line>: <key>: <reason>"
        _, _, rest = problem.removeprefix(f"{shown}:").partition(": ")
        key, _, reason = rest.partition(": ")
        lines.setdefault(answer_of(key, answers), reason)  # one line per answer
    return "\n".join(f"{answer}: {reason}" for answer, reason in lines.items())


# --- writing --------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    from failover.fsutil import write_atomic  # noqa: PLC0415

    write_atomic(path, data)  # a temporary file of mode 0600, renamed into place
    path.chmod(0o600)


def _key_reference(config: Path, key: Path) -> str:
    """``key`` as the file names it: relative when beside it (as the loader reads it)."""
    return key.name if key.parent == config.parent else str(key)


def init(args: argparse.Namespace) -> int:
    """Gather the answers, write the key and the file, check them; the exit code."""
    from failover.fsutil import describe_error, write_atomic  # noqa: PLC0415

    config_path: Path = args.output.absolute()
    key_path: Path = (args.key_file or config_path.with_name(KEY_NAME)).absolute()
    if key_path == config_path:
        raise UsageError("--key-file: the key and the configuration must be two files")
    if not args.force:
        for what, path in (("the configuration", config_path), ("the key", key_path)):
            if path.exists():
                raise UsageError(
                    f"{path} exists ({what}): not overwritten; give --force to replace it"
                )
    answers, notes = gather(args, Asker(interactive=not args.non_interactive))
    check_answers(answers)
    text = render(answers, _key_reference(config_path, key_path))
    new_key = not key_path.exists()
    try:
        _write_private(key_path, secrets.token_bytes(KEY_BYTES))
        try:
            write_atomic(config_path, text.encode("utf-8"))
            config_path.chmod(0o644)  # no secret in it: the key is apart
        except OSError:
            if new_key:  # no key left behind without the file that names it
                key_path.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {describe_error(exc)}") from None
    print(f"wrote {config_path} and its key {key_path} (mode 600)")
    for note in notes:
        print(f"guessed: {note}")
    return _check_written(config_path, key_path, answers)


def _check_written(config_path: Path, key_path: Path, answers: Answers) -> int:
    """Check the written file as ``check-config`` does, then say what to copy where."""
    from failover.cli.configcmd import check_config  # noqa: PLC0415
    from failover.config import load_config  # noqa: PLC0415

    code = check_config(argparse.Namespace(file=str(config_path), node=None))
    if code != 0:
        return code
    here = _this_node(answers)
    if here is not None:
        # what check-config --node adds: this machine's own paths (a replicated
        # directory not made yet, a script not installed yet): to do, not wrong
        try:
            load_config(config_path, local_node=here.name)
        except ConfigError as exc:
            print(f"\nto do on this machine before {here.name} starts:")
            for problem in exc.problems:
                print(f"  {problem}")
    others = [node for node in answers.nodes if node is not here]
    where = others[0].name if len(others) == 1 else "the other node"
    target = f"root@{others[0].lan}" if len(others) == 1 else "root@OTHER-NODE"
    paths = sorted({config_path, key_path})
    print(
        f"\nOn {where}, put the same files at the same paths, the key readable by root "
        "only (scp -p keeps its mode 600):"
    )
    print(f"  ssh {target} mkdir -p {' '.join(sorted({str(p.parent) for p in paths}))}")
    for path in paths:
        print(f"  scp -p {path} {target}:{path}")
    print("then check each node on its own machine:")
    for node in answers.nodes:
        print(f"  failover check-config {config_path} --node {node.name}")
    return 0


def _this_node(answers: Answers) -> Node | None:
    """The node this machine is: named like the host, else holding a node's address."""
    hostname = socket.gethostname().lower()
    for node in answers.nodes:
        if node.name in (hostname, hostname.split(".", 1)[0]):
            return node
    mine = {address.ip for _, address in local_addresses()}
    holding = [node for node in answers.nodes if {node.lan, node.backup} & mine]
    return holding[0] if len(holding) == 1 else None
