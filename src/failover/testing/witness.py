"""A witness (``failover witness run``) for the tests and the benchmarks
(tests/e2e/test_e2e_witness.py, bench/campaign.py): its file for one cluster,
started in a namespace when ``prefix`` says so (``Lab.command(member, [])``),
stopped by its PID (``kill``), paused and resumed (SIGSTOP, SIGCONT); its
state directory and log beside the file; ``holder`` reads its record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

PORT = 7420


class WitnessServer:
    """A witness for cluster ``cluster`` (key file ``key_file``) listening on
    ``host:port`` (UDP); its files under ``directory``."""

    def __init__(
        self,
        directory: Path,
        host: str,
        cluster: str,
        key_file: Path,
        *,
        port: int = PORT,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory, self.cluster, self.prefix = directory, cluster, list(prefix)
        self.address = f"{host}:{port}"
        self.env = dict(env if env is not None else os.environ)
        self.config = directory / "witness.yaml"
        self.state_dir = directory / "witness-state"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": self.address,
                    "state_dir": str(self.state_dir),
                    "clusters": [{"name": cluster, "key_file": str(key_file)}],
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def arbitrator(self, lease_ttl: float) -> dict[str, Any]:
        """The cluster file's ``cluster.arbitrator`` section for this witness."""
        return {"type": "witness", "address": self.address, "lease_ttl": lease_ttl}

    def start(self) -> None:
        """Start it (returns at once: the nodes ask again until it answers)."""
        argv = [*self.prefix, sys.executable, "-m", "failover", "witness", "run"]
        argv += ["-c", str(self.config), "--log-file", str(self.directory / "witness.log")]
        with open(self.directory / "witness.stderr", "ab") as stderr:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                env=self.env, start_new_session=True,
            )  # fmt: skip

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (a crash: its record is on disk), waited for."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGCONT)

    def holder(self) -> str | None:
        """The node its record names as holding the lease (None: nobody)."""
        record = json.loads((self.state_dir / "clusters" / f"{self.cluster}.json").read_text())
        return record["holder"]  # type: ignore[no-any-return]
