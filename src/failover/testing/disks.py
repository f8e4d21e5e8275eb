"""Small filesystems for disk-fault tests: a tmpfs that can be filled, freed, made read-only.

Mounting needs root (the lab runs as root; without it the test is skipped);
every mount is undone when its block ends. ``fill`` writes zeros until the
kernel answers ENOSPC, so the fault is the real one, not an imitation.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def needs_root() -> None:
    """Skip the calling test unless it runs as root."""
    if os.geteuid() != 0:
        import pytest  # noqa: PLC0415 - only tests call this

        pytest.skip("mounting a tmpfs needs root")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created) until the block ends."""
    needs_root()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write zeros into ``directory/filler`` until the filesystem is full; the file's path."""
    filler = directory / "filler"
    chunk = bytes(4096)
    with open(filler, "ab", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    return filler


def remount_read_only(path: Path) -> None:
    """Make the tmpfs on ``path`` read-only (EROFS to every writer from now on)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
