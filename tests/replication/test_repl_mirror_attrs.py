"""The read-write mirror's attribute cache never shows a stale size through another name.

libfuse's high-level API gives each name of a file its own kernel inode; the mirror lets
the kernel cache attributes only while every file it has shown has one name (mirror.py,
``_Operations``). Each test caches one name's attributes, grows the file through another
name, and reads the first name's size and content at once (well within the cache's
``ATTR_TIMEOUT_S``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mirror_support import RecordingListener, mounted, needs_fuse, temp_dir

pytestmark = needs_fuse


@pytest.fixture
def directory() -> Iterator[Path]:
    with temp_dir("fo-mirror-attrs-") as path:
        yield path


def grow_through(name: Path, size: int) -> None:
    fd = os.open(name, os.O_WRONLY)
    try:
        os.pwrite(fd, b"g" * size, 0)
    finally:
        os.close(fd)


def test_a_link_made_through_the_mirror_leaves_no_stale_size(directory: Path) -> None:
    with mounted(directory, RecordingListener()):
        first, second = directory / "a", directory / "b"
        first.write_bytes(b"x")
        assert first.stat().st_size == 1  # cached for the first name
        os.link(first, second)
        grow_through(second, 4096)
        assert first.stat().st_size == 4096
        assert first.read_bytes() == b"g" * 4096


def test_a_file_linked_before_the_mount_shows_no_stale_size(directory: Path) -> None:
    (directory / "a").write_bytes(b"x")
    os.link(directory / "a", directory / "b")  # underneath, before the mount
    with mounted(directory, RecordingListener()):
        first, second = directory / "a", directory / "b"
        assert first.stat().st_size == 1
        grow_through(second, 4096)
        assert first.stat().st_size == 4096
        assert first.read_bytes() == b"g" * 4096


def test_files_with_one_name_keep_their_sizes_right(directory: Path) -> None:
    """The cache on: changes through the file's one name update what the kernel holds."""
    with mounted(directory, RecordingListener()):
        path = directory / "a"
        path.write_bytes(b"x")
        assert path.stat().st_size == 1
        grow_through(path, 4096)
        assert path.stat().st_size == 4096
        os.truncate(path, 10)
        assert path.stat().st_size == 10
        assert path.read_bytes() == b"g" * 10
