"""The watchdog process alone: a fake application (``sleep`` in a session of its
own, named by a start marker), fed deadlines on its standard input.

Only order is asserted, never a duration: the group is not killed while
feeds keep the deadline ahead, it is killed once a deadline passes without a
newer feed; "no deadline" does nothing. Waits are bounded polls of external
processes, or waiting for a deadline to have passed (the property itself).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from failover.platform.application import _start_time
from failover.replication import fusermount
from failover.runtime.watchdog import FENCED, Plan, Watch, feed_line, wait_for_previous

BOUND = 30.0  # seconds: an upper bound on every wait, not an expected duration


class Rig:
    """A fake application, its marker, a stop script, and one watchdog process."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        device: Path | None = None,
        addresses: tuple[tuple[str, str], ...] = (),
        **plan: Any,
    ) -> None:
        self.tmp_path = tmp_path
        # the group: a leader and a member, as a pre-forking server would have
        self.app = subprocess.Popen(
            ["sh", "-c", "sleep 1000 & wait"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        self.marker = tmp_path / "application.started"
        self.mark(self.app.pid, _start_time(self.app.pid))
        stop = tmp_path / "stop"
        stop.write_text(f'#!/bin/sh\necho "$FAILOVER_FENCED" > {tmp_path}/stop-ran\n')
        stop.chmod(0o755)
        self.plan = Plan(
            marker=str(self.marker),
            record=str(tmp_path / "watchdog.fenced"),
            lock=str(tmp_path / "watchdog.lock"),
            addresses=addresses,
            stop=str(stop),
            stop_timeout=5.0,
            output_dir=str(tmp_path),
            device=None if device is None else str(device),
            device_interval=0.05,
            **plan,
        )
        self.stderr = open(tmp_path / "watchdog.stderr", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "failover.runtime.watchdog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.send(self.plan.to_line())
        # ready (its imports done, its lock held) before any deadline is counted
        end = time.monotonic() + BOUND
        while "watchdog started" not in self.log():
            assert time.monotonic() < end and self.proc.poll() is None, self.log()
            time.sleep(0.01)

    def mark(self, pid: int, started: int | None) -> None:
        self.marker.write_text(json.dumps({"pid": pid, "start_time": started}))

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def feed(self, deadline: float | None) -> None:
        self.send(feed_line(deadline))

    def notice(self, timeout: float = BOUND) -> dict[str, Any] | None:
        """The next fence notice, or None if none comes within ``timeout``."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            return None
        notice: dict[str, Any] = json.loads(line)[FENCED]
        return notice

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=BOUND)

    def group_gone(self) -> bool:
        """Bounded poll: True once every member of the application's group is gone."""
        self.app.wait(timeout=BOUND)
        end = time.monotonic() + BOUND
        while time.monotonic() < end:
            try:
                os.killpg(self.app.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.01)
        return False

    def log(self) -> str:
        self.stderr.flush()
        return (self.tmp_path / "watchdog.stderr").read_text()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=BOUND)
        if self.app.poll() is None:
            os.killpg(self.app.pid, signal.SIGKILL)
        self.app.wait(timeout=BOUND)
        self.stderr.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def wait_past(deadline: float) -> None:
    """Let ``deadline`` pass (CLOCK_MONOTONIC, the watchdog's clock)."""
    time.sleep(max(0.0, deadline - time.monotonic()))


def test_an_unfed_deadline_kills_the_group_once_it_has_passed(rig: Rig) -> None:
    deadline = time.monotonic() + 0.3
    rig.feed(deadline)
    notice = rig.notice()
    assert notice is not None, rig.log()
    assert rig.group_gone()
    assert rig.app.returncode == -signal.SIGKILL
    # order only: the kill came after the deadline, never before
    assert notice["killed_at"] >= deadline and notice["late"] >= 0
    assert notice["steps"]["kill"] == f"killed group {rig.app.pid}"
    assert notice["steps"]["vip"] == "none configured"
    assert notice["steps"]["stop"] == "ok"
    assert (rig.tmp_path / "stop-ran").read_text() == "1\n"
    # the record for a daemon that is gone; the marker stays for its recover()
    record = json.loads((rig.tmp_path / "watchdog.fenced").read_text())[FENCED]
    assert record["deadline"] == deadline
    assert rig.marker.exists()
    # disarmed: the same deadline sent again (a feeder that had not learned yet)
    # does not fence twice; the daemon's end then ends it cleanly
    rig.feed(deadline)
    assert rig.close() == 0
    assert rig.notice(timeout=0) is None


def test_a_fed_deadline_keeps_the_application_until_feeds_stop(rig: Rig) -> None:
    first = time.monotonic() + 0.3
    rig.feed(first)
    rig.feed(time.monotonic() + 10 * BOUND)  # the next feed, before the first deadline
    wait_past(first + 0.5)
    assert rig.notice(timeout=0) is None
    assert rig.app.poll() is None, rig.log()
    # the feeds stop: the last deadline passes and the group is killed
    last = time.monotonic() + 0.3
    rig.feed(last)
    notice = rig.notice()
    assert notice is not None and notice["killed_at"] >= last
    assert rig.group_gone()


def test_not_serving_disarms_the_watchdog(rig: Rig) -> None:
    deadline = time.monotonic() + 0.3
    rig.feed(deadline)
    rig.feed(None)
    wait_past(deadline + 0.5)
    assert rig.close() == 0  # EOF while disarmed: a clean exit, nothing fenced
    assert rig.notice(timeout=0) is None
    assert rig.app.poll() is None
    assert not (rig.tmp_path / "watchdog.fenced").exists()
    assert not (rig.tmp_path / "stop-ran").exists()


def test_the_daemon_gone_while_serving_fences_at_once(rig: Rig) -> None:
    deadline = time.monotonic() + 10 * BOUND
    rig.feed(deadline)
    assert rig.close() == 0  # EOF: as when the kernel closes a killed daemon's pipe
    assert rig.group_gone()
    record = json.loads((rig.tmp_path / "watchdog.fenced").read_text())[FENCED]
    assert record["killed_at"] < deadline
    assert "the daemon is gone" in record["why"]


def test_a_pid_reused_by_another_process_is_not_killed(rig: Rig) -> None:
    stranger = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        started = _start_time(stranger.pid)
        assert started is not None
        rig.mark(stranger.pid, started + 1)  # the marked command started at another time
        rig.feed(time.monotonic())
        notice = rig.notice()
        assert notice is not None
        assert notice["steps"]["kill"].startswith("none: process")
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_no_marker_means_nothing_to_fence(rig: Rig) -> None:
    rig.marker.unlink()
    rig.feed(time.monotonic())
    assert rig.close() == 0
    assert rig.app.poll() is None
    assert not (rig.tmp_path / "stop-ran").exists()
    assert "nothing to fence" in rig.log()


def test_a_malformed_feed_leaves_the_previous_deadline(rig: Rig) -> None:
    deadline = time.monotonic() + 0.3
    rig.feed(deadline)
    rig.send(b'{"deadline": "later"}\n')
    rig.send(b"not json\n")
    notice = rig.notice()
    assert notice is not None and notice["killed_at"] >= deadline
    assert "line ignored" in rig.log()


def test_the_device_is_fed_and_closed_with_the_magic_character(tmp_path: Path) -> None:
    device = tmp_path / "fake-watchdog"  # a plain file: never a real device in a test
    device.write_bytes(b"")
    made = Rig(tmp_path, device=device)
    try:
        made.feed(None)
        assert made.close() == 0
    finally:
        made.cleanup()
    written = device.read_bytes()
    assert written.endswith(b"V") and len(written) >= 2


def test_an_invalid_plan_is_refused_with_a_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "failover.runtime.watchdog"],
        input=b'{"marker": 1, "bogus": true}\n',
        capture_output=True,
        timeout=BOUND,
        check=False,
    )
    assert proc.returncode == 2
    assert b"invalid plan" in proc.stderr


def test_a_new_plan_changes_the_stop_script_of_the_next_fence(rig: Rig) -> None:
    other = rig.tmp_path / "other-stop"
    other.write_text(f"#!/bin/sh\necho reloaded > {rig.tmp_path}/stop-ran\n")
    other.chmod(0o755)
    rig.send(replace(rig.plan, stop=str(other), lock="ignored").to_replan_line())
    rig.feed(time.monotonic())
    notice = rig.notice()
    assert notice is not None and notice["steps"]["stop"] == "ok"
    assert (rig.tmp_path / "stop-ran").read_text() == "reloaded\n"


def test_a_failed_fence_stops_feeding_the_device(tmp_path: Path) -> None:
    """The address cannot be released (no such interface: netlink is only asked):
    the device is no longer written to, and closed without the magic character,
    so that the machine resets."""
    device = tmp_path / "fake-watchdog"
    device.write_bytes(b"")
    made = Rig(tmp_path, device=device, addresses=(("192.0.2.1/24", "nosuchif0"),))
    try:
        made.feed(time.monotonic())
        notice = made.notice()
        assert notice is not None and notice["steps"]["vip"].startswith("failed")
        assert made.group_gone()  # the kill came first
        assert made.close() == 0
    finally:
        made.cleanup()
    written = device.read_bytes()
    assert written and not written.endswith(b"V")
    assert "without the magic close" in (tmp_path / "watchdog.stderr").read_text()


@pytest.mark.anyio
async def test_a_new_daemon_waits_for_the_previous_watchdog_to_end(rig: Rig) -> None:
    lock = Path(rig.plan.lock)  # held: the rig waited for "watchdog started"
    assert await wait_for_previous(lock, 0.2) is False
    assert rig.close() == 0
    assert await wait_for_previous(lock, BOUND) is True


@contextlib.contextmanager
def marked_app(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """An application (``sleep``, in a group of its own) and its start marker."""
    app = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        marker = tmp_path / "application.started"
        marker.write_text(json.dumps({"pid": app.pid, "start_time": _start_time(app.pid)}))
        yield app, marker
    finally:
        if app.poll() is None:
            app.kill()
        app.wait()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("made_at", [9.0, 10.0])
def test_a_feed_made_after_the_standing_deadline_does_not_save_it(
    tmp_path: Path, made_at: float
) -> None:
    """Read late by a slow watchdog, a feed counts by when the loop made it: made
    before the standing deadline (9) it saves the application, made at or after
    it (10: the loop was stalled until then) the standing deadline is fenced."""
    with marked_app(tmp_path) as (app, marker):
        plan = Plan(marker=str(marker), record=str(tmp_path / "fenced"), lock="unused")
        notices, clock = io.BytesIO(), FakeClock()
        watch = Watch(plan, notices, clock=clock)
        watch.feed(10.0, sent_at=0.0)
        clock.now = 15.0  # this watchdog reads the next feed only now
        watch.feed(20.0, sent_at=made_at)
        if made_at < 10.0:
            assert notices.getvalue() == b"" and app.poll() is None
            assert watch.deadline == 20.0
        else:
            assert json.loads(notices.getvalue())[FENCED]["deadline"] == 10.0
            assert app.wait(timeout=BOUND) == -signal.SIGKILL
            assert watch.deadline == 20.0  # the loop runs again: armed anew


def test_a_failing_abort_of_the_mirrors_does_not_keep_the_kill_from_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 0 of the fence (the mirrors' abort) failing in any way, even by raising,
    costs that step only: the application's group is still killed, and the notice
    says what failed."""

    def broken(paths: object) -> str:
        raise RuntimeError("the mount table changed under us")

    monkeypatch.setattr("failover.runtime.watchdog.abort_connections", broken)
    with marked_app(tmp_path) as (app, marker):
        plan = Plan(
            marker=str(marker), record=str(tmp_path / "fenced"), lock="unused", mirrors=("/m",)
        )
        notice = Watch(plan, io.BytesIO(), clock=FakeClock()).fence("test", 1.0)
        assert notice["steps"]["abort"].startswith("failed: RuntimeError")
        assert notice["steps"]["kill"] == f"killed group {app.pid}"
        assert app.wait(timeout=BOUND) == -signal.SIGKILL


def test_no_directory_for_fusectl_is_a_failed_abort_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fusectl not mounted and /tmp full: the abort says so (the fence goes on)."""

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    entry = fusermount.MountEntry("/m", fusermount.FSTYPE, 0, 4242)
    monkeypatch.setattr(fusermount, "mirror_mounts", lambda paths: [entry])
    monkeypatch.setattr(fusermount, "CONNECTIONS", str(tmp_path / "no-fusectl"))
    monkeypatch.setattr(fusermount.tempfile, "TemporaryDirectory", full)
    result = fusermount.abort_connections(["/m"])
    assert result.startswith("failed: fusectl not mounted") and "No space left" in result
