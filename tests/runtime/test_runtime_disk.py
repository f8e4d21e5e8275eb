"""A serving node whose state directory fails: it serves on, degraded, and decides
nothing its disk has not recorded (docs/operations.md, "Faults of the node's own disk").

Two real daemons (real cores) on loopback UDP, each with its state directory on
its own small tmpfs. The fault is either the real one (the serving node's tmpfs
filled to ENOSPC) or an injected errno from the metadata store (EIO, EROFS,
EDQUOT). Every heartbeat the faulty node sends is checked against the
metadata on its disk at that moment.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import yaml
from runtime_support import wait_until, write_cluster

from failover.cli.controlcmd import render_status
from failover.config import ClusterConfig, load_config
from failover.core import events as ev
from failover.core.state import Generation, Metadata, PeerStatus, State, SubStatus
from failover.platform.application import Application, Scripts
from failover.platform.scripts import run_script
from failover.replication.ops import Create
from failover.replication.tracking import Tracker
from failover.runtime.daemon import Daemon
from failover.runtime.degraded import HeldEvents
from failover.runtime.logging import configure_logging
from failover.runtime.store import IncarnationStore, MetadataStore
from failover.testing.disks import fill, remount_read_only, small_tmpfs

pytestmark = pytest.mark.anyio

NODES = ("alpha", "beta")


def cluster(tmp_path: Path, timeout: float = 5) -> ClusterConfig:
    """Both nodes with an application (start leaves a marker, stop says so) and their
    state directories under ``tmp_path/disk-<node>`` (mount points)."""
    start = tmp_path / "start"
    start.write_text(f'#!/bin/sh\ntouch {tmp_path}/running-"$FAILOVER_NODE"\n')
    stop = tmp_path / "stop"
    stop.write_text(
        f'#!/bin/sh\nrm -f {tmp_path}/running-"$FAILOVER_NODE"\n'
        f'echo stopped >> {tmp_path}/stopped-"$FAILOVER_NODE"\n'
    )
    for script in (start, stop):
        script.chmod(0o755)
    path = write_cluster(
        tmp_path,
        extra={"application": {"start": str(start), "stop": str(stop), "timeout": timeout}},
    )
    document = yaml.safe_load(path.read_text())
    for node in NODES:  # per-node state directories: each node's own disk
        document["nodes"][node]["state_dir"] = str(tmp_path / f"disk-{node}")
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    config = load_config(path)
    assert config.state_dir_of("alpha") != config.state_dir_of("beta")
    return config


def counter(generation: str) -> int:
    """The counter of a generation as records show it (``"5:alpha"``)."""
    return int(generation.split(":", maxsplit=1)[0])


@dataclass
class Watched:
    """A running daemon, every status it announced, and the metadata on disk then."""

    daemon: Daemon
    scope: anyio.CancelScope
    done: anyio.Event
    sent: list[tuple[PeerStatus, Metadata]] = field(default_factory=list)

    @property
    def controller(self) -> Any:
        return self.daemon.controller

    def status(self) -> dict[str, Any]:
        return dict(self.controller.status())

    def announced_unrecorded(self) -> list[tuple[PeerStatus, Metadata]]:
        """Heartbeats that announced metadata other than what was on disk."""
        return [
            (status, disk)
            for status, disk in self.sent
            if (status.generation, status.synced_generation, status.consistent, status.last_state)
            != (disk.generation, disk.synced_generation, disk.consistent, disk.last_state)
        ]


async def launch(tg: anyio.abc.TaskGroup, config: ClusterConfig, node: str) -> Watched:
    daemon = Daemon(config, node, handle_signals=False)
    scope = anyio.CancelScope()
    done = anyio.Event()

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            with scope:
                await daemon.run(task_status=task_status)
        finally:
            done.set()

    await tg.start(run)
    watched = Watched(daemon, scope, done)
    store = MetadataStore(daemon.store.path)
    note_heartbeats(daemon, lambda status: watched.sent.append((status, store.load())))
    return watched


def note_heartbeats(daemon: Daemon, note: Callable[[PeerStatus], None]) -> None:
    """Call ``note`` with the status of each heartbeat ``daemon`` builds, before it
    is built."""
    heartbeats = daemon.outbound.heartbeats

    def noted(
        status: PeerStatus,
        links: Iterable[str],
        echoes: Mapping[str, tuple[int, int]] | None = None,
    ) -> dict[str, bytes]:
        note(status)
        return heartbeats(status, links, echoes)

    daemon.outbound.heartbeats = noted  # type: ignore[method-assign]


class StoreFault:
    """Makes the node's metadata store fail with ``code`` (the other disks stay sane)."""

    def __init__(self, daemon: Daemon, code: int) -> None:
        self.store = daemon.store
        self.code = code
        self.failing = False
        self.attempts = 0
        save = self.store.save

        def faulty(metadata: Metadata) -> None:
            if self.failing:
                self.attempts += 1
                raise OSError(self.code, os.strerror(self.code), str(self.store.path))
            save(metadata)

        self.store.save = faulty  # type: ignore[method-assign]

    def fail(self) -> None:
        self.failing = True

    def heal(self) -> None:
        self.failing = False


class FullDisk:
    """The node's tmpfs filled to ENOSPC, then freed."""

    def __init__(self, daemon: Daemon) -> None:
        self.disk = daemon.config.state_dir_of(daemon.name)
        self.filler: Path | None = None

    def fail(self) -> None:
        self.filler = fill(self.disk)

    def heal(self) -> None:
        assert self.filler is not None
        self.filler.unlink()


FAULTS = {
    "ENOSPC": None,  # the real thing: a full tmpfs
    "EIO": errno.EIO,
    "EROFS": errno.EROFS,
    "EDQUOT": errno.EDQUOT,
}


@asynccontextmanager
async def pair(
    tmp_path: Path, timeout: float = 5
) -> AsyncIterator[tuple[ClusterConfig, anyio.abc.TaskGroup]]:
    config = cluster(tmp_path, timeout)
    with ExitStack() as mounts:
        for node in NODES:
            mounts.enter_context(small_tmpfs(config.state_dir_of(node)))
        async with anyio.create_task_group() as tg:
            yield config, tg
            tg.cancel_scope.cancel()


async def paired(
    tg: anyio.abc.TaskGroup, config: ClusterConfig, tmp_path: Path
) -> tuple[Watched, Watched]:
    """Both daemons launched and paired: the primary (its application started) and
    the secondary."""
    nodes = [await launch(tg, config, node) for node in NODES]
    await wait_until(lambda: sorted(w.status()["state"] for w in nodes) == ["primary", "secondary"])
    server = next(w for w in nodes if w.status()["state"] == "primary")
    await wait_until((tmp_path / f"running-{server.daemon.name}").exists)
    return server, next(w for w in nodes if w is not server)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_serving_node_whose_disk_fails_serves_on_degraded_and_resumes_in_order(
    tmp_path: Path, fault: str
) -> None:
    async with pair(tmp_path) as (config, tg):
        nodes = {node: await launch(tg, config, node) for node in NODES}
        await wait_until(
            lambda: sorted(w.status()["state"] for w in nodes.values()) == ["primary", "secondary"]
        )
        server = next(w for w in nodes.values() if w.status()["state"] == "primary")
        peer_name = next(name for name, w in nodes.items() if w is not server)
        name = server.daemon.name
        running = tmp_path / f"running-{name}"
        await wait_until(running.exists)
        # settled: the heartbeat after the pairing records the primary's own reason
        # (a resync of nothing now ends within its step: the pairing is that much faster),
        # and the application's start is reported (ready: no outcome awaited)
        await wait_until(
            lambda: (
                server.status()["reason"].startswith("protected: ")
                and server.status()["substatus"] == "ready"
            )
        )
        code = FAULTS[fault]
        disk = FullDisk(server.daemon) if code is None else StoreFault(server.daemon, code)
        durable = server.daemon.store.load()
        recorded = len(server.controller.transitions(1000))

        with structlog.testing.capture_logs() as logs:
            disk.fail()
            # The peer stops: the server must go alone under a new generation, which
            # needs a metadata write that fails.
            await nodes[peer_name].daemon.shutdown("test")
            await nodes[peer_name].done.wait()
            await wait_until(lambda: server.status()["degraded"] is not None)
            degraded = server.status()["degraded"]
            expected = "No space left on device (ENOSPC)" if code is None else f"({fault})"
            assert expected in degraded["reason"]
            assert str(server.daemon.store.path) in degraded["reason"]
            # Retried with a growing pause, and still serving as it last recorded.

            def retried() -> bool:
                view = server.status()["degraded"]
                assert view is not None, "degraded ended without a metadata write"
                return bool(view["attempts"] >= 4)

            await wait_until(retried)
            status = server.status()
            assert (status["state"], status["generation"]) == ("primary", str(durable.generation))
            assert running.exists() and not (tmp_path / f"stopped-{name}").exists()
            assert server.daemon.app.running
            assert server.daemon.store.load() == durable
            # Nothing of the undone decision ran: no transition recorded, nothing new announced.
            assert len(server.controller.transitions(1000)) == recorded
            assert server.announced_unrecorded() == []
            sent_before = len(server.sent)
            await wait_until(lambda: len(server.sent) >= sent_before + 5)  # heartbeats flow
            shown = render_status(server.status(), [])
            assert "DEGRADED    cannot write metadata" in shown, shown
            # An admin command is answered at once, with the reason.
            result = await server.controller.command("swap")
            assert not result.accepted
            assert "not accepted: cannot write metadata" in result.message
            # The peer comes back meanwhile: it sees a live primary and does not serve.
            nodes[peer_name] = await launch(tg, config, peer_name)
            peer = nodes[peer_name]
            await wait_until(lambda: peer.status()["peer"] is not None)
            await anyio.sleep(3 * config.timing.dead_timeout)
            assert peer.status()["state"] not in ("alone", "primary")
            assert server.status()["degraded"] is not None

            disk.heal()
            await wait_until(lambda: server.status()["degraded"] is None)
            await wait_until(
                lambda: (
                    (server.status()["state"], peer.status()["state"]) == ("primary", "secondary")
                )
            )
        degraded_records = [r for r in logs if r["event"].startswith("node degraded")]
        assert len(degraded_records) == 1, degraded_records  # once per episode
        assert [r for r in logs if r["event"].startswith("metadata written again")]
        # Resumed in order: the undone decision (alone, new generation) first, then the pairing.
        after = server.controller.transitions(1000)[recorded:]
        assert after[0]["from"] == "primary" and after[0]["to"] == "alone"
        assert counter(after[0]["generation"]) > durable.generation.counter
        assert after[-1]["to"] == "primary"
        generations = [counter(r["generation"]) for r in after]
        assert generations == sorted(generations)
        final = server.daemon.store.load()
        assert final.generation.counter > durable.generation.counter
        assert final.last_state is State.PRIMARY
        assert server.announced_unrecorded() == []
        assert not (tmp_path / f"stopped-{name}").exists()


async def test_sigterm_of_a_degraded_node_stops_the_application_on_the_way_out(
    tmp_path: Path,
) -> None:
    async with pair(tmp_path, timeout=1) as (config, tg):
        server, peer = await paired(tg, config, tmp_path)
        name = server.daemon.name
        durable = server.daemon.store.load()
        filler = FullDisk(server.daemon)
        filler.fail()
        await peer.daemon.shutdown("test")
        await wait_until(lambda: server.status()["degraded"] is not None)
        # A slow stop script; every heartbeat notes whether it was running then.
        running, stopped = tmp_path / f"running-{name}", tmp_path / f"stopped-{name}"
        stop = Path(config.application.stop)  # type: ignore[union-attr]
        stop.write_text(f"#!/bin/sh\nrm -f {running}\nsleep 0.5\necho stopped >> {stopped}\n")
        during_stop: list[bool] = []
        note_heartbeats(
            server.daemon,
            lambda _: during_stop.append(not running.exists() and not stopped.exists()),
        )
        with anyio.fail_after(30):  # the stop bound: application timeout + 10 s
            await server.daemon.shutdown("SIGTERM")
            await server.done.wait()
        assert stopped.read_text() == "stopped\n"
        assert not running.exists()
        # The hand-over order: the node still announced itself while its application
        # stopped, so that its peer could not start meanwhile.
        assert any(during_stop), "no heartbeat while the stop script ran"
        assert server.daemon.store.load() == durable  # nothing unrecorded was acted on
        assert server.announced_unrecorded() == []


async def test_a_degraded_node_whose_peer_announced_its_stop_is_not_fenced_for_a_stall(
    tmp_path: Path,
) -> None:
    """The watchdog's deadline is the peer's takeover on our silence (runtime/watchdog.py).
    A degraded node holds the peer's announced stop with every other event (its core
    is frozen, still counting the peer as its secondary), yet nobody takes over from
    it: a stall of its event loop longer than the dead timeout costs no fence."""
    async with pair(tmp_path) as (config, tg):
        server, peer = await paired(tg, config, tmp_path)
        name = server.daemon.name
        running, stopped = tmp_path / f"running-{name}", tmp_path / f"stopped-{name}"
        await wait_until(lambda: server.status()["substatus"] == "ready")
        StoreFault(server.daemon, errno.EROFS).fail()
        await peer.daemon.shutdown("test")
        await peer.done.wait()
        await wait_until(lambda: server.status()["degraded"] is not None)
        assert server.daemon.node.facts.peer.state is State.SECONDARY  # type: ignore[union-attr]
        # the loop stalls (a blocking call; what CI's load did once): twice the
        # dead timeout, well past the deadline a peer able to take over would set
        time.sleep(2 * config.timing.dead_timeout)
        await anyio.sleep(config.timing.dead_timeout)  # the watchdog acts at once
        assert running.exists() and not stopped.exists()
        assert not (config.node_dir(name) / "watchdog.fenced").exists()
        assert server.daemon.app.running


def test_held_events_keep_the_first_and_order_and_only_the_newest_per_link() -> None:
    held = HeldEvents()
    first = ev.Timer()
    held.hold(first)
    held.hold(ev.Timer())
    held.hold(ev.LinkFailed("lan", "a"))
    held.hold(ev.AppStarted())
    held.hold(ev.CheckerDown("disk"))
    held.hold(ev.LinkFailed("lan", "b"))
    held.hold(ev.CheckerUp("disk"))
    held.hold(ev.Timer())
    assert held.kinds() == ["timer", "app_started", "link_failed", "checker_up"]
    assert held.done_first() is first
    assert held.first() == ev.AppStarted()
    assert held.done_first() == ev.AppStarted()
    assert held.first() == ev.LinkFailed("lan", "b")


def test_held_events_tell_what_the_peer_announced_last() -> None:
    """The watchdog's deadline of a degraded node reads it: a peer heard again after
    its stop (on any link) counts again."""
    generation = Generation(1, "alpha")

    def heard(link: str, state: State) -> ev.HeartbeatReceived:
        status = PeerStatus("beta", state, SubStatus.READY, generation, generation, True, "")
        return ev.HeartbeatReceived(link, status)

    held = HeldEvents()
    assert held.newest_peer() is None
    held.hold(heard("lan", State.STOP))
    held.hold(ev.AppStarted())
    assert held.newest_peer() == heard("lan", State.STOP).status
    held.hold(heard("backup", State.WAIT))
    held.hold(ev.LinkFailed("backup", "down"))  # replaces that heartbeat in the queue
    assert held.newest_peer() == heard("backup", State.WAIT).status
    held.hold(heard("lan", State.STOP))
    assert held.newest_peer() == heard("lan", State.STOP).status
    while held:
        held.done_first()
    held.hold(ev.AppStarted())  # a new episode: nothing of the last one
    assert held.newest_peer() is None


def test_held_events_keep_one_resync_failure_however_often_the_peer_retries() -> None:
    # A degraded resync target cannot apply what its peer sends (the same full
    # disk): the peer's source retries for as long as the fault lasts, and each
    # attempt is reported here. The queue must not grow with the episode.
    held = HeldEvents()
    held.hold(ev.LinkFailed("lan", "silent"))
    for attempt in range(1000):
        held.hold(ev.ResyncFailed(f"a change failed here (attempt {attempt})"))
        held.hold(ev.LinkFailed("lan", f"silent ({attempt})"))
    assert held.kinds() == ["link_failed", "resync_failed", "link_failed"]
    held.done_first()
    assert held.first() == ev.ResyncFailed("a change failed here (attempt 0)")


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("full", "No space left on device (ENOSPC)"),
        ("read-only", "Read-only file system (EROFS)"),
        ("read-only, first start", "Read-only file system (EROFS)"),
    ],
)
def test_starting_on_a_full_or_read_only_state_disk_is_one_line_and_exit_2(
    tmp_path: Path, fault: str, error: str
) -> None:
    disk = tmp_path / "disk"
    path = write_cluster(tmp_path, cluster={"state_dir": str(disk)})
    node_dir = disk / "alpha"
    with small_tmpfs(disk):
        if fault != "read-only, first start":  # a node that ran before
            MetadataStore(node_dir / "metadata.json").save(Metadata())
            IncarnationStore(node_dir / "incarnation.json").next()
        if fault == "full":
            fill(disk)
        else:
            remount_read_only(disk)
        result = subprocess.run(
            [sys.executable, "-m", "failover", "run", "-c", str(path), "--node", "alpha"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(node_dir) in lines[0] and error in lines[0], lines[0]


@contextmanager
def log_on_a_small_disk(tmp_path: Path) -> Iterator[Path]:
    """The log configured into a file on a 64 KiB tmpfs (its path), until the block ends."""
    disk = tmp_path / "logs"
    with small_tmpfs(disk, size="64k"):
        log_file = disk / "failover.log"
        configure_logging(log_file)
        try:
            yield log_file
        finally:
            configure_logging(None)


def test_a_full_log_disk_drops_and_counts_records_and_never_raises(tmp_path: Path) -> None:
    with log_on_a_small_disk(tmp_path) as log_file:
        log = structlog.get_logger("test")
        filler = fill(log_file.parent)  # the log file is empty: its first record needs a page
        for number in range(3):
            log.error("while full", number=number)  # must not raise
        filler.unlink()
        log.info("after")
        records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [r["msg"] for r in records] == ["log records lost", "after"]
    assert records[0]["lost"] == 3


def test_a_log_record_the_full_disk_takes_only_in_part_is_cut_off_and_counted(
    tmp_path: Path,
) -> None:
    # The kernel takes what fits in the log file's last page and answers a short
    # write: that part must not stay behind as a torn line (the next record
    # would be glued to it).
    with log_on_a_small_disk(tmp_path) as log_file:
        log = structlog.get_logger("test")
        log.info("before")  # the file's first page is allocated, mostly free
        filler = fill(log_file.parent)
        log.error("while full", padding="x" * 8192)  # more than the page has left
        filler.unlink()
        log.info("after")
        lines = log_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["msg"] for r in records] == ["before", "log records lost", "after"]
    assert records[1]["lost"] == 1


async def test_a_script_whose_output_file_cannot_be_written_still_runs(tmp_path: Path) -> None:
    disk = tmp_path / "scripts"
    with small_tmpfs(disk, size="64k"):
        remount_read_only(disk)
        result = await run_script(
            "true", timeout=5, label="checker up", output=disk / "checker-up.log"
        )
    assert result.ok, result.reason


def test_the_tracking_log_on_a_full_disk_holds_changes_and_the_new_epoch_until_written(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "tracking"
    with small_tmpfs(disk, size="1m"):
        tracker = Tracker(disk / "t")
        tracker.before(Create("data", b"before", 0o644))
        filler = fill(disk)
        tracker.epoch_start("7:alpha")  # the serving node's StartTracking: never raises
        with pytest.raises(OSError) as refused:
            tracker.before(Create("data", b"while-full", 0o644))
        assert refused.value.errno == errno.ENOSPC
        assert Tracker.recover(disk / "t").since is None  # not durable yet, and said so
        filler.unlink()
        tracker.before(Create("data", b"after", 0o644))
        recovered = Tracker.recover(disk / "t")
        tracker.close()
    assert recovered.since == "7:alpha"
    assert recovered.changes.name_changed("data", b"before")
    assert recovered.changes.name_changed("data", b"after")
    assert not recovered.changes.name_changed("data", b"while-full")


async def test_the_start_marker_on_a_read_only_disk_fails_the_start_and_never_the_stop(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "node"
    script = tmp_path / "script"
    script.write_text(f'#!/bin/sh\necho "$FAILOVER_ACTION" >> {tmp_path}/ran\n')
    script.chmod(0o755)
    with small_tmpfs(disk, size="64k"):
        app = Application(
            Scripts(str(script), str(script), 5),
            None,
            output_dir=disk,
            env={},
            marker=disk / "application.started",
        )
        assert await app.start() is None  # writable: started, marker written
        remount_read_only(disk)
        assert await app.stop() is None  # the marker stays behind: one more stop later
        assert not app.running
        reason = await app.start()
    assert reason is not None and "Read-only file system" in reason
    assert not app.running
    assert (tmp_path / "ran").read_text().split() == ["start", "stop"]
