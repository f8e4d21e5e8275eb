"""``run_node``: one node of a cluster as an anyio daemon.

One task group holds every task of the node:

- a ``LinkRunner`` per heartbeat link (receive -> ``Inbound.accept`` ->
  ``HeartbeatReceived``; a broken link -> ``LinkFailed``, backoff, reopen);
- the timer task, firing ``Timer`` at ``node.next_deadline()``;
- the event loop, the only caller of ``node.handle``: every producer (links,
  timer, executor, checkers, control API, signals) sends into one memory
  object stream that this task drains, so the core sees one event at a time;
- the action executor (scripts, VIP, data effects), one action at a time;
- the checkers, the control API server and the signal watcher;
- the watchdog's feeder and listener: a separate process (``runtime/watchdog.py``)
  fences the application if this loop stops feeding it a deadline (the lease's
  ``fence_at``, or the last heartbeat + ``dead_timeout`` - ``heartbeat_interval`` / 2)
  while the node serves; a fence it reports is handed to the core as ``AppFailed``.
  Under systemd the same feeder task pings systemd's watchdog (``runtime/notify.py``).

How the effects of one ``handle`` call are applied, in list order:

- ``PersistMetadata`` is written synchronously (fsync, rename, fsync) before
  the event loop looks at any other effect of that call: nothing (a heartbeat
  announcing the new generation, an action, a transition record) can happen
  before the metadata is durable. A write that fails never stops the daemon:
  the decision is undone (the core is restored to its snapshot from before
  the event), none of its effects runs, and the node is *degraded*: every
  event waits (``degraded.HeldEvents``) while the node keeps announcing its
  last durable state; the write is retried by handing the first held event
  to the core again after a growing pause. Admin commands are refused
  meanwhile. docs/operations.md, "Faults of the node's own disk", states the
  invariant.
- ``SendHeartbeat`` builds one frame per open link and leaves it in that
  link's mailbox; it never waits for the network.
- ``TransitionRecord``, ``LinkChanged`` and ``Refused`` are logged (and kept
  for status) on the spot.
- every other effect is an action, queued to the executor behind the actions
  already queued. Actions therefore run in the order the core emitted them,
  one at a time, while heartbeats keep flowing.

Time: ``now`` is always ``anyio.current_time()`` (monotonic, or virtual in tests).

The audit journal (``<state_dir>/<node>/audit.jsonl``, docs/audit.md) gets, after
each ``handle`` call, that step's records (what is heard of the peer, metadata,
links, transitions), plus the daemon's start and exit and the executor's real
application start and stop, on ``CLOCK_MONOTONIC``; a failing write never stops
the daemon, and what still waits at exit goes out through the journal's reserve
(``AuditJournal.close``), or is counted in a ``gap`` record.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import anyio
import structlog
from anyio.abc import TaskGroup

from failover.api.console import console_settings
from failover.api.control_tls import server_context
from failover.api.schema import read_control_tokens
from failover.api.server import ControlEndpoints, serve_control
from failover.audit import JOURNAL_NAME
from failover.config import ClusterConfig, load_config
from failover.config.models import ReplicationSection
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.facts import watchdog_deadline
from failover.core.state import Metadata, Settings, State, SubStatus
from failover.errors import ConfigError, FailoverError, UsageError
from failover.platform.application import Application, Scripts
from failover.platform.checkers import CheckerSet, CheckerSpec, checker_specs
from failover.platform.priority import raise_priority
from failover.platform.vip import VipError, VirtualAddress, VirtualIP
from failover.plugins import load_replication_transport, load_transport
from failover.replication.channel import AckLevel, ChannelSettings
from failover.replication.directories import directories_hold_data
from failover.runtime.arbitrator import build_arbitrator
from failover.runtime.control import CoreNode, NodeController, transition_record
from failover.runtime.dataplane import DataPlane, DataPlaneSettings
from failover.runtime.degraded import DiskFault, HeldEvents
from failover.runtime.executor import ACTION_EFFECTS, ActionExecutor
from failover.runtime.links import LinkRunner
from failover.runtime.logging import AuditJournal, log_file
from failover.runtime.metrics import DaemonMetrics
from failover.runtime.notify import Notifier, status_line
from failover.runtime.store import IncarnationStore, MetadataStore, unwritable
from failover.runtime.timer import DeadlineSignal, run_timer
from failover.runtime.watchdog import (
    Plan,
    WatchdogClient,
    fence_fields,
    last_seq,
    peek_record,
    read_record,
    wait_for_previous,
)
from failover.tls import tls_context
from failover.transport import HeartbeatTransport
from failover.wire import FrameCodec, Inbound, Outbound

log = structlog.get_logger("failover.daemon")

NodeFactory = Callable[[Settings, Metadata], CoreNode]
TransportLoader = Callable[[str], HeartbeatTransport]

EVENT_BUFFER = 256
"""Events queued for the core before producers wait (backpressure, not loss)."""
CLEANUP_TIMEOUT = 5.0
"""Extra seconds allowed at exit, beyond the application's own stop budget."""


def default_node_factory(settings: Settings, metadata: Metadata) -> CoreNode:
    """The real decision core (imported here so that tests may run without it)."""
    from failover.core.node import Node  # noqa: PLC0415 - the core lands separately

    node: CoreNode = Node(settings, metadata)
    return node


@dataclass
class _Reply:
    """Where the event loop leaves the effects of a command's ``handle`` call."""

    done: anyio.Event = field(default_factory=anyio.Event)
    effects: list[fx.Effect] = field(default_factory=list)


@dataclass(frozen=True)
class _Envelope:
    """One item of the event stream: an event for ``handle``, or a change to apply
    to the node between two events (a reload's new settings)."""

    event: ev.Event | None = None
    reply: _Reply | None = None
    mutate: Callable[[CoreNode], None] | None = None
    retry: bool = False  # hand the held events to the core again (degraded node)


@contextlib.contextmanager
def _node_lock(node_dir: Path, node: str) -> Iterator[None]:
    """Hold an exclusive lock on ``node_dir`` so that a second daemon for the same
    node (which would overwrite the metadata) refuses to start."""
    path = node_dir / "daemon.lock"
    try:
        handle: TextIO = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise unwritable(node_dir, exc) from exc
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UsageError(
                f"another failover daemon already runs for node {node!r} "
                f"(pid {holder}, lock {path})"
            ) from None
        try:  # unbuffered: a failed write must not be tried again at close
            os.ftruncate(handle.fileno(), 0)
            os.pwrite(handle.fileno(), f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise unwritable(node_dir, exc) from exc
        yield
    finally:
        handle.close()


def _script_env(config: ClusterConfig, node: str) -> dict[str, str]:
    env = {
        "FAILOVER_CLUSTER": config.cluster.name,
        "FAILOVER_NODE": node,
        "FAILOVER_PEER": config.peer_of(node),
    }
    if config.addresses:
        first = config.addresses[0]
        env["FAILOVER_VIP"] = str(first.address)
        env["FAILOVER_VIP_INTERFACE"] = first.interface
        env["FAILOVER_VIPS"] = " ".join(str(vip.address) for vip in config.addresses)
    return env


def _virtual_ip(config: ClusterConfig) -> VirtualIP | None:
    """The cluster's virtual addresses, or None when it has none."""
    addresses = [
        VirtualAddress(
            str(vip.address),
            vip.interface,
            announce_count=vip.announce_count,
            announce_interval=vip.announce_interval,
        )
        for vip in config.addresses
    ]
    return VirtualIP(addresses) if addresses else None


def _scripts_of(config: ClusterConfig) -> Scripts | None:
    app = config.application
    if app is None:
        return None
    return Scripts(**app.model_dump(exclude={"max_restarts", "restart_window"}))


def _checker_specs(config: ClusterConfig, node: str, app: Application) -> list[CheckerSpec]:
    return checker_specs(
        config.checkers,
        output_dir=config.node_dir(node) / "scripts",
        env=_script_env(config, node),
        app=app,
    )


def _restart_only_changes(old: ClusterConfig, new: ClusterConfig, node: str) -> list[str]:
    """Settings a reload cannot apply to a running daemon (they need a restart)."""
    changed: list[str] = []
    if old.cluster.name != new.cluster.name:
        changed.append("cluster.name")
    if (old.cluster.key_file, old.cluster.insecure) != (new.cluster.key_file, new.cluster.insecure):
        changed.append("cluster.key_file/insecure")
    if old.node_dir(node) != new.node_dir(node):
        changed.append("state_dir")
    if old.control_of(node) != new.control_of(node):
        changed.append(f"nodes.{node}.control")
    if old.links != new.links or set(old.nodes) != set(new.nodes):
        changed.append("links/nodes")
    else:
        for name in old.nodes:
            if old.nodes[name].links != new.nodes[name].links:
                changed.append(f"nodes.{name}.links")
    if old.addresses != new.addresses:
        changed.append("virtual_ip(s)")
    if old.watchdog != new.watchdog:
        changed.append("watchdog")
    # every replicated directory is a mount and a tracker: only a restart changes them
    if old.replication != new.replication:
        changed.append("replication")
    if old.quarantine_dir_of(node) != new.quarantine_dir_of(node):
        changed.append("replication.quarantine_dir")
    for name in set(old.nodes) & set(new.nodes):
        if old.nodes[name].replication != new.nodes[name].replication:
            changed.append(f"nodes.{name}.replication")
    return changed


def _data_plane_settings(config: ClusterConfig, node: str, peer: str) -> DataPlaneSettings | None:
    """What the data plane needs, or None when no directory is replicated."""
    section = config.replication
    if section is None:
        return None
    return DataPlaneSettings(
        cluster=config.cluster.name,
        node=node,
        peer=peer,
        key=config.read_key(),
        roots={d.name: d.path for d in section.directories},
        state_dir=config.node_dir(node) / "tracking",
        quarantine_dir=config.quarantine_dir_of(node),
        transport=load_replication_transport(section.transport),
        local=config.replication_endpoint(node),
        remote=config.replication_endpoint(peer),
        channel=ChannelSettings(
            ack_level=AckLevel(section.ack),
            timeout=section.timeout,
            probe_interval=min(config.timing.heartbeat_interval, section.timeout / 2),
        ),
        zone_size=section.zone_size,
        bandwidth=section.bandwidth,
        **_tls_contexts(section),
    )


def _tls_contexts(section: ReplicationSection) -> dict[str, ssl.SSLContext]:
    """Both ends' mutual-TLS contexts when ``replication.tls`` is set."""
    tls = section.tls
    if tls is None:
        return {}
    files = {
        "ca_file": str(tls.ca_file),
        "cert_file": str(tls.cert_file),
        "key_file": str(tls.key_file),
    }
    return {
        "tls_server": tls_context(server=True, **files),
        "tls_client": tls_context(server=False, **files),
    }


class Daemon:
    """One node's tasks and the state they share (see the module docstring)."""

    def __init__(
        self,
        config: ClusterConfig,
        node_name: str,
        *,
        node_factory: NodeFactory = default_node_factory,
        transport_loader: TransportLoader = load_transport,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self.name = node_name
        self.peer = config.peer_of(node_name)
        self.node_factory = node_factory
        self.transport_loader = transport_loader
        self.handle_signals = handle_signals
        self.node_dir = config.node_dir(node_name)
        self.deadlines = DeadlineSignal()
        self._send, self._receive = anyio.create_memory_object_stream[_Envelope](EVENT_BUFFER)
        self._changed = anyio.Event()
        self._exit = anyio.Event()
        self._stopping = False
        self.checkers = CheckerSet(self.report)
        self._encode_failed = False
        self._fault: DiskFault | None = None  # set while the metadata cannot be written
        self._held = HeldEvents()
        self.log = log.bind(node=node_name)
        self._heard: tuple[str, str, bool] | None = None
        self._last_beat: float | None = None  # when the core last emitted a heartbeat
        self.notifier = Notifier.from_environ()  # systemd's (runtime/notify.py), or None

    # --- producers -----------------------------------------------------------------------

    async def report(self, event: ev.Event) -> None:
        """Hand ``event`` to the core (waits only while the event stream is full)."""
        await self._send.send(_Envelope(event=event))

    async def submit(self, event: ev.Event) -> list[fx.Effect]:
        """Hand ``event`` to the core and return the effects of its handling."""
        reply = _Reply()
        await self._send.send(_Envelope(event=event, reply=reply))
        await reply.done.wait()
        return reply.effects

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    # --- the event loop ------------------------------------------------------------------

    async def _event_loop(self) -> None:
        async with self._receive:
            async for envelope in self._receive:
                if envelope.mutate is not None:
                    envelope.mutate(self.node)
                effects: list[fx.Effect] = []
                if envelope.event is not None:
                    effects = await self._take(envelope.event, command=envelope.reply is not None)
                elif envelope.retry:
                    await self._retry_held()
                # A degraded core is frozen: its deadlines wait until it resumes.
                self.deadlines.publish(None if self._fault else self.node.next_deadline())
                if envelope.reply is not None:
                    envelope.reply.effects = effects
                    envelope.reply.done.set()
                self._notify()

    async def _take(self, event: ev.Event, *, command: bool) -> list[fx.Effect]:
        """Hand ``event`` to the core, or hold it while the node is degraded."""
        if self._fault is None:
            effects = await self._decide(event)
            if effects is not None:
                return effects
        fault = self._fault
        assert fault is not None
        if command:
            # Answered now: an operator must not see a command run minutes later.
            reason = f"not accepted: {fault.reason} (the node is degraded until it can)"
            return [fx.Refused(command=event.kind, reason=reason)]
        self._held.hold(event)
        return []

    async def _decide(self, event: ev.Event, *, retry: bool = False) -> list[fx.Effect] | None:
        """One ``handle`` call whose effects run only once its metadata is durable.

        Returns the effects, or None when the metadata could not be written:
        the core is then back in the state it had before ``event`` and the
        node degraded (the caller holds or refuses ``event``).
        """
        before = self.node.snapshot()
        try:
            effects = self.node.handle(event, anyio.current_time())
        except Exception:
            # A bug in the core: deciding on would be guessing. Stop serving.
            self.log.exception("the core failed: stopping the daemon")
            raise
        for effect in effects:
            if isinstance(effect, fx.PersistMetadata):
                try:
                    await self._persist(effect.metadata, in_thread=retry)
                except OSError as exc:
                    self.node.restore(before)
                    self._write_failed(exc, event.kind)
                    return None
        if self._fault is not None:
            # Resuming: what the node announces until the episode ends must never
            # go back behind what this call's heartbeat is about to announce.
            self._announced = self.node.status()
        self._apply(effects)
        self._journal_step(effects)
        self._follow_application()
        return effects

    def _follow_application(self) -> None:
        """Run the checkers that the core's state calls for: whether the node
        serves, and whether its application has started with nothing under way
        (``app_started``: when the core acts on a serving checker's outcome)."""
        self.checkers.update(serving=self.node.state.serving, app_started=self.node.app_started)

    def _apply(self, effects: list[fx.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, fx.PersistMetadata):
                continue  # written by ``_decide`` before any effect of the call
            if isinstance(effect, fx.SendHeartbeat):
                self._send_heartbeat(effect)
            elif isinstance(effect, fx.TransitionRecord):
                self._record(effect)
            elif isinstance(effect, fx.LinkChanged):
                if effect.up:
                    self.log.info("link up", link=effect.link)
                else:
                    self.log.warning("link down", link=effect.link)
            elif isinstance(effect, fx.Refused):
                self.log.info("command refused", command=effect.command, reason=effect.reason)
            elif isinstance(effect, fx.FenceWrites):
                if self.data is not None:  # at once: it must not wait behind actions
                    self.data.fence_writes(effect.fenced, serving=effect.serving)
            elif not isinstance(effect, ACTION_EFFECTS):  # actions: queued below
                self.log.error("unknown effect ignored", effect=repr(effect))
        self.executor.submit_step(effects)

    async def _persist(self, metadata: Metadata, *, in_thread: bool) -> None:
        # The first attempt is synchronous, on purpose: the event loop handles
        # nothing else until the metadata is durable (an fsync costs ~0.2 ms
        # here). Retries run in a worker thread while the event loop waits, so
        # that a disk that hangs does not stop the degraded node's heartbeats.
        if in_thread:
            await anyio.to_thread.run_sync(self.store.save, metadata)
        else:
            self.store.save(metadata)
        self.durable = metadata

    # --- a node whose metadata cannot be written -----------------------------------------

    def _write_failed(self, exc: OSError, undone: str) -> None:
        """The core was restored (the decision on an ``undone`` event): announce the
        durable state, and start an episode unless one is running."""
        now = anyio.current_time()
        self._announced = self.node.status()
        fault = self._fault
        if fault is None:
            fault = self._fault = DiskFault.start(self.store.path, exc, now)
            self.log.error(
                "node degraded: metadata cannot be written; serving on, deciding nothing "
                "until it can",
                file=str(self.store.path),
                error=fault.error,
                undone=undone,
                state=self.node.state.value,
                generation=str(self.durable.generation),
            )
            self.task_group.start_soon(self._while_degraded, fault)
        elif fault.failed_again(exc):
            self.log.error(
                "node still degraded: the metadata write fails differently",
                file=str(self.store.path),
                error=fault.error,
                attempts=fault.attempts,
            )

    async def _retry_held(self) -> None:
        """Hand the held events to the core again, in order, while their writes succeed."""
        fault = self._fault
        if fault is None or self._exit.is_set():  # exiting: the core decides no more
            return
        if not self._held:  # only a command was undone: try a write of what is on disk
            try:
                await self._persist(self.durable, in_thread=True)
            except OSError as exc:
                self._write_failed(exc, "retry")
                return
        while self._held:
            if await self._decide(self._held.first(), retry=True) is None:
                return
            self._held.done_first()
        self._fault = None
        self.log.warning(
            "metadata written again: node no longer degraded",
            file=str(self.store.path),
            seconds=round(anyio.current_time() - fault.since, 3),
            attempts=fault.attempts + 1,
        )

    async def _while_degraded(self, fault: DiskFault) -> None:
        """Announce the durable state at the heartbeat interval, and ask the event
        loop to retry after each pause, until the episode ends."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._announce_durable_state, fault)
            while self._fault is fault:
                await anyio.sleep(fault.pause)
                reply = _Reply()
                await self._send.send(_Envelope(retry=True, reply=reply))
                await reply.done.wait()
            tg.cancel_scope.cancel()

    async def _announce_durable_state(self, fault: DiskFault) -> None:
        while self._fault is fault:
            self._send_heartbeat(fx.SendHeartbeat(self._announced))
            await anyio.sleep(self.config.timing.heartbeat_interval)

    def _degraded_view(self) -> dict[str, Any] | None:
        fault = self._fault
        if fault is None:
            return None
        return fault.view(anyio.current_time(), len(self._held))

    def _send_heartbeat(self, effect: fx.SendHeartbeat) -> None:
        # what the peer counts its dead timeout from (sent or not: a node alone
        # serving sends nothing and must not be fenced for it)
        self._last_beat = anyio.current_time()
        open_links = [link for link in self.links if link.open]
        if not open_links:
            return
        try:
            echoes = {link.name: link.rtt_echo(self.outbound.echo) for link in open_links}
            frames = self.outbound.heartbeats(
                effect.status, [link.name for link in open_links], echoes
            )
        except ValueError as exc:
            if not self._encode_failed:  # a config or core bug: say it once, not 20 times a second
                self.log.error("heartbeat cannot be encoded", error=str(exc))
                self._encode_failed = True
            return
        for link in open_links:
            link.offer(frames[link.name], self.outbound.link_seqs[link.name])

    def _record(self, record: fx.TransitionRecord) -> None:
        entry = transition_record(record)
        self.controller.record(entry)
        self.metrics.transition(record.event, record.source, record.target, record.reason_kind)
        fields: dict[str, Any] = {k: v for k, v in entry.items() if k not in ("time", "event")}
        self.log.info("transition", core_event=record.event, **fields)
        if self.notifier is not None:
            self.notifier.status(self._status_line(record))

    def _status_line(self, record: fx.TransitionRecord | None = None) -> str:
        node, peer = self.node, self.node.facts.peer
        heard = None if peer is None or not node.facts.peer_alive else peer.state.value
        if record is not None:
            return status_line(record.target, record.substatus, record.reason, heard)
        return status_line(node.state.value, node.substatus.value, node.facts.reason, heard)

    async def _notify_ready(self) -> None:
        """READY=1 once the listeners are bound (``run`` starts this after them) and
        the core has taken its first decision."""
        await self._wait_until(lambda: self._step > 0)
        if self.notifier is not None:
            self.notifier.ready(self._status_line())

    def _journal_step(self, effects: list[fx.Effect]) -> None:
        """The audit journal's records of one ``handle`` call (docs/audit.md): what the
        node now hears of its peer when that changed or a link came up, then each
        persisted metadata, link change and transition, in the core's order."""
        self._step += 1
        step, journal = self._step, self.journal
        node: CoreNode = self.node
        metadata = node.facts.metadata
        peer = node.facts.peer
        heard = None if peer is None else (peer.state.value, str(peer.generation), peer.handover)
        link_up = any(isinstance(e, fx.LinkChanged) and e.up for e in effects)
        if heard is not None and (heard != self._heard or link_up):
            self._heard = heard
            journal.write("peer", step=step, state=heard[0], generation=heard[1], handover=heard[2])
        for effect in effects:
            if isinstance(effect, fx.PersistMetadata):
                journal.write("meta", step=step, **_metadata_fields(effect.metadata))
            elif isinstance(effect, fx.LinkChanged):
                journal.write("link", step=step, link=effect.link, up=effect.up)
            elif isinstance(effect, fx.TransitionRecord):
                entry = transition_record(effect)
                del entry["time"], entry["node"], entry["mono"]
                entry.update(synced=str(metadata.synced_generation))
                entry.update(consistent=metadata.consistent)
                journal.write("transition", step=step, **entry)

    def _journal_start(self, recovered: bool | str) -> None:
        settings = self.config.core_settings(self.name)
        self.journal.write(
            "start",
            pid=os.getpid(),
            links=[link.name for link in self.config.links],
            split_brain_winner=settings.split_brain_winner,
            arbitrator=self.config.cluster.arbitrator.type,
            recovered=recovered,
            timing=self.config.timing.model_dump(),
            **_metadata_fields(self.node.facts.metadata),
        )

    async def _fire_timer(self) -> None:
        await self.report(ev.Timer())

    # --- shutdown and reload -------------------------------------------------------------

    def _quiescent(self) -> bool:
        return (
            self.node.state is State.STOP
            and self.node.substatus is SubStatus.READY
            and self.executor.idle
            and not self.app.running
        )

    async def shutdown(self, why: str) -> None:
        """Stop the module (``Stop``), wait for its effects, then end the daemon.

        Waits at most the application's stop budget plus ``CLEANUP_TIMEOUT``;
        past that the daemon exits anyway (the exit cleanup still stops the
        application and releases the VIP).
        """
        if self._stopping:
            self.log.warning("second stop request: exiting now", why=why)
            self._exit.set()
            return
        self._stopping = True
        self.log.info("stopping", why=why)
        if self.notifier is not None:
            self.notifier.stopping(why)
        await self.report(ev.Stop())
        bound = self.app.budget + CLEANUP_TIMEOUT
        with anyio.move_on_after(bound) as scope:
            await self._wait_until(self._quiescent)
        if scope.cancelled_caught:
            self.log.error("stop did not complete in time", seconds=bound)
        # Let the last heartbeat ("stop") reach the peer: it takes over at once
        # on seeing it, instead of after the dead timeout.
        with anyio.move_on_after(self.config.timing.heartbeat_interval):
            for link in self.links:
                if link.open:
                    await link.flush()
        self._exit.set()

    async def reload(self) -> bool:
        """Re-read the configuration file; apply it if valid, else keep the running one.

        Applied at once: timings and other core settings, the application
        scripts and timeout, the checkers. Settings that need a restart (links,
        key, VIP, control listener, state directory) are reported and ignored.
        Returns True when the new configuration was applied.
        """
        path = self.config.source_path
        if path is None:
            self.log.error("configuration reload impossible: not loaded from a file")
            return False
        try:
            new = await anyio.to_thread.run_sync(load_config, path)
            if self.name not in new.nodes:
                raise ConfigError([f"{path}: nodes: this node ({self.name}) is no longer listed"])
            settings = new.core_settings(self.name)
        except ConfigError as exc:
            self.log.error(
                "configuration reload refused: the running configuration is kept",
                file=str(path),
                problems=exc.problems,
            )
            return False
        except FailoverError as exc:
            self.log.error(
                "configuration reload refused: the running configuration is kept",
                file=str(path),
                problems=[str(exc)],
            )
            return False
        except Exception:  # a plugin's bug while checking must not end the daemon
            self.log.exception("configuration reload failed: the running configuration is kept")
            return False
        ignored = _restart_only_changes(self.config, new, self.name)
        if ignored:
            self.log.warning("configuration changes that need a restart", keys=ignored)
        reconfigure = getattr(self.node, "reconfigure", None)
        if callable(reconfigure):

            def apply_settings(node: CoreNode) -> None:
                try:
                    reconfigure(settings)
                except ValueError as exc:  # names that only a restart can change
                    self.log.error("new core settings not applied", error=str(exc))

            await self._send.send(_Envelope(mutate=apply_settings))
        elif settings != self.config.core_settings(self.name):
            self.log.warning("this core cannot change its settings live: restart to apply them")
        self.app.scripts = _scripts_of(new)
        self.config = new
        if self.watchdog is not None:  # its fence runs the stop script as reloaded
            await self.watchdog.replan(self._watchdog_plan())
        for link in self.links:
            link.send_timeout = new.timing.heartbeat_interval
        self._start_checkers()
        for warning in new.warnings:
            self.log.warning("configuration warning", warning=warning)
        self.log.info("configuration reloaded", file=str(path), fingerprint=settings.fingerprint)
        return True

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    self.task_group.start_soon(self.shutdown, signal.Signals(signum).name)

    # --- checkers ------------------------------------------------------------------------

    def _start_checkers(self) -> None:
        """Run the configured checkers (at start, and at a reload: a checker whose
        settings did not change runs on)."""
        self.checkers.configure(_checker_specs(self.config, self.name, self.app))

    # --- setup and teardown --------------------------------------------------------------

    def _build(self) -> None:
        config, name = self.config, self.name
        self.store = MetadataStore(self.node_dir / "metadata.json")
        metadata = self.store.load()
        self.durable = metadata  # the metadata on disk (the core's may be ahead mid-write)
        incarnation = IncarnationStore(self.node_dir / "incarnation.json").next()
        self.journal = AuditJournal(self.node_dir / JOURNAL_NAME, node=name, boot=incarnation)
        self._step = 0
        self._heard = None
        # the core's views of this run are numbered above any earlier run's (its
        # incarnation); at a first start it compares what each node's directories hold
        data = _data_plane_settings(config, name, self.peer)
        local_data = data is not None and metadata.fresh and directories_hold_data(data.roots)
        settings = replace(config.core_settings(name), epoch=incarnation, local_data=local_data)
        self.node = self.node_factory(settings, metadata)
        codec = FrameCodec(config.cluster.name, config.read_key())
        self.outbound = Outbound(codec, name, incarnation)
        self.inbound = Inbound(codec, self.outbound, peer=self.peer)  # keeps the echo
        auth = codec.link_auth(name, self.peer)
        self.arbitrator = build_arbitrator(config, name, incarnation)
        self.links = [
            LinkRunner(
                link.name,
                self.transport_loader(link.transport),
                config.endpoint(name, link.name),
                config.endpoint(self.peer, link.name),
                inbound=self.inbound,
                report=self.report,
                send_timeout=config.timing.heartbeat_interval,
                auth=auth,
            )
            for link in config.links
        ]
        self.vip = _virtual_ip(config)
        self.data = (
            None
            if data is None
            else DataPlane(
                data,
                self.report,
                lambda: str(self.durable.generation),
                lambda: str(self.durable.synced_generation),
            )
        )
        self.app = Application(
            _scripts_of(config),
            self.vip,
            output_dir=self.node_dir / "scripts",
            env=_script_env(config, name),
            marker=self.node_dir / "application.started",
            fenced_why=self._fenced_why,
        )
        self.watchdog = self._watchdog_client()
        self.controller = NodeController(
            node=self.node,
            name=name,
            cluster=config.cluster.name,
            links=self.links,
            frames=self.inbound.stats,
            submit=self.submit,
            started=anyio.current_time(),
            data=self.data,
            degraded=self._degraded_view,
            scripts=self.app.history.view,
        )
        self.metrics = DaemonMetrics(self.controller.status, lambda: self.checkers.checkers)
        sending = None if self.data is None else self.data.sending
        self.metrics.attach(
            links=self.links, scripts=self.app.history, checkers=self.checkers, sending=sending
        )
        self.log.info(
            "node starting",
            cluster=config.cluster.name,
            peer=self.peer,
            incarnation=incarnation,
            generation=str(metadata.generation),
            last_state=metadata.last_state.value if metadata.last_state else None,
            links=[link.name for link in config.links],
            first_start_data=local_data if metadata.fresh else None,
        )

    # --- the watchdog ----------------------------------------------------------------------

    def _watchdog_client(self) -> WatchdogClient | None:
        """The watchdog process's client, when it is enabled and there is something
        to fence (an application or a virtual IP) or, with an arbitrator, to journal:
        the end of this node's service at its daemon's death (docs/audit.md)."""
        config = self.config
        arbitrated = config.cluster.arbitrator.type != "none"
        if not config.watchdog.enabled or (
            config.application is None and not config.addresses and not arbitrated
        ):
            return None
        return WatchdogClient(self._watchdog_plan(), self._on_fenced)

    def _watchdog_plan(self) -> Plan:
        section, scripts = self.config.watchdog, self.app.scripts
        return Plan(
            marker=str(self.app.marker),
            record=str(self.node_dir / "watchdog.fenced"),
            lock=str(self.node_dir / "watchdog.lock"),
            # the addresses this daemon holds (a reload does not change them)
            addresses=()
            if self.vip is None
            else tuple((str(a.address), a.interface) for a in self.vip.addresses),
            stop=None if scripts is None else scripts.stop,
            stop_timeout=30.0 if scripts is None else scripts.stop_limit,
            env=self.app.env,
            output_dir=str(self.app.output_dir),
            device=None if section.device is None else str(section.device),
            device_interval=section.device_interval,
            log_file=log_file(),
            # a fence made after this daemon's death is journalled by the watchdog
            journal=str(self.journal.path),
            node=self.name,
            boot=self.journal.boot,
            # the mirrors the application writes through: aborted first (watchdog.py)
            mirrors=()
            if self.config.replication is None
            else tuple(str(d.path) for d in self.config.replication.directories),
        )

    async def _after_previous_watchdog(self) -> None:
        """Before ``recover``: wait for the watchdog of an earlier daemon of this node
        to end (it may be fencing), and learn what it fenced."""
        lock, record = self.node_dir / "watchdog.lock", self.node_dir / "watchdog.fenced"
        if not await wait_for_previous(lock, self.app.budget):
            self.log.error("the previous daemon's watchdog still runs", lock=str(lock))
        notice = read_record(record)
        if notice is not None:  # (the journal's ``start`` record says what is held)
            self.log.warning("the previous daemon's watchdog fenced the application", **notice)

    def _watchdog_deadline(self) -> float | None:
        """The time by which the application must be gone if this loop stops now
        (docs/operations.md, "The watchdog"), or None while nothing serves."""
        app = self.app
        if not (self.node.state.serving or app.running or app.main is not None):
            return None
        beat = anyio.current_time() if self._last_beat is None else self._last_beat
        facts = self.node.facts
        # Degraded, the core is frozen and what the peer announced since waits with
        # the held events: an observation the deadline must not miss (a peer that
        # announced its stop takes nothing over; one heard again after it does).
        held = self._held.newest_peer() if self._fault is not None else None
        peer = facts.peer if held is None else held
        return watchdog_deadline(self.node.settings, facts.lease, peer, beat)

    async def _feed_watchdog(self, watchdog: WatchdogClient | None) -> None:
        """Feed the deadline after each step of the loop and each action's progress
        (``_notify``), and at least every heartbeat interval; and systemd's watchdog
        from here alone, at least every half of its period (runtime/notify.py)."""
        notifier = self.notifier
        while True:
            if watchdog is not None:
                await watchdog.feed(self._watchdog_deadline())
            wait = self.config.timing.heartbeat_interval
            if notifier is not None:
                wait = min(wait, notifier.alive(anyio.current_time()) or wait)
            with anyio.move_on_after(wait):
                await self._changed.wait()

    def _fenced_why(self) -> str | None:
        """Why the watchdog fenced the application, while its notice waits to be read."""
        notice = peek_record(self.node_dir / "watchdog.fenced")
        return None if notice is None else str(notice.get("why", "unknown"))

    async def _on_fenced(self, notice: dict[str, Any]) -> None:
        """The watchdog fenced the application while this loop was stalled: the core
        learns it as the application's failure."""
        reason = f"fenced by the watchdog: {notice.get('why', 'unknown')}"
        self.log.error("the watchdog fenced the application", **notice)
        # the audit's resources: released (at the latest now; ``fenced_at`` says when)
        vip = None if self.vip is None else str(self.vip.address)
        self.journal.write("resource", **fence_fields(notice, vip))
        with contextlib.suppress(OSError):
            (self.node_dir / "watchdog.fenced").unlink()
        await self.app.release_vip()  # (again: stops this daemon's announcements too)
        if not self.app.fenced(reason):
            return  # the command's watcher reported its death
        if self.executor.app_action_pending:
            self.log.warning("fenced while an action on the application runs: its outcome follows")
            return
        await self.report(ev.AppFailed(reason=reason))

    def _raise_priority(self) -> None:
        """A busy machine must still run the heartbeat path in time (see
        ``platform/priority.py``); the scripts run at the inherited priority."""
        problem = raise_priority()
        if problem is not None:
            self.log.warning("scheduling priority not raised", why=problem)

    async def _serve_control(self, *, task_status: anyio.abc.TaskStatus[ControlEndpoints]) -> None:
        control = self.config.control_of(self.name)
        page = self.metrics.page
        if control.tcp is not None:
            tcp = (control.tcp.address, control.tcp.port)
            token, read_token = read_control_tokens(
                control.tcp.token_file, control.tcp.read_token_file
            )
            tls = control.tcp.tls
            context = None if tls is None else server_context(tls.cert_file, tls.key_file)
            # the console's page, /v1/nodes, /v1/events (live on each change), CORS;
            # a lambda: ``_changed`` is a new event after each change
            changes = lambda: self._changed.wait()  # noqa: E731, PLW0108
            console = console_settings(self.config, self.name, changes)
            await serve_control(
                self.controller,
                tcp=tcp,
                token=token,
                read_token=read_token,
                tls=context,
                console=console,
                metrics=page,
                task_status=task_status,
            )
        else:
            unix_path = str(control.socket)
            await serve_control(
                self.controller, unix_path=unix_path, metrics=page, task_status=task_status
            )

    async def run(self, *, task_status: anyio.abc.TaskStatus[NodeController]) -> None:
        try:
            self.node_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unwritable(self.node_dir, exc) from exc
        # Every record of this node's tasks (platform modules included) names it.
        with (
            structlog.contextvars.bound_contextvars(node=self.name),
            self._send,
            self._receive,
            _node_lock(self.node_dir, self.name),
        ):
            self._build()
            if self.handle_signals:  # a daemon of its own (not several nodes in a test)
                self._raise_priority()
            try:
                async with anyio.create_task_group() as tg:
                    self.task_group = tg
                    await self._start_tasks(tg)
                    task_status.started(self.controller)
                    if self.config.cluster.autostart:
                        await self.report(ev.Start())
                    if self.notifier is not None:
                        tg.start_soon(self._notify_ready)
                    await self._exit.wait()
                    await self._stop_held_app()
                    tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._cleanup()

    async def _start_tasks(self, tg: TaskGroup) -> None:
        if self.vip is not None:
            try:
                await self.vip.prepare()
            except VipError as exc:
                # Not fatal: the interface may appear later; StartApp will say why it fails.
                self.log.error("virtual IP not ready", error=str(exc))
        await self._after_previous_watchdog()
        recovered: bool | str = "timeout"
        with anyio.move_on_after(self.app.budget):
            recovered = await self.app.recover()
        self._journal_start(recovered)
        fed: WatchdogClient | None = None
        if self.watchdog is not None:
            problem = await self.watchdog.start()
            if problem is not None:
                self.log.error(
                    "the application will not be fenced if this daemon hangs", why=problem
                )
            else:
                tg.start_soon(self.watchdog.listen)
                fed = self.watchdog
        if fed is not None or self.notifier is not None:  # systemd's watchdog is fed there too
            tg.start_soon(self._feed_watchdog, fed)
        if self.data is not None:
            await tg.start(self.data.run)  # mounts every directory read-only
        self.executor = ActionExecutor(
            self.app,
            self.report,
            repeat_in=tg,
            on_progress=self._notify,
            data=self.data,
            journal=self.journal.write,
            arbitrator=self.arbitrator,
        )
        tg.start_soon(self._event_loop)
        tg.start_soon(self.executor.run)
        tg.start_soon(run_timer, self.deadlines, self._fire_timer)
        for link in self.links:
            await tg.start(link.run)
        await tg.start(self.checkers.run)
        self._start_checkers()
        await tg.start(self._serve_control)
        if self.handle_signals:
            tg.start_soon(self._watch_signals)
        self.deadlines.publish(self.node.next_deadline())

    async def _stop_held_app(self) -> None:
        """At exit, a degraded node (its ``Stop`` held, the core frozen) whose
        application still runs stops it here, in the hand-over order
        (``ActionExecutor.stop_app``), while it still announces its durable
        state: its peer cannot start before the stop is over. The exit cleanup
        would stop it only after the heartbeats ended."""
        if self._fault is None or not self.app.running or not self.executor.idle:
            return
        self.log.warning("exiting degraded while the application runs: stopping it first")
        with anyio.move_on_after(self.app.budget + CLEANUP_TIMEOUT):
            await self.executor.stop_app()

    async def _cleanup(self) -> None:
        """Bounded: stops what this daemon started if it exits while serving."""
        with anyio.move_on_after(self.app.budget + CLEANUP_TIMEOUT) as scope:
            if self.app.running:
                self.log.warning("exiting while the application runs: stopping it")
                await self.app.stop()
            if self.app.both_running:
                await self.app.stop_both()
        if scope.cancelled_caught:
            self.log.error("cleanup did not complete in time")
        if self.watchdog is not None:  # it fences at once what still runs
            serving = self.app.running
            await self.watchdog.close(serving=serving)
            if serving:  # its fence is journalled: this daemon's records follow it
                with contextlib.suppress(OSError):
                    written = last_seq(self.journal.path, self.journal.boot) or 0
                    self.journal.seq = max(self.journal.seq, written)
        if self.vip is not None:
            self.vip.close()
        self.journal.write("exit", state=self.node.state.value, app_running=self.app.running)
        self.journal.close()
        self.log.info("node stopped", state=self.node.state.value)
        if self.notifier is not None:
            self.notifier.close()


def _metadata_fields(metadata: Metadata) -> dict[str, Any]:
    last = metadata.last_state
    return {
        "generation": str(metadata.generation),
        "synced": str(metadata.synced_generation),
        "consistent": metadata.consistent,
        "last_state": None if last is None else last.value,
    }


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The single real error inside nested task-group exceptions, if there is one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    failures = [exc for exc in leaves if isinstance(exc, FailoverError)]
    return failures[0] if len(failures) == 1 else group


async def run_node(
    config: ClusterConfig,
    node_name: str,
    *,
    task_status: anyio.abc.TaskStatus[NodeController] = anyio.TASK_STATUS_IGNORED,
    node_factory: NodeFactory = default_node_factory,
    transport_loader: TransportLoader = load_transport,
    handle_signals: bool = True,
) -> None:
    """Run ``node_name`` of ``config`` until it is stopped (SIGTERM/SIGINT) or cancelled.

    ``task_status.started(controller)`` is called once the metadata is
    loaded, the links are open (or being retried), the control API listens
    and the signals are watched. Returns normally after a clean stop (the
    module stopped, the VIP released). Raises ``UsageError`` (one line for the
    operator) when the node cannot start: corrupt metadata, another daemon
    for the same node, a control socket in use, an unreadable key.

    ``node_factory``, ``transport_loader`` and ``handle_signals`` exist for
    tests (a fake core, a fault-injecting transport, several nodes in one
    process).
    """
    daemon = Daemon(
        config,
        node_name,
        node_factory=node_factory,
        transport_loader=transport_loader,
        handle_signals=handle_signals,
    )
    try:
        await daemon.run(task_status=task_status)
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None


__all__ = ["Daemon", "run_node"]
