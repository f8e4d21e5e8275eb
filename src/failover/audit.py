"""The audit of a real run: both nodes' records checked against S1-S5.

Each daemon appends one JSON object per line to ``<state_dir>/<node>/audit.jsonl``
(``failover.runtime.logging.AuditJournal``; the formats are in docs/audit.md):
every transition, every persisted metadata change, every link that goes up
or down, every change in what it hears of its peer, the start and stop of
the application and virtual IP as the executor really ran them, and the
daemon's own start and exit. Every record carries ``mono``, the machine's
``CLOCK_MONOTONIC`` reading, which every network namespace of one machine
shares: the two nodes' records of a lab run fall on one time line.

``audit(node_logs, acked=..., found=..., power_off=...)`` replays both time
lines and checks:

- S1: a node starts serving while its peer serves (in a serving state, or
  still holding the application or the address) only by a forced promotion,
  or, without an arbitrator, when it heard nothing on any link; and a serving
  node that hears its peer serving keeps serving only if it wins the split
  brain (the configured winner, else the higher generation). Whether the
  cluster has an arbitrator is read from each boot's ``start`` record.
- S2: a node enters ``alone``/``primary`` only if the peer's persisted data is
  not newer (``core.compare.relation``), unless forced, a blind takeover (none
  with an arbitrator, for S2 and S3 alike), or the peer's newer generation is of
  the forced lineage.
- S3: every acknowledged record (``acked``) is held (``found``) by every node
  that starts serving after it was acknowledged, except writes made on the
  other side of a split brain (S6 keeps those) and, after a blind takeover,
  writes the peer acknowledged ``alone`` while this node heard nothing.
- S4: a node in ``resync`` never serves and leaves it only for ``secondary``,
  ``wait`` or ``stop``.
- S5: a node's generation never decreases, across restarts.

A ``gap`` record (records the node's journal lost: its disk refused them) is
reported as "journal incomplete", with the S1/S2 checks that needed the lost
records listed there instead of judged on what remains; so is a boot whose
``start`` record is not among the journals read, when a check needed it.

A node that lost power writes nothing more: its journal just ends, and without
more the audit must take its application and address as held until its next
start (an S1 beside a takeover with an arbitrator). ``power_off`` gives what
the harness or the operator knows instead, per node the times its machine
stopped (everything on it: daemon, watchdog, application, address): from each,
that node serves nothing until its next start.

The checks are the runtime's versions of ``failover.model.invariants``; what
differs, and why, is in docs/audit.md.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

from failover.core.compare import Relation, relation
from failover.core.state import Generation, Metadata
from failover.errors import UsageError
from failover.runtime.logging import JOURNAL_FORMAT as FORMAT_VERSION
from failover.wire import MAX_COUNTER

JOURNAL_NAME = "audit.jsonl"
SERVING = frozenset({"alone", "primary"})
RESYNC_EXITS = frozenset({"resync", "secondary", "wait", "stop"})
INVARIANTS = ("S1", "S2", "S3", "S4", "S5")
POWER_OFF = "power_off"
"""The kind of the record ``power_off`` adds to a node's time line (never written by
a daemon)."""
NO_ARBITRATOR = "none"
"""The ``arbitrator`` of a start record without one (also read from a start record
that has no such field: journals written before the field was)."""
INCOMPLETE = "journal incomplete"
"""The finding for a node's lost records (a ``gap``, or a boot whose ``start`` record
is missing): what they would show is not judged."""

__all__ = [
    "FORMAT_VERSION",
    "JOURNAL_NAME",
    "Ack",
    "AuditInputError",
    "Report",
    "Violation",
    "audit",
    "load_acked",
    "load_found",
    "load_records",
]


class AuditInputError(UsageError):
    """A log, ack or found file cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which, when (``mono`` seconds), which nodes, why, where."""

    invariant: str
    mono: float
    nodes: tuple[str, ...]
    why: str
    where: str = ""

    def __str__(self) -> str:
        at = f" [{self.where}]" if self.where else ""
        return f"{self.invariant} t={self.mono:.3f} {','.join(self.nodes)}: {self.why}{at}"

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "mono": self.mono,
            "nodes": list(self.nodes),
            "why": self.why,
            "where": self.where,
        }


@dataclass
class Report:
    """What the audit found: ``violations`` (empty when every check held) and ``figures``."""

    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    checked: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": list(self.checked),
            "violations": [v.to_json() for v in self.violations],
            "figures": self.figures,
        }

    def __str__(self) -> str:
        return "\n".join(str(v) for v in self.violations)


@dataclass(frozen=True)
class Ack:
    """One acknowledged record of the client: its id, when (``mono``), and where if known."""

    id: int
    mono: float
    node: str | None = None


@dataclass(frozen=True)
class Record:
    """One line of a node's journal, with where it was read."""

    data: Mapping[str, Any]
    where: str

    @property
    def kind(self) -> str:
        return str(self.data["kind"])

    @property
    def node(self) -> str:
        return str(self.data["node"])

    @property
    def mono(self) -> float:
        return float(self.data["mono"])

    @property
    def order(self) -> tuple[int, int]:
        return int(self.data["boot"]), int(self.data["seq"])

    @property
    def step(self) -> tuple[int, int] | None:
        """(boot, step) of the core step that wrote it; None outside any step."""
        step = self.data.get("step")
        return None if step is None else (int(self.data["boot"]), int(step))

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


# --- reading -------------------------------------------------------------------------------


def _number(value: Any) -> TypeGuard[int | float]:
    """A finite JSON number (an integer too large for a float is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


# Every record kind, and the fields (with their types) a record of that kind needs.
_REQUIRED: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "start": (("generation", str),),
    "meta": (("generation", str), ("synced", str), ("consistent", bool)),
    "transition": (("from", str), ("to", str), ("generation", str), ("forced", bool)),
    "link": (("link", str), ("up", bool)),
    "peer": (("state", str), ("generation", str)),
    "resource": (("action", str), ("phase", str)),
    "exit": (),
    "gap": (("skipped", int),),
}


def _shown(value: Any) -> str:
    """``repr(value)`` cut to a length an error line can carry."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


_SHOWN = 60


def _check_record(data: Any) -> str | None:
    """Why ``data`` is not a journal record (None when it is one)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    version = data.get("v")
    if type(version) is not int or version != FORMAT_VERSION:
        return f"unknown format version {_shown(version)} (this audit reads {FORMAT_VERSION})"
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        return f"unknown record kind {_shown(kind)}"
    if not isinstance(data.get("node"), str) or not data["node"]:
        return "'node' must be a non-empty string"
    for key in ("boot", "seq"):
        if not isinstance(data.get(key), int) or isinstance(data.get(key), bool):
            return f"'{key}' must be an integer"
    if not _number(data.get("mono")):
        return "'mono' must be a number"
    if data.get("step") is not None and not isinstance(data["step"], int):
        return "'step' must be an integer"
    if kind == "gap" and data.get("since") is not None and not _number(data["since"]):
        return "'since' must be a number"
    if kind == "resource" and not isinstance(data.get("watchdog", False), bool):
        return "'watchdog' must be true or false"
    if kind == "resource" and data.get("fenced_at") is not None and not _number(data["fenced_at"]):
        return "'fenced_at' must be a number"
    if kind == "start" and not isinstance(data.get("arbitrator", ""), str):
        return "'arbitrator' must be a string (the arbitrator's type)"
    links = data.get("links")
    if (
        kind == "start"
        and links is not None
        and not (isinstance(links, list) and all(isinstance(name, str) for name in links))
    ):
        return "'links' must be a list of link names"
    for key, kind_type in _REQUIRED[kind]:
        if not isinstance(data.get(key), kind_type):
            return f"a {kind} record needs '{key}'"
    for key in ("generation", "synced"):
        if key in data and isinstance(data[key], str) and _generation(data[key]) is None:
            return f"'{key}' is not a generation: {_shown(data[key])}"
    return None


_COUNTER_DIGITS = len(str(MAX_COUNTER))


def _generation(text: str) -> Generation | None:
    """``str(Generation)`` read back: ``counter`` or ``counter:origin``."""
    counter, _, origin = text.partition(":")
    if not (counter.isascii() and counter.isdigit()) or len(counter) > _COUNTER_DIGITS:
        return None
    return Generation(int(counter), origin)


MAX_LINE = 1 << 20
"""Longest line read (bytes, newline included): a journal record or an ack is a few
hundred bytes; a longer line is an input error, never read whole into memory."""


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, last line without newline) of a UTF-8 text file, read one
    line (of at most ``MAX_LINE`` bytes) at a time."""
    try:
        with path.open("rb") as file:
            number = 0
            while line := file.readline(MAX_LINE + 1):
                number += 1
                if len(line) > MAX_LINE:
                    raise AuditInputError(f"{path}:{number}: longer than {MAX_LINE} bytes")
                if not line.strip():
                    continue
                try:
                    text = line.rstrip(b"\n").decode("utf-8")
                except UnicodeDecodeError:
                    raise AuditInputError(f"{path}:{number}: not UTF-8 text") from None
                yield number, text, not line.endswith(b"\n")
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _journal_files(path: Path) -> list[Path]:
    """``path`` itself, or every journal (rotated ones too) under a directory."""
    if path.is_dir():
        found = sorted(p for p in path.rglob(f"{JOURNAL_NAME}*") if p.is_file())
        if not found:
            raise AuditInputError(f"{path}: no {JOURNAL_NAME} under this directory")
        return found
    return [path]


def _decode(where: str, text: str) -> Any:
    """One line's JSON value; any line json cannot read (huge integers and deep
    nesting too) is an input error naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"{where}: not JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise AuditInputError(f"{where}: not JSON: {type(exc).__name__}") from None


def load_records(paths: Iterable[str | Path]) -> tuple[dict[str, list[Record]], int]:
    """Every node's records in its own order (boot, then sequence), and how many torn
    last lines were skipped (a daemon killed in the middle of a write)."""
    nodes: dict[str, list[Record]] = {}
    seen: dict[tuple[str, int, int], str] = {}
    torn_tails = 0
    for given in paths:
        for path in _journal_files(Path(given)):
            for number, text, torn in _lines(path):
                where = f"{path}:{number}"
                try:
                    data = _decode(where, text)
                except AuditInputError:
                    if torn:
                        torn_tails += 1
                        continue
                    raise
                problem = _check_record(data)
                if problem is not None:
                    raise AuditInputError(f"{where}: {problem}")
                record = Record(data, where)
                key = (record.node, *record.order)
                if key in seen:
                    raise AuditInputError(
                        f"{where}: record {record.node} boot {key[1]} seq {key[2]} "
                        f"also at {seen[key]} (a journal given twice?)"
                    )
                seen[key] = where
                nodes.setdefault(record.node, []).append(record)
    if len(nodes) > 2:
        raise AuditInputError(f"records of more than two nodes: {', '.join(sorted(nodes))}")
    for records in nodes.values():
        records.sort(key=lambda r: r.order)
    return nodes, torn_tails


def _json_lines(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    for number, text, _torn in _lines(path):
        where = f"{path}:{number}"
        data = _decode(where, text)
        if not isinstance(data, dict):
            raise AuditInputError(f"{where}: not a JSON object")
        yield where, data


def _record_id(where: str, data: Mapping[str, Any]) -> int:
    value = data.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AuditInputError(f"{where}: 'id' must be a non-negative integer")
    return value


def load_acked(path: str | Path) -> list[Ack]:
    """The client's log: one ``{"id": N, "mono": T}`` per line (``"node"`` optional),
    written once the write's fsync returned."""
    acks = []
    for where, data in _json_lines(Path(path)):
        mono = data.get("mono")
        if not _number(mono):
            raise AuditInputError(f"{where}: 'mono' must be a number")
        node = data.get("node")
        if node is not None and not isinstance(node, str):
            raise AuditInputError(f"{where}: 'node' must be a string")
        acks.append(Ack(_record_id(where, data), float(mono), node))
    return acks


def load_found(path: str | Path) -> frozenset[int]:
    """What a node holds at the end: one ``{"id": N}`` per line (its copy and quarantine)."""
    return frozenset(_record_id(where, data) for where, data in _json_lines(Path(path)))


# --- the time line of one node -------------------------------------------------------------


@dataclass
class Snapshot:
    """A node as its records show it just after one record."""

    mono: float
    state: str = "stop"
    held: bool = False
    links: dict[str, bool] = field(default_factory=dict)
    meta: Metadata = field(default_factory=Metadata)
    forced: bool = False  # the current serving interval began by a forced promotion
    winner: str | None = None  # split_brain_winner from the start record
    arbitrator: str | None = None  # the arbitrator's type from the start record (None: none)
    gap: Record | None = None  # records were lost before this, in this boot: not sure

    @property
    def serving(self) -> bool:
        """Serving for S1: a serving state, or the application or address still held."""
        return self.state in SERVING or self.held

    @property
    def silent(self) -> bool:
        """Every link down: this node hears nothing from its peer."""
        return not any(self.links.values())

    def copy(self, mono: float) -> Snapshot:
        return replace(self, mono=mono, links=dict(self.links))


def _meta(record: Record, before: Metadata) -> Metadata:
    generation = _generation(str(record.get("generation"))) or before.generation
    synced_text = record.get("synced")
    synced = _generation(synced_text) if isinstance(synced_text, str) else None
    consistent = record.get("consistent")
    return before.evolve(
        generation=generation,
        synced_generation=synced if synced is not None else before.synced_generation,
        consistent=consistent if isinstance(consistent, bool) else before.consistent,
    )


@dataclass
class Timeline:
    """One node's snapshots, one per record, in its own order."""

    node: str
    records: list[Record]
    snapshots: list[Snapshot] = field(default_factory=list)
    monos: list[float] = field(default_factory=list)
    gaps: list[tuple[float, Record]] = field(default_factory=list)  # (since, gap record)
    headless: list[Record] = field(default_factory=list)
    """The first record of each boot whose ``start`` record is not in the journals
    read (rotated away, or a file not given): as after a gap, what the node's
    records show from there to its next start may miss what came before."""
    fences: list[list[float]] = field(default_factory=list)
    """[``fenced_at``, the record's ``mono``, ``until``] of each fence the daemon
    journalled when it resumed, every step of it done (``ok``): its watchdog had
    stopped the application and released the address (and aborted the mirrors)
    at ``fenced_at``, while the stalled daemon wrote nothing (``fenced``);
    ``until``: its next transition or start of the application, when it acts
    again (inf if none)."""

    def fenced(self, mono: float) -> bool:
        """True when at ``mono`` this node was stalled after a successful fence, or
        had resumed and journalled it but had not acted since (no transition, no
        start of the application): its last record before ``mono`` is older than
        the fence or not older than the record that journalled it, and it acts
        again only after ``mono``. What its records show (a serving state) is then its
        daemon's stale belief, not its service."""
        index = bisect_left(self.monos, mono) - 1
        last = self.monos[index] if index >= 0 else -math.inf
        return any(
            at <= mono < until and (last <= at or journalled <= last)
            for at, journalled, until in self.fences
        )

    def fence_caught_up(self, record: Record) -> None:
        """A transition, or a start of the application: the daemon acts again after
        the fences it journalled; from here its records tell its service."""
        for fence in self.fences:
            fence[2] = min(fence[2], record.mono)

    def build(self) -> None:
        now = Snapshot(-math.inf)
        boot: int | None = None
        for record in self.records:
            headless = record.order[0] != boot and record.kind != "start"
            boot = record.order[0]
            if headless:
                self.headless.append(record)
            if record.kind == "gap":  # lost from ``since`` (else: after the last record kept)
                since = record.get("since")
                last = now.mono if math.isfinite(now.mono) else record.mono
                self.gaps.append((float(since) if _number(since) else last, record))
            if record.mono < now.mono:
                raise AuditInputError(
                    f"{record.where}: time goes backwards ({record.mono} after {now.mono}): "
                    "records of one machine's CLOCK_MONOTONIC are expected"
                )
            now = now.copy(record.mono)
            kind = record.kind
            if kind == "start":
                # A new daemon: state stop; resources released unless its recovery
                # of what a killed daemon left running did not finish.
                held = now.held and record.get("recovered") == "timeout"
                links = {str(name): False for name in record.get("links") or now.links}
                winner = record.get("split_brain_winner")
                now = Snapshot(record.mono, "stop", held, links, _meta(record, now.meta))
                now.winner = winner if isinstance(winner, str) else None
                arbitrator = record.get("arbitrator", NO_ARBITRATOR)
                now.arbitrator = None if arbitrator == NO_ARBITRATOR else str(arbitrator)
            elif kind == "meta":
                now.meta = _meta(record, now.meta)
            elif kind == "transition":
                self.fence_caught_up(record)
                if now.state not in SERVING and record.get("to") in SERVING:
                    now.forced = bool(record.get("forced"))
                now.state = str(record.get("to"))
                now.meta = _meta(record, now.meta)
            elif kind == "link":
                now.links[str(record.get("link"))] = bool(record.get("up"))
            elif kind == "resource" and record.get("watchdog") is True:
                # the watchdog's fence of a daemon that is gone (only it writes then):
                # the state and links went with the daemon; the application and
                # address are released only if every step of the fence succeeded
                now.held = now.held and record.get("ok") is not True
                now.state = "stop"
                now.links = dict.fromkeys(now.links, False)
            elif kind == "resource":
                fenced_at = record.get("fenced_at")
                if _number(fenced_at) and record.get("ok") is True:
                    self.fences.append([float(fenced_at), record.mono, math.inf])
                if record.get("action") == "start" and record.get("phase") == "begin":
                    self.fence_caught_up(record)
                    now.held = True
                elif record.get("action") == "stop" and record.get("phase") in (
                    "end",
                    "abandoned",
                ):
                    now.held = False
            elif kind in ("exit", POWER_OFF):
                now.held = False
                now.state = "stop"
                now.links = dict.fromkeys(now.links, False)
            elif kind == "gap":
                now.gap = record  # the state from here on may miss what was lost
            if headless:
                now.gap = record  # its links, state and resources before it are unknown
            self.snapshots.append(now)
            self.monos.append(record.mono)

    def at(self, mono: float) -> Snapshot | None:
        """The node as its records show it just before ``mono`` (None before its first)."""
        index = bisect_left(self.monos, mono) - 1
        return self.snapshots[index] if index >= 0 else None

    def serving_at(self, mono: float) -> bool:
        """Whether the node served just after ``mono``: what its records show, unless
        it was then stalled after a successful fence (``fenced``), the one judgement
        of "serving" that S1 and the overlap figures share."""
        snap = self.at(math.nextafter(mono, math.inf))
        return snap is not None and snap.serving and not self.fenced(mono)

    def before(self, index: int) -> Snapshot:
        return self.snapshots[index - 1] if index > 0 else Snapshot(-math.inf)

    def unknown_at(self, mono: float) -> Record | None:
        """The gap record (or first record of a boot without its start) when what this
        node's records show at ``mono`` may be wrong: ``mono`` falls where records were
        lost, or after them in the same boot."""
        for since, record in self.gaps:
            if since <= mono <= record.mono:
                return record
        for first in self.headless:
            if first.mono == mono:
                return first
        snapshot = self.at(mono)
        return None if snapshot is None else snapshot.gap


def _wins(snapshot: Snapshot, node: str, heard: Generation) -> bool:
    if snapshot.winner is not None:
        return snapshot.winner == node
    return snapshot.meta.generation > heard


# --- the checks ----------------------------------------------------------------------------


@dataclass
class _Audit:
    timelines: dict[str, Timeline]
    acks: list[Ack] | None
    found: Mapping[str, frozenset[int]]
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(
        default_factory=lambda: dict.fromkeys(
            ("entries", "blind_overlaps", "forced_overlaps", "s3_entries"), 0
        )
    )
    _absent: dict[str, list[Ack]] = field(default_factory=dict)
    _diverged: dict[str, set[int]] = field(default_factory=dict)
    """Per node, the records exempted at one of its starts of service (written on
    the other side of a split brain or of its blind takeover): its history from
    then on is one without them, and S6 (the writer's quarantine) keeps them, so
    its later starts do not owe them. Never the writer's own: the node that
    acknowledged a record must still hold it when it serves again."""
    _unjudged: dict[str, list[str]] = field(default_factory=dict)  # per gap record: checks
    both: list[Overlap] = field(default_factory=list)  # when both nodes served at once

    def unjudged(self, mono: float, nodes: Iterable[str], check: str) -> bool:
        """True (and noted under the gap) when a node's journal lost what ``check`` at
        ``mono`` needs: it is then not judged, and the gap is reported instead."""
        for node in nodes:
            line = self.timelines.get(node)
            gap = None if line is None else line.unknown_at(mono)
            if gap is not None:
                self._unjudged.setdefault(gap.where, []).append(f"{check} at t={mono:.3f}")
                return True
        return False

    def report_gaps(self) -> None:
        """One "journal incomplete" finding per gap (the evidence of that window is
        missing), and per boot without its start record that a check needed."""
        for line in self.timelines.values():
            for since, gap in line.gaps:
                node = line.node
                checks = self._unjudged.get(gap.where, [])
                why = (
                    f"{node}'s journal lost {gap.get('skipped')} record(s) from t={since:.3f} "
                    f"to t={gap.mono:.3f} (its disk refused them): what {node} did then is "
                    "unknown"
                )
                if checks:
                    why += f"; not judged: {', '.join(checks)}"
                self.violations.append(Violation(INCOMPLETE, since, (node,), why, gap.where))
            for first in line.headless:  # reported only when a check needed what is missing
                checks = self._unjudged.get(first.where, [])
                if checks:
                    why = (
                        f"{line.node}'s records of boot {first.order[0]} begin without its "
                        f"start record (rotated away, or a journal file not given): its links "
                        f"and state before t={first.mono:.3f} are unknown; not judged: "
                        f"{', '.join(checks)}"
                    )
                    violation = Violation(INCOMPLETE, first.mono, (line.node,), why, first.where)
                    self.violations.append(violation)

    def peer_of(self, node: str) -> Timeline | None:
        return next((t for n, t in self.timelines.items() if n != node), None)

    def flag(self, invariant: str, record: Record, nodes: Iterable[str], why: str) -> None:
        self.violations.append(
            Violation(invariant, record.mono, tuple(sorted(set(nodes))), why, record.where)
        )

    def run(self) -> None:
        self.both = _overlap_intervals(self.timelines)
        lineage = self.forced_lineage()
        for line in self.timelines.values():
            self.check_node(line, lineage)
        self.report_gaps()

    def forced_lineage(self) -> frozenset[Generation]:
        """Generations minted by a forced promotion, and every one minted from them."""
        lineage: set[Generation] = set()
        changes: list[tuple[float, Generation, Generation, bool]] = []
        for line in self.timelines.values():
            for i, snap in enumerate(line.snapshots):
                old, new = line.before(i).meta.generation, snap.meta.generation
                record = line.records[i]
                forced = record.kind == "transition" and bool(record.get("forced"))
                if old != new or forced:
                    changes.append((snap.mono, old, new, forced))
        for _mono, old, new, forced in sorted(changes, key=lambda c: c[0]):
            if forced or old in lineage:
                lineage.add(new)
        return frozenset(lineage)

    def check_node(self, line: Timeline, lineage: frozenset[Generation]) -> None:
        node = line.node
        peer = self.peer_of(node)
        step_start: Snapshot = Snapshot(-math.inf)
        step_key: tuple[int, int] | None = None
        highest: Generation | None = None
        for i, record in enumerate(line.records):
            before, after = line.before(i), line.snapshots[i]
            key = record.step
            if key is None or key != step_key:
                step_start = before
            step_key = key
            # S5: the generation never decreases on a node, across restarts
            generation = after.meta.generation
            if highest is not None and generation < highest:
                self.flag("S5", record, [node], f"generation went from {highest} to {generation}")
            highest = generation if highest is None else max(highest, generation)
            kind = record.kind
            if kind == "transition":
                source, target = str(record.get("from")), str(record.get("to"))
                if source == "resync" and target not in RESYNC_EXITS:
                    self.flag("S4", record, [node], f"{node} went from resync to {target}")
                if source not in SERVING and target in SERVING:
                    self.figures["entries"] += 1
                    self.check_entry(node, record, before, peer)
                    self.check_stale(node, record, step_start, before, peer, lineage)
                    self.check_acked(line, record, before)
            elif kind == "resource" and (record.get("action"), record.get("phase")) == (
                "start",
                "begin",
            ):
                if before.state == "resync":
                    self.flag("S4", record, [node], f"{node} started the application in resync")
                if before.state not in SERVING or line.fenced(
                    math.nextafter(record.mono, -math.inf)
                ):
                    # (a start after a fence, in the state it served in, serves again)
                    self.check_entry(node, record, before, peer)
            if kind == "peer" and record.get("state") in SERVING and peer is not None:
                # judged on the step's outcome: the last record of the same step
                end = i
                while key is not None and end + 1 < len(line.records):
                    if line.records[end + 1].step != key:
                        break
                    end += 1
                outcome = line.snapshots[end]
                heard = _generation(str(record.get("generation"))) or Generation()
                kept = step_start.state in SERVING and outcome.state in SERVING
                if (
                    kept
                    and not _wins(outcome, node, heard)
                    and not self.unjudged(record.mono, [node], "S1")
                ):
                    self.flag(
                        "S1",
                        record,
                        [node, peer.node],
                        f"{node} heard {peer.node} serving ({record.get('state')}, "
                        f"generation {heard}) and kept serving at generation "
                        f"{outcome.meta.generation} without winning the split brain",
                    )

    def check_entry(
        self, node: str, record: Record, before: Snapshot, peer: Timeline | None
    ) -> None:
        """S1: starting to serve while the peer serves needs force, or, without an
        arbitrator, silence on every link (the model's ``check_s1``)."""
        if peer is None or self.unjudged(record.mono, [node, peer.node], "S1"):
            return
        other = peer.at(record.mono)
        if other is None or not peer.serving_at(record.mono):
            return
        forced = record.kind == "transition" and bool(record.get("forced"))
        if forced or other.forced:  # the operator's choice, with an arbitrator too
            self.figures["forced_overlaps"] += 1
            return
        arbitrator = before.arbitrator or other.arbitrator
        if before.silent and arbitrator is None:  # a full partition looks like a dead peer
            self.figures["blind_overlaps"] += 1
            return
        up = sorted(name for name, is_up in before.links.items() if is_up)
        if up:
            heard = f"link(s) {', '.join(up)} were up on {node}"
        else:
            heard = f"{node} heard nothing on any link"
        holds = (
            f"in {other.state}"
            if other.state in SERVING
            else f"in {other.state} but still holding the application/address (its stop "
            "had not finished)"
        )
        if peer.monos[-1] < record.mono:  # its last record: killed, stalled, or just quiet
            holds += (
                f"; its journal has no record after t={peer.monos[-1]:.3f}: serving on, "
                "stalled or killed, it counts as holding what it held"
            )
        what = (
            f"started serving ({record.get('from')} -> {record.get('to')} on {record.get('event')})"
            if record.kind == "transition"
            else f"started the application in {before.state}"
        )
        why = f"{node} {what} while {peer.node} served ({holds}) and {heard}"
        if arbitrator is not None:
            why += f", with an arbitrator ({arbitrator}) configured"
        self.flag("S1", record, [node, peer.node], f"{why}; {self.both_served(record.mono)}")

    def both_served(self, mono: float) -> str:
        """The interval, from ``mono``, during which both nodes served, in words."""
        names = " and ".join(sorted(self.timelines))
        for overlap in self.both:
            if overlap.begin <= mono <= overlap.end:
                if not overlap.closed:
                    return (
                        f"{names} both served from t={overlap.begin:.3f} to the end of the "
                        f"journals (t={overlap.end:.3f})"
                    )
                return (
                    f"{names} both served from t={overlap.begin:.3f} to t={overlap.end:.3f} "
                    f"({overlap.end - overlap.begin:.3f} s)"
                )
        return f"{names} both served at t={mono:.3f}"

    @staticmethod
    def blind(record: Record, before: Snapshot, other: Snapshot | None) -> bool:
        """A blind takeover, for S2 and S3: a secondary's start of service after hearing
        nothing on any link, without an arbitrator (with one, the arbitrator grants
        service only to the newest data: the model's ``entered_serving``)."""
        arbitrated = before.arbitrator is not None or (
            other is not None and other.arbitrator is not None
        )
        return record.get("from") == "secondary" and before.silent and not arbitrated

    def check_stale(
        self,
        node: str,
        record: Record,
        step_start: Snapshot,
        before: Snapshot,
        peer: Timeline | None,
        lineage: frozenset[Generation],
    ) -> None:
        """S2: no promotion while the peer's persisted data is newer (unforced, not blind)."""
        if peer is None or record.get("forced"):
            return
        other = peer.at(record.mono)
        if other is None or self.unjudged(record.mono, [node, peer.node], "S2"):
            return
        blind = self.blind(record, before, other)
        mine, theirs = step_start.meta, other.meta
        if blind or theirs.generation in lineage or not theirs.consistent:
            return
        if relation(mine, theirs) is Relation.PEER_NEWER:
            self.flag(
                "S2",
                record,
                [node, peer.node],
                f"{node} started serving from generation {mine.generation} while "
                f"{peer.node} holds newer {theirs.generation}",
            )

    def check_acked(self, line: Timeline, record: Record, before: Snapshot) -> None:
        """S3: every write acknowledged before this start is held by this node."""
        node = line.node
        if self.acks is None or record.get("forced") or node not in self.found:
            return
        self.figures["s3_entries"] += 1
        t = record.mono
        peer = self.peer_of(node)
        blind = self.blind(record, before, None if peer is None else peer.at(t))
        absent = self._absent.get(node)
        if absent is None:  # once per node: usually few, whatever the number of acks
            held = self.found[node]
            absent = self._absent[node] = [ack for ack in self.acks if ack.id not in held]
        diverged = self._diverged.setdefault(node, set())
        missing: list[int] = []
        for ack in absent:
            if ack.mono >= t or ack.id in diverged:
                continue
            if self.exempt(line, ack, t, blind):
                diverged.add(ack.id)
            else:
                missing.append(ack.id)
        if missing:
            shown = ", ".join(str(n) for n in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            self.flag(
                "S3",
                record,
                [node],
                f"{node} started serving without {len(missing)} acknowledged record(s): "
                f"{shown}{more}",
            )

    def serving_at(self, mono: float) -> list[tuple[str, Snapshot]]:
        return [
            (name, snap)
            for name, line in self.timelines.items()
            if (snap := line.at(mono)) is not None and snap.state in SERVING
        ]

    def exempt(self, line: Timeline, ack: Ack, t: float, blind: bool) -> bool:
        """Writes this node may not hold when it starts serving (S6 keeps them)."""
        node = line.node
        servers = self.serving_at(ack.mono)
        if ack.node is not None:
            servers = [(name, snap) for name, snap in servers if name == ack.node]
        others = [(name, snap) for name, snap in servers if name != node]
        if not others:
            return False
        # acknowledged on the other side of a split brain (both in a serving state)
        mine = line.at(ack.mono)
        if mine is not None and mine.state in SERVING:
            return True
        # after a blind takeover: written alone by the peer while this node heard nothing
        if blind and all(snap.state == "alone" for _, snap in others):
            return self.silent_between(line, ack.mono, t)
        return False

    @staticmethod
    def silent_between(line: Timeline, start: float, end: float) -> bool:
        first = line.at(start)
        if first is None or not first.silent:
            return False
        for record in line.records:
            if start <= record.mono < end and record.kind == "link" and record.get("up"):
                return False
        return True


def audit(
    node_logs: Iterable[str | Path],
    acked: str | Path | Iterable[Ack] | None = None,
    found: Mapping[str, str | Path | Iterable[int]] | None = None,
    power_off: Mapping[str, Iterable[float]] | None = None,
) -> Report:
    """Check both nodes' journals (files, or directories holding them) against S1-S5.

    ``acked``: the client's acknowledged records (a file, see ``load_acked``, or
    ``Ack`` values); ``found``: per node, the record ids it holds at the end (a
    file, see ``load_found``, or ids). S3 is checked only when both are given,
    for the nodes in ``found``. ``power_off``: per node, the ``CLOCK_MONOTONIC``
    times its machine lost power (``_add_power_offs``). Raises
    ``AuditInputError`` (file:line) on unreadable input.
    """
    nodes, torn = load_records(node_logs)
    if not nodes:
        raise AuditInputError("no records in the given logs")
    for name, times in (power_off or {}).items():
        _add_power_offs(nodes, name, times)
    acks: list[Ack] | None
    if acked is None:
        acks = None
    elif isinstance(acked, str | Path):
        acks = load_acked(acked)
    else:
        acks = list(acked)
    strangers = sorted(set(found or {}) - set(nodes))
    if strangers:  # a typo would otherwise leave S3 "checked" on no node
        raise AuditInputError(
            f"found set(s) for {', '.join(strangers)}: no records of such a node in the "
            f"given logs (nodes: {', '.join(sorted(nodes))})"
        )
    held: dict[str, frozenset[int]] = {}
    for name, given in (found or {}).items():
        held[name] = load_found(given) if isinstance(given, str | Path) else frozenset(given)
    timelines = {name: Timeline(name, records) for name, records in sorted(nodes.items())}
    for line in timelines.values():
        line.build()
    run = _Audit(timelines, acks, held)
    run.run()
    checked = tuple(i for i in INVARIANTS if i != "S3" or (acks is not None and held))
    run.figures.update(
        nodes=sorted(timelines),
        records={
            name: sum(r.kind != POWER_OFF for r in line.records) for name, line in timelines.items()
        },
        power_offs={
            name: sum(r.kind == POWER_OFF for r in line.records) for name, line in timelines.items()
        },
        boots={name: len({r.order[0] for r in line.records}) for name, line in timelines.items()},
        torn_tails=torn,
        skipped={
            name: sum(int(r.get("skipped")) for r in line.records if r.kind == "gap")
            for name, line in timelines.items()
        },
        acked=None if acks is None else len(acks),
        overlaps=_overlaps(run.both),
        arbitrators={
            name: sorted(
                {str(r.get("arbitrator", NO_ARBITRATOR)) for r in line.records if r.kind == "start"}
            )
            for name, line in timelines.items()
        },
    )
    run.violations.sort(key=lambda v: v.mono)
    return Report(run.violations, run.figures, checked)


def _add_power_offs(nodes: dict[str, list[Record]], name: str, times: Iterable[float]) -> None:
    """Put a ``power_off`` record into ``name``'s time line at each of ``times``:
    after every record not later than it, in the boot those records belong to.
    Refused (``AuditInputError``): a node without records, a time that is not a
    finite number, one before the node's first record, and one followed by a
    record of the same boot (a daemon cannot write after its machine stopped)."""
    where = f"power-off of {name}"
    records = nodes.get(name)
    if records is None:
        raise AuditInputError(
            f"{where}: no records of such a node in the given logs "
            f"(nodes: {', '.join(sorted(nodes))})"
        )
    for t in sorted(times):
        if not _number(t):
            raise AuditInputError(f"{where}: {t!r} is not a finite CLOCK_MONOTONIC time")
        index = bisect_right([r.mono for r in records], t)
        if index == 0:
            raise AuditInputError(f"{where} at t={t:.6f}: before its first record")
        last = records[index - 1]
        if index < len(records) and records[index].order[0] == last.order[0]:
            raise AuditInputError(
                f"{where} at t={t:.6f}: {records[index].where} was written after it by the "
                "same run of the daemon"
            )
        boot, seq = last.order
        data = {"kind": POWER_OFF, "node": name, "mono": float(t), "boot": boot, "seq": seq}
        records.insert(index, Record(data, f"{where} at t={t:.6f}"))


@dataclass(frozen=True)
class Overlap:
    """An interval during which both nodes served (state or resources); ``closed``
    is False when it lasts until the last record read (``end``)."""

    begin: float
    end: float
    closed: bool


def _overlap_intervals(timelines: Mapping[str, Timeline]) -> list[Overlap]:
    """Every interval during which both nodes served at once, in order: a node
    stalled after a successful fence stops serving at the fence (``serving_at``)."""
    lines = list(timelines.values())
    if len(lines) != 2:
        return []
    fences = {fence[0] for line in lines for fence in line.fences}
    monos = sorted({*lines[0].monos, *lines[1].monos, *fences})
    found: list[Overlap] = []
    began = None
    for mono in monos:
        both = all(line.serving_at(mono) for line in lines)
        if both and began is None:
            began = mono
        elif not both and began is not None:
            found.append(Overlap(began, mono, closed=True))
            began = None
    if began is not None:
        found.append(Overlap(began, monos[-1], closed=False))
    return found


def _overlaps(intervals: Iterable[Overlap]) -> dict[str, Any]:
    """How long both nodes served at once (state or resources), in total and at most."""
    spans = [o.end - o.begin for o in intervals]
    return {
        "count": len(spans),
        "seconds": round(sum(spans), 6),
        "longest": round(max(spans, default=0.0), 6),
    }
