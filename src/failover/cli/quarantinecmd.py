"""``failover quarantine list``: what split brains set aside on this node.

Reads the node's quarantine directory (``replication.quarantine_dir``, by
default ``<state_dir>/<node>/quarantine``) directly, so it works whether or
not the daemon runs. Each set is the changes one node made on its side of a
split brain, moved aside with a manifest before it was resynchronised.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from failover.config import load_config
from failover.replication.quarantine import list_quarantines, render_quarantines


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quarantine = subparsers.add_parser(
        "quarantine", help="list the data split brains set aside on this node"
    )
    actions = quarantine.add_subparsers(dest="quarantine_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="list the quarantine sets, oldest first")
    where = listing.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", metavar="FILE", help="the cluster file")
    where.add_argument("--dir", metavar="DIR", type=Path, help="a quarantine directory")
    listing.add_argument(
        "--node", metavar="NAME", help="which node (default: the node named like the host)"
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=run_list)


def run_list(args: argparse.Namespace) -> int:
    directory: Path
    if args.dir is not None:
        directory = args.dir
    else:
        config = load_config(args.config)
        directory = config.quarantine_dir_of(config.resolve_local_node(args.node))
    summaries = list_quarantines(directory)
    if args.json:
        rows: list[dict[str, Any]] = [
            {
                "directory": str(s.directory),
                "problem": s.problem,
                "generation": s.generation,
                "peer": s.peer,
                "created": s.created,
                "complete": s.complete,
                "roots": [
                    {"name": n, "entries": e, "files": f, "bytes": b} for n, e, f, b in s.roots
                ],
            }
            for s in summaries
        ]
        print(json.dumps(rows, indent=2))
    else:
        print(render_quarantines(directory, summaries))
    return 0
