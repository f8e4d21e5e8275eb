"""Synthetic audit journals: what two daemons would write, record by record.

``Journal(node)`` builds one node's records with the fields the real daemon
writes (``failover.runtime.logging.AuditJournal``); ``write`` puts them in
``<dir>/<node>/audit.jsonl``. Times are given explicitly (``mono`` seconds),
so every scenario is exact and needs no clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LINKS = ("lan", "crossover")


class Journal:
    def __init__(self, node: str, *, boot: int = 1, links: tuple[str, ...] = LINKS) -> None:
        self.node = node
        self.links = links
        self.boot = boot
        self.seq = 0
        self.step = 0
        self.records: list[dict[str, Any]] = []

    def _add(self, kind: str, mono: float, step: bool = True, **fields: Any) -> Journal:
        self.seq += 1
        record = {"v": 1, "kind": kind, "node": self.node, "boot": self.boot, "seq": self.seq}
        record["mono"] = mono
        if step:
            record["step"] = self.step
        record.update(fields)
        self.records.append(record)
        return self

    def next_step(self) -> Journal:
        self.step += 1
        return self

    def start(
        self,
        mono: float,
        generation: str = "0",
        *,
        synced: str = "0",
        winner: str | None = None,
        recovered: bool | str = False,
        arbitrator: str | None = None,
    ) -> Journal:
        """A daemon's start; ``arbitrator`` (``"none"``, ``"witness"``) as the daemon
        writes it, left out when None (as in journals written before it was)."""
        self.seq, self.step = 0, 0
        extra = {} if arbitrator is None else {"arbitrator": arbitrator}
        return self._add(
            "start",
            mono,
            step=False,
            pid=1,
            links=list(self.links),
            split_brain_winner=winner,
            recovered=recovered,
            timing={},
            generation=generation,
            synced=synced,
            consistent=True,
            last_state=None,
            **extra,
        )

    def restart(self, mono: float, generation: str, **kwargs: Any) -> Journal:
        self.boot += 1
        return self.start(mono, generation, **kwargs)

    def meta(
        self, mono: float, generation: str, synced: str = "0", consistent: bool = True
    ) -> Journal:
        return self._add(
            "meta", mono, generation=generation, synced=synced, consistent=consistent,
            last_state=None,
        )  # fmt: skip

    def transition(
        self,
        mono: float,
        source: str,
        target: str,
        generation: str,
        *,
        event: str = "heartbeat",
        forced: bool = False,
        synced: str = "0",
        consistent: bool = True,
    ) -> Journal:
        return self._add(
            "transition", mono, **{"from": source, "to": target}, event=event,
            substatus="ready", effects=[], reason="", generation=generation, forced=forced,
            synced=synced, consistent=consistent,
        )  # fmt: skip

    def link(self, mono: float, up: bool, *names: str) -> Journal:
        for name in names or self.links:
            self._add("link", mono, link=name, up=up)
        return self

    def peer(self, mono: float, state: str, generation: str) -> Journal:
        return self._add("peer", mono, state=state, generation=generation, handover=False)

    def app(self, mono: float, action: str, phase: str) -> Journal:
        return self._add("resource", mono, step=False, action=action, phase=phase, vip=None)

    def fenced(self, mono: float, *, ok: bool = True) -> Journal:
        """The watchdog's record of its fence, written after the daemon's death."""
        return self._add(
            "resource", mono, step=False, action="stop", phase="end", ok=ok,
            problem="fenced by the watchdog: the daemon is gone while its node served",
            vip=None, fenced_at=mono - 0.001, watchdog=True,
        )  # fmt: skip

    def exit(self, mono: float, state: str = "stop") -> Journal:
        """The daemon's clean end."""
        return self._add("exit", mono, step=False, state=state, app_running=False)

    def serve(self, mono: float, source: str, target: str, generation: str, **kw: Any) -> Journal:
        """A step into a serving state, then the application's start (begin, end)."""
        self.next_step().transition(mono, source, target, generation, **kw)
        return self.app(mono + 0.001, "start", "begin").app(mono + 0.002, "start", "end")

    def write(self, directory: Path) -> Path:
        path = directory / self.node / "audit.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in self.records))
        return path


def paired(
    alpha: Journal, beta: Journal, at: float = 10.0, *, arbitrator: str | None = None
) -> float:
    """Both start, meet, alpha serves, beta follows: alpha primary, beta secondary
    at generation 1:alpha, every link up on both. Returns the time it is done."""
    alpha.start(at, arbitrator=arbitrator)
    beta.start(at, arbitrator=arbitrator)
    alpha.next_step().transition(at + 0.01, "stop", "wait", "0", event="start")
    beta.next_step().transition(at + 0.01, "stop", "wait", "0", event="start")
    alpha.next_step().peer(at + 0.1, "wait", "0").meta(at + 0.1, "1:alpha").link(at + 0.1, True)
    alpha.transition(at + 0.1, "wait", "alone", "1:alpha")
    alpha.app(at + 0.101, "start", "begin").app(at + 0.102, "start", "end")
    beta.next_step().peer(at + 0.11, "alone", "1:alpha").link(at + 0.11, True)
    beta.transition(at + 0.11, "wait", "resync", "0")
    beta.next_step().meta(at + 0.2, "1:alpha", "1:alpha")
    beta.transition(at + 0.2, "resync", "secondary", "1:alpha", synced="1:alpha")
    alpha.next_step().peer(at + 0.21, "secondary", "1:alpha").meta(at + 0.21, "1:alpha", "1:alpha")
    alpha.transition(at + 0.21, "alone", "primary", "1:alpha", synced="1:alpha")
    beta.next_step().peer(at + 0.22, "primary", "1:alpha")
    return at + 0.3


def acks(path: Path, *entries: tuple[int, float] | tuple[int, float, str]) -> Path:
    lines = []
    for entry in entries:
        record: dict[str, Any] = {"id": entry[0], "mono": entry[1]}
        if len(entry) == 3:
            record["node"] = entry[2]
        lines.append(json.dumps(record) + "\n")
    path.write_text("".join(lines))
    return path


def ids(path: Path, *numbers: int) -> Path:
    path.write_text("".join(json.dumps({"id": n}) + "\n" for n in numbers))
    return path
