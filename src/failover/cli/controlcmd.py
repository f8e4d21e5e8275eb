"""``failover status|log|state`` and the admin commands, through the control API.

Every subcommand finds the daemon the same way: ``--socket PATH``, ``--tcp
HOST:PORT --token-file FILE [--ca-file CA]``, ``-c CONFIG [--node NAME]`` (the
node's ``control`` settings; ``--token-file`` and ``--ca-file`` override its
files), or the ``FAILOVER_SOCKET`` environment variable. Either token works:
the admin one for everything, the read-only one for status, log and state.

Exit codes: admin commands exit 0 when the core accepted the command, 1 when
it refused, 2 when the daemon cannot be reached. ``failover state`` exits 0
when the pair is protected, 1 when this node serves but the pair is degraded,
and a code per state when it does not serve (``NOT_SERVING_EXIT_CODES``), so
that scripts can branch on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from typing import Any

from failover.api.client import ControlClient, DaemonUnreachable
from failover.api.protocol import COMMANDS
from failover.api.schema import MAX_TRANSITIONS_LIMIT, VERIFY_TIMEOUT, read_token_file
from failover.errors import FailoverError, UsageError

SOCKET_ENV = "FAILOVER_SOCKET"

# 0 and 1 are the serving codes so that `[ $? -le 1 ]` means "serving".
# 2 is skipped on purpose: it is what every failover command (and argparse)
# returns for a usage error, which must never read as a state.
EXIT_PROTECTED = 0  # primary, the peer an alive secondary in sync, every link up
EXIT_DEGRADED = 1  # serving, but not protected (see ``protection``)
SERVING_STATES = ("primary", "alone")
NOT_SERVING_EXIT_CODES: dict[str, int] = {
    "secondary": 3,
    "resync": 4,
    "wait": 5,
    "stop": 6,
}
EXIT_UNREACHABLE = 7  # no daemon answers at the control address
EXIT_UNKNOWN = 8  # anything else: bad options or config, an unexpected answer

COMMAND_HELP: dict[str, str] = {
    "start": "start the module on this node (it then decides whether to serve)",
    "stop": "stop the module on this node (stops the application if it serves)",
    "prim": "serve now although this node's data is not known to be the newest (logged)",
    "primforce": "serve now even with data marked inconsistent (disaster recovery)",
    "second": "never serve alone: wait for the peer to serve, then follow it",
    "swap": "planned switchover: hand the service to the in-sync secondary",
    "fullsync": "resynchronise this node from the serving peer with a full copy",
}

# A query reads what the daemon holds and answers at once; a command may wait
# for the daemon's event loop (which bounds that wait at 10 s).
QUERY_TIMEOUT = 5.0
COMMAND_TIMEOUT = 15.0

STATUS_TRANSITIONS = 5
DEFAULT_LOG_LINES = 20


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connection = _connection_options()

    status = subparsers.add_parser(
        "status", parents=[connection], help="show this node's state, its peer and its links"
    )
    status.add_argument(
        "--json", action="store_true", help="print the status object as JSON (docs/api.md)"
    )
    status.set_defaults(handler=run_status)

    for name in COMMANDS:
        command = subparsers.add_parser(
            name, parents=[connection], help=COMMAND_HELP[name], description=COMMAND_HELP[name]
        )
        command.set_defaults(handler=run_command, control_command=name)

    bandwidth = subparsers.add_parser(
        "bandwidth",
        parents=[connection],
        help="set the resync bandwidth limit now (also during a resync)",
        description="Set the resync bandwidth limit of the running daemon, in bytes per "
        "second (suffixes k, M, G: powers of 1000); 0 removes the limit. Lasts until the "
        "daemon restarts (replication.bandwidth in the file is the value at start).",
    )
    bandwidth.add_argument("rate", type=_rate, help="e.g. 50M, 800k, 0")
    bandwidth.set_defaults(handler=run_bandwidth)

    verify = subparsers.add_parser(
        "verify",
        parents=[connection],
        help="compare both copies of the replicated directories by digest",
        description="Ask the primary's daemon to digest both copies (only digests cross "
        "the network) and list what differs. Exits 0 when identical, 1 when not.",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=run_verify)

    log = subparsers.add_parser(
        "log", parents=[connection], help="show the most recent state transitions"
    )
    log.add_argument(
        "-n",
        "--lines",
        type=_log_lines,
        default=DEFAULT_LOG_LINES,
        metavar="N",
        help=f"how many transitions (default {DEFAULT_LOG_LINES}, at most {MAX_TRANSITIONS_LIMIT})",
    )
    log.add_argument("--json", action="store_true", help="print the records as a JSON list")
    log.set_defaults(handler=run_log)

    state = subparsers.add_parser(
        "state",
        parents=[connection],
        help="print this node's state; the exit code tells it too (docs/api.md)",
        epilog=f"exit codes: {EXIT_PROTECTED} serving, protected; {EXIT_DEGRADED} serving, "
        "degraded (a link down, the peer absent or not in sync); "
        + ", ".join(f"{code} {name}" for name, code in NOT_SERVING_EXIT_CODES.items())
        + f"; {EXIT_UNREACHABLE} daemon unreachable, {EXIT_UNKNOWN} other error",
    )
    state.add_argument("-q", "--quiet", action="store_true", help="print nothing, only exit")
    state.set_defaults(handler=run_state)


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help=f"the control socket (or ${SOCKET_ENV})")
    where.add_argument("--tcp", metavar="HOST:PORT", help="the control API over TCP")
    where.add_argument(
        "-c", "--config", metavar="FILE", help="the cluster config: use this node's control setting"
    )
    parent.add_argument(
        "--token-file",
        metavar="FILE",
        help="bearer token for --tcp or -c (admin, or read-only for queries)",
    )
    parent.add_argument(
        "--ca-file",
        metavar="FILE",
        help="speak TLS to --tcp (or -c) and trust only a daemon certificate this CA signed",
    )
    parent.add_argument("--node", metavar="NAME", help="which node of --config (default: hostname)")
    parent.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"give up on the daemon after this long (default {QUERY_TIMEOUT:g}, "
        f"{COMMAND_TIMEOUT:g} for commands)",
    )
    return parent


def _log_lines(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_TRANSITIONS_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_TRANSITIONS_LIMIT}")
    return value


def client_from_args(args: argparse.Namespace, timeout: float = QUERY_TIMEOUT) -> ControlClient:
    """The client for the daemon the options (or ``$FAILOVER_SOCKET``) point at.

    ``timeout`` applies unless ``--timeout`` was given.
    """
    if args.timeout is not None:
        timeout = args.timeout
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.node is not None and args.config is None:
        raise UsageError("--node needs -c CONFIG")
    for option, given in (("--token-file", args.token_file), ("--ca-file", args.ca_file)):
        if given is not None and args.tcp is None and args.config is None:
            raise UsageError(f"{option} goes with --tcp or -c")
    if args.socket is not None:
        return ControlClient(unix_path=args.socket, timeout=timeout)
    if args.tcp is not None:
        if args.token_file is None:
            raise UsageError("--tcp needs --token-file (the daemon requires a bearer token)")
        token = read_token_file(args.token_file)
        return ControlClient(
            tcp=_host_port(args.tcp), token=token, timeout=timeout, ca_file=args.ca_file
        )
    if args.config is not None:
        return _client_from_config(args, timeout)
    env_socket = os.environ.get(SOCKET_ENV)
    if env_socket:
        return ControlClient(unix_path=env_socket, timeout=timeout)
    raise UsageError(
        f"where is the daemon? give --socket PATH, -c CONFIG or --tcp HOST:PORT, "
        f"or set {SOCKET_ENV}"
    )


def _client_from_config(args: argparse.Namespace, timeout: float) -> ControlClient:
    """The node's control listener from the file. Over TCP the token is
    ``--token-file``, else its ``token_file``, else (this user may not read
    that one: a monitoring user) its ``read_token_file``; with ``tls`` the CA is
    ``--ca-file``, else ``tls.ca_file``, else the node's own certificate
    (pinned: this runs on the node itself)."""
    from failover.config import load_config  # noqa: PLC0415 - only this path needs pydantic

    config = load_config(args.config)
    control = config.control_of(config.resolve_local_node(args.node))
    tcp = control.tcp
    if tcp is None:
        if args.token_file is not None or args.ca_file is not None:
            raise UsageError("--token-file and --ca-file are for a control listener on TCP")
        assert control.socket is not None  # the config guarantees one of the two
        return ControlClient(unix_path=str(control.socket), timeout=timeout)
    token_file = args.token_file or tcp.token_file
    if args.token_file is None and tcp.read_token_file and not os.access(token_file, os.R_OK):
        # a monitoring user, who may read only the read-only token: queries work
        token_file = tcp.read_token_file
    token = read_token_file(token_file)
    ca_file, pinned = args.ca_file, False
    if ca_file is None and tcp.tls is not None:
        ca_file = str(tcp.tls.ca_file or tcp.tls.cert_file)
        pinned = tcp.tls.ca_file is None
    address = (tcp.address, tcp.port)
    return ControlClient(tcp=address, token=token, timeout=timeout, ca_file=ca_file, pinned=pinned)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--tcp wants HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


# --- handlers ---------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    status = client.get_status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    transitions = client.get_transitions(STATUS_TRANSITIONS)
    print(render_status(status, transitions))
    return 0


def run_command(args: argparse.Namespace) -> int:
    name: str = args.control_command
    result = client_from_args(args, COMMAND_TIMEOUT).command(name)
    verdict = "accepted" if result.accepted else "refused"
    detail = f": {result.message}" if result.message else ""
    line = f"{name} {verdict}{detail} (state: {result.state})"
    print(line, file=sys.stdout if result.accepted else sys.stderr)
    return 0 if result.accepted else 1


_RATE_UNITS = {"": 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3}


def _rate(text: str) -> int:
    number, unit = text[:-1], text[-1:]
    if unit.isdigit():
        number, unit = text, ""
    if unit not in _RATE_UNITS or not number.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: a whole number of bytes/s, optionally with k, M or G"
        )
    return int(number) * _RATE_UNITS[unit]


def run_bandwidth(args: argparse.Namespace) -> int:
    result = client_from_args(args, COMMAND_TIMEOUT).set_bandwidth(args.rate)
    verdict = "accepted" if result.accepted else "refused"
    print(
        f"bandwidth {verdict}: {result.message}", file=sys.stdout if result.accepted else sys.stderr
    )
    return 0 if result.accepted else 1


def run_verify(args: argparse.Namespace) -> int:
    report = client_from_args(args, VERIFY_TIMEOUT).verify()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report.get("text") or ("identical" if report["in_sync"] else "differences found"))
    return 0 if report["in_sync"] else 1


def run_log(args: argparse.Namespace) -> int:
    records = client_from_args(args).get_transitions(args.lines)
    if args.json:
        print(json.dumps(records, indent=2))
    elif not records:
        print("no transitions yet")
    else:
        for record in records:
            print(render_transition(record))
    return 0


def run_state(args: argparse.Namespace) -> int:
    """Exit with the node's code; never exit 0-6 for an error (see ``EXIT_PROTECTED``)."""
    quiet: bool = args.quiet
    try:
        status = client_from_args(args).get_status()
    except DaemonUnreachable as exc:
        return _state_failure(quiet, str(exc), EXIT_UNREACHABLE)
    except FailoverError as exc:
        return _state_failure(quiet, str(exc), EXIT_UNKNOWN)
    except Exception as exc:
        # An unexpected failure must not surface as Python's exit code 1,
        # which a script would read as "serving, degraded".
        return _state_failure(quiet, f"internal error: {exc!r}", EXIT_UNKNOWN)
    state = status.get("state")
    if state in NOT_SERVING_EXIT_CODES:
        code = NOT_SERVING_EXIT_CODES[state]
    elif state in SERVING_STATES:
        problems = protection(status)
        code = EXIT_DEGRADED if problems else EXIT_PROTECTED
        if problems and not quiet:
            print(f"failover state: degraded: {'; '.join(problems)}", file=sys.stderr)
    else:
        return _state_failure(quiet, f"the daemon reports an unknown state {state!r}", EXIT_UNKNOWN)
    if not quiet:
        print(state)
    return code


def protection(status: dict[str, Any]) -> list[str]:
    """Why a serving node's pair is not protected (empty: protected).

    Protected: the daemon says ``in_sync`` (this node is ``primary``, its peer
    an alive ``secondary``, replication runs and its channel answers), and
    every link is up (a pair with one link left is one fault away from a split
    brain). Anything the status does not say counts as not protected."""
    problems: list[str] = []
    links = status.get("links")
    if not isinstance(links, list) or not links:
        problems.append("the daemon shows no link")
    else:
        problems.extend(
            f"link {link.get('name', '?')} down"
            for link in links
            if not (isinstance(link, dict) and link.get("up") is True)
        )
    if status.get("in_sync") is not True:
        problems.append(str(status.get("in_sync_reason") or "the peer is not in sync"))
    return problems


def _state_failure(quiet: bool, message: str, code: int) -> int:
    if not quiet:
        print(f"failover state: {message}", file=sys.stderr)
    return code


# --- rendering --------------------------------------------------------------------------


def render_status(status: dict[str, Any], transitions: list[dict[str, Any]]) -> str:
    """The human view of a status object (schema 2) and a few recent transitions."""
    lines = [
        f"{status.get('node', '?')} (cluster {status.get('cluster', '?')}): {_state_text(status)}"
    ]
    if status.get("reason"):
        lines.append(f"  reason      {status['reason']}")
    if status.get("state") in SERVING_STATES:
        problems = protection(status)
        verdict = f"DEGRADED: {'; '.join(problems)}" if problems else "protected"
        lines.append(f"  protection  {verdict}")
    degraded = status.get("degraded")
    if isinstance(degraded, dict):
        lines.append(
            f"  DEGRADED    {degraded.get('reason', '?')}; serving on, deciding nothing for "
            f"{_duration(degraded.get('since_ago') or 0)} ({degraded.get('attempts', '?')} "
            f"attempts, {degraded.get('held_events', 0)} events held)"
        )
    consistent = "consistent" if status.get("consistent", True) else "INCONSISTENT"
    lines.append(f"  generation  {_generation(status.get('generation'))}, data {consistent}")
    if isinstance(status.get("uptime"), int | float):
        lines.append(f"  uptime      {_duration(status['uptime'])}")
    lines.append(_peer_line(status.get("peer")))
    links = status.get("links") or []
    if links:
        lines.append("links:")
        width = max(len(str(link.get("name", ""))) for link in links)
        kind_width = max(len(str(link.get("transport", ""))) for link in links)
        for link in links:
            up = "up" if link.get("up") else "DOWN"
            lines.append(
                f"  {link.get('name', '?'):<{width}}  {link.get('transport', ''):<{kind_width}}"
                f"  {up:<4}  last seen {_ago(link.get('last_seen_ago'))}"
            )
    frames = status.get("frames")
    if isinstance(frames, dict):
        dropped = frames.get("dropped") or {}
        total = sum(n for n in dropped.values() if isinstance(n, int))
        detail = ", ".join(f"{why} {n}" for why, n in sorted(dropped.items()) if n)
        lines.append(
            f"frames: {frames.get('received', 0)} received, {total} dropped"
            + (f" ({detail})" if detail else "")
        )
    replication = status.get("replication")
    if isinstance(replication, dict):
        lines.extend(_replication_lines(replication))
    if transitions:
        lines.append("recent transitions:")
        lines.extend(f"  {render_transition(record)}" for record in transitions)
    return "\n".join(lines)


def _replication_lines(data: dict[str, Any]) -> list[str]:
    directories = data.get("directories") or {}
    listed = ", ".join(f"{name} ({path})" for name, path in directories.items())
    state = "replicating" if data.get("replicating") else "not replicating"
    lines = [
        "replication:",
        f"  directories {listed or 'none'}, {data.get('mode', '?')}",
        f"  {state} (ack {data.get('ack', '?')})",
    ]
    if data.get("channel_problem"):
        lines.append(f"  CHANNEL QUIET: {data['channel_problem']}")
    sender = data.get("sender")
    if isinstance(sender, dict) and data.get("replicating"):
        latency = sender.get("last_ack_latency")
        shown = "-" if not isinstance(latency, int | float) else f"{latency * 1000:.2f} ms"
        lines.append(
            f"  sent {sender.get('ops_sent', 0)} entries, {sender.get('bytes_sent', 0)} bytes; "
            f"in flight {sender.get('in_flight_bytes', 0)} bytes; last ack {shown}"
        )
    resync = data.get("resync")
    if isinstance(resync, dict):
        done, total = resync.get("bytes_done", 0), resync.get("bytes_total", 0)
        percent = 100.0 * done / total if isinstance(total, int) and total else 100.0
        eta = resync.get("eta")
        lines.append(
            f"  resync {resync.get('state', '?')}{' (full)' if resync.get('full') else ''}: "
            f"{percent:.0f}% ({done} of {total} bytes, {resync.get('items_done', 0)} items), "
            f"{float(resync.get('rate') or 0) / 1e6:.1f} MB/s, "
            f"eta {_duration(eta) if isinstance(eta, int | float) else '-'}"
            + (f"; error: {resync['error']}" if resync.get("error") else "")
        )
    verified = data.get("verified")
    if isinstance(verified, dict):
        verdict = (
            "both copies identical"
            if verified.get("in_sync")
            else f"{verified.get('differences', '?')} DIFFERENCES: not in sync"
        )
        lines.append(f"  last verify {_timestamp(verified.get('at'))}: {verdict}")
    if data.get("resync_wanted"):
        lines.append("  waiting for the peer to resynchronise this node")
    limit = data.get("bandwidth")
    lines.append(f"  resync bandwidth limit {'none' if not limit else f'{limit} bytes/s'}")
    tracked = data.get("tracked")
    if isinstance(tracked, dict) and (tracked.get("files") or tracked.get("names")):
        lines.append(
            f"  tracked since {tracked.get('since') or '-'}: {tracked.get('files', 0)} files "
            f"with changed zones, {tracked.get('names', 0)} names, "
            f"{tracked.get('meta', 0)} metadata"
        )
    return lines


def render_transition(record: dict[str, Any]) -> str:
    """One readable line: time, from -> to, event, reason."""
    when = _timestamp(record.get("time", record.get("timestamp")))
    change = f"{record.get('from', '?')} -> {record.get('to', '?')}"
    line = f"{when}  {change}  {record.get('event', '?')}"
    if record.get("reason"):
        line += f"  {record['reason']}"
    if record.get("forced"):
        line += "  [forced by the operator]"
    return line


def _state_text(node: dict[str, Any]) -> str:
    state = str(node.get("state", "?"))
    substatus = node.get("substatus")
    return f"{state} ({substatus})" if substatus else state


def _peer_line(peer: Any) -> str:
    if not isinstance(peer, dict):
        return "peer: never seen"
    seen = f"last seen {_ago(peer.get('last_seen_ago'))}"
    known = f"{_state_text(peer)}, generation {_generation(peer.get('generation'))}"
    if peer.get("alive"):
        return f"peer {peer.get('node', '?')}: {known}, alive, {seen}"
    return f"peer {peer.get('node', '?')}: LOST, {seen} (was {known})"


def _generation(value: Any) -> str:
    if isinstance(value, dict) and "counter" in value:
        origin = value.get("origin")
        return f"{value['counter']}:{origin}" if origin else str(value["counter"])
    return "?" if value is None else str(value)


def _ago(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "never"
    return f"{_duration(seconds)} ago"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def _timestamp(value: Any) -> str:
    """A local date and time from epoch seconds or an ISO 8601 string."""
    moment: datetime | None = None
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        if moment.tzinfo is not None:
            moment = moment.astimezone()
    if moment is None:
        return "?"
    return moment.strftime("%Y-%m-%d %H:%M:%S")
