"""bench/_needs.py: a benchmark on a fresh machine installs what it needs from Debian
(apt-get update, then apt-get install -y) when root, or says in one line what is
missing and exits 2.

Every test runs with a fake PATH (a temporary directory) and no sbin directories:
the apt-get it may call is a fake one that records its arguments, never the real one.
"""

from __future__ import annotations

import ast
import importlib.util
import stat
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_needs", BENCH / "_needs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


needs = _load()


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH of one empty directory, no sbin fallback."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(needs, "SBIN", ())
    return bin_dir


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _fake_apt(bin_dir: Path, log: Path, *, provides: str | None, status: int = 0) -> None:
    """An apt-get that logs each call; ``install`` creates the command ``provides``."""
    create = f'touch "{bin_dir}/{provides}"; chmod +x "{bin_dir}/{provides}"' if provides else ":"
    _executable(
        bin_dir / "apt-get",
        "#!/bin/sh\n"
        "PATH=/usr/bin:/bin\n"  # the fake PATH has no touch
        f'echo "$*" >> "{log}"\n'
        f'if [ "$1" = install ]; then {create}; echo "E: Unable to locate package" >&2; fi\n'
        f'[ "$1" = install ] && exit {status}\n'
        "exit 0\n",
    )


def _exit_line(
    capsys: pytest.CaptureFixture[str],
    excinfo: pytest.ExceptionInfo[SystemExit],
    *,
    installing: str | None = None,
) -> str:
    """The one line of a script that cannot run (after the line announcing an
    install, when it tried one)."""
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    if installing is not None:
        assert lines[:1] == [installing], err
        lines = lines[1:]
    assert len(lines) == 1, err
    return lines[0]


def test_a_missing_command_without_root_exits_2_with_one_line(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(needs.os, "geteuid", lambda: 1000)
    log = fake_path.parent / "apt.log"
    _fake_apt(fake_path, log, provides="keepalived")
    with pytest.raises(SystemExit) as excinfo:
        needs.ensure("failover_detect.py", [needs.Need("keepalived", command="keepalived")])
    line = _exit_line(capsys, excinfo)
    assert line.startswith("failover_detect.py: cannot run: missing keepalived")
    assert "apt-get update && apt-get install -y keepalived" in line
    assert not log.exists()  # not root: nothing installed


def test_root_refreshes_the_lists_then_installs_what_is_missing(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(needs.os, "geteuid", lambda: 0)
    log = fake_path.parent / "apt.log"
    _fake_apt(fake_path, log, provides="keepalived")
    _executable(fake_path / "ip", "#!/bin/sh\n")
    wanted = [needs.Need("keepalived", command="keepalived"), needs.IP]
    needs.ensure("failover_detect.py", wanted, root="network namespaces")
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq keepalived"]
    assert "installing keepalived (Debian: keepalived)" in capsys.readouterr().err


def test_nothing_missing_calls_no_apt_get(fake_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(needs.os, "geteuid", lambda: 0)
    log = fake_path.parent / "apt.log"
    _fake_apt(fake_path, log, provides=None)
    needs.ensure("x.py", [needs.Need("apt", command="apt-get")])
    assert not log.exists()


def test_a_failed_install_exits_2_with_one_line(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(needs.os, "geteuid", lambda: 0)
    log = fake_path.parent / "apt.log"
    _fake_apt(fake_path, log, provides=None, status=100)
    with pytest.raises(SystemExit) as excinfo:
        needs.ensure("resync.py", [needs.Need("rsync", command="rsync")])
    line = _exit_line(capsys, excinfo, installing="resync.py: installing rsync (Debian: rsync)")
    assert line == (
        "resync.py: cannot run: apt-get install -y -qq rsync exited 100: "
        "E: Unable to locate package"
    )
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq rsync"]


def test_an_install_that_does_not_provide_the_command_exits_2(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(needs.os, "geteuid", lambda: 0)
    _fake_apt(fake_path, fake_path.parent / "apt.log", provides="other")
    with pytest.raises(SystemExit) as excinfo:
        needs.ensure("x.py", [needs.Need("pkg", command="tool")])
    line = _exit_line(capsys, excinfo, installing="x.py: installing tool (Debian: pkg)")
    assert line == "x.py: cannot run: still missing after apt-get install: tool (Debian: pkg)"


def test_root_without_apt_get_exits_2_with_one_line(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(needs.os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit) as excinfo:
        needs.ensure("x.py", [needs.Need("fuse3", command="fusermount3")])
    line = _exit_line(capsys, excinfo)
    assert (
        line
        == "x.py: cannot run: missing fusermount3 (Debian: fuse3), and no apt-get to install it"
    )


def test_root_needed_but_not_root_exits_2_with_one_line(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(needs.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as excinfo:
        needs.ensure("pause.py", [needs.IP], root="network namespaces")
    assert _exit_line(capsys, excinfo) == "pause.py: cannot run: needs root (network namespaces)"


def test_a_file_need_is_found_by_glob(tmp_path: Path) -> None:
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "initdb").touch()
    assert needs.Need("postgresql", path=str(tmp_path / "*" / "bin" / "initdb")).present()
    assert not needs.Need("postgresql", path=str(tmp_path / "*" / "bin" / "pg_ctl")).present()


def test_require_fails_with_the_reason_or_passes(capsys: pytest.CaptureFixture[str]) -> None:
    needs.require("x.py", None)
    with pytest.raises(SystemExit) as excinfo:
        needs.require("x.py", "no usable /dev/fuse")
    assert _exit_line(capsys, excinfo) == "x.py: cannot run: no usable /dev/fuse"


def _calls_ensure(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ensure"
        for node in ast.walk(tree)
    )


# Scripts that need nothing from Debian (nor root): pure Python over loopback or a disk.
NEEDS_NOTHING = {
    "status_latency.py",
    "wire_fuzz.py",
    "tracking_overhead.py",
    "replication_channel.py",
    "replication_probe_idle.py",
    "codec.py",
}


@pytest.mark.parametrize(
    "script",
    sorted(
        p.name
        for p in BENCH.glob("*.py")
        if not p.name.startswith("_") and p.name not in NEEDS_NOTHING
    ),
)
def test_every_script_that_needs_something_calls_ensure(script: str) -> None:
    assert _calls_ensure(BENCH / script)
