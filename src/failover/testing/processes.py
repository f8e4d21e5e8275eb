"""Processes seen from /proc, for tests that count what a process left behind."""

from __future__ import annotations

import os


def children_named(parent: int, prefix: str) -> list[tuple[int, str]]:
    """(pid, state letter) of every child of ``parent`` whose name starts with
    ``prefix``, zombies included (state ``Z``): read from /proc, nothing signalled."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                line = stat.read()
        except OSError:  # gone meanwhile
            continue
        name = line[line.index("(") + 1 : line.rindex(")")]
        state, ppid = line[line.rindex(")") + 2 :].split()[:2]
        if int(ppid) == parent and name.startswith(prefix):
            found.append((int(entry), state))
    return found
