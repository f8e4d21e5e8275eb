"""structlog configuration for the daemon, done once at start.

JSON lines (one object per record, with ``timestamp``, ``level`` and ``msg``)
go to stdout when it is not a terminal, or to ``--log-file``; a terminal gets
structlog's readable console renderer. Records carry an ``event`` field for
the core event of a transition, so structlog's own message key is renamed to
``msg``: call sites pass the message positionally and the core event as
``core_event=...``.

Only the runtime configures logging; ``core/`` never installs a handler.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")


def _open_log_file(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unbuffered: every record is on disk (in the page cache) as it is written,
    # and a record that cannot be written is not kept to be tried again.
    return open(path, "ab", buffering=0)


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
            self.binary.write(line.encode("utf-8"))
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
    binary = _open_log_file(Path(log_file)) if log_file is not None else None
    while _opened:
        _opened.pop().close()
    if binary is not None:
        _opened.append(binary)
    stream = _Tolerant(binary=binary) if binary is not None else _Tolerant(text=sys.stdout)
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
        logger_factory=structlog.WriteLoggerFactory(file=stream),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
