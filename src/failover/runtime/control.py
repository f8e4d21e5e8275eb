"""The daemon's side of the control API: the ``Controller`` the HTTP server calls.

``status`` and ``transitions`` read what the daemon already holds and never
block. ``command`` hands an admin event to the event loop (the only caller of
``Node.handle``) and answers from the effects that one call returned: a
``Refused`` effect means the core said no, with its reason.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from failover.api.protocol import COMMANDS, STATUS_SCHEMA_VERSION, CommandResult
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.facts import Lease
from failover.core.state import Metadata, PeerStatus, Settings, State, SubStatus
from failover.errors import UsageError
from failover.runtime.logging import monotonic

if TYPE_CHECKING:
    from failover.runtime.dataplane import DataPlane

ADMIN_EVENTS = ev.ADMIN_COMMANDS
assert set(ADMIN_EVENTS) == set(COMMANDS)

TRANSITIONS_KEPT = 1000
COMMAND_TIMEOUT = 10.0
"""Seconds a command may wait for the event loop (it answers in microseconds unless
a metadata write is stuck on a dead disk)."""


class LinkView(Protocol):
    """What the core shows of one link (``NodeFacts.links`` values)."""

    @property
    def up(self) -> bool: ...

    @property
    def last_seen(self) -> float | None: ...


class CoreFacts(Protocol):
    """The part of the core's facts (``failover.core.facts.NodeFacts``) the runtime shows."""

    @property
    def reason(self) -> str: ...

    @property
    def metadata(self) -> Metadata: ...

    @property
    def peer(self) -> PeerStatus | None: ...

    @property
    def peer_alive(self) -> bool:
        """Heard on some link within the dead timeout, as the core counts it."""
        ...

    @property
    def links(self) -> Sequence[tuple[str, LinkView]]: ...

    @property
    def lease(self) -> Lease: ...


class CoreNode(Protocol):
    """The part of ``failover.core.node.Node`` the runtime uses."""

    @property
    def state(self) -> State: ...

    @property
    def substatus(self) -> SubStatus: ...

    @property
    def facts(self) -> CoreFacts: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def in_sync_problem(self) -> str | None:
        """Why the pair is not in sync as the core sees it (None: it is)."""
        ...

    @property
    def app_started(self) -> bool: ...

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]: ...

    def next_deadline(self) -> float | None: ...

    def status(self) -> PeerStatus: ...

    def snapshot(self) -> Any:
        """Everything ``handle`` may change (``restore`` puts it back)."""
        ...

    def restore(self, snap: Any) -> None: ...


class LinkInfo(Protocol):
    """What the controller needs of a running link."""

    @property
    def name(self) -> str: ...

    @property
    def transport_name(self) -> str: ...

    @property
    def rtt(self) -> RoundTripInfo: ...


class RoundTripInfo(Protocol):
    """A link's round-trip estimate (``failover.runtime.links.RoundTrip``)."""

    @property
    def latest(self) -> float | None: ...

    @property
    def dropped(self) -> Mapping[str, int]: ...


class FrameStats(Protocol):
    @property
    def received(self) -> int: ...

    @property
    def dropped(self) -> Mapping[str, int]: ...


Submit = Callable[[ev.Event], Awaitable[list[fx.Effect]]]


def transition_record(record: fx.TransitionRecord) -> dict[str, Any]:
    """The JSON-ready form of a transition, as logged and as ``transitions`` returns it.

    ``mono`` is ``CLOCK_MONOTONIC`` (shared by every network namespace of the
    machine: both nodes' records of a lab run compare), ``time`` the wall clock."""
    return {
        "time": datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds"),
        "mono": monotonic(),
        "node": record.node,
        "from": record.source,
        "event": record.event,
        "to": record.target,
        "substatus": record.substatus,
        "effects": list(record.effects),
        "reason": record.reason,
        "generation": record.generation,
        "forced": record.forced,
    }


def _ago(now: float, seen: float | None) -> float | None:
    return None if seen is None else round(max(0.0, now - seen), 3)


def not_in_sync(core_problem: str | None, replication: dict[str, Any] | None) -> str | None:
    """Why this node's pair is not in sync (status's ``in_sync_reason``), or None when
    it is: the core's view first (``Node.in_sync_problem``: this node ``primary``, its
    peer an alive ``secondary`` at our generation); then, with replicated
    directories, what only the data plane sees: a session to the peer whose channel
    answers, and no difference found by a verify since the last resync."""
    if core_problem is not None:
        return core_problem
    if replication is None:
        return None
    if not replication.get("replicating"):
        return "no replication session to the peer"
    if replication.get("channel_problem"):
        return f"replication channel: {replication['channel_problem']}"
    verified = replication.get("verified")
    if verified is not None and not verified["in_sync"]:
        return f"the last verify found {verified['differences']} differences"
    return None


class NodeController:
    """Implements ``failover.api.protocol.Controller`` for one running node.

    ``node`` is read (never driven) from here; ``submit`` injects an event
    into the daemon's event stream and returns the effects of its handling.
    """

    def __init__(
        self,
        *,
        node: CoreNode,
        name: str,
        cluster: str,
        links: Sequence[LinkInfo],
        frames: FrameStats,
        submit: Submit,
        started: float,
        data: DataPlane | None = None,
        degraded: Callable[[], dict[str, Any] | None] = lambda: None,
        scripts: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.data = data
        self.node = node
        self.name = name
        self.cluster = cluster
        self.links = links
        self.frames = frames
        self._submit = submit
        self._started = started
        self._transitions: deque[dict[str, Any]] = deque(maxlen=TRANSITIONS_KEPT)
        self.degraded = degraded
        """The daemon's view of a metadata write fault (None while writes succeed)."""
        self.scripts = scripts
        """The last runs of each application script (``ScriptLog.view``)."""

    def record(self, entry: dict[str, Any]) -> None:
        """Keep one transition (from ``transition_record``) for ``transitions``."""
        self._transitions.append(entry)

    def status(self) -> dict[str, Any]:
        now = anyio.current_time()
        node = self.node
        facts = node.facts
        views = dict(facts.links)
        links: list[dict[str, Any]] = []
        last_heard: float | None = None
        for link in self.links:
            view = views.get(link.name)
            seen = view.last_seen if view is not None else None
            if seen is not None and (last_heard is None or seen > last_heard):
                last_heard = seen
            links.append(
                {
                    "name": link.name,
                    "transport": link.transport_name,
                    "up": bool(view is not None and view.up),
                    "last_seen_ago": _ago(now, seen),
                    "rtt": link.rtt.latest,
                    "rtt_dropped": dict(link.rtt.dropped),
                }
            )
        peer = facts.peer
        peer_view: dict[str, Any] | None = None
        if peer is not None:
            peer_view = {
                "node": peer.node,
                "state": peer.state.value,
                "substatus": peer.substatus.value,
                "generation": str(peer.generation),
                # alive as the core counts it: heard on some link within the dead timeout
                "alive": facts.peer_alive,
                "last_seen_ago": _ago(now, last_heard),
            }
        metadata = facts.metadata
        replication = None if self.data is None else self.data.status()
        sync_problem = not_in_sync(node.in_sync_problem, replication)
        return {
            "schema": STATUS_SCHEMA_VERSION,
            "node": self.name,
            "state": node.state.value,
            "substatus": node.substatus.value,
            "reason": facts.reason,
            "generation": str(metadata.generation),
            "consistent": metadata.consistent,
            "cluster": self.cluster,
            "peer": peer_view,
            "links": links,
            "frames": {
                "received": self.frames.received,
                "dropped": dict(sorted(self.frames.dropped.items())),
            },
            "uptime": round(now - self._started, 3),
            # the node cannot write its metadata: it serves on, deciding nothing
            "degraded": self.degraded(),
            # the last runs of each application script: rc, duration, output tail
            "scripts": self.scripts(),
            "replication": replication,
            # claimed only while protected, the channel answers, and no verify since the
            # last resync found a difference (a verdict lasts until a clean verify or a resync)
            "in_sync": sync_problem is None,
            "in_sync_reason": sync_problem,
        }

    def transitions(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        return list(self._transitions)[-limit:]

    async def command(self, name: str) -> CommandResult:
        event_type = ADMIN_EVENTS.get(name)
        if event_type is None:
            known = ", ".join(COMMANDS)
            return CommandResult(False, f"unknown command {name!r} (known: {known})", self._state())
        with anyio.fail_after(COMMAND_TIMEOUT):
            effects = await self._submit(event_type())
        refusals = [effect for effect in effects if isinstance(effect, fx.Refused)]
        if refusals:
            return CommandResult(False, "; ".join(r.reason for r in refusals), self._state())
        return CommandResult(True, self.node.facts.reason, self._state())  # what the core did

    async def verify(self) -> dict[str, Any]:
        if self.data is None:
            raise UsageError("no replicated directories are configured")
        return await self.data.verify()

    async def set_bandwidth(self, rate: int) -> CommandResult:
        if self.data is None:
            return CommandResult(False, "no replicated directories are configured", self._state())
        try:
            self.data.set_bandwidth(rate)
        except UsageError as exc:
            return CommandResult(False, str(exc), self._state())
        limit = "no limit" if rate == 0 else f"{rate} bytes/s"
        return CommandResult(True, f"resync bandwidth: {limit}", self._state())

    def _state(self) -> str:
        return self.node.state.value
