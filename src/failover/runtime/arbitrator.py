"""The node's side of arbitration: ask, renew and release the lease, report what was said.

``Arbitrator`` is the small interface the action executor calls for the
core's three arbitration effects; each call returns a ``Reply`` and never
raises for the arbitrator's or the network's faults. A witness service
(``WitnessArbitrator``) is one implementation, a lease in etcd
(``failover.runtime.etcdlease.EtcdArbitrator``) another, a ping witness
(``failover.runtime.ping.PingArbitrator``) a third.

How a reply becomes an event (``arbitration_event``) is reporting, not
deciding (the core's table decides what each event means):

- request: ``Granted`` -> ``ArbitrationGranted``; anything else (refused,
  unreachable) -> ``ArbitrationDenied`` with the reason: the node does not
  ask again before a recheck (guard ``denied_lately``);
- renew: ``Granted`` -> ``ArbitrationGranted`` (the lease renewed);
  ``Lost``/``Denied`` -> ``ArbitrationLost`` (the arbitrator said the
  lease is gone: the serving node fences at once); ``Unreachable`` -> no
  event: the arbitrator said nothing, the lease may still be ours, and the
  core's own deadline (``lease_expired`` at ``fence_at``, before the lease
  can run out at the arbitrator) fences the node unless a later renewal
  gets through;
- release: no event (the core awaits none).

``WitnessArbitrator`` speaks ``failover.witness.messages`` over UDP: one
datagram out, the matching answer in (``WitnessSession`` checks MAC, replay,
echo and the request's seq), a few attempts each under ``attempt_timeout``;
an answer "ask again" (the witness restarted) is taken at once with the
incarnation it teaches. A release names the grant it ends (the seq of the
acquire answered ``GRANTED``, and its generation, which the session keeps):
the witness frees only that grant, so a release that arrives late, after a
new grant to this node, frees nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio
import structlog

from failover.core import effects as fx
from failover.core import events as ev
from failover.core.state import Generation
from failover.errors import ConfigError, PeerProtocolError
from failover.fsutil import describe_error
from failover.wire import FrameCodec, FrameKind, ReplayGuard
from failover.witness.messages import (
    MAX_DATAGRAM,
    WITNESS_SENDER,
    Answer,
    Op,
    Outcome,
    Request,
    decode_answer,
    encode_request,
    release_of,
    witness_codec,
)

if TYPE_CHECKING:
    from failover.config.models import ClusterConfig

log = structlog.get_logger("failover.arbitrator")


@dataclass(frozen=True)
class Granted:
    generation: Generation


@dataclass(frozen=True)
class Denied:
    reason: str


@dataclass(frozen=True)
class Lost:
    reason: str


@dataclass(frozen=True)
class Released:
    pass


@dataclass(frozen=True)
class Unreachable:
    reason: str


Reply = Granted | Denied | Lost | Released | Unreachable


class Arbitrator(Protocol):
    """What the executor needs of an arbitrator (a witness, etcd, a ping witness)."""

    async def request(self, generation: Generation, base: Generation, forced: bool) -> Reply:
        """The lease to serve ``generation``, continuing from ``base``."""
        ...

    async def renew(self, generation: Generation) -> Reply:
        """Extend the lease this node holds."""
        ...

    async def release(self) -> Reply:
        """Give the lease back (the node stopped serving)."""
        ...


def arbitration_event(effect: fx.Effect, reply: Reply) -> ev.Event | None:
    """The event that reports ``reply`` to ``effect`` (see the module docstring)."""
    match effect, reply:
        case _, Granted(generation) if not isinstance(effect, fx.ReleaseArbitration):
            return ev.ArbitrationGranted(generation=generation)
        case fx.RequestArbitration(), (Denied(reason) | Lost(reason) | Unreachable(reason)):
            return ev.ArbitrationDenied(reason=reason)
        case fx.RenewArbitration(), (Denied(reason) | Lost(reason)):
            return ev.ArbitrationLost(reason=reason)
        case fx.RenewArbitration(), Unreachable(reason):
            log.warning("lease not renewed: the arbitrator did not answer", reason=reason)
            return None
        case fx.ReleaseArbitration(), (Denied(reason) | Lost(reason) | Unreachable(reason)):
            log.warning("lease not released: it runs out at the arbitrator", reason=reason)
            return None
    return None


class WitnessSession:
    """The frames of one node's conversation with a witness, sans-IO.

    ``frame`` builds the next request (a new seq, the witness incarnation
    learned so far as echo); ``accept`` returns the answer to request ``seq``
    carried by ``data``, or None for anything else (forged, replayed, for
    another request or another run of this node), never raising. It keeps
    the grant this node holds (``grant``: the seq of the acquire answered
    ``GRANTED`` and the generation granted), which ``release`` names.
    """

    def __init__(self, codec: FrameCodec, node: str, incarnation: int) -> None:
        self.codec = codec
        self.node = node
        self.incarnation = incarnation
        self.echo = 0
        self.seq = 0
        self.guard = ReplayGuard()
        self.grant: tuple[int, Generation] | None = None
        self._op: Op | None = None  # of the request ``seq`` carries

    def release(self) -> Request | None:
        """The release of the grant this node holds (None: it holds none it knows of)."""
        if self.grant is None:
            return None
        seq, generation = self.grant
        return release_of(generation, seq)

    def frame(self, request: Request) -> tuple[int, bytes]:
        self.seq += 1
        self._op = request.op
        data = self.codec.encode(
            FrameKind.HEARTBEAT,
            self.node,
            self.incarnation,
            self.seq,
            encode_request(request),
            echo=self.echo,
        )
        return self.seq, data

    def accept(self, data: bytes, seq: int) -> Answer | None:
        try:
            frame = self.codec.decode(data)
            if frame.sender != WITNESS_SENDER:
                raise PeerProtocolError(f"sender {frame.sender}")
            self.guard.admit(frame)
            if frame.echo != self.incarnation:
                raise PeerProtocolError(f"answer to incarnation {frame.echo}")
            answer = decode_answer(frame.payload)
            if answer.node != self.node:
                raise PeerProtocolError(f"answer to node {answer.node}")
        except PeerProtocolError as exc:
            log.debug("witness answer dropped", problem=str(exc))
            return None
        self.echo = frame.incarnation  # authentic and addressed to this run
        if answer.request_seq != seq or seq != self.seq:
            log.debug("witness answer to an earlier request dropped", seq=answer.request_seq)
            return None
        match self._op, answer.outcome:
            case Op.ACQUIRE, Outcome.GRANTED:
                self.grant = (seq, answer.generation)
            case ((Op.RENEW | Op.RELEASE), Outcome.LOST):
                self.grant = None  # the witness says the lease is not ours
            case Op.RELEASE, Outcome.RELEASED:
                self.grant = None
        return answer


class WitnessArbitrator:
    """``Arbitrator`` backed by a witness service at ``host:port`` (UDP)."""

    def __init__(
        self,
        *,
        cluster: str,
        key: bytes,
        node: str,
        incarnation: int,
        address: str,
        ttl: float,
        attempt_timeout: float = 0.5,
        attempts: int = 4,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.address = address
        self.ttl = ttl
        self.attempt_timeout = attempt_timeout
        self.attempts = attempts
        self.session = WitnessSession(witness_codec(cluster, key), node, incarnation)
        self._lock = anyio.Lock()

    async def request(self, generation: Generation, base: Generation, forced: bool) -> Reply:
        return await self._call(Request(Op.ACQUIRE, self.ttl, generation, base, forced))

    async def renew(self, generation: Generation) -> Reply:
        return await self._call(Request(Op.RENEW, self.ttl, generation, generation))

    async def release(self) -> Reply:
        return await self._call(None)

    async def _call(self, request: Request | None) -> Reply:
        async with self._lock:
            if request is None:  # a release: of the grant held when its turn comes
                request = self.session.release()
                if request is None:
                    return Released()  # no grant known here: nothing to name, nothing ours
            try:
                answer = await self._exchange(request)
            except OSError as exc:
                return Unreachable(f"witness {self.address}: {describe_error(exc)}")
        if answer is None:
            return Unreachable(
                f"no answer from the witness at {self.address} "
                f"({self.attempts} tries of {self.attempt_timeout:g} s)"
            )
        match answer.outcome:
            case Outcome.GRANTED:
                return Granted(answer.generation)
            case Outcome.RELEASED:
                return Released()
            case Outcome.LOST:
                return Lost(answer.reason or "the witness says the lease is not ours")
            case _:
                return Denied(answer.reason or "denied by the witness")

    async def _exchange(self, request: Request) -> Answer | None:
        problem: OSError | None = None
        async with await anyio.create_connected_udp_socket(self.host, self.port) as sock:
            for _ in range(self.attempts):
                seq, data = self.session.frame(request)
                answer: Answer | None = None
                with anyio.move_on_after(self.attempt_timeout):
                    try:
                        await sock.send(data)
                        while answer is None:
                            reply = await sock.receive()
                            if len(reply) <= MAX_DATAGRAM:
                                answer = self.session.accept(reply, seq)
                    except OSError as exc:  # refused (nobody listens), unreachable
                        problem = exc
                        await anyio.sleep(self.attempt_timeout)
                if answer is not None and answer.outcome is not Outcome.RETRY:
                    return answer
        if problem is not None:
            raise problem
        return None


def build_arbitrator(config: ClusterConfig, node: str, incarnation: int) -> Arbitrator | None:
    """The arbitrator ``config`` names for ``node`` (None for ``type: none``).

    ``incarnation`` is the daemon's (larger at every start): the witness's
    replay guard refuses requests of an earlier run. Raises ``ConfigError``
    when the cluster key cannot be read (the witness needs it), or etcd's
    client library is missing.
    """
    arbitrator = config.cluster.arbitrator
    if arbitrator.type == "none":
        return None
    if arbitrator.type == "etcd":
        return _build_etcd(config, node)
    if arbitrator.type == "ping":
        return _build_ping(config, node)
    key = config.read_key()
    if key is None or arbitrator.address is None:
        raise ConfigError(["cluster.arbitrator: a witness needs a cluster key and an address"])
    return WitnessArbitrator(
        cluster=config.cluster.name,
        key=key,
        node=node,
        incarnation=incarnation,
        address=arbitrator.address,
        ttl=arbitrator.lease_ttl,
    )


def _build_ping(config: ClusterConfig, node: str) -> Arbitrator:
    from failover.runtime.ping import PingArbitrator  # noqa: PLC0415 - it imports this module

    arbitrator = config.cluster.arbitrator
    if arbitrator.address is None:
        raise ConfigError(["cluster.arbitrator: type 'ping' needs an address"])
    return PingArbitrator(
        address=arbitrator.address,
        port=arbitrator.port,
        probe_count=arbitrator.probe_count,
        probe_timeout=arbitrator.probe_timeout,
        call_bound=arbitrator.ping_call_bound(),
        output_dir=config.node_dir(node) / "arbitrator",
    )


def _build_etcd(config: ClusterConfig, node: str) -> Arbitrator:
    arbitrator = config.cluster.arbitrator
    try:
        from failover.runtime.etcdlease import EtcdArbitrator, EtcdTls  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            [f"cluster.arbitrator: type 'etcd' needs the etcd3gw package ({exc})"]
        ) from None
    if not arbitrator.endpoints:
        raise ConfigError(["cluster.arbitrator: type 'etcd' needs endpoints"])
    tls = arbitrator.tls
    return EtcdArbitrator(
        cluster=config.cluster.name,
        node=node,
        endpoints=arbitrator.endpoints,
        key_prefix=arbitrator.key_prefix or "/failover",
        ttl=arbitrator.lease_ttl,
        tls=None
        if tls is None
        else EtcdTls(
            *(
                None if path is None else str(path)
                for path in (tls.ca_file, tls.cert_file, tls.key_file)
            )
        ),
    )
