"""Processes for tests: seen from /proc (what a process left behind), and a writer
whose acknowledgements are read as it prints them.

``AckedWriter`` runs a process that prints ``NUMBER MONO`` on standard output
once write ``NUMBER`` is acknowledged (``MONO``: ``CLOCK_MONOTONIC`` when it
began or was acknowledged, as that writer documents); a thread reads each line
into ``acked`` as it comes, and ``wait_for`` awaits a count without polling.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence


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


class AckedWriter:
    """``argv`` started with its standard output and error piped; ``acked`` holds
    ``(number, mono)`` of every line it printed, in order (module docstring)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.acked: list[tuple[int, float]] = []
        self.errors = ""  # its standard error, once stopped
        self._grown = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            number, mono = line.split()
            with self._grown:
                self.acked.append((int(number), float(mono)))
                self._grown.notify_all()
        with self._grown:
            self._grown.notify_all()

    def ids(self) -> list[int]:
        """The acknowledged numbers so far (a snapshot)."""
        with self._grown:
            return [number for number, _ in self.acked]

    def wait_for(self, count: int, bound: float) -> bool:
        """Wait until ``count`` writes are acknowledged in all; False after ``bound`` s
        or if the writer ended."""
        deadline = time.monotonic() + bound
        with self._grown:
            while len(self.acked) < count:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    return False
                self._grown.wait(min(left, 1.0))
        return True

    def stop(self) -> list[tuple[int, float]]:
        """Terminate the writer; every acknowledgement it printed (its standard error
        in ``errors``). Raises AssertionError with that standard error if it had ended
        by itself (it runs until terminated)."""
        ended = self.proc.poll()
        if ended is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.errors = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        if ended is not None:
            raise AssertionError(f"the writer ended with {ended}: {self.errors.strip()}")
        return list(self.acked)
