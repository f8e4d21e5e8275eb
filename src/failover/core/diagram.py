"""The state diagram, generated from the transition table (never drawn by hand).

``render`` turns a loaded ``Table`` into Mermaid text: one edge per (state,
next state) pair, labelled with the events that cause it, in the table's
order. Only state changes are drawn: ignores, refusals, rows that stay in
their state and the arbitration gate's twins (which stay until the grant)
are left out. The output depends on the table alone, so it is deterministic.

``python -m failover.core.diagram [ROOT]`` writes ``spec/diagram.mmd`` and
``docs/state-machine-diagram.md`` under ROOT (default: the current
directory, which must be the repository root); a test fails when they are
stale.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from failover.core.rules import default_table
from failover.core.state import State
from failover.core.table import Table

COMMAND = "python -m failover.core.diagram"
MERMAID_PATH = Path("spec", "diagram.mmd")
DOCS_PATH = Path("docs", "state-machine-diagram.md")
_NOTICE = f"Generated from spec/transitions.yaml by `{COMMAND}`; do not edit."


def edges(table: Table) -> list[tuple[State, State, tuple[str, ...]]]:
    """Every state change the table can make: (from, to, events causing it),
    states in the table's order, events in the table's order."""
    found: dict[tuple[State, State], list[str]] = {}
    for state in table.states:
        for event in table.events:
            for row in table.rows(state, event):
                target = row.target
                if row.gated_row is not None or row.refusal is not None:
                    continue
                if target is None or target is state:
                    continue
                events = found.setdefault((state, target), [])
                if event not in events:
                    events.append(event)
    order = {state: n for n, state in enumerate(table.states)}
    pairs = sorted(found, key=lambda pair: (order[pair[0]], order[pair[1]]))
    return [(source, target, tuple(found[(source, target)])) for source, target in pairs]


def render(table: Table) -> str:
    """The Mermaid ``stateDiagram-v2`` text of ``table`` (ends with a newline)."""
    lines = ["stateDiagram-v2", f"    %% {_NOTICE}", f"    [*] --> {State.STOP.value}"]
    for source, target, events in edges(table):
        lines.append(f"    {source.value} --> {target.value}: {', '.join(events)}")
    return "\n".join(lines) + "\n"


def render_markdown(table: Table) -> str:
    """The docs page: the same diagram in a ``mermaid`` code block."""
    return f"<!-- {_NOTICE} -->\n\n```mermaid\n{render(table)}```\n"


def outputs(table: Table) -> dict[Path, str]:
    """Each generated file's path (relative to the repository root) and text."""
    return {MERMAID_PATH: render(table), DOCS_PATH: render_markdown(table)}


def write(root: Path, table: Table) -> list[Path]:
    """Write the generated files under ``root``; return those whose text changed.
    Raises ``OSError`` when a file cannot be written."""
    changed: list[Path] = []
    for relative, text in outputs(table).items():
        path = root / relative
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "root", nargs="?", default=".", type=Path, help="the repository root (default: .)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "spec" / "transitions.yaml").is_file():
        print(f"{COMMAND}: {root} is not the repository root (no spec/transitions.yaml)")
        return 2
    changed = write(root, default_table())
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("diagram up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
