"""``failover model-check``: prove the state machine's invariants by exhaustive
exploration (and, with ``--mutants``, show that the checker can fail)."""

from __future__ import annotations

import argparse
from typing import Any

from failover.model.mutants import LEASE_MUTANTS, MUTANTS, mutant_table
from failover.model.run import ROOTS, check_model
from failover.model.sim import Arbitrator, Bounds, ClusterConfig

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
        "--arbitrator",
        choices=tuple(a.value for a in Arbitrator),
        default=None,
        help="arbitrator configured: none, the witness service, a ping witness (no record: "
        "whoever reaches its address is granted), or an etcd lease (the witness's record with "
        "etcd's timing and lost or late answers); default none, or the mutant's",
    )
    parser.add_argument(
        "--partition-needs-cut",
        action="store_true",
        help="cut every link between the nodes only while one of them cannot reach the "
        "arbitrator (the faults a ping witness protects against)",
    )
    parser.add_argument(
        "--no-late-grants",
        action="store_true",
        help="etcd: lose or delay only renewals' answers, never a request's (a grant the node "
        "hears late or never can leave both nodes waiting: a known finding)",
    )
    parser.add_argument(
        "--no-data",
        action="store_true",
        help="no replicated directories (a resync ends at once; no writes are explored)",
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
        choices=sorted(MUTANTS | LEASE_MUTANTS),
        default=None,
        help="check a deliberately broken table instead of the real one (or, for a "
        "lease-timing mutant, broken lease handling: not caught here, see model-check-lease)",
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
    mutant = (MUTANTS | LEASE_MUTANTS)[args.mutant] if args.mutant else None
    if args.initial_data is not None:
        initial_data = INITIAL_DATA[args.initial_data]
    else:
        initial_data = mutant.initial_data if mutant is not None else (False, False)
    if args.arbitrator is not None:
        arbitrator = Arbitrator(args.arbitrator)
    else:
        arbitrator = mutant.arbitrator if mutant is not None else Arbitrator.NONE
    config = ClusterConfig(
        links=links,
        arbitrator=arbitrator,
        stale_frames=not args.newest_frames_only,
        initial_data=initial_data,
        no_data=args.no_data,
        partition_with_witness=not args.partition_needs_cut,
        late_grants=not args.no_late_grants,
        lease_mutation=mutant.lease_mutation if mutant is not None else None,
    )
    bounds = Bounds(
        faults=args.faults, admin=args.commands, writes=args.writes, app_faults=args.app_faults
    )
    table = mutant_table(args.mutant) if args.mutant else None
    roots = ROOTS if args.root == "all" else (args.root,)
    if mutant is not None:
        print(f"mutant {args.mutant}: {mutant.description}")
        if args.mutant in LEASE_MUTANTS:
            print(
                "(a lease-timing mutant: this simulator is known not to catch it; "
                "failover model-check-lease does)"
            )
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
