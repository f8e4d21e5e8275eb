"""Run an operator's command (start/stop script, checker) with a time limit.

Each command runs in its own session, hence its own process group, so that on
timeout the whole group (the script and everything it spawned in the
foreground) is stopped at once: SIGTERM to the group, then, after a short
grace (``KILL_GRACE``), SIGKILL to whatever of the group is left
(``end_group``). Its standard output and error go to a log file rather than a
pipe: a start script that launches the application in the background would
otherwise leave the application writing into a pipe nobody reads any more
(and dying of SIGPIPE). The last lines of that file explain a failure.

``ScriptLog`` keeps the last runs of each script for the daemon's status.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import Process

from failover.platform.priority import spawning_as_inherited

TAIL_LINES = 5
_TAIL_BYTES = 8192
KILL_GRACE = 3.0
"""Seconds a process group has to end after SIGTERM before it gets SIGKILL."""
RUNS_KEPT = 5
"""How many runs of each script ``ScriptLog`` keeps."""
REAP_LIMIT = KILL_GRACE
"""Seconds a SIGKILLed process has to be reaped before the daemon goes on without."""
_GROUP_POLL = 0.05

log = structlog.get_logger("failover.scripts")


@dataclass(frozen=True)
class ScriptResult:
    """How a command ended. ``returncode`` is None when it was killed at its timeout
    or could not be started at all. ``duration`` is in seconds."""

    label: str
    returncode: int | None
    timed_out: bool
    tail: tuple[str, ...]
    error: str = ""
    duration: float = 0.0

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


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # (a member changed its credentials: still there, out of reach)
    return True


async def end_group(pgid: int, grace: float = KILL_GRACE, leader: Process | None = None) -> bool:
    """End process group ``pgid``: SIGTERM to the group, then SIGKILL to what is
    left of it after ``grace`` seconds, or at once if cancelled. ``leader`` is its
    leader when it is our child (alive or not): it is reaped, for a zombie
    leader would keep the group alive; without it (a leader left by a previous
    daemon) the group is only polled. Returns when the group is empty (or
    SIGKILLed: its members are gone as soon as the kernel delivers it): True
    when something of it was left for SIGKILL."""
    killed = True
    try:
        if signal_group(pgid, signal.SIGTERM):
            with anyio.move_on_after(grace):
                if leader is not None:
                    await leader.wait()
                while signal_group(pgid, 0):  # a member that survived its leader
                    await anyio.sleep(_GROUP_POLL)
    finally:
        killed = signal_group(pgid, signal.SIGKILL)
        if leader is not None:
            await _reap(leader)
    return killed


async def _reap(process: Process) -> None:
    """Wait for SIGKILLed ``process`` to be reaped: shielded, so that a cancelled
    stop leaves no process behind, but for at most ``REAP_LIMIT`` seconds. A
    process the kernel holds (uninterruptible I/O on a hung mount, a FUSE flush
    nobody answers) must not hold a stop, or the daemon's exit, past every
    deadline; it is reaped when it ends (asyncio's child watcher waits for it)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(REAP_LIMIT) as scope:
        await process.wait()
    if scope.cancelled_caught:
        log.error("a killed process is still not reaped: going on", pid=process.pid)


async def spawn(
    command: str | Sequence[str],
    *,
    label: str,
    output: Path,
    env: Mapping[str, str] | None = None,
) -> Process | str:
    """Start ``command`` in a new session with its output in a new ``output`` file:
    the process, or why it could not start.

    A string is split like a shell would (``shlex.split``) but run without a
    shell; a sequence is the argv itself.
    """
    try:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as exc:
        return f"cannot split the command line: {exc}"
    if not argv:
        return "empty command"
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
            return await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=out_fd,
                env=full_env,
                start_new_session=True,
            )
    except OSError as exc:
        return f"{argv[0]}: {exc.strerror or exc}"
    finally:
        os.close(out_fd)


async def run_script(
    command: str | Sequence[str],
    *,
    timeout: float,
    label: str,
    output: Path,
    env: Mapping[str, str] | None = None,
    grace: float = KILL_GRACE,
) -> ScriptResult:
    """Run ``command`` and wait for it for at most ``timeout`` seconds.

    A string is split like a shell would (``shlex.split``) but run without a
    shell; a sequence is the argv itself.
    The output file is truncated first. On timeout the process group is ended
    (``end_group``: SIGTERM, SIGKILL after ``grace``) before this returns, so
    the call takes at most ``timeout`` plus ``grace`` plus ``REAP_LIMIT``.
    Never raises for a failing command: the outcome (including "could not
    start") is in the result. When cancelled, the process group is killed
    at once.
    """
    started = anyio.current_time()
    process = await spawn(command, label=label, output=output, env=env)
    if isinstance(process, str):
        return ScriptResult(label, None, False, (), process)
    timed_out = False
    try:
        with anyio.move_on_after(timeout) as scope:
            await process.wait()
        if scope.cancelled_caught:
            timed_out = True
            await end_group(process.pid, grace, process)
    except BaseException:
        # Cancelled from outside (daemon shutting down): leave no orphan group.
        signal_group(process.pid, signal.SIGKILL)
        await _reap(process)
        raise
    returncode = None if timed_out else process.returncode
    duration = anyio.current_time() - started
    return ScriptResult(label, returncode, timed_out, read_tail(output), duration=duration)


@dataclass(frozen=True)
class ScriptRun:
    """One run of a script as ``ScriptLog`` keeps it; ``ended`` on ``anyio.current_time``."""

    result: ScriptResult
    ended: float

    def view(self, now: float) -> dict[str, Any]:
        """The run as plain JSON data for status."""
        result = self.result
        return {
            "ok": result.ok,
            "returncode": result.returncode,
            "timed_out": result.timed_out,
            "error": result.error or None,
            "duration": round(result.duration, 3),
            "ended_ago": round(max(0.0, now - self.ended), 3),
            "tail": list(result.tail),
        }


class ScriptLog:
    """The last ``keep`` runs of each script, by name (``start``, ``stop``...).

    ``record`` logs the run (rc, duration, the tail of its output) and keeps it;
    ``view`` is what status shows.
    """

    def __init__(self, keep: int = RUNS_KEPT) -> None:
        self.keep = keep
        self._runs: dict[str, deque[ScriptRun]] = {}

    def record(self, name: str, result: ScriptResult) -> None:
        runs = self._runs.setdefault(name, deque(maxlen=self.keep))
        runs.append(ScriptRun(result, anyio.current_time()))
        fields: dict[str, Any] = {
            "script": name,
            "rc": result.returncode,
            "seconds": round(result.duration, 3),
            "tail": list(result.tail),
        }
        if result.ok:
            log.info("script ran", **fields)
        else:
            log.error("script failed", reason=result.reason, **fields)

    def view(self) -> dict[str, list[dict[str, Any]]]:
        """Each script's kept runs, oldest first."""
        now = anyio.current_time()
        return {name: [run.view(now) for run in runs] for name, runs in sorted(self._runs.items())}
