"""A simulated two-node cluster around two real cores.

Everything outside the cores is simulated here, as plainly as possible, and
is the ground truth the invariants are checked against:

- the network: for each link and direction, the newest heartbeat in flight
  (a round delivers only the newest: the wire layer hands the core the newest
  status it received, never an older one after it) and, with
  ``stale_frames``, the oldest undelivered one before it: a frame sent before the
  sender changed its state can still reach the receiver before the newer one
  does (it was already in a socket buffer or a receive queue), so a decision
  may be taken on an outdated view of the peer; a link can be partitioned;
  messages can be delivered, duplicated or dropped;
- the disks: each node's data is the set of write ids it holds, plus a
  quarantine set, and the metadata it persisted;
- the application: it can fail while running (*app_fail*) or become unable
  to run at all (*app_break*: it dies if it runs, and every start or restart
  fails from then on, on that server); its checkers report down at any
  point: ``web`` (class serving, action restart: a check of the running
  application, one-shot) and ``app-check`` (class both, action failover:
  down until *checker_up*). A write on the serving node is acknowledged when it is
  durable where the replication rule says (both nodes while primary with the
  peer receiving; locally while alone, unless the write fence holds it: the
  peer is alive as secondary and could take over without it). Stopping it
  takes time: the stop script runs until the end of the next round, the
  application and the virtual IP held meanwhile (``app_stopping``), as a slow
  stop script does;
- the arbitrator (``Arbitrator``): the witness, one lease record decided by
  ``failover.core.arbitration``; ping, no record, a grant to whoever reaches
  the witness's address; etcd, the witness's record with etcd's timing (a
  lease runs out ``lease_ttl`` after the last grant or keepalive etcd
  received, up to ``expiry_delay`` later) and answers lost or late;
- the runtime: effects are executed in order and their outcomes fed back at
  once (one "macro step"), as the real executor would when nothing fails.

``Cluster`` is mutable and fast to ``load``/``save`` from an immutable,
hashable ``World`` so the checker can explore millions of steps reusing two
``Node`` objects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.arbitration import LeaseRecord, decide_renewal, decide_request
from failover.core.node import Node, NodeSnapshot
from failover.core.state import (
    CheckerPolicy,
    Generation,
    Metadata,
    PeerStatus,
    ResyncRole,
    Settings,
    State,
    View,
    evolve,
)
from failover.core.table import Table

NAMES = ("alpha", "beta")
SITE_CHECKER = "app-check"  # class both, action failover: down until checker_up
APP_CHECKER = "web"  # class serving, action restart: one failed check (app_check)
REPLICATION_LINK = 0  # the replication stream shares the first link's network


@dataclass(frozen=True)
class Timing:
    heartbeat_interval: float = 1.0
    link_timeout: float = 2.0
    dead_timeout: float = 3.0
    startup_timeout: float = 3.0
    lease_ttl: float = 4.0
    lease_renew: float = 1.0
    lease_margin: float = 1.0
    retry_pause: float = 2.0
    retry_pause_max: float = 4.0
    # etcd frees a lease that ran out at its next expiry check (every 500 ms), or
    # later after a leader change: modelled as up to one round late
    expiry_delay: float = 1.0

    @property
    def horizon(self) -> float:
        return max(self.dead_timeout, self.link_timeout, self.startup_timeout, self.lease_ttl) + 1


@dataclass(frozen=True)
class Bounds:
    """How much nondeterminism one explored trace may use. Ticks, deliveries,
    restarts, heals and resync steps are free; these are counted."""

    faults: int = 2  # crash, drop, duplicate, partition, arbitrator cut, app/checker failure
    admin: int = 1  # operator commands
    writes: int = 1  # application writes
    # of the faults, how many may be application or checker faults (app_fail,
    # app_break, app_check, checker_down): one suffices for every path of the
    # budget (app_break spends it), and each costs as much state as the rest
    app_faults: int = 1


class Arbitrator(enum.StrEnum):
    """The arbitrator the simulated cluster is configured with. False (as a
    value) only for ``NONE``: ``if config.arbitrator`` asks whether there is one."""

    NONE = "none"
    # one lease record, decided by failover.core.arbitration (the witness service)
    WITNESS = "witness"
    # no record: a request or renewal is granted, with the generation asked, iff
    # the host reaches the witness's address (SafeKit's split-brain checker)
    PING = "ping"
    # the witness's record held in etcd, with etcd's timing: the lease runs out
    # lease_ttl after the last grant or keepalive etcd *received*, when etcd
    # next checks (up to Timing.expiry_delay later; a leader change extends
    # it to a full lease_ttl); answers can be lost (etcd acted on the call)
    # or arrive a round late; a renewal after expiry is answered lost
    ETCD = "etcd"

    def __bool__(self) -> bool:
        return self is not Arbitrator.NONE

    @property
    def keeps_record(self) -> bool:
        """It records the lease and the newest generation granted (not ping)."""
        return self in (Arbitrator.WITNESS, Arbitrator.ETCD)


LEASE_MUTATIONS = {
    "fence-from-heard": "the node counts its lease a whole lease_ttl from when it heard "
    "the grant or renewal, instead of lease_ttl - lease_margin from when it asked",
    "short-lease": "etcd frees the lease lease_ttl / 2 after the last grant or keepalive it "
    "received (the node accepts a lease shorter than it asked)",
}
"""Deliberately broken lease handling (model/mutants.py), outside the table:
on the node's side, or at the arbitrator (etcd only)."""


@dataclass(frozen=True)
class ClusterConfig:
    links: tuple[str, ...] = ("lan", "serial")
    # an Arbitrator, its name, or a bool (True: the witness)
    arbitrator: Arbitrator | str | bool = Arbitrator.NONE
    timing: Timing = Timing()
    failback: str = "none"
    preferred: str | None = None
    split_brain_winner: str | None = None
    # also explore application and checker failures (each counts as a fault)
    resource_faults: bool = True
    checkers: tuple[CheckerPolicy, ...] = (
        CheckerPolicy(SITE_CHECKER, when="both", action="failover"),
        CheckerPolicy(APP_CHECKER, when="serving", action="restart"),
    )
    # the restart budget: one local restart (so that two faults spend it), in
    # a window longer than anything explored (the key clamps restart times at
    # the horizon: exact only while none can leave the window)
    max_restarts: int = 1
    restart_window: float = 86400.0
    # no replicated directories: the cores know it (``Settings.replicated``) and
    # emit no data effect, a resync or quarantine of nothing completing in the
    # same step; no write is replicated (writes are not explored)
    no_data: bool = False
    # a frame sent before the sender's last change of status can still be delivered
    # (once, as a fault) before the newer one: the network keeps, per link and
    # direction, the newest undelivered frame and the oldest one sent before it
    # (False: only the newest is ever delivered, the network before issue 8)
    stale_frames: bool = True
    # a first start beside an existing application: which nodes' replicated
    # directories already hold data (``PREEXISTING[i]`` on node i's disk) before
    # the cluster's first run; their metadata is fresh either way
    initial_data: tuple[bool, bool] = (False, False)
    # the data plane moves what a full resync would overwrite into quarantine
    # first (False: the data plane before issue 9, which overwrote it)
    quarantine_full_resync: bool = True
    # every link may be cut while both nodes reach the arbitrator (False: the
    # last link is cut only while a node cannot reach it, nor is a node's
    # arbitrator healed while its peer reaches it and the nodes do not hear
    # each other, every link cut or a silence not yet over: the faults a ping
    # witness is meant for, one side losing the witness)
    partition_with_witness: bool = True
    # etcd: the answer to a request may be lost (etcd committed the grant, the
    # node heard nothing and gave up) or late, like a renewal's (False: only
    # renewals' answers; a grant the node never adopts can leave both nodes
    # waiting, docs/model-checking.md, "What it found")
    late_grants: bool = True
    # a deliberately broken lease (LEASE_MUTATIONS), for the mutants
    lease_mutation: str | None = None

    def __post_init__(self) -> None:
        kind = self.arbitrator
        if isinstance(kind, bool):
            kind = Arbitrator.WITNESS if kind else Arbitrator.NONE
        object.__setattr__(self, "arbitrator", Arbitrator(kind))
        if self.lease_mutation is not None and self.lease_mutation not in LEASE_MUTATIONS:
            raise ValueError(f"unknown lease mutation {self.lease_mutation!r}")

    @property
    def kind(self) -> Arbitrator:
        """The arbitrator (``arbitrator``, normalised at construction)."""
        return cast(Arbitrator, self.arbitrator)

    def settings(self, index: int) -> Settings:
        t = self.timing
        return Settings(
            name=NAMES[index],
            peer=NAMES[1 - index],
            links=self.links,
            fingerprint="model",
            heartbeat_interval=t.heartbeat_interval,
            link_timeout=t.link_timeout,
            dead_timeout=t.dead_timeout,
            startup_timeout=t.startup_timeout,
            arbitrator=bool(self.arbitrator),
            arbitrator_records=self.kind is not Arbitrator.PING,
            lease_ttl=t.lease_ttl,
            lease_renew=t.lease_renew,
            lease_margin=t.lease_margin,
            failback=self.failback,
            preferred=self.preferred,
            split_brain_winner=self.split_brain_winner,
            local_data=self.initial_data[index],
            checkers=self.checkers,
            max_restarts=self.max_restarts,
            restart_window=self.restart_window,
            retry_pause=t.retry_pause,
            retry_pause_max=t.retry_pause_max,
            replicated=not self.no_data,
        )


PREEXISTING = (-1, -2)
"""The data found on each node's disk at a first start (``initial_data``): ids
that no write uses, part of no generation until the node that holds them serves."""


@dataclass(frozen=True)
class Host:
    """One server: its daemon (``core`` None while crashed) and its disk."""

    core: NodeSnapshot | None
    stored: Metadata = field(default_factory=Metadata)
    data: frozenset[int] = frozenset()
    quarantine: frozenset[int] = frozenset()
    app_running: bool = False
    app_stopping: bool = False  # StopApp runs: still holding the application and VIP
    app_broken: bool = False  # the application cannot run here: every start fails
    site_down: bool = False  # the checker of class both (SITE_CHECKER) fails here
    arb_reachable: bool = True
    resync_final: Generation | None = None  # target holds this generation; ResyncDone not yet seen
    # resync source: the target applied the END of this generation's resync, the
    # source has not heard it acknowledged yet (PeerResynced at the next tick,
    # unless the session breaks first); ``streamed``: writes made on this host
    # since, sent on the session but known applied by the target only with the ack
    end_unheard: Generation | None = None
    streamed: frozenset[int] = frozenset()
    # the next move of data aside here fails (a disk error, injected as
    # ``move_fail``): a quarantine, or the set-aside before a full resync
    move_fails: bool = False
    # a resync target whose set-aside failed: it answers no source (nothing is
    # copied over data that was not moved) until the core starts the resync again
    set_aside_failed: bool = False
    # a resync source whose attempt failed (``resync_fail``): no attempt runs
    # until the core starts one again
    resync_idle: bool = False
    last_heard: float | None = None  # ground truth: last heartbeat this host received


LOSE, SLOW = "lose", "slow"


@dataclass(frozen=True)
class LeaseIO:
    """etcd's answers (``Arbitrator.ETCD`` only): per host, a fault armed for
    its next request or renewal (``LOSE``: etcd acts on it, the node hears
    nothing; ``SLOW``: the answer arrives at the next round), and the answers
    to deliver at the next round."""

    armed: frozenset[tuple[int, str]] = frozenset()
    late: tuple[tuple[int, ev.Event], ...] = ()


class WorldKey:
    """A world's deduplication key (``World.key``): a tuple of its summary, whose
    hash is computed once. The search and the liveness check look each key up
    in several dicts and sets, and a tuple is hashed again, all the way down
    (enums and dataclasses by Python code), at every lookup. Equal exactly when
    the summaries are equal."""

    __slots__ = ("_hash", "fields")

    def __init__(self, *fields: object) -> None:
        self.fields = fields
        self._hash = hash(fields)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, WorldKey):
            return NotImplemented
        return self._hash == other._hash and self.fields == other.fields

    def __reduce__(self) -> tuple[object, ...]:
        # sent from forked workers to their parent: the hash is recomputed on
        # arrival (the same interpreter, but the cost of not assuming it is small)
        return (WorldKey, self.fields)

    def __repr__(self) -> str:
        return f"WorldKey{self.fields!r}"


@dataclass(frozen=True)
class World:
    """An immutable state of the whole simulated cluster."""

    now: float
    hosts: tuple[Host, Host]
    channels: tuple[tuple[tuple[str, int], PeerStatus], ...] = ()  # ((link, sender), status)
    # the oldest undelivered frame sent before the newest one, per channel (stale_frames only)
    stale: tuple[tuple[tuple[str, int], PeerStatus], ...] = ()
    delayed: frozenset[tuple[str, int]] = frozenset()  # held back at the next round
    partitioned: frozenset[str] = frozenset()
    lease: LeaseRecord | None = None
    lease_io: LeaseIO = LeaseIO()
    acked: frozenset[int] = frozenset()
    replicated_acks: frozenset[int] = frozenset()  # acked while primary (synchronously)
    writes: int = 0
    faults: int = 0  # faults used so far
    app_faults: int = 0  # of which application or checker faults
    commands: int = 0  # admin commands used so far
    forced_lineage: frozenset[Generation] = frozenset()  # minted by, or after, a forced promotion
    dual_serving_blind: bool = False  # both serve after a blind takeover or a forced promotion
    # ground truth of the histories: (child, parent) for every generation minted,
    # and the generation in which each acknowledged write was acknowledged
    minted_from: frozenset[tuple[Generation, Generation]] = frozenset()
    acked_in: frozenset[tuple[int, Generation]] = frozenset()
    # (host, write) fsyncs the write fence holds: acknowledged once it lifts while
    # the host still serves, failed (never acknowledged) if it stops serving first
    held: frozenset[tuple[int, int]] = frozenset()

    def descends(self, younger: Generation, older: Generation) -> bool:
        """True when ``older`` lies on the history of ``younger`` (or equals it)."""
        parent = dict(self.minted_from)
        current: Generation | None = younger
        while current is not None:
            if current == older:
                return True
            current = parent.get(current)
        return False

    def diverged(self, a: Generation, b: Generation) -> bool:
        """Neither history contains the other: they split (blind or forced)."""
        return not (self.descends(a, b) or self.descends(b, a))

    def views_of(self, i: int) -> set[View]:
        """Every view of node ``i`` the world holds: its own, what its peer heard
        and echoes, and what the frames in flight carry."""
        found: set[View] = set()
        core, other = self.hosts[i].core, self.hosts[1 - i].core
        if core is not None:
            found.add(core.view)
            if core.peer is not None:
                found.add(core.peer.peer_view)
        if other is not None and other.peer is not None:
            found.add(other.peer.view)
        for (_link, sender), status in self.channels + self.stale:
            found.add(status.view if sender == i else status.peer_view)
        return found

    def _view_ranks(self) -> tuple[Callable[[View], int], Callable[[View], int]]:
        """Views abstracted for deduplication: the cores only ask whether two views
        are equal, and a new view is above every earlier one of its node; so each
        is replaced by its rank among the node's views the world holds (0 the
        newest), which keeps every equality and every future alike."""

        def ranker(i: int) -> Callable[[View], int]:
            order = {v: n for n, v in enumerate(sorted(self.views_of(i), reverse=True))}
            return order.__getitem__

        return ranker(0), ranker(1)

    def key(self, horizon: float) -> WorldKey:
        """A flat summary of this world with every time relative to now and
        reasons left out: worlds that behave alike have equal keys."""
        now = self.now

        def shift(t: float | None) -> float | None:
            return None if t is None else max(t - now, -horizon)

        hosts = tuple(
            (
                None if h.core is None else h.core.key(now, horizon),
                h.stored,
                h.data,
                h.quarantine,
                h.app_running,
                h.app_stopping,
                h.app_broken,
                h.site_down,
                h.arb_reachable,
                h.resync_final,
                h.end_unheard,
                h.streamed,
                h.move_fails,
                h.set_aside_failed,
                h.resync_idle,
                shift(h.last_heard),
            )
            for h in self.hosts
        )
        lease = self.lease
        lease_key = (
            None
            if lease is None
            else (
                lease.holder,
                shift(lease.expires_at),
                lease.generation,
                lease.granted_to,
                lease.granted_from,
                self.lease_io,
            )
        )
        rank = self._view_ranks()
        channels = tuple(_frame_key(key, s, rank) for key, s in self.channels)
        stale = tuple(_frame_key(key, s, rank) for key, s in self.stale)
        peers = tuple(
            None
            if h.core is None
            else (
                rank[i](h.core.view),
                None
                if h.core.peer is None
                else (rank[1 - i](h.core.peer.view), rank[i](h.core.peer.peer_view)),
            )
            for i, h in enumerate(self.hosts)
        )
        return WorldKey(
            hosts,
            peers,
            channels,
            stale,
            self.delayed,
            self.partitioned,
            lease_key,
            self.acked,
            self.replicated_acks,
            self.writes,
            self.faults,
            self.app_faults,
            self.commands,
            self.dual_serving_blind,
            self.forced_lineage,
            self.minted_from,
            self.acked_in,
            self.held,
        )


@dataclass
class StepInfo:
    """What happened during one step, for invariants and traces."""

    label: str
    records: list[fx.TransitionRecord] = field(default_factory=list)
    refused: list[fx.Refused] = field(default_factory=list)
    # (host, state it left, forced by an operator, blind: an in-sync secondary that
    # heard nothing from its peer for the dead timeout, without an arbitrator)
    entered_serving: list[tuple[int, State, bool, bool]] = field(default_factory=list)
    # a serving node heard its peer serving at this generation and still served after
    kept_serving_against: list[tuple[int, Generation]] = field(default_factory=list)
    outcome_overflow: bool = False


class Cluster:
    """The mutable simulator. ``load(world)``, apply one action, ``save()``."""

    MAX_OUTCOMES = 64

    def __init__(
        self, config: ClusterConfig, table: Table | None = None, bounds: Bounds | None = None
    ) -> None:
        self.config = config
        self.bounds = bounds if bounds is not None else Bounds()
        self.settings = (config.settings(0), config.settings(1))
        self.nodes = (Node(self.settings[0], table=table), Node(self.settings[1], table=table))
        self.table = self.nodes[0].table
        self.world = self.initial()

    # --- worlds -----------------------------------------------------------------------

    def initial(self) -> World:
        """Both servers up, daemons running but the module stopped, fresh
        metadata; each disk empty or holding its pre-existing data."""
        hosts = tuple(
            Host(
                core=self._fresh_core(i, Metadata()),
                data=frozenset({PREEXISTING[i]}) if self.config.initial_data[i] else frozenset(),
            )
            for i in range(2)
        )
        lease = LeaseRecord() if self.config.kind.keeps_record else None
        return World(now=0.0, hosts=hosts, lease=lease)  # type: ignore[arg-type]

    def booted(self) -> World:
        """Both daemons just launched with autostart on fresh disks: as the real
        daemon, each sends its first heartbeat (``stop``) before the autostart."""
        self.load(self.initial())
        for i in range(2):
            self._handle(i, ev.Timer(), StepInfo("boot"))
            self._handle(i, ev.Start(), StepInfo("boot"))
        return self.world

    def _fresh_core(self, index: int, metadata: Metadata, epoch: int = 0) -> NodeSnapshot:
        node = self.nodes[index]
        node.reset(metadata, epoch=epoch)
        return node.snapshot()

    def load(self, world: World) -> None:
        self.world = world
        for i, host in enumerate(world.hosts):
            if host.core is not None:
                self.nodes[i].restore(host.core)

    def up(self, i: int) -> bool:
        return self.world.hosts[i].core is not None

    def state(self, i: int) -> State | None:
        core = self.world.hosts[i].core
        return None if core is None else core.state

    # --- actions ----------------------------------------------------------------------

    def actions(
        self, *, admin: bool = True, faults: bool = True, writes: bool = True
    ) -> Iterator[str]:
        """Every action enabled in the current world, as labels for ``apply``;
        the bounds limit how many faults, commands and writes one trace uses.

        The network works in rounds: ``tick`` lets one heartbeat interval pass
        and delivers every message in flight. Losing, delaying (to the next
        round) or duplicating one message, and partitioning a link, are faults.
        """
        w, b = self.world, self.bounds
        faults = faults and w.faults < b.faults
        admin = admin and w.commands < b.admin
        writes = writes and w.writes < b.writes and not self.config.no_data
        app_faults = faults and self.config.resource_faults and w.app_faults < b.app_faults
        yield "tick"
        if self._expiry_may_wait():
            yield "tick late"
        if faults:
            for (link, sender), _status in w.channels:
                name = NAMES[sender]
                yield f"drop {link} {name}"
                if (link, sender) not in w.delayed:
                    yield f"delay {link} {name}"
                if self.up(1 - sender):
                    yield f"duplicate {link} {name}"
            for (link, sender), _status in w.stale:
                if self.up(1 - sender):
                    yield f"stale {link} {NAMES[sender]}"
        for i in range(2):
            host = w.hosts[i]
            core = host.core
            if core is None:
                yield f"restart {NAMES[i]}"
                continue
            if faults:
                yield f"crash {NAMES[i]}"
            if admin:
                for cmd in COMMANDS:
                    yield f"{cmd} {NAMES[i]}"
            if writes and host.app_running and core.state.serving:
                yield f"write {NAMES[i]}"
            if self.config.arbitrator:
                yield from self._arbitrator_actions(i, faults)
            if app_faults:
                if host.app_running and not host.app_stopping:
                    yield f"app_fail {NAMES[i]}"
                if not host.app_broken:
                    yield f"app_break {NAMES[i]}"
                if core.state.serving:  # elsewhere the table ignores it (tests/core)
                    yield f"app_check {NAMES[i]}"
            if app_faults and not self.config.no_data:
                if not host.move_fails:
                    yield f"move_fail {NAMES[i]}"
                if core.resync_role is ResyncRole.SOURCE and not host.resync_idle:
                    yield f"resync_fail {NAMES[i]}"
            if self.config.resource_faults:
                if host.site_down:
                    yield f"checker_up {NAMES[i]}"
                elif app_faults:
                    yield f"checker_down {NAMES[i]}"
        for link in self.config.links:
            if link in w.partitioned:
                yield f"heal {link}"
            elif faults and self._may_partition(link):
                yield f"partition {link}"
        if faults and self.config.kind is Arbitrator.ETCD and w.lease and w.lease.holder:
            yield "etcd_election"

    def _arbitrator_actions(self, i: int, faults: bool) -> Iterator[str]:
        """Cut from the arbitrator, heal, and with etcd: arm a lost or late answer."""
        host, name = self.world.hosts[i], NAMES[i]
        if not host.arb_reachable:
            if self.config.partition_with_witness or not self._blind_partition(1 - i):
                yield f"arb_heal {name}"
        elif faults:
            yield f"arb_cut {name}"
        if faults and self.config.kind is Arbitrator.ETCD and host.core is not None:
            armed = self.world.lease_io.armed
            if (i, LOSE) not in armed and (i, SLOW) not in armed:
                yield f"arb_lose {name}"
                yield f"arb_slow {name}"

    def _blind_partition(self, reaching: int) -> bool:
        """Host ``reaching`` reaches the arbitrator while the nodes do not hear
        each other: every link is cut, or a running node has not heard its
        peer for longer than a round (a silence that outlasts the cut, which
        still ends in a takeover)."""
        w = self.world
        if not w.hosts[reaching].arb_reachable:
            return False
        if all(link in w.partitioned for link in self.config.links):
            return True
        interval = self.config.timing.heartbeat_interval
        return any(
            h.core is not None and (h.last_heard is None or w.now - h.last_heard > interval)
            for h in w.hosts
        )

    def _may_partition(self, link: str) -> bool:
        """Cutting ``link`` leaves a link, or a node without the arbitrator (unless
        ``partition_with_witness``)."""
        if self.config.partition_with_witness:
            return True
        others = [other for other in self.config.links if other != link]
        if any(other not in self.world.partitioned for other in others):
            return True
        return not all(h.arb_reachable for h in self.world.hosts)

    def _expiry_may_wait(self) -> bool:
        """etcd: a lease runs out at the next tick, and may be freed a round late."""
        lease = self.world.lease
        if self.config.kind is not Arbitrator.ETCD or lease is None or lease.holder is None:
            return False
        assert lease.expires_at is not None
        now = self.world.now + self.config.timing.heartbeat_interval
        return lease.expires_at <= now < lease.expires_at + self.config.timing.expiry_delay

    def apply(self, label: str) -> StepInfo:
        """Perform one action on the loaded world; ``self.world`` is the result."""
        info = StepInfo(label)
        verb, _, arg = label.partition(" ")
        before = self.world
        if verb in FAULTS:
            self.world = evolve(self.world, faults=self.world.faults + 1)
            if verb in APP_FAULTS:
                self.world = evolve(self.world, app_faults=self.world.app_faults + 1)
        elif verb in COMMANDS:
            self.world = evolve(self.world, commands=self.world.commands + 1)
        if verb == "tick":
            self._tick(info, late=arg == "late")
        elif verb in ("deliver", "duplicate", "drop", "delay", "stale"):
            link, sender_name = arg.split()
            self._message(verb, link, NAMES.index(sender_name), info)
        elif verb in ("partition", "heal"):
            self._partition(arg, verb == "partition")
        elif verb == "crash":
            self._crash(NAMES.index(arg))
        elif verb == "restart":
            self._restart(NAMES.index(arg), info)
        elif verb == "write":
            self._write(NAMES.index(arg), info)
        elif verb in ("arb_cut", "arb_heal"):
            self._set_host(NAMES.index(arg), arb_reachable=verb == "arb_heal")
        elif verb == "arb_disarm":  # (the fair continuation: no more faults)
            self.world = evolve(self.world, lease_io=evolve(self.world.lease_io, armed=frozenset()))
        elif verb in ("arb_lose", "arb_slow"):
            io = self.world.lease_io
            armed = io.armed | {(NAMES.index(arg), LOSE if verb == "arb_lose" else SLOW)}
            self.world = evolve(self.world, lease_io=evolve(io, armed=armed))
        elif verb == "etcd_election":
            # a new etcd leader extends every lease to at least a whole ttl
            lease = self.world.lease
            assert lease is not None and lease.expires_at is not None
            later = max(lease.expires_at, self.world.now + self._lease_ttl())
            self.world = evolve(self.world, lease=evolve(lease, expires_at=later))
        elif verb in ("checker_down", "checker_up"):
            i = NAMES.index(arg)
            self._set_host(i, site_down=verb == "checker_down")
            self._report_site_checker(i, info)
        elif verb == "move_fail":
            self._set_host(NAMES.index(arg), move_fails=True)
        elif verb == "resync_fail":
            i = NAMES.index(arg)
            # the attempt's session ends: an END the target applied goes unheard,
            # and what was streamed since may be lost
            self._set_host(i, resync_idle=True, end_unheard=None, streamed=frozenset())
            self._handle(i, ev.ResyncFailed("resync session broke"), info)
        elif verb == "app_check":
            self._handle(NAMES.index(arg), ev.CheckerDown(APP_CHECKER, "no answer"), info)
        elif verb in ("app_fail", "app_break"):
            i = NAMES.index(arg)
            running = self.world.hosts[i].app_running
            self._set_host(
                i,
                app_running=False,
                app_broken=self.world.hosts[i].app_broken or verb == "app_break",
            )
            if running:
                self._handle(i, ev.AppFailed("application died"), info)
        else:
            self._handle(NAMES.index(arg), ev.ADMIN_COMMANDS[verb](), info)
            unchanged = self.world.hosts == before.hosts and self.world.channels == before.channels
            if unchanged:
                # a refused or ignored command changes nothing: it costs no budget
                self.world = before
        if self.world.held:
            self._settle_held()
        return info

    # --- the pieces -------------------------------------------------------------------

    def _set_host(self, i: int, **changes: object) -> None:
        hosts = list(self.world.hosts)
        hosts[i] = evolve(hosts[i], **changes)
        self.world = evolve(self.world, hosts=tuple(hosts))

    def _tick(self, info: StepInfo, late: bool = False) -> None:
        """One heartbeat interval passes: timers fire, then every message in
        flight (but a delayed one) is delivered, in passes until none is left;
        the data plane makes one step of progress on any resync. With etcd,
        etcd's round comes first (``_etcd_round``; ``late``: a lease that ran
        out is freed only at the next round)."""
        now = self.world.now + self.config.timing.heartbeat_interval
        self.world = evolve(self.world, now=now)
        if self.config.kind is Arbitrator.ETCD:
            self._etcd_round(late, info)
        for i in range(2):
            if self.up(i):
                self._handle(i, ev.Timer(), info)
        lease = self.world.lease
        if (
            self.config.kind is Arbitrator.WITNESS
            and lease is not None
            and lease.holder is not None
            and lease.expires_at is not None
            and (now >= lease.expires_at)
        ):
            self.world = evolve(self.world, lease=evolve(lease, holder=None, expires_at=None))
        held = self.world.delayed
        self.world = evolve(self.world, delayed=frozenset())
        for _pass in range(4):
            ready = [key for key, _ in self.world.channels if key not in held]
            if not ready:
                break
            for link, sender in ready:
                if any(k == (link, sender) for k, _ in self.world.channels):
                    self._message("deliver", link, sender, info)
            held = frozenset()
        if self.world.stale:
            # the round delivered every newest frame (a held one last), which
            # supersedes the older ones; those whose newest was dropped are lost
            self.world = evolve(self.world, stale=())
        for i in range(2):
            if self.up(i) and self.world.hosts[i].app_stopping:
                # the stop script ends: the application and the VIP are released
                self._set_host(i, app_running=False, app_stopping=False)
                self._handle(i, ev.AppStopped(), info)
        # sources whose target applied END in an earlier round hear it after the
        # target reported ResyncDone
        unheard = [i for i in range(2) if self.world.hosts[i].end_unheard is not None]
        for i in range(2):
            host, core = self.world.hosts[i], self.world.hosts[i].core
            if (
                core is None
                or core.state is not State.RESYNC
                or core.resync_role is not ResyncRole.TARGET
            ):
                continue
            source = self.world.hosts[1 - i].core
            if host.resync_final is not None:
                delivered = host.resync_final
                self._set_host(i, resync_final=None)
                self._handle(i, ev.ResyncDone(delivered), info)
            elif self._resync_possible(i):
                self._resync_complete(i, info)
            elif source is not None and source.replicating and self._link_up(REPLICATION_LINK):
                # a new resync request breaks the synchronous stream the source holds
                self._handle(1 - i, ev.ReplicationFailed("peer restarted its resync"), info)
        for i in range(2):
            self._resync_end_heard(i, i in unheard, info)

    def _etcd_round(self, late: bool, info: StepInfo) -> None:
        """etcd at the start of a round, before the nodes' timers (the peer may
        ask at the very time the lease runs out): it frees a lease that ran
        out (``late``: not before the next round, within ``expiry_delay``),
        then the answers held back a round arrive."""
        lease = self.world.lease
        assert lease is not None
        now = self.world.now
        expires = lease.expires_at
        due = lease.holder is not None and expires is not None and now >= expires
        overdue = expires is not None and now >= expires + self.config.timing.expiry_delay
        if due and (overdue or not late):
            self.world = evolve(self.world, lease=evolve(lease, holder=None, expires_at=None))
        io = self.world.lease_io
        if io.late:
            self.world = evolve(self.world, lease_io=evolve(io, late=()))
            for k, answer in io.late:
                self._handle(k, answer, info)

    def _break_resync_session(self) -> None:
        """The resync session ends (either side crashed or stopped it): a source
        never hears the END its target applied, and what it streamed since may
        be lost."""
        for i in range(2):
            if self.world.hosts[i].end_unheard is not None:
                self._set_host(i, end_unheard=None, streamed=frozenset())

    def _resync_end_heard(self, i: int, due: bool, info: StepInfo) -> None:
        """The resync source ``i`` hears (or never hears) the target's
        acknowledgement of ``END``, one round after the target applied it."""
        host = self.world.hosts[i]
        core, target = host.core, self.world.hosts[1 - i]
        if core is None or core.resync_role is not ResyncRole.SOURCE:
            return
        if host.end_unheard is None:
            peer = target.core
            if (
                not host.resync_idle
                and peer is not None
                and peer.state is State.SECONDARY
                and peer.metadata.generation == core.metadata.generation
                and self._link_up(REPLICATION_LINK)
            ):
                # the next attempt's handshake: the peer already holds our generation
                # and asks for no resync (the data plane's "end unconfirmed")
                self._handle(i, ev.ResyncFailed("peer holds our generation, end unconfirmed"), info)
            return
        if not due:
            return
        delivered, streamed = host.end_unheard, host.streamed
        self._set_host(i, end_unheard=None, streamed=frozenset())
        if target.core is None or not self._link_up(REPLICATION_LINK):
            return  # the session broke: what was streamed since END may be lost; retried
        self._set_host(1 - i, data=target.data | streamed)
        self._handle(i, ev.PeerResynced(delivered), info)

    def _message(self, verb: str, link: str, sender: int, info: StepInfo) -> None:
        if verb == "stale":
            # the older frame arrives first: the newer one is still in flight
            stale = dict(self.world.stale)
            status = stale.pop((link, sender))
            self.world = evolve(self.world, stale=tuple(sorted(stale.items(), key=_chan_key)))
        else:
            channels = dict(self.world.channels)
            status = channels[(link, sender)]
            if verb == "delay":
                self.world = evolve(self.world, delayed=self.world.delayed | {(link, sender)})
                return
            if verb != "duplicate":
                del channels[(link, sender)]
                self.world = evolve(
                    self.world, channels=tuple(sorted(channels.items(), key=_chan_key))
                )
            if verb == "drop":
                return
            if self.world.stale:
                # the receiver has the newest: it never hands on an older one after it
                kept = tuple(c for c in self.world.stale if c[0][1] != sender)
                self.world = evolve(self.world, stale=kept)
        target = 1 - sender
        self._set_host(target, last_heard=self.world.now)
        was_serving = self.state(target) in (State.ALONE, State.PRIMARY)
        self._handle(target, ev.HeartbeatReceived(link, status), info)
        if was_serving and status.serving and self.state(target) in (State.ALONE, State.PRIMARY):
            info.kept_serving_against.append((target, status.generation))

    def _partition(self, link: str, cut: bool) -> None:
        w = self.world
        if cut:
            channels = tuple(c for c in w.channels if c[0][0] != link)
            stale = tuple(c for c in w.stale if c[0][0] != link)
            self.world = evolve(
                w, partitioned=w.partitioned | {link}, channels=channels, stale=stale
            )
        else:
            self.world = evolve(w, partitioned=w.partitioned - {link})

    def _crash(self, i: int) -> None:
        """Every process of the server dies: daemon and application. The disk stays."""
        w = self.world
        channels = tuple(c for c in w.channels if c[0][1] != i)
        stale = tuple(c for c in w.stale if c[0][1] != i)
        self.world = evolve(w, channels=channels, stale=stale)
        self._set_host(
            i,
            core=None,
            app_running=False,
            app_stopping=False,
            resync_final=None,
            resync_idle=False,
            set_aside_failed=False,
        )
        self._break_resync_session()
        # the lease stays with the dead holder until it expires at the arbitrator;
        # answers on their way to the dead daemon are lost
        io = self.world.lease_io
        if any(k == i for k, _ in io.late):
            kept = tuple(item for item in io.late if item[0] != i)
            self.world = evolve(self.world, lease_io=evolve(io, late=kept))

    def _restart(self, i: int, info: StepInfo) -> None:
        # a new run's views are above any the world still holds of the last one
        epoch = 1 + max((view[0] for view in self.world.views_of(i)), default=0)
        self._set_host(i, core=self._fresh_core(i, self.world.hosts[i].stored, epoch))
        if self.world.hosts[i].site_down:  # the new daemon's checker finds it down again
            self._report_site_checker(i, info)
        self._handle(i, ev.Start(), info)

    def _report_site_checker(self, i: int, info: StepInfo) -> None:
        if self.world.hosts[i].site_down:
            self._handle(i, ev.CheckerDown(SITE_CHECKER), info)
        else:
            self._handle(i, ev.CheckerUp(SITE_CHECKER), info)

    def _write(self, i: int, info: StepInfo) -> None:
        """The application on host i writes record ``w`` and waits for its
        acknowledgement (the fsync returns)."""
        w = self.world
        wid = w.writes
        self.world = evolve(w, writes=wid + 1)
        host = self.world.hosts[i]
        self._set_host(i, data=host.data | {wid})
        if host.end_unheard is not None:  # sent on the resync session, not known applied
            self._set_host(i, streamed=host.streamed | {wid})
        core = self.nodes[i]
        if core.facts.replicating:
            j = 1 - i
            if self._peer_receives(i):
                peer = self.world.hosts[j]
                self._set_host(j, data=peer.data | {wid})
                self.world = evolve(
                    self.world,
                    acked=self.world.acked | {wid},
                    replicated_acks=self.world.replicated_acks | {wid},
                    acked_in=self.world.acked_in | {(wid, core.facts.metadata.generation)},
                )
                return
            self._handle(i, ev.ReplicationFailed("peer does not acknowledge"), info)
        core = self.nodes[i]
        if (
            core.state is State.ALONE
            and core.facts.pending is None
            and self.world.hosts[i].app_running
        ):
            if core.writes_fenced:  # the peer may take over without it: held
                self.world = evolve(self.world, held=self.world.held | {(i, wid)})
            else:
                self._acknowledge_alone(i, wid)
        # otherwise the write stays unacknowledged: it is on this disk only

    def _acknowledge_alone(self, i: int, wid: int) -> None:
        core = self.nodes[i]
        self.world = evolve(
            self.world,
            acked=self.world.acked | {wid},
            acked_in=self.world.acked_in | {(wid, core.facts.metadata.generation)},
        )

    def _settle_held(self) -> None:
        """After every step: held fsyncs return once the fence is down (if the
        host still serves the application) or fail when it no longer does."""
        for i, wid in sorted(self.world.held):
            host = self.world.hosts[i]
            core = self.nodes[i] if host.core is not None else None
            serving = core is not None and core.state.serving and host.app_running
            if serving and core is not None and core.writes_fenced:
                continue
            self.world = evolve(self.world, held=self.world.held - {(i, wid)})
            if serving:
                self._acknowledge_alone(i, wid)

    def _peer_receives(self, i: int) -> bool:
        j = 1 - i
        peer = self.world.hosts[j]
        if peer.core is None or self.config.links[REPLICATION_LINK] in self.world.partitioned:
            return False
        if not self.nodes[i].facts.replicating:
            return False
        return peer.core.state is State.SECONDARY or (
            peer.core.state is State.RESYNC and peer.resync_final is not None
        )

    def _link_up(self, index: int) -> bool:
        return self.config.links[index] not in self.world.partitioned

    def _resync_possible(self, target: int) -> bool:
        source = 1 - target
        src = self.world.hosts[source].core
        return (
            src is not None
            and src.state.serving
            and src.resync_role is ResyncRole.SOURCE
            and not self.world.hosts[source].resync_idle
            and not self.world.hosts[target].set_aside_failed
            and self.config.links[REPLICATION_LINK] not in self.world.partitioned
        )

    def _resync_complete(self, target: int, info: StepInfo) -> None:
        """The source has sent everything, ``END`` last; the target applied it: it
        holds the full copy and reports ResyncDone at the next tick. The source
        hears the acknowledgement only then (``_resync_end_heard``), after the
        target: in between it still serves alone and acknowledges writes on its
        own, which reach the target only if the session lives until the ack."""
        source = 1 - target
        data = self.world.hosts[source].data
        src = self.world.hosts[source].core
        assert src is not None
        generation = src.metadata.generation
        self._set_host(target, data=data, resync_final=generation)
        self._set_host(source, end_unheard=generation, streamed=frozenset())

    def _handle(self, i: int, event: ev.Event, info: StepInfo) -> None:
        """One macro step: the core handles ``event``; the simulated runtime runs
        the effects in order and feeds outcomes back until none is left."""
        queue: list[tuple[int, ev.Event]] = [(i, event)]
        handled = 0
        while queue:
            k, event = queue.pop(0)
            if not self.up(k):
                continue
            handled += 1
            if handled > self.MAX_OUTCOMES:
                info.outcome_overflow = True
                return
            node = self.nodes[k]
            before = node.state
            held = holds_resources(self.world, k)
            base = node.facts.metadata.generation
            effects = node.handle(event, self.world.now)
            if (
                self.config.lease_mutation == "fence-from-heard"
                and isinstance(event, ev.ArbitrationGranted)
                and node.facts.lease.held
            ):
                fence = self.world.now + self.config.timing.lease_ttl
                node.update(lease=evolve(node.facts.lease, fence_at=fence))
            minted = node.facts.metadata.generation
            if minted != base and minted.origin == NAMES[k] and not self._known(minted):
                self.world = evolve(
                    self.world, minted_from=self.world.minted_from | {(minted, base)}
                )
                # a forced history is what a forced node mints, and what is minted
                # on it; a generation adopted from the peer (a resync) keeps its own
                if node.facts.forced or base in self.world.forced_lineage:
                    self.world = evolve(
                        self.world, forced_lineage=self.world.forced_lineage | {minted}
                    )
            if node.state.serving and not before.serving:
                blind = not self.config.arbitrator and before is State.SECONDARY and self._silent(k)
                info.entered_serving.append((k, before, node.facts.forced, blind))
            for effect in effects:
                starts = isinstance(effect, fx.StartApp | fx.RestartApp)
                if starts and self.world.hosts[k].app_stopping:
                    # the executor runs one action at a time: the stop ends first
                    self._set_host(k, app_stopping=False)
                    queue.append((k, ev.AppStopped()))
                outcome = self._execute(k, effect, info)
                if outcome is not None:
                    queue.append((k, outcome))
            self._set_host(k, core=node.snapshot())
            self._track_dual_serving(k, held, info)

    def _known(self, generation: Generation) -> bool:
        return any(child == generation for child, _ in self.world.minted_from)

    def _track_dual_serving(self, k: int, held: bool, info: StepInfo) -> None:
        both = holds_resources(self.world, 0) and holds_resources(self.world, 1)
        if not both:
            if self.world.dual_serving_blind:
                self.world = evolve(self.world, dual_serving_blind=False)
            return
        if not held:
            # k just started serving while its peer serves: acceptable only as a
            # takeover after losing an in-sync peer on every link, or when an
            # operator forced it
            # Without an arbitrator a full partition looks like a dead peer: a node
            # that heard nothing for the dead timeout may serve (DESIGN S1). With
            # one, only an operator's forced promotion may make two serve.
            blind = (
                (not self.config.arbitrator and self._silent(k))
                or self.nodes[k].facts.forced
                or self.nodes[1 - k].facts.forced
            )
            self.world = evolve(self.world, dual_serving_blind=blind)

    def _silent(self, k: int) -> bool:
        heard = self.world.hosts[k].last_heard
        return heard is None or self.world.now - heard >= self.config.timing.dead_timeout

    def _execute(self, k: int, effect: fx.Effect, info: StepInfo) -> ev.Event | None:
        host = self.world.hosts[k]
        if isinstance(effect, fx.PersistMetadata):
            self._set_host(k, stored=effect.metadata)
        elif isinstance(effect, fx.SendHeartbeat):
            status = evolve(effect.status, reason="")
            channels = dict(self.world.channels)
            stale = dict(self.world.stale)
            for link in self.config.links:
                if link not in self.world.partitioned:
                    before = channels.get((link, k))
                    channels[(link, k)] = status
                    older = stale.pop((link, k), None)
                    if before is None or not self.config.stale_frames:
                        continue  # nothing older in flight (delivered, superseded or lost)
                    # keep the oldest frame still in flight: the most outdated view
                    older = older if older is not None else before
                    if older != status:
                        stale[(link, k)] = older
            self.world = evolve(
                self.world,
                channels=tuple(sorted(channels.items(), key=_chan_key)),
                stale=tuple(sorted(stale.items(), key=_chan_key)),
            )
        elif isinstance(effect, fx.StartApp | fx.RestartApp):
            # (a restart runs the stop script, then the start script)
            if host.app_broken:
                self._set_host(k, app_running=False)
                return ev.AppFailed("start script failed")
            self._set_host(k, app_running=True)
            return ev.AppStarted()
        elif isinstance(effect, fx.StopApp):
            if host.app_running:
                self._set_host(k, app_stopping=True)  # AppStopped at the end of the round
                return None
            return ev.AppStopped()
        elif isinstance(effect, fx.Quarantine):
            if host.move_fails:  # nothing moved
                self._set_host(k, move_fails=False)
                return ev.QuarantineFailed("disk error")
            self._set_host(k, quarantine=host.quarantine | host.data)
            return ev.QuarantineDone()
        elif isinstance(effect, fx.StartResync) and effect.role == "source":
            self._set_host(k, resync_idle=False)
        elif isinstance(effect, fx.StartResync):
            self._set_host(k, set_aside_failed=False)
            if effect.mode == "full" and self.config.quarantine_full_resync:
                # the data plane moves what the copy would overwrite aside first
                # (modelled for pre-existing data only: a write id in quarantine
                # would excuse it from S3)
                if host.move_fails:  # nothing moved, and nothing is received
                    self._set_host(k, move_fails=False, set_aside_failed=True)
                    return ev.QuarantineFailed("disk error")
                kept = frozenset(d for d in host.data if d in PREEXISTING)
                self._set_host(k, quarantine=host.quarantine | kept)
        elif isinstance(effect, fx.StopResync):
            # a target that applied END has acknowledged it already (the data
            # plane does, whatever its core decides next); a source that stops
            # its resync never hears it, and may lose what it streamed since
            self._set_host(
                k,
                resync_final=None,
                end_unheard=None,
                streamed=frozenset(),
                resync_idle=False,
                set_aside_failed=False,
            )
        elif isinstance(effect, fx.RequestArbitration):
            return self._arbitrate_request(k, effect)
        elif isinstance(effect, fx.RenewArbitration):
            return self._arbitrate_renewal(k, effect)
        elif isinstance(effect, fx.ReleaseArbitration):
            # (the witness or etcd frees it; ping holds nothing)
            lease = self.world.lease
            if lease is not None and host.arb_reachable and lease.holder == NAMES[k]:
                self.world = evolve(self.world, lease=evolve(lease, holder=None, expires_at=None))
        elif isinstance(effect, fx.TransitionRecord):
            info.records.append(effect)
        elif isinstance(effect, fx.Refused):
            info.refused.append(effect)
        return None

    def _arbitrate_request(self, k: int, effect: fx.RequestArbitration) -> ev.Event | None:
        kind = self.config.kind
        if not kind:
            return ev.ArbitrationDenied("no arbitrator configured")
        if not self.world.hosts[k].arb_reachable:
            return ev.ArbitrationDenied("arbitrator unreachable")
        if kind is Arbitrator.PING:
            return ev.ArbitrationGranted(effect.generation)  # it reaches the witness
        lease = self.world.lease
        assert lease is not None
        if kind is Arbitrator.ETCD:
            # only etcd's expiry frees a lease (the node passes no clock)
            lease = evolve(lease, expires_at=None)
        verdict = decide_request(
            lease,
            requester=NAMES[k],
            wanted=effect.generation,
            base=effect.base,
            forced=effect.forced,
            now=self.world.now,
            ttl=self._lease_ttl(),
        )
        if verdict.granted or kind is Arbitrator.WITNESS:  # (etcd's read record: no clock)
            self.world = evolve(self.world, lease=verdict.record)
        if verdict.granted:
            answer: ev.Event = ev.ArbitrationGranted(verdict.record.generation)
        else:
            answer = ev.ArbitrationDenied(verdict.reason)
        lost = ev.ArbitrationDenied("no answer from etcd")
        return self._etcd_answer(k, answer, lost=lost, exposed=self.config.late_grants)

    def _arbitrate_renewal(self, k: int, effect: fx.RenewArbitration) -> ev.Event | None:
        kind = self.config.kind
        if not kind or not self.world.hosts[k].arb_reachable:
            return None  # no answer: the node's own deadline decides
        if kind is Arbitrator.PING:
            return ev.ArbitrationGranted(effect.generation)
        lease = self.world.lease
        assert lease is not None
        verdict = decide_renewal(
            lease, requester=NAMES[k], now=self.world.now, ttl=self._lease_ttl()
        )
        self.world = evolve(self.world, lease=verdict.record)
        answer: ev.Event
        if verdict.granted:  # (etcd: the keepalive, then the holder key read back as ours)
            answer = ev.ArbitrationGranted(effect.generation)
        elif kind is Arbitrator.WITNESS:
            answer = ev.ArbitrationDenied(verdict.reason)
        else:  # the lease ran out at etcd (or the key is another's)
            answer = ev.ArbitrationLost(f"etcd: {verdict.reason}")
        return self._etcd_answer(k, answer, lost=None)

    def _lease_ttl(self) -> float:
        """The lease the arbitrator grants (etcd's shortened by ``short-lease``)."""
        ttl = self.config.timing.lease_ttl
        short = self.config.kind is Arbitrator.ETCD and self.config.lease_mutation == "short-lease"
        return ttl / 2 if short else ttl

    def _etcd_answer(
        self, k: int, answer: ev.Event, lost: ev.Event | None, exposed: bool = True
    ) -> ev.Event | None:
        """What node ``k`` hears of etcd's ``answer``: this call supersedes any
        answer still on its way (the executor reports only the newest call's);
        an armed fault makes it ``lost`` (etcd acted, the node heard nothing:
        its request counts as denied; etcd keeps the key until it runs out),
        or late (delivered at the next round); not ``exposed`` to it, the
        answer comes at once and the fault stays armed for the next call."""
        if self.config.kind is not Arbitrator.ETCD:
            return answer
        io = self.world.lease_io
        late = tuple(item for item in io.late if item[0] != k)
        armed = io.armed
        answer_now: ev.Event | None
        if not exposed:
            answer_now = answer
        elif (k, LOSE) in armed:
            armed, answer_now = armed - {(k, LOSE)}, lost
        elif (k, SLOW) in armed:
            armed, answer_now = armed - {(k, SLOW)}, None
            late = (*late, (k, answer))
        else:
            answer_now = answer
        if armed != io.armed or late != io.late:
            self.world = evolve(self.world, lease_io=LeaseIO(armed=armed, late=late))
        return answer_now


def holds_resources(world: World, i: int) -> bool:
    """Host ``i`` serves: its state is a serving one, or it still runs the
    application (and holds the virtual IP) because its stop has not finished."""
    host = world.hosts[i]
    return host.core is not None and (host.core.state.serving or host.app_running)


def _chan_key(item: tuple[tuple[str, int], PeerStatus]) -> tuple[str, int]:
    return item[0]


def _frame_key(
    channel: tuple[str, int], s: PeerStatus, rank: tuple[Callable[[View], int], ...]
) -> tuple[object, ...]:
    """A frame in flight as the deduplication key sees it (the reason left out)."""
    sender = channel[1]
    return (
        channel,
        rank[sender](s.view),
        rank[1 - sender](s.peer_view),
        s.state,
        s.substatus,
        s.generation,
        s.synced_generation,
        s.consistent,
        s.handover,
        s.last_state,
    )


FAULTS = frozenset(
    {
        "crash",
        "drop",
        "delay",
        "duplicate",
        "stale",
        "partition",
        "arb_cut",
        "app_fail",
        "app_break",
        "app_check",
        "checker_down",
        "move_fail",
        "resync_fail",
    }
)
APP_FAULTS = frozenset(
    {"app_fail", "app_break", "app_check", "checker_down", "move_fail", "resync_fail"}
)
COMMANDS = tuple(ev.ADMIN_COMMANDS)
