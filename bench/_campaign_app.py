"""Small stdlib-only programs the fault campaign (bench/campaign.py) runs in its namespaces.

    python -S bench/_campaign_app.py start --records FILE --acks FILE --pidfile FILE
        --log FILE [--interval S]
    python -S bench/_campaign_app.py stop --pidfile FILE
    python -S bench/_campaign_app.py connect --target ADDR:PORT --seconds S [--idle N]
        [--every S]
    python -S bench/_campaign_app.py flood --target ADDR:PORT --proto udp|tcp --seconds S
        [--rate N]

- ``start``: the protected application, run by the cluster's start script on
  the node that starts serving (inside that daemon's mount namespace, so it
  writes through the node's FUSE mirror). It forks a writer, writes the
  writer's PID to ``--pidfile`` (atomically) and returns 0. The writer makes
  numbered records of ``RECORD`` bytes, ``b"%08d %06x\\n" % (number, token)``
  at offset ``number * RECORD`` of ``--records``: one ``pwrite`` then one
  ``fsync`` each, then appends ``<number> <token> <node> <monotonic>`` to
  ``--acks`` (one ``write`` with ``O_APPEND``): a line there is a record the
  application was told is durable. ``token`` is random per writer, so a
  record written again by another writer never passes for this one. Its first
  number is one above the highest in ``--acks``: no acknowledged number is
  ever reused. One record every ``--interval`` seconds (start to start). A
  failed write or fsync is logged and retried every 50 ms with the same
  number (an application that keeps trying). SIGTERM ends it after the
  record in progress.
- ``stop``: the stop script. SIGTERM to the writer named by ``--pidfile``
  (only when that PID really is such a writer: a PID left by a killed node may
  have been reused), SIGKILL after 3 s, waits until it is gone, removes the
  file. A missing file is success.
- ``connect``: hostile connects, as an unprivileged user with no key: opens
  ``--idle`` TCP connections to the target at once and leaves them open and
  silent, and opens (then closes) one more every ``--every`` seconds, for
  ``--seconds``. Prints ``connects <n> refused <n>`` at the end.
- ``flood``: junk at the target for ``--seconds``: ``udp``, ``--rate``
  datagrams a second of random bytes (1 to 1400) ; ``tcp``, connections that
  send random bytes as fast as the peer takes them, reconnecting when closed.
  Prints ``sent <bytes> <messages>`` at the end.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC), which every namespace shares.
"""

from __future__ import annotations

import os
import random
import select
import signal
import socket
import sys
import time

import _lab  # the same directory: stdlib only, like this file
from _lab import _write_atomically

RECORD = 16  # b"%08d %06x\n"
RETRY_PAUSE = 0.05
STOP_GRACE = 3.0


def highest_acked(acks: str) -> int:
    """The highest record number in the acknowledgement log (-1 when none)."""
    highest = -1
    try:
        with open(acks, "rb") as handle:
            for line in handle:
                words = line.split()
                if len(words) >= 2 and words[0].isdigit():
                    highest = max(highest, int(words[0]))
    except FileNotFoundError:
        pass
    return highest


# -- the application --------------------------------------------------------------------


def start(records: str, acks: str, pidfile: str, log: str, interval: float) -> int:
    """Fork the writer (see module docstring); returns once its PID is recorded."""
    child = os.fork()
    if child:
        _write_atomically(pidfile, f"{child}\n")
        return 0
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    try:
        code = write_records(records, acks, interval)
    except BaseException as exc:  # the writer must never leave through the script's code
        print(f"writer {os.getpid()}: {exc!r}", flush=True)
        code = 1
    os._exit(code)


def write_records(records: str, acks: str, interval: float) -> int:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    node = os.environ.get("FAILOVER_NODE", "?")
    token = random.getrandbits(24)
    number = highest_acked(acks) + 1
    print(f"writer {os.getpid()} on {node}: token {token:06x}, from record {number}", flush=True)
    ack_fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fd = -1
    failures = 0
    while not stopping:
        began = time.monotonic()
        try:
            if fd < 0:
                fd = os.open(records, os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(fd, b"%08d %06x\n" % (number, token), number * RECORD)
            os.fsync(fd)
        except OSError as exc:
            failures += 1
            if failures == 1 or failures % 100 == 0:
                print(f"writer: record {number}: {exc} (failure {failures})", flush=True)
            if fd >= 0:
                try:  # noqa: SIM105 - no contextlib: the start script's start-up is timed
                    os.close(fd)
                except OSError:
                    pass
                fd = -1
            time.sleep(RETRY_PAUSE)
            continue
        os.write(ack_fd, b"%d %06x %s %.6f\n" % (number, token, node.encode(), time.monotonic()))
        number += 1
        delay = began + interval - time.monotonic()
        if delay > 0 and not stopping:
            time.sleep(delay)
    print(f"writer {os.getpid()}: stopped before record {number}", flush=True)
    return 0


def _is_writer(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return False
    return any(word.endswith(b"_campaign_app.py") for word in words) and b"start" in words


def stop(pidfile: str) -> int:
    """Stop the writer named by ``pidfile`` (see module docstring)."""
    return _lab.stop(pidfile, STOP_GRACE, _is_writer)


# -- the attacker ---------------------------------------------------------------------------


def _target(text: str) -> tuple[str, int]:
    address, port = text.rsplit(":", 1)
    return address, int(port)


def _open(target: tuple[str, int]) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        return None
    return sock


def connect(target: tuple[str, int], seconds: float, idle: int, every: float) -> int:
    end = time.monotonic() + seconds
    held: list[socket.socket] = []
    connects = refused = 0
    for _ in range(idle):
        sock = _open(target)
        connects += sock is not None
        refused += sock is None
        if sock is not None:
            held.append(sock)
        if time.monotonic() > end:
            break
    while time.monotonic() < end:
        sock = _open(target)
        if sock is None:
            refused += 1
        else:
            connects += 1
            sock.close()
        # drain what the target sends on the held connections (e.g. a hijacked link)
        readable = select.select(held, [], [], max(0.0, min(every, end - time.monotonic())))[0]
        for conn in readable:
            try:
                if not conn.recv(65536):
                    held.remove(conn)
                    conn.close()
            except OSError:
                held.remove(conn)
                conn.close()
    for sock in held:
        sock.close()
    print(f"connects {connects} refused {refused}", flush=True)
    return 0


def flood(target: tuple[str, int], proto: str, seconds: float, rate: int) -> int:
    end = time.monotonic() + seconds
    junk = random.randbytes(1 << 16)
    sent = messages = 0
    if proto == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        pause = 1.0 / rate
        while time.monotonic() < end:
            size = random.randint(1, 1400)
            start = random.randint(0, len(junk) - size)
            try:
                sent += sock.sendto(junk[start : start + size], target)
                messages += 1
            except OSError:
                pass
            time.sleep(pause)
        sock.close()
    else:
        conn: socket.socket | None = None
        while time.monotonic() < end:
            if conn is None:
                conn = _open(target)
                messages += conn is not None
                if conn is None:
                    time.sleep(0.05)
                    continue
            try:
                conn.settimeout(max(0.01, min(0.5, end - time.monotonic())))
                sent += conn.send(junk[: random.randint(1, len(junk))])
            except TimeoutError:
                continue
            except OSError:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
    print(f"sent {sent} {messages}", flush=True)
    return 0


USAGE = __doc__.split("\n\n")[1] if __doc__ else ""


def _options(argv: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    rest = iter(argv)
    for arg in rest:
        value = next(rest, None)
        if not arg.startswith("--") or value is None:
            raise ValueError(f"expected --option value, got {arg!r}")
        options[arg[2:]] = value
    return options


def main(argv: list[str]) -> int:
    try:
        command, opt = (argv[0] if argv else ""), _options(argv[1:])
        if command == "start":
            interval = float(opt.get("interval", "0.01"))
            return start(opt["records"], opt["acks"], opt["pidfile"], opt["log"], interval)
        if command == "stop":
            return stop(opt["pidfile"])
        if command == "connect":
            idle, every = int(opt.get("idle", "0")), float(opt.get("every", "0.5"))
            return connect(_target(opt["target"]), float(opt["seconds"]), idle, every)
        if command == "flood":
            if opt["proto"] not in ("udp", "tcp"):
                raise ValueError("--proto is udp or tcp")
            rate = int(opt.get("rate", "2000"))
            return flood(_target(opt["target"]), opt["proto"], float(opt["seconds"]), rate)
        raise ValueError(f"unknown command {command!r}")
    except (KeyError, ValueError) as exc:
        print(f"_campaign_app.py: {exc}\n{USAGE}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
