"""Every ``failover ...`` command of docs/quickstart.md's code blocks is one the
project has: its subcommand exists, each of its flags is one of that
subcommand's (spelt out in full, not an abbreviation argparse would accept),
and the whole line parses with the real parser (``failover.cli.build_parser``).

Shell blocks (``sh``, ``bash``, ``shell``, ``console``) are read; a ``text``
block (a command's output) is not. Lines ending in ``\\`` continue; a
``console`` block's commands start with ``$ `` or ``# ``. In a pipeline or a
list (``|``, ``&&``, ``;``) each command is taken on its own, after any
``VAR=value`` assignments and ``sudo``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from failover.cli import build_parser, main
from failover.config import load_config

QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELLS = {"sh", "bash", "shell", "console"}
OPERATORS = {"|", "||", "&&", ";", "&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def shell_lines(markdown: str) -> list[str]:
    lines = []
    for language, body in FENCE.findall(markdown):
        if language not in SHELLS:
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            if language == "console" and not line.startswith(("$ ", "# ")):
                continue  # the output shown in a console block
            command = line[2:] if language == "console" else line
            if command.strip() and not command.lstrip().startswith("#"):
                lines.append(command)
    return lines


def failover_commands(markdown: str) -> list[list[str]]:
    """The argument lists (after ``failover``) of every failover command."""
    found = []
    for line in shell_lines(markdown):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token not in OPERATORS:
                words.append(token)
                continue
            while words and (ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
                words.pop(0)
            if words and words[0] == "failover":
                found.append(words[1:])
            words = []
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def problem_with(args: list[str]) -> str | None:
    """Why ``failover ARGS`` is not a command of the project, or None."""
    parser = build_parser()
    if args and args[0].startswith("-"):
        known, command_args = parser, args
    else:
        name = args[0] if args else ""
        known = subcommands(parser).get(name)  # type: ignore[assignment]
        if known is None:
            return f"no subcommand {name!r}"
        command_args = args[1:]
    for arg in command_args:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and len(flag) > 1 and flag not in known._option_string_actions:
            return f"{known.prog} has no option {flag}"
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                return errors.getvalue().strip().splitlines()[-1]
    return None


def test_the_extraction_sees_commands_and_judges_them() -> None:
    sample = (
        "```sh\nX=1 failover status -c f.yaml | head -1 && sudo failover swap \\\n"
        "    -c f.yaml\n```\n```console\n$ failover state -q\nfailover not-a-command\n```\n"
        "```text\nfailover init: --dir: output, not a command\n```\n"
    )
    commands = failover_commands(sample)
    assert commands == [["status", "-c", "f.yaml"], ["swap", "-c", "f.yaml"], ["state", "-q"]]
    assert [problem_with(c) for c in commands] == [None, None, None]
    assert problem_with(["swop"]) == "no subcommand 'swop'"
    assert problem_with(["init", "--non-inter"]) == "failover init has no option --non-inter"
    assert problem_with(["check-config"]) is not None  # FILE is required
    assert problem_with(["--version"]) is None


COMMANDS = failover_commands(QUICKSTART.read_text(encoding="utf-8"))


def test_the_quickstart_goes_through_init_check_status_and_swap() -> None:
    used = {args[0] for args in COMMANDS if args}
    assert {"init", "check-config", "status", "swap"} <= used, used


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_each_quickstart_command_exists(args: list[str]) -> None:
    assert problem_with(args) is None, f"docs/quickstart.md: failover {' '.join(args)}"


def test_the_quickstarts_init_writes_a_file_that_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its ``failover init --non-interactive ...`` line, run here as it is but for
    where it writes and the interface (this machine is not on its network, and the
    quickstart's output shows eth0)."""
    (init,) = (args for args in COMMANDS if args[:2] == ["init", "--non-interactive"])
    path = tmp_path / "cluster.yaml"
    assert main([*init, "-o", str(path), "--vip-interface", "eth0"]) == 0, capsys.readouterr().err
    assert main(["check-config", str(path)]) == 0
    # the output the quickstart shows is this line's: its fingerprint is the file's
    fingerprint = load_config(path).fingerprint()[:8]
    assert f"fingerprint {fingerprint})" in QUICKSTART.read_text(encoding="utf-8")
