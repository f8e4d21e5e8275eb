"""``failover audit LOG... [--acked FILE] [--found NODE=FILE]... [--power-off NODE=T]... [--json]``.

Checks both nodes' journals (``<state_dir>/<node>/audit.jsonl``, or the
directories holding them) against S1-S5 (docs/audit.md). Exit 0 when every
checked invariant holds; 1 with one line per violation (invariant, time,
nodes, why, record); 2 when an input cannot be read (file:line and why).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from failover.errors import UsageError

EXIT_OK = 0
EXIT_VIOLATED = 1


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="check a run's journals against the safety invariants",
        description=(
            "Check both nodes' audit journals (and, with --acked and --found, the "
            "client's acknowledged records) against S1-S5. Exit 0 when they hold, "
            "1 with one line per violation, 2 on unreadable input."
        ),
    )
    parser.add_argument(
        "logs", nargs="+", metavar="LOG", help="a node's audit.jsonl, or a directory holding them"
    )
    parser.add_argument(
        "--acked", metavar="FILE", help='the client\'s acknowledged records: {"id": N, "mono": T}'
    )
    parser.add_argument(
        "--found",
        metavar="NODE=FILE",
        action="append",
        default=[],
        help='record ids NODE holds at the end, {"id": N} per line (repeat per node)',
    )
    parser.add_argument(
        "--power-off",
        metavar="NODE=T",
        action="append",
        default=[],
        help="NODE's machine stopped at T (CLOCK_MONOTONIC seconds, as the journals): from "
        "then on it serves nothing until its next start (repeat per node or time)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_audit)


def _found(items: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for item in items:
        node, sep, path = item.partition("=")
        if not sep or not node or not path:
            raise UsageError(f"--found {item!r}: expected NODE=FILE")
        found[node] = Path(path)
    return found


def _power_offs(items: list[str]) -> dict[str, list[float]]:
    power_off: dict[str, list[float]] = {}
    for item in items:
        node, sep, text = item.partition("=")
        try:
            t = float(text)
        except ValueError:
            t = math.nan
        if not sep or not node or not math.isfinite(t):
            raise UsageError(f"--power-off {item!r}: expected NODE=T, T in seconds")
        power_off.setdefault(node, []).append(t)
    return power_off


def run_audit(args: argparse.Namespace) -> int:
    from failover.audit import audit  # noqa: PLC0415 - the core's modules only when needed

    report = audit(
        args.logs,
        acked=args.acked,
        found=_found(args.found),
        power_off=_power_offs(args.power_off),
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for violation in report.violations:
            print(violation)
        figures = report.figures
        overlaps = figures["overlaps"]
        print(
            f"audit: {'ok' if report.ok else f'{len(report.violations)} violation(s)'}; "
            f"checked {', '.join(report.checked)}; nodes {', '.join(figures['nodes'])}; "
            f"{sum(figures['records'].values())} records; {figures['entries']} starts of "
            f"service; both serving {overlaps['count']} time(s), {overlaps['seconds']:.3f} s "
            f"({figures['blind_overlaps']} blind, {figures['forced_overlaps']} forced)"
        )
    return EXIT_OK if report.ok else EXIT_VIOLATED
