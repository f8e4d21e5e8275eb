"""The shipped unit file (packaging/systemd/failover.service): valid for systemd, its
ExecStart the one docs/operations.md documents, its settings the ones the docs
argue for (Type=notify, the watchdog rule against the daemon's timings)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from failover.config.timing import PROFILES

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "packaging" / "systemd" / "failover.service"
DOCS = ROOT / "docs" / "operations.md"


def settings(text: str) -> dict[str, dict[str, str]]:
    """``[Section]`` -> key -> value (the unit sets each key once)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert key not in current, f"{key} set twice"
        current[key] = value
    return sections


def seconds(value: str) -> float:
    """A systemd time span of the forms this unit uses (``10s``, ``5min``)."""
    match = re.fullmatch(r"(\d+)(s|min)", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


UNIT_SETTINGS = settings(UNIT.read_text())


def test_systemd_analyze_verify_accepts_it(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    program = UNIT_SETTINGS["Service"]["ExecStart"].split()[0]
    installed = Path(sys.executable).with_name("failover")  # this environment's script
    assert installed.exists(), installed
    # verify checks that the program exists: point it at the one installed here
    copy = tmp_path / "failover.service"
    copy.write_text(UNIT.read_text().replace(f"ExecStart={program}", f"ExecStart={installed}"))
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not output, output  # (a warning is a failure too)


def test_exec_start_is_the_documented_one() -> None:
    documented = re.findall(r"^ExecStart=.*$", DOCS.read_text(), flags=re.MULTILINE)
    assert documented, "docs/operations.md shows no ExecStart="
    exec_start = "ExecStart=" + UNIT_SETTINGS["Service"]["ExecStart"]
    assert set(documented) == {exec_start}
    assert exec_start.split()[1:4] == ["run", "-c", "/etc/failover/cluster.yaml"]


def test_the_service_settings_the_docs_argue_for() -> None:
    service, unit = UNIT_SETTINGS["Service"], UNIT_SETTINGS["Unit"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2"
    assert int(unit["StartLimitBurst"]) > 1 and seconds(unit["StartLimitIntervalSec"]) > 0
    # SIGTERM to the daemon alone: it stops the application in the hand-over order
    assert service["KillMode"] == "process" and service["KillSignal"] == "SIGTERM"
    # no mount namespace (FUSE mounts must be seen by the host), no device policy
    # (/dev/fuse), no capability limit (VIP, the application's own needs)
    for key in (
        "ProtectSystem",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateNetwork",
        "CapabilityBoundingSet",
        "NoNewPrivileges",
        "DeviceAllow",
        "ProtectClock",
    ):
        assert key not in service, f"{key} breaks FUSE, the VIP or the application"


def test_watchdog_sec_follows_the_rule_against_the_daemon_timings() -> None:
    """WatchdogSec > dead_timeout + heartbeat_interval (a pause the pair tolerates is
    no restart), and 5 x the default profile's dead_timeout as documented."""
    watchdog = seconds(UNIT_SETTINGS["Service"]["WatchdogSec"])
    default = PROFILES["default"]
    assert watchdog > default.dead_timeout + default.heartbeat_interval
    assert watchdog == 5 * default.dead_timeout
    docs = DOCS.read_text()
    assert f"WatchdogSec={watchdog:g}s" in docs
