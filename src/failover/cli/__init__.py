"""The ``failover`` command line: one module per subcommand group.

Each module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``,
which adds its subcommands and sets ``handler`` on each parser: a function
taking the parsed arguments and returning the process exit code. Errors the
operator caused are reported as one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from failover import __version__
from failover.errors import FailoverError

COMMAND_MODULES: tuple[str, ...] = (
    "failover.cli.configcmd",
    "failover.cli.modelcmd",
    "failover.cli.simulatecmd",
    "failover.cli.controlcmd",
    "failover.cli.runcmd",
    "failover.cli.pluginscmd",
    "failover.cli.quarantinecmd",
    "failover.cli.democmd",
    "failover.cli.auditcmd",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failover",
        description="Software-only high availability for two servers without shared disk.",
    )
    parser.add_argument("--version", action="version", version=f"failover {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()  # a closed pipe (``| head``) shows here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away: nothing more to say, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except FailoverError as exc:
        print(f"failover {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
