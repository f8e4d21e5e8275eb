"""``failover demo`` shows replication: run as a user would, in a temporary TMPDIR.

In namespaces (root, FUSE), the kept demo must have left both disks with the
two files it wrote, byte-identical; the write command it prints for --keep
must really replicate; --clean must leave no process, namespace, mount or
file behind. On loopback, the demo says replication is not shown there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from mirror_support import needs_fuse, temp_dir

from failover.lab import list_namespaces, netns_unavailable_reason, remove_namespaces

BOUND = 120  # seconds for one demo command: an upper bound, never an expected duration
_NETNS = netns_unavailable_reason()
F = TypeVar("F", bound=Callable[..., None])


def in_namespaces(test: F) -> F:
    """The demo's namespace mode (root, namespaces, FUSE) or skipped with the reason."""
    marks = (
        pytest.mark.netns,
        needs_fuse,
        pytest.mark.skipif(_NETNS is not None, reason=f"needs network namespaces: {_NETNS}"),
    )
    for mark in marks:
        test = mark(test)
    return test


@pytest.fixture
def tmpdir_env() -> Iterator[tuple[Path, dict[str, str]]]:
    """A short TMPDIR (the control sockets live under it) and the environment naming it."""
    with temp_dir("fodt-") as path:
        env = {**os.environ, "TMPDIR": str(path)}
        try:
            yield path, env
        finally:  # a test that failed halfway must not leave a kept cluster running
            if any(path.glob("failover-demo-*.json")):
                demo(env, "--clean")


def demo(env: dict[str, str], *args: str) -> str:
    """Run ``failover demo ARGS``; its stdout. The test fails unless it exits 0."""
    ran = subprocess.run(
        [sys.executable, "-m", "failover", "demo", *args],
        capture_output=True, text=True, timeout=BOUND, env=env, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))}


def processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


@in_namespaces
def test_kept_demo_replicated_both_files_its_write_command_replicates_and_clean_removes_all(
    tmpdir_env: tuple[Path, dict[str, str]],
) -> None:
    tmp, env = tmpdir_env
    out = demo(env, "--live-only", "--fast", "--keep")
    served = re.search(r"paired after [\d.]+ s: (\w+) serves, (\w+) is its secondary", out)
    assert served is not None, out
    first, second = served.groups()
    description = json.loads(next(tmp.glob("failover-demo-*.json")).read_text())
    workdir = Path(description["workdir"])

    # The story, in its order: the file on the peer, the takeover, the resync.
    steps = [
        f"{first} writes data/hello.txt",
        f"on {second}'s own disk, byte-identical",
        f"an application on {second} cannot write data/: Read-only file system",
        f"kill -9 of every process of {first}",
        f"{second} took over",
        f"{second}'s copy still has hello.txt, byte-identical",
        f"{second} writes data/after-takeover.txt",
        f"{first}: wait -> resync",
        f"{first}: resync -> secondary",
        f"{first}'s disk after the resync: after-takeover.txt",
        f"{second}'s resync of {first}: incremental",
        f"failover verify on {second} (by digest, over the network): both copies are identical",
    ]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p < 0]
    assert positions == sorted(positions), out

    disks = {node: tree(workdir / f"disk-{node}") for node in (first, second)}
    assert disks[first] == disks[second]
    assert sorted(disks[first]) == ["after-takeover.txt", "hello.txt"]
    assert disks[first]["hello.txt"].startswith(f"written on {first} ".encode())
    assert disks[first]["after-takeover.txt"].startswith(f"written on {second} ".encode())

    # The commands printed for --keep: a write through the serving node's (second's)
    # mirror reaches first's disk, and first's applications see it read-only.
    run_printed(out, f"# write + fsync through {second}'s mirror")
    assert (workdir / f"disk-{first}" / "note.txt").read_bytes() == b"hello\n"
    assert "note.txt" in run_printed(out, f"# {first}'s read-only view, as its applications see it")

    demo(env, "--clean")
    assert not workdir.exists()
    assert not any(tmp.glob("failover-demo-*.json"))
    assert not set(description["namespaces"]) & set(list_namespaces())
    assert processes_naming(str(workdir)) == []
    assert str(workdir) not in Path("/proc/self/mountinfo").read_text()


def run_printed(out: str, comment: str) -> str:
    """Run the shell command the demo printed with ``comment``; its stdout."""
    line = next(x for x in out.splitlines() if x.endswith(comment))
    command = line.strip().removesuffix(comment).rstrip()
    shown = subprocess.run(
        command, shell=True, check=True, timeout=30, capture_output=True, text=True
    )
    return shown.stdout


@in_namespaces
def test_sigterm_during_the_demo_cleans_up_everything(
    tmpdir_env: tuple[Path, dict[str, str]],
) -> None:
    tmp, env = tmpdir_env
    proc = subprocess.Popen(
        [sys.executable, "-m", "failover", "demo", "--live-only", "--fast"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # up to the first replicated write: daemons, mounts, files
            seen.append(line)
            if " writes data/hello.txt " in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen) + rest
    alpha = re.search(r"network namespaces (\S+)-alpha,", out)
    workdir = re.search(r"cluster file (\S+)/cluster\.yaml", out)
    assert alpha is not None and workdir is not None, out
    namespaces = [ns for ns in list_namespaces() if ns.startswith(alpha.group(1) + "-")]
    processes = processes_naming(workdir.group(1))
    files = [str(path) for path in tmp.iterdir()]
    sweep(processes, namespaces)  # what a broken demo left, by PID and name
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out and "done: nothing left behind" in out, out
    assert (namespaces, processes, files) == ([], [], [])


def sweep(pids: list[int], namespaces: list[str]) -> None:
    """Stop ``pids`` (SIGTERM: a daemon unmounts its mirror) and delete ``namespaces``
    (which kills what is left in them)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while [pid for pid in pids if Path(f"/proc/{pid}").exists()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert remove_namespaces(namespaces) == []


def test_loopback_demo_runs_without_replication_and_says_so(
    tmpdir_env: tuple[Path, dict[str, str]],
) -> None:
    out = demo(tmpdir_env[1], "--live-only", "--fast", "--loopback")
    assert "replication is shown only in the namespace mode" in out
    assert "data/hello.txt" not in out
    assert "is back as secondary" in out
