"""The protected application as the runtime sees it: a virtual IP, scripts, a main process.

SafeKit's script set, each optional (``Scripts``):

- ``start`` = ``prestart``, acquire the VIP, the ``start`` script, then spawn
  the foreground ``command`` (a main process the daemon supervises: its PID is
  ``main_pid``, its death is reported by ``main_exited``);
- ``stop`` = ``prestop``, the ``stop`` script, end the foreground command
  (SIGTERM to its process group, SIGKILL after the stop timeout; the group of
  a command that died on its own too: what it left in it), then
  ``release``: the VIP released, then ``poststop``. (The executor runs the
  two halves itself, with the replication flushed in between.)
- ``restart`` = ``prestop``, ``stop``, ``poststop``, ``prestart``, ``start``
  (and the command), keeping the VIP (and, in the executor, the replication);
- ``start_both`` / ``stop_both`` when the module starts and stops, on either node;
- ``transition``: the hook, called with the old state, the new state and the
  reason (``run_hook``).

A script that overruns its timeout is ended with its whole process group
(``scripts.end_group``). Every run is logged and the last runs kept
(``history``, a ``ScriptLog``) for status. Either of the VIP and the scripts
may be absent: a cluster without them still elects a serving node, which is
useful to try the heartbeats alone.

A marker file exists from just before a start until the end of the next
stop. A daemon that was killed (kill -9, OOM) leaves it behind, with the
application possibly still running and the VIP still up; the next daemon
finds it (``recover``) and stops them before taking any decision, so that
"the daemon died" never leaves two nodes serving once the peer takes over.
The marker names the foreground command's process (PID and start time), which
survives its daemon (it runs in a session of its own): ``recover`` ends it.
"""

from __future__ import annotations

import json
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import anyio
import structlog
from anyio.abc import Process, TaskGroup

from failover.fsutil import fsync_directory, write_atomic
from failover.platform.scripts import (
    KILL_GRACE,
    ScriptLog,
    ScriptResult,
    end_group,
    read_tail,
    run_script,
    spawn,
)
from failover.platform.vip import VipError, VirtualIP

log = structlog.get_logger("failover.application")

COMMAND = "command"
"""The foreground command's name in the script log and its output file (command.log)."""
MARKER_MAX = 256
"""Bytes of the marker read back: it holds one small JSON object (or nothing)."""


@dataclass(frozen=True)
class Scripts:
    """The configured ``application`` section: commands and their time limits.

    ``timeout`` bounds each script; ``stop_timeout`` (default: ``timeout``)
    bounds each script of a stop and the foreground command's exit after SIGTERM.
    """

    start: str | None = None
    stop: str | None = None
    timeout: float = 30.0
    prestart: str | None = None
    prestop: str | None = None
    poststop: str | None = None
    start_both: str | None = None
    stop_both: str | None = None
    transition: str | None = None
    command: str | None = None
    stop_timeout: float | None = None

    @property
    def stop_limit(self) -> float:
        return self.timeout if self.stop_timeout is None else self.stop_timeout

    def limit_of(self, name: str) -> float:
        """The time limit of script ``name``."""
        stopping = name in ("prestop", "stop", "poststop", "stop_both", COMMAND)
        return self.stop_limit if stopping else self.timeout

    @property
    def budget(self) -> float:
        """Seconds the longest sequence of these scripts may take (every configured
        one, each to its limit plus the kill grace): a bound for any action."""
        names = [f.name for f in fields(self) if isinstance(getattr(self, f.name), str)]
        return sum(self.limit_of(name) + KILL_GRACE for name in names)


def parse_marker(content: bytes) -> tuple[int, int | None] | str:
    """The foreground command a marker names (PID, start time or None when it had
    already exited), or why the content names none: the marker is a file, read
    back by the next daemon before it signals anything."""
    if len(content) > MARKER_MAX:
        return f"longer than {MARKER_MAX} bytes"
    try:
        data = json.loads(content)
    except ValueError:
        return "not a JSON object"
    if not isinstance(data, dict):
        return "not a JSON object"
    pid, started = data.get("pid"), data.get("start_time")
    if type(pid) is not int or pid <= 1:
        return "no valid process id"
    if started is not None and (type(started) is not int or started < 0):
        return "no valid start time"
    return pid, started


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields_ = handle.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    # after the command name: state is field 3, starttime field 22
    return int(fields_[19]) if len(fields_) > 19 else None


def marked_group(content: bytes) -> int | str:
    """The process group to signal that a marker's ``content`` names (its leader's
    PID), or why it names none: empty (written before a start), unreadable, a
    command that had already exited, or a PID another process has taken since
    (its start time differs). A leader that is gone leaves its group's id
    usable: the kernel does not give the id of a group with members to a new
    process. (For the watchdog, which fences while this daemon cannot.)"""
    if not content:
        return "the marker names no command (written before a start)"
    named = parse_marker(content)
    if isinstance(named, str):
        return named
    pid, started = named
    if started is None:
        return "the command had already exited when the marker was written"
    now = _start_time(pid)
    if now is not None and now != started:
        return f"process {pid} is another process now"
    return pid


class Application:
    """Starts and stops the application on this node (see the module docstring).

    ``running`` is True from a successful ``start`` until the next ``stop``:
    the daemon uses it to stop what it started when it exits abnormally.
    ``both_running`` is True from ``start_both`` until ``stop_both``.
    ``marker`` (optional) is the file that outlives a killed daemon.
    """

    def __init__(
        self,
        scripts: Scripts | None,
        vip: VirtualIP | None,
        *,
        output_dir: Path,
        env: dict[str, str],
        marker: Path | None = None,
        fenced_why: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.scripts = scripts
        # why the watchdog fenced the application, if it did and the daemon has not
        # learnt it yet: a command killed then is reported as fenced, whichever of its
        # watcher and the watchdog's notice the resumed loop reads first
        self.fenced_why = fenced_why
        self.vip = vip
        self.output_dir = output_dir
        self.env = env
        self.marker = marker
        self.running = False
        self.both_running = False
        self.history = ScriptLog()
        self._main: Process | None = None
        # a command that died on its own: the next stop or restart ends what it
        # left in its process group (a pre-forking server's workers...)
        self._dead: Process | None = None

    @property
    def main(self) -> Process | None:
        """The foreground command's process while it is supervised."""
        return self._main

    @property
    def main_pid(self) -> int | None:
        """The application's main process while it runs, when the runtime knows it
        (a foreground command it started): what a process checker watches."""
        return None if self._main is None else self._main.pid

    # --- the marker ------------------------------------------------------------------

    def _set_marker(self, present: bool, content: bytes = b"") -> None:
        """Write ``content`` to the marker or remove it, durably: the marker is only
        useful if it survives a crash of the machine too."""
        if self.marker is None:
            return
        if present:
            write_atomic(self.marker, content)
        else:
            self.marker.unlink(missing_ok=True)
            fsync_directory(self.marker.parent)

    def _marked_command(self) -> int | None:
        """The process group of a foreground command a previous daemon left running
        (the marker names it, and the process with that PID started then). An
        empty marker was written before a start: it names no command."""
        if self.marker is None:
            return None
        try:
            with open(self.marker, "rb") as handle:
                content = handle.read(MARKER_MAX + 1)
        except OSError as exc:
            log.error("cannot read the start marker", file=str(self.marker), error=exc.strerror)
            return None
        if not content:
            return None
        named = parse_marker(content)
        if isinstance(named, str):
            log.error(
                "start marker unreadable: no command ended, the stop scripts still run",
                file=str(self.marker),
                why=named,
            )
            return None
        pid, started = named
        return pid if started is not None and _start_time(pid) == started else None

    async def recover(self) -> bool:
        """At daemon start: if a previous daemon died with the application started,
        stop it (its foreground command, the stop scripts, the VIP release).
        Returns True when it had to."""
        if self.marker is None or not self.marker.exists():
            return False
        log.warning("the previous daemon exited while the application ran: stopping it")
        orphan = self._marked_command()
        if orphan is not None:
            await self._end_orphan(orphan)
        await self.stop()
        return True

    async def _end_orphan(self, pgid: int) -> None:
        """End the process group of a command that is not our child."""
        log.warning("ending the application command left by the previous daemon", pid=pgid)
        await end_group(pgid, self._stop_limit)

    @property
    def _stop_limit(self) -> float:
        # (a reload may have removed the section since the command started)
        return self.scripts.stop_limit if self.scripts is not None else KILL_GRACE

    @property
    def budget(self) -> float:
        """Upper bound, in seconds, of one ``start``, ``stop`` or ``restart`` (every
        script to its time limit and kill grace, plus a margin for netlink and
        process reaping)."""
        return (self.scripts.budget if self.scripts else 0.0) + 5.0

    # --- start -----------------------------------------------------------------------

    async def start(self, repeat_in: TaskGroup | None = None) -> str | None:
        """``prestart``, acquire the VIP, the ``start`` script, spawn the foreground
        command. None on success, else why it failed.

        When a step after the VIP fails, the VIP is released again before
        returning (the marker stays: the application may be half started until
        a stop).
        """
        try:
            self._set_marker(True)
        except OSError as exc:
            # Without the marker a killed daemon could leave the application
            # running unseen: do not start it (the core decides what next).
            return f"cannot write {self.marker}: {exc.strerror or exc}"
        problem = await self._run("prestart")
        if problem is not None:
            return problem
        if self.vip is not None:
            try:
                await self.vip.acquire(repeat_in)
            except VipError as exc:
                return str(exc)
        problem = await self._launch()
        if problem is not None:
            await self.release_vip()
            return problem
        self.running = True
        return None

    async def _launch(self) -> str | None:
        """The ``start`` script, then the foreground command: None, or why it failed."""
        problem = await self._run("start")
        if problem is not None or self.scripts is None or self.scripts.command is None:
            return problem
        process = await spawn(
            self.scripts.command,
            label="application command",
            output=self.output_dir / f"{COMMAND}.log",
            env={**self.env, "FAILOVER_ACTION": COMMAND},
        )
        if isinstance(process, str):
            result = ScriptResult("application command", None, False, (), process)
            self.history.record(COMMAND, result)  # (logs it)
            return result.reason
        self._main = process
        log.info("application command started", pid=process.pid)
        started = _start_time(process.pid)
        try:
            self._set_marker(True, json.dumps({"pid": process.pid, "start_time": started}).encode())
        except OSError as exc:
            # The marker exists (written before the start): a killed daemon leaves
            # a command that only the stop script can end.
            log.error("cannot record the command in the marker", error=exc.strerror)
        return None

    def main_exited(self, process: Process) -> str | None:
        """``process`` (a foreground command) has exited: why, when it died on its own
        (then it is no longer supervised), or None when it was ended on purpose."""
        if self._main is not process:
            return None
        self._main, self._dead = None, process
        why = self.fenced_why() if process.returncode == -signal.SIGKILL else None
        if why is not None:
            reason = f"fenced by the watchdog: {why}"
            self.running = False
            self.history.record(COMMAND, _fenced_result(reason))
            return reason
        result = ScriptResult(
            "application command",
            process.returncode,
            False,
            read_tail(self.output_dir / f"{COMMAND}.log"),
        )
        self.history.record(COMMAND, result)
        return result.reason

    def fenced(self, reason: str) -> bool:
        """The watchdog stopped the application behind the daemon's back (its event
        loop had stalled): the command's group killed, the VIP released, the stop
        script run. The application no longer runs (a restart takes the VIP
        again; the next stop still runs every script and removes the marker).
        Returns True when the daemon must report it (``AppFailed``), False when
        the command's own watcher saw it die first and reports that."""
        self.running = False
        process, self._main = self._main, None
        if process is None:
            return self._dead is None
        self._dead = process  # the next stop ends what may be left of its group
        self.history.record(COMMAND, _fenced_result(reason))
        return True

    # --- stop ------------------------------------------------------------------------

    async def stop(self) -> str | None:
        """``run_stop_script`` then ``release``. None on success, else what went wrong.

        The VIP is released even when a script fails: a node that is told to
        stop must not keep the address its peer is about to take. (The executor
        runs the two halves itself, with the replication flushed in between.)
        """
        problem = await self.run_stop_script()
        return await self.release() or problem

    async def run_stop_script(self) -> str | None:
        """The first half of ``stop``: ``prestop``, the ``stop`` script, and the end of
        the foreground command. None on success, else why it failed (the first
        problem; every step runs whatever the others did)."""
        problems = [await self._run("prestop"), await self._run("stop"), await self._end_main()]
        return next((p for p in problems if p is not None), None)

    async def _end_main(self) -> str | None:
        """SIGTERM the foreground command's group; SIGKILL what is left after the stop
        timeout. The same for what a command that died on its own left in its
        group. None when everything ended on SIGTERM (or nothing was left)."""
        limit = self._stop_limit
        problem = None
        dead, self._dead = self._dead, None
        if dead is not None and await end_group(dead.pid, limit, dead):
            problem = (
                "what the dead application command left in its process group did not "
                f"exit within {limit:g} s of SIGTERM: killed"
            )
        process, self._main = self._main, None  # from here its exit is expected
        if process is None:
            return problem
        started = anyio.current_time()
        killed = await end_group(process.pid, limit, process)
        result = ScriptResult(
            "application command",
            process.returncode,
            killed,
            read_tail(self.output_dir / f"{COMMAND}.log"),
            duration=anyio.current_time() - started,
        )
        self.history.record(COMMAND, result)
        if killed:
            return f"application command did not exit within {limit:g} s of SIGTERM: killed"
        return problem

    async def release(self) -> str | None:
        """The second half of ``stop``: release the VIP, run ``poststop``, forget the
        application. None on success, else the first thing that went wrong."""
        problems = [await self.release_vip(), await self._run("poststop")]
        self.running = False
        try:
            self._set_marker(False)
        except OSError as exc:
            # A marker left behind costs one more stop at the next daemon start.
            log.error("cannot remove the start marker", file=str(self.marker), error=exc.strerror)
        return next((p for p in problems if p is not None), None)

    async def release_vip(self) -> str | None:
        """Remove the VIP if one is configured. None on success, else why it failed."""
        if self.vip is None:
            return None
        try:
            await self.vip.release()
        except VipError as exc:
            log.error("cannot release the virtual IP", error=str(exc))
            return str(exc)
        return None

    # --- restart, both, the hook -----------------------------------------------------

    async def restart(self, repeat_in: TaskGroup | None = None) -> str | None:
        """Restart the application where it is, keeping the VIP: ``prestop``,
        ``stop`` (and the command's end), ``poststop``, ``prestart``, ``start``
        (and the command). None on success, else why it failed: a failing stop
        half is logged, and the start half runs anyway (it decides the outcome).
        After a failed start (which gave the VIP back) the VIP is taken again
        after ``prestart``, as a start does. ``running`` is True afterwards
        whenever the VIP is held, whatever the outcome: only a stop gives it back."""
        stopping = [await self.run_stop_script(), await self._run("poststop")]
        for problem in stopping:
            if problem is not None:
                log.warning("restart: the stop half failed; starting anyway", problem=problem)
        problem = await self._run("prestart")
        if problem is None and not self.running and self.vip is not None:
            try:
                await self.vip.acquire(repeat_in)
            except VipError as exc:
                return str(exc)  # a failed acquire holds none of the addresses
            self.running = True
        problem = problem or await self._launch()
        self.running = self.running or problem is None
        return problem

    async def start_both(self) -> str | None:
        """The module starts on this node: ``start_both``."""
        self.both_running = True
        return await self._run("start_both")

    async def stop_both(self) -> str | None:
        """The module stops on this node (or the daemon exits): ``stop_both``."""
        self.both_running = False
        return await self._run("stop_both")

    async def run_hook(self, old: str, new: str, reason: str) -> str | None:
        """The ``transition`` hook, with the old state, the new state and the reason
        as its last three arguments and as FAILOVER_OLD_STATE, FAILOVER_NEW_STATE
        and FAILOVER_REASON."""
        env = {"FAILOVER_OLD_STATE": old, "FAILOVER_NEW_STATE": new, "FAILOVER_REASON": reason}
        return await self._run("transition", extra=(old, new, reason), env=env)

    async def _run(
        self, name: str, *, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> str | None:
        """Script ``name`` if it is configured: None on success, else why it failed.
        Its output goes to ``<name>.log``; the run is logged and kept in ``history``."""
        command = None if self.scripts is None else getattr(self.scripts, name)
        if self.scripts is None or command is None:
            return None
        label = f"{name} script"
        argv: str | list[str] = command
        if extra:
            try:
                argv = [*shlex.split(command), *extra]
            except ValueError as exc:
                return f"{label} could not run: {exc}"
        result = await run_script(
            argv,
            timeout=self.scripts.limit_of(name),
            label=label,
            output=self.output_dir / f"{name}.log",
            env={**self.env, "FAILOVER_ACTION": name, **(env or {})},
        )
        self.history.record(name, result)
        return None if result.ok else result.reason


def _fenced_result(reason: str) -> ScriptResult:
    """The command's run as status shows it once the watchdog killed it (the reason
    as its output's tail)."""
    return ScriptResult("application command", -signal.SIGKILL, False, (reason,))
