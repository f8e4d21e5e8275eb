"""The console's files ship in the wheel, as package data beside failover/api/console.py."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from failover.api.console import STATIC_DIR, load_static

ROOT = Path(__file__).parents[2]


def test_the_wheel_holds_every_console_file(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="hatchling (the dev extra) builds the wheel")
    built = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("failover-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"failover/api/console/{path.name}" for path in STATIC_DIR.iterdir()}
    assert {"failover/api/console/index.html", "failover/api/console/app.js"} <= shipped
    assert shipped <= names, sorted(shipped - names)
    assert len(load_static()) == len(shipped) + 1  # and /console/ itself
