"""The protected application as the runtime sees it: a virtual IP and two scripts.

Starting acquires the virtual IP (if configured) and then runs the start
script (if configured); stopping runs the stop script and then releases the
virtual IP. Either may be absent: a cluster without them still elects a
serving node, which is useful to try the heartbeats alone.

A marker file exists from just before a start until the end of the next
stop. A daemon that was killed (kill -9, OOM) leaves it behind, with the
application possibly still running and the VIP still up; the next daemon
finds it (``recover``) and stops them before taking any decision, so that
"the daemon died" never leaves two nodes serving once the peer takes over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from anyio.abc import TaskGroup

from failover.platform.scripts import run_script
from failover.platform.vip import VipError, VirtualIP

log = structlog.get_logger("failover.application")


@dataclass(frozen=True)
class Scripts:
    """The configured ``application`` section: commands and their time limit."""

    start: str
    stop: str
    timeout: float


class Application:
    """Starts and stops the application on this node (see the module docstring).

    ``running`` is True from a successful ``start`` until the next ``stop``:
    the daemon uses it to stop what it started when it exits abnormally.
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
    ) -> None:
        self.scripts = scripts
        self.vip = vip
        self.output_dir = output_dir
        self.env = env
        self.marker = marker
        self.running = False
        # the application's main process while it runs, when the runtime knows
        # it (a foreground command it started): what a process checker watches
        self.main_pid: int | None = None

    def _set_marker(self, present: bool) -> None:
        if self.marker is None:
            return
        if present:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.marker, os.O_WRONLY | os.O_CREAT, 0o644))
        else:
            self.marker.unlink(missing_ok=True)
        # The marker is only useful if it survives a crash of the machine too.
        directory = os.open(self.marker.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def recover(self) -> bool:
        """At daemon start: if a previous daemon died with the application started,
        stop it (stop script, VIP release). Returns True when it had to."""
        if self.marker is None or not self.marker.exists():
            return False
        log.warning("the previous daemon exited while the application ran: stopping it")
        await self.stop()
        return True

    @property
    def budget(self) -> float:
        """Upper bound, in seconds, of one ``start`` or ``stop`` (the script timeout
        plus a margin for netlink and process reaping)."""
        return (self.scripts.timeout if self.scripts else 0.0) + 5.0

    async def start(self, repeat_in: TaskGroup | None = None) -> str | None:
        """Acquire the VIP then run the start script. None on success, else why it failed.

        Takes at most the script timeout plus a few milliseconds of netlink.
        When the start script fails, the VIP is released again before returning
        (the marker stays: the application may be half started until a stop).
        """
        try:
            self._set_marker(True)
        except OSError as exc:
            # Without the marker a killed daemon could leave the application
            # running unseen: do not start it (the core decides what next).
            return f"cannot write {self.marker}: {exc.strerror or exc}"
        if self.vip is not None:
            try:
                await self.vip.acquire(repeat_in)
            except VipError as exc:
                return str(exc)
        problem = await self._run_script("start")
        if problem is not None:
            await self.release_vip()
            return problem
        self.running = True
        return None

    async def stop(self) -> str | None:
        """Run the stop script then release the VIP. None on success, else what went wrong.

        The VIP is released even when the script fails: a node that is told to
        stop must not keep the address its peer is about to take. (The executor
        runs the two halves itself, with the replication flushed in between.)
        """
        problem = await self.run_stop_script()
        return await self.release() or problem

    async def run_stop_script(self) -> str | None:
        """The first half of ``stop``: the stop script. None on success, else why it failed."""
        return await self._run_script("stop")

    async def _run_script(self, action: Literal["start", "stop"]) -> str | None:
        """The ``action`` script, if scripts are configured: None on success, else why
        it failed (logged). Its output goes to ``<action>.log``."""
        if self.scripts is None:
            return None
        result = await run_script(
            self.scripts.start if action == "start" else self.scripts.stop,
            timeout=self.scripts.timeout,
            label=f"{action} script",
            output=self.output_dir / f"{action}.log",
            env={**self.env, "FAILOVER_ACTION": action},
        )
        if result.ok:
            return None
        log.error(f"{action} script failed", reason=result.reason)
        return result.reason

    async def release(self) -> str | None:
        """The second half of ``stop``: release the VIP, forget the application.
        None on success, else why the VIP could not be released."""
        problem = await self.release_vip()
        self.running = False
        try:
            self._set_marker(False)
        except OSError as exc:
            # A marker left behind costs one more stop at the next daemon start.
            log.error("cannot remove the start marker", file=str(self.marker), error=exc.strerror)
        return problem

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
