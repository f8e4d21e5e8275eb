"""The arbitrator's decision rule, pure, shared by the simulator and any real
arbitrator (a witness service, an etcd lease).

The arbitrator keeps one record: who holds the lease, until when (on the
arbitrator's clock), and the newest generation any node was allowed to serve.
It grants the lease to a node only when nobody else holds it and the node's
data is that newest generation (or the request is forced by an operator).
So a node that fell behind cannot serve even if its peer is dead, and two
nodes never hold the lease at once.

A new generation it grants is always higher than the newest it granted
before (it raises the counter of the one asked for when needed, and the
grant carries the generation to serve). Generation order is then grant
order: after forced promotions on both sides, the split-brain rule "the
higher generation wins" picks the history the arbitrator allowed last, the
one it will grant again, so the two never disagree and deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from failover.core.state import INITIAL, Generation


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None = None
    expires_at: float | None = None
    generation: Generation = INITIAL
    granted_to: str | None = None  # who was granted ``generation``...
    granted_from: Generation = INITIAL  # ...continuing from this one


@dataclass(frozen=True)
class Verdict:
    granted: bool
    record: LeaseRecord
    reason: str = ""


def _free_for(record: LeaseRecord, requester: str, now: float) -> bool:
    if record.holder is None or record.holder == requester:
        return True
    return record.expires_at is not None and now >= record.expires_at


def decide_request(
    record: LeaseRecord,
    *,
    requester: str,
    wanted: Generation,
    base: Generation,
    forced: bool,
    now: float,
    ttl: float,
) -> Verdict:
    """Grant ``requester`` the lease to serve ``wanted``, continuing from ``base``
    (``wanted == base`` to keep serving the same generation). A granted new
    generation is raised above the newest known; serve ``record.generation``."""
    if not _free_for(record, requester, now):
        return Verdict(False, record, f"lease held by {record.holder}")
    newest = record.generation
    # The node last granted ``newest`` may not have adopted it (it crashed, or
    # gave up, before persisting it). A node persists a generation before it
    # serves under it, so if it still holds the base it asked from, nothing was
    # ever written under ``newest``: that base is still the newest data.
    retry = requester == record.granted_to and base == record.granted_from
    if not forced and not newest.initial and base != newest and not retry:
        return Verdict(False, record, f"our generation {base} is not the newest known ({newest})")
    if wanted != base and wanted <= newest:
        wanted = Generation(newest.counter + 1, wanted.origin)
    granted = LeaseRecord(
        holder=requester,
        expires_at=now + ttl,
        generation=wanted,
        granted_to=requester,
        granted_from=base,
    )
    return Verdict(True, granted)


def fence_deadline(requested_at: float, *, ttl: float, margin: float) -> float:
    """When a node that asked for a lease (or its renewal) at ``requested_at``
    on its own clock stops serving, on the same clock, if no later renewal is
    granted: ``margin`` before the lease can run out at the arbitrator, which
    counts ``ttl`` from when it *received* the request, no earlier than the ask.
    The node's count thus starts no later than the arbitrator's and ends
    ``margin`` earlier (see ``lease_timing_holds`` for the clock rates)."""
    return requested_at + ttl - margin


def grant_run_out(requested_at: float | None, now: float, *, ttl: float, margin: float) -> bool:
    """A grant heard at ``now`` for the ask made at ``requested_at`` gives
    nothing: the lease it grants has already reached its fence deadline here
    (the node was paused, or the answer was slow)."""
    return requested_at is not None and now >= fence_deadline(requested_at, ttl=ttl, margin=margin)


def lease_timing_holds(*, ttl: float, margin: float, rho: float) -> bool:
    """The clock-rate condition of a lease held at a witness or etcd: with every
    clock running at a rate within ``[1 - rho, 1 + rho]`` of real time, the
    node's fence deadline (``ttl - margin`` after its ask, on its clock) comes
    strictly before the arbitrator can count ``ttl`` from the request's
    receipt (on its own clock). Message delays do not enter: the node counts
    from its ask, which precedes the receipt."""
    return 0 <= rho < 1 and (ttl - margin) / (1 - rho) < ttl / (1 + rho)


_SLACK = 1e-9  # seconds: below any configured figure's precision


def ping_timing_holds(
    *, ttl: float, rho: float, dead_timeout: float, heartbeat_interval: float
) -> bool:
    """The condition of the ping witness (no record: it grants whoever reaches
    it), beside its known limit: a node isolated from its peer (cut, paused,
    crashed) is *stopped* before its peer may ask the witness.

    The isolated node's last successful ask came at most ``heartbeat_interval``
    after the last heartbeat its peer heard (on its clock); it starts stopping
    at its fence deadline, ``ttl - margin`` after that ask, and has ``margin``
    to finish (the stop budget a witness or etcd leaves too, less the clocks'
    drift there): it is stopped ``ttl + heartbeat_interval`` after that
    heartbeat on its clock, at the slowest rate. Its peer asks once it has heard
    nothing for ``dead_timeout`` on its own clock, at the fastest. The margin
    cancels out. With ``heartbeat_interval`` 0 and ``startup_timeout`` for
    ``dead_timeout`` this is the restart case: a peer started after the cut asks
    ``startup_timeout`` after its start, the cut node asked at most then.

    Configured figures are decimal: a sum equal in decimal (6 + 0.5 = 6.5) is
    not refused for its binary rounding (2.2 + 0.1 > 2.3 in floats: ``_SLACK``)."""
    if not 0 <= rho < 1:
        return False
    stopped = (ttl + heartbeat_interval) / (1 - rho)
    return stopped <= dead_timeout / (1 + rho) + _SLACK


def decide_renewal(record: LeaseRecord, *, requester: str, now: float, ttl: float) -> Verdict:
    """Extend the lease of its current holder; anyone else is refused."""
    if record.holder != requester:
        return Verdict(False, record, "the lease is no longer ours")
    return Verdict(True, replace(record, expires_at=now + ttl))
