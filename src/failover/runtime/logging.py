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

import logging
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")


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
