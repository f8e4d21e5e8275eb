"""Rules that tie several configuration values together.

Each rule runs only on sections that passed their own validation, so one
broken section does not hide the problems of the others. Every problem is
attached to the key an operator has to change.
"""

from __future__ import annotations

import ipaddress
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from failover.config.models import (
    MIN_KEY_BYTES,
    NAME_RE,
    CheckerConfig,
    ClusterSection,
    LinkConfig,
)
from failover.config.problems import Loc, Problem, problems_from
from failover.config.timing import resolve_timing
from failover.errors import PluginNotFound
from failover.plugins import load_transport

# Float slack for "dead_timeout >= 3 x heartbeat_interval": 3 * 0.05 is 0.15000000000000002.
_EPSILON = 1e-9


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
    """

    cluster: ClusterSection | None = None
    cluster_ok: frozenset[str] = frozenset()
    links: list[tuple[int, LinkConfig]] = field(default_factory=list)
    links_complete: bool = False
    node_names: tuple[str, ...] | None = None
    endpoints: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    checkers: list[tuple[int, CheckerConfig]] = field(default_factory=list)


@dataclass
class Findings:
    """What the rules found: errors, warnings, and the endpoints they validated."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    endpoints: dict[tuple[str, str], BaseModel] = field(default_factory=dict)


def check_all(sections: Sections) -> Findings:
    """Run every rule on the valid parts. Reads the key file; loads transport plugins."""
    found = Findings()
    cluster, ok = sections.cluster, sections.cluster_ok
    if cluster is not None:
        if {"profile", "timing"} <= ok:
            _check_timing(cluster, found)
        if "arbitrator" in ok:
            _check_arbitrator(cluster, found)
        if {"insecure", "key_file"} <= ok:
            _check_key(cluster, found)
        if sections.node_names is not None:
            _check_node_references(cluster, ok, sections.node_names, found)
    _check_unique_names("links", [(i, link.name) for i, link in sections.links], found)
    _check_unique_names("checkers", [(i, c.name) for i, c in sections.checkers], found)
    if sections.node_names is not None:
        _check_node_names(sections.node_names, found)
    _check_endpoints(sections, found)
    return found


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
    if arbitrator.type == "witness":
        found.problems.append(
            Problem(
                ("cluster", "arbitrator", "type"),
                "arbitrator type 'witness' is not available in this version",
            )
        )
        if arbitrator.address is None:
            found.problems.append(
                Problem(
                    ("cluster", "arbitrator", "address"),
                    "required for arbitrator type 'witness'",
                )
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


def _check_unique_names(section: str, names: list[tuple[int, str]], found: Findings) -> None:
    first: dict[str, int] = {}
    for i, name in names:
        if name in first:
            found.problems.append(
                Problem(
                    (section, i, "name"),
                    f"duplicate name {name!r} (also {section}[{first[name]}])",
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
            try:
                found.endpoints[(node, link.name)] = model.model_validate(options)
            except ValidationError as exc:
                found.problems.extend(problems_from(exc, options, prefix=loc))
            except Exception as exc:  # a plugin's own bug must not crash the check
                found.problems.append(
                    Problem(loc, f"transport {link.transport!r} failed on these options: {exc}")
                )
        _check_distinct_endpoints(link.name, list(sections.endpoints), found)


def _check_distinct_endpoints(link: str, node_names: list[str], found: Findings) -> None:
    seen: dict[tuple[str, str], str] = {}
    for node in node_names:
        endpoint = found.endpoints.get((node, link))
        address = getattr(endpoint, "address", None)
        port = getattr(endpoint, "port", None)
        if address is None or port is None or _is_multicast(str(address)):
            # Without an address and a port there is nothing to compare (serial
            # devices have the same name on both machines); a multicast group
            # is shared by design.
            continue
        pair = (str(address), str(port))
        if pair in seen:
            found.problems.append(
                Problem(
                    ("nodes", node, "links", link),
                    f"same address and port as node {seen[pair]!r} ({pair[0]}:{pair[1]}); "
                    "each node needs its own endpoint",
                )
            )
        else:
            seen[pair] = node


def _is_multicast(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_multicast
    except ValueError:
        return False
