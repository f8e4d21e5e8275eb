"""Deliberately broken transition tables: the proof that the checker can fail.

Each mutant edits the shipped table's data in one targeted way, is loaded
and validated like the real one, and must be caught by the model checker
with a counterexample for the invariant it breaks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from failover.core.rules import ACTIONS, GUARDS
from failover.core.table import Table, load_table, raw_spec
from failover.model.sim import LEASE_MUTATIONS, Arbitrator

Spec = dict[str, Any]


@dataclass(frozen=True)
class Mutant:
    description: str
    breaks: tuple[str, ...]  # the invariants that catch it (the first found is reported)
    arbitrator: Arbitrator
    edit: Callable[[Spec], None]
    # which nodes hold data at the first start (sim.ClusterConfig.initial_data)
    initial_data: tuple[bool, bool] = (False, False)
    # broken lease handling outside the table (sim.LEASE_MUTATIONS)
    lease_mutation: str | None = None


def _rows(spec: Spec, state: str, event: str) -> list[dict[str, Any]]:
    rows = spec["table"][state][event]
    assert isinstance(rows, list), f"{state}.{event} has no rows"
    return rows


def _all_rows(spec: Spec) -> Iterator[dict[str, Any]]:
    for by_event in spec["table"].values():
        for rows in by_event.values():
            if isinstance(rows, list):
                yield from rows


def _no_stale_guard(spec: Spec) -> None:
    """A node that cannot see its peer serves even if it was not the last to serve."""
    for row in _rows(spec, "wait", "startup_timeout"):  # shared with peer_lost and recheck
        if row.get("when") == ["last_served_alone"]:
            del row["when"]


def _resync_may_serve(spec: Spec) -> None:
    """A resync target whose source vanishes takes over with half-copied data."""
    spec["table"]["resync"]["peer_lost"] = [
        {
            "to": "alone",
            "do": ["mint_generation", "start_tracking", "start_app"],
            "reason": "mutant: resync target serves",
        }
    ]


def _no_split_brain_detection(spec: Spec) -> None:
    """Divergent data is treated as merely stale: no quarantine, plain resync."""
    for row in _all_rows(spec):
        actions = row.get("do", [])
        if "quarantine" in actions:
            row["do"] = [a for a in actions if a != "quarantine"]
    for row in _rows(spec, "wait", "heartbeat"):
        if row.get("when") == ["peer_serving", "diverged"]:
            row["to"] = "resync"
            row["do"] = ["resync_target"]


def _takeover_without_grant(spec: Spec) -> None:
    """A secondary that loses its primary takes over without the arbitrator's grant."""
    for row in _rows(spec, "secondary", "peer_lost"):
        if row.get("to") == "alone":
            row["ungated"] = True


def _forget_outrank(spec: Spec) -> None:
    """The winner never lifts its generation above the peer's before resyncing it,
    and the target adopts whatever generation a resync delivers."""
    for rows in spec["table"]["alone"].values():
        if isinstance(rows, list):
            rows[:] = [r for r in rows if "peer_outranks" not in r.get("when", [])]
    for name in ("resync_done", "heartbeat"):
        rows = _rows(spec, "resync", name)
        rows[:] = [
            r
            for r in rows
            if "delivered_below_ours" not in r.get("when", [])
            and "peer_outranks" not in r.get("when", [])
        ]


def _stop_leaves_app(spec: Spec) -> None:
    """Stopping a serving node forgets to stop the application."""
    for state in ("alone", "primary"):
        for row in _rows(spec, state, "stop"):
            row["do"] = []


def _takeover_while_peer_stops(spec: Spec) -> None:
    """A secondary takes over as soon as its peer announces it stopped serving,
    while the peer still stops its application (the old hand-over order)."""
    rows = _rows(spec, "secondary", "heartbeat")
    for position, row in enumerate(rows):
        if "peer_idle" in row.get("when", []) and row.get("to") == "alone":
            early = dict(row, when=["peer_settling", *row["when"][1:]])
            rows.insert(position, early)
            return


def _never_pair(spec: Spec) -> None:
    """Two waiting nodes with the same data never decide which one serves."""
    rows = _rows(spec, "wait", "heartbeat")
    rows[:] = [r for r in rows if r.get("when") != ["equal", "wins_tie"]]


def _restless_swap(spec: Spec) -> None:
    """A protected primary hands the service over again and again."""
    rows = _rows(spec, "primary", "heartbeat")
    for row in rows:
        if "failback_to_peer" in row.get("when", []):
            row["when"] = ["peer_in_sync_ready", "app_ready"]


def _no_view_echo(spec: Spec) -> None:
    """A node serves on what its peer announced in a heartbeat sent before the
    peer heard its current state (the view echo rows are gone)."""
    for state in ("wait", "secondary"):
        rows = _rows(spec, state, "heartbeat")
        rows[:] = [r for r in rows if "not peer_echoes_view" not in r.get("when", [])]


def _takeover_unconfirmed(spec: Spec) -> None:
    """A secondary whose peer never confirmed the pair (the end of its resync
    unheard at the source) takes over when it loses that peer."""
    for event in ("peer_lost", "heartbeat"):
        rows = _rows(spec, "secondary", event)
        rows[:] = [r for r in rows if "not pair_confirmed" not in r.get("when", [])]


def _first_start_by_tie(spec: Spec) -> None:
    """At a first start the tie policy decides who serves, whatever data each
    node holds (the first-start rows are gone): the node without data serves
    over its peer's (the table before issue 9)."""
    first_start = ("first_start_data_both", "first_start_data_there", "first_start_data_here")
    rows = _rows(spec, "wait", "heartbeat")
    rows[:] = [r for r in rows if not set(first_start) & set(r.get("when", []))]


def _app_failed_waits(spec: Spec) -> None:
    """A failed start or a dead application on a node serving alone sends it
    to wait, as before issue 9: no restart budget, no retry pause (the node,
    the last to serve, serves again at the next recheck under a new
    generation, and fails again: the alone -> wait -> alone loop)."""
    rows = _rows(spec, "alone", "app_failed")
    rows[:] = [r for r in rows if "handing_over" in r.get("when", [])] + [
        {"to": "wait", "do": ["stop_resources"], "reason": "application failed: {event_reason}"}
    ]


def _never_hand_over(spec: Spec) -> None:
    """A failing primary never hands its service over: it retries where it is
    even when its peer, in sync, could run the application."""
    for by_event in spec["table"].values():
        for rows in by_event.values():
            if isinstance(rows, list):
                rows[:] = [r for r in rows if "can_hand_over" not in r.get("when", [])]


def _quarantine_failure_as_done(spec: Spec) -> None:
    """A quarantine that failed is taken as done: the loser of a split brain is
    resynchronised over divergent data that was never moved aside."""
    for state in ("wait", "stop"):
        spec["table"][state]["quarantine_failed"] = [
            {"do": ["mark_quarantined"], "reason": "mutant: quarantine failure taken as done"}
        ]


def _resync_failure_ignored(spec: Spec) -> None:
    """A failed resync attempt is ignored, as when the data plane retried on its own
    and the core never heard of it: with no retry of its own, the source waits forever."""
    rows = _rows(spec, "alone", "resync_failed")
    rows[:] = [r for r in rows if "resync_source_active" not in r.get("when", [])]


def _table_unchanged(spec: Spec) -> None:
    """The shipped table: the mutant breaks the lease outside it."""


NONE, WITNESS, ETCD = Arbitrator.NONE, Arbitrator.WITNESS, Arbitrator.ETCD


def _lease_mutant(name: str, breaks: tuple[str, ...]) -> Mutant:
    return Mutant(LEASE_MUTATIONS[name], breaks, ETCD, _table_unchanged, lease_mutation=name)


def _set_aside_failure_ignored(spec: Spec) -> None:
    """A failed set-aside before a full resync is ignored, as when the data plane
    held the resync on its own: the target waits in resync forever."""
    spec["table"]["resync"]["quarantine_failed"] = "ignore"


MUTANTS: dict[str, Mutant] = {
    "no-stale-guard": Mutant(_no_stale_guard.__doc__ or "", ("S3", "S2"), NONE, _no_stale_guard),
    "resync-may-serve": Mutant(
        _resync_may_serve.__doc__ or "", ("S4", "S2"), NONE, _resync_may_serve
    ),
    "no-split-brain-detection": Mutant(
        _no_split_brain_detection.__doc__ or "", ("S6",), NONE, _no_split_brain_detection
    ),
    "takeover-without-grant": Mutant(
        _takeover_without_grant.__doc__ or "", ("S1", "S2"), WITNESS, _takeover_without_grant
    ),
    "forget-outrank": Mutant(_forget_outrank.__doc__ or "", ("S5",), NONE, _forget_outrank),
    "stop-leaves-app": Mutant(_stop_leaves_app.__doc__ or "", ("R",), NONE, _stop_leaves_app),
    "takeover-while-peer-stops": Mutant(
        _takeover_while_peer_stops.__doc__ or "", ("S1",), NONE, _takeover_while_peer_stops
    ),
    "never-pair": Mutant(_never_pair.__doc__ or "", ("L1",), NONE, _never_pair),
    "restless-swap": Mutant(_restless_swap.__doc__ or "", ("L2", "L1"), NONE, _restless_swap),
    "no-view-echo": Mutant(_no_view_echo.__doc__ or "", ("S1", "S2"), NONE, _no_view_echo),
    "takeover-unconfirmed": Mutant(
        _takeover_unconfirmed.__doc__ or "", ("S3",), NONE, _takeover_unconfirmed
    ),
    # data on beta only: alpha wins the tie by name
    "first-start-by-tie": Mutant(
        _first_start_by_tie.__doc__ or "", ("S7",), NONE, _first_start_by_tie, (False, True)
    ),
    "app-failed-waits": Mutant(_app_failed_waits.__doc__ or "", ("L4",), NONE, _app_failed_waits),
    "never-hand-over": Mutant(_never_hand_over.__doc__ or "", ("L3",), NONE, _never_hand_over),
    "resync-failure-ignored": Mutant(
        _resync_failure_ignored.__doc__ or "", ("L1",), NONE, _resync_failure_ignored
    ),
    # data on both nodes: the operator's prim makes the other a full resync target
    "set-aside-failure-ignored": Mutant(
        _set_aside_failure_ignored.__doc__ or "",
        ("L1",),
        NONE,
        _set_aside_failure_ignored,
        (True, True),
    ),
}
"""Caught by the model checker within the searches of tests/model/test_mutants.py."""

TRACE_MUTANTS: dict[str, Mutant] = {
    "quarantine-failure-as-done": Mutant(
        _quarantine_failure_as_done.__doc__ or "", ("S6",), NONE, _quarantine_failure_as_done
    ),
}
"""Caught on a trace (tests/model/test_data_failures.py): a split brain and a disk
error take more faults than the checker's bounds give one trace."""


LEASE_MUTANTS: dict[str, Mutant] = {
    # the node serves after its lease's deadline: it counts a whole ttl from
    # when it heard etcd's answer (which may arrive a round late)
    "fence-from-heard": _lease_mutant("fence-from-heard", ("S1",)),
    # the arbitrator frees the lease before lease_ttl after the last keepalive
    "short-lease": _lease_mutant("short-lease", ("S1",)),
}
"""NOT caught by the full simulator (tests/model/test_mutants.py, xfail): its
nodes lose each other in the same round (symmetric partitions, equal
timers), and the holder then asks to continue alone: denied, it stops in
that round; granted, it mints a generation its peer lacks, which the
arbitrator then refuses. The lease's timing never decides; the focused
lease model (model/lease.py, i12-leasemodel) is where it is checked."""

ALL_MUTANTS = MUTANTS | TRACE_MUTANTS | LEASE_MUTANTS


def mutant_spec(name: str) -> Spec:
    spec = raw_spec()
    ALL_MUTANTS[name].edit(spec)
    return spec


def mutant_table(name: str) -> Table:
    """The shipped table with mutant ``name`` applied, loaded and validated."""
    return load_table(mutant_spec(name), GUARDS, ACTIONS)
