"""A throwaway one-member etcd for the tests (tests/runtime/test_etcd_lease.py,
tests/e2e/test_e2e_etcd.py): Debian's ``etcd`` binary (package
``etcd-server``, installed by ``scripts/system-deps.sh``) on free ports of
``host``, with its own data directory, in a namespace when ``prefix`` says so
(``Lab.command(node, [])``), over TLS with client certificates when ``tls``
says so; ready when its log says so; stopped by its PID
(``kill``), paused and resumed (SIGSTOP, SIGCONT: ``pause``, ``resume``), its data
directory removed (``remove``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ETCD = shutil.which("etcd")
NO_ETCD = None if ETCD else "no etcd binary (Debian package etcd-server: scripts/system-deps.sh)"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EtcdServer:
    """One etcd member on ``host``; ``start`` waits until it is ready, ``kill`` by PID.
    Free ports are found on this namespace's loopback: give both ports with ``prefix``."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
        prefix: Sequence[str] = (),
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        assert ETCD is not None, NO_ETCD
        self.data_dir, self.host, self.prefix = data_dir, host, list(prefix)
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.tls = tls  # (certificate, its key, the CA clients' certificates must chain to)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://{host}:{self.client_port}"
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
        if self.tls is not None:
            cert, key, ca = self.tls
            argv += [f"--cert-file={cert}", f"--key-file={key}", f"--trusted-ca-file={ca}"]
            argv.append("--client-cert-auth")
        self.log = open(self.data_dir.with_suffix(".log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # a bounded poll of an external process
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited {self.proc.returncode}: see {self.log.name}")
            if self.ready():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"etcd did not answer within {timeout} s: see {self.log.name}")

    def ready(self) -> bool:
        """etcd said so in its log (read from here, whatever namespace it runs in)."""
        return b"ready to serve client requests" in self.data_dir.with_suffix(".log").read_bytes()

    def arbitrator(self, lease_ttl: int) -> dict[str, Any]:
        """The cluster file's ``cluster.arbitrator`` section for this etcd (no TLS)."""
        return {"type": "etcd", "endpoints": [self.url], "lease_ttl": lease_ttl}

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

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
