"""The metrics tests run real daemons with the runtime tests' in-memory network
(tests/runtime/runtime_support.py), scrape them with the control API tests'
client (tests/api/api_fakes.py) and run replication sessions with
tests/replication/channel_support.py: one copy of each, imported from there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

for helpers in ("runtime", "api", "replication"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / helpers))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
