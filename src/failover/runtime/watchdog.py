"""The watchdog: fencing of a daemon whose event loop has stalled.

Invariant. While the daemon's event loop is stalled (SIGSTOP, a loop blocked
by a bug, a machine swapping), the application and the virtual IP do not
outlive the last deadline the loop gave. That deadline is:

- with an arbitrator, the lease's ``fence_at`` (``asked + lease_ttl -
  lease_margin`` on this node's clock): past it the arbitrator may grant the
  peer, and the core itself would have stopped serving;
- without one, ``last heartbeat + dead_timeout - heartbeat_interval / 2``:
  the peer counts ``dead_timeout`` of silence from the last heartbeat it
  received, which left here no earlier than the core emitted it, so it takes
  over no earlier than ``last heartbeat + dead_timeout``. The margin of half
  a heartbeat interval (100 ms by default) covers what the fence takes
  before the address is gone (the watchdog waking up at the daemon's raised
  priority, a SIGKILL, a netlink request: a few milliseconds) and the two
  clocks' drift over one dead timeout (parts per million); it is kept small
  because a pause shorter than the dead timeout, which the peer tolerates,
  should not cost a fence either. It is counted from the last heartbeat the
  core *emitted* (sent or not: a node serving alone, its links down, still
  emits them), not from the last feed: a feed made on the timer between two
  heartbeats must not push the deadline past what the peer counts. None
  while the peer's last word is its announced stop (it takes nothing over).

The core derives it (``core.facts.watchdog_deadline``) from its facts and the
runtime's last heartbeat.

Only the loop feeds: it sends the deadline after each of its steps and on a
timer (``Daemon._feed_watchdog``), or "no deadline" (``None``) while the node
neither serves nor runs the application, or no peer can take over. A loop
that stops feeding therefore leaves the last deadline standing.

The watchdog is a process of its own (``python -m failover.runtime.watchdog``,
in a session of its own so that a signal to the daemon's process group does
not stop it), not a task of the loop: it must run while the loop does not.
The daemon holds the other end of its standard input: it reads a plan (one
JSON line: what to fence and how), then feeds (one JSON line each:
``{"deadline": <CLOCK_MONOTONIC seconds> | null}``). At the deadline without a
newer feed it fences, each step logged:

0. the FUSE connections of the replicated directories' mirrors aborted
   (``replication/fusermount.py``, through ``/sys/fs/fuse/connections``): an
   application blocked in the mirror of a stopped daemon (a request it will
   not answer while stopped) gets its error at once and can be ended, and
   nothing written through the mirror is acknowledged after the fence. The
   mounts stay, dead, over the directories (never the directory itself
   uncovered under the application), until the next mount detaches them.
   Done even without a start marker: the node serves, its mirrors too.
1. SIGKILL to the foreground command's process group, as the application's
   start marker names it (PID and start time: a PID reused since is left
   alone; a leader gone with its group still there is killed by group, whose
   id cannot be reused while it has members). No marker: the application is
   stopped and the VIP released (a start writes the marker first, a stop
   removes it last), there is nothing to fence.
2. the VIP released (every configured address, idempotently);
3. the ``stop`` script, with its stop timeout, if one is configured;
4. a record: a line on its standard output, which the daemon reads when it
   resumes (``FENCED``: the daemon reports it to the core as ``AppFailed``, the
   application's death it already knows), and the same as a file
   (``watchdog.fenced`` in the node's directory) for a daemon that is gone.

It then stays disarmed until a feed brings a later deadline (a late feed
carrying the deadline just fenced adds nothing). Each feed also says when the
loop made it (``sent_at``): a feed is judged by that, not by when this
process reads it, so a watchdog that reads late (busy, just started) does not
fence a loop that fed in time, and a feed made only after the standing
deadline had passed (the loop was stalled until then) does not save that
deadline: it is fenced first.

End of the daemon. EOF on its standard input means the daemon is gone: it
closes it at a clean exit after stopping the application and sending "no
deadline" (the watchdog then exits); when it is killed (kill -9, OOM) the
kernel closes it. A watchdog that reads EOF while a deadline stands fences
at once rather than at the deadline: the peer takes over after
``dead_timeout`` whether our daemon is paused or dead, nothing can feed it
any more, and stopping early leaves no race with the next daemon (which
waits for this watchdog to end, through the lock it holds, before its
``recover``; the marker stays, so that ``recover`` runs the whole stop again,
harmlessly).

The audit journal after the daemon's death. A dead daemon cannot journal the
fence, and the audit would count its application and address as held (and its
state as serving) until the next daemon's start: with an arbitrator, the
peer's takeover would read as two servers. So after EOF (the daemon gone: this
process is the journal's only writer) the watchdog appends the ``resource``
stop record the daemon writes after a fence (``fence_fields``), marked
``watchdog: true``, in the daemon's boot after its last record
(``journal_fence``): for the fence made at EOF, or for one made at a deadline
whose record file the daemon did not remove (it does once it journalled it).
Written within milliseconds of the fence, long before the lease can run out.
Never before EOF: a stalled daemon may resume and write.

Limits. The watchdog only helps while it runs itself: a hung kernel, or the
watchdog stalled with the daemon (the whole machine swapping, a SIGSTOP sent
to both), is what a hardware watchdog is for. With ``device`` configured the
watchdog writes to that device (``/dev/watchdog``) every ``device_interval``
from its own loop and writes the magic ``V`` before a clean close; the kernel
or the board resets the machine if those writes stop. A fence that fails
(SIGKILL refused, VIP not released) stops those writes: the reset is the
fence of last resort. Off by default; never opened by the tests, which pass
a plain file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import select
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import structlog
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from failover.fsutil import write_atomic
from failover.platform.application import MARKER_MAX, marked_group
from failover.platform.scripts import KILL_GRACE, run_script
from failover.platform.vip import VipError, VirtualAddress, VirtualIP
from failover.replication.fusermount import abort_connections

log = structlog.get_logger("failover.watchdog")

FENCED = "fenced"
"""The key of the notice the watchdog writes on its standard output after a fence."""
DEVICE_MAGIC = b"V"
"""Written before closing the device: the driver disarms (the "magic close")."""
LINE_MAX = 64 * 1024
"""Bytes of one line on either pipe (the plan, a feed, a notice)."""
RELEASE_LIMIT = 5.0
"""Seconds the virtual IP's release may take (netlink answers in milliseconds)."""
LOCK_POLL = 0.05
"""Seconds between two looks at a previous watchdog's lock (a bounded poll)."""


@dataclass(frozen=True)
class Plan:
    """What to fence and how: sent by the daemon as the first line."""

    marker: str  # the application's start marker (names the command's group)
    record: str  # the file left for the next daemon after a fence
    lock: str  # held while the watchdog runs: the next daemon waits for it
    addresses: tuple[tuple[str, str], ...] = ()  # (address/prefix, interface)
    stop: str | None = None
    stop_timeout: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    output_dir: str | None = None  # where the stop script's output goes
    device: str | None = None
    device_interval: float = 1.0
    log_file: str | None = None
    # the node's audit journal, its name and the daemon's boot: where a fence made
    # after the daemon's death is journalled (None: not journalled)
    journal: str | None = None
    node: str = ""
    boot: int = 0
    # the replicated directories: their mirrors' FUSE connections are aborted first
    mirrors: tuple[str, ...] = ()

    def to_line(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    def to_replan_line(self) -> bytes:
        """The line that gives a running watchdog this plan's fence (a reload)."""
        return json.dumps({"plan": asdict(self)}).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Plan:
        return cls.from_data(json.loads(line))

    @classmethod
    def from_data(cls, data: object) -> Plan:
        if not isinstance(data, dict):
            raise ValueError("the plan is not a JSON object")
        data["addresses"] = tuple((str(a), str(i)) for a, i in data.get("addresses", ()))
        data["mirrors"] = tuple(str(path) for path in data.get("mirrors", ()))
        return cls(**data)

    @property
    def budget(self) -> float:
        """Seconds one fence may take at most (the stop script to its limit, the kill
        grace, netlink)."""
        return (self.stop_timeout + KILL_GRACE if self.stop else 0.0) + 5.0


def feed_line(deadline: float | None, sent_at: float | None = None) -> bytes:
    """One feed: the CLOCK_MONOTONIC time by which the application must be gone, or
    None while the node does not serve; ``sent_at``, when the loop made it."""
    return json.dumps({"deadline": deadline, "sent_at": sent_at}).encode() + b"\n"


def _time(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"{key} {value!r} is not a finite number")
    return float(value)


def parse_feed(data: object) -> tuple[float | None, float | None]:
    """The deadline and the time sent of a feed (a line's JSON); ``ValueError``
    naming what is wrong."""
    if not isinstance(data, dict) or "deadline" not in data:
        raise ValueError("a feed is a JSON object with a 'deadline'")
    return _time(data, "deadline"), _time(data, "sent_at")


# --- the watchdog process --------------------------------------------------------------


class Watch:
    """The watchdog's state and loop (in its own process: plain blocking code, no
    event loop to stall). ``notices`` is where the fence notices go (the
    daemon's pipe); ``clock`` is CLOCK_MONOTONIC, the daemon's clock."""

    def __init__(
        self,
        plan: Plan,
        notices: BinaryIO,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.notices = notices
        self.clock = clock
        self.deadline: float | None = None
        self.fenced: float | None = None  # the last deadline fenced
        self.last_notice: dict[str, Any] | None = None  # the last fence's notice
        self.device: int | None = None
        self.device_starved = False  # a fence failed: the device resets the machine
        self._next_device = 0.0

    # --- feeds -----------------------------------------------------------------------

    def feed(self, deadline: float | None, sent_at: float | None = None) -> None:
        """Apply a feed. One the loop made only after the standing deadline had
        passed does not save it (the loop was stalled until then): that deadline
        is fenced first, however late this watchdog reads the feed."""
        if self.deadline is not None and sent_at is not None and sent_at >= self.deadline:
            self.fence("the daemon's event loop fed only after its deadline", self.deadline)
        if deadline is not None and self.fenced is not None and deadline <= self.fenced:
            return  # the deadline already fenced, sent again before the daemon learned it
        if deadline is not None and self.deadline is None:
            log.info("armed", seconds_left=round(deadline - self.clock(), 3))
        elif deadline is None and self.deadline is not None:
            log.info("disarmed: the node does not serve, or no peer can take over")
        self.deadline = deadline

    def replan(self, plan: Plan) -> None:
        """A reload changed the fence (the scripts, their environment): the device,
        its interval, the lock and the log stay those of the start."""
        self.plan = replace(
            plan,
            lock=self.plan.lock,
            device=self.plan.device,
            device_interval=self.plan.device_interval,
            log_file=self.plan.log_file,
        )
        log.info("fence plan replaced (configuration reload)", stop=plan.stop)

    def _lines(self, buffer: bytes) -> bytes:
        """Apply every complete line of ``buffer``; returns the incomplete rest."""
        *lines, rest = buffer.split(b"\n")
        for line in lines:
            try:
                data = json.loads(line)
                if isinstance(data, dict) and "plan" in data:
                    self.replan(Plan.from_data(data["plan"]))
                else:
                    self.feed(*parse_feed(data))
            except (ValueError, TypeError) as exc:
                log.error("line ignored: the previous deadline and plan stand", error=str(exc))
        if len(rest) > LINE_MAX:
            log.error("feed longer than the limit ignored", limit=LINE_MAX)
            return b""
        return rest

    def run(self, fd: int) -> int:
        """Watch feeds on ``fd`` until EOF; returns the exit status."""
        self._open_device()
        buffer = b""
        try:
            while True:
                # the feeds waiting first: one made in time saves the deadline even
                # when this process reads it late (``feed`` judges by when it was made)
                if self._wait(fd):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        self._fence_orphan()
                        log.info("the daemon is gone: the watchdog exits", pid=os.getpid())
                        return 0
                    buffer = self._lines(buffer + chunk)
                if self.deadline is not None and self.clock() >= self.deadline:
                    self.fence(
                        "no feed from the daemon's event loop before its deadline", self.deadline
                    )
                self._feed_device()
        finally:
            self._close_device()

    def _fence_orphan(self) -> None:
        """At EOF: the daemon is gone. Fence what it served, and journal the fence in
        its place (this process is now the journal's only writer): the one just made,
        or one made at a deadline that the daemon died before journalling (its record
        file is still there: the daemon removes it once it journalled it)."""
        notice = None
        if self.deadline is not None:
            notice = self.fence("the daemon is gone while its node served", self.deadline)
        elif self.fenced is not None and Path(self.plan.record).exists():
            notice = self.last_notice
        if notice is not None:
            journal_fence(self.plan, notice)

    def _wait(self, fd: int) -> bool:
        """Wait for a feed, the deadline or the device's next write: True when ``fd``
        is readable."""
        now = self.clock()
        waits = [self.deadline - now] if self.deadline is not None else []
        if self.device is not None and not self.device_starved:
            waits.append(self._next_device - now)
        timeout = max(0.0, min(waits)) if waits else None
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else math.ceil(timeout * 1000)))

    # --- the device ------------------------------------------------------------------

    def _open_device(self) -> None:
        if self.plan.device is None:
            return
        try:
            self.device = os.open(self.plan.device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.error(
                "cannot open the watchdog device: running without it",
                device=self.plan.device,
                error=exc.strerror,
            )
            return
        log.info("watchdog device opened", device=self.plan.device)
        self._feed_device()

    def _feed_device(self) -> None:
        if self.device is None or self.device_starved or self.clock() < self._next_device:
            return
        try:
            os.write(self.device, b"\0")
        except OSError as exc:
            log.error("cannot write to the watchdog device", error=exc.strerror)
        self._next_device = self.clock() + self.plan.device_interval

    def _close_device(self) -> None:
        if self.device is None:
            return
        if self.device_starved:
            log.critical("watchdog device closed without the magic close: the machine resets")
        else:
            with contextlib.suppress(OSError):
                os.write(self.device, DEVICE_MAGIC)
        os.close(self.device)
        self.device = None

    # --- the fence -------------------------------------------------------------------

    def fence(self, why: str, deadline: float) -> dict[str, Any]:
        """Kill the command's group, release the VIP, run the stop script, record it."""
        self.deadline, self.fenced = None, deadline
        late = round(self.clock() - deadline, 3)
        log.error("fencing the application", why=why, late=late)
        notice: dict[str, Any] = {"why": why, "deadline": deadline, "late": late}
        steps: dict[str, str] = {}
        if self.plan.mirrors:
            steps["abort"] = self._abort()
            notice["aborted_at"] = self.clock()
        content = self._marker()
        if content is None:
            log.info("no start marker: the application is stopped, nothing to fence")
            notice["steps"], notice["at"] = steps, self.clock()
            self.last_notice = notice
            return notice
        steps["kill"] = self._kill(content)
        notice["killed_at"] = self.clock()
        self._hint(notice)
        steps["vip"] = anyio.run(self._release)
        self._feed_device()  # (the stop script may take long)
        steps["stop"] = anyio.run(self._stop_script)
        notice["steps"] = steps
        notice["at"] = self.clock()
        self.last_notice = notice
        if self.device is not None and (
            steps["kill"].startswith("failed") or steps["vip"].startswith("failed")
        ):
            self.device_starved = True
            log.critical("the fence failed: the watchdog device is no longer fed", steps=steps)
        self._record(notice)
        return notice

    def _abort(self) -> str:
        """Abort the mirrors' FUSE connections: every request of the application pending
        in them fails, and every later one, even while the daemon serving them is stopped
        (its loop stalled); nothing written through them is acknowledged any more."""
        try:
            result = abort_connections(self.plan.mirrors)
        except Exception as exc:  # step 0 never keeps the kill and the release from running
            result = f"failed: {type(exc).__name__}: {exc}"
        if result.startswith("failed"):
            log.error("cannot abort the replicated directories' mirrors", result=result)
        else:
            log.warning("mirrors' connections aborted", result=result)
        return result

    def _marker(self) -> bytes | None:
        try:
            with open(self.plan.marker, "rb") as handle:
                return handle.read(MARKER_MAX + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read the start marker: fencing anyway", error=exc.strerror)
            return b""

    def _kill(self, content: bytes) -> str:
        group = marked_group(content)
        if isinstance(group, str):
            log.warning("no command to kill", why=group)
            return f"none: {group}"
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            log.info("the command's process group was already gone", pgid=group)
            return "gone"
        except OSError as exc:
            log.error("cannot kill the command's process group", pgid=group, error=exc.strerror)
            return f"failed: {exc.strerror}"
        log.warning("killed the command's process group", pgid=group)
        return f"killed group {group}"

    async def _release(self) -> str:
        if not self.plan.addresses:
            return "none configured"
        vip = VirtualIP(
            [
                VirtualAddress(address, interface, announce_count=1, announce_interval=1.0)
                for address, interface in self.plan.addresses
            ]
        )
        try:
            with anyio.fail_after(RELEASE_LIMIT):
                await vip.release()
        except VipError as exc:
            log.error("cannot release the virtual IP", error=str(exc))
            return f"failed: {exc}"
        except TimeoutError:
            log.error("the virtual IP release did not finish", seconds=RELEASE_LIMIT)
            return f"failed: not released within {RELEASE_LIMIT:g} s"
        return "released"

    async def _stop_script(self) -> str:
        if self.plan.stop is None:
            return "none configured"
        output = Path(self.plan.output_dir or ".") / "stop.log"
        result = await run_script(
            self.plan.stop,
            timeout=self.plan.stop_timeout,
            label="stop script (watchdog)",
            output=output,
            env={**self.plan.env, "FAILOVER_ACTION": "stop", "FAILOVER_FENCED": "1"},
        )
        return "ok" if result.ok else f"failed: {result.reason}"

    def _hint(self, notice: dict[str, Any]) -> None:
        """The record file at once after the kill, before the VIP and the stop script
        (not durable, nothing on the pipe): a daemon that resumes meanwhile and sees its
        command killed reads why here (``Application.fenced_why``)."""
        path = Path(self.plan.record)
        temp = path.with_name(f".{path.name}.hint")
        try:
            temp.write_bytes(json.dumps({FENCED: notice}).encode() + b"\n")
            os.replace(temp, path)
        except OSError as exc:
            log.error("cannot write the fence record", file=self.plan.record, error=exc.strerror)

    def _record(self, notice: dict[str, Any]) -> None:
        line = json.dumps({FENCED: notice}).encode() + b"\n"
        try:
            write_atomic(Path(self.plan.record), line)
        except OSError as exc:
            log.error("cannot write the fence record", file=self.plan.record, error=exc.strerror)
        try:
            self.notices.write(line)
            self.notices.flush()
        except (BrokenPipeError, ValueError):
            pass  # the daemon is gone: the file tells the next one


@contextlib.contextmanager
def _holding(path: str) -> Iterator[bool]:
    """Hold the watchdog lock while the watchdog runs; False if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def main() -> int:
    """``python -m failover.runtime.watchdog``: the plan, then feeds, on stdin."""
    from failover.runtime.logging import configure_logging  # noqa: PLC0415

    # the notices keep the pipe; anything printed goes to stderr
    notices = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    # Only the daemon ends it (EOF): not a ^C, nor the SIGTERM a service manager
    # sends to every process of the service (the daemon's stop comes first).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    fd = sys.stdin.fileno()
    first = b""
    while not first.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk or len(first) > LINE_MAX:
            print("failover watchdog: no plan on standard input", file=sys.stderr)
            return 2
        first += chunk
    try:
        plan = Plan.from_line(first)
    except (ValueError, TypeError) as exc:
        print(f"failover watchdog: invalid plan: {exc}", file=sys.stderr)
        return 2
    configure_logging(plan.log_file, console=False)
    with _holding(plan.lock) as held:
        if not held:
            log.error("another watchdog holds the lock: not watching", lock=plan.lock)
            return 2
        log.info("watchdog started", pid=os.getpid(), device=plan.device)
        return Watch(plan, notices).run(fd)


# --- the daemon's side -----------------------------------------------------------------


async def wait_for_previous(lock: Path, bound: float) -> bool:
    """Wait (at most ``bound`` seconds) until no watchdog of an earlier daemon runs:
    it may be fencing the application that ``recover`` is about to stop. True
    when none runs (any more)."""
    with anyio.move_on_after(bound):
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
            await anyio.sleep(LOCK_POLL)
    return False


Fenced = Callable[[dict[str, Any]], Awaitable[None]]


class WatchdogClient:
    """The daemon's end: starts the watchdog process, feeds it, reads its notices.

    ``feed`` takes a deadline on the daemon's clock (``anyio.current_time()``)
    and sends it as CLOCK_MONOTONIC, only when it changed."""

    def __init__(self, plan: Plan, on_fenced: Fenced) -> None:
        self.plan = plan
        self.on_fenced = on_fenced
        self.process: Process | None = None
        self._sent: tuple[float | None] | None = None
        self._closing = False

    async def start(self) -> str | None:
        """Start the process and send the plan: None, or why it could not start."""
        try:
            self.process = await anyio.open_process(
                [sys.executable, "-m", "failover.runtime.watchdog"],
                stderr=None,
                start_new_session=True,
            )
            assert self.process.stdin is not None
            await self.process.stdin.send(self.plan.to_line())
        except OSError as exc:
            return f"cannot start the watchdog process: {exc.strerror or exc}"
        log.info("watchdog process started", pid=self.process.pid)
        return None

    async def replan(self, plan: Plan) -> None:
        """Give the running watchdog a new fence (after a configuration reload)."""
        self.plan = plan
        await self._send(plan.to_replan_line())

    async def _send(self, line: bytes) -> None:
        process = self.process
        if process is None or process.stdin is None or self._closing:
            return
        try:
            await process.stdin.send(line)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            log.error("the watchdog process is gone: the application is not fenced")
            self.process = None

    async def feed(self, deadline: float | None) -> None:
        process = self.process
        if process is None or process.stdin is None or self._closing:
            return
        if self._sent == (deadline,):
            return
        self._sent = (deadline,)
        now = time.monotonic()
        if deadline is not None:  # on CLOCK_MONOTONIC (the same as ours, unless virtual)
            deadline = now + (deadline - anyio.current_time())
        await self._send(feed_line(deadline, now))

    async def listen(self) -> None:
        """Read the watchdog's notices until it exits."""
        process = self.process
        if process is None or process.stdout is None:
            return
        lines = BufferedByteReceiveStream(process.stdout)
        while True:
            try:
                line = await lines.receive_until(b"\n", LINE_MAX)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
                break
            except anyio.DelimiterNotFound:
                log.error("over-long line from the watchdog process ignored")
                continue
            try:
                notice = json.loads(line)[FENCED]
            except (ValueError, KeyError, TypeError):
                log.error("unreadable line from the watchdog process", line=line[:200])
                continue
            await self.on_fenced(notice)
        if not self._closing:
            log.error("the watchdog process exited: the application is no longer fenced")

    async def close(self, *, serving: bool) -> None:
        """At the daemon's exit: "no deadline" unless the application still runs
        (then EOF makes the watchdog fence at once), EOF, and its end."""
        process = self.process
        if process is None or process.stdin is None:
            return
        if not serving:
            await self.feed(None)
        self._closing = True
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await process.stdin.aclose()
        with anyio.move_on_after(self.plan.budget) as scope:
            await process.wait()
        if scope.cancelled_caught:
            log.error("the watchdog process did not exit: killed")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        with contextlib.suppress(OSError):
            await process.aclose()


def fence_fields(notice: dict[str, Any], vip: str | None) -> dict[str, Any]:
    """The audit journal's ``resource`` stop record of a fence (docs/audit.md), the
    same whether the daemon writes it on resuming or the watchdog after its death."""
    why = str(notice.get("why", "unknown"))
    reason = f"fenced by the watchdog: {why}"
    steps = notice.get("steps")
    failed = [step for step, outcome in (steps or {}).items() if "failed" in str(outcome)]
    return {
        "action": "stop",
        "phase": "end",
        "ok": not failed,
        "problem": reason if not failed else f"{reason}; failed: {', '.join(failed)}",
        "vip": vip,
        "fenced_at": notice.get("at"),
    }


def journal_fence(plan: Plan, notice: dict[str, Any]) -> None:
    """Append the fence's ``resource`` stop record to the node's audit journal for a
    daemon that is gone, in its boot, after its last record there (``seq`` + 1): the
    audit orders a node's records by boot and seq. Called only after EOF on the
    daemon's pipe (a dead daemon writes no more). A torn last line (the daemon
    killed in a write) is cut off first: the audit skips a torn line only at the
    end. A failure is logged, never raised."""
    from failover.runtime.logging import AuditJournal  # noqa: PLC0415

    if plan.journal is None or not plan.node:
        return
    path = Path(plan.journal)
    try:
        last = last_seq(path, plan.boot)
        if last is None:
            log.warning("fence not journalled: a later daemon already writes", file=str(path))
            return
        journal = AuditJournal(path, node=plan.node, boot=plan.boot, reserve=0)
        journal.seq = last
        vip = ", ".join(address for address, _interface in plan.addresses) or None
        journal.write("resource", watchdog=True, **fence_fields(notice, vip))
        left = journal.waiting
        journal.close()
    except OSError as exc:
        log.error("cannot journal the fence", file=str(path), error=exc.strerror)
        return
    if left:
        log.error("cannot journal the fence: the journal refused it", file=str(path))
    else:
        log.info("fence journalled for the daemon that is gone", file=str(path), seq=last + 1)


def last_seq(path: Path, boot: int) -> int | None:
    """The ``seq`` of the journal's newest record, of ``boot`` (0 if the journal has
    none), after cutting off a torn last line; None when it is of another boot: a
    later daemon has started, and its ``start`` record already says what the node
    holds (the audit orders boots by number: an older boot's record after it
    would break the journal's time order)."""
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - 2 * LINE_MAX)
        handle.seek(start)
        tail = handle.read()
        end = tail.rfind(b"\n") + 1
        if end < len(tail):  # a torn last line (or a file of one torn line)
            handle.truncate(start + end)
            tail = tail[:end]
    for line in reversed(tail.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and type(data.get("seq")) is int:
            return int(data["seq"]) if data.get("boot") == boot else None
    return 0


def read_record(path: Path) -> dict[str, Any] | None:
    """A fence record left by the watchdog of an earlier daemon (then removed)."""
    notice = peek_record(path)
    if notice is not None:
        with contextlib.suppress(OSError):
            path.unlink()
    return notice


def peek_record(path: Path) -> dict[str, Any] | None:
    """The watchdog's fence record at ``path``, if there is one (left in place)."""
    try:
        content = path.read_bytes()[:LINE_MAX]
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.error("cannot read the watchdog's record", file=str(path), error=exc.strerror)
        return None
    try:
        notice = json.loads(content)[FENCED]
    except (ValueError, KeyError, TypeError):
        return {"why": "unreadable record"}
    return notice if isinstance(notice, dict) else {"why": "unreadable record"}


if __name__ == "__main__":
    raise SystemExit(main())
