"""``failover simulate FILE... [--quiet]``: replay scenarios against the real core.

Each file is a scenario (given / steps / expectations, docs/scenarios.md)
replayed on the simulated two-node cluster with a virtual clock. The timeline
shows, for every step, the time, the action, each transition record it caused
(``node: from -> to: reason [effects]``) and each expectation with ✓ or ✗.

Exit codes: 0 when every expectation of every file holds; 1 when one does not
(each scenario stops at its first failed expectation; the other files still
run); 2 when a file cannot be read or is malformed (one line naming the file,
line and key per bad file; nothing is replayed then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from failover.model.scenario import Scenario, ScenarioError, load_scenario, run_scenario

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_MALFORMED = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay scenarios against the real core on a simulated cluster",
        description="Replay each scenario file (given / steps / expectations) on a simulated "
        "two-node cluster made of two real cores, with a virtual clock, and print the timeline "
        "of both nodes' transitions and effects. Exits 1 when an expectation does not hold, "
        "2 when a file is malformed.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="scenario files")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only each scenario's verdict"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    scenarios: list[Scenario] = []
    malformed = False
    for path in args.files:
        try:
            scenarios.append(load_scenario(path, str(path)))
        except ScenarioError as exc:
            print(f"failover simulate: {exc}", file=sys.stderr)
            malformed = True
    if malformed:
        return EXIT_MALFORMED
    failed = 0
    for n, scenario in enumerate(scenarios):
        if n and not args.quiet:
            print()
        outcome = run_scenario(scenario, None if args.quiet else print)
        if not args.quiet:
            print()
        print(outcome.verdict())
        failed += not outcome.passed
    if len(scenarios) > 1:
        print(f"\n{len(scenarios)} scenarios: {len(scenarios) - failed} passed, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK
