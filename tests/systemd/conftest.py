"""The systemd tests run on asyncio, with the runtime tests' helpers importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))  # runtime_support


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
