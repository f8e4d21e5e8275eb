"""structlog configuration for the daemon, done once at start.

JSON lines (one object per record, with ``timestamp``, ``level`` and ``msg``)
go to stdout when it is not a terminal, or to ``--log-file``; a terminal gets
structlog's readable console renderer. Records carry an ``event`` field for
the core event of a transition, so structlog's own message key is renamed to
``msg``: call sites pass the message positionally and the core event as
``core_event=...``.

Only the runtime configures logging; ``core/`` never installs a handler.

``AuditJournal`` is the node's audit journal (``<state_dir>/<node>/audit.jsonl``,
docs/audit.md): records for ``failover audit``, on ``CLOCK_MONOTONIC``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
JOURNAL_FORMAT = 1
"""Version of the audit journal's records (``failover.audit.FORMAT_VERSION``)."""


def _open_log_file(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Line buffering: every record is on disk (in the page cache) as it is written.
    return open(path, "a", buffering=1, encoding="utf-8")


_opened: list[TextIO] = []
"""The file the last configuration opened (closed when logging is configured again)."""

_LEADING = ("timestamp", "level", "msg", "node", "from", "event", "to")


def _lead_with_essentials(_: Any, __: str, record: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Put time, level, message and node first, so that a JSON line reads left to right."""
    ordered = {key: record[key] for key in _LEADING if key in record}
    ordered.update((key, value) for key, value in record.items() if key not in ordered)
    return ordered


def configure_logging(
    log_file: Path | str | None = None,
    *,
    level: str = "info",
    console: bool | None = None,
) -> None:
    """Configure structlog for the whole process (idempotent: the last call wins).

    ``console`` forces the renderer; by default it is the console renderer
    exactly when the output is stdout and stdout is a terminal.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    stream: TextIO = _open_log_file(Path(log_file)) if log_file is not None else sys.stdout
    while _opened:
        _opened.pop().close()
    if log_file is not None:
        _opened.append(stream)
    if console is None:
        console = log_file is None and sys.stdout.isatty()
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(event_key="msg", sort_keys=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg", replace_by="core_event"),
            _lead_with_essentials,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


JOURNAL_MAX_BYTES = 16 * 1024 * 1024
"""Size at which the audit journal is rotated (``audit.jsonl`` -> ``audit.jsonl.1``)."""
JOURNAL_BACKUPS = 8
"""Rotated journals kept (``.1`` newest ... ``.8`` oldest): 144 MiB at most per node."""


def monotonic() -> float:
    """``CLOCK_MONOTONIC``: the one clock every network namespace of a machine shares
    (``anyio.current_time()`` is virtual in tests, so records never use it)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class AuditJournal:
    """The node's audit journal: one JSON object per line, appended.

    ``write(kind, **fields)`` adds ``v``, ``kind``, ``node``, ``boot`` (the
    daemon's incarnation), ``seq`` (per boot) and ``mono`` (``monotonic()``),
    and appends the line with one ``write`` to a file opened ``O_APPEND`` (no
    user-space buffer: a record is in the page cache when ``write`` returns).
    The records and what ``failover audit`` checks with them are in
    docs/audit.md. A write that fails (full or failing disk) is reported once in
    the log and skipped; a partly written line is cut off again, and the next
    record that can be written is preceded by a ``gap`` record counting the
    skipped ones: the journal never stops the daemon and never leaves a torn
    line behind it. Past ``max_bytes`` the file is rotated, keeping ``backups``
    older files.
    """

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        boot: int,
        max_bytes: int = JOURNAL_MAX_BYTES,
        backups: int = JOURNAL_BACKUPS,
    ) -> None:
        self.path = path
        self.node = node
        self.boot = boot
        self.max_bytes = max_bytes
        self.backups = backups
        self.seq = 0
        self.skipped = 0
        self._fd: int | None = None

    def write(self, kind: str, /, **fields: Any) -> None:
        try:
            if self.skipped:
                self._append(self._line("gap", {"skipped": self.skipped}))
                structlog.get_logger("failover.journal").warning(
                    "audit journal writable again", file=str(self.path), skipped=self.skipped
                )
                self.skipped = 0
            self._append(self._line(kind, fields))
        except (OSError, ValueError, TypeError) as exc:
            self._close()
            if not self.skipped:
                structlog.get_logger("failover.journal").error(
                    "cannot write the audit journal: records are skipped until it works again",
                    file=str(self.path),
                    error=str(exc),
                )
            self.skipped += 1

    def _line(self, kind: str, fields: dict[str, Any]) -> str:
        self.seq += 1
        record = dict(fields)  # the journal's own keys win over a caller's
        record.update(v=JOURNAL_FORMAT, kind=kind, node=self.node, boot=self.boot)
        record.update(seq=self.seq, mono=monotonic())
        head = ("v", "kind", "node", "boot", "seq", "mono")
        ordered = {key: record[key] for key in head}
        ordered.update((key, value) for key, value in record.items() if key not in ordered)
        return json.dumps(ordered, default=str)

    def _append(self, line: str) -> None:
        data = (line + "\n").encode()
        size = self._size()
        if size >= self.max_bytes:
            self._rotate()
            size = self._size()
        assert self._fd is not None
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # no torn line left for the audit
            raise

    def _size(self) -> int:
        """The current file's size, opening (creating) it if needed."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        self._close()
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self._close()
