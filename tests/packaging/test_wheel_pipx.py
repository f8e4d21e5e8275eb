"""The built wheel holds what the code reads at run time, and installs with pipx.

The wheel is built from this tree (``pip wheel --no-deps --no-build-isolation``:
hatchling is in the dev extra, nothing is fetched to build). Its file list must
hold every file of the source packages that is not Python (the core's table, the
scenarios, the console's assets...), every resource the code opens through
``importlib.resources``, and the entry points of pyproject.toml.

Then ``pipx install`` of that wheel, a real one (its dependencies come from the
package index, as an operator's would), into a PIPX_HOME and PIPX_BIN_DIR of the
test's own, without this tree on PYTHONPATH. pip is told not to byte-compile
what it installs (``--no-compile``: Python compiles each module at its first
import instead), which takes pip's install step from about 12 s to 3 s on a loaded
machine (2 cores, load 10); nothing else differs from an operator's install.
The installed command answers ``--version`` and ``init --help``, and writes a
cluster file that its own ``check-config`` loads (the transports are found
through the installed entry points).
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"failover": ROOT / "src" / "failover",
            "failover_transports": ROOT / "transports" / "failover_transports"}  # fmt: skip
RESOURCE_CALL = re.compile(r"resources\.files\(\"(\w+)\"\)\.joinpath\(([^)]*)\)")
INSTALL_TIMEOUT = 600  # seconds: a pipx install fetching every dependency on a slow link


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(out), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("failover-*.whl")
    return built


def package_data() -> set[str]:
    """The wheel paths of every non-Python file of the source packages."""
    found = set()
    for name, source in PACKAGES.items():
        for path in source.rglob("*"):  # follows src/failover/spec -> ../../spec
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py":
                found.add(f"{name}/{path.relative_to(source).as_posix()}")
    return found


def resources_opened() -> set[str]:
    """The wheel paths the code opens with ``resources.files(PKG).joinpath(...)``."""
    found = set()
    for source in PACKAGES.values():
        for module in source.rglob("*.py"):
            for package, args in RESOURCE_CALL.findall(module.read_text("utf-8")):
                parts = re.findall(r"\"([^\"]+)\"", args)
                found.add("/".join([package, *parts]))
    return found


def test_the_wheel_holds_what_the_code_reads_at_run_time(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        parser = configparser.ConfigParser()
        parser.read_string(archive.read(entry_points).decode())
    opened = resources_opened()
    assert {
        "failover/spec/transitions.yaml",
        "failover/spec/scenarios/primary-crash.yaml",
    } <= opened
    assert sorted(opened - names) == []
    assert sorted(package_data() - names) == []
    console = PACKAGES["failover"] / "api" / "console"
    if console.is_dir():  # the web console's assets (HTML, CSS, JS), when they exist
        assert any(name.startswith("failover/api/console/") for name in names)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = {"console_scripts": project["scripts"], **project["entry-points"]}
    shipped = {group: dict(parser[group]) for group in parser.sections()}
    assert shipped == expected


@pytest.mark.slow
def test_the_wheel_installs_with_pipx_and_runs(wheel: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env |= {"PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin"),
            "PIPX_MAN_DIR": str(tmp_path / "man")}  # fmt: skip
    installed = subprocess.run(
        [sys.executable, "-m", "pipx", "install", "--pip-args=--no-compile", str(wheel)],
        env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    command = tmp_path / "bin" / "failover"

    def failover(*args: str) -> str:
        result = subprocess.run(
            [str(command), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"failover {' '.join(args)}: {result.stderr}"
        return result.stdout

    version = wheel.name.split("-")[1]
    assert failover("--version") == f"failover {version}\n"
    assert "--vip-interface" in failover("init", "--help")
    where = subprocess.run(
        [str(tmp_path / "pipx" / "venvs" / "failover" / "bin" / "python"), "-c",
         "import failover, failover_transports; print(failover.__file__)"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(tmp_path / "pipx")), where
    config = tmp_path / "etc" / "cluster.yaml"
    failover("init", "--non-interactive", "-o", str(config), "--cluster", "shop",
             "--node", "alpha=10.20.0.1", "--node", "beta=10.20.0.2")  # fmt: skip
    assert f"{config}: ok" in failover("check-config", str(config))
