"""Fixtures for the control API tests (helpers live in api_fakes.py)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_fakes import FakeController


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def controller() -> FakeController:
    return FakeController()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for sockets (AF_UNIX paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="fo-api-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
