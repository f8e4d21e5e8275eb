"""The transition table is total, validated at load, and uses every rule it defines."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from failover.core import TABLE
from failover.core import events as ev
from failover.core.rules import ACTIONS, GUARDS
from failover.core.state import State
from failover.core.table import (
    ADMIN_EVENTS,
    GATE_ACTION,
    GATE_GUARD,
    GRANT_ACTION,
    IGNORE,
    SERVING,
    Row,
    Table,
    load_table,
    raw_spec,
)
from failover.errors import SpecError
from failover.model.mutants import mutant_table

Spec = dict[str, Any]

# Inputs the node turns into table triggers itself (bookkeeping), and the
# triggers its timers fire: together with the event kinds they are the events.
BOOKKEEPING_KINDS = {"link_failed", "timer"}
TIMER_TRIGGERS = {
    "peer_lost",
    "startup_timeout",
    "lease_expired",
    "recheck",
    "retry",
    "data_retry",
}


def test_every_state_declares_every_event() -> None:
    assert set(TABLE.states) == set(State)
    pairs = set(itertools.product(TABLE.states, TABLE.events))
    assert set(TABLE.entries) == pairs


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, TABLE.events)), ids=str)
def test_each_pair_is_a_transition_an_ignore_or_a_refusal(state: State, event: str) -> None:
    entry = TABLE.entries[(state, event)]
    if entry == IGNORE:
        return
    assert isinstance(entry, tuple) and entry, f"{state}.{event}: neither rows nor ignore"
    assert not entry[-1].when, f"{state}.{event}: some input would match no row"
    for row in entry:
        if row.refusal is not None:
            assert event in ADMIN_EVENTS, f"{row.ident}: only admin commands can be refused"
            assert row.target is None and not row.actions
        else:
            assert row.reason, f"{row.ident}: no reason"


def test_the_events_are_what_the_node_can_be_given() -> None:
    kinds = {cls.kind for cls in ev.EVENT_TYPES}
    assert set(TABLE.events) == (kinds - BOOKKEEPING_KINDS) | TIMER_TRIGGERS
    assert set(ev.ADMIN_COMMANDS) == ADMIN_EVENTS


def test_the_shipped_spec_loads() -> None:
    table = load_table(raw_spec(), GUARDS, ACTIONS)
    assert table.entries.keys() == TABLE.entries.keys()


# --- validation: each broken spec is rejected, naming the place ---------------------------


def _replace(state: str, event: str, rows: Any) -> Callable[[Spec], None]:
    def edit(spec: Spec) -> None:
        spec["table"][state][event] = rows

    return edit


def _missing_pair(spec: Spec) -> None:
    del spec["table"]["wait"]["checker_up"]


def _unknown_event(spec: Spec) -> None:
    spec["table"]["stop"]["reboot"] = IGNORE


ROW = {"to": "wait", "do": ["begin_discovery"], "reason": "started"}

BROKEN: dict[str, tuple[Callable[[Spec], None], str]] = {
    "missing pair": (
        _missing_pair,
        "table.wait.checker_up: not declared (every state must declare every event)",
    ),
    "unknown event": (_unknown_event, "table.stop.reboot: unknown event"),
    "unknown guard": (
        _replace("stop", "start", [{**ROW, "when": ["not no_such_guard"]}, ROW]),
        "table.stop.start[0].when: unknown guard 'no_such_guard'",
    ),
    "unknown action": (
        _replace("stop", "start", [{**ROW, "do": ["begin_discovery", "reboot"]}]),
        "table.stop.start[0].do: unknown action 'reboot'",
    ),
    "guarded last row": (
        _replace("stop", "start", [{**ROW, "when": ["consistent"]}]),
        "table.stop.start: the last row must be unguarded",
    ),
    "refusal of a non-admin event": (
        _replace("stop", "heartbeat", [{"refuse": "no"}]),
        "table.stop.heartbeat[0]: only admin commands can be refused",
    ),
    "unknown target state": (
        _replace("stop", "start", [{**ROW, "to": "limbo"}]),
        "table.stop.start[0].to: unknown state 'limbo'",
    ),
    "row without reason": (
        _replace("stop", "start", [{"to": "wait", "do": ["begin_discovery"]}]),
        "table.stop.start[0]: a row needs a reason",
    ),
    "empty row list": (_replace("stop", "start", []), "table.stop.start: must be 'ignore'"),
    "refusal that also moves": (
        _replace("stop", "swap", [{"refuse": "no", "to": "wait"}]),
        "table.stop.swap[0]: a refusal has no 'to' or 'do'",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_loading_rejects_a_broken_spec_naming_the_place(case: str) -> None:
    edit, place = BROKEN[case]
    spec = raw_spec()
    edit(spec)
    with pytest.raises(SpecError) as caught:
        load_table(spec, GUARDS, ACTIONS)
    assert place in str(caught.value)


def test_loading_reports_every_problem_at_once() -> None:
    spec = raw_spec()
    _missing_pair(spec)
    _unknown_event(spec)
    with pytest.raises(SpecError) as caught:
        load_table(spec, GUARDS, ACTIONS)
    assert "table.wait.checker_up" in str(caught.value)
    assert "table.stop.reboot" in str(caught.value)


# --- no dead rules ----------------------------------------------------------------------


def test_every_guard_is_used_by_a_row() -> None:
    used = {c.guard for row in TABLE.all_rows() for c in row.when}
    assert set(GUARDS) - used == set()


def test_every_action_is_used_by_a_row() -> None:
    used = {name for row in TABLE.all_rows() for name in row.actions}
    assert set(ACTIONS) - used == set()


# --- the arbitration gate ---------------------------------------------------------------


def _enters_serving(row: Row) -> bool:
    entering = row.target in SERVING and row.state not in SERVING
    return (entering or row.mints) and row.refusal is None and GRANT_ACTION not in row.actions


def missing_twins(table: Table) -> list[str]:
    """Rows that enter a serving state without their gated twin right before them."""
    missing: list[str] = []
    for entry in table.entries.values():
        if isinstance(entry, str):
            continue
        for position, row in enumerate(entry):
            if row.gated_row is not None or not _enters_serving(row):
                continue
            twin = entry[position - 1] if position > 0 else None
            ok = (
                twin is not None
                and twin.gated_row is row
                and twin.when == (*row.when, twin.when[-1])
                and twin.when[-1].guard == GATE_GUARD
                and not twin.when[-1].negated
                and twin.target is None
                and twin.actions == (GATE_ACTION,)
            )
            if not ok:
                missing.append(row.ident)
    return missing


def test_each_row_entering_a_serving_state_has_its_gated_twin() -> None:
    assert missing_twins(TABLE) == []
    assert not any(row.ungated for row in TABLE.all_rows())


def test_gated_twins_stand_only_before_their_row() -> None:
    # two twins per gated row: the paced one (denied lately: no request, the
    # denial's reason kept), then the one that asks; then the row itself. An
    # operator's command has no paced twin: it asks at once
    twins = [row for row in TABLE.all_rows() if row.gated_row is not None]
    assert twins, "the gate added no twin"
    assert any(row.event in ADMIN_EVENTS for row in twins), "no command is gated"
    paced_rows = 0
    for entry in TABLE.entries.values():
        if isinstance(entry, str):
            continue
        for position, row in enumerate(entry):
            if row.gated_row is None or row.actions:
                continue
            paced_rows += 1
            paced, asking, gated = entry[position : position + 3]
            assert row.event not in ADMIN_EVENTS, f"{row.gated_row.ident}: a command is paced"
            assert paced.quiet and [c.guard for c in paced.when][-1] == "denied_lately"
            assert asking.gated_row is gated and asking.actions == ("request_grant",)
            assert paced.gated_row is gated
        for position, row in enumerate(entry):
            if row.gated_row is not None and row.actions and row.event in ADMIN_EVENTS:
                assert entry[position + 1] is row.gated_row
    # not vacuous: every gated row that is no command has its paced twin
    assert paced_rows == sum(1 for row in twins if row.actions and row.event not in ADMIN_EVENTS)
    assert paced_rows > 0


def test_a_table_without_a_twin_is_caught() -> None:
    """The takeover-without-grant mutant marks the secondary's takeover ungated."""
    assert missing_twins(mutant_table("takeover-without-grant")) == ["secondary/peer_lost/2"]
