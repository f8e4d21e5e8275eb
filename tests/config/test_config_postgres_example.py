"""examples/postgres/: the cluster file an operator copies is valid, and its commands
name the scripts shipped beside it (the e2e test runs those very scripts)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from config_support import KEY

from failover.config import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "postgres"
INSTALLED = "/etc/failover/postgres/"  # where docs/postgres.md copies the scripts


def test_the_postgres_example_passes_check_config_with_its_scripts_in_place(
    tmp_path: Path,
) -> None:
    key = tmp_path / "cluster.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    text = (EXAMPLE / "cluster.yaml").read_text()
    text = text.replace("/etc/failover/cluster.key", str(key)).replace(INSTALLED, f"{EXAMPLE}/")
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    checked = subprocess.run(
        [sys.executable, "-m", "failover", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == "", "no warning"
    config = load_config(path)
    assert config.application is not None
    for command in (config.application.start, config.application.stop):
        program = Path(shlex.split(command)[0])
        assert program.parent == EXAMPLE and os.access(program, os.X_OK), program
    assert config.application.timeout >= 60, "room for a crash restart through the mirror"
