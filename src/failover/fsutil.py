"""Small file-system helpers shared by the runtime, replication and platform layers.

Below every package that writes durable state (``runtime/``, ``replication/``,
``platform/``), so that none of them imports another for them. Plain ``os``
calls only: no decision, no logging.

``write_atomic`` replaces a small file so that a crash at any point leaves
either the old or the new content, never a mix: the new content is written to
a temporary file in the same directory, flushed and fsynced, renamed over the
old file with ``os.replace``, and the directory is fsynced so the rename itself
survives a power cut. A temporary file left behind by a crash is removed by the
next ``write_atomic`` of the same path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"
"""Suffix of ``write_atomic``'s temporary files (``.<name>.<random>.tmp``)."""


def describe_error(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: the message and the errno's name."""
    text = exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno or 0)
    return f"{text} ({name})" if name else text


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content.

    Creates the parent directory if needed. Blocks for two fsyncs (a few hundred
    microseconds to a few milliseconds on a local disk). Raises ``OSError`` when
    the directory is not writable or the disk is full; the old file is then
    untouched and no temporary file is left.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        # Leave nothing half-written behind when the write itself failed.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename, a removal) survive a power cut."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_stale_temps(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
