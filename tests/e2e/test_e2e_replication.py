"""Replicated directories between two namespaces: a writer makes numbered
synchronous records on the serving node, every process of that node is
killed at a random moment, and every record the writer was told is durable
must be on the node that takes over; after the killed node returns and is
resynchronised, both copies are byte-identical."""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from e2e_support import (
    NETNS,
    NODES,
    REPLICATION_PORT,
    WRITER,
    Cluster,
    cli,
    held,
    records,
)

from failover.audit import Ack
from failover.config.timing import PROFILES
from failover.lab import Lab

pytestmark = NETNS

LINKS = {"lan": "udp", "crossover": "tcp"}
ROUNDS = int(os.environ.get("FAILOVER_E2E_CRASH_ROUNDS", "20"))


class Writer:
    """The writer, run as one of the node's processes; ``acked`` is what it printed."""

    def __init__(self, cluster: Cluster, node: str, start: int) -> None:
        argv = [sys.executable, str(WRITER), str(cluster.data / "records"), str(start)]
        self.proc = subprocess.Popen(
            cluster.node_command(node, argv),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.acked: list[int] = []
        self.times: list[float] = []  # when each acknowledgement was read
        self.enough = threading.Event()
        self.wanted = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.acked.append(int(line))
            self.times.append(time.monotonic())
            if len(self.acked) >= self.wanted:
                self.enough.set()
        self.enough.set()  # the writer ended

    def wait_for(self, count: int) -> None:
        self.wanted = count
        if len(self.acked) >= count:
            self.enough.set()
        assert self.enough.wait(30), "the writer made no progress"

    def longest_stall(self) -> float:
        """The longest time between two acknowledgements, in seconds."""
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return max(gaps, default=0.0)

    def finish(self) -> list[int]:
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        return self.acked

    def acks(self, node: str) -> list[Ack]:
        """What it acknowledged, for the audit's S3 (time.monotonic is CLOCK_MONOTONIC)."""
        return [Ack(n, t, node) for n, t in zip(self.acked, self.times, strict=True)]


def equal_copies(cluster: Cluster) -> bool:
    return tree(cluster.disk("alpha")) == tree(cluster.disk("beta"))


def serves(cluster: Cluster, node: str) -> bool:
    return cluster.state(node) == "alone"


def alone(cluster: Cluster, node: str) -> bool:
    """``node`` serves alone, ready or busy (resyncing its peer)."""
    status = cluster.status(node)
    return bool(status and status["state"] == "alone")


def retrying(cluster: Cluster, node: str) -> bool:
    """``node``'s core retries a resync attempt that failed (its status reason)."""
    status = cluster.status(node)
    return bool(status and status["reason"].startswith("resync attempt of "))


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_acknowledged_records_survive_killing_every_process_of_the_serving_node(
    lab: Lab, tmp_path: Path
) -> None:
    rng = random.Random(20261130)
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()
    next_record = 0
    acks: list[Ack] = []  # every round's, for the audit's S3 at the end
    for round_number in range(ROUNDS):
        writer = Writer(cluster, primary, next_record)
        writer.wait_for(rng.randint(1, 40))
        killed = cluster.kill_node(primary)
        assert killed >= 2, "the daemon and the writer were running"
        acked = writer.finish()
        acks += writer.acks(primary)
        cluster.wait(f"{secondary} serves", functools.partial(serves, cluster, secondary))
        on_survivor = records(cluster.disk(secondary) / "records")
        for n in acked:
            expected = b"%08d\n" % n
            assert on_survivor.get(n) == expected, (
                f"round {round_number}: record {n} was acknowledged on {primary} "
                f"but {secondary} holds {on_survivor.get(n)!r}"
            )
        next_record = max([next_record - 1, *acked]) + 1
        print(f"round {round_number}: {len(acked)} acked, last {next_record - 1}, killed {killed}")
        # the killed node returns and is resynchronised while the survivor's
        # application keeps writing: no record written meanwhile may be lost
        during = Writer(cluster, secondary, next_record)
        during.wait_for(1)
        cluster.start(primary)
        assert cluster.paired() == (secondary, primary)
        during.wait_for(len(during.acked) + 3)  # some records land after the resync too
        during.proc.terminate()
        written = during.finish()
        acks += during.acks(secondary)
        assert written, "the survivor's writer wrote nothing"
        next_record = max(written) + 1
        # the last write may still be in flight to the peer: equal once it lands
        cluster.wait(
            f"round {round_number}: both copies equal",
            functools.partial(equal_copies, cluster),
        )
        on_returned = records(cluster.disk(primary) / "records")
        assert all(on_returned.get(n) == b"%08d\n" % n for n in written), round_number
        # only what changed was sent: the returning node's unacknowledged zones and
        # what the survivor wrote since, not a full copy
        shown = cluster.status(secondary)
        assert shown is not None and shown["replication"]["resync"]["full"] is False
        primary, secondary = secondary, primary
    # the operator's check: both copies compared by digest, through the primary's daemon
    verify = cli("verify", "--socket", str(cluster.socket(primary)))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.strip() == "both copies are identical"
    status = cluster.status(primary)
    assert status is not None and status["in_sync"] is True
    assert status["replication"]["replicating"] is True
    # the audit at teardown checks S3 too: every record acknowledged before a node
    # started serving is on that node's disk (the records are never rewritten)
    cluster.acked, cluster.found = acks, {node: held(cluster, node) for node in NODES}


def write_in(cluster: Cluster, node: str, name: str, data: bytes) -> None:
    """Write ``name`` with fsync through ``node``'s mirror, as its application would."""
    code = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
        "os.write(fd, sys.argv[2].encode()); os.fsync(fd); os.close(fd)\n"
    )
    argv = [sys.executable, "-c", code, str(cluster.data / name), data.decode()]
    done = subprocess.run(
        cluster.node_command(node, argv), capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_split_brain_keeps_the_losers_changes_in_quarantine(lab: Lab, tmp_path: Path) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()
    write_in(cluster, primary, "shared", b"before the split")
    for network in LINKS:
        lab.link_down(secondary, network)
    cluster.wait(f"{secondary} takes over", functools.partial(serves, cluster, secondary))
    # both serve, each writes on its own side
    write_in(cluster, primary, "only-on-primary", b"P")
    write_in(cluster, secondary, "only-on-secondary", b"S")
    for network in LINKS:
        lab.link_up(secondary, network)
    winner, loser = cluster.paired()
    kept = tree(cluster.disk(winner))
    assert tree(cluster.disk(loser)) == kept  # resynchronised from the winner
    assert kept["shared"] == b"before the split"
    # the loser's own change is not on the winner: it is in the loser's quarantine
    lost_name = "only-on-primary" if loser == primary else "only-on-secondary"
    assert lost_name not in kept
    quarantine = tmp_path / "state" / loser / "quarantine"
    moved = list(quarantine.rglob(lost_name))
    assert [p.read_bytes() for p in moved] == [b"P" if loser == primary else b"S"]
    listed = cli("quarantine", "list", "--dir", str(quarantine))
    assert listed.returncode == 0 and f"split brain vs peer {winner}" in listed.stdout


def test_a_split_brain_healed_while_the_winner_keeps_writing_the_quarantined_file(
    lab: Lab, tmp_path: Path
) -> None:
    """Issue 8's campaign (seed 2029): the primary's application writes one file
    all along (opened while in sync: its tracker holds dirty zones of it, not its
    name); every link of the primary goes down, the secondary takes over and its
    application writes the same file; the heal makes the old primary the loser
    while the winner's application goes on writing. The loser moves the file to
    quarantine, so the winner's resync must rebuild it whole (never dirty zones or
    live writes into a file the loser no longer has): the loser is resynchronised
    by that incremental resync (identical copies), its records are in its
    quarantine, and the pair is protected again."""
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    document = yaml.safe_load(cluster.config_path.read_text())
    document["cluster"]["split_brain_winner"] = "beta"
    cluster.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    # the file predates the pair's last resync: alpha holds it at the first start,
    # so alpha serves and beta gets it by that resync (data on both disks would
    # make both wait for the operator: a safe first start)
    (cluster.disk("alpha") / "records").write_bytes(b"")
    cluster.start_both()
    loser, winner = cluster.paired()
    assert loser == "alpha", "a fresh pair forms with alpha primary (names break the tie)"
    writers = {loser: Writer(cluster, loser, 0)}
    writers[loser].wait_for(20)
    for network in LINKS:
        lab.link_down(loser, network)
    cluster.wait(f"{winner} takes over", functools.partial(serves, cluster, winner))
    # the winner's records are numbered apart from the loser's, in the same file
    writers[winner] = Writer(cluster, winner, 500_000)
    for writer in writers.values():
        writer.wait_for(len(writer.acked) + 30)
    # the loser's application is stopped (as its stop script would); the winner's goes on
    writers[loser].proc.terminate()
    divergent = writers[loser].finish()
    for network in LINKS:
        lab.link_up(loser, network)
    assert cluster.paired() == (winner, loser)
    writers[winner].wait_for(len(writers[winner].acked) + 20)  # live after the resync
    writers[winner].proc.terminate()
    written = writers[winner].finish()
    cluster.wait("both copies equal", functools.partial(equal_copies, cluster))
    on_loser = records(cluster.disk(loser) / "records")
    assert all(on_loser.get(n) == b"%08d\n" % n for n in written)
    quarantine = tmp_path / "state" / loser / "quarantine"
    kept = [records(p) for p in quarantine.rglob("records")]
    assert len(kept) == 1 and all(kept[0].get(n) == b"%08d\n" % n for n in divergent)
    status = cluster.status(winner)
    assert status is not None and status["in_sync"] is True
    assert status["replication"]["replicating"] is True
    # healed by the incremental resync itself, at its first run (not by a full copy
    # after a failed one, the table's fallback)
    assert status["replication"]["resync"]["full"] is False
    assert not status["reason"].startswith("resync attempt of ")
    cluster.check_alive()


def test_a_cut_replication_link_leaves_the_pair_and_the_pair_reforms_after_it_heals(
    lab: Lab, tmp_path: Path
) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()
    lab.link_down(secondary, "lan")  # replication's network; heartbeats go on over crossover
    # fsync waits for the session's timeout, then for beta to leave secondary
    # (the write fence): then the primary goes on alone, resyncing beta in vain
    write_in(cluster, primary, "during-the-cut", b"kept")
    cluster.wait(f"{primary} alone", functools.partial(alone, cluster, primary))
    cluster.wait(
        f"{primary} retrying to resync {secondary} over the cut link",
        functools.partial(retrying, cluster, primary),
    )
    lab.link_up(secondary, "lan")
    assert cluster.paired() == (primary, secondary)  # the resync was retried until it ran
    assert tree(cluster.disk(secondary)) == tree(cluster.disk(primary))
    assert tree(cluster.disk(secondary))["during-the-cut"] == b"kept"


def test_fullsync_copies_everything_again(lab: Lab, tmp_path: Path) -> None:
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()
    write_in(cluster, primary, "a", b"replicated")
    # damage the secondary's copy behind everyone's back: only a full copy repairs it
    (cluster.disk(secondary) / "a").write_bytes(b"rotten")
    before = received(cluster, secondary)
    done = cli("fullsync", "--socket", str(cluster.socket(secondary)))
    assert done.returncode == 0, done.stderr
    cluster.wait(f"{secondary} resynchronised again", lambda: received(cluster, secondary) > before)
    assert cluster.paired() == (primary, secondary)
    status = cluster.status(primary)
    assert status is not None and status["replication"]["resync"]["full"] is True
    assert (cluster.disk(secondary) / "a").read_bytes() == b"replicated"


def received(cluster: Cluster, node: str) -> int:
    status = cluster.status(node)
    return int(status["replication"]["resyncs_received"]) if status else 0


# A hostile host on the replication network: it connects to the secondary's
# replication port every ``period`` seconds, without any key. Each connection,
# in turn, stays idle, sends junk, or sends a length prefix and stops half-way;
# it is closed after ``hold`` seconds (the attacker does not wait for answers).
HOSTILE = """
import itertools, os, socket, sys, time
address, port, period, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
opened = []
for n in itertools.count():
    try:
        s = socket.create_connection((address, port), timeout=1)
        if n % 3 == 1:
            s.sendall(os.urandom(512))
        elif n % 3 == 2:
            s.sendall((4096).to_bytes(4, "big") + os.urandom(100))
        opened.append((time.monotonic(), s))
        print(n, flush=True)
    except OSError:
        pass
    while opened and time.monotonic() - opened[0][0] > hold:
        opened.pop(0)[1].close()
    time.sleep(period)
"""


def default_profile(cluster: Cluster) -> None:
    """Run ``cluster`` with the production timings (issue 8 measured the chain
    there: a heartbeat every 0.5 s leaves the peer longer in the dark)."""
    document = yaml.safe_load(cluster.config_path.read_text())
    document["cluster"]["profile"] = "default"
    cluster.config_path.write_text(yaml.safe_dump(document, sort_keys=False))
    timing = PROFILES["default"]
    cluster.dead_timeout = timing.dead_timeout
    cluster.heartbeat_interval = timing.heartbeat_interval


def test_hostile_connects_to_the_replication_port_lose_no_acknowledged_record(
    lab: Lab, tmp_path: Path
) -> None:
    """The lost-write chain of issue 8: unauthenticated connects to the
    secondary's replication port (from the client's namespace and from the
    primary's, each every 0.5 s)
    while the primary's application writes numbered fsync'd records, then
    kill -9 of every process of the primary: at the chain's worst moment (the
    primary serving alone while the secondary, still `secondary`, may take
    over), or after 8 s of attack. Every record the writer was told is durable must be
    on the node that serves next; once the killed node returns, both copies
    are identical."""
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    default_profile(cluster)
    cluster.start_both()
    primary, secondary = cluster.paired()
    target = [lab.address(secondary, "lan"), str(REPLICATION_PORT), "0.5", "3"]
    hostile = [  # from the client's namespace, and from inside the primary's own
        lab.run(where, [sys.executable, "-c", HOSTILE, *target],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for where in ("client", primary)
    ]  # fmt: skip
    writer = Writer(cluster, primary, 0)
    seen: list[str] = []
    try:
        writer.wait_for(1)
        deadline = time.monotonic() + 8.0
        while time.monotonic() < deadline:
            shown = (cluster.status(primary), cluster.status(secondary))
            states = tuple(s and f"{s['state']} {s['generation']}" for s in shown)
            if not seen or seen[-1] != f"{states}":
                seen.append(f"{states}")
            serving, following = shown
            if (
                serving
                and following
                and (serving["state"], following["state"]) == ("alone", "secondary")
                and serving["generation"] != following["generation"]
            ):
                break  # the primary serves on while the secondary may take over: kill now
            time.sleep(0.05)  # a bounded poll of two daemons
    finally:
        for process in hostile:
            process.kill()
            process.wait(timeout=10)
    killed = cluster.kill_node(primary)
    assert killed >= 2, "the daemon and the writer were running"
    acked = writer.finish()
    print(f"{len(acked)} records acknowledged, longest fsync stall "
          f"{writer.longest_stall():.2f} s; (primary, secondary) states seen: {seen}")  # fmt: skip
    cluster.wait(f"{secondary} serves", functools.partial(serves, cluster, secondary))
    on_survivor = records(cluster.disk(secondary) / "records")
    lost = [n for n in acked if on_survivor.get(n) != b"%08d\n" % n]
    assert not lost, (
        f"{len(lost)} of {len(acked)} acknowledged records are not on {secondary}, "
        f"which serves now (first {lost[:5]})"
    )
    cluster.start(primary)
    assert cluster.paired() == (secondary, primary)
    cluster.wait("both copies equal", functools.partial(equal_copies, cluster))


def test_a_broken_session_heals_by_itself_and_status_never_claims_a_stale_peer_in_sync(
    lab: Lab, tmp_path: Path
) -> None:
    """Issue 8: the replication network of the secondary goes down while the
    primary's application writes (heartbeats go on over crossover). The
    primary continues alone under a new generation; `status` does not claim
    the peer in sync meanwhile; once the network is back the pair is
    protected again by itself (resync of what was missed), every record on
    both. Prints the time from the network's return to primary + secondary."""
    cluster = Cluster(lab, tmp_path, LINKS, replicate="lan")
    cluster.start_both()
    primary, secondary = cluster.paired()
    writer = Writer(cluster, primary, 0)
    writer.wait_for(5)
    lab.link_down(secondary, "lan")
    cluster.wait(f"{primary} alone", functools.partial(alone, cluster, primary))
    shown = cluster.status(primary)
    assert shown is not None and shown["in_sync"] is False
    more = len(writer.acked) + 5
    cluster.wait("records acknowledged alone", lambda: len(writer.acked) >= more)
    back = time.monotonic()
    lab.link_up(secondary, "lan")
    assert cluster.paired() == (primary, secondary)
    heal = time.monotonic() - back
    more = len(writer.acked) + 5
    cluster.wait("records acknowledged protected", lambda: len(writer.acked) >= more)
    writer.proc.terminate()
    acked = writer.finish()
    cluster.wait("both copies equal", functools.partial(equal_copies, cluster))
    on_secondary = records(cluster.disk(secondary) / "records")
    assert all(on_secondary.get(n) == b"%08d\n" % n for n in acked)
    shown = cluster.status(primary)
    assert shown is not None and shown["in_sync"] is True
    print(f"protected again {heal:.2f} s after the replication network returned; "
          f"{len(acked)} records acknowledged, all on {secondary}; longest fsync stall "
          f"{writer.longest_stall():.2f} s (replication timeout 2 s)")  # fmt: skip
