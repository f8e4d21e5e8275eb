"""``failover witness run|status --config witness.yaml``: the witness of a third machine.

``run`` serves every cluster of the file until SIGTERM/SIGINT (exit 0); a bad
file, an unreadable key, an unwritable state directory, a corrupt record or
an address that cannot be bound is one line per problem on stderr and exit 2,
never a traceback. ``status`` reads the saved records (whether or not the
witness runs): each cluster's holder, generation and lease expiry as of the
witness's last save.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from failover.errors import ConfigError, UsageError

EXIT_OK = 0
EXIT_INVALID = 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    witness = subparsers.add_parser(
        "witness", help="run or inspect the witness (the arbitrator on a third machine)"
    )
    actions = witness.add_subparsers(dest="witness_action", metavar="ACTION")
    actions.required = True
    run = actions.add_parser("run", help="serve the clusters of the witness file")
    run.add_argument("-c", "--config", required=True, metavar="FILE", help="the witness file")
    run.add_argument("--log-file", metavar="F", help="append JSON log lines to F")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    run.set_defaults(handler=run_witness)
    status = actions.add_parser("status", help="each cluster's lease holder and generation")
    status.add_argument("-c", "--config", required=True, metavar="FILE", help="the witness file")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=witness_status)


def _config_or_exit(path: str) -> Any:
    from failover.witness.config import load_witness_config  # noqa: PLC0415

    try:
        return load_witness_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def run_witness(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from failover.fsutil import describe_error  # noqa: PLC0415
    from failover.runtime.logging import configure_logging  # noqa: PLC0415
    from failover.witness.config import read_keys  # noqa: PLC0415
    from failover.witness.service import Witness, answer_on  # noqa: PLC0415

    config = _config_or_exit(args.config)
    if config is None:
        return EXIT_INVALID
    try:
        keys = read_keys(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    try:
        configure_logging(args.log_file, level=args.log_level)
    except OSError as exc:
        print(
            f"failover witness: cannot open {args.log_file}: {describe_error(exc)}", file=sys.stderr
        )
        return EXIT_INVALID
    try:
        witness = Witness(config.state_dir, keys)
    except UsageError as exc:
        print(f"failover witness: {exc}", file=sys.stderr)
        return EXIT_INVALID

    async def main() -> str | None:
        """Serve until SIGTERM/SIGINT; the problem when the address cannot be bound."""
        import signal  # noqa: PLC0415

        import structlog  # noqa: PLC0415

        log = structlog.get_logger("failover.witness")
        try:
            sock = await anyio.create_udp_socket(local_host=config.host, local_port=config.port)
        except OSError as exc:  # an address not of this machine, a port in use, no such host
            return f"cannot listen on {config.listen}: {describe_error(exc)}"
        async with sock, anyio.create_task_group() as tg:
            tg.start_soon(answer_on, witness, sock)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("witness stopping", signal=signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    break
        return None

    failure = anyio.run(main)
    if failure is not None:
        print(f"failover witness: {failure}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def witness_status(args: argparse.Namespace) -> int:
    from failover.witness.store import ClusterStore, WitnessStateError  # noqa: PLC0415

    config = _config_or_exit(args.config)
    if config is None:
        return EXIT_INVALID
    if not config.state_dir.is_dir():
        # "held by nobody" would be a guess: a mistyped path, or a witness not run yet
        print(
            f"failover witness status: {args.config}: state_dir {config.state_dir} is not a "
            "directory: no witness has saved a record there",
            file=sys.stderr,
        )
        return EXIT_INVALID
    rows: list[dict[str, Any]] = []
    now = time.time()
    for cluster in config.clusters:
        try:
            saved = ClusterStore(config.state_dir, cluster.name).read()
        except WitnessStateError as exc:
            print(f"failover witness status: {exc}", file=sys.stderr)
            return EXIT_INVALID
        row: dict[str, Any] = {"cluster": cluster.name, "holder": None, "generation": "0"}
        if saved is not None:
            record = saved.record
            row.update(
                holder=record.holder,
                generation=str(record.generation),
                granted_to=record.granted_to,
                ttl=saved.ttl,
                expires_in=(
                    None if saved.expires_wall is None else round(saved.expires_wall - now, 1)
                ),
            )
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        holder = row["holder"] or "nobody"
        expiry = row.get("expires_in")
        lease = (
            ""
            if row["holder"] is None or expiry is None
            else (f", expires in {expiry:g} s" if expiry > 0 else ", expired")
        )
        print(f"{row['cluster']}: held by {holder}{lease}; generation {row['generation']}")
    return EXIT_OK
