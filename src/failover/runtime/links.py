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

Each link also measures its heartbeat round trip (``RoundTrip``, docs/wire.md
"Round trip"): the frames it sends echo the newest frame accepted on it and
how long that was held, and an echo that comes back gives one sample.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable

import anyio
import structlog
from pydantic import BaseModel

from failover.core import events as ev
from failover.errors import TransportError
from failover.transport import HeartbeatChannel, HeartbeatTransport, open_channel
from failover.wire import MAX_HELD_US, Frame, Inbound, LinkAuth

log = structlog.get_logger("failover.links")

Report = Callable[[ev.Event], Awaitable[None]]

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
CLOSE_TIMEOUT = 1.0

RTT_RING = 16
"""Send times kept per link: the last this many frames can be answered (16 intervals)."""
MAX_RTT = 10.0
"""A round trip longer than this (seconds) is ``absurd``: past any link's dead timeout."""
RESOLUTION = 1e-6
"""The hold travels in whole microseconds: a round trip this little below 0 is 0."""


class RoundTrip:
    """One link's heartbeat round trip, estimated the way RTCP does (LSR/DLSR).

    Invariant: a sample is ``now - sent_at(seq) - held`` for a ``seq`` this
    link sent in this run and had not yet been answered, where ``now`` and
    ``sent_at`` are readings of this node's monotonic clock, and lies in
    ``[0, max_rtt]``. Anything else is dropped and counted in ``dropped``
    under its reason: ``unknown_seq`` (never sent on this link, or older than
    the last ``ring`` sends), ``repeated`` (at or below a seq already
    answered: the peer sent again before hearing a newer frame, which is
    normal), ``negative`` (the held time exceeds the time since the send by
    more than the field's microsecond: a lie or a bug) and ``absurd`` (over
    ``max_rtt``). Never raises.

    Feed it only frames ``Inbound`` accepted (authentic, not replayed, bound
    to this run by the echo): ``heard`` for the echo this link sends back,
    ``answer`` for the echo the frame carries. The clock is the caller's.
    """

    def __init__(self, ring: int = RTT_RING, max_rtt: float = MAX_RTT) -> None:
        self._sent: deque[tuple[int, float]] = deque(maxlen=ring)
        self._answered = 0
        self._heard: tuple[int, int, float] | None = None  # peer incarnation, seq, accepted at
        self.max_rtt = max_rtt
        self.latest: float | None = None
        """The last sample (seconds), None before the first."""
        self.samples = 0
        self.dropped: Counter[str] = Counter()

    def sent(self, seq: int, now: float) -> None:
        """This link's frame ``seq`` was built at ``now``."""
        self._sent.append((seq, now))

    def heard(self, frame: Frame, now: float) -> None:
        """The peer's ``frame`` was accepted on this link at ``now``."""
        heard = self._heard
        if heard is None or (frame.incarnation, frame.seq) > heard[:2]:
            self._heard = (frame.incarnation, frame.seq, now)

    def echo(self, now: float, peer_incarnation: int) -> tuple[int, int]:
        """(rtt_seq, rtt_held_us) for the next frame sent on this link: the newest
        frame of the peer's ``peer_incarnation`` heard here, or (0, 0)."""
        heard = self._heard
        if heard is None or heard[0] != peer_incarnation:
            return (0, 0)  # nothing heard, or from a run the peer left: its seqs mean nothing
        held = round((now - heard[2]) * 1e6)
        return (heard[1], held) if 0 <= held <= MAX_HELD_US else (0, 0)

    def answer(self, seq: int, held_us: int, now: float) -> float | None:
        """The sample the echo (``seq``, ``held_us``) of an accepted frame gives, or None."""
        if seq == 0:
            return None  # nothing echoed (a first frame, or a version 4 peer)
        sent_at = next((at for sent, at in self._sent if sent == seq), None)
        rtt = math.nan if sent_at is None else now - sent_at - held_us / 1e6
        if -RESOLUTION <= rtt < 0:
            rtt = 0.0  # the hold was rounded to a microsecond: a round trip of nothing
        if seq <= self._answered:
            self.dropped["repeated"] += 1
        elif sent_at is None:
            self.dropped["unknown_seq"] += 1
        elif rtt < 0:
            self.dropped["negative"] += 1
        elif rtt > self.max_rtt:
            self.dropped["absurd"] += 1
        else:
            self._answered = seq
            self.latest = rtt
            self.samples += 1
            return rtt
        return None


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
        self.rtt = RoundTrip()
        self.on_rtt: Callable[[float], None] | None = None
        """Called with each round-trip sample of this link, in seconds (the metrics)."""

    @property
    def transport_name(self) -> str:
        return self.transport.name

    @property
    def open(self) -> bool:
        """True while a channel is open (frames offered now will be sent)."""
        return self.channel is not None

    def offer(self, frame: bytes, seq: int = 0) -> None:
        """Queue ``frame`` (``seq``: its seq, for the round trip) for sending, replacing
        any frame not yet sent. Never blocks."""
        if seq:
            self.rtt.sent(seq, anyio.current_time())
        self._pending = frame
        self._wake.set()

    def rtt_echo(self, peer_incarnation: int) -> tuple[int, int]:
        """The round-trip echo the next frame on this link carries (``RoundTrip.echo``)."""
        return self.rtt.echo(anyio.current_time(), peer_incarnation)

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
            frame, status = accepted
            if self.on_heard is not None:
                self.on_heard()
            now = anyio.current_time()
            self.rtt.heard(frame, now)
            sample = self.rtt.answer(frame.rtt_seq, frame.rtt_held_us, now)
            if sample is not None and self.on_rtt is not None:
                self.on_rtt(sample)
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
