"""Checks of one node's own machine: the paths its daemon will use there.

``check-config --node NAME`` runs them (on the machine of node NAME); without
``--node`` only what is the same on every machine is checked. They read the
file system and nothing else.
"""

from __future__ import annotations

import stat
from pathlib import Path

from failover.api.control_tls import client_context, server_context
from failover.api.schema import read_control_tokens, read_token_file
from failover.config.checks import Findings, Sections
from failover.config.models import ControlTcp
from failover.config.problems import Loc, Problem
from failover.errors import UsageError


def check_local(sections: Sections, node: str, found: Findings) -> None:
    """Add to ``found`` what would fail on this machine when it runs as ``node``."""
    state = sections.state_dirs.get(node)
    if state is not None:
        loc, state_dir = state
        for path in (state_dir, state_dir / node):
            if _not_a_directory(path):
                found.problems.append(
                    Problem(
                        loc,
                        f"{path} is not a directory (node {node} keeps its metadata "
                        f"in {state_dir / node})",
                    )
                )
                break
    for i, directory in sections.directories:
        where: Loc = ("replication", "directories", i, "path")
        if not directory.path.exists():
            found.problems.append(
                Problem(where, f"{directory.path} does not exist on this machine (node {node})")
            )
        elif not directory.path.is_dir():
            found.problems.append(Problem(where, f"{directory.path} is not a directory"))
    control = sections.controls.get(node)
    if control is not None and control.tcp is not None:
        _check_control_tcp(("nodes", node, "control", "tcp"), control.tcp, found)


def _check_control_tcp(loc: Loc, tcp: ControlTcp, found: Findings) -> None:
    """The token files (each, and that they differ) and the TLS files, by the
    daemon's own rules (``read_control_tokens``, ``server_context``)."""
    readable = _check_token_file((*loc, "token_file"), tcp.token_file, found)
    if tcp.read_token_file is not None:
        read_ok = _check_token_file(
            (*loc, "read_token_file"), tcp.read_token_file, found, "read its status"
        )
        if readable and read_ok:
            try:
                read_control_tokens(tcp.token_file, tcp.read_token_file)
            except UsageError as exc:
                found.problems.append(Problem((*loc, "read_token_file"), str(exc)))
    if tcp.tls is not None:
        try:
            server_context(tcp.tls.cert_file, tcp.tls.key_file)
            if tcp.tls.ca_file is not None:
                client_context(tcp.tls.ca_file)
        except UsageError as exc:
            found.problems.append(Problem((*loc, "tls"), str(exc)))


def _not_a_directory(path: Path) -> bool:
    """True if ``path`` exists and is something else than a directory (a missing
    one is created at start)."""
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return True  # a parent is a file: reported at that parent
    except OSError:
        return False  # unreadable parents: the daemon's own error says more


def _check_token_file(
    loc: Loc, path: Path, found: Findings, power: str = "command the cluster"
) -> bool:
    """The same rules as the daemon's (``read_token_file``); a token file the
    group can read is allowed (an administrators' group) but pointed out.
    False when the file is refused."""
    try:
        read_token_file(path)
    except UsageError as exc:
        found.problems.append(Problem(loc, str(exc)))
        return False
    mode = path.stat().st_mode
    if mode & stat.S_IRGRP:
        found.warnings.append(
            Problem(
                loc,
                f"the control token file {path} is readable by its group (mode "
                f"{stat.S_IMODE(mode):o}): every member can {power}",
            )
        )
    return True
