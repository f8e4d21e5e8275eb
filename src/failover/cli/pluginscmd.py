"""``failover plugins``: the transport plugins installed, and whether each one loads."""

from __future__ import annotations

import argparse
import json
from typing import Any

from failover.plugins import ENTRY_POINT_GROUP, check_plugin, installed_plugins

_COLUMNS = ("NAME", "KIND", "DISTRIBUTION", "VERSION", "OBJECT", "STATUS")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list installed transport plugins",
        description=(
            f"List the transport plugins installed (entry-point group {ENTRY_POINT_GROUP}) "
            "with their distribution and version, and try loading each one. "
            "Exits 1 if any fails to load."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for info in installed_plugins():
        kind, problem = check_plugin(info.name)
        rows.append(
            {
                "name": info.name,
                "kind": kind or "?",
                "distribution": info.distribution,
                "version": info.version,
                "object": info.target,
                "status": "ok" if problem is None else problem,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no transport plugins installed (entry-point group {ENTRY_POINT_GROUP})")
    else:
        _print_table([[str(row[c.lower()]) for c in _COLUMNS] for row in rows])
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _print_table(rows: list[list[str]]) -> None:
    # The last column (a possibly long error) is not padded.
    widths = [max(len(r[i]) for r in [list(_COLUMNS), *rows]) for i in range(len(_COLUMNS) - 1)]
    for row in [list(_COLUMNS), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
