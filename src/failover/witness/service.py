"""The witness service: one decision per datagram, then the UDP server around it.

``Witness.handle`` takes one datagram and returns the answer to send (or
None), on its own: the network loop (``serve``) only moves bytes. For each
datagram, in order (the invariants are in ``failover.witness``):

1. size (at most ``MAX_DATAGRAM`` bytes);
2. which cluster: the frame's cluster id must be one the witness serves
   (``unknown_cluster`` otherwise); then that cluster's ``FrameCodec``
   checks structure and the HMAC under the witness key;
3. at most ``MAX_NODES`` distinct senders per cluster (``too_many_nodes``);
4. the replay guard (``replayed``, ``stale_incarnation``);
5. the payload (``bad_payload``);
6. the echo: a request made for another run of the witness is answered
   ``RETRY`` and changes nothing;
7. the verdict of ``decide_request`` / ``decide_renewal`` (or
   ``decide_release``: only the grant the release names is freed),
   saved durably *before* it is adopted and answered; a save that fails is
   answered as a refusal and changes nothing.

Every refusal of steps 1-5 is counted in ``stats`` and logged (what, why,
from where), at most ``LOG_BURST`` lines per reason in each ``LOG_WINDOW``
seconds: past that, one line per reason and window says how many were not
logged, so a flood costs the log little. Nothing is answered to a refused
datagram, so a stranger learns nothing and cannot use the witness to
amplify traffic.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import anyio.abc
import structlog

from failover.core.arbitration import LeaseRecord, Verdict, decide_renewal, decide_request
from failover.errors import PeerProtocolError, UsageError
from failover.runtime.store import IncarnationStore
from failover.wire import Frame, FrameCodec, FrameKind, FrameRejected, Reason, ReplayGuard
from failover.witness.messages import (
    MAX_DATAGRAM,
    MAX_TTL_MS,
    WITNESS_SENDER,
    Answer,
    Op,
    Outcome,
    Request,
    decode_request,
    encode_answer,
    witness_codec,
)
from failover.witness.store import ClusterStore, Grant, WitnessStateError

log = structlog.get_logger("failover.witness")

MAX_NODES = 8
"""Distinct node names the witness keeps replay state for, per cluster."""
LOG_BURST = 20
"""Refusals logged per reason in one ``LOG_WINDOW``."""
LOG_WINDOW = 10.0
"""Seconds of the refusal log's window."""


@dataclass
class ClusterState:
    """What the witness holds for one cluster."""

    name: str
    codec: FrameCodec
    store: ClusterStore
    record: LeaseRecord
    ttl: float
    grant: Grant | None = None  # the grant ``record.holder`` holds (None: unknown or free)
    guard: ReplayGuard = field(default_factory=ReplayGuard)
    senders: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str
    cluster: str | None = None


class Witness:
    """The witness of several clusters (``keys``: cluster name -> cluster key).

    Loads every cluster's record and takes a new incarnation (saved before
    use) from ``state_dir``. Raises ``WitnessStateError`` when a record is
    unreadable or the directory unwritable.
    """

    def __init__(
        self, state_dir: Path, keys: dict[str, bytes], *, now: float | None = None
    ) -> None:
        now = time.monotonic() if now is None else now
        self.state_dir = state_dir
        try:
            self.incarnation = IncarnationStore(state_dir / "incarnation.json").next()
        except UsageError as exc:  # an unwritable directory or a corrupt file
            raise WitnessStateError(str(exc)) from exc
        self.seq = 0
        self.stats: Counter[str] = Counter()
        self._window_start = now
        self._logged: Counter[str] = Counter()  # refusals logged in this window, per reason
        self.clusters: dict[bytes, ClusterState] = {}
        for name, key in keys.items():
            store = ClusterStore(state_dir, name)
            record, ttl, grant = store.load(now=now)
            codec = witness_codec(name, key)
            self.clusters[codec.cluster_id] = ClusterState(name, codec, store, record, ttl, grant)

    def cluster(self, name: str) -> ClusterState:
        return next(c for c in self.clusters.values() if c.name == name)

    # --- one datagram ------------------------------------------------------------------

    def handle(self, data: bytes, source: str, now: float) -> bytes | None:
        """The answer to ``data`` from ``source`` at monotonic time ``now``, or None."""
        try:
            outcome = self._handle(data, now)
        except Exception as exc:  # a bug here must not stop the witness of every cluster
            outcome = Refusal(Reason.INTERNAL_ERROR.value, f"{type(exc).__name__}: {exc}")
            log.exception("witness request failed", source=source)
        if isinstance(outcome, Refusal):
            self.stats[outcome.reason] += 1
            if self._may_log(outcome.reason, now):
                log.warning(
                    "witness request refused",
                    reason=outcome.reason,
                    detail=outcome.detail,
                    source=source,
                    cluster=outcome.cluster,
                )
            return None
        self.stats["answered"] += 1
        return outcome

    def _may_log(self, reason: str, now: float) -> bool:
        if now >= self._window_start + LOG_WINDOW:
            for what, count in sorted(self._logged.items()):
                if count > LOG_BURST:
                    log.warning(
                        "witness refusals not logged",
                        reason=what,
                        count=count - LOG_BURST,
                        seconds=round(now - self._window_start, 1),
                    )
            self._logged.clear()
            self._window_start = now
        self._logged[reason] += 1
        return self._logged[reason] <= LOG_BURST

    def _handle(self, data: bytes, now: float) -> bytes | Refusal:
        if len(data) > MAX_DATAGRAM:
            return Refusal(Reason.TOO_LARGE.value, f"{len(data)} bytes, at most {MAX_DATAGRAM}")
        found = self._decode(data)
        if isinstance(found, Refusal):
            return found
        cluster, frame = found
        if frame.sender not in cluster.senders and len(cluster.senders) >= MAX_NODES:
            return Refusal("too_many_nodes", f"{frame.sender}: {MAX_NODES} known", cluster.name)
        try:
            cluster.guard.admit(frame)
            cluster.senders.add(frame.sender)
            request = decode_request(frame.payload)
        except FrameRejected as rejected:
            return Refusal(rejected.reason.value, f"{frame.sender}: {rejected}", cluster.name)
        except PeerProtocolError as exc:
            return Refusal(Reason.BAD_PAYLOAD.value, f"{frame.sender}: {exc}", cluster.name)
        if frame.echo != self.incarnation:
            answer = Answer(
                frame.sender,
                frame.seq,
                Outcome.RETRY,
                reason="ask again echoing this incarnation",
            )
        else:
            answer = self._decide(cluster, frame, request, now)
        return self._frame(cluster, frame.incarnation, answer)

    def _decode(self, data: bytes) -> tuple[ClusterState, Frame] | Refusal:
        for cluster in self.clusters.values():
            try:
                return cluster, cluster.codec.decode(data)
            except FrameRejected as rejected:
                if rejected.reason is Reason.BAD_MAC:  # of this cluster, not its key
                    return Refusal(rejected.reason.value, rejected.detail, cluster.name)
                if rejected.reason is not Reason.WRONG_CLUSTER:  # not a frame at all
                    return Refusal(rejected.reason.value, rejected.detail)
        if not self.clusters:
            return Refusal("unknown_cluster", "this witness serves no cluster")
        return Refusal("unknown_cluster", f"cluster id {bytes(data[10:18]).hex()} is not served")

    def _frame(self, cluster: ClusterState, node_incarnation: int, answer: Answer) -> bytes:
        self.seq += 1
        return cluster.codec.encode(
            FrameKind.HEARTBEAT,
            WITNESS_SENDER,
            self.incarnation,
            self.seq,
            encode_answer(answer),
            echo=node_incarnation,
        )

    def _decide(self, cluster: ClusterState, frame: Frame, request: Request, now: float) -> Answer:
        record, ttl, grant = cluster.record, cluster.ttl, cluster.grant
        sender, seq = frame.sender, frame.seq
        new_grant = grant
        match request.op:
            case Op.ACQUIRE:
                verdict = decide_request(
                    record,
                    requester=sender,
                    wanted=request.wanted,
                    base=request.base,
                    forced=request.forced,
                    now=now,
                    ttl=request.ttl,
                )
                new_grant = granted_grant(record, grant, sender, Grant(frame.incarnation, seq))
                yes, no = Outcome.GRANTED, Outcome.DENIED
            case Op.RENEW:
                verdict = decide_renewal(record, requester=sender, now=now, ttl=request.ttl)
                yes, no = Outcome.GRANTED, Outcome.LOST
            case Op.RELEASE:
                verdict = decide_release(record, grant, sender, frame.incarnation, request)
                new_grant = None
                yes, no = Outcome.RELEASED, Outcome.LOST
        if not verdict.granted:
            return self._answer(sender, seq, no, record, now, verdict.reason)
        new_ttl = request.ttl if request.op is not Op.RELEASE else ttl
        if verdict.record.holder is None:
            new_grant = None
        if (verdict.record, new_ttl, new_grant) != (record, ttl, grant):
            try:
                cluster.store.save(verdict.record, new_ttl, now=now, grant=new_grant)
            except WitnessStateError as exc:
                log.error(
                    "witness record not saved: refusing", cluster=cluster.name, error=str(exc)
                )
                return self._answer(
                    sender, seq, no, record, now, "the witness cannot save its record"
                )
            cluster.record, cluster.ttl, cluster.grant = verdict.record, new_ttl, new_grant
            log.info(
                "witness record changed",
                cluster=cluster.name,
                op=request.op.name.lower(),
                node=sender,
                holder=verdict.record.holder,
                generation=str(verdict.record.generation),
                grant=None if new_grant is None else f"{new_grant.incarnation}/{new_grant.seq}",
            )
        return self._answer(sender, seq, yes, verdict.record, now, verdict.reason)

    @staticmethod
    def _answer(
        node: str, seq: int, outcome: Outcome, record: LeaseRecord, now: float, reason: str
    ) -> Answer:
        left = 0.0
        if record.holder is not None and record.expires_at is not None:
            left = min(max(record.expires_at - now, 0.0), MAX_TTL_MS / 1000)
        return Answer(node, seq, outcome, record.generation, left, reason)


def granted_grant(record: LeaseRecord, grant: Grant | None, sender: str, asked: Grant) -> Grant:
    """The grant an acquire ``asked`` (by ``sender``) holds once granted: its own,
    unless ``sender`` already holds a later one of the same run (a retry of an
    earlier acquire, delayed past it, does not take the name from the grant
    the node heard last)."""
    if (
        record.holder == sender
        and grant is not None
        and grant.incarnation == asked.incarnation
        and grant.seq > asked.seq
    ):
        return grant
    return asked


def decide_release(
    record: LeaseRecord, grant: Grant | None, sender: str, incarnation: int, request: Request
) -> Verdict:
    """Free the lease only when ``request`` names the grant ``sender`` holds: the
    seq of the acquire that was granted, by this run of the node
    (``incarnation``), and its generation. Anything else (a release delayed
    past a new grant to the same node, one of an older node that names no
    grant, one for a lease held by the peer) is refused and changes nothing;
    a release when nobody holds the lease is done (nothing to free)."""
    if record.holder is None:
        return Verdict(True, record, "nothing to release")
    named = Grant(incarnation, request.grant_seq)
    if record.holder != sender:
        return Verdict(False, record, f"not yours any more: the lease is {record.holder}'s")
    if request.grant_seq == 0 or grant != named or request.wanted != record.generation:
        return Verdict(
            False,
            record,
            f"not yours any more: this release names grant {named.incarnation}/{named.seq} "
            f"of {request.wanted}, the lease is held under another grant",
        )
    return Verdict(True, replace(record, holder=None, expires_at=None))


async def serve(
    witness: Witness,
    host: str,
    port: int,
    *,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer the witness's datagrams on ``host:port`` until cancelled."""
    async with await anyio.create_udp_socket(local_host=host, local_port=port) as sock:
        bound = sock.extra(anyio.abc.SocketAttribute.local_address)
        task_status.started((str(bound[0]), int(bound[1])))
        await answer_on(witness, sock)


async def answer_on(witness: Witness, sock: anyio.abc.UDPSocket) -> None:
    """Answer the datagrams ``sock`` (bound) receives until cancelled."""
    bound = sock.extra(anyio.abc.SocketAttribute.local_address)
    log.info(
        "witness listening",
        address=f"{bound[0]}:{bound[1]}",
        incarnation=witness.incarnation,
        clusters=sorted(c.name for c in witness.clusters.values()),
    )
    async for data, (addr, sport) in sock:
        answer = witness.handle(data, f"{addr}:{sport}", time.monotonic())
        if answer is None:
            continue
        try:
            await sock.sendto(answer, addr, sport)
        except OSError as exc:
            log.warning("witness answer not sent", source=f"{addr}:{sport}", error=str(exc))
