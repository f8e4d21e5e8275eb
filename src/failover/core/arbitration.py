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

The peer-backed lease (issue 11: the witness must not be a single point of
unavailability). A serving node may also serve on its *peer's* word, not
only on the arbitrator's lease, while the pair hears each other:

- With an arbitrator every heartbeat carries ``stamp``, the sender's clock
  when it built the status, and ``echo``, the newest stamp the sender heard
  from the receiver's current run (views of another epoch do not count).
  A node withholds its echo (sends None) while it serves, holds a lease or
  awaits the arbitrator's answer: the echo is a promise, below, that such a
  node cannot make.
- The promise (the peer B's side): B does not send a request for a grant
  before ``W = peer_backed_window = min(dead_timeout, startup_timeout)``
  after it received a frame of the serving node A, counted on B's clock.
  Each of B's ways to ask keeps it:
  * silence (``peer_lost``): B asks only after ``dead_timeout`` of silence
    on every link since the last frame it received, counted in time B ran
    (a paused B counts less, never more);
  * a restart forgets what B heard: its discovery (``startup_timeout``,
    from its ``Start``) runs first, and an operator's command (``prim``,
    ``primforce``) that would ask sooner waits: the arbitration gate does
    not ask before ``W`` after the node's start (guard ``just_started``);
  * a command while B hears A serving is refused (``peer_serving``), until
    A is lost (``dead_timeout`` of silence, as above);
  * a heartbeat-driven takeover acts only on a status of A that announces
    A not serving and echoes B's current view (the view echo rule): A has
    left the serving stint whose stamps count (below), so that stint's
    peer-backed lease is gone with it (A's lease is reset on leaving).
- So when A hears B echo a stamp ``t`` that A sent while serving in its
  current stint (``t`` after the stint began, A's epoch echoed), B received
  that frame at some time >= ``t`` and will not ask before ``t + W``; the
  arbitrator grants B nothing before B asks. A serves on it until
  ``t + W - lease_margin`` (``Lease.peer_until``): the *peer-backed lease*.
  The deadline is on A's own clock, from A's own stamp: no clock is shared,
  no skew enters, only the rates (B must not run faster than A by more than
  ``lease_margin / W``, the same kind of bound as the arbitrator's lease).
- A serves while either lease is valid: ``NodeFacts.serve_until`` is the
  later of ``fence_at`` (the arbitrator's lease, from the last ask it
  granted) and ``peer_until``; ``lease_expired`` fires there, and the
  runtime's watchdog uses the same deadline. A paused A is judged in real
  time (its deadlines are not moved by a pause, unlike silences).
- One-way cuts: if A hears B but B does not hear A, B's echo stops
  advancing; A's deadline runs from the last stamp B confirmed, not from
  B's last frame A received, so A stops ``lease_margin`` before B may ask.
- Entering a serving state, or minting a generation, still needs the
  arbitrator's grant: the peer-backed lease only keeps a node serving.
  Renewals to the arbitrator go on while it serves; a renewal that gets no
  answer is not a reason to stop while the peer backs the lease, while a
  refusal (the lease is someone else's) stops the node at once.
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


def decide_renewal(record: LeaseRecord, *, requester: str, now: float, ttl: float) -> Verdict:
    """Extend the lease of its current holder; anyone else is refused."""
    if record.holder != requester:
        return Verdict(False, record, "the lease is no longer ours")
    return Verdict(True, replace(record, expires_at=now + ttl))
