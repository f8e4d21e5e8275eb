"""Run an operator's command (start/stop script, checker) with a time limit.

Each command runs in its own session, hence its own process group, so that on
timeout the whole group (the script and everything it spawned in the
foreground) is stopped at once: SIGTERM to the group, then, after a short
grace (``KILL_GRACE``), SIGKILL to whatever of the group is left
(``end_group``). Its standard output and error go to a log file, in one of
two ways, and the last lines of that output explain a failure:

- straight into the file (the default): for the application's scripts, for a
  start script that launches the application in the background would
  otherwise leave the application writing into a pipe nobody reads any more
  (and dying of SIGPIPE). The tail is read back from the file.
- through a pipe the daemon reads (``piped=True``): for checkers and probes,
  whose verdict must never depend on whether their log could be written (on
  a full disk iputils ``ping`` fails to write its output and exits 1 although
  its address answers). The daemon copies what it reads to the file
  best-effort (a write error drops the rest of that run's output, logged
  once) and keeps the last ``TAIL_BYTES`` in memory for the tail. Reading is
  bounded: it stops at end of file, or ``DRAIN`` seconds after the command
  exits (or is killed) when something it left behind still holds the pipe;
  that process then loses its output.

``ScriptLog`` keeps the last runs of each script for the daemon's status.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import Process

from failover.platform.priority import spawning_as_inherited

TAIL_LINES = 5
TAIL_BYTES = 8192
"""Bytes of a command's output its tail is taken from."""
DRAIN = 0.5
"""Seconds a piped command's output is still read once the command has ended,
when a process it left behind keeps the pipe open."""
_DRAIN_READS = 16
"""Reads of what is left in the pipe after ``DRAIN``, at most (a holder writing
without end does not hold the run)."""
_READ_SIZE = 65536
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


def tail_lines(data: bytes, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of ``data``, right-stripped."""
    kept: deque[str] = deque(maxlen=lines)
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            kept.append(line.rstrip())
    return tuple(kept)


def read_tail(path: Path, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` non-empty lines of ``path`` (reads at most ``TAIL_BYTES``)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ()
    return tail_lines(data, lines)


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


def _argv(command: str | Sequence[str]) -> list[str] | str:
    """The argv of ``command`` (a string is split like a shell would), or why not."""
    try:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as exc:
        return f"cannot split the command line: {exc}"
    return argv or "empty command"


_losing: set[Path] = set()
"""Output files the last run could not (fully) write: a full disk is warned of
once, not at every probe, and its end noted."""


def _output_lost(output: Path, label: str, what: str, exc: OSError) -> None:
    if output not in _losing:
        _losing.add(output)
        log.warning(what, script=label, file=str(output), error=exc.strerror)


def _output_kept(output: Path, label: str) -> None:
    if output in _losing:
        _losing.discard(output)
        log.info("script output written again", script=label, file=str(output))


def _open_output(output: Path, label: str) -> int | None:
    """A new ``output`` file opened for appending, or None (logged) if it cannot be."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        # A new inode each run: a background process started by the previous
        # run may still hold the old file open; truncating it under its feet
        # would leave a sparse file.
        output.unlink(missing_ok=True)
        return os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        # A full or read-only state disk must not fail the script (a checker that
        # fails for its log would hand the service over): its output is lost.
        _output_lost(output, label, "script output discarded", exc)
        return None


async def _start(argv: list[str], out_fd: int, env: Mapping[str, str] | None) -> Process | str:
    """Start ``argv`` in a new session, its output on ``out_fd``: the process, or why not."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
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
    argv = _argv(command)
    if isinstance(argv, str):
        return argv
    out_fd = _open_output(output, label)
    if out_fd is None:
        out_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    else:
        _output_kept(output, label)  # (as far as the daemon can know)
    try:
        return await _start(argv, out_fd, env)
    finally:
        os.close(out_fd)


class _Capture:
    """The daemon's end of a piped command's output: what it reads is copied to
    the output file best-effort and its last ``TAIL_BYTES`` kept for the tail."""

    def __init__(self, read_fd: int, output: Path, label: str) -> None:
        os.set_blocking(read_fd, False)
        self._fd: int | None = read_fd
        self._output = output
        self._label = label
        self._file = _open_output(output, label)
        self._kept = bytearray()
        self.ended = anyio.Event()
        """Set at end of file: no process holds the pipe any more."""

    def _keep(self, data: bytes) -> None:
        self._kept += data
        del self._kept[:-TAIL_BYTES]
        if self._file is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._file, view) :]
        except OSError as exc:
            # A full disk loses the rest of the log, never the command's verdict.
            _output_lost(self._output, self._label, "script output lost from here on", exc)
            os.close(self._file)
            self._file = None

    def _read(self) -> bool:
        """One read of what the pipe holds; False when there is nothing to read now."""
        assert self._fd is not None
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.ended.set()
            return False
        self._keep(data)
        return True

    async def pump(self) -> None:
        """Read until end of file (or until cancelled)."""
        while not self.ended.is_set():
            assert self._fd is not None
            await anyio.wait_readable(self._fd)
            self._read()

    def tail(self) -> tuple[str, ...]:
        """What is left in the pipe (a bounded number of reads), then the tail."""
        for _ in range(_DRAIN_READS):
            if self._fd is None or self.ended.is_set() or not self._read():
                break
        return tail_lines(bytes(self._kept))

    def close(self) -> None:
        if self._file is not None:
            _output_kept(self._output, self._label)
        for fd in (self._fd, self._file):
            if fd is not None:
                os.close(fd)
        self._fd = self._file = None


async def run_script(
    command: str | Sequence[str],
    *,
    timeout: float,
    label: str,
    output: Path,
    env: Mapping[str, str] | None = None,
    grace: float = KILL_GRACE,
    piped: bool = False,
) -> ScriptResult:
    """Run ``command`` and wait for it for at most ``timeout`` seconds.

    A string is split like a shell would (``shlex.split``) but run without a
    shell; a sequence is the argv itself.
    The output file is made anew. With ``piped`` the output goes through a pipe
    the daemon reads (module docstring): a log that cannot be written never
    changes the result; the call may take ``DRAIN`` seconds more when the
    command leaves a process holding the pipe. On timeout the process group is
    ended (``end_group``: SIGTERM, SIGKILL after ``grace``) before this
    returns, so the call takes at most ``timeout`` plus ``grace`` plus
    ``REAP_LIMIT`` (plus ``DRAIN``).
    Never raises for a failing command: the outcome (including "could not
    start") is in the result. When cancelled, the process group is killed
    at once.
    """
    started = anyio.current_time()
    argv = _argv(command)
    if isinstance(argv, str):
        return ScriptResult(label, None, False, (), argv)
    capture: _Capture | None = None
    if piped:
        try:
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:  # out of descriptors
            return ScriptResult(label, None, False, (), f"cannot make a pipe: {exc.strerror}")
        capture = _Capture(read_fd, output, label)
        try:
            process = await _start(argv, write_fd, env)
        finally:
            os.close(write_fd)  # the command's copy is the only writer left
    else:
        process = await spawn(argv, label=label, output=output, env=env)
    try:
        if isinstance(process, str):
            return ScriptResult(label, None, False, (), process)
        timed_out = await _wait(process, timeout, grace, capture)
        tail = read_tail(output) if capture is None else capture.tail()
    finally:
        if capture is not None:
            capture.close()
    returncode = None if timed_out else process.returncode
    duration = anyio.current_time() - started
    return ScriptResult(label, returncode, timed_out, tail, duration=duration)


async def _wait(process: Process, timeout: float, grace: float, capture: _Capture | None) -> bool:
    """Wait for ``process`` (ending its group at ``timeout``) while ``capture``, if
    any, reads its output, for ``DRAIN`` seconds at most after it ended: whether
    it timed out."""
    timed_out = False
    try:
        async with anyio.create_task_group() as tasks:
            if capture is not None:
                tasks.start_soon(capture.pump)
            with anyio.move_on_after(timeout) as scope:
                await process.wait()
            if scope.cancelled_caught:
                timed_out = True
                await end_group(process.pid, grace, process)
            if capture is not None:
                with anyio.move_on_after(DRAIN):
                    await capture.ended.wait()
                tasks.cancel_scope.cancel()
    except BaseException:
        # Cancelled from outside (daemon shutting down): leave no orphan group.
        signal_group(process.pid, signal.SIGKILL)
        await _reap(process)
        raise
    return timed_out


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
        self.on_run: Callable[[str, float, bool], None] | None = None
        """Called with each run's name, duration and success (the metrics)."""

    def record(self, name: str, result: ScriptResult) -> None:
        runs = self._runs.setdefault(name, deque(maxlen=self.keep))
        runs.append(ScriptRun(result, anyio.current_time()))
        if self.on_run is not None:
            self.on_run(name, result.duration, result.ok)
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
