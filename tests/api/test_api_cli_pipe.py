"""A reader that goes away (`failover status | head -1`): no traceback, its own exit code.

Each test runs the real command line in a subprocess whose stdout (and, for
the error path, stderr) is a pipe the test closes before the command writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_fakes import WAIT, FakeController, serving_in_thread

from failover.cli.controlcmd import NOT_SERVING_EXIT_CODES


@pytest.fixture
def socket_path(controller: FakeController, sock_dir: Path) -> Iterator[str]:
    path = str(sock_dir / "c.sock")
    with serving_in_thread(controller, unix_path=path):
        yield path


def _reader_gone(*argv: str, stderr_too: bool = False) -> tuple[int, bytes]:
    """Run ``failover ARGV`` with its stdout read by nobody (closed before any
    output); (exit code, what it wrote on stderr, or b"" when that is closed too)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "failover", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if stderr_too else subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()
    err = b""
    if process.stderr is not None:
        err = process.stderr.read()
        process.stderr.close()
    return process.wait(timeout=WAIT * 6), err


def _quiet(err: bytes) -> None:
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert b"Exception ignored" not in err, err.decode()


def test_status_to_a_closed_pipe_exits_0_quietly(socket_path: str) -> None:
    code, err = _reader_gone("status", "--socket", socket_path)
    _quiet(err)
    assert err == b""
    assert code == 0


def test_state_to_a_closed_pipe_still_exits_with_the_state(
    socket_path: str, controller: FakeController
) -> None:
    controller.state = "secondary"  # a not-serving code, never confused with 1
    code, err = _reader_gone("state", "--socket", socket_path)
    _quiet(err)
    assert code == NOT_SERVING_EXIT_CODES["secondary"]


PIPE_BUFFER = 64 * 1024  # Linux's default


def _a_log_longer_than_a_pipe_buffer(controller: FakeController) -> None:
    """1000 records in ``failover log --json -n 1000``: whenever its reader leaves, a
    write fails (all of it would fit in the pipe's buffer with the fake's 120)."""
    controller.records = (controller.records * 9)[:1000]
    assert len(json.dumps(controller.records, indent=2)) > 2 * PIPE_BUFFER


def test_a_long_log_to_a_closed_pipe_exits_0_quietly(
    socket_path: str, controller: FakeController
) -> None:
    _a_log_longer_than_a_pipe_buffer(controller)
    code, err = _reader_gone("log", "--json", "-n", "1000", "--socket", socket_path)
    _quiet(err)
    assert code == 0


def test_a_reader_that_takes_one_line_and_leaves_gets_exit_0(
    socket_path: str, controller: FakeController
) -> None:
    # `failover log --json -n 1000 | head -1`: the reader leaves mid-output
    _a_log_longer_than_a_pipe_buffer(controller)
    process = subprocess.Popen(
        [sys.executable, "-m", "failover", "log", "--json", "-n", "1000", "--socket", socket_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"[\n"
    process.stdout.close()
    err = process.stderr.read()
    process.stderr.close()
    _quiet(err)
    assert process.wait(timeout=WAIT * 6) == 0


def test_an_accepted_command_to_a_closed_pipe_still_exits_0(
    socket_path: str, controller: FakeController
) -> None:
    code, err = _reader_gone("swap", "--socket", socket_path)
    _quiet(err)
    assert (code, controller.commands) == (0, ["swap"])


def test_an_error_with_both_streams_closed_keeps_its_exit_code(sock_dir: Path) -> None:
    code, _ = _reader_gone("status", "--socket", str(sock_dir / "none.sock"), stderr_too=True)
    assert code == 2  # the daemon cannot be reached: documented, whoever reads


def test_help_to_a_closed_pipe_exits_0_quietly() -> None:
    code, err = _reader_gone("--help")
    _quiet(err)
    assert code == 0
