"""Scenarios: a given / steps / expectations story replayed on the simulated cluster.

A scenario file (YAML; the format is in docs/scenarios.md) names a starting
point (``given``) and a list of ``steps``. Action steps drive the simulator of
``failover.model.sim``: the same two real cores, simulated network, disks,
application and arbitrator that the model checker explores. A ``run: N`` step
lets N heartbeat intervals pass on the virtual clock, each one delivering
every heartbeat in flight. Expectation steps (``expect...``) check the world
at that point.

``load_scenario`` validates a whole file before anything runs. ``run_scenario``
replays it, reports every transition record through ``emit`` and stops at
the first expectation that does not hold. Nothing here reads a clock or
sleeps: a scenario is deterministic.
"""

from __future__ import annotations

import abc
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from failover.config.problems import Loc, describe_value, format_key, line_for
from failover.config.yamlsource import ConfigSyntaxError, read_document
from failover.core import effects as fx
from failover.core import events as ev
from failover.core.node import Node, NodeSnapshot
from failover.core.state import Settings, State
from failover.core.table import Table
from failover.errors import UsageError
from failover.model.liveness import reached
from failover.model.sim import NAMES, Bounds, Cluster, ClusterConfig, Host

STARTS = ("booted", "protected", "stopped")
STATE_NAMES = tuple(s.value for s in State)
SETUP_ROUNDS = 30  # ticks allowed for ``start: protected`` to form the pair
UNBOUNDED = Bounds(faults=10**9, admin=10**9, writes=10**9, app_faults=10**9)

NODE_ACTIONS = (
    "crash",
    "restart",
    "write",
    "arb_cut",
    "arb_heal",
    "app_fail",
    "app_break",
    "app_check",
    "checker_down",
    "checker_up",
)
LINK_ACTIONS = ("partition", "heal")
MESSAGE_ACTIONS = ("drop", "delay", "duplicate")
WRITE_NAME = re.compile(r"w([1-9][0-9]*)")
LINK_NAME = re.compile(r"[a-z][a-z0-9_-]*")


class ScenarioError(UsageError):
    """A scenario file is malformed. The message is one line:
    ``file:line: key: reason``."""


# --- what a scenario is -------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a step is written, for messages."""

    shown: str
    line: int
    key: str

    def __str__(self) -> str:
        return f"{self.shown}:{self.line}: {self.key}"


@dataclass(frozen=True)
class Given:
    arbitrator: bool = False
    links: tuple[str, ...] = ("lan", "serial")
    start: str = "booted"
    failback: str = "none"
    preferred: str | None = None
    split_brain_winner: str | None = None

    def config(self) -> ClusterConfig:
        # resource_faults only lets the simulator offer application and checker
        # faults; a scenario applies one only when a step says so.
        return ClusterConfig(
            links=self.links,
            arbitrator=self.arbitrator,
            failback=self.failback,
            preferred=self.preferred,
            split_brain_winner=self.split_brain_winner,
            resource_faults=True,
        )

    def describe(self) -> str:
        arbitrator = "witness" if self.arbitrator else "none"
        text = f"links {', '.join(self.links)}; arbitrator {arbitrator}; start {self.start}"
        if self.failback != "none":
            text += f"; failback {self.failback}"
        if self.preferred:
            text += f" (preferred {self.preferred})"
        if self.split_brain_winner:
            text += f"; split brain winner {self.split_brain_winner}"
        return text


@dataclass(frozen=True)
class Action:
    """Simulator labels applied in order (``crash alpha``, ``partition lan``...)."""

    labels: tuple[str, ...]
    where: Where


@dataclass(frozen=True)
class Run:
    ticks: int
    where: Where


class Expectation(abc.ABC):
    """A check of the replayed world. Each kind parses its own step syntax
    (``parse``), says what it checks (``describe``) and returns None from
    ``verify`` when it holds, else the mismatch as "expected ..., actual ..."."""

    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, where: Where) -> None:
        self.where = where

    @classmethod
    @abc.abstractmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        """The expectation written as ``{kind: arg}`` at ``loc``; raises
        ``ScenarioError`` (through ``p.fail``) when it is malformed."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The expectation as the timeline shows it."""

    @abc.abstractmethod
    def verify(self, view: Replay) -> str | None:
        """None when it holds in ``view``, else "expected ..., actual ..."."""


Step = Action | Run | Expectation


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    given: Given
    steps: tuple[Step, ...]
    shown: str  # the file, as named on the command line


# --- expectations -------------------------------------------------------------------------


def _write_name(wid: int) -> str:
    return f"w{wid + 1}"


def _names(wids: Iterable[int]) -> str:
    return ", ".join(_write_name(w) for w in sorted(wids)) or "nothing"


def _joined(problems: list[str]) -> str | None:
    return "; ".join(problems) or None


class ExpectStates(Expectation):
    """``expect: {alpha: primary, beta: down}``; a state may carry its
    sub-status (``primary/ready``)."""

    kinds = ("expect",)

    def __init__(self, where: Where, states: list[tuple[str, str]]) -> None:
        super().__init__(where)
        self.states = states

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        states = []
        for node, value, at in p.per_node(arg, loc):
            state, _, sub = value.partition("/") if isinstance(value, str) else ("", "", "")
            subs = ("",) if state == "down" else ("", "ready", "transient")
            if state not in (*STATE_NAMES, "down") or sub not in subs:
                raise p.fail(
                    at,
                    f"must be a state ({', '.join(STATE_NAMES)}, down), optionally with "
                    f"/ready or /transient, not {describe_value(value)}",
                )
            states.append((node, str(value)))
        return cls(p.where(loc), states)

    def describe(self) -> str:
        return "expect " + ", ".join(f"{n}={s}" for n, s in self.states)

    def verify(self, view: Replay) -> str | None:
        wrong = []
        for node, wanted in self.states:
            actual = view.state_text(node, with_substatus="/" in wanted)
            if actual != wanted:
                wrong.append(f"{node}: expected {wanted}, actual {actual}{view.because(node)}")
        return _joined(wrong)


class ExpectReason(Expectation):
    """``expect_reason: {beta: "taking over"}``: the node's current reason
    contains the text (case-insensitive)."""

    kinds = ("expect_reason",)

    def __init__(self, where: Where, texts: list[tuple[str, str]]) -> None:
        super().__init__(where)
        self.texts = texts

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        return cls(p.where(loc), [(n, p.text(v, at)) for n, v, at in p.per_node(arg, loc)])

    def describe(self) -> str:
        return f"{self.kinds[0]} " + ", ".join(f"{n} ~ {t!r}" for n, t in self.texts)

    def verify(self, view: Replay) -> str | None:
        wrong = []
        for node, text in self.texts:
            reason = view.reason(node)
            if reason is None:
                wrong.append(f"{node}: expected a reason containing {text!r}, actual: it is down")
            elif text.lower() not in reason.lower():
                last = view.last_change(node)
                hint = f" (its last state change: {last})" if last else ""
                wrong.append(
                    f"{node}: expected a reason containing {text!r}, actual {reason!r}{hint}"
                )
        return _joined(wrong)


class ExpectRefused(ExpectReason):
    """``expect_refused: {beta: "needs"}``: in the last action step the node
    refused a command with a reason containing the text (case-insensitive)."""

    kinds = ("expect_refused",)

    def verify(self, view: Replay) -> str | None:
        wrong = []
        for node, text in self.texts:
            got = [r for n, r in view.step_refusals if n == node]
            if not any(text.lower() in r.reason.lower() for r in got):
                actual = "; ".join(f"{r.command} refused: {r.reason}" for r in got)
                wrong.append(
                    f"{node}: expected a refusal containing {text!r}, "
                    f"actual {actual or 'no refusal (the command was accepted)'}"
                )
        return _joined(wrong)


class ExpectRecord(Expectation):
    """``expect_record: {node: beta, to: alone, forced: true}``: the last action
    step produced a transition record of the node matching every field given
    (``reason`` as a case-insensitive substring)."""

    kinds = ("expect_record",)
    FIELDS = ("from", "to", "event", "reason", "forced")

    def __init__(self, where: Where, node: str, fields: list[tuple[str, object]]) -> None:
        super().__init__(where)
        self.node = node
        self.fields = fields

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        raw = p.mapping(arg, loc)
        p.known_keys(raw, loc, ("node", *cls.FIELDS))
        if "node" not in raw:
            raise p.fail((*loc, "node"), "missing: the node whose record is expected")
        node = p.node(raw["node"], (*loc, "node"))
        fields: list[tuple[str, object]] = []
        for key in cls.FIELDS:
            if key not in raw:
                continue
            value, at = raw[key], (*loc, key)
            if key in ("from", "to"):
                value = p.choice(value, at, STATE_NAMES)
            elif key in ("event", "reason"):
                value = p.text(value, at)
            elif not isinstance(value, bool):
                raise p.fail(at, f"must be true or false, not {describe_value(value)}")
            fields.append((key, value))
        if not fields:
            raise p.fail(loc, f"must give at least one of {', '.join(cls.FIELDS)}")
        return cls(p.where(loc), node, fields)

    def wanted(self) -> str:
        return ", ".join(f"{k}: {describe_value(v)}" for k, v in self.fields)

    def describe(self) -> str:
        return f"expect_record {self.node} {{{self.wanted()}}}"

    def matches(self, record: fx.TransitionRecord) -> bool:
        actual = {
            "from": record.source,
            "to": record.target,
            "event": record.event,
            "forced": record.forced,
        }
        for key, wanted in self.fields:
            if key == "reason":
                if str(wanted).lower() not in record.reason.lower():
                    return False
            elif actual[key] != wanted:
                return False
        return True

    def verify(self, view: Replay) -> str | None:
        records = [r for r in view.step_records if r.node == self.node]
        if any(self.matches(r) for r in records):
            return None
        shown = "; ".join(f"{r.event}: {_record_text(r)}" for r in records) or "none"
        return (
            f"expected a record of {self.node} with {self.wanted()} in the last step, "
            f"actual records of {self.node}: {shown}"
        )


class ExpectResync(Expectation):
    """``expect_resync: {beta: full}``: the last resync the node started as a
    target (at any earlier point of the scenario) was of that mode."""

    kinds = ("expect_resync",)

    def __init__(self, where: Where, modes: list[tuple[str, str]]) -> None:
        super().__init__(where)
        self.modes = modes

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        modes = [(n, p.choice(v, at, ("incremental", "full"))) for n, v, at in p.per_node(arg, loc)]
        return cls(p.where(loc), modes)

    def describe(self) -> str:
        return "expect_resync " + ", ".join(f"{n}={m}" for n, m in self.modes)

    def verify(self, view: Replay) -> str | None:
        wrong = []
        for node, mode in self.modes:
            last = view.last_resync.get(node)
            if last is None:
                wrong.append(f"{node}: expected resync mode {mode}, actual: it never resynced")
            elif last.mode != mode:
                wrong.append(
                    f"{node}: expected resync mode {mode}, actual {last.mode} (since {last.since})"
                )
        return _joined(wrong)


class ExpectAckedOn(Expectation):
    """``expect_acked_on: [alpha, beta]``: every acknowledged write is in the
    data of these nodes (on disk: a crashed node's disk counts)."""

    kinds = ("expect_acked_on",)

    def __init__(self, where: Where, nodes: list[str]) -> None:
        super().__init__(where)
        self.nodes = nodes

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        return cls(p.where(loc), [p.node(v, at) for v, at in p.one_or_many(arg, loc)])

    def describe(self) -> str:
        return f"expect_acked_on {', '.join(self.nodes)}"

    def verify(self, view: Replay) -> str | None:
        acked = view.cluster.world.acked
        wrong = []
        for node in self.nodes:
            held = view.host(node).data
            if acked - held:
                wrong.append(
                    f"expected every acknowledged write ({_names(acked)}) on {node}, actual: "
                    f"{_names(acked - held)} missing ({node} holds {_names(held)})"
                )
        return _joined(wrong)


class ExpectAcked(Expectation):
    """``expect_acked: [w1]`` and ``expect_not_acked: [w2]``."""

    kinds = ("expect_acked", "expect_not_acked")

    def __init__(self, where: Where, writes: frozenset[int], acked: bool) -> None:
        super().__init__(where)
        self.writes = writes
        self.acked = acked

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        return cls(p.where(loc), p.write_names(arg, loc), kind == "expect_acked")

    def describe(self) -> str:
        return f"{'expect_acked' if self.acked else 'expect_not_acked'} {_names(self.writes)}"

    def verify(self, view: Replay) -> str | None:
        acked = view.cluster.world.acked
        wrong = [w for w in self.writes if (w in acked) != self.acked]
        if not wrong:
            return None
        wanted = "acknowledged" if self.acked else "not acknowledged"
        return f"expected {_names(wrong)} {wanted}, actual acknowledged writes: {_names(acked)}"


class ExpectHeld(Expectation):
    """``expect_data: {alpha: [w1, w2]}`` and ``expect_quarantine: {beta: [w3]}``:
    the node's data (or its quarantine) holds exactly these writes."""

    kinds = ("expect_data", "expect_quarantine")

    def __init__(self, where: Where, held: list[tuple[str, frozenset[int]]], place: str) -> None:
        super().__init__(where)
        self.held = held
        self.place = place

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        held = [(n, p.write_names(v, at)) for n, v, at in p.per_node(arg, loc)]
        return cls(p.where(loc), held, kind.removeprefix("expect_"))

    def describe(self) -> str:
        return f"expect_{self.place} " + ", ".join(f"{n}={{{_names(w)}}}" for n, w in self.held)

    def verify(self, view: Replay) -> str | None:
        wrong = []
        for node, wanted in self.held:
            host = view.host(node)
            actual = host.quarantine if self.place == "quarantine" else host.data
            if actual != wanted:
                wrong.append(
                    f"{node}'s {self.place}: expected {{{_names(wanted)}}}, "
                    f"actual {{{_names(actual)}}}"
                )
        return _joined(wrong)


class ExpectSingleServer(Expectation):
    """``expect_never_both_serving: true``: since the scenario began, the two
    nodes never served at once (followed after every event a core handled,
    not only between steps)."""

    kinds = ("expect_never_both_serving",)

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        if arg is not True:
            raise p.fail(loc, f"must be true, not {describe_value(arg)}")
        return cls(p.where(loc))

    def describe(self) -> str:
        return "expect_never_both_serving"

    def verify(self, view: Replay) -> str | None:
        if view.both_serving_at is None:
            return None
        return f"expected never both serving, actual both served at t={_t(view.both_serving_at)}"


class ExpectLinks(Expectation):
    """``expect_links: {alpha: {lan: up, serial: down}}``: the node's own view
    of its links."""

    kinds = ("expect_links",)

    def __init__(self, where: Where, links: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__(where)
        self.links = links

    @classmethod
    def parse(cls, kind: str, arg: object, p: _Parser, loc: Loc) -> Expectation:
        links = []
        for node, value, at in p.per_node(arg, loc):
            entries = p.mapping(value, at)
            if not entries:
                raise p.fail(at, "must name at least one link")
            links.append(
                (
                    node,
                    [
                        (p.link(k, (*at, k)), p.choice(v, (*at, k), ("up", "down")))
                        for k, v in entries.items()
                    ],
                )
            )
        return cls(p.where(loc), links)

    def describe(self) -> str:
        parts = [f"{n} " + ", ".join(f"{k} {s}" for k, s in v) for n, v in self.links]
        return "expect_links " + "; ".join(parts)

    def verify(self, view: Replay) -> str | None:
        wrong = []
        for node, wanted in self.links:
            core = view.host(node).core
            if core is None:
                wrong.append(f"{node}: expected links {dict(wanted)}, actual: it is down")
                continue
            seen = dict(core.links)
            for link, state in wanted:
                actual = "up" if seen[link].up else "down"
                if actual != state:
                    wrong.append(f"{node}'s link {link}: expected {state}, actual {actual}")
        return _joined(wrong)


EXPECTATIONS: dict[str, type[Expectation]] = {
    kind: cls
    for cls in (
        ExpectStates,
        ExpectReason,
        ExpectRefused,
        ExpectRecord,
        ExpectResync,
        ExpectAckedOn,
        ExpectAcked,
        ExpectHeld,
        ExpectSingleServer,
        ExpectLinks,
    )
    for kind in cls.kinds
}
STEP_KINDS = ("run", "command", *NODE_ACTIONS, *LINK_ACTIONS, *MESSAGE_ACTIONS, *EXPECTATIONS)


# --- loading ---------------------------------------------------------------------------------


def load_scenario(path: Path, shown: str | None = None) -> Scenario:
    """Read and validate the scenario file at ``path`` (``shown`` names it in
    messages; by default the path). Raises ``ScenarioError`` with one line,
    ``file:line: key: reason``, for the first problem found. Reads the file
    once; no other I/O."""
    shown = shown if shown is not None else str(path)
    try:
        doc = read_document(path, shown)
    except ConfigSyntaxError as exc:
        raise ScenarioError(exc.messages[0]) from None
    return _Parser(shown, doc.lines).scenario(doc.data)


class _Parser:
    """Turns the plain data of one file into a ``Scenario``, failing on the
    first problem with its line and key."""

    def __init__(self, shown: str, lines: Mapping[Loc, int]) -> None:
        self.shown = shown
        self.lines = lines
        self.links: tuple[str, ...] = ()
        self.writes = 0  # writes made by the steps read so far

    def fail(self, loc: Loc, reason: str) -> ScenarioError:
        line = line_for(self.lines, loc)
        return ScenarioError(f"{self.shown}:{line}: {format_key(loc)}: {reason}")

    def where(self, loc: Loc) -> Where:
        return Where(self.shown, line_for(self.lines, loc), format_key(loc))

    # --- shapes ---------------------------------------------------------------------------

    def mapping(self, value: object, loc: Loc) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(loc, f"must be a mapping, not {describe_value(value)}")
        return value

    def known_keys(self, raw: Mapping[str, object], loc: Loc, known: Sequence[str]) -> None:
        unknown = [k for k in raw if k not in known]
        if unknown:
            raise self.fail((*loc, unknown[0]), f"unknown key (expected {', '.join(known)})")

    def text(self, value: object, loc: Loc) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(loc, f"must be a non-empty text, not {describe_value(value)}")
        return value

    def choice(self, value: object, loc: Loc, allowed: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise self.fail(
                loc, f"must be one of {', '.join(allowed)}, not {describe_value(value)}"
            )
        return value

    def node(self, value: object, loc: Loc) -> str:
        if not isinstance(value, str) or value not in NAMES:
            raise self.fail(loc, f"unknown node {describe_value(value)} (nodes: alpha, beta)")
        return value

    def link(self, value: object, loc: Loc) -> str:
        if not isinstance(value, str) or value not in self.links:
            raise self.fail(
                loc, f"unknown link {describe_value(value)} (links: {', '.join(self.links)})"
            )
        return value

    def one_or_many(self, value: object, loc: Loc) -> list[tuple[object, Loc]]:
        """One value, or a non-empty list of them, each with its location."""
        if not isinstance(value, list):
            return [(value, loc)]
        if not value:
            raise self.fail(loc, "must not be an empty list")
        return [(item, (*loc, i)) for i, item in enumerate(value)]

    def per_node(self, value: object, loc: Loc) -> list[tuple[str, object, Loc]]:
        """A mapping from node names to values: (node, value, location) each."""
        entries = self.mapping(value, loc)
        if not entries:
            raise self.fail(loc, "must name at least one node")
        return [(self.node(k, (*loc, k)), v, (*loc, k)) for k, v in entries.items()]

    def write_names(self, value: object, loc: Loc) -> frozenset[int]:
        """Write names (w1 is the scenario's first write) as the simulator's ids."""
        if not isinstance(value, list):
            raise self.fail(
                loc, f"must be a list of writes (w1, w2...), not {describe_value(value)}"
            )
        wids = set()
        for i, item in enumerate(value):
            match = WRITE_NAME.fullmatch(item) if isinstance(item, str) else None
            if match is None:
                raise self.fail(
                    (*loc, i), f"must be a write (w1, w2...), not {describe_value(item)}"
                )
            wid = int(match.group(1)) - 1
            if wid >= self.writes:
                raise self.fail(
                    (*loc, i), f"{item} is not written before this step ({self.writes} so far)"
                )
            wids.add(wid)
        return frozenset(wids)

    # --- the document -----------------------------------------------------------------------

    def scenario(self, data: object) -> Scenario:
        doc = self.mapping(data, ())
        self.known_keys(doc, (), ("name", "description", "given", "steps"))
        if "name" not in doc:
            raise self.fail(("name",), "missing: every scenario has a name")
        name = self.text(doc["name"], ("name",))
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise self.fail(("description",), f"must be a text, not {describe_value(description)}")
        given = self.given(doc.get("given", {}), ("given",))
        self.links = given.links
        if "steps" not in doc:
            raise self.fail(("steps",), "missing: a scenario needs steps")
        raw_steps = doc["steps"]
        if not isinstance(raw_steps, list) or not raw_steps:
            raise self.fail(("steps",), "must be a non-empty list of steps")
        steps = tuple(self.step(item, ("steps", i)) for i, item in enumerate(raw_steps))
        return Scenario(name, " ".join(description.split()), given, steps, self.shown)

    def given(self, value: object, loc: Loc) -> Given:
        raw = self.mapping(value, loc)
        self.known_keys(
            raw,
            loc,
            ("arbitrator", "links", "start", "failback", "preferred", "split_brain_winner"),
        )
        links = raw.get("links", ["lan", "serial"])
        if not isinstance(links, list) or not 1 <= len(links) <= 3:
            raise self.fail((*loc, "links"), "must be a list of one to three link names")
        for i, link in enumerate(links):
            if not isinstance(link, str) or not LINK_NAME.fullmatch(link):
                raise self.fail((*loc, "links", i), f"must be a name, not {describe_value(link)}")
            if links.index(link) != i:
                raise self.fail((*loc, "links", i), f"link {link} is listed twice")

        def node_or_none(key: str) -> str | None:
            return None if raw.get(key) is None else self.node(raw[key], (*loc, key))

        arbitrator = raw.get("arbitrator", "none")
        given = Given(
            arbitrator=self.choice(arbitrator, (*loc, "arbitrator"), ("none", "witness"))
            == "witness",
            links=tuple(links),
            start=self.choice(raw.get("start", "booted"), (*loc, "start"), STARTS),
            failback=self.choice(
                raw.get("failback", "none"),
                (*loc, "failback"),
                ("none", "preferred", "last-primary"),
            ),
            preferred=node_or_none("preferred"),
            split_brain_winner=node_or_none("split_brain_winner"),
        )
        try:
            given.config().settings(0)  # the core's own checks of the policies
        except ValueError as exc:
            raise self.fail(loc, str(exc)) from None
        return given

    def step(self, value: object, loc: Loc) -> Step:
        raw = self.mapping(value, loc)
        if len(raw) != 1:
            keys = ", ".join(raw) or "none"
            raise self.fail(loc, f"a step has exactly one key, like run: 3 (found: {keys})")
        ((kind, arg),) = raw.items()
        loc = (*loc, kind)
        if kind not in STEP_KINDS:
            raise self.fail(loc, "unknown step (the steps are listed in docs/scenarios.md)")
        if kind == "run":
            if isinstance(arg, bool) or not isinstance(arg, int) or arg < 1:
                raise self.fail(
                    loc, f"must be a number of ticks, 1 or more, not {describe_value(arg)}"
                )
            return Run(arg, self.where(loc))
        if kind in EXPECTATIONS:
            return EXPECTATIONS[kind].parse(kind, arg, self, loc)
        return Action(self.labels(kind, arg, loc), self.where(loc))

    def labels(self, kind: str, arg: object, loc: Loc) -> tuple[str, ...]:
        """The simulator labels of an action step."""
        if kind == "command":
            entries = self.mapping(arg, loc)
            if len(entries) != 1:
                raise self.fail(loc, "must be one command and its node, like {swap: alpha}")
            ((cmd, node),) = entries.items()
            if cmd not in ev.ADMIN_COMMANDS:
                raise self.fail((*loc, cmd), f"unknown command ({', '.join(ev.ADMIN_COMMANDS)})")
            return (f"{cmd} {self.node(node, (*loc, cmd))}",)
        labels = []
        for value, at in self.one_or_many(arg, loc):
            if kind in LINK_ACTIONS:
                labels.append(f"{kind} {self.link(value, at)}")
            elif kind in MESSAGE_ACTIONS:
                parts = value.split() if isinstance(value, str) else []
                if len(parts) != 2:
                    raise self.fail(at, f"must be '<link> <sender>', not {describe_value(value)}")
                labels.append(f"{kind} {self.link(parts[0], at)} {self.node(parts[1], at)}")
            else:
                labels.append(f"{kind} {self.node(value, at)}")
        if kind == "write":
            self.writes += len(labels)
        return tuple(labels)


# --- replaying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handled:
    """One call of a core's ``handle`` during a replay."""

    time: float
    node: str
    event: ev.Event
    effects: tuple[fx.Effect, ...]
    state: State  # after the call


class _JournalNode(Node):
    """A real core that also notes each event it handled and the effects it
    returned (the simulator itself keeps only records and refusals)."""

    def __init__(self, settings: Settings, journal: list[Handled], table: Table | None) -> None:
        super().__init__(settings, table=table)
        self.journal = journal

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        effects = super().handle(event, now)
        self.journal.append(Handled(now, self.settings.name, event, tuple(effects), self.state))
        return effects


@dataclass
class Outcome:
    """How a replay ended: ``failure`` is None when every expectation held."""

    scenario: Scenario
    checked: int = 0
    failure: str | None = None
    end_time: float = 0.0

    @property
    def passed(self) -> bool:
        return self.failure is None

    def verdict(self) -> str:
        sc = self.scenario
        if self.failure is None:
            held = f"{self.checked} expectations hold, t={_t(self.end_time)}"
            return f"PASS {sc.shown}: {sc.name} ({held})"
        return f"FAIL {sc.shown}: {sc.name}\n  {self.failure}"


def _t(time: float) -> str:
    return f"{time:g}"


def _record_text(record: fx.TransitionRecord) -> str:
    forced = " (forced)" if record.forced else ""
    return f"{record.source} -> {record.target}: {record.reason}{forced}"


def _effect_text(effect: fx.Effect) -> str:
    if isinstance(effect, fx.StartResync):
        return f"{effect.name}({effect.role}, {effect.mode})"
    if isinstance(effect, fx.LinkChanged):
        return f"link {effect.link} {'up' if effect.up else 'down'}"
    return effect.name


# Routine effects left out of the timeline: every change sends a heartbeat and
# persists, a lease is renewed every interval. Refusals get their own line.
UNSHOWN_EFFECTS = (
    fx.SendHeartbeat,
    fx.PersistMetadata,
    fx.RenewArbitration,
    fx.TransitionRecord,
    fx.Refused,
)


class Replay:
    """Replays one scenario on a fresh simulated cluster; the expectations read
    the world through it."""

    def __init__(
        self, scenario: Scenario, emit: Callable[[str], None], table: Table | None = None
    ) -> None:
        self.scenario = scenario
        self.emit = emit
        self.journal: list[Handled] = []
        self.cluster = Cluster(scenario.given.config(), table=table, bounds=UNBOUNDED)
        # Journaling twins replace the simulator's cores before anything ran.
        self.cluster.nodes = (
            _JournalNode(self.cluster.settings[0], self.journal, table),
            _JournalNode(self.cluster.settings[1], self.journal, table),
        )
        self.cluster.world = self.cluster.initial()
        self.read = 0  # journal entries already taken in
        self.states: dict[str, State | None] = dict.fromkeys(NAMES, State.STOP)
        self.both_serving_at: float | None = None
        self.last_resync: dict[str, fx.StartResync] = {}
        self.step_records: list[fx.TransitionRecord] = []
        self.step_refusals: list[tuple[str, fx.Refused]] = []
        self.shown_states = ""

    # --- what expectations read ----------------------------------------------------------

    def host(self, node: str) -> Host:
        return self.cluster.world.hosts[NAMES.index(node)]

    def core(self, node: str) -> NodeSnapshot | None:
        return self.host(node).core

    def state_text(self, node: str, *, with_substatus: bool = False) -> str:
        core = self.core(node)
        if core is None:
            return "down"
        return f"{core.state}/{core.substatus}" if with_substatus else core.state.value

    def reason(self, node: str) -> str | None:
        core = self.core(node)
        return None if core is None else core.reason

    def because(self, node: str) -> str:
        reason = self.reason(node)
        return "" if reason is None else f" (reason: {reason})"

    def last_change(self, node: str) -> str | None:
        """The record of the node's last change of state, as text."""
        for entry in reversed(self.journal):
            for effect in reversed(entry.effects):
                if (
                    isinstance(effect, fx.TransitionRecord)
                    and effect.node == node
                    and effect.source != effect.target
                ):
                    return _record_text(effect)
        return None

    # --- the replay ------------------------------------------------------------------------

    def run(self) -> Outcome:
        sc, timing = self.scenario, self.cluster.config.timing
        outcome = Outcome(sc)
        self.emit(f"== {sc.name} ({sc.shown})")
        if sc.description:
            self.emit(
                textwrap.fill(sc.description, 96, initial_indent="   ", subsequent_indent="   ")
            )
        self.emit(f"   given: {sc.given.describe()}")
        self.emit(
            f"   virtual clock: one tick is a heartbeat interval, {_t(timing.heartbeat_interval)} s"
            f"; link timeout {_t(timing.link_timeout)} s; dead timeout {_t(timing.dead_timeout)} s"
            f"; startup timeout {_t(timing.startup_timeout)} s"
        )
        failure = self.setup()
        for step in sc.steps:
            if failure is not None:
                break
            if isinstance(step, Expectation):
                outcome.checked += 1
                failure = self.check(step)
            elif isinstance(step, Run):
                self.begin_step(f"run {step.ticks}")
                for _ in range(step.ticks):
                    self.cluster.apply("tick")
                    self.absorb()
                self.show_states()
            else:
                failure = self.act(step)
        outcome.failure = failure
        outcome.end_time = self.cluster.world.now
        return outcome

    def setup(self) -> str | None:
        start = self.scenario.given.start
        if start == "stopped":
            self.emit("t=0  start: both daemons running, module stopped, fresh disks")
        elif start == "booted":
            self.cluster.booted()
            self.emit("t=0  start: both daemons launched with autostart, fresh disks")
            self.absorb()
        else:
            self.cluster.booted()
            for _ in range(SETUP_ROUNDS):
                if reached(self.cluster.world, "protected"):
                    break
                self.cluster.apply("tick")
            self.absorb(quiet=True)
            if not reached(self.cluster.world, "protected"):
                return f"{self.scenario.shown}: given.start: no pair formed in {SETUP_ROUNDS} ticks"
            formed = _t(self.cluster.world.now)
            self.emit(
                f"t=0  start: both daemons launched with autostart; pair formed at t={formed}"
            )
        self.step_records, self.step_refusals = [], []
        self.show_states()
        return None

    def begin_step(self, text: str) -> None:
        self.step_records, self.step_refusals = [], []
        self.emit(f"t={_t(self.cluster.world.now)}  {text}")

    def act(self, step: Action) -> str | None:
        self.begin_step(", ".join(step.labels))
        for label in step.labels:
            impossible = self.impossible(label)
            if impossible is not None:
                self.emit(f"        ✗ {label}: {impossible}")
                return f"{step.where}: `{label}` cannot happen now: {impossible}"
            verb, _, arg = label.partition(" ")
            if verb == "crash":
                self.follow(arg, None, self.cluster.world.now)
            wid = self.cluster.world.writes
            self.cluster.apply(label)
            self.absorb()
            if verb == "write":
                holders = [n for n in NAMES if wid in self.host(n).data]
                acked = "acknowledged" if wid in self.cluster.world.acked else "NOT acknowledged"
                self.emit(f"    {_write_name(wid)} {acked}; on {', '.join(holders)}")
        self.show_states()
        return None

    def check(self, expectation: Expectation) -> str | None:
        problem = expectation.verify(self)
        if problem is None:
            self.emit(f"        ✓ {expectation.describe()}")
            return None
        self.emit(f"        ✗ {expectation.describe()}: {problem}")
        return f"{expectation.where}: {problem}"

    def impossible(self, label: str) -> str | None:
        """Why the simulator cannot do ``label`` in the current world, or None."""
        if label in set(self.cluster.actions()):
            return None
        verb, _, arg = label.partition(" ")
        if verb in MESSAGE_ACTIONS:
            link, sender = arg.split()
            return (
                f"no heartbeat from {sender} is in flight on {link} (one is in flight only "
                "after a step that changed a node, until the next tick)"
            )
        if verb in LINK_ACTIONS:
            return f"link {arg} is {'already' if verb == 'partition' else 'not'} partitioned"
        if verb in ("arb_cut", "arb_heal") and not self.scenario.given.arbitrator:
            return "no arbitrator is configured (given: arbitrator: witness)"
        if verb == "restart":
            return f"{arg} is up"
        if self.core(arg) is None:
            return f"{arg} is down"
        if verb in ("write", "app_fail"):
            return f"the application does not run on {arg} ({self.state_text(arg)})"
        if verb == "app_break":
            return f"the application is already broken on {arg}"
        if verb in ("arb_cut", "arb_heal"):
            state = "cut from" if verb == "arb_cut" else "reachable by"
            return f"the arbitrator is already {state} {arg}"
        return f"the checker is already {verb.removeprefix('checker_')} on {arg}"

    def absorb(self, *, quiet: bool = False) -> None:
        """Take in what the cores did since the last call: show each transition
        record with the effects of its row, note refusals and resyncs, and
        follow both nodes' states event by event."""
        entries, self.read = self.journal[self.read :], len(self.journal)
        for entry in entries:
            row_effects: list[str] = []
            for effect in entry.effects:
                if isinstance(effect, fx.TransitionRecord):
                    self.step_records.append(effect)
                    done = f"  [{', '.join(row_effects)}]" if row_effects else ""
                    self.show(quiet, entry, f"{effect.node}: {_record_text(effect)}{done}")
                    row_effects = []
                elif isinstance(effect, fx.Refused):
                    self.step_refusals.append((entry.node, effect))
                    self.show(
                        quiet, entry, f"{entry.node} refuses {effect.command}: {effect.reason}"
                    )
                elif isinstance(effect, fx.StartResync) and effect.role == "target":
                    self.last_resync[entry.node] = effect
                if not isinstance(effect, UNSHOWN_EFFECTS):
                    row_effects.append(_effect_text(effect))
            if row_effects:  # effects of bookkeeping no row claimed (a link going down)
                self.show(quiet, entry, f"{entry.node}: [{', '.join(row_effects)}]")
            self.follow(entry.node, entry.state, entry.time)

    def show(self, quiet: bool, entry: Handled, text: str) -> None:
        if not quiet:
            self.emit(f"    t={_t(entry.time)}  {text}")

    def follow(self, node: str, state: State | None, time: float) -> None:
        """Note the node's state after an event; remember when both first served."""
        self.states[node] = state
        both = all(s is not None and s.serving for s in self.states.values())
        if both and self.both_serving_at is None:
            self.both_serving_at = time

    def show_states(self) -> None:
        text = ", ".join(f"{n} {self.state_text(n, with_substatus=True)}" for n in NAMES)
        if text != self.shown_states:
            self.emit(f"    = {text}")
            self.shown_states = text


def run_scenario(
    scenario: Scenario, emit: Callable[[str], None] | None = None, *, table: Table | None = None
) -> Outcome:
    """Replay ``scenario`` on a fresh simulated cluster, reporting the timeline
    line by line through ``emit``. Stops at the first expectation that does not
    hold, or at a step the simulator cannot do now. ``table`` replaces the
    shipped transition table (to show that a broken one is caught).
    Deterministic; no I/O."""
    return Replay(scenario, emit if emit is not None else _discard, table).run()


def _discard(_line: str) -> None:
    return None
