"""``failover model-check``: prove the state machine's invariants by exhaustive
exploration (and, with ``--mutants``, show that the checker can fail)."""

from __future__ import annotations

import argparse
from typing import Any

from failover.model.mutants import MUTANTS, mutant_table
from failover.model.run import ROOTS, check_model
from failover.model.sim import Bounds, ClusterConfig

INITIAL_DATA = {
    "none": (False, False),
    "alpha": (True, False),
    "beta": (False, True),
    "both": (True, True),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "model-check",
        help="exhaustively check the state machine's invariants",
        description="Explore every interleaving of failures, commands and writes of a simulated "
        "two-node cluster made of two real cores, breadth first, and check every invariant "
        "of spec/INVARIANTS.md on every step. Exits 1 when an invariant is violated.",
    )
    parser.add_argument("--depth", type=int, default=12, help="actions per trace (default 12)")
    parser.add_argument(
        "--arbitrator", choices=("none", "witness"), default="none", help="arbitrator configured"
    )
    parser.add_argument("--links", type=int, choices=(1, 2, 3), default=2, help="heartbeat links")
    parser.add_argument("--faults", type=int, default=2, help="faults per trace (default 2)")
    parser.add_argument("--commands", type=int, default=1, help="admin commands per trace")
    parser.add_argument("--writes", type=int, default=1, help="application writes per trace")
    parser.add_argument(
        "--app-faults",
        type=int,
        default=1,
        help="of the faults, how many may be application or checker failures (default 1; "
        "0 explores the network, crashes and commands alone)",
    )
    parser.add_argument(
        "--root", choices=(*ROOTS, "all"), default="all", help="where exploration starts"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop deepening after this many seconds (the depth reached is reported)",
    )
    parser.add_argument(
        "--mutant",
        choices=sorted(MUTANTS),
        default=None,
        help="check a deliberately broken table instead of the real one",
    )
    parser.add_argument(
        "--newest-frames-only",
        action="store_true",
        help="never deliver a heartbeat sent before its sender's last change of state "
        "(by default the network may, as a fault): the smaller network of earlier versions",
    )
    parser.add_argument(
        "--initial-data",
        choices=tuple(INITIAL_DATA),
        default=None,
        help="a first start beside existing data: which nodes' replicated directories hold "
        "data before the cluster's first run (default none, or the mutant's)",
    )
    parser.add_argument("--no-liveness", action="store_true", help="skip the L1/L2 checks")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.depth < 1:
        print("failover model-check: --depth must be at least 1")
        return 2
    if args.app_faults < 0:
        print("failover model-check: --app-faults must be 0 or more")
        return 2
    links = ("lan", "serial", "crossover")[: args.links]
    if args.initial_data is not None:
        initial_data = INITIAL_DATA[args.initial_data]
    else:
        initial_data = MUTANTS[args.mutant].initial_data if args.mutant else (False, False)
    config = ClusterConfig(
        links=links,
        arbitrator=args.arbitrator == "witness",
        stale_frames=not args.newest_frames_only,
        initial_data=initial_data,
    )
    bounds = Bounds(
        faults=args.faults, admin=args.commands, writes=args.writes, app_faults=args.app_faults
    )
    table = mutant_table(args.mutant) if args.mutant else None
    roots = ROOTS if args.root == "all" else (args.root,)
    if args.mutant:
        print(f"mutant {args.mutant}: {MUTANTS[args.mutant].description}")
    report = check_model(
        config,
        depth=args.depth,
        bounds=bounds,
        table=table,
        roots=roots,
        time_limit=args.time_limit,
        liveness=not args.no_liveness,
    )
    print(report.render())
    return 0 if report.ok else 1
