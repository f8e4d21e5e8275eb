"""The daemon's side: ``AuditJournal`` writes what ``failover audit`` reads, rotates,
and never raises when the disk refuses a write."""

from __future__ import annotations

import json
import time
from pathlib import Path

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


def test_a_failing_write_is_reported_once_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the node's directory should be")
    journal = AuditJournal(blocker / "alpha" / "audit.jsonl", node="alpha", boot=1)
    with capture_logs() as logged:
        journal.write("link", step=1, link="lan", up=True)
        journal.write("link", step=2, link="lan", up=False)
        blocker.unlink()  # the disk recovers
        journal.write("link", step=3, link="lan", up=True)
    journal.close()
    assert [entry["event"] for entry in logged] == [
        "cannot write the audit journal: records are skipped until it works again",
        "audit journal writable again",
    ]
    records = (blocker / "alpha" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in records] == [3]
