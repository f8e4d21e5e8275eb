"""structlog configuration for the daemon, done once at start.

JSON lines (one object per record, with ``timestamp``, ``level`` and ``msg``)
go to stdout when it is not a terminal, or to ``--log-file``; a terminal gets
structlog's readable console renderer. Under systemd (stdout is the journal's
stream, as ``JOURNAL_STREAM`` says) records get the console renderer without
colours or timestamp (the journal stamps each line) and each line is prefixed
with its syslog priority (``<3>`` error ... ``<7>`` debug), which journald
strips and stores, so that ``journalctl -p warning`` selects them.

Records carry an ``event`` field for the core event of a transition, so
structlog's own message key is renamed to ``msg``: call sites pass the message
positionally and the core event as ``core_event=...``.

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
from collections import deque
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
JOURNAL_FORMAT = 1
"""Version of the audit journal's records (``failover.audit.FORMAT_VERSION``)."""


def _open_log_file(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unbuffered: every record is on disk (in the page cache) as it is written,
    # and a record that cannot be written is not kept to be tried again.
    return open(path, "ab", buffering=0)


def append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` to ``fd`` (a file opened ``O_APPEND``, no user-space buffer)
    with one ``write``: all of it or nothing. A write that fails, or that a full
    disk takes only in part (a short write), is cut off again, so no torn line
    is left behind, and raises ``OSError``."""
    size = os.fstat(fd).st_size
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


class _Tolerant:
    """The log's stream, which never raises: a record that cannot be written (a full
    or failing disk) is dropped and counted, and the first record written again is
    preceded by one saying how many were lost. The daemon never stops for its log."""

    def __init__(self, text: TextIO | None = None, binary: BinaryIO | None = None) -> None:
        self.text = text
        self.binary = binary
        self.dropped = 0

    def _put(self, line: str) -> None:
        if self.binary is not None:
            append_whole(self.binary.fileno(), line.encode("utf-8"))
        elif self.text is not None:
            self.text.write(line)
            self.text.flush()

    def write(self, text: str) -> int:
        try:
            if self.dropped:
                notice = {"level": "warning", "msg": "log records lost", "lost": self.dropped}
                self._put(json.dumps(notice) + "\n")
                self.dropped = 0
            self._put(text)
        except (OSError, ValueError):  # ValueError: the stream was closed
            self.dropped += 1
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            (self.binary or self.text or sys.stdout).flush()


_opened: list[BinaryIO] = []
"""The file the last configuration opened (closed when logging is configured again)."""


def log_file() -> str | None:
    """The file the records go to, None when they go to stdout (for a helper
    process, the watchdog, that logs beside the daemon)."""
    return str(_opened[-1].name) if _opened else None


PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
"""syslog priorities (sd-daemon(3)) of the log levels; unknown levels are ``info``."""


def journal_stream(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stdout) is connected to the journal: systemd sets
    ``JOURNAL_STREAM`` to its device and inode (a redirected stdout is not)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat((stream or sys.stdout).fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a file (a test's capture)
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


class JournalRenderer:
    """The console renderer for the journal: no colours, each line of a record (a
    traceback has several) prefixed with the record's syslog priority."""

    def __init__(self) -> None:
        self.console = structlog.dev.ConsoleRenderer(
            colors=False, event_key="msg", sort_keys=False, pad_event_to=0
        )

    def __call__(self, logger: Any, name: str, record: MutableMapping[str, Any]) -> str:
        prefix = f"<{PRIORITIES.get(str(record.get('level')), 6)}>"
        text = self.console(logger, name, record)
        return "\n".join(prefix + line for line in text.splitlines() or [""])


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
    exactly when the output is stdout and stdout is a terminal. Whenever the output
    is stdout and stdout is the journal's stream, it is the journal's
    (``JournalRenderer``, no timestamp) unless ``console`` is True: a helper that
    asks for JSON (the watchdog, ``console=False``) logs there as the daemon does.
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    binary = _open_log_file(Path(log_file)) if log_file is not None else None
    while _opened:
        _opened.pop().close()
    if binary is not None:
        _opened.append(binary)
    stream = _Tolerant(binary=binary) if binary is not None else _Tolerant(text=sys.stdout)
    journal = console is not True and log_file is None and journal_stream()
    if console is None:
        console = log_file is None and sys.stdout.isatty()
    renderer: Any
    stamp: list[Any] = [structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if journal:
        renderer, stamp = JournalRenderer(), []
    elif console:
        renderer = structlog.dev.ConsoleRenderer(event_key="msg", sort_keys=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *stamp,
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg", replace_by="core_event"),
            _lead_with_essentials,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


JOURNAL_MAX_BYTES = 16 * 1024 * 1024
"""Size at which the audit journal is rotated (``audit.jsonl`` -> ``audit.jsonl.1``)."""
JOURNAL_BACKUPS = 8
"""Rotated journals kept (``.1`` newest ... ``.8`` oldest): 144 MiB at most per node."""
JOURNAL_BACKLOG = 20_000
"""Records kept in memory while the journal cannot be written (a few MiB at most)."""
JOURNAL_RESERVE = 64 * 1024
"""Bytes held on the journal's disk (``audit.reserve`` next to the journal) for the
records that wait when the daemon exits: released then, if the disk still refuses
them, so that a stop made on a full disk is journalled."""
_GAP_ROOM = 512  # bytes kept in the reserve for the last gap record
_PAGE = 4096  # a write at the end of a file may need one more page than its length


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
    docs/audit.md.

    A write that fails (full or failing disk) never stops the daemon: it is
    reported once in the log, a partly written line is cut off again (no torn
    line), and the records wait in memory, with their own times, to be written
    in order at the next write that succeeds. Past ``backlog`` waiting records
    the newest are dropped, and a ``gap`` record counting them (``skipped``) and
    saying since when (``since``, the first lost record's ``mono``) follows the
    backlog. Past ``max_bytes`` the file is rotated, keeping ``backups`` older
    files.

    Records are never lost silently at exit: ``close`` writes what still waits;
    if the disk still refuses it, it frees the reserve (``reserve`` bytes held
    in ``<stem>.reserve`` beside the journal since its first successful write)
    and writes there the oldest waiting records that fit, then a ``gap`` record
    for the rest, which ``failover audit`` reports as "journal incomplete".
    """

    def __init__(
        self,
        path: Path,
        *,
        node: str,
        boot: int,
        max_bytes: int = JOURNAL_MAX_BYTES,
        backups: int = JOURNAL_BACKUPS,
        backlog: int = JOURNAL_BACKLOG,
        reserve: int = JOURNAL_RESERVE,
    ) -> None:
        self.path = path
        self.node = node
        self.boot = boot
        self.max_bytes = max_bytes
        self.backups = backups
        self.backlog = backlog
        self.reserve = reserve
        self.reserve_path = path.with_suffix(".reserve")
        self.seq = 0
        self.dropped = 0  # records not kept: the backlog was full
        self._lost_since: float | None = None  # ``mono`` of the first of them
        self._waiting: deque[tuple[float, str]] = deque()  # (mono, line)
        self._reserved = False
        self._failing = False
        self._fd: int | None = None

    @property
    def waiting(self) -> int:
        """Records kept in memory until the journal can be written again."""
        return len(self._waiting)

    def write(self, kind: str, /, **fields: Any) -> None:
        try:
            entry = self._line(kind, fields)
        except (ValueError, TypeError) as exc:  # a value JSON cannot hold: a bug, not fatal
            structlog.get_logger("failover.journal").error(
                "audit record not written", kind=kind, error=str(exc)
            )
            return
        if len(self._waiting) < self.backlog:
            self._waiting.append(entry)
        else:
            if not self.dropped:
                self._lost_since = entry[0]
            self.dropped += 1
        self._flush()

    def _flush(self) -> None:
        log = structlog.get_logger("failover.journal")
        try:
            while self._waiting:
                self._append(self._waiting[0][1])
                self._waiting.popleft()
            if self.dropped:
                gap = {"skipped": self.dropped, "since": self._lost_since}
                self._append(self._line("gap", gap)[1])
                self.dropped = 0
        except OSError as exc:
            self._close()
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write the audit journal: records wait in memory until it works again",
                    file=str(self.path),
                    error=str(exc),
                )
            return
        self._hold_reserve()
        if self._failing:
            self._failing = False
            log.warning("audit journal writable again", file=str(self.path))

    def _hold_reserve(self) -> None:
        """Allocate the reserve file once (retried after each successful write until
        the disk has room for it)."""
        if self._reserved or self.reserve <= 0:
            return
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve)
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()  # a partial reservation: give it back
            return
        self._reserved = True

    def _spend_reserve(self) -> None:
        """At exit, the disk still refusing: free the reserve, keep the oldest waiting
        records that fit in it and count the rest as lost (in the gap record)."""
        if not self._reserved:
            return
        with contextlib.suppress(OSError):
            self.reserve_path.unlink()
        self._reserved = False
        budget = self.reserve - 2 * _PAGE - _GAP_ROOM
        kept: deque[tuple[float, str]] = deque()
        while self._waiting and len(self._waiting[0][1]) + 1 <= budget:
            budget -= len(self._waiting[0][1]) + 1
            kept.append(self._waiting.popleft())
        if self._waiting:  # older than any dropped record: the lost window starts here
            self._lost_since = self._waiting[0][0]
            self.dropped += len(self._waiting)
        self._waiting = kept
        self.reserve = 0  # spent: not taken again on the way out
        self._flush()

    def _line(self, kind: str, fields: dict[str, Any]) -> tuple[float, str]:
        self.seq += 1
        record = dict(fields)  # the journal's own keys win over a caller's
        record.update(v=JOURNAL_FORMAT, kind=kind, node=self.node, boot=self.boot)
        mono = monotonic()
        record.update(seq=self.seq, mono=mono)
        head = ("v", "kind", "node", "boot", "seq", "mono")
        ordered = {key: record[key] for key in head}
        ordered.update((key, value) for key, value in record.items() if key not in ordered)
        return mono, json.dumps(ordered, default=str)

    def _append(self, line: str) -> None:
        if os.fstat(self._open()).st_size >= self.max_bytes:
            self._rotate()
        append_whole(self._open(), (line + "\n").encode())  # no torn line left for the audit

    def _open(self) -> int:
        """The current file's descriptor, opening (creating) it if needed."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

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
        """Write what still waits, with the reserve if the disk still refuses it (see
        the class docstring), then close. What even that cannot write is logged."""
        if self._waiting or self.dropped:
            self._flush()
        if self._waiting or self.dropped:
            self._spend_reserve()
        if self._waiting or self.dropped:
            structlog.get_logger("failover.journal").error(
                "audit journal records lost at exit",
                file=str(self.path),
                lost=len(self._waiting) + self.dropped,
            )
        self._close()
