"""One heartbeat link at run time: its channel, its receive task, its sender.

A ``LinkRunner`` keeps its link's channel open for the life of the daemon:
it opens it, receives frames and turns the authentic ones into
``HeartbeatReceived`` events; when the transport reports the link broken
(``TransportError`` from ``open`` or ``receive``) it reports ``LinkFailed``,
closes the channel, waits a backoff and opens it again. Whether the link is
*up* is the core's call (it counts silence); the runner only carries frames.

With a cluster key, a transport that makes connections (``tcp``, or any that
declares ``connection_auth``) is opened with the link proof (``auth``), so
that each of its connections proves the key before it is used; other
transports are opened as they always were.

Sending never blocks the caller: ``offer`` leaves the newest frame in a
one-slot mailbox that the link's sender task drains. A slow link therefore
delays only itself, and an older heartbeat still waiting is replaced by the
newer one (sending a stale status late is worse than not sending it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import structlog
from pydantic import BaseModel

from failover.core import events as ev
from failover.errors import TransportError
from failover.transport import HeartbeatChannel, HeartbeatTransport, open_channel
from failover.wire import Inbound, LinkAuth

log = structlog.get_logger("failover.links")

Report = Callable[[ev.Event], Awaitable[None]]

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
CLOSE_TIMEOUT = 1.0


class LinkRunner:
    """Carries heartbeats over one configured link (see the module docstring).

    ``send_timeout`` bounds each send (about one heartbeat interval): a send
    that takes longer is abandoned and the next heartbeat tried instead.
    """

    def __init__(
        self,
        name: str,
        transport: HeartbeatTransport,
        local: BaseModel,
        remote: BaseModel,
        *,
        inbound: Inbound,
        report: Report,
        send_timeout: float,
        auth: LinkAuth | None = None,
    ) -> None:
        self.name = name
        self.transport = transport
        self.local = local
        self.remote = remote
        self.inbound = inbound
        self.report = report
        self.send_timeout = send_timeout
        self.auth = auth
        self.channel: HeartbeatChannel | None = None
        self._pending: bytes | None = None
        self._wake = anyio.Event()
        self._sent = anyio.Event()
        self.on_heard: Callable[[], None] | None = None
        """Called for each heartbeat accepted on this link (the metrics)."""

    @property
    def transport_name(self) -> str:
        return self.transport.name

    @property
    def open(self) -> bool:
        """True while a channel is open (frames offered now will be sent)."""
        return self.channel is not None

    def offer(self, frame: bytes) -> None:
        """Queue ``frame`` for sending, replacing any frame not yet sent. Never blocks."""
        self._pending = frame
        self._wake.set()

    async def flush(self) -> None:
        """Wait until the last frame offered has been handed to the transport.

        Unbounded if the channel closes meanwhile: callers put a time limit on it.
        """
        while self._pending is not None:
            await self._sent.wait()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the link open until cancelled. ``task_status.started()`` is called
        after the first attempt to open the channel, whether it worked or not."""
        backoff = BACKOFF_INITIAL
        failing = False
        started = False
        while True:
            channel: HeartbeatChannel | None = None
            try:
                channel = await open_channel(self.transport, self.local, self.remote, self.auth)
            except TransportError as exc:
                if not failing:
                    # Reported once per outage; the retries are only logged at debug.
                    log.warning("link cannot open", link=self.name, error=str(exc))
                    await self.report(ev.LinkFailed(link=self.name, reason=str(exc)))
                else:
                    log.debug("link still cannot open", link=self.name, error=str(exc))
                failing = True
            if not started:
                task_status.started()
                started = True
            if channel is not None:
                if failing:
                    log.info("link reopened", link=self.name)
                backoff = BACKOFF_INITIAL
                error = await self._serve(channel)
                log.warning("link failed", link=self.name, error=error)
                await self.report(ev.LinkFailed(link=self.name, reason=error))
                failing = True
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _serve(self, channel: HeartbeatChannel) -> str:
        """Receive and send on ``channel`` until it breaks; returns the error.
        The channel is closed when this returns or is cancelled."""
        self.channel = channel
        self._pending = None
        error = "closed"
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._send_loop, channel)
                try:
                    await self._receive_loop(channel)
                except TransportError as exc:
                    error = str(exc) or type(exc).__name__
                tg.cancel_scope.cancel()
        finally:
            self.channel = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                await channel.aclose()
        return error

    async def _receive_loop(self, channel: HeartbeatChannel) -> None:
        while True:
            data = await channel.receive()
            accepted = self.inbound.accept(data)
            if accepted is None:
                rejection = self.inbound.stats.last_rejection
                log.debug("frame dropped", link=self.name, reason=str(rejection))
                continue
            _, status = accepted
            if self.on_heard is not None:
                self.on_heard()
            await self.report(ev.HeartbeatReceived(link=self.name, status=status))

    async def _send_loop(self, channel: HeartbeatChannel) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            frame, self._pending = self._pending, None
            if frame is None:
                continue
            try:
                with anyio.fail_after(self.send_timeout):
                    await channel.send(frame)
            except (TransportError, TimeoutError) as exc:
                # One lost heartbeat is not a link failure: silence is what the
                # core counts. A broken link shows up in receive() as well.
                log.debug("heartbeat not sent", link=self.name, error=str(exc) or "timeout")
            finally:
                self._sent.set()
                self._sent = anyio.Event()
