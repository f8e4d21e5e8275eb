"""Latency of a status call through the control API, against a raw Unix-socket round trip.

    .venv/bin/python bench/status_latency.py [-n 1000] [--cli-runs 20]

Serves the fake controller of tests/api/api_fakes.py on a Unix socket (its
own event loop, in a thread, as the daemon would) and times N
``ControlClient.get_status()`` calls: each opens a connection, sends the
request, parses the JSON answer and closes, as ``failover status`` does. The
baseline, measured in the same run, is the same number of round trips to a
plain echo server on a Unix socket (connect, send the request's bytes, read
them back, close). The issue asks a status call to answer within 100 ms.
With ``--cli-runs``, also times whole ``failover state -q`` processes
(interpreter start-up included), which is what an operator's script pays.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "api"))

from api_fakes import FakeController, serving_in_thread

from failover.api.client import ControlClient

REQUEST = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: identity\r\n\r\n"
TARGET_MS = 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--calls", type=int, default=1000)
    parser.add_argument("--cli-runs", type=int, default=20, help="0 to skip")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fo-bench-"))
    try:
        api_path = str(workdir / "control.sock")
        echo_path = str(workdir / "echo.sock")
        controller = FakeController()
        for link in controller.links:  # a protected primary: `failover state` exits 0
            link["up"] = True
        with serving_in_thread(controller, unix_path=api_path), _echo_server(echo_path):
            client = ControlClient(unix_path=api_path)
            client.get_status()  # warm up both sides once
            status = _timed(client.get_status, args.calls)
            echo = _timed(lambda: _echo_round_trip(echo_path), args.calls)
            cli = _timed_cli(api_path, args.cli_runs) if args.cli_runs else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"{args.calls} calls each, same run")
    _report("status via ControlClient", status)
    _report("raw unix echo round trip", echo)
    p50_ratio = _pct(status, 50) / _pct(echo, 50)
    p99_ratio = _pct(status, 99) / _pct(echo, 99)
    print(f"ratio status/echo: p50 x{p50_ratio:.1f}, p99 x{p99_ratio:.1f}")
    if cli is not None:
        _report(f"`failover state -q` process ({len(cli)} runs)", cli)
    worst = _pct(status, 99)
    verdict = "within" if worst <= TARGET_MS / 1000 else "OVER"
    print(f"target: a status call answers within {TARGET_MS:.0f} ms -> p99 {verdict} target")
    return 0


def _timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def _timed_cli(socket_path: str, runs: int) -> list[float] | None:
    entry = "import sys; from failover.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", entry, "state", "-q", "--socket", socket_path]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        samples.append(time.perf_counter() - started)
        if done.returncode != 0:  # the fake is a protected primary: 0 is the only answer
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"cli: skipped, `failover state -q` exited {done.returncode}: {last}")
            return None
    return samples


def _echo_round_trip(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(REQUEST)
        received = 0
        while received < len(REQUEST):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("echo server closed early")
            received += len(chunk)


@contextmanager
def _echo_server(path: str) -> Iterator[None]:
    """A blocking echo server on a Unix socket, one connection at a time, in a thread."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was shut down
            with conn:
                data = b""
                while len(data) < len(REQUEST):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


def _pct(samples: list[float], percent: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def _report(label: str, samples: list[float]) -> None:
    p50, p99 = _pct(samples, 50) * 1000, _pct(samples, 99) * 1000
    print(f"{label:<44} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   max {max(samples) * 1000:8.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
