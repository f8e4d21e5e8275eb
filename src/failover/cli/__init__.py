"""The ``failover`` command line: one module per subcommand group.

Each module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``,
which adds its subcommands and sets ``handler`` on each parser: a function
taking the parsed arguments and returning the process exit code. Errors the
operator caused are reported as one line on stderr, never a traceback.

A reader that goes away (``failover status | head -1``, ``| true``) silences
the rest of the output and changes nothing else: the command runs to its end
and exits with its own code (``failover state | true`` still tells the state;
an accepted ``swap`` still exits 0). Python's default, an exit code 1 and a
``BrokenPipeError``, would read as "alone" or "refused".
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

from failover import __version__
from failover.errors import FailoverError

COMMAND_MODULES: tuple[str, ...] = (
    "failover.cli.configcmd",
    "failover.cli.initcmd",
    "failover.cli.modelcmd",
    "failover.cli.leasecmd",
    "failover.cli.simulatecmd",
    "failover.cli.controlcmd",
    "failover.cli.runcmd",
    "failover.cli.pluginscmd",
    "failover.cli.quarantinecmd",
    "failover.cli.democmd",
    "failover.cli.auditcmd",
    "failover.cli.witnesscmd",
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
    streams = sys.stdout, sys.stderr
    if sys.stdout is not None:  # None: started with the descriptor closed (print drops)
        sys.stdout = cast(TextIO, _ReaderMayLeave(sys.stdout))
    if sys.stderr is not None:
        sys.stderr = cast(TextIO, _ReaderMayLeave(sys.stderr))
    try:
        return _run(argv)
    finally:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # a closed pipe shows here, not as a message at exit
        sys.stdout, sys.stderr = streams


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except FailoverError as exc:
        print(f"failover {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _ReaderMayLeave:
    """``sys.stdout``/``sys.stderr`` as they are, except that once the reader of
    the pipe went away (``BrokenPipeError``), everything written is dropped: the
    file descriptor is pointed at /dev/null, so that not even the flush at exit
    complains. Nothing else of the command changes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_left()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_left()

    def _reader_left(self) -> None:
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # not a real file: nothing lingers to flush at exit
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        with contextlib.suppress(OSError):  # drops what was buffered, into /dev/null
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


if __name__ == "__main__":
    raise SystemExit(main())
