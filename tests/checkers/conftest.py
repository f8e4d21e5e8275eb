"""Checker tests run on asyncio unless a test asks for trio's virtual clock."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
