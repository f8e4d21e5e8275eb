"""Small stdlib-only programs the failover detection bench runs inside its namespaces.

    python -S bench/_lab.py listen --address VIP --port P --pidfile FILE
    python -S bench/_lab.py stop --pidfile FILE
    python -S bench/_lab.py notify --address VIP --port P --pidfile FILE --state-file F \\
        TYPE NAME STATE [PRIORITY]
    python -S bench/_lab.py probe --address VIP --port P [--interval 0.005] [--timeout 0.02]

They stand in for the protected application and for a client of it, for both
failover and keepalived, so that both systems pay exactly the same costs:

- ``listen``: the application. Binds a TCP listener to the virtual IP
  (``IP_FREEBIND``: the address need not be on the interface yet), forks a
  child that accepts and closes connections forever, writes the child's PID
  to ``--pidfile`` (atomically) and returns 0 once the socket is listening.
  A ``{node}`` in ``--pidfile`` is replaced by ``$FAILOVER_NODE`` (the daemon
  runs the same command on both nodes).
- ``stop``: kills the PID in ``--pidfile`` (SIGTERM, then SIGKILL after 1 s),
  waits until it is gone and removes the file. A missing file is success
  (nothing runs).
- ``notify``: keepalived's ``notify`` script: records STATE in
  ``--state-file``; MASTER starts the listener, any other state stops it.
- ``probe``: the client. Connects to ADDRESS:PORT every ``--interval``
  seconds (start to start), each attempt bounded by ``--timeout``. Prints
  ``ready`` after its first successful connect; then waits for a line
  ``GATE <t>`` on stdin (a CLOCK_MONOTONIC time) and prints ``ok <t_connected>
  <attempts>`` for the first successful connect whose attempt started at or
  after ``t``, and exits 0. ``timeout`` (exit 1) when nothing succeeds within
  ``--limit`` seconds of the gate, or of the start while not yet ready.
  Times are ``time.monotonic()`` (CLOCK_MONOTONIC), which every network
  namespace shares, so the bench compares them with its own.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable  # already loaded by socket: free

IP_FREEBIND = 15  # <linux/in.h>; not exported by the socket module


def _pidfile(template: str) -> str:
    return template.replace("{node}", os.environ.get("FAILOVER_NODE", "node"))


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(text)
    os.replace(tmp, path)


def listen(address: str, port: int, pidfile: str) -> int:
    """Start the stand-in application; returns once it listens (see module docstring)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    sock.bind((address, port))
    sock.listen(512)
    child = os.fork()
    if child:
        _write_atomically(pidfile, f"{child}\n")
        return 0
    # The child is the application: detached from the script's session and from
    # its output file, it only accepts and closes.
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        try:
            conn, _ = sock.accept()
        except InterruptedError:
            continue
        conn.close()


def stop(pidfile: str, grace: float = 1.0, owned: Callable[[int], bool] | None = None) -> int:
    """Stop the process named by ``pidfile``: SIGTERM, SIGKILL after ``grace`` s, then
    wait until it is gone, and remove the file. A missing or unreadable file is success
    (nothing runs); so is a PID that ``owned`` says is not the application's (a PID
    left by a killed node may have been reused)."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
    except FileNotFoundError:
        return 0
    except ValueError:
        pid = 0
    if pid > 0 and (owned is None or owned(pid)):
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.01)
        except ProcessLookupError:
            pass
    try:  # noqa: SIM105 - not contextlib: every import here delays a takeover
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    return 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def notify(state: str, state_file: str, address: str, port: int, pidfile: str) -> int:
    """keepalived's notify: record ``state``; MASTER starts the application, others stop it."""
    _write_atomically(state_file, f"{state}\n")
    if state == "MASTER":
        return listen(address, port, pidfile)
    return stop(pidfile)


def _connect_once(address: str, port: int, timeout: float) -> float | None:
    """One non-blocking connect; the monotonic time it completed, or None on failure."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Close with a RST: thousands of probes must not fill TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.setblocking(False)
        err = sock.connect_ex((address, port))
        if err not in (0, 115):  # EINPROGRESS
            return None
        if err == 115:
            _, writable, _ = select.select([], [sock], [], timeout)
            if not writable:
                return None
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                return None
        return time.monotonic()
    finally:
        sock.close()


def probe(address: str, port: int, interval: float, timeout: float, limit: float) -> int:
    """The client (see module docstring). Returns the exit code."""
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    pending = b""
    ready = False
    gate: float | None = None
    attempts = 0
    since = time.monotonic()
    while True:
        started = time.monotonic()
        connected = _connect_once(address, port, timeout)
        if gate is not None and started >= gate:
            attempts += 1
            if connected is not None:
                print(f"ok {connected:.6f} {attempts}", flush=True)
                return 0
        if connected is not None and not ready:
            ready = True
            print("ready", flush=True)
        if select.select([stdin], [], [], 0)[0]:
            chunk = os.read(stdin, 4096)
            if not chunk:
                return 1  # the bench went away
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                words = line.split()
                if len(words) == 2 and words[0] == b"GATE":
                    gate = float(words[1])
                    since = gate
        if time.monotonic() - since > limit:
            print("timeout", flush=True)
            return 1
        delay = started + interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)


USAGE = """usage: _lab.py listen --address A --port P --pidfile F
       _lab.py stop --pidfile F
       _lab.py notify --address A --port P --pidfile F --state-file S TYPE NAME STATE [PRIO]
       _lab.py probe --address A --port P [--interval S] [--timeout S] [--limit S]"""

_REQUIRED = {
    "listen": ("address", "port", "pidfile"),
    "stop": ("pidfile",),
    "notify": ("address", "port", "pidfile", "state-file"),
    "probe": ("address", "port"),
}


def _parse(argv: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """(command, --options, other words). No argparse: it alone costs ~10 ms of start-up,
    which every takeover would pay (the start script and keepalived's notify run this)."""
    if not argv or argv[0] not in _REQUIRED:
        raise ValueError("unknown command")
    options: dict[str, str] = {}
    words: list[str] = []
    rest = iter(argv[1:])
    for arg in rest:
        if arg.startswith("--"):
            value = next(rest, None)
            if value is None:
                raise ValueError(f"{arg} needs a value")
            options[arg[2:]] = value
        else:
            words.append(arg)
    missing = [f"--{name}" for name in _REQUIRED[argv[0]] if name not in options]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return argv[0], options, words


def main(argv: list[str]) -> int:
    try:
        command, opt, words = _parse(argv)
        if command == "stop":
            return stop(_pidfile(opt["pidfile"]))
        address, port = opt["address"], int(opt["port"])
        if command == "listen":
            return listen(address, port, _pidfile(opt["pidfile"]))
        if command == "notify":
            if len(words) < 3:
                raise ValueError("notify needs TYPE NAME STATE")
            return notify(words[2], opt["state-file"], address, port, opt["pidfile"])
        interval = float(opt.get("interval", "0.005"))
        timeout = float(opt.get("timeout", "0.02"))
        return probe(address, port, interval, timeout, float(opt.get("limit", "60")))
    except ValueError as exc:
        print(f"_lab.py: {exc}\n{USAGE}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
