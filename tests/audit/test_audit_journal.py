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
from structlog.testing import capture_logs

from failover.audit import audit, load_records
from failover.runtime.logging import AuditJournal


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
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(p.stat().st_size < 700 for p in tmp_path.iterdir())
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
