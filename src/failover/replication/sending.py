"""The sending side of replication: this node's session to its peer's receiver.

One ``ReplicationSender`` at a time is the relay's sender (``replication/relay.py``):
the mirror's changes stream to it, and an application's fsync returns once the
peer acknowledged it. Its task runs in the task group the data plane owns.
Mechanism only: a session that breaks, or cannot open, is handed to
``on_broken`` once (``runtime/dataplane.py`` reports it to the core).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from failover.errors import PeerProtocolError, TransportError
from failover.replication.channel import ChannelSettings, ReplicationSender, SessionIdentity
from failover.replication.relay import Relay
from failover.transport import MessageStream

log = structlog.get_logger("failover.dataplane")


class Sending:
    """The replication session to ``peer`` (see the module docstring). ``attach``
    gives it the relay and the task group once the data plane runs."""

    def __init__(
        self,
        *,
        identity: Callable[[], SessionIdentity],
        channel: ChannelSettings,
        connect: Callable[[], Awaitable[MessageStream]],
        peer: str,
        on_broken: Callable[[str], None],
    ) -> None:
        self.identity = identity
        self.channel = channel
        self.connect = connect
        self.peer = peer
        self.on_broken = on_broken
        self.relay: Relay | None = None
        self._group: TaskGroup | None = None
        self._sending: anyio.CancelScope | None = None
        self._fence = (False, True)  # the last fence (fenced, serving), kept for the relay
        self.on_ack_latency: Callable[[float], None] | None = None
        """Called with each acknowledgement latency of every session (metrics)."""

    def attach(self, relay: Relay, group: TaskGroup) -> None:
        self.relay, self._group = relay, group
        relay.set_fenced(*self._fence)

    def fence(self, fenced: bool, serving: bool) -> None:
        """The relay's write fence (``Relay.set_fenced``), also set before ``attach``."""
        self._fence = (fenced, serving)
        if self.relay is not None:
            self.relay.set_fenced(fenced, serving)
        log.info("write fence", fenced=fenced, serving=serving)

    @property
    def sender(self) -> ReplicationSender | None:
        return None if self.relay is None else self.relay.sender

    def new_sender(self, on_broken: Callable[[str], None]) -> ReplicationSender:
        return ReplicationSender(
            self.identity(), self.channel, on_broken=on_broken, on_ack_latency=self.on_ack_latency
        )

    async def start(self) -> None:
        """Open a session to the peer's receiver and replicate every change from
        now on. A failure to connect goes to ``on_broken``."""
        assert self.relay is not None
        current = self.relay.sender
        if current is not None and current.broken is None:
            return  # the session a resync opened goes on replicating: no gap
        await self.stop()
        reported = False

        def broken(reason: str) -> None:
            nonlocal reported
            if self.relay is not None and self.relay.sender is sender:
                self.relay.sender = None
            if not reported:
                reported = True
                self.on_broken(reason)

        sender = self.new_sender(broken)
        try:
            stream = await self.connect()
            await sender.handshake(stream)
        except (TransportError, PeerProtocolError) as exc:
            broken(f"replication session to {self.peer} failed: {exc}")
            return
        self.relay.sender = sender
        self.pump(sender)
        log.info("replicating", peer=self.peer)

    def pump(self, sender: ReplicationSender) -> None:
        """Run ``sender``'s session in the background; ``stop`` ends it."""
        assert self._group is not None
        scope = anyio.CancelScope()
        self._sending = scope

        async def pump() -> None:
            with scope:
                await sender.run()

        self._group.start_soon(pump)

    async def stop(self) -> None:
        if self.relay is not None:
            self.relay.sender = None
        if self._sending is not None:
            self._sending.cancel()
            self._sending = None

    async def flush(self) -> str | None:
        """Wait until the peer acknowledged every write replicated so far. None
        when done or when nothing replicates; else why not."""
        sender = self.sender
        if sender is None:
            return None
        if await anyio.to_thread.run_sync(sender.flush):
            return None
        return sender.broken or "the peer did not acknowledge every write"

    def status(self) -> dict[str, Any]:
        """This session's part in ``failover status``, with the relay's write fence."""
        relay, sender = self.relay, self.sender
        counters = None if sender is None else sender.status()
        return {
            "replicating": sender is not None and sender.broken is None,
            # the session runs but its idle probes go unanswered: a cut, seen before
            # the replication timeout breaks the session (docs/replication.md)
            "channel_problem": None if counters is None else counters.quiet,
            "writes_fenced": relay is not None and relay.fenced,
            "writes_held": 0 if relay is None else relay.held,
            "ack": str(self.channel.ack_level),
            "sender": None if counters is None else asdict(counters),
        }
