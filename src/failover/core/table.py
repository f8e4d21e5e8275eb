"""Load and validate the transition table (spec/transitions.yaml).

The table is data; this module turns it into ``Table``, checking everything a
reader could get wrong: an unknown state, event, guard or action name, a
missing (state, event) pair, a row list whose last row is guarded (so some
input would match nothing), a refusal attached to a non-admin event. All of
it is checked once, at load, so no typo is found only when an edge fires.

The loader also applies the arbitration gate (see the table's header): each
row that enters a serving state gets a gated twin placed before it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from failover.core.state import State
from failover.errors import SpecError

SERVING = (State.ALONE, State.PRIMARY)
ADMIN_EVENTS = frozenset({"start", "stop", "prim", "primforce", "second", "swap", "fullsync"})
GATE_GUARD = "needs_grant"
GATE_ACTION = "request_grant"
PACE_GUARD = "denied_lately"
GRANT_ACTION = "take_grant"


@dataclass(frozen=True)
class Condition:
    guard: str
    negated: bool = False

    def __str__(self) -> str:
        return f"not {self.guard}" if self.negated else self.guard


@dataclass(frozen=True)
class Row:
    """One guarded edge. ``target`` None means stay; ``refusal`` set means the
    row refuses an admin command with that reason. ``gated_row`` is set on the
    twin the gate added: the row whose effects wait for the arbitrator."""

    state: State
    event: str
    index: int
    when: tuple[Condition, ...] = ()
    target: State | None = None
    actions: tuple[str, ...] = ()
    reason: str = ""
    refusal: str | None = None
    ungated: bool = False
    quiet: bool = False
    gated_row: Row | None = field(default=None, compare=False)

    @property
    def ident(self) -> str:
        return f"{self.state.value}/{self.event}/{self.index}"

    @property
    def mints(self) -> bool:
        return "mint_generation" in self.actions


IGNORE = "ignore"
Entry = tuple[Row, ...] | str  # rows, or IGNORE


@dataclass(frozen=True)
class Table:
    states: tuple[State, ...]
    events: tuple[str, ...]
    entries: Mapping[tuple[State, str], Entry]

    def rows(self, state: State, event: str) -> tuple[Row, ...]:
        entry = self.entries[(state, event)]
        return () if isinstance(entry, str) else entry

    def all_rows(self) -> Iterable[Row]:
        for entry in self.entries.values():
            if not isinstance(entry, str):
                yield from entry


def spec_text() -> str:
    """The shipped table's YAML text."""
    return resources.files("failover").joinpath("spec", "transitions.yaml").read_text("utf-8")


def raw_spec() -> dict[str, Any]:
    """The shipped table parsed but not validated (mutants start from a deep copy)."""
    data = yaml.safe_load(spec_text())
    if not isinstance(data, dict):
        raise SpecError("spec/transitions.yaml: the top level must be a mapping")
    return copy.deepcopy(data)


def load_table(
    data: Mapping[str, Any],
    guards: Mapping[str, Callable[..., bool]],
    actions: Mapping[str, Callable[..., None]],
) -> Table:
    """Validate ``data`` (the parsed YAML) against the known guards and actions."""
    problems: list[str] = []
    try:
        states = tuple(State(name) for name in data["states"])
    except (KeyError, ValueError, TypeError) as exc:
        raise SpecError(f"states: {exc}") from None
    if set(states) != set(State):
        problems.append(f"states must be exactly {[s.value for s in State]}")
    events = tuple(str(e) for e in data.get("events", ()))
    if len(set(events)) != len(events):
        problems.append("events: duplicate names")
    table = data.get("table")
    if not isinstance(table, Mapping):
        raise SpecError("table: missing or not a mapping")

    entries: dict[tuple[State, str], Entry] = {}
    for state in states:
        by_event = table.get(state.value)
        if not isinstance(by_event, Mapping):
            problems.append(f"table.{state.value}: missing")
            continue
        for name in by_event:
            if name not in events:
                problems.append(f"table.{state.value}.{name}: unknown event")
        for event in events:
            where = f"table.{state.value}.{event}"
            if event not in by_event:
                problems.append(f"{where}: not declared (every state must declare every event)")
                continue
            entry = _parse_entry(state, event, by_event[event], where, guards, actions, problems)
            if entry is not None:
                entries[(state, event)] = entry
    if problems:
        raise SpecError("invalid transition table:\n  " + "\n  ".join(problems))
    return Table(states=states, events=events, entries=entries)


def _parse_entry(
    state: State,
    event: str,
    raw: Any,
    where: str,
    guards: Mapping[str, Callable[..., bool]],
    actions: Mapping[str, Callable[..., None]],
    problems: list[str],
) -> Entry | None:
    if raw == IGNORE:
        return IGNORE
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: must be 'ignore' or a non-empty list of rows")
        return None
    rows: list[Row] = []
    for index, item in enumerate(raw):
        row_where = f"{where}[{index}]"
        if not isinstance(item, Mapping):
            problems.append(f"{row_where}: a row must be a mapping")
            continue
        unknown = set(item) - {"when", "to", "do", "reason", "refuse", "ungated", "quiet"}
        if unknown:
            problems.append(f"{row_where}: unknown keys {sorted(unknown)}")
        when = tuple(_parse_condition(c, row_where, guards, problems) for c in item.get("when", ()))
        target = None
        if "to" in item:
            try:
                target = State(item["to"])
            except ValueError:
                problems.append(f"{row_where}.to: unknown state {item['to']!r}")
        names = tuple(item.get("do", ()))
        for name in names:
            if name not in actions:
                problems.append(f"{row_where}.do: unknown action {name!r}")
        refusal = item.get("refuse")
        if refusal is not None:
            if event not in ADMIN_EVENTS:
                problems.append(f"{row_where}: only admin commands can be refused")
            if target is not None or names:
                problems.append(f"{row_where}: a refusal has no 'to' or 'do'")
        elif not item.get("reason"):
            problems.append(f"{row_where}: a row needs a reason")
        rows.append(
            Row(
                state=state,
                event=event,
                index=index,
                when=when,
                target=target,
                actions=names,
                reason=str(item.get("reason", "")),
                refusal=None if refusal is None else str(refusal),
                ungated=bool(item.get("ungated", False)),
                quiet=bool(item.get("quiet", False)),
            )
        )
    if rows and rows[-1].when:
        problems.append(f"{where}: the last row must be unguarded, so every input matches a row")
    return _add_gates(tuple(rows))


def _parse_condition(
    raw: Any, where: str, guards: Mapping[str, Callable[..., bool]], problems: list[str]
) -> Condition:
    text = str(raw).strip()
    negated = text.startswith("not ")
    name = text[4:].strip() if negated else text
    if name not in guards:
        problems.append(f"{where}.when: unknown guard {name!r}")
    return Condition(name, negated)


def _add_gates(rows: tuple[Row, ...]) -> tuple[Row, ...]:
    """Put a gated twin before every row that enters a serving state."""
    gated: list[Row] = []
    for row in rows:
        enters_serving = (row.target in SERVING and row.state not in SERVING) or row.mints
        if not enters_serving or row.ungated or GRANT_ACTION in row.actions:
            gated.append(row)
            continue
        if row.event not in ADMIN_EVENTS:
            # a request the arbitrator denied is not repeated before the next
            # recheck: a node that keeps deciding to serve (every heartbeat)
            # would otherwise ask on every one. An operator's command is a new
            # decision, asked at once (paced, it would be dropped unheard)
            gated.append(
                Row(
                    state=row.state,
                    event=row.event,
                    index=row.index,
                    when=(*row.when, Condition(GATE_GUARD), Condition(PACE_GUARD)),
                    target=None,
                    actions=(),
                    # the denial's reason stays (no record per heartbeat)
                    reason="the arbitrator denied our last request, asking again at the next "
                    "recheck: " + row.reason,
                    quiet=True,
                    gated_row=row,
                )
            )
        gated.append(
            Row(
                state=row.state,
                event=row.event,
                index=row.index,
                when=(*row.when, Condition(GATE_GUARD)),
                target=None,
                actions=(GATE_ACTION,),
                reason="waiting for the arbitrator: " + row.reason,
                gated_row=row,
            )
        )
        gated.append(row)
    return tuple(gated)
