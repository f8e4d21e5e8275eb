"""A real application: PostgreSQL on the replicated directory, a client committing
through the virtual IP, every process of the serving node killed twice, then two swaps.

The invariant (DESIGN.md S3, for a database): every transaction PostgreSQL
acknowledged to its client (through the virtual IP, whichever node served it)
is in the table of the node that serves next, after PostgreSQL's crash
recovery there. And the pair heals: the killed node returns, is resynchronised
to `secondary`, and `swap` moves the service to the peer and back to the node it
started on, with the data intact.

The application is PostgreSQL from Debian started and stopped by the
operator's scripts of ``examples/postgres/`` (``failover.testing.postgres``
builds the cluster and runs the client). ``FAILOVER_E2E_PG_SYNCHRONOUS_COMMIT=off``
runs the same test with PostgreSQL acknowledging commits before its WAL is
flushed: the test must then fail, reporting the lost commits (the harness can
see a loss; docs/postgres.md).

Smaller tests hold the scripts (and the harness's ``kill_server``) to what they
promise: where a pid file in the data directory names a live process that is not
this node's server (the peer's server's pid, reused here), pg-start still starts
and pg-stop (and kill_server) signal nothing; where the postmaster alone was
killed and a busy backend runs on, pg-stop ends it so that pg-start can start;
where the server answers neither shutdown, pg-stop kills it.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_support import NETNS, Cluster, cli

from failover.audit import Ack
from failover.lab import Lab, mount_namespace_pids
from failover.testing.postgres import (
    EXAMPLE_SCRIPTS,
    PG_USER,
    Committer,
    committed,
    kill_server,
    make_cluster,
    postmaster_of,
    running,
    server_pids,
    session_argv,
    unavailable_reason,
)

_NO_PG = unavailable_reason()
pytestmark = [
    *NETNS,
    pytest.mark.skipif(_NO_PG is not None, reason=f"needs PostgreSQL: {_NO_PG}"),
]

LINKS = {"lan": "udp", "crossover": "tcp"}
PORT = 5432
BOUND = 90.0  # seconds: PostgreSQL's start after a crash fsyncs every file through the mirror
SYNCHRONOUS_COMMIT = os.environ.get("FAILOVER_E2E_PG_SYNCHRONOUS_COMMIT", "on")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the ``postgres`` account can traverse (pytest's own is root's, 0700);
    removed at the end (requested before ``lab``: torn down after the lab's processes),
    after killing any server a test started here on the host and left running."""
    path = Path(tempfile.mkdtemp(prefix="failover-pg-"))
    path.chmod(0o711)
    yield path
    for pid_file in path.rglob("postmaster.pid"):
        if postmaster_of(pid_file.parent) is not None:
            kill_server(pid_file.parent)
    shutil.rmtree(path, ignore_errors=True)


def postgres_cluster(lab: Lab, workdir: Path) -> Cluster:
    """A replicating pair whose application is PostgreSQL on ``data/pg`` (the data
    directory made on alpha's disk only: alpha serves it first, beta gets it by resync)."""
    cluster = Cluster(lab, workdir, LINKS, replicate="lan", vip_network="lan")
    logs = workdir / "pg-logs"
    logs.mkdir()
    shutil.chown(logs, PG_USER)
    document = yaml.safe_load(cluster.config_path.read_text())
    datadir = cluster.data / "pg"
    document["application"] = {
        "start": f"{EXAMPLE_SCRIPTS / 'pg-start'} {datadir} {logs / 'postgresql.log'}",
        "stop": f"{EXAMPLE_SCRIPTS / 'pg-stop'} {datadir}",
        "timeout": 60,
    }
    cluster.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    checked = cli("check-config", str(cluster.config_path))
    assert checked.returncode == 0, checked.stderr
    make_cluster(
        cluster.disk("alpha") / "pg",
        port=PORT,
        settings={"synchronous_commit": SYNCHRONOUS_COMMIT},
    )
    return cluster


def serves_alone(cluster: Cluster, node: str) -> bool:
    return cluster.state(node) == "alone"


def test_no_acknowledged_commit_is_lost_when_the_serving_node_is_killed_twice_then_swapped(
    workdir: Path, lab: Lab
) -> None:
    cluster = postgres_cluster(lab, workdir)
    assert cluster.vip is not None
    cluster.start_both()
    serving, standby = cluster.paired(BOUND)
    assert serving == "alpha", "the data directory was made on alpha only"
    client = Committer(lab.command("client", []), cluster.vip, PORT)

    def in_table() -> set[int]:
        return committed(
            lambda argv: lab.exec("client", argv, check=False, timeout=30), cluster.vip, PORT
        )

    def commits_flow(more: int, what: str) -> None:
        wanted = len(client.acked) + more
        cluster.wait(what, lambda: client.wait_for(wanted, 0.2), bound=BOUND)

    def lost(seen: list[int]) -> list[int]:
        table = in_table()
        return [number for number in seen if number not in table]

    try:
        commits_flow(50, f"50 commits through the virtual IP on {serving}")
        for kill in (1, 2):
            postmaster = int(
                (cluster.disk(serving) / "pg" / "postmaster.pid").read_text().split()[0]
            )
            node_pids = mount_namespace_pids(cluster.procs[serving].pid)
            assert postmaster in node_pids, f"PostgreSQL runs on {serving}"
            cluster.kill_node(serving)  # the daemon, its FUSE helpers and PostgreSQL
            seen = client.ids()  # every commit acknowledged before the kill
            cluster.wait(
                f"kill {kill}: {standby} serves",
                functools.partial(serves_alone, cluster, standby),
                bound=BOUND,
            )
            commits_flow(20, f"kill {kill}: PostgreSQL recovered on {standby}, commits flow")
            missing = lost(seen)
            assert not missing, (
                f"kill {kill} of {serving}: {len(missing)} of {len(seen)} acknowledged "
                f"commits are not in the table on {standby} (first {missing[:10]})"
            )
            print(f"kill {kill} of {serving}: {len(seen)} acknowledged, all on {standby}")
            cluster.start(serving)
            assert cluster.paired(BOUND) == (standby, serving), (
                "the killed node resyncs to secondary"
            )
            shown = cluster.status(standby)
            assert shown is not None and shown["replication"]["resync"]["full"] is False
            commits_flow(20, f"kill {kill}: commits flow on {standby}, protected again")
            serving, standby = standby, serving
        # after the second kill alpha serves again: swap to beta, then back to alpha
        for swap in (1, 2):
            swapped = cli("swap", "--socket", str(cluster.socket(serving)))
            assert swapped.returncode == 0, swapped.stdout + swapped.stderr
            assert cluster.paired(BOUND) == (standby, serving)
            seen = client.ids()
            commits_flow(20, f"swap {swap}: commits flow on {standby}")
            missing = lost(seen)
            assert not missing, f"swap {swap}: {len(missing)} acknowledged commits not on {standby}"
            serving, standby = standby, serving
        assert serving == "alpha", "the service is back on the node it started on"
    finally:
        acked = client.stop()
    # every acknowledged commit, the last ones too, is on the node that serves
    table = in_table()
    missing = [number for number, _ in acked if number not in table]
    assert not missing, f"{len(missing)} acknowledged commits not on {serving}: {missing[:10]}"
    print(f"{len(acked)} commits acknowledged in all, every one on {serving}")
    log = (workdir / "pg-logs" / "postgresql.log").read_text()
    assert log.count("automatic recovery in progress") == 2, "a crash recovery at each kill"
    # the audit at the end checks S3 on the journals too: every commit acknowledged
    # before a start of service of the node serving now is in its table
    cluster.acked = [Ack(number, mono) for number, mono in acked]
    cluster.found = {serving: table}


# -- the operator's scripts on one machine: a pid file that is not this node's server --


def started_server(workdir: Path) -> tuple[Path, int]:
    """A data directory and its server, started by pg-start; (data directory, port).
    It listens on loopback only, on a port free a moment ago."""
    datadir = workdir / "pg"
    logs = workdir / "pg-logs"
    logs.mkdir()
    shutil.chown(logs, PG_USER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_cluster(datadir, port=port, settings={"listen_addresses": "'127.0.0.1'"})
    run_script("pg-start", datadir, logs / "postgresql.log")
    return datadir, port


def crashed_server(workdir: Path) -> Path:
    """A data directory whose server was started by pg-start then had every process
    killed: its postmaster.pid stays behind."""
    datadir, _ = started_server(workdir)
    kill_server(datadir)
    return datadir


def run_script(name: str, *args: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(EXAMPLE_SCRIPTS / name), *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
    return done


def name_in_pid_file(datadir: Path, pid: int) -> None:
    """Make postmaster.pid name ``pid``: as after the peer's crash, when its server's pid
    is, on this node, another process (or a zombie not reaped yet)."""
    pid_file = datadir / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    pid_file.write_text("\n".join([str(pid), *lines[1:]]) + "\n")


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of the ``postgres`` account that is not PostgreSQL (the server
    would take it for a live postmaster, and pg_ctl could signal it), killed at the end."""
    process = subprocess.Popen(["sleep", "300"], user=PG_USER)
    yield process
    process.kill()
    process.wait()


def test_pg_start_starts_over_a_pid_file_that_names_another_live_process(
    workdir: Path, bystander: subprocess.Popen[bytes]
) -> None:
    datadir = crashed_server(workdir)
    name_in_pid_file(datadir, bystander.pid)
    try:
        started = run_script("pg-start", datadir, workdir / "pg-logs" / "postgresql.log")
        assert "removing the stale" in started.stdout
        assert postmaster_of(datadir) is not None, "pg-start started the server"
        assert bystander.poll() is None, "pg-start left the other process alone"
    finally:
        run_script("pg-stop", datadir)
    assert not (datadir / "postmaster.pid").exists(), "pg-stop stopped the server"


def test_pg_stop_never_signals_a_process_that_is_not_this_nodes_server(
    workdir: Path, bystander: subprocess.Popen[bytes]
) -> None:
    datadir = crashed_server(workdir)
    name_in_pid_file(datadir, bystander.pid)
    stopped = run_script("pg-stop", datadir)
    assert "no PostgreSQL server of this node" in stopped.stdout
    assert bystander.poll() is None, "pg-stop signalled a process it does not own"


def test_kill_server_never_signals_a_postgres_process_working_elsewhere(workdir: Path) -> None:
    """``kill_server`` (the harness's power loss of a server) acts on the pid in
    ``postmaster.pid`` only when it names the server of that data directory: a stale
    file's pid, now a process named ``postgres`` that works in another directory (a
    server of another cluster), is refused and left running."""
    datadir = crashed_server(workdir)
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "postgres").symlink_to(shutil.which("sleep") or "/bin/sleep")
    other = subprocess.Popen([str(elsewhere / "postgres"), "300"], cwd=elsewhere)
    try:
        name_in_pid_file(datadir, other.pid)
        assert Path(f"/proc/{other.pid}/comm").read_text().strip() == "postgres"
        with pytest.raises(AssertionError, match="no server of"):
            kill_server(datadir)
        assert other.poll() is None, "kill_server signalled a process that is not the server"
    finally:
        other.kill()
        other.wait()


def test_pg_stop_ends_what_a_killed_postmaster_left_running(workdir: Path) -> None:
    """The postmaster alone is killed (SIGKILL) while a backend runs a long query:
    the backend runs on, holding the server's shared memory, and a start would be
    refused. pg-stop kills it, and pg-start then starts."""
    datadir, port = started_server(workdir)
    postmaster = postmaster_of(datadir)
    assert postmaster is not None
    query = "SELECT count(*) FROM generate_series(1, 100000000000::bigint)"
    client = subprocess.Popen(
        [*session_argv("127.0.0.1", port), "-c", query],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    backends: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not (backends := [p for p in server_pids(postmaster)[1:] if runs_query(p)]):
            assert time.monotonic() < deadline, "the query never ran"
            time.sleep(0.02)  # a bounded poll of the server's processes
        os.kill(postmaster, signal.SIGKILL)
        stopped = run_script("pg-stop", datadir)
        assert not any(map(running, backends)), "pg-stop killed the busy backend"
        run_script("pg-start", datadir, workdir / "pg-logs" / "postgresql.log")
        assert "processes of a dead server remain" in stopped.stdout
    finally:
        client.kill()
        client.wait()
        for backend in filter(running, backends):  # the test failed: leave nothing
            os.kill(backend, signal.SIGKILL)
        subprocess.run([str(EXAMPLE_SCRIPTS / "pg-stop"), str(datadir)], check=False)
    assert not (datadir / "postmaster.pid").exists()


def test_pg_stop_kills_a_server_that_ignores_both_shutdowns(workdir: Path) -> None:
    """A server that answers neither the fast nor the immediate shutdown (here its
    postmaster is SIGSTOPped) is killed (SIGKILL) by pg-stop, which then exits 0:
    the daemon hands the service over after a stop, and its own escalation reaches
    only the script's process group, never the server (pg_ctl starts it in a
    session of its own)."""
    datadir, _ = started_server(workdir)
    postmaster = postmaster_of(datadir)
    assert postmaster is not None
    victims = server_pids(postmaster)
    os.kill(postmaster, signal.SIGSTOP)
    try:
        stopped = subprocess.run(
            [str(EXAMPLE_SCRIPTS / "pg-stop"), str(datadir)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PG_STOP_WAIT": "1"},
        )  # fmt: skip
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not any(map(running, victims)), "pg-stop left processes of the server running"
        assert "killing" in stopped.stderr
    finally:
        for pid in filter(running, victims):  # the test failed: leave nothing
            os.kill(pid, signal.SIGKILL)


def runs_query(pid: int) -> bool:
    """Whether server process ``pid`` is a backend running a SELECT (its title says)."""
    try:
        return b"SELECT" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
