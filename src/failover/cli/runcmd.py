"""``failover run -c FILE [--node NAME] [--log-file F]``: run this machine's node.

Exit 0 after a clean stop (SIGTERM or SIGINT: the module is stopped and the
virtual IP released first); exit 2 when the configuration is invalid (every
problem printed on stderr) or the node cannot start (one line on stderr: a
state directory that cannot be written, a log file that cannot be opened,
corrupt metadata...), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from failover.errors import ConfigError

EXIT_OK = 0
EXIT_INVALID = 2


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run this machine's node of a cluster (the daemon)",
        description=(
            "Run the failover daemon for one node. SIGTERM/SIGINT stop the module "
            "cleanly and exit; SIGHUP reloads the configuration file."
        ),
    )
    parser.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="the cluster configuration (YAML)"
    )
    parser.add_argument(
        "--node", metavar="NAME", help="which node this is (default: the node named like the host)"
    )
    parser.add_argument(
        "--log-file", metavar="F", help="append JSON log lines to F instead of stdout"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="least severe records written (default: info)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the configuration, configure logging and run the daemon until it stops."""
    # Imported here so that other subcommands do not pay for pydantic and anyio.
    import anyio  # noqa: PLC0415

    from failover.config import load_config  # noqa: PLC0415
    from failover.fsutil import describe_error  # noqa: PLC0415
    from failover.runtime.daemon import run_node  # noqa: PLC0415
    from failover.runtime.logging import configure_logging  # noqa: PLC0415

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    node = config.resolve_local_node(args.node)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        configure_logging(args.log_file, level=args.log_level)
    except OSError as exc:
        print(
            f"failover run: cannot open the log file {args.log_file}: {describe_error(exc)}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if config.warnings:
        import structlog  # noqa: PLC0415

        log = structlog.get_logger("failover.run")
        for warning in config.warnings:
            log.warning("configuration warning", node=node, warning=warning)
    try:
        anyio.run(run_node, config, node)
    except OSError as exc:
        # The node's own disk or a file it needs failed at start (the state
        # directory's are named by UsageError already): one line, never a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"failover run: node {node}: {where}{describe_error(exc)}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK
