"""A file written by ``failover init`` runs a pair as it is: two daemons on this
machine (alpha on 127.0.13.1, beta on 127.0.13.2, the file's own ports) pair,
one serves protected and the other follows it, and a swap asked on the serving
node moves the service, as docs/quickstart.md shows. Only ``state_dir`` is
changed, to the test's own directory (the default is /var/lib/failover).

The states are read through the daemons' control sockets (``failover state``,
in-process), polled with a bound; the daemons are stopped with SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.cli import main

NODES = {"alpha": "127.0.13.1", "beta": "127.0.13.2"}
SERVING_PROTECTED, SECONDARY = 0, 3  # failover state's exit codes (docs/api.md)
PAIR_WITHIN = 60.0  # seconds: startup (2 s), pairing, a swap; far more under load


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    code = main(["init", "--non-interactive", "-o", str(path), "--cluster", "pair",
                 *(f"--node={name}={address}" for name, address in NODES.items())])  # fmt: skip
    assert code == 0
    text = path.read_text()
    assert text.count("state_dir: /var/lib/failover\n") == 1
    path.write_text(text.replace("/var/lib/failover", str(tmp_path / "state")))
    return path


@pytest.fixture
def pair(config: Path, tmp_path: Path) -> Iterator[Path]:
    daemons = []
    try:
        for node in NODES:
            with (tmp_path / f"{node}.log").open("wb") as log:
                command = [sys.executable, "-m", "failover", "run", "-c", str(config)]
                daemons.append(subprocess.Popen([*command, "--node", node], stdout=log, stderr=log))
        yield config
    finally:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def state(config: Path, node: str) -> int:
    return main(["state", "-q", "-c", str(config), "--node", node, "--timeout", "2"])


def await_states(config: Path, expected: dict[str, int], deadline: float) -> None:
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        seen = {node: state(config, node) for node in expected}
        if seen == expected:
            return
        time.sleep(0.2)  # a bounded poll of two other processes
    pytest.fail(f"states (failover state exit codes) {seen}, expected {expected}")


def test_the_file_init_writes_runs_a_pair_that_swaps(pair: Path, tmp_path: Path) -> None:
    deadline = time.monotonic() + PAIR_WITHIN
    # first start, same (no) data on both: the lower name serves
    await_states(pair, {"alpha": SERVING_PROTECTED, "beta": SECONDARY}, deadline)
    assert main(["swap", "-c", str(pair), "--node", "alpha"]) == 0
    await_states(pair, {"alpha": SECONDARY, "beta": SERVING_PROTECTED}, deadline)
