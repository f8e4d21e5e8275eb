"""``failover model-check-lease``: the focused timing model of the arbitrators
(``failover.model.lease``), checked exhaustively for S1."""

from __future__ import annotations

import argparse
from typing import Any

from failover.model.lease import KINDS, MUTANTS, check, for_kind


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "model-check-lease",
        help="check the arbitrators' lease timing: never two nodes serving",
        description="Explore, breadth first, every run of two nodes and one arbitrator (the "
        "witness, the ping witness or etcd) with clocks at bounded rates, bounded message "
        "delays, losses, cuts, pauses and crashes, and check that two nodes never serve at "
        "the same instant. Exits 1 with the shortest counterexample.",
    )
    parser.add_argument(
        "--kind", choices=(*KINDS, "all"), default="all", help="the arbitrator (default all)"
    )
    parser.add_argument("--depth", type=int, default=12, help="events per trace (default 12)")
    parser.add_argument(
        "--faults", type=int, default=2, help="of the events, at most this many faults (default 2)"
    )
    parser.add_argument(
        "--rho", type=float, default=None, help="clock rate bound (default 0.01: within 1%%)"
    )
    parser.add_argument("--ttl", type=float, default=None, help="lease_ttl in seconds")
    parser.add_argument("--margin", type=float, default=None, help="lease_margin in seconds")
    parser.add_argument("--renew", type=float, default=None, help="lease_renew in seconds")
    parser.add_argument("--delay", type=float, default=None, help="message delay bound d")
    parser.add_argument("--dead-timeout", type=float, default=None, help="ping: dead_timeout")
    parser.add_argument(
        "--ping-limit",
        action="store_true",
        help="ping: allow a cut between the nodes while both reach the witness (its known "
        "limit: a counterexample is expected)",
    )
    parser.add_argument(
        "--mutant", choices=sorted(MUTANTS), default=None, help="a deliberately broken rule"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.depth < 1 or args.faults < 0:
        print("failover model-check-lease: --depth must be at least 1, --faults at least 0")
        return 2
    kinds: tuple[str, ...] = KINDS if args.kind == "all" else (args.kind,)
    if args.mutant is not None:
        kinds = tuple(k for k in kinds if k in MUTANTS[args.mutant].kinds)
        if not kinds:
            print(
                f"failover model-check-lease: mutant {args.mutant} applies to "
                f"{', '.join(MUTANTS[args.mutant].kinds)} only"
            )
            return 2
    options = {
        "rho": args.rho,
        "ttl": args.ttl,
        "margin": args.margin,
        "renew": args.renew,
        "d": args.delay,
        "dead_timeout": args.dead_timeout,
    }
    overrides: dict[str, object] = {k: v for k, v in options.items() if v is not None}
    overrides["max_faults"] = args.faults
    if args.ping_limit:
        overrides["ping_limit"] = True
    ok = True
    for kind in kinds:
        try:
            config = for_kind(kind, args.mutant, **overrides)
        except ValueError as exc:
            print(f"failover model-check-lease: {exc}")
            return 2
        report = check(config, args.depth)
        print(report.render())
        ok = ok and report.ok
    return 0 if ok else 1
