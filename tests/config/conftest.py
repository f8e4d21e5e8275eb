"""Fixtures for the configuration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_support import BASE, KEY, WriteConfig


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a config (BASE by default) beside a valid key file (0600) and a short one."""
    key = tmp_path / "cluster.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    short = tmp_path / "short.key"
    short.write_bytes(b"0123456789")
    short.chmod(0o600)

    def write(text: str = BASE, name: str = "cluster.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
