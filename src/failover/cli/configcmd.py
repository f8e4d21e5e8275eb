"""``failover check-config FILE [--node NAME]``: validate a configuration file.

Exit 0 when the file is valid (warnings, if any, are printed on stderr);
exit 1 with every problem on stderr, one per line, when it is not.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from failover.errors import ConfigError, UsageError

EXIT_OK = 0
EXIT_INVALID = 1


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a cluster configuration file",
        description="Validate a cluster configuration file and print every problem found.",
    )
    parser.add_argument("file", metavar="FILE", help="the cluster configuration (YAML)")
    parser.add_argument(
        "--node",
        metavar="NAME",
        help=(
            "also check that NAME is one of the nodes, and the paths it uses on this "
            "machine (state directory, replicated directories, control token file)"
        ),
    )
    parser.set_defaults(handler=check_config)


def check_config(args: argparse.Namespace) -> int:
    """Load ``args.file`` and report on it; returns the exit code."""
    from failover.config import load_config  # noqa: PLC0415 - pydantic only when needed

    try:
        config = load_config(args.file, local_node=args.node)
        node = config.resolve_local_node(args.node) if args.node is not None else None
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    except UsageError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = (
        f"cluster {config.cluster.name}, nodes {', '.join(config.nodes)}, "
        f"links {', '.join(link.name for link in config.links)}"
    )
    if node is not None:
        summary += f", this node {node} (peer {config.peer_of(node)})"
    print(f"{args.file}: ok ({summary}; fingerprint {config.fingerprint()[:8]})")
    return EXIT_OK
