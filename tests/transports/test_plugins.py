"""Plugin discovery: exact-name lazy loading, helpful failures, `failover plugins`,
and a third-party plugin package built, installed and checked like a user would."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from failover.cli import pluginscmd
from failover.errors import PluginNotFound
from failover.plugins import installed_plugins, installed_transports, load_transport
from failover.testing.transport_contract import install_plugin_package

PLUGIN_SOURCE = Path(__file__).parent / "plugin_pkg"
FAKE_MODULES = ("fake_broken", "fake_shapeless", "fake_good", "fake_angry")


@pytest.fixture
def fake_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution `fake-plugins` 1.2.3 on sys.path declaring four transports."""
    dist_info = tmp_path / "fake_plugins-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.2.3\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[failover.transports]\n"
        "broken = fake_broken:Transport\n"
        "shapeless = fake_shapeless:Transport\n"
        "good = fake_good:Transport\n"
        "angry = fake_angry:Transport\n"
    )
    (tmp_path / "fake_broken.py").write_text("raise ImportError('libfoo.so.1 not found')\n")
    (tmp_path / "fake_shapeless.py").write_text("class Transport:\n    name = 'shapeless'\n")
    (tmp_path / "fake_angry.py").write_text(
        "class Transport:\n    def __init__(self):\n        raise RuntimeError('no licence')\n"
    )
    (tmp_path / "fake_good.py").write_text(
        textwrap.dedent(
            """
            from pydantic import BaseModel

            class Endpoint(BaseModel):
                path: str

            class Transport:
                name = "good"
                endpoint_model = Endpoint

                async def open(self, local, remote):
                    raise NotImplementedError
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)


def test_builtins_are_listed_with_their_distribution() -> None:
    listed = installed_transports()
    for name in ("udp", "tcp", "serial"):
        assert listed[name] == ("failover", version("failover"))


def test_unknown_name_lists_the_installed_ones_and_how_to_install() -> None:
    with pytest.raises(PluginNotFound) as caught:
        load_transport("carrier-pigeon")
    message = str(caught.value)
    assert "installed: serial, tcp, tcp-replication, udp" in message
    assert "install a package providing entry point 'carrier-pigeon'" in message
    assert "failover.transports" in message


def test_names_are_exact_not_prefixes() -> None:
    with pytest.raises(PluginNotFound):
        load_transport("ud")
    with pytest.raises(PluginNotFound):
        load_transport("UDP")


def test_listing_imports_no_plugin(fake_plugins: Path) -> None:
    assert installed_transports()["good"] == ("fake-plugins", "1.2.3")
    assert not any(name in sys.modules for name in FAKE_MODULES)


def test_loading_imports_only_the_named_plugin(fake_plugins: Path) -> None:
    transport = load_transport("good")
    assert transport.name == "good"
    assert "fake_good" in sys.modules
    assert "fake_broken" not in sys.modules


def test_import_failure_is_reported_with_its_cause(fake_plugins: Path) -> None:
    with pytest.raises(PluginNotFound, match=r"failed to load: ImportError: libfoo\.so\.1"):
        load_transport("broken")


def test_object_without_the_protocol_members_is_named(fake_plugins: Path) -> None:
    with pytest.raises(PluginNotFound) as caught:
        load_transport("shapeless")
    message = str(caught.value)
    assert "missing endpoint_model" in message
    assert "open" in message
    assert "name (a str)" not in message  # it has a name


def test_constructor_failure_is_reported(fake_plugins: Path) -> None:
    with pytest.raises(PluginNotFound, match="could not be instantiated: RuntimeError: no licence"):
        load_transport("angry")


def test_plugins_command_shows_each_plugin_and_its_status(
    fake_plugins: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = pluginscmd.run(argparse.Namespace(json=False))
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert code == 1  # some plugins are broken
    assert lines["NAME"].split() == [
        "NAME",
        "KIND",
        "DISTRIBUTION",
        "VERSION",
        "OBJECT",
        "STATUS",
    ]
    assert lines["good"].split() == [
        "good",
        "heartbeat",
        "fake-plugins",
        "1.2.3",
        "fake_good:Transport",
        "ok",
    ]
    assert "failed to load: ImportError: libfoo.so.1 not found" in lines["broken"]
    assert lines["udp"].split()[1:4] == ["heartbeat", "failover", version("failover")]
    assert lines["udp"].endswith("ok")
    assert lines["tcp-replication"].split()[1] == "replication"


def test_plugins_command_succeeds_when_all_load(capsys: pytest.CaptureFixture[str]) -> None:
    assert pluginscmd.run(argparse.Namespace(json=True)) == 0
    assert '"name": "tcp"' in capsys.readouterr().out
    assert {info.name for info in installed_plugins()} >= {"udp", "tcp", "serial"}


# --- a third-party plugin package, built and installed like a user would ---


def _quiet_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **extra}


@pytest.fixture(scope="module")
def pipe_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the installed `failover-pipe-transport`; put it on PYTHONPATH."""
    target = tmp_path_factory.mktemp("pipe-plugin")
    install_plugin_package(PLUGIN_SOURCE, target)
    return target


def test_pipe_plugin_is_not_installed_in_this_process() -> None:
    # The checks below mean something only if the plugin comes from the package.
    assert "pipe" not in installed_transports()


def test_installed_plugin_appears_in_failover_plugins(pipe_plugin: Path, tmp_path: Path) -> None:
    failover = Path(sys.executable).with_name("failover")
    result = subprocess.run(
        [str(failover), "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_quiet_env(PYTHONPATH=str(pipe_plugin)),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    assert rows["pipe"] == [
        "pipe",
        "heartbeat",
        "failover-pipe-transport",
        "0.3.1",
        "failover_pipe:PipeTransport",
        "ok",
    ]


def test_installed_plugin_passes_the_conformance_suite(pipe_plugin: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(PLUGIN_SOURCE / "pyproject.toml"),
            "--rootdir",
            str(PLUGIN_SOURCE),
            str(PLUGIN_SOURCE / "tests"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the source tree: the module must come from the install
        env=_quiet_env(PYTHONPATH=str(pipe_plugin)),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert "failed" not in result.stdout
