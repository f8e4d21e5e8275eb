"""A throwaway single-member etcd for tests: started on free loopback ports (or
through a prefix such as ``ip netns exec NS``) with its own data directory,
stopped by its PID, its data directory removed."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ETCD = shutil.which("etcd")
NO_ETCD = None if ETCD else "no etcd binary (Debian package etcd-server: scripts/system-deps.sh)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdServer:
    """One etcd member on ``host``; ``start`` waits until it answers, ``kill`` by PID."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        *,
        client_port: int | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        assert ETCD is not None, NO_ETCD
        self.data_dir, self.host, self.prefix = data_dir, host, list(prefix)
        self.client_port = client_port or free_port(host)
        self.peer_port = free_port(host)
        self.url = f"http://{host}:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        peer = f"http://{self.host}:{self.peer_port}"
        argv = [
            *self.prefix,
            str(ETCD),
            "--name=t",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=t={peer}",
        ]
        self.log = open(self.data_dir.with_suffix(".log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a bounded poll of an external process
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited {self.proc.returncode}: see {self.log.name}")
            if self.healthy():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"etcd did not answer within {timeout} s: see {self.log.name}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as answer:
                return bool(json.load(answer).get("health") == "true")
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        if getattr(self, "log", None) is not None:
            self.log.close()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
