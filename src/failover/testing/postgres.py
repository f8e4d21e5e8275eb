"""PostgreSQL as the protected application of a lab: a cluster and a client that counts.

For the e2e test (tests/e2e/test_e2e_postgres.py) and the bench
(bench/pg_failover.py). Needs root (the server runs as the ``postgres``
account, which PostgreSQL requires: it refuses root) and Debian's PostgreSQL
(package ``postgresql``, installed by ``scripts/system-deps.sh``).

``make_cluster`` runs ``initdb`` into a data directory with settings for a lab
(every address listened on, no Unix socket, trust for TCP clients: the lab's
networks are namespaces nobody else reaches). The start and stop scripts are
the operator's, from ``examples/postgres/`` (``EXAMPLE_SCRIPTS``).

The client, ``python -m failover.testing.postgres commit HOST PORT FIRST``,
commits rows ``FIRST``, ``FIRST + 1``, ... into table ``acks``, one transaction
each, through one ``psql`` session at a time, and prints ``ID MONO`` on stdout
once PostgreSQL has acknowledged row ID (``psql`` prints the row's id, which
``INSERT ... RETURNING`` yields only after the commit returned), ``MONO`` being
``CLOCK_MONOTONIC`` then. A printed id is a commit the application was told is
durable. When the session breaks (the server died), the id in flight is
abandoned (it may or may not have committed; it is never printed) and a new
session is opened, every ``--retry-pause`` seconds (default ``RETRY_PAUSE``),
until it is terminated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from failover.testing.processes import AckedWriter, children_named

PG_USER = "postgres"
TABLE = "acks"
RETRY_PAUSE = 0.1  # seconds between two sessions of the client (a poll of a server)
CONNECT_TIMEOUT = 2  # seconds; libpq's minimum
EXAMPLE_SCRIPTS = Path(__file__).resolve().parents[3] / "examples" / "postgres"
"""pg-start and pg-stop as an operator copies them (present in a source checkout)."""

LAB_SETTINGS = {
    "listen_addresses": "'*'",
    "unix_socket_directories": "''",  # two nodes on one machine share /var/run/postgresql
    "max_connections": "20",
    "shared_buffers": "16MB",
    "synchronous_commit": "on",
    "fsync": "on",
    "full_page_writes": "on",
}


def bindir() -> Path | None:
    """Where PostgreSQL's programs are: ``$PG_BINDIR``, else Debian's newest version."""
    given = os.environ.get("PG_BINDIR")
    if given:
        return Path(given)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def unavailable_reason() -> str | None:
    """Why PostgreSQL cannot run here for a lab, or None when it can."""
    if os.geteuid() != 0:
        return "the lab runs PostgreSQL as its own account: needs root"
    where = bindir()
    if where is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    missing = [
        name for name in ("initdb", "pg_ctl", "postgres", "psql") if not (where / name).exists()
    ]
    if missing:
        return f"{where} lacks {', '.join(missing)}"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"no {PG_USER} account (created by Debian's postgresql package)"
    if shutil.which("runuser") is None:
        return "runuser (util-linux) is missing"
    return None


def psql() -> str:
    """The psql program of ``bindir()`` (not Debian's wrapper: it starts faster)."""
    where = bindir()
    assert where is not None, "PostgreSQL is not installed"
    return str(where / "psql")


def make_cluster(
    datadir: Path, *, port: int = 5432, settings: dict[str, str] | None = None
) -> None:
    """``initdb`` a new cluster in ``datadir`` (created, owned by ``postgres``, mode 0700)
    with ``LAB_SETTINGS`` and ``settings`` over them, and trust for every TCP client.
    WAL segments of 1 MiB keep the directory (and its first full resync) small."""
    where = bindir()
    assert where is not None, "PostgreSQL is not installed"
    account = pwd.getpwnam(PG_USER)
    datadir.mkdir(mode=0o700)
    os.chown(datadir, account.pw_uid, account.pw_gid)
    subprocess.run(
        ["runuser", "-u", PG_USER, "--", str(where / "initdb"), "-D", str(datadir),
         "--wal-segsize=1", "--auth=trust", "--username=postgres", "--encoding=UTF8",
         "--locale=C", "--no-instructions"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
    )  # fmt: skip
    chosen = {**LAB_SETTINGS, "port": str(port), **(settings or {})}
    with open(datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# failover lab\n")
        conf.writelines(f"{key} = {value}\n" for key, value in chosen.items())
    with open(datadir / "pg_hba.conf", "a", encoding="utf-8") as hba:
        hba.write("host all all 0.0.0.0/0 trust  # failover lab: namespaces only\n")


def server_pids(postmaster: int) -> list[int]:
    """The postmaster and its children: every process of a PostgreSQL server. (Each
    child has a process group of its own: killing the postmaster's group kills only
    the postmaster, and its backends run on until they notice.)"""
    return [postmaster, *(pid for pid, _ in children_named(postmaster, ""))]


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def postmaster_of(datadir: Path) -> int | None:
    """The pid of the server running on ``datadir``, seen from this mount namespace:
    the one its ``postmaster.pid`` names, if that process runs, is named ``postgres``
    and works in ``datadir`` (as ``examples/postgres/pg-common`` judges one); None
    when there is no such file or it names anything else (a stale pid, reused)."""
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except (OSError, ValueError, IndexError):
        return None
    return pid if name == "postgres" and cwd == datadir.resolve() and running(pid) else None


def kill_server(datadir: Path, bound: float = 30.0) -> int:
    """SIGKILL every process of the server running on ``datadir`` (``postmaster_of``;
    AssertionError, nothing signalled, when there is none), as a power loss ends them,
    and return once none runs (a zombie does not; AssertionError after ``bound`` s);
    the postmaster's pid. The postmaster is stopped first, so that it forks no child
    between the listing and the kill."""
    postmaster = postmaster_of(datadir)
    assert postmaster is not None, f"no server of {datadir} runs (postmaster.pid: stale or none)"
    os.kill(postmaster, signal.SIGSTOP)
    victims = server_pids(postmaster)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + bound
    while any(map(running, victims)):
        assert time.monotonic() < deadline, f"the server's processes {victims} outlive SIGKILL"
        time.sleep(0.01)  # a bounded poll of processes ending
    return postmaster


def session_argv(host: str, port: int) -> list[str]:
    """psql connected to ``host:port`` (no psqlrc, quiet, rows unaligned one per line,
    exits at the first error)."""
    return [psql(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", str(port),
            "-U", "postgres", "-d", "postgres"]  # fmt: skip


def committed(
    run: Callable[[list[str]], subprocess.CompletedProcess[str]], host: str, port: int
) -> set[int]:
    """The ids in table ``acks`` of the server at ``host:port``; ``run`` runs an argv
    where the server is reachable (e.g. in the lab's client namespace)."""
    done = run([*session_argv(host, port), "-c", f"SELECT id FROM {TABLE}"])
    if done.returncode != 0:
        raise AssertionError(f"cannot read {TABLE} at {host}:{port}: {done.stderr.strip()}")
    return {int(line) for line in done.stdout.split()}


class Committer(AckedWriter):
    """The client (module docstring) started with ``prefix`` (e.g. the lab's command to
    run in the client namespace); ``acked`` holds ``(id, mono)`` of every acknowledged
    commit, in order, read by a thread as the client prints them."""

    def __init__(
        self,
        prefix: Sequence[str],
        host: str,
        port: int,
        first: int = 0,
        retry_pause: float = RETRY_PAUSE,
    ) -> None:
        argv = [*prefix, sys.executable, "-m", "failover.testing.postgres", "commit",
                host, str(port), str(first), "--retry-pause", str(retry_pause)]  # fmt: skip
        super().__init__(argv)


def _commit(host: str, port: int, first: int, retry_pause: float) -> int:
    """The client's loop (module docstring). Runs until terminated."""
    number = first
    env = {**os.environ, "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT)}
    argv = session_argv(host, port)
    while True:
        session = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env,
        )  # fmt: skip
        assert session.stdin is not None and session.stdout is not None
        try:
            session.stdin.write(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY);\n")
            while True:
                session.stdin.write(f"INSERT INTO {TABLE} VALUES ({number}) RETURNING id;\n")
                session.stdin.flush()
                answer = session.stdout.readline()
                if answer.strip() != str(number):
                    break  # the session ended (server gone): this id stays unknown
                print(number, time.clock_gettime(time.CLOCK_MONOTONIC), flush=True)
                number += 1
        except BrokenPipeError:
            pass
        session.kill()
        session.wait()
        number += 1  # never reuse an id whose commit is unknown
        time.sleep(retry_pause)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m failover.testing.postgres")
    sub = parser.add_subparsers(dest="command", required=True)
    commit = sub.add_parser("commit", help="commit numbered rows, print each acknowledged id")
    commit.add_argument("host")
    commit.add_argument("port", type=int)
    commit.add_argument("first", type=int)
    commit.add_argument("--retry-pause", type=float, default=RETRY_PAUSE, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        return _commit(args.host, args.port, args.first, args.retry_pause)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
