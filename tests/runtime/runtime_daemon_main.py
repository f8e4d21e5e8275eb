"""``python runtime_daemon_main.py run -c FILE ...``: the ``run`` subcommand alone.

The runtime tests start daemons through this instead of the ``failover``
script so that they depend only on the run command, not on every other
subcommand module being importable.
"""

from __future__ import annotations

import argparse
import sys

from failover.cli import runcmd
from failover.errors import FailoverError


def main() -> int:
    parser = argparse.ArgumentParser(prog="failover")
    runcmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args()
    try:
        code: int = args.handler(args)
    except FailoverError as exc:
        print(f"failover {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
