"""Run an operator's command (start/stop script, checker) with a time limit.

Each command runs in its own session, hence its own process group, so that on
timeout the whole group (the script and everything it spawned in the
foreground) is killed at once. Its standard output and error go to a log file
rather than a pipe: a start script that launches the application in the
background would otherwise leave the application writing into a pipe nobody
reads any more (and dying of SIGPIPE). The last lines of that file explain a
failure.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

from failover.platform.priority import spawning_as_inherited

TAIL_LINES = 5
_TAIL_BYTES = 8192

log = structlog.get_logger("failover.scripts")


@dataclass(frozen=True)
class ScriptResult:
    """How a command ended. ``returncode`` is None when it was killed at its timeout
    or could not be started at all."""

    label: str
    returncode: int | None
    timed_out: bool
    tail: tuple[str, ...]
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def reason(self) -> str:
        """One line for the log and the core's reason: what happened and the last output."""
        if self.error:
            what = f"{self.label} could not run: {self.error}"
        elif self.timed_out:
            what = f"{self.label} timed out and was killed"
        elif self.returncode is not None and self.returncode < 0:
            what = f"{self.label} killed by signal {-self.returncode}"
        else:
            what = f"{self.label} exited with status {self.returncode}"
        if self.tail:
            what += ": " + " | ".join(self.tail)
        return what


def read_tail(path: Path, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of ``path`` (reads at most 8 KiB)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ()
    kept: deque[str] = deque(maxlen=lines)
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            kept.append(line.rstrip())
    return tuple(kept)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_script(
    command: str | Sequence[str],
    *,
    timeout: float,
    label: str,
    output: Path,
    env: Mapping[str, str] | None = None,
) -> ScriptResult:
    """Run ``command`` and wait for it for at most ``timeout`` seconds.

    A string is split like a shell would (``shlex.split``) but run without a
    shell; a sequence is the argv itself.
    The output file is truncated first. On timeout the process group is
    killed with SIGKILL and reaped before this returns, so the call takes at
    most ``timeout`` plus the time to reap. Never raises for a failing
    command: the outcome (including "could not start") is in the result.
    When cancelled, the process group is killed as well.
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        return ScriptResult(label, None, False, (), "empty command")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # A new inode each run: a background process started by the previous
        # run may still hold the old file open; truncating it under its feet
        # would leave a sparse file.
        output.unlink(missing_ok=True)
        out_fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        # A full or read-only state disk must not fail the script (a checker that
        # fails for its log would hand the service over): its output is lost.
        log.warning("script output discarded", script=label, file=str(output), error=exc.strerror)
        out_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with spawning_as_inherited():  # the daemon's raised priority is not the script's
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=out_fd,
                env=full_env,
                start_new_session=True,
            )
    except OSError as exc:
        return ScriptResult(label, None, False, (), f"{argv[0]}: {exc.strerror or exc}")
    finally:
        os.close(out_fd)
    timed_out = False
    try:
        with anyio.move_on_after(timeout) as scope:
            await process.wait()
        if scope.cancelled_caught:
            timed_out = True
            _kill_group(process.pid)
    except BaseException:
        # Cancelled from outside (daemon shutting down): leave no orphan group.
        _kill_group(process.pid)
        raise
    finally:
        # Reaps the process; shielded against cancellation once it is killed.
        await process.aclose()
    returncode = None if timed_out else process.returncode
    return ScriptResult(label, returncode, timed_out, read_tail(output))
