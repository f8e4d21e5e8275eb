"""The daemon's side: ``AuditJournal`` writes what ``failover audit`` reads, rotates,
and never raises when the disk refuses a write."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from audit_support import LINKS, Journal
from structlog.testing import capture_logs

from failover.audit import INCOMPLETE, Report, audit, load_records
from failover.runtime.logging import JOURNAL_RESERVE, AuditJournal, monotonic
from failover.testing.disks import fill, small_tmpfs


def test_records_carry_the_shared_monotonic_clock_and_an_order(tmp_path: Path) -> None:
    journal = AuditJournal(tmp_path / "audit.jsonl", node="alpha", boot=7)
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    journal.write("link", step=1, link="lan", up=True)
    journal.write("link", step=2, link="lan", up=False)
    after = time.clock_gettime(time.CLOCK_MONOTONIC)
    journal.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["v"], r["kind"], r["node"], r["boot"], r["seq"]) for r in lines] == [
        (1, "link", "alpha", 7, 1),
        (1, "link", "alpha", 7, 2),
    ]
    assert before <= lines[0]["mono"] <= lines[1]["mono"] <= after
    assert audit([tmp_path]).ok


def test_rotation_keeps_a_bounded_number_of_files_and_the_audit_reads_them_all(
    tmp_path: Path,
) -> None:
    journal = AuditJournal(tmp_path / "audit.jsonl", node="alpha", boot=1, max_bytes=500, backups=2)
    for step in range(20):
        journal.write("link", step=step, link="lan", up=step % 2 == 0)
    journal.close()
    names = sorted(p.name for p in tmp_path.glob("audit.jsonl*"))
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size < 700 for p in tmp_path.glob("audit.jsonl*"))
    assert (tmp_path / "audit.reserve").stat().st_size == journal.reserve  # not rotated
    nodes, _ = load_records([tmp_path])
    seqs = [r.order[1] for r in nodes["alpha"]]
    assert seqs == list(range(seqs[0], 21))  # the newest records, in order, none lost between


def test_records_wait_in_memory_while_the_disk_refuses_them(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the node's directory should be")
    journal = AuditJournal(blocker / "alpha" / "audit.jsonl", node="alpha", boot=1)
    with capture_logs() as logged:
        journal.write("link", step=1, link="lan", up=True)
        journal.write("link", step=2, link="lan", up=False)
        assert journal.waiting == 2
        blocker.unlink()  # the disk recovers
        journal.write("link", step=3, link="lan", up=True)
    journal.close()
    assert [entry["event"] for entry in logged] == [
        "cannot write the audit journal: records wait in memory until it works again",
        "audit journal writable again",
    ]
    records = [json.loads(line) for line in (blocker / "alpha" / "audit.jsonl").open()]
    assert [(r["seq"], r["step"]) for r in records] == [(1, 1), (2, 2), (3, 3)]
    assert records[0]["mono"] < records[1]["mono"] < records[2]["mono"]  # their own times
    report = audit([blocker])
    assert report.ok and report.figures["skipped"] == {"alpha": 0}


def test_past_the_backlog_the_newest_records_are_dropped_and_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    journal = AuditJournal(blocker / "audit.jsonl", node="alpha", boot=1, backlog=3)
    with capture_logs():
        for step in range(5):
            journal.write("link", step=step, link="lan", up=step % 2 == 0)
        blocker.unlink()
        blocker.mkdir()
        journal.write("link", step=5, link="lan", up=False)
    journal.close()
    records = [json.loads(line) for line in (blocker / "audit.jsonl").open()]
    assert [(r["kind"], r["seq"]) for r in records] == [
        ("link", 1), ("link", 2), ("link", 3), ("gap", 7),
    ]  # fmt: skip
    assert records[-1]["skipped"] == 3  # steps 3, 4 and 5 did not fit
    assert audit([blocker]).figures["skipped"] == {"alpha": 3}


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only): a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_leaves_no_torn_line_and_loses_no_record(
    tiny_disk: Path, tmp_path: Path
) -> None:
    journal = AuditJournal(tiny_disk / "audit.jsonl", node="alpha", boot=1)
    path = tiny_disk / "audit.jsonl"
    with capture_logs() as logged:
        step = 0
        while journal.waiting < 20:  # the 64 KiB disk fills up, then 20 records wait
            journal.write("link", step=step, link="a-long-link-name" * 4, up=True)
            step += 1
            assert step < 5000, "the disk never filled up"
        kept = tmp_path / "kept.jsonl"
        kept.write_bytes(path.read_bytes())
        path.unlink()  # the operator makes room: the backlog goes out
        journal.write("link", step=step, link="lan", up=False)
    journal.close()
    assert [e["event"] for e in logged].count("audit journal writable again") == 1
    assert kept.read_bytes().endswith(b"\n")
    report = audit([kept])  # every line whole: readable, nothing torn
    assert report.figures["torn_tails"] == 0 and report.figures["records"]["alpha"] > 100
    later = path.with_name("later.jsonl")
    later.write_bytes(path.read_bytes())  # the rest, once there was room again
    path.unlink()
    nodes, _ = load_records([kept, later])
    assert [r.order[1] for r in nodes["alpha"]] == list(range(1, step + 2))  # none lost


def _hand_over_on_a_full_disk(disk: Path, tmp_path: Path, padding: int, reserve: int) -> Report:
    """Campaign round 49 (seed 2031): alpha serves, its state disk fills up, it hands
    over (SIGTERM: stop, then exit) with every record refused by the disk; beta,
    hearing alpha ``secondary`` over links that are up, starts serving at once.
    ``padding`` link records between the stop's begin and end make the backlog
    outgrow the reserve. The audit of both journals once alpha's journal closed."""
    alpha = AuditJournal(disk / "alpha" / "audit.jsonl", node="alpha", boot=1, reserve=reserve)
    beta = Journal("beta")
    beta.start(monotonic())
    alpha.write("start", pid=1, links=list(LINKS), split_brain_winner=None,
                recovered=False, timing={}, generation="0", synced="0", consistent=True,
                last_state=None)  # fmt: skip
    for step, link in enumerate(LINKS, start=1):
        alpha.write("link", step=step, link=link, up=True)
    alpha.write("transition", step=3, **{"from": "wait", "to": "primary"}, event="heartbeat",
                generation="1:alpha", forced=False, synced="0", consistent=True)  # fmt: skip
    alpha.write("resource", action="start", phase="begin", vip=None)
    alpha.write("resource", action="start", phase="end", vip=None)
    beta.next_step().link(monotonic(), True).transition(monotonic(), "wait", "secondary", "1:alpha")
    filler = fill(disk)
    while not alpha.waiting:  # the journal's last page fills up too: now every record waits
        alpha.write("link", step=3, link=LINKS[0], up=True)
    alpha.write("transition", step=4, **{"from": "primary", "to": "secondary"}, event="stop",
                generation="1:alpha", forced=False, synced="0", consistent=True)  # fmt: skip
    alpha.write("resource", action="stop", phase="begin", vip=None)
    for step in range(padding):
        alpha.write("link", step=5 + step, link=LINKS[step % 2], up=True)
    alpha.write("resource", action="stop", phase="end", vip=None)
    assert alpha.waiting == padding + 4, "the disk took a record"
    beta.next_step().peer(monotonic(), "secondary", "1:alpha")
    beta.transition(monotonic(), "secondary", "primary", "1:alpha")
    beta.app(monotonic(), "start", "begin")
    alpha.write("exit", state="stop", app_running=False)
    with capture_logs():
        alpha.close()  # the daemon exits, the disk still full
    assert filler.exists()
    return audit([disk / "alpha" / "audit.jsonl", beta.write(tmp_path)])


def test_a_stop_on_a_full_disk_is_journalled_at_exit(tmp_path: Path) -> None:
    """The journal's reserve takes the backlog at exit: the stop is on record and the
    audit sees a clean hand-over (it used to see alpha still serving: a false S1)."""
    with small_tmpfs(tmp_path / "state") as disk:
        report = _hand_over_on_a_full_disk(disk, tmp_path, padding=5, reserve=JOURNAL_RESERVE)
    assert report.ok, report
    assert report.figures["skipped"] == {"alpha": 0, "beta": 0}


def test_records_lost_at_exit_are_a_gap_and_the_audit_says_journal_incomplete(
    tmp_path: Path,
) -> None:
    """A backlog larger than the reserve: the oldest waiting records are written, the
    rest counted in a gap record with the time the loss began; the audit then reports
    the window as "journal incomplete", never an S1 it cannot know."""
    with small_tmpfs(tmp_path / "state") as disk:
        report = _hand_over_on_a_full_disk(disk, tmp_path, padding=200, reserve=16 * 1024)
        records = [json.loads(line) for line in (disk / "alpha" / "audit.jsonl").open()]
    gap = records[-1]
    assert gap["kind"] == "gap" and 0 < gap["skipped"] < 200
    kept = [r for r in records if r["mono"] >= gap["since"] and r["kind"] != "gap"]
    assert kept == [], "a record after the loss began was written"
    assert [r for r in records if r["kind"] == "exit"] == []  # among the newest: lost
    stop = [r for r in records if r["kind"] == "transition" and r["from"] == "primary"]
    assert len(stop) == 1 and stop[0]["mono"] < gap["since"]  # among the oldest: written
    assert [v.invariant for v in report.violations] == [INCOMPLETE], report
    assert "not judged: S1 at t=" in report.violations[0].why
    assert report.figures["skipped"]["alpha"] == gap["skipped"]
